//! The state one gateway node shares between its connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tradecast_broker::Broker;
use tradecast_ingest::writer::StreamWriter;
use tradecast_protocol::Principal;

use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use crate::pipeline::Pipeline;

/// One-click identities offered by the demo page (`GET /demo/identities`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoIdentity {
    pub label: String,
    pub role: &'static str,
    pub sub: u64,
    pub token: String,
}

/// Where `POST /v1/events` sends events.
pub enum Ingest {
    /// This node applies them (embedded broker).
    Local(Pipeline),
    /// They are written to the Redis streams, where the ingest leader (whichever
    /// node holds the lease) applies them like any plugin's entries.
    Streams(tokio::sync::Mutex<StreamWriter>),
}

/// Metric handles resolved once, for the per-write hot path.
pub struct HotCounters {
    pub bytes_out: metrics::Counter,
    pub frames_out: metrics::Counter,
}

/// Shared by every connection and HTTP handler of the node.
pub struct Node {
    pub config: GatewayConfig,
    pub auth: Authenticator,
    pub broker: Arc<dyn Broker>,
    pub ingest: Ingest,
    pub demo: Option<Vec<DemoIdentity>>,
    /// Counters touched once per write, registered once.
    pub counters: HotCounters,
    connections: AtomicUsize,
    /// Open connections per user (`role`, `sub`); a user without one has no entry.
    per_user: Mutex<HashMap<Principal, usize>>,
    next_id: AtomicU64,
    drain: watch::Sender<bool>,
}

/// Why [`Node::admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node is shutting down (HTTP 503).
    Draining,
    /// The node holds `max_connections` (HTTP 503: try another node).
    Full,
    /// This user holds `max_connections_per_user` here (HTTP 429).
    UserLimit,
}

impl Refused {
    /// The `reason` label of `tradecast_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Draining => "draining",
            Refused::Full => "full",
            Refused::UserLimit => "user_limit",
        }
    }
}

impl Node {
    pub fn new(
        config: GatewayConfig,
        auth: Authenticator,
        broker: Arc<dyn Broker>,
        ingest: Ingest,
        demo: Option<Vec<DemoIdentity>>,
    ) -> Node {
        Node {
            config,
            auth,
            broker,
            ingest,
            demo,
            counters: HotCounters {
                bytes_out: metrics::counter!("tradecast_bytes_out_total"),
                frames_out: metrics::counter!("tradecast_frames_out_total"),
            },
            connections: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            drain: watch::channel(false).0,
        }
    }

    /// Count a new connection of `principal`, or say why it may not open.
    pub fn admit(self: &Arc<Self>, principal: Principal) -> Result<ConnectionGuard, Refused> {
        if self.is_draining() {
            return Err(Refused::Draining);
        }
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.config.max_connections).then_some(n + 1)
            })
            .map_err(|_| Refused::Full)?;
        {
            let limit = self.config.max_connections_per_user;
            let mut per_user = self.per_user.lock();
            let held = per_user.entry(principal).or_insert(0);
            if limit != 0 && *held >= limit {
                drop(per_user);
                self.connections.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::UserLimit);
            }
            *held += 1;
        }
        metrics::gauge!("tradecast_connections").increment(1.0);
        metrics::counter!("tradecast_connections_total").increment(1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionGuard {
            node: self.clone(),
            principal,
            id,
        })
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Start the graceful drain: every connection is told to reconnect.
    pub fn start_drain(&self) {
        self.drain.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.drain.borrow()
    }

    /// A receiver that changes when the drain starts.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.drain.subscribe()
    }

    /// How long one connection waits before it is closed during a drain: spread
    /// over the first 80 % of the drain window so clients do not reconnect at once.
    pub fn drain_delay(&self) -> Duration {
        self.config.drain.mul_f64(0.8 * fastrand::f64())
    }
}

/// Holds a connection slot (of the node and of its user); releases both when dropped.
pub struct ConnectionGuard {
    node: Arc<Node>,
    principal: Principal,
    id: u64,
}

impl ConnectionGuard {
    /// Process-unique connection id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        {
            let mut per_user = self.node.per_user.lock();
            if let Some(held) = per_user.get_mut(&self.principal) {
                *held -= 1;
                if *held == 0 {
                    per_user.remove(&self.principal);
                }
            }
        }
        self.node.connections.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("tradecast_connections").decrement(1.0);
    }
}
