//! The tradecast wire protocol and ingest contract, as plain types with no I/O.
//!
//! - [`channel`]: channel names (`portfolio:42`, `prices:forex`, …), roles and the
//!   authorization rule "who may read what".
//! - [`client`]: requests a WebSocket client sends (`subscribe`, `ping`, …).
//! - [`server`]: control replies the gateway sends (`welcome`, `subscribed`, `error`, …).
//! - [`ingest`]: the events a trade-server plugin writes into Redis Streams.
//!
//! Channel messages themselves (`position_opened`, `price`, …) are built by the domain
//! core as JSON bytes; this crate only fixes their envelope (see [`server::stamp_seq`]).

pub mod channel;
pub mod client;
pub mod ingest;
pub mod server;

pub use channel::{Channel, Principal, Role};
