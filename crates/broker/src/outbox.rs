//! A connection's bounded outbound queue.
//!
//! Publishers push frames from any task; the connection's own task drains the whole
//! queue at once and writes it with a single flush, so a burst costs one syscall, not
//! one per frame. Durable frames are kept in order. An ephemeral frame replaces the
//! previous, not yet written, frame of the same key (the old slot becomes a tombstone
//! and the new one goes to the back, so it never overtakes a durable message that was
//! published before it). When the queued bytes would pass the limit the outbox closes
//! itself with [`CloseReason::SlowConsumer`]: the client reconnects and resumes with
//! `since`, so no durable message is ever dropped silently.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Queue slots kept allocated between bursts; more are given back after a drain.
const SHRINK_ABOVE: usize = 64;

/// How much a connection may have queued but not yet written.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Queued bytes above which the connection is closed as a slow consumer.
    pub max_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits { max_bytes: 4 << 20 }
    }
}

/// Why an outbox stopped accepting frames; the connection closes with its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client did not read fast enough (close code 4009: reconnect and resume).
    SlowConsumer,
    /// The connection is going away on its own (client left, drain, error).
    Gone,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Replaced an unwritten frame of the same key.
    Conflated,
    /// The outbox is closed; the caller should forget it.
    Closed,
}

/// The queue of one connection. Shared (`Arc`) between the connection task and the
/// channels it is subscribed to.
#[derive(Debug)]
pub struct Outbox {
    id: u64,
    limits: OutboxLimits,
    queue: Mutex<Queue>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    /// `None` is a tombstone left by conflation.
    frames: VecDeque<Option<Bytes>>,
    /// Absolute index of `frames[0]`.
    head: u64,
    /// Ephemeral key → absolute index of its queued frame.
    latest: HashMap<u64, u64>,
    tombstones: usize,
    bytes: usize,
    closed: Option<CloseReason>,
}

impl Outbox {
    pub fn new(id: u64, limits: OutboxLimits) -> Outbox {
        Outbox {
            id,
            limits,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
        }
    }

    /// A process-unique id, used by channels to index their subscribers.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queue a durable (or control) frame, kept in order and never conflated.
    pub fn push(&self, frame: Bytes) -> Push {
        self.push_keyed(None, frame)
    }

    /// Queue an ephemeral frame: an unwritten frame with the same `key` is replaced.
    pub fn push_latest(&self, key: u64, frame: Bytes) -> Push {
        self.push_keyed(Some(key), frame)
    }

    fn push_keyed(&self, key: Option<u64>, frame: Bytes) -> Push {
        let mut q = self.queue.lock();
        if q.closed.is_some() {
            return Push::Closed;
        }
        let mut outcome = Push::Queued;
        if let Some(old) = key.and_then(|key| q.latest.get(&key).copied()) {
            let slot = (old - q.head) as usize;
            if let Some(old_frame) = q.frames[slot].take() {
                q.bytes -= old_frame.len();
                q.tombstones += 1;
                outcome = Push::Conflated;
            }
        }
        if q.bytes + frame.len() > self.limits.max_bytes {
            drop(q);
            self.close(CloseReason::SlowConsumer);
            return Push::Closed;
        }
        let was_empty = q.frames.is_empty();
        q.bytes += frame.len();
        let index = q.head + q.frames.len() as u64;
        q.frames.push_back(Some(frame));
        if let Some(key) = key {
            q.latest.insert(key, index);
        }
        if q.tombstones > 64 && q.tombstones * 2 > q.frames.len() {
            q.compact();
        }
        drop(q);
        if was_empty {
            self.ready.notify_one();
        }
        outcome
    }

    /// Move every queued frame into `out`, in order. Returns the close reason once
    /// the outbox has been closed (frames queued before the close are still handed out).
    pub fn drain(&self, out: &mut Vec<Bytes>) -> Option<CloseReason> {
        let mut q = self.queue.lock();
        let head = q.head + q.frames.len() as u64;
        out.extend(q.frames.drain(..).flatten());
        q.head = head;
        // An idle connection should not keep the memory of its largest burst.
        if q.frames.capacity() > SHRINK_ABOVE {
            q.frames.shrink_to(0);
            q.latest.shrink_to(0);
        }
        q.latest.clear();
        q.tombstones = 0;
        q.bytes = 0;
        q.closed
    }

    /// Wait until something is queued (or the outbox closes).
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Stop accepting frames; the connection task wakes up and closes the socket.
    pub fn close(&self, reason: CloseReason) {
        let mut q = self.queue.lock();
        if q.closed.is_none() {
            q.closed = Some(reason);
            if reason == CloseReason::SlowConsumer {
                metrics::counter!("tradecast_slow_consumer_closes_total").increment(1);
            }
        }
        drop(q);
        self.ready.notify_one();
    }

    pub fn closed(&self) -> Option<CloseReason> {
        self.queue.lock().closed
    }
}

impl Queue {
    /// Drop tombstones and re-index the ephemeral keys.
    fn compact(&mut self) {
        let mut positions: HashMap<usize, u64> = self
            .latest
            .iter()
            .map(|(key, index)| ((index - self.head) as usize, *key))
            .collect();
        let mut kept = VecDeque::with_capacity(self.frames.len() - self.tombstones);
        self.latest.clear();
        for (slot, frame) in self.frames.drain(..).enumerate() {
            if let Some(frame) = frame {
                if let Some(key) = positions.remove(&slot) {
                    self.latest.insert(key, self.head + kept.len() as u64);
                }
                kept.push_back(Some(frame));
            }
        }
        self.frames = kept;
        self.tombstones = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(outbox: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        outbox.drain(&mut out);
        out.iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn conflation_keeps_latest_after_earlier_durables() {
        let outbox = Outbox::new(1, OutboxLimits::default());
        outbox.push_latest(7, Bytes::from("equity=100"));
        outbox.push(Bytes::from("deposit"));
        assert_eq!(
            outbox.push_latest(7, Bytes::from("equity=201")),
            Push::Conflated
        );
        outbox.push_latest(8, Bytes::from("other"));
        assert_eq!(drained(&outbox), ["deposit", "equity=201", "other"]);
        assert!(drained(&outbox).is_empty());
        outbox.push_latest(7, Bytes::from("again"));
        assert_eq!(
            drained(&outbox),
            ["again"],
            "keys are forgotten once written"
        );
    }

    #[test]
    fn compaction_keeps_order_and_keys() {
        let outbox = Outbox::new(1, OutboxLimits::default());
        for i in 0..1000 {
            outbox.push_latest(i % 3, Bytes::from(format!("k{}-{i}", i % 3)));
            if i % 100 == 0 {
                outbox.push(Bytes::from(format!("d{i}")));
            }
        }
        let q = outbox.queue.lock();
        assert!(
            q.frames.len() < 200,
            "tombstones are compacted, {} slots",
            q.frames.len()
        );
        drop(q);
        let out = drained(&outbox);
        assert_eq!(&out[out.len() - 3..], ["k1-997", "k2-998", "k0-999"]);
        assert_eq!(out.iter().filter(|f| f.starts_with('d')).count(), 10);
    }

    #[test]
    fn overflow_closes_as_slow_consumer() {
        let outbox = Outbox::new(1, OutboxLimits { max_bytes: 10 });
        assert_eq!(outbox.push(Bytes::from("123456")), Push::Queued);
        assert_eq!(outbox.push(Bytes::from("123456")), Push::Closed);
        assert_eq!(outbox.closed(), Some(CloseReason::SlowConsumer));
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out), Some(CloseReason::SlowConsumer));
        assert_eq!(
            out.len(),
            1,
            "what was queued before the close is still written"
        );
    }
}
