//! The node's pub/sub connection: listens to the topics its hubs want and hands
//! each frame to the hub of its channel.
//!
//! Redis pub/sub is at-most-once: whatever is published while the connection is
//! down is gone. So after every (re)connect the bridge listens to every wanted topic
//! again and then asks every hub to [`Resync`](super::hub::HubCmd::Resync), and the
//! hubs fill the gap from the channel logs. Until then the broker reports itself
//! not ready, and `/readyz` says so.

use std::collections::HashSet;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::hub::HubCmd;
use super::{Shared, keys, wire};

/// Topics per SUBSCRIBE command when listening to many at once.
const TOPICS_PER_COMMAND: usize = 512;

/// A silent connection is checked with a PING this often.
const PING_EVERY: Duration = Duration::from_secs(2);

/// How long connecting, or any one command (SUBSCRIBE, UNSUBSCRIBE, PING), may
/// wait for Redis before the connection is given up and made again. The client
/// library has no timeout of its own on a pub/sub connection: without this, a
/// Redis that vanished without closing the connection (a frozen server, a dead
/// proxy or NAT entry) would hold the bridge until the kernel gave up on the
/// socket, many minutes later, or forever if something still acknowledges it.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

pub(crate) enum BridgeCmd {
    /// Listen to `topic`; `ack` fires once Redis confirmed it.
    Listen {
        topic: String,
        ack: oneshot::Sender<()>,
    },
    /// Stop listening to `topic` (its hub retired).
    Unlisten(String),
}

pub(crate) async fn run(
    client: redis::Client,
    shared: Weak<Shared>,
    mut commands: mpsc::UnboundedReceiver<BridgeCmd>,
) {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        let mut connected = false;
        let outcome = session(
            &client,
            &shared,
            &mut commands,
            &mut wanted,
            &mut waiting,
            &mut connected,
        )
        .await;
        if connected {
            backoff = Duration::from_millis(100);
        }
        match outcome {
            Ok(()) => return,
            Err(error) => {
                if let Some(shared) = shared.upgrade()
                    && shared.listening.swap(false, Ordering::Relaxed)
                {
                    tracing::warn!(%error, "Redis pub/sub connection lost; reconnecting");
                }
                metrics::counter!("tradecast_redis_reconnects_total").increment(1);
            }
        }
        // Keep taking commands while waiting, so joins are answered once back.
        let sleep = tokio::time::sleep(backoff + Duration::from_millis(fastrand::u64(..100)));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = commands.recv() => match cmd {
                    Some(BridgeCmd::Listen { topic, ack }) => {
                        wanted.insert(topic);
                        waiting.push(ack);
                    }
                    Some(BridgeCmd::Unlisten(topic)) => {
                        wanted.remove(&topic);
                    }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One connection's life. `Ok` when the broker is gone, `Err` when Redis is.
async fn session(
    client: &redis::Client,
    shared: &Weak<Shared>,
    commands: &mut mpsc::UnboundedReceiver<BridgeCmd>,
    wanted: &mut HashSet<String>,
    waiting: &mut Vec<oneshot::Sender<()>>,
    connected: &mut bool,
) -> redis::RedisResult<()> {
    let pubsub = answered("connecting", client.get_async_pubsub()).await?;
    let (mut sink, mut stream) = pubsub.split();
    let topics: Vec<&String> = wanted.iter().collect();
    for chunk in topics.chunks(TOPICS_PER_COMMAND) {
        answered("SUBSCRIBE", sink.subscribe(chunk)).await?;
    }
    let Some(strong) = shared.upgrade() else {
        return Ok(());
    };
    strong.listening.store(true, Ordering::Relaxed);
    *connected = true;
    tracing::info!(topics = wanted.len(), "Redis pub/sub connected");
    for ack in waiting.drain(..) {
        let _ = ack.send(());
    }
    strong.resync_hubs();
    drop(strong);

    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return Ok(()) };
                // Take everything queued, and send runs of listens as one command.
                let mut batch = vec![cmd];
                while let Ok(more) = commands.try_recv() {
                    batch.push(more);
                }
                let mut listen = Vec::new();
                let mut acks = Vec::new();
                for cmd in batch {
                    match cmd {
                        BridgeCmd::Listen { topic, ack } => {
                            wanted.insert(topic.clone());
                            listen.push(topic);
                            acks.push(ack);
                        }
                        BridgeCmd::Unlisten(topic) => {
                            if !listen.is_empty() {
                                flush_listens(&mut sink, &mut listen, &mut acks, waiting).await?;
                            }
                            wanted.remove(&topic);
                            answered("UNSUBSCRIBE", sink.unsubscribe(&topic)).await?;
                        }
                    }
                }
                if !listen.is_empty() {
                    flush_listens(&mut sink, &mut listen, &mut acks, waiting).await?;
                }
            }
            message = stream.next() => {
                let Some(message) = message else {
                    return Err(redis::RedisError::from(std::io::Error::other(
                        "pub/sub connection closed",
                    )));
                };
                let Some(shared) = shared.upgrade() else { return Ok(()) };
                dispatch(&shared, message.get_channel_name(), message.get_payload_bytes());
            }
            _ = ping.tick() => {
                answered("PING", sink.ping::<redis::Value>()).await?;
            }
        }
    }
}

/// SUBSCRIBE `topics` in one command; on failure the acks wait for the reconnect.
async fn flush_listens(
    sink: &mut redis::aio::PubSubSink,
    topics: &mut Vec<String>,
    acks: &mut Vec<oneshot::Sender<()>>,
    waiting: &mut Vec<oneshot::Sender<()>>,
) -> redis::RedisResult<()> {
    let result = answered("SUBSCRIBE", sink.subscribe(&topics[..])).await;
    topics.clear();
    match result {
        Ok(()) => {
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            Ok(())
        }
        Err(error) => {
            waiting.append(acks);
            Err(error)
        }
    }
}

/// `request`'s outcome, or a timed-out error once [`ANSWER_WITHIN`] has passed.
async fn answered<T>(
    what: &str,
    request: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(ANSWER_WITHIN, request).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "Redis did not answer {what} within {} s",
                ANSWER_WITHIN.as_secs()
            ),
        ))),
    }
}

/// Hand a frame to its channel's hub (if this node still has one).
pub(crate) fn dispatch(shared: &Shared, topic: &str, payload: &[u8]) {
    let Some(channel) = keys::channel_of(topic) else {
        return;
    };
    let Some(frame) = wire::parse(Bytes::copy_from_slice(payload)) else {
        tracing::warn!(topic, "unreadable frame on a channel topic; skipped");
        return;
    };
    if let Some(inbox) = shared.hubs.lock().get(channel) {
        let _ = inbox.send(HubCmd::Frame(frame));
    }
}
