//! The tradecast gateway node.
//!
//! Data flows through it in one direction:
//!
//! ```text
//!  POST /v1/events ─┐
//!  demo simulator ──┴─▶ pipeline (domain engine) ─▶ broker (logs, snapshots) ─▶ outboxes ─▶ sessions ─▶ WebSockets
//! ```
//!
//! With `--redis` the broker is Redis (shared by every node), `POST /v1/events`
//! appends to the ingest streams, and the node holding the ingest lease runs the
//! domain engine on the streams (`tradecast_ingest::leader`) instead of the pipeline.
//!
//! - [`auth`]: JWT verification before the upgrade.
//! - [`credentials`]: where a request carries its token.
//! - [`http`]: the public listener (upgrade on `/ws` and `/`, the page).
//! - [`origin`]: which browser pages may open a WebSocket (`--allowed-origins`).
//! - [`session`]: one connection's task: requests, writes, heartbeat, drain.
//! - `subscriptions`: a connection's channels, and its channel requests waiting
//!   for the broker without holding up the session.
//! - [`pipeline`]: applies ingest events in order and publishes their effects.
//! - [`admin`]: health, readiness, metrics, `POST /v1/events`.
//! - [`events_body`]: parsing a `POST /v1/events` body (an event or an array).
//! - [`demo`]: the built-in simulator feeding the pipeline.

pub mod admin;
pub mod auth;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod events_body;
pub mod http;
pub mod node;
pub mod origin;
pub mod pipeline;
pub mod rate;
pub mod session;
mod subscriptions;
mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tradecast_broker::{Broker, MemoryBroker, RedisBroker};
use tradecast_ingest::leader::{self, LeaderConfig};
use tradecast_ingest::writer::StreamWriter;

pub use auth::Authenticator;
pub use config::{GatewayConfig, RedisSettings};
pub use node::{DemoIdentity, Ingest, Node};
pub use origin::AllowedOrigins;
pub use pipeline::Pipeline;

/// A node with its listeners bound, ready to [`run`](Gateway::run).
pub struct Gateway {
    node: Arc<Node>,
    public: TcpListener,
    admin: TcpListener,
    /// The pipeline (embedded) or the stream reader (Redis).
    ingest_task: tokio::task::JoinHandle<()>,
    /// Tells the stream reader to checkpoint and hand its lease back.
    stop_ingest: tokio::sync::watch::Sender<bool>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl Gateway {
    /// Bind both listeners and start ingest: the pipeline on the embedded broker,
    /// or, with Redis, the Redis broker and the stream reader.
    pub async fn bind(
        mut config: GatewayConfig,
        auth: Authenticator,
        demo: Option<Vec<DemoIdentity>>,
    ) -> anyhow::Result<Gateway> {
        let metrics = telemetry::install();
        config.max_connections = telemetry::connection_cap(config.max_connections);
        let (stop_ingest, stop_rx) = tokio::sync::watch::channel(false);
        let (broker, ingest, ingest_task): (Arc<dyn Broker>, Ingest, _) = match &config.redis {
            None => {
                let memory = Arc::new(MemoryBroker::new(config.retention));
                memory.spawn_sweeper();
                let broker: Arc<dyn Broker> = memory;
                let (pipeline, task) = Pipeline::spawn(config.engine.clone(), broker.clone());
                (broker, Ingest::Local(pipeline), task)
            }
            Some(redis) => {
                let broker: Arc<dyn Broker> =
                    Arc::new(RedisBroker::connect(&redis.target, config.retention).await?);
                let writer = StreamWriter::connect_to(&redis.target, redis.layout.clone(), None)
                    .await
                    .context("connecting the ingest writer to Redis")?;
                let mut leader_config = LeaderConfig::new(
                    redis.target.clone(),
                    redis.layout.clone(),
                    config.engine.clone(),
                );
                leader_config.validate()?;
                leader_config.checkpoint_every = redis.checkpoint_every;
                leader_config.lease_ttl = redis.lease_ttl;
                let task = leader::spawn(leader_config, broker.clone(), stop_rx);
                let ingest = Ingest::Streams(tokio::sync::Mutex::new(writer));
                (broker, ingest, task)
            }
        };
        let public = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
        let node = Arc::new(Node::new(config, auth, broker, ingest, demo));
        Ok(Gateway {
            node,
            public,
            admin,
            ingest_task,
            stop_ingest,
            metrics,
        })
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serve until `shutdown` resolves, then drain: stop accepting, tell every
    /// client to reconnect (jittered), and close them within the drain window.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Gateway {
            node,
            public,
            admin,
            mut ingest_task,
            stop_ingest,
            metrics,
        } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let public_app = http::router(node.clone());
        let admin_app = admin::router(node.clone(), metrics);
        // Small frames go out at once: without TCP_NODELAY, Nagle holds a frame
        // until the client's delayed ACK (up to 40 ms after it last sent something).
        let public = axum::serve::ListenerExt::tap_io(public, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let public_server = tokio::spawn(
            axum::serve(public, public_app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        );
        let admin_server = tokio::spawn(
            axum::serve(admin, admin_app)
                .with_graceful_shutdown(stopped(stop_rx))
                .into_future(),
        );

        shutdown.await;
        tracing::info!(
            connections = node.connections(),
            window_ms = node.config.drain.as_millis() as u64,
            "draining"
        );
        node.start_drain();
        let _ = stop_tx.send(true);
        let deadline = tokio::time::Instant::now() + node.config.drain + Duration::from_secs(2);
        while node.connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(left = node.connections(), "drained");
        // The stream reader checkpoints and hands its lease back; the pipeline just stops.
        let _ = stop_ingest.send(true);
        let reader = matches!(node.ingest, Ingest::Streams(_));
        if !reader
            || tokio::time::timeout(Duration::from_secs(3), &mut ingest_task)
                .await
                .is_err()
        {
            ingest_task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), public_server).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_server).await;
        Ok(())
    }
}
