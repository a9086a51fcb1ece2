//! New clients joining the IB tree.

use crate::account::{Account, FIRST_LOGIN};
use crate::simulator::Simulator;

/// The client base grows to at most this many times [`SimConfig::traders`].
///
/// [`SimConfig::traders`]: crate::SimConfig::traders
const GROWTH_LIMIT: usize = 4;

impl Simulator {
    /// A new client registers through a random IB: an `account` (unfunded; a later
    /// deposit funds it) and the `ib_link` that places it in the tree. False once the
    /// client base has reached its limit.
    pub(crate) fn join(&mut self) -> bool {
        if self.accounts.len() >= self.config.traders.max(1) * GROWTH_LIMIT {
            return false;
        }
        let login = FIRST_LOGIN + self.accounts.len() as u64;
        let ib = self.network.pick(&mut self.rng);
        self.accounts.push(Account::open(login, ib, &mut self.rng));
        self.push_account(self.accounts.len() - 1);
        self.push_ib_link(login, ib);
        true
    }
}
