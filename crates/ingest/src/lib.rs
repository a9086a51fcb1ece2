//! Redis Streams ingest.
//!
//! A trade-server plugin XADDs one entry per event, with a single field `d` holding
//! the event's JSON (see `docs/events.md`). Trade events go to `tc:events` or, split
//! by `login mod N`, to the partitions `tc:events:{0}` … `tc:events:{N-1}`, so one
//! account's events stay in order; ticks go to `tc:ticks`.
//!
//! ```text
//!  plugin ─XADD─▶ streams ─XREADGROUP─▶ leader: parse ─▶ journal ─▶ engine ─▶ broker ─▶ XACK
//!                                          └─ bad entry ─▶ tc:dead
//! ```
//!
//! - [`layout`]: stream names and which stream an event belongs in.
//! - [`writer`]: the producer side (`tradecast publish`, `tradecast simulate`, and
//!   `POST /v1/events` on a Redis-backed node).
//! - [`lease`]: which node applies the streams.
//! - [`leader`]: the reader loop on the lease holder.
//! - [`journal`]: write-ahead journal and checkpoint, so the state survives the leader.
//! - [`effects`]: engine effects to broker publishes, with replay-proof origins.
//! - [`dead_letter`]: where bad entries go.

pub mod dead_letter;
pub mod effects;
pub mod journal;
pub mod layout;
pub mod leader;
pub mod lease;
pub mod writer;

pub use layout::StreamLayout;
pub use leader::LeaderConfig;
