//! The scale benchmark: several nodes on one Redis behind nginx, tens of thousands of
//! traders, fan-out latency, and how fast the clients of a killed node resume.
//!
//! 1. Start a private `redis-server` (testkit: a free loopback port, never 6379),
//!    `--nodes` release nodes `tradecast serve --redis URL --max-connections 19000` on
//!    fixed free ports, and nginx with `deploy/nginx.conf.template` (testkit's
//!    launcher: its own prefix directory). Wait for `/readyz` on every node and for
//!    one of them to lead ingest.
//! 2. Worker processes (`scale-worker`, `--per-worker` connections each, each from its
//!    own 127.0.0.N) open `--connections` trader connections through nginx and read
//!    `welcome` + the three default subscriptions. Report the time, each node's
//!    `tradecast_connections` and its RSS before/after (→ KiB per connection), and
//!    nginx's and Redis's RSS.
//! 3. Write one `account` event per trader into `tc:events` (every `portfolio:{login}`
//!    gets its durable seq 1) and wait until every connection has applied it.
//! 4. Fan-out: `--ticks` ticks on `tc:ticks`, one every `--tick-interval-ms`; every
//!    connection gets each as a `price` on `prices:forex`. Each worker records
//!    `arrival − emit` (wall clock µs, one machine) per copy into an HdrHistogram
//!    and sends it back (V2, hex); the coordinator merges them and counts copies.
//! 5. `kill -9` the node with the most connections and restart it at once on the same
//!    ports. Workers report each dropped login; the coordinator writes one more
//!    `account` event for each (spread over ~2 s), so resumes have something to
//!    replay. Every dropped client reconnects through nginx (full-jitter backoff) and
//!    resumes `portfolio:{login}` with `since`; it has resumed when the reply arrived
//!    and it applied every durable message up to the reply's `seq`. Then every
//!    connection must end with exactly its durable messages: none lost, no gap.
//! 6. One more tick must reach every connection. Print a table and write
//!    `scale-45k.json` / `.md` (or `--out`).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tradecast_ingest::StreamLayout;
use tradecast_ingest::writer::StreamWriter;
use tradecast_testkit::RedisServer;
use tradecast_testkit::nginx::Nginx;

use crate::common::{histogram, http_get, redis_pid, source_version};
use crate::procfs;
use crate::scale_worker::now_us;

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Trader connections in total, all through nginx.
    #[arg(long, default_value_t = 45_000)]
    connections: usize,
    /// Connections per worker process (each from its own 127.0.0.x; ≤ 9000 for the
    /// 20,000-file limit).
    #[arg(long, default_value_t = 7_500)]
    per_worker: usize,
    /// Nodes behind nginx.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Ticks for the fan-out measurement.
    #[arg(long, default_value_t = 20)]
    ticks: usize,
    /// One tick this often. Each connection's queue conflates prices (latest wins):
    /// ticks closer together than the time to the last copy replace unsent ones.
    #[arg(long, default_value_t = 2_000)]
    tick_interval_ms: u64,
    /// Each node's connection cap.
    #[arg(long, default_value_t = 19_000)]
    max_connections: usize,
    /// Initial connections each worker opens at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Reconnect backoff of the clients: attempt k waits uniformly in
    /// [0, min(cap, base · 2^k)] (full jitter).
    #[arg(long, default_value_t = 500)]
    backoff_base_ms: u64,
    #[arg(long, default_value_t = 8_000)]
    backoff_cap_ms: u64,
    /// Every dropped client must have resumed within this long after the kill.
    #[arg(long, default_value_t = 120)]
    resume_timeout_s: u64,
    /// nginx configuration template (default: `deploy/nginx.conf.template`, built in).
    #[arg(long)]
    nginx_template: Option<PathBuf>,
    /// Replace the parameters of the template's `server @NODE@ …;` line, e.g.
    /// `max_fails=0`, to try another passive health-check setting.
    #[arg(long)]
    nginx_server_params: Option<String>,
    /// The `tradecast` binary (default: next to this one).
    #[arg(long)]
    tradecast: Option<PathBuf>,
    /// Where the JSON figures go; the Markdown report goes next to it (`.md`).
    #[arg(long, default_value = "bench/results/scale-45k.json")]
    out: PathBuf,
}

const SECRET: &str = "bench-scale-secret";
const FIRST_LOGIN: u64 = 100_001;
/// Bound on every set-up wait.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// Bound on one request/answer round with the workers.
const ASK_WAIT: Duration = Duration::from_secs(90);
const BALANCE: f64 = 10_000.0;

fn decode(hex: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("decoding a histogram: {e:?}"))
}

fn ms(us: u64) -> f64 {
    (us as f64 / 100.0).round() / 10.0
}

/// Percentiles of a histogram of µs, in ms.
fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": ms(h.mean() as u64),
    })
}

/// One `tradecast serve` process on fixed ports, its output appended to a log file.
struct Node {
    index: usize,
    child: Option<Child>,
    public: SocketAddr,
    admin: SocketAddr,
    args: Vec<String>,
    tradecast: PathBuf,
    log: PathBuf,
}

impl Node {
    fn new(index: usize, tradecast: &Path, redis_url: &str, max_conn: usize, dir: &Path) -> Node {
        let public = SocketAddr::from(([127, 0, 0, 1], tradecast_testkit::free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], tradecast_testkit::free_port()));
        let args = [
            "serve",
            "--redis",
            redis_url,
            "--listen",
            &public.to_string(),
            "--admin-listen",
            &admin.to_string(),
            "--jwt-secret",
            SECRET,
            "--max-connections",
            &max_conn.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        Node {
            index,
            child: None,
            public,
            admin,
            args,
            tradecast: tradecast.to_owned(),
            log: dir.join(format!("node-{}.log", index + 1)),
        }
    }

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

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGKILL, and reap it.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    async fn ready(&self) -> bool {
        http_get(self.admin, "/readyz")
            .await
            .is_ok_and(|(status, _)| status == 200)
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.ready().await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "node {} exited ({status}); see {}",
                    self.index + 1,
                    self.log.display()
                );
            }
            if Instant::now() >= deadline {
                bail!("node {} not ready within {limit:?}", self.index + 1);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sum of every sample of `name` on `/metrics`.
    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (status, body) = http_get(self.admin, "/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(metric_sum(&body, name))
    }
}

fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// The child gets SIGKILL if this process dies (even by SIGKILL), so a crashed or
/// killed benchmark leaves no node or worker behind.
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The worker processes and their JSON-line conversation.
struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    rx: mpsc::UnboundedReceiver<(usize, Value)>,
    /// Logins reported dropped and not yet taken by the coordinator.
    dropped: Vec<u64>,
}

impl Fleet {
    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    /// The next line of any worker (drop reports are set aside).
    async fn next(&mut self, deadline: Instant) -> anyhow::Result<(usize, Value)> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (w, line) = tokio::time::timeout(left, self.rx.recv())
                .await
                .context("timed out waiting for the workers")?
                .context("every worker has exited")?;
            match line["ev"].as_str() {
                Some("dropped") => self.take_dropped(&line),
                Some("exit") => bail!("worker {w} exited: {}", line["why"]),
                _ => return Ok((w, line)),
            }
        }
    }

    fn take_dropped(&mut self, line: &Value) {
        if let Some(logins) = line["logins"].as_array() {
            self.dropped.extend(logins.iter().filter_map(Value::as_u64));
        }
    }

    /// Set aside the drop reports already received.
    fn poll_dropped(&mut self) -> anyhow::Result<()> {
        while let Ok((w, line)) = self.rx.try_recv() {
            match line["ev"].as_str() {
                Some("dropped") => self.take_dropped(&line),
                Some("exit") => bail!("worker {w} exited: {}", line["why"]),
                other => bail!("unexpected line from worker {w}: {other:?}"),
            }
        }
        Ok(())
    }

    /// Send `cmd` to every worker and return each one's `ev` answer, by worker.
    async fn ask(&mut self, cmd: &Value, ev: &str) -> anyhow::Result<Vec<Value>> {
        let line = format!("{cmd}\n");
        for stdin in &mut self.stdins {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
        }
        self.collect(ev, ASK_WAIT).await
    }

    async fn collect(&mut self, ev: &str, limit: Duration) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + limit;
        let mut answers = vec![Value::Null; self.stdins.len()];
        let mut left = answers.len();
        while left > 0 {
            let (w, line) = self.next(deadline).await?;
            if line["ev"] != ev {
                bail!("worker {w} said {line} while {ev} was expected");
            }
            if answers[w].is_null() {
                left -= 1;
            }
            answers[w] = line;
        }
        Ok(answers)
    }
}

fn sum(answers: &[Value], key: &str) -> u64 {
    answers.iter().filter_map(|a| a[key].as_u64()).sum()
}

fn merge_failures(answers: &[Value]) -> BTreeMap<String, u64> {
    merge_map(answers, "failures")
}

fn merge_map(answers: &[Value], key: &str) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for a in answers {
        if let Some(map) = a[key].as_object() {
            for (k, v) in map {
                *all.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    all
}

/// RSS in KiB of `pid` and every process whose parent it is (nginx's workers).
fn rss_with_children(pid: u32) -> u64 {
    let mut total = procfs::rss_kib(pid).unwrap_or(0);
    for child in children_of(pid) {
        total += procfs::rss_kib(child).unwrap_or(0);
    }
    total
}

fn cpu_with_children(pid: u32) -> f64 {
    let mut total = procfs::cpu_seconds(pid).unwrap_or(0.0);
    for child in children_of(pid) {
        total += procfs::cpu_seconds(child).unwrap_or(0.0);
    }
    total
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid: u32 = stat
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 102.4).round() / 10.0
}

/// Everything the run leaves behind (children are killed when this is dropped).
struct Cluster {
    redis: Option<RedisServer>,
    nodes: Vec<Node>,
    nginx: Option<Nginx>,
    fleet: Option<Fleet>,
    dir: PathBuf,
    keep_dir: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Workers first (their connections close), then nginx, nodes and Redis.
        if let Some(fleet) = self.fleet.take() {
            for mut child in fleet.children {
                let _ = child.start_kill();
            }
        }
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

/// Runs the benchmark; Ctrl-C stops it, with every child process cleaned up.
pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "tradecast-scale-{}-{}",
        std::process::id(),
        now_us()
    ));
    std::fs::create_dir_all(&dir)?;
    let mut cluster = Cluster {
        redis: None,
        nodes: Vec::new(),
        nginx: None,
        fleet: None,
        dir,
        keep_dir: true,
    };
    let result = tokio::select! {
        result = bench(&args, &mut cluster) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    cluster.keep_dir = result.is_err();
    // Dropping nginx waits for its shutdown: off the async threads.
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    result
}

async fn bench(args: &ScaleArgs, cluster: &mut Cluster) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0 && args.per_worker > 0 && args.nodes > 0);
    anyhow::ensure!(
        args.per_worker <= 9_000,
        "--per-worker above 9000 would exceed a worker's 20,000 files with reconnects"
    );
    let workers_n = args.connections.div_ceil(args.per_worker);
    anyhow::ensure!(
        workers_n <= 250,
        "at most 250 source addresses 127.0.0.2-251"
    );
    let run_started = Instant::now();
    let source = source_version();
    let command = std::env::args()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 {
                "./target/release/tradecast-bench".to_owned()
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let me = std::env::current_exe()?;
    let tradecast = args
        .tradecast
        .clone()
        .unwrap_or_else(|| me.with_file_name("tradecast"));

    // 1. Redis, the nodes, nginx.
    let redis = tokio::task::spawn_blocking(RedisServer::start).await?;
    let redis_url = redis.url();
    let redis_port = redis.port();
    cluster.redis = Some(redis);
    eprintln!(
        "redis-server on {redis_url}; logs in {}",
        cluster.dir.display()
    );
    for k in 0..args.nodes {
        let mut node = Node::new(
            k,
            &tradecast,
            &redis_url,
            args.max_connections,
            &cluster.dir,
        );
        node.spawn()?;
        cluster.nodes.push(node);
    }
    for node in &mut cluster.nodes {
        node.wait_ready(SETUP_WAIT).await?;
        eprintln!(
            "node {} ready: public={} admin={} pid={}",
            node.index + 1,
            node.public,
            node.admin,
            node.pid().unwrap_or(0)
        );
    }
    let deadline = Instant::now() + SETUP_WAIT;
    loop {
        let mut leaders = 0.0;
        for node in &cluster.nodes {
            leaders += node.metric("tradecast_ingest_leader").await.unwrap_or(0.0);
        }
        if leaders == 1.0 {
            break;
        }
        if Instant::now() >= deadline {
            bail!("no node leads ingest after {SETUP_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let publics: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.public).collect();
    let mut template = match &args.nginx_template {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => tradecast_testkit::nginx::TEMPLATE.to_owned(),
    };
    let mut nginx_template = args.nginx_template.as_ref().map_or_else(
        || "deploy/nginx.conf.template".to_owned(),
        |p| p.display().to_string(),
    );
    if let Some(params) = &args.nginx_server_params {
        let mut replaced = false;
        let lines: Vec<String> = template
            .lines()
            .map(|l| {
                if !replaced && !l.trim_start().starts_with('#') && l.contains("@NODE@") {
                    replaced = true;
                    format!("        server @NODE@ {params};")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        anyhow::ensure!(replaced, "the nginx template has no `server @NODE@` line");
        template = lines.join("\n") + "\n";
        nginx_template.push_str(&format!(" with `server @NODE@ {params};`"));
    }
    let nginx_server_line = template
        .lines()
        .find(|l| !l.trim_start().starts_with('#') && l.contains("@NODE@"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let nginx = tokio::task::spawn_blocking(move || Nginx::start_with(&template, &publics)).await?;
    let nginx_addr = nginx.addr;
    let nginx_pid = nginx.pid().context("nginx pid")?;
    let nginx_dir = nginx.dir().to_owned();
    cluster.nginx = Some(nginx);
    eprintln!(
        "nginx on {nginx_addr} (pid {nginx_pid}, prefix {})",
        nginx_dir.display()
    );
    let redis_pid = redis_pid(redis_port);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let node_pids: Vec<u32> = cluster
        .nodes
        .iter()
        .map(|n| n.pid().context("node pid"))
        .collect::<anyhow::Result<_>>()?;
    let rss_before: Vec<u64> = node_pids
        .iter()
        .map(|&p| procfs::rss_kib(p))
        .collect::<anyhow::Result<_>>()?;
    let nginx_rss_before = rss_with_children(nginx_pid);
    let redis_rss_before = redis_pid.map_or(0, |p| procfs::rss_kib(p).unwrap_or(0));

    // 2. The connections.
    eprintln!(
        "opening {} connections through nginx from {workers_n} worker processes…",
        args.connections
    );
    let connect_started = Instant::now();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut children = Vec::new();
    let mut stdins = Vec::new();
    for w in 0..workers_n {
        let count = args.per_worker.min(args.connections - w * args.per_worker);
        let mut command = Command::new(&me);
        command
            .arg("scale-worker")
            .args(["--server", &nginx_addr.to_string()])
            .args(["--local-ip", &format!("127.0.0.{}", 2 + w)])
            .args(["--connections", &count.to_string()])
            .args([
                "--first-login",
                &(FIRST_LOGIN + (w * args.per_worker) as u64).to_string(),
            ])
            .args(["--secret", SECRET])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--backoff-base-ms", &args.backoff_base_ms.to_string()])
            .args(["--backoff-cap-ms", &args.backoff_cap_ms.to_string()])
            .args(["--reconnect-deadline-s", &args.resume_timeout_s.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let mut child = command.spawn()?;
        stdins.push(child.stdin.take().context("worker stdin")?);
        let mut lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        let value = serde_json::from_str(&line).unwrap_or_else(
                            |_| json!({"ev":"exit","why":format!("said {line:?}")}),
                        );
                        if tx.send((w, value)).is_err() {
                            return;
                        }
                    }
                    _ => {
                        let _ = tx.send((w, json!({"ev":"exit","why":"stdout closed"})));
                        return;
                    }
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    cluster.fleet = Some(Fleet {
        children,
        stdins,
        rx,
        dropped: Vec::new(),
    });
    let fleet = cluster.fleet.as_mut().expect("just set");
    let ready = fleet.collect("ready", Duration::from_secs(360)).await?;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let opened = sum(&ready, "opened");
    let gave_up = sum(&ready, "gave_up");
    let connect_failures = merge_failures(&ready);
    eprintln!(
        "{opened} connections open in {connect_secs:.1} s ({gave_up} gave up; refusals: {connect_failures:?})"
    );
    if gave_up > 0 {
        bail!("{gave_up} connections could not be opened: {connect_failures:?}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut per_node_conns = Vec::new();
    for node in &cluster.nodes {
        per_node_conns.push(node.metric("tradecast_connections").await? as u64);
    }
    let rss_after: Vec<u64> = node_pids
        .iter()
        .map(|&p| procfs::rss_kib(p))
        .collect::<anyhow::Result<_>>()?;
    let nginx_rss_after = rss_with_children(nginx_pid);
    let redis_rss_after = redis_pid.map_or(0, |p| procfs::rss_kib(p).unwrap_or(0));
    let mut worker_rss: u64 = fleet
        .pids()
        .iter()
        .map(|&p| procfs::rss_kib(p).unwrap_or(0))
        .sum();
    eprintln!("connections per node: {per_node_conns:?}");

    // 3. Durable set-up: one `account` event per trader → `account_update` seq 1.
    let mut writer = StreamWriter::connect(&redis_url, StreamLayout::default(), None).await?;
    let src = format!("bench-scale-{}", std::process::id());
    let mut seq = 0u64;
    let mut account = |login: u64, balance: f64| {
        seq += 1;
        let ts = now_us() / 1000;
        json!({"v":1,"type":"account","src":src,"seq":seq,"ts":ts,"emit_ts":ts,"login":login,
               "name":format!("Trader {login}"),"ccy":"USD","leverage":100,"balance":balance,"credit":0.0})
    };
    let setup_started = Instant::now();
    let logins: Vec<u64> = (0..args.connections)
        .map(|i| FIRST_LOGIN + i as u64)
        .collect();
    for chunk in logins.chunks(1_000) {
        let batch: Vec<Value> = chunk.iter().map(|&l| account(l, BALANCE)).collect();
        writer.write(&batch).await.context("writing accounts")?;
    }
    let setup_written = setup_started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = fleet.ask(&json!({"cmd":"status"}), "status").await?;
        let done: u64 = status
            .iter()
            .filter_map(|s| s["at_least"][1].as_u64())
            .sum();
        if done >= opened {
            break;
        }
        if Instant::now() >= deadline {
            bail!("only {done} of {opened} connections got their account_update in 180 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let setup_delivered = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "{} account events written in {setup_written:.1} s, all applied by their clients after {setup_delivered:.1} s",
        logins.len()
    );

    // 4. Fan-out.
    eprintln!(
        "fan-out: {} ticks, one every {} ms…",
        args.ticks, args.tick_interval_ms
    );
    // CPU over the fan-out: the nodes, nginx (master + workers), and everything the
    // bench started (nodes, nginx, Redis, workers, this process) against the machine.
    let ours: Vec<u32> = node_pids
        .iter()
        .copied()
        .chain(redis_pid)
        .chain(fleet.pids())
        .chain([std::process::id()])
        .collect();
    let cpu_sum = |pids: &[u32]| -> f64 {
        pids.iter()
            .map(|&p| procfs::cpu_seconds(p).unwrap_or(0.0))
            .sum()
    };
    let cpu_now = || -> anyhow::Result<[f64; 4]> {
        let nginx = cpu_with_children(nginx_pid);
        Ok([
            cpu_sum(&node_pids),
            nginx,
            cpu_sum(&ours) + nginx,
            procfs::machine_busy_seconds()?,
        ])
    };
    let cpu_from = cpu_now()?;
    let fanout_started = Instant::now();
    let mut out_from = Vec::new();
    for node in &cluster.nodes {
        out_from.push((
            node.metric("tradecast_messages_out_total").await?,
            node.metric("tradecast_outbox_conflated_total").await?,
        ));
    }
    let mut tick_seq = 0u64;
    let tick_src = format!("{src}/ticks");
    let mut sent_ticks = Vec::new();
    let mut interval = tokio::time::interval(Duration::from_millis(args.tick_interval_ms.max(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for k in 0..args.ticks {
        interval.tick().await;
        let (ts, emit_us) = write_tick(&mut writer, &tick_src, &mut tick_seq, k).await?;
        sent_ticks.push((ts, emit_us));
    }
    let fanout = fleet
        .ask(
            &json!({"cmd":"fanout","ticks":sent_ticks,"wait_ms":15_000}),
            "fanout",
        )
        .await?;
    let elapsed = fanout_started.elapsed().as_secs_f64();
    let cpu_to = cpu_now()?;
    let mut fanout_nodes = Vec::new();
    for (k, node) in cluster.nodes.iter().enumerate() {
        fanout_nodes.push(json!({
            "node": k + 1,
            "messages_out": node.metric("tradecast_messages_out_total").await? - out_from[k].0,
            "conflated": node.metric("tradecast_outbox_conflated_total").await? - out_from[k].1,
        }));
    }
    let fleet = cluster.fleet.as_mut().expect("set");
    let [nodes_cpu, nginx_cpu, ours_cpu, machine_cpu]: [f64; 4] =
        std::array::from_fn(|i| (cpu_to[i] - cpu_from[i]) / elapsed);
    let other_cpu = (machine_cpu - ours_cpu).max(0.0);
    let mut latency = histogram();
    let mut per_tick: Vec<(u64, u64, u64)> = vec![(0, 0, 0); sent_ticks.len()];
    for answer in &fanout {
        latency.add(decode(answer["hist"].as_str().unwrap_or_default())?)?;
        for (k, t) in answer["ticks"]
            .as_array()
            .context("fanout ticks")?
            .iter()
            .enumerate()
        {
            per_tick[k].0 += t["copies"].as_u64().unwrap_or(0);
            per_tick[k].1 += t["duplicates"].as_u64().unwrap_or(0);
            per_tick[k].2 = per_tick[k].2.max(t["last_us"].as_u64().unwrap_or(0));
        }
    }
    let mut last_copy = histogram();
    let mut last_copy_ms = Vec::new();
    for (k, (_, emit_us)) in sent_ticks.iter().enumerate() {
        let l = per_tick[k].2.saturating_sub(*emit_us).max(1);
        let _ = last_copy.record(l);
        last_copy_ms.push(ms(l));
    }
    let copies: u64 = per_tick.iter().map(|t| t.0).sum();
    let copy_dups: u64 = per_tick.iter().map(|t| t.1).sum();
    let copies_expected = opened * args.ticks as u64;
    eprintln!(
        "fan-out: {copies} of {copies_expected} copies; per copy p50 {} ms p99 {} ms; last copy p50 {} ms",
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.99)),
        ms(last_copy.value_at_quantile(0.5))
    );

    // 5. Kill the busiest node and restart it at once.
    let mut node_conns_now = Vec::new();
    let mut leader = Vec::new();
    for node in &cluster.nodes {
        node_conns_now.push(node.metric("tradecast_connections").await? as u64);
        leader.push(node.metric("tradecast_ingest_leader").await.unwrap_or(0.0) == 1.0);
    }
    let victim = (0..cluster.nodes.len())
        .max_by_key(|&k| node_conns_now[k])
        .expect("at least one node");
    let victim_conns = node_conns_now[victim];
    let victim_led = leader[victim];
    fleet.poll_dropped()?;
    fleet.dropped.clear();
    eprintln!(
        "kill -9 node {} ({victim_conns} connections{}) and restart it on the same ports…",
        victim + 1,
        if victim_led {
            ", the ingest leader"
        } else {
            ""
        }
    );
    let kill_us = now_us();
    let killed_at = Instant::now();
    cluster.nodes[victim].kill().await;
    cluster.nodes[victim].spawn()?;
    let restarted_us = now_us();
    let fleet = cluster.fleet.as_mut().expect("set");
    // Durable events for the dropped traders, paced to spread them over ~2 s, while
    // polling how many have resumed.
    let per_batch = (victim_conns as usize).div_ceil(20).max(1);
    let mut written: HashSet<u64> = HashSet::new();
    let mut pending: Vec<u64> = Vec::new();
    let mut first_write_us = None;
    let mut last_write_us = 0;
    let mut restarted_ready_us = None;
    let mut last_status = Instant::now() - Duration::from_secs(1);
    let resume_deadline = killed_at + Duration::from_secs(args.resume_timeout_s);
    let mut progress = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fleet.poll_dropped()?;
        for login in std::mem::take(&mut fleet.dropped) {
            if written.insert(login) {
                pending.push(login);
            }
        }
        if !pending.is_empty() {
            let n = per_batch.min(pending.len());
            let batch: Vec<Value> = pending
                .drain(..n)
                .map(|l| account(l, BALANCE + 100.0))
                .collect();
            writer
                .write(&batch)
                .await
                .context("writing account updates")?;
            first_write_us.get_or_insert(now_us());
            last_write_us = now_us();
        }
        if restarted_ready_us.is_none() && cluster.nodes[victim].ready().await {
            restarted_ready_us = Some(now_us());
        }
        if last_status.elapsed() >= Duration::from_millis(500) {
            last_status = Instant::now();
            let status = fleet
                .ask(&json!({"cmd":"resume_status"}), "resume_status")
                .await?;
            let dropped_total = sum(&status, "dropped");
            let resumed_total = sum(&status, "resumed");
            let t = killed_at.elapsed().as_secs_f64();
            progress.push(
                json!({"s": (t * 10.0).round() / 10.0, "dropped": dropped_total,
                                 "resumed": resumed_total, "up": sum(&status, "up")}),
            );
            eprintln!(
                "  {t:5.1} s: {dropped_total} dropped, {resumed_total} resumed, {} account updates written",
                written.len() - pending.len()
            );
            let quiet = killed_at.elapsed() > Duration::from_secs(3);
            if quiet && dropped_total > 0 && resumed_total >= dropped_total && pending.is_empty() {
                break;
            }
            if Instant::now() >= resume_deadline {
                eprintln!(
                    "WARNING: {} clients did not resume within {} s",
                    dropped_total - resumed_total,
                    args.resume_timeout_s
                );
                break;
            }
        }
    }
    if restarted_ready_us.is_none() {
        cluster.nodes[victim].wait_ready(SETUP_WAIT).await?;
        restarted_ready_us = Some(now_us());
    }
    let fleet = cluster.fleet.as_mut().expect("set");
    let reports = fleet
        .ask(
            &json!({"cmd":"resume_report","kill_us":kill_us}),
            "resume_report",
        )
        .await?;
    let mut resume = histogram();
    let mut detect = histogram();
    let mut reconnect = histogram();
    let mut reply = histogram();
    let mut whole = histogram();
    for r in &reports {
        for (h, key) in [
            (&mut resume, "resume_hist"),
            (&mut detect, "detect_hist"),
            (&mut reconnect, "reconnect_hist"),
            (&mut reply, "reply_hist"),
            (&mut whole, "whole_hist"),
        ] {
            h.add(decode(r[key].as_str().unwrap_or_default())?)?;
        }
    }
    let affected = sum(&reports, "affected");
    let resumed = sum(&reports, "resumed");
    let recovered_true = sum(&reports, "recovered_true");
    let recovered_false = sum(&reports, "recovered_false");
    let failed_attempts = sum(&reports, "failed_attempts");
    let max_failed = reports
        .iter()
        .filter_map(|r| r["max_failed_attempts"].as_u64())
        .max()
        .unwrap_or(0);
    let multi_drops = sum(&reports, "dropped_more_than_once");
    let first_resume = reports
        .iter()
        .filter_map(|r| r["first_us"].as_u64())
        .filter(|&v| v > 0)
        .min()
        .unwrap_or(kill_us);
    let last_resume = reports
        .iter()
        .filter_map(|r| r["last_us"].as_u64())
        .max()
        .unwrap_or(kill_us);
    let all_failures = merge_failures(&reports);
    let stuck: Vec<Value> = reports
        .iter()
        .flat_map(|r| r["stuck"].as_array().cloned().unwrap_or_default())
        .take(10)
        .collect();
    let finals = fleet
        .ask(&json!({"cmd":"final","wait_ms":20_000}), "final")
        .await?;
    let expected_durable = sum(&finals, "expected");
    let applied_durable = sum(&finals, "applied");
    let lost = sum(&finals, "lost");
    let owed_down = sum(&finals, "owed_to_clients_still_down");
    let gap_messages = sum(&finals, "gap_messages");
    let dup_received = sum(&finals, "duplicates_received");
    let extra = sum(&finals, "unexpected_extra");
    let server_resyncs = sum(&finals, "server_resyncs");
    let problems: Vec<Value> = finals
        .iter()
        .flat_map(|f| {
            f["examples"]
                .as_array()
                .into_iter()
                .chain(f["problems"].as_array())
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
        })
        .take(20)
        .collect();
    let writes_written = written.len() as u64;
    eprintln!(
        "resume: {resumed} of {affected} resumed (recovered true {recovered_true}, false {recovered_false}); \
         kill → last resume {:.1} s; lost {lost}, duplicates received {dup_received}",
        last_resume.saturating_sub(kill_us) as f64 / 1e6
    );

    // 6. After the recovery: every connection holds its three channels again (those
    // refused `unavailable` retry), then connections per node, memory, and one more
    // tick to everyone.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut whole_total;
    loop {
        let status = fleet.ask(&json!({"cmd":"status"}), "status").await?;
        whole_total = sum(&status, "whole");
        if whole_total >= opened || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let whole_after_s = killed_at.elapsed().as_secs_f64();
    eprintln!(
        "{whole_total} of {opened} connections hold their three channels again ({whole_after_s:.1} s after the kill)"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut conns_after_recovery = Vec::new();
    for node in &cluster.nodes {
        conns_after_recovery.push(node.metric("tradecast_connections").await? as u64);
    }
    let rss_after_recovery: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.pid().map_or(0, |p| procfs::rss_kib(p).unwrap_or(0)))
        .collect();
    let mut refused = Vec::new();
    let mut slow_closes = Vec::new();
    for node in &cluster.nodes {
        refused.push(node.metric("tradecast_connections_refused_total").await? as u64);
        slow_closes.push(node.metric("tradecast_slow_consumer_closes_total").await? as u64);
    }
    let mut post_from = Vec::new();
    for node in &cluster.nodes {
        post_from.push((
            node.metric("tradecast_messages_out_total").await?,
            node.metric("tradecast_outbox_conflated_total").await?,
        ));
    }
    let fleet = cluster.fleet.as_mut().expect("set");
    let (ts, emit_us) = write_tick(&mut writer, &tick_src, &mut tick_seq, args.ticks).await?;
    let post = fleet
        .ask(
            &json!({"cmd":"fanout","ticks":[[ts, emit_us]],"wait_ms":15_000}),
            "fanout",
        )
        .await?;
    let post_copies: u64 = post
        .iter()
        .filter_map(|a| a["ticks"][0]["copies"].as_u64())
        .sum();
    let mut post_missed = BTreeMap::new();
    let mut post_missed_examples = Vec::new();
    for (w, a) in post.iter().enumerate() {
        if let Some(map) = a["ticks"][0]["missed_by"].as_object() {
            for (k, v) in map {
                *post_missed.entry(k.clone()).or_insert(0u64) += v.as_u64().unwrap_or(0);
            }
        }
        for e in a["ticks"][0]["missed_examples"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if post_missed_examples.len() < 10 {
                let conn = e["conn"].as_u64().unwrap_or(0);
                let login = FIRST_LOGIN + (w * args.per_worker) as u64 + conn;
                post_missed_examples
                    .push(json!({"login": login, "up": e["up"], "dropped": e["dropped"]}));
            }
        }
    }
    let mut post_nodes = Vec::new();
    for (k, node) in cluster.nodes.iter().enumerate() {
        post_nodes.push(json!({
            "node": k + 1,
            "messages_out": node.metric("tradecast_messages_out_total").await? - post_from[k].0,
            "conflated": node.metric("tradecast_outbox_conflated_total").await? - post_from[k].1,
        }));
    }
    let post_last = post
        .iter()
        .filter_map(|a| a["ticks"][0]["last_us"].as_u64())
        .max()
        .unwrap_or(emit_us)
        .saturating_sub(emit_us);
    worker_rss = worker_rss.max(
        fleet
            .pids()
            .iter()
            .map(|&p| procfs::rss_kib(p).unwrap_or(0))
            .sum(),
    );
    let nginx_status = access_log_statuses(&nginx_dir.join("logs/access.log"));

    // The report.
    let conflated: u64 = fanout_nodes
        .iter()
        .filter_map(|n| n["conflated"].as_f64())
        .sum::<f64>() as u64;
    let copies_lost = copies_expected.saturating_sub(copies + conflated);
    let ok = copies_lost == 0
        && copy_dups == 0
        && resumed == affected
        && affected > 0
        && lost == 0
        && extra == 0
        && post_copies == opened;
    let nodes_json: Vec<Value> = (0..cluster.nodes.len())
        .map(|k| {
            let per_conn =
                rss_after[k].saturating_sub(rss_before[k]) as f64 / per_node_conns[k].max(1) as f64;
            json!({
                "node": k + 1,
                "connections": per_node_conns[k],
                "rss_before_mib": mib(rss_before[k]),
                "rss_after_mib": mib(rss_after[k]),
                "rss_per_connection_kib": (per_conn * 100.0).round() / 100.0,
                "ingest_leader_at_kill": leader[k],
                "killed": k == victim,
                "connections_after_recovery": conns_after_recovery[k],
                "rss_after_recovery_mib": mib(rss_after_recovery[k]),
                "upgrades_refused_503_total": refused[k],
                "slow_consumer_closes": slow_closes[k],
            })
        })
        .collect();
    let figures = json!({
        "bench": "scale",
        "ok": ok,
        "command": command,
        "source": source,
        "machine": "2 cores, 24 GiB, loopback; load generator, nginx, Redis and 3 nodes share the machine",
        "settings": {
            "nodes": args.nodes, "connections": args.connections, "workers": workers_n,
            "per_worker": args.per_worker, "max_connections_per_node": args.max_connections,
            "ticks": args.ticks, "tick_interval_ms": args.tick_interval_ms,
            "backoff_base_ms": args.backoff_base_ms, "backoff_cap_ms": args.backoff_cap_ms,
            "nginx_template": nginx_template, "nginx_upstream_server_line": nginx_server_line,
        },
        "connect": {
            "opened": opened, "seconds": (connect_secs * 10.0).round() / 10.0,
            "per_second": (opened as f64 / connect_secs).round(),
            "failed_handshakes_retried": connect_failures,
        },
        "nodes": nodes_json,
        "nginx": {"rss_before_mib": mib(nginx_rss_before), "rss_after_mib": mib(nginx_rss_after),
                  "rss_per_connection_kib": ((nginx_rss_after.saturating_sub(nginx_rss_before)) as f64 / opened.max(1) as f64 * 100.0).round() / 100.0,
                  "access_log_statuses": nginx_status},
        "redis": {"rss_before_mib": mib(redis_rss_before), "rss_after_mib": mib(redis_rss_after)},
        "workers_rss_mib": mib(worker_rss),
        "durable_setup": {"events": logins.len(), "written_s": (setup_written * 10.0).round() / 10.0,
                          "all_applied_s": (setup_delivered * 10.0).round() / 10.0},
        "fanout": {
            "ticks": args.ticks, "copies": copies, "expected": copies_expected,
            "missing": copies_expected.saturating_sub(copies),
            "conflated_by_the_nodes": conflated, "lost": copies_lost, "duplicates": copy_dups,
            "per_copy_latency": summary(&latency),
            "time_to_last_copy": summary(&last_copy),
            "time_to_last_copy_each_ms": last_copy_ms,
            "copies_each": per_tick.iter().map(|t| t.0).collect::<Vec<_>>(),
            "per_node_during_fanout": fanout_nodes,
            "cpu_share_of_one_core": {
                "nodes": (nodes_cpu * 100.0).round() / 100.0,
                "nginx": (nginx_cpu * 100.0).round() / 100.0,
                "all_of_ours": (ours_cpu * 100.0).round() / 100.0,
                "other_processes": (other_cpu * 100.0).round() / 100.0,
            },
        },
        "kill": {
            "node": victim + 1, "connections": victim_conns, "was_ingest_leader": victim_led,
            "restarted_ready_after_ms": restarted_ready_us.map(|r| ms(r.saturating_sub(kill_us))),
            "restart_spawned_after_ms": ms(restarted_us.saturating_sub(kill_us)),
            "affected_clients": affected,
            "resumed": resumed,
            "recovered_true": recovered_true, "recovered_false": recovered_false,
            "kill_to_first_resume_ms": ms(first_resume.saturating_sub(kill_us)),
            "kill_to_last_resume_ms": ms(last_resume.saturating_sub(kill_us)),
            "per_client_resume": summary(&resume),
            "drop_noticed": summary(&detect),
            "handshake_done_again": summary(&reconnect),
            "resume_reply_received": summary(&reply),
            "all_three_channels_held_again": summary(&whole),
            "subscription_errors_retried": merge_map(&reports, "unavailable"),
            "failed_handshakes_during_resume": all_failures,
            "failed_handshakes_total": failed_attempts,
            "max_failed_handshakes_of_one_client": max_failed,
            "dropped_more_than_once": multi_drops,
            "account_updates_written": writes_written,
            "account_updates_first_ms": first_write_us.map(|w| ms(w.saturating_sub(kill_us))),
            "account_updates_last_ms": ms(last_write_us.saturating_sub(kill_us)),
            "progress": progress,
            "stuck_examples": stuck,
        },
        "durable": {
            "expected_messages": expected_durable, "applied_one_by_one": applied_durable,
            "lost": lost, "owed_to_clients_still_down": owed_down, "gap_messages": gap_messages, "duplicates_received_and_dropped": dup_received,
            "unexpected_extra": extra, "server_initiated_resyncs": server_resyncs,
            "problems": problems,
        },
        "after_recovery": {
            "connections_holding_all_three_channels": whole_total,
            "checked_at_s_after_kill": (whole_after_s * 10.0).round() / 10.0,
            "tick_copies": post_copies, "expected": opened, "time_to_last_copy_ms": ms(post_last),
            "missed_by": post_missed, "missed_examples": post_missed_examples,
            "per_node": post_nodes,
        },
        "run_seconds": run_started.elapsed().as_secs(),
    });

    let mut table = vec![
        "| figure | value |".to_owned(),
        "|---|---|".to_owned(),
        format!(
            "| connections through nginx ({workers_n} worker processes on 127.0.0.2–{}) | {opened} in {connect_secs:.1} s ({:.0}/s) |",
            1 + workers_n,
            opened as f64 / connect_secs
        ),
    ];
    if !connect_failures.is_empty() {
        table.push(format!(
            "| handshakes refused and retried while connecting | {} |",
            fmt_map(&connect_failures)
        ));
    }
    for k in 0..cluster.nodes.len() {
        let per_conn =
            rss_after[k].saturating_sub(rss_before[k]) as f64 / per_node_conns[k].max(1) as f64;
        table.push(format!(
            "| node {}: connections, RSS before → after, **per connection** | {} , {:.0} → {:.0} MiB, **{per_conn:.1} KiB**{} |",
            k + 1,
            per_node_conns[k],
            mib(rss_before[k]),
            mib(rss_after[k]),
            if k == victim { " (killed later)" } else { "" }
        ));
    }
    table.push(format!(
        "| nginx RSS (master + 8 workers) before → after | {:.0} → {:.0} MiB ({:.1} KiB per connection) |",
        mib(nginx_rss_before),
        mib(nginx_rss_after),
        nginx_rss_after.saturating_sub(nginx_rss_before) as f64 / opened.max(1) as f64
    ));
    table.push(format!(
        "| redis-server RSS before → after | {:.0} → {:.0} MiB |",
        mib(redis_rss_before),
        mib(redis_rss_after)
    ));
    table.push(format!(
        "| {} `account` events (durable seq 1 on every portfolio) | written in {setup_written:.1} s, applied by every client after {setup_delivered:.1} s |",
        logins.len()
    ));
    table.push(format!(
        "| fan-out: {} ticks (one every {} ms) × {opened} connections, copies received | {copies} of {copies_expected} ({conflated} replaced by a newer price in a node's queue, {copies_lost} lost, {copy_dups} duplicates) |",
        args.ticks, args.tick_interval_ms
    ));
    table.push(format!(
        "| **fan-out latency per copy** (XADD → frame read by the client), p50 / p99 / max | **{} / {} ms** / {} ms |",
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.max())
    ));
    table.push(format!(
        "| tick → last of its {opened} copies, p50 / max | {} / {} ms |",
        ms(last_copy.value_at_quantile(0.5)),
        ms(last_copy.max())
    ));
    table.push(format!(
        "| CPU during fan-out (share of one core): nodes / nginx / all ours / other processes | {:.0} % / {:.0} % / {:.0} % / {:.0} % |",
        nodes_cpu * 100.0,
        nginx_cpu * 100.0,
        ours_cpu * 100.0,
        other_cpu * 100.0
    ));
    table.push(format!(
        "| killed (kill -9) node {}{}, restarted at once on its ports; ready again after | {victim_conns} connections; {} ms |",
        victim + 1,
        if victim_led {
            " (the ingest leader)"
        } else {
            ""
        },
        restarted_ready_us.map_or(0.0, |r| ms(r.saturating_sub(kill_us)))
    ));
    table.push(format!(
        "| clients affected / resumed (recovered true / false) | {affected} / {resumed} ({recovered_true} / {recovered_false}) |"
    ));
    table.push(format!(
        "| **kill → first / last client resumed** | **{:.2} s / {:.2} s** |",
        first_resume.saturating_sub(kill_us) as f64 / 1e6,
        last_resume.saturating_sub(kill_us) as f64 / 1e6
    ));
    table.push(format!(
        "| per-client resume time (kill → reply + replay applied), p50 / p99 | {:.2} s / {:.2} s |",
        resume.value_at_quantile(0.5) as f64 / 1e6,
        resume.value_at_quantile(0.99) as f64 / 1e6
    ));
    let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    table.push(format!(
        "| of which, from the kill: drop seen by the client / new handshake done / resume reply, p50 (p99) | {:.2} ({:.2}) / {:.2} ({:.2}) / {:.2} ({:.2}) s |",
        p(&detect, 0.5),
        p(&detect, 0.99),
        p(&reconnect, 0.5),
        p(&reconnect, 0.99),
        p(&reply, 0.5),
        p(&reply, 0.99)
    ));
    let sub_errors = merge_map(&reports, "unavailable");
    table.push(format!(
        "| subscriptions refused during the storm and retried after 0.5–1.5 s; all 3 channels held again, p99 / last | {}; {:.2} s / {:.2} s |",
        fmt_map(&sub_errors),
        p(&whole, 0.99),
        whole.max() as f64 / 1e6
    ));
    table.push(format!(
        "| failed handshakes while resuming (retried with backoff) | {failed_attempts} ({}); at most {max_failed} for one client |",
        fmt_map(&all_failures)
    ));
    table.push(format!(
        "| durable messages expected / applied one by one; **lost** (gaps, or missing on a live connection), **duplicated**; owed to clients that never got back | {expected_durable} / {applied_durable}; **{lost}**, **0** applied twice ({dup_received} re-sent copies dropped by seq); {owed_down} |"
    ));
    table.push(format!(
        "| after recovery: connections per node; one more tick reached | {} ; {post_copies} of {opened} in {} ms |",
        conns_after_recovery
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
        ms(post_last)
    ));
    let table = table.join("\n");
    println!("## tradecast scale-out: {} nodes behind nginx", args.nodes);
    println!();
    println!("{table}");

    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&figures)? + "\n")?;
    let md_path = args.out.with_extension("md");
    let verdict = if ok {
        "Every price copy arrived (or was replaced by a newer price, as designed); every dropped client resumed; no durable message was lost or applied twice; after the recovery one more tick reached every connection.".to_owned()
    } else {
        format!(
            "**NOT CLEAN**: {copies_lost} fan-out copies lost, {} clients not resumed \
             ({owed_down} durable messages owed to them), {lost} durable messages lost on live \
             connections, {extra} unexpected, {} connections missed the tick after the \
             recovery; problems: {problems:?}",
            affected.saturating_sub(resumed),
            opened.saturating_sub(post_copies)
        )
    };
    let md = format!(
        "## tradecast scale-out: {nodes} nodes on one Redis behind nginx, {conns} connections\n\n\
         {table}\n\n{verdict}\n\n\
         Machine: 2 cores, 24 GiB, loopback; load generator, nginx, Redis and 3 nodes share the \
         machine. Source: {source}. Command:\n\n    \
         cargo build --release -p tradecast -p tradecast-bench\n    {command}\n\n\
         What each figure is, and what limits it:\n\n\
         - **Connections**: {workers_n} worker processes (`tradecast-bench scale-worker`), each \
         bound to its own 127.0.0.N, open trader connections (JWT HS256, login {first}…) to \
         nginx rendered from {nginx_template}, which hashes the token onto the nodes \
         (`--max-connections {cap}` each). A connection counts once it has read `welcome` and \
         the three default `subscribed`. The rate is bounded by the 2 shared cores (nginx, three \
         nodes each subscribing two Redis channels per trader, Redis, the workers) and by \
         each worker's {conc} handshakes in flight.\n\
         - **Memory**: `VmRSS` from `/proc` before the first connection and 3 s after the last, \
         divided by the node's `tradecast_connections` gauge. nginx is its master + workers \
         summed (shared pages counted in each).\n\
         - **Fan-out latency**: `emit` is the wall clock (µs) just before the tick's XADD into \
         `tc:ticks`; each copy's arrival is the wall clock when the worker read the frame \
         (one machine, one clock). It covers the XADD, the ingest leader's read, the Redis \
         publish to every node, each node's fan-out to its connections, nginx's proxying and \
         the workers reading. Per-copy percentiles come from the workers' HdrHistograms \
         merged; the time to the last copy is per tick. With ~{conns} copies per tick on 2 \
         cores the tail is CPU-bound: one tick's copies are written by 3 nodes, relayed by \
         nginx and read by the workers on the same two cores.\n\
         - **Resume**: the node with the most connections is killed with SIGKILL and restarted \
         at once on its ports, as a supervisor would. Its clients see nginx close their \
         connection, reconnect through nginx (full-jitter backoff: attempt k waits \
         U[0, min({cap_ms} ms, {base_ms} ms · 2^k)]) and send `subscribe` with `since` for \
         `portfolio:{{login}}`. nginx fails a handshake that is refused, times out (2 s \
         connect) or gets a 503 over to the next node (`proxy_next_upstream`, 3 tries); its \
         upstream line is `{nginx_server_line}`{health}. The survivors alone cannot hold every \
         client under their caps. Meanwhile the bench writes one more `account` event per dropped \
         trader (spread over ~2 s), so each resume has a durable message to replay (or to \
         receive live). A client has resumed when the reply to its resume arrived and it \
         applied every durable message up to the reply's `seq`; its resume time runs from the \
         kill. Then every connection must end with exactly the durable messages written for \
         it (1, or 2 for a dropped one), in `seq` order: lost = gaps + missing at the end.\n\n\
         The JSON file has every figure, the resume progress over time and nginx's access-log \
         status counts.\n",
        nodes = args.nodes,
        conns = opened,
        first = FIRST_LOGIN,
        cap = args.max_connections,
        conc = args.concurrency,
        cap_ms = args.backoff_cap_ms,
        base_ms = args.backoff_base_ms,
        health = if nginx_server_line.contains("max_fails=0") {
            " (`max_fails=0`: nginx never takes a node out of its ring; as the deployed \
             template; with `max_fails=1 fail_timeout=10s` it does, see bench/README.md)"
        } else {
            " (a node with a failed handshake leaves the ring for `fail_timeout`; nginx \
             counts a proxied WebSocket as a success only when it closes, so until then it \
             lets one new connection through per `fail_timeout`)"
        },
    );
    std::fs::write(&md_path, md)?;
    eprintln!("wrote {} and {}", args.out.display(), md_path.display());
    if !ok {
        bail!("{verdict}");
    }
    Ok(())
}

/// XADD one EURUSD tick (→ `price` on `prices:forex`); its `ts` (ms) identifies it.
async fn write_tick(
    writer: &mut StreamWriter,
    src: &str,
    seq: &mut u64,
    k: usize,
) -> anyhow::Result<(u64, u64)> {
    *seq += 1;
    let emit_us = now_us();
    let ts = emit_us / 1000;
    let bid = 1.08 + (k % 100) as f64 / 10_000.0;
    let tick = json!({"v":1,"type":"tick","src":src,"seq":*seq,"ts":ts,"emit_ts":ts,
        "symbol":"EURUSD","bid":bid,"ask":bid + 0.0002,"digits":5});
    writer.write(&[tick]).await.context("writing a tick")?;
    Ok((ts, emit_us))
}

fn fmt_map(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many access-log lines have each status (a WebSocket is logged when it closes;
/// refused handshakes at once), and how many were answered with every node out of
/// the ring ("no live upstreams": the upstream name instead of an address).
fn access_log_statuses(path: &Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        // `$remote_addr [$time_iso8601] $request_method $tc_path $status …`
        if let Some(status) = line.split_whitespace().nth(4) {
            *counts.entry(status.to_owned()).or_default() += 1;
        }
        if line.contains("upstream=tradecast") || line.contains(", tradecast ") {
            *counts.entry("no live upstreams".to_owned()).or_default() += 1;
        }
    }
    counts
}
