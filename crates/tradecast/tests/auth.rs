//! Authentication before the upgrade: every bad token gets HTTP 401, good tokens
//! upgrade on both paths and through both token carriers; plain GETs serve the page.
mod support;

use serde_json::json;
use support::*;
use tradecast_client::{Client, Connect};
use tradecast_protocol::Role;

fn good_claims() -> serde_json::Value {
    json!({"sub": "42", "role": "client", "exp": now_secs() + 3600})
}

#[tokio::test]
async fn bad_tokens_get_401_before_the_upgrade() {
    let server = Server::start(&[]);
    let addr = server.public;
    let expired = signed_token(
        &json!({"sub": "42", "role": "client", "exp": now_secs() - 3600}),
        SECRET,
    );
    let wrong_secret = signed_token(&good_claims(), "some-other-secret");
    let none = raw_token(&json!({"alg": "none", "typ": "JWT"}), &good_claims(), "");
    let god = signed_token(
        &json!({"sub": "42", "role": "god", "exp": now_secs() + 3600}),
        SECRET,
    );
    let bad_sub = signed_token(
        &json!({"sub": "alice", "role": "client", "exp": now_secs() + 3600}),
        SECRET,
    );
    let no_exp = signed_token(&json!({"sub": "42", "role": "client"}), SECRET);
    // A valid token whose signature was tampered with.
    let good = token(42, Role::Client);
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let cases: Vec<(&str, String)> = vec![
        ("missing", "/ws".into()),
        ("empty", "/ws?token=".into()),
        ("malformed", "/ws?token=not-a-jwt".into()),
        ("expired", format!("/ws?token={expired}")),
        ("wrong signature", format!("/ws?token={wrong_secret}")),
        ("tampered signature", format!("/ws?token={tampered}")),
        ("alg none", format!("/ws?token={none}")),
        ("role god", format!("/ws?token={god}")),
        ("non-numeric sub", format!("/ws?token={bad_sub}")),
        ("no exp", format!("/ws?token={no_exp}")),
        ("missing on /", "/".into()),
        ("expired on /", format!("/?token={expired}")),
        ("alg none on /", format!("/?token={none}")),
    ];
    for (case, path) in &cases {
        assert_eq!(upgrade_status(addr, path, &[]).await, 401, "{case}: {path}");
    }
    for (case, bad) in [
        ("expired", &expired),
        ("wrong signature", &wrong_secret),
        ("alg none", &none),
        ("role god", &god),
    ] {
        let header = format!("Bearer {bad}");
        assert_eq!(
            upgrade_status(addr, "/ws", &[("Authorization", &header)]).await,
            401,
            "bearer {case}"
        );
    }
    // The control: the very same request with a good token upgrades.
    assert_eq!(
        upgrade_status(addr, &format!("/ws?token={good}"), &[]).await,
        101
    );
    assert_eq!(
        upgrade_status(addr, &format!("/?token={good}"), &[]).await,
        101
    );
    let header = format!("Bearer {good}");
    assert_eq!(
        upgrade_status(addr, "/ws", &[("Authorization", &header)]).await,
        101
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("tradecast_auth_failures_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn good_tokens_upgrade_on_both_paths_and_both_carriers() {
    let server = Server::start(&[]);
    for path in ["/ws", "/"] {
        for bearer in [false, true] {
            let options = Connect {
                path: path.into(),
                bearer,
                ..server.connect_options(42, Role::Client)
            };
            let mut client = Client::connect(&options)
                .await
                .unwrap_or_else(|e| panic!("{path} bearer={bearer}: {e:#}"));
            let welcome = client.recv_within(WAIT).await.unwrap().unwrap();
            assert_eq!(welcome["type"], "welcome", "{path} bearer={bearer}");
            assert_eq!(welcome["user"], 42);
            assert_eq!(welcome["role"], "client");
        }
    }
    // `sub` may be a JSON number as well as a numeric string.
    let numeric = signed_token(
        &json!({"sub": 77, "role": "ib", "exp": now_secs() + 60}),
        SECRET,
    );
    let mut client = Client::connect(&Connect::new(server.public, numeric))
        .await
        .unwrap();
    let welcome = client.recv_within(WAIT).await.unwrap().unwrap();
    assert_eq!(
        (welcome["user"].clone(), welcome["role"].clone()),
        (json!(77), json!("ib"))
    );
}

#[tokio::test]
async fn plain_gets_serve_the_page_and_demo_identities_are_hidden() {
    let server = Server::start(&[]);
    for path in ["/", "/demo"] {
        let (status, body) = http(server.public, "GET", path, &[], "").await;
        assert_eq!(status, 200, "GET {path}");
        assert!(
            body.to_ascii_lowercase().contains("<html"),
            "GET {path}: {body:.200}"
        );
    }
    let (status, _) = http(server.public, "GET", "/demo/identities", &[], "").await;
    assert_eq!(status, 404, "serve must not hand out demo tokens");
    let (status, _) = http(server.public, "GET", "/no-such-page", &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn token_expiring_mid_connection_closes_with_4001() {
    let server = Server::start(&["--heartbeat-ms", "300"]);
    let options = Connect::new(server.public, token_expiring_in(42, "client", 2));
    let mut client = Client::connect(&options).await.unwrap();
    let started = std::time::Instant::now();
    let welcome = client.recv_within(WAIT).await.unwrap().unwrap();
    assert_eq!(welcome["type"], "welcome");
    // Reading keeps the connection alive: the client answers the server's
    // WebSocket pings (every 300 ms), so only the token expiry can close it.
    let closed = client
        .closed_within(std::time::Duration::from_secs(9))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(closed, tradecast_client::Closed::Code(4001));
    // exp has one-second resolution and verification allows 5 s of leeway.
    assert!(
        elapsed >= std::time::Duration::from_millis(900),
        "closed too early: {elapsed:?}"
    );
}
