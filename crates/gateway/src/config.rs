//! Everything a gateway node is told at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use tradecast_broker::{OutboxLimits, RedisTarget, Retention};
use tradecast_core::EngineConfig;
use tradecast_ingest::StreamLayout;

use crate::origin::AllowedOrigins;

/// Settings of one gateway node (the `serve` flags, already parsed).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Public listener: WebSocket upgrades and the page.
    pub listen: SocketAddr,
    /// Private listener: health, readiness, metrics and `POST /v1/events`.
    pub admin_listen: SocketAddr,
    /// Application heartbeat; a connection silent for 3 intervals is closed (4008).
    pub heartbeat: Duration,
    /// Largest inbound frame; larger ones close the connection with 1009.
    pub max_frame_bytes: usize,
    /// Connections beyond this are refused with HTTP 503 before the upgrade.
    pub max_connections: usize,
    /// Connections one user (`role`, `sub`) may hold on this node; more are refused
    /// with HTTP 429 before the upgrade. 0: no limit.
    pub max_connections_per_user: usize,
    /// Browser pages (`Origin`) allowed to open a WebSocket; others get HTTP 403.
    pub allowed_origins: AllowedOrigins,
    /// Channels one connection may hold at once.
    pub max_subscriptions: usize,
    /// Inbound frames per second a connection may send (sustained); bursts of
    /// twice that are allowed. Past it the connection is closed with 4029.
    pub max_inbound_rate: u32,
    /// Per-connection outbound queue bound (slow-consumer policy).
    pub outbox: OutboxLimits,
    /// History kept per channel for resume.
    pub retention: Retention,
    /// Share channels through Redis and read the ingest streams (absent: the
    /// embedded in-process broker, fed by `POST /v1/events` and the demo).
    pub redis: Option<RedisSettings>,
    /// Upper bound of the graceful drain after SIGTERM.
    pub drain: Duration,
    /// Domain settings (IB plan, conflation intervals).
    pub engine: EngineConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: ([0, 0, 0, 0], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9100).into(),
            heartbeat: Duration::from_secs(30),
            max_frame_bytes: 64 << 10,
            max_connections: 18_000,
            max_connections_per_user: 32,
            allowed_origins: AllowedOrigins::SameHost,
            max_subscriptions: 64,
            max_inbound_rate: 50,
            outbox: OutboxLimits::default(),
            retention: Retention::default(),
            drain: Duration::from_secs(10),
            engine: EngineConfig::default(),
            redis: None,
        }
    }
}

/// How a node uses Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The server (`redis://host:port/db`) or the cluster's seed nodes.
    pub target: RedisTarget,
    /// The ingest streams.
    pub layout: StreamLayout,
    /// How often the ingest leader stores a checkpoint of the domain state.
    pub checkpoint_every: Duration,
    /// How long the ingest lease lives without renewal (takeover time after a
    /// leader dies).
    pub lease_ttl: Duration,
}
