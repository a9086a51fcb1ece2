//! Deposits and withdrawals: balance deals.

use std::ops::RangeInclusive;

use serde_json::json;

use crate::account::cents;
use crate::simulator::Simulator;

/// A deposit is 500 to 5,000 USD, in hundreds.
const DEPOSIT_HUNDREDS: RangeInclusive<u32> = 5..=50;

/// Chance that a funded trader withdraws rather than deposits.
const WITHDRAWAL_CHANCE: f64 = 0.35;

/// Largest share of free margin a withdrawal takes.
const WITHDRAWAL_SHARE: f64 = 0.25;

/// Smaller withdrawals are not worth the wire fee; the trader deposits instead.
const MIN_WITHDRAWAL: f64 = 50.0;

impl Simulator {
    /// A client who joined but has not funded their account yet deposits; otherwise a
    /// random trader deposits or withdraws.
    pub(crate) fn fund_random(&mut self) {
        let index = self
            .accounts
            .iter()
            .position(|a| a.balance == 0.0 && a.positions.is_empty())
            .unwrap_or_else(|| self.rng.usize(..self.accounts.len()));
        let free_margin = self.accounts[index].free_margin(&self.market);
        let withdrawal = (free_margin * WITHDRAWAL_SHARE * self.rng.f64() / 10.0).floor() * 10.0;
        let amount = if withdrawal >= MIN_WITHDRAWAL && self.rng.f64() < WITHDRAWAL_CHANCE {
            -withdrawal
        } else {
            f64::from(self.rng.u32(DEPOSIT_HUNDREDS) * 100)
        };
        self.balance_deal(index, amount);
    }

    /// Adds `amount` (negative: a withdrawal) to trader `index`'s balance: a `deal`
    /// with action `balance` whose `profit` holds the amount (the MT5 convention; no
    /// symbol, no volume), then the `account` with the new balance.
    pub(crate) fn balance_deal(&mut self, index: usize, amount: f64) {
        let account = &mut self.accounts[index];
        account.balance = cents(account.balance + amount);
        let comment = if amount >= 0.0 {
            "deposit"
        } else {
            "withdrawal"
        };
        let deal = json!({
            "login": account.login,
            "deal": self.tickets.deal(),
            "action": "balance",
            "entry": "in",
            "profit": amount,
            "comment": comment,
        });
        self.outbox.push("deal", deal);
        self.push_account(index);
    }
}
