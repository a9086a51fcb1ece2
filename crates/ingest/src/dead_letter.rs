//! The dead-letter stream: entries that cannot be applied, with the reason.
//!
//! A bad entry never stops the pipeline and is never dropped silently: it is
//! copied to `tc:dead` with `reason`, the `stream` and `id` it came from and the
//! original `d`, counted in `tradecast_ingest_dead_letters_total`, and acknowledged.

use redis::Pipeline;

/// The dead-letter stream keeps about this many entries (the oldest go first).
pub const KEEP: usize = 100_000;

/// Queue the dead letter for `stream`/`id` into `pipe`.
pub fn queue(
    pipe: &mut Pipeline,
    dead_stream: &str,
    stream: &str,
    id: &str,
    d: &str,
    reason: &str,
) {
    tracing::warn!(stream, id, reason, "ingest entry dead-lettered");
    metrics::counter!("tradecast_ingest_dead_letters_total").increment(1);
    pipe.cmd("XADD")
        .arg(dead_stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(KEEP)
        .arg("*")
        .arg(&[("reason", reason), ("stream", stream), ("id", id), ("d", d)])
        .ignore();
}
