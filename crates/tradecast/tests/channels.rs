//! Default channels per role, the read-authorization rule, and subscribe /
//! unsubscribe replies.
mod support;

use serde_json::{Value, json};
use support::*;
use tradecast_protocol::Role;

/// The messages after `welcome`: for each channel, `subscribed` then its snapshot.
fn assert_initial(initial: &[Value], expected: &[(&str, Option<&str>)]) {
    let mut i = 0;
    for (channel, snapshot) in expected {
        let sub = &initial[i];
        assert_eq!(sub["type"], "subscribed", "{initial:#?}");
        assert_eq!(sub["channel"], *channel, "{initial:#?}");
        assert_eq!(sub["recovered"], false, "{sub}");
        assert!(
            sub["epoch"].as_str().is_some_and(|e| !e.is_empty()),
            "{sub}"
        );
        assert_eq!(sub["seq"], 0, "{sub}");
        i += 1;
        if let Some(kind) = snapshot {
            assert_eq!(initial[i]["type"], *kind, "{initial:#?}");
            assert_eq!(initial[i]["channel"], *channel, "{initial:#?}");
            i += 1;
        }
    }
    assert_eq!(i, initial.len(), "unexpected extra messages: {initial:#?}");
}

#[tokio::test]
async fn welcome_and_default_channels_per_role() {
    let server = Server::start(&["--heartbeat-ms", "4000"]);

    let (_trader, welcome, initial) = connect_ready(&server, 42, Role::Client).await;
    assert_eq!(welcome["user"], 42);
    assert_eq!(welcome["role"], "client");
    assert_eq!(welcome["heartbeat_ms"], 4000);
    assert_eq!(
        welcome["channels"],
        json!(["portfolio:42", "orders:42", "prices:forex"])
    );
    assert_initial(
        &initial,
        &[
            ("portfolio:42", Some("portfolio_full")),
            ("orders:42", Some("orders_full")),
            ("prices:forex", None),
        ],
    );
    assert_eq!(initial[1]["login"], 42);

    let (_ib, welcome, initial) = connect_ready(&server, 7, Role::Ib).await;
    assert_eq!(
        (welcome["user"].clone(), welcome["role"].clone()),
        (json!(7), json!("ib"))
    );
    assert_eq!(welcome["channels"], json!(["commissions:7", "network:7"]));
    assert_initial(
        &initial,
        &[
            ("commissions:7", Some("commissions_full")),
            ("network:7", Some("network_full")),
        ],
    );

    let (_admin, welcome, initial) = connect_ready(&server, 1, Role::Admin).await;
    assert_eq!(
        (welcome["user"].clone(), welcome["role"].clone()),
        (json!(1), json!("admin"))
    );
    assert_eq!(welcome["channels"], json!(["exposure", "alerts"]));
    assert_initial(
        &initial,
        &[
            ("exposure", Some("exposure")),
            ("alerts", Some("alerts_full")),
        ],
    );
}

#[tokio::test]
async fn default_channel_subscribed_carries_the_current_seq() {
    let server = Server::start(&[]);
    let (status, body) = server
        .post_events(&json!([account_event(1, 42), open_event(2, 42, 7)]))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_trader, _, initial) = connect_ready(&server, 42, Role::Client).await;
    let sub = &initial[0];
    assert_eq!(sub["channel"], "portfolio:42");
    assert!(sub["seq"].as_u64().unwrap() >= 1, "{sub}");
    let full = &initial[1];
    assert_eq!(full["type"], "portfolio_full");
    assert_eq!(full["positions"][0]["id"], 7, "{full}");
}

#[tokio::test]
async fn forbidden_subscriptions_are_refused_and_the_connection_stays_usable() {
    let server = Server::start(&[]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    let mut n = 0;
    for channel in [
        "portfolio:43",
        "orders:43",
        "commissions:42",
        "network:42",
        "exposure",
        "alerts",
    ] {
        n += 1;
        trader
            .send(&json!({"type":"subscribe","channel":channel,"id":n}))
            .await
            .unwrap();
        let m = expect_error(&mut trader, "forbidden", Some(json!(n))).await;
        assert_eq!(m["channel"], channel, "{m}");
        assert_usable(&mut trader, 1000 + n).await;
    }
    let (mut ib, _, _) = connect_ready(&server, 7, Role::Ib).await;
    for channel in [
        "portfolio:42",
        "orders:42",
        "commissions:8",
        "network:8",
        "exposure",
        "alerts",
    ] {
        n += 1;
        ib.send(&json!({"type":"subscribe","channel":channel,"id":format!("r{n}")}))
            .await
            .unwrap();
        expect_error(&mut ib, "forbidden", Some(json!(format!("r{n}")))).await;
        assert_usable(&mut ib, 1000 + n).await;
    }
    let forbidden = metric(&server, "tradecast_forbidden_subscriptions_total").await;
    assert_eq!(forbidden, 12.0);
}

#[tokio::test]
async fn admins_read_everything_and_anyone_reads_prices() {
    let server = Server::start(&[]);
    let (mut admin, _, _) = connect_ready(&server, 1, Role::Admin).await;
    for (i, (channel, snapshot)) in [
        ("portfolio:42", Some("portfolio_full")),
        ("orders:42", Some("orders_full")),
        ("commissions:7", Some("commissions_full")),
        ("network:7", Some("network_full")),
        ("prices:metals", None),
    ]
    .into_iter()
    .enumerate()
    {
        admin
            .send(&json!({"type":"subscribe","channel":channel,"id":i}))
            .await
            .unwrap();
        let m = admin.recv_within(WAIT).await.unwrap().unwrap();
        assert_eq!(m["type"], "subscribed", "{m}");
        assert_eq!(
            (m["channel"].clone(), m["id"].clone()),
            (json!(channel), json!(i))
        );
        if let Some(kind) = snapshot {
            assert_eq!(
                admin.recv_within(WAIT).await.unwrap().unwrap()["type"],
                kind
            );
        }
    }
    assert_usable(&mut admin, 99).await;
    for role in [Role::Client, Role::Ib] {
        let (mut c, _, _) = connect_ready(&server, 42, role).await;
        c.send(&json!({"type":"subscribe","channel":"prices:metals","id":"m"}))
            .await
            .unwrap();
        let m = c.recv_within(WAIT).await.unwrap().unwrap();
        assert_eq!(m["type"], "subscribed", "{role:?}: {m}");
        assert_eq!(m["id"], "m");
        assert_eq!(m["channel"], "prices:metals");
    }
    // An admin watching a trader's portfolio gets its live events.
    let (status, body) = server
        .post_events(&json!([account_event(1, 42), open_event(2, 42, 5)]))
        .await;
    assert_eq!(status, 200, "{body}");
    let opened = expect(&mut admin, "position_opened").await;
    assert_eq!(
        (opened["channel"].clone(), opened["id"].clone()),
        (json!("portfolio:42"), json!(5))
    );
}

#[tokio::test]
async fn subscribe_unsubscribe_replies_and_errors() {
    let server = Server::start(&[]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    subscribe_ok(&mut trader, "prices:metals", "s1").await;
    trader
        .send(&json!({"type":"unsubscribe","channel":"prices:metals","id":"u1"}))
        .await
        .unwrap();
    let m = trader.recv_within(WAIT).await.unwrap().unwrap();
    assert_eq!(
        m,
        json!({"type":"unsubscribed","id":"u1","channel":"prices:metals"})
    );
    // Now it is gone: a second unsubscribe is an error.
    trader
        .send(&json!({"type":"unsubscribe","channel":"prices:metals","id":"u2"}))
        .await
        .unwrap();
    let m = expect_error(&mut trader, "not_subscribed", Some(json!("u2"))).await;
    assert_eq!(m["channel"], "prices:metals");
    trader
        .send(&json!({"type":"unsubscribe","channel":"prices:never","id":3}))
        .await
        .unwrap();
    expect_error(&mut trader, "not_subscribed", Some(json!(3))).await;
    for (i, bad) in [
        "portfolio:abc",
        "nonsense",
        "prices:",
        "prices:a b",
        "portfolio:-1",
    ]
    .into_iter()
    .enumerate()
    {
        trader
            .send(&json!({"type":"subscribe","channel":bad,"id":i}))
            .await
            .unwrap();
        expect_error(&mut trader, "invalid_channel", Some(json!(i))).await;
    }
    // Unsubscribing a default channel stops its messages.
    trader
        .send(&json!({"type":"unsubscribe","channel":"portfolio:42","id":"u3"}))
        .await
        .unwrap();
    assert_eq!(
        trader.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "unsubscribed"
    );
    let (status, _) = server
        .post_events(&json!([account_event(1, 42), open_event(2, 42, 5)]))
        .await;
    assert_eq!(status, 200);
    assert_usable(&mut trader, 77).await;
}
