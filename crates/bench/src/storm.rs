//! `storm`: kill a node and measure how long its clients take to reconnect and
//! resume, and whether any durable message was lost or duplicated.
//!
//! Needs Redis: the channel logs must outlive the node (`--broker redis`, or 3 nodes).
//!
//! 1. Write the set-up events (an `account` per trader, the IB tree) and wait until
//!    they are applied; connect traders, IBs and admins (about 90/8/2 %); write one
//!    more `account` per trader, delivered live (durable `account_update` seq 2).
//! 2. `kill -9` the node with the most connections and start it again at once on its
//!    ports, as a supervisor would. Its clients see their connection drop and
//!    reconnect (straight to the node, or through nginx to any node) with full-jitter
//!    backoff, then send `subscribe` with `since` on every durable channel.
//! 3. Meanwhile the bench writes one more `account` event for every dropped trader, so
//!    each resume has a durable message to replay or to receive live.
//! 4. A client has resumed when it holds all its channels again and every durable
//!    channel has its resume reply and the replay up to the reply's `seq`. Then the
//!    durable check: `seq` contiguity on every channel of every connection, every
//!    trader's portfolio at its expected `seq` (2, or 3 if it dropped), and a
//!    final `subscribe … since` on every durable channel that must find nothing the
//!    client had not received.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};

use crate::common::{decode_histogram, fmt_map, latency_summary, now_us};
use crate::fleet::{self, Plan, sum};
use crate::population::{FIRST_TRADER, Population};
use crate::results::{Outcome, Run};
use crate::topology::{BrokerKind, Source, Topology, TopologyArgs};

#[derive(Debug, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Connections in total (about 90 % traders, 8 % IBs, 2 % admins); with several
    /// nodes about a third are on the node that is killed.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    #[arg(long, default_value_t = 5_000)]
    per_worker: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Every dropped client must have resumed within this long after the kill.
    #[arg(long, default_value_t = 120)]
    resume_timeout_s: u64,
}

pub async fn run(args: StormArgs) -> anyhow::Result<()> {
    if args.topology.broker() == BrokerKind::Memory {
        bail!(
            "storm needs Redis (--broker redis, or --nodes 3): the embedded broker's \
             channel logs die with the node, so there is nothing to resume from"
        );
    }
    let run = Run::begin("storm", args.topology.name())?;
    let mut topology = Topology::start(&args.topology).await?;
    let result = measure(&args, &mut topology).await;
    topology.stop(result.is_err()).await;
    run.finish(&args.topology.out_dir, result?)
}

fn seconds(us: u64) -> f64 {
    (us as f64 / 10_000.0).round() / 100.0
}

async fn measure(args: &StormArgs, topology: &mut Topology) -> anyhow::Result<Outcome> {
    let population = Population::of(args.connections);
    // The accounts and the IB tree first (seq 1 on every portfolio; the IBs'
    // networks), applied before anyone connects.
    let mut ingest = topology.ingest().await?;
    let mut source = Source::new("storm");
    let events: Vec<Value> = population
        .setup_events()
        .into_iter()
        .map(|body| source.event(body))
        .collect();
    let events_count = events.len();
    let setup_s = topology.apply(&mut ingest, &events).await?;
    let ranges = population.ranges();
    let (mut fleet, opened) = fleet::open(&Plan {
        server: topology.entry(),
        users: &ranges,
        per_worker: args.per_worker,
        prices: false,
        track: false,
        concurrency: args.concurrency,
    })
    .await?;
    if opened.gave_up > 0 {
        bail!("{} connections could not be opened", opened.gave_up);
    }

    // 1. One more `account` event per trader, delivered live (seq 2).
    let account = |source: &mut Source, login: u64, balance: f64| {
        source.event(
            json!({"type":"account","login":login,"name":format!("Trader {login}"),
            "ccy":"USD","leverage":100,"balance":balance,"credit":0.0}),
        )
    };
    let events: Vec<Value> = (0..population.traders)
        .map(|t| account(&mut source, population.trader(t), 100_250.0))
        .collect();
    ingest.send(&events).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = fleet.ask(json!({"cmd":"status","min":2})).await?;
        if sum(&status, "portfolio_at_least") >= population.traders as u64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the live account_update did not reach every trader within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. The kill.
    let mut per_node = Vec::new();
    for node in &topology.nodes {
        per_node.push(node.metric("tradecast_connections").await? as u64);
    }
    let victim = (0..per_node.len())
        .max_by_key(|&k| per_node[k])
        .unwrap_or(0);
    let victim_led = topology.nodes[victim]
        .metric("tradecast_ingest_leader")
        .await?
        == 1.0;
    eprintln!(
        "killing node {} ({} connections) and restarting it",
        victim + 1,
        per_node[victim]
    );
    let kill_us = now_us();
    topology.kill_and_restart(victim).await?;
    let ready_after_us = now_us() - kill_us;

    // 3. One more account event per dropped trader; wait until every dropped client
    //    has resumed.
    let bar = fleet::bar(per_node[victim], "resumed");
    let deadline = Instant::now() + Duration::from_secs(args.resume_timeout_s);
    let mut written = 0u64;
    let mut progress = Vec::new();
    loop {
        fleet.poll()?;
        let logins: Vec<u64> = std::mem::take(&mut fleet.dropped)
            .into_iter()
            .filter(|&l| l >= FIRST_TRADER && l < FIRST_TRADER + population.traders as u64)
            .collect();
        if !logins.is_empty() {
            let events: Vec<Value> = logins
                .iter()
                .map(|&l| account(&mut source, l, 100_500.0))
                .collect();
            ingest.send(&events).await?;
            written += logins.len() as u64;
        }
        let status = fleet.ask(json!({"cmd":"resume_status"})).await?;
        let dropped = sum(&status, "dropped");
        let resumed = sum(&status, "resumed");
        let since_kill = now_us() - kill_us;
        progress.push(
            json!({"s": seconds(since_kill), "dropped": dropped, "resumed": resumed,
            "reconnected": sum(&status, "reconnected")}),
        );
        bar.set_length(dropped.max(1));
        bar.set_position(resumed);
        // Done once every dropped client resumed, with drops quiet for a while.
        let settled = dropped > 0 && resumed >= dropped && since_kill > 3_000_000;
        if settled || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bar.finish_and_clear();
    let reports = fleet
        .ask(json!({"cmd":"resume_report","kill_us":kill_us}))
        .await?;
    let verify = fleet
        .ask(json!({"cmd":"verify","wait_ms":60_000,"portfolio_seq":2}))
        .await?;
    let merged = |key: &str| -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        let mut h = crate::common::histogram();
        for r in &reports {
            h.add(decode_histogram(r[key].as_str().unwrap_or_default())?)?;
        }
        Ok(h)
    };
    let resume = merged("resume_hist")?;
    let detect = merged("detect_hist")?;
    let reconnect = merged("reconnect_hist")?;
    let reply = merged("reply_hist")?;
    let affected = sum(&reports, "affected");
    let all_resumed = sum(&reports, "resumed");
    let mut failures_during = std::collections::BTreeMap::new();
    let mut errors = std::collections::BTreeMap::new();
    for r in &reports {
        for (map, key) in [(&mut failures_during, "failures"), (&mut errors, "errors")] {
            for (k, v) in r[key].as_object().into_iter().flatten() {
                *map.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    let lost = sum(&verify, "lost");
    let duplicated = sum(&verify, "duplicates");
    let q = |h: &hdrhistogram::Histogram<u64>, q: f64| seconds(h.value_at_quantile(q));
    let table = vec![
        ("who".to_owned(), population.describe()),
        (
            "set-up before connecting (accounts, IB tree)".to_owned(),
            format!("{} events applied in {setup_s:.1} s", events_count),
        ),
        opened.row(fleet.workers()),
        (
            "connections per node before the kill".to_owned(),
            per_node
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
        ),
        (
            "killed (SIGKILL) and restarted at once".to_owned(),
            format!(
                "node {}{}; ready again after {:.2} s",
                victim + 1,
                if victim_led { " (the ingest leader)" } else { "" },
                seconds(ready_after_us)
            ),
        ),
        (
            "clients dropped / resumed".to_owned(),
            format!(
                "{affected} / {all_resumed} (channels resumed by replay: {}, by snapshot: {})",
                sum(&reports, "channels_recovered"),
                sum(&reports, "channels_snapshot")
            ),
        ),
        (
            "**kill → every client reconnected and resumed**".to_owned(),
            format!("**{:.2} s**", seconds(resume.max())),
        ),
        (
            "per client, from the kill: drop seen / handshake done / resume replies / resumed, p50 (p99)".to_owned(),
            format!(
                "{} ({}) / {} ({}) / {} ({}) / {} ({}) s",
                q(&detect, 0.5),
                q(&detect, 0.99),
                q(&reconnect, 0.5),
                q(&reconnect, 0.99),
                q(&reply, 0.5),
                q(&reply, 0.99),
                q(&resume, 0.5),
                q(&resume, 0.99)
            ),
        ),
        (
            "handshakes failed and retried (backoff) / subscription errors retried".to_owned(),
            format!(
                "{} ({}) / {}",
                sum(&reports, "failed_attempts"),
                fmt_map(&failures_during),
                fmt_map(&errors)
            ),
        ),
        (
            "`account` events written for dropped traders".to_owned(),
            written.to_string(),
        ),
        (
            "**durable messages lost / duplicated**".to_owned(),
            format!(
                "**{lost} / {duplicated}** (on {} durable channels: gaps {}, missing at the end {}, never logged {})",
                sum(&verify, "channels_checked"),
                sum(&verify, "gaps"),
                sum(&verify, "missing_at_end"),
                sum(&verify, "never_logged")
            ),
        ),
    ];
    let mut failures = Vec::new();
    if all_resumed < affected || affected == 0 {
        failures.push(format!(
            "{} of {affected} dropped clients did not resume within {} s",
            affected - all_resumed.min(affected),
            args.resume_timeout_s
        ));
    }
    if lost > 0 || duplicated > 0 {
        failures.push(format!(
            "{lost} durable messages lost, {duplicated} duplicated"
        ));
    }
    if sum(&verify, "connections_not_checked") > 0 {
        failures.push(format!(
            "{} connections could not be checked",
            sum(&verify, "connections_not_checked")
        ));
    }
    let figures = json!({
        "population": {"traders": population.traders, "ibs": population.ibs(), "admins": population.admins},
        "connections": opened.connections,
        "connections_per_node_before": per_node,
        "victim": {"node": victim + 1, "was_ingest_leader": victim_led,
            "ready_after_s": seconds(ready_after_us)},
        "affected": affected, "resumed": all_resumed,
        "kill_to_all_resumed_s": seconds(resume.max()),
        "per_client": {"resumed": latency_summary(&resume), "drop_seen": latency_summary(&detect),
            "reconnected": latency_summary(&reconnect), "replies": latency_summary(&reply)},
        "failed_handshakes": sum(&reports, "failed_attempts"),
        "failed_handshakes_by_kind": failures_during, "subscription_errors": errors,
        "accounts_written_after_kill": written,
        "progress": progress,
        "durable": {"lost": lost, "duplicated": duplicated, "verify": verify},
        "stuck_examples": reports.iter().flat_map(|r| r["stuck"].as_array().cloned().unwrap_or_default()).take(10).collect::<Vec<_>>(),
    });
    Ok(Outcome {
        figures,
        table,
        notes: vec![format!(
            "Times run from the SIGKILL (wall clock, µs). With one node every client drops \
             and reconnects to the same node once it is back; with several nodes the \
             victim's clients reconnect through nginx, which hashes each token onto a node \
             and moves a refused or timed-out handshake to the next one \
             (`proxy_next_upstream`). Clients back off with full jitter (attempt k waits \
             U[0, min(8 s, 0.5 s · 2^k)]) and answer an `unavailable` subscription error by \
             subscribing again after 0.5–1.5 s (docs/protocol.md §5). Durable check: see \
             `trades`; in addition every trader's portfolio must reach `seq` 2 (or \
             3 if it dropped), counted as lost where the node never logged one. Progress \
             over time is in the JSON file. Resume timeout: {} s.",
            args.resume_timeout_s
        )],
        failures,
    })
}
