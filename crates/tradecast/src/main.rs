//! `tradecast`: the one binary. `serve` runs a gateway node, `demo` runs one with
//! the built-in broker simulator, `token` mints a JWT, `publish` writes ingest events
//! into the Redis streams and `simulate` runs the simulator against them.
//!
//! Every flag can also come from an environment variable `TRADECAST_<FLAG>` or from
//! a TOML file given with `--config` (keys are the flag names, e.g.
//! `heartbeat-ms = 30000`). Precedence: flag, then environment, then file.

mod cli;
mod config_file;
mod memory;
mod publish;
mod simulate;

use anyhow::Context;
use clap::Parser;
use tradecast_gateway::{Authenticator, Gateway, Ingest, demo};
use tradecast_protocol::{Principal, Role};

use crate::cli::{Cli, Command, ServeArgs};

/// The JWT secret `tradecast demo` uses when none is given, so the printed tokens
/// keep working across restarts of the demo.
const DEMO_SECRET: &str = "tradecast-demo-secret-change-me";

fn main() -> anyhow::Result<()> {
    config_file::load_into_env(std::env::args_os())?;
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args, false)),
        Command::Demo(args) => runtime.block_on(serve(args, true)),
        Command::Token(args) => {
            let auth = Authenticator::new(Some(&args.jwt_secret), None)?;
            let role: Role = args.role.parse().map_err(anyhow::Error::msg)?;
            println!("{}", auth.mint(Principal { id: args.sub, role }, args.ttl)?);
            Ok(())
        }
        Command::Publish(args) => runtime.block_on(publish::run(args)),
        Command::Simulate(args) => {
            runtime.block_on(async { simulate::run(args, shutdown_signal()).await })
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(args: ServeArgs, demo_mode: bool) -> anyhow::Result<()> {
    if demo_mode && args.redis.is_some() {
        anyhow::bail!(
            "demo runs on the embedded broker; to feed a Redis deployment run `tradecast serve --redis URL` and `tradecast simulate --redis URL`"
        );
    }
    let secret = match (&args.jwt_secret, demo_mode) {
        (Some(secret), _) => Some(secret.clone()),
        (None, true) => Some(DEMO_SECRET.to_owned()),
        (None, false) => None,
    };
    let public_key = match &args.jwt_public_key {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let auth = Authenticator::new(secret.as_deref(), public_key.as_deref())?;
    let config = args.gateway_config()?;

    let simulator = demo_mode.then(|| demo::simulator(args.seed));
    let identities = match &simulator {
        Some(simulator) => Some(demo::identities(simulator, &auth)?),
        None => None,
    };
    let gateway = Gateway::bind(config, auth, identities.clone()).await?;
    memory::spawn_metrics();
    if let Some(simulator) = simulator {
        let Ingest::Local(pipeline) = &gateway.node().ingest else {
            unreachable!("demo mode runs on the embedded broker");
        };
        demo::start(simulator, pipeline.clone()).await?;
    }
    let shutdown = shutdown_signal();
    let public = gateway.public_addr();
    let admin = gateway.admin_addr();
    println!("listening public={public} admin={admin}");
    if let Some(identities) = identities {
        let host = if public.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            public.ip().to_string()
        };
        println!();
        println!("tradecast demo is running. Open the dashboard:");
        println!();
        println!("    http://{host}:{}/", public.port());
        println!();
        println!("Ready tokens (also one click away on the page):");
        for identity in &identities {
            println!("  {:<18} {}", identity.label, identity.token);
        }
        println!();
        println!(
            "A plain WebSocket works too:  ws://{host}:{}/ws?token=<token>",
            public.port()
        );
        println!("Metrics: http://{admin}/metrics   Stop: Ctrl-C (drains gracefully)");
    }
    gateway.run(shutdown).await
}

/// Install the SIGTERM and SIGINT handlers now (so a signal that comes before the
/// future is first polled still drains instead of killing the process); the
/// future resolves on either.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
