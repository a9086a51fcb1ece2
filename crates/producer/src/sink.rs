//! Writing records into Redis: pipelined, idempotent batches.
//!
//! Each batch is one pipeline with one `EVALSHA` per (stream, source) it touches.
//! The script XADDs the entries (`XADD <stream> [MAXLEN ~ n] * d <json>`) in order,
//! but only those whose `seq` is above the source's high-water mark for that stream,
//! which it keeps in a hash next to the stream (`<stream>:producers`, field = src),
//! and it does both atomically. So when a batch fails without an answer (the
//! connection dropped after Redis ran it, a timeout), sending it again, from memory
//! or later from the spool, adds nothing twice: every event lands exactly once.
//!
//! The hash key carries the stream's Redis Cluster hash tag (`tc:events:{3}` →
//! `tc:events:{3}:producers`; a name without one, `tc:events`, gets
//! `{tc:events}:producers`), so the two keys always live in one slot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{Client, Connection, RedisError, Value};

use crate::spool::Record;

/// The idempotent append. KEYS: stream, high-water hash. ARGV: src, maxlen (0:
/// none), then seq, d pairs in seq order. Returns how many entries it added.
const APPEND: &str = r#"
local hwm = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local maxlen = tonumber(ARGV[2])
local added = 0
local last = nil
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i]) > hwm then
    if maxlen > 0 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i + 1])
    else
      redis.call('XADD', KEYS[1], '*', 'd', ARGV[i + 1])
    end
    hwm = tonumber(ARGV[i])
    last = ARGV[i]
    added = added + 1
  end
end
if last then redis.call('HSET', KEYS[2], ARGV[1], last) end
return added
"#;

/// Entries per script call: bounds how long one call holds Redis.
const PER_CALL: usize = 256;

/// The high-water hash of a stream: same hash slot as the stream.
pub fn hwm_key(stream: &str) -> String {
    let tagged = stream
        .find('{')
        .and_then(|open| stream[open + 1..].find('}').map(|len| len > 0))
        .unwrap_or(false);
    if tagged {
        format!("{stream}:producers")
    } else {
        format!("{{{stream}}}:producers")
    }
}

/// What a delivered batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Entries added to the streams.
    pub added: u64,
    /// Entries skipped because Redis already had them (a resend).
    pub skipped: u64,
}

/// A live connection with the script loaded.
pub struct Sink {
    conn: Connection,
    sha: String,
    maxlen: u64,
    hwm_keys: HashMap<Arc<str>, String>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("sha", &self.sha)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Connect (bounded by `connect_timeout`), set the I/O timeouts, load the script.
    pub fn connect(
        client: &Client,
        connect_timeout: Duration,
        io_timeout: Duration,
        maxlen: u64,
    ) -> Result<Sink, RedisError> {
        let mut conn = client.get_connection_with_timeout(connect_timeout)?;
        conn.set_read_timeout(Some(io_timeout))?;
        conn.set_write_timeout(Some(io_timeout))?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(APPEND)
            .query(&mut conn)?;
        Ok(Sink {
            conn,
            sha,
            maxlen,
            hwm_keys: HashMap::new(),
        })
    }

    /// The high-water marks Redis holds for `srcs` on `streams` (0 when none).
    pub fn high_water(&mut self, streams: &[Arc<str>], srcs: &[&str]) -> Result<u64, RedisError> {
        let mut pipe = redis::pipe();
        for stream in streams {
            for src in srcs {
                pipe.cmd("HGET").arg(hwm_key(stream)).arg(*src);
            }
        }
        let values: Vec<Option<u64>> = pipe.query(&mut self.conn)?;
        Ok(values.into_iter().flatten().max().unwrap_or(0))
    }

    /// The high-water mark of one source over `streams`.
    pub fn high_water_of(&mut self, streams: &[Arc<str>], src: &str) -> Result<u64, RedisError> {
        self.high_water(streams, &[src])
    }

    /// Deliver `records` (in seq order per source) in one pipeline. On any error
    /// nothing is known about which entries landed: resend them all.
    pub fn deliver(&mut self, records: &[Record]) -> Result<Delivered, RedisError> {
        if records.is_empty() {
            return Ok(Delivered::default());
        }
        // Group by (stream, src), keeping each group's order; few groups per batch.
        let mut groups: Vec<(&Arc<str>, &Arc<str>, Vec<&Record>)> = Vec::new();
        for r in records {
            match groups
                .iter_mut()
                .find(|(stream, src, _)| **stream == r.stream && **src == r.src)
            {
                Some((_, _, list)) => list.push(r),
                None => groups.push((&r.stream, &r.src, vec![r])),
            }
        }
        let mut pipe = redis::pipe();
        let mut calls = 0usize;
        for (stream, src, list) in &groups {
            let key = self
                .hwm_keys
                .entry(Arc::clone(stream))
                .or_insert_with(|| hwm_key(stream));
            for chunk in list.chunks(PER_CALL) {
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(&self.sha)
                    .arg(2)
                    .arg(&***stream)
                    .arg(&*key)
                    .arg(&***src)
                    .arg(self.maxlen);
                for r in chunk {
                    cmd.arg(r.seq).arg(&r.d);
                }
                calls += 1;
            }
        }
        let replies: Vec<Value> = pipe.query(&mut self.conn)?;
        let mut added = 0u64;
        for reply in replies.iter().take(calls) {
            if let Value::Int(n) = reply {
                added += *n as u64;
            }
        }
        Ok(Delivered {
            added,
            skipped: records.len() as u64 - added.min(records.len() as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_water_hash_shares_the_streams_slot() {
        assert_eq!(hwm_key("tc:events:{3}"), "tc:events:{3}:producers");
        assert_eq!(hwm_key("{tc}:ticks"), "{tc}:ticks:producers");
        assert_eq!(hwm_key("tc:events"), "{tc:events}:producers");
    }
}
