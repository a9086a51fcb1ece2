//! Test support: run the real `tradecast` binary on loopback and talk to it.
#![allow(dead_code)]

pub mod nginx;
pub mod redis;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tradecast_client::{Client, Connect};
use tradecast_gateway::Authenticator;
use tradecast_protocol::{Principal, Role};

pub const SECRET: &str = "integration-test-secret";
pub const WAIT: Duration = Duration::from_secs(5);

/// A `tradecast serve` process; killed when dropped.
pub struct Server {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    args: Vec<String>,
}

impl Server {
    /// `tradecast serve` on free loopback ports with the test secret and `extra` flags.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_on("127.0.0.1:0", "127.0.0.1:0", extra)
    }

    pub fn start_on(listen: &str, admin: &str, extra: &[&str]) -> Server {
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            listen,
            "--admin-listen",
            admin,
            "--jwt-secret",
            SECRET,
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::launch(args, "warn", Stdio::inherit())
    }

    /// `tradecast` with exactly `args` (no test secret is added), `RUST_LOG=log`, and
    /// its log (stderr) sent to `stderr`. `restart` is only for `start`/`start_on`.
    pub fn launch(args: Vec<String>, log: &str, stderr: Stdio) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tradecast"))
            .args(&args)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning tradecast");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the listening line");
        let addr = |key: &str| -> SocketAddr {
            let field = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"));
            field.parse().unwrap()
        };
        let (public, admin) = (addr("public="), addr("admin="));
        Server {
            child,
            public,
            admin,
            args,
        }
    }

    /// Stop the process (SIGKILL) and start it again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        let extra: Vec<&str> = self.args[7..].iter().map(String::as_str).collect();
        let fresh = Server::start_on(&self.public.to_string(), &self.admin.to_string(), &extra);
        *self = fresh;
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freeze the process (SIGSTOP): it holds its sockets but does nothing.
    pub fn pause(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// Thaw a paused process (SIGCONT).
    pub fn resume(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// Send SIGTERM (graceful drain).
    pub fn terminate(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Wait for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn token(&self, sub: u64, role: Role) -> String {
        token(sub, role)
    }

    pub fn connect_options(&self, sub: u64, role: Role) -> Connect {
        Connect::new(self.public, token(sub, role))
    }

    /// Connect as (`sub`, `role`) and read up to and including `welcome`.
    pub async fn connect(&self, sub: u64, role: Role) -> (Client, Value) {
        let mut client = Client::connect(&self.connect_options(sub, role))
            .await
            .expect("connecting");
        let welcome = client.recv_within(WAIT).await.unwrap().expect("welcome");
        assert_eq!(welcome["type"], "welcome");
        (client, welcome)
    }

    /// `POST /v1/events` on the admin listener.
    pub async fn post_events(&self, body: &Value) -> (u16, Value) {
        let (status, body) = http(self.admin, "POST", "/v1/events", &[], &body.to_string()).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http(self.admin, "GET", path, &[], "").await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A valid HS256 token for the test secret.
pub fn token(sub: u64, role: Role) -> String {
    Authenticator::new(Some(SECRET), None)
        .unwrap()
        .mint(Principal { id: sub, role }, 3600)
        .unwrap()
}

/// A minimal HTTP/1.1 request; returns (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connecting for HTTP");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The HTTP status of a WebSocket upgrade request to `path` (with `headers`).
pub async fn upgrade_status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut all = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    all.extend_from_slice(headers);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in all {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Read messages until `subscribed` + its snapshot (or replay) for each of
/// `channels` have arrived; returns everything read.
pub async fn read_initial(client: &mut Client, channels: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut subscribed = 0;
    while subscribed < channels {
        let m = client.recv_within(WAIT).await.unwrap().expect("open");
        if m["type"] == "subscribed" {
            subscribed += 1;
        }
        out.push(m);
    }
    out
}

// ---------------------------------------------------------------------------
// Tokens with chosen claims, headers and keys.

/// Seconds since 1970.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token with arbitrary `claims`, signed with `secret`.
pub fn signed_token(claims: &Value, secret: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A token for `sub`/`role` that expires `ttl_secs` from now (signed with the test secret).
pub fn token_expiring_in(sub: u64, role: &str, ttl_secs: u64) -> String {
    signed_token(
        &serde_json::json!({"sub": sub.to_string(), "role": role, "exp": now_secs() + ttl_secs}),
        SECRET,
    )
}

/// base64url without padding (JWT segments).
pub fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT assembled by hand: `header.claims.signature` (signature given as raw text).
pub fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    )
}

// ---------------------------------------------------------------------------
// Reading replies and metrics.

/// Read until a message of `kind` arrives and return it; fails on close or timeout.
pub async fn expect(client: &mut Client, kind: &str) -> Value {
    client
        .recv_until(kind, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
        .0
}

/// The next message must be an `error` with `code` (and the echoed `id`, if given).
pub async fn expect_error(client: &mut Client, code: &str, id: Option<Value>) -> Value {
    let m = client.recv_within(WAIT).await.unwrap().expect("open");
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["code"], code, "{m}");
    if let Some(id) = id {
        assert_eq!(m["id"], id, "{m}");
    }
    m
}

/// Send `{"type":"ping","id":id}` and expect the next message to be its `pong`.
pub async fn assert_usable(client: &mut Client, id: u64) {
    client
        .send(&serde_json::json!({"type":"ping","id":id}))
        .await
        .unwrap();
    let m = client.recv_within(WAIT).await.unwrap().expect("open");
    assert_eq!(m, serde_json::json!({"type":"pong","id":id}));
}

/// Subscribe to `channel` with request `id`; the very next message must be the
/// matching `subscribed` reply.
pub async fn subscribe_ok(client: &mut Client, channel: &str, id: &str) {
    client
        .send(&serde_json::json!({"type":"subscribe","channel":channel,"id":id}))
        .await
        .unwrap();
    let m = client.recv_within(WAIT).await.unwrap().expect("open");
    assert_eq!(
        (m["type"].clone(), m["id"].clone()),
        (serde_json::json!("subscribed"), serde_json::json!(id))
    );
}

/// Connect, read the welcome and every default channel's `subscribed` + snapshot.
pub async fn connect_ready(server: &Server, sub: u64, role: Role) -> (Client, Value, Vec<Value>) {
    let (mut client, welcome) = server.connect(sub, role).await;
    let channels = welcome["channels"].as_array().unwrap().len();
    let mut initial = read_initial(&mut client, channels).await;
    // The snapshot of the last channel follows its `subscribed` (prices have none).
    let last = welcome["channels"][channels - 1].as_str().unwrap();
    if !last.starts_with("prices:") {
        initial.push(client.recv_within(WAIT).await.unwrap().expect("open"));
    }
    (client, welcome, initial)
}

/// Sum of the samples of a Prometheus metric (`name` and `name{...}` lines).
pub async fn metric(server: &Server, name: &str) -> f64 {
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An `account` ingest event.
pub fn account_event(seq: u64, login: u64) -> Value {
    serde_json::json!({"v":1,"type":"account","src":"test","seq":seq,"ts":seq,"login":login,"name":"Ann","ccy":"USD","leverage":100,"balance":1000.0,"credit":0.0})
}

/// A `position` open event (1 lot EURUSD buy).
pub fn open_event(seq: u64, login: u64, position: u64) -> Value {
    serde_json::json!({"v":1,"type":"position","op":"open","src":"test","seq":seq,"ts":seq,"login":login,"position_id":position,"symbol":"EURUSD","side":"buy","vol":10000,"price_open":1.1,"digits":5,"contract_size":100000})
}

/// A `position` close event.
pub fn close_event(seq: u64, login: u64, position: u64) -> Value {
    serde_json::json!({"v":1,"type":"position","op":"close","src":"test","seq":seq,"ts":seq,"login":login,"position_id":position,"close_deal":position + 1_000_000})
}

// ---------------------------------------------------------------------------
// A raw WebSocket client over a plain TCP stream. It never answers pings and
// writes only what the test tells it to, so it can play a silent or a stalled peer.

/// One frame as sent by the server (unmasked).
#[derive(Debug, Clone)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn text(&self) -> Option<Value> {
        (self.opcode == 1).then(|| serde_json::from_slice(&self.payload).unwrap())
    }
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub eof: bool,
}

impl RawWs {
    /// Upgrade on `path_and_query`; `recv_buffer` shrinks the socket's receive buffer
    /// (set before connecting so the TCP window stays small).
    pub async fn connect(
        addr: SocketAddr,
        path_and_query: &str,
        recv_buffer: Option<u32>,
    ) -> RawWs {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut stream = socket.connect(addr).await.unwrap();
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // Read the response head byte by byte so no frame byte is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                n,
                1,
                "connection closed during the handshake: {}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        RawWs {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Send a masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Parse one complete frame from the buffer, if there is one.
    fn parse(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        let masked = b[1] & 0x80 != 0;
        assert!(!masked, "server frames are never masked");
        if b.len() < at + len {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let payload = b[at..at + len].to_vec();
        at += len;
        self.buf.drain(..at);
        Some(Frame { opcode, payload })
    }

    /// The next frame before `deadline`; `None` on EOF, reset or timeout (see `eof`).
    pub async fn next_frame(&mut self, deadline: tokio::time::Instant) -> Option<Frame> {
        loop {
            if let Some(frame) = self.parse() {
                return Some(frame);
            }
            if self.eof {
                return None;
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Every frame until the connection ends (or `limit` passes).
    pub async fn frames_until_end(&mut self, limit: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame(deadline).await {
            frames.push(frame);
        }
        frames
    }
}
