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
mod redis_broker;

pub use memory::{MemoryBroker, Retention};
pub use outbox::{CloseReason, Outbox, OutboxLimits};
pub use redis_broker::RedisBroker;
pub use redis_broker::conn::{RedisConn, RedisTarget};

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use tradecast_protocol::Channel;
use tradecast_protocol::client::Since;

/// One thing to publish (see [`Broker::publish`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Publish {
    /// A state change: gets the channel's next `seq`, is kept for resume, and
    /// replaces the channel's snapshot with `snapshot` when given, in one step.
    Durable {
        channel: String,
        message: Bytes,
        snapshot: Option<Bytes>,
        /// Strictly increasing per producer (the ingest leader numbers the effects
        /// of each event); `None` for messages that need no replay protection.
        origin: Option<u64>,
    },
    /// A live figure: latest value wins per (`channel`, `key`); with `retain` it is
    /// also kept and sent to new subscribers after the snapshot.
    Ephemeral {
        channel: String,
        key: String,
        message: Bytes,
        retain: bool,
    },
    /// Replace the channel's snapshot without a new seq (live figures moved).
    Snapshot { channel: String, message: Bytes },
    /// Put back a snapshot the store lost (Redis restarted empty) and make every
    /// node resync its subscribers of the channel from it.
    Restore { channel: String, message: Bytes },
}

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
    /// Publish `batch` in order: append each durable message to its channel's log
    /// (stamping the next `seq` into it, see [`tradecast_protocol::server::stamp_seq`])
    /// together with its snapshot, deliver ephemeral messages, and replace snapshots.
    /// Returns once the whole batch is durable in the broker's store.
    ///
    /// A durable message with an `origin` is appended at most once: a channel
    /// remembers the highest origin it has taken and skips any message whose origin
    /// is not higher, which is what makes replaying an ingest batch after a crash
    /// produce no second message.
    async fn publish(&self, batch: Vec<Publish>) -> Result<(), BrokerError>;

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

/// The conflation key of an ephemeral message, computed once per publish.
pub(crate) fn conflation_key(channel: &str, key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (channel, key).hash(&mut hasher);
    hasher.finish()
}

/// Count `copies` deliveries of `message` by its `type` (read from its first
/// field: the domain core always writes `{"type":"…"` first; "other" otherwise).
pub(crate) fn count_out(message: &[u8], copies: usize) {
    if copies == 0 {
        return;
    }
    let kind = message
        .strip_prefix(br#"{"type":""#)
        .and_then(|rest| rest.iter().position(|b| *b == b'"').map(|end| &rest[..end]))
        .and_then(|kind| std::str::from_utf8(kind).ok())
        .unwrap_or("other");
    metrics::counter!("tradecast_messages_out_total", "type" => kind.to_owned())
        .increment(copies as u64);
}
