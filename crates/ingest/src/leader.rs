//! The stream reader: one node (the [`Lease`] holder) applies every ingest stream
//! to the domain engine and publishes the effects; the others stand by.
//!
//! For each batch read with `XREADGROUP` the leader
//! 1. parses every entry; a bad one goes to the dead-letter stream,
//! 2. appends the good ones to the [`Journal`] (write-ahead),
//! 3. applies them in order, numbering each event, and publishes the effects with
//!    origins derived from those numbers (see [`crate::effects::to_batch`]),
//! 4. acknowledges the entries (`XACK`) once the broker has them durable.
//!
//! When it takes over, a leader first rebuilds the state: the last checkpoint plus
//! the journal after it, re-applied in the journal's order (the channels skip what
//! they already took), then it claims (`XAUTOCLAIM`) what the previous leader read
//! but did not acknowledge and applies that, and only then reads new entries.
//! Events of one account are in one stream (partition), read in order, so they are
//! applied in stream order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tradecast_broker::{Broker, Publish, RedisConn, RedisTarget};
use tradecast_core::{Engine, EngineConfig, Rejected};
use tradecast_protocol::ingest::{self, IngestEvent};

use crate::dead_letter;
use crate::effects::{to_batch, to_restore};
use crate::journal::{Batch, Checkpoint, Entry, Journal};
use crate::layout::StreamLayout;
use crate::lease::Lease;

/// How often conflated live figures are considered for sending.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// How long one `XREADGROUP` waits for new entries.
const READ_BLOCK: Duration = Duration::from_millis(50);

/// Everything the stream reader needs to know.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub redis: RedisTarget,
    pub layout: StreamLayout,
    /// Consumer group on every ingest stream.
    pub group: String,
    pub dead_letters: String,
    pub lease_key: String,
    pub lease_ttl: Duration,
    pub journal: Journal,
    pub checkpoint_every: Duration,
    /// Entries per stream per read.
    pub batch_size: usize,
    pub engine: EngineConfig,
}

impl LeaderConfig {
    /// On Redis Cluster one `XREADGROUP` reads every ingest stream, so they must
    /// live in one hash slot: refuse to start otherwise.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.redis.cluster {
            return Ok(());
        }
        let streams = self.layout.streams();
        let tags: Vec<Option<&str>> = streams.iter().map(|s| hash_tag(s)).collect();
        if tags[0].is_none() || tags.iter().any(|t| *t != tags[0]) {
            anyhow::bail!(
                "on Redis Cluster the ingest streams must share a hash tag, e.g. --events-stream '{{tc}}:events' --ticks-stream '{{tc}}:ticks' (got {})",
                streams.join(", ")
            );
        }
        Ok(())
    }

    /// The defaults of `tradecast serve --redis URL`.
    pub fn new(redis: RedisTarget, layout: StreamLayout, engine: EngineConfig) -> Self {
        LeaderConfig {
            redis,
            layout,
            group: "tradecast".into(),
            dead_letters: "tc:dead".into(),
            lease_key: "{tc:ingest}:leader".into(),
            lease_ttl: Duration::from_secs(3),
            journal: Journal::default(),
            checkpoint_every: Duration::from_secs(5),
            batch_size: 512,
            engine,
        }
    }
}

/// Start the reader; it stands by or leads until `shutdown` turns true, then
/// stores a checkpoint and hands the lease back.
pub fn spawn(
    config: LeaderConfig,
    broker: Arc<dyn Broker>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = run(config, broker, shutdown).await {
            tracing::error!(error = format!("{error:#}"), "the ingest reader stopped");
        }
    })
}

struct Leader {
    config: LeaderConfig,
    broker: Arc<dyn Broker>,
    conn: RedisConn,
    lease: Lease,
    consumer: String,
    engine: Engine,
    /// Number of the last event applied to `engine` (0: none yet).
    last: u64,
    /// The journal record that event belongs to.
    journal_id: Option<String>,
    checkpointed: u64,
    /// The history `engine` belongs to; `None` until this node leads or loads one.
    era: Option<String>,
    /// This node has seen a checkpoint in Redis: the deployment has state, so
    /// leading without it (Redis lost it and we never held it) would start over
    /// from nothing.
    seen_state: bool,
    /// Consecutive times this node took the lease without any state to lead with.
    empty_handed: u32,
    /// The live figures being published, if any (see [`Leader::live_sent`]).
    live: Option<JoinHandle<()>>,
}

/// A node without state gives the lease back this many times (once per lease
/// period) to let a node that holds the state take it, before it leads anyway.
const EMPTY_HANDED_LIMIT: u32 = 5;

async fn run(
    config: LeaderConfig,
    broker: Arc<dyn Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // The response timeout is far longer than READ_BLOCK: a blocking read is
    // not a timeout.
    let conn = config
        .redis
        .connect(Duration::from_secs(5))
        .await
        .context("connecting the ingest reader to Redis")?;
    let consumer = format!(
        "{}-{}-{:04x}",
        hostname(),
        std::process::id(),
        fastrand::u16(..)
    );
    let mut leader = Leader {
        lease: Lease::new(&config.lease_key, &consumer, config.lease_ttl),
        engine: Engine::new(config.engine.clone()),
        config,
        broker,
        conn,
        consumer,
        last: 0,
        journal_id: None,
        checkpointed: 0,
        era: None,
        seen_state: false,
        empty_handed: 0,
        live: None,
    };
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        match leader.lease.acquire(&mut leader.conn).await {
            Ok(true) => {
                tracing::info!(consumer = %leader.consumer, "leading ingest");
                metrics::gauge!("tradecast_ingest_leader").set(1.0);
                let outcome = leader.lead(&mut shutdown).await;
                leader.live_sent().await;
                metrics::gauge!("tradecast_ingest_leader").set(0.0);
                match outcome {
                    Ok(()) => {
                        let _ = leader.lease.release(&mut leader.conn).await;
                        tracing::info!("ingest lease handed back");
                        return Ok(());
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "stopped leading ingest");
                        // Let another node take over at once if we still hold it.
                        let _ = leader.lease.release(&mut leader.conn).await;
                    }
                }
            }
            Ok(false) => {
                if let Ok(true) = leader.config.journal.has_checkpoint(&mut leader.conn).await {
                    leader.seen_state = true;
                }
            }
            Err(error) => tracing::debug!(%error, "cannot reach Redis for the ingest lease"),
        }
        // A node that would have to start from nothing waits longer, so that after
        // Redis lost everything the node that still holds the state leads.
        let stateless = leader.last == 0 && leader.seen_state;
        let pause = leader.lease.renew_every() * if stateless { 3 } else { 1 };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The part of a key Redis Cluster hashes: the first `{…}` with something inside.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')? + open + 1;
    (close > open + 1).then(|| &key[open + 1..close])
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Leader {
    /// Lead until shutdown (`Ok`) or until the lease or Redis is lost (`Err`).
    async fn lead(&mut self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        self.ensure_groups().await?;
        self.recover().await?;
        let mut renew_at = Instant::now() + self.lease.renew_every();
        let mut flush_at = Instant::now() + FLUSH_EVERY;
        let mut checkpoint_at = Instant::now() + self.config.checkpoint_every;
        loop {
            if *shutdown.borrow() {
                self.checkpoint().await?;
                return Ok(());
            }
            if Instant::now() >= renew_at {
                self.renew().await?;
                renew_at = Instant::now() + self.lease.renew_every();
            }
            let entries = self.read_new().await?;
            if !entries.is_empty() {
                self.process(entries).await?;
            }
            if Instant::now() >= flush_at {
                flush_at = Instant::now() + FLUSH_EVERY;
                let live = self.engine.flush_live(now_ms());
                if !live.is_empty() {
                    self.publish_live(to_batch(live, None)).await;
                }
            }
            if Instant::now() >= checkpoint_at {
                checkpoint_at = Instant::now() + self.config.checkpoint_every;
                if self.last != self.checkpointed {
                    self.checkpoint().await?;
                }
            }
        }
    }

    async fn renew(&mut self) -> anyhow::Result<()> {
        if self.lease.renew(&mut self.conn).await? {
            Ok(())
        } else {
            anyhow::bail!("the ingest lease expired (another node may lead now)")
        }
    }

    /// Create the consumer group on every stream (and the stream) if missing.
    async fn ensure_groups(&mut self) -> anyhow::Result<()> {
        for stream in self.config.layout.streams() {
            let created: redis::RedisResult<()> = self
                .conn
                .xgroup_create_mkstream(&stream, &self.config.group, "0")
                .await;
            match created {
                Ok(()) => {
                    tracing::info!(%stream, group = %self.config.group, "consumer group created")
                }
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e).context(format!("creating the group on {stream}")),
            }
        }
        Ok(())
    }

    /// Rebuild the state after taking the lease, then finish what the previous
    /// leader read but did not acknowledge.
    async fn recover(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let journal = self.config.journal.clone();
        match journal.load_checkpoint(&mut self.conn).await? {
            Some(checkpoint)
                if self.era.as_ref() != Some(&checkpoint.era) || checkpoint.last > self.last =>
            {
                // Another history, or further along ours: that is the state.
                self.engine = checkpoint.engine;
                self.last = checkpoint.last;
                self.checkpointed = checkpoint.last;
                self.era = Some(checkpoint.era);
                self.journal_id = Some(checkpoint.journal_id).filter(|id| !id.is_empty());
            }
            Some(_) => {}
            None if self.last > 0 => {
                // Redis lost everything: its snapshots too. Ours are current.
                tracing::warn!("no ingest checkpoint in Redis; republishing every snapshot");
                let snapshots = to_restore(self.engine.snapshots());
                self.publish_durably(snapshots).await?;
                self.journal_id = None;
                self.checkpoint().await?;
            }
            None if self.seen_state && self.empty_handed < EMPTY_HANDED_LIMIT => {
                self.empty_handed += 1;
                anyhow::bail!(
                    "Redis lost the ingest state and this node does not hold it; leaving the lease to a node that does ({}/{EMPTY_HANDED_LIMIT})",
                    self.empty_handed
                );
            }
            None => {
                if self.seen_state {
                    tracing::error!(
                        "Redis lost the ingest state and no node holds it: starting over from nothing; replay the plugin's state events"
                    );
                }
                self.era = Some(format!("{:016x}", fastrand::u64(..)));
                self.checkpoint().await?;
            }
        }
        self.empty_handed = 0;
        self.seen_state = true;
        let era = self.era.clone().unwrap_or_default();
        let mut replayed: HashSet<(String, String)> = HashSet::new();
        let batches = journal
            .after(&mut self.conn, self.journal_id.as_deref())
            .await?;
        let mut events = 0;
        for (journal_id, batch) in batches {
            if batch.era != era {
                continue;
            }
            let mut publish = Vec::new();
            let mut dead = redis::pipe();
            for (k, entry) in batch.entries.iter().enumerate() {
                let number = batch.first + k as u64;
                replayed.insert((entry.stream.clone(), entry.id.clone()));
                if number <= self.last {
                    continue;
                }
                // Journaled entries parsed once already.
                if let Ok(event) = ingest::parse(entry.d.as_bytes()) {
                    self.apply(number, &event, entry, &mut publish, &mut dead);
                    events += 1;
                }
            }
            self.journal_id = Some(journal_id);
            self.publish_durably(publish).await?;
            self.send(dead).await?;
        }
        self.ack(replayed.iter().map(|(s, i)| (s.as_str(), i.as_str())))
            .await?;
        let mut claimed = 0;
        for stream in self.config.layout.streams() {
            let mut cursor = "0-0".to_owned();
            loop {
                let reply: StreamAutoClaimReply = self
                    .conn
                    .xautoclaim_options(
                        &stream,
                        &self.config.group,
                        &self.consumer,
                        0,
                        &cursor,
                        StreamAutoClaimOptions::default().count(self.config.batch_size),
                    )
                    .await?;
                self.ack(
                    reply
                        .deleted_ids
                        .iter()
                        .map(|id| (stream.as_str(), id.as_str())),
                )
                .await?;
                let fresh: Vec<(String, StreamId)> = reply
                    .claimed
                    .into_iter()
                    .filter(|e| !replayed.contains(&(stream.clone(), e.id.clone())))
                    .map(|e| (stream.clone(), e))
                    .collect();
                claimed += fresh.len();
                if !fresh.is_empty() {
                    self.process(fresh).await?;
                }
                if reply.next_stream_id == "0-0" {
                    break;
                }
                cursor = reply.next_stream_id;
            }
        }
        tracing::info!(
            replayed = events,
            claimed,
            last = self.last,
            took_ms = started.elapsed().as_millis() as u64,
            "ingest state recovered"
        );
        Ok(())
    }

    /// Read new entries from every stream (blocking briefly when there are none).
    async fn read_new(&mut self) -> anyhow::Result<Vec<(String, StreamId)>> {
        let streams = self.config.layout.streams();
        let ids = vec![">"; streams.len()];
        let options = StreamReadOptions::default()
            .group(&self.config.group, &self.consumer)
            .count(self.config.batch_size)
            .block(READ_BLOCK.as_millis() as usize);
        let reply: redis::RedisResult<Option<StreamReadReply>> =
            self.conn.xread_options(&streams, &ids, &options).await;
        match reply {
            Ok(reply) => Ok(reply
                .map(|r| r.keys)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|key| {
                    let stream = key.key;
                    key.ids.into_iter().map(move |e| (stream.clone(), e))
                })
                .collect()),
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis restarted empty: the groups are gone with the streams.
                self.ensure_groups().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e).context("reading the ingest streams"),
        }
    }

    /// Parse, journal, apply, publish and acknowledge one batch of entries.
    async fn process(&mut self, entries: Vec<(String, StreamId)>) -> anyhow::Result<()> {
        let mut dead = redis::pipe();
        let mut acks = Vec::with_capacity(entries.len());
        let mut good = Vec::with_capacity(entries.len());
        for (stream, entry) in entries {
            acks.push((stream.clone(), entry.id.clone()));
            let Some(d) = entry.get::<String>("d") else {
                let reason = "the entry has no field d";
                dead_letter::queue(
                    &mut dead,
                    &self.config.dead_letters,
                    &stream,
                    &entry.id,
                    "",
                    reason,
                );
                continue;
            };
            match ingest::parse(d.as_bytes()) {
                Ok(event) => good.push((
                    Entry {
                        stream,
                        id: entry.id,
                        d,
                    },
                    event,
                )),
                Err(error) => dead_letter::queue(
                    &mut dead,
                    &self.config.dead_letters,
                    &stream,
                    &entry.id,
                    &d,
                    error.reason(),
                ),
            }
        }
        if !good.is_empty() {
            let batch = Batch {
                era: self.era.clone().unwrap_or_default(),
                first: self.last + 1,
                entries: good.iter().map(|(entry, _)| entry.clone()).collect(),
            };
            let journal_id = self.config.journal.append(&mut self.conn, &batch).await?;
            let mut publish = Vec::new();
            for (k, (entry, event)) in good.iter().enumerate() {
                self.apply(
                    batch.first + k as u64,
                    event,
                    entry,
                    &mut publish,
                    &mut dead,
                );
            }
            self.journal_id = Some(journal_id);
            self.publish_durably(publish).await?;
        }
        self.send(dead).await?;
        self.ack(acks.iter().map(|(s, i)| (s.as_str(), i.as_str())))
            .await
    }

    /// Apply event `number`, queueing its effects, or its dead letter.
    fn apply(
        &mut self,
        number: u64,
        event: &IngestEvent,
        entry: &Entry,
        publish: &mut Vec<Publish>,
        dead: &mut redis::Pipeline,
    ) {
        self.last = number;
        let kind = event.body.kind();
        match self.engine.apply(event, now_ms()) {
            Ok(effects) => {
                metrics::counter!("tradecast_ingest_events_total", "type" => kind).increment(1);
                publish.extend(to_batch(effects, Some(number)));
            }
            Err(Rejected::Duplicate) => {
                metrics::counter!("tradecast_ingest_duplicates_total").increment(1);
            }
            Err(Rejected::Invalid(reason)) => {
                let reason = format!("{kind}: {reason}");
                dead_letter::queue(
                    dead,
                    &self.config.dead_letters,
                    &entry.stream,
                    &entry.id,
                    &entry.d,
                    &reason,
                );
            }
        }
    }

    /// Start publishing live figures and go on reading meanwhile: a portfolio's
    /// live figures are tens of messages every push, and waiting for Redis to take
    /// them all would hold up the trade events behind them. One such publish is in
    /// flight at a time, and it completes before anything else is published, so
    /// every channel still gets its messages (and its snapshots) in order.
    async fn publish_live(&mut self, batch: Vec<Publish>) {
        self.live_sent().await;
        let broker = self.broker.clone();
        self.live = Some(tokio::spawn(async move {
            if let Err(error) = broker.publish(batch).await {
                tracing::warn!(%error, "live figures not published");
            }
        }));
    }

    /// Wait until the live figures being published (if any) are with the broker.
    async fn live_sent(&mut self) {
        if let Some(live) = self.live.take() {
            let _ = live.await;
        }
    }

    /// Publish until the broker has it all, as long as we still lead.
    async fn publish_durably(&mut self, batch: Vec<Publish>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.live_sent().await;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.broker.publish(batch.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    metrics::counter!("tradecast_publish_failures_total").increment(1);
                    tracing::warn!(%error, "publishing failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    // Retrying is safe (origins); leading without the lease is not.
                    self.renew().await?;
                }
            }
        }
    }

    /// Run `pipe` (dead letters), if it holds anything.
    async fn send(&mut self, pipe: redis::Pipeline) -> anyhow::Result<()> {
        if !pipe.is_empty() {
            pipe.query_async::<()>(&mut self.conn)
                .await
                .context("writing dead letters")?;
        }
        Ok(())
    }

    async fn ack<'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> anyhow::Result<()> {
        let mut by_stream: HashMap<&str, Vec<&str>> = HashMap::new();
        for (stream, id) in entries {
            by_stream.entry(stream).or_default().push(id);
        }
        if by_stream.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (stream, ids) in by_stream {
            pipe.xack(stream, &self.config.group, &ids).ignore();
        }
        pipe.query_async::<()>(&mut self.conn)
            .await
            .context("acknowledging entries")
    }

    /// Store the engine as of now and trim the journal it covers.
    async fn checkpoint(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let checkpoint = Checkpoint {
            era: self.era.clone().unwrap_or_default(),
            last: self.last,
            journal_id: self.journal_id.clone().unwrap_or_default(),
            engine: self.engine.clone(),
        };
        let bytes = self
            .config
            .journal
            .save_checkpoint(&mut self.conn, &checkpoint)
            .await?;
        self.checkpointed = self.last;
        metrics::gauge!("tradecast_ingest_checkpoint_bytes").set(bytes as f64);
        tracing::debug!(
            last = self.last,
            bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "ingest checkpoint stored"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_follow_redis_cluster_rules() {
        assert_eq!(hash_tag("{tc}:events:{3}"), Some("tc"));
        assert_eq!(hash_tag("tc:events"), None);
        assert_eq!(hash_tag("tc:{}x{y}"), None);
        let cluster = RedisTarget::new("redis://127.0.0.1:7000", true);
        let engine = EngineConfig::default();
        assert!(
            LeaderConfig::new(cluster.clone(), StreamLayout::default(), engine.clone())
                .validate()
                .is_err()
        );
        let tagged = StreamLayout {
            events: "{tc}:events".into(),
            ticks: "{tc}:ticks".into(),
            partitions: 4,
        };
        assert!(
            LeaderConfig::new(cluster, tagged, engine)
                .validate()
                .is_ok()
        );
    }
}
