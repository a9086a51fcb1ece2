//! The producer side: XADD ingest events into the streams, as a trade-server plugin
//! would.
//!
//! Each event becomes one stream entry with a single field `d` holding the event's
//! JSON, in the stream [`StreamLayout::stream_for`] picks for it:
//!
//! ```text
//! XADD tc:events MAXLEN ~ 1000000 * d {"v":1,"type":"deal","src":"mt5-live-01",...}
//! ```
//!
//! A [`StreamWriter`] sends a whole batch in one pipeline, so a thousand events cost one
//! network round trip instead of a thousand. Redis runs the commands of a pipeline in
//! the order they were sent, so the entries of one stream keep the order of the batch,
//! which is what keeps one account's events in order across partitions.
//!
//! [`write`](StreamWriter::write) validates every event with the same parser the gateway
//! uses ([`tradecast_protocol::ingest::parse_value`]) and refuses a batch with a bad
//! event before sending anything: the gateway would only dead-letter it.
//! [`write_raw`](StreamWriter::write_raw) writes any `d` as it is, for tests and tools
//! that exercise the dead-letter path on purpose.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tradecast_broker::{RedisConn, RedisTarget};
use tradecast_protocol::ingest;

use crate::layout::StreamLayout;

/// An event of a batch that [`StreamWriter::write`] refused, and why.
///
/// It reaches the caller inside an [`anyhow::Error`]; `downcast_ref::<InvalidEvent>()`
/// tells it apart from a Redis failure (a bad event is never worth retrying).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index} of the batch is invalid: {reason}")]
pub struct InvalidEvent {
    /// Position in the batch, from 0.
    pub index: usize,
    /// The parser's reason, as the dead-letter stream would record it.
    pub reason: String,
}

/// Writes ingest events into Redis Streams.
///
/// It holds a [`RedisConn`]: a connection (to a server or a cluster) that
/// reconnects by itself after Redis restarts. A write that fails while the
/// connection is down returns the error; the next one uses the new connection.
/// On a cluster, the streams one batch writes to must share a hash tag.
pub struct StreamWriter {
    conn: RedisConn,
    layout: StreamLayout,
    maxlen: Option<usize>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("layout", &self.layout)
            .field("maxlen", &self.maxlen)
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    /// Connects to the Redis at `url` (e.g. `redis://127.0.0.1:6379/0`).
    ///
    /// With `maxlen = Some(n)` every XADD also trims its stream to about `n` entries
    /// (`MAXLEN ~ n`: Redis trims whole radix-tree nodes, which is much cheaper than an
    /// exact length). Without it the streams grow until something else trims them.
    pub async fn connect(
        url: &str,
        layout: StreamLayout,
        maxlen: Option<usize>,
    ) -> anyhow::Result<Self> {
        Self::connect_to(&RedisTarget::new(url, false), layout, maxlen).await
    }

    /// Connects to a Redis server or cluster.
    pub async fn connect_to(
        target: &RedisTarget,
        layout: StreamLayout,
        maxlen: Option<usize>,
    ) -> anyhow::Result<Self> {
        let conn = target
            .connect(Duration::from_secs(10))
            .await
            .with_context(|| format!("connecting to Redis at {}", target.redacted()))?;
        Ok(StreamWriter {
            conn,
            layout,
            maxlen,
        })
    }

    /// The streams this writer writes to.
    pub fn layout(&self) -> &StreamLayout {
        &self.layout
    }

    /// Validates `events` and appends each to its stream, in order, in one round trip.
    /// Returns the new entry ids, one per event.
    ///
    /// If any event is invalid nothing is written, and the error (an [`InvalidEvent`])
    /// names its index and the reason. An empty batch writes nothing and costs no
    /// round trip.
    pub async fn write(&mut self, events: &[Value]) -> anyhow::Result<Vec<String>> {
        let entries = plan(&self.layout, events)?;
        self.send(&entries).await
    }

    /// Appends one entry with field `d` = `d` to `stream`, unchecked: `d` need not be
    /// JSON at all. Returns the entry id.
    pub async fn write_raw(&mut self, stream: &str, d: &str) -> anyhow::Result<String> {
        let entry = Entry {
            stream: stream.to_owned(),
            d: d.to_owned(),
        };
        let mut ids = self.send(std::slice::from_ref(&entry)).await?;
        ids.pop().context("Redis answered XADD with no entry id")
    }

    /// One pipeline with an XADD per entry.
    async fn send(&mut self, entries: &[Entry]) -> anyhow::Result<Vec<String>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for entry in entries {
            let cmd = pipe.cmd("XADD").arg(&entry.stream);
            if let Some(maxlen) = self.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(maxlen);
            }
            cmd.arg("*").arg("d").arg(&entry.d);
        }
        let ids: Vec<String> = pipe.query_async(&mut self.conn).await.with_context(|| {
            let streams = distinct(entries.iter().map(|e| e.stream.as_str()));
            format!(
                "XADD of {} entries to {}",
                entries.len(),
                streams.join(", ")
            )
        })?;
        anyhow::ensure!(
            ids.len() == entries.len(),
            "Redis answered {} XADDs with {} entry ids",
            entries.len(),
            ids.len()
        );
        Ok(ids)
    }
}

/// One stream entry about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    stream: String,
    /// The `d` field.
    d: String,
}

/// Validates a batch and decides where each event goes; no I/O.
///
/// `d` is the event as given (re-serialised compactly), not the parsed form, so fields
/// the gateway does not know yet still reach it.
fn plan(layout: &StreamLayout, events: &[Value]) -> Result<Vec<Entry>, InvalidEvent> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let parsed = ingest::parse_value(event.clone()).map_err(|e| InvalidEvent {
                index,
                reason: e.reason().to_owned(),
            })?;
            Ok(Entry {
                stream: layout.stream_for(&parsed.body),
                d: event.to_string(),
            })
        })
        .collect()
}

/// The distinct names, in first-seen order (for error messages).
fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tick(seq: u64) -> Value {
        json!({"v":1,"type":"tick","src":"s","seq":seq,"ts":1,"symbol":"EURUSD","bid":1.1,"ask":1.2})
    }

    fn ib_link(seq: u64, login: u64) -> Value {
        json!({"v":1,"type":"ib_link","src":"s","seq":seq,"ts":1,"op":"set","login":login,"ib":900001})
    }

    #[test]
    fn routes_each_event_to_its_stream_in_order() {
        let layout = StreamLayout {
            partitions: 4,
            ..StreamLayout::default()
        };
        let batch = [ib_link(1, 10), tick(2), ib_link(3, 11), ib_link(4, 14)];
        let entries = plan(&layout, &batch).expect("valid batch");
        let streams: Vec<&str> = entries.iter().map(|e| e.stream.as_str()).collect();
        assert_eq!(
            streams,
            [
                "tc:events:{2}",
                "tc:ticks",
                "tc:events:{3}",
                "tc:events:{2}"
            ]
        );
        let d: Value = serde_json::from_str(&entries[1].d).expect("d is JSON");
        assert_eq!(d, batch[1]);
    }

    #[test]
    fn keeps_fields_the_parser_does_not_know() {
        let mut event = tick(1);
        event["plugin_build"] = json!(4150);
        let entries = plan(&StreamLayout::default(), &[event]).expect("valid");
        assert!(entries[0].d.contains(r#""plugin_build":4150"#));
    }

    #[test]
    fn refuses_a_batch_with_one_bad_event_naming_it() {
        let mut bad = ib_link(2, 10);
        bad.as_object_mut().expect("object").remove("ib");
        let error =
            plan(&StreamLayout::default(), &[tick(1), bad, tick(3)]).expect_err("bad event");
        assert_eq!(
            error,
            InvalidEvent {
                index: 1,
                reason: "ib_link: missing field ib".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "event 1 of the batch is invalid: ib_link: missing field ib"
        );
    }

    #[test]
    fn distinct_keeps_first_seen_order() {
        assert_eq!(distinct(["b", "a", "b", "c"].into_iter()), ["b", "a", "c"]);
    }
}
