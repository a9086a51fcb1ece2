//! The tradecast gateway node.
//!
//! Data flows through it in one direction:
//!
//! ```text
//!  POST /v1/events ─┐
//!  demo simulator ──┼─▶ pipeline (domain engine) ─▶ broker (logs, snapshots) ─▶ outboxes ─▶ sessions ─▶ WebSockets
//!  Redis streams ───┘
//! ```
//!
//! - [`auth`]: JWT verification before the upgrade.
//! - [`http`]: the public listener (upgrade on `/ws` and `/`, the page).
//! - [`session`]: one connection's task: requests, writes, heartbeat, drain.
//! - [`pipeline`]: applies ingest events in order and publishes their effects.
//! - [`admin`]: health, readiness, metrics, `POST /v1/events`.
//! - [`demo`]: the built-in simulator feeding the pipeline.

pub mod admin;
pub mod auth;
pub mod config;
pub mod demo;
pub mod http;
pub mod node;
pub mod pipeline;
pub mod rate;
pub mod session;
mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tradecast_broker::{Broker, MemoryBroker};

pub use auth::Authenticator;
pub use config::GatewayConfig;
pub use node::{DemoIdentity, Node};
pub use pipeline::Pipeline;

/// A node with its listeners bound, ready to [`run`](Gateway::run).
pub struct Gateway {
    node: Arc<Node>,
    public: TcpListener,
    admin: TcpListener,
    pipeline_task: tokio::task::JoinHandle<()>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl Gateway {
    /// Bind both listeners and start the ingest pipeline on the embedded broker.
    pub async fn bind(
        mut config: GatewayConfig,
        auth: Authenticator,
        demo: Option<Vec<DemoIdentity>>,
    ) -> anyhow::Result<Gateway> {
        let metrics = telemetry::install();
        config.max_connections = telemetry::connection_cap(config.max_connections);
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(config.retention));
        let (pipeline, pipeline_task) = Pipeline::spawn(config.engine.clone(), broker.clone());
        let public = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
        let node = Arc::new(Node::new(config, auth, broker, pipeline, demo));
        Ok(Gateway {
            node,
            public,
            admin,
            pipeline_task,
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
            pipeline_task,
            metrics,
        } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let public_app = http::router(node.clone());
        let admin_app = admin::router(node.clone(), metrics);
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
        pipeline_task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(1), public_server).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_server).await;
        Ok(())
    }
}
