//! Heartbeat: application ping/pong, server WebSocket pings, and the 4008 close of
//! a connection that stays silent for three intervals.
mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::time::Instant;
use tradecast_client::Closed;
use tradecast_protocol::Role;

#[tokio::test]
async fn ping_gets_pong_with_the_echoed_id() {
    let server = Server::start(&[]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    trader.send(&json!({"type":"ping","id":1})).await.unwrap();
    assert_eq!(
        trader.recv_within(WAIT).await.unwrap().unwrap(),
        json!({"type":"pong","id":1})
    );
    trader
        .send(&json!({"type":"ping","id":"abc"}))
        .await
        .unwrap();
    assert_eq!(
        trader.recv_within(WAIT).await.unwrap().unwrap(),
        json!({"type":"pong","id":"abc"})
    );
    trader.send(&json!({"type":"ping"})).await.unwrap();
    assert_eq!(
        trader.recv_within(WAIT).await.unwrap().unwrap(),
        json!({"type":"pong"})
    );
}

#[tokio::test]
async fn a_silent_client_gets_ws_pings_then_4008_after_three_intervals() {
    let server = Server::start(&["--heartbeat-ms", "300"]);
    let token = token(42, Role::Client);
    // A raw client that reads but never writes: no pong, no frame at all.
    let mut raw = RawWs::connect(server.public, &format!("/ws?token={token}"), None).await;
    let started = Instant::now();
    let mut pings = 0;
    let mut first: Option<serde_json::Value> = None;
    let deadline = started + Duration::from_secs(5);
    let (code, closed_after) = loop {
        let frame = raw
            .next_frame(deadline)
            .await
            .expect("the server must close a silent connection within 5 s");
        match frame.opcode {
            1 if first.is_none() => first = frame.text(),
            9 => pings += 1,
            8 => break (frame.close_code(), started.elapsed()),
            _ => {}
        }
    };
    assert_eq!(first.unwrap()["type"], "welcome");
    assert_eq!(code, Some(4008));
    assert!(
        pings >= 2,
        "the server sends a WebSocket ping every interval (got {pings})"
    );
    assert!(
        closed_after >= Duration::from_millis(850),
        "closed too early: {closed_after:?}"
    );
    assert!(
        closed_after <= Duration::from_millis(2000),
        "closed too late: {closed_after:?}"
    );
}

#[tokio::test]
async fn a_client_answering_pings_stays_open() {
    let server = Server::start(&["--heartbeat-ms", "300"]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    // Reading answers the server's WebSocket pings; nothing else is sent for
    // 2 s, more than six intervals.
    let outcome = trader.recv_within(Duration::from_secs(2)).await;
    assert!(
        outcome.is_err(),
        "expected silence, got {outcome:?} (closed: {:?})",
        trader.closed
    );
    assert_usable(&mut trader, 5).await;
}

#[tokio::test]
async fn application_pings_alone_keep_a_connection_alive() {
    let server = Server::start(&["--heartbeat-ms", "300"]);
    let token = token(42, Role::Client);
    // Never answers WebSocket pings, but sends an application ping every 200 ms.
    let mut raw = RawWs::connect(server.public, &format!("/ws?token={token}"), None).await;
    let end = Instant::now() + Duration::from_millis(2000);
    let mut pongs = 0;
    let mut n = 0;
    while Instant::now() < end {
        n += 1;
        raw.send_text(&json!({"type":"ping","id":n}).to_string())
            .await;
        let tick = Instant::now() + Duration::from_millis(200);
        while let Some(frame) = raw.next_frame(tick).await {
            assert_ne!(
                frame.opcode,
                8,
                "closed although it kept pinging: {:?}",
                frame.close_code()
            );
            if frame.text().is_some_and(|m| m["type"] == "pong") {
                pongs += 1;
            }
        }
        assert!(!raw.eof, "connection ended");
    }
    assert!(pongs >= n - 1, "{pongs} pongs for {n} pings");
}

#[tokio::test]
async fn the_tradecast_client_sees_4008_as_a_close_code() {
    // Same as the raw test but through the client: it answers pings only while
    // reading, so a client that stops reading altogether is closed; once it
    // reads again it sees the 4008 close frame.
    let server = Server::start(&["--heartbeat-ms", "300"]);
    let (mut trader, _) = server.connect(42, Role::Client).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        trader.closed_within(WAIT).await.unwrap(),
        Closed::Code(4008)
    );
}
