//! Nodes on a real Redis: start them, feed the streams, find the ingest leader.

use std::time::Duration;

use serde_json::{Value, json};
use tradecast_broker::RedisTarget;
use tradecast_client::Client;
use tradecast_ingest::StreamLayout;
use tradecast_ingest::writer::StreamWriter;
use tradecast_testkit::{RedisCluster, RedisServer};

use super::{Server, WAIT, metric};

/// Where the nodes keep their shared state: one server or a 3-master cluster.
pub enum Store {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Store {
    pub fn single() -> Store {
        Store::Single(RedisServer::start())
    }

    pub fn cluster() -> Store {
        Store::Cluster(RedisCluster::start(3))
    }

    pub fn target(&self) -> RedisTarget {
        match self {
            Store::Single(redis) => RedisTarget::new(&redis.url(), false),
            Store::Cluster(cluster) => RedisTarget::new(&cluster.urls().join(","), true),
        }
    }

    /// On a cluster the ingest streams share a hash tag (one slot), so the
    /// reader can read them in one command.
    pub fn layout(&self) -> StreamLayout {
        match self {
            Store::Single(_) => StreamLayout::default(),
            Store::Cluster(_) => StreamLayout {
                events: "{tc}:events".into(),
                ticks: "{tc}:ticks".into(),
                partitions: 0,
            },
        }
    }

    /// `tradecast serve` flags for this store, with a short lease and checkpoint
    /// interval so takeovers happen within a test's patience.
    pub fn node(&self) -> Server {
        let target = self.target();
        let layout = self.layout();
        let urls = target.urls.join(",");
        let mut args = vec![
            "--redis",
            &urls,
            "--lease-ms",
            "1000",
            "--checkpoint-ms",
            "300",
            "--events-stream",
            &layout.events,
            "--ticks-stream",
            &layout.ticks,
        ];
        if target.cluster {
            args.push("--redis-cluster");
        }
        Server::start(&args)
    }

    /// The pub/sub topics the nodes listen to: plain channels on one server,
    /// shard channels (every master's) on a cluster.
    pub fn listened_topics(&self) -> Vec<String> {
        let lines = |out: String| out.lines().map(String::from).collect::<Vec<_>>();
        match self {
            Store::Single(redis) => lines(redis.cli(&["PUBSUB", "CHANNELS"])),
            Store::Cluster(cluster) => cluster
                .ports()
                .iter()
                .flat_map(|port| {
                    let out = std::process::Command::new("redis-cli")
                        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                        .args(["PUBSUB", "SHARDCHANNELS"])
                        .output()
                        .expect("running redis-cli");
                    lines(String::from_utf8_lossy(&out.stdout).into_owned())
                })
                .collect(),
        }
    }

    /// A producer writing to the streams, as a trade-server plugin would.
    pub async fn writer(&self) -> StreamWriter {
        StreamWriter::connect_to(&self.target(), self.layout(), None)
            .await
            .expect("connecting the stream writer")
    }
}

/// `tradecast serve --redis` on one `redis` server.
pub fn node(redis: &RedisServer) -> Server {
    Server::start(&[
        "--redis",
        &redis.url(),
        "--lease-ms",
        "1000",
        "--checkpoint-ms",
        "300",
    ])
}

/// `tradecast serve --redis URL` (any URL: a proxy in front of Redis, say) with
/// the short lease and checkpoint interval of [`node`], plus `extra` flags.
pub fn node_at(url: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--redis",
        url,
        "--lease-ms",
        "1000",
        "--checkpoint-ms",
        "300",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A producer writing to the default streams, as a trade-server plugin would.
pub async fn writer(redis: &RedisServer) -> StreamWriter {
    StreamWriter::connect(&redis.url(), StreamLayout::default(), None)
        .await
        .expect("connecting the stream writer")
}

/// The index of the node that leads ingest (waits until one does).
pub async fn leader(nodes: &[&Server]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for (i, node) in nodes.iter().enumerate() {
            if metric(node, "tradecast_ingest_leader").await == 1.0 {
                return i;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no node leads ingest"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until `/readyz` answers 200.
pub async fn ready(node: &Server) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while node.get("/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "node never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Envelope for test events from source `src`.
pub fn event(src: &str, seq: u64, body: Value) -> Value {
    let mut event = json!({"v": 1, "src": src, "seq": seq, "ts": 1_700_000_000_000u64 + seq});
    event
        .as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    event
}

pub fn account(login: u64, name: &str) -> Value {
    json!({"type":"account","login":login,"name":name,"ccy":"USD","leverage":100,"balance":10000.0,"credit":0.0})
}

pub fn ib_link(login: u64, ib: u64) -> Value {
    json!({"type":"ib_link","op":"set","login":login,"ib":ib})
}

pub fn open(login: u64, position: u64) -> Value {
    json!({"type":"position","op":"open","login":login,"position_id":position,"symbol":"EURUSD","side":"buy","vol":10000,"price_open":1.1,"digits":5,"contract_size":100000})
}

pub fn close(login: u64, position: u64) -> Value {
    json!({"type":"position","op":"close","login":login,"position_id":position})
}

/// The deal that closes `position` (1 lot), which pays the IB chain.
pub fn closing_deal(login: u64, position: u64, deal: u64) -> Value {
    json!({"type":"deal","login":login,"deal":deal,"position_id":position,"action":"sell","entry":"out","symbol":"EURUSD","vol":10000,"price":1.1,"profit":0.0})
}

/// Durable messages (those with a `seq`) on `channel`, read until `until`
/// returns true for the collected list or WAIT passes without a message.
pub async fn durable_until(
    client: &mut Client,
    channel: &str,
    until: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    durable_on(client, &[channel], until).await
}

/// Durable messages on any of `channels`, in arrival order, until `until`.
pub async fn durable_on(
    client: &mut Client,
    channels: &[&str],
    until: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut got = Vec::new();
    while !until(&got) {
        let Some(m) = client
            .recv_within(WAIT)
            .await
            .unwrap_or_else(|e| panic!("waiting on {channels:?}: {e:#}; got {got:?}"))
        else {
            panic!("connection closed; got {got:?}");
        };
        let on = m["channel"].as_str().is_some_and(|c| channels.contains(&c));
        if on && m.get("seq").is_some() && m["type"] != "subscribed" {
            got.push(m);
        }
    }
    got
}

/// Every `seq` follows the one before it.
pub fn assert_contiguous(messages: &[Value]) {
    for pair in messages.windows(2) {
        assert_eq!(
            pair[1]["seq"].as_u64(),
            pair[0]["seq"].as_u64().map(|s| s + 1),
            "gap or duplicate between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

/// Nothing durable is left in flight: ping, and fail on any durable message,
/// snapshot or `subscribed` before the `pong` (live figures without `seq` may
/// still arrive and are skipped).
pub async fn assert_no_more_durable(client: &mut Client, id: u64) {
    client.send(&json!({"type":"ping","id":id})).await.unwrap();
    loop {
        let m = client.recv_within(WAIT).await.unwrap().expect("open");
        if m["type"] == "pong" {
            assert_eq!(m["id"], id, "{m}");
            return;
        }
        let kind = m["type"].as_str().unwrap_or_default();
        let state = m.get("seq").is_some() || kind.ends_with("_full") || kind == "subscribed";
        assert!(!state, "unexpected message {m}");
    }
}

/// Every entry of `stream` on `redis`, oldest first.
pub async fn xrange(redis: &RedisServer, stream: &str) -> Vec<::redis::streams::StreamId> {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: ::redis::streams::StreamRangeReply = ::redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    reply.ids
}
