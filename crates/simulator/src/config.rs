//! How big and how busy the simulated broker is.

/// Settings of a [`Simulator`](crate::Simulator).
///
/// The same `seed` and the same sequence of `now_ms` values always produce the same
/// events, so a demo or a test run can be replayed exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of the random generator behind prices, names and trading decisions.
    pub seed: u64,
    /// Trader accounts opened at bootstrap (at least 1). New clients join later on.
    pub traders: usize,
    /// Symbols quoted, taken in order from a catalogue of 30: the seven USD majors,
    /// XAUUSD, then the crosses and XAGUSD.
    pub symbols: usize,
    /// Levels of the introducing-broker tree above the deepest client, 1 to 5.
    pub ib_depth: usize,
    /// Ticks per second over all symbols together (majors tick three times as often).
    pub ticks_per_sec: f64,
    /// Trading activities per second over all accounts: opens, SL/TP changes, closes,
    /// deposits and withdrawals, clients joining, margin calls.
    pub trades_per_sec: f64,
    /// Trade-server id written into every event's `src`.
    pub src: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            traders: 20,
            symbols: 12,
            ib_depth: 3,
            ticks_per_sec: 20.0,
            trades_per_sec: 2.0,
            src: "sim-01".to_string(),
        }
    }
}
