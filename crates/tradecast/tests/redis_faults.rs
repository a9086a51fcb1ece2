//! Redis goes away and comes back empty while nodes run: no node exits, client
//! connections stay up, events flow again, and stale resumes get snapshots.

mod support;

use std::time::Duration;

use serde_json::json;
use support::redis::*;
use support::*;
use tradecast_protocol::Role;
use tradecast_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_a_redis_restart_that_loses_everything() {
    let mut redis = RedisServer::start();
    let mut nodes = [node(&redis), node(&redis)];
    for n in &nodes {
        ready(n).await;
    }
    let lead = leader(&[&nodes[0], &nodes[1]]).await;
    let standby = 1 - lead;
    let (mut trader, _, initial) = connect_ready(&nodes[standby], 42, Role::Client).await;
    let mut producer = writer(&redis).await;
    producer
        .write(&[
            event("mt5-1", 1, account(42, "Ada")),
            event("mt5-1", 2, open(42, 7)),
        ])
        .await
        .unwrap();
    let before = durable_until(&mut trader, "portfolio:42", |got| {
        got.iter().any(|m| m["type"] == "position_opened")
    })
    .await;
    let old_epoch = initial
        .iter()
        .find(|m| m["type"] == "subscribed" && m["channel"] == "portfolio:42")
        .unwrap()["epoch"]
        .clone();
    let old_seq = before.last().unwrap()["seq"].clone();

    redis.kill();
    // Not ready while Redis is away, but alive, and the connection stays usable.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while nodes[standby].get("/readyz").await.0 != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready without Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(nodes[0].get("/healthz").await.0, 200);
    assert_no_more_durable(&mut trader, 1).await;
    // When Redis is back, the node that never held the state gets the lease
    // first (the leader is frozen for a while): it must leave it to the node
    // that holds the state rather than start from nothing.
    nodes[lead].pause();
    redis.restart();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    nodes[lead].resume();
    for n in &nodes {
        ready(n).await;
    }
    for n in &mut nodes {
        assert!(n.wait_exit(Duration::ZERO).is_none(), "a node exited");
    }

    // The live subscriber is resynced from the new (empty) log with a snapshot
    // that still shows the open position (the leader republished its state).
    let resync = loop {
        let m = trader
            .recv_until("subscribed", Duration::from_secs(10))
            .await
            .unwrap()
            .0;
        if m["channel"] == "portfolio:42" {
            break m;
        }
    };
    assert_eq!(resync["recovered"], false);
    assert_ne!(resync["epoch"], old_epoch);
    let snapshot = trader.recv_within(WAIT).await.unwrap().unwrap();
    assert_eq!(snapshot["type"], "portfolio_full", "{snapshot}");
    assert_eq!(snapshot["positions"][0]["id"], 7, "{snapshot}");

    // New events flow again, within seconds.
    let mut producer = writer(&redis).await;
    producer
        .write(&[event("mt5-1", 3, open(42, 8))])
        .await
        .unwrap();
    let after = durable_until(&mut trader, "portfolio:42", |got| {
        got.iter().any(|m| m["type"] == "position_opened")
    })
    .await;
    assert_eq!(after.last().unwrap()["id"], 8);

    // A client resuming with the lost epoch gets a snapshot holding both positions.
    let (mut late, _, _) = connect_ready(&nodes[lead], 42, Role::Client).await;
    late.send(&json!({"type":"subscribe","channel":"portfolio:42","since":{"epoch":old_epoch,"seq":old_seq},"id":"r"}))
        .await
        .unwrap();
    let reply = late.recv_until("subscribed", WAIT).await.unwrap().0;
    assert_eq!(
        (reply["id"].as_str(), reply["recovered"].as_bool()),
        (Some("r"), Some(false))
    );
    let full = late.recv_within(WAIT).await.unwrap().unwrap();
    assert_eq!(full["type"], "portfolio_full", "{full}");
    let mut ids: Vec<u64> = full["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [7, 8], "{full}");
}
