//! `idle`: what an idle, authenticated, subscribed connection costs a node in memory
//! and CPU, and how long one price takes to reach all of them.
//!
//! 1. Start the topology and read each node's (and nginx's) resident memory at rest.
//! 2. Open `--connections` connections (traders, IBs, admins; each also subscribed to
//!    `prices:forex`) from worker processes.
//! 3. 3 s after the last one, read the memory again: (after − before) / the node's
//!    `tradecast_connections`. Then leave them idle for `--idle-s` and read the nodes'
//!    CPU time (heartbeats and the server's WebSocket pings).
//! 4. Write `--broadcasts` ticks, one at a time: each reaches every connection as a
//!    `price`; time the tick's `emit_ts` → the last copy's arrival, and the nodes' CPU
//!    per delivered copy.

use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::common::{decode_histogram, latency_cell, latency_summary, ms, now_us};
use crate::fleet::{self, Plan, sum};
use crate::market::Ticker;
use crate::population::Population;
use crate::results::{Outcome, Run};
use crate::topology::{Topology, TopologyArgs};

#[derive(Debug, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Connections in total (about 90 % traders, 8 % IBs, 2 % admins).
    #[arg(long, default_value_t = 19_000)]
    connections: usize,
    /// Connections per worker process (each from its own 127.0.0.x).
    #[arg(long, default_value_t = 5_000)]
    per_worker: usize,
    /// Handshakes each worker has in flight while connecting.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds the connections stay idle while the nodes' CPU is read.
    #[arg(long, default_value_t = 10)]
    idle_s: u64,
    /// Ticks to time, one at a time.
    #[arg(long, default_value_t = 5)]
    broadcasts: usize,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let run = Run::begin("idle", args.topology.name())?;
    let topology = Topology::start(&args.topology).await?;
    let result = measure(&args, &topology).await;
    topology.stop(result.is_err()).await;
    run.finish(&args.topology.out_dir, result?)
}

async fn measure(args: &IdleArgs, topology: &Topology) -> anyhow::Result<Outcome> {
    let population = Population::of(args.connections);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = topology.node_rss_kib()?;
    let nginx_before = topology.nginx_rss_kib();

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
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = topology.node_rss_kib()?;
    let nginx_after = topology.nginx_rss_kib();
    let mut per_node = Vec::new();
    let mut table = vec![
        ("who".to_owned(), population.describe()),
        opened.row(fleet.workers()),
    ];
    for (k, node) in topology.nodes.iter().enumerate() {
        let conns = node.metric("tradecast_connections").await? as u64;
        let per_conn = rss_after[k].saturating_sub(rss_before[k]) as f64 / conns.max(1) as f64;
        per_node.push(json!({"node": k + 1, "connections": conns,
            "rss_before_kib": rss_before[k], "rss_after_kib": rss_after[k],
            "rss_per_connection_kib": (per_conn * 100.0).round() / 100.0}));
        table.push((
            format!(
                "node {}: connections, RSS before → after, **per connection**",
                k + 1
            ),
            format!(
                "{conns}, {:.1} → {:.1} MiB, **{per_conn:.1} KiB**",
                rss_before[k] as f64 / 1024.0,
                rss_after[k] as f64 / 1024.0
            ),
        ));
    }
    if nginx_after > 0 {
        table.push((
            "nginx (master + workers) RSS before → after".to_owned(),
            format!(
                "{:.0} → {:.0} MiB ({:.1} KiB per connection)",
                nginx_before as f64 / 1024.0,
                nginx_after as f64 / 1024.0,
                nginx_after.saturating_sub(nginx_before) as f64 / opened.connections.max(1) as f64
            ),
        ));
    }

    // Idle CPU.
    let cpu_from = topology.cpu()?;
    tokio::time::sleep(Duration::from_secs(args.idle_s)).await;
    let idle_cpu = topology.cpu()?.since(&cpu_from);
    let idle_share = idle_cpu.nodes / args.idle_s.max(1) as f64;
    table.push((
        format!("nodes' CPU while idle ({} s)", args.idle_s),
        format!(
            "{:.2} % of one core ({:.2} µs per connection per second)",
            idle_share * 100.0,
            idle_share * 1e6 / opened.connections.max(1) as f64
        ),
    ));

    // Broadcasts, one at a time.
    let mut ingest = topology.ingest().await?;
    let mut ticker = Ticker::default();
    fleet
        .ask(json!({"cmd":"measure","from_ms":now_us() / 1000}))
        .await?;
    let cpu_from = topology.cpu()?;
    let mut to_last = Histogram::<u64>::new(3)?;
    let mut copies = 0u64;
    let mut missed = 0u64;
    let mut each = Vec::new();
    let bar = fleet::bar(args.broadcasts as u64, "broadcasts");
    for b in 0..args.broadcasts {
        let (tick, ts) = ticker.next(b);
        ingest.send(&[tick]).await?;
        let reached = fleet
            .ask(json!({"cmd":"reached","ts":ts,"wait_ms":30_000}))
            .await?;
        let got = sum(&reached, "got");
        copies += got;
        missed += opened.connections.saturating_sub(got);
        let last = reached
            .iter()
            .filter_map(|r| r["last_us"].as_u64())
            .max()
            .unwrap_or(0);
        let took = last.saturating_sub(ts * 1000).max(1);
        to_last.record(took)?;
        each.push(ms(took));
        bar.inc(1);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bar.finish_and_clear();
    let cpu = topology.cpu()?.since(&cpu_from);
    let counters = fleet.ask(json!({"cmd":"counters"})).await?;
    let mut per_copy = crate::common::histogram();
    for c in &counters {
        per_copy.add(decode_histogram(
            c["price_latency"].as_str().unwrap_or_default(),
        )?)?;
    }
    let cpu_per_million = cpu.nodes * 1e6 / copies.max(1) as f64;
    table.push((
        "broadcasts: ticks × connections, copies delivered".to_owned(),
        format!(
            "{} × {} → {copies} ({missed} missing)",
            args.broadcasts, opened.connections
        ),
    ));
    table.push((
        "tick `emit_ts` → **last** of its copies, each broadcast".to_owned(),
        each.iter()
            .map(|v| format!("{v} ms"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    table.push((
        "per copy: p50 / p90 / p99 / p99.9 / max".to_owned(),
        latency_cell(&per_copy),
    ));
    table.push((
        "nodes' CPU per million delivered copies".to_owned(),
        format!("{cpu_per_million:.1} s ({cpu_per_million:.1} µs per copy)"),
    ));

    let mut failures = Vec::new();
    if opened.gave_up > 0 {
        failures.push(format!(
            "{} connections could not be opened",
            opened.gave_up
        ));
    }
    if missed > 0 {
        failures.push(format!(
            "{missed} broadcast copies did not arrive within 30 s"
        ));
    }
    let figures = json!({
        "population": {"traders": population.traders, "ibs": population.ibs(),
            "admins": population.admins, "traders_per_ib": population.traders_per_ib},
        "connections": opened.connections, "gave_up": opened.gave_up,
        "connect_seconds": (opened.seconds * 10.0).round() / 10.0,
        "handshake_failures": opened.failures,
        "nodes": per_node,
        "nginx_rss_before_kib": nginx_before, "nginx_rss_after_kib": nginx_after,
        "idle": {"seconds": args.idle_s, "cpu": idle_cpu.to_json()},
        "broadcast": {"ticks": args.broadcasts, "copies": copies, "missing": missed,
            "to_last_copy": latency_summary(&to_last), "per_copy": latency_summary(&per_copy),
            "cpu": cpu.to_json(),
            "node_cpu_seconds_per_million_copies": (cpu_per_million * 10.0).round() / 10.0,
            "tick_to_last_copy_ms": each},
        "worker_pids": fleet.pids(),
    });
    Ok(Outcome {
        figures,
        table,
        notes: vec![
            "Memory: `VmRSS` of each node from `/proc/PID/status` 1 s after start and 3 s \
             after the last connection was set up, divided by the node's \
             `tradecast_connections` gauge. A connection counts once it has read `welcome` \
             and the `subscribed` of each of its default channels and of `prices:forex` \
             (traders: portfolio, orders, prices; IBs: commissions, network, prices; admins: \
             exposure, alerts, prices). Every user is distinct (JWT HS256)."
                .to_owned(),
            "Broadcast: one tick at a time through the ingest path; `emit_ts` is the wall \
             clock (ms) when it was written, each copy's arrival the wall clock (µs) when a \
             worker read the frame (one machine, one clock; up to 1 ms is the ms resolution \
             of `emit_ts`). CPU: `utime + stime` of the node processes over the broadcasts, \
             including the kernel's loopback TCP work done on their behalf."
                .to_owned(),
        ],
        failures,
    })
}
