//! Idempotency: which events and deals have already been applied.

use std::collections::{BTreeSet, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// The `seq` numbers already applied for one `src`: a high-water mark plus a bounded
/// window of numbers seen above it.
///
/// A source that delivers in order keeps the window empty and this is a plain
/// high-water mark (`seq <= floor` is a duplicate). The window exists because one
/// source counter may feed several streams (events partitioned by login, ticks) that
/// the pipeline reads independently, so seq 12 can legitimately arrive after seq 15.
/// When the window is full the mark moves up past its oldest entry: a number that
/// late (a gap left by a dead-lettered entry) is given up and treated as seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeqWindow {
    floor: u64,
    above: BTreeSet<u64>,
}

impl SeqWindow {
    /// How many out-of-order numbers are remembered above the mark.
    pub const CAPACITY: usize = 4096;

    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.floor || self.above.contains(&seq)
    }

    /// Record `seq` as applied.
    pub fn insert(&mut self, seq: u64) {
        if self.contains(seq) {
            return;
        }
        self.above.insert(seq);
        if self.above.len() > Self::CAPACITY {
            self.floor = self.above.pop_first().expect("window is not empty");
        }
        while self
            .floor
            .checked_add(1)
            .is_some_and(|next| self.above.first() == Some(&next))
        {
            self.floor = self.above.pop_first().expect("checked first");
        }
    }
}

/// The last `capacity` values inserted, for "have I done this already?" checks on
/// identifiers that never repeat legitimately (deal tickets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentSet {
    capacity: usize,
    order: VecDeque<u64>,
    members: HashSet<u64>,
}

impl RecentSet {
    pub fn new(capacity: usize) -> Self {
        RecentSet {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            members: HashSet::new(),
        }
    }

    pub fn contains(&self, value: u64) -> bool {
        self.members.contains(&value)
    }

    /// Remember `value`; returns false if it was already there. The oldest value is
    /// forgotten when the set is full.
    pub fn insert(&mut self, value: u64) -> bool {
        if !self.members.insert(value) {
            return false;
        }
        self.order.push_back(value);
        if self.order.len() > self.capacity {
            let oldest = self.order.pop_front().expect("over capacity");
            self.members.remove(&oldest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_sequence_is_a_high_water_mark() {
        let mut w = SeqWindow::default();
        for seq in 1..=10 {
            assert!(!w.contains(seq));
            w.insert(seq);
        }
        assert!(w.contains(7) && !w.contains(11));
        assert!(w.above.is_empty());
    }

    #[test]
    fn tolerates_reordering_and_heals_gaps() {
        let mut w = SeqWindow::default();
        w.insert(1);
        w.insert(3);
        assert!(!w.contains(2) && w.contains(3));
        w.insert(2);
        assert_eq!((w.floor, w.above.len()), (3, 0));

        // Seq 4 never arrives (dead-lettered): the window fills, then gives up on it.
        for seq in 5..(5 + SeqWindow::CAPACITY as u64 + 1) {
            w.insert(seq);
        }
        assert!(w.contains(4));
        assert!(w.above.is_empty());
    }

    #[test]
    fn recent_set_forgets_the_oldest() {
        let mut s = RecentSet::new(2);
        assert!(s.insert(1) && s.insert(2) && !s.insert(2));
        assert!(s.insert(3));
        assert!(!s.contains(1) && s.contains(2) && s.contains(3));
    }
}
