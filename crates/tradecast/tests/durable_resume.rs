//! Durable delivery with contiguous `seq`, resume with `since`, and ingest errors.
mod support;

use serde_json::{Value, json};
use support::*;
use tradecast_client::Client;
use tradecast_protocol::Role;

/// Read everything that arrives within `quiet` of the previous message.
async fn read_quiet(client: &mut Client, quiet: std::time::Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = client.recv_within(quiet).await {
        out.push(m);
    }
    out
}

/// The durable (sequenced) messages of `channel` among `messages`.
fn durable(messages: &[Value], channel: &str) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m["channel"] == channel && m.get("seq").is_some() && m["type"] != "subscribed")
        .cloned()
        .collect()
}

fn assert_contiguous(messages: &[Value], first: u64) {
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(
            m["seq"],
            first + i as u64,
            "gap or reorder at {i}: {messages:#?}"
        );
    }
}

const QUIET: std::time::Duration = std::time::Duration::from_millis(300);

#[tokio::test]
async fn events_reach_the_trader_with_contiguous_seq_and_a_resume_replays_exactly_the_missed_ones()
{
    let server = Server::start(&[]);
    // An admin watches the same portfolio the whole time: the reference stream.
    let (mut watcher, _, _) = connect_ready(&server, 1, Role::Admin).await;
    watcher
        .send(&json!({"type":"subscribe","channel":"portfolio:42"}))
        .await
        .unwrap();
    let sub = expect(&mut watcher, "subscribed").await;
    assert_eq!(sub["seq"], 0);

    let (mut trader, _, initial) = connect_ready(&server, 42, Role::Client).await;
    let epoch = initial[0]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(initial[0]["seq"], 0);

    let (status, body) = server
        .post_events(&json!([
            account_event(1, 42),
            open_event(2, 42, 1),
            open_event(3, 42, 2),
            close_event(4, 42, 1)
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    let seen = durable(&read_quiet(&mut trader, QUIET).await, "portfolio:42");
    let kinds: Vec<&str> = seen.iter().filter_map(|m| m["type"].as_str()).collect();
    assert!(
        kinds.contains(&"position_opened") && kinds.contains(&"position_closed"),
        "{seen:#?}"
    );
    assert_contiguous(&seen, 1);
    let last = seen.last().unwrap()["seq"].as_u64().unwrap();

    // The trader drops; events keep coming.
    trader.close().await;
    let (status, body) = server
        .post_events(&json!([
            open_event(5, 42, 3),
            close_event(6, 42, 2),
            close_event(7, 42, 3),
            open_event(8, 42, 4)
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    let reference = durable(&read_quiet(&mut watcher, QUIET).await, "portfolio:42");
    assert_contiguous(&reference, 1);
    let missed: Vec<Value> = reference
        .iter()
        .filter(|m| m["seq"].as_u64().unwrap() > last)
        .cloned()
        .collect();
    assert!(missed.len() >= 4, "{missed:#?}");

    // Reconnect and resync the default channel from where it left off.
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    trader.send(&json!({"type":"subscribe","channel":"portfolio:42","since":{"epoch":epoch,"seq":last},"id":"r"})).await.unwrap();
    let sub = expect(&mut trader, "subscribed").await;
    assert_eq!(sub["id"], "r");
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["epoch"], epoch.as_str());
    assert_eq!(sub["seq"], reference.last().unwrap()["seq"]);
    let replay: Vec<Value> = read_quiet(&mut trader, QUIET).await;
    assert!(
        replay.iter().all(|m| m["type"] != "portfolio_full"),
        "a recovered resume sends no snapshot: {replay:#?}"
    );
    assert_eq!(
        durable(&replay, "portfolio:42"),
        missed,
        "the replay is exactly the missed messages, in order"
    );

    // Resuming from the current position replays nothing.
    let now = sub["seq"].as_u64().unwrap();
    trader
        .send(
            &json!({"type":"subscribe","channel":"portfolio:42","since":{"epoch":epoch,"seq":now}}),
        )
        .await
        .unwrap();
    let sub = expect(&mut trader, "subscribed").await;
    assert_eq!(sub["recovered"], true);
    assert_usable(&mut trader, 1).await;
}

#[tokio::test]
async fn a_resume_with_a_wrong_epoch_or_a_future_seq_gets_a_snapshot() {
    let server = Server::start(&[]);
    let (status, body) = server
        .post_events(&json!([account_event(1, 42), open_event(2, 42, 1)]))
        .await;
    assert_eq!(status, 200, "{body}");
    let (mut trader, _, initial) = connect_ready(&server, 42, Role::Client).await;
    let epoch = initial[0]["epoch"].as_str().unwrap().to_owned();
    let seq = initial[0]["seq"].as_u64().unwrap();
    assert!(seq >= 1);
    for since in [
        json!({"epoch":"not-the-epoch","seq":1}),
        json!({"epoch":epoch,"seq":seq + 100}),
    ] {
        trader
            .send(&json!({"type":"subscribe","channel":"portfolio:42","since":since}))
            .await
            .unwrap();
        let sub = expect(&mut trader, "subscribed").await;
        assert_eq!(sub["recovered"], false, "{since}: {sub}");
        assert_eq!(sub["epoch"], epoch.as_str());
        let full = trader.recv_within(WAIT).await.unwrap().unwrap();
        assert_eq!(full["type"], "portfolio_full", "{since}");
        assert_eq!(full["positions"][0]["id"], 1, "{full}");
    }
}

#[tokio::test]
async fn a_resume_older_than_the_history_gets_a_snapshot() {
    let server = Server::start(&["--history-size", "3"]);
    let (mut trader, _, initial) = connect_ready(&server, 42, Role::Client).await;
    let epoch = initial[0]["epoch"].as_str().unwrap().to_owned();
    let mut events = vec![account_event(1, 42)];
    events.extend((0..8).map(|i| open_event(2 + i, 42, 100 + i)));
    let (status, body) = server.post_events(&Value::Array(events)).await;
    assert_eq!(status, 200, "{body}");
    let seen = durable(&read_quiet(&mut trader, QUIET).await, "portfolio:42");
    assert_contiguous(&seen, 1);
    let last = seen.last().unwrap()["seq"].as_u64().unwrap();
    assert!(last >= 8);

    // Only the last 3 messages are kept: from last - 3 the replay still works…
    trader.send(&json!({"type":"subscribe","channel":"portfolio:42","since":{"epoch":epoch,"seq":last - 3}})).await.unwrap();
    let sub = expect(&mut trader, "subscribed").await;
    assert_eq!(sub["recovered"], true, "{sub}");
    let replay = durable(&read_quiet(&mut trader, QUIET).await, "portfolio:42");
    assert_eq!(replay, seen[seen.len() - 3..].to_vec());
    // …from further back it cannot, so a snapshot comes instead.
    trader
        .send(&json!({"type":"subscribe","channel":"portfolio:42","since":{"epoch":epoch,"seq":1}}))
        .await
        .unwrap();
    let sub = expect(&mut trader, "subscribed").await;
    assert_eq!(sub["recovered"], false, "{sub}");
    let full = trader.recv_within(WAIT).await.unwrap().unwrap();
    assert_eq!(full["type"], "portfolio_full");
    assert_eq!(full["positions"].as_array().unwrap().len(), 8, "{full}");
}

#[tokio::test]
async fn malformed_ingest_events_get_400_and_count_as_dead_letters() {
    let server = Server::start(&[]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    assert_eq!(
        metric(&server, "tradecast_ingest_dead_letters_total").await,
        0.0
    );
    let mut float_volume = open_event(2, 42, 9);
    float_volume["vol"] = json!(1.5);
    for bad in [
        json!({"v":1,"type":"position","src":"t","seq":1,"ts":1}),
        json!({"v":2,"type":"tick","src":"t","seq":1,"ts":1,"symbol":"EURUSD","bid":1.0,"ask":1.1}),
        json!({"v":1,"type":"teleport","src":"t","seq":1,"ts":1}),
        float_volume,
        json!("not an object"),
    ] {
        let (status, body) = server.post_events(&bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let reason = body["errors"][0]["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{bad}: {body}");
    }
    let (status, body) = http(server.admin, "POST", "/v1/events", &[], "{nope").await;
    assert_eq!(status, 400, "{body}");
    assert!(metric(&server, "tradecast_ingest_dead_letters_total").await >= 5.0);
    // A batch with one bad event applies none of them.
    let (status, body) = server
        .post_events(&json!([account_event(1, 42), open_event(2, 42, 1), {"v":1}]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["index"], 2, "{body}");
    assert_usable(&mut trader, 1).await;
}
