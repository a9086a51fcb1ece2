//! Several nodes on one real Redis: events XADDed into the streams reach every
//! audience on whichever node it is connected to, and a client resumes on another
//! node with exactly what it missed.

mod support;

use serde_json::json;
use support::redis::*;
use support::*;
use tradecast_protocol::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_trader_ib_chain_and_risk_desk_on_other_nodes() {
    every_audience_on_any_node(Store::single()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_events_reach_every_audience_on_any_node() {
    every_audience_on_any_node(Store::cluster()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trader_resumes_on_another_node_with_exactly_the_missed_messages() {
    resume_on_another_node(Store::single()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_trader_resumes_on_another_node() {
    resume_on_another_node(Store::cluster()).await;
}

async fn every_audience_on_any_node(store: Store) {
    let nodes = [store.node(), store.node(), store.node()];
    for n in &nodes {
        ready(n).await;
    }
    leader(&[&nodes[0], &nodes[1], &nodes[2]]).await;

    let (mut trader, _, _) = connect_ready(&nodes[2], 42, Role::Client).await;
    let (mut direct_ib, _, _) = connect_ready(&nodes[0], 300, Role::Ib).await;
    let (mut second_ib, _, _) = connect_ready(&nodes[1], 200, Role::Ib).await;
    let (mut top_ib, _, _) = connect_ready(&nodes[2], 100, Role::Ib).await;
    let (mut risk, _, _) = connect_ready(&nodes[1], 1, Role::Admin).await;

    // Nodes listen only to channels with local subscribers (sharded on a cluster).
    let topics = store.listened_topics();
    for channel in ["portfolio:42", "commissions:300", "network:100", "exposure"] {
        assert!(
            topics.contains(&format!("tc:ch:{{{channel}}}")),
            "{channel} not in {topics:?}"
        );
    }
    assert!(
        !topics.iter().any(|t| t.contains("portfolio:43")),
        "{topics:?}"
    );

    let mut producer = store.writer().await;
    let events = [
        account(42, "Ada Lovelace"),
        ib_link(200, 100),
        ib_link(300, 200),
        ib_link(42, 300),
        open(42, 7),
        closing_deal(42, 7, 9001),
        close(42, 7),
    ];
    let events: Vec<_> = events
        .into_iter()
        .enumerate()
        .map(|(i, body)| event("mt5-1", i as u64 + 1, body))
        .collect();
    producer.write(&events).await.unwrap();

    // The trader: their account, the position opening, then closing, in order.
    let portfolio = durable_until(&mut trader, "portfolio:42", |got| {
        got.iter().any(|m| m["type"] == "position_closed")
    })
    .await;
    assert_contiguous(&portfolio);
    assert_eq!(portfolio[0]["seq"], 1, "{portfolio:?}");
    let kinds: Vec<&str> = portfolio
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    let opened = kinds
        .iter()
        .position(|k| *k == "position_opened")
        .expect("opened");
    let closed = kinds.iter().position(|k| *k == "position_closed").unwrap();
    assert!(opened < closed, "{kinds:?}");
    assert_eq!(portfolio[opened]["id"], 7);
    assert_eq!(portfolio[opened]["symbol"], "EURUSD");
    assert_eq!(portfolio[opened]["volume"], 1.0);

    // Every IB up the chain: the commission of its level (plan 5, 1, 0.5 per lot),
    // and its client joining its network.
    for (ib, client, level, amount) in [
        (300, &mut direct_ib, 1, 5.0),
        (200, &mut second_ib, 2, 1.0),
        (100, &mut top_ib, 3, 0.5),
    ] {
        let commissions = format!("commissions:{ib}");
        let network = format!("network:{ib}");
        let got = durable_on(client, &[&commissions, &network], |got| {
            got.iter().any(|m| m["type"] == "commission")
                && got
                    .iter()
                    .any(|m| m["type"] == "client_joined" && m["client"] == 42)
        })
        .await;
        let c = got.iter().find(|m| m["type"] == "commission").unwrap();
        assert_eq!(
            (
                c["client"].as_u64(),
                c["client_name"].as_str(),
                c["symbol"].as_str(),
                c["volume"].as_f64(),
                c["amount"].as_f64(),
                c["level"].as_u64(),
                c["deal"].as_u64(),
                c["seq"].as_u64(),
            ),
            (
                Some(42),
                Some("Ada Lovelace"),
                Some("EURUSD"),
                Some(1.0),
                Some(amount),
                Some(level),
                Some(9001),
                Some(1),
            ),
            "{c}"
        );
        let joined = got
            .iter()
            .find(|m| m["type"] == "client_joined" && m["client"] == 42)
            .unwrap();
        assert_eq!(joined["level"].as_u64(), Some(level), "{joined}");
    }

    // The risk desk: exposure on EURUSD once a position stays open.
    producer
        .write(&[event("mt5-1", 8, open(42, 8))])
        .await
        .unwrap();
    let exposure = risk
        .recv_until("exposure", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
        .0;
    let eurusd = exposure["symbols"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["symbol"] == "EURUSD"))
        .unwrap_or_else(|| panic!("no EURUSD in {exposure}"));
    assert_eq!(eurusd["buy_lots"], 1.0, "{exposure}");

    // Ingested through node 1 (`POST /v1/events` writes into the streams there): a
    // margin call reaches the trader on node 3 and the risk desk on node 2, each as
    // the next durable message of its channel.
    let last_portfolio_seq = portfolio.last().and_then(|m| m["seq"].as_u64()).unwrap();
    let margin_call = event(
        "node1-post",
        1,
        json!({"type":"margin_call","op":"enter","login":42,"equity":900.0,
               "margin":1000.0,"margin_level":90.0}),
    );
    let (status, reply) = nodes[0].post_events(&json!([margin_call])).await;
    assert_eq!(status, 200, "{reply}");
    let alerts = durable_until(&mut risk, "alerts", |got| !got.is_empty()).await;
    assert_eq!(
        (
            alerts[0]["type"].as_str(),
            alerts[0]["kind"].as_str(),
            alerts[0]["op"].as_str(),
            alerts[0]["login"].as_u64(),
            alerts[0]["margin_level"].as_f64(),
            alerts[0]["seq"].as_u64(),
        ),
        (
            Some("alert"),
            Some("margin_call"),
            Some("enter"),
            Some(42),
            Some(90.0),
            Some(1)
        ),
        "{alerts:?}"
    );
    let mine = durable_until(&mut trader, "portfolio:42", |got| {
        got.iter().any(|m| m["type"] == "alert")
    })
    .await;
    assert_eq!(
        mine[0]["seq"].as_u64(),
        Some(last_portfolio_seq + 1),
        "{mine:?}"
    );
    assert_contiguous(&mine);
    let alert = mine.iter().find(|m| m["type"] == "alert").unwrap();
    assert_eq!(
        (alert["kind"].as_str(), alert["login"].as_u64()),
        (Some("margin_call"), Some(42))
    );
}

async fn resume_on_another_node(store: Store) {
    let nodes = [store.node(), store.node(), store.node()];
    for n in &nodes {
        ready(n).await;
    }
    let mut producer = store.writer().await;
    producer
        .write(&[
            event("mt5-1", 1, account(43, "Grace")),
            event("mt5-1", 2, open(43, 1)),
        ])
        .await
        .unwrap();

    // On node 1 until position 1 is open, then the connection drops.
    let (mut first, _, _) = connect_ready(&nodes[0], 43, Role::Client).await;
    let seen = durable_until(&mut first, "portfolio:43", |_| true).await;
    assert!(seen.is_empty());
    let _ = first; // initial snapshot already reflects events 1-2 or they arrive live
    let position = loop {
        // The latest seq this client holds, from the live stream or its snapshot.
        let (_, _, initial) = connect_ready(&nodes[0], 43, Role::Client).await;
        let subscribed = initial
            .iter()
            .find(|m| m["type"] == "subscribed" && m["channel"] == "portfolio:43")
            .unwrap()
            .clone();
        let full = initial
            .iter()
            .find(|m| m["type"] == "portfolio_full")
            .unwrap();
        if full["positions"].as_array().is_some_and(|p| p.len() == 1) {
            break subscribed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    drop(first);

    // While away: two opens and a close.
    producer
        .write(&[
            event("mt5-1", 3, open(43, 2)),
            event("mt5-1", 4, open(43, 3)),
            event("mt5-1", 5, close(43, 1)),
        ])
        .await
        .unwrap();

    // Back, on node 2, resuming from what it had.
    let (mut again, _, _) = connect_ready(&nodes[1], 43, Role::Client).await;
    let since = json!({"epoch": position["epoch"], "seq": position["seq"]});
    // Wait until the last missed message is in the log before resuming.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    again
        .send(&json!({"type":"subscribe","channel":"portfolio:43","since":since,"id":"r"}))
        .await
        .unwrap();
    let reply = again.recv_until("subscribed", WAIT).await.unwrap().0;
    assert_eq!(
        (reply["id"].as_str(), reply["recovered"].as_bool()),
        (Some("r"), Some(true)),
        "{reply}"
    );
    let from = position["seq"].as_u64().unwrap();
    let replay = durable_until(&mut again, "portfolio:43", |got| {
        got.last().and_then(|m| m["seq"].as_u64()) == reply["seq"].as_u64()
    })
    .await;
    assert_eq!(replay[0]["seq"].as_u64(), Some(from + 1), "{replay:?}");
    assert_contiguous(&replay);
    let kinds: Vec<(&str, u64)> = replay
        .iter()
        .filter(|m| m["type"] != "account_update")
        .map(|m| (m["type"].as_str().unwrap(), m["id"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("position_opened", 2),
            ("position_opened", 3),
            ("position_closed", 1)
        ]
    );
    // Nothing more, no snapshot: the next message is the answer to a ping.
    assert_no_more_durable(&mut again, 9).await;
}
