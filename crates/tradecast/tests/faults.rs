//! Fault scenarios, each with real processes: `tradecast serve` nodes, a real
//! `redis-server`, real WebSocket clients, and a TCP [`Proxy`] that plays the
//! network going bad between two of them.
//!
//! - Clients that stop reading on a node running on Redis are closed as slow
//!   consumers and never hold back the healthy clients of the same channels; they
//!   resume afterwards without loss.
//! - A client that vanishes without a FIN (half-open) is reaped by the node's
//!   heartbeat while other clients keep working; the Rust `Session` notices a dead
//!   link by its own ping and reconnects.
//! - A node whose Redis turns slow, then unreachable, keeps answering its WebSocket
//!   clients and its health check (a new connection gets its `welcome`, a `ping`
//!   behind a `subscribe` its `pong`, at once), and once Redis is back its clients
//!   get exactly the durable messages they missed.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::redis::*;
use support::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tradecast_client::{Client, Closed, Connect, Event, Session, SessionOptions};
use tradecast_protocol::Role;
use tradecast_testkit::{Proxy, RedisServer};

/// Reads a client in a task of its own, so it answers the node's pings and its
/// messages wait for the test in order.
struct Reader {
    rx: mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<Option<Closed>>,
}

impl Reader {
    fn spawn(mut client: Client) -> Reader {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(Some(m)) = client.recv().await {
                if tx.send(m).is_err() {
                    break;
                }
            }
            client.closed.clone()
        });
        Reader { rx, task }
    }

    /// The next message before `deadline`.
    async fn next(&mut self, deadline: Instant, what: &str) -> Value {
        tokio::time::timeout_at(deadline, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("the connection ended while waiting for {what}"))
    }
}

/// Durable messages (with `seq`, not `subscribed`) per channel.
fn durable_by_channel<'a>(
    messages: impl Iterator<Item = &'a Value>,
) -> HashMap<String, Vec<Value>> {
    let mut by_channel: HashMap<String, Vec<Value>> = HashMap::new();
    for m in messages {
        if m.get("seq").is_some() && m["type"] != "subscribed" {
            let channel = m["channel"].as_str().unwrap_or_default().to_owned();
            by_channel.entry(channel).or_default().push(m.clone());
        }
    }
    by_channel
}

fn is_trade(m: &Value) -> bool {
    m["type"] == "position_opened" || m["type"] == "position_closed"
}

/// Subscribe `client` to `channel` and read its `subscribed` reply and snapshot.
async fn subscribe_with_snapshot(client: &mut Client, channel: &str) {
    client
        .send(&json!({"type":"subscribe","channel":channel}))
        .await
        .unwrap();
    let (reply, _) = client.recv_until("subscribed", WAIT).await.unwrap();
    assert_eq!(reply["channel"], channel, "{reply}");
    let snapshot = client.recv_within(WAIT).await.unwrap().expect("open");
    assert_eq!(snapshot["channel"], channel, "{snapshot}");
}

/// Resume `channels` on a fresh connection from `since` (epoch, seq per channel)
/// and read the replay until each channel reaches `until[channel]`.
async fn resume(
    node: &Server,
    since: &HashMap<String, (Value, u64)>,
    until: &HashMap<String, u64>,
) -> HashMap<String, Vec<Value>> {
    let (mut client, _, _) = connect_ready(node, 7, Role::Admin).await;
    let mut replayed: HashMap<String, Vec<Value>> = HashMap::new();
    for (channel, (epoch, seq)) in since {
        client
            .send(&json!({"type":"subscribe","channel":channel,"since":{"epoch":epoch,"seq":seq},"id":channel}))
            .await
            .unwrap();
        let (reply, _) = client.recv_until("subscribed", WAIT).await.unwrap();
        assert_eq!(reply["id"], json!(channel), "{reply}");
        assert_eq!(reply["recovered"], true, "{reply}");
        let target = until[channel];
        let got = replayed.entry(channel.clone()).or_default();
        let mut last = *seq;
        while last < target {
            let m = client.recv_within(WAIT).await.unwrap().expect("open");
            if m["channel"] == json!(channel) && m.get("seq").is_some() {
                last = m["seq"].as_u64().unwrap();
                got.push(m);
            }
        }
    }
    replayed
}

// ---------------------------------------------------------------------------------
// 1. Clients that stop reading, on a node running on Redis.

/// A client that reads everything, with what it got.
struct Healthy {
    reader: Reader,
    /// Logins whose portfolio it watches.
    logins: usize,
    trades: usize,
    got: Vec<Value>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_on_a_redis_node_are_closed_and_never_hold_back_the_others() {
    const STALLED: usize = 3;
    let redis = RedisServer::start();
    // A history long enough that the stalled clients can resume by replay.
    let node = node_at(
        &redis.url(),
        &["--outbox-max-bytes", "262144", "--history-size", "100000"],
    );
    ready(&node).await;
    leader(&[&node]).await;
    let channels = ["portfolio:42", "portfolio:43"];

    // The stalled peers: a tiny receive window; they subscribe, then never read.
    let admin = token(1, Role::Admin);
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut raw = RawWs::connect(node.public, &format!("/ws?token={admin}"), Some(4096)).await;
        for channel in channels {
            raw.send_text(&json!({"type":"subscribe","channel":channel}).to_string())
                .await;
        }
        stalled.push(raw);
    }
    // The healthy ones: two risk desks on both channels, and trader 42 on its own.
    let mut healthy = Vec::new();
    for sub in [2, 3] {
        let (mut desk, _, _) = connect_ready(&node, sub, Role::Admin).await;
        for channel in channels {
            subscribe_with_snapshot(&mut desk, channel).await;
        }
        healthy.push(Healthy {
            reader: Reader::spawn(desk),
            logins: 2,
            trades: 0,
            got: Vec::new(),
        });
    }
    let (trader, _, _) = connect_ready(&node, 42, Role::Client).await;
    healthy.push(Healthy {
        reader: Reader::spawn(trader),
        logins: 1,
        trades: 0,
        got: Vec::new(),
    });
    // Every subscription is in place: each admin holds exposure and alerts too,
    // the trader portfolio, orders and prices.
    let subscriptions = (STALLED * 4 + 2 * 4 + 3) as f64;
    let deadline = Instant::now() + WAIT;
    while metric(&node, "tradecast_subscriptions").await != subscriptions {
        assert!(
            Instant::now() < deadline,
            "the subscriptions never all arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut producer = writer(&redis).await;
    let mut seq = 0;
    let mut events = Vec::new();
    for login in [42, 43] {
        seq += 1;
        events.push(event("mt5", seq, account(login, "Ann")));
    }
    producer.write(&events).await.unwrap();

    // Batches of 100 opens and 100 closes per login, through the ingest streams,
    // until every stalled client has been closed. Each healthy client gets every
    // trade message of a batch within a few seconds of its write.
    let mut batches = 0u64;
    let mut position = 0;
    while metric(&node, "tradecast_slow_consumer_closes_total").await < STALLED as f64 {
        batches += 1;
        assert!(batches <= 60, "the stalled clients were never all closed");
        let mut events = Vec::new();
        for _ in 0..100 {
            position += 1;
            for login in [42, 43] {
                seq += 1;
                events.push(event("mt5", seq, open(login, position)));
                seq += 1;
                events.push(event("mt5", seq, close(login, position)));
            }
        }
        producer.write(&events).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        for client in &mut healthy {
            let expected = batches as usize * 200 * client.logins;
            while client.trades < expected {
                let what = format!("batch {batches}'s trade messages");
                let m = client.reader.next(deadline, &what).await;
                client.trades += usize::from(is_trade(&m));
                client.got.push(m);
            }
        }
    }
    let sent_per_login = batches * 200;

    // Every healthy client saw every durable message of its channels, in order.
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for client in &healthy {
        assert!(
            !client.reader.task.is_finished(),
            "a healthy client was closed"
        );
        assert!(client.got.iter().all(|m| m["type"] != "error"));
        for (channel, messages) in durable_by_channel(client.got.iter()) {
            assert_contiguous(&messages);
            let trades = messages.iter().filter(|m| is_trade(m)).count() as u64;
            assert_eq!(trades, sent_per_login, "{channel}");
            last_seq.insert(channel, messages.last().unwrap()["seq"].as_u64().unwrap());
        }
    }
    let reference: HashMap<String, Vec<Value>> = durable_by_channel(healthy[0].got.iter());

    // Each stalled connection has ended (with 4009 if a close frame got through),
    // and resumes from what it had without loss.
    for raw in &mut stalled {
        let frames = raw.frames_until_end(Duration::from_secs(10)).await;
        assert!(raw.eof, "a stalled connection is still open");
        if let Some(code) = frames.iter().find_map(|f| f.close_code()) {
            assert_eq!(code, 4009);
        }
        let mut since: HashMap<String, (Value, u64)> = HashMap::new();
        for m in frames.iter().filter_map(|f| f.text()) {
            let Some(channel) = m["channel"].as_str().filter(|c| channels.contains(c)) else {
                continue;
            };
            if m["type"] == "subscribed" {
                since.insert(
                    channel.into(),
                    (m["epoch"].clone(), m["seq"].as_u64().unwrap()),
                );
            } else if let Some(seq) = m["seq"].as_u64() {
                since.get_mut(channel).expect("subscribed first").1 = seq;
            }
        }
        assert_eq!(since.len(), 2, "the stalled client never got both replies");
        let replayed = resume(&node, &since, &last_seq).await;
        for (channel, got) in replayed {
            let from = since[&channel].1;
            let missed: Vec<&Value> = reference[&channel]
                .iter()
                .filter(|m| m["seq"].as_u64().unwrap() > from)
                .collect();
            assert!(!missed.is_empty());
            assert_eq!(got.iter().collect::<Vec<_>>(), missed, "{channel}");
        }
    }
    eprintln!(
        "slow consumers on Redis: {STALLED} closed after {batches} batches ({} trade messages per channel)",
        sent_per_login
    );
}

// ---------------------------------------------------------------------------------
// 2. Half-open connections.

/// `ws://` through `proxy` as (`sub`, `role`); reads the `welcome` and the defaults.
async fn connect_through(proxy: &Proxy, sub: u64, role: Role) -> Client {
    let mut client = Client::connect(&Connect::new(proxy.addr(), token(sub, role)))
        .await
        .expect("connecting through the proxy");
    let welcome = client.recv_within(WAIT).await.unwrap().expect("welcome");
    assert_eq!(welcome["type"], "welcome");
    let channels = welcome["channels"].as_array().unwrap().len();
    read_initial(&mut client, channels).await;
    client
}

async fn connections(node: &Server) -> f64 {
    metric(node, "tradecast_connections").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_reaped_by_the_heartbeat_while_others_keep_working() {
    const HEARTBEAT: Duration = Duration::from_millis(300);
    let node = Server::start(&["--heartbeat-ms", "300"]);
    let proxy = Proxy::start(node.public);
    let vanishing = Reader::spawn(connect_through(&proxy, 42, Role::Client).await);
    let (mut direct, _, _) = connect_ready(&node, 43, Role::Client).await;
    assert_eq!(connections(&node).await, 2.0);
    // Longer than the heartbeat timeout: reading answers the node's pings (the
    // reader task does it for the other one), so both stay.
    assert!(direct.recv_within(HEARTBEAT * 4).await.is_err());
    assert_eq!(connections(&node).await, 2.0);

    // The peer vanishes: no FIN, no reset, nothing passes any more.
    proxy.black_hole();
    let cut = Instant::now();
    let (status, _) = node
        .post_events(&json!([account_event(1, 43), open_event(2, 43, 9)]))
        .await;
    assert_eq!(status, 200);
    let mut id = 0;
    let mut seen = Vec::new();
    let reaped_after = loop {
        // The other client is served all along: pings answered, events delivered.
        id += 1;
        direct.send(&json!({"type":"ping","id":id})).await.unwrap();
        let (pong, before) = direct.recv_until("pong", WAIT).await.unwrap();
        assert_eq!(pong["id"], id);
        seen.extend(before);
        if connections(&node).await == 1.0 {
            break cut.elapsed();
        }
        // Three silent intervals, a ping tick, and up to 1 s for the close handshake.
        assert!(
            cut.elapsed() < HEARTBEAT * 4 + Duration::from_secs(3),
            "the half-open connection is still counted after {:?}",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reaped_after >= HEARTBEAT * 2,
        "reaped before the heartbeat could tell: {reaped_after:?}"
    );
    while !seen.iter().any(|m| m["type"] == "position_opened") {
        seen.push(direct.recv_within(WAIT).await.unwrap().expect("open"));
    }
    let durable: Vec<Value> = durable_by_channel(seen.iter())
        .remove("portfolio:43")
        .unwrap_or_default();
    assert_eq!(durable.len(), 2, "{seen:?}");
    assert_contiguous(&durable);
    assert_usable(&mut direct, 1000).await;

    // Once the path heals, what the node sent in the meantime arrives: its close.
    proxy.heal();
    let closed = tokio::time::timeout(WAIT, vanishing.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed, Some(Closed::Code(4008)));
    eprintln!(
        "half-open connection reaped {reaped_after:?} after the peer vanished (heartbeat {HEARTBEAT:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_detects_a_black_holed_link_by_its_ping_and_resumes_after_it_heals() {
    let node = Server::start(&["--heartbeat-ms", "300"]);
    let proxy = Proxy::start(node.public);
    let mut options = SessionOptions::new(proxy.addr(), token(42, Role::Client));
    options.heartbeat = Duration::from_millis(200);
    options.connect_timeout = Duration::from_secs(1);
    options.backoff_initial = Duration::from_millis(50);
    options.backoff_max = Duration::from_millis(200);
    let mut session = Session::connect(options).await.expect("session connect");
    let mut events = Vec::new();
    let mut wait_for = async |events: &mut Vec<Event>,
                              what: &str,
                              limit: Duration,
                              done: &dyn Fn(&[Event]) -> bool| {
        let deadline = Instant::now() + limit;
        while !done(events) {
            let event = tokio::time::timeout_at(deadline, session.next_event())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}: {events:#?}"))
                .expect("the session ended");
            events.push(event);
        }
    };
    let portfolio = |events: &[Event]| -> Vec<u64> {
        events
            .iter()
            .filter_map(Event::message)
            .filter(|m| m["channel"] == "portfolio:42")
            .filter_map(|m| m["seq"].as_u64())
            .collect()
    };
    let (status, _) = node
        .post_events(&json!([account_event(1, 42), open_event(2, 42, 7)]))
        .await;
    assert_eq!(status, 200);
    wait_for(&mut events, "the first messages", WAIT, &|e| {
        portfolio(e).len() == 2
    })
    .await;

    proxy.black_hole();
    let cut = Instant::now();
    wait_for(&mut events, "the dead link", Duration::from_secs(3), &|e| {
        e.iter().any(|e| matches!(e, Event::Reconnecting(_)))
    })
    .await;
    let detected_after = cut.elapsed();
    let reason = events
        .iter()
        .find_map(|e| match e {
            Event::Reconnecting(r) => Some(r.reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("heartbeat timeout"), "{reason}");
    // Published while the link is down; the session's new attempts are black-holed
    // too, until the path heals.
    let (status, _) = node.post_events(&json!([close_event(3, 42, 7)])).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.heal();
    wait_for(&mut events, "the resume", Duration::from_secs(5), &|e| {
        e.iter().any(|e| matches!(e, Event::Resumed { .. }))
    })
    .await;
    wait_for(&mut events, "the missed message", WAIT, &|e| {
        portfolio(e).len() >= 3
    })
    .await;
    let resumed = events.iter().find_map(|e| match e {
        Event::Resumed { recovered, reset } => Some((recovered.clone(), reset.clone())),
        _ => None,
    });
    let (recovered, reset) = resumed.unwrap();
    assert!(
        recovered.contains(&"portfolio:42".to_string()),
        "{recovered:?}"
    );
    assert!(reset.is_empty(), "{reset:?}");
    assert_eq!(portfolio(&events), [1, 2, 3]);
    eprintln!("the session noticed the black hole after {detected_after:?}");
}

// ---------------------------------------------------------------------------------
// 3. Redis turns slow, then vanishes, behind a node.

/// A client whose messages are kept while the test pings it.
struct Watched {
    client: Client,
    got: Vec<Value>,
    pings: u64,
}

impl Watched {
    /// Ping and return how long the `pong` took (at most `limit`); whatever
    /// arrives before it is kept.
    async fn ping(&mut self, limit: Duration) -> Duration {
        self.pings += 1;
        let id = self.pings;
        let sent = Instant::now();
        self.client
            .send(&json!({"type":"ping","id":id}))
            .await
            .unwrap();
        loop {
            let left = limit.saturating_sub(sent.elapsed());
            let m = self.client.recv_within(left).await.unwrap().expect("open");
            if m["type"] == "pong" && m["id"] == id {
                return sent.elapsed();
            }
            self.got.push(m);
        }
    }

    /// Read until `channel` has a durable message with `seq` (within `limit`).
    async fn until_seq(&mut self, channel: &str, seq: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        let reached = |got: &[Value]| {
            got.iter().any(|m| {
                m["channel"] == channel
                    && m["seq"].as_u64() == Some(seq)
                    && m["type"] != "subscribed"
            })
        };
        while !reached(&self.got) {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .client
                .recv_within(left)
                .await
                .unwrap_or_else(|e| panic!("waiting for {channel} seq {seq}: {e:#}"))
                .expect("open");
            self.got.push(m);
        }
    }

    fn durable(&self, channel: &str) -> Vec<Value> {
        durable_by_channel(self.got.iter())
            .remove(channel)
            .unwrap_or_default()
    }
}

/// Time to the upgrade and to the `welcome` of a new trader connection.
async fn time_a_newcomer(at: SocketAddr, sub: u64) -> (Duration, Option<Duration>) {
    let started = Instant::now();
    let mut client = Client::connect(&Connect::new(at, token(sub, Role::Client)))
        .await
        .expect("the upgrade is accepted");
    let upgraded = started.elapsed();
    let welcome = match client.recv_within(Duration::from_secs(30)).await {
        Ok(Some(m)) if m["type"] == "welcome" => Some(started.elapsed()),
        _ => None,
    };
    (upgraded, welcome)
}

/// `/healthz` answers 200; how long it took.
async fn healthz(node: &Server) -> Duration {
    let started = Instant::now();
    assert_eq!(node.get("/healthz").await.0, 200);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_then_vanished_redis_never_stalls_the_websocket_side() {
    const PROMPT: Duration = Duration::from_secs(1);
    let redis = RedisServer::start();
    // One node straight on Redis leads ingest, so events keep reaching the logs;
    // the other reaches Redis through the proxy.
    let direct = node(&redis);
    ready(&direct).await;
    leader(&[&direct]).await;
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())));
    let slow = node_at(&format!("redis://{}/", proxy.addr()), &[]);
    ready(&slow).await;
    let mut producer = writer(&redis).await;
    let mut seq = 0;
    let mut write = async |body: Value| {
        seq += 1;
        producer.write(&[event("mt5", seq, body)]).await.unwrap();
    };

    let (client, _, initial) = connect_ready(&slow, 42, Role::Client).await;
    let mut trader = Watched {
        client,
        got: initial,
        pings: 0,
    };
    // A second trader reads the start, then leaves before the trouble and
    // resumes once it is over.
    let (mut leaver, _, leaver_initial) = connect_ready(&slow, 42, Role::Client).await;
    let epoch = leaver_initial
        .iter()
        .find(|m| m["type"] == "subscribed" && m["channel"] == "portfolio:42")
        .unwrap()["epoch"]
        .clone();
    write(account(42, "Ann")).await;
    write(open(42, 1)).await;
    let start = durable_until(&mut leaver, "portfolio:42", |got| got.len() == 2).await;
    let left_at = start.last().unwrap()["seq"].as_u64().unwrap();
    leaver.close().await;
    trader.until_seq("portfolio:42", left_at, WAIT).await;

    // Slow Redis: 200 ms, then 2 s round trips.
    let mut position = 1;
    let mut newcomers = Vec::new();
    let phases = [
        (Duration::from_millis(100), "200 ms round trips"),
        (Duration::from_secs(1), "2 s round trips"),
    ];
    for (latency, label) in phases {
        proxy.delay(latency);
        position += 1;
        write(open(42, position)).await;
        newcomers.push((label, tokio::spawn(time_a_newcomer(slow.public, 42))));
        for _ in 0..3 {
            let pong = trader.ping(WAIT).await;
            assert!(pong < PROMPT, "pong after {pong:?} with {label}");
            assert!(healthz(&slow).await < PROMPT);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Every open is the channel's next durable message.
        let expected = left_at + position - 1;
        trader
            .until_seq("portfolio:42", expected, Duration::from_secs(10))
            .await;
    }
    // A subscribe waits on Redis (two 2 s round trips), the connection does not:
    // a ping right behind it is answered at once, the subscribe's reply comes later.
    trader
        .client
        .send(&json!({"type":"subscribe","channel":"prices:metals","id":"m"}))
        .await
        .unwrap();
    let pong_behind_subscribe = trader.ping(Duration::from_secs(15)).await;
    assert!(
        pong_behind_subscribe < PROMPT,
        "a ping behind a subscribe was answered after {pong_behind_subscribe:?}"
    );

    // Redis vanishes: nothing answers, nothing closes.
    proxy.black_hole();
    let cut = Instant::now();
    newcomers.push(("no answer", tokio::spawn(time_a_newcomer(slow.public, 42))));
    let mut missed = 0;
    let mut not_ready_after = None;
    while cut.elapsed() < Duration::from_secs(7) {
        if missed < 3 {
            position += 1;
            missed += 1;
            write(open(42, position)).await;
        }
        let pong = trader.ping(WAIT).await;
        assert!(pong < PROMPT, "pong after {pong:?} without Redis");
        assert!(healthz(&slow).await < PROMPT);
        if not_ready_after.is_none() && slow.get("/readyz").await.0 == 503 {
            not_ready_after = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let not_ready_after = not_ready_after.expect("/readyz stayed 200 without Redis");
    // The subscribe sent before Redis vanished got its answer meanwhile, after the
    // pong: `subscribed`, or `unavailable` if Redis vanished first.
    let metals = trader
        .got
        .iter()
        .find(|m| m["id"] == "m")
        .expect("the subscribe behind the ping was never answered")
        .clone();
    assert_eq!(metals["channel"], "prices:metals", "{metals}");
    assert!(
        metals["type"] == "subscribed" || metals["code"] == "unavailable",
        "{metals}"
    );
    // The connections the node had to Redis are dead for good; new ones work.
    proxy.strand();
    proxy.heal();
    let healed = Instant::now();
    ready(&slow).await;
    let ready_after = healed.elapsed();

    // The live trader gets what was published meanwhile, in order, no gap.
    let last = trader.durable("portfolio:42").last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    let final_seq = left_at + position - 1;
    assert!(last < final_seq);
    trader
        .until_seq("portfolio:42", final_seq, Duration::from_secs(15))
        .await;
    let caught_up_after = healed.elapsed();
    let durable = trader.durable("portfolio:42");
    assert_contiguous(&durable);
    assert_eq!(durable.first().unwrap()["seq"], 1);
    assert_eq!(durable.last().unwrap()["seq"], final_seq);
    assert!(trader.ping(WAIT).await < PROMPT);

    // The trader who left resumes with exactly what it missed.
    let since = HashMap::from([("portfolio:42".to_string(), (epoch, left_at))]);
    let until = HashMap::from([("portfolio:42".to_string(), final_seq)]);
    let replayed = resume(&slow, &since, &until)
        .await
        .remove("portfolio:42")
        .unwrap();
    let expected: Vec<Value> = durable
        .into_iter()
        .filter(|m| m["seq"].as_u64().unwrap() > left_at)
        .collect();
    assert_eq!(replayed, expected);

    for (label, newcomer) in newcomers {
        let (upgraded, welcome) = newcomer.await.unwrap();
        eprintln!("newcomer with Redis at {label}: upgrade {upgraded:?}, welcome {welcome:?}");
        assert!(upgraded < PROMPT, "upgrade took {upgraded:?}");
        // The welcome does not wait for the default channels' subscribes.
        let welcome = welcome.unwrap_or_else(|| panic!("no welcome with Redis at {label}"));
        assert!(
            welcome - upgraded < PROMPT,
            "welcome {:?} after the upgrade with Redis at {label}",
            welcome - upgraded
        );
    }
    eprintln!(
        "with 2 s Redis round trips, a ping right behind a subscribe: pong after {pong_behind_subscribe:?}; the subscribe: {}",
        metals["type"]
    );
    eprintln!(
        "Redis black-holed: /readyz 503 after {not_ready_after:?}; healed: ready after {ready_after:?}, caught up after {caught_up_after:?}"
    );
}
