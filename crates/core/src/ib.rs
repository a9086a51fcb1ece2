//! The IB tree (who introduced whom) and each IB's commission ledger.
//!
//! `parent[login] = ib` comes from `ib_link` events; an IB can itself have a parent,
//! so every client has a chain of ancestors: level 1 is its direct IB, level 2 that
//! IB's parent, and so on. The chain is resolved when a deal closes and frozen into
//! the commission messages.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Parent links of the IB hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IbTree {
    parent: BTreeMap<u64, u64>,
    children: BTreeMap<u64, BTreeSet<u64>>,
}

impl IbTree {
    /// Every IB with at least one client below it.
    pub fn ibs(&self) -> impl Iterator<Item = u64> + '_ {
        self.children.keys().copied()
    }

    pub fn parent(&self, login: u64) -> Option<u64> {
        self.parent.get(&login).copied()
    }

    /// `login`'s ancestors, nearest first: `[direct IB, its parent, …]`.
    pub fn ancestors(&self, login: u64) -> Vec<u64> {
        let mut chain = Vec::new();
        let mut at = login;
        while let Some(&up) = self.parent.get(&at) {
            // The tree refuses cycles, but never loop forever on a corrupt restore.
            if up == login || chain.contains(&up) {
                break;
            }
            chain.push(up);
            at = up;
        }
        chain
    }

    /// Link `login` under `ib`. Fails when that would make a cycle.
    pub fn set(&mut self, login: u64, ib: u64) -> Result<(), String> {
        if login == ib {
            return Err(format!("ib_link: login {login} cannot be its own IB"));
        }
        if self.ancestors(ib).contains(&login) {
            return Err(format!(
                "ib_link: linking {login} under {ib} would make a cycle ({ib} is below {login})"
            ));
        }
        self.remove(login);
        self.parent.insert(login, ib);
        self.children.entry(ib).or_default().insert(login);
        Ok(())
    }

    /// Unlink `login` from its parent; returns the old parent.
    pub fn remove(&mut self, login: u64) -> Option<u64> {
        let old = self.parent.remove(&login)?;
        if let Some(kids) = self.children.get_mut(&old) {
            kids.remove(&login);
            if kids.is_empty() {
                self.children.remove(&old);
            }
        }
        Some(old)
    }

    /// Everyone below `ib` with their level (1 = direct client), breadth first, by
    /// level then login.
    pub fn downline(&self, ib: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut queue: VecDeque<(u64, u32)> = VecDeque::from([(ib, 0)]);
        while let Some((at, level)) = queue.pop_front() {
            for &kid in self.children.get(&at).into_iter().flatten() {
                if kid != ib && !out.iter().any(|&(seen, _)| seen == kid) {
                    out.push((kid, level + 1));
                    queue.push_back((kid, level + 1));
                }
            }
        }
        out
    }
}

/// One commission paid to an IB, as sent on `commissions:{ib}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commission {
    pub client: u64,
    pub client_name: Option<String>,
    pub symbol: String,
    /// Lots.
    pub volume: f64,
    pub amount: f64,
    pub level: u32,
    pub deal: u64,
    pub ts: u64,
}

/// An IB's running totals and recent commissions (the `commissions_full` snapshot).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub total: f64,
    pub count: u64,
    /// Keyed by level; serializes as `{"1": 7.5, "2": 1.5}`.
    pub by_level: BTreeMap<u32, f64>,
    pub recent: VecDeque<Commission>,
}

impl Ledger {
    /// How many commissions the snapshot lists.
    pub const RECENT: usize = 20;

    pub fn record(&mut self, c: &Commission) {
        self.total = crate::money::cents(self.total + c.amount);
        self.count += 1;
        let level = self.by_level.entry(c.level).or_default();
        *level = crate::money::cents(*level + c.amount);
        self.recent.push_back(c.clone());
        if self.recent.len() > Self::RECENT {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_and_downlines() {
        let mut t = IbTree::default();
        t.set(2, 1).unwrap();
        t.set(3, 2).unwrap();
        t.set(4, 3).unwrap();
        t.set(5, 2).unwrap();
        assert_eq!(t.ancestors(4), vec![3, 2, 1]);
        assert_eq!(t.downline(1), vec![(2, 1), (3, 2), (5, 2), (4, 3)]);
        assert!(t.set(1, 4).unwrap_err().contains("cycle"));
        assert!(t.set(7, 7).is_err());
        assert_eq!(t.remove(3), Some(2));
        assert_eq!(t.ancestors(4), vec![3]);
        assert_eq!(t.downline(1), vec![(2, 1), (5, 2)]);
    }
}
