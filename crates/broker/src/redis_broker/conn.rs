//! One way to talk to Redis whether it is a single server or a cluster.
//!
//! [`RedisTarget`] is what `--redis` (and `--redis-cluster`) describe; its
//! [`connect`](RedisTarget::connect) gives a [`RedisConn`], a cheap-to-clone handle
//! that reconnects by itself and can run any command or pipeline. On a cluster a
//! pipeline must stay within one hash slot, which is why every key of a channel
//! shares the channel's hash tag.
//!
//! On a single server the handle also replaces its connection when a reply does not
//! come within the response timeout. The client library reconnects only when the
//! connection reports an error; a Redis that vanished without closing it (frozen,
//! or behind a proxy or NAT entry that died) reports nothing, and every command
//! would time out, one after the other, until the kernel gave up on the socket.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// One URL, or (cluster) the seed nodes.
    pub urls: Vec<String>,
    /// A Redis Cluster: keys are spread over shards, pub/sub is sharded.
    pub cluster: bool,
}

impl RedisTarget {
    /// Parse `--redis` (comma-separated URLs) for a single server or a cluster.
    pub fn new(spec: &str, cluster: bool) -> RedisTarget {
        RedisTarget {
            urls: spec
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect(),
            cluster,
        }
    }

    /// The URLs with any password replaced by `***`, for messages and logs.
    pub fn redacted(&self) -> String {
        self.urls
            .iter()
            .map(|url| redact(url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The first URL (a single server's).
    pub fn url(&self) -> &str {
        self.urls
            .first()
            .map_or("redis://127.0.0.1:6379/", String::as_str)
    }

    /// Connect for commands. `response_timeout` must exceed any `BLOCK` used.
    pub async fn connect(&self, response_timeout: Duration) -> RedisResult<RedisConn> {
        if self.cluster {
            let client = ClusterClientBuilder::new(self.urls.clone())
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(response_timeout)
                .retries(3)
                .build()?;
            Ok(RedisConn::Cluster(client.get_async_connection().await?))
        } else {
            let client = redis::Client::open(self.url())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            let manager =
                ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
            Ok(RedisConn::Single(SingleConn(Arc::new(Single {
                client,
                config,
                current: Mutex::new((0, manager)),
            }))))
        }
    }
}

/// A single server's command connection, replaced when a reply times out.
#[derive(Clone)]
pub struct SingleConn(Arc<Single>);

struct Single {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The connection in use, and how many were replaced before it.
    current: Mutex<(u64, ConnectionManager)>,
}

impl SingleConn {
    fn current(&self) -> (u64, ConnectionManager) {
        self.0.current.lock().clone()
    }

    /// After `result` came from connection number `generation`: if Redis did not
    /// answer in time, replace that connection (once, however many requests on it
    /// timed out). The new one connects on its first request; requests still
    /// running on the old one finish or time out on their own.
    fn check<T>(&self, generation: u64, result: &redis::RedisResult<T>) {
        let Err(error) = result else { return };
        if !error.is_timeout() {
            return;
        }
        let mut current = self.0.current.lock();
        if current.0 != generation {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.0.client.clone(), self.0.config.clone())
        {
            Ok(fresh) => {
                tracing::warn!(%error, "Redis did not answer in time; replacing the connection");
                *current = (generation + 1, fresh);
            }
            Err(error) => tracing::warn!(%error, "cannot replace a Redis connection"),
        }
    }
}

/// `redis://user:secret@host/` → `redis://user:***@host/`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// A command connection to a single server or to a cluster.
#[derive(Clone)]
pub enum RedisConn {
    Single(SingleConn),
    Cluster(ClusterConnection),
}

impl RedisConn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(single) => Box::pin(async move {
                let (generation, mut manager) = single.current();
                let result = manager.req_packed_command(cmd).await;
                single.check(generation, &result);
                result
            }),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(single) => Box::pin(async move {
                let (generation, mut manager) = single.current();
                let result = manager.req_packed_commands(pipeline, offset, count).await;
                single.check(generation, &result);
                result
            }),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(single) => single.current().1.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        let target = RedisTarget::new("redis://app:s3cret@10.0.0.1:6379/0, redis://h2:6379", true);
        assert_eq!(target.urls.len(), 2);
        assert_eq!(
            target.redacted(),
            "redis://app:***@10.0.0.1:6379/0,redis://h2:6379"
        );
    }
}
