//! The stream reader on a real Redis: bad entries go to the dead-letter stream,
//! replays publish nothing twice, and when the reading node is killed another one
//! takes over and delivers every durable message once.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::redis::*;
use support::*;
use tradecast_protocol::Role;
use tradecast_testkit::RedisServer;

/// Dead letters as (reason, original id, d).
async fn dead_letters(redis: &RedisServer) -> Vec<(String, String, String)> {
    xrange(redis, "tc:dead")
        .await
        .iter()
        .map(|e| {
            let field = |name: &str| e.get::<String>(name).unwrap_or_default();
            (field("reason"), field("id"), field("d"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_are_dead_lettered_and_replays_publish_nothing_twice() {
    let redis = RedisServer::start();
    let server = node(&redis);
    ready(&server).await;
    leader(&[&server]).await;
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    let (mut ib, _, _) = connect_ready(&server, 300, Role::Ib).await;
    let mut producer = writer(&redis).await;
    producer
        .write(&[
            event("mt5-1", 1, account(42, "Ada")),
            event("mt5-1", 2, ib_link(42, 300)),
            event("mt5-1", 3, open(42, 7)),
        ])
        .await
        .unwrap();

    // Five kinds of bad entry, each with the words its reason must contain.
    let mut float_volume = event("mt5-1", 13, open(42, 8));
    float_volume["vol"] = json!(1.5);
    let mut negative_volume = event("mt5-1", 14, open(42, 9));
    negative_volume["vol"] = json!(-10000);
    let mut no_login = event("mt5-1", 12, open(42, 10));
    no_login.as_object_mut().unwrap().remove("login");
    let bad = [
        ("{not json".to_owned(), "json"),
        (
            event("mt5-1", 11, json!({"type":"teleport"})).to_string(),
            "type",
        ),
        (no_login.to_string(), "login"),
        (negative_volume.to_string(), "vol"),
        (float_volume.to_string(), "vol"),
    ];
    let mut bad_ids = Vec::new();
    for (d, _) in &bad {
        bad_ids.push(producer.write_raw("tc:events", d).await.unwrap());
    }
    // A good entry after them still flows.
    let deal = event("mt5-1", 4, closing_deal(42, 7, 9001));
    let close = event("mt5-1", 5, close(42, 7));
    producer
        .write(&[deal.clone(), close.clone()])
        .await
        .unwrap();
    let portfolio = durable_until(&mut trader, "portfolio:42", |got| {
        got.iter().any(|m| m["type"] == "position_closed")
    })
    .await;
    assert_contiguous(&portfolio);
    let commission = durable_until(&mut ib, "commissions:300", |got| !got.is_empty()).await;
    assert_eq!(commission[0]["deal"], 9001);

    let letters = dead_letters(&redis).await;
    assert_eq!(letters.len(), bad.len(), "{letters:?}");
    for ((reason, id, d), ((sent, word), sent_id)) in letters.iter().zip(bad.iter().zip(&bad_ids)) {
        assert_eq!((d, id), (sent, sent_id));
        assert!(
            reason.to_lowercase().contains(word),
            "reason {reason:?} for {d}"
        );
    }
    assert!(metric(&server, "tradecast_ingest_dead_letters_total").await >= bad.len() as f64);

    // The plugin re-sends the deal and the close (same src and seq): nothing new.
    producer.write(&[deal, close]).await.unwrap();
    // A fresh event marks the end: it must be the very next durable message.
    producer
        .write(&[
            event("mt5-1", 6, open(42, 20)),
            event("mt5-1", 7, closing_deal(42, 20, 9002)),
        ])
        .await
        .unwrap();
    let next = durable_until(&mut trader, "portfolio:42", |got| {
        got.iter().any(|m| m["type"] == "position_opened")
    })
    .await;
    assert_eq!(
        next.iter()
            .map(|m| m["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["position_opened"],
        "{next:?}"
    );
    assert_eq!(
        next[0]["seq"].as_u64(),
        portfolio.last().unwrap()["seq"].as_u64().map(|s| s + 1)
    );
    let next = durable_until(&mut ib, "commissions:300", |got| !got.is_empty()).await;
    assert_eq!(
        (next[0]["deal"].as_u64(), next[0]["seq"].as_u64()),
        (Some(9002), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_reading_node_mid_burst_loses_and_repeats_nothing() {
    const POSITIONS: u64 = 150;
    let redis = RedisServer::start();
    let mut nodes = [node(&redis), node(&redis)];
    for n in &nodes {
        ready(n).await;
    }
    let lead = leader(&[&nodes[0], &nodes[1]]).await;
    let watcher = 1 - lead;
    let (mut trader, _, _) = connect_ready(&nodes[watcher], 42, Role::Client).await;
    let (mut ib, _, _) = connect_ready(&nodes[watcher], 300, Role::Ib).await;

    let mut producer = writer(&redis).await;
    producer
        .write(&[
            event("mt5-1", 1, account(42, "Ada")),
            event("mt5-1", 2, ib_link(42, 300)),
        ])
        .await
        .unwrap();
    let mut seq = 2;
    let mut next = |body: Value| {
        seq += 1;
        event("mt5-1", seq, body)
    };
    let burst: Vec<Vec<Value>> = (1..=POSITIONS)
        .map(|p| {
            vec![
                next(open(42, p)),
                next(closing_deal(42, p, 10_000 + p)),
                next(close(42, p)),
            ]
        })
        .collect();
    for (i, events) in burst.iter().enumerate() {
        producer.write(events).await.unwrap();
        if i == POSITIONS as usize / 3 {
            nodes[lead].kill();
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }

    let portfolio = durable_until(&mut trader, "portfolio:42", |got| {
        got.iter()
            .filter(|m| m["type"] == "position_closed")
            .count()
            == POSITIONS as usize
    })
    .await;
    assert_contiguous(&portfolio);
    let commissions = durable_until(&mut ib, "commissions:300", |got| {
        got.len() == POSITIONS as usize
    })
    .await;
    assert_contiguous(&commissions);
    let ids = |kind: &str| -> Vec<u64> {
        portfolio
            .iter()
            .filter(|m| m["type"] == kind)
            .map(|m| m["id"].as_u64().unwrap())
            .collect()
    };
    let all: Vec<u64> = (1..=POSITIONS).collect();
    assert_eq!(ids("position_opened"), all);
    assert_eq!(ids("position_closed"), all);
    let deals: Vec<u64> = commissions
        .iter()
        .map(|m| m["deal"].as_u64().unwrap())
        .collect();
    assert_eq!(deals, all.iter().map(|p| 10_000 + p).collect::<Vec<_>>());
    // Nothing more arrives after the last one: no late duplicate.
    assert_no_more_durable(&mut trader, 1).await;
    assert_eq!(
        metric(&nodes[watcher], "tradecast_ingest_leader").await,
        1.0
    );
}
