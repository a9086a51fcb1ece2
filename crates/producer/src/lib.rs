//! # tradecast-producer
//!
//! The library a MetaTrader 4/5 trade-server plugin links to feed tradecast: a C ABI
//! (`include/tradecast_producer.h`, plus the C++ wrapper `tradecast_producer.hpp`)
//! over a Rust core that never blocks the trade server.
//!
//! ```text
//!  OnDealAdd ──┐ tc_publish_deal: validate, copy into a bounded queue, return (~100 ns)
//!  OnTick ─────┼──────────────▶ [ queue ] ──▶ writer thread ──▶ Redis Streams
//!  ...        ─┘                               │  seq, JSON,      (pipelined, idempotent)
//!                                              ▼  batches
//!                                           spool (append-only files) while Redis is down
//! ```
//!
//! - **Publish** (`tc_publish_*`, [`Producer::publish_deal`], …) validates the MT5
//!   record, copies it into a bounded queue and returns a code. No I/O, no blocking:
//!   when the queue is full the call returns `TC_ERR_FULL` at once.
//! - **The writer thread** gives each event the next `seq` of its source (persisted:
//!   a restart continues the count), serialises the ingest JSON of `docs/events.md`
//!   and XADDs batches in one pipeline to the right stream (`<events>:{login mod N}`,
//!   ticks to the tick stream), field `d`, with `emit_ts`.
//! - **Redis down**: batches go to the spool ([`spool`]) and are replayed in order,
//!   before newer events, when Redis is back; a restarted process replays what the
//!   previous one left. Deliveries are idempotent ([`sink`]): a batch whose reply was
//!   lost is resent without creating duplicates, so every event lands exactly once.
//!
//! The plugin guide is `docs/plugin.md`.

pub mod event;
pub mod ffi;
mod producer;
pub mod records;
pub mod sink;
pub mod spool;
mod state;
mod writer;

pub use event::Event;
pub use producer::{
    FlushError, Fsync, LogFn, LogLevel, OpenError, Producer, ProducerConfig, PublishError, Stats,
};
pub use records::*;
