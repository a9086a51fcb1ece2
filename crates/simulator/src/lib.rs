//! A small simulated MT5 broker that emits tradecast ingest events.
//!
//! The simulator plays the trade-server plugin of DESIGN.md ("Ingest contract"): it
//! produces the JSON objects a plugin would XADD into Redis Streams, with the field
//! names and units of trading-domain.md §6.4. `tradecast demo` feeds them into the
//! gateway's in-process pipeline; `tradecast simulate` writes them into Redis.
//!
//! The broker is small but alive: a dozen FX symbols (and gold) random-walk tick by
//! tick, twenty traders under a three-level IB tree open, adjust and close positions,
//! move money in and out, new clients join and, now and then, someone gets a margin
//! call. Everything is driven by the caller's clock and one seeded random generator:
//!
//! ```
//! use tradecast_simulator::{SimConfig, Simulator};
//!
//! let mut sim = Simulator::new(SimConfig::default());
//! let mut events = sim.bootstrap(1_700_000_000_000);
//! for step in 1..=10 {
//!     events.extend(sim.step(1_700_000_000_000 + step * 100));
//! }
//! assert!(events.iter().any(|e| e["type"] == "tick"));
//! ```
//!
//! The same seed and the same clock readings always yield the same events.

mod account;
mod config;
mod funding;
mod instrument;
mod margin_call;
mod market;
mod names;
mod network;
mod onboarding;
mod outbox;
mod poisson;
mod simulator;
mod tickets;
mod trade;

pub use config::SimConfig;
pub use simulator::{Identities, Simulator};
