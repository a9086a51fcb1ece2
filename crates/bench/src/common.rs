//! Small helpers the scenarios share: HTTP to the admin listener, clocks,
//! histograms, the source version a result was measured on, finding a redis-server's
//! pid, and tying a child process's life to ours.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_websockets::{ClientBuilder, WebSocketStream};

/// A minimal HTTP/1.1 GET; (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET {path} timed out"))??;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A POST of one JSON body (an event or an array of them) to `/v1/events`.
pub async fn post_events(admin: SocketAddr, body: &str) -> anyhow::Result<()> {
    let exchange = async {
        let mut stream = TcpStream::connect(admin).await?;
        let request = format!(
            "POST /v1/events HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("POST /v1/events timed out")??;
    anyhow::ensure!(
        response.starts_with("HTTP/1.1 200"),
        "POST /v1/events failed: {response}"
    );
    Ok(())
}

/// The sum of every sample of `name` in a Prometheus text body (all label sets).
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        // Not `sum()`: an empty f64 sum is -0.0, which prints as "-0".
        .fold(0.0, |a, b| a + b)
}

/// Wall-clock µs since 1970: every process of a run shares it (one machine).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A histogram of µs, up to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// An HdrHistogram in its V2 encoding, as hex (how workers send them).
pub fn encode_histogram(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| anyhow::anyhow!("serializing a histogram: {e:?}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn decode_histogram(hex: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("decoding a histogram: {e:?}"))
}

/// µs as ms: three decimals below 10 ms, one above.
pub fn ms(us: u64) -> f64 {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        (ms * 1000.0).round() / 1000.0
    } else {
        (ms * 10.0).round() / 10.0
    }
}

/// p50, p90, p99, p99.9, max and mean of a histogram of µs, in ms.
pub fn latency_summary(h: &Histogram<u64>) -> Value {
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

/// `p50 / p90 / p99 / p99.9 / max` in ms, for a Markdown cell.
pub fn latency_cell(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".to_owned();
    }
    [0.5, 0.9, 0.99, 0.999]
        .iter()
        .map(|&q| ms(h.value_at_quantile(q)))
        .chain([ms(h.max())])
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" / ")
        + " ms"
}

/// `a: 1, b: 2`, or `none`.
pub fn fmt_map(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The child gets SIGKILL when this process dies (even by SIGKILL), so a crashed or
/// killed benchmark leaves no node or worker behind.
pub fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The commit of the working tree the bench runs in, and whether it has uncommitted
/// changes (`"52191bd + uncommitted changes"`), or `"unknown"` outside a git checkout.
pub fn source_version() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) if git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()) => {
            format!("{commit} + uncommitted changes")
        }
        Some(commit) => commit,
        None => "unknown".to_owned(),
    }
}

/// The pid of the `redis-server` listening on 127.0.0.1:`port`.
pub fn redis_pid(port: u16) -> Option<u32> {
    let suffix = format!("127.0.0.1:{port}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.starts_with("redis-server") || cmdline.contains("/redis-server"))
                .then_some(())?;
            cmdline
                .split(['\0', ' '])
                .any(|s| s == suffix)
                .then_some(pid)
        })
}

/// A WebSocket to `server`'s `/ws` with `token`, from `local_ip` with the port picked
/// at `connect()` (see [`bind_address_no_port`]), Nagle off, no frame size limits.
pub async fn connect_ws(
    server: SocketAddr,
    local_ip: IpAddr,
    token: &str,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let socket = match local_ip {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    bind_address_no_port(&socket)?;
    socket
        .bind(SocketAddr::new(local_ip, 0))
        .with_context(|| format!("binding to {local_ip}"))?;
    let stream = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    stream.set_nodelay(true)?;
    let (ws, _response) = ClientBuilder::new()
        .uri(&format!("ws://{server}/ws?token={token}"))?
        .limits(tokio_websockets::Limits::unlimited())
        .connect_on(stream)
        .await
        .context("WebSocket upgrade refused")?;
    Ok(ws)
}

/// `IP_BIND_ADDRESS_NO_PORT`: with it, `bind(ip:0)` leaves the port to `connect()`,
/// which may reuse one port towards different destinations; without it every bound
/// socket takes a port out of the ephemeral range for good.
fn bind_address_no_port(socket: &tokio::net::TcpSocket) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(
        rc == 0,
        "IP_BIND_ADDRESS_NO_PORT: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}
