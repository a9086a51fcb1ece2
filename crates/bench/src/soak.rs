//! The soak: one node, 10,000 connections, steady traffic and connection churn for
//! 30 minutes; does the node's memory level off?
//!
//! 1. Start `tradecast serve` (embedded broker, or `--redis` with a private
//!    `redis-server`) and post the set-up events: 30 symbols in 6 price groups, an
//!    account per trader, IB chains of 5 levels and a link from every trader to the
//!    bottom IB of its chain.
//! 2. Open `--connections` WebSockets from this process, from 127.0.0.2, 127.0.0.3, …
//!    (`IP_BIND_ADDRESS_NO_PORT`: the kernel picks the port at `connect()`): traders,
//!    2 % IBs and a few admins, one user each. Every client reads everything (the
//!    WebSocket layer answers the node's pings), sends a `ping` of its own every
//!    20–40 s, and follows docs/protocol.md §6 on each durable channel it holds: it
//!    keeps the epoch and the `seq` of the last message applied, counts a gap
//!    (`seq > last + 1`) as lost messages and a repeat (`seq <= last`) as a duplicate.
//! 3. For `--duration`: post ticks (`--tick-rate`, of which `--forex-tick-rate` on
//!    `prices:forex`, every trader's default channel; the rest on five groups that 1 %
//!    of the traders subscribe to) and trade events (`--trade-rate`: order, fill,
//!    position open/update/close, closing deals paying the IB chain, deposits, margin
//!    calls, traders moving to another IB) to `POST /v1/events`, in a batch every
//!    100 ms; and every second close `--churn` % of the connections (a third with a
//!    close frame, a third by dropping the socket, a third with a TCP reset), which
//!    reconnect after 0.1–1 s and resume each durable channel with `since`: the reply
//!    must say `recovered: true` and the replay must close the gap exactly.
//! 4. Every `--sample-secs`: the node's RSS and CPU (from `/proc`), this process's,
//!    the machine's load, the node's open connections (`/metrics`), the messages the
//!    clients received per second, reconnects, lost and duplicated messages.
//! 5. At the end, with the traffic stopped, every connection asks each durable channel
//!    for a replay since its `last` (the audit): a message the node published but never
//!    delivered live shows up here as `seq > last`. Then the report: all samples as
//!    JSON, a table and the memory verdict as Markdown (see bench/soak.md). The command
//!    fails if any message was lost or duplicated or a resume was not recovered.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, mpsc};
use tokio_websockets::{CloseCode, Message, WebSocketStream};
use tradecast_gateway::Authenticator;
use tradecast_protocol::{Principal, Role};
use tradecast_testkit::RedisServer;

use crate::common::{
    connect_ws, die_with_parent, http_get, metric_sum, post_events, redis_pid, source_version,
};
use crate::procfs;

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// WebSocket connections to hold: traders, 2 % IBs (chains of 5) and up to 5 admins.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// How long the traffic and churn run once every connection is open: `30m`,
    /// `90s`, `1h`, or plain seconds.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    duration: Duration,
    /// Memory growth before this is not held against the node (at most a third of
    /// the run). The default is the resume history's age limit (600 s): until then the
    /// history only fills.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    warmup: Duration,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// Ticks per second in total, over 30 symbols.
    #[arg(long, default_value_t = 200.0)]
    tick_rate: f64,
    /// Of `--tick-rate`, ticks per second on `prices:forex`, which every trader holds
    /// (each reaches every trader connection).
    #[arg(long, default_value_t = 1.0)]
    forex_tick_rate: f64,
    /// Trade events per second (orders, positions, deals, deposits, alerts, IB moves).
    #[arg(long, default_value_t = 20.0)]
    trade_rate: f64,
    /// Connections closed (and reconnected) per second, in percent of `--connections`.
    #[arg(long, default_value_t = 0.5)]
    churn: f64,
    /// Run the node on a private `redis-server` instead of the embedded broker.
    #[arg(long)]
    redis: bool,
    /// Source addresses 127.0.0.2, 127.0.0.3, … the connections are spread over.
    #[arg(long, default_value_t = 4)]
    source_ips: u8,
    /// Seed of the traffic generator and the churn.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The `tradecast` binary (default: next to this one).
    #[arg(long)]
    tradecast: Option<PathBuf>,
    /// An extra `tradecast serve` argument (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    node_arg: Vec<String>,
    /// The JSON report; the Markdown one goes next to it (same name, `.md`).
    #[arg(long, default_value = "bench/results/soak-10k.json")]
    out: PathBuf,
}

/// `90`, `90s`, `30m`, `1h 30m`: plain seconds, or what `humantime` reads.
fn parse_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}")),
    }
}

const SECRET: &str = "soak-secret";
/// Levels of every IB chain.
const DEPTH: usize = 5;
/// IDs: admins 1…, IB `IB_BASE + 10 · chain + level`, traders `TRADER_BASE + t`.
const IB_BASE: u64 = 900_000;
const TRADER_BASE: u64 = 1_000_000;
/// One trader in this many subscribes to one of the non-forex price groups too.
const EXTRA_GROUP_EVERY: usize = 100;
/// Traffic is posted in one batch per this interval.
const BATCH: Duration = Duration::from_millis(100);
/// A handshake, and the node's start, are each bounded by this.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Memory "levels off" when it grew less than this, in percent (see `Verdict`).
const LEVEL_OFF_PCT: f64 = 2.0;

/// The price groups: `forex` is every trader's default channel.
const GROUPS: [(&str, [&str; 5]); 6] = [
    ("forex", ["EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCHF"]),
    ("metals", ["XAUUSD", "XAGUSD", "XPTUSD", "XPDUSD", "COPPER"]),
    ("indices", ["US500", "US30", "NAS100", "GER40", "UK100"]),
    ("energy", ["USOIL", "UKOIL", "NGAS", "GASOIL", "HEATOIL"]),
    ("crypto", ["BTCUSD", "ETHUSD", "LTCUSD", "XRPUSD", "SOLUSD"]),
    ("softs", ["COFFEE", "COCOA", "SUGAR", "COTTON", "WHEAT"]),
];

// ---------------------------------------------------------------------------
// Who connects
// ---------------------------------------------------------------------------

/// One connection's user, token and the channels it tracks.
struct User {
    id: u64,
    token: String,
    /// Its durable default channels, whose `seq` it checks.
    durable: Vec<String>,
    /// A price group it subscribes to besides its default channels.
    extra: Option<String>,
}

/// The users of a soak of `n` connections: admins, IB chains, traders.
struct Population {
    users: Vec<User>,
    /// `chains[c][l]`: the IB at level `l + 1` of chain `c` (level 1 is the direct IB).
    chains: Vec<[u64; DEPTH]>,
    traders: Vec<u64>,
}

impl Population {
    fn new(n: usize, auth: &Authenticator, ttl_secs: u64) -> anyhow::Result<Population> {
        let admins = (n / 100).clamp(1, 5);
        let chain_count = (n * 2 / 100 / DEPTH).max(1);
        anyhow::ensure!(
            n > admins + chain_count * DEPTH,
            "--connections {n} is too few for {admins} admins and {chain_count} IB chains"
        );
        let chains: Vec<[u64; DEPTH]> = (0..chain_count)
            .map(|c| std::array::from_fn(|l| IB_BASE + 10 * c as u64 + l as u64 + 1))
            .collect();
        let traders: Vec<u64> = (0..n - admins - chain_count * DEPTH)
            .map(|t| TRADER_BASE + t as u64)
            .collect();
        let mut users = Vec::with_capacity(n);
        let mut add = |id: u64, role: Role, durable: Vec<String>, extra: Option<String>| {
            let token = auth.mint(Principal { id, role }, ttl_secs)?;
            users.push(User {
                id,
                token,
                durable,
                extra,
            });
            anyhow::Ok(())
        };
        for a in 0..admins {
            add(a as u64 + 1, Role::Admin, vec!["alerts".to_owned()], None)?;
        }
        for ib in chains.iter().flatten() {
            let durable = vec![format!("commissions:{ib}"), format!("network:{ib}")];
            add(*ib, Role::Ib, durable, None)?;
        }
        for (t, login) in traders.iter().enumerate() {
            let durable = vec![format!("portfolio:{login}"), format!("orders:{login}")];
            let extra = (t % EXTRA_GROUP_EVERY == 0).then(|| {
                let group = GROUPS[1 + (t / EXTRA_GROUP_EVERY) % (GROUPS.len() - 1)].0;
                format!("prices:{group}")
            });
            add(*login, Role::Client, durable, extra)?;
        }
        Ok(Population {
            users,
            chains,
            traders,
        })
    }
}

// ---------------------------------------------------------------------------
// What the clients count
// ---------------------------------------------------------------------------

/// Counters shared by every connection task (relaxed atomics: read for reports only).
#[derive(Default)]
struct Counters {
    /// Text frames received, all kinds.
    frames: AtomicU64,
    prices: AtomicU64,
    /// Durable channel messages (with `seq`) received, applied or not.
    durable: AtomicU64,
    /// Connections open (handshake done, not yet closed).
    up: AtomicU64,
    /// Connections whose durable channels are all tracked (first `subscribed`, or
    /// every resume answered); the initial ones count once.
    ready: AtomicU64,
    /// Connections that could not connect within the deadline and gave up.
    gave_up: AtomicU64,
    /// Failed handshakes (initial and reconnects).
    connect_failures: AtomicU64,
    /// Connections this process closed on purpose.
    churned: AtomicU64,
    /// Handshakes after a close (churned or lost).
    reconnects: AtomicU64,
    /// Resume replies, and of them `recovered: true` / `false`.
    resumes: AtomicU64,
    recovered: AtomicU64,
    not_recovered: AtomicU64,
    /// Durable messages skipped by a gap (`seq > last + 1`).
    lost: AtomicU64,
    /// Durable messages received again (`seq <= last`) outside a resume.
    duplicates: AtomicU64,
    /// `subscribed` the server sent by itself (a resync).
    server_resyncs: AtomicU64,
    /// Connections the node closed or that broke without this process asking.
    server_closes: AtomicU64,
    /// `error` frames.
    errors: AtomicU64,
    pings: AtomicU64,
    pongs: AtomicU64,
    /// The final audit: channels answered, how many messages they were behind, and
    /// answers that were not `recovered`.
    audited: AtomicU64,
    audit_behind: AtomicU64,
    audit_not_recovered: AtomicU64,
}

impl Counters {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

/// What one connection task shares with the coordinator.
struct Shared {
    server: SocketAddr,
    users: Vec<User>,
    source_ips: Vec<Ipv4Addr>,
    counters: Counters,
    /// Connection i is up and every durable channel of it is tracked: it may be churned.
    steady: Vec<AtomicBool>,
    /// At most this many initial handshakes at once.
    initial_gate: Semaphore,
    /// The first problems, for the report, and why connections ended unasked.
    problems: Mutex<Vec<String>>,
    closes: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn problem(&self, text: String) {
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if problems.len() < 30 {
            eprintln!("soak: {text}");
            problems.push(text);
        }
    }

    fn closed(&self, why: String) {
        *self
            .closes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(why)
            .or_default() += 1;
    }
}

// ---------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------

/// What the coordinator asks a connection to do.
#[derive(Debug, Clone, Copy)]
enum Cmd {
    Close(CloseKind),
    /// Ask every durable channel for a replay since `last` (the final check).
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum CloseKind {
    /// A WebSocket close frame (1000), then wait for the node's.
    CloseFrame,
    /// Drop the socket: a TCP FIN without a WebSocket close.
    Drop,
    /// A TCP reset (`SO_LINGER` 0).
    Reset,
}

/// Why a session ended.
enum End {
    Churned,
    Lost,
    Shutdown,
}

/// Why a durable channel is waiting for a `subscribed` reply.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Resume,
    Audit,
}

/// One durable channel of a connection, per docs/protocol.md §6.
struct Track {
    name: String,
    epoch: String,
    last: u64,
    known: bool,
    waiting: Option<Waiting>,
    /// Highest seq seen while waiting (those messages are not applied).
    seen_while_waiting: u64,
}

/// The fields every frame is sorted by; the rest is skipped.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    channel: Option<&'a str>,
    seq: Option<u64>,
}

#[derive(Deserialize)]
struct Subscribed {
    id: Option<String>,
    channel: String,
    epoch: String,
    seq: u64,
    recovered: bool,
}

type Ws = WebSocketStream<TcpStream>;

/// Connection `i` for the whole soak: connect, serve, and after every close
/// reconnect and resume, until the coordinator drops its command sender.
async fn connection(shared: Arc<Shared>, i: usize, mut cmds: mpsc::Receiver<Cmd>) {
    let user = &shared.users[i];
    let local = shared.source_ips[i % shared.source_ips.len()];
    let mut tracks: Vec<Track> = user
        .durable
        .iter()
        .map(|name| Track {
            name: name.clone(),
            epoch: String::new(),
            last: 0,
            known: false,
            waiting: None,
            seen_while_waiting: 0,
        })
        .collect();
    let mut first = true;
    let mut ever_steady = false;
    loop {
        let permit = if first {
            shared.initial_gate.acquire().await.ok()
        } else {
            None
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut attempt = 0u32;
        let ws = loop {
            let result = tokio::time::timeout(
                STEP_TIMEOUT,
                connect_ws(shared.server, local.into(), &user.token),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("handshake timed out")));
            match result {
                Ok(ws) => break Some(ws),
                Err(e) => {
                    shared.counters.connect_failures.fetch_add(1, Relaxed);
                    if attempt == 0 {
                        shared.problem(format!("user {}: {e:#}", user.id));
                    }
                    if Instant::now() >= deadline {
                        break None;
                    }
                    let cap = 8_000u64.min(250 << attempt.min(5));
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=cap))).await;
                }
            }
        };
        drop(permit);
        let Some(ws) = ws else {
            shared.counters.gave_up.fetch_add(1, Relaxed);
            shared.problem(format!("user {}: gave up connecting", user.id));
            return;
        };
        shared.counters.up.fetch_add(1, Relaxed);
        if !first {
            shared.counters.reconnects.fetch_add(1, Relaxed);
        }
        let end = session(&shared, i, ws, &mut tracks, &mut cmds, &mut ever_steady).await;
        shared.counters.up.fetch_sub(1, Relaxed);
        shared.steady[i].store(false, Relaxed);
        first = false;
        match end {
            End::Shutdown => return,
            End::Churned => {
                shared.counters.churned.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(100..=1_000))).await;
            }
            End::Lost => {
                shared.counters.server_closes.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(500..=1_500))).await;
            }
        }
    }
}

/// One WebSocket session of connection `i`.
async fn session(
    shared: &Shared,
    i: usize,
    mut ws: Ws,
    tracks: &mut [Track],
    cmds: &mut mpsc::Receiver<Cmd>,
    ever_steady: &mut bool,
) -> End {
    let user = &shared.users[i];
    let mut requests = Vec::new();
    // Resume every durable channel where this client left it (§7); one it never
    // got to know is taken from the default subscription instead.
    for track in tracks.iter_mut().filter(|t| t.known) {
        track.waiting = Some(Waiting::Resume);
        track.seen_while_waiting = 0;
        requests.push(
            json!({"type":"subscribe","channel":track.name,"id":"resume",
            "since":{"epoch":track.epoch,"seq":track.last}}),
        );
    }
    if let Some(extra) = &user.extra {
        requests.push(json!({"type":"subscribe","channel":extra,"id":"extra"}));
    }
    for request in requests {
        if ws.send(Message::text(request.to_string())).await.is_err() {
            return End::Lost;
        }
    }
    let mut steady = false;
    let mut next_ping = tokio::time::Instant::now() + ping_interval();
    loop {
        if !steady && tracks.iter().all(|t| t.known && t.waiting.is_none()) {
            steady = true;
            if !*ever_steady {
                *ever_steady = true;
                shared.counters.ready.fetch_add(1, Relaxed);
            }
            shared.steady[i].store(true, Relaxed);
        }
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(message)) => {
                    if let Some(text) = message.as_text() {
                        on_text(shared, user.id, tracks, text);
                    } else if let Some((code, reason)) = message.as_close() {
                        shared.closed(format!("close {} {reason}", u16::from(code)));
                    }
                }
                Some(Err(e)) => {
                    shared.closed(format!("error: {e}"));
                    return End::Lost;
                }
                None => {
                    shared.closed("end of stream".to_owned());
                    return End::Lost;
                }
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Close(kind)) => {
                    close(ws, kind).await;
                    return End::Churned;
                }
                Some(Cmd::Audit) => {
                    for track in tracks.iter_mut() {
                        track.waiting = Some(Waiting::Audit);
                        track.seen_while_waiting = 0;
                        let request = json!({"type":"subscribe","channel":track.name,"id":"audit",
                            "since":{"epoch":track.epoch,"seq":track.last}});
                        if ws.send(Message::text(request.to_string())).await.is_err() {
                            return End::Lost;
                        }
                    }
                }
                None => return End::Shutdown,
            },
            _ = tokio::time::sleep_until(next_ping) => {
                next_ping = tokio::time::Instant::now() + ping_interval();
                let ping = json!({"type":"ping","id":"p"}).to_string();
                if ws.send(Message::text(ping)).await.is_err() {
                    return End::Lost;
                }
                shared.counters.pings.fetch_add(1, Relaxed);
            }
        }
    }
}

fn ping_interval() -> Duration {
    Duration::from_millis(fastrand::u64(20_000..=40_000))
}

/// Close the connection the way `kind` says.
async fn close(mut ws: Ws, kind: CloseKind) {
    match kind {
        CloseKind::CloseFrame => {
            let bye = async {
                ws.send(Message::close(Some(CloseCode::NORMAL_CLOSURE), "churn"))
                    .await?;
                // Read until the node's close frame ends the stream.
                while let Some(frame) = ws.next().await {
                    frame?;
                }
                anyhow::Ok(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
        }
        CloseKind::Drop => drop(ws),
        CloseKind::Reset => {
            let _ = ws.get_ref().set_zero_linger();
            drop(ws);
        }
    }
}

/// Sort one text frame: count it, and apply the `seq` rules to durable channels.
fn on_text(shared: &Shared, user: u64, tracks: &mut [Track], text: &str) {
    let counters = &shared.counters;
    counters.frames.fetch_add(1, Relaxed);
    if text.starts_with(r#"{"type":"price""#) {
        counters.prices.fetch_add(1, Relaxed);
        return;
    }
    let head: Head = match serde_json::from_str(text) {
        Ok(head) => head,
        Err(e) => {
            shared.problem(format!("user {user}: unreadable frame ({e}): {text:.200}"));
            return;
        }
    };
    match head.kind {
        "subscribed" => match serde_json::from_str::<Subscribed>(text) {
            Ok(reply) => on_subscribed(shared, user, tracks, reply),
            Err(e) => shared.problem(format!("user {user}: odd subscribed ({e}): {text}")),
        },
        "error" => {
            counters.errors.fetch_add(1, Relaxed);
            shared.problem(format!("user {user}: {text:.300}"));
        }
        "pong" => {
            counters.pongs.fetch_add(1, Relaxed);
        }
        _ => {
            let Some(seq) = head.seq else {
                return; // welcome, snapshots, live figures, exposure
            };
            counters.durable.fetch_add(1, Relaxed);
            let channel = head.channel.unwrap_or_default();
            let Some(track) = tracks.iter_mut().find(|t| t.name == channel) else {
                shared.problem(format!(
                    "user {user}: durable message on {channel}: {text:.200}"
                ));
                return;
            };
            if track.waiting.is_some() {
                track.seen_while_waiting = track.seen_while_waiting.max(seq);
                return;
            }
            if seq <= track.last {
                counters.duplicates.fetch_add(1, Relaxed);
                shared.problem(format!(
                    "user {user}: duplicate seq {seq} on {channel} (last {})",
                    track.last
                ));
            } else {
                if seq > track.last + 1 {
                    counters.lost.fetch_add(seq - track.last - 1, Relaxed);
                    shared.problem(format!(
                        "user {user}: gap on {channel}: seq {seq} after {}",
                        track.last
                    ));
                }
                track.last = seq;
            }
        }
    }
}

fn on_subscribed(shared: &Shared, user: u64, tracks: &mut [Track], reply: Subscribed) {
    let counters = &shared.counters;
    let Some(track) = tracks.iter_mut().find(|t| t.name == reply.channel) else {
        return; // a price group
    };
    match (reply.id.as_deref(), track.waiting) {
        (None, _) if !track.known => {
            // The default subscription of the first connection.
            track.epoch = reply.epoch;
            track.last = reply.seq;
            track.known = true;
        }
        // The default subscription of a reconnect: the resume reply follows.
        (None, Some(_)) => {}
        (None, None) => {
            counters.server_resyncs.fetch_add(1, Relaxed);
            shared.problem(format!(
                "user {user}: the node resynced {} (seq {} → {})",
                track.name, track.last, reply.seq
            ));
            track.epoch = reply.epoch;
            track.last = reply.seq;
        }
        (Some("resume"), Some(Waiting::Resume)) => {
            track.waiting = None;
            counters.resumes.fetch_add(1, Relaxed);
            if reply.recovered && reply.epoch == track.epoch {
                counters.recovered.fetch_add(1, Relaxed);
                // The replay (last, reply.seq] follows; `last` stays.
            } else {
                counters.not_recovered.fetch_add(1, Relaxed);
                shared.problem(format!(
                    "user {user}: resume of {} since {} not recovered (seq {}, epoch {} → {})",
                    track.name, track.last, reply.seq, track.epoch, reply.epoch
                ));
                track.epoch = reply.epoch;
                track.last = reply.seq;
            }
        }
        (Some("audit"), Some(Waiting::Audit)) => {
            track.waiting = None;
            counters.audited.fetch_add(1, Relaxed);
            // Delivered live before the reply, even if not applied meanwhile.
            let got = track.last.max(track.seen_while_waiting);
            if !reply.recovered || reply.epoch != track.epoch {
                counters.audit_not_recovered.fetch_add(1, Relaxed);
                shared.problem(format!(
                    "user {user}: audit of {} not recovered (seq {}, recovered {})",
                    track.name, reply.seq, reply.recovered
                ));
                track.last = reply.seq;
            } else if reply.seq > got {
                counters.audit_behind.fetch_add(reply.seq - got, Relaxed);
                shared.problem(format!(
                    "user {user}: {} is at seq {}, the client got only up to {got}",
                    track.name, reply.seq
                ));
            }
        }
        (id, _) => shared.problem(format!(
            "user {user}: unexpected subscribed (id {id:?}) on {}",
            track.name
        )),
    }
}

// ---------------------------------------------------------------------------
// The traffic
// ---------------------------------------------------------------------------

/// One symbol's price, random-walking.
struct Quote {
    symbol: &'static str,
    group: &'static str,
    digits: u32,
    mid: f64,
    spread: f64,
}

impl Quote {
    fn round(&self, price: f64) -> f64 {
        let scale = 10f64.powi(self.digits as i32);
        (price * scale).round() / scale
    }
    fn bid(&self) -> f64 {
        self.round(self.mid - self.spread / 2.0)
    }
    fn ask(&self) -> f64 {
        self.round(self.mid + self.spread / 2.0)
    }
}

/// A trade in progress for one trader: the next step of
/// order add → order filled → position open → SL set → closing deal → position close.
struct Cycle {
    trader: usize,
    step: u8,
    order: u64,
    position: u64,
    deal: u64,
    symbol: usize,
    buy: bool,
    profit: f64,
}

/// Makes the set-up and steady-state ingest events.
struct Traffic {
    rng: fastrand::Rng,
    src_trades: String,
    src_ticks: String,
    seq_trades: u64,
    seq_ticks: u64,
    quotes: Vec<Quote>,
    traders: Vec<u64>,
    chains: Vec<[u64; DEPTH]>,
    /// The chain each trader is linked to now.
    chain_of: Vec<usize>,
    cycles: Vec<Cycle>,
    busy: Vec<bool>,
    in_margin_call: Vec<usize>,
    next_ticket: u64,
    /// Events generated by kind.
    made: BTreeMap<&'static str, u64>,
}

/// Trades open at once, at most.
const MAX_CYCLES: usize = 60;

impl Traffic {
    fn new(seed: u64, population: &Population) -> Traffic {
        let tag = format!("{}-{}", std::process::id(), wall_ms());
        let mut quotes = Vec::new();
        for (g, (group, symbols)) in GROUPS.iter().enumerate() {
            for (k, symbol) in symbols.iter().enumerate() {
                let (digits, mid) = match (g, *symbol) {
                    (0, "USDJPY") => (3, 151.2),
                    (0, _) => (5, 1.05 + 0.1 * k as f64),
                    _ => (2, 100.0 * (k + 1) as f64 * (g + 1) as f64),
                };
                quotes.push(Quote {
                    symbol,
                    group,
                    digits,
                    mid,
                    spread: mid * 0.0001,
                });
            }
        }
        let traders = population.traders.clone();
        let chains = population.chains.clone();
        Traffic {
            rng: fastrand::Rng::with_seed(seed),
            src_trades: format!("soak-{tag}"),
            src_ticks: format!("soak-{tag}/ticks"),
            seq_trades: 0,
            seq_ticks: 0,
            quotes,
            chain_of: (0..traders.len()).map(|t| t % chains.len()).collect(),
            busy: vec![false; traders.len()],
            traders,
            chains,
            cycles: Vec::new(),
            in_margin_call: Vec::new(),
            next_ticket: 10_000_000,
            made: BTreeMap::new(),
        }
    }

    fn trade(&mut self, kind: &'static str, body: Value) -> Value {
        self.seq_trades += 1;
        *self.made.entry(kind).or_default() += 1;
        envelope(&self.src_trades, self.seq_trades, body)
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Symbols, accounts, IB chains and trader links, then a first tick per symbol.
    fn setup(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        for q in 0..self.quotes.len() {
            let quote = &self.quotes[q];
            // A currency pair has a base currency; the other symbols (metals,
            // indices, …) are quoted in USD here, without one.
            let body = if quote.group == "forex" {
                json!({"type":"symbol","symbol":quote.symbol,"group":quote.group,
                    "digits":quote.digits,"contract_size":100_000,
                    "base_ccy":&quote.symbol[..3],"profit_ccy":&quote.symbol[3..]})
            } else {
                json!({"type":"symbol","symbol":quote.symbol,"group":quote.group,
                    "digits":quote.digits,"contract_size":100,"profit_ccy":"USD"})
            };
            events.push(self.trade("symbol", body));
        }
        for t in 0..self.traders.len() {
            let login = self.traders[t];
            let body = json!({"type":"account","login":login,"name":format!("Trader {login}"),
                "ccy":"USD","leverage":100,"balance":10_000.0,"credit":0.0});
            events.push(self.trade("account", body));
        }
        for c in 0..self.chains.len() {
            for l in 0..DEPTH - 1 {
                let (login, ib) = (self.chains[c][l], self.chains[c][l + 1]);
                events.push(self.trade(
                    "ib_link",
                    json!({"type":"ib_link","op":"set","login":login,"ib":ib}),
                ));
            }
        }
        for t in 0..self.traders.len() {
            let (login, ib) = (self.traders[t], self.chains[self.chain_of[t]][0]);
            events.push(self.trade(
                "ib_link",
                json!({"type":"ib_link","op":"set","login":login,"ib":ib}),
            ));
        }
        for q in 0..self.quotes.len() {
            events.push(self.tick(q));
        }
        events
    }

    fn tick(&mut self, q: usize) -> Value {
        let quote = &mut self.quotes[q];
        quote.mid *= 1.0 + (self.rng.f64() - 0.5) * 0.0004;
        let body = json!({"type":"tick","symbol":quote.symbol,"bid":quote.bid(),
            "ask":quote.ask(),"digits":quote.digits});
        self.seq_ticks += 1;
        *self.made.entry("tick").or_default() += 1;
        envelope(&self.src_ticks, self.seq_ticks, body)
    }

    /// A tick of a forex major (`prices:forex`), or of another group's symbol.
    fn next_tick(&mut self, forex: bool) -> Value {
        let per_group = GROUPS[0].1.len();
        let q = if forex {
            self.rng.usize(0..per_group)
        } else {
            self.rng.usize(per_group..self.quotes.len())
        };
        self.tick(q)
    }

    /// The next trade event.
    fn next_trade(&mut self) -> Value {
        let roll = self.rng.u32(0..100);
        let t = self.rng.usize(0..self.traders.len());
        let login = self.traders[t];
        match roll {
            0..5 => {
                let deal = self.ticket();
                self.trade(
                    "deal balance",
                    json!({"type":"deal","login":login,"deal":deal,"action":"balance",
                        "profit":100.0,"comment":"deposit"}),
                )
            }
            5 => {
                let leave = !self.in_margin_call.is_empty() && self.rng.bool();
                let (op, t) = if leave {
                    let k = self.rng.usize(0..self.in_margin_call.len());
                    ("leave", self.in_margin_call.swap_remove(k))
                } else {
                    self.in_margin_call.push(t);
                    ("enter", t)
                };
                let body = json!({"type":"margin_call","op":op,"login":self.traders[t],
                    "equity":900.0,"margin":1000.0,"margin_level":90.0,"threshold":100});
                self.trade("margin_call", body)
            }
            6 => {
                // The trader moves to the next chain: client_left on the old one,
                // client_joined on the new one (every level).
                let chain = (self.chain_of[t] + 1) % self.chains.len();
                self.chain_of[t] = chain;
                let ib = self.chains[chain][0];
                self.trade(
                    "ib_link move",
                    json!({"type":"ib_link","op":"set","login":login,"ib":ib}),
                )
            }
            _ => self.cycle_step(),
        }
    }

    fn cycle_step(&mut self) -> Value {
        let start = self.cycles.is_empty() || (self.cycles.len() < MAX_CYCLES && self.rng.bool());
        let k = if start {
            let mut t = self.rng.usize(0..self.traders.len());
            for _ in 0..10 {
                if !self.busy[t] {
                    break;
                }
                t = self.rng.usize(0..self.traders.len());
            }
            if self.busy[t] {
                self.rng.usize(0..self.cycles.len())
            } else {
                self.busy[t] = true;
                let (order, position, deal) = (self.ticket(), self.ticket(), self.ticket());
                self.cycles.push(Cycle {
                    trader: t,
                    step: 0,
                    order,
                    position,
                    deal,
                    symbol: self.rng.usize(0..self.quotes.len()),
                    buy: self.rng.bool(),
                    profit: ((self.rng.f64() - 0.5) * 10_000.0).round() / 100.0,
                });
                self.cycles.len() - 1
            }
        } else {
            self.rng.usize(0..self.cycles.len())
        };
        let c = &mut self.cycles[k];
        let step = c.step;
        c.step += 1;
        let (trader, order, position, deal, buy, profit) =
            (c.trader, c.order, c.position, c.deal, c.buy, c.profit);
        let quote = &self.quotes[c.symbol];
        let (symbol, price) = (quote.symbol, if buy { quote.ask() } else { quote.bid() });
        let sl = quote.round(if buy { price * 0.99 } else { price * 1.01 });
        let close_price = if buy { quote.bid() } else { quote.ask() };
        let login = self.traders[trader];
        let (side, other) = if buy {
            ("buy", "sell")
        } else {
            ("sell", "buy")
        };
        match step {
            0 => self.trade(
                "order add",
                json!({"type":"order","op":"add","login":login,"order":order,"symbol":symbol,
                    "order_type":side,"state":"placed","vol_initial":10_000,"vol_current":10_000,
                    "price_order":price}),
            ),
            1 => self.trade(
                "order filled",
                json!({"type":"order","op":"delete","login":login,"order":order,
                    "state":"filled","vol_current":0,"position_id":position}),
            ),
            2 => self.trade(
                "position open",
                json!({"type":"position","op":"open","login":login,"position_id":position,
                    "symbol":symbol,"side":side,"vol":10_000,"price_open":price}),
            ),
            3 => self.trade(
                "position update",
                json!({"type":"position","op":"update","login":login,"position_id":position,"sl":sl}),
            ),
            4 => self.trade(
                "deal out",
                json!({"type":"deal","login":login,"deal":deal,"position_id":position,
                    "action":other,"entry":"out","symbol":symbol,"vol":10_000,"price":close_price,
                    "profit":profit,"commission":-3.0}),
            ),
            _ => {
                self.cycles.swap_remove(k);
                self.busy[trader] = false;
                self.trade(
                    "position close",
                    json!({"type":"position","op":"close","login":login,"position_id":position,
                        "close_deal":deal,"profit":profit}),
                )
            }
        }
    }
}

/// An event body wrapped in the ingest envelope.
fn envelope(src: &str, seq: u64, body: Value) -> Value {
    let mut event = json!({"v": 1, "src": src, "seq": seq, "ts": wall_ms()});
    if let (Some(e), Value::Object(b)) = (event.as_object_mut(), body) {
        e.extend(b);
    }
    event
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the traffic task did.
#[derive(Debug, Default, Serialize)]
struct Posted {
    batches: u64,
    ticks: u64,
    trade_events: u64,
    failed_posts: u64,
    seconds: f64,
}

/// Posts ticks and trade events every 100 ms until `until`.
async fn traffic(
    admin: SocketAddr,
    mut generator: Traffic,
    args: Rates,
    until: tokio::time::Instant,
) -> (Posted, Traffic) {
    let mut posted = Posted::default();
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(BATCH);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut forex, mut other, mut trades) = (0u64, 0u64, 0u64);
    loop {
        ticker.tick().await;
        let now = tokio::time::Instant::now();
        if now >= until {
            break;
        }
        let s = now.duration_since(started).as_secs_f64();
        let due = |rate: f64, done: u64| ((s * rate) as u64).saturating_sub(done);
        let n_forex = due(args.forex_ticks, forex);
        let n_other = due(args.other_ticks, other);
        let n_trades = due(args.trades, trades);
        let mut batch = Vec::with_capacity((n_forex + n_other + n_trades) as usize);
        for _ in 0..n_trades {
            batch.push(generator.next_trade());
        }
        for _ in 0..n_forex {
            batch.push(generator.next_tick(true));
        }
        for _ in 0..n_other {
            batch.push(generator.next_tick(false));
        }
        (forex, other, trades) = (forex + n_forex, other + n_other, trades + n_trades);
        if batch.is_empty() {
            continue;
        }
        match post_events(admin, &Value::Array(batch).to_string()).await {
            Ok(()) => {
                posted.batches += 1;
                posted.ticks += n_forex + n_other;
                posted.trade_events += n_trades;
            }
            Err(e) => {
                posted.failed_posts += 1;
                if posted.failed_posts <= 5 {
                    eprintln!("soak: {e:#}");
                }
            }
        }
    }
    posted.seconds = started.elapsed().as_secs_f64();
    (posted, generator)
}

#[derive(Debug, Clone, Copy)]
struct Rates {
    forex_ticks: f64,
    other_ticks: f64,
    trades: f64,
}

/// Every second closes `percent` % of the steady connections (a random third each
/// way) until `until`; returns how many it asked to close, by kind.
async fn churn(
    shared: Arc<Shared>,
    senders: Arc<Vec<mpsc::Sender<Cmd>>>,
    percent: f64,
    seed: u64,
    until: tokio::time::Instant,
) -> BTreeMap<CloseKind, u64> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut asked: BTreeMap<CloseKind, u64> = BTreeMap::new();
    let per_second = senders.len() as f64 * percent / 100.0;
    let mut owed = 0.0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    while tokio::time::Instant::now() < until {
        ticker.tick().await;
        owed += per_second;
        while owed >= 1.0 {
            owed -= 1.0;
            // A steady connection, found in a few random tries.
            let picked = (0..20).map(|_| rng.usize(0..senders.len())).find(|&i| {
                shared.steady[i]
                    .compare_exchange(true, false, Relaxed, Relaxed)
                    .is_ok()
            });
            let Some(i) = picked else { continue };
            let kind = [CloseKind::CloseFrame, CloseKind::Drop, CloseKind::Reset][rng.usize(0..3)];
            if senders[i].try_send(Cmd::Close(kind)).is_ok() {
                *asked.entry(kind).or_default() += 1;
            }
        }
    }
    asked
}

// ---------------------------------------------------------------------------
// The node
// ---------------------------------------------------------------------------

/// The `tradecast serve` process (killed when dropped) and the Redis it may use.
struct Node {
    child: Child,
    public: SocketAddr,
    admin: SocketAddr,
    redis: Option<RedisServer>,
}

impl Node {
    async fn start(
        tradecast: &Path,
        redis: Option<RedisServer>,
        extra: &[String],
    ) -> anyhow::Result<Node> {
        let mut command = Command::new(tradecast);
        command
            .args(["serve", "--jwt-secret", SECRET])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--max-connections-per-user", "0"]);
        if let Some(redis) = &redis {
            command.args(["--redis", &redis.url()]);
        }
        command
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", tradecast.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("node stdout")?).lines();
        let line = tokio::time::timeout(STEP_TIMEOUT, lines.next_line())
            .await
            .context("the node printed no listening line")??
            .context("the node exited at start")?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = |key: &str| -> anyhow::Result<SocketAddr> {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(key))
                .with_context(|| format!("no {key} in {line:?}"))?
                .parse()
                .context("address")
        };
        Ok(Node {
            public: addr("public=")?,
            admin: addr("admin=")?,
            child,
            redis,
        })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the node has exited")
    }

    /// The node's `/metrics` text.
    async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = http_get(self.admin, "/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(body)
    }

    /// The sum of every sample of `name` on `/metrics`.
    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        Ok(metric_sum(&self.metrics().await?, name))
    }

    async fn wait_for(
        &self,
        what: &str,
        mut ok: impl AsyncFnMut(&Node) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok(self).await {
            anyhow::ensure!(Instant::now() < deadline, "waited 60 s for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Samples and the verdict
// ---------------------------------------------------------------------------

/// One sample of the node and the clients, over the interval since the previous one.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    /// Seconds since the traffic started.
    t_s: f64,
    node_rss_kib: u64,
    /// What the node's allocator says it holds (`tradecast_memory_allocated_bytes`).
    heap_kib: u64,
    /// The embedded broker's resume history (`tradecast_history_bytes`; 0 on Redis).
    history_kib: u64,
    /// Node CPU over the interval, in % of one core.
    node_cpu_pct: f64,
    soak_rss_kib: u64,
    soak_cpu_pct: f64,
    redis_rss_kib: Option<u64>,
    redis_cpu_pct: Option<f64>,
    /// The whole machine's busy CPU over the interval, in % of one core (200 % = all).
    machine_cpu_pct: f64,
    load_avg_1m: f64,
    /// `tradecast_connections` on the node, and the connections this process holds.
    node_connections: u64,
    client_connections: u64,
    /// Text frames the clients received per second over the interval.
    messages_per_s: f64,
    messages_total: u64,
    churned_total: u64,
    reconnects_total: u64,
    lost_total: u64,
    duplicates_total: u64,
    not_recovered_total: u64,
}

/// Reads the processes and counters; keeps the previous reading for the rates.
struct Sampler {
    started: Instant,
    node_pid: u32,
    redis_pid: Option<u32>,
    last: (Instant, [f64; 4], u64),
}

impl Sampler {
    fn cpu(&self) -> [f64; 4] {
        [
            procfs::cpu_seconds(self.node_pid).unwrap_or(0.0),
            procfs::cpu_seconds(std::process::id()).unwrap_or(0.0),
            self.redis_pid
                .map_or(0.0, |p| procfs::cpu_seconds(p).unwrap_or(0.0)),
            procfs::machine_busy_seconds().unwrap_or(0.0),
        ]
    }

    fn new(
        started: Instant,
        node_pid: u32,
        redis_pid: Option<u32>,
        counters: &Counters,
    ) -> Sampler {
        let mut sampler = Sampler {
            started,
            node_pid,
            redis_pid,
            last: (Instant::now(), [0.0; 4], 0),
        };
        sampler.last = (
            Instant::now(),
            sampler.cpu(),
            Counters::get(&counters.frames),
        );
        sampler
    }

    async fn sample(&mut self, node: &Node, c: &Counters) -> anyhow::Result<Sample> {
        let now = Instant::now();
        let cpu = self.cpu();
        let frames = Counters::get(&c.frames);
        let (then, cpu_then, frames_then) = self.last;
        let secs = now.duration_since(then).as_secs_f64().max(1e-3);
        let pct = |k: usize| ((cpu[k] - cpu_then[k]) / secs * 1000.0).round() / 10.0;
        self.last = (now, cpu, frames);
        let metrics = node.metrics().await.ok();
        let metric = |name| metrics.as_deref().map(|body| metric_sum(body, name));
        Ok(Sample {
            t_s: (now.duration_since(self.started).as_secs_f64() * 10.0).round() / 10.0,
            node_rss_kib: procfs::rss_kib(self.node_pid)?,
            heap_kib: (metric("tradecast_memory_allocated_bytes").unwrap_or(0.0) / 1024.0) as u64,
            history_kib: (metric("tradecast_history_bytes").unwrap_or(0.0) / 1024.0) as u64,
            node_cpu_pct: pct(0),
            soak_rss_kib: procfs::rss_kib(std::process::id())?,
            soak_cpu_pct: pct(1),
            redis_rss_kib: self.redis_pid.and_then(|p| procfs::rss_kib(p).ok()),
            redis_cpu_pct: self.redis_pid.map(|_| pct(2)),
            machine_cpu_pct: pct(3),
            load_avg_1m: procfs::load_average().map_or(0.0, |l| l[0]),
            node_connections: metric("tradecast_connections").unwrap_or(-1.0) as u64,
            client_connections: Counters::get(&c.up),
            messages_per_s: ((frames - frames_then) as f64 / secs).round(),
            messages_total: frames,
            churned_total: Counters::get(&c.churned),
            reconnects_total: Counters::get(&c.reconnects),
            lost_total: Counters::get(&c.lost),
            duplicates_total: Counters::get(&c.duplicates),
            not_recovered_total: Counters::get(&c.not_recovered),
        })
    }
}

fn print_sample(s: &Sample) {
    let t = s.t_s as u64;
    eprintln!(
        "[{:>2}:{:02}] node {:>6.1} MiB {:>5.1} % heap {:>6.1} MiB history {:>5.1} MiB | soak {:>6.1} MiB {:>5.1} % | machine {:>5.1} % load {:.2} | \
         conns {}/{} | {:>6} msg/s | churned {} reconnects {} | lost {} dup {} not-recovered {}",
        t / 60,
        t % 60,
        s.node_rss_kib as f64 / 1024.0,
        s.node_cpu_pct,
        s.heap_kib as f64 / 1024.0,
        s.history_kib as f64 / 1024.0,
        s.soak_rss_kib as f64 / 1024.0,
        s.soak_cpu_pct,
        s.machine_cpu_pct,
        s.load_avg_1m,
        s.node_connections,
        s.client_connections,
        s.messages_per_s,
        s.churned_total,
        s.reconnects_total,
        s.lost_total,
        s.duplicates_total,
        s.not_recovered_total
    );
}

/// Does the node's memory level off? See bench/soak.md for the rule.
#[derive(Debug, Serialize)]
struct Verdict {
    warmup_s: f64,
    /// Mean RSS of the samples in the middle and the last third of the run.
    middle_third_mean_kib: f64,
    last_third_mean_kib: f64,
    /// (last − middle) / middle.
    third_to_third_growth_pct: f64,
    /// Least-squares slope of RSS over the samples after the warm-up.
    slope_kib_per_min: f64,
    /// The slope times the length of the post-warm-up window, over its mean RSS.
    post_warmup_drift_pct: f64,
    levels_off: bool,
    rule: String,
}

fn verdict(samples: &[Sample], duration_s: f64, warmup_s: f64) -> Option<Verdict> {
    let mean = |from: f64, to: f64| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.t_s >= from && s.t_s <= to)
            .map(|s| s.node_rss_kib as f64)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let middle = mean(duration_s / 3.0, 2.0 * duration_s / 3.0)?;
    let last = mean(2.0 * duration_s / 3.0, f64::INFINITY)?;
    let post: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t_s >= warmup_s)
        .map(|s| (s.t_s / 60.0, s.node_rss_kib as f64))
        .collect();
    if post.len() < 3 {
        return None;
    }
    let n = post.len() as f64;
    let (mx, my) = (
        post.iter().map(|p| p.0).sum::<f64>() / n,
        post.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = post.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = post.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let window_min = post.last()?.0 - post.first()?.0;
    let growth = (last - middle) / middle * 100.0;
    let drift = slope * window_min / my * 100.0;
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Some(Verdict {
        warmup_s,
        middle_third_mean_kib: middle.round(),
        last_third_mean_kib: last.round(),
        third_to_third_growth_pct: round(growth),
        slope_kib_per_min: round(slope),
        post_warmup_drift_pct: round(drift),
        levels_off: growth < LEVEL_OFF_PCT && drift < LEVEL_OFF_PCT,
        rule: format!(
            "levels off when the mean RSS of the last third of the run is less than \
             {LEVEL_OFF_PCT} % above the mean of the middle third, and the least-squares \
             slope after the warm-up, over that window, adds up to less than {LEVEL_OFF_PCT} % \
             of the mean RSS there"
        ),
    })
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Runs the soak. On Ctrl-C or SIGTERM `main` drops this future, and with it the
/// node and Redis (both are killed when dropped).
pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.sample_secs > 0, "--sample-secs must be positive");
    anyhow::ensure!(
        args.forex_tick_rate >= 0.0 && args.tick_rate >= args.forex_tick_rate,
        "--forex-tick-rate must be between 0 and --tick-rate"
    );
    anyhow::ensure!(
        (1..=200).contains(&args.source_ips),
        "--source-ips must be 1 to 200"
    );
    let command = std::env::args()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 {
                "./target/release/tradecast-bench".to_owned()
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let source = source_version();
    let tradecast = args.tradecast.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .map(|me| me.with_file_name("tradecast"))
            .unwrap_or_else(|_| PathBuf::from("tradecast"))
    });
    let duration_s = args.duration.as_secs_f64();
    let warmup_s = args.warmup.as_secs_f64().min(duration_s / 3.0);

    // 1. The node, at rest.
    let redis = if args.redis {
        Some(tokio::task::spawn_blocking(RedisServer::start).await?)
    } else {
        None
    };
    let node = Node::start(&tradecast, redis, &args.node_arg).await?;
    let node_pid = node.pid()?;
    let redis_pid = node.redis.as_ref().and_then(|r| redis_pid(r.port()));
    eprintln!(
        "node pid {node_pid} public={} admin={}{}",
        node.public,
        node.admin,
        node.redis
            .as_ref()
            .map_or(String::new(), |r| format!(" redis={}", r.url()))
    );
    node.wait_for("/readyz 200", async |n: &Node| {
        http_get(n.admin, "/readyz")
            .await
            .is_ok_and(|(s, _)| s == 200)
    })
    .await?;
    if args.redis {
        node.wait_for("the ingest lease", async |n: &Node| {
            n.metric("tradecast_ingest_leader")
                .await
                .is_ok_and(|v| v == 1.0)
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_at_rest = procfs::rss_kib(node_pid)?;

    // 2. Set-up events.
    let auth = Authenticator::new(Some(SECRET), None)?;
    let ttl = args.duration.as_secs() + 4 * 3600;
    let population = Population::new(args.connections, &auth, ttl)?;
    let mut generator = Traffic::new(args.seed, &population);
    let setup = generator.setup();
    for chunk in setup.chunks(500) {
        post_events(node.admin, &serde_json::to_string(chunk)?)
            .await
            .context("posting the set-up events")?;
    }
    if args.redis {
        let count = setup.len() as f64;
        node.wait_for("the set-up events to be applied", async |n: &Node| {
            n.metric("tradecast_ingest_events_total")
                .await
                .is_ok_and(|v| v >= count)
        })
        .await?;
    }
    let rss_after_setup = procfs::rss_kib(node_pid)?;

    // 3. The connections.
    let n = population.users.len();
    let shared = Arc::new(Shared {
        server: node.public,
        users: population.users,
        source_ips: (0..args.source_ips)
            .map(|k| Ipv4Addr::new(127, 0, 0, 2 + k))
            .collect(),
        counters: Counters::default(),
        steady: (0..n).map(|_| AtomicBool::new(false)).collect(),
        initial_gate: Semaphore::new(64),
        problems: Mutex::new(Vec::new()),
        closes: Mutex::new(BTreeMap::new()),
    });
    eprintln!(
        "opening {n} connections ({} traders, {} IBs, {} admins) from {} source addresses…",
        population.traders.len(),
        population.chains.len() * DEPTH,
        n - population.traders.len() - population.chains.len() * DEPTH,
        args.source_ips
    );
    let connect_started = Instant::now();
    let mut senders = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = mpsc::channel(2);
        senders.push(tx);
        tasks.push(tokio::spawn(connection(shared.clone(), i, rx)));
    }
    let senders = Arc::new(senders);
    let bar = indicatif::ProgressBar::new(n as u64).with_message("connections ready");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let c = &shared.counters;
        let (ready, gave_up) = (Counters::get(&c.ready), Counters::get(&c.gave_up));
        bar.set_position(ready);
        if ready + gave_up >= n as u64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {n} connections after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let connect_s = connect_started.elapsed().as_secs_f64();
    let gave_up = Counters::get(&shared.counters.gave_up);
    anyhow::ensure!(gave_up == 0, "{gave_up} connections could not connect");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = procfs::rss_kib(node_pid)?;
    eprintln!(
        "{n} connections in {connect_s:.1} s; node RSS at rest {} MiB, after set-up {} MiB, connected {} MiB",
        rss_at_rest / 1024,
        rss_after_setup / 1024,
        rss_connected / 1024
    );

    // 4. Traffic and churn, sampled.
    let rates = Rates {
        forex_ticks: args.forex_tick_rate,
        other_ticks: args.tick_rate - args.forex_tick_rate,
        trades: args.trade_rate,
    };
    eprintln!(
        "traffic for {}: {} ticks/s ({} on prices:forex), {} trade events/s, churn {} %/s",
        humantime::format_duration(args.duration),
        args.tick_rate,
        args.forex_tick_rate,
        args.trade_rate,
        args.churn
    );
    let started = Instant::now();
    let until = tokio::time::Instant::now() + args.duration;
    let traffic_task = tokio::spawn(traffic(node.admin, generator, rates, until));
    let churn_task = tokio::spawn(churn(
        shared.clone(),
        senders.clone(),
        args.churn,
        args.seed,
        until,
    ));
    let mut sampler = Sampler::new(started, node_pid, redis_pid, &shared.counters);
    let mut samples = Vec::new();
    let mut next = tokio::time::Instant::now();
    loop {
        next += Duration::from_secs(args.sample_secs);
        if next > until {
            break;
        }
        tokio::time::sleep_until(next).await;
        let sample = sampler.sample(&node, &shared.counters).await?;
        print_sample(&sample);
        samples.push(sample);
    }
    let (posted, generator) = traffic_task.await?;
    let churn_asked = churn_task.await?;
    let last = sampler.sample(&node, &shared.counters).await?;
    if samples.last().is_none_or(|s| last.t_s - s.t_s >= 1.0) {
        print_sample(&last);
        samples.push(last);
    }

    // 5. The audit: every connection up and resumed, traffic quiet, then a replay
    // request per durable channel.
    let c = &shared.counters;
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.steady.iter().any(|s| !s.load(Relaxed)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let channels: u64 = shared.users.iter().map(|u| u.durable.len() as u64).sum();
    for tx in senders.iter() {
        let _ = tx.send(Cmd::Audit).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Counters::get(&c.audited) < channels && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audited = Counters::get(&c.audited);
    let metrics = node.metrics().await?;
    let node_counts: serde_json::Map<String, Value> = [
        "tradecast_connections_total",
        "tradecast_connections_refused_total",
        "tradecast_resumes_total",
        "tradecast_slow_consumer_closes_total",
        "tradecast_outbox_conflated_total",
        "tradecast_frames_out_total",
        "tradecast_ingest_rejected_total",
        "tradecast_ingest_dead_letters_total",
        "tradecast_publish_failures_total",
    ]
    .into_iter()
    .map(|name| {
        let key = name.trim_start_matches("tradecast_").to_owned();
        (key, json!(metric_sum(&metrics, name)))
    })
    .collect();
    for task in &tasks {
        task.abort();
    }
    drop(node);

    // 6. The report.
    let lost = Counters::get(&c.lost) + Counters::get(&c.audit_behind);
    let duplicates = Counters::get(&c.duplicates);
    let not_recovered = Counters::get(&c.not_recovered) + Counters::get(&c.audit_not_recovered);
    let ok = lost == 0 && duplicates == 0 && not_recovered == 0 && audited == channels;
    let verdict = verdict(&samples, duration_s, warmup_s);
    let problems = shared
        .problems
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let closes = shared
        .closes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let report = json!({
        "bench": "soak",
        "ok": ok,
        "date": started_at,
        "command": command,
        "source": source,
        "machine": machine(),
        "parameters": {
            "connections": n,
            "traders": population.traders.len(),
            "ibs": population.chains.len() * DEPTH,
            "ib_chains": population.chains.len(),
            "admins": n - population.traders.len() - population.chains.len() * DEPTH,
            "traders_with_an_extra_price_group": population.traders.len().div_ceil(EXTRA_GROUP_EVERY),
            "duration_s": duration_s,
            "warmup_s": warmup_s,
            "sample_secs": args.sample_secs,
            "tick_rate": args.tick_rate,
            "forex_tick_rate": args.forex_tick_rate,
            "trade_rate": args.trade_rate,
            "churn_pct_per_s": args.churn,
            "broker": if args.redis { "redis" } else { "embedded" },
            "source_ips": args.source_ips,
            "seed": args.seed,
            "node_args": args.node_arg,
        },
        "connect_seconds": (connect_s * 10.0).round() / 10.0,
        "node_rss_kib": {"at_rest": rss_at_rest, "after_setup": rss_after_setup, "connected": rss_connected},
        "posted": posted,
        "events_by_kind": generator.made,
        "churn_asked": churn_asked,
        "clients": {
            "messages": Counters::get(&c.frames),
            "prices": Counters::get(&c.prices),
            "durable": Counters::get(&c.durable),
            "churned": Counters::get(&c.churned),
            "reconnects": Counters::get(&c.reconnects),
            "connect_failures": Counters::get(&c.connect_failures),
            "server_closes": Counters::get(&c.server_closes),
            "closes_seen": closes,
            "resumes": Counters::get(&c.resumes),
            "recovered": Counters::get(&c.recovered),
            "not_recovered": Counters::get(&c.not_recovered),
            "lost_gaps": Counters::get(&c.lost),
            "duplicates": duplicates,
            "server_resyncs": Counters::get(&c.server_resyncs),
            "errors": Counters::get(&c.errors),
            "pings": Counters::get(&c.pings),
            "pongs": Counters::get(&c.pongs),
            "audit": {"channels": channels, "answered": audited,
                      "behind": Counters::get(&c.audit_behind),
                      "not_recovered": Counters::get(&c.audit_not_recovered)},
        },
        "lost": lost,
        "duplicates": duplicates,
        "not_recovered": not_recovered,
        "node": node_counts,
        "verdict": verdict,
        "problems": problems,
        "samples": samples,
    });
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    let md_path = args.out.with_extension("md");
    std::fs::write(&md_path, markdown(&report, &samples, verdict.as_ref()))
        .with_context(|| format!("writing {}", md_path.display()))?;
    eprintln!("wrote {} and {}", args.out.display(), md_path.display());
    match &verdict {
        Some(v) => eprintln!(
            "memory: middle third {:.1} MiB, last third {:.1} MiB ({:+.2} %), slope after warm-up {:.1} KiB/min ({:+.2} % over the window): {}",
            v.middle_third_mean_kib / 1024.0,
            v.last_third_mean_kib / 1024.0,
            v.third_to_third_growth_pct,
            v.slope_kib_per_min,
            v.post_warmup_drift_pct,
            if v.levels_off {
                "levels off"
            } else {
                "DOES NOT LEVEL OFF"
            }
        ),
        None => eprintln!("memory: too few samples after the warm-up for a verdict"),
    }
    eprintln!(
        "delivery: {lost} lost, {duplicates} duplicated, {not_recovered} resumes not recovered, {audited} of {channels} channels audited"
    );
    if !ok {
        bail!("the soak lost or duplicated messages, or a resume was not recovered");
    }
    Ok(())
}

/// Cores, memory and CPU model, from `/proc`.
fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned());
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_kib": procfs::mem_total_kib().unwrap_or(0),
        "cpu": model,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "note": "shared: other engineers compiled and ran tests on the same 2 cores during the run",
    })
}

/// The Markdown report: parameters, a sample table about once a minute, the verdict.
fn markdown(report: &Value, samples: &[Sample], verdict: Option<&Verdict>) -> String {
    let p = &report["parameters"];
    let cl = &report["clients"];
    let mut md = String::new();
    md.push_str("## tradecast soak\n\n");
    md.push_str(&format!(
        "{} connections ({} traders, {} IBs in {} chains of {DEPTH}, {} admins) on one node \
         ({} broker) for {} s: {} ticks/s ({} on `prices:forex`, which every trader holds), \
         {} trade events/s, {} % of the connections closed and resumed per second. \
         Date {}, source {}.\n\n",
        p["connections"],
        p["traders"],
        p["ibs"],
        p["ib_chains"],
        p["admins"],
        p["broker"].as_str().unwrap_or("?"),
        p["duration_s"],
        p["tick_rate"],
        p["forex_tick_rate"],
        p["trade_rate"],
        p["churn_pct_per_s"],
        report["date"].as_str().unwrap_or("?"),
        report["source"].as_str().unwrap_or("?"),
    ));
    md.push_str(
        "| time | node RSS | node heap (allocated) | of it, resume history | node CPU | soak RSS | soak CPU | machine CPU (of 200 %) | load 1 min | connections (node / clients) | messages/s | churned | lost | dup |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let every = if samples.len() > 40 { 60.0 } else { 0.0 };
    let mut next_minute = 0.0;
    for (k, s) in samples.iter().enumerate() {
        if s.t_s + 1e-6 < next_minute && k + 1 != samples.len() {
            continue;
        }
        next_minute = (s.t_s / 60.0).floor() * 60.0 + every;
        let t = s.t_s as u64;
        md.push_str(&format!(
            "| {}:{:02} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} % | {:.1} MiB | {:.0} % | {:.0} % | {:.2} | {} / {} | {:.0} | {} | {} | {} |\n",
            t / 60, t % 60, s.node_rss_kib as f64 / 1024.0, s.heap_kib as f64 / 1024.0, s.history_kib as f64 / 1024.0, s.node_cpu_pct,
            s.soak_rss_kib as f64 / 1024.0, s.soak_cpu_pct, s.machine_cpu_pct, s.load_avg_1m,
            s.node_connections, s.client_connections, s.messages_per_s, s.churned_total,
            s.lost_total, s.duplicates_total,
        ));
    }
    md.push_str(&format!(
        "\nNode RSS at rest {:.1} MiB, after the set-up events {:.1} MiB, with every connection open {:.1} MiB \
         (opened in {} s).\n\n",
        report["node_rss_kib"]["at_rest"].as_f64().unwrap_or(0.0) / 1024.0,
        report["node_rss_kib"]["after_setup"].as_f64().unwrap_or(0.0) / 1024.0,
        report["node_rss_kib"]["connected"].as_f64().unwrap_or(0.0) / 1024.0,
        report["connect_seconds"],
    ));
    md.push_str("### Memory\n\n");
    match verdict {
        Some(v) => md.push_str(&format!(
            "| figure | value |\n|---|---|\n\
             | warm-up (not judged) | {:.0} s |\n\
             | mean node RSS, middle third | {:.1} MiB |\n\
             | mean node RSS, last third | {:.1} MiB |\n\
             | growth, last third vs middle third | {:+.2} % |\n\
             | slope after the warm-up | {:.1} KiB/min |\n\
             | slope × post-warm-up window, of its mean RSS | {:+.2} % |\n\
             | **verdict** | **{}** |\n\n\
             Rule: memory {}.\n\n",
            v.warmup_s,
            v.middle_third_mean_kib / 1024.0,
            v.last_third_mean_kib / 1024.0,
            v.third_to_third_growth_pct,
            v.slope_kib_per_min,
            v.post_warmup_drift_pct,
            if v.levels_off {
                "memory levels off"
            } else {
                "memory does NOT level off"
            },
            v.rule,
        )),
        None => md.push_str("Too few samples after the warm-up for a verdict.\n\n"),
    }
    md.push_str("### Delivery and churn\n\n| figure | value |\n|---|---|\n");
    let rows = [
        (
            "messages received by the clients",
            cl["messages"].to_string(),
        ),
        (
            "of them prices / durable (with `seq`)",
            format!("{} / {}", cl["prices"], cl["durable"]),
        ),
        (
            "trade events / ticks posted",
            format!(
                "{} / {}",
                report["posted"]["trade_events"], report["posted"]["ticks"]
            ),
        ),
        ("failed posts", report["posted"]["failed_posts"].to_string()),
        (
            "connections closed by the clients (close frame / FIN / reset asked)",
            format!(
                "{} ({} / {} / {})",
                cl["churned"],
                report["churn_asked"]["close_frame"],
                report["churn_asked"]["drop"],
                report["churn_asked"]["reset"]
            ),
        ),
        (
            "reconnects / failed handshakes",
            format!("{} / {}", cl["reconnects"], cl["connect_failures"]),
        ),
        (
            "connections the node closed (or that broke) unasked",
            cl["server_closes"].to_string(),
        ),
        (
            "resumes (durable channels): recovered / not",
            format!("{} / {}", cl["recovered"], cl["not_recovered"]),
        ),
        (
            "**lost** (gaps + final audit) / **duplicates**",
            format!("**{}** / **{}**", report["lost"], report["duplicates"]),
        ),
        (
            "final audit: channels answered / behind",
            format!(
                "{} of {} / {}",
                cl["audit"]["answered"], cl["audit"]["channels"], cl["audit"]["behind"]
            ),
        ),
        (
            "server resyncs / `error` frames",
            format!("{} / {}", cl["server_resyncs"], cl["errors"]),
        ),
        (
            "pings sent / pongs",
            format!("{} / {}", cl["pings"], cl["pongs"]),
        ),
        (
            "node: slow-consumer closes / conflated / rejected events",
            format!(
                "{} / {} / {}",
                report["node"]["slow_consumer_closes_total"],
                report["node"]["outbox_conflated_total"],
                report["node"]["ingest_rejected_total"]
            ),
        ),
    ];
    for (name, value) in rows {
        md.push_str(&format!("| {name} | {value} |\n"));
    }
    let machine = &report["machine"];
    md.push_str(&format!(
        "\nMachine: {} cores ({}), {:.0} GiB, Linux {}, loopback only. The node and this \
         process (all clients and the event poster) share the cores **with other engineers \
         compiling and running tests**, so the CPU figures are noisy; the load average and \
         the machine's CPU are recorded per sample to show it. See bench/soak.md. Command:\n\n    \
         cargo build --release -p tradecast -p tradecast-bench\n    {}\n",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["memory_kib"].as_f64().unwrap_or(0.0) / 1024.0 / 1024.0,
        machine["kernel"].as_str().unwrap_or("?"),
        report["command"].as_str().unwrap_or("?"),
    ));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_seconds_or_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
    }

    fn sample(t_s: f64, rss: u64) -> Sample {
        Sample {
            t_s,
            node_rss_kib: rss,
            heap_kib: 0,
            history_kib: 0,
            node_cpu_pct: 0.0,
            soak_rss_kib: 0,
            soak_cpu_pct: 0.0,
            redis_rss_kib: None,
            redis_cpu_pct: None,
            machine_cpu_pct: 0.0,
            load_avg_1m: 0.0,
            node_connections: 0,
            client_connections: 0,
            messages_per_s: 0.0,
            messages_total: 0,
            churned_total: 0,
            reconnects_total: 0,
            lost_total: 0,
            duplicates_total: 0,
            not_recovered_total: 0,
        }
    }

    #[test]
    fn flat_memory_after_warmup_levels_off() {
        // Grows for 10 minutes, then stays at 100 MiB ± noise.
        let samples: Vec<Sample> = (1..=180)
            .map(|k| {
                let t = k as f64 * 10.0;
                let rss = if t < 600.0 {
                    50_000 + (t as u64) * 80
                } else {
                    102_400 + (k % 3) * 100
                };
                sample(t, rss)
            })
            .collect();
        let v = verdict(&samples, 1800.0, 600.0).unwrap();
        assert!(v.levels_off, "{v:?}");
        assert!(v.third_to_third_growth_pct.abs() < 0.5);
    }

    #[test]
    fn steady_growth_does_not_level_off() {
        // 100 MiB growing by 1 MiB a minute.
        let samples: Vec<Sample> = (1..=180)
            .map(|k| sample(k as f64 * 10.0, 102_400 + k * 1024 / 6))
            .collect();
        let v = verdict(&samples, 1800.0, 600.0).unwrap();
        assert!(!v.levels_off, "{v:?}");
        assert!((v.slope_kib_per_min - 1024.0).abs() < 1.0);
    }

    #[test]
    fn sequence_rules_count_gaps_and_duplicates() {
        let shared = Shared {
            server: "127.0.0.1:1".parse().unwrap(),
            users: Vec::new(),
            source_ips: Vec::new(),
            counters: Counters::default(),
            steady: Vec::new(),
            initial_gate: Semaphore::new(1),
            problems: Mutex::new(Vec::new()),
            closes: Mutex::new(BTreeMap::new()),
        };
        let mut tracks = vec![Track {
            name: "orders:7".to_owned(),
            epoch: String::new(),
            last: 0,
            known: false,
            waiting: None,
            seen_while_waiting: 0,
        }];
        let frame = |seq: u64| {
            format!(r#"{{"type":"order_update","channel":"orders:7","id":3,"seq":{seq}}}"#)
        };
        on_text(
            &shared,
            7,
            &mut tracks,
            r#"{"type":"subscribed","channel":"orders:7","epoch":"e1","seq":2,"recovered":false}"#,
        );
        for seq in [3, 4, 4, 7] {
            on_text(&shared, 7, &mut tracks, &frame(seq));
        }
        assert_eq!(tracks[0].last, 7);
        assert_eq!(Counters::get(&shared.counters.duplicates), 1);
        assert_eq!(Counters::get(&shared.counters.lost), 2);
        // A resume: messages before the reply are not applied; the replay is.
        tracks[0].waiting = Some(Waiting::Resume);
        on_text(&shared, 7, &mut tracks, &frame(9));
        on_text(
            &shared,
            7,
            &mut tracks,
            r#"{"type":"subscribed","id":"resume","channel":"orders:7","epoch":"e1","seq":9,"recovered":true}"#,
        );
        on_text(&shared, 7, &mut tracks, &frame(8));
        on_text(&shared, 7, &mut tracks, &frame(9));
        assert_eq!(tracks[0].last, 9);
        assert_eq!(Counters::get(&shared.counters.recovered), 1);
        assert_eq!(Counters::get(&shared.counters.duplicates), 1);
        assert_eq!(Counters::get(&shared.counters.lost), 2);
    }
}
