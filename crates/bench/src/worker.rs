//! A worker process: it holds its share of the client connections (from its own
//! 127.0.0.x), follows docs/protocol.md §6-7 on every durable channel, reconnects and
//! resumes the connections that drop, and answers the coordinator's questions.
//!
//! The coordinator ([`crate::fleet`]) starts it as `tradecast-bench worker …` and
//! talks JSON lines. Commands on stdin (`{"cmd": …}`):
//!
//! - `status` with `min`: how many connections are up, hold all their channels,
//!   and have applied durable `seq` ≥ `min` on their portfolio;
//! - `measure` with `from_ms`: from now on, time every `price` whose `ts` (its tick's
//!   `emit_ts`) is at least `from_ms`, and count frames, bytes and portfolio deltas
//!   afresh (portfolio snapshots keep counting from the start);
//! - `reached` with `ts` and `wait_ms`: wait until every connection has a `price`
//!   with `ts` ≥ `ts`, then answer how many did and when the last one arrived;
//! - `counters`: frames and bytes received since `measure`, the price-latency
//!   HdrHistogram (V2, hex) and the portfolio byte counts of the bandwidth scenario;
//! - `resume_status` / `resume_report` with `kill_us`: after a node was killed, how
//!   many connections dropped and resumed, and their timings;
//! - `verify` with `wait_ms` and `portfolio_seq`: the durable check, below.
//!
//! Unprompted lines: `opening` (progress while connecting), `ready` once every
//! connection is set up (or gave up), `dropped` with the logins that just lost their
//! connection, and `got` with the arrival times of tracked durable messages
//! (`--track`). The process exits when stdin closes.
//!
//! Every connection remembers, per durable channel, the epoch and the `seq` of the
//! last message applied. A `seq` at or below it is a duplicate, one above it + 1 a
//! gap: both are counted as failures. After a drop it reconnects (full-jitter
//! backoff), and sends `subscribe` with `since` for each durable channel; until that
//! reply it ignores the channel's durable messages (the default subscription of the
//! reconnect is superseded by the replay). `verify` sends `subscribe` with `since` once
//! more on every durable channel: a `recovered: true` reply whose `seq` is above the
//! connection's own counts the difference as lost (the node had messages the client
//! never received).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_websockets::{Message, WebSocketStream};
use tradecast_gateway::Authenticator;
use tradecast_protocol::{Principal, Role};

use crate::common::{connect_ws, encode_histogram, histogram, now_us};

/// A run of users of one role with consecutive ids: `client:100001:500`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRange {
    pub role: Role,
    pub first: u64,
    pub count: usize,
}

impl FromStr for UserRange {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let mut parts = s.split(':');
        let role = match parts.next() {
            Some("client") => Role::Client,
            Some("ib") => Role::Ib,
            Some("admin") => Role::Admin,
            other => anyhow::bail!("unknown role {other:?} in {s:?}"),
        };
        let first = parts.next().context("no first id")?.parse()?;
        let count = parts.next().context("no count")?.parse()?;
        Ok(UserRange { role, first, count })
    }
}

impl std::fmt::Display for UserRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match self.role {
            Role::Client => "client",
            Role::Ib => "ib",
            Role::Admin => "admin",
        };
        write!(f, "{role}:{}:{}", self.first, self.count)
    }
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Where to connect: a node, or nginx in front of several.
    #[arg(long)]
    pub server: SocketAddr,
    #[arg(long)]
    pub local_ip: IpAddr,
    #[arg(long)]
    pub secret: String,
    /// The users this worker connects, one connection each.
    #[arg(long, value_delimiter = ',', required = true)]
    pub users: Vec<UserRange>,
    /// Subscribe `prices:forex` on connections whose defaults lack it (IBs, admins).
    #[arg(long)]
    pub prices: bool,
    /// Report the arrival of `position_opened`, `position_closed` and `commission`.
    #[arg(long)]
    pub track: bool,
    /// Initial connections being opened at once (reconnects are not limited).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Give up on an initial connection after this long.
    #[arg(long, default_value_t = 300)]
    pub connect_deadline_s: u64,
    /// Give up reconnecting a dropped connection after this long.
    #[arg(long, default_value_t = 120)]
    pub reconnect_deadline_s: u64,
    /// Full-jitter backoff: attempt k waits uniformly in [0, min(cap, base · 2^k)].
    #[arg(long, default_value_t = 500)]
    pub backoff_base_ms: u64,
    #[arg(long, default_value_t = 8_000)]
    pub backoff_cap_ms: u64,
}

/// One handshake may take this long before it counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Live portfolio deltas further apart than this belong to different pushes.
const BURST_GAP_US: u64 = 100_000;

/// What the coordinator learns about one connection.
#[derive(Debug, Default, Clone)]
struct ConnStat {
    id: u64,
    trader: bool,
    up: bool,
    /// Holds every channel it should (defaults and extras).
    whole: bool,
    /// `seq` of the last durable message applied on `portfolio:{id}`.
    portfolio_last: u64,
    /// When it first dropped, reconnected, got every resume reply, and resumed
    /// (every channel held, every durable channel caught up to its reply's `seq`).
    dropped_at: Option<u64>,
    reconnected_at: Option<u64>,
    replied_at: Option<u64>,
    resumed_at: Option<u64>,
    drops: u32,
    /// Resume replies: recovered (replay) / not (snapshot).
    recovered: u32,
    snapshots: u32,
    failed_attempts: u32,
    last_failure: Option<String>,
    gaps: u64,
    duplicates: u64,
    /// `verify`: durable channels checked, messages the node had beyond the
    /// client's last, channels it could not check (snapshot answer).
    verified: Option<u32>,
    verify_pending: u32,
    verify_missing: u64,
    verify_snapshot: u32,
}

/// The portfolio byte counts of the bandwidth scenario (own `portfolio:` only).
#[derive(Debug, Default, Clone, Copy)]
struct Bandwidth {
    snapshots: u64,
    snapshot_bytes: u64,
    live_messages: u64,
    live_bytes: u64,
    /// Live pushes: runs of live deltas less than 100 ms apart.
    live_pushes: u64,
    durable_messages: u64,
    durable_bytes: u64,
}

#[derive(Default)]
struct State {
    conns: Vec<ConnStat>,
    senders: Vec<Option<mpsc::UnboundedSender<()>>>,
    ready: usize,
    gave_up: usize,
    failures: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    newly_dropped: Vec<u64>,
    /// Tracked arrivals not yet reported: [kind, a, b, owner, at_us].
    arrivals: Vec<[u64; 5]>,
    /// Since `measure`.
    measure_from_ms: u64,
    frames: u64,
    bytes: u64,
    price_latency: Option<Histogram<u64>>,
    /// Per connection: the highest price `ts` seen and when it arrived.
    price_seen: Vec<(u64, u64)>,
    bandwidth: Bandwidth,
    problems: Vec<String>,
}

impl State {
    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            eprintln!("worker: {text}");
            self.problems.push(text);
        }
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn emit(line: &Value) {
    println!("{line}");
}

/// The codes of tracked arrivals in `got` lines.
pub const OPENED: u64 = 1;
pub const CLOSED: u64 = 2;
pub const COMMISSION: u64 = 3;

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let auth = Authenticator::new(Some(&args.secret), None)?;
    let users: Vec<(u64, Role)> = args
        .users
        .iter()
        .flat_map(|r| (0..r.count as u64).map(move |k| (r.first + k, r.role)))
        .collect();
    let n = users.len();
    let shared: Shared = Arc::new(Mutex::new(State {
        conns: users
            .iter()
            .map(|&(id, role)| ConnStat {
                id,
                trader: role == Role::Client,
                ..ConnStat::default()
            })
            .collect(),
        senders: vec![None; n],
        price_seen: vec![(0, 0); n],
        ..State::default()
    }));
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let config = Arc::new(args.clone());
    let started = std::time::Instant::now();
    for (i, &(id, role)) in users.iter().enumerate() {
        let token = auth.mint(Principal { id, role }, 24 * 3600)?;
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&shared).senders[i] = Some(tx);
        tokio::spawn(connection(
            shared.clone(),
            i,
            token,
            gate.clone(),
            config.clone(),
            rx,
        ));
    }
    // Progress while connecting, then `ready`.
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let (ready, gave_up, failures) = {
                    let s = lock(&shared);
                    (s.ready, s.gave_up, s.failures.clone())
                };
                if ready + gave_up >= n {
                    emit(&json!({"ev":"ready","opened":ready,"gave_up":gave_up,
                        "failures":failures,"elapsed_ms":started.elapsed().as_millis() as u64}));
                    return;
                }
                emit(&json!({"ev":"opening","opened":ready}));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
    // Drops and tracked arrivals, in batches.
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let (dropped, arrivals) = {
                    let mut s = lock(&shared);
                    (
                        std::mem::take(&mut s.newly_dropped),
                        std::mem::take(&mut s.arrivals),
                    )
                };
                if !dropped.is_empty() {
                    emit(&json!({"ev":"dropped","logins":dropped}));
                }
                if !arrivals.is_empty() {
                    emit(&json!({"ev":"got","m":arrivals}));
                }
            }
        });
    }

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        let cmd: Value = serde_json::from_str(&line).context("command is not JSON")?;
        let wait = Duration::from_millis(cmd["wait_ms"].as_u64().unwrap_or(10_000));
        match cmd["cmd"].as_str().unwrap_or_default() {
            "status" => emit(&status(&shared, cmd["min"].as_u64().unwrap_or(1))),
            "measure" => {
                let mut s = lock(&shared);
                s.measure_from_ms = cmd["from_ms"].as_u64().unwrap_or(0);
                s.frames = 0;
                s.bytes = 0;
                s.price_latency = Some(histogram());
                // Snapshots are kept: the first ones came with the connection.
                s.bandwidth = Bandwidth {
                    snapshots: s.bandwidth.snapshots,
                    snapshot_bytes: s.bandwidth.snapshot_bytes,
                    ..Bandwidth::default()
                };
                emit(&json!({"ev":"measure"}));
            }
            "reached" => emit(&reached(&shared, cmd["ts"].as_u64().unwrap_or(0), wait).await),
            "counters" => emit(&counters(&shared)?),
            "resume_status" => {
                let s = lock(&shared);
                let count = |f: fn(&ConnStat) -> bool| s.conns.iter().filter(|c| f(c)).count();
                emit(&json!({"ev":"resume_status",
                    "dropped":count(|c| c.dropped_at.is_some()),
                    "reconnected":count(|c| c.reconnected_at.is_some()),
                    "resumed":count(|c| c.resumed_at.is_some()),
                    "up":count(|c| c.up)}));
            }
            "resume_report" => emit(&resume_report(
                &shared,
                cmd["kill_us"].as_u64().unwrap_or(0),
            )?),
            "verify" => emit(&verify(&shared, wait, cmd["portfolio_seq"].as_u64()).await),
            other => anyhow::bail!("unknown command {other:?}"),
        }
    }
    Ok(())
}

fn status(shared: &Shared, min: u64) -> Value {
    let s = lock(shared);
    let up = s.conns.iter().filter(|c| c.up).count();
    let whole = s.conns.iter().filter(|c| c.up && c.whole).count();
    let traders = s.conns.iter().filter(|c| c.trader).count();
    let at_least = s
        .conns
        .iter()
        .filter(|c| c.trader && c.portfolio_last >= min)
        .count();
    json!({"ev":"status","up":up,"whole":whole,"traders":traders,
        "portfolio_at_least":at_least,"errors":s.errors})
}

async fn reached(shared: &Shared, ts: u64, wait: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let done = lock(shared).price_seen.iter().all(|(seen, _)| *seen >= ts);
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = lock(shared);
    let got = s.price_seen.iter().filter(|(seen, _)| *seen >= ts).count();
    let last = s
        .price_seen
        .iter()
        .filter(|(seen, _)| *seen >= ts)
        .map(|(_, at)| *at)
        .max()
        .unwrap_or(0);
    json!({"ev":"reached","connections":s.conns.len(),"got":got,"last_us":last})
}

fn counters(shared: &Shared) -> anyhow::Result<Value> {
    let s = lock(shared);
    let empty = histogram();
    let b = s.bandwidth;
    Ok(json!({"ev":"counters","frames":s.frames,"bytes":s.bytes,
        "price_latency":encode_histogram(s.price_latency.as_ref().unwrap_or(&empty))?,
        "bandwidth":{"snapshots":b.snapshots,"snapshot_bytes":b.snapshot_bytes,
            "live_messages":b.live_messages,"live_bytes":b.live_bytes,"live_pushes":b.live_pushes,
            "durable_messages":b.durable_messages,"durable_bytes":b.durable_bytes},
        "errors":s.errors,"problems":s.problems}))
}

fn resume_report(shared: &Shared, kill_us: u64) -> anyhow::Result<Value> {
    let s = lock(shared);
    let mut resume = histogram();
    let mut detect = histogram();
    let mut reconnect = histogram();
    let mut reply = histogram();
    let (mut affected, mut resumed, mut recovered, mut snapshots) = (0u64, 0u64, 0u64, 0u64);
    let (mut failed, mut max_failed, mut multi) = (0u64, 0u32, 0u64);
    let mut stuck = Vec::new();
    let since = |at: u64| at.saturating_sub(kill_us).max(1);
    for c in &s.conns {
        let Some(dropped) = c.dropped_at else {
            continue;
        };
        affected += 1;
        let _ = detect.record(since(dropped));
        if let Some(at) = c.reconnected_at {
            let _ = reconnect.record(since(at));
        }
        if let Some(at) = c.replied_at {
            let _ = reply.record(since(at));
        }
        failed += u64::from(c.failed_attempts);
        max_failed = max_failed.max(c.failed_attempts);
        multi += u64::from(c.drops > 1);
        recovered += u64::from(c.recovered);
        snapshots += u64::from(c.snapshots);
        match c.resumed_at {
            Some(at) => {
                resumed += 1;
                let _ = resume.record(since(at));
            }
            None if stuck.len() < 10 => stuck.push(json!({"id":c.id,"up":c.up,"whole":c.whole,
                "failed_attempts":c.failed_attempts,"last_failure":c.last_failure})),
            None => {}
        }
    }
    Ok(
        json!({"ev":"resume_report","affected":affected,"resumed":resumed,
        "channels_recovered":recovered,"channels_snapshot":snapshots,
        "failed_attempts":failed,"max_failed_attempts":max_failed,"dropped_more_than_once":multi,
        "failures":s.failures,"errors":s.errors,
        "resume_hist":encode_histogram(&resume)?,"detect_hist":encode_histogram(&detect)?,
        "reconnect_hist":encode_histogram(&reconnect)?,"reply_hist":encode_histogram(&reply)?,
        "stuck":stuck}),
    )
}

/// The durable check. With `portfolio_seq` (a storm) every trader must first have
/// applied that many durable messages on its portfolio, and one more if it dropped
/// (the coordinator writes an `account` event for every dropped trader).
async fn verify(shared: &Shared, wait: Duration, portfolio_seq: Option<u64>) -> Value {
    let expected = |c: &ConnStat| match portfolio_seq {
        Some(base) if c.trader => base + u64::from(c.dropped_at.is_some()),
        _ => 0,
    };
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline
        && !lock(shared)
            .conns
            .iter()
            .all(|c| c.portfolio_last >= expected(c))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let senders: Vec<_> = lock(shared).senders.iter().flatten().cloned().collect();
    for tx in senders {
        let _ = tx.send(());
    }
    while tokio::time::Instant::now() < deadline
        && !lock(shared)
            .conns
            .iter()
            .all(|c| !c.up || (c.verified.is_some() && c.verify_pending == 0))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = lock(shared);
    let (mut gaps, mut dups, mut missing, mut short, mut unverified, mut snap, mut channels) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut examples = Vec::new();
    for c in &s.conns {
        gaps += c.gaps;
        dups += c.duplicates;
        let shortfall = expected(c).saturating_sub(c.portfolio_last);
        missing += c.verify_missing;
        // A message the node never logged is invisible to the probe: count the
        // expected-but-absent ones too, once.
        short += shortfall.saturating_sub(c.verify_missing);
        match c.verified {
            Some(k) => channels += u64::from(k),
            None => unverified += 1,
        }
        snap += u64::from(c.verify_snapshot);
        if (shortfall > 0 || c.verify_missing > 0 || c.gaps > 0) && examples.len() < 10 {
            examples.push(json!({"id":c.id,"portfolio_last":c.portfolio_last,
                "expected":expected(c),"missing":c.verify_missing,"gaps":c.gaps,"up":c.up}));
        }
    }
    json!({"ev":"verify","connections":s.conns.len(),"channels_checked":channels,
        "gaps":gaps,"duplicates":dups,"missing_at_end":missing,"never_logged":short,
        "lost":gaps + missing + short,"connections_not_checked":unverified,
        "channels_answered_with_snapshot":snap,"examples":examples,"problems":s.problems})
}

/// One channel a connection holds, and for a durable one where it stands.
#[derive(Debug)]
struct Chan {
    name: String,
    durable: bool,
    held: bool,
    /// Epoch and `seq` of the last durable message applied, once subscribed.
    position: Option<(String, u64)>,
    /// A resume (`since`) is in flight: its durable messages are ignored until the reply.
    waiting: bool,
    /// The replay after a `recovered: true` reply must reach this `seq`.
    target: Option<u64>,
    /// `verify` asked: messages after its reply are not counted.
    verifying: bool,
}

impl Chan {
    fn new(name: &str) -> Chan {
        Chan {
            name: name.to_owned(),
            durable: !(name.starts_with("prices:") || name == "exposure"),
            held: false,
            position: None,
            waiting: false,
            target: None,
            verifying: false,
        }
    }
}

/// One connection, for the whole run: connect, set up, read, reconnect.
async fn connection(
    shared: Shared,
    i: usize,
    token: String,
    gate: Arc<Semaphore>,
    args: Arc<WorkerArgs>,
    mut verify: mpsc::UnboundedReceiver<()>,
) {
    let (id, trader) = {
        let s = lock(&shared);
        (s.conns[i].id, s.conns[i].trader)
    };
    let portfolio = format!("portfolio:{id}");
    let commissions = format!("commissions:{id}");
    let mut chans: Vec<Chan> = Vec::new();
    let mut initial = true;
    let mut last_live_at = 0u64;
    loop {
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(if initial {
                args.connect_deadline_s
            } else {
                args.reconnect_deadline_s
            });
        let mut attempt = 0u32;
        let (mut ws, mut permit) = loop {
            let permit = if initial {
                gate.clone().acquire_owned().await.ok()
            } else {
                None
            };
            let result = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                Ws::connect(args.server, args.local_ip, &token),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("handshake timed out")));
            match result {
                Ok(ws) => break (ws, permit),
                Err(e) => {
                    drop(permit);
                    {
                        let mut s = lock(&shared);
                        let kind = failure_kind(&e);
                        *s.failures.entry(kind.clone()).or_default() += 1;
                        if !initial {
                            s.conns[i].failed_attempts += 1;
                            s.conns[i].last_failure = Some(kind);
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        let mut s = lock(&shared);
                        if initial {
                            s.gave_up += 1;
                        }
                        s.problem(format!("{id}: gave up connecting"));
                        return;
                    }
                    let cap = args
                        .backoff_cap_ms
                        .min(args.backoff_base_ms.saturating_mul(1 << attempt.min(16)));
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=cap))).await;
                }
            }
        };
        {
            let mut s = lock(&shared);
            let c = &mut s.conns[i];
            c.up = true;
            if c.dropped_at.is_some() && c.reconnected_at.is_none() {
                c.reconnected_at = Some(now_us());
            }
        }
        for chan in &mut chans {
            chan.held = false;
            chan.waiting = false;
            chan.target = None;
        }
        // Requests to send again after a backoff (an `unavailable` answer).
        let mut retry: Vec<(tokio::time::Instant, Value)> = Vec::new();
        loop {
            let next_retry = retry.iter().map(|(at, _)| *at).min();
            let text = tokio::select! {
                text = ws.recv_text() => text,
                Some(()) = verify.recv() => {
                    let mut checked = 0;
                    for chan in chans.iter_mut().filter(|c| c.durable) {
                        if let Some((epoch, last)) = &chan.position {
                            let request = json!({"type":"subscribe","channel":chan.name,"id":"verify",
                                "since":{"epoch":epoch,"seq":last}});
                            chan.verifying = true;
                            checked += 1;
                            if ws.send(&request).await.is_err() {
                                break;
                            }
                        }
                    }
                    let mut s = lock(&shared);
                    s.conns[i].verified = Some(checked);
                    s.conns[i].verify_pending = checked;
                    continue;
                }
                _ = sleep_until_some(next_retry) => {
                    let now = tokio::time::Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) = retry.drain(..).partition(|(at, _)| *at <= now);
                    retry = later;
                    for (_, mut request) in due {
                        if (request["id"] == "resume" || request["id"] == "verify")
                            && let Some(chan) = chans.iter().find(|c| c.name == request["channel"])
                            && let Some((epoch, last)) = &chan.position
                        {
                            request["since"] = json!({"epoch": epoch, "seq": last});
                        }
                        let _ = ws.send(&request).await;
                    }
                    continue;
                }
            };
            let at = now_us();
            let Some(text) = text else {
                break;
            };
            let head = Head::of(&text);
            {
                let mut s = lock(&shared);
                s.frames += 1;
                s.bytes += text.len() as u64;
                if head.kind == "price" {
                    if let Some(ts) = number_after(&text, r#""ts":"#) {
                        if ts >= s.measure_from_ms
                            && s.measure_from_ms > 0
                            && let Some(h) = s.price_latency.as_mut()
                        {
                            let _ = h.record(at.saturating_sub(ts * 1000).max(1));
                        }
                        if ts > s.price_seen[i].0 {
                            s.price_seen[i] = (ts, at);
                        }
                    }
                    continue;
                }
                if trader && head.channel == portfolio {
                    let b = &mut s.bandwidth;
                    let len = text.len() as u64;
                    if head.kind == "portfolio_full" {
                        b.snapshots += 1;
                        b.snapshot_bytes += len;
                    } else if head.seq.is_some() {
                        b.durable_messages += 1;
                        b.durable_bytes += len;
                    } else if head.kind == "position_update" || head.kind == "account_update" {
                        b.live_messages += 1;
                        b.live_bytes += len;
                        if at.saturating_sub(last_live_at) > BURST_GAP_US {
                            b.live_pushes += 1;
                        }
                        last_live_at = at;
                    }
                }
            }
            match head.kind {
                "welcome" => {
                    let Ok(m) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    let names: Vec<&str> = m["channels"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    if chans.is_empty() {
                        chans = names.iter().map(|n| Chan::new(n)).collect();
                        if args.prices && !names.contains(&"prices:forex") {
                            chans.push(Chan::new("prices:forex"));
                        }
                    }
                    for chan in &mut chans {
                        if !names.contains(&chan.name.as_str()) {
                            let request =
                                json!({"type":"subscribe","channel":chan.name,"id":"extra"});
                            let _ = ws.send(&request).await;
                        } else if let Some((epoch, last)) = &chan.position {
                            // A reconnect: resume with `since`.
                            let request = json!({"type":"subscribe","channel":chan.name,"id":"resume",
                                "since":{"epoch":epoch,"seq":last}});
                            chan.waiting = true;
                            let _ = ws.send(&request).await;
                        }
                    }
                }
                "subscribed" => {
                    let Ok(m) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    let Some(chan) = chans.iter_mut().find(|c| c.name == head.channel) else {
                        continue;
                    };
                    chan.held = true;
                    let epoch = m["epoch"].as_str().unwrap_or_default().to_owned();
                    let seq = m["seq"].as_u64().unwrap_or(0);
                    let recovered = m["recovered"] == true;
                    let mut s = lock(&shared);
                    if m["id"] == "verify" && chan.verifying {
                        let c = &mut s.conns[i];
                        match &chan.position {
                            Some((_, last)) if recovered => {
                                c.verify_missing += seq.saturating_sub(*last);
                            }
                            _ => c.verify_snapshot += 1,
                        }
                        c.verify_pending = c.verify_pending.saturating_sub(1);
                    } else if m["id"] == "resume" && chan.waiting {
                        chan.waiting = false;
                        let Some((old_epoch, last)) = chan.position.as_mut() else {
                            continue;
                        };
                        if recovered && *old_epoch != epoch {
                            s.problem(format!("{id}: recovered in a new epoch: {m}"));
                        }
                        if recovered {
                            s.conns[i].recovered += 1;
                        } else {
                            s.conns[i].snapshots += 1;
                            *last = seq;
                        }
                        *old_epoch = epoch;
                        chan.target = (*last < seq).then_some(seq);
                        if chan.name == portfolio {
                            s.conns[i].portfolio_last = *last;
                        }
                        if chans.iter().all(|c| !c.waiting) {
                            s.conns[i].replied_at.get_or_insert(at);
                        }
                    } else if chan.durable && !chan.waiting {
                        if chan.position.is_some() && m["id"].is_null() && !initial {
                            s.problem(format!("{id}: the node resynced by itself: {m}"));
                        }
                        if chan.position.is_none() || m["id"].is_null() {
                            chan.position = Some((epoch, seq));
                            if chan.name == portfolio {
                                s.conns[i].portfolio_last = seq;
                            }
                        }
                    }
                    settle(&mut s, i, &chans, &mut initial, &mut permit, at);
                }
                "error" => {
                    let Ok(m) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    let mut s = lock(&shared);
                    let code = m["code"].as_str().unwrap_or("?");
                    let kind = head.channel.split(':').next().unwrap_or("?");
                    *s.errors
                        .entry(format!(
                            "{kind} {code} ({})",
                            m["id"].as_str().unwrap_or("-")
                        ))
                        .or_default() += 1;
                    if code == "unavailable" && !head.channel.is_empty() {
                        // Subscribe again after a backoff (docs/protocol.md §5); a
                        // resume or a verify goes out with the position as it is then.
                        // A durable default channel of a reconnect needs no retry: its
                        // resume subscribes it.
                        let request_id = m["id"].as_str().unwrap_or("again");
                        let resumed_anyway = request_id == "again"
                            && chans.iter().any(|c| {
                                c.name == head.channel && c.durable && c.position.is_some()
                            });
                        if !resumed_anyway {
                            let again = tokio::time::Instant::now()
                                + Duration::from_millis(fastrand::u64(500..=1_500));
                            retry.push((
                                again,
                                json!({"type":"subscribe","channel":head.channel,"id":request_id}),
                            ));
                        }
                    } else {
                        s.problem(format!("{id}: {m}"));
                    }
                }
                _ => {
                    let Some(seq) = head.seq else {
                        continue;
                    };
                    let Some(chan) = chans.iter_mut().find(|c| c.name == head.channel) else {
                        continue;
                    };
                    if chan.waiting || chan.verifying {
                        continue;
                    }
                    let Some((_, last)) = chan.position.as_mut() else {
                        continue;
                    };
                    let mut s = lock(&shared);
                    if seq <= *last {
                        s.conns[i].duplicates += 1;
                        s.problem(format!("{id}: {} seq {seq} again (last {last})", chan.name));
                        continue;
                    }
                    if seq > *last + 1 {
                        s.conns[i].gaps += seq - *last - 1;
                        s.problem(format!("{id}: {} gap, seq {seq} after {last}", chan.name));
                    }
                    *last = seq;
                    if chan.target.is_some_and(|t| seq >= t) {
                        chan.target = None;
                    }
                    if chan.name == portfolio {
                        s.conns[i].portfolio_last = seq;
                    }
                    if args.track {
                        let arrival = match head.kind {
                            "position_opened" if head.channel == portfolio => {
                                number_after(&text, r#""id":"#).map(|p| [OPENED, p, 0, id, at])
                            }
                            "position_closed" if head.channel == portfolio => {
                                number_after(&text, r#""id":"#).map(|p| [CLOSED, p, 0, id, at])
                            }
                            "commission" if head.channel == commissions => {
                                number_after(&text, r#""deal":"#)
                                    .zip(number_after(&text, r#""level":"#))
                                    .map(|(deal, level)| [COMMISSION, deal, level, id, at])
                            }
                            _ => None,
                        };
                        if let Some(arrival) = arrival {
                            s.arrivals.push(arrival);
                        }
                    }
                    settle(&mut s, i, &chans, &mut initial, &mut permit, at);
                }
            }
        }
        // The connection is gone.
        let mut s = lock(&shared);
        let at = now_us();
        let c = &mut s.conns[i];
        c.up = false;
        c.whole = false;
        if initial {
            *s.failures
                .entry("closed during set-up".to_owned())
                .or_default() += 1;
            continue;
        }
        c.drops += 1;
        if c.dropped_at.is_none() {
            c.dropped_at = Some(at);
            s.newly_dropped.push(id);
        }
    }
}

/// After a change: is the connection set up (first time), or resumed (after a drop)?
fn settle(
    s: &mut State,
    i: usize,
    chans: &[Chan],
    initial: &mut bool,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    at: u64,
) {
    let whole = !chans.is_empty() && chans.iter().all(|c| c.held);
    let caught_up = chans.iter().all(|c| !c.waiting && c.target.is_none());
    let c = &mut s.conns[i];
    c.whole = whole;
    if whole && *initial {
        *initial = false;
        *permit = None;
        s.ready += 1;
    } else if whole && caught_up && c.dropped_at.is_some() && c.resumed_at.is_none() {
        c.resumed_at = Some(at);
    }
}

/// The fields every channel message starts with (`{"type":…,"channel":…`) and the
/// `seq` durable ones end with, found without parsing the JSON.
struct Head<'a> {
    kind: &'a str,
    channel: &'a str,
    seq: Option<u64>,
}

impl<'a> Head<'a> {
    fn of(text: &'a str) -> Head<'a> {
        let string_after = |key: &str| -> &'a str {
            text.find(key)
                .map(|k| &text[k + key.len()..])
                .and_then(|rest| rest.find('"').map(|end| &rest[..end]))
                .unwrap_or_default()
        };
        let kind = text
            .strip_prefix(r#"{"type":""#)
            .and_then(|rest| rest.find('"').map(|end| &rest[..end]))
            .unwrap_or_default();
        let channel = string_after(r#""channel":""#);
        let seq = text
            .rfind(r#","seq":"#)
            .filter(|&k| text[k..].ends_with('}') && !text[k + 7..].contains(','))
            .and_then(|k| text[k + 7..text.len() - 1].parse().ok());
        Head { kind, channel, seq }
    }
}

/// The unsigned number right after `key` (e.g. `"ts":`).
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A failed handshake, by kind: the HTTP status, or what the socket said.
fn failure_kind(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    if let Some(code) = text.split("got status code ").nth(1) {
        return format!("http {}", code.chars().take(3).collect::<String>());
    }
    if text.contains("handshake timed out") {
        return "no answer within 10 s".to_owned();
    }
    let root = error.root_cause().to_string();
    let stage = if text.contains("WebSocket upgrade refused") {
        "during the upgrade"
    } else {
        "at connect"
    };
    for (needle, kind) in [
        ("refused", "connection refused"),
        ("reset", "connection reset"),
        ("timed out", "TCP timeout"),
        ("Cannot assign", "no local port"),
        ("Broken pipe", "broken pipe"),
    ] {
        if root.contains(needle) {
            return format!("{kind} {stage}");
        }
    }
    let short: String = root.chars().take(60).collect();
    format!("{short} ({stage})")
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A WebSocket from a chosen 127.0.0.x, with the port picked at `connect()`
/// (`IP_BIND_ADDRESS_NO_PORT`).
///
/// Why not `tradecast_client::Client` with `Connect::local_ip`: it calls
/// `bind(ip:0)`, and a port taken by `bind()` is out of the pool `connect()` picks
/// its ports from, on every address. 45,000 such sockets (6 addresses, ~14,000
/// distinct ports) leave nginx too few of the 28,232 ephemeral ports for its own
/// connections to the nodes: at ~43,000 clients its upstream `connect()`s fail. With
/// the option the kernel picks the port at `connect()`, unique per 4-tuple, so the
/// clients and nginx share the range.
struct Ws {
    ws: WebSocketStream<TcpStream>,
}

impl Ws {
    async fn connect(server: SocketAddr, local_ip: IpAddr, token: &str) -> anyhow::Result<Ws> {
        Ok(Ws {
            ws: connect_ws(server, local_ip, token).await?,
        })
    }

    async fn send(&mut self, request: &Value) -> anyhow::Result<()> {
        self.ws
            .send(Message::text(request.to_string()))
            .await
            .context("sending a frame")
    }

    /// The next text frame, or `None` once the connection is closed or broken.
    async fn recv_text(&mut self) -> Option<String> {
        loop {
            match self.ws.next().await {
                Some(Ok(message)) => {
                    if let Some(text) = message.as_text() {
                        return Some(text.to_owned());
                    }
                }
                Some(Err(_)) | None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_head_of_a_message() {
        let text = r#"{"type":"position_opened","channel":"portfolio:42","id":7,"symbol":"EURUSD","seq":12}"#;
        let head = Head::of(text);
        assert_eq!(
            (head.kind, head.channel, head.seq),
            ("position_opened", "portfolio:42", Some(12))
        );
        let live =
            Head::of(r#"{"type":"position_update","channel":"portfolio:42","id":7,"profit":1.5}"#);
        assert_eq!(live.seq, None);
        let price = r#"{"type":"price","channel":"prices:forex","symbol":"EURUSD","bid":1.1,"ts":1717430400110}"#;
        assert_eq!(Head::of(price).kind, "price");
        assert_eq!(number_after(price, r#""ts":"#), Some(1_717_430_400_110));
    }

    #[test]
    fn parses_user_ranges() {
        let range: UserRange = "ib:900001:12".parse().unwrap();
        assert_eq!(range.role, Role::Ib);
        assert_eq!((range.first, range.count), (900_001, 12));
        assert_eq!(range.to_string(), "ib:900001:12");
        assert!("boss:1:1".parse::<UserRange>().is_err());
    }

    #[test]
    fn classifies_refusals() {
        let e = anyhow::anyhow!("expected HTTP 101 Switching Protocols, got status code 503")
            .context("WebSocket upgrade refused");
        assert_eq!(failure_kind(&e), "http 503");
    }
}
