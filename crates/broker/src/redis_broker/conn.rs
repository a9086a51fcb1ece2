//! One way to talk to Redis whether it is a single server or a cluster.
//!
//! [`RedisTarget`] is what `--redis` (and `--redis-cluster`) describe; its
//! [`connect`](RedisTarget::connect) gives a [`RedisConn`], a cheap-to-clone handle
//! that reconnects by itself and can run any command or pipeline. On a cluster a
//! pipeline must stay within one hash slot, which is why every key of a channel
//! shares the channel's hash tag.

use std::time::Duration;

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
            Ok(RedisConn::Single(
                ConnectionManager::new_with_config(client, config).await?,
            ))
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
    Single(ConnectionManager),
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
            RedisConn::Single(c) => c.req_packed_command(cmd),
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
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
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
