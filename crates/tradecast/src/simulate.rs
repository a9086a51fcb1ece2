//! `tradecast simulate`: the built-in trade simulator writing into Redis, as an MT5
//! plugin would.
//!
//! First the bootstrap (symbols, accounts, the IB tree, deposits and opening
//! positions) goes out as fast as Redis takes it; then the simulator is stepped every
//! [`STEP`] on the wall clock and each step's events are written at once, so about
//! `--rate` events arrive per second, ticks included. Every event's `ts` is the step's
//! time and its `emit_ts` the moment just before its batch is written, so a consumer
//! can measure XADD-to-delivery latency from it.
//!
//! The simulator is asked for rates, not event counts: `ticks_per_sec` and
//! `trades_per_sec` (trading activities, each of which emits a few events: an open is
//! an order placed and filled, a deal, a position and the account). [`Rates`] derives
//! both from `--rate` by measuring, on a throwaway copy of the same broker, how many
//! events an activity emits on average.
//!
//! A failed write (Redis restarting, say) is retried every second with the same
//! events: a retried pipeline may have been partly applied, and the gateway drops the
//! duplicates by (`src`, `seq`).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tradecast_ingest::writer::{InvalidEvent, StreamWriter};
use tradecast_simulator::{SimConfig, Simulator};

use crate::cli::SimulateArgs;
use crate::publish::BATCH;

/// How often the simulator is advanced.
const STEP: Duration = Duration::from_millis(50);

/// How often progress is printed.
const REPORT: Duration = Duration::from_secs(1);

/// Share of `--rate` spent on ticks; the rest are trade events.
const TICK_SHARE: f64 = 0.7;

/// Pause before retrying a failed write.
const RETRY: Duration = Duration::from_secs(1);

/// Wall-clock milliseconds since 1970 UTC.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub async fn run(
    args: SimulateArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    args.validate()?;
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let base = SimConfig {
        seed: args.seed,
        traders: args.traders,
        symbols: args.symbols,
        ib_depth: args.ib_depth,
        ticks_per_sec: 0.0,
        trades_per_sec: 0.0,
        src: args.src.clone(),
    };
    let rates = Rates::for_total(args.rate, &base);
    let mut simulator = Simulator::new(SimConfig {
        ticks_per_sec: rates.ticks_per_sec,
        trades_per_sec: rates.trades_per_sec,
        ..base
    });
    let layout = args.streams.layout();
    let mut writer =
        StreamWriter::connect_to(&args.streams.target(), layout.clone(), args.streams.maxlen)
            .await?;

    let who = simulator.identities();
    println!(
        "simulating {} traders, {} symbols, a {}-level IB tree as src {:?}: \
         {:.0} ticks/s + {:.1} trading activities/s (~{:.1} events each)",
        args.traders,
        args.symbols,
        args.ib_depth,
        args.src,
        rates.ticks_per_sec,
        rates.trades_per_sec,
        rates.events_per_activity
    );
    println!(
        "streams: {}; try trader {}, IB {}, risk desk {}",
        layout.streams().join(", "),
        who.trader,
        who.ib,
        who.admin
    );

    // The simulator's clock starts with the bootstrap: whatever happens while it is
    // being written comes out in the first step, so the pace counts from here.
    let started = Instant::now();
    let bootstrap = simulator.bootstrap(now_ms());
    let mut written = 0u64;
    if !write_all(&mut writer, bootstrap, &mut written, &mut stop).await? {
        println!("written {written} events");
        return Ok(());
    }
    println!("bootstrap: written {written} events");

    let deadline = args
        .duration_s
        .map(|s| started + Duration::from_secs_f64(s));
    let mut clock = tokio::time::interval(STEP);
    clock.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut report = Progress::new(written, started);
    loop {
        tokio::select! {
            _ = clock.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let events = simulator.step(now_ms());
        if !write_all(&mut writer, events, &mut written, &mut stop).await? {
            break;
        }
        report.maybe_print(written);
    }
    let secs = started.elapsed().as_secs_f64();
    let steady = written - report.start;
    println!(
        "written {written} events (bootstrap {}, then {steady} in {secs:.1} s: {:.0}/s)",
        report.start,
        steady as f64 / secs.max(0.001)
    );
    Ok(())
}

/// Writes `events` in batches of at most [`BATCH`], stamping `emit_ts` just before each,
/// and retries a batch Redis failed until it succeeds or the run is stopped. False
/// when stopped before everything was written.
async fn write_all(
    writer: &mut StreamWriter,
    mut events: Vec<Value>,
    written: &mut u64,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    for batch in events.chunks_mut(BATCH) {
        loop {
            let emit_ts = now_ms();
            for event in batch.iter_mut() {
                event["emit_ts"] = emit_ts.into();
            }
            match writer.write(batch).await {
                Ok(_) => break,
                Err(error) if error.downcast_ref::<InvalidEvent>().is_some() => {
                    return Err(error.context("the simulator produced an invalid event"));
                }
                Err(error) => {
                    eprintln!("write failed, retrying in {}s: {error:#}", RETRY.as_secs());
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = stop.wait_for(|stopped| *stopped) => return Ok(false),
                    }
                }
            }
        }
        *written += batch.len() as u64;
    }
    Ok(true)
}

/// The simulator rates that yield a total event rate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    ticks_per_sec: f64,
    trades_per_sec: f64,
    /// Events one trading activity emits on average.
    events_per_activity: f64,
}

impl Rates {
    /// [`TICK_SHARE`] of `total` as ticks, the rest as trade events.
    fn for_total(total: f64, config: &SimConfig) -> Rates {
        let events_per_activity = events_per_activity(config);
        Rates {
            ticks_per_sec: total * TICK_SHARE,
            trades_per_sec: total * (1.0 - TICK_SHARE) / events_per_activity,
            events_per_activity,
        }
    }
}

/// Runs a copy of the broker `config` describes with trading only (no ticks) for a
/// minute of simulated time and counts the events per activity. The simulator is
/// deterministic, so this costs a few milliseconds and no randomness leaks into the
/// real run.
fn events_per_activity(config: &SimConfig) -> f64 {
    const ACTIVITIES_PER_SEC: f64 = 100.0;
    const SIMULATED_SECS: u64 = 60;
    const STEP_MS: u64 = 100;
    let mut probe = Simulator::new(SimConfig {
        ticks_per_sec: 0.0,
        trades_per_sec: ACTIVITIES_PER_SEC,
        ..config.clone()
    });
    let t0 = 1_700_000_000_000;
    probe.bootstrap(t0);
    let events: usize = (1..=SIMULATED_SECS * 1000 / STEP_MS)
        .map(|n| probe.step(t0 + n * STEP_MS).len())
        .sum();
    let activities = ACTIVITIES_PER_SEC * SIMULATED_SECS as f64;
    (events as f64 / activities).max(1.0)
}

/// Prints `written N events (R/s)` once per [`REPORT`].
struct Progress {
    /// Events written before the steady state (the bootstrap).
    start: u64,
    last_at: Instant,
    last_written: u64,
}

impl Progress {
    fn new(written: u64, at: Instant) -> Progress {
        Progress {
            start: written,
            last_at: at,
            last_written: written,
        }
    }

    fn maybe_print(&mut self, written: u64) {
        let elapsed = self.last_at.elapsed();
        if elapsed < REPORT {
            return;
        }
        let rate = (written - self.last_written) as f64 / elapsed.as_secs_f64();
        println!("written {written} events ({rate:.0}/s)");
        self.last_at = Instant::now();
        self.last_written = written;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SimConfig {
        SimConfig {
            seed: 7,
            traders: 200,
            symbols: 30,
            ib_depth: 5,
            ticks_per_sec: 0.0,
            trades_per_sec: 0.0,
            src: "sim-test".into(),
        }
    }

    #[test]
    fn rates_add_up_to_the_requested_total() {
        let rates = Rates::for_total(1000.0, &config());
        assert_eq!(rates.ticks_per_sec, 700.0);
        assert!(
            (2.0..10.0).contains(&rates.events_per_activity),
            "{rates:?}"
        );
        let trade_events = rates.trades_per_sec * rates.events_per_activity;
        assert!((trade_events - 300.0).abs() < 1e-6, "{rates:?}");
    }

    /// Driving a simulator with the derived rates for a simulated minute yields the
    /// requested rate within a few percent.
    #[test]
    fn the_derived_rates_yield_about_the_requested_rate() {
        let base = config();
        let rates = Rates::for_total(500.0, &base);
        let mut sim = Simulator::new(SimConfig {
            seed: 99,
            ticks_per_sec: rates.ticks_per_sec,
            trades_per_sec: rates.trades_per_sec,
            ..base
        });
        let t0 = 1_800_000_000_000;
        sim.bootstrap(t0);
        let events: usize = (1..=1200u64).map(|n| sim.step(t0 + n * 50).len()).sum();
        let per_sec = events as f64 / 60.0;
        assert!((450.0..550.0).contains(&per_sec), "{per_sec} events/s");
    }
}
