//! The two producers the binary ships, run as a broker's engineer would run them
//! against a real Redis: `tradecast publish` (events from a file into the streams) and
//! `tradecast simulate --redis` (the demo simulator writing as an MT5 plugin would),
//! with a node reading what they wrote.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use support::redis::*;
use support::*;
use tradecast_protocol::Role;
use tradecast_testkit::RedisServer;

/// Runs `tradecast ARGS` to the end.
fn tradecast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tradecast"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running tradecast")
}

/// A JSON-lines file of `lines` in the temporary directory.
fn jsonl(name: &str, lines: &[String]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tradecast-{}-{name}.jsonl", std::process::id()));
    std::fs::write(&path, lines.join("\n") + "\n").expect("writing the events file");
    path
}

/// Every entry's `d` field on `stream`, parsed.
async fn entries(redis: &RedisServer, stream: &str) -> Vec<Value> {
    xrange(redis, stream)
        .await
        .iter()
        .map(|e| serde_json::from_str(&e.get::<String>("d").expect("field d")).expect("JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_writes_a_file_into_the_streams_and_stops_at_its_first_bad_line() {
    let redis = RedisServer::start();
    let server = node(&redis);
    ready(&server).await;
    leader(&[&server]).await;
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;

    let good = jsonl(
        "good",
        &[
            event("file-1", 1, account(42, "Ada")).to_string(),
            event("file-1", 2, open(42, 7)).to_string(),
        ],
    );
    let out = tradecast(&["publish", "--redis", &redis.url(), good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = durable_until(&mut trader, "portfolio:42", |m| {
        m.iter().any(|m| m["type"] == "position_opened")
    })
    .await;
    let opened = got.iter().find(|m| m["type"] == "position_opened").unwrap();
    assert_eq!(opened["id"], 7, "{opened}");

    // Line 2 is not an ingest event: line 1 is written, line 2 and 3 are not, and the
    // error names the line.
    let bad = jsonl(
        "bad",
        &[
            event("file-1", 3, close(42, 7)).to_string(),
            r#"{"v":1,"src":"file-1","seq":4,"type":"teleport"}"#.to_owned(),
            event("file-1", 5, open(42, 8)).to_string(),
        ],
    );
    let out = tradecast(&["publish", "--redis", &redis.url(), bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad line must fail the command");
    assert!(
        stderr.contains("line 2"),
        "the error names the line: {stderr}"
    );
    let written: Vec<u64> = entries(&redis, "tc:events")
        .await
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(written, [1, 2, 3]);
    let _ = std::fs::remove_file(good);
    let _ = std::fs::remove_file(bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_writes_a_plugins_mix_that_a_node_ingests_without_a_dead_letter() {
    let redis = RedisServer::start();
    let server = node(&redis);
    ready(&server).await;
    leader(&[&server]).await;

    let out = tradecast(&[
        "simulate",
        "--redis",
        &redis.url(),
        "--rate",
        "200",
        "--duration-s",
        "2",
        "--traders",
        "50",
        "--ib-depth",
        "5",
    ]);
    assert!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let events = entries(&redis, "tc:events").await;
    let ticks = entries(&redis, "tc:ticks").await;
    let kinds: BTreeSet<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in ["symbol", "account", "ib_link", "order", "position", "deal"] {
        assert!(kinds.contains(kind), "no {kind} event in {kinds:?}");
    }
    assert!(!ticks.is_empty() && ticks.iter().all(|t| t["type"] == "tick"));
    // One source (`sim-01`) over both streams: its seq starts at 1 and never skips.
    let mut seqs: Vec<u64> = events
        .iter()
        .chain(&ticks)
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert!(
        seqs.iter().enumerate().all(|(i, s)| *s == i as u64 + 1),
        "gap or duplicate in {seqs:?}"
    );
    // The IB tree is 5 levels deep: follow the parents up from every linked login.
    let parent: std::collections::BTreeMap<u64, u64> = events
        .iter()
        .filter(|e| e["type"] == "ib_link" && e["op"] == "set")
        .map(|e| (e["login"].as_u64().unwrap(), e["ib"].as_u64().unwrap()))
        .collect();
    let depth = |mut login: u64| {
        let mut levels = 0;
        while let Some(ib) = parent.get(&login) {
            levels += 1;
            login = *ib;
        }
        levels
    };
    assert_eq!(parent.keys().map(|l| depth(*l)).max(), Some(5));

    // A node applies all of it: nothing is dead-lettered.
    let total = (events.len() + ticks.len()) as f64;
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while metric(&server, "tradecast_ingest_events_total").await < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node applied {} of {total} events",
            metric(&server, "tradecast_ingest_events_total").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(entries(&redis, "tc:dead").await.len(), 0);
    assert_eq!(
        metric(&server, "tradecast_ingest_dead_letters_total").await,
        0.0
    );
}
