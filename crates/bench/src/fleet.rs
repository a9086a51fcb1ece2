//! The coordinator's side of the worker processes ([`crate::worker`]): start them,
//! each with its share of the users and its own source address 127.0.0.2, .3, …
//! (one process may open at most 20,000 files here, and one address has ~28,000
//! ephemeral ports), and talk to them in JSON lines.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::common::{die_with_parent, fmt_map};
use crate::topology::SECRET;
use crate::worker::UserRange;

/// Bound on one question/answer round with the workers.
const ASK_WAIT: Duration = Duration::from_secs(120);

/// How to start the workers.
pub struct Plan<'a> {
    pub server: SocketAddr,
    pub users: &'a [UserRange],
    pub per_worker: usize,
    /// Subscribe `prices:forex` on every connection (IBs and admins too).
    pub prices: bool,
    /// Report arrivals of tracked durable messages (`got` lines).
    pub track: bool,
    pub concurrency: usize,
}

pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    rx: mpsc::UnboundedReceiver<(usize, Value)>,
    /// Logins reported dropped, not yet taken.
    pub dropped: Vec<u64>,
    /// Tracked arrivals not yet taken: [kind, a, b, owner, at_us].
    pub arrivals: Vec<[u64; 5]>,
    /// Connections each worker has set up so far.
    opening: Vec<u64>,
}

/// A progress bar on stderr: `prefix [bar] pos/len message`.
pub fn bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_prefix(prefix.to_owned());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {msg} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

impl Fleet {
    pub fn start(me: &Path, plan: &Plan<'_>) -> anyhow::Result<Fleet> {
        let shares = split(plan.users, plan.per_worker.max(1));
        anyhow::ensure!(
            shares.len() <= 250,
            "at most 250 worker processes (source addresses 127.0.0.2-251)"
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let mut fleet = Fleet {
            children: Vec::new(),
            stdins: Vec::new(),
            rx,
            dropped: Vec::new(),
            arrivals: Vec::new(),
            opening: vec![0; shares.len()],
        };
        for (w, share) in shares.iter().enumerate() {
            let users: Vec<String> = share.iter().map(UserRange::to_string).collect();
            let mut command = Command::new(me);
            command
                .arg("worker")
                .args(["--server", &plan.server.to_string()])
                .args(["--local-ip", &format!("127.0.0.{}", 2 + w)])
                .args(["--secret", SECRET])
                .args(["--users", &users.join(",")])
                .args(["--concurrency", &plan.concurrency.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true);
            if plan.prices {
                command.arg("--prices");
            }
            if plan.track {
                command.arg("--track");
            }
            die_with_parent(&mut command);
            let mut child = command.spawn().context("starting a worker")?;
            fleet
                .stdins
                .push(child.stdin.take().context("worker stdin")?);
            let mut lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let line = match lines.next_line().await {
                        Ok(Some(line)) => serde_json::from_str(&line).unwrap_or_else(
                            |_| json!({"ev":"exit","why":format!("said {line:?}")}),
                        ),
                        _ => json!({"ev":"exit","why":"stdout closed"}),
                    };
                    let exit = line["ev"] == "exit";
                    if tx.send((w, line)).is_err() || exit {
                        return;
                    }
                }
            });
            fleet.children.push(child);
        }
        Ok(fleet)
    }

    pub fn workers(&self) -> usize {
        self.children.len()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    /// Wait until every worker has set up its connections, with a progress bar.
    pub async fn ready(&mut self, total: usize, limit: Duration) -> anyhow::Result<Vec<Value>> {
        let bar = bar(total as u64, "connecting");
        let deadline = Instant::now() + limit;
        let mut answers = vec![Value::Null; self.stdins.len()];
        let mut left = answers.len();
        while left > 0 {
            let (w, line) = self.next(deadline).await?;
            match line["ev"].as_str() {
                Some("ready") => {
                    self.opening[w] = line["opened"].as_u64().unwrap_or(0);
                    answers[w] = line;
                    left -= 1;
                }
                other => bail!("worker {w} said {other:?} while connecting"),
            }
            bar.set_position(self.opening.iter().sum());
        }
        bar.finish_and_clear();
        Ok(answers)
    }

    /// The next line of any worker; progress, drops and arrivals are set aside.
    async fn next(&mut self, deadline: Instant) -> anyhow::Result<(usize, Value)> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (w, line) = tokio::time::timeout(left, self.rx.recv())
                .await
                .context("timed out waiting for the workers")?
                .context("every worker has exited")?;
            if !self.set_aside(w, &line)? {
                return Ok((w, line));
            }
        }
    }

    /// Keep an unprompted line; false if it is an answer.
    fn set_aside(&mut self, w: usize, line: &Value) -> anyhow::Result<bool> {
        match line["ev"].as_str() {
            Some("opening") => self.opening[w] = line["opened"].as_u64().unwrap_or(0),
            Some("dropped") => self.dropped.extend(
                line["logins"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64),
            ),
            Some("got") => {
                for m in line["m"].as_array().into_iter().flatten() {
                    let field = |k: usize| m[k].as_u64().unwrap_or(0);
                    self.arrivals
                        .push([field(0), field(1), field(2), field(3), field(4)]);
                }
            }
            Some("exit") => bail!("worker {w} exited: {}", line["why"]),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Take in the unprompted lines received so far, without waiting.
    pub fn poll(&mut self) -> anyhow::Result<()> {
        while let Ok((w, line)) = self.rx.try_recv() {
            if !self.set_aside(w, &line)? {
                bail!("unexpected line from worker {w}: {line}");
            }
        }
        Ok(())
    }

    /// Send `cmd` to every worker and return each one's answer (`ev`), by worker.
    pub async fn ask(&mut self, cmd: Value) -> anyhow::Result<Vec<Value>> {
        let ev = cmd["cmd"].as_str().unwrap_or_default().to_owned();
        let wait = Duration::from_millis(cmd["wait_ms"].as_u64().unwrap_or(0)) + ASK_WAIT;
        let line = format!("{cmd}\n");
        for stdin in &mut self.stdins {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
        }
        let deadline = Instant::now() + wait;
        let mut answers = vec![Value::Null; self.stdins.len()];
        let mut left = answers.len();
        while left > 0 {
            let (w, line) = self.next(deadline).await?;
            if line["ev"] != ev.as_str() {
                bail!("worker {w} said {line} while {ev} was expected");
            }
            if answers[w].is_null() {
                left -= 1;
            }
            answers[w] = line;
        }
        Ok(answers)
    }
}

/// How opening the connections went.
pub struct Opened {
    pub connections: u64,
    pub gave_up: u64,
    pub seconds: f64,
    /// Failed handshakes (retried) by kind.
    pub failures: BTreeMap<String, u64>,
}

impl Opened {
    pub fn row(&self, workers: usize) -> (String, String) {
        (
            format!(
                "connections opened ({workers} worker processes on 127.0.0.2–{})",
                workers + 1
            ),
            format!(
                "{} in {:.1} s ({:.0}/s); gave up: {}; handshakes retried: {}",
                self.connections,
                self.seconds,
                self.connections as f64 / self.seconds.max(0.001),
                self.gave_up,
                fmt_map(&self.failures)
            ),
        )
    }
}

/// Start the workers of `plan` and wait (at most 6 minutes) until every connection
/// is set up: `welcome`, every default channel and `prices:forex` subscribed.
pub async fn open(plan: &Plan<'_>) -> anyhow::Result<(Fleet, Opened)> {
    let total: usize = plan.users.iter().map(|r| r.count).sum();
    let me = std::env::current_exe()?;
    let started = Instant::now();
    let mut fleet = Fleet::start(&me, plan)?;
    let ready = fleet.ready(total, Duration::from_secs(360)).await?;
    let mut failures = BTreeMap::new();
    for answer in &ready {
        for (k, v) in answer["failures"].as_object().into_iter().flatten() {
            *failures.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
    }
    let opened = Opened {
        connections: sum(&ready, "opened"),
        gave_up: sum(&ready, "gave_up"),
        seconds: started.elapsed().as_secs_f64(),
        failures,
    };
    eprintln!(
        "{} connections set up in {:.1} s",
        opened.connections, opened.seconds
    );
    Ok((fleet, opened))
}

/// The users cut into consecutive shares of at most `per_worker`.
fn split(users: &[UserRange], per_worker: usize) -> Vec<Vec<UserRange>> {
    let mut shares = vec![Vec::new()];
    let mut room = per_worker;
    for range in users {
        let mut range = *range;
        while range.count > 0 {
            if room == 0 {
                shares.push(Vec::new());
                room = per_worker;
            }
            let take = range.count.min(room);
            shares.last_mut().expect("one share").push(UserRange {
                count: take,
                ..range
            });
            range.first += take as u64;
            range.count -= take;
            room -= take;
        }
    }
    shares.retain(|s| !s.is_empty());
    shares
}

/// The sum of `key` over the answers.
pub fn sum(answers: &[Value], key: &str) -> u64 {
    answers.iter().filter_map(|a| a[key].as_u64()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradecast_protocol::Role;

    #[test]
    fn splits_users_into_shares() {
        let users = [
            UserRange {
                role: Role::Client,
                first: 100,
                count: 7,
            },
            UserRange {
                role: Role::Admin,
                first: 1,
                count: 2,
            },
        ];
        let shares = split(&users, 4);
        let sizes: Vec<usize> = shares
            .iter()
            .map(|s| s.iter().map(|r| r.count).sum())
            .collect();
        assert_eq!(sizes, [4, 4, 1]);
        assert_eq!(shares[1][0].first, 104);
        assert_eq!(shares[1][1].role, Role::Admin);
    }
}
