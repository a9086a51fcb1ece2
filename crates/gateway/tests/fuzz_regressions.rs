//! Replays the inputs of the gateway's fuzz targets (`fuzz/fuzz_targets/jwt.rs`,
//! `bearer_token.rs`, `events_body.rs`) through the same code paths: the committed
//! seeds (`fuzz/corpus/<target>/`) and every input that once crashed or hung a target
//! (`fuzz/regressions/<target>/`). None may panic, and each gets a sensible answer.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, crypto};
use serde_json::Value;
use tradecast_gateway::Authenticator;
use tradecast_gateway::credentials::bearer_token;
use tradecast_gateway::events_body::{self, BodyError};
use tradecast_protocol::ingest;
use tradecast_testkit::fuzz;
use tradecast_testkit::keys::{EC_PRIVATE, EC_PUBLIC};

/// The fuzz target's secret (`fuzz/fuzz_targets/jwt.rs`); its key pair is
/// `tradecast_testkit::keys`.
const SECRET: &str = "fuzz-secret";

/// `base64(header).base64(claims).signature`, as the fuzz target signs its shapes 1–3.
fn signed(header: &[u8], claims: &[u8], key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = crypto::sign(message.as_bytes(), key, alg).expect("signing works");
    format!("{message}.{signature}")
}

#[test]
fn tokens_verify_without_panic() {
    let hmac = Authenticator::new(Some(SECRET), None).unwrap();
    let ec = Authenticator::new(None, Some(EC_PUBLIC.as_bytes())).unwrap();
    let hmac_key = EncodingKey::from_secret(SECRET.as_bytes());
    let ec_key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
    let mut accepted = 0;
    for (name, bytes) in fuzz::inputs("jwt") {
        let Some((&shape, rest)) = bytes.split_first() else {
            continue;
        };
        // The first byte picks the shape, as in the fuzz target.
        let token = match shape % 4 {
            0 => String::from_utf8_lossy(rest).into_owned(),
            1 => signed(
                br#"{"alg":"HS256","typ":"JWT"}"#,
                rest,
                &hmac_key,
                Algorithm::HS256,
            ),
            2 => signed(
                br#"{"alg":"ES256","typ":"JWT"}"#,
                rest,
                &ec_key,
                Algorithm::ES256,
            ),
            _ => {
                let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
                    Some(at) => (&rest[..at], &rest[at + 1..]),
                    None => (rest, &b""[..]),
                };
                signed(header, claims, &hmac_key, Algorithm::HS256)
            }
        };
        for auth in [&hmac, &ec] {
            match auth.verify(&token) {
                Ok(identity) => {
                    accepted += 1;
                    let claims = token
                        .split('.')
                        .nth(1)
                        .expect("a verified token has claims");
                    let claims = URL_SAFE_NO_PAD.decode(claims).expect("base64url claims");
                    let claims: Value = serde_json::from_slice(&claims).expect("JSON claims");
                    assert_eq!(claims["role"], identity.principal.role.as_str(), "{name}");
                }
                Err(e) => assert!(!e.label().is_empty(), "{name}"),
            }
        }
    }
    assert!(accepted > 0, "the seeds include valid tokens");
}

#[test]
fn credentials_are_found_without_panic() {
    for (name, bytes) in fuzz::inputs("bearer_token") {
        // The first line is the query string, the others `Name: value` headers.
        let text = String::from_utf8_lossy(&bytes);
        let (query, lines) = match text.split_once('\n') {
            Some((query, rest)) => (Some(query), rest),
            None => (None, ""),
        };
        let mut headers = HeaderMap::new();
        for line in lines.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_bytes(value.trim_start().as_bytes()),
            ) {
                headers.append(name, value);
            }
        }
        if let Some(token) = bearer_token(query, &headers) {
            assert!(!token.is_empty(), "{name}");
        }
    }
}

#[test]
fn event_bodies_parse_without_panic() {
    let mut events = 0;
    for (name, bytes) in fuzz::inputs("events_body") {
        match events_body::parse(&bytes) {
            Ok(body) => {
                assert_eq!(body.events.len(), body.raw.len(), "{name}");
                for (event, item) in body.events.iter().zip(&body.raw) {
                    let alone = ingest::parse_value(item.clone());
                    assert_eq!(alone.as_ref(), Ok(event), "{name}");
                }
                events += body.events.len();
            }
            Err(BodyError::Invalid(errors)) => {
                assert!(!errors.is_empty(), "{name}");
                assert!(
                    errors.iter().all(|(_, reason)| !reason.is_empty()),
                    "{name}"
                );
            }
            Err(BodyError::NotJson(reason)) => assert!(!reason.is_empty(), "{name}"),
        }
    }
    assert!(events > 0, "the seeds include valid events");
}

/// `regressions/jwt/exp_beyond_instant_range.json`: a correctly signed token whose
/// `exp` is u64::MAX overflowed the clock in `verify` (a panic, in release builds
/// too). It is a valid token that never expires in practice.
#[test]
fn a_far_future_exp_is_accepted() {
    let hmac = Authenticator::new(Some(SECRET), None).unwrap();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let claims = br#"{"sub":"42","role":"client","exp":18446744073709551615}"#;
    let token = signed(br#"{"alg":"HS256"}"#, claims, &key, Algorithm::HS256);
    let identity = hmac.verify(&token).expect("a far-future exp is valid");
    assert_eq!(identity.principal.id, 42);
    let left = identity.expires_at - tokio::time::Instant::now();
    assert!(left.as_secs() > 50 * 365 * 86_400, "{left:?}");
}
