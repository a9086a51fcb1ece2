//! `tradecast-bench`: benchmarks that drive a real `tradecast` node over loopback.
//!
//! The coordinator starts the node, spreads client connections over worker
//! processes (one process may open at most ~20,000 files here) and source
//! addresses 127.0.0.x, injects events through the node's real ingest path and
//! reads the node's memory and CPU from `/proc`.

mod common;
mod idle;
mod ingest;
mod procfs;
mod scale;
mod scale_worker;
mod worker;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tradecast-bench", about = "Benchmarks for tradecast")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Idle connections: resident memory per connection, then broadcast latency to all.
    Idle(idle::IdleArgs),
    /// Ingest → WebSocket latency of trade events with 5-level IB chains, on Redis.
    Ingest(ingest::IngestArgs),
    /// Nodes on one Redis behind nginx: memory, fan-out latency, resume after kill -9.
    Scale(scale::ScaleArgs),
    /// (internal) A worker process holding client connections for the coordinator.
    Worker(worker::WorkerArgs),
    /// (internal) A worker process of the scale benchmark.
    #[command(hide = true)]
    ScaleWorker(scale_worker::ScaleWorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Idle(args) => runtime.block_on(idle::run(args)),
        Command::Ingest(args) => runtime.block_on(ingest::run(args)),
        Command::Worker(args) => runtime.block_on(worker::run(args)),
        Command::Scale(args) => runtime.block_on(scale::run(args)),
        Command::ScaleWorker(args) => runtime.block_on(scale_worker::run(args)),
    }
}
