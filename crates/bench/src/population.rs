//! Who connects: traders, introducing brokers and risk managers in a broker's
//! proportions (about 90 % / 8 % / 2 %), each a distinct user.
//!
//! Trader `t` is login `100_001 + t`. IBs form a tree five levels deep: every
//! level-1 IB has `traders_per_ib` traders under it, every IB above has 2 IBs of the
//! level below, so each trader's chain (direct IB, its parent, …) has five IBs and a
//! closing deal pays five commissions. IB `j` of level `l` is `900_000 + 100_000 l + j`.
//! The tree is wide rather than tall (2 IBs under each IB above level 1): the node
//! rebuilds an IB's `network_full` snapshot on every change below it, so the cost of
//! one `ib_link` grows with the downlines above it.
//! Risk managers are staff ids 1, 2, …: they get the `exposure` and `alerts`
//! firehose, so they stay few.

use serde_json::{Value, json};
use tradecast_protocol::Role;

use crate::worker::UserRange;

pub const FIRST_TRADER: u64 = 100_001;
const IB_BASE: u64 = 900_000;
const FIRST_ADMIN: u64 = 1;
/// Levels of every IB chain.
pub const DEPTH: usize = 5;
/// IBs of the level below under each IB of level 2 and up.
const FANOUT: usize = 2;

#[derive(Debug, Clone, Copy)]
pub struct Population {
    pub traders: usize,
    pub traders_per_ib: usize,
    pub admins: usize,
}

impl Population {
    /// About `total` connections: 2 % admins (at least one), about 8 % IBs (at least
    /// one chain of five), the rest traders.
    pub fn of(total: usize) -> Population {
        let admins = (total * 2 / 100).max(1);
        let ib_budget = (total * 8 / 100).max(DEPTH);
        let mut traders = total.saturating_sub(admins + ib_budget).max(1);
        let mut traders_per_ib = 1;
        while ibs(traders, traders_per_ib) > ib_budget {
            traders_per_ib += 1;
        }
        // Give the IBs the tree did not need back to the traders.
        while traders + 1 + admins + ibs(traders + 1, traders_per_ib) <= total {
            traders += 1;
        }
        Population {
            traders,
            traders_per_ib,
            admins,
        }
    }

    pub fn ibs_at(&self, level: usize) -> usize {
        self.traders
            .div_ceil(self.traders_per_ib * FANOUT.pow(level as u32 - 1))
    }

    pub fn ibs(&self) -> usize {
        ibs(self.traders, self.traders_per_ib)
    }

    pub fn trader(&self, t: usize) -> u64 {
        FIRST_TRADER + t as u64
    }

    fn ib(level: usize, j: usize) -> u64 {
        IB_BASE + 100_000 * level as u64 + j as u64
    }

    /// The IB chain of trader `t`, direct IB first.
    pub fn chain(&self, t: usize) -> [u64; DEPTH] {
        std::array::from_fn(|l| Self::ib(l + 1, t / (self.traders_per_ib * FANOUT.pow(l as u32))))
    }

    /// Every user, as ranges of consecutive ids: traders, the IBs level by level, admins.
    pub fn ranges(&self) -> Vec<UserRange> {
        let mut ranges = vec![UserRange {
            role: Role::Client,
            first: FIRST_TRADER,
            count: self.traders,
        }];
        for level in 1..=DEPTH {
            ranges.push(UserRange {
                role: Role::Ib,
                first: Self::ib(level, 0),
                count: self.ibs_at(level),
            });
        }
        ranges.push(UserRange {
            role: Role::Admin,
            first: FIRST_ADMIN,
            count: self.admins,
        });
        ranges
    }

    /// Set-up event bodies: an `account` per trader, then the IB tree (`ib_link`s
    /// from the top down, then each trader under its direct IB).
    pub fn setup_events(&self) -> Vec<Value> {
        let mut events: Vec<Value> = (0..self.traders)
            .map(|t| {
                let login = self.trader(t);
                json!({"type":"account","login":login,"name":format!("Trader {login}"),
                    "ccy":"USD","leverage":100,"balance":100_000.0,"credit":0.0})
            })
            .collect();
        for level in (1..DEPTH).rev() {
            for j in 0..self.ibs_at(level) {
                events.push(
                    json!({"type":"ib_link","op":"set","login":Self::ib(level, j),
                    "ib":Self::ib(level + 1, j / FANOUT)}),
                );
            }
        }
        for t in 0..self.traders {
            events.push(json!({"type":"ib_link","op":"set","login":self.trader(t),
                "ib":self.chain(t)[0]}));
        }
        events
    }

    /// `18,000 traders, 1,440 IBs (5 levels), 380 admins`.
    pub fn describe(&self) -> String {
        format!(
            "{} traders, {} IBs ({DEPTH} levels, {} traders per direct IB), {} admins",
            self.traders,
            self.ibs(),
            self.traders_per_ib,
            self.admins
        )
    }
}

fn ibs(traders: usize, traders_per_ib: usize) -> usize {
    (0..DEPTH)
        .map(|l| traders.div_ceil(traders_per_ib * FANOUT.pow(l as u32)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportions_add_up() {
        for total in [20, 100, 1_000, 10_000, 19_000] {
            let p = Population::of(total);
            let connections = p.traders + p.ibs() + p.admins;
            assert!(connections <= total && connections + 5 >= total, "{p:?}");
            assert!(p.ibs() >= DEPTH && p.admins >= 1);
        }
        let p = Population::of(19_000);
        assert!(p.ibs() * 100 / 19_000 <= 8 && p.admins == 380, "{p:?}");
    }

    #[test]
    fn chains_climb_the_tree() {
        let p = Population::of(1_000);
        let chain = p.chain(p.traders - 1);
        for (l, ib) in chain.iter().enumerate() {
            let j = (ib - IB_BASE - 100_000 * (l as u64 + 1)) as usize;
            assert!(j < p.ibs_at(l + 1));
        }
        assert_eq!(p.chain(0)[DEPTH - 1], Population::ib(DEPTH, 0));
    }
}
