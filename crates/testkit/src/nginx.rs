//! The real nginx in front of nodes, configured by `deploy/nginx.conf.template`.
//!
//! [`Nginx::start`] renders the template for the given node addresses and a free
//! loopback port, and runs the installed `nginx` as a child process with its own prefix
//! directory: the rendered `nginx.conf`, `logs/` (pid file, access and error logs, the
//! process's stdout and stderr) and `temp/`. Nothing outside it is read or written, so
//! it works as root (the workers then run as `nobody`) and as any other user, next to
//! a system nginx, and in parallel tests. Dropping it stops nginx and its workers and
//! deletes the directory (kept, and named on stderr, when the thread is panicking or
//! [`Nginx::keep_files`] asked for it).
//!
//! Used by the integration tests (`crates/tradecast/tests/nginx.rs`) and by
//! `tradecast-bench` (its 3-node topology). Like the rest of the crate it uses only `std`.
//!
//! The binary is `nginx` on `PATH`, else `/usr/sbin/nginx` (Debian's `nginx` package;
//! `scripts/test.sh` installs it when missing).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// kill(2) from the C library std already links (the crate takes no `libc`
// dependency); the signal numbers are the same on every Linux architecture.
unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// The deployed configuration, as a template (see its header).
pub const TEMPLATE: &str = include_str!("../../../deploy/nginx.conf.template");

/// How long nginx may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many free ports are tried when the chosen one turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// How long a fast shutdown (SIGTERM) may take before the process group is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where nginx is installed: `nginx` on `PATH`, else the usual system locations.
pub fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("nginx"));
    let system = [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .into_iter()
    .map(PathBuf::from);
    on_path
        .chain(system)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed (looked on PATH and in /usr/sbin): install it \
             (Debian: apt-get install nginx) or run scripts/test.sh"
            )
        })
}

/// The template with `@LISTEN@` replaced by `listen` and every line holding `@NODE@`
/// repeated once per node. Comment lines are copied as they are.
pub fn render(template: &str, listen: SocketAddr, nodes: &[SocketAddr]) -> String {
    assert!(!nodes.is_empty(), "an upstream needs at least one node");
    let mut out = String::new();
    for line in template.lines() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            out.push('\n');
        } else if line.contains("@NODE@") {
            for node in nodes {
                out.push_str(&line.replace("@NODE@", &node.to_string()));
                out.push('\n');
            }
        } else {
            out.push_str(&line.replace("@LISTEN@", &listen.to_string()));
            out.push('\n');
        }
    }
    let left = out
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find(|l| l.contains('@'));
    assert!(
        left.is_none(),
        "placeholder left in the rendered config: {left:?}"
    );
    out
}

/// A running nginx; stopped (with its workers) when dropped.
pub struct Nginx {
    child: Option<Child>,
    /// The public address: connect clients here.
    pub addr: SocketAddr,
    dir: PathBuf,
    /// Keep the prefix directory when dropped.
    keep: bool,
}

impl Nginx {
    /// Render the template for `nodes` on a free loopback port, start nginx and wait
    /// until it answers HTTP. Panics (with its logs) if it does not come up.
    pub fn start(nodes: &[SocketAddr]) -> Nginx {
        Self::start_with(TEMPLATE, nodes)
    }

    /// [`start`](Self::start) with another template (same placeholders), e.g. to try
    /// a change to the deployed one.
    pub fn start_with(template: &str, nodes: &[SocketAddr]) -> Nginx {
        let binary = binary();
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
            let dir = scratch_dir();
            fs::create_dir(dir.join("logs")).unwrap();
            fs::create_dir(dir.join("temp")).unwrap();
            let conf = dir.join("nginx.conf");
            fs::write(&conf, render(template, addr, nodes)).unwrap();
            let child = Command::new(&binary)
                // `-e stderr`: messages before the config is read go to our file, not
                // to a compiled-in path such as /var/log/nginx/error.log.
                .arg("-e")
                .arg("stderr")
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(File::create(dir.join("logs/stdout.log")).unwrap())
                .stderr(File::create(dir.join("logs/stderr.log")).unwrap())
                // Its own process group, so the workers can be killed with the master.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut nginx = Nginx {
                child: Some(child),
                addr,
                dir,
                keep: false,
            };
            match nginx.wait_ready() {
                Ok(()) => return nginx,
                // Most likely the port was taken in the meantime: try another.
                Err(logs) if logs.contains("Address already in use") => last_error = logs,
                Err(logs) => panic!("nginx did not start\n{logs}"),
            }
        }
        panic!("nginx did not start after {START_ATTEMPTS} attempts\n{last_error}");
    }

    /// Poll with a plain HTTP request until nginx answers (any status: a request
    /// without a token gets the node's 401 through nginx). `Err` carries the logs.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Err(format!("nginx exited ({status})\n{}", self.all_logs()));
            }
            if answers_http(self.addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs = self.all_logs();
                self.stop();
                return Err(format!(
                    "nginx did not answer within {READY_TIMEOUT:?}\n{logs}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master process's pid, while it runs (its workers are its children).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Keep (`true`) or delete (`false`, the default) the prefix directory, with the
    /// logs, when this is dropped; it is kept anyway when the thread is panicking.
    pub fn keep_files(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// The prefix directory (config, `logs/`, `temp/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The rendered configuration.
    pub fn config(&self) -> String {
        fs::read_to_string(self.dir.join("nginx.conf")).unwrap()
    }

    /// Every file in `logs/` (access and error logs, stdout, stderr) with its text.
    pub fn logs(&self) -> Vec<(PathBuf, String)> {
        let mut files: Vec<(PathBuf, String)> = fs::read_dir(self.dir.join("logs"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file())
            .map(|path| {
                let text = String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned();
                (path, text)
            })
            .collect();
        files.sort();
        files
    }

    /// The lines of the access log.
    pub fn access_log(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn all_logs(&self) -> String {
        self.logs()
            .iter()
            .map(|(path, text)| format!("--- {} ---\n{text}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stop nginx: SIGTERM (fast shutdown: the master stops its workers, which close
    /// their connections, then exits), and if that takes too long SIGKILL to the whole
    /// process group (master and workers), which is ours alone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        // SAFETY: kill(2) on our own child, which is not reaped yet (its pid cannot
        // have been reused).
        unsafe { kill(pid, SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            // `try_wait` reaps the master only once it has exited, and the master
            // exits only after its workers.
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: the group was created for this child (`process_group(0)`), and its
        // leader is still unreaped, so the group id is still ours.
        unsafe { kill(-pid, SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if self.keep || std::thread::panicking() {
            eprintln!("nginx files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether something answers a plain HTTP request on `addr` with an HTTP status line.
fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 ")
}

/// A fresh directory under the system temp dir, unique to this process and call.
fn scratch_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "tradecast-nginx-{}-{n}-{nanos}",
        std::process::id()
    ));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
