//! `bandwidth`: bytes per update of deltas against full `portfolio_full` snapshots,
//! on portfolios of 50 positions.
//!
//! After the `trades` set-up (every trader holds `--positions` positions over 10
//! currency pairs), the connections open: each trader's first `portfolio_full` is
//! the full snapshot a snapshot-only server would send on every change. Then for
//! `--duration-s` ticks move the prices (`--tick-rate` per second, round-robin over
//! the pairs) and trade events open, pay and close positions (`--rate` per second).
//! Each worker counts, on every trader's own `portfolio:` channel, the bytes of
//! - live deltas (ephemeral `position_update {id, profit, price}` and
//!   `account_update` figures), grouped into pushes: the node sends an account's
//!   moved figures together, at most every `--live-interval-ms` (250 ms by default);
//! - durable deltas (`position_opened`, `position_closed`, `account_update`, …).
//!
//! and compares each with the snapshot's size. The durable messages are checked for
//! loss and duplicates as in `trades`.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::common::now_us;
use crate::fleet::{self, Plan, sum};
use crate::population::Population;
use crate::results::{Outcome, Run};
use crate::topology::{Topology, TopologyArgs};
use crate::trades::{set_up, ticks};

#[derive(Debug, Args)]
pub struct BandwidthArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Connections in total (about 90 % traders, 8 % IBs, 2 % admins).
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Open positions per trader.
    #[arg(long, default_value_t = 50)]
    positions: usize,
    /// Ticks per second, round-robin over 10 pairs.
    #[arg(long, default_value_t = 20.0)]
    tick_rate: f64,
    /// Trade events per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
}

pub async fn run(args: BandwidthArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tick_rate > 0.0, "--tick-rate must be positive");
    let run = Run::begin("bandwidth", args.topology.name())?;
    let topology = Topology::start(&args.topology).await?;
    let result = measure(&args, &topology).await;
    topology.stop(result.is_err()).await;
    run.finish(&args.topology.out_dir, result?)
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole <= 0.0 {
        return 0.0;
    }
    ((1.0 - part / whole) * 1000.0).round() / 10.0
}

async fn measure(args: &BandwidthArgs, topology: &Topology) -> anyhow::Result<Outcome> {
    let population = Population::of(args.connections);
    let mut ingest = topology.ingest().await?;
    let (mut generator, mut source, setup_count, setup_s) =
        set_up(topology, &mut ingest, population, args.positions, 11).await?;
    let ranges = population.ranges();
    let (mut fleet, opened) = fleet::open(&Plan {
        server: topology.entry(),
        users: &ranges,
        per_worker: 5_000,
        prices: false,
        track: false,
        concurrency: 64,
    })
    .await?;
    fleet
        .ask(json!({"cmd":"measure","from_ms":now_us() / 1000}))
        .await?;
    let tick_task = tokio::spawn(ticks(topology.ingest().await?, args.tick_rate));
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bar = fleet::bar(args.duration_s, "load (s)");
    let started = Instant::now();
    let total = Duration::from_secs(args.duration_s);
    let mut written = 0u64;
    while started.elapsed() < total {
        interval.tick().await;
        bar.set_position(started.elapsed().as_secs());
        let due = (started.elapsed().as_secs_f64() * f64::from(args.rate)) as u64;
        let batch: Vec<_> = (written..due)
            .map(|_| {
                let body = generator.next().0;
                source.event(body)
            })
            .collect();
        written = due;
        ingest.send(&batch).await?;
        fleet.poll()?;
    }
    bar.finish_and_clear();
    tick_task.abort();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counters = fleet.ask(json!({"cmd":"counters"})).await?;
    let verify = fleet.ask(json!({"cmd":"verify","wait_ms":10_000})).await?;
    let bw = |key: &str| -> f64 {
        counters
            .iter()
            .filter_map(|c| c["bandwidth"][key].as_u64())
            .sum::<u64>() as f64
    };
    let snapshot = bw("snapshot_bytes") / bw("snapshots").max(1.0);
    let live_message = bw("live_bytes") / bw("live_messages").max(1.0);
    let live_push = bw("live_bytes") / bw("live_pushes").max(1.0);
    let durable = bw("durable_bytes") / bw("durable_messages").max(1.0);
    let updates = bw("live_pushes") + bw("durable_messages");
    let delta_total = bw("live_bytes") + bw("durable_bytes");
    let full_total = updates * snapshot;
    let lost = sum(&verify, "lost");
    let duplicated = sum(&verify, "duplicates");
    let table = vec![
        ("who".to_owned(), population.describe()),
        (
            "set-up".to_owned(),
            format!("{setup_count} events ({} positions per trader) in {setup_s:.1} s", args.positions),
        ),
        opened.row(fleet.workers()),
        (
            "load".to_owned(),
            format!(
                "{} s: {} ticks/s over 10 pairs, {written} trade events ({}/s)",
                args.duration_s, args.tick_rate, args.rate
            ),
        ),
        (
            "full snapshot (`portfolio_full`, 50 positions), mean".to_owned(),
            format!("{snapshot:.0} bytes ({:.0} snapshots)", bw("snapshots")),
        ),
        (
            "**one live delta** (`position_update` / `account_update` figures), mean".to_owned(),
            format!(
                "**{live_message:.0} bytes: {} % fewer** ({:.0} messages)",
                ratio(live_message, snapshot),
                bw("live_messages")
            ),
        ),
        (
            "**one durable delta** (`position_opened`, `position_closed`, `account_update`, …), mean".to_owned(),
            format!(
                "**{durable:.0} bytes: {} % fewer** ({:.0} messages)",
                ratio(durable, snapshot),
                bw("durable_messages")
            ),
        ),
        (
            "one live push (every delta of one account in one pacing window), mean".to_owned(),
            format!(
                "{live_push:.0} bytes: {} % fewer ({:.0} pushes, {:.1} deltas each)",
                ratio(live_push, snapshot),
                bw("live_pushes"),
                bw("live_messages") / bw("live_pushes").max(1.0)
            ),
        ),
        (
            "**whole run: deltas vs a snapshot per update**".to_owned(),
            format!(
                "**{:.2} MB vs {:.2} MB: {} % fewer**",
                delta_total / 1e6,
                full_total / 1e6,
                ratio(delta_total, full_total)
            ),
        ),
        (
            "durable messages lost / duplicated".to_owned(),
            format!("{lost} / {duplicated}"),
        ),
    ];
    let mut failures = Vec::new();
    if opened.gave_up > 0 {
        failures.push(format!(
            "{} connections could not be opened",
            opened.gave_up
        ));
    }
    if lost > 0 || duplicated > 0 {
        failures.push(format!(
            "{lost} durable messages lost, {duplicated} duplicated"
        ));
    }
    if bw("snapshots") == 0.0 || bw("live_messages") == 0.0 {
        failures.push("no snapshot or no live delta was received".to_owned());
    }
    let figures = json!({
        "population": {"traders": population.traders, "ibs": population.ibs(), "admins": population.admins},
        "positions_per_trader": args.positions, "tick_rate": args.tick_rate,
        "trade_events": written, "duration_s": args.duration_s,
        "snapshot_bytes_mean": snapshot.round(),
        "live_delta_bytes_mean": live_message.round(),
        "live_push_bytes_mean": live_push.round(),
        "durable_delta_bytes_mean": durable.round(),
        "reduction_percent": {"live_delta": ratio(live_message, snapshot),
            "durable_delta": ratio(durable, snapshot), "live_push": ratio(live_push, snapshot),
            "whole_run": ratio(delta_total, full_total)},
        "counts": {"snapshots": bw("snapshots"), "live_messages": bw("live_messages"),
            "live_pushes": bw("live_pushes"), "durable_messages": bw("durable_messages"),
            "live_bytes": bw("live_bytes"), "durable_bytes": bw("durable_bytes")},
        "durable": {"lost": lost, "duplicated": duplicated},
    });
    Ok(Outcome {
        figures,
        table,
        notes: vec![
            "Bytes are the JSON text of each WebSocket frame on the trader's own \
             `portfolio:{login}` channel (frame headers excluded; no compression is \
             negotiated). An update is one delta message; a snapshot-only server would send \
             the whole `portfolio_full` instead. A live push groups the deltas of one \
             account less than 100 ms apart: with many pairs ticking, most of the 50 \
             positions move in every 250 ms window, so a push carries many deltas and saves \
             less than a single delta does. \"Whole run\" compares every byte of deltas \
             with one snapshot per push and per durable message."
                .to_owned(),
        ],
        failures,
    })
}
