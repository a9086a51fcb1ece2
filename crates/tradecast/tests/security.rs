//! The security points of docs/security.md, each against the real binary: the
//! `Origin` allow-list, the per-user connection limit, in-band token refresh (and that
//! it is rate limited like any frame), algorithm confusion, no token or account name
//! in a verbose log, and no admin endpoint on the public listener.
mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tradecast_client::{Client, Closed, Connect};
use tradecast_protocol::Role;

/// A throwaway RSA key pair, only for these tests.
const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDwgPK6bBNs/uab
ZoVdpBH7nEbNKMv3NDkHo5tZbFFxPEsHBC0Kd418qWQjpY7k7YY1IX+0rzUnUn+0
IDrCdE1jODO7duIqXnM2UxT0wrMWeOawj/F+i87jftpMMnAnHjRC5SEuXNVsrx84
UWCpGfID+4ihjoegd+BpScqDWv3md5RN84aqjEJFaQFRD764wUC1PCVSz46Ypvv1
IeHfm417XjlPkg+u8zyhWp1qrgLRKR8udBd4n48gJ/NV1jZBf4zz64lEWCFmiTjl
3zd/tyGQBhf7+qZJazAoNRv3HPqCB4GNPvBzomPeutaEIMr3XrG87dh8YnwdZ4R/
vovb2Zv1AgMBAAECggEAAvmpZw5+uAa4Phxo0nV85naytoeGbG64NOS8f4D0SfkT
uYi+8OX1OWFUFI/QAnuAwUgCjy7qsquV2lnauDydl3hixXMtTZZhCP9Cn1uIQSMq
QW1qcKUUoGJZm381PXqlbV1tyWfLGR7afUUec8EXKh7yvALqIR1SiKLpzzGxOehj
KNMSf4kS2mQiSlNzELakry1qNbCD4/QB4bCvNVZLGPrqt6oPXUbvE+51olfBazeX
wosqlYvSNDzf7nPhVrUca0xDZDYypiyTVS7txMghbAvM9aue8ZlGz4GRlC4/MPO+
WazO7JEMfnfrgEPo/b8QRWrqOIaktBjxyiR/PZloaQKBgQD6TyyFJYBGGgv4Sw3S
DVnMdMzer+cwko2hJVWSc9AzmlPMLfs8lcwpDdEc9K8swwRMTLfnZwUzapaus668
83fjLZb4lQPcJAV7BnFakLRS9ca04FlnTjDWcI5yqY/pf06v4SKyqeszPOlblY3G
uIWWYYpoPW83v9CQeWM44CKEKQKBgQD1+LRuqKAwcDPZwGLlb0P2t0kvFFnvhNQt
W/kuBeIbMaIVzHvls05GsUkRD6Vk8aSiNk1lSSCODcvyCdxjugji4GbRvR2H2JYN
rXT7kxQb/HTn+MrPm5AbbIn6xLm1JDZ5STpxnJIl+EiwKE6S/0jhGxK4BTWpVPBE
6PrRfhNy7QKBgBNdOKZ8RjYmIbLtq34Khl3o00iO9yWs0MQcrUgNKZg0YjMzg3Im
bIrohLrmuv6Nf7GfZcLDF4Xowwt03xnDBA1RI5LLhGbtancgAnjtJOYeGWc4y/HP
/Ls6Ler07yszLBUzJ4oG1yk5lxv8r+EluT/u/9QcnJQFhM8IdQKbZFAxAoGATOI5
W+F/eMSJoIW/I+Ich1CRIpMk7XZCcA8wmw8htshT1qZ9D7Z1QCmIIjoWw6+4ey+o
D4HFGEH9vqEQb2emAWyNFwAa6+xqMspGJ6C4h2rpC907X5tLdxb9JhI5zgIMuOqH
xx1enVm3NsDSlqYPHLW+qyCNvmkbVR7Rz4ut/p0CgYBso2GvRZI3UYb3THyKNwtr
sXBRN7MPoXwM3rm+FtvRsAbEiMztK95E81OeZgJP+Fcl0b6O6B7VbMpu8niYJJwG
peSf2lq67366k+lFrrHL33rpuzHGgXrQU92ejTH5/ZUL3MfeQYOJgko5a3gwpahz
cSl4BX46MUFYX3qo3PtRRg==
-----END PRIVATE KEY-----
";
const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA8IDyumwTbP7mm2aFXaQR
+5xGzSjL9zQ5B6ObWWxRcTxLBwQtCneNfKlkI6WO5O2GNSF/tK81J1J/tCA6wnRN
Yzgzu3biKl5zNlMU9MKzFnjmsI/xfovO437aTDJwJx40QuUhLlzVbK8fOFFgqRny
A/uIoY6HoHfgaUnKg1r95neUTfOGqoxCRWkBUQ++uMFAtTwlUs+OmKb79SHh35uN
e145T5IPrvM8oVqdaq4C0SkfLnQXeJ+PICfzVdY2QX+M8+uJRFghZok45d83f7ch
kAYX+/qmSWswKDUb9xz6ggeBjT7wc6Jj3rrWhCDK916xvO3YfGJ8HWeEf76L29mb
9QIDAQAB
-----END PUBLIC KEY-----
";

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "tradecast-security-{}-{nanos}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `tradecast serve` on free loopback ports with exactly these key/extra flags.
fn serve(flags: &[&str], log: &str, stderr: Stdio) -> Server {
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    args.extend(flags.iter().map(|s| s.to_string()));
    Server::launch(args, log, stderr)
}

/// The whole answer (head and body) to a WebSocket upgrade request that is refused.
async fn refused_upgrade(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&chunk[..n]),
            _ => return text,
        }
    }
}

/// The value of the first `name` header of a response head, if any.
fn header_value<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

// ---------------------------------------------------------------------------
// Origin allow-list (cross-site WebSocket hijacking)

#[tokio::test]
async fn by_default_only_a_same_host_page_or_a_non_browser_may_upgrade() {
    let server = Server::start(&[]);
    let addr = server.public;
    let good = format!("/ws?token={}", token(42, Role::Client));
    let same_host = format!("http://{addr}");
    // The node's own page (Origin = Host) and clients that send no Origin get in.
    assert_eq!(
        upgrade_status(addr, &good, &[("Origin", &same_host)]).await,
        101
    );
    assert_eq!(upgrade_status(addr, &good, &[]).await, 101);
    // Another site's page, another port of the same host, a sandboxed page: 403.
    let other_port = format!("http://127.0.0.1:{}", addr.port() + 1);
    for origin in ["https://evil.example", other_port.as_str(), "null"] {
        let response = refused_upgrade(addr, &good, &[("Origin", origin)]).await;
        assert!(response.starts_with("HTTP/1.1 403"), "{origin}: {response}");
        assert!(
            response.ends_with("origin not allowed"),
            "{origin}: {response}"
        );
    }
    // The Origin is checked before the token: a cross-site page learns nothing about it.
    let bad = "/ws?token=not-a-jwt";
    assert_eq!(
        upgrade_status(addr, bad, &[("Origin", "https://evil.example")]).await,
        403
    );
    assert_eq!(
        upgrade_status(addr, bad, &[("Origin", &same_host)]).await,
        401
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"tradecast_auth_failures_total{reason="origin"} 4"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_same_host_default_holds_through_the_deployed_nginx() {
    // nginx must pass the browser's Host on with its port (`$http_host`): with `$host`
    // the node would see `127.0.0.1` against an Origin of `http://127.0.0.1:PORT`.
    let server = Server::start(&[]);
    let nginx = support::nginx::Nginx::start(&[server.public]);
    let good = format!("/ws?token={}", token(42, Role::Client));
    let page = format!("http://{}", nginx.addr);
    assert_eq!(
        upgrade_status(nginx.addr, &good, &[("Origin", &page)]).await,
        101
    );
    assert_eq!(
        upgrade_status(nginx.addr, &good, &[("Origin", "https://evil.example")]).await,
        403
    );
}

#[tokio::test]
async fn an_allowed_origins_list_admits_exactly_its_origins() {
    // From the config file, as a TOML list (the flag takes the same, comma-separated).
    let config = TempFile::new(
        "origins.toml",
        "allowed-origins = [\"https://app.broker.com\", \"http://localhost:3000\"]\n",
    );
    let server = Server::start(&["--config", config.path()]);
    let addr = server.public;
    let good = format!("/ws?token={}", token(42, Role::Client));
    for (origin, status) in [
        ("https://app.broker.com", 101),
        ("http://localhost:3000", 101),
        ("http://app.broker.com", 403),
        ("https://app.broker.com.evil.example", 403),
        ("https://evil.example", 403),
        // The list replaces the same-host default.
        (&format!("http://{addr}") as &str, 403),
    ] {
        assert_eq!(
            upgrade_status(addr, &good, &[("Origin", origin)]).await,
            status,
            "{origin}"
        );
    }
    assert_eq!(upgrade_status(addr, &good, &[]).await, 101, "no Origin");

    let any = Server::start(&["--allowed-origins", "*"]);
    let good = format!("/ws?token={}", token(42, Role::Client));
    assert_eq!(
        upgrade_status(any.public, &good, &[("Origin", "https://evil.example")]).await,
        101
    );
}

#[test]
fn a_malformed_allowed_origins_flag_stops_the_node_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tradecast"))
        .args(["serve", "--jwt-secret", SECRET, "--listen", "127.0.0.1:0"])
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--allowed-origins",
            "app.broker.com/path",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allowed-origins"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Per-user connection limit

#[tokio::test]
async fn a_user_over_the_per_user_limit_gets_429_and_a_closed_connection_frees_a_slot() {
    let server = Server::start(&["--max-connections-per-user", "2"]);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(connect_ready(&server, 42, Role::Client).await.0);
    }
    let path = format!("/ws?token={}", token(42, Role::Client));
    let response = refused_upgrade(server.public, &path, &[]).await;
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert_eq!(
        header_value(&response, "retry-after"),
        Some("5"),
        "{response}"
    );
    assert!(
        response.ends_with("too many connections for this user"),
        "{response}"
    );
    // The token is checked first: a bad token is still 401, not 429.
    assert_eq!(
        upgrade_status(server.public, "/ws?token=x.y.z", &[]).await,
        401
    );
    // The limit is per (role, sub): another user, or the same number as an IB, gets in.
    let _other = connect_ready(&server, 43, Role::Client).await;
    let _ib = connect_ready(&server, 42, Role::Ib).await;
    // When one of the two closes, its slot comes back (released asynchronously).
    held.pop().unwrap().close().await;
    let deadline = Instant::now() + WAIT;
    let mut again = loop {
        match Client::connect(&server.connect_options(42, Role::Client)).await {
            Ok(client) => break client,
            Err(e) => assert!(Instant::now() < deadline, "no slot freed: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        again.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "welcome"
    );
    assert_eq!(
        upgrade_status(server.public, &path, &[]).await,
        429,
        "full again"
    );
    for (i, client) in held.iter_mut().enumerate() {
        assert_usable(client, i as u64).await;
    }
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"tradecast_connections_refused_total{reason="user_limit"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_default_per_user_limit_is_32_and_0_lifts_it() {
    let server = Server::start(&[]);
    let path = format!("/ws?token={}", token(42, Role::Client));
    let mut held = Vec::new();
    for _ in 0..32 {
        let mut client = Client::connect(&server.connect_options(42, Role::Client))
            .await
            .unwrap();
        assert_eq!(
            client.recv_within(WAIT).await.unwrap().unwrap()["type"],
            "welcome"
        );
        held.push(client);
    }
    assert_eq!(upgrade_status(server.public, &path, &[]).await, 429);

    let unlimited = Server::start(&["--max-connections-per-user", "0"]);
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut client = Client::connect(&unlimited.connect_options(42, Role::Client))
            .await
            .unwrap();
        assert_eq!(
            client.recv_within(WAIT).await.unwrap().unwrap()["type"],
            "welcome"
        );
        held.push(client);
    }
}

// ---------------------------------------------------------------------------
// In-band token refresh

#[tokio::test]
async fn a_token_refreshed_in_band_keeps_the_connection_past_the_old_exp() {
    let server = Server::start(&[]);
    let options = Connect::new(server.public, token_expiring_in(42, "client", 2));
    let mut trader = Client::connect(&options).await.unwrap();
    assert_eq!(
        trader.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "welcome"
    );
    read_initial(&mut trader, 3).await;
    let exp = now_secs() + 3600;
    let fresh = signed_token(&json!({"sub": "42", "role": "client", "exp": exp}), SECRET);
    trader.refresh_token(&fresh, "t1").await.unwrap();
    let reply = expect(&mut trader, "authenticated").await;
    assert_eq!(
        reply,
        json!({"type": "authenticated", "id": "t1", "exp": exp})
    );
    // The first token's exp passes (it would close with 4001 within 2 s): nothing.
    let quiet = trader.recv_within(Duration::from_millis(3500)).await;
    assert!(quiet.is_err(), "expected silence, got {quiet:?}");
    assert_usable(&mut trader, 1).await;
}

#[tokio::test]
async fn a_refused_refresh_leaves_the_old_expiry_and_the_connection_closes_with_4001() {
    let server = Server::start(&[]);
    let options = Connect::new(server.public, token_expiring_in(42, "client", 3));
    let mut trader = Client::connect(&options).await.unwrap();
    assert_eq!(
        trader.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "welcome"
    );
    read_initial(&mut trader, 3).await;
    let later = now_secs() + 3600;
    let expired = signed_token(
        &json!({"sub": "42", "role": "client", "exp": now_secs() - 60}),
        SECRET,
    );
    let wrong_key = signed_token(
        &json!({"sub": "42", "role": "client", "exp": later}),
        "other",
    );
    let none = raw_token(
        &json!({"alg": "none", "typ": "JWT"}),
        &json!({"sub": "42", "role": "client", "exp": later}),
        "",
    );
    let another_user = token(43, Role::Client);
    let another_role = token(42, Role::Admin);
    let cases = [
        (&expired, "invalid_token"),
        (&wrong_key, "invalid_token"),
        (&none, "invalid_token"),
        (&"not-a-jwt".to_owned(), "invalid_token"),
        (&another_user, "forbidden"),
        (&another_role, "forbidden"),
    ];
    for (i, (bad, code)) in cases.iter().enumerate() {
        trader.refresh_token(bad, i).await.unwrap();
        let m = expect_error(&mut trader, code, Some(json!(i))).await;
        assert!(
            !m.to_string().contains(bad.as_str()),
            "the token is not echoed: {m}"
        );
    }
    trader
        .send(&json!({"type": "auth", "id": "n"}))
        .await
        .unwrap();
    expect_error(&mut trader, "bad_field", Some(json!("n"))).await;
    // None of them moved the expiry: the first token's exp closes the connection.
    assert_eq!(
        trader.closed_within(Duration::from_secs(9)).await.unwrap(),
        Closed::Code(4001)
    );
}

#[tokio::test]
async fn refresh_requests_count_against_the_inbound_rate() {
    let server = Server::start(&["--max-inbound-rate", "5"]);
    let (mut trader, _, _) = connect_ready(&server, 42, Role::Client).await;
    let fresh = token(42, Role::Client);
    for i in 0..40 {
        if trader.refresh_token(&fresh, i).await.is_err() {
            break;
        }
    }
    assert_eq!(
        trader.closed_within(WAIT).await.unwrap(),
        Closed::Code(4029)
    );
}

// ---------------------------------------------------------------------------
// Algorithm confusion and `alg: none`, end to end

fn rs256_token(claims: &Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

#[tokio::test]
async fn algorithm_confusion_and_alg_none_get_401() {
    let key = TempFile::new("rsa.pem", RSA_PUBLIC);
    let claims = json!({"sub": "42", "role": "admin", "exp": now_secs() + 3600});
    let rs256 = rs256_token(&claims);
    // HS256 "signed" with the public key's PEM text as the HMAC secret: a verifier that
    // let the token pick the algorithm would check it against the key it already has.
    let confused = signed_token(&claims, RSA_PUBLIC);
    let confused_trimmed = signed_token(&claims, RSA_PUBLIC.trim_end());
    let none = raw_token(&json!({"alg": "none", "typ": "JWT"}), &claims, "");
    let none_upper = raw_token(&json!({"alg": "NONE", "typ": "JWT"}), &claims, "");
    let status = |addr, token: &str| {
        let path = format!("/ws?token={token}");
        async move { upgrade_status(addr, &path, &[]).await }
    };

    // A node with only the public key.
    let rsa_only = serve(&["--jwt-public-key", key.path()], "warn", Stdio::inherit());
    assert_eq!(status(rsa_only.public, &rs256).await, 101, "control: RS256");
    for (case, bad) in [
        ("HS256 with the PEM as secret", &confused),
        ("HS256 with the trimmed PEM", &confused_trimmed),
        ("alg none", &none),
        ("alg NONE", &none_upper),
        ("HS256 with the test secret", &token(42, Role::Admin)),
    ] {
        assert_eq!(status(rsa_only.public, bad).await, 401, "{case}");
    }
    // The in-band refresh is no way around it.
    let mut admin = Client::connect(&Connect::new(rsa_only.public, rs256.clone()))
        .await
        .unwrap();
    assert_eq!(
        admin.recv_within(WAIT).await.unwrap().unwrap()["type"],
        "welcome"
    );
    admin.refresh_token(&confused, "c").await.unwrap();
    let refused = expect(&mut admin, "error").await;
    assert_eq!(
        (&refused["code"], &refused["id"]),
        (&json!("invalid_token"), &json!("c"))
    );

    // A node with both a secret and the public key: each key keeps its algorithm.
    let both = serve(
        &["--jwt-secret", SECRET, "--jwt-public-key", key.path()],
        "warn",
        Stdio::inherit(),
    );
    assert_eq!(status(both.public, &rs256).await, 101, "control: RS256");
    assert_eq!(
        status(both.public, &token(42, Role::Admin)).await,
        101,
        "control: HS256"
    );
    assert_eq!(
        status(both.public, &confused).await,
        401,
        "HS256 with the PEM"
    );
    assert_eq!(status(both.public, &none).await, 401, "alg none");

    // An HS256-only node refuses RS256 tokens and `none`.
    let hs_only = Server::start(&[]);
    assert_eq!(
        status(hs_only.public, &rs256).await,
        401,
        "RS256 on an HS-only node"
    );
    assert_eq!(status(hs_only.public, &none).await, 401, "alg none");
}

// ---------------------------------------------------------------------------
// Admin endpoints stay off the public listener

#[tokio::test]
async fn admin_endpoints_are_served_on_the_admin_listener_only() {
    let server = Server::start(&[]);
    let event = account_event(1, 42).to_string();
    for path in ["/metrics", "/v1/events", "/healthz", "/readyz"] {
        for method in ["GET", "POST"] {
            let body = if method == "POST" { event.as_str() } else { "" };
            let (status, text) = http(server.public, method, path, &[], body).await;
            assert_eq!(status, 404, "public {method} {path}: {text}");
            assert!(
                !text.contains("tradecast_"),
                "public {method} {path}: {text}"
            );
        }
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            http(server.admin, "GET", path, &[], "").await.0,
            200,
            "admin GET {path}"
        );
    }
    assert_eq!(
        http(server.admin, "POST", "/v1/events", &[], &event)
            .await
            .0,
        200
    );
}

// ---------------------------------------------------------------------------
// No token, secret or account name in the log, even at `trace`

#[tokio::test]
async fn a_trace_level_log_holds_no_token_secret_or_account_name() {
    const NAME: &str = "Zebulon Quartermaine";
    let log = TempFile::new("trace.log", "");
    let file = std::fs::File::create(&log.0).unwrap();
    let mut server = serve(
        &["--jwt-secret", SECRET, "--heartbeat-ms", "1000"],
        "trace",
        Stdio::from(file),
    );
    let addr = server.public;
    let mut tokens: Vec<String> = Vec::new();

    // Good tokens, in the query and in the header.
    let good = token(42, Role::Client);
    let mut trader = Client::connect(&Connect::new(addr, good.clone()))
        .await
        .unwrap();
    expect(&mut trader, "welcome").await;
    let bearer = token(7, Role::Ib);
    let mut ib = Client::connect(&Connect {
        bearer: true,
        ..Connect::new(addr, bearer.clone())
    })
    .await
    .unwrap();
    expect(&mut ib, "welcome").await;
    tokens.extend([good.clone(), bearer]);

    // Refused ones: wrong key, expired, malformed, cross-site, over the user limit.
    let wrong = signed_token(
        &json!({"sub": "42", "role": "client", "exp": now_secs() + 60}),
        "guess",
    );
    let expired = signed_token(
        &json!({"sub": "42", "role": "client", "exp": now_secs() - 600}),
        SECRET,
    );
    for bad in [&wrong, &expired] {
        assert_eq!(
            upgrade_status(addr, &format!("/ws?token={bad}"), &[]).await,
            401
        );
        let header = format!("Bearer {bad}");
        assert_eq!(
            upgrade_status(addr, "/", &[("Authorization", &header)]).await,
            401
        );
    }
    let junk = "junk-credential-Xq9.not.a-jwt";
    assert_eq!(
        upgrade_status(addr, &format!("/ws?token={junk}"), &[]).await,
        401
    );
    let cross_site = token(42, Role::Client);
    let path = format!("/ws?token={cross_site}");
    assert_eq!(
        upgrade_status(addr, &path, &[("Origin", "https://evil.example")]).await,
        403
    );
    tokens.extend([wrong, expired, junk.to_owned(), cross_site]);

    // In-band: a refresh, a refused refresh, a token inside a broken frame.
    let fresh = token_expiring_in(42, "client", 7200);
    trader.refresh_token(&fresh, 1).await.unwrap();
    expect(&mut trader, "authenticated").await;
    let foreign = token(99, Role::Admin);
    trader.refresh_token(&foreign, 2).await.unwrap();
    expect(&mut trader, "error").await;
    let broken = token_expiring_in(42, "client", 60);
    trader
        .send_text(format!(r#"{{"type":"auth","token":"{broken}""#))
        .await
        .unwrap();
    expect(&mut trader, "error").await;
    subscribe_ok(&mut trader, "prices:metals", "s").await;
    tokens.extend([fresh, foreign, broken]);

    // The holder's name comes in through ingest and goes out to the trader and the IB.
    let mut account = account_event(1, 42);
    account["name"] = json!(NAME);
    let link =
        json!({"v":1,"type":"ib_link","op":"set","src":"test","seq":2,"ts":2,"login":42,"ib":7});
    let refused = json!({"v":1,"type":"account","src":"test","seq":3,"ts":3,"login":42,"name":NAME,"ccy":"USD","leverage":"lots","balance":1.0,"credit":0.0});
    assert_eq!(server.post_events(&json!([account, link])).await.0, 200);
    assert_eq!(server.post_events(&refused).await.0, 400);
    let update = expect(&mut trader, "account_update").await;
    assert_eq!(update["name"], NAME);
    let joined = expect(&mut ib, "client_joined").await;
    assert_eq!(joined["name"], NAME);

    trader.close().await;
    ib.close().await;
    server.terminate();
    assert!(
        server.wait_exit(Duration::from_secs(15)).is_some(),
        "the node did not exit"
    );

    let text = std::fs::read_to_string(&log.0).unwrap();
    // The paths that handle tokens did log (at debug), so the check below means something.
    for line in [
        "connection opened",
        "upgrade refused: token",
        "upgrade refused: origin",
        "token refreshed in-band",
        "draining",
    ] {
        assert!(text.contains(line), "no {line:?} in the log: {text:.3000}");
    }
    for token in &tokens {
        assert!(!text.contains(token.as_str()), "a token is in the log");
        for part in token.split('.').filter(|p| p.len() >= 8) {
            assert!(
                !text.contains(part),
                "a part of a token ({part}) is in the log"
            );
        }
    }
    assert!(!text.contains(SECRET), "the JWT secret is in the log");
    assert!(
        !text.contains("Zebulon") && !text.contains("Quartermaine"),
        "the account name is in the log"
    );
}
