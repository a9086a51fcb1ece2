//! A WebSocket text frame from a client, as the session handles it: parse the
//! request, parse its channel name, decide whether each kind of user may read it, and
//! build the reply. Arbitrary bytes are made UTF-8 lossily (a text frame is UTF-8).
//!
//! Checked: no panic; every reply is one JSON object; a channel name that parses is
//! canonical (it prints back as the very name, so replies and messages agree on it);
//! the authorization rule is DESIGN.md's.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tradecast_protocol::client::{Request, RequestKind};
use tradecast_protocol::{Channel, Principal, Role, server};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let request = match Request::parse(&text) {
        Ok(request) => request,
        Err((id, error)) => {
            assert!(
                id.as_ref()
                    .is_none_or(|id| id.is_string() || id.is_number())
            );
            let reply = server::error(id.as_ref(), error.code(), &error.to_string(), None);
            assert_object(&reply);
            return;
        }
    };
    let id = request.id.as_ref();
    assert!(id.is_none_or(|id| id.is_string() || id.is_number()));
    match &request.kind {
        RequestKind::Ping => {
            assert_object(&server::pong(id));
        }
        RequestKind::Subscribe { channel, since } => {
            if let Some(channel) = channel_name(channel, id) {
                let (epoch, seq) = since.as_ref().map_or(("e", 0), |s| (&s.epoch[..], s.seq));
                assert_object(&server::subscribed(
                    id,
                    &channel.to_string(),
                    epoch,
                    seq,
                    true,
                ));
            }
        }
        RequestKind::Unsubscribe { channel } => {
            channel_name(channel, id);
            assert_object(&server::unsubscribed(id, channel));
        }
        RequestKind::Auth { token } => {
            assert!(!token.0.is_empty());
            assert_eq!(
                format!("{token:?}"),
                "Token(<redacted>)",
                "a token never shows in Debug"
            );
        }
    }
});

/// What the session does with a requested channel name.
fn channel_name(name: &str, id: Option<&Value>) -> Option<Channel> {
    let channel = match name.parse::<Channel>() {
        Ok(channel) => channel,
        Err(e) => {
            assert!(
                e.name.chars().count() <= 64,
                "the refused name is shortened"
            );
            assert_object(&server::error(
                id,
                "invalid_channel",
                &e.to_string(),
                Some(name),
            ));
            return None;
        }
    };
    assert_eq!(
        channel.to_string(),
        name,
        "a channel name parses only in its canonical form"
    );
    let key = match channel {
        Channel::Portfolio(k)
        | Channel::Orders(k)
        | Channel::Commissions(k)
        | Channel::Network(k) => k,
        _ => 0,
    };
    for user in [key, key.wrapping_add(1)] {
        for role in [Role::Client, Role::Ib, Role::Admin] {
            let principal = Principal { id: user, role };
            let expected = match (role, &channel) {
                (Role::Admin, _) | (_, Channel::Prices(_)) => true,
                (Role::Client, Channel::Portfolio(k) | Channel::Orders(k)) => *k == user,
                (Role::Ib, Channel::Commissions(k) | Channel::Network(k)) => *k == user,
                _ => false,
            };
            assert_eq!(
                principal.may_read(&channel),
                expected,
                "{principal:?} reading {name}"
            );
        }
    }
    if let Some(snapshot) = channel.empty_snapshot() {
        let snapshot = assert_object(snapshot.as_bytes());
        assert_eq!(snapshot["channel"], Value::from(name));
    }
    Some(channel)
}

/// `bytes` is one JSON object with a string `type`.
fn assert_object(bytes: &[u8]) -> Value {
    let value: Value = serde_json::from_slice(bytes).expect("a reply is JSON");
    assert!(value["type"].is_string(), "a reply has a type: {value}");
    value
}
