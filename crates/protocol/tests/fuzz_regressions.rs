//! Replays the fuzz inputs of the protocol's parsers through the same code paths as
//! the fuzz targets (`fuzz/fuzz_targets/client_frame.rs`, `ingest_entry.rs`): the
//! committed seeds (`fuzz/corpus/<target>/`) and every input that once crashed or
//! hung a target (`fuzz/regressions/<target>/`). None may panic, and each gets a
//! sensible answer.

use serde_json::Value;
use tradecast_protocol::client::{Request, RequestKind};
use tradecast_protocol::ingest;
use tradecast_protocol::{Channel, server};
use tradecast_testkit::fuzz;

fn is_json_object(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v.is_object())
}

#[test]
fn client_frames_parse_without_panic() {
    for (name, bytes) in fuzz::inputs("client_frame") {
        let text = String::from_utf8_lossy(&bytes);
        let request = match Request::parse(&text) {
            Ok(request) => request,
            Err((id, error)) => {
                let reply = server::error(id.as_ref(), error.code(), &error.to_string(), None);
                assert!(is_json_object(&reply), "{name}");
                continue;
            }
        };
        let id = request.id.as_ref();
        let channel = match &request.kind {
            RequestKind::Ping => continue,
            RequestKind::Auth { token } => {
                assert!(!token.0.is_empty(), "{name}");
                continue;
            }
            RequestKind::Subscribe { channel, .. } | RequestKind::Unsubscribe { channel } => {
                channel
            }
        };
        match channel.parse::<Channel>() {
            Ok(parsed) => assert_eq!(&parsed.to_string(), channel, "{name}: not canonical"),
            Err(e) => {
                let reply = server::error(id, "invalid_channel", &e.to_string(), Some(channel));
                assert!(is_json_object(&reply), "{name}");
            }
        }
    }
}

#[test]
fn ingest_entries_parse_without_panic() {
    let mut accepted = 0;
    for (name, bytes) in fuzz::inputs("ingest_entry") {
        let parsed = ingest::parse(&bytes);
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            assert_eq!(ingest::parse_value(value), parsed, "{name}");
        }
        match parsed {
            Ok(_) => accepted += 1,
            // `regressions/ingest_entry/long_version_reason.json`: `v` was copied
            // whole into the reason.
            Err(e) => assert!(
                !e.reason().is_empty() && e.reason().len() <= 1024,
                "{name}: reason of {} bytes",
                e.reason().len()
            ),
        }
    }
    assert!(accepted > 0, "the seeds include valid entries");
}
