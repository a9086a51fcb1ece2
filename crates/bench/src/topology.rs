//! What a scenario runs against, started and stopped by the bench itself.
//!
//! - `--nodes 1 --broker memory`: one `tradecast serve` on its embedded broker; events
//!   go in by `POST /v1/events` on its admin listener.
//! - `--nodes 1 --broker redis`: one node on a private `redis-server` (testkit: a free
//!   loopback port, never 6379, nothing on disk); events go in by XADD into `tc:events`
//!   and `tc:ticks`, as the MT5 plugin writes them.
//! - `--nodes 3` (Redis only): three nodes on one private Redis behind nginx rendered
//!   from `deploy/nginx.conf.template` (testkit's launcher, its own prefix directory):
//!   clients connect to nginx, which hashes each token onto a node, as deployed.
//!
//! Every node runs with `--max-connections-per-user 0` (the bench's users are
//! distinct anyway) and `--max-connections` from `--max-connections`. Nodes and
//! workers get SIGKILL if the bench dies (`PR_SET_PDEATHSIG`); [`Topology::stop`]
//! (or dropping it, on an error or Ctrl-C) stops nginx, the nodes and Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;
use tokio::process::{Child, Command};
use tradecast_ingest::StreamLayout;
use tradecast_ingest::writer::StreamWriter;
use tradecast_testkit::RedisServer;
use tradecast_testkit::nginx::Nginx;

use crate::common::{die_with_parent, http_get, metric_sum, now_us, post_events, redis_pid};
use crate::procfs;

/// The JWT secret of every node the bench starts.
pub const SECRET: &str = "bench-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerKind {
    /// The embedded in-process broker (one node only).
    Memory,
    /// A private redis-server.
    Redis,
}

#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// 1: one node; 3 (or more): nodes on one Redis behind nginx.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// The broker of a single node (several nodes always share Redis).
    #[arg(long, value_enum)]
    pub broker: Option<BrokerKind>,
    /// Each node's connection cap (`--max-connections`).
    #[arg(long, default_value_t = 19_000)]
    pub max_connections: usize,
    /// Extra flag for every `tradecast serve` (repeatable), e.g. `--node-arg=--live-interval-ms=500`.
    #[arg(long, allow_hyphen_values = true)]
    pub node_arg: Vec<String>,
    /// The `tradecast` binary (default: next to this one).
    #[arg(long)]
    pub tradecast: Option<PathBuf>,
    /// Where `<scenario>-<topology>.json` and `.md` are written.
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
}

impl TopologyArgs {
    pub fn broker(&self) -> BrokerKind {
        match (self.nodes, self.broker) {
            (_, Some(kind)) => kind,
            (1, None) => BrokerKind::Memory,
            (_, None) => BrokerKind::Redis,
        }
    }

    /// `1node-memory`, `1node-redis`, `3nodes-redis`: the suffix of the result files.
    pub fn name(&self) -> String {
        let broker = match self.broker() {
            BrokerKind::Memory => "memory",
            BrokerKind::Redis => "redis",
        };
        match self.nodes {
            1 => format!("1node-{broker}"),
            n => format!("{n}nodes-{broker}"),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.nodes >= 1, "--nodes must be at least 1");
        anyhow::ensure!(
            self.nodes == 1 || self.broker() == BrokerKind::Redis,
            "several nodes share Redis: --broker memory needs --nodes 1"
        );
        Ok(())
    }
}

/// How long a node may take to be ready, and Redis to elect an ingest leader.
const SETUP_WAIT: Duration = Duration::from_secs(60);

/// One `tradecast serve` process on fixed ports, its output appended to a log file.
pub struct Node {
    child: Option<Child>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    args: Vec<String>,
    tradecast: PathBuf,
    log: PathBuf,
}

impl Node {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(&self.tradecast);
        command
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        die_with_parent(&mut command);
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("starting {}", self.tradecast.display()))?,
        );
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETUP_WAIT;
        loop {
            if http_get(self.admin, "/readyz")
                .await
                .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("a node exited ({status}); see {}", self.log.display());
            }
            if Instant::now() >= deadline {
                bail!("a node was not ready within {SETUP_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sum of every sample of `name` on the node's `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (status, body) = http_get(self.admin, "/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(metric_sum(&body, name))
    }
}

/// Redis, the nodes and nginx of one run; everything is stopped when it is dropped.
pub struct Topology {
    redis: Option<RedisServer>,
    pub nodes: Vec<Node>,
    nginx: Option<Nginx>,
    /// Node logs; deleted after a clean run.
    dir: PathBuf,
    keep_dir: bool,
}

impl Topology {
    pub async fn start(args: &TopologyArgs) -> anyhow::Result<Topology> {
        args.validate()?;
        let dir = std::env::temp_dir().join(format!(
            "tradecast-bench-{}-{}",
            std::process::id(),
            now_us()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut topology = Topology {
            redis: None,
            nodes: Vec::new(),
            nginx: None,
            dir,
            keep_dir: true,
        };
        let tradecast = match &args.tradecast {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("tradecast"),
        };
        let redis_url = match args.broker() {
            BrokerKind::Memory => None,
            BrokerKind::Redis => {
                let redis = tokio::task::spawn_blocking(RedisServer::start).await?;
                let url = redis.url();
                topology.redis = Some(redis);
                Some(url)
            }
        };
        for k in 0..args.nodes {
            let public = SocketAddr::from(([127, 0, 0, 1], tradecast_testkit::free_port()));
            let admin = SocketAddr::from(([127, 0, 0, 1], tradecast_testkit::free_port()));
            let mut node_args: Vec<String> = vec![
                "serve".into(),
                "--listen".into(),
                public.to_string(),
                "--admin-listen".into(),
                admin.to_string(),
                "--jwt-secret".into(),
                SECRET.into(),
                "--max-connections".into(),
                args.max_connections.to_string(),
                "--max-connections-per-user".into(),
                "0".into(),
            ];
            if let Some(url) = &redis_url {
                node_args.extend(["--redis".into(), url.clone()]);
            }
            node_args.extend(args.node_arg.iter().cloned());
            let mut node = Node {
                child: None,
                public,
                admin,
                args: node_args,
                tradecast: tradecast.clone(),
                log: topology.dir.join(format!("node-{}.log", k + 1)),
            };
            node.spawn()?;
            topology.nodes.push(node);
        }
        for node in &mut topology.nodes {
            node.wait_ready().await?;
        }
        if redis_url.is_some() {
            topology.wait_for_leader().await?;
        }
        if args.nodes > 1 {
            let publics: Vec<SocketAddr> = topology.nodes.iter().map(|n| n.public).collect();
            let nginx = tokio::task::spawn_blocking(move || Nginx::start(&publics)).await?;
            topology.nginx = Some(nginx);
        }
        Ok(topology)
    }

    /// Where clients connect: nginx, or the one node.
    pub fn entry(&self) -> SocketAddr {
        match &self.nginx {
            Some(nginx) => nginx.addr,
            None => self.nodes[0].public,
        }
    }

    pub fn node_pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Node::pid).collect()
    }

    pub fn nginx_pid(&self) -> Option<u32> {
        self.nginx.as_ref().and_then(Nginx::pid)
    }

    pub fn redis_pid(&self) -> Option<u32> {
        self.redis.as_ref().and_then(|r| redis_pid(r.port()))
    }

    /// The sum of `name` over every node's `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for node in &self.nodes {
            total += node.metric(name).await?;
        }
        Ok(total)
    }

    async fn wait_for_leader(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETUP_WAIT;
        while self.metric("tradecast_ingest_leader").await.unwrap_or(0.0) != 1.0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no node leads ingest after {SETUP_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Where events go in: XADD on Redis, else `POST /v1/events` on the node.
    pub async fn ingest(&self) -> anyhow::Result<Ingest> {
        Ok(match &self.redis {
            Some(redis) => Ingest::Streams(
                StreamWriter::connect(&redis.url(), StreamLayout::default(), None)
                    .await
                    .context("connecting the stream writer")?,
            ),
            None => Ingest::Post(self.nodes[0].admin),
        })
    }

    /// Write `events` (with a progress bar) and wait, at most 5 minutes, until the
    /// nodes have applied them all (`tradecast_ingest_events_total`); returns the
    /// seconds it took.
    pub async fn apply(&self, ingest: &mut Ingest, events: &[Value]) -> anyhow::Result<f64> {
        let from = self.metric("tradecast_ingest_events_total").await?;
        let started = Instant::now();
        let bar = crate::fleet::bar(events.len() as u64, "set-up");
        for chunk in events.chunks(1_000) {
            ingest.send(chunk).await.context("writing set-up events")?;
            bar.inc(chunk.len() as u64);
        }
        bar.set_message("written; applying");
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.metric("tradecast_ingest_events_total").await? - from < events.len() as f64 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the set-up events were not applied within 300 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("{} set-up events applied in {seconds:.1} s", events.len());
        Ok(seconds)
    }

    /// SIGKILL node `k` and start it again at once on the same ports, as a
    /// supervisor would; returns when it is ready again.
    pub async fn kill_and_restart(&mut self, k: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[k];
        if let Some(mut child) = node.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        node.spawn()?;
        node.wait_ready().await
    }

    /// Stop everything; keep the node logs only if `failed`.
    pub async fn stop(mut self, failed: bool) {
        self.keep_dir = failed;
        // Dropping nginx waits for its shutdown: off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }

    /// Resident memory of each node, in KiB.
    pub fn node_rss_kib(&self) -> anyhow::Result<Vec<u64>> {
        self.node_pids().into_iter().map(procfs::rss_kib).collect()
    }

    /// nginx's resident memory (master + workers), in KiB; 0 without nginx.
    pub fn nginx_rss_kib(&self) -> u64 {
        self.nginx_pid().map_or(0, procfs::rss_with_children_kib)
    }

    /// CPU seconds used so far.
    pub fn cpu(&self) -> anyhow::Result<Cpu> {
        let nodes = self
            .node_pids()
            .into_iter()
            .map(procfs::cpu_seconds)
            .sum::<anyhow::Result<f64>>()?;
        Ok(Cpu {
            nodes,
            nginx: self
                .nginx_pid()
                .map_or(0.0, procfs::cpu_with_children_seconds),
            redis: self
                .redis_pid()
                .map_or(0.0, |p| procfs::cpu_seconds(p).unwrap_or(0.0)),
            machine: procfs::machine_busy_seconds()?,
        })
    }
}

/// CPU seconds of the deployment's processes and of the whole machine (all cores).
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub nodes: f64,
    pub nginx: f64,
    pub redis: f64,
    pub machine: f64,
}

impl Cpu {
    /// What was used between `before` and `self`.
    pub fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            nodes: self.nodes - before.nodes,
            nginx: self.nginx - before.nginx,
            redis: self.redis - before.redis,
            machine: self.machine - before.machine,
        }
    }

    pub fn to_json(self) -> Value {
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        serde_json::json!({"nodes_s": r(self.nodes), "nginx_s": r(self.nginx),
            "redis_s": r(self.redis), "machine_busy_s": r(self.machine)})
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut nginx) = self.nginx.take() {
            nginx.keep_files(self.keep_dir);
        }
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        self.redis.take();
        if self.keep_dir {
            eprintln!("node logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The ingest path of a topology.
pub enum Ingest {
    /// `POST /v1/events` to this admin listener (the embedded broker).
    Post(SocketAddr),
    /// XADD into `tc:events` / `tc:ticks` (pipelined).
    Streams(StreamWriter),
}

impl Ingest {
    /// Send `events` (ingest event objects, the `d` JSON) in order.
    pub async fn send(&mut self, events: &[Value]) -> anyhow::Result<()> {
        for chunk in events.chunks(500) {
            match self {
                Ingest::Post(admin) => {
                    post_events(*admin, &Value::from(chunk.to_vec()).to_string()).await?
                }
                Ingest::Streams(writer) => {
                    writer.write(chunk).await.context("XADD")?;
                }
            }
        }
        Ok(())
    }
}

/// Stamps ingest events with the envelope: `src`, a per-source `seq`, `ts` and
/// `emit_ts` (ms, now).
pub struct Source {
    src: String,
    seq: u64,
}

impl Source {
    pub fn new(feed: &str) -> Source {
        Source {
            src: format!("bench-{}-{}/{feed}", std::process::id(), now_us()),
            seq: 0,
        }
    }

    pub fn event(&mut self, body: Value) -> Value {
        self.event_at(body, now_us() / 1000)
    }

    /// The event with `ts` and `emit_ts` set to `ms`.
    pub fn event_at(&mut self, body: Value, ms: u64) -> Value {
        self.seq += 1;
        let mut event =
            serde_json::json!({"v": 1, "src": self.src, "seq": self.seq, "ts": ms, "emit_ts": ms});
        if let (Some(e), Value::Object(b)) = (event.as_object_mut(), body) {
            e.extend(b);
        }
        event
    }
}
