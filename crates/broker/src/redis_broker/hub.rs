//! One channel's local subscribers on this node, fed from the channel's topic.
//!
//! A hub is a task: joins, leaves and frames for its channel arrive on one inbox
//! and are handled one at a time, so a join (which reads Redis) and the frames
//! published meanwhile never interleave. Each subscriber has a cursor, the last
//! seq it was given: a join sets it to the seq its snapshot or replay ends at, and
//! a frame goes only to subscribers whose cursor is below it. The hub itself
//! tracks the last seq it delivered; a frame further ahead reveals a gap, which it
//! fills from the channel's log before going on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::Value as RedisValue;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tradecast_protocol::client::Since;
use tradecast_protocol::{Channel, server};

use super::bridge::BridgeCmd;
use super::keys::ChannelKeys;
use super::wire::Frame;
use super::{Shared, scripts};
use crate::outbox::{Outbox, Push};
use crate::{BrokerError, Position, conflation_key, count_out};

/// A hub with no subscribers keeps listening this long (clients that reconnect
/// find it warm), then retires and stops listening to the topic.
const LINGER: Duration = Duration::from_secs(30);

/// How soon a repair that could not read the log is tried again.
const REPAIR_RETRY: Duration = Duration::from_millis(500);

/// How long a join waits for the pub/sub connection to confirm the topic.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(4);

pub(crate) enum HubCmd {
    /// A frame from the channel's topic.
    Frame(Frame),
    /// A local subscriber joins (or resyncs).
    Join(Join),
    /// A local subscriber (by outbox id) leaves.
    Leave(u64),
    /// The pub/sub connection was re-established: frames may have been lost.
    Resync,
}

pub(crate) struct Join {
    pub since: Option<Since>,
    pub outbox: Arc<Outbox>,
    pub reply_id: Option<Value>,
    pub done: oneshot::Sender<Result<Position, BrokerError>>,
}

struct Subscriber {
    outbox: Arc<Outbox>,
    /// The last seq this subscriber was given.
    cursor: u64,
}

/// Where the channel's log stands, as read by [`scripts::READ`].
struct Read {
    epoch: String,
    seq: u64,
    recovered: bool,
    /// With `recovered`: the stamped messages after the asked seq.
    messages: Vec<Bytes>,
    retained: Vec<(String, Bytes)>,
    /// Without `recovered`: the stored snapshot, if any.
    snapshot: Option<Bytes>,
}

struct Hub {
    shared: Arc<Shared>,
    name: String,
    channel: Channel,
    keys: ChannelKeys,
    subscribers: HashMap<u64, Subscriber>,
    /// Listening to the topic (the bridge confirmed it).
    listening: bool,
    epoch: String,
    /// The last seq delivered (or skipped as already covered by every cursor).
    last_seq: u64,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    name: String,
    channel: Channel,
    mut inbox: mpsc::UnboundedReceiver<HubCmd>,
) {
    let mut hub = Hub {
        keys: ChannelKeys::new(&name),
        shared,
        name,
        channel,
        subscribers: HashMap::new(),
        listening: false,
        epoch: String::new(),
        last_seq: 0,
    };
    loop {
        let cmd = if hub.subscribers.is_empty() {
            match tokio::time::timeout(LINGER, inbox.recv()).await {
                Ok(Some(cmd)) => cmd,
                Ok(None) => return,
                Err(_) if hub.retire(&inbox) => return,
                Err(_) => continue,
            }
        } else {
            match inbox.recv().await {
                Some(cmd) => cmd,
                None => return,
            }
        };
        match cmd {
            HubCmd::Frame(Frame::Durable {
                epoch,
                seq,
                message,
            }) => hub.durable(epoch, seq, message).await,
            HubCmd::Frame(Frame::Ephemeral { key, message }) => hub.ephemeral(&key, message),
            HubCmd::Frame(Frame::Ephemerals(messages)) => {
                for (key, message) in messages {
                    hub.ephemeral(&key, message);
                }
            }
            HubCmd::Frame(Frame::Restored) => hub.restored().await,
            HubCmd::Join(join) => hub.join(join).await,
            HubCmd::Leave(id) => {
                hub.subscribers.remove(&id);
            }
            HubCmd::Resync => hub.repair().await,
        }
    }
}

impl Hub {
    /// Stop if nothing is waiting in the inbox: forget the hub and stop listening.
    fn retire(&self, inbox: &mpsc::UnboundedReceiver<HubCmd>) -> bool {
        let mut hubs = self.shared.hubs.lock();
        if !inbox.is_empty() {
            return false;
        }
        hubs.remove(&self.name);
        if self.listening {
            let _ = self
                .shared
                .bridge
                .send(BridgeCmd::Unlisten(self.keys.topic.clone()));
        }
        true
    }

    async fn join(&mut self, join: Join) {
        let Join {
            since,
            outbox,
            reply_id,
            done,
        } = join;
        // Listen first, read second: a message published after the read is then
        // certain to arrive as a frame.
        if !self.listening {
            if !self
                .shared
                .listening
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                // Redis is away: say so now rather than after LISTEN_TIMEOUT.
                let _ = done.send(Err(BrokerError("Redis pub/sub is not connected".into())));
                return;
            }
            let (ack, acked) = oneshot::channel();
            let _ = self.shared.bridge.send(BridgeCmd::Listen {
                topic: self.keys.topic.clone(),
                ack,
            });
            match tokio::time::timeout(LISTEN_TIMEOUT, acked).await {
                Ok(Ok(())) => self.listening = true,
                _ => {
                    let _ = done.send(Err(BrokerError("Redis pub/sub is not connected".into())));
                    return;
                }
            }
        }
        if done.is_closed() {
            return;
        }
        let read = match self.read(since.as_ref()).await {
            Ok(read) => read,
            Err(error) => {
                let _ = done.send(Err(error));
                return;
            }
        };
        if done.is_closed() {
            // The session stopped waiting (a slow Redis) and told its client the
            // subscribe failed: do not start sending it the channel anyway.
            return;
        }
        if self.subscribers.is_empty() {
            self.epoch = read.epoch.clone();
            self.last_seq = read.seq;
        } else if read.epoch != self.epoch {
            // The log was lost and restarted: everyone else starts over too.
            self.resync_all(&read);
        }
        outbox.push(server::subscribed(
            reply_id.as_ref(),
            &self.name,
            &read.epoch,
            read.seq,
            read.recovered,
        ));
        self.send_state(&outbox, &read);
        self.subscribers.insert(
            outbox.id(),
            Subscriber {
                outbox,
                cursor: read.seq,
            },
        );
        let _ = done.send(Ok(Position {
            epoch: read.epoch,
            seq: read.seq,
            recovered: read.recovered,
        }));
    }

    /// Queue the replay, or the snapshot, then the retained values.
    fn send_state(&self, outbox: &Outbox, read: &Read) {
        if read.recovered {
            for message in &read.messages {
                outbox.push(message.clone());
            }
        } else if let Some(snapshot) = &read.snapshot {
            outbox.push(snapshot.clone());
        } else if let Some(empty) = self.channel.empty_snapshot() {
            outbox.push(Bytes::from(empty));
        }
        for (key, value) in &read.retained {
            outbox.push_latest(conflation_key(&self.name, key), value.clone());
        }
    }

    async fn durable(&mut self, epoch: String, seq: u64, message: Bytes) {
        if self.subscribers.is_empty() {
            return;
        }
        if epoch != self.epoch || seq > self.last_seq + 1 {
            self.repair().await;
        }
        if epoch == self.epoch && seq == self.last_seq + 1 {
            self.deliver(seq, message);
        }
    }

    /// Give `message` (seq `seq`) to every subscriber that has not had it.
    fn deliver(&mut self, seq: u64, message: Bytes) {
        let mut copies = 0;
        self.subscribers.retain(|_, sub| {
            if seq <= sub.cursor {
                return true;
            }
            sub.cursor = seq;
            copies += 1;
            !matches!(sub.outbox.push(message.clone()), Push::Closed)
        });
        count_out(&message, copies);
        self.last_seq = seq;
    }

    fn ephemeral(&mut self, key: &str, message: Bytes) {
        let conflation = conflation_key(&self.name, key);
        count_out(&message, self.subscribers.len());
        self.subscribers.retain(|_, sub| {
            match sub.outbox.push_latest(conflation, message.clone()) {
                Push::Closed => false,
                Push::Conflated => {
                    metrics::counter!("tradecast_outbox_conflated_total").increment(1);
                    true
                }
                Push::Queued => true,
            }
        });
    }

    /// Catch up with the log: deliver what was missed, or resync every subscriber
    /// with a snapshot when the log cannot say what was missed.
    async fn repair(&mut self) {
        if self.subscribers.is_empty() || !self.channel.is_durable() {
            return;
        }
        let since = Since {
            epoch: self.epoch.clone(),
            seq: self.last_seq,
        };
        let read = match self.read(Some(&since)).await {
            Ok(read) => read,
            Err(error) => {
                // The command connection may lag the pub/sub one after a
                // reconnect: try again shortly (the bridge also sends Resync
                // after every reconnect).
                tracing::warn!(channel = %self.name, %error, "cannot repair a gap yet; retrying");
                let shared = self.shared.clone();
                let name = self.name.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(REPAIR_RETRY).await;
                    if let Some(inbox) = shared.hubs.lock().get(&name) {
                        let _ = inbox.send(HubCmd::Resync);
                    }
                });
                return;
            }
        };
        if !read.recovered && read.snapshot.is_none() && read.epoch != self.epoch {
            // Redis lost the log and the snapshot. Sending an empty snapshot would
            // show subscribers a blank state: wait for the ingest leader to restore
            // it (a `restored` frame) or for the channel's next message.
            tracing::info!(channel = %self.name, "log lost; waiting for the snapshot to be restored");
            return;
        }
        if read.recovered {
            let first = self.last_seq + 1;
            metrics::counter!("tradecast_broker_gap_messages_total")
                .increment(read.messages.len() as u64);
            for (n, message) in read.messages.into_iter().enumerate() {
                self.deliver(first + n as u64, message);
            }
        } else {
            self.resync_all(&read);
        }
    }

    /// The snapshot was put back: start every subscriber over from it.
    async fn restored(&mut self) {
        if self.subscribers.is_empty() {
            return;
        }
        match self.read(None).await {
            Ok(read) => self.resync_all(&read),
            Err(error) => {
                tracing::warn!(channel = %self.name, %error, "cannot read a restored snapshot")
            }
        }
    }

    /// Start every subscriber over from `read`'s snapshot: a `subscribed` reply
    /// (no `id`: the server initiated it) with `recovered: false`, then the state.
    fn resync_all(&mut self, read: &Read) {
        metrics::counter!("tradecast_broker_resyncs_total").increment(1);
        tracing::info!(channel = %self.name, epoch = %read.epoch, seq = read.seq, "resyncing local subscribers");
        let reply = server::subscribed(None, &self.name, &read.epoch, read.seq, false);
        let snapshot = Read {
            recovered: false,
            messages: Vec::new(),
            epoch: read.epoch.clone(),
            seq: read.seq,
            retained: read.retained.clone(),
            snapshot: read.snapshot.clone(),
        };
        for sub in self.subscribers.values_mut() {
            sub.outbox.push(reply.clone());
            sub.cursor = read.seq;
        }
        for sub in self.subscribers.values() {
            self.send_state(&sub.outbox, &snapshot);
        }
        self.epoch = read.epoch.clone();
        self.last_seq = read.seq;
    }

    /// Run [`scripts::READ`] for `since`.
    async fn read(&self, since: Option<&Since>) -> Result<Read, BrokerError> {
        let durable = self.channel.is_durable();
        let mut conn = self.shared.conn.clone();
        let reply: RedisValue = redis::cmd("EVAL")
            .arg(scripts::READ)
            .arg(4)
            .arg(&self.keys.meta)
            .arg(&self.keys.log)
            .arg(&self.keys.snap)
            .arg(&self.keys.ret)
            .arg(Shared::new_epoch())
            .arg(since.map(|s| s.epoch.as_str()).unwrap_or_default())
            .arg(since.map_or(0, |s| s.seq))
            .arg(if durable { "1" } else { "0" })
            .query_async(&mut conn)
            .await
            .map_err(|e| BrokerError(format!("reading channel {} from Redis: {e}", self.name)))?;
        parse_read(reply, durable)
            .ok_or_else(|| BrokerError(format!("unexpected reply reading channel {}", self.name)))
    }
}

fn parse_read(reply: RedisValue, durable: bool) -> Option<Read> {
    fn bytes(value: RedisValue) -> Option<Bytes> {
        match value {
            RedisValue::BulkString(b) => Some(Bytes::from(b)),
            RedisValue::SimpleString(s) => Some(Bytes::from(s)),
            _ => None,
        }
    }
    fn text(value: RedisValue) -> Option<String> {
        String::from_utf8(bytes(value)?.to_vec()).ok()
    }
    fn list(value: RedisValue) -> Option<Vec<RedisValue>> {
        match value {
            RedisValue::Array(items) => Some(items),
            RedisValue::Nil => Some(Vec::new()),
            _ => None,
        }
    }
    let mut fields = list(reply)?.into_iter();
    let epoch = text(fields.next()?)?;
    let seq = text(fields.next()?)?.parse().ok()?;
    let recovered = matches!(fields.next()?, RedisValue::Int(1));
    let messages = list(fields.next()?)?
        .into_iter()
        .map(bytes)
        .collect::<Option<Vec<_>>>()?;
    let mut retained = Vec::new();
    let mut flat = list(fields.next()?)?.into_iter();
    while let (Some(key), Some(value)) = (flat.next(), flat.next()) {
        retained.push((text(key)?, bytes(value)?));
    }
    let snapshot = bytes(fields.next()?).filter(|s| !s.is_empty());
    Some(Read {
        epoch,
        seq,
        recovered: recovered && durable,
        messages,
        retained,
        snapshot,
    })
}
