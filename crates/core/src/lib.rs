//! The pure trading domain of tradecast: portfolios and their live valuation, orders,
//! the IB tree and commissions, exposure and alerts.
//!
//! Nothing here does I/O, spawns tasks or reads a clock. The pipeline feeds validated
//! ingest events to [`Engine::apply`] and calls [`Engine::flush_live`] on a short
//! timer; both return [`Effect`]s (durable messages with their channel snapshot,
//! ephemeral latest-value messages, snapshot refreshes) for the delivery layer to
//! publish in order. Every message is a flat JSON object that starts with `type` and
//! `channel`, serialized once.
//!
//! - [`engine`]: the state machine and the routing of events to channels.
//! - [`portfolio`]: accounts, positions and the profit / equity / margin formulas.
//! - [`market`]: symbol registry, last prices and currency conversion.
//! - [`orders`], [`ib`], [`alerts`], [`exposure`]: the other channels' state.
//! - [`dedup`]: idempotency by (`src`, `seq`) and by deal ticket.
//! - [`money`]: volume and money units.

pub mod alerts;
pub mod config;
pub mod dedup;
pub mod effect;
pub mod engine;
pub mod exposure;
mod hash;
pub mod ib;
pub mod market;
pub mod money;
pub mod orders;
pub mod portfolio;

pub use config::EngineConfig;
pub use effect::{Effect, Rejected};
pub use engine::Engine;
