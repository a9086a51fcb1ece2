//! The pub/sub side on Redis Cluster: sharded pub/sub (`SSUBSCRIBE`).
//!
//! A sharded topic lives on the shard that owns its hash slot, so a publish
//! (`SPUBLISH`, from the append script) reaches only that shard and the nodes
//! listening there, instead of being broadcast over the whole cluster bus. The
//! cluster connection routes each `SSUBSCRIBE` to the owning shard.
//!
//! After a connection to a shard is lost, the client library's own
//! resubscription sends one `SSUBSCRIBE` per shard for all its topics, which the
//! server refuses when they span several slots (CROSSSLOT; see the reference's
//! notes on redis-rs). So this bridge does not rely on it: on a disconnection, or
//! when a periodic `PING` fails, it listens to every wanted topic again one topic
//! per command, then asks every hub to resync, as the single-server bridge does.

use std::collections::HashSet;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::bridge::{BridgeCmd, dispatch};

/// How often the connection is checked, and a lost listen retried.
const CHECK_EVERY: Duration = Duration::from_millis(500);

pub(crate) async fn run(
    urls: Vec<String>,
    shared: Weak<Shared>,
    mut commands: mpsc::UnboundedReceiver<BridgeCmd>,
) {
    let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let client = match ClusterClientBuilder::new(urls)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(push_tx)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "invalid Redis Cluster configuration");
            return;
        }
    };
    let mut wanted: HashSet<String> = HashSet::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut conn: Option<ClusterConnection> = None;
    let mut stale = true;
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    BridgeCmd::Listen { topic, ack } => {
                        wanted.insert(topic.clone());
                        let listened = match conn.as_mut() {
                            Some(c) if !stale => c.ssubscribe(&topic).await.is_ok(),
                            _ => false,
                        };
                        if listened {
                            let _ = ack.send(());
                        } else {
                            waiting.push(ack);
                            stale = true;
                        }
                    }
                    BridgeCmd::Unlisten(topic) => {
                        wanted.remove(&topic);
                        if let Some(c) = conn.as_mut() {
                            let _ = c.sunsubscribe(&topic).await;
                        }
                    }
                }
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                match push.kind {
                    PushKind::SMessage => {
                        let Some(shared) = shared.upgrade() else { return };
                        if let [Value::BulkString(topic), Value::BulkString(payload), ..] = &push.data[..] {
                            dispatch(&shared, &String::from_utf8_lossy(topic), payload);
                        }
                    }
                    PushKind::Disconnection => stale = true,
                    _ => {}
                }
            }
            _ = check.tick() => {
                let Some(strong) = shared.upgrade() else { return };
                if conn.is_none() {
                    match client.get_async_connection().await {
                        Ok(c) => conn = Some(c),
                        Err(error) => {
                            tracing::debug!(%error, "Redis Cluster not reachable yet");
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected above");
                if !stale && c.req_packed_command(&redis::cmd("PING")).await.is_err() {
                    stale = true;
                }
                if stale {
                    if strong.listening.swap(false, Ordering::Relaxed) {
                        tracing::warn!("Redis Cluster pub/sub lost; listening again");
                        metrics::counter!("tradecast_redis_reconnects_total").increment(1);
                    }
                    let mut all = true;
                    for topic in &wanted {
                        all &= c.ssubscribe(topic).await.is_ok();
                    }
                    if all {
                        stale = false;
                        strong.listening.store(true, Ordering::Relaxed);
                        tracing::info!(topics = wanted.len(), "Redis Cluster sharded pub/sub listening");
                        for ack in waiting.drain(..) {
                            let _ = ack.send(());
                        }
                        strong.resync_hubs();
                    }
                }
            }
        }
    }
}
