//! The leader's write-ahead journal and checkpoint: domain state that outlives
//! the node applying it.
//!
//! Before the leader publishes the effects of a batch of entries, it appends the
//! batch to the journal stream: the number of its first event and the raw entries
//! in the order it will apply them. Every few seconds it stores a checkpoint (the
//! whole engine, serialized, plus the number of the last event in it and the last
//! journal id it covers) and trims the journal up to it.
//!
//! A node that takes over loads the checkpoint and re-applies the journal after
//! it in the same order, so it rebuilds exactly the state the dead leader had and
//! produces exactly the same effects with the same origins; the channels recognise
//! every message they already took (see `tradecast_broker::Publish::Durable`), so
//! nothing is published twice and nothing the dead node did not publish is lost.

use redis::AsyncCommands;
use redis::streams::{StreamRangeReply, StreamTrimOptions, StreamTrimmingMode};
use serde::{Deserialize, Serialize};
use tradecast_broker::RedisConn;
use tradecast_core::Engine;

/// One raw stream entry as the leader applied it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub stream: String,
    pub id: String,
    /// The entry's `d` field.
    pub d: String,
}

/// A journal record: entries numbered `first`, `first + 1`, … in applying order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    /// The history this numbering belongs to (see [`Checkpoint::era`]).
    pub era: String,
    pub first: u64,
    pub entries: Vec<Entry>,
}

/// The engine as of event number `last`, covering the journal up to `journal_id`.
#[derive(Serialize, Deserialize)]
pub struct Checkpoint {
    /// One history of the domain state: drawn when a leader starts from nothing.
    /// Event numbers only compare within one era.
    pub era: String,
    pub last: u64,
    pub journal_id: String,
    pub engine: Engine,
}

/// Where the journal and checkpoint live (one hash tag: one Redis Cluster slot).
#[derive(Debug, Clone)]
pub struct Journal {
    pub stream: String,
    pub checkpoint: String,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            stream: "{tc:ingest}:journal".into(),
            checkpoint: "{tc:ingest}:checkpoint".into(),
        }
    }
}

impl Journal {
    /// Append `batch`; returns its journal id.
    pub async fn append(&self, conn: &mut RedisConn, batch: &Batch) -> anyhow::Result<String> {
        let body = serde_json::to_string(batch)?;
        let id: String = conn.xadd(&self.stream, "*", &[("b", body)]).await?;
        Ok(id)
    }

    /// The batches after journal id `after` (`None`: all), oldest first.
    pub async fn after(
        &self,
        conn: &mut RedisConn,
        after: Option<&str>,
    ) -> anyhow::Result<Vec<(String, Batch)>> {
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let reply: StreamRangeReply = conn.xrange(&self.stream, start, "+").await?;
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let body: String = entry
                    .get("b")
                    .ok_or_else(|| anyhow::anyhow!("journal entry {} has no batch", entry.id))?;
                Ok((entry.id, serde_json::from_str(&body)?))
            })
            .collect()
    }

    /// Is there a checkpoint (has this deployment's state been stored)?
    pub async fn has_checkpoint(&self, conn: &mut RedisConn) -> anyhow::Result<bool> {
        Ok(conn.exists(&self.checkpoint).await?)
    }

    pub async fn load_checkpoint(
        &self,
        conn: &mut RedisConn,
    ) -> anyhow::Result<Option<Checkpoint>> {
        let body: Option<Vec<u8>> = conn.get(&self.checkpoint).await?;
        Ok(match body {
            Some(body) => Some(serde_json::from_slice(&body)?),
            None => None,
        })
    }

    /// Store `checkpoint` and drop the journal it covers.
    pub async fn save_checkpoint(
        &self,
        conn: &mut RedisConn,
        checkpoint: &Checkpoint,
    ) -> anyhow::Result<usize> {
        let body = serde_json::to_vec(checkpoint)?;
        let size = body.len();
        let _: () = conn.set(&self.checkpoint, body).await?;
        if !checkpoint.journal_id.is_empty() {
            let trim =
                StreamTrimOptions::minid(StreamTrimmingMode::Exact, checkpoint.journal_id.clone());
            let _: usize = conn.xtrim_options(&self.stream, &trim).await?;
        }
        Ok(size)
    }
}
