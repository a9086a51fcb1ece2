//! A token bucket for the per-connection inbound rate limit.

use tokio::time::Instant;

/// Allows `rate` frames per second on average and bursts of `2 × rate`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32) -> TokenBucket {
        let rate = f64::from(rate.max(1));
        TokenBucket {
            rate,
            capacity: rate * 2.0,
            tokens: rate * 2.0,
            refilled: Instant::now(),
        }
    }

    /// Take one token; false when the bucket is empty.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(10);
        assert_eq!((0..30).filter(|_| bucket.take()).count(), 20);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert_eq!((0..30).filter(|_| bucket.take()).count(), 5);
    }
}
