//! The idle benchmark: how much memory one idle, authenticated, subscribed
//! connection costs the node, and how long one message takes to reach all of them.
//!
//! 1. Start `tradecast serve` and read its resident memory at rest.
//! 2. Open `--connections` trader connections (each subscribed to its portfolio,
//!    orders and `prices:forex`) from worker processes on 127.0.0.2, 127.0.0.3, …
//! 3. Read the node's memory again: (after − before) / connections.
//! 4. Post a tick to `/v1/events` `--broadcasts` times; every connection receives
//!    the `price`; report the time from the post to the last copy's arrival and
//!    the node's CPU time per delivered message.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::procfs;

#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Connections to open in total.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connections per worker process (each from its own 127.0.0.x).
    #[arg(long, default_value_t = 5_000)]
    per_worker: usize,
    /// Broadcast messages to time, one second apart.
    #[arg(long, default_value_t = 5)]
    broadcasts: usize,
    /// The `tradecast` binary (default: next to this one).
    #[arg(long)]
    tradecast: Option<std::path::PathBuf>,
    /// Port for the node's public listener.
    #[arg(long, default_value_t = 18_080)]
    port: u16,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

const SECRET: &str = "bench-secret";
const SYMBOLS: [&str; 10] = [
    "EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCHF", "NZDUSD", "USDCAD", "EURGBP", "EURJPY",
    "GBPJPY",
];

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let tradecast = args
        .tradecast
        .clone()
        .unwrap_or_else(|| me.with_file_name("tradecast"));
    let listen = format!("127.0.0.1:{}", args.port);
    let mut node = Command::new(&tradecast)
        .args([
            "serve",
            "--listen",
            &listen,
            "--admin-listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", tradecast.display()))?;
    let mut node_out = BufReader::new(node.stdout.take().context("node stdout")?).lines();
    let line = node_out
        .next_line()
        .await?
        .context("node exited at start")?;
    let addr = |key: &str| -> anyhow::Result<SocketAddr> {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .context("listening line")?
            .parse()
            .context("address")
    };
    let (public, admin) = (addr("public=")?, addr("admin=")?);
    let pid = node.id().context("node pid")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = procfs::rss_kib(pid)?;

    let workers_n = args.connections.div_ceil(args.per_worker);
    eprintln!(
        "opening {} connections from {workers_n} worker processes…",
        args.connections
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..workers_n {
        let count = args.per_worker.min(args.connections - w * args.per_worker);
        let mut child = Command::new(&me)
            .args([
                "worker",
                "--server",
                &public.to_string(),
                "--secret",
                SECRET,
            ])
            .args(["--local-ip", &format!("127.0.0.{}", 2 + w)])
            .args(["--connections", &count.to_string()])
            .args([
                "--first-login",
                &(100_000 + w * args.per_worker).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        workers.push(Worker {
            child,
            stdin,
            lines,
        });
    }
    let bar = indicatif::ProgressBar::new(workers_n as u64).with_message("workers ready");
    let mut opened = 0usize;
    for worker in &mut workers {
        let line = worker
            .lines
            .next_line()
            .await?
            .context("a worker exited while connecting")?;
        opened += line
            .strip_prefix("ready ")
            .context("worker said something odd")?
            .parse::<usize>()?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = procfs::rss_kib(pid)?;
    let per_conn_kib = (rss_after.saturating_sub(rss_before)) as f64 / opened as f64;

    let mut latencies_ms = Vec::new();
    let mut delivered_total = 0usize;
    let cpu_before = procfs::cpu_seconds(pid)?;
    for b in 0..args.broadcasts {
        let symbol = SYMBOLS[b % SYMBOLS.len()];
        for worker in &mut workers {
            worker
                .stdin
                .write_all(format!("expect {symbol}\n").as_bytes())
                .await?;
            worker.stdin.flush().await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = now_us();
        let tick = json!({"v":1,"type":"tick","src":"bench","seq":b + 1,"ts":sent / 1000,"emit_ts":sent / 1000,
                          "symbol":symbol,"bid":1.1 + b as f64 / 1000.0,"ask":1.1002 + b as f64 / 1000.0,"digits":5});
        post(admin, &tick.to_string()).await?;
        let (mut got, mut last) = (0usize, 0u64);
        for worker in &mut workers {
            let line = worker.lines.next_line().await?.context("a worker exited")?;
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 4 || fields[0] != "recv" {
                bail!("unexpected worker line {line:?}");
            }
            got += fields[2].parse::<usize>()?;
            last = last.max(fields[3].parse()?);
        }
        if got < opened {
            eprintln!("broadcast {symbol}: only {got} of {opened} connections received it");
        }
        delivered_total += got;
        latencies_ms.push(last.saturating_sub(sent) as f64 / 1000.0);
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let cpu_used = procfs::cpu_seconds(pid)? - cpu_before;
    let us_per_message = cpu_used * 1e6 / delivered_total.max(1) as f64;
    let mut sorted = latencies_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];

    println!("## tradecast idle benchmark");
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| connections (authenticated, 3 channels each) | {opened} |");
    println!("| time to open them all | {connect_secs:.1} s |");
    println!(
        "| node RSS before / after | {} / {} MiB |",
        rss_before / 1024,
        rss_after / 1024
    );
    println!("| **RSS per idle connection** | **{per_conn_kib:.2} KiB** |");
    println!(
        "| broadcast to all: post → last copy (each) | {} |",
        latencies_ms
            .iter()
            .map(|l| format!("{l:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| **broadcast, median** | **{median:.1} ms** |");
    println!(
        "| copies delivered | {delivered_total} of {} |",
        opened * args.broadcasts
    );
    println!(
        "| node CPU per delivered copy (incl. the rest of the node's work in that window) | {us_per_message:.2} µs |"
    );
    if let Some(out) = &args.out {
        let figures = json!({
            "connections": opened, "connect_seconds": connect_secs,
            "rss_before_kib": rss_before, "rss_after_kib": rss_after, "rss_per_connection_kib": per_conn_kib,
            "broadcast_ms": latencies_ms, "broadcast_median_ms": median,
            "delivered": delivered_total, "expected": opened * args.broadcasts,
            "cpu_us_per_delivered_message": us_per_message,
        });
        std::fs::write(out, serde_json::to_string_pretty(&figures)?)?;
    }
    for mut worker in workers {
        let _ = worker.child.kill().await;
    }
    let _ = node.kill().await;
    Ok(())
}

/// POST one JSON body to the admin listener's `/v1/events`.
async fn post(admin: SocketAddr, body: &str) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(admin).await?;
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    if !response.starts_with("HTTP/1.1 200") {
        bail!("POST /v1/events failed: {response}");
    }
    Ok(())
}
