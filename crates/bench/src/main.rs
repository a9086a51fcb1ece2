//! `tradecast-bench`: the load generator and benchmark suite. Each scenario starts
//! what it measures (one node, or three on Redis behind nginx), spreads client
//! connections over worker processes and source addresses 127.0.0.x (one process may
//! open at most 20,000 files here), injects events through the real ingest path,
//! measures on the receiving side and reads the nodes' memory and CPU from `/proc`.
//! Results go to `bench/results/<scenario>-<topology>.{json,md}`; see bench/README.md.

mod bandwidth;
mod broadcast;
mod common;
mod fleet;
mod idle;
mod market;
mod population;
mod procfs;
mod results;
mod soak;
mod storm;
mod topology;
mod trades;
mod worker;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tradecast-bench",
    about = "Load generator and benchmarks for tradecast"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Idle connections: memory and CPU per connection, then one price to all of them.
    Idle(idle::IdleArgs),
    /// Price ticks to every subscriber at a given rate: delivered/s, latency, CPU.
    Broadcast(broadcast::BroadcastArgs),
    /// Trade events with 5-level IB chains, 50 positions per trader, live P/L.
    Trades(trades::TradesArgs),
    /// Kill a node: time until its clients reconnected and resumed; nothing lost.
    Storm(storm::StormArgs),
    /// Bytes per update: deltas against full snapshots of 50-position portfolios.
    Bandwidth(bandwidth::BandwidthArgs),
    /// One node for a long time with traffic and connection churn: does memory level off?
    Soak(soak::SoakArgs),
    /// (internal) A worker process holding client connections for a scenario.
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let scenario = async {
            match cli.command {
                Command::Idle(args) => idle::run(args).await,
                Command::Broadcast(args) => broadcast::run(args).await,
                Command::Trades(args) => trades::run(args).await,
                Command::Storm(args) => storm::run(args).await,
                Command::Bandwidth(args) => bandwidth::run(args).await,
                Command::Soak(args) => soak::run(args).await,
                Command::Worker(args) => worker::run(args).await,
            }
        };
        // Ctrl-C or SIGTERM drops the scenario, and with it every process it started.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = scenario => result,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            _ = term.recv() => anyhow::bail!("terminated"),
        }
    })
}
