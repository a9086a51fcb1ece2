//! The broker: where channel messages are sequenced, kept for resume, and fanned out.
//!
//! Every channel has a durable log (`epoch` + contiguous `seq` + bounded history), a
//! snapshot of its current state, and the last value of each retained ephemeral key.
//! Publishing appends to the log and delivers the same [`Bytes`] to the [`Outbox`]
//! of every local subscriber; subscribing registers an outbox and queues, in one
//! step, the `subscribed` reply, then either a replay or a snapshot, so nothing is
//! missed and nothing is doubled between the two.
//!
//! [`Broker`] is the seam between the gateway and where this state lives:
//! [`MemoryBroker`] keeps it in-process (the embedded default); a Redis broker keeps
//! it in Redis so several nodes share it.
//!
//! [`Bytes`]: bytes::Bytes

mod memory;
mod outbox;

pub use memory::{MemoryBroker, Retention};
pub use outbox::{CloseReason, Outbox, OutboxLimits};

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use tradecast_protocol::Channel;
use tradecast_protocol::client::Since;

/// Where a subscription started: the channel's log position when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub seq: u64,
    /// True when the missed messages were replayed; false when a snapshot was sent.
    pub recovered: bool,
}

/// The broker could not do what was asked (e.g. its backing store is unreachable).
#[derive(Debug, Clone, thiserror::Error)]
#[error("broker unavailable: {0}")]
pub struct BrokerError(pub String);

/// Channel logs, snapshots and fan-out, wherever they live.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Append a durable message to `channel`'s log, stamping the next `seq` into it
    /// (see [`tradecast_protocol::server::stamp_seq`]), replace the channel's snapshot
    /// with `snapshot` when given (in the same step, so the snapshot is consistent
    /// with the seq), and deliver it to every subscriber. Returns the seq.
    async fn publish_durable(
        &self,
        channel: &str,
        message: Bytes,
        snapshot: Option<Bytes>,
    ) -> Result<u64, BrokerError>;

    /// Deliver an ephemeral message; subscribers that have not written the previous
    /// value of (`channel`, `key`) yet get only the newest. With `retain`, it is kept
    /// as the key's last value and sent to new subscribers after the snapshot.
    async fn publish_ephemeral(
        &self,
        channel: &str,
        key: &str,
        message: Bytes,
        retain: bool,
    ) -> Result<(), BrokerError>;

    /// Replace `channel`'s snapshot without a new seq (live figures moved).
    async fn set_snapshot(&self, channel: &str, snapshot: Bytes) -> Result<(), BrokerError>;

    /// Register `outbox` on `channel` and queue into it, in order: the `subscribed`
    /// reply (echoing `reply_id`), then the durable messages after `since` when the
    /// log still holds them (`recovered: true`), otherwise the snapshot and retained
    /// values (`recovered: false`); live messages follow with no gap and no
    /// duplicate. Subscribing an outbox that is already registered resyncs it.
    async fn subscribe(
        &self,
        channel: &Channel,
        since: Option<&Since>,
        outbox: &Arc<Outbox>,
        reply_id: Option<&Value>,
    ) -> Result<Position, BrokerError>;

    /// Remove `outbox` from `channel`.
    async fn unsubscribe(&self, channel: &Channel, outbox: &Outbox);

    /// Can the broker serve subscriptions and publishes right now?
    fn is_ready(&self) -> bool;
}
