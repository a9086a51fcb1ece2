//! The process allocator, jemalloc, and what it reports as metrics.
//!
//! A node allocates and frees small buffers at a high rate on every worker thread:
//! frames, queued messages, the state of connections that come and go. With glibc's
//! malloc the 30-minute soak (`bench/results/soak-10k.md`) saw the node's RSS keep
//! rising after warm-up while what it holds stayed flat. jemalloc keeps
//! fragmentation low with size-class slabs and hands unused pages back to the OS
//! after a decay time, so RSS follows what the node really holds.

use std::time::Duration;

use tikv_jemalloc_ctl::{epoch, stats};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How often the allocator's figures are read.
const EVERY: Duration = Duration::from_secs(5);

/// Report `tradecast_memory_allocated_bytes` (what the node holds) and
/// `tradecast_memory_resident_bytes` (the allocator's pages in RAM) every few
/// seconds, for as long as the runtime runs.
pub fn spawn_metrics() {
    tokio::spawn(async {
        let mut every = tokio::time::interval(EVERY);
        loop {
            every.tick().await;
            // jemalloc's statistics are a snapshot taken when the epoch advances.
            if epoch::advance().is_err() {
                continue;
            }
            if let (Ok(allocated), Ok(resident)) =
                (stats::allocated::read(), stats::resident::read())
            {
                metrics::gauge!("tradecast_memory_allocated_bytes").set(allocated as f64);
                metrics::gauge!("tradecast_memory_resident_bytes").set(resident as f64);
            }
        }
    });
}
