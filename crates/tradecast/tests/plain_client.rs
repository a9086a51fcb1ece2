//! Acceptance 3: a plain WebSocket client (no SDK) on `/` with `?token=` follows a
//! position's life, then reconnects cleanly after the server restarts.
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tradecast_client::{Client, Connect};
use tradecast_protocol::Role;

/// Connect on `/` with `?token=`, retrying while the server comes back.
async fn connect_plain(server: &Server, token: &str) -> Client {
    let options = Connect {
        path: "/".into(),
        ..Connect::new(server.public, token)
    };
    let deadline = Instant::now() + WAIT;
    loop {
        match Client::connect(&options).await {
            Ok(client) => return client,
            Err(e) => assert!(Instant::now() < deadline, "cannot reconnect: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_plain_client_follows_a_position_and_reconnects_after_a_restart() {
    let mut server = Server::start(&[]);
    let token = token(42, Role::Client);
    let mut ws = connect_plain(&server, &token).await;
    ws.send(&json!({"type":"ping"})).await.unwrap();
    let welcome = ws.recv_within(WAIT).await.unwrap().unwrap();
    assert_eq!(welcome["type"], "welcome");
    let (full, before) = ws.recv_until("portfolio_full", WAIT).await.unwrap();
    assert_eq!(full["channel"], "portfolio:42");
    let subscribed = &before
        .iter()
        .find(|m| m["type"] == "subscribed")
        .unwrap()
        .clone();
    let epoch = subscribed["epoch"].as_str().unwrap().to_owned();
    ws.recv_until("pong", WAIT).await.unwrap();

    let (status, body) = server
        .post_events(&json!([
            {"v":1,"type":"account","src":"t","seq":1,"ts":1,"login":42,"name":"Ann","ccy":"USD","leverage":100,"balance":1000.0,"credit":0.0},
            {"v":1,"type":"position","op":"open","src":"t","seq":2,"ts":2,"login":42,"position_id":7,"symbol":"EURUSD","side":"buy","vol":15000,"price_open":1.1,"digits":5,"contract_size":100000},
            {"v":1,"type":"position","op":"close","src":"t","seq":3,"ts":3,"login":42,"position_id":7,"close_deal":99,"price_close":1.101,"profit":15.0}
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    let (opened, _) = ws.recv_until("position_opened", WAIT).await.unwrap();
    assert_eq!(
        (opened["id"].clone(), opened["symbol"].clone()),
        (json!(7), json!("EURUSD"))
    );
    assert_eq!(
        opened["volume"], 1.5,
        "volumes to clients are in lots: {opened}"
    );
    let (closed, _) = ws.recv_until("position_closed", WAIT).await.unwrap();
    assert_eq!(closed["id"], 7);
    assert!(
        closed.get("profit").is_some() && closed.get("volume").is_some(),
        "{closed}"
    );
    let last_seq = closed["seq"].as_u64().unwrap();

    server.restart();
    // The old connection is gone…
    assert!(ws.closed_within(WAIT).await.is_ok());
    // …and a new one on the same address works from the start.
    let mut ws = connect_plain(&server, &token).await;
    ws.send(&json!({"type":"ping","id":"again"})).await.unwrap();
    assert_eq!(
        ws.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "welcome"
    );
    let (full, before) = ws.recv_until("portfolio_full", WAIT).await.unwrap();
    assert_eq!(full["channel"], "portfolio:42");
    let fresh = before
        .iter()
        .find(|m| m["type"] == "subscribed")
        .unwrap()
        .clone();
    assert_ne!(
        fresh["epoch"],
        epoch.as_str(),
        "the embedded broker's log is new after a restart"
    );
    // Resuming from the old log cannot replay: a snapshot comes instead.
    ws.send(&json!({"type":"subscribe","channel":"portfolio:42","since":{"epoch":epoch,"seq":last_seq},"id":"resume"})).await.unwrap();
    let resumed = loop {
        let (m, _) = ws.recv_until("subscribed", WAIT).await.unwrap();
        if m["id"] == "resume" {
            break m;
        }
    };
    assert_eq!(resumed["recovered"], false, "{resumed}");
    assert_eq!(
        ws.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "portfolio_full"
    );
}
