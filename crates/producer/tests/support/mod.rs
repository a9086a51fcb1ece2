//! Test support: the C library and test program, the `tradecast` binary, a
//! WebSocket client's helpers, Redis stream reads and a fault-injecting proxy.
#![allow(dead_code)]

pub mod proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECRET: &str = "producer-test-secret";
pub const WAIT: Duration = Duration::from_secs(10);

/// The crate's directory.
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory under the target directory's scratch space, deleted when
/// dropped unless the test is failing (then it is kept for a look).
pub fn temp_dir(name: &str) -> Scratch {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("producer-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// See [`temp_dir`].
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ---------------------------------------------------------------------------
// The C side.

/// `libtradecast_producer.a`, built by cargo together with the rlib this test links
/// (the lib target has crate-type staticlib too): it sits in the test binary's own
/// `deps` directory, or one level up where cargo copies it.
pub fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("deps directory");
    for dir in [deps, deps.parent().unwrap_or(deps)] {
        let lib = dir.join("libtradecast_producer.a");
        if lib.exists() {
            return lib;
        }
    }
    panic!(
        "libtradecast_producer.a not found next to {} (is crate-type staticlib still set?)",
        exe.display()
    );
}

/// The libraries a Rust staticlib needs on Linux (`rustc --print native-static-libs`).
const NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// Compile `tests/c/<file>` (C99, or C++11 for `.cpp`) against the committed headers
/// and the staticlib with the system compiler (`$CC`/`$CXX`, default `cc`/`c++`),
/// warnings as errors; the executable's path.
pub fn compile(file: &str) -> PathBuf {
    let src = crate_dir().join("tests/c").join(file);
    let stem = file.split('.').next().unwrap();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{stem}-{}", std::process::id()));
    let cpp = file.ends_with(".cpp");
    let (var, default, std) = if cpp {
        ("CXX", "c++", "-std=c++11")
    } else {
        ("CC", "cc", "-std=c99")
    };
    let compiler = std::env::var(var).unwrap_or_else(|_| default.into());
    let status = Command::new(&compiler)
        .args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-I"])
        .arg(crate_dir().join("include"))
        .arg(&src)
        .arg(staticlib())
        .arg("-o")
        .arg(&out)
        .args(NATIVE_LIBS)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run the compiler {compiler:?}: {e} (install gcc and g++)")
        });
    assert!(status.success(), "compiling {} failed", src.display());
    out
}

/// The C session program, compiled once per test binary.
pub fn session_program() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| compile("session.c"))
}

/// Run the C session program with `args` after the URL and spool directory; its
/// stdout. Panics (with its stderr) if it fails.
pub fn run_session(redis_url: &str, spool: &Path, args: &[&str]) -> String {
    let output = Command::new(session_program())
        .arg(redis_url)
        .arg(spool)
        .args(args)
        .output()
        .expect("running the C session program");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "session {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

// ---------------------------------------------------------------------------
// The tradecast binary.

/// The `tradecast` executable, found robustly:
///
/// 1. `$TRADECAST_BIN`, if set;
/// 2. `<target>/<profile>/tradecast` next to this test binary, if it is newer than
///    every `src/` file and `Cargo.toml` of the workspace's other crates and
///    `Cargo.lock` (so under `cargo test --workspace`, which builds it for the
///    `tradecast` package's own tests, it is used as is);
/// 3. otherwise the test asks cargo to build it (`cargo build -p tradecast --bin
///    tradecast` in this test binary's profile) and takes the path cargo reports.
///
/// (`CARGO_BIN_EXE_*` exists only inside the `tradecast` package itself.)
pub fn tradecast_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("TRADECAST_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let built = profile_dir.join(format!("tradecast{}", std::env::consts::EXE_SUFFIX));
        if is_fresh(&built) {
            return built;
        }
        let profile = profile_dir
            .file_name()
            .map_or("debug".into(), |n| n.to_string_lossy().into_owned());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(&cargo);
        cmd.args([
            "build",
            "-p",
            "tradecast",
            "--bin",
            "tradecast",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(crate_dir())
        .stderr(Stdio::inherit());
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {cargo}: {e}"));
        assert!(output.status.success(), "cargo build -p tradecast failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "tradecast")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no tradecast executable")
    })
}

/// True if `bin` exists and is newer than the workspace sources it is built from.
fn is_fresh(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    let workspace = crate_dir().join("../..");
    let mut newest = std::fs::metadata(workspace.join("Cargo.lock"))
        .and_then(|m| m.modified())
        .ok();
    let mut newer = |path: &Path| {
        if let Ok(t) = std::fs::metadata(path).and_then(|m| m.modified()) {
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
    };
    fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, f);
            } else {
                f(&path);
            }
        }
    }
    for krate in std::fs::read_dir(workspace.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = krate.path();
        if dir.file_name().is_some_and(|n| n == "producer") {
            continue;
        }
        newer(&dir.join("Cargo.toml"));
        walk(&dir.join("src"), &mut newer);
    }
    newest.is_some_and(|n| built > n)
}

/// A `tradecast serve` process on free loopback ports; killed when dropped.
pub struct Node {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

impl Node {
    /// `tradecast serve --redis URL` plus `extra` flags, with a short lease and
    /// checkpoint interval.
    pub fn start(redis_url: &str, extra: &[&str]) -> Node {
        let mut child = Command::new(tradecast_bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--jwt-secret", SECRET, "--redis", redis_url])
            .args(["--lease-ms", "1000", "--checkpoint-ms", "300"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning tradecast");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading the listening line");
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .parse()
                .unwrap()
        };
        Node {
            public: addr("public="),
            admin: addr("admin="),
            child,
        }
    }

    /// Wait until `/readyz` answers 200 and this node leads ingest.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = http_get(self.admin, "/readyz").0 == 200;
            let leader = ready && metric(self.admin, "tradecast_ingest_leader") == 1.0;
            if leader {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tradecast never became ready and leader"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Sum of a Prometheus metric's samples.
pub fn metric(admin: SocketAddr, name: &str) -> f64 {
    http_get(admin, "/metrics")
        .1
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An HS256 token for (`sub`, `role`) signed with the test secret.
pub fn token(sub: u64, role: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": sub.to_string(), "role": role, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------
// Reading the streams.

/// Every entry of `stream` (oldest first) as its parsed `d`; asserts each entry has
/// exactly the one field `d`.
pub fn read_stream(redis_url: &str, stream: &str) -> Vec<Value> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    entries
        .into_iter()
        .map(|(id, fields)| {
            assert_eq!(
                fields.len(),
                1,
                "entry {id} of {stream} has fields {fields:?}"
            );
            assert_eq!(fields[0].0, "d", "entry {id} of {stream}");
            let d = &fields[0].1;
            // The gateway's own parser accepts it.
            tradecast_protocol::ingest::parse(d.as_bytes())
                .unwrap_or_else(|e| panic!("entry {id} of {stream} is refused: {e}: {d}"));
            serde_json::from_str(d).unwrap()
        })
        .collect()
}

/// The `seq`s of `events`.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}
