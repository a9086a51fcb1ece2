//! A worker process: opens its share of connections, then reports on stdout when
//! every connection has received each broadcast.
//!
//! Lines it prints: `ready N` once all N connections got their initial
//! snapshots; then, per broadcast tick it is told about on stdin (`expect SYMBOL`),
//! `recv SYMBOL COUNT LAST_US` with how many connections got it and the wall-clock
//! time (µs since the epoch) at which the last one did.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Semaphore, mpsc};
use tradecast_client::{Client, Connect};
use tradecast_gateway::Authenticator;
use tradecast_protocol::{Principal, Role};

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub server: SocketAddr,
    #[arg(long)]
    pub local_ip: IpAddr,
    #[arg(long)]
    pub connections: usize,
    /// First trader login; connection i is login `first_login + i`.
    #[arg(long)]
    pub first_login: u64,
    #[arg(long)]
    pub secret: String,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let auth = Arc::new(Authenticator::new(Some(&args.secret), None)?);
    let gate = Arc::new(Semaphore::new(args.concurrency));
    // Every connection reports (symbol, arrival µs) for each price it receives.
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, u64)>();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<anyhow::Result<()>>();
    for i in 0..args.connections {
        let token = auth.mint(
            Principal {
                id: args.first_login + i as u64,
                role: Role::Client,
            },
            24 * 3600,
        )?;
        let mut options = Connect::new(args.server, token);
        options.local_ip = Some(args.local_ip);
        let (gate, tx, ready_tx) = (gate.clone(), tx.clone(), ready_tx.clone());
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("semaphore open");
            let mut client = match open(&options).await {
                Ok(client) => client,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            drop(permit);
            let _ = ready_tx.send(Ok(()));
            while let Ok(Some(text)) = client.recv_text().await {
                let at = now_us();
                if let Some(symbol) = price_symbol(&text) {
                    let _ = tx.send((symbol.to_owned(), at));
                }
            }
        });
    }
    drop(tx);
    let mut opened = 0;
    for _ in 0..args.connections {
        ready_rx.recv().await.expect("every task reports")?;
        opened += 1;
    }
    println!("ready {opened}");

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        let Some(symbol) = line.strip_prefix("expect ") else {
            continue;
        };
        let (mut count, mut last) = (0usize, 0u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while count < opened {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((got, at))) if got == symbol => {
                    count += 1;
                    last = last.max(at);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        println!("recv {symbol} {count} {last}");
    }
    Ok(())
}

/// Connect and read the welcome and the three default subscriptions.
async fn open(options: &Connect) -> anyhow::Result<Client> {
    let mut client = Client::connect(options).await?;
    let mut subscribed = 0;
    while subscribed < 3 {
        let message = client.recv_within(Duration::from_secs(30)).await?;
        match message {
            Some(m) if m["type"] == "subscribed" => subscribed += 1,
            Some(_) => {}
            None => anyhow::bail!("closed during set-up: {:?}", client.closed),
        }
    }
    Ok(client)
}

/// The symbol of a `price` message, found without parsing the whole JSON (the
/// gateway writes `"type"` first and `"symbol"` as a plain string).
fn price_symbol(text: &str) -> Option<&str> {
    if !text.starts_with(r#"{"type":"price""#) {
        return None;
    }
    let rest = &text[text.find(r#""symbol":""#)? + 10..];
    Some(&rest[..rest.find('"')?])
}
