//! A worker process of the scale benchmark: it holds its share of the trader
//! connections (through nginx, from its own 127.0.0.x), reconnects and resumes the
//! ones that drop, and answers the coordinator's questions.
//!
//! It talks JSON lines. Commands on stdin (`{"cmd": …}`):
//!
//! - `status`: `{"ev":"status","connected":N,"at_least":[…]}` with how many
//!   connections are up and how many have applied at least 0, 1, 2, … durable
//!   messages of their `portfolio:{login}`;
//! - `fanout` with `ticks: [[ts_ms, emit_us], …]` and `wait_ms`: waits (at most
//!   `wait_ms`) until every connection has the `price` of each tick, then answers
//!   `{"ev":"fanout",…}` with the copies per tick, the last arrival and an
//!   HdrHistogram (V2, hex) of the per-copy latency `arrival − emit_us`;
//! - `resume_status`: `{"ev":"resume_status","dropped":N,"resumed":N}`;
//! - `resume_report` with `kill_us`: the resume figures of every connection that
//!   dropped (`{"ev":"resume_report",…}`);
//! - `final` with `wait_ms`: waits until every connection has applied the durable
//!   messages the coordinator wrote for it (1, or 2 if it dropped: the coordinator
//!   writes one more `account` event for every login reported dropped), then
//!   reports lost, gaps and duplicates (`{"ev":"final",…}`).
//!
//! Unprompted: `{"ev":"ready",…}` once every connection has read `welcome` and its
//! three `subscribed` (or gave up), and `{"ev":"dropped","logins":[…]}` every 50 ms
//! while connections drop. The process exits when stdin closes.
//!
//! Each connection follows docs/protocol.md §6-7 for its portfolio: it remembers the
//! epoch and the `seq` of the last durable message applied; after a drop it reconnects
//! through nginx (full-jitter exponential backoff on refusal) and sends `subscribe`
//! with `since`; until the reply arrives it ignores the channel's durable messages
//! (the reconnect's default subscription is superseded by the replay); then it drops
//! duplicates (`seq <= last`) and counts any gap (`seq > last + 1`).

use crate::common::histogram;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};
use tradecast_gateway::Authenticator;
use tradecast_protocol::{Principal, Role};

#[derive(Debug, Clone, Args)]
pub struct ScaleWorkerArgs {
    /// nginx's public address.
    #[arg(long)]
    pub server: SocketAddr,
    #[arg(long)]
    pub local_ip: IpAddr,
    #[arg(long)]
    pub connections: usize,
    /// Connection i is trader `first_login + i`.
    #[arg(long)]
    pub first_login: u64,
    #[arg(long)]
    pub secret: String,
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

/// One handshake or connection may take this long before it counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The `id` of every resume request.
const RESUME_ID: &str = "resume";

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What one connection has seen, kept for the reports.
#[derive(Debug, Default, Clone)]
struct ConnStat {
    up: bool,
    /// `seq` of the last durable portfolio message applied.
    last: u64,
    /// Durable portfolio messages applied one by one (not counting snapshots).
    applied: u64,
    /// When it dropped (µs, wall clock), the first time.
    dropped_at: Option<u64>,
    drops: u32,
    /// After its first drop: when the handshake succeeded again, and when the reply
    /// to its resume arrived.
    reconnected_at: Option<u64>,
    replied_at: Option<u64>,
    /// When its resume completed: reply received and replay applied up to its seq.
    resumed_at: Option<u64>,
    recovered: Option<bool>,
    /// Durable messages skipped by a gap.
    gap_messages: u64,
    /// Durable messages received again (`seq <= last`), dropped per the protocol.
    duplicates: u64,
    /// Handshakes refused or failed before this connection was up again.
    failed_attempts: u32,
    /// How its last failed handshake failed.
    last_failure: Option<String>,
    /// `subscribed` the server sent by itself on the portfolio (a resync).
    server_resyncs: u32,
    /// `error` answers to its subscriptions (each retried after a backoff).
    unavailable: u32,
    /// Default channels held on the current connection (portfolio, orders, prices).
    holds: [bool; 3],
    /// After its first drop: when it held all three default channels again.
    whole_at: Option<u64>,
}

#[derive(Default)]
struct State {
    conns: Vec<ConnStat>,
    ready: usize,
    gave_up: usize,
    /// Failed handshakes by kind (`http 503`, `timeout`, …), initial and reconnects.
    failures: BTreeMap<String, u64>,
    /// Copies of each tick (by its `ts`): (connection, arrival µs).
    prices: HashMap<u64, Vec<(u32, u64)>>,
    /// `error` answers to subscriptions, by channel kind and code.
    unavailable: BTreeMap<String, u64>,
    /// Logins that dropped since the last `dropped` line.
    newly_dropped: Vec<u64>,
    problems: Vec<String>,
}

impl State {
    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            eprintln!("scale-worker: {text}");
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

pub async fn run(args: ScaleWorkerArgs) -> anyhow::Result<()> {
    let auth = Authenticator::new(Some(&args.secret), None)?;
    let shared: Shared = Arc::new(Mutex::new(State {
        conns: vec![ConnStat::default(); args.connections],
        ..State::default()
    }));
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = std::time::Instant::now();
    for i in 0..args.connections {
        let login = args.first_login + i as u64;
        let token = auth.mint(
            Principal {
                id: login,
                role: Role::Client,
            },
            24 * 3600,
        )?;
        let options = Target {
            server: args.server,
            local_ip: args.local_ip,
            token,
        };
        tokio::spawn(connection(
            shared.clone(),
            i,
            login,
            options,
            gate.clone(),
            args.clone(),
        ));
    }
    // Report `ready` once every connection is up or has given up.
    {
        let shared = shared.clone();
        let n = args.connections;
        tokio::spawn(async move {
            loop {
                let (ready, gave_up, failures, unavailable) = {
                    let s = lock(&shared);
                    (
                        s.ready,
                        s.gave_up,
                        s.failures.clone(),
                        s.unavailable.clone(),
                    )
                };
                if ready + gave_up >= n {
                    emit(&json!({"ev":"ready","opened":ready,"gave_up":gave_up,
                        "failures":failures,"unavailable":unavailable,
                        "elapsed_ms":started.elapsed().as_millis() as u64}));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    // Report drops as they happen, in batches.
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let logins = std::mem::take(&mut lock(&shared).newly_dropped);
                if !logins.is_empty() {
                    emit(&json!({"ev":"dropped","logins":logins}));
                }
            }
        });
    }

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        let cmd: Value = serde_json::from_str(&line).context("command is not JSON")?;
        match cmd["cmd"].as_str().unwrap_or_default() {
            "status" => emit(&status(&shared)),
            "fanout" => emit(&fanout(&shared, &cmd).await?),
            "resume_status" => {
                let s = lock(&shared);
                let dropped = s.conns.iter().filter(|c| c.dropped_at.is_some()).count();
                let resumed = s.conns.iter().filter(|c| c.resumed_at.is_some()).count();
                let up = s.conns.iter().filter(|c| c.up).count();
                emit(&json!({"ev":"resume_status","dropped":dropped,"resumed":resumed,"up":up}));
            }
            "resume_report" => emit(&resume_report(&shared, &cmd)),
            "final" => emit(&final_report(&shared, &cmd, args.first_login).await),
            other => anyhow::bail!("unknown command {other:?}"),
        }
    }
    Ok(())
}

fn status(shared: &Shared) -> Value {
    let s = lock(shared);
    let mut at_least = vec![0u64; 4];
    for c in &s.conns {
        for (k, n) in at_least.iter_mut().enumerate() {
            if c.last >= k as u64 {
                *n += 1;
            }
        }
    }
    let connected = s.conns.iter().filter(|c| c.up).count();
    let whole = s
        .conns
        .iter()
        .filter(|c| c.up && c.holds == [true; 3])
        .count();
    json!({"ev":"status","connected":connected,"whole":whole,"at_least":at_least,
           "unavailable":s.unavailable})
}

/// An HdrHistogram in its V2 encoding, as hex.
pub fn encode(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| anyhow::anyhow!("serializing a histogram: {e:?}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn fanout(shared: &Shared, cmd: &Value) -> anyhow::Result<Value> {
    let ticks: Vec<(u64, u64)> = cmd["ticks"]
        .as_array()
        .context("fanout without ticks")?
        .iter()
        .filter_map(|t| Some((t[0].as_u64()?, t[1].as_u64()?)))
        .collect();
    let wait = Duration::from_millis(cmd["wait_ms"].as_u64().unwrap_or(10_000));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let complete = {
            let s = lock(shared);
            let n = s.conns.len();
            ticks
                .iter()
                .all(|(ts, _)| s.prices.get(ts).map_or(0, Vec::len) >= n)
        };
        if complete || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut s = lock(shared);
    let n = s.conns.len();
    let mut all = histogram();
    let mut per_tick = Vec::new();
    for (ts, emit_us) in &ticks {
        let copies = s.prices.remove(ts).unwrap_or_default();
        let mut seen = vec![false; n];
        let (mut distinct, mut duplicates, mut last) = (0u64, 0u64, 0u64);
        let mut first = u64::MAX;
        for (conn, at) in copies {
            if std::mem::replace(&mut seen[conn as usize], true) {
                duplicates += 1;
                continue;
            }
            distinct += 1;
            let _ = all.record(at.saturating_sub(*emit_us).max(1));
            last = last.max(at);
            first = first.min(at);
        }
        // Who missed it: connections up since the start, resumed ones, or down.
        let (mut never_dropped, mut resumed, mut down) = (0u64, 0u64, 0u64);
        let mut examples = Vec::new();
        for (conn, got) in seen.iter().enumerate() {
            if *got {
                continue;
            }
            let c = &s.conns[conn];
            match (c.up, c.dropped_at.is_some()) {
                (false, _) => down += 1,
                (true, true) => resumed += 1,
                (true, false) => never_dropped += 1,
            }
            if examples.len() < 5 {
                examples.push(json!({"conn":conn,"up":c.up,"dropped":c.dropped_at.is_some()}));
            }
        }
        per_tick.push(json!({"ts":ts,"copies":distinct,"duplicates":duplicates,
            "first_us":if distinct > 0 { first } else { 0 },"last_us":last,
            "missed_by":{"never_dropped":never_dropped,"resumed":resumed,"down":down},
            "missed_examples":examples}));
    }
    // Copies of older ticks (e.g. retained prices after a reconnect) are not needed.
    s.prices.clear();
    Ok(json!({"ev":"fanout","connections":n,"ticks":per_tick,"hist":encode(&all)?}))
}

fn resume_report(shared: &Shared, cmd: &Value) -> Value {
    let kill_us = cmd["kill_us"].as_u64().unwrap_or(0);
    let s = lock(shared);
    let mut resume = histogram();
    let mut detect = histogram();
    let mut reconnect = histogram();
    let mut reply = histogram();
    let mut whole = histogram();
    let (mut affected, mut resumed, mut rec_true, mut rec_false) = (0u64, 0u64, 0u64, 0u64);
    let (mut first, mut last) = (u64::MAX, 0u64);
    let (mut failed_attempts, mut max_attempts, mut multi_drops) = (0u64, 0u32, 0u64);
    let mut stuck = Vec::new();
    for (i, c) in s.conns.iter().enumerate() {
        let Some(dropped) = c.dropped_at else {
            continue;
        };
        affected += 1;
        let _ = detect.record(dropped.saturating_sub(kill_us).max(1));
        if let Some(at) = c.reconnected_at {
            let _ = reconnect.record(at.saturating_sub(kill_us).max(1));
        }
        if let Some(at) = c.replied_at {
            let _ = reply.record(at.saturating_sub(kill_us).max(1));
        }
        if let Some(at) = c.whole_at {
            let _ = whole.record(at.saturating_sub(kill_us).max(1));
        }
        failed_attempts += u64::from(c.failed_attempts);
        max_attempts = max_attempts.max(c.failed_attempts);
        if c.drops > 1 {
            multi_drops += 1;
        }
        match (c.resumed_at, c.recovered) {
            (Some(at), Some(recovered)) => {
                resumed += 1;
                if recovered {
                    rec_true += 1;
                } else {
                    rec_false += 1;
                }
                let _ = resume.record(at.saturating_sub(kill_us).max(1));
                first = first.min(at);
                last = last.max(at);
            }
            _ => {
                if stuck.len() < 10 {
                    stuck.push(
                        json!({"conn":i,"up":c.up,"last":c.last,"failed_attempts":c.failed_attempts,
                        "last_failure":c.last_failure}),
                    );
                }
            }
        }
    }
    json!({"ev":"resume_report","affected":affected,"resumed":resumed,
        "recovered_true":rec_true,"recovered_false":rec_false,
        "first_us":if resumed > 0 { first } else { 0 },"last_us":last,
        "failed_attempts":failed_attempts,"max_failed_attempts":max_attempts,
        "dropped_more_than_once":multi_drops,"failures":s.failures,"unavailable":s.unavailable,
        "resume_hist":encode(&resume).unwrap_or_default(),
        "detect_hist":encode(&detect).unwrap_or_default(),
        "reconnect_hist":encode(&reconnect).unwrap_or_default(),
        "reply_hist":encode(&reply).unwrap_or_default(),
        "whole_hist":encode(&whole).unwrap_or_default(),"stuck":stuck})
}

/// The durable messages connection `c` must have applied: the set-up `account`
/// event, plus the one written after its drop.
fn expected(c: &ConnStat) -> u64 {
    if c.dropped_at.is_some() { 2 } else { 1 }
}

async fn final_report(shared: &Shared, cmd: &Value, first_login: u64) -> Value {
    let wait = Duration::from_millis(cmd["wait_ms"].as_u64().unwrap_or(10_000));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let done = lock(shared).conns.iter().all(|c| c.last >= expected(c));
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = lock(shared);
    let (mut expected_total, mut applied, mut behind, mut gaps, mut dups) = (0u64, 0, 0, 0, 0);
    // Of `behind`: owed to connections that are down (never got back).
    let mut behind_down = 0u64;
    let (mut resyncs, mut ahead, mut up) = (0u64, 0u64, 0u64);
    let mut examples = Vec::new();
    for (i, c) in s.conns.iter().enumerate() {
        let e = expected(c);
        expected_total += e;
        applied += c.applied;
        gaps += c.gap_messages;
        dups += c.duplicates;
        resyncs += u64::from(c.server_resyncs);
        up += u64::from(c.up);
        if c.last < e {
            behind += e - c.last;
            if !c.up {
                behind_down += e - c.last;
            }
            if examples.len() < 10 {
                examples.push(format!(
                    "login {}: last seq {} of {e} (up {}, dropped {:?})",
                    first_login + i as u64,
                    c.last,
                    c.up,
                    c.dropped_at.is_some()
                ));
            }
        } else if c.last > e {
            ahead += c.last - e;
        }
    }
    json!({"ev":"final","connections":s.conns.len(),"up":up,"expected":expected_total,
        "applied":applied,"lost":behind - behind_down + gaps,"missing_at_end":behind,
        "owed_to_clients_still_down":behind_down,"gap_messages":gaps,
        "duplicates_received":dups,"unexpected_extra":ahead,"server_resyncs":resyncs,
        "examples":examples,"problems":s.problems})
}

/// A failed handshake, by kind: the HTTP status nginx answered, or what the socket
/// said (from the innermost error, not the contexts around it).
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

/// The `ts` of a `price` frame, found without parsing the JSON.
fn price_ts(text: &str) -> Option<u64> {
    if !text.starts_with(r#"{"type":"price""#) {
        return None;
    }
    let rest = &text[text.find(r#""ts":"#)? + 5..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where a connection goes, and from which address.
struct Target {
    server: SocketAddr,
    local_ip: IpAddr,
    token: String,
}

/// A WebSocket to nginx from a chosen 127.0.0.x, with the port picked at
/// `connect()` (`IP_BIND_ADDRESS_NO_PORT`).
///
/// Why not `tradecast_client::Client` with `Connect::local_ip`: it calls
/// `bind(ip:0)`, and a port taken by `bind()` is out of the pool `connect()` picks
/// its ports from, on every address. 45,000 such sockets (6 addresses, ~14,000
/// distinct ports) leave nginx too few of the 28,232 ephemeral ports for its own
/// connections to the nodes: at ~43,000 clients its upstream `connect()`s fail, it
/// answers 502 and takes every node out of its ring for `fail_timeout`. With the
/// option the kernel picks the port at `connect()`, unique per 4-tuple, so the
/// clients and nginx share the range.
struct Ws {
    ws: WebSocketStream<TcpStream>,
}

impl Ws {
    async fn connect(target: &Target) -> anyhow::Result<Ws> {
        let socket = match target.local_ip {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        bind_address_no_port(&socket)?;
        socket
            .bind(SocketAddr::new(target.local_ip, 0))
            .with_context(|| format!("binding to {}", target.local_ip))?;
        let stream = socket
            .connect(target.server)
            .await
            .with_context(|| format!("connecting to {}", target.server))?;
        stream.set_nodelay(true)?;
        let uri = format!("ws://{}/ws?token={}", target.server, target.token);
        let (ws, _response) = ClientBuilder::new()
            .uri(&uri)?
            .limits(tokio_websockets::Limits::unlimited())
            .connect_on(stream)
            .await
            .context("WebSocket upgrade refused")?;
        Ok(Ws { ws })
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

fn bind_address_no_port(socket: &TcpSocket) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(
        rc == 0,
        "IP_BIND_ADDRESS_NO_PORT: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// One trader connection, for the whole run.
async fn connection(
    shared: Shared,
    i: usize,
    login: u64,
    options: Target,
    gate: Arc<Semaphore>,
    args: ScaleWorkerArgs,
) {
    let channel = format!("portfolio:{login}");
    // (epoch, last applied) once the first portfolio `subscribed` arrived.
    let mut position: Option<(String, u64)> = None;
    let mut initial = true;
    loop {
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(if initial {
                args.connect_deadline_s
            } else {
                args.reconnect_deadline_s
            });
        // Connect, with full-jitter backoff after a failure.
        let mut attempt = 0u32;
        let mut client = loop {
            let permit = if initial {
                gate.clone().acquire_owned().await.ok()
            } else {
                None
            };
            let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, Ws::connect(&options))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("handshake timed out")));
            match result {
                Ok(client) => break Some((client, permit)),
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
                        break None;
                    }
                    let cap = args
                        .backoff_cap_ms
                        .min(args.backoff_base_ms.saturating_mul(1 << attempt.min(16)));
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=cap))).await;
                }
            }
        };
        let Some((ref mut client, ref mut permit)) = client else {
            let mut s = lock(&shared);
            if initial {
                s.gave_up += 1;
            }
            s.problem(format!("login {login}: gave up connecting"));
            return;
        };
        {
            let mut s = lock(&shared);
            let c = &mut s.conns[i];
            c.up = true;
            if c.dropped_at.is_some() && c.reconnected_at.is_none() {
                c.reconnected_at = Some(now_us());
            }
        }

        // Resume, unless this is the first connection.
        let mut waiting = false;
        if let Some((epoch, last)) = &position {
            let request = json!({"type":"subscribe","channel":channel,"id":RESUME_ID,
                "since":{"epoch":epoch,"seq":last}});
            if let Err(e) = client.send(&request).await {
                lock(&shared).problem(format!("login {login}: sending the resume: {e:#}"));
            }
            waiting = true;
        }
        // After the resume's reply: complete once `last` reaches this seq.
        let mut resume_target: Option<(u64, bool)> = None;
        let mut subscribed = 0;
        // Requests to send again later: a channel the node answered `unavailable`
        // for (docs/protocol.md §2: subscribe to it yourself after a backoff).
        let mut retry: Vec<(tokio::time::Instant, Value)> = Vec::new();
        loop {
            let next_retry = retry.iter().map(|(at, _)| *at).min();
            let text = tokio::select! {
                text = client.recv_text() => text,
                _ = sleep_until_some(next_retry) => {
                    let now = tokio::time::Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) =
                        retry.drain(..).partition(|(at, _)| *at <= now);
                    retry = later;
                    for (_, mut request) in due {
                        // A resume goes out with the position as it is now.
                        if request["id"] == RESUME_ID
                            && let Some((epoch, last)) = &position
                        {
                            request["since"] = json!({"epoch": epoch, "seq": last});
                        }
                        if let Err(e) = client.send(&request).await {
                            lock(&shared).problem(format!("login {login}: resending: {e:#}"));
                        }
                    }
                    continue;
                }
            };
            let at = now_us();
            let Some(text) = text else {
                break;
            };
            if let Some(ts) = price_ts(&text) {
                lock(&shared)
                    .prices
                    .entry(ts)
                    .or_default()
                    .push((i as u32, at));
                continue;
            }
            let Ok(m) = serde_json::from_str::<Value>(&text) else {
                lock(&shared).problem(format!("login {login}: invalid JSON {text}"));
                continue;
            };
            let kind = m["type"].as_str().unwrap_or_default();
            if kind == "subscribed" {
                let held = match m["channel"].as_str() {
                    Some(c) if c == channel => Some(0),
                    Some(c) if c.starts_with("orders:") => Some(1),
                    Some(c) if c.starts_with("prices:") => Some(2),
                    _ => None,
                };
                if let Some(k) = held {
                    let mut s = lock(&shared);
                    let c = &mut s.conns[i];
                    c.holds[k] = true;
                    if c.holds == [true; 3] && c.dropped_at.is_some() {
                        c.whole_at.get_or_insert(at);
                    }
                }
            }
            if kind == "error" {
                let name = m["channel"].as_str().unwrap_or_default().to_owned();
                let what = if m["id"] == RESUME_ID {
                    "resume".to_owned()
                } else {
                    name.split(':').next().unwrap_or("?").to_owned()
                };
                {
                    let mut s = lock(&shared);
                    *s.unavailable
                        .entry(format!("{what} ({})", m["code"].as_str().unwrap_or("?")))
                        .or_default() += 1;
                    s.conns[i].unavailable += 1;
                }
                let wait = Duration::from_millis(fastrand::u64(500..=1_500));
                let again = tokio::time::Instant::now() + wait;
                if m["id"] == RESUME_ID {
                    retry.push((
                        again,
                        json!({"type":"subscribe","channel":channel,"id":RESUME_ID}),
                    ));
                } else if m["code"] == "unavailable"
                    && !name.is_empty()
                    && !(waiting && name == channel)
                {
                    // A default channel of this connection: subscribe again (the
                    // portfolio of a reconnect is covered by the resume instead).
                    retry.push((
                        again,
                        json!({"type":"subscribe","channel":name,"id":format!("again:{name}")}),
                    ));
                } else {
                    lock(&shared).problem(format!("login {login}: {m}"));
                }
                continue;
            }
            if kind == "subscribed" && initial {
                subscribed += 1;
                if m["channel"] == channel.as_str() {
                    let epoch = m["epoch"].as_str().unwrap_or_default().to_owned();
                    let seq = m["seq"].as_u64().unwrap_or(0);
                    position = Some((epoch, seq));
                    lock(&shared).conns[i].last = seq;
                }
                if subscribed == 3 {
                    initial = false;
                    *permit = None;
                    lock(&shared).ready += 1;
                }
                continue;
            }
            if m["channel"] != channel.as_str() {
                continue;
            }
            if kind == "subscribed" {
                let epoch = m["epoch"].as_str().unwrap_or_default().to_owned();
                let seq = m["seq"].as_u64().unwrap_or(0);
                let recovered = m["recovered"] == true;
                if waiting && m["id"] == RESUME_ID {
                    waiting = false;
                    let Some((old_epoch, last)) = position.as_mut() else {
                        continue;
                    };
                    if recovered && *old_epoch != epoch {
                        lock(&shared)
                            .problem(format!("login {login}: recovered in a new epoch {m}"));
                    }
                    if !recovered {
                        *last = seq;
                    }
                    *old_epoch = epoch;
                    let last = *last;
                    let mut s = lock(&shared);
                    s.conns[i].last = last;
                    s.conns[i].replied_at.get_or_insert(at);
                    if last >= seq {
                        s.conns[i].resumed_at.get_or_insert(at);
                        s.conns[i].recovered.get_or_insert(recovered);
                    } else {
                        resume_target = Some((seq, recovered));
                    }
                } else if !waiting && m["id"].is_null() {
                    // The server resynced the channel by itself (rule 1 of §6).
                    position = Some((epoch, seq));
                    let mut s = lock(&shared);
                    s.conns[i].last = seq;
                    s.conns[i].server_resyncs += 1;
                    s.problem(format!("login {login}: server-initiated resync {m}"));
                }
                // Else: the default subscription of a reconnect; the resume follows.
                continue;
            }
            let Some(seq) = m["seq"].as_u64() else {
                continue;
            };
            if waiting {
                continue;
            }
            let Some((_, last)) = position.as_mut() else {
                continue;
            };
            let mut s = lock(&shared);
            if seq <= *last {
                s.conns[i].duplicates += 1;
                continue;
            }
            if seq > *last + 1 {
                s.conns[i].gap_messages += seq - *last - 1;
                s.problem(format!("login {login}: gap, seq {seq} after {last}"));
            }
            *last = seq;
            let c = &mut s.conns[i];
            c.last = seq;
            c.applied += 1;
            if let Some((target, recovered)) = resume_target
                && seq >= target
            {
                c.resumed_at.get_or_insert(at);
                c.recovered.get_or_insert(recovered);
                resume_target = None;
            }
        }
        // The connection is gone.
        let mut s = lock(&shared);
        if initial {
            // Dropped during set-up: count it as a failed attempt and try again.
            *s.failures
                .entry("closed during set-up".to_owned())
                .or_default() += 1;
            continue;
        }
        let at = now_us();
        let c = &mut s.conns[i];
        c.up = false;
        c.holds = [false; 3];
        c.drops += 1;
        if c.dropped_at.is_none() {
            c.dropped_at = Some(at);
            s.newly_dropped.push(login);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ts_of_a_price() {
        let text = r#"{"type":"price","channel":"prices:forex","symbol":"EURUSD","bid":1.1,"ask":1.2,"digits":5,"ts":1717430400110}"#;
        assert_eq!(price_ts(text), Some(1_717_430_400_110));
        assert_eq!(price_ts(r#"{"type":"pong"}"#), None);
    }

    #[test]
    fn classifies_refusals() {
        let e = anyhow::anyhow!("expected HTTP 101 Switching Protocols, got status code 503")
            .context("WebSocket upgrade refused");
        assert_eq!(failure_kind(&e), "http 503");
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let e = anyhow::Error::from(io).context("WebSocket upgrade refused");
        assert_eq!(failure_kind(&e), "connection reset during the upgrade");
    }
}
