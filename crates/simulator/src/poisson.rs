//! Random arrivals at a steady average rate.

use fastrand::Rng;

/// The longest stretch of simulated time one call catches up on. A simulator whose
/// caller stalled (a suspended laptop, a debugger) resumes with at most this much
/// activity instead of a flood.
const MAX_CATCH_UP_MS: f64 = 5_000.0;

/// A Poisson process: events arrive independently at `rate` per second on average,
/// with exponentially distributed gaps, which is how ticks and orders from many
/// independent people look. The caller drives the clock, so no real time passes.
#[derive(Debug)]
pub struct Poisson {
    rate: f64,
    next_ms: f64,
}

impl Poisson {
    /// A process whose first arrival falls after `now_ms`. A rate that is not positive
    /// never fires.
    pub fn start(rate: f64, now_ms: u64, rng: &mut Rng) -> Poisson {
        let mut process = Poisson {
            rate,
            next_ms: now_ms as f64,
        };
        process.next_ms += process.gap_ms(rng);
        process
    }

    /// How many events arrived up to and including `now_ms` since the last call.
    pub fn arrivals(&mut self, now_ms: u64, rng: &mut Rng) -> usize {
        let now_ms = now_ms as f64;
        self.next_ms = self.next_ms.max(now_ms - MAX_CATCH_UP_MS);
        let mut count = 0;
        while self.next_ms <= now_ms {
            count += 1;
            self.next_ms += self.gap_ms(rng);
        }
        count
    }

    fn gap_ms(&self, rng: &mut Rng) -> f64 {
        if self.rate > 0.0 {
            // 1 − U lies in (0, 1], so the logarithm is finite.
            -(1.0 - rng.f64()).ln() / self.rate * 1000.0
        } else {
            f64::INFINITY
        }
    }
}
