//! `tradecast demo` as a new user runs it: it starts without Redis, prints the
//! page URL and tokens, and the printed tokens show live, moving numbers.
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::WAIT;
use tradecast_client::{Client, Connect};

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn demo_prints_working_tokens_and_numbers_move() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tradecast"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        let done = line.starts_with("Metrics:");
        printed.push(line);
        if done {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the demo took {:?} to start",
        started.elapsed()
    );
    let public: std::net::SocketAddr = printed[0]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("public="))
        .expect("listening line")
        .parse()
        .unwrap();
    assert!(
        printed
            .iter()
            .any(|l| l.trim() == format!("http://{public}/")),
        "page URL printed: {printed:?}"
    );
    let token_of = |label: &str| {
        printed
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("no {label} token in {printed:?}"))
            .to_owned()
    };

    // The trader sees positions, and their live profit moves.
    let mut trader = Client::connect(&Connect::new(public, token_of("Trader")))
        .await
        .unwrap();
    let (portfolio, _) = trader.recv_until("portfolio_full", WAIT).await.unwrap();
    assert!(
        !portfolio["positions"].as_array().unwrap().is_empty(),
        "the demo trader holds positions: {portfolio}"
    );
    let (update, _) = trader.recv_until("position_update", WAIT).await.unwrap();
    assert!(update["profit"].is_number(), "live profit: {update}");

    // The IB and the risk desk tokens work too.
    let mut ib = Client::connect(&Connect::new(public, token_of("IB")))
        .await
        .unwrap();
    ib.recv_until("commissions_full", WAIT).await.unwrap();
    let mut risk = Client::connect(&Connect::new(public, token_of("Risk desk")))
        .await
        .unwrap();
    // The first exposure may be the empty snapshot; the live table follows within a second.
    let deadline = Instant::now() + WAIT;
    loop {
        let (exposure, _) = risk.recv_until("exposure", WAIT).await.unwrap();
        if !exposure["symbols"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "exposure stayed empty");
    }

    // The page offers the same identities.
    let (status, body) = support::http(public, "GET", "/demo/identities", &[], "").await;
    assert_eq!(status, 200);
    let identities: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(identities.as_array().unwrap().len(), 3);
}
