//! The dead-letter stream: entries that cannot be applied, with the reason.
//!
//! A bad entry never stops the pipeline and is never dropped silently: it is
//! copied to `tc:dead` with `reason`, the `stream` and `id` it came from and the
//! original `d`, counted in `tradecast_ingest_dead_letters_total`, and acknowledged.

use redis::Pipeline;

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
    pipe.xadd(
        dead_stream,
        "*",
        &[("reason", reason), ("stream", stream), ("id", id), ("d", d)],
    )
    .ignore();
}
