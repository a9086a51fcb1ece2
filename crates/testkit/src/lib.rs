//! Test support: real `redis-server` processes on free loopback ports.
//!
//! Integration tests that need Redis start their own server instead of sharing one:
//! each [`RedisServer`] is a fresh, empty `redis-server` child process bound to
//! `127.0.0.1` on a port nobody else uses, with its own scratch directory. Tests can
//! therefore run in parallel, never see each other's keys, and never touch a Redis a
//! developer runs on the default port 6379.
//!
//! ```no_run
//! use tradecast_testkit::RedisServer;
//!
//! let mut redis = RedisServer::start(); // waits until it answers PING
//! assert_eq!(redis.cli(&["SET", "k", "v"]), "OK");
//! let url = redis.url(); // "redis://127.0.0.1:P/" for the client under test
//! # let _ = url;
//! redis.kill(); // simulate a crash: SIGKILL, no clean shutdown
//! redis.restart(); // same port, empty again
//! assert_eq!(redis.cli(&["EXISTS", "k"]), "0");
//! // Dropping `redis` kills the process and deletes its directory.
//! ```
//!
//! [`RedisCluster`] does the same for a Redis Cluster of N masters,
//! [`nginx::Nginx`] runs the real nginx with `deploy/nginx.conf.template` in front of
//! nodes, and [`Proxy`] is a TCP proxy that can delay or black-hole what passes
//! through it (a slow or vanished peer, between a client and a node or a node and
//! Redis).
//!
//! Everything here is synchronous and uses only `std`, so it works from plain `#[test]`
//! functions as well as from `#[tokio::test]` ones (the few blocking waits are short).
//! Failures (no `redis-server` installed, a server that does not come up) panic with
//! an explanation: in a test that is the most useful thing to do.
//!
//! The binaries are looked up on `PATH` as `redis-server` and `redis-cli` (Debian's
//! `redis-server` package installs both in `/usr/bin`; `scripts/test.sh` installs it
//! when missing).

pub mod fuzz;
pub mod keys;
pub mod nginx;
mod proxy;

pub use proxy::Proxy;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The server binary, looked up on `PATH`.
const REDIS_SERVER: &str = "redis-server";
/// The command-line client, looked up on `PATH`.
const REDIS_CLI: &str = "redis-cli";
/// How long a server may take to answer PING, or a cluster to reach `cluster_state:ok`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How many fresh ports [`RedisServer::start`] tries when a port turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// Ports a developer's own Redis may use: never handed out.
const RESERVED_PORTS: [u16; 2] = [6379, 16379];
/// Lines of the server log shown when it fails.
const LOG_TAIL_LINES: usize = 30;

/// Ports already handed out by this process, so that two servers started at the same
/// time by parallel tests cannot be given the same port.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A currently free TCP port on `127.0.0.1`.
///
/// The port is found by binding a listener to port 0 (the kernel picks a free one)
/// and closing it again, so it is free *now*; something else could still grab it
/// before the caller binds it. Within one process the same port is never returned
/// twice, which removes the race between parallel tests; across processes the risk
/// is small, and [`RedisServer::start`] retries on another port if it happens.
/// Redis's default ports (6379 and its cluster bus port 16379) are never returned.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind a TCP port on 127.0.0.1: {e}"));
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        if !RESERVED_PORTS.contains(&port) && handed_out.insert(port) {
            return port;
        }
    }
}

/// A scratch directory under [`std::env::temp_dir`], unique to this process and call.
fn unique_temp_dir(prefix: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "tradecast-testkit-{prefix}-{}-{n}-{nanos}",
            std::process::id()
        ));
        // `create_dir` (not `create_dir_all`) fails if the directory exists, so a
        // leftover from an earlier run is never reused.
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    }
}

/// The last lines of a log file, for panic messages.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    format!("--- last lines of {} ---\n{tail}", path.display())
}

/// Send one inline command (`PING`) over a fresh connection and return the first line
/// of the reply, or `None` if nothing answered.
fn inline_command(port: u16, command: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while !reply.ends_with(b"\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

/// Run `redis-cli -h 127.0.0.1 -p port args...`; `Err` carries a description of the
/// failure (the client could not run, or exited unsuccessfully).
fn run_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new(REDIS_CLI)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {REDIS_CLI}: {e} (is redis-server installed?)"))?;
    if !output.status.success() {
        return Err(format!(
            "`{REDIS_CLI} -p {port} {}` failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A `redis-server` child process on `127.0.0.1`, empty and without persistence.
///
/// It is killed (SIGKILL) when dropped and its scratch directory is deleted, so a
/// panicking test leaves nothing behind. Its log (Redis writes it to stdout when no
/// `logfile` is set) goes to `redis.log` in that directory instead of the test output,
/// and its last lines are shown if the server fails to come up.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    /// Extra arguments (cluster mode), given again on restart.
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Start a standalone server on a free port and wait until it answers PING.
    ///
    /// The server runs as `redis-server --bind 127.0.0.1 --port P --save ""
    /// --appendonly no --dir <tempdir>`: nothing is ever written to disk, so every
    /// start (and [`restart`](Self::restart)) is empty. If the port was taken in the
    /// meantime, another one is tried.
    ///
    /// Panics if `redis-server` cannot run or does not answer within 10 s, with the
    /// tail of its log.
    pub fn start() -> RedisServer {
        Self::start_with(Vec::new)
    }

    /// [`start`](Self::start) with extra `redis-server` arguments, made afresh for
    /// each attempt (they may name ports of their own).
    fn start_with(extra_args: impl Fn() -> Vec<String>) -> RedisServer {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut server = RedisServer {
                port: free_port(),
                dir: unique_temp_dir("redis"),
                extra_args: extra_args(),
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                // Most likely the port was taken between `free_port` and the bind:
                // try again elsewhere (dropping `server` cleans up).
                Err(Exited(message)) => last_error = message,
                Err(TimedOut(message)) => panic!("{message}"),
            }
        }
        panic!("redis-server did not start after {START_ATTEMPTS} attempts: {last_error}");
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL a Redis client connects to: `redis://127.0.0.1:P/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's scratch directory (its log is `redis.log` in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kill the server with SIGKILL (a crash, not a clean shutdown) and wait for the
    /// process to exit, so that the port is released when this returns. Calling it on
    /// a server that is not running does nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix. An error means the process has
            // already exited, which is fine: `wait` then just reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill the server if it is running and start a new, empty one on the same port,
    /// then wait until it answers PING. Clients configured with [`url`](Self::url)
    /// can reconnect: this is how tests simulate a Redis crash and recovery.
    ///
    /// Panics if the server does not come back within 10 s.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(Exited(message) | TimedOut(message)) = self.spawn_and_wait() {
            panic!("restart on the same port failed: {message}");
        }
    }

    /// Run `redis-cli -h 127.0.0.1 -p P <args>` and return its standard output,
    /// trimmed: `cli(&["GET", "k"])` returns the value, `cli(&["PING"])` `"PONG"`.
    ///
    /// Output is what `redis-cli` prints when not attached to a terminal: raw values
    /// one per line, without `(integer)` or quotes. A Redis error reply is not a
    /// failure of the client and comes back as text (`"ERR unknown command ..."`), so
    /// tests can assert on it. Panics if `redis-cli` cannot run or exits unsuccessfully
    /// (e.g. the server is down).
    pub fn cli(&self, args: &[&str]) -> String {
        run_cli(self.port, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Spawn the process with its log in `dir/redis.log` and wait for PING.
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let log_path = self.dir.join("redis.log");
        // Append, so that a restart keeps the earlier run's log for diagnosis.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
        let stderr = log.try_clone().expect("a log file handle can be cloned");
        let child = Command::new(REDIS_SERVER)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {REDIS_SERVER}: {e}; install it (Debian: apt-get install \
                     redis-server, or run scripts/test.sh)"
                )
            });
        self.child = Some(child);
        self.wait_for_ping(&log_path)
    }

    /// Poll PING until the server answers `+PONG`, exits, or 10 s pass.
    fn wait_for_ping(&mut self, log_path: &Path) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(Exited(format!(
                    "redis-server on port {} exited ({status})\n{}",
                    self.port,
                    log_tail(log_path)
                )));
            }
            if inline_command(self.port, "PING").as_deref() == Some("+PONG") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(TimedOut(format!(
                    "redis-server on port {} did not answer PING within {:?}\n{}",
                    self.port,
                    READY_TIMEOUT,
                    log_tail(log_path)
                )));
            }
            thread::sleep(POLL_EVERY);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Why a server did not come up.
enum StartError {
    /// The process exited: typically its port was taken.
    Exited(String),
    /// It runs but did not answer in time.
    TimedOut(String),
}
use StartError::{Exited, TimedOut};

/// A Redis Cluster of masters without replicas, each a [`RedisServer`] in cluster
/// mode. Dropping it kills every node.
///
/// The 16384 hash slots are split evenly between the masters by
/// `redis-cli --cluster create`. A cluster client can start from any of
/// [`urls`](Self::urls).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start `masters` nodes (at least 3, as Redis Cluster requires), join them with
    /// `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`, and wait
    /// until every node reports `cluster_state:ok` in `CLUSTER INFO`.
    ///
    /// Each node runs with `--cluster-enabled yes --cluster-node-timeout 2000`, its
    /// `nodes.conf` in its own scratch directory, and its cluster bus on a second free
    /// port (`--cluster-port`) rather than the default port + 10000, which might be
    /// taken or out of range. Takes about two seconds, most of it `--cluster create`
    /// waiting for the nodes to meet.
    ///
    /// Panics if `masters < 3`, if a node does not start, or if the cluster is not
    /// ready within 10 s.
    pub fn start(masters: usize) -> RedisCluster {
        assert!(
            masters >= 3,
            "a Redis Cluster needs at least 3 masters, got {masters}"
        );
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with(|| {
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        // Relative to --dir, so it lands in the node's scratch directory.
                        "--cluster-config-file".into(),
                        "nodes.conf".into(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                        "--cluster-port".into(),
                        free_port().to_string(),
                    ]
                })
            })
            .collect();
        let cluster = RedisCluster { nodes };

        let addresses: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        if let Err(e) = run_cli(cluster.nodes[0].port, &args) {
            panic!("{e}");
        }
        cluster.wait_until_ok();
        cluster
    }

    /// One `redis://127.0.0.1:P/` URL per node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes' client ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Poll `CLUSTER INFO` on every node until all say `cluster_state:ok`: the slots
    /// are assigned as soon as `--cluster create` returns, but the nodes need a
    /// moment of gossip to agree.
    fn wait_until_ok(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<&RedisServer> = self.nodes.iter().collect();
        while !pending.is_empty() {
            pending.retain(|node| {
                !run_cli(node.port, &["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.lines().any(|l| l.trim() == "cluster_state:ok"))
            });
            if pending.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let node = pending[0];
                let info = run_cli(node.port, &["CLUSTER", "INFO"]).unwrap_or_else(|e| e);
                panic!(
                    "cluster not ready within {READY_TIMEOUT:?}: node {} says\n{info}\n{}",
                    node.port,
                    log_tail(&node.dir.join("redis.log"))
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}
