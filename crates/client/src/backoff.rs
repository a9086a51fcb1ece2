//! Reconnect backoff: exponential with "full jitter", capped, reset after a stable
//! connection.
//!
//! The n-th consecutive failure waits a uniform random time in
//! `[0, min(max, initial × 2^n))` (n counted from 0). [`Backoff::reset`] starts over
//! (the session calls it once a connection has stayed up for `stable_after`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A random source in `[0, 1)`.
pub type Random = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Exponential backoff with full jitter.
#[derive(Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    random: Random,
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("initial", &self.initial)
            .field("max", &self.max)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl Backoff {
    /// First retry within `[0, initial)`, ceilings doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            attempt: 0,
            random: Arc::new(fastrand::f64),
        }
    }

    /// Use `random` (values in `[0, 1)`) for the jitter, e.g. a fixed value in tests.
    pub fn with_random(mut self, random: Random) -> Backoff {
        self.random = random;
        self
    }

    /// The ceiling of the next delay: `min(max, initial × 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u64 << self.attempt.min(30);
        let ceiling = self
            .initial
            .as_millis()
            .saturating_mul(u128::from(factor))
            .min(self.max.as_millis());
        Duration::from_millis(ceiling as u64)
    }

    /// The delay before the next attempt (whole milliseconds); counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling().as_millis() as f64;
        let r = (self.random)().clamp(0.0, 1.0);
        let delay = (r * ceiling).floor().min((ceiling - 1.0).max(0.0));
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(delay as u64)
    }

    /// Failures counted so far (since the last reset).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Count one attempt without waiting (e.g. a token replaced at once).
    pub fn skip(&mut self) {
        self.attempt = self.attempt.saturating_add(1);
    }

    /// Back off at least as hard as after `attempt` failures (rate limited: 4029).
    pub fn at_least(&mut self, attempt: u32) {
        self.attempt = self.attempt.max(attempt);
    }

    /// Start over (after a stable connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn full_jitter_doubling_capped_and_reset() {
        let mut b = Backoff::new(ms(2), ms(16)).with_random(Arc::new(|| 0.999));
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [1, 3, 7, 15, 15, 15]);
        b.reset();
        assert_eq!(b.next_delay(), ms(1));
        b.reset();
        b.at_least(4);
        assert_eq!(b.next_delay(), ms(15), "2^4 × initial, capped");
    }

    #[test]
    fn delays_stay_below_the_ceiling() {
        let mut b = Backoff::new(ms(500), ms(30_000));
        for n in 0..40 {
            let ceiling = b.ceiling();
            assert_eq!(ceiling, ms((500u64 << n.min(30)).min(30_000)));
            assert!(b.next_delay() < ceiling);
        }
        let mut zero = Backoff::new(ms(500), ms(30_000)).with_random(Arc::new(|| 0.0));
        assert_eq!(zero.next_delay(), Duration::ZERO);
    }
}
