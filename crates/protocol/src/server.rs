//! Control messages the gateway sends, and the `seq` stamp of durable messages.
//!
//! Channel messages are produced once per event and shared by every subscriber, so
//! they are built as bytes; the helpers here build the per-connection replies.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::Value;

/// Insert `,"seq":N` before the closing brace of a JSON object.
///
/// A durable message is serialised once without its `seq`; the broker stamps the
/// number it assigns when it appends the message to the channel log, so every
/// subscriber gets the very same bytes.
pub fn stamp_seq(message: &[u8], seq: u64) -> Bytes {
    let body = message
        .strip_suffix(b"}")
        .expect("a channel message is a JSON object");
    let mut out = BytesMut::with_capacity(message.len() + 28);
    out.put_slice(body);
    out.put_slice(b",\"seq\":");
    out.put_slice(seq.to_string().as_bytes());
    out.put_u8(b'}');
    out.freeze()
}

fn to_bytes(message: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(message).expect("server messages serialize"))
}

/// `{"type":"welcome",...}`: the first message of every connection.
pub fn welcome(user: u64, role: &str, heartbeat_ms: u64, channels: &[String]) -> Bytes {
    #[derive(Serialize)]
    struct Welcome<'a> {
        r#type: &'static str,
        user: u64,
        role: &'a str,
        heartbeat_ms: u64,
        channels: &'a [String],
    }
    to_bytes(&Welcome {
        r#type: "welcome",
        user,
        role,
        heartbeat_ms,
        channels,
    })
}

/// `{"type":"subscribed",...}`: the channel's current log position. `recovered`
/// is true when a replay follows, false when a snapshot follows.
pub fn subscribed(
    id: Option<&Value>,
    channel: &str,
    epoch: &str,
    seq: u64,
    recovered: bool,
) -> Bytes {
    #[derive(Serialize)]
    struct Subscribed<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        channel: &'a str,
        epoch: &'a str,
        seq: u64,
        recovered: bool,
    }
    to_bytes(&Subscribed {
        r#type: "subscribed",
        id,
        channel,
        epoch,
        seq,
        recovered,
    })
}

/// `{"type":"unsubscribed",...}`.
pub fn unsubscribed(id: Option<&Value>, channel: &str) -> Bytes {
    #[derive(Serialize)]
    struct Unsubscribed<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        channel: &'a str,
    }
    to_bytes(&Unsubscribed {
        r#type: "unsubscribed",
        id,
        channel,
    })
}

/// `{"type":"error","code":...,"message":...}`. `channel` names the channel the
/// failed request was about, when there is one.
pub fn error(id: Option<&Value>, code: &str, message: &str, channel: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    struct Error<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
    }
    to_bytes(&Error {
        r#type: "error",
        id,
        code,
        message,
        channel,
    })
}

/// `{"type":"pong"}`, echoing the ping's `id`.
pub fn pong(id: Option<&Value>) -> Bytes {
    #[derive(Serialize)]
    struct Pong<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    }
    to_bytes(&Pong { r#type: "pong", id })
}

/// `{"type":"authenticated","exp":N}`: an in-band `auth` request was accepted; the
/// connection now lives until `exp` (seconds since 1970), echoing the request's `id`.
pub fn authenticated(id: Option<&Value>, exp: u64) -> Bytes {
    #[derive(Serialize)]
    struct Authenticated<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        exp: u64,
    }
    to_bytes(&Authenticated {
        r#type: "authenticated",
        id,
        exp,
    })
}

/// `{"type":"reconnect","after_ms":N}`: the node is draining; reconnect (to any
/// node) after `after_ms` and resume.
pub fn reconnect(after_ms: u64) -> Bytes {
    Bytes::from(format!(r#"{{"type":"reconnect","after_ms":{after_ms}}}"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_seq_last() {
        let out = stamp_seq(br#"{"type":"x","channel":"alerts"}"#, 17);
        assert_eq!(&out[..], br#"{"type":"x","channel":"alerts","seq":17}"#);
    }

    #[test]
    fn replies_echo_id() {
        let id = Value::from("r1");
        let s = subscribed(Some(&id), "alerts", "ab", 3, true);
        assert_eq!(
            std::str::from_utf8(&s).unwrap(),
            r#"{"type":"subscribed","id":"r1","channel":"alerts","epoch":"ab","seq":3,"recovered":true}"#
        );
        assert_eq!(&pong(None)[..], br#"{"type":"pong"}"#);
        assert_eq!(
            &authenticated(Some(&Value::from(5)), 1_717_430_400)[..],
            br#"{"type":"authenticated","id":5,"exp":1717430400}"#
        );
    }
}
