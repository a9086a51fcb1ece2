//! The introducing-broker (IB) tree that refers the simulated clients.
//!
//! The tree is a spine of `depth` IBs, each the sub-IB of the one before, with the
//! [`TOP_IB`] at its head, plus a second branch under the top so the tree is not a line:
//!
//! ```text
//! 900001 ─┬─ 900002 ── 900003        (depth 3)
//!         └─ 900004
//! ```
//!
//! Every client hangs somewhere below the top IB, so every commission in the tree
//! reaches it.

use fastrand::Rng;

use crate::names::FIRMS;

/// The IB at the top of the tree.
pub const TOP_IB: u64 = 900_001;

/// Deepest supported spine; real trees are "rarely deeper than 5 levels".
pub const MAX_DEPTH: usize = 5;

/// One introducing broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ib {
    pub id: u64,
    pub name: &'static str,
    /// The IB above this one; `None` for the top.
    pub parent: Option<u64>,
}

#[derive(Debug)]
pub struct Network {
    /// Parents before children, so linking them in order builds the tree top-down.
    ibs: Vec<Ib>,
    depth: usize,
}

impl Network {
    /// Builds the tree for a spine of `depth` IBs, clamped to `1..=MAX_DEPTH`.
    pub fn new(depth: usize) -> Network {
        let depth = depth.clamp(1, MAX_DEPTH);
        let mut parents: Vec<Option<u64>> = (0..depth as u64)
            .map(|level| level.checked_sub(1).map(|above| TOP_IB + above))
            .collect();
        if depth > 1 {
            parents.push(Some(TOP_IB));
        }
        let ibs = parents
            .into_iter()
            .zip(0u64..)
            .map(|(parent, n)| Ib {
                id: TOP_IB + n,
                name: FIRMS[n as usize % FIRMS.len()],
                parent,
            })
            .collect();
        Network { ibs, depth }
    }

    pub fn ibs(&self) -> &[Ib] {
        &self.ibs
    }

    /// The IB at the bottom of the spine: a client of it pays every level.
    pub fn deepest(&self) -> u64 {
        TOP_IB + self.depth as u64 - 1
    }

    /// A random IB to refer a new client.
    pub fn pick(&self, rng: &mut Rng) -> u64 {
        self.ibs[rng.usize(..self.ibs.len())].id
    }
}
