//! The shared broker: channel logs in Redis, so every node serves every channel.
//!
//! Publishing runs [`scripts::APPEND`] per durable message: it bumps the channel's
//! seq, appends the stamped message to the channel's log stream (bounded by count
//! and age), stores the snapshot and publishes the message on the channel's topic,
//! all in one atomic step. Ephemeral messages are published (and retained values
//! stored) in the same pipeline, so one batch costs one round trip; the ephemeral
//! messages a batch has for one channel between two of its durable ones go out as
//! one frame (one `PUBLISH`), so a portfolio's live figures cost Redis and every
//! node one command and one frame per push, not one per position.
//!
//! On the receiving side a node listens (`SUBSCRIBE`) only to the topics of channels
//! it has local subscribers for. Each such channel has a [`hub`] task that owns the
//! local subscriber list, delivers each frame once to each of them and notices a
//! gap (a frame lost while the pub/sub connection was down) by its seq; it then
//! reads the missing messages from the log, or resyncs its subscribers with a fresh
//! snapshot when the log no longer has them or the epoch changed (Redis restarted
//! empty). The [`bridge`] task owns the pub/sub connection, reconnects it with
//! backoff, and asks every hub to check for gaps after each reconnect; on Redis
//! Cluster the [`sharded`] bridge does the same with sharded pub/sub.

mod bridge;
pub mod conn;
mod hub;
mod keys;
mod scripts;
mod sharded;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tradecast_protocol::Channel;
use tradecast_protocol::client::Since;

use crate::outbox::Outbox;
use crate::{Broker, BrokerError, Position, Publish, Retention};
use conn::{RedisConn, RedisTarget};
use hub::{HubCmd, Join};
use keys::ChannelKeys;

/// How long a subscribe may wait for Redis before the client gets `unavailable`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Live-figure snapshots (portfolio valuations that moved with prices) are written
/// to Redis at most this often per channel; durable snapshots are written at once.
const LIVE_SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Channel logs in Redis, shared by every node that connects to it.
pub struct RedisBroker {
    shared: Arc<Shared>,
}

/// What the broker handle, the hubs and the bridge share.
pub(crate) struct Shared {
    conn: RedisConn,
    retention: Retention,
    /// `PUBLISH`, or `SPUBLISH` on Redis Cluster.
    publish_command: &'static str,
    /// Channel name → its hub's inbox. Hubs are created and retired under this
    /// lock, which orders their SUBSCRIBE and UNSUBSCRIBE commands.
    hubs: Mutex<HashMap<String, mpsc::UnboundedSender<HubCmd>>>,
    bridge: mpsc::UnboundedSender<bridge::BridgeCmd>,
    /// The pub/sub connection is up and listening to every wanted topic.
    listening: AtomicBool,
    live_snapshots: Mutex<LiveSnapshots>,
}

struct LiveSnapshots {
    written_at: Instant,
    pending: HashMap<String, Bytes>,
}

impl Shared {
    /// An epoch for a log that does not exist yet (first message, or Redis lost it).
    fn new_epoch() -> String {
        format!("{:016x}", fastrand::u64(..))
    }

    /// Send `cmd` to `channel`'s hub, starting the hub first if there is none.
    fn to_hub(self: &Arc<Self>, channel: &Channel, cmd: HubCmd) {
        let name = channel.to_string();
        let mut hubs = self.hubs.lock();
        let inbox = hubs.entry(name).or_insert_with_key(|name| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(hub::run(self.clone(), name.clone(), channel.clone(), rx));
            tx
        });
        // A hub only stops after removing itself under this lock, so it is alive.
        let _ = inbox.send(cmd);
    }

    /// Ask every hub to look for messages it may have missed.
    fn resync_hubs(&self) {
        for inbox in self.hubs.lock().values() {
            let _ = inbox.send(HubCmd::Resync);
        }
    }
}

impl RedisBroker {
    /// Connect to Redis (a server or a cluster).
    pub async fn connect(
        target: &RedisTarget,
        retention: Retention,
    ) -> Result<RedisBroker, BrokerError> {
        let conn = target.connect(Duration::from_secs(5)).await.map_err(|e| {
            BrokerError(format!("cannot reach Redis at {}: {e}", target.redacted()))
        })?;
        let (bridge_tx, bridge_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            conn,
            retention,
            publish_command: if target.cluster {
                "SPUBLISH"
            } else {
                "PUBLISH"
            },
            hubs: Mutex::new(HashMap::new()),
            bridge: bridge_tx,
            listening: AtomicBool::new(false),
            live_snapshots: Mutex::new(LiveSnapshots {
                written_at: Instant::now(),
                pending: HashMap::new(),
            }),
        });
        let weak = Arc::downgrade(&shared);
        if target.cluster {
            tokio::spawn(sharded::run(target.urls.clone(), weak, bridge_rx));
        } else {
            let client = redis::Client::open(target.url()).map_err(|e| {
                BrokerError(format!("invalid Redis URL {}: {e}", target.redacted()))
            })?;
            tokio::spawn(bridge::run(client, weak, bridge_rx));
        }
        Ok(RedisBroker { shared })
    }

    /// Queue `batch` into pipelines (with the live snapshots that are due): one
    /// on a single server; one per channel on a cluster, where a pipeline must stay
    /// in one hash slot. Each channel's commands keep their order either way.
    fn pipelines(&self, batch: Vec<Publish>) -> Vec<redis::Pipeline> {
        let shared = &self.shared;
        let mut pipes = Pipes::new(shared.conn.is_cluster());
        let max_messages = shared.retention.max_messages.max(1).to_string();
        let max_age_ms = shared.retention.max_age.as_millis().max(1).to_string();
        // Used only by a channel whose log does not exist yet; one per batch will do.
        let new_epoch = Shared::new_epoch();
        let mut live = shared.live_snapshots.lock();
        // Each channel's ephemeral messages not yet published, in order. A channel's
        // run is published before its next durable message (or restore), so the
        // channel's messages keep their order; the rest at the end of the batch.
        let mut runs: HashMap<String, Vec<(String, Bytes)>> = HashMap::new();
        let publish_run = |pipes: &mut Pipes, channel: &str, run: Vec<(String, Bytes)>| {
            pipes
                .of(channel)
                .cmd(shared.publish_command)
                .arg(ChannelKeys::new(channel).topic)
                .arg(wire::ephemerals(&run))
                .ignore();
        };
        for item in batch {
            match item {
                Publish::Durable {
                    channel,
                    message,
                    snapshot,
                    origin,
                } => {
                    if let Some(run) = runs.remove(&channel) {
                        publish_run(&mut pipes, &channel, run);
                    }
                    let keys = ChannelKeys::new(&channel);
                    if snapshot.is_some() {
                        // This snapshot is newer than any pending live one.
                        live.pending.remove(&channel);
                    }
                    pipes
                        .of(&channel)
                        .cmd("EVAL")
                        .arg(scripts::APPEND)
                        .arg(3)
                        .arg(&keys.meta)
                        .arg(&keys.log)
                        .arg(&keys.snap)
                        .arg(&message[..])
                        .arg(snapshot.as_deref().unwrap_or_default())
                        .arg(if snapshot.is_some() { "1" } else { "0" })
                        .arg(origin.map(|o| o.to_string()).unwrap_or_default())
                        .arg(&new_epoch)
                        .arg(&max_messages)
                        .arg(&max_age_ms)
                        .arg(shared.publish_command)
                        .arg(&keys.topic)
                        .ignore();
                }
                Publish::Ephemeral {
                    channel,
                    key,
                    message,
                    retain,
                } => {
                    if retain {
                        let keys = ChannelKeys::new(&channel);
                        pipes
                            .of(&channel)
                            .hset(&keys.ret, &key, &message[..])
                            .ignore();
                    }
                    runs.entry(channel).or_default().push((key, message));
                }
                Publish::Snapshot { channel, message } => {
                    live.pending.insert(channel, message);
                }
                Publish::Restore { channel, message } => {
                    live.pending.remove(&channel);
                    if let Some(run) = runs.remove(&channel) {
                        publish_run(&mut pipes, &channel, run);
                    }
                    let keys = ChannelKeys::new(&channel);
                    let pipe = pipes.of(&channel);
                    pipe.set(&keys.snap, &message[..]).ignore();
                    pipe.cmd(shared.publish_command)
                        .arg(&keys.topic)
                        .arg(wire::RESTORED)
                        .ignore();
                }
            }
        }
        for (channel, run) in runs {
            publish_run(&mut pipes, &channel, run);
        }
        // Live snapshots go last: every durable message they reflect is before them.
        if live.written_at.elapsed() >= LIVE_SNAPSHOT_EVERY && !live.pending.is_empty() {
            live.written_at = Instant::now();
            for (channel, snapshot) in live.pending.drain() {
                pipes
                    .of(&channel)
                    .set(ChannelKeys::new(&channel).snap, &snapshot[..])
                    .ignore();
            }
        }
        pipes.into_vec()
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, batch: Vec<Publish>) -> Result<(), BrokerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let runs = self.pipelines(batch).into_iter().map(|pipe| {
            let mut conn = self.shared.conn.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        });
        for result in futures_util::future::join_all(runs).await {
            result.map_err(|e| BrokerError(format!("publishing to Redis: {e}")))?;
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
        let (done, position) = oneshot::channel();
        let join = Join {
            since: since.cloned(),
            outbox: outbox.clone(),
            reply_id: reply_id.cloned(),
            done,
        };
        self.shared.to_hub(channel, HubCmd::Join(join));
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, position).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BrokerError("the channel's hub stopped".into())),
            Err(_) => Err(BrokerError("Redis did not answer in time".into())),
        }
    }

    async fn unsubscribe(&self, channel: &Channel, outbox: &Outbox) {
        let name = channel.to_string();
        if let Some(inbox) = self.shared.hubs.lock().get(&name) {
            let _ = inbox.send(HubCmd::Leave(outbox.id()));
        }
    }

    fn is_ready(&self) -> bool {
        self.shared.listening.load(Ordering::Relaxed)
    }
}

/// The pipelines one publish is split into.
struct Pipes {
    per_channel: bool,
    index: HashMap<String, usize>,
    pipes: Vec<redis::Pipeline>,
}

impl Pipes {
    fn new(per_channel: bool) -> Pipes {
        Pipes {
            per_channel,
            index: HashMap::new(),
            pipes: Vec::new(),
        }
    }

    /// The pipeline `channel`'s commands go into.
    fn of(&mut self, channel: &str) -> &mut redis::Pipeline {
        let key = if self.per_channel { channel } else { "" };
        let next = self.pipes.len();
        let at = *self.index.entry(key.to_owned()).or_insert(next);
        if at == next {
            self.pipes.push(redis::pipe());
        }
        &mut self.pipes[at]
    }

    fn into_vec(self) -> Vec<redis::Pipeline> {
        self.pipes.into_iter().filter(|p| !p.is_empty()).collect()
    }
}
