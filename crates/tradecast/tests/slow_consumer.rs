//! A client that stops reading never slows the others, and is closed as a slow
//! consumer once its bounded outbox overflows.
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tokio::time::Instant;
use tradecast_protocol::Role;

// The outbox limit (256 KiB) is kept above what one POST of 250 open/close pairs
// (500 messages) publishes at once: a smaller one (64 KiB) closes even a client
// that reads as fast as it can with 4009, since a whole batch lands in its
// outbox before its session task gets to write.
#[tokio::test]
async fn a_stalled_client_is_closed_and_a_fast_one_gets_everything_on_time() {
    let server = Server::start(&["--outbox-max-bytes", "262144"]);
    let admin_token = token(1, Role::Admin);
    // The stalled peer: a tiny receive window, subscribes, then never reads.
    let mut slow = RawWs::connect(
        server.public,
        &format!("/ws?token={admin_token}"),
        Some(4096),
    )
    .await;
    slow.send_text(r#"{"type":"subscribe","channel":"portfolio:42"}"#)
        .await;

    let (mut fast, _, _) = connect_ready(&server, 2, Role::Admin).await;
    fast.send(&json!({"type":"subscribe","channel":"portfolio:42"}))
        .await
        .unwrap();
    assert_eq!(expect(&mut fast, "subscribed").await["seq"], 0);
    assert_eq!(
        fast.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "portfolio_full"
    );
    // The fast client reads in its own task; each message is timestamped.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(m)) = fast.recv().await {
            if tx.send(m).is_err() {
                break;
            }
        }
    });

    let (status, _) = server.post_events(&json!([account_event(1, 42)])).await;
    assert_eq!(status, 200);
    let mut seq = 1;
    let mut received: Vec<Value> = Vec::new();
    let mut expected_trades = 0u64;
    let mut trades = 0u64;
    let mut batches = 0;
    while metric(&server, "tradecast_slow_consumer_closes_total").await < 1.0 {
        batches += 1;
        assert!(
            batches <= 100,
            "the stalled client was never closed as a slow consumer"
        );
        let mut events = Vec::new();
        for i in 0..250 {
            let position = batches * 1000 + i;
            seq += 1;
            events.push(open_event(seq, 42, position));
            seq += 1;
            events.push(close_event(seq, 42, position));
        }
        let (status, body) = server.post_events(&Value::Array(events)).await;
        let posted = Instant::now();
        assert_eq!(status, 200, "{body}");
        expected_trades += 500;
        // Every trade message of this batch reaches the fast client within 2 s.
        while trades < expected_trades {
            let m = tokio::time::timeout_at(posted + Duration::from_secs(2), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("batch {batches}: only {trades} of {expected_trades} trade messages within 2 s of the post"))
                .expect("the fast client's connection ended");
            if m["type"] == "position_opened" || m["type"] == "position_closed" {
                trades += 1;
            }
            received.push(m);
        }
    }
    // The fast client saw every durable message in order, without a gap.
    let durable: Vec<&Value> = received
        .iter()
        .filter(|m| m["channel"] == "portfolio:42" && m.get("seq").is_some())
        .collect();
    for pair in durable.windows(2) {
        assert_eq!(
            pair[1]["seq"].as_u64(),
            pair[0]["seq"].as_u64().map(|s| s + 1),
            "gap: {} then {}",
            pair[0],
            pair[1]
        );
    }
    assert!(received.iter().all(|m| m["type"] != "error"));

    // The stalled connection has been ended: reading it now drains what was
    // buffered and then meets the end (a 4009 close frame if one got through).
    let frames = slow.frames_until_end(Duration::from_secs(10)).await;
    assert!(
        slow.eof,
        "the stalled connection is still open after {} frames",
        frames.len()
    );
    if let Some(code) = frames.iter().find_map(|f| f.close_code()) {
        assert_eq!(code, 4009);
    }
    reader.abort();
}
