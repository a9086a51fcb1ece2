//! The deployed nginx configuration (`deploy/nginx.conf.template`, run by the real
//! nginx) in front of three nodes on one Redis: clients connect through it, stay on
//! one node per token, and when a node dies (kill -9) or drains (SIGTERM) mid-stream
//! its clients reconnect through nginx to a live node and resume with `since`, so
//! every trader still gets every durable message of its portfolio exactly once, in
//! order. No token reaches nginx's logs.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::nginx::Nginx;
use support::redis::*;
use support::*;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tradecast_client::{Client, Closed, Connect};
use tradecast_protocol::Role;
use tradecast_testkit::RedisServer;

/// Traders connected through nginx, with distinct logins from `FIRST_LOGIN`.
const TRADERS: u64 = 30;
const FIRST_LOGIN: u64 = 7001;
/// Rounds of events; each opens a position per trader and closes the one before.
const ROUNDS: u64 = 30;
const ROUND_EVERY: Duration = Duration::from_millis(100);
/// The node is stopped after this many rounds.
const STOP_AFTER_ROUND: u64 = ROUNDS / 2;
/// Everything a trader should get arrives before this, counted from its start.
const TRADER_PATIENCE: Duration = Duration::from_secs(20);

fn position_id(login: u64, round: u64) -> u64 {
    login * 1000 + round
}

/// What the producer causes on `portfolio:{login}`, in order.
fn expected(login: u64) -> Vec<String> {
    let mut out = vec!["account_update".to_owned()];
    for round in 1..=ROUNDS {
        out.push(format!("position_opened {}", position_id(login, round)));
        if round > 1 {
            out.push(format!("position_closed {}", position_id(login, round - 1)));
        }
    }
    out.push(format!("position_closed {}", position_id(login, ROUNDS)));
    out
}

/// A durable message as it is compared with [`expected`].
fn describe(m: &Value) -> String {
    match m["id"].as_u64() {
        Some(id) => format!("{} {id}", m["type"].as_str().unwrap_or("?")),
        None => m["type"].as_str().unwrap_or("?").to_owned(),
    }
}

/// What one trader saw.
#[derive(Debug, Default)]
struct Outcome {
    login: u64,
    /// Durable messages of `portfolio:{login}` applied, each exactly once, in order.
    applied: Vec<Value>,
    /// How each connection but the last ended.
    closes: Vec<Option<Closed>>,
    /// The `subscribed` replies to resumes.
    resumes: Vec<Value>,
    /// Durable messages the resumes replayed (published while away).
    replayed: u64,
    /// Durable messages received again (allowed by the protocol, dropped by seq).
    duplicates: usize,
    /// It stayed away until every other trader was done (see [`Progress`]).
    stayed_away: bool,
    /// `reconnect` messages received (a draining node's notice).
    reconnect_notices: usize,
}

/// Shared by the traders: how many have finished, and how many are expected to
/// finish without a reconnect (set once the node to stop is chosen). Every second
/// client of the stopped node stays away until those are done: by then the events of
/// every round were processed, so its resume must replay them (the other half
/// reconnects at once, while events flow).
#[derive(Debug, Default, Clone)]
struct Progress {
    finished: u64,
    survivors: Option<u64>,
    closed: u64,
}

/// Connect through nginx, retrying while the upgrade is refused (e.g. no live node
/// for a moment), until `deadline`.
async fn connect(nginx: SocketAddr, token: &str, deadline: Instant) -> Result<Client, String> {
    loop {
        match Client::connect(&Connect::new(nginx, token)).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() >= deadline => return Err(format!("connecting: {e:#}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One trader, a client that follows docs/protocol.md §6-7: on every reconnect it
/// resumes `portfolio:{login}` with `since` = the last durable message it applied,
/// ignores that channel's durable messages until the resume's reply (the default
/// subscription's snapshot is superseded by the replay), drops duplicates by `seq`,
/// and treats a gap as an error. Returns once it has applied the close of its last
/// position.
async fn trader(
    login: u64,
    token: String,
    nginx: SocketAddr,
    ready: mpsc::Sender<u64>,
    progress: watch::Sender<Progress>,
) -> Result<Outcome, String> {
    let deadline = Instant::now() + TRADER_PATIENCE;
    let channel = format!("portfolio:{login}");
    let last_position = position_id(login, ROUNDS);
    let mut out = Outcome {
        login,
        ..Outcome::default()
    };
    // (epoch, seq of the last durable message applied), once subscribed.
    let mut position: Option<(Value, u64)> = None;
    loop {
        let mut client = connect(nginx, &token, deadline).await?;
        // Until the reply to our resume arrives: its request id.
        let mut waiting: Option<String> = None;
        if let Some((epoch, last)) = &position {
            let id = format!("resume-{}", out.resumes.len() + 1);
            let since = json!({"epoch": epoch, "seq": last});
            client
                .send(&json!({"type":"subscribe","channel":channel,"since":since,"id":id}))
                .await
                .map_err(|e| format!("sending the resume: {e:#}"))?;
            waiting = Some(id);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match client.recv_within(left).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    return Err(format!(
                        "{e:#}; applied up to {:?}, waiting {waiting:?}",
                        position.as_ref().map(|p| p.1)
                    ));
                }
            };
            if m["type"] == "reconnect" {
                out.reconnect_notices += 1;
            }
            if m["channel"] != channel.as_str() {
                continue;
            }
            if m["type"] == "subscribed" {
                match (&waiting, &mut position) {
                    (Some(id), Some((epoch, last))) if m["id"] == id.as_str() => {
                        if m["recovered"] != true || m["epoch"] != *epoch {
                            return Err(format!("resume not recovered: {m}"));
                        }
                        out.replayed += m["seq"].as_u64().unwrap_or(0).saturating_sub(*last);
                        out.resumes.push(m);
                        waiting = None;
                    }
                    // The default subscription of a reconnect: our resume follows.
                    (Some(_), _) => {}
                    (None, None) => {
                        if m["seq"] != 0 {
                            return Err(format!("a fresh channel has seq 0: {m}"));
                        }
                        position = Some((m["epoch"].clone(), 0));
                        ready.send(login).await.unwrap();
                    }
                    (None, Some(_)) => return Err(format!("unexpected {m}")),
                }
                continue;
            }
            // Snapshots and live figures carry no seq; while a resume is pending the
            // replay will carry every durable message.
            let Some(seq) = m["seq"].as_u64() else {
                continue;
            };
            if waiting.is_some() {
                continue;
            }
            let (_, last) = position
                .as_mut()
                .ok_or("durable message before subscribed")?;
            if seq <= *last {
                out.duplicates += 1;
                continue;
            }
            if seq != *last + 1 {
                return Err(format!("gap: {m} after seq {last}"));
            }
            *last = seq;
            let done = m["type"] == "position_closed" && m["id"] == last_position;
            out.applied.push(m);
            if done {
                client.close().await;
                progress.send_modify(|p| p.finished += 1);
                return Ok(out);
            }
        }
        out.closes.push(client.closed.clone());
        if Instant::now() >= deadline {
            return Err("still reconnecting at the deadline".into());
        }
        let mut nth = 0;
        progress.send_modify(|p| {
            nth = p.closed;
            p.closed += 1;
        });
        if nth % 2 == 1 && !out.stayed_away {
            out.stayed_away = true;
            let mut watching = progress.subscribe();
            let everyone_else =
                watching.wait_for(|p| p.survivors.is_some_and(|survivors| p.finished >= survivors));
            tokio::time::timeout_at(deadline, everyone_else)
                .await
                .map_err(|_| "the other traders never finished")?
                .unwrap();
        } else {
            // A little backoff, spread over the traders.
            tokio::time::sleep(Duration::from_millis(20 + (login % 10) * 10)).await;
        }
    }
}

/// `tradecast_connections` of every node, once their sum is `total`.
async fn connections(nodes: &[&Server], total: u64) -> Vec<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut counts = Vec::new();
        for node in nodes {
            counts.push(metric(node, "tradecast_connections").await as u64);
        }
        if counts.iter().sum::<u64>() == total {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "connections per node {counts:?}, expected {total} in all"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the busiest node goes away mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: its connections just end (nginx closes them without a close frame).
    Kill,
    /// SIGTERM: it sends `reconnect`, closes with 1001 and exits.
    Drain,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_reconnect_through_nginx_and_resume_without_loss() {
    through_nginx(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_nodes_clients_move_through_nginx_and_resume_without_loss() {
    through_nginx(Stop::Drain).await;
}

async fn through_nginx(stop: Stop) {
    let redis = RedisServer::start();
    // As `support::redis::node`, with a short drain window.
    let url = redis.url();
    let flags = [
        "--redis",
        &url,
        "--lease-ms",
        "1000",
        "--checkpoint-ms",
        "300",
        "--drain-ms",
        "1000",
    ];
    let mut nodes = vec![
        Server::start(&flags),
        Server::start(&flags),
        Server::start(&flags),
    ];
    for n in &nodes {
        ready(n).await;
    }
    leader(&nodes.iter().collect::<Vec<_>>()).await;
    let publics: Vec<SocketAddr> = nodes.iter().map(|n| n.public).collect();
    let nginx = Nginx::start(&publics);

    // A bad token gets the node's 401 through nginx (and is not retried elsewhere).
    let bogus = "not-a-jwt-but-secret-4c1d";
    assert_eq!(
        upgrade_status(nginx.addr, &format!("/ws?token={bogus}"), &[]).await,
        401
    );

    // Sticky: a second connection with the same token lands on the same node.
    let probe = token(9999, Role::Client);
    let mut first = connect(nginx.addr, &probe, Instant::now() + WAIT)
        .await
        .unwrap();
    let all: Vec<&Server> = nodes.iter().collect();
    let on = connections(&all, 1).await;
    let mut second = connect(nginx.addr, &probe, Instant::now() + WAIT)
        .await
        .unwrap();
    let twice = connections(&all, 2).await;
    assert_eq!(
        twice,
        on.iter().map(|n| n * 2).collect::<Vec<_>>(),
        "one token, two nodes"
    );
    first.recv_until("welcome", WAIT).await.unwrap();
    second.recv_until("welcome", WAIT).await.unwrap();
    first.close().await;
    second.close().await;
    connections(&all, 0).await;

    // The traders connect through nginx and subscribe.
    let (ready_tx, mut ready_rx) = mpsc::channel(TRADERS as usize);
    let progress = watch::Sender::new(Progress::default());
    let logins: Vec<u64> = (FIRST_LOGIN..FIRST_LOGIN + TRADERS).collect();
    let tokens: Vec<String> = logins.iter().map(|&l| token(l, Role::Client)).collect();
    let tasks: Vec<_> = logins
        .iter()
        .zip(&tokens)
        .map(|(&login, token)| {
            tokio::spawn(trader(
                login,
                token.clone(),
                nginx.addr,
                ready_tx.clone(),
                progress.clone(),
            ))
        })
        .collect();
    for _ in 0..TRADERS {
        tokio::time::timeout(WAIT, ready_rx.recv())
            .await
            .expect("every trader subscribes")
            .unwrap();
    }
    // The node holding the most of them is the one to stop.
    let counts = connections(&all, TRADERS).await;
    let victim = (0..counts.len()).max_by_key(|&i| counts[i]).unwrap();
    let victim_addr = nodes[victim].public;
    let lead = leader(&all).await;
    progress.send_modify(|p| p.survivors = Some(TRADERS - counts[victim]));
    assert!(
        counts.iter().filter(|&&c| c > 0).count() >= 2,
        "the hash spreads tokens over nodes: {counts:?}"
    );

    // The producer: accounts, then a round of opens and closes every 100 ms.
    let mut producer = writer(&redis).await;
    let (half_tx, half_rx) = oneshot::channel();
    let feed = {
        let logins = logins.clone();
        tokio::spawn(async move {
            let mut seq = 0;
            let mut next = |body: Value| {
                seq += 1;
                event("mt5-nginx", seq, body)
            };
            let accounts: Vec<Value> = logins
                .iter()
                .map(|&l| next(account(l, &format!("Trader {l}"))))
                .collect();
            producer.write(&accounts).await.unwrap();
            let mut half = Some(half_tx);
            for round in 1..=ROUNDS {
                let mut batch = Vec::new();
                for &login in &logins {
                    batch.push(next(open(login, position_id(login, round))));
                    if round > 1 {
                        batch.push(next(close(login, position_id(login, round - 1))));
                    }
                }
                producer.write(&batch).await.unwrap();
                if round == STOP_AFTER_ROUND {
                    let _ = half.take().unwrap().send(());
                }
                tokio::time::sleep(ROUND_EVERY).await;
            }
            let last: Vec<Value> = logins
                .iter()
                .map(|&l| next(close(l, position_id(l, ROUNDS))))
                .collect();
            producer.write(&last).await.unwrap();
        })
    };

    // Mid-stream: the busiest node goes away.
    half_rx.await.unwrap();
    match stop {
        Stop::Kill => nodes[victim].kill(),
        Stop::Drain => nodes[victim].terminate(),
    }
    feed.await.unwrap();

    let mut outcomes = Vec::new();
    for task in tasks {
        let outcome = tokio::time::timeout(TRADER_PATIENCE + WAIT, task)
            .await
            .expect("trader task finishes")
            .unwrap();
        outcomes.push(outcome.unwrap_or_else(|e| panic!("a trader failed: {e}")));
    }

    // Every trader: exactly what the producer wrote for it, seq 1, 2, 3, ...
    for o in &outcomes {
        let seqs: Vec<u64> = o
            .applied
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = (1..=o.applied.len() as u64).collect();
        assert_eq!(seqs, want, "trader {}", o.login);
        let got: Vec<String> = o.applied.iter().map(describe).collect();
        assert_eq!(got, expected(o.login), "trader {}", o.login);
    }
    // The victim's clients, and only they, lost their connection once and resumed.
    let reconnected: Vec<&Outcome> = outcomes.iter().filter(|o| !o.closes.is_empty()).collect();
    assert_eq!(
        reconnected.len() as u64,
        counts[victim],
        "clients that reconnected vs. clients on the stopped node {counts:?}"
    );
    for o in &reconnected {
        assert_eq!(
            o.closes.len(),
            1,
            "trader {} reconnected more than once",
            o.login
        );
        assert_eq!(o.resumes.len(), 1, "trader {}", o.login);
        let (closed, notices) = match stop {
            Stop::Kill => (Closed::Eof, 0),
            Stop::Drain => (Closed::Code(1001), 1),
        };
        assert_eq!(
            (o.closes[0].clone(), o.reconnect_notices),
            (Some(closed), notices),
            "trader {}",
            o.login
        );
        if o.stayed_away {
            assert!(
                o.replayed > 0,
                "trader {} resumed with nothing to replay",
                o.login
            );
        }
    }
    let stayed_away = reconnected.iter().filter(|o| o.stayed_away).count();
    assert_eq!(stayed_away, reconnected.len() / 2);
    let duplicates: usize = outcomes.iter().map(|o| o.duplicates).sum();
    let replayed: u64 = outcomes.iter().map(|o| o.replayed).sum();
    eprintln!(
        "{stop:?}: connections per node {counts:?}, stopped node {victim} (ingest leader: node {lead}); \
         {} traders resumed ({stayed_away} after the others were done; {replayed} messages \
         replayed), {duplicates} duplicates dropped",
        reconnected.len()
    );

    if stop == Stop::Drain {
        let status = nodes[victim]
            .wait_exit(WAIT)
            .expect("the drained node exits");
        assert!(status.success(), "{status}");
    }

    // nginx logged every WebSocket once it closed; at least one reconnect tried the
    // stopped node first and went on to a live one (proxy_next_upstream).
    let upgrades = 2 + TRADERS as usize + reconnected.len();
    let deadline = Instant::now() + WAIT;
    let log = loop {
        let log = nginx.access_log();
        let done = log.iter().filter(|l| l.contains(" GET /ws 101 ")).count();
        if done >= upgrades || Instant::now() >= deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let done = log.iter().filter(|l| l.contains(" GET /ws 101 ")).count();
    assert_eq!(done, upgrades, "{log:#?}");
    // A refused token is final: one node answered, none was tried after it.
    let refused: Vec<&String> = log.iter().filter(|l| l.contains(" 401 ")).collect();
    assert!(
        !refused.is_empty() && refused.iter().all(|l| l.contains("ustatus=401 ")),
        "{refused:#?}"
    );
    let failed_over = format!("upstream={victim_addr}, ");
    assert!(
        log.iter()
            .any(|l| l.contains(&failed_over) && l.contains(" 101 ")),
        "no handshake went from the stopped node {victim_addr} to a live one: {log:#?}"
    );

    // No token anywhere in nginx's files (access, error, stdout, stderr).
    let tokens: Vec<String> = tokens
        .into_iter()
        .chain([probe, bogus.to_owned()])
        .collect();
    for (path, text) in nginx.logs() {
        assert!(
            !text.contains("token="),
            "{} names a token: {text}",
            path.display()
        );
        // A JWT's first segment is the same for every token here; the whole token and
        // its signature are what must not leak.
        for t in &tokens {
            let signature = t.rsplit('.').next().unwrap();
            assert!(
                !text.contains(t.as_str()) && !text.contains(signature),
                "{} holds a token: {text}",
                path.display()
            );
        }
    }
}
