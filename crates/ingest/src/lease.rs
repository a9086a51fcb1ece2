//! Leadership: which node applies the ingest streams right now.
//!
//! The domain state (portfolios, the IB tree, exposure) is one whole: an IB's
//! commission depends on links written for other accounts, exposure sums every
//! account. So one node at a time applies every stream, and the others stand by.
//! The leader holds a Redis key with an expiry and renews it well before it
//! expires; when the leader dies the key expires and the first standby node to
//! `SET NX` it takes over. Connections are served by every node either way.

use std::time::Duration;

use tradecast_broker::RedisConn;

/// Renew only if we still hold it: compare-and-expire in one step.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Give it up only if we still hold it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The leadership key, as held (or wanted) by one node.
pub struct Lease {
    key: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    pub fn new(key: impl Into<String>, holder: impl Into<String>, ttl: Duration) -> Lease {
        Lease {
            key: key.into(),
            holder: holder.into(),
            ttl,
        }
    }

    /// How often the holder renews: three times per expiry period.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Take the lease if nobody holds it.
    pub async fn acquire(&self, conn: &mut RedisConn) -> redis::RedisResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.holder)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(conn)
            .await?;
        Ok(set.is_some())
    }

    /// Extend the lease; false when it was lost (expired and maybe taken).
    pub async fn renew(&self, conn: &mut RedisConn) -> redis::RedisResult<bool> {
        let renewed: i64 = redis::cmd("EVAL")
            .arg(RENEW)
            .arg(1)
            .arg(&self.key)
            .arg(&self.holder)
            .arg(self.ttl.as_millis() as u64)
            .query_async(conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Hand the lease back so a standby node takes over at once.
    pub async fn release(&self, conn: &mut RedisConn) -> redis::RedisResult<()> {
        redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(&self.key)
            .arg(&self.holder)
            .query_async::<i64>(conn)
            .await
            .map(drop)
    }
}
