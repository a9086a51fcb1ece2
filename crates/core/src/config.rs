//! Tunables of the domain engine.

use serde::{Deserialize, Serialize};

/// How the [`Engine`](crate::Engine) pays IBs and paces live figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Commission per lot by IB level: index 0 is the client's direct IB, index 1 its
    /// parent, and the last entry repeats for every level above (`--ib-plan 5,1,0.5`).
    pub ib_plan: Vec<f64>,
    /// Minimum time between two live `position_update`/`account_update` pushes for one
    /// account.
    pub live_interval_ms: u64,
    /// Minimum time between two `exposure` tables.
    pub exposure_interval_ms: u64,
    /// A trade deal of at least this many lots raises a `large_deal` alert.
    pub large_deal_lots: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ib_plan: vec![5.0, 1.0, 0.5],
            live_interval_ms: 250,
            exposure_interval_ms: 1000,
            large_deal_lots: 50.0,
        }
    }
}

impl EngineConfig {
    /// The plan's commission per lot for an IB at `level` (1 = direct IB), or 0 when
    /// the plan is empty.
    pub fn per_lot(&self, level: u32) -> f64 {
        let index = (level.max(1) as usize - 1).min(self.ib_plan.len().saturating_sub(1));
        self.ib_plan.get(index).copied().unwrap_or(0.0)
    }
}
