//! Margin calls: the server's warning that an account's equity barely covers its margin.

use serde_json::json;

use crate::simulator::{CLIENT_GROUP, Simulator};

/// Margin level (equity ÷ margin, in %) at which the group calls margin.
pub(crate) const MARGIN_CALL_LEVEL: f64 = 100.0;

/// Margin level at which the server would start closing positions.
pub(crate) const STOP_OUT_LEVEL: f64 = 50.0;

/// Below this margin level an account counts as at risk and gets the call.
const AT_RISK_LEVEL: f64 = 150.0;

/// Chance that, with nobody at risk, a random trader gets a call anyway, so a demo's
/// risk desk sees alerts now and then.
const SURPRISE_CHANCE: f64 = 0.25;

impl Simulator {
    /// A trader in margin call leaves it; otherwise the trader with the lowest margin
    /// level enters one if at risk, or, rarely, a random trader with positions does.
    /// False when nothing happens.
    pub(crate) fn margin_call(&mut self) -> bool {
        if let Some(index) = self.accounts.iter().position(|a| a.in_margin_call) {
            self.push_margin_call(index, false);
            return true;
        }
        let exposed: Vec<(usize, f64)> = (0..self.accounts.len())
            .filter(|&i| !self.accounts[i].positions.is_empty())
            .map(|i| (i, self.accounts[i].margin_level(&self.market)))
            .collect();
        let Some(&(lowest, level)) = exposed.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else {
            return false;
        };
        let index = if level < AT_RISK_LEVEL {
            lowest
        } else if self.rng.f64() < SURPRISE_CHANCE {
            exposed[self.rng.usize(..exposed.len())].0
        } else {
            return false;
        };
        self.push_margin_call(index, true);
        true
    }

    fn push_margin_call(&mut self, index: usize, enter: bool) {
        let account = &mut self.accounts[index];
        account.in_margin_call = enter;
        let event = json!({
            "op": if enter { "enter" } else { "leave" },
            "login": account.login,
            "equity": account.equity(&self.market),
            "margin": account.margin(&self.market),
            "margin_level": account.margin_level(&self.market),
            "threshold": MARGIN_CALL_LEVEL,
            "group": CLIENT_GROUP,
        });
        self.outbox.push("margin_call", event);
    }
}
