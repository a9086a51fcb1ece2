//! `trades`: trade events at a given rate to traders holding 50 positions each,
//! with commissions up 5-level IB chains and live P/L from ticks.
//!
//! 1. Set-up through the ingest path: an account per trader, the IB tree (every
//!    trader's chain is 5 IBs deep), `--positions` open positions per trader over 10
//!    currency pairs, and a first tick of each pair.
//! 2. Connect traders, IBs and admins (about 90/8/2 %).
//! 3. For `--warmup-s` + `--duration-s` write trade events at `--rate` per second
//!    (a pipelined batch every 10 ms), while a second writer sends `--tick-rate`
//!    ticks per second, so every trader gets live `position_update` /
//!    `account_update` deltas and admins the `exposure` table. Each position goes
//!    open → closing deal → close: `position_opened` and `position_closed` for the
//!    trader, and for the deal a `commission` to each of the 5 IBs up the chain (and
//!    the trader's `account_update`). A closed position is replaced by a new one, so
//!    every trader keeps about `--positions` open.
//! 4. Workers report when each tracked message arrived; the coordinator matches it
//!    with the wall-clock µs its event was written at (latency, exactly-once,
//!    routing). Then the durable check: per channel `seq` contiguity on every
//!    connection, and a final `subscribe … since` on every durable channel that must
//!    find nothing the client had not received.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::common::{histogram, latency_cell, latency_summary, now_us};
use crate::fleet::{self, Fleet, Plan, sum};
use crate::market::{SYMBOLS, Ticker};
use crate::population::{DEPTH, Population};
use crate::results::{Outcome, Run};
use crate::topology::{Ingest, Source, Topology, TopologyArgs};
use crate::worker::{CLOSED, COMMISSION, OPENED};

#[derive(Debug, Args)]
pub struct TradesArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Connections in total (about 90 % traders, 8 % IBs, 2 % admins).
    #[arg(long, default_value_t = 1_000)]
    connections: usize,
    #[arg(long, default_value_t = 5_000)]
    per_worker: usize,
    /// Trade events written per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Open positions per trader.
    #[arg(long, default_value_t = 50)]
    positions: usize,
    /// Ticks written per second (round-robin over 10 pairs), for live P/L.
    #[arg(long, default_value_t = 20.0)]
    tick_rate: f64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// Seconds of load before the measurement (delivery is still checked).
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// Random seed of the trade mix.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// How long the last messages may take after the last write, at most, and without
/// any arriving.
const DRAIN: Duration = Duration::from_secs(120);
const STALL: Duration = Duration::from_secs(10);
const BATCH: Duration = Duration::from_millis(10);
const VOLUMES: [u64; 4] = [1_000, 5_000, 10_000, 20_000];

pub async fn run(args: TradesArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.positions > 0 && args.tick_rate > 0.0,
        "--rate, --positions and --tick-rate must be positive"
    );
    let run = Run::begin("trades", args.topology.name())?;
    let topology = Topology::start(&args.topology).await?;
    let result = measure(&args, &topology).await;
    topology.stop(result.is_err()).await;
    run.finish(&args.topology.out_dir, result?)
}

/// A message the bench expects: (kind, position id or deal, IB level).
pub type Key = (u64, u64, u64);

/// When the event behind an expected message was written, and whose channel must carry it.
struct Pending {
    emit_us: u64,
    owner: u64,
    timed: bool,
}

#[derive(Default)]
struct Tracker {
    pending: HashMap<Key, Pending>,
    trader: Option<Histogram<u64>>,
    commission: Option<Histogram<u64>>,
    expected: u64,
    received: u64,
    unexpected: u64,
    misrouted: u64,
    problems: Vec<String>,
}

impl Tracker {
    fn arrived(&mut self, [kind, a, b, owner, at_us]: [u64; 5]) {
        let Some(pending) = self.pending.remove(&(kind, a, b)) else {
            self.unexpected += 1;
            if self.problems.len() < 10 {
                self.problems
                    .push(format!("unexpected message {kind}/{a}/{b} for {owner}"));
            }
            return;
        };
        self.received += 1;
        if pending.owner != owner {
            self.misrouted += 1;
            if self.problems.len() < 10 {
                self.problems.push(format!(
                    "{kind}/{a}/{b} arrived for {owner}, expected for {}",
                    pending.owner
                ));
            }
        }
        if pending.timed {
            let latency = at_us.saturating_sub(pending.emit_us).max(1);
            let h = if kind == COMMISSION {
                self.commission.get_or_insert_with(histogram)
            } else {
                self.trader.get_or_insert_with(histogram)
            };
            let _ = h.record(latency);
        }
    }

    fn take(&mut self, fleet: &mut Fleet) -> anyhow::Result<()> {
        fleet.poll()?;
        for arrival in std::mem::take(&mut fleet.arrivals) {
            self.arrived(arrival);
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Open {
    id: u64,
    symbol: usize,
    buy: bool,
    vol: u64,
    deal: Option<u64>,
}

/// The trade mix: open → closing deal → close per position, about a third each.
pub struct Generator {
    rng: fastrand::Rng,
    population: Population,
    positions: Vec<Vec<Open>>,
    target: usize,
    next_position: u64,
    next_deal: u64,
    counts: [u64; 3],
}

impl Generator {
    pub fn new(population: Population, positions: usize, seed: u64) -> Generator {
        Generator {
            rng: fastrand::Rng::with_seed(seed),
            population,
            positions: vec![Vec::new(); population.traders],
            target: positions,
            next_position: 1_000_000,
            next_deal: 50_000_000,
            counts: [0; 3],
        }
    }

    fn open(&mut self, t: usize) -> (Value, Vec<(Key, u64)>) {
        let symbol = self.rng.usize(..SYMBOLS.len());
        let position = Open {
            id: self.next_position,
            symbol,
            buy: self.rng.bool(),
            vol: VOLUMES[self.rng.usize(..VOLUMES.len())],
            deal: None,
        };
        self.next_position += 1;
        let (name, mid) = SYMBOLS[symbol];
        let login = self.population.trader(t);
        let event = json!({"type":"position","op":"open","login":login,"position_id":position.id,
            "symbol":name,"side":if position.buy {"buy"} else {"sell"},"vol":position.vol,
            "price_open":mid,"digits":if mid > 20.0 {3} else {5},"contract_size":100_000});
        let expect = vec![((OPENED, position.id, 0), login)];
        self.positions[t].push(position);
        (event, expect)
    }

    /// The next trade event (a body without envelope) and the tracked messages it
    /// must produce, with the user whose channel must carry each.
    pub fn next(&mut self) -> (Value, Vec<(Key, u64)>) {
        let t = self.rng.usize(..self.positions.len());
        let login = self.population.trader(t);
        let held = &self.positions[t];
        let dealt = held.iter().position(|p| p.deal.is_some());
        let undealt = held.iter().position(|p| p.deal.is_none());
        if held.len() < self.target {
            self.counts[0] += 1;
            return self.open(t);
        }
        match (dealt, undealt) {
            (Some(i), _) if self.rng.bool() || undealt.is_none() => {
                let position = self.positions[t].remove(i);
                self.counts[2] += 1;
                let event = json!({"type":"position","op":"close","login":login,
                    "position_id":position.id,"close_deal":position.deal});
                (event, vec![((CLOSED, position.id, 0), login)])
            }
            (_, Some(i)) => {
                let deal = self.next_deal;
                self.next_deal += 1;
                self.counts[1] += 1;
                let profit = f64::from(self.rng.i32(-5_000..5_000)) / 100.0;
                let position = &mut self.positions[t][i];
                position.deal = Some(deal);
                let (name, mid) = SYMBOLS[position.symbol];
                let event = json!({"type":"deal","login":login,"deal":deal,"position_id":position.id,
                    "action":if position.buy {"sell"} else {"buy"},"entry":"out","symbol":name,
                    "vol":position.vol,"price":mid,"profit":profit});
                let chain = self.population.chain(t);
                let expect = (1..=DEPTH)
                    .map(|level| ((COMMISSION, deal, level as u64), chain[level - 1]))
                    .collect();
                (event, expect)
            }
            _ => {
                self.counts[0] += 1;
                self.open(t)
            }
        }
    }
}

/// Ticks at `rate` per second until the task is aborted.
pub async fn ticks(mut ingest: Ingest, rate: f64) -> anyhow::Result<()> {
    let mut ticker = Ticker::default();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut k = 0;
    loop {
        interval.tick().await;
        ingest.send(&[ticker.next(k).0]).await?;
        k += 1;
    }
}

/// Accounts, the IB tree, a tick of every pair, then `positions` open positions per
/// trader, written and applied. Returns the generator that continues from there, the
/// event source, how many events the set-up took and how long.
pub async fn set_up(
    topology: &Topology,
    ingest: &mut Ingest,
    population: Population,
    positions: usize,
    seed: u64,
) -> anyhow::Result<(Generator, Source, usize, f64)> {
    let mut source = Source::new("trades");
    let mut generator = Generator::new(population, positions, seed);
    let mut ticker = Ticker::default();
    let mut events: Vec<Value> = population
        .setup_events()
        .into_iter()
        .map(|body| source.event(body))
        .collect();
    events.extend((0..SYMBOLS.len()).map(|s| ticker.next(s).0));
    for t in 0..population.traders {
        for _ in 0..positions {
            let body = generator.open(t).0;
            events.push(source.event(body));
        }
    }
    let setup_count = events.len();
    let seconds = topology.apply(ingest, &events).await?;
    generator.counts = [0; 3];
    Ok((generator, source, setup_count, seconds))
}

async fn measure(args: &TradesArgs, topology: &Topology) -> anyhow::Result<Outcome> {
    let population = Population::of(args.connections);
    let mut ingest = topology.ingest().await?;
    let (mut generator, mut source, setup_count, setup_s) =
        set_up(topology, &mut ingest, population, args.positions, args.seed).await?;

    // 2. Connections.
    let ranges = population.ranges();
    let (mut fleet, opened) = fleet::open(&Plan {
        server: topology.entry(),
        users: &ranges,
        per_worker: args.per_worker,
        prices: false,
        track: true,
        concurrency: 64,
    })
    .await?;

    // 3. Load, with ticks alongside.
    let tick_task = tokio::spawn(ticks(topology.ingest().await?, args.tick_rate));
    let mut tracker = Tracker::default();
    let warmup = Duration::from_secs(args.warmup_s);
    let total = warmup + Duration::from_secs(args.duration_s);
    let mut interval = tokio::time::interval(BATCH);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bar = fleet::bar(total.as_secs(), "load (s)");
    let started = Instant::now();
    let (mut written, mut timed_written) = (0u64, 0u64);
    let mut measured: Option<(Instant, u64, crate::topology::Cpu, f64)> = None;
    let max_batch = u64::from(args.rate) / 10 + 1;
    loop {
        interval.tick().await;
        let elapsed = started.elapsed();
        if elapsed >= total {
            break;
        }
        bar.set_position(elapsed.as_secs());
        let timed = elapsed >= warmup;
        if timed && measured.is_none() {
            fleet
                .ask(json!({"cmd":"measure","from_ms":now_us() / 1000}))
                .await?;
            let out = topology.metric("tradecast_messages_out_total").await?;
            measured = Some((Instant::now(), written, topology.cpu()?, out));
        }
        let due = (elapsed.as_secs_f64() * f64::from(args.rate)) as u64;
        let n = due.saturating_sub(written).min(max_batch);
        let mut batch = Vec::with_capacity(n as usize);
        let emit_us = now_us();
        for _ in 0..n {
            let (body, expect) = generator.next();
            for (key, owner) in expect {
                tracker.expected += 1;
                tracker.pending.insert(
                    key,
                    Pending {
                        emit_us,
                        owner,
                        timed,
                    },
                );
            }
            batch.push(source.event_at(body, emit_us / 1000));
        }
        ingest.send(&batch).await?;
        written += n;
        if timed {
            timed_written += n;
        }
        tracker.take(&mut fleet)?;
    }
    bar.finish_and_clear();
    let (measure_start, written_before, cpu_from, out_from) =
        measured.context("the load ended before the warm-up")?;
    let load_s = measure_start.elapsed().as_secs_f64();
    let cpu = topology.cpu()?.since(&cpu_from);
    let messages_out = topology.metric("tradecast_messages_out_total").await? - out_from;
    let counters = fleet.ask(json!({"cmd":"counters"})).await?;
    tick_task.abort();
    let achieved = (written - written_before) as f64 / load_s;
    let frames = sum(&counters, "frames");

    // 4. Stragglers (while they keep coming: the nodes may be behind), then the
    //    durable check.
    let drain_started = Instant::now();
    let mut last_progress = (Instant::now(), tracker.received);
    while !tracker.pending.is_empty()
        && last_progress.0.elapsed() < STALL
        && drain_started.elapsed() < DRAIN
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        tracker.take(&mut fleet)?;
        if tracker.received > last_progress.1 {
            last_progress = (Instant::now(), tracker.received);
        }
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    let verify = fleet.ask(json!({"cmd":"verify","wait_ms":20_000})).await?;
    tracker.take(&mut fleet)?;
    let dead_letters = topology
        .metric("tradecast_ingest_dead_letters_total")
        .await?;
    let slow_closes = topology
        .metric("tradecast_slow_consumer_closes_total")
        .await?;
    let lost_tracked = tracker.pending.len() as u64;
    let gaps = sum(&verify, "gaps");
    let duplicates = sum(&verify, "duplicates");
    let lost_verify = sum(&verify, "lost");
    let lost = lost_tracked + lost_verify;
    let duplicated = duplicates + tracker.unexpected;
    let trader = tracker.trader.take().unwrap_or_else(histogram);
    let commission = tracker.commission.take().unwrap_or_else(histogram);
    let mut all = trader.clone();
    all.add(&commission)?;
    let cpu_per_million = cpu.nodes * 1e6 / frames.max(1) as f64;

    let table = vec![
        ("who".to_owned(), population.describe()),
        (
            "set-up".to_owned(),
            format!(
                "{setup_count} events ({} open positions, {} per trader) applied in {setup_s:.1} s",
                population.traders * args.positions,
                args.positions
            ),
        ),
        opened.row(fleet.workers()),
        (
            "trade events (open / closing deal / close)".to_owned(),
            format!(
                "{written} ({} / {} / {}); {achieved:.0}/s achieved of {}/s, {} s measured after {} s warm-up; ticks {}/s",
                generator.counts[0],
                generator.counts[1],
                generator.counts[2],
                args.rate,
                args.duration_s,
                args.warmup_s,
                args.tick_rate
            ),
        ),
        (
            "**trade event → message, all** (`emit_ts` → read): p50 / p90 / p99 / p99.9 / max"
                .to_owned(),
            format!("**{}** ({} messages)", latency_cell(&all), all.len()),
        ),
        (
            "  trader `position_opened` / `position_closed`".to_owned(),
            latency_cell(&trader),
        ),
        (
            "  IB `commission`, all 5 levels".to_owned(),
            latency_cell(&commission),
        ),
        (
            "delivered messages per second (all channels, live P/L included)".to_owned(),
            format!(
                "{:.0}/s ({frames} frames in {load_s:.1} s; nodes counted {messages_out:.0} messages out)",
                frames as f64 / load_s
            ),
        ),
        (
            "nodes' CPU per million delivered messages".to_owned(),
            format!(
                "{cpu_per_million:.1} s ({:.0} % of one core; redis {:.0} %)",
                cpu.nodes / load_s * 100.0,
                cpu.redis / load_s * 100.0
            ),
        ),
        (
            "tracked messages expected / received once".to_owned(),
            format!(
                "{} / {} (misrouted {}, unexpected {})",
                tracker.expected, tracker.received, tracker.misrouted, tracker.unexpected
            ),
        ),
        (
            "**durable messages lost / duplicated**".to_owned(),
            format!(
                "**{lost} / {duplicated}** (tracked missing {lost_tracked}; on {} durable channels: gaps {gaps}, missing at the end {}, duplicates {duplicates})",
                sum(&verify, "channels_checked"),
                sum(&verify, "missing_at_end")
            ),
        ),
        (
            "after the last write: waited for the last messages / dead letters / slow-consumer closes".to_owned(),
            format!("{drain_s:.1} s / {dead_letters} / {slow_closes}"),
        ),
    ];
    let mut failures = Vec::new();
    if opened.gave_up > 0 {
        failures.push(format!(
            "{} connections could not be opened",
            opened.gave_up
        ));
    }
    if lost > 0 || duplicated > 0 || tracker.misrouted > 0 {
        failures.push(format!(
            "{lost} durable messages lost, {duplicated} duplicated, {} misrouted",
            tracker.misrouted
        ));
    }
    if sum(&verify, "connections_not_checked") > 0 {
        failures.push(format!(
            "{} connections could not be checked",
            sum(&verify, "connections_not_checked")
        ));
    }
    if dead_letters > 0.0 {
        failures.push(format!("{dead_letters} events were dead-lettered"));
    }
    let figures = json!({
        "population": {"traders": population.traders, "ibs": population.ibs(),
            "admins": population.admins, "traders_per_ib": population.traders_per_ib},
        "positions_per_trader": args.positions,
        "setup": {"events": setup_count, "seconds": setup_s},
        "connections": opened.connections, "gave_up": opened.gave_up,
        "rate_target": args.rate, "rate_achieved": achieved.round(),
        "tick_rate": args.tick_rate,
        "duration_s": args.duration_s, "warmup_s": args.warmup_s,
        "events": {"written": written, "timed": timed_written, "open": generator.counts[0],
            "closing_deal": generator.counts[1], "close": generator.counts[2]},
        "latency": {"all": latency_summary(&all), "trader": latency_summary(&trader),
            "commission": latency_summary(&commission)},
        "delivered": {"frames": frames, "per_s": (frames as f64 / load_s).round(),
            "nodes_messages_out": messages_out},
        "cpu": cpu.to_json(),
        "node_cpu_seconds_per_million_delivered": (cpu_per_million * 10.0).round() / 10.0,
        "durable": {"lost": lost, "duplicated": duplicated, "tracked_expected": tracker.expected,
            "tracked_received": tracker.received, "tracked_missing": lost_tracked,
            "misrouted": tracker.misrouted, "unexpected": tracker.unexpected,
            "verify": verify.iter().map(|v| json!({"channels_checked": v["channels_checked"],
                "gaps": v["gaps"], "duplicates": v["duplicates"], "missing_at_end": v["missing_at_end"],
                "channels_answered_with_snapshot": v["channels_answered_with_snapshot"],
                "problems": v["problems"]})).collect::<Vec<_>>(),
            "problems": tracker.problems},
        "dead_letters": dead_letters, "slow_consumer_closes": slow_closes,
        "drain_after_last_write_s": (drain_s * 10.0).round() / 10.0,
    });
    Ok(Outcome {
        figures,
        table,
        notes: vec![
            "Latency: the coordinator stamps each batch with the wall clock (µs) just before \
             writing it (XADD pipeline into `tc:events`, or `POST /v1/events`; the events' \
             `emit_ts` is the same instant in ms) and remembers, per expected message \
             (`position_opened`/`position_closed` by position id, `commission` by deal and \
             level), when and for whom it was written. Workers report the wall clock (µs) at \
             which each arrived; one machine, one clock. Messages of the warm-up are checked \
             but not timed."
                .to_owned(),
            "Durable check, by the tool: every tracked message must arrive exactly once on \
             the right user's channel; every durable message on every channel (portfolio, \
             orders, commissions, network, alerts) must follow the previous `seq` by one; at \
             the end every connection sends `subscribe` with `since` (its last `seq`) on each \
             durable channel, and a `recovered: true` answer whose `seq` is above it counts \
             the difference as lost."
                .to_owned(),
        ],
        failures,
    })
}
