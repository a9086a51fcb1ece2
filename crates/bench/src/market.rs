//! Prices: the symbols positions are opened in, and ticks with a unique, increasing
//! `ts` (= `emit_ts`), so a worker can tell one tick's `price` copies from another's
//! and time each copy from the moment the tick was written.

use serde_json::{Value, json};

use crate::common::now_us;
use crate::topology::Source;

/// Currency pairs (→ `prices:forex`) and a mid price for each.
pub const SYMBOLS: [(&str, f64); 10] = [
    ("EURUSD", 1.0842),
    ("GBPUSD", 1.2710),
    ("AUDUSD", 0.6610),
    ("NZDUSD", 0.6120),
    ("USDCHF", 0.8820),
    ("USDCAD", 1.3640),
    ("USDJPY", 151.20),
    ("EURGBP", 0.8530),
    ("EURJPY", 163.90),
    ("GBPJPY", 192.20),
];

/// Writes ticks from one source (`…/ticks`).
pub struct Ticker {
    source: Source,
    last_ms: u64,
    count: u64,
}

impl Default for Ticker {
    fn default() -> Self {
        Ticker {
            source: Source::new("ticks"),
            last_ms: 0,
            count: 0,
        }
    }
}

impl Ticker {
    /// The next tick of `SYMBOLS[symbol]`, a few pips off its mid, and its `ts`:
    /// now in ms, but always after the previous tick's.
    pub fn next(&mut self, symbol: usize) -> (Value, u64) {
        let (name, mid) = SYMBOLS[symbol % SYMBOLS.len()];
        self.count += 1;
        let ts = (now_us() / 1000).max(self.last_ms + 1);
        self.last_ms = ts;
        let pip = if mid > 20.0 { 0.01 } else { 0.0001 };
        let bid = mid + pip * ((self.count * 7 % 21) as f64 - 10.0);
        let digits = if mid > 20.0 { 3 } else { 5 };
        let ask = bid + 2.0 * pip;
        let tick = json!({"type":"tick","symbol":name,"bid":round(bid, digits),
            "ask":round(ask, digits),"digits":digits});
        (self.source.event_at(tick, ts), ts)
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}
