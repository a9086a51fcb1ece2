//! Hostile or broken input: each bad frame gets an `error` reply and the connection
//! stays open; oversized frames close with 1009, floods with 4029.
mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tradecast_client::Closed;
use tradecast_protocol::Role;

#[tokio::test]
async fn malformed_requests_get_error_replies_and_the_connection_stays_usable() {
    let server = Server::start(&[]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    let cases: &[(&str, &str, Option<serde_json::Value>)] = &[
        ("{not json", "bad_request", None),
        ("[1,2,3]", "bad_request", None),
        ("\"just a string\"", "bad_request", None),
        (r#"{"id":5}"#, "bad_request", None),
        (r#"{"type":"dance","id":6}"#, "unknown_type", Some(json!(6))),
        (
            r#"{"type":"subscribe","id":7}"#,
            "bad_field",
            Some(json!(7)),
        ),
        (
            r#"{"type":"subscribe","channel":12,"id":"x"}"#,
            "bad_field",
            Some(json!("x")),
        ),
        (
            r#"{"type":"unsubscribe","id":8}"#,
            "bad_field",
            Some(json!(8)),
        ),
        (
            r#"{"type":"subscribe","channel":"portfolio:42","since":{"seq":"x"},"id":9}"#,
            "bad_field",
            Some(json!(9)),
        ),
    ];
    for (i, (text, code, id)) in cases.iter().enumerate() {
        trader.send_text(*text).await.unwrap();
        let m = expect_error(&mut trader, code, id.clone()).await;
        assert!(
            m["message"].as_str().is_some_and(|s| !s.is_empty()),
            "{text}: {m}"
        );
        assert_usable(&mut trader, i as u64).await;
    }
    trader.send_binary(&b"\x00\x01binary"[..]).await.unwrap();
    expect_error(&mut trader, "binary_frame", None).await;
    assert_usable(&mut trader, 100).await;
    // And a real request still works afterwards.
    subscribe_ok(&mut trader, "prices:metals", "ok").await;
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let server = Server::start(&["--max-frame-bytes", "1024"]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    // Just under the limit is fine (an unknown type, so an error reply)…
    let padding = "x".repeat(900);
    trader
        .send(&json!({"type":"ping","id":1,"pad":padding}))
        .await
        .unwrap();
    assert_eq!(
        trader.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "pong"
    );
    // …over it closes the connection.
    let padding = "x".repeat(2048);
    trader
        .send(&json!({"type":"ping","id":2,"pad":padding}))
        .await
        .unwrap();
    assert_eq!(
        trader.closed_within(WAIT).await.unwrap(),
        Closed::Code(1009)
    );
}

#[tokio::test]
async fn the_default_frame_limit_is_64_kib() {
    let server = Server::start(&[]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    trader
        .send(&json!({"type":"ping","id":1,"pad":"y".repeat(60_000)}))
        .await
        .unwrap();
    assert_eq!(
        trader.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "pong"
    );
    trader
        .send(&json!({"type":"ping","id":2,"pad":"y".repeat(70_000)}))
        .await
        .unwrap();
    assert_eq!(
        trader.closed_within(WAIT).await.unwrap(),
        Closed::Code(1009)
    );
}

#[tokio::test]
async fn a_flood_beyond_the_inbound_rate_closes_with_4029() {
    let server = Server::start(&["--max-inbound-rate", "5"]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    // Within the rate (a burst up to twice the rate is allowed) nothing happens.
    for i in 0..5 {
        trader.send(&json!({"type":"ping","id":i})).await.unwrap();
        assert_eq!(trader.recv_within(WAIT).await.unwrap().unwrap()["id"], i);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for i in 0..40 {
        if trader.send(&json!({"type":"ping","id":i})).await.is_err() {
            break;
        }
    }
    assert_eq!(
        trader.closed_within(WAIT).await.unwrap(),
        Closed::Code(4029)
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(metrics.contains("rate_limited"), "{metrics}");
}

#[tokio::test]
async fn too_many_subscriptions_are_refused() {
    let server = Server::start(&["--max-subscriptions", "5"]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    // 3 default channels + 2 more reach the cap.
    for group in ["metals", "indices"] {
        trader
            .send(&json!({"type":"subscribe","channel":format!("prices:{group}")}))
            .await
            .unwrap();
        assert_eq!(
            trader.recv_within(WAIT).await.unwrap().unwrap()["type"],
            "subscribed"
        );
    }
    trader
        .send(&json!({"type":"subscribe","channel":"prices:crypto","id":"c"}))
        .await
        .unwrap();
    let m = expect_error(&mut trader, "too_many_subscriptions", Some(json!("c"))).await;
    assert_eq!(m["channel"], "prices:crypto");
    // Re-subscribing a channel already held is not a new subscription.
    subscribe_ok(&mut trader, "prices:metals", "again").await;
    // After an unsubscribe there is room again.
    trader
        .send(&json!({"type":"unsubscribe","channel":"prices:metals"}))
        .await
        .unwrap();
    assert_eq!(
        trader.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "unsubscribed"
    );
    subscribe_ok(&mut trader, "prices:crypto", "c2").await;
}

#[tokio::test]
async fn the_default_subscription_cap_is_enforced() {
    let server = Server::start(&[]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    let mut refused = None;
    for i in 0..70 {
        trader
            .send(&json!({"type":"subscribe","channel":format!("prices:g{i}"),"id":i}))
            .await
            .unwrap();
        let m = trader.recv_within(WAIT).await.unwrap().unwrap();
        if m["type"] == "error" {
            assert_eq!(m["code"], "too_many_subscriptions", "{m}");
            refused = Some(i);
            break;
        }
        // Pace the requests below the default inbound rate (50/s).
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(refused, Some(61), "64 channels in all, 3 of them default");
}
