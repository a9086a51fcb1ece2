//! The ingest latency benchmark: how long a trade event takes from the moment a
//! trade-server plugin XADDs it into Redis until the trader and every IB up a 5-level
//! chain have it on their WebSocket.
//!
//! 1. Start a private `redis-server` (testkit, a free loopback port, never 6379) and
//!    one `tradecast serve --redis URL` node; wait for `/readyz` and for the node to
//!    lead ingest (`tradecast_ingest_leader 1`).
//! 2. Write the set-up events into `tc:events`: `--traders` accounts, and one 5-level
//!    IB chain (trader → L1 → L2 → L3 → L4 → L5) per `--traders-per-chain` traders.
//! 3. Connect every trader and every IB over WebSocket and read their snapshots.
//! 4. For `--warmup-s` + `--duration-s` seconds write trade events at `--rate` per
//!    second, in a pipelined batch every `--batch-ms`: position opens, closing deals
//!    (each pays the 5 IBs of the trader's chain: 5 `commission` messages) and
//!    position closes. Each batch gets `emit_ts` (ms UTC) just before its XADD.
//! 5. Channel messages do not echo `emit_ts`, so the bench remembers, per expected
//!    message, the emit time on a monotonic clock shared by the writer and the
//!    readers (same process): `position_opened` / `position_closed` by position id,
//!    `commission` by (deal, level). Each arrival is matched and its latency recorded
//!    in µs (events written during the warm-up are checked but not timed).
//! 6. Wait for the stragglers, then report expected vs received (any difference is a
//!    failure) and p50/p90/p99/max, print a table and write
//!    `ingest-latency.json` / `ingest-latency.md` into `--out-dir`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tradecast_client::{Client, Connect};
use tradecast_gateway::Authenticator;
use tradecast_ingest::StreamLayout;
use tradecast_ingest::writer::StreamWriter;
use tradecast_protocol::{Principal, Role};
use tradecast_testkit::RedisServer;

use crate::common::{histogram, http_get, redis_pid, source_version};
use crate::procfs;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Trade events written per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Seconds of measured load (after the warm-up).
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Seconds of load before the measurement (delivery is still checked).
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Traders (each connected over WebSocket).
    #[arg(long, default_value_t = 200)]
    traders: usize,
    /// Traders under each 5-level IB chain (each chain's 5 IBs are connected too).
    #[arg(long, default_value_t = 10)]
    traders_per_chain: usize,
    /// One pipelined XADD batch this often.
    #[arg(long, default_value_t = 10)]
    batch_ms: u64,
    /// How long to wait for the last messages after the last write.
    #[arg(long, default_value_t = 10)]
    drain_s: u64,
    /// Random seed of the trade mix.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The `tradecast` binary (default: next to this one).
    #[arg(long)]
    tradecast: Option<PathBuf>,
    /// Every client sends `{"type":"ping"}` this often (0: never; the node's own
    /// WebSocket pings keep connections alive anyway), each at a random phase.
    #[arg(long, default_value_t = 30_000)]
    ping_ms: u64,
    /// Send every client's ping at the same moment instead of at random phases.
    #[arg(long)]
    aligned_pings: bool,
    /// Extra flag for `tradecast serve` (repeatable), e.g. `--node-arg=--checkpoint-ms=60000`.
    #[arg(long, allow_hyphen_values = true)]
    node_arg: Vec<String>,
    /// Where `ingest-latency.json` and `ingest-latency.md` are written.
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
}

const SECRET: &str = "bench-ingest-secret";
/// Levels of every IB chain.
const DEPTH: usize = 5;
/// First trader login; trader i is `FIRST_LOGIN + i`.
const FIRST_LOGIN: u64 = 100_001;
/// IB of chain g at level l (1 = direct) is `IB_BASE + 10 g + l`.
const IB_BASE: u64 = 900_000;
/// Open positions a trader holds at most (keeps portfolio snapshots small).
const MAX_OPEN: usize = 3;
const SYMBOLS: [(&str, f64); 6] = [
    ("EURUSD", 1.0842),
    ("GBPUSD", 1.2710),
    ("AUDUSD", 0.6610),
    ("USDCHF", 0.8820),
    ("NZDUSD", 0.6120),
    ("EURGBP", 0.8530),
];
const VOLUMES: [u64; 4] = [1_000, 5_000, 10_000, 20_000];
/// Bound on every wait during set-up.
const SETUP_WAIT: Duration = Duration::from_secs(30);

/// A monotonic clock shared by the writer and the readers: µs since the bench began.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A message the bench expects, identified by what the message itself carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Opened(u64),
    Closed(u64),
    Commission { deal: u64, level: u64 },
}

/// When the event behind an expected message was written, and to whom it must go.
#[derive(Debug, Clone, Copy)]
struct Pending {
    emit_us: u64,
    /// Trader login or IB id whose channel must carry it.
    owner: u64,
    /// Written after the warm-up: its latency counts.
    timed: bool,
}

/// What every reader reports into: expected messages and the latencies measured.
struct Tracker {
    pending: HashMap<Key, Pending>,
    /// Per closing deal: (emit µs, commissions still to arrive, timed).
    deals: HashMap<u64, (u64, usize, bool)>,
    trader: Histogram<u64>,
    opened: Histogram<u64>,
    closed: Histogram<u64>,
    commission: Histogram<u64>,
    by_level: Vec<Histogram<u64>>,
    /// Deal written → the last of its 5 commissions received.
    deal_all: Histogram<u64>,
    /// Every timed message, by the second of the run its event was written in.
    timeline: Vec<Histogram<u64>>,
    expected_trader: u64,
    received_trader: u64,
    expected_commission: u64,
    received_commission: u64,
    /// Tracked message types that matched nothing pending (duplicate or stray).
    unexpected: u64,
    /// Matched, but on the wrong user's channel.
    misrouted: u64,
    /// Durable messages whose `seq` did not follow the previous one on the channel.
    seq_breaks: u64,
    /// Connections that closed during the run.
    closed_connections: u64,
    /// The first few problems, verbatim.
    problems: Vec<String>,
}

impl Tracker {
    fn new() -> Self {
        Tracker {
            pending: HashMap::new(),
            deals: HashMap::new(),
            trader: histogram(),
            opened: histogram(),
            closed: histogram(),
            commission: histogram(),
            by_level: (0..DEPTH).map(|_| histogram()).collect(),
            deal_all: histogram(),
            timeline: Vec::new(),
            expected_trader: 0,
            received_trader: 0,
            expected_commission: 0,
            received_commission: 0,
            unexpected: 0,
            misrouted: 0,
            seq_breaks: 0,
            closed_connections: 0,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            eprintln!("PROBLEM: {text}");
            self.problems.push(text);
        }
    }

    fn expect(&mut self, key: Key, pending: Pending) {
        match key {
            Key::Commission { .. } => self.expected_commission += 1,
            _ => self.expected_trader += 1,
        }
        self.pending.insert(key, pending);
    }

    /// A tracked message arrived at `at_us` on `owner`'s channel.
    fn arrived(&mut self, key: Key, owner: u64, at_us: u64) {
        let Some(pending) = self.pending.remove(&key) else {
            self.unexpected += 1;
            self.problem(format!("unexpected {key:?} on the channel of {owner}"));
            return;
        };
        if pending.owner != owner {
            self.misrouted += 1;
            self.problem(format!(
                "{key:?} arrived for {owner}, expected for {}",
                pending.owner
            ));
        }
        let latency = at_us.saturating_sub(pending.emit_us).max(1);
        if pending.timed {
            let second = (pending.emit_us / 1_000_000) as usize;
            if self.timeline.len() <= second {
                self.timeline.resize_with(second + 1, histogram);
            }
            let _ = self.timeline[second].record(latency);
        }
        match key {
            Key::Opened(_) | Key::Closed(_) => {
                self.received_trader += 1;
                if pending.timed {
                    let _ = self.trader.record(latency);
                    let _ = match key {
                        Key::Opened(_) => self.opened.record(latency),
                        _ => self.closed.record(latency),
                    };
                }
            }
            Key::Commission { deal, level } => {
                self.received_commission += 1;
                if pending.timed {
                    let _ = self.commission.record(latency);
                    if let Some(h) = self.by_level.get_mut(level as usize - 1) {
                        let _ = h.record(latency);
                    }
                }
                if let Some(entry) = self.deals.get_mut(&deal) {
                    entry.1 -= 1;
                    if entry.1 == 0 {
                        let (emit, _, timed) = self.deals.remove(&deal).expect("present");
                        if timed {
                            let _ = self.deal_all.record(at_us.saturating_sub(emit).max(1));
                        }
                    }
                }
            }
        }
    }

    fn lost(&self) -> u64 {
        self.pending.len() as u64
    }
}

/// One trader's open position, as the bench generated it.
#[derive(Debug, Clone)]
struct OpenPosition {
    id: u64,
    symbol: &'static str,
    price: f64,
    buy: bool,
    vol: u64,
    /// The closing deal, once written.
    deal: Option<u64>,
}

/// The trade mix: which event comes next, and what it must produce.
struct Generator {
    rng: fastrand::Rng,
    positions: Vec<Vec<OpenPosition>>,
    next_position: u64,
    next_deal: u64,
    opens: u64,
    deals: u64,
    closes: u64,
    traders_per_chain: usize,
}

impl Generator {
    /// The next event (without envelope) and the messages it must produce, as
    /// (key, owner) pairs.
    fn next(&mut self) -> (Value, Vec<(Key, u64)>) {
        let t = self.rng.usize(..self.positions.len());
        let login = FIRST_LOGIN + t as u64;
        let chain = chain_of(t, self.traders_per_chain);
        let held = &self.positions[t];
        let dealt = held.iter().position(|p| p.deal.is_some());
        let undealt = held.iter().position(|p| p.deal.is_none());
        let can_open = held.len() < MAX_OPEN;
        enum Step {
            Open,
            Deal(usize),
            Close(usize),
        }
        // Close a dealt position half the time; else write the closing deal of an
        // open one, or open a new one (half and half while there is room). Every
        // position goes open → closing deal → close, so the three come about equally.
        let step = match (dealt, undealt) {
            (Some(i), _) if self.rng.bool() => Step::Close(i),
            (_, Some(i)) if !can_open || self.rng.bool() => Step::Deal(i),
            _ if can_open => Step::Open,
            // Full, and every position already has its deal.
            (Some(i), _) => Step::Close(i),
            (None, _) => Step::Open,
        };
        match step {
            Step::Open => {
                let (symbol, price) = SYMBOLS[self.rng.usize(..SYMBOLS.len())];
                let position = OpenPosition {
                    id: self.next_position,
                    symbol,
                    price,
                    buy: self.rng.bool(),
                    vol: VOLUMES[self.rng.usize(..VOLUMES.len())],
                    deal: None,
                };
                self.next_position += 1;
                self.opens += 1;
                let event = json!({"type":"position","op":"open","login":login,"position_id":position.id,
                    "symbol":symbol,"side":if position.buy {"buy"} else {"sell"},"vol":position.vol,
                    "price_open":price,"digits":5,"contract_size":100000});
                let expect = vec![(Key::Opened(position.id), login)];
                self.positions[t].push(position);
                (event, expect)
            }
            Step::Deal(i) => {
                let deal = self.next_deal;
                self.next_deal += 1;
                self.deals += 1;
                let profit = (self.rng.i32(-5_000..5_000) as f64) / 100.0;
                let position = &mut self.positions[t][i];
                position.deal = Some(deal);
                let event = json!({"type":"deal","login":login,"deal":deal,"position_id":position.id,
                    "action":if position.buy {"sell"} else {"buy"},"entry":"out","symbol":position.symbol,
                    "vol":position.vol,"price":position.price,"profit":profit});
                let expect = (1..=DEPTH)
                    .map(|level| {
                        (
                            Key::Commission {
                                deal,
                                level: level as u64,
                            },
                            chain[level - 1],
                        )
                    })
                    .collect();
                (event, expect)
            }
            Step::Close(i) => {
                let position = self.positions[t].remove(i);
                self.closes += 1;
                let event = json!({"type":"position","op":"close","login":login,
                    "position_id":position.id,"close_deal":position.deal});
                (event, vec![(Key::Closed(position.id), login)])
            }
        }
    }
}

/// The IB chain of trader index `t`, direct IB first.
fn chain_of(t: usize, traders_per_chain: usize) -> [u64; DEPTH] {
    let g = (t / traders_per_chain) as u64;
    std::array::from_fn(|l| IB_BASE + 10 * g + l as u64 + 1)
}

/// An event body wrapped in the ingest envelope.
fn envelope(src: &str, seq: u64, ts: u64, body: Value) -> Value {
    let mut event = json!({"v": 1, "src": src, "seq": seq, "ts": ts});
    if let (Some(e), Value::Object(b)) = (event.as_object_mut(), body) {
        e.extend(b);
    }
    event
}

/// The `tradecast serve` process; killed when dropped.
struct Node {
    child: Child,
    public: SocketAddr,
    admin: SocketAddr,
}

impl Node {
    async fn start(tradecast: &PathBuf, redis_url: &str, extra: &[String]) -> anyhow::Result<Node> {
        let mut child = Command::new(tradecast)
            .args(["serve", "--redis", redis_url, "--jwt-secret", SECRET])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", tradecast.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("node stdout")?).lines();
        let line = tokio::time::timeout(SETUP_WAIT, lines.next_line())
            .await
            .context("the node printed no listening line")??
            .context("the node exited at start")?;
        // Keep reading stdout so the node never blocks on a full pipe.
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
        })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("node pid")
    }

    /// The sum of every sample of `name` on `/metrics` (all label sets).
    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (status, body) = http_get(self.admin, "/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(body
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            // Not `sum()`: an empty f64 sum is -0.0, which prints as "-0".
            .fold(0.0, |a, b| a + b))
    }
}

/// Poll `check` every 50 ms until it holds; fail after SETUP_WAIT.
async fn wait_until(what: &str, check: impl AsyncFn() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SETUP_WAIT;
    while !check().await {
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {SETUP_WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A connected user, set up and ready to be read.
struct Connected {
    client: Client,
    owner: u64,
    /// The `seq` of each default channel at subscription.
    seqs: HashMap<String, u64>,
}

/// Connect as (`id`, `role`) and read `welcome` and one `subscribed` per default
/// channel (the snapshots that follow are read by the reader).
async fn connect(
    server: SocketAddr,
    auth: &Authenticator,
    id: u64,
    role: Role,
) -> anyhow::Result<Connected> {
    let token = auth.mint(Principal { id, role }, 24 * 3600)?;
    let mut client = Client::connect(&Connect::new(server, token)).await?;
    let welcome = client
        .recv_within(SETUP_WAIT)
        .await?
        .context("closed before welcome")?;
    anyhow::ensure!(welcome["type"] == "welcome", "first message {welcome}");
    let channels = welcome["channels"].as_array().map_or(0, Vec::len);
    let mut seqs = HashMap::new();
    while seqs.len() < channels {
        let m = client
            .recv_within(SETUP_WAIT)
            .await?
            .with_context(|| format!("{id} closed during set-up: {:?}", client.closed))?;
        if m["type"] == "subscribed" {
            let channel = m["channel"].as_str().unwrap_or_default().to_owned();
            seqs.insert(channel, m["seq"].as_u64().unwrap_or(0));
        }
    }
    Ok(Connected {
        client,
        owner: id,
        seqs,
    })
}

/// When a client sends its application pings: every `every`, the first after `phase`.
#[derive(Debug, Clone, Copy)]
struct Pings {
    every: Duration,
    phase: Duration,
}

/// Read one connection until it closes or the bench aborts it: match tracked
/// messages, check `seq` continuity, and send a ping now and then as a browser
/// client would.
async fn read(
    mut conn: Connected,
    clock: Clock,
    tracker: Arc<Mutex<Tracker>>,
    pings: Option<Pings>,
) {
    // Without pings: one tick a year, never reached within a run.
    let pings = pings.unwrap_or(Pings {
        every: Duration::from_secs(365 * 24 * 3600),
        phase: Duration::from_secs(365 * 24 * 3600),
    });
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + pings.phase, pings.every);
    let portfolio = format!("portfolio:{}", conn.owner);
    let commissions = format!("commissions:{}", conn.owner);
    loop {
        let text = tokio::select! {
            text = conn.client.recv_text() => text,
            _ = ping.tick() => {
                let _ = conn.client.send(&json!({"type":"ping"})).await;
                continue;
            }
        };
        let at = clock.us();
        let text = match text {
            Ok(Some(text)) => text,
            Ok(None) | Err(_) => {
                let mut t = tracker.lock().expect("tracker lock");
                t.closed_connections += 1;
                let closed = conn.client.closed.clone();
                t.problem(format!("connection of {} closed: {closed:?}", conn.owner));
                return;
            }
        };
        let Ok(m) = serde_json::from_str::<Value>(&text) else {
            tracker
                .lock()
                .expect("tracker lock")
                .problem(format!("invalid JSON: {text}"));
            continue;
        };
        let kind = m["type"].as_str().unwrap_or_default();
        let channel = m["channel"].as_str().unwrap_or_default();
        let key = match kind {
            "position_opened" if channel == portfolio => m["id"].as_u64().map(Key::Opened),
            "position_closed" if channel == portfolio => m["id"].as_u64().map(Key::Closed),
            "commission" if channel == commissions => {
                match (m["deal"].as_u64(), m["level"].as_u64()) {
                    (Some(deal), Some(level)) => Some(Key::Commission { deal, level }),
                    _ => None,
                }
            }
            _ => None,
        };
        // Durable messages: each seq follows the last one seen on the channel.
        let mut seq_problem = None;
        if let (Some(seq), false) = (
            m["seq"].as_u64(),
            kind == "subscribed" || kind.ends_with("_full"),
        ) && let Some(last) = conn.seqs.get_mut(channel)
        {
            if seq != *last + 1 {
                seq_problem = Some(format!("{channel}: seq {seq} after {last} ({kind})"));
            }
            *last = seq;
        }
        if key.is_none() && seq_problem.is_none() {
            continue;
        }
        let mut t = tracker.lock().expect("tracker lock");
        if let Some(problem) = seq_problem {
            t.seq_breaks += 1;
            t.problem(problem);
        }
        if let Some(key) = key {
            t.arrived(key, conn.owner, at);
        }
    }
}

/// Percentiles of one histogram, in µs.
fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50),
        "p90_us": h.value_at_quantile(0.90),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
        "mean_us": (h.mean() * 10.0).round() / 10.0,
    })
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// Runs the benchmark; Ctrl-C stops it with the node and Redis cleaned up (they are
/// killed when dropped, and dropping the future drops them).
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    tokio::select! {
        result = bench(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn bench(args: IngestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0, "--rate must be positive");
    anyhow::ensure!(
        args.traders > 0 && args.traders_per_chain > 0,
        "--traders and --traders-per-chain must be positive"
    );
    let clock = Clock(Instant::now());
    let source = source_version();
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
    let tradecast = args.tradecast.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .map(|me| me.with_file_name("tradecast"))
            .unwrap_or_else(|_| PathBuf::from("tradecast"))
    });

    // 1. Redis and the node.
    let redis = tokio::task::spawn_blocking(RedisServer::start).await?;
    eprintln!("redis-server on {}", redis.url());
    let mut node = Node::start(&tradecast, &redis.url(), &args.node_arg).await?;
    eprintln!("node public={} admin={}", node.public, node.admin);
    wait_until("/readyz 200", async || {
        http_get(node.admin, "/readyz")
            .await
            .is_ok_and(|(status, _)| status == 200)
    })
    .await?;
    wait_until("tradecast_ingest_leader 1", async || {
        node.metric("tradecast_ingest_leader")
            .await
            .is_ok_and(|v| v == 1.0)
    })
    .await?;

    // 2. Set-up events.
    let chains = args.traders.div_ceil(args.traders_per_chain);
    let src = format!("bench-ingest-{}-{}", std::process::id(), wall_ms());
    let mut seq = 0u64;
    let mut writer = StreamWriter::connect(&redis.url(), StreamLayout::default(), None).await?;
    let mut setup = Vec::new();
    for t in 0..args.traders {
        let login = FIRST_LOGIN + t as u64;
        setup.push(
            json!({"type":"account","login":login,"name":format!("Trader {login}"),
            "ccy":"USD","leverage":100,"balance":10_000.0,"credit":0.0}),
        );
    }
    for g in 0..chains {
        let chain = chain_of(g * args.traders_per_chain, args.traders_per_chain);
        for pair in chain.windows(2) {
            setup.push(json!({"type":"ib_link","op":"set","login":pair[0],"ib":pair[1]}));
        }
    }
    for t in 0..args.traders {
        let chain = chain_of(t, args.traders_per_chain);
        setup.push(
            json!({"type":"ib_link","op":"set","login":FIRST_LOGIN + t as u64,"ib":chain[0]}),
        );
    }
    let setup_count = setup.len();
    let setup: Vec<Value> = setup
        .into_iter()
        .map(|body| {
            seq += 1;
            envelope(&src, seq, wall_ms(), body)
        })
        .collect();
    for chunk in setup.chunks(500) {
        writer.write(chunk).await.context("writing set-up events")?;
    }
    wait_until("the set-up events to be applied", async || {
        node.metric("tradecast_ingest_events_total")
            .await
            .is_ok_and(|v| v >= setup_count as f64)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!(
        "set up {} traders under {chains} IB chains of {DEPTH} levels ({setup_count} events)",
        args.traders
    );

    // 3. Connections.
    let auth = Arc::new(Authenticator::new(Some(SECRET), None)?);
    let mut users: Vec<(u64, Role)> = (0..args.traders)
        .map(|t| (FIRST_LOGIN + t as u64, Role::Client))
        .collect();
    for g in 0..chains {
        for ib in chain_of(g * args.traders_per_chain, args.traders_per_chain) {
            users.push((ib, Role::Ib));
        }
    }
    let gate = Arc::new(Semaphore::new(64));
    let mut connecting = Vec::new();
    for (id, role) in users.iter().copied() {
        let (gate, auth, server) = (gate.clone(), auth.clone(), node.public);
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let connected = tokio::time::timeout(SETUP_WAIT, connect(server, &auth, id, role))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {SETUP_WAIT:?}")));
            connected.with_context(|| format!("connecting {id} ({role:?})"))
        }));
    }
    let tracker = Arc::new(Mutex::new(Tracker::new()));
    let mut readers = Vec::new();
    let mut phases = fastrand::Rng::with_seed(args.seed ^ 0x9e37_79b9);
    let ping_every = Duration::from_millis(args.ping_ms);
    for task in connecting {
        let conn = task.await??;
        let pings = (args.ping_ms > 0).then(|| Pings {
            every: ping_every,
            phase: if args.aligned_pings {
                ping_every
            } else {
                ping_every.mul_f64(phases.f64())
            },
        });
        readers.push(tokio::spawn(read(conn, clock, tracker.clone(), pings)));
    }
    eprintln!(
        "{} connections ({} traders, {} IBs); writing {} events/s for {} s + {} s warm-up…",
        users.len(),
        args.traders,
        chains * DEPTH,
        args.rate,
        args.duration_s,
        args.warmup_s
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 4. The load.
    let mut generator = Generator {
        rng: fastrand::Rng::with_seed(args.seed),
        positions: vec![Vec::new(); args.traders],
        next_position: 1_000_000,
        next_deal: 5_000_000,
        opens: 0,
        deals: 0,
        closes: 0,
        traders_per_chain: args.traders_per_chain,
    };
    let node_pid = node.pid()?;
    let redis_pid = redis_pid(redis.port());
    let cpu_now = || -> anyhow::Result<[f64; 4]> {
        Ok([
            procfs::cpu_seconds(node_pid)?,
            redis_pid.map_or(Ok(0.0), procfs::cpu_seconds)?,
            procfs::cpu_seconds(std::process::id())?,
            procfs::machine_busy_seconds()?,
        ])
    };
    let warmup = Duration::from_secs(args.warmup_s);
    let total = warmup + Duration::from_secs(args.duration_s);
    let mut ticker = tokio::time::interval(Duration::from_millis(args.batch_ms.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let (mut written, mut measured_from, mut cpu_from) = (0u64, None, None);
    let mut timed_events = 0u64;
    let mut write_us = histogram();
    let mut batch_sizes = (u64::MAX, 0u64);
    let max_batch = (u64::from(args.rate) / 10).max(1);
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed();
        if elapsed >= total {
            break;
        }
        let timed = elapsed >= warmup;
        if timed && measured_from.is_none() {
            measured_from = Some((Instant::now(), written));
            cpu_from = Some(cpu_now()?);
        }
        let target = (elapsed.as_secs_f64() * f64::from(args.rate)) as u64;
        let n = target.saturating_sub(written).min(max_batch);
        if n == 0 {
            continue;
        }
        let mut batch = Vec::with_capacity(n as usize);
        let mut expected = Vec::new();
        for _ in 0..n {
            let (body, expect) = generator.next();
            batch.push(body);
            expected.push(expect);
        }
        let emit_us = clock.us();
        let emit_ms = wall_ms();
        let batch: Vec<Value> = batch
            .into_iter()
            .map(|body| {
                seq += 1;
                let mut event = envelope(&src, seq, emit_ms, body);
                event["emit_ts"] = emit_ms.into();
                event
            })
            .collect();
        {
            let mut t = tracker.lock().expect("tracker lock");
            for expect in expected {
                if let Some((Key::Commission { deal, .. }, _)) = expect.first() {
                    t.deals.insert(*deal, (emit_us, expect.len(), timed));
                }
                for (key, owner) in expect {
                    t.expect(
                        key,
                        Pending {
                            emit_us,
                            owner,
                            timed,
                        },
                    );
                }
            }
        }
        writer.write(&batch).await.context("writing trade events")?;
        let _ = write_us.record(clock.us().saturating_sub(emit_us).max(1));
        written += n;
        if timed {
            timed_events += n;
        }
        batch_sizes = (batch_sizes.0.min(n), batch_sizes.1.max(n));
    }
    let (measure_start, written_before) = measured_from.unwrap_or((started, 0));
    let load_secs = measure_start.elapsed().as_secs_f64();
    let achieved_rate = (written - written_before) as f64 / load_secs;
    let [node_cpu, redis_cpu, bench_cpu, machine_cpu] = match cpu_from {
        Some(from) => {
            let to = cpu_now()?;
            std::array::from_fn(|i| (to[i] - from[i]) / load_secs)
        }
        None => [0.0; 4],
    };
    // Whatever else ran on the machine meanwhile (other processes disturb the figures).
    let other_cpu = (machine_cpu - node_cpu - redis_cpu - bench_cpu).max(0.0);
    let node_rss_mib = procfs::rss_kib(node_pid)? as f64 / 1024.0;

    // 5. Stragglers.
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_s);
    while tracker.lock().expect("tracker lock").lost() > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dead_letters = node.metric("tradecast_ingest_dead_letters_total").await?;
    let rejected = node.metric("tradecast_ingest_rejected_total").await?;
    let duplicates = node.metric("tradecast_ingest_duplicates_total").await?;
    let publish_failures = node.metric("tradecast_publish_failures_total").await?;
    let slow_closes = node.metric("tradecast_slow_consumer_closes_total").await?;
    for reader in &readers {
        reader.abort();
    }
    let _ = node.child.kill().await;
    drop(redis);

    // 6. The report.
    let t = tracker.lock().expect("tracker lock");
    let lost = t.lost();
    let missing: Vec<String> = t
        .pending
        .iter()
        .take(10)
        .map(|(k, p)| format!("{k:?} for {}", p.owner))
        .collect();
    let ok = lost == 0
        && t.unexpected == 0
        && t.misrouted == 0
        && t.seq_breaks == 0
        && t.closed_connections == 0
        && dead_letters == 0.0;
    // Latency by the second of the run the event was written in: shows whether
    // outliers cluster (a stall) or are spread out (scheduling noise).
    let timeline: Vec<Value> = t
        .timeline
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.is_empty())
        .map(|(s, h)| {
            json!({"s": s, "count": h.len(), "p50_us": h.value_at_quantile(0.5),
                   "p99_us": h.value_at_quantile(0.99), "max_us": h.max()})
        })
        .collect();
    let figures = json!({
        "bench": "ingest_latency",
        "ok": ok,
        "command": command,
        "source": source,
        "machine": "2 cores, loopback; redis-server, the node and the bench (writer + all clients) share them",
        "rate_target": args.rate,
        "rate_achieved": (achieved_rate * 10.0).round() / 10.0,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "batch_ms": args.batch_ms,
        "batch_events_min_max": [batch_sizes.0.min(batch_sizes.1), batch_sizes.1],
        "traders": args.traders,
        "ib_chains": chains,
        "ib_depth": DEPTH,
        "ibs": chains * DEPTH,
        "connections": users.len(),
        "events": {
            "written": written, "timed": timed_events,
            "position_open": generator.opens, "closing_deal": generator.deals, "position_close": generator.closes,
        },
        "trader_messages": {
            "expected": t.expected_trader, "received": t.received_trader,
            "latency": summary(&t.trader),
            "position_opened": summary(&t.opened),
            "position_closed": summary(&t.closed),
        },
        "ib_commissions": {
            "expected": t.expected_commission, "received": t.received_commission,
            "latency": summary(&t.commission),
            "by_level": t.by_level.iter().map(summary).collect::<Vec<_>>(),
            "deal_to_last_of_5": summary(&t.deal_all),
        },
        "xadd_batch_round_trip": summary(&write_us),
        "timeline_by_emit_second": timeline,
        "lost": lost,
        "unexpected": t.unexpected,
        "misrouted": t.misrouted,
        "seq_breaks": t.seq_breaks,
        "closed_connections": t.closed_connections,
        "problems": t.problems,
        "missing_examples": missing,
        "node": {
            "cpu_share_of_one_core": (node_cpu * 1000.0).round() / 1000.0,
            "rss_mib": (node_rss_mib * 10.0).round() / 10.0,
            "dead_letters": dead_letters, "rejected": rejected, "duplicates": duplicates,
            "publish_failures": publish_failures, "slow_consumer_closes": slow_closes,
        },
        "redis_cpu_share_of_one_core": redis_pid.map(|_| (redis_cpu * 1000.0).round() / 1000.0),
        "bench_cpu_share_of_one_core": (bench_cpu * 1000.0).round() / 1000.0,
        "other_processes_cpu_share_of_one_core": (other_cpu * 1000.0).round() / 1000.0,
    });

    let row = |name: &str, h: &Histogram<u64>| {
        format!(
            "| {name} | {} | {} | {} | {} | {} |",
            h.len(),
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.90)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max())
        )
    };
    let mut table = vec![
        "| messages (timed) | count | p50 | p90 | p99 | max |".to_owned(),
        "|---|---|---|---|---|---|".to_owned(),
        row(
            "**trader** (`position_opened` + `position_closed`)",
            &t.trader,
        ),
        row("  `position_opened`", &t.opened),
        row("  `position_closed`", &t.closed),
        row("**IB `commission`**, all 5 levels", &t.commission),
    ];
    for (level, h) in t.by_level.iter().enumerate() {
        table.push(row(&format!("  level {}", level + 1), h));
    }
    table.push(row("closing deal → last of its 5 commissions", &t.deal_all));
    table.push(row("(XADD pipeline round trip per batch)", &write_us));
    let delivery = [
        format!(
            "| trade events written (open / closing deal / close) | {written} ({} / {} / {}) |",
            generator.opens, generator.deals, generator.closes
        ),
        format!(
            "| rate achieved (target) | {achieved_rate:.0} /s ({} /s), batches of {}–{} every {} ms |",
            args.rate,
            batch_sizes.0.min(batch_sizes.1),
            batch_sizes.1,
            args.batch_ms
        ),
        format!(
            "| trader messages expected / received | {} / {} |",
            t.expected_trader, t.received_trader
        ),
        format!(
            "| IB commissions expected / received | {} / {} |",
            t.expected_commission, t.received_commission
        ),
        format!(
            "| lost / unexpected / misrouted / seq breaks / closed connections | {lost} / {} / {} / {} / {} |",
            t.unexpected, t.misrouted, t.seq_breaks, t.closed_connections
        ),
        format!("| dead letters / rejected | {dead_letters} / {rejected} |"),
        format!(
            "| node CPU (share of one core) / RSS | {:.0} % / {node_rss_mib:.0} MiB |",
            node_cpu * 100.0
        ),
        format!(
            "| redis-server CPU (share of one core) | {} |",
            redis_pid.map_or("?".to_owned(), |_| format!("{:.0} %", redis_cpu * 100.0))
        ),
        format!(
            "| bench CPU (writer + {} clients) | {:.0} % |",
            users.len(),
            bench_cpu * 100.0
        ),
        format!(
            "| everything else on the machine meanwhile (of 200 %) | {:.0} % |",
            other_cpu * 100.0
        ),
    ];
    let header = format!(
        "{} traders, {chains} IB chains × {DEPTH} levels ({} IBs), {} connections; {} trade events/s for {} s (after {} s warm-up). Latency: `emit_ts` (taken just before the XADD pipeline) → receipt by the WebSocket client.",
        args.traders,
        chains * DEPTH,
        users.len(),
        args.rate,
        args.duration_s,
        args.warmup_s
    );
    println!("## tradecast ingest → WebSocket latency");
    println!();
    println!("{header}");
    println!();
    println!("{}", table.join("\n"));
    println!();
    println!("| delivery | value |");
    println!("|---|---|");
    println!("{}", delivery.join("\n"));

    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let json_path = args.out_dir.join("ingest-latency.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&figures)? + "\n")?;
    let verdict = if ok {
        format!("Every expected message arrived exactly once, in `seq` order: {lost} lost.")
    } else {
        format!(
            "**DELIVERY FAILURE**: {lost} lost, {} unexpected, {} misrouted, {} seq breaks, \
             {} closed connections, {dead_letters} dead letters. The figures above are not valid.",
            t.unexpected, t.misrouted, t.seq_breaks, t.closed_connections
        )
    };
    let md = format!(
        "## tradecast ingest → WebSocket latency\n\n{header}\n\n{}\n\n\
         | delivery | value |\n|---|---|\n{}\n\n{verdict}\n\n\
         Machine: 2 cores, loopback. `redis-server`, the node and the bench process (the \
         XADD writer and all {} WebSocket clients) share the 2 cores; \"everything else\" \
         is what other processes (and the kernel's softirq work) used meanwhile. \
         Source: {source}. Command:\n\n    \
         cargo build --release -p tradecast -p tradecast-bench\n    {command}\n\n\
         Each trade event is one of: position open (→ `position_opened` on \
         `portfolio:{{login}}`), closing deal (→ `commission` on `commissions:{{ib}}` for \
         each of the 5 IBs up the trader's chain, by the default plan 5,1,0.5 per lot), \
         position close (→ `position_closed`); about a third each. Channel messages do \
         not carry `emit_ts`, so the bench keeps the emit time of every expected message \
         (by position id, or by deal and level) on one monotonic clock shared by the \
         writer and the clients (same process). Latency runs from just before the \
         batch's XADD pipeline (when `emit_ts` is stamped) to the arrival of the frame: \
         the XADD round trip, the leader's `XREADGROUP`, journal, apply, the Redis \
         append + publish, pub/sub back to the node and the WebSocket fan-out. The JSON \
         file also has per-level figures, p99.9 and a per-second timeline.\n",
        table.join("\n"),
        delivery.join("\n"),
        users.len(),
    );
    std::fs::write(args.out_dir.join("ingest-latency.md"), md)?;
    eprintln!("wrote {} and ingest-latency.md", json_path.display());
    if other_cpu > 0.25 {
        eprintln!(
            "WARNING: other processes used {:.0} % CPU (of 200 %) during the run; \
             the latency figures are disturbed by them",
            other_cpu * 100.0
        );
    }

    if !ok {
        eprintln!();
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!(
            "!!! DELIVERY FAILURE: {lost} lost, {} unexpected, {} misrouted, {} seq breaks, {} closed connections, {dead_letters} dead letters",
            t.unexpected, t.misrouted, t.seq_breaks, t.closed_connections
        );
        for m in &missing {
            eprintln!("!!!   missing: {m}");
        }
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        bail!("the ingest benchmark lost or misdelivered messages");
    }
    Ok(())
}
