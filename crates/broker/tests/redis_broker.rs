//! The Redis broker between two "nodes" (two brokers on one real Redis): every
//! durable message reaches the other node once and in order, also across a lost
//! pub/sub connection, and a replayed origin is appended nowhere.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tradecast_broker::{
    Broker, Outbox, OutboxLimits, Publish, RedisBroker, RedisTarget, Retention,
};
use tradecast_protocol::Channel;
use tradecast_protocol::client::Since;
use tradecast_testkit::RedisServer;

async fn broker(redis: &RedisServer) -> RedisBroker {
    let target = RedisTarget::new(&redis.url(), false);
    let broker = RedisBroker::connect(&target, Retention::default())
        .await
        .expect("connecting");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !broker.is_ready() {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker
}

fn alert(n: u64, origin: Option<u64>) -> Publish {
    Publish::Durable {
        channel: "alerts".into(),
        message: Bytes::from(format!(r#"{{"type":"alert","channel":"alerts","n":{n}}}"#)),
        snapshot: None,
        origin,
    }
}

/// Drain `outbox` until `count` frames arrived (or 5 s passed).
async fn frames(outbox: &Outbox, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.len() < count && tokio::time::Instant::now() < deadline {
        let mut out = Vec::new();
        outbox.drain(&mut out);
        got.extend(
            out.iter()
                .map(|b| serde_json::from_slice::<Value>(b).unwrap()),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    got
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "alert")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_pubsub_connection_is_repaired_from_the_log() {
    let redis = RedisServer::start();
    let (publisher, listener) = (broker(&redis).await, broker(&redis).await);
    let outbox = Arc::new(Outbox::new(1, OutboxLimits::default()));
    let position = listener
        .subscribe(&Channel::Alerts, None, &outbox, None)
        .await
        .unwrap();
    assert_eq!(position.seq, 0);
    publisher
        .publish(vec![alert(1, None), alert(2, None)])
        .await
        .unwrap();
    let first = frames(&outbox, 4).await;
    assert_eq!(first[0]["type"], "subscribed");
    assert_eq!(seqs(&first), [1, 2]);

    // Cut every pub/sub connection: what is published meanwhile never reaches
    // the listener through Redis, so it must fetch it from the log.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    publisher
        .publish((3..=6).map(|n| alert(n, None)).collect())
        .await
        .unwrap();
    let repaired = frames(&outbox, 4).await;
    assert_eq!(seqs(&repaired), [3, 4, 5, 6], "{repaired:?}");
    publisher.publish(vec![alert(7, None)]).await.unwrap();
    assert_eq!(seqs(&frames(&outbox, 1).await), [7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_origin_is_not_appended_again_and_resume_replays_the_rest() {
    let redis = RedisServer::start();
    let broker = broker(&redis).await;
    broker
        .publish(vec![alert(1, Some(10)), alert(2, Some(11))])
        .await
        .unwrap();
    // The same batch again (a replay after a crash), then a new message.
    broker
        .publish(vec![
            alert(1, Some(10)),
            alert(2, Some(11)),
            alert(3, Some(12)),
        ])
        .await
        .unwrap();
    let outbox = Arc::new(Outbox::new(2, OutboxLimits::default()));
    let fresh = broker
        .subscribe(&Channel::Alerts, None, &outbox, None)
        .await
        .unwrap();
    assert_eq!(fresh.seq, 3);
    let since = Since {
        epoch: fresh.epoch.clone(),
        seq: 1,
    };
    let resumed = broker
        .subscribe(&Channel::Alerts, Some(&since), &outbox, None)
        .await
        .unwrap();
    assert!(resumed.recovered);
    let got = frames(&outbox, 5).await;
    let replay: Vec<u64> = got
        .iter()
        .skip_while(|f| f["type"] != "subscribed" || f["recovered"] != true)
        .filter(|f| f["type"] == "alert")
        .map(|f| f["n"].as_u64().unwrap())
        .collect();
    assert_eq!(replay, [2, 3], "{got:?}");
}

fn live(n: u64) -> Publish {
    Publish::Ephemeral {
        channel: "alerts".into(),
        key: format!("live:{n}"),
        message: Bytes::from(format!(r#"{{"type":"live","channel":"alerts","n":{n}}}"#)),
        retain: false,
    }
}

/// Ephemeral messages of one channel travel as one frame per run between its
/// durable messages: the other node gets every one of them, in publishing order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_runs_keep_their_place_between_durable_messages() {
    let redis = RedisServer::start();
    let (publisher, listener) = (broker(&redis).await, broker(&redis).await);
    let outbox = Arc::new(Outbox::new(3, OutboxLimits::default()));
    listener
        .subscribe(&Channel::Alerts, None, &outbox, None)
        .await
        .unwrap();
    publisher
        .publish(vec![
            live(1),
            live(2),
            alert(3, None),
            live(4),
            alert(5, None),
            live(6),
            live(7),
            live(8),
        ])
        .await
        .unwrap();
    let got = frames(&outbox, 9).await;
    let order: Vec<u64> = got
        .iter()
        .filter(|f| f["type"] == "live" || f["type"] == "alert")
        .map(|f| f["n"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [1, 2, 3, 4, 5, 6, 7, 8], "{got:?}");
    assert_eq!(seqs(&got), [1, 2]);
}
