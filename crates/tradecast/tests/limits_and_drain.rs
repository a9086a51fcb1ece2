//! The connection cap (HTTP 503) and the graceful drain on SIGTERM.
mod support;

use std::time::{Duration, Instant};

use support::*;
use tradecast_client::{Client, Closed};
use tradecast_protocol::Role;

#[tokio::test]
async fn the_connection_cap_answers_503_and_frees_slots_on_close() {
    let server = Server::start(&["--max-connections", "3"]);
    let mut clients = Vec::new();
    for sub in 1..=3 {
        clients.push(connect_ready(&server, sub, Role::Client).await.0);
    }
    let path = format!("/ws?token={}", token(4, Role::Client));
    assert_eq!(upgrade_status(server.public, &path, &[]).await, 503);
    assert!(
        Client::connect(&server.connect_options(4, Role::Client))
            .await
            .is_err()
    );
    // One leaves; its slot is released (asynchronously), then a new one gets in.
    clients.pop().unwrap().close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        match Client::connect(&server.connect_options(4, Role::Client)).await {
            Ok(mut client) => {
                assert_eq!(
                    client.recv_within(WAIT).await.unwrap().unwrap()["type"],
                    "welcome"
                );
                read_initial(&mut client, 3).await;
                clients.push(client);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no slot freed: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upgrade_status(server.public, &path, &[]).await,
        503,
        "full again"
    );
    // Refused upgrades never count against the cap: the three are still usable.
    for (i, client) in clients.iter_mut().enumerate() {
        assert_usable(client, i as u64).await;
    }
}

#[tokio::test]
async fn sigterm_drains_reconnect_then_1001_and_exits_zero() {
    let drain_ms = 1000;
    let mut server = Server::start(&["--drain-ms", "1000"]);
    let mut clients = Vec::new();
    for sub in 1..=4 {
        clients.push(connect_ready(&server, sub, Role::Client).await.0);
    }
    let (_, ready) = server.get("/readyz").await;
    assert_eq!(ready, "ready");
    let started = Instant::now();
    server.terminate();
    let public = server.public;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let (reconnect, _) = client
                    .recv_until("reconnect", WAIT)
                    .await
                    .expect("a reconnect notice");
                let closed = client
                    .closed_within(WAIT)
                    .await
                    .expect("closed after the notice");
                (reconnect, closed, started.elapsed())
            })
        })
        .collect();
    // New upgrades are refused while draining.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = match tokio::net::TcpStream::connect(public).await {
        Err(_) => true,
        Ok(_) => {
            let path = format!("/ws?token={}", token(9, Role::Client));
            let status = tokio::time::timeout(WAIT, upgrade_status_or_zero(public, &path))
                .await
                .unwrap_or(0);
            status == 503 || status == 0
        }
    };
    assert!(refused, "a new upgrade was accepted while draining");
    for task in tasks {
        let (reconnect, closed, at) = task.await.unwrap();
        let after = reconnect["after_ms"].as_u64().expect("after_ms");
        assert!(after <= drain_ms, "{reconnect}");
        assert_eq!(closed, Closed::Code(1001));
        assert!(
            at <= Duration::from_millis(drain_ms + 1000),
            "closed at {at:?}"
        );
    }
    let status = server
        .wait_exit(Duration::from_millis(drain_ms + 4000))
        .expect("the process exits after the drain");
    assert!(status.success(), "{status:?}");
}

/// Like `upgrade_status`, but 0 when the server closes without an answer.
async fn upgrade_status_or_zero(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut buf = vec![0u8; 512];
    let n = stream.read(&mut buf).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
