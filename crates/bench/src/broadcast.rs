//! `broadcast`: price ticks to every subscriber at a given rate.
//!
//! Every connection (traders, IBs and admins) holds `prices:forex`. For
//! `--duration-s` the bench writes `--rate` ticks per second through the ingest path,
//! round-robin over 10 currency pairs; each becomes a `price` for every connection.
//! Each worker times every copy from the tick's `emit_ts` to the frame's arrival into
//! an HdrHistogram; the coordinator merges them. A connection's queue keeps only the
//! latest price per symbol (ephemeral messages are conflated by design), so when the
//! nodes fall behind, copies are replaced rather than queued: the nodes count those
//! (`tradecast_outbox_conflated_total`). A last tick must then reach every connection.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::common::{decode_histogram, histogram, latency_cell, latency_summary, now_us};
use crate::fleet::{self, Plan, sum};
use crate::market::Ticker;
use crate::population::Population;
use crate::results::{Outcome, Run};
use crate::topology::{Topology, TopologyArgs};

#[derive(Debug, Args)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Connections in total (about 90 % traders, 8 % IBs, 2 % admins), all on prices.
    #[arg(long, default_value_t = 19_000)]
    connections: usize,
    #[arg(long, default_value_t = 5_000)]
    per_worker: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Ticks written per second.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Seconds of ticks.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
}

pub async fn run(args: BroadcastArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let run = Run::begin("broadcast", args.topology.name())?;
    let topology = Topology::start(&args.topology).await?;
    let result = measure(&args, &topology).await;
    topology.stop(result.is_err()).await;
    run.finish(&args.topology.out_dir, result?)
}

async fn measure(args: &BroadcastArgs, topology: &Topology) -> anyhow::Result<Outcome> {
    let population = Population::of(args.connections);
    let ranges = population.ranges();
    let (mut fleet, opened) = fleet::open(&Plan {
        server: topology.entry(),
        users: &ranges,
        per_worker: args.per_worker,
        prices: true,
        track: false,
        concurrency: args.concurrency,
    })
    .await?;
    let n = opened.connections;
    let mut ingest = topology.ingest().await?;
    let mut ticker = Ticker::default();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let conflated_from = topology.metric("tradecast_outbox_conflated_total").await?;
    let out_from = topology.metric("tradecast_messages_out_total").await?;
    fleet
        .ask(json!({"cmd":"measure","from_ms":now_us() / 1000}))
        .await?;
    let cpu_from = topology.cpu()?;
    let started = Instant::now();
    let total = (args.rate * args.duration_s as f64).round() as u64;
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bar = fleet::bar(total, "ticks");
    let mut first_ts = 0;
    for k in 0..total {
        interval.tick().await;
        let (tick, ts) = ticker.next(k as usize);
        if k == 0 {
            first_ts = ts;
        }
        ingest.send(&[tick]).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let written_s = started.elapsed().as_secs_f64();
    // A last tick must reach everyone (nothing stuck behind conflation).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (tick, last_ts) = ticker.next(total as usize);
    ingest.send(&[tick]).await?;
    let reached = fleet
        .ask(json!({"cmd":"reached","ts":last_ts,"wait_ms":60_000}))
        .await?;
    let cpu = topology.cpu()?.since(&cpu_from);
    let got_last = sum(&reached, "got");
    let last_us = reached
        .iter()
        .filter_map(|r| r["last_us"].as_u64())
        .max()
        .unwrap_or(0);
    let conflated = topology.metric("tradecast_outbox_conflated_total").await? - conflated_from;
    let messages_out = topology.metric("tradecast_messages_out_total").await? - out_from;
    let counters = fleet.ask(json!({"cmd":"counters"})).await?;
    let mut latency = histogram();
    for c in &counters {
        latency.add(decode_histogram(
            c["price_latency"].as_str().unwrap_or_default(),
        )?)?;
    }
    let frames = sum(&counters, "frames");
    let bytes = sum(&counters, "bytes");
    // Copies of the measured ticks (the last one included), and over how long.
    let copies = latency.len();
    let expected = (total + 1) * n;
    let span_s = (last_us.saturating_sub(first_ts * 1000)) as f64 / 1e6;
    let rate = copies as f64 / span_s.max(0.001);
    let cpu_per_million = cpu.nodes * 1e6 / copies.max(1) as f64;
    let missing = expected.saturating_sub(copies + conflated as u64);
    let table = vec![
        ("who".to_owned(), population.describe()),
        opened.row(fleet.workers()),
        (
            "ticks written (rate, duration)".to_owned(),
            format!(
                "{total} + 1 last ({:.1}/s for {written_s:.1} s), 10 symbols round-robin",
                args.rate
            ),
        ),
        (
            "copies delivered / replaced by a newer price (conflated) / expected".to_owned(),
            format!("{copies} / {conflated} / {expected} ({missing} unaccounted)"),
        ),
        (
            "**delivered messages per second**".to_owned(),
            format!(
                "**{rate:.0}/s** (first tick written → last copy read: {span_s:.1} s; {:.1} MB/s of frames)",
                bytes as f64 / span_s.max(0.001) / 1e6
            ),
        ),
        (
            "**latency per copy** (`emit_ts` → read): p50 / p90 / p99 / p99.9 / max".to_owned(),
            format!("**{}**", latency_cell(&latency)),
        ),
        (
            "last tick reached".to_owned(),
            format!(
                "{got_last} of {n} connections, last copy after {:.1} ms",
                last_us.saturating_sub(last_ts * 1000) as f64 / 1000.0
            ),
        ),
        (
            "nodes' CPU per million delivered messages".to_owned(),
            format!(
                "{cpu_per_million:.1} s ({:.0} % of one core over the run; nginx {:.0} %, redis {:.0} %)",
                cpu.nodes / span_s.max(0.001) * 100.0,
                cpu.nginx / span_s.max(0.001) * 100.0,
                cpu.redis / span_s.max(0.001) * 100.0
            ),
        ),
    ];
    let mut failures = Vec::new();
    if opened.gave_up > 0 {
        failures.push(format!(
            "{} connections could not be opened",
            opened.gave_up
        ));
    }
    if got_last < n {
        failures.push(format!(
            "the last tick reached {got_last} of {n} connections"
        ));
    }
    let figures = json!({
        "population": {"traders": population.traders, "ibs": population.ibs(), "admins": population.admins},
        "connections": n, "gave_up": opened.gave_up,
        "connect_seconds": (opened.seconds * 10.0).round() / 10.0,
        "rate_per_s": args.rate, "duration_s": args.duration_s, "ticks": total + 1,
        "copies": copies, "conflated": conflated, "expected": expected, "unaccounted": missing,
        "nodes_messages_out": messages_out, "frames_received": frames, "bytes_received": bytes,
        "delivered_per_s": rate.round(), "span_s": span_s,
        "latency": latency_summary(&latency),
        "last_tick": {"reached": got_last, "ms": (last_us.saturating_sub(last_ts * 1000)) as f64 / 1000.0},
        "cpu": cpu.to_json(),
        "node_cpu_seconds_per_million_delivered": (cpu_per_million * 10.0).round() / 10.0,
    });
    Ok(Outcome {
        figures,
        table,
        notes: vec![
            "Latency: `emit_ts` is the wall clock (ms) when the tick was written (XADD into \
             `tc:ticks`, or `POST /v1/events` on the embedded broker); each copy's arrival is \
             the wall clock (µs) when a worker read the frame; one machine, one clock. It \
             covers ingest, the fan-out (each node serialises a price once and queues the \
             same bytes for every subscriber), nginx with several nodes, and the workers \
             reading on the same 2 cores. Delivered per second: copies read / (first tick \
             written → last copy read)."
                .to_owned(),
            "Prices are ephemeral: a connection's queue keeps the latest price per symbol, \
             so copies the node could not write before the next tick of the same symbol are \
             replaced (`conflated`), never queued without bound. Copies + conflated should \
             equal ticks × connections; the last tick must reach every connection."
                .to_owned(),
        ],
        failures,
    })
}
