//! Command-line flags (each also read from `TRADECAST_<FLAG>`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tradecast_broker::RedisTarget;
use tradecast_broker::{OutboxLimits, Retention};
use tradecast_core::EngineConfig;
use tradecast_gateway::{AllowedOrigins, GatewayConfig, RedisSettings};
use tradecast_ingest::StreamLayout;

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
    /// Write ingest events from a file or stdin into the Redis streams, as a
    /// trade-server plugin would.
    #[command(long_about = PUBLISH_ABOUT)]
    Publish(PublishArgs),
    /// Run the built-in trade simulator against Redis: it writes ticks and trade
    /// events into the streams at a steady rate, as an MT5 plugin would.
    Simulate(SimulateArgs),
}

const PUBLISH_ABOUT: &str = "\
Write ingest events from a file or stdin into the Redis streams, as a trade-server
plugin would.

The input is JSON lines (one event object per line; blank lines are skipped) or a
single JSON array of event objects. Each event is validated as the gateway would
validate it and goes to its stream: ticks to --ticks-stream, everything else to
--events-stream (or its partition login mod --partitions). Events are written in
order, in pipelined batches of at most 500.

A bad line (not JSON, or not a valid event) stops the run with an error naming its
line number and the reason: the events before it are published, the bad one and
nothing after it is written.";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Public listener: WebSocket upgrades (on /ws and /) and the page.
    #[arg(long, env = "TRADECAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Private listener: /healthz, /readyz, /metrics, POST /v1/events.
    #[arg(long, env = "TRADECAST_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    pub admin_listen: SocketAddr,
    /// Redis URL for the shared broker and stream ingest (absent: embedded broker).
    /// With --redis-cluster: the seed nodes, comma-separated.
    #[arg(long, env = "TRADECAST_REDIS")]
    pub redis: Option<String>,
    /// --redis is a Redis Cluster: sharded pub/sub, per-slot pipelines. The ingest
    /// streams must then share a hash tag, e.g. `{tc}:events` and `{tc}:ticks`.
    #[arg(long, env = "TRADECAST_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// HS256 secret for client tokens (`tradecast demo` has a built-in default).
    #[arg(long, env = "TRADECAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM file with an RSA or EC public key: accept RS256 or ES256 tokens.
    #[arg(long, env = "TRADECAST_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Heartbeat interval; a connection silent for 3 intervals is closed (4008).
    #[arg(long, env = "TRADECAST_HEARTBEAT_MS", default_value_t = 30_000)]
    pub heartbeat_ms: u64,
    /// Trade-event stream (with --redis); with --partitions N, the prefix of the N
    /// partition streams (see docs/events.md).
    #[arg(long, env = "TRADECAST_EVENTS_STREAM", default_value = "tc:events")]
    pub events_stream: String,
    /// Tick stream (with --redis).
    #[arg(long, env = "TRADECAST_TICKS_STREAM", default_value = "tc:ticks")]
    pub ticks_stream: String,
    /// Trade events are split over N streams `<events-stream>:{login mod N}`
    /// (0: one stream). Must match the producers' setting.
    #[arg(long, env = "TRADECAST_PARTITIONS", default_value_t = 0)]
    pub partitions: u32,
    /// How often the ingest leader checkpoints the domain state into Redis (with --redis).
    #[arg(long, env = "TRADECAST_CHECKPOINT_MS", default_value_t = 5_000)]
    pub checkpoint_ms: u64,
    /// Ingest lease lifetime: a dead leader is replaced within this time (with --redis).
    #[arg(long, env = "TRADECAST_LEASE_MS", default_value_t = 3_000)]
    pub lease_ms: u64,
    /// IB commission per lot by level: direct IB, its parent, …; the last value
    /// repeats for every higher level.
    #[arg(long, env = "TRADECAST_IB_PLAN", default_value = "5,1,0.5")]
    pub ib_plan: String,
    /// Connection cap (HTTP 503 beyond it); never closer than 512 to the open-file limit.
    #[arg(long, env = "TRADECAST_MAX_CONNECTIONS", default_value_t = 18_000)]
    pub max_connections: usize,
    /// Connections one user (role and sub) may hold on this node (HTTP 429 beyond); 0: no limit.
    #[arg(long, env = "TRADECAST_MAX_CONNECTIONS_PER_USER", default_value_t = 32)]
    pub max_connections_per_user: usize,
    /// Browser pages that may open a WebSocket (HTTP 403 for others): `*`, or origins
    /// like https://app.broker.com separated by commas. Absent: a page whose host:port
    /// is the request's Host. Clients that send no Origin (not browsers) are let through.
    #[arg(long, env = "TRADECAST_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
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
            max_connections_per_user: self.max_connections_per_user,
            allowed_origins: match &self.allowed_origins {
                Some(spec) => AllowedOrigins::parse(spec)?,
                None => AllowedOrigins::SameHost,
            },
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
            redis: self.redis.as_ref().map(|url| RedisSettings {
                target: RedisTarget::new(url, self.redis_cluster),
                layout: StreamLayout {
                    events: self.events_stream.clone(),
                    ticks: self.ticks_stream.clone(),
                    partitions: self.partitions,
                },
                checkpoint_every: Duration::from_millis(self.checkpoint_ms.max(100)),
                lease_ttl: Duration::from_millis(self.lease_ms.max(300)),
            }),
        })
    }
}

/// Where `publish` and `simulate` write: the Redis server and the stream layout.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379/0 (with --redis-cluster: the seed
    /// nodes, comma-separated).
    #[arg(long, env = "TRADECAST_REDIS")]
    pub redis: String,
    /// --redis is a Redis Cluster (the streams must then share a hash tag).
    #[arg(long, env = "TRADECAST_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Trade-event stream; with --partitions N, the prefix of the N partition streams.
    #[arg(long, env = "TRADECAST_EVENTS_STREAM", default_value = "tc:events")]
    pub events_stream: String,
    /// Tick stream.
    #[arg(long, env = "TRADECAST_TICKS_STREAM", default_value = "tc:ticks")]
    pub ticks_stream: String,
    /// Split trade events over N streams `<events-stream>:{login mod N}` (0: one stream).
    #[arg(long, env = "TRADECAST_PARTITIONS", default_value_t = 0)]
    pub partitions: u32,
    /// Trim each stream to about this many entries on every write (XADD MAXLEN ~).
    #[arg(long, env = "TRADECAST_MAXLEN")]
    pub maxlen: Option<usize>,
}

impl StreamArgs {
    pub fn target(&self) -> RedisTarget {
        RedisTarget::new(&self.redis, self.redis_cluster)
    }

    pub fn layout(&self) -> StreamLayout {
        StreamLayout {
            events: self.events_stream.clone(),
            ticks: self.ticks_stream.clone(),
            partitions: self.partitions,
        }
    }
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub streams: StreamArgs,
    /// JSON lines or a JSON array of events (absent or `-`: stdin).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub streams: StreamArgs,
    /// Events per second written in total, ticks included (about 70 % are ticks).
    #[arg(long, env = "TRADECAST_RATE")]
    pub rate: f64,
    /// Stop after this many seconds, counted from the bootstrap (absent: run until Ctrl-C).
    #[arg(long, env = "TRADECAST_DURATION_S")]
    pub duration_s: Option<f64>,
    /// Simulator seed: the same seed replays the same broker.
    #[arg(long, env = "TRADECAST_SEED", default_value_t = 7)]
    pub seed: u64,
    /// Trader accounts at start (the client base grows up to 4 times this).
    #[arg(long, env = "TRADECAST_TRADERS", default_value_t = 1000)]
    pub traders: usize,
    /// Symbols quoted, 1 to 30: USD majors, gold, crosses, silver.
    #[arg(long, env = "TRADECAST_SYMBOLS", default_value_t = 30)]
    pub symbols: usize,
    /// Levels of the IB tree above the deepest client, 1 to 5.
    #[arg(long, env = "TRADECAST_IB_DEPTH", default_value_t = 5)]
    pub ib_depth: usize,
    /// Trade-server id written into every event's `src`.
    #[arg(long, env = "TRADECAST_SRC", default_value = "sim-01")]
    pub src: String,
}

impl SimulateArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            bail!("--rate must be a positive number of events per second");
        }
        if let Some(duration) = self.duration_s
            && !(duration.is_finite() && duration > 0.0)
        {
            bail!("--duration-s must be a positive number of seconds");
        }
        if !(1..=30).contains(&self.symbols) {
            bail!("--symbols must be between 1 and 30");
        }
        if !(1..=5).contains(&self.ib_depth) {
            bail!("--ib-depth must be between 1 and 5");
        }
        if self.traders == 0 {
            bail!("--traders must be at least 1");
        }
        if self.src.is_empty() {
            bail!("--src must not be empty");
        }
        Ok(())
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
