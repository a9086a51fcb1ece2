//! Live P&L throughput of the pure domain engine.
//!
//! Loads 25,000 open positions (5,000 accounts × 5 positions over 30 symbols: the 28
//! pairs of the eight major currencies, gold and an index; 1 account in 10 in EUR, so
//! conversion rates matter), then replays 20 simulated seconds of a 500 ticks/s feed
//! the way the gateway's pipeline drives the engine: every tick goes through
//! [`Engine::apply`] as it arrives and [`Engine::flush_live`] runs every 50 ms
//! (`FLUSH_EVERY` in `crates/gateway/src/pipeline.rs`). Simulated time advances 2 ms
//! per tick, so the engine's pacing (`live_interval_ms`, `exposure_interval_ms`)
//! behaves as in production while the benchmark runs as fast as the CPU allows.
//!
//! It prints figures and writes them to `bench/results/live-pnl.json`; it asserts
//! nothing about timing. Run with:
//!
//! ```text
//! cargo bench -p tradecast-core --bench live_pnl
//! ```
//!
//! What is timed is the engine only: events are parsed before the clock starts, and
//! effects are counted after it stops. Times are wall-clock on one thread, which is
//! the CPU time the pipeline task would spend (it runs the engine on one task).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tradecast_core::{Effect, Engine, EngineConfig};
use tradecast_protocol::ingest::{self, IngestEvent};

const ACCOUNTS: u64 = 5_000;
const POSITIONS_PER_ACCOUNT: u64 = 5;
const TICKS_PER_SECOND: u64 = 500;
const SIMULATED_SECONDS: u64 = 20;
/// The pipeline's flush period (`FLUSH_EVERY`).
const FLUSH_EVERY_MS: u64 = 50;
/// Simulated time between two ticks.
const TICK_EVERY_MS: u64 = 1_000 / TICKS_PER_SECOND;
/// Simulated start time (ms UTC).
const T0: u64 = 1_717_430_400_000;
const FIRST_LOGIN: u64 = 100_000;

/// Currencies with their value in USD, in market priority order: a pair's base is the
/// one that comes first (EURUSD, GBPJPY, AUDNZD, USDCAD, CADCHF, CHFJPY...).
const CURRENCIES: [(&str, f64); 8] = [
    ("EUR", 1.08),
    ("GBP", 1.27),
    ("AUD", 0.66),
    ("NZD", 0.61),
    ("USD", 1.0),
    ("CAD", 1.0 / 1.36),
    ("CHF", 1.0 / 0.88),
    ("JPY", 1.0 / 150.0),
];

/// An instrument of the simulated feed.
struct Instrument {
    symbol: String,
    group: &'static str,
    base: Option<&'static str>,
    profit: &'static str,
    digits: u32,
    contract_size: f64,
    /// How often it ticks and how often traders hold it, relative to the others.
    weight: u32,
    mid: f64,
}

impl Instrument {
    fn point(&self) -> f64 {
        10f64.powi(-(self.digits as i32))
    }

    fn round(&self, price: f64) -> f64 {
        let scale = 10f64.powi(self.digits as i32);
        (price * scale).round() / scale
    }

    /// Bid and ask around the current mid, 1.5 pips (15 points) apart.
    fn quote(&self) -> (f64, f64) {
        let bid = self.round(self.mid - 7.0 * self.point());
        (bid, self.round(bid + 15.0 * self.point()))
    }
}

/// The 28 pairs of [`CURRENCIES`], gold and a US index: 30 instruments.
fn instruments() -> Vec<Instrument> {
    let majors = ["EURUSD", "USDJPY", "GBPUSD", "AUDUSD", "USDCHF", "USDCAD"];
    let mut list = Vec::new();
    for (i, &(base, base_usd)) in CURRENCIES.iter().enumerate() {
        for &(quote, quote_usd) in &CURRENCIES[i + 1..] {
            let symbol = format!("{base}{quote}");
            list.push(Instrument {
                weight: if majors.contains(&symbol.as_str()) {
                    8
                } else {
                    2
                },
                group: "forex",
                base: Some(base),
                profit: quote,
                digits: if quote == "JPY" { 3 } else { 5 },
                contract_size: 100_000.0,
                mid: base_usd / quote_usd,
                symbol,
            });
        }
    }
    list.push(Instrument {
        symbol: "XAUUSD".into(),
        group: "metals",
        base: Some("XAU"),
        profit: "USD",
        digits: 2,
        contract_size: 100.0,
        weight: 6,
        mid: 2_350.0,
    });
    list.push(Instrument {
        symbol: "US500".into(),
        group: "indices",
        base: None,
        profit: "USD",
        digits: 2,
        contract_size: 1.0,
        weight: 4,
        mid: 5_300.0,
    });
    list
}

/// Builds ingest events through the real parser, with a counting `seq`.
struct Events {
    seq: u64,
}

impl Events {
    fn make(&mut self, ts: u64, mut body: Value) -> IngestEvent {
        self.seq += 1;
        let fields = body.as_object_mut().expect("bodies are objects");
        fields.insert("v".into(), json!(1));
        fields.insert("src".into(), json!("bench"));
        fields.insert("seq".into(), json!(self.seq));
        fields.insert("ts".into(), json!(ts));
        ingest::parse_value(body).unwrap_or_else(|e| panic!("bench event refused: {e}"))
    }

    fn tick(&mut self, ts: u64, instrument: &Instrument) -> IngestEvent {
        let (bid, ask) = instrument.quote();
        self.make(
            ts,
            json!({"type": "tick", "symbol": instrument.symbol, "bid": bid, "ask": ask}),
        )
    }
}

/// Pick an instrument index with probability proportional to its weight.
fn pick(rng: &mut fastrand::Rng, instruments: &[Instrument], total_weight: u32) -> usize {
    let mut r = rng.u32(0..total_weight);
    for (i, instrument) in instruments.iter().enumerate() {
        if r < instrument.weight {
            return i;
        }
        r -= instrument.weight;
    }
    unreachable!("r < total weight")
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn micros(ns: u64) -> f64 {
    (ns as f64 / 1_000.0 * 100.0).round() / 100.0
}

/// Messages produced, by kind.
#[derive(Default)]
struct Counts {
    price: u64,
    position_update: u64,
    account_update: u64,
    portfolio_snapshot: u64,
    exposure: u64,
    durable: u64,
    /// Positions valued by the flushes that pushed something (see `main`).
    positions_repriced: u64,
}

impl Counts {
    fn add(&mut self, effects: &[Effect], positions_of: &BTreeMap<String, u64>, total: u64) {
        for effect in effects {
            match effect {
                Effect::Durable { .. } => self.durable += 1,
                Effect::Ephemeral { channel, key, .. } => {
                    if channel == "exposure" {
                        self.exposure += 1;
                        // The table values every open position.
                        self.positions_repriced += total;
                    } else if key == "account" {
                        self.account_update += 1;
                    } else if key.starts_with("position:") {
                        self.position_update += 1;
                    } else {
                        self.price += 1;
                    }
                }
                Effect::Snapshot { channel, .. } => {
                    self.portfolio_snapshot += 1;
                    // A pushed account had all of its positions valued.
                    self.positions_repriced += positions_of.get(channel).copied().unwrap_or(0);
                }
            }
        }
    }
}

fn main() {
    let mut rng = fastrand::Rng::with_seed(20240603);
    let mut instruments = instruments();
    let total_weight: u32 = instruments.iter().map(|i| i.weight).sum();
    let mut events = Events { seq: 0 };
    let config = EngineConfig::default();
    let mut engine = Engine::new(config.clone());

    // --- Setup: symbols, a first quote for each, accounts and their positions. ---
    let setup_started = Instant::now();
    let mut setup = Vec::new();
    for instrument in &instruments {
        let mut spec = json!({
            "type": "symbol", "symbol": instrument.symbol, "group": instrument.group,
            "digits": instrument.digits, "contract_size": instrument.contract_size,
            "profit_ccy": instrument.profit,
        });
        if let Some(base) = instrument.base {
            spec["base_ccy"] = json!(base);
        }
        setup.push(events.make(T0, spec));
        setup.push(events.tick(T0, instrument));
    }
    let mut positions_of = BTreeMap::new();
    // Positions held per symbol: what a tick would re-price without conflation.
    let mut held = vec![0u64; instruments.len()];
    let mut position_id = 1_000_000;
    for login in FIRST_LOGIN..FIRST_LOGIN + ACCOUNTS {
        let ccy = if login % 10 == 0 { "EUR" } else { "USD" };
        setup.push(events.make(
            T0,
            json!({"type": "account", "login": login, "name": format!("Trader {login}"),
                   "ccy": ccy, "leverage": 100, "balance": 10_000.0, "credit": 0.0}),
        ));
        for _ in 0..POSITIONS_PER_ACCOUNT {
            let i = pick(&mut rng, &instruments, total_weight);
            held[i] += 1;
            position_id += 1;
            let instrument = &instruments[i];
            let price_open = instrument.round(instrument.mid * (1.0 + (rng.f64() - 0.5) * 0.004));
            setup.push(events.make(
                T0,
                json!({"type": "position", "op": "open", "login": login,
                       "position_id": position_id, "symbol": instrument.symbol,
                       "side": if rng.bool() { "buy" } else { "sell" },
                       "vol": rng.u64(1..=100) * 1_000, "price_open": price_open}),
            ));
        }
        positions_of.insert(format!("portfolio:{login}"), POSITIONS_PER_ACCOUNT);
    }
    let total_positions = ACCOUNTS * POSITIONS_PER_ACCOUNT;
    for event in &setup {
        engine.apply(event, T0).expect("setup events apply");
    }
    // The first flush pushes everyone's initial figures; it is not part of the run.
    engine.flush_live(T0);
    let setup_time = setup_started.elapsed();

    // --- The feed: ticks on a random walk, parsed before timing starts. ---
    let ticks = TICKS_PER_SECOND * SIMULATED_SECONDS;
    let start = T0 + 1_000; // every account is due again
    let mut feed = Vec::with_capacity(ticks as usize);
    let mut unconflated_position_updates = 0;
    for n in 0..ticks {
        let i = pick(&mut rng, &instruments, total_weight);
        let instrument = &mut instruments[i];
        instrument.mid *= 1.0 + (rng.f64() - 0.5) * 4e-5;
        feed.push(events.tick(start + n * TICK_EVERY_MS, instrument));
        unconflated_position_updates += held[i];
    }

    // --- The measured run. ---
    let mut apply_ns = histogram();
    let mut flush_ns = histogram();
    let mut apply_total = Duration::ZERO;
    let mut flush_total = Duration::ZERO;
    let mut counts = Counts::default();
    let mut next_flush = start + FLUSH_EVERY_MS;
    // Flushes that pushed at least one account, and how many accounts they pushed.
    let mut pushing_flushes = 0u64;
    for (n, event) in (0u64..).zip(&feed) {
        let now = start + n * TICK_EVERY_MS;
        let began = Instant::now();
        let effects = engine.apply(event, now).expect("ticks apply");
        let took = began.elapsed();
        apply_total += took;
        apply_ns.saturating_record(took.as_nanos() as u64);
        counts.add(&effects, &positions_of, total_positions);

        if now >= next_flush {
            next_flush += FLUSH_EVERY_MS;
            let began = Instant::now();
            let effects = engine.flush_live(now);
            let took = began.elapsed();
            flush_total += took;
            flush_ns.saturating_record(took.as_nanos() as u64);
            let snapshots_before = counts.portfolio_snapshot;
            counts.add(&effects, &positions_of, total_positions);
            pushing_flushes += u64::from(counts.portfolio_snapshot > snapshots_before);
        }
    }

    // --- Report. ---
    let busy = apply_total + flush_total;
    let simulated = Duration::from_millis(ticks * TICK_EVERY_MS);
    let repriced_per_cpu_s = counts.positions_repriced as f64 / busy.as_secs_f64();
    let repriced_per_flush_s = counts.positions_repriced as f64 / flush_total.as_secs_f64();
    let cpu_share = busy.as_secs_f64() / simulated.as_secs_f64();
    let per_tick = |n: u64| n as f64 / ticks as f64;
    let conflation = unconflated_position_updates as f64 / counts.position_update.max(1) as f64;

    println!();
    println!(
        "live P&L: {ACCOUNTS} accounts x {POSITIONS_PER_ACCOUNT} = {total_positions} positions on {} symbols",
        instruments.len()
    );
    println!(
        "feed: {ticks} ticks = {TICKS_PER_SECOND} ticks/s x {SIMULATED_SECONDS} simulated s, \
         flush every {FLUSH_EVERY_MS} ms; live interval {} ms, exposure interval {} ms",
        config.live_interval_ms, config.exposure_interval_ms
    );
    println!(
        "setup (parse + apply {} events + first flush): {:.0} ms",
        setup.len(),
        setup_time.as_secs_f64() * 1e3
    );
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "engine call", "p50 µs", "p99 µs", "max µs", "mean µs", "count"
    );
    for (name, h) in [("apply(tick)", &apply_ns), ("flush_live", &flush_ns)] {
        println!(
            "{:<28} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8}",
            name,
            micros(h.value_at_quantile(0.50)),
            micros(h.value_at_quantile(0.99)),
            micros(h.max()),
            h.mean() / 1_000.0,
            h.len()
        );
    }
    println!(
        "flushes that pushed accounts: {pushing_flushes} of {}, {:.0} accounts each on average",
        flush_ns.len(),
        counts.portfolio_snapshot as f64 / pushing_flushes.max(1) as f64
    );
    println!();
    println!(
        "engine busy: {:.1} ms (apply {:.1} + flush {:.1}) for {:.0} s simulated = {:.2}% of one core",
        busy.as_secs_f64() * 1e3,
        apply_total.as_secs_f64() * 1e3,
        flush_total.as_secs_f64() * 1e3,
        simulated.as_secs_f64(),
        cpu_share * 100.0
    );
    println!(
        "positions re-priced: {} = {:.0} per simulated s; {:.2} M per engine CPU-second \
         ({:.2} M per second inside flush_live, which also encodes the messages)",
        counts.positions_repriced,
        counts.positions_repriced as f64 / simulated.as_secs_f64(),
        repriced_per_cpu_s / 1e6,
        repriced_per_flush_s / 1e6
    );
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>12}",
        "messages", "total", "per tick", "per sim. s"
    );
    let secs = simulated.as_secs_f64();
    for (name, n) in [
        ("price", counts.price),
        ("position_update", counts.position_update),
        ("account_update", counts.account_update),
        ("portfolio_full refresh", counts.portfolio_snapshot),
        ("exposure", counts.exposure),
        ("durable", counts.durable),
        ("(unconflated pos. updates)", unconflated_position_updates),
    ] {
        println!(
            "{:<28} {:>10} {:>10.2} {:>12.0}",
            name,
            n,
            per_tick(n),
            n as f64 / secs
        );
    }
    println!(
        "conflation: {conflation:.1}x fewer position_update than one per held position per tick"
    );

    let stats = |h: &Histogram<u64>| {
        json!({
            "p50_us": micros(h.value_at_quantile(0.50)),
            "p99_us": micros(h.value_at_quantile(0.99)),
            "max_us": micros(h.max()),
            "mean_us": (h.mean() / 10.0).round() / 100.0,
            "count": h.len(),
        })
    };
    let results = json!({
        "bench": "live_pnl",
        "accounts": ACCOUNTS,
        "positions": total_positions,
        "symbols": instruments.len(),
        "ticks": ticks,
        "ticks_per_second": TICKS_PER_SECOND,
        "simulated_seconds": SIMULATED_SECONDS,
        "flush_every_ms": FLUSH_EVERY_MS,
        "live_interval_ms": config.live_interval_ms,
        "exposure_interval_ms": config.exposure_interval_ms,
        "setup_ms": (setup_time.as_secs_f64() * 1e3).round(),
        "apply_tick": stats(&apply_ns),
        "flush_live": stats(&flush_ns),
        "flushes_pushing_accounts": pushing_flushes,
        "engine_busy_ms": (busy.as_secs_f64() * 1e4).round() / 10.0,
        "cpu_share_of_one_core": (cpu_share * 1e4).round() / 1e4,
        "positions_repriced": counts.positions_repriced,
        "positions_repriced_per_cpu_second": repriced_per_cpu_s.round(),
        "positions_repriced_per_flush_cpu_second": repriced_per_flush_s.round(),
        "messages": {
            "price": counts.price,
            "position_update": counts.position_update,
            "account_update": counts.account_update,
            "portfolio_full_refresh": counts.portfolio_snapshot,
            "exposure": counts.exposure,
            "durable": counts.durable,
        },
        "unconflated_position_updates": unconflated_position_updates,
        "position_updates_per_tick": per_tick(counts.position_update),
        "conflation_ratio": (conflation * 10.0).round() / 10.0,
    });
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/results");
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {dir}: {e}"));
    let path = format!("{dir}/live-pnl.json");
    let text = serde_json::to_string_pretty(&results).expect("plain JSON") + "\n";
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    println!("\nwritten to bench/results/live-pnl.json");
}
