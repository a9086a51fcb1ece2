//! The embedded broker: channel logs in process memory.
//!
//! Each channel is one mutex-protected [`ChannelLog`]: its seq, bounded history,
//! snapshot, retained values and local subscribers. Publish and subscribe both take
//! that lock, which is what makes a subscription race-free: the `subscribed` reply
//! and the snapshot or replay are queued before any later message can be.
//! The epoch is drawn at start-up, so a restarted process (whose logs are gone)
//! never claims to continue an old log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tradecast_protocol::client::Since;
use tradecast_protocol::{Channel, server};

use crate::outbox::{Outbox, Push};
use crate::{Broker, BrokerError, Position, Publish, conflation_key, count_out};

/// How much history each channel keeps for resume.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// At most this many durable messages per channel.
    pub max_messages: usize,
    /// Messages older than this are dropped.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_messages: 1000,
            max_age: Duration::from_secs(600),
        }
    }
}

/// How often [`MemoryBroker::spawn_sweeper`] drops expired history.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// What the channel logs hold after a [`sweep`](MemoryBroker::sweep).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub channels: usize,
    /// Durable messages kept for resume, and their bytes.
    pub history_messages: usize,
    pub history_bytes: usize,
}

/// Channel logs held in this process.
pub struct MemoryBroker {
    epoch: String,
    retention: Retention,
    channels: RwLock<HashMap<String, Arc<Mutex<ChannelLog>>>>,
}

#[derive(Default)]
struct ChannelLog {
    seq: u64,
    /// (seq, appended at, stamped message), oldest first.
    history: VecDeque<(u64, Instant, Bytes)>,
    snapshot: Option<Bytes>,
    /// Retained ephemeral values by key, replayed after the snapshot.
    retained: BTreeMap<String, Bytes>,
    subscribers: HashMap<u64, Arc<Outbox>>,
}

impl ChannelLog {
    fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.seq == 0
            && self.snapshot.is_none()
            && self.retained.is_empty()
    }

    fn trim(&mut self, retention: &Retention, now: Instant) {
        while let Some((_, at, _)) = self.history.front() {
            let too_many = self.history.len() > retention.max_messages;
            if too_many || now.duration_since(*at) > retention.max_age {
                self.history.pop_front();
            } else {
                break;
            }
        }
        if self.history.is_empty() && self.history.capacity() > 0 {
            // A quiet channel gives its ring buffer back too.
            self.history = VecDeque::new();
        }
    }

    /// Can every durable message after `since` be replayed from history?
    fn can_replay(&self, epoch: &str, since: &Since) -> bool {
        if since.epoch != epoch || since.seq > self.seq {
            return false;
        }
        match self.history.front() {
            _ if since.seq == self.seq => true,
            Some((first, _, _)) => *first <= since.seq + 1,
            None => false,
        }
    }

    /// Deliver to every subscriber, forgetting the ones whose outbox closed.
    fn fan_out(&mut self, message: &[u8], push: impl Fn(&Outbox) -> Push) {
        if self.subscribers.is_empty() {
            return;
        }
        count_out(message, self.subscribers.len());
        let mut closed = Vec::new();
        for (id, outbox) in &self.subscribers {
            match push(outbox) {
                Push::Queued => {}
                Push::Conflated => {
                    metrics::counter!("tradecast_outbox_conflated_total").increment(1)
                }
                Push::Closed => closed.push(*id),
            }
        }
        for id in closed {
            self.subscribers.remove(&id);
        }
    }
}

impl MemoryBroker {
    pub fn new(retention: Retention) -> MemoryBroker {
        MemoryBroker {
            epoch: format!("{:016x}", fastrand::u64(..)),
            retention,
            channels: RwLock::new(HashMap::new()),
        }
    }

    /// This process's log epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Append a durable message, stamping the next seq; returns the seq.
    pub fn publish_durable(&self, channel: &str, message: Bytes, snapshot: Option<Bytes>) -> u64 {
        let log = self.log(channel);
        let mut log = log.lock();
        log.seq += 1;
        let seq = log.seq;
        let stamped = server::stamp_seq(&message, seq);
        let now = Instant::now();
        log.history.push_back((seq, now, stamped.clone()));
        log.trim(&self.retention, now);
        if let Some(snapshot) = snapshot {
            log.snapshot = Some(snapshot);
        }
        log.fan_out(&message, |outbox| outbox.push(stamped.clone()));
        seq
    }

    /// Deliver an ephemeral message (kept as the key's last value with `retain`).
    pub fn publish_ephemeral(&self, channel: &str, key: &str, message: Bytes, retain: bool) {
        let conflation = conflation_key(channel, key);
        // A value nobody listens to and nobody keeps needs no channel entry.
        let existing = self.channels.read().get(channel).cloned();
        let Some(log) = existing.or_else(|| retain.then(|| self.log(channel))) else {
            return;
        };
        let mut log = log.lock();
        if retain {
            log.retained.insert(key.to_owned(), message.clone());
        }
        log.fan_out(&message, |outbox| {
            outbox.push_latest(conflation, message.clone())
        });
    }

    /// Drop the history that has outlived `max_age` on every channel, and count what
    /// is left. Publishing trims only the channel it appends to, so without this a
    /// channel that goes quiet keeps its last messages for as long as it stays quiet:
    /// with many accounts that trade now and then, that is most channels, and the
    /// history would grow with every account that ever traded instead of with the
    /// message rate times `max_age` (the soak measured it).
    pub fn sweep(&self, now: Instant) -> Held {
        let logs: Vec<_> = self.channels.read().values().cloned().collect();
        let mut held = Held {
            channels: logs.len(),
            ..Held::default()
        };
        for log in logs {
            let mut log = log.lock();
            log.trim(&self.retention, now);
            held.history_messages += log.history.len();
            held.history_bytes += log.history.iter().map(|(_, _, m)| m.len()).sum::<usize>();
        }
        held
    }

    /// Sweep every few seconds for as long as the broker lives, reporting what the
    /// logs hold as the `tradecast_channels`, `tradecast_history_messages` and
    /// `tradecast_history_bytes` gauges.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let broker: Weak<MemoryBroker> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                let held = broker.sweep(Instant::now());
                metrics::gauge!("tradecast_channels").set(held.channels as f64);
                metrics::gauge!("tradecast_history_messages").set(held.history_messages as f64);
                metrics::gauge!("tradecast_history_bytes").set(held.history_bytes as f64);
            }
        })
    }

    /// Replace the channel's snapshot.
    pub fn set_snapshot(&self, channel: &str, snapshot: Bytes) {
        self.log(channel).lock().snapshot = Some(snapshot);
    }

    fn log(&self, channel: &str) -> Arc<Mutex<ChannelLog>> {
        if let Some(log) = self.channels.read().get(channel) {
            return log.clone();
        }
        self.channels
            .write()
            .entry(channel.to_owned())
            .or_default()
            .clone()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, batch: Vec<Publish>) -> Result<(), BrokerError> {
        // One process, one producer: origins need no checking here.
        for item in batch {
            match item {
                Publish::Durable {
                    channel,
                    message,
                    snapshot,
                    ..
                } => {
                    self.publish_durable(&channel, message, snapshot);
                }
                Publish::Ephemeral {
                    channel,
                    key,
                    message,
                    retain,
                } => self.publish_ephemeral(&channel, &key, message, retain),
                Publish::Snapshot { channel, message } | Publish::Restore { channel, message } => {
                    self.set_snapshot(&channel, message)
                }
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        since: Option<&Since>,
        outbox: &Arc<Outbox>,
        reply_id: Option<&Value>,
    ) -> Result<Position, BrokerError> {
        let name = channel.to_string();
        let log = self.log(&name);
        let mut log = log.lock();
        let now = Instant::now();
        log.trim(&self.retention, now);
        let recovered =
            channel.is_durable() && since.is_some_and(|since| log.can_replay(&self.epoch, since));
        outbox.push(server::subscribed(
            reply_id,
            &name,
            &self.epoch,
            log.seq,
            recovered,
        ));
        if recovered {
            let after = since.map_or(0, |s| s.seq);
            for (_, _, message) in log.history.iter().filter(|(seq, _, _)| *seq > after) {
                outbox.push(message.clone());
            }
        } else {
            match &log.snapshot {
                Some(snapshot) => outbox.push(snapshot.clone()),
                None => match channel.empty_snapshot() {
                    Some(empty) => outbox.push(Bytes::from(empty)),
                    None => Push::Queued,
                },
            };
        }
        for (key, value) in &log.retained {
            outbox.push_latest(conflation_key(&name, key), value.clone());
        }
        log.subscribers.insert(outbox.id(), outbox.clone());
        Ok(Position {
            epoch: self.epoch.clone(),
            seq: log.seq,
            recovered,
        })
    }

    async fn unsubscribe(&self, channel: &Channel, outbox: &Outbox) {
        let name = channel.to_string();
        let Some(log) = self.channels.read().get(&name).cloned() else {
            return;
        };
        let idle = {
            let mut log = log.lock();
            log.subscribers.remove(&outbox.id());
            log.is_idle()
        };
        if idle {
            let mut channels = self.channels.write();
            if channels.get(&name).is_some_and(|log| log.lock().is_idle()) {
                channels.remove(&name);
            }
        }
    }

    fn is_ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutboxLimits;

    fn frames(outbox: &Outbox) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        outbox.drain(&mut out);
        out.iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    }

    fn msg(n: u64) -> Bytes {
        Bytes::from(format!(r#"{{"type":"alert","channel":"alerts","n":{n}}}"#))
    }

    #[tokio::test]
    async fn resume_replays_exactly_the_missed_messages() {
        let broker = MemoryBroker::new(Retention::default());
        for n in 1..=5 {
            broker.publish_durable("alerts", msg(n), None);
        }
        let outbox = Arc::new(Outbox::new(1, OutboxLimits::default()));
        let since = Since {
            epoch: broker.epoch().into(),
            seq: 3,
        };
        let pos = broker
            .subscribe(&Channel::Alerts, Some(&since), &outbox, None)
            .await
            .unwrap();
        assert_eq!((pos.seq, pos.recovered), (5, true));
        broker.publish_durable("alerts", msg(6), None);
        let got = frames(&outbox);
        assert_eq!(got[0]["type"], "subscribed");
        let seqs: Vec<u64> = got[1..]
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [4, 5, 6]);
    }

    #[tokio::test]
    async fn stale_resume_gets_a_snapshot() {
        let broker = MemoryBroker::new(Retention {
            max_messages: 2,
            max_age: Duration::from_secs(60),
        });
        for n in 1..=5 {
            let snap = Bytes::from(format!(
                r#"{{"type":"alerts_full","channel":"alerts","n":{n}}}"#
            ));
            broker.publish_durable("alerts", msg(n), Some(snap));
        }
        let outbox = Arc::new(Outbox::new(1, OutboxLimits::default()));
        for since in [
            Since {
                epoch: broker.epoch().into(),
                seq: 1,
            },
            Since {
                epoch: "old".into(),
                seq: 4,
            },
        ] {
            let pos = broker
                .subscribe(&Channel::Alerts, Some(&since), &outbox, None)
                .await
                .unwrap();
            assert!(!pos.recovered);
            let got = frames(&outbox);
            assert_eq!(got.len(), 2);
            assert_eq!(
                (got[1]["type"].as_str(), got[1]["n"].as_u64()),
                (Some("alerts_full"), Some(5))
            );
        }
    }

    #[tokio::test]
    async fn sweep_drops_expired_history_of_quiet_channels() {
        let broker = MemoryBroker::new(Retention {
            max_messages: 100,
            max_age: Duration::from_secs(60),
        });
        for n in 1..=3 {
            broker.publish_durable("alerts", msg(n), None);
        }
        broker.publish_durable("portfolio:7", msg(4), None);
        let held = broker.sweep(Instant::now());
        assert_eq!((held.channels, held.history_messages), (2, 4));
        assert_eq!(
            held.history_bytes,
            (1..=4)
                .map(|n| server::stamp_seq(&msg(n), 1).len())
                .sum::<usize>()
        );

        // Nothing was published since: only the sweep can drop them.
        let held = broker.sweep(Instant::now() + Duration::from_secs(61));
        assert_eq!(
            held,
            Held {
                channels: 2,
                history_messages: 0,
                history_bytes: 0
            }
        );
        // The seq survives: the next message continues the log.
        assert_eq!(broker.publish_durable("alerts", msg(5), None), 4);
    }

    #[tokio::test]
    async fn new_channel_gets_an_empty_snapshot_and_retained_values() {
        let broker = MemoryBroker::new(Retention::default());
        let outbox = Arc::new(Outbox::new(1, OutboxLimits::default()));
        broker
            .subscribe(&Channel::Portfolio(9), None, &outbox, Some(&Value::from(4)))
            .await
            .unwrap();
        let got = frames(&outbox);
        assert_eq!(
            (got[0]["id"].as_u64(), got[0]["seq"].as_u64()),
            (Some(4), Some(0))
        );
        assert_eq!(got[1]["type"], "portfolio_full");
        let prices = Channel::Prices("forex".into());
        for bid in [1.1, 1.2] {
            let m = Bytes::from(format!(
                r#"{{"type":"price","channel":"prices:forex","symbol":"EURUSD","bid":{bid}}}"#
            ));
            broker.publish_ephemeral("prices:forex", "EURUSD", m, true);
        }
        broker
            .subscribe(&prices, None, &outbox, None)
            .await
            .unwrap();
        let got = frames(&outbox);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1]["bid"], 1.2);
    }

    #[tokio::test]
    async fn unsubscribed_outbox_gets_nothing_and_idle_channels_are_forgotten() {
        let broker = MemoryBroker::new(Retention::default());
        let outbox = Arc::new(Outbox::new(1, OutboxLimits::default()));
        let ch = Channel::Prices("nowhere".into());
        broker.subscribe(&ch, None, &outbox, None).await.unwrap();
        broker.unsubscribe(&ch, &outbox).await;
        assert!(broker.channels.read().is_empty());
        broker.publish_ephemeral("prices:nowhere", "X", msg(1), false);
        assert_eq!(frames(&outbox).len(), 1, "only the subscribed reply");
    }
}
