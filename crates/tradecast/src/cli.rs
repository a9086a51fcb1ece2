//! Command-line flags (each also read from `TRADECAST_<FLAG>`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tradecast_broker::{OutboxLimits, Retention};
use tradecast_core::EngineConfig;
use tradecast_gateway::GatewayConfig;

#[derive(Debug, Parser)]
#[command(
    name = "tradecast",
    version,
    about = "Real-time push gateway for MetaTrader brokers"
)]
pub struct Cli {
    /// TOML file with flag values (keys are flag names, e.g. `heartbeat-ms = 30000`).
    #[arg(long, global = true, env = "TRADECAST_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a gateway node.
    Serve(ServeArgs),
    /// Run a gateway node on the embedded broker with the built-in trade simulator,
    /// and print the dashboard URL and ready tokens.
    Demo(ServeArgs),
    /// Print a signed JWT (HS256).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Public listener: WebSocket upgrades (on /ws and /) and the page.
    #[arg(long, env = "TRADECAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Private listener: /healthz, /readyz, /metrics, POST /v1/events.
    #[arg(long, env = "TRADECAST_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    pub admin_listen: SocketAddr,
    /// Redis URL for the shared broker and stream ingest (absent: embedded broker).
    #[arg(long, env = "TRADECAST_REDIS")]
    pub redis: Option<String>,
    /// HS256 secret for client tokens (`tradecast demo` has a built-in default).
    #[arg(long, env = "TRADECAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM file with an RSA or EC public key: accept RS256 or ES256 tokens.
    #[arg(long, env = "TRADECAST_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Heartbeat interval; a connection silent for 3 intervals is closed (4008).
    #[arg(long, env = "TRADECAST_HEARTBEAT_MS", default_value_t = 30_000)]
    pub heartbeat_ms: u64,
    /// Trade-event stream (with --redis); partitions are `<name>:{n}`.
    #[arg(long, env = "TRADECAST_EVENTS_STREAM", default_value = "tc:events")]
    pub events_stream: String,
    /// Tick stream (with --redis).
    #[arg(long, env = "TRADECAST_TICKS_STREAM", default_value = "tc:ticks")]
    pub ticks_stream: String,
    /// IB commission per lot by level: direct IB, its parent, …; the last value
    /// repeats for every higher level.
    #[arg(long, env = "TRADECAST_IB_PLAN", default_value = "5,1,0.5")]
    pub ib_plan: String,
    /// Connection cap (HTTP 503 beyond it); never closer than 512 to the open-file limit.
    #[arg(long, env = "TRADECAST_MAX_CONNECTIONS", default_value_t = 18_000)]
    pub max_connections: usize,
    /// Largest inbound frame in bytes (larger: close 1009).
    #[arg(long, env = "TRADECAST_MAX_FRAME_BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,
    /// Channels one connection may hold.
    #[arg(long, env = "TRADECAST_MAX_SUBSCRIPTIONS", default_value_t = 64)]
    pub max_subscriptions: usize,
    /// Inbound frames per second per connection (bursts of twice that); past it: close 4029.
    #[arg(long, env = "TRADECAST_MAX_INBOUND_RATE", default_value_t = 50)]
    pub max_inbound_rate: u32,
    /// Unwritten bytes one connection may queue before it is closed as a slow consumer (4009).
    #[arg(long, env = "TRADECAST_OUTBOX_MAX_BYTES", default_value_t = 4 << 20)]
    pub outbox_max_bytes: usize,
    /// Durable messages kept per channel for resume.
    #[arg(long, env = "TRADECAST_HISTORY_SIZE", default_value_t = 1000)]
    pub history_size: usize,
    /// Durable messages older than this are dropped from the resume history.
    #[arg(long, env = "TRADECAST_HISTORY_TTL_SECS", default_value_t = 600)]
    pub history_ttl_secs: u64,
    /// Graceful drain window after SIGTERM.
    #[arg(long, env = "TRADECAST_DRAIN_MS", default_value_t = 10_000)]
    pub drain_ms: u64,
    /// Live profit/equity updates at most this often per position and account.
    #[arg(long, env = "TRADECAST_LIVE_INTERVAL_MS", default_value_t = 250)]
    pub live_interval_ms: u64,
    /// Exposure table at most this often while it changes.
    #[arg(long, env = "TRADECAST_EXPOSURE_INTERVAL_MS", default_value_t = 1000)]
    pub exposure_interval_ms: u64,
    /// Deals of at least this many lots raise a `large_deal` alert.
    #[arg(long, env = "TRADECAST_LARGE_DEAL_LOTS", default_value_t = 50.0)]
    pub large_deal_lots: f64,
    /// Simulator seed (`demo` only).
    #[arg(long, env = "TRADECAST_SEED", default_value_t = 7)]
    pub seed: u64,
}

impl ServeArgs {
    pub fn gateway_config(&self) -> anyhow::Result<GatewayConfig> {
        if self.heartbeat_ms < 100 {
            bail!("--heartbeat-ms must be at least 100");
        }
        let ib_plan = self
            .ib_plan
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
            })
            .collect::<Option<Vec<f64>>>()
            .filter(|plan| !plan.is_empty())
            .with_context(|| {
                format!(
                    "--ib-plan {:?}: expected amounts per lot like 5,1,0.5",
                    self.ib_plan
                )
            })?;
        Ok(GatewayConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            max_frame_bytes: self.max_frame_bytes,
            max_connections: self.max_connections,
            max_subscriptions: self.max_subscriptions,
            max_inbound_rate: self.max_inbound_rate,
            outbox: OutboxLimits {
                max_bytes: self.outbox_max_bytes,
            },
            retention: Retention {
                max_messages: self.history_size,
                max_age: Duration::from_secs(self.history_ttl_secs),
            },
            drain: Duration::from_millis(self.drain_ms),
            engine: EngineConfig {
                ib_plan,
                live_interval_ms: self.live_interval_ms,
                exposure_interval_ms: self.exposure_interval_ms,
                large_deal_lots: self.large_deal_lots,
            },
        })
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Login, IB id or staff id.
    #[arg(long)]
    pub sub: u64,
    /// client, ib or admin.
    #[arg(long)]
    pub role: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// HS256 secret.
    #[arg(long, env = "TRADECAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}
