//! What the engine asks the delivery layer to do, and how messages are encoded.

use std::cell::RefCell;

use bytes::Bytes;
use serde::Serialize;
use tradecast_protocol::Channel;

/// One thing to publish, in the order returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A durable message. `message` is one JSON object whose first two fields are
    /// `type` and `channel` and that has no `seq`: the broker stamps it by inserting
    /// `,"seq":N` before the final `}`. `snapshot` is the channel's full state right
    /// after this message, stored atomically with the log append so a subscriber gets
    /// a snapshot consistent with `seq`.
    Durable {
        channel: String,
        message: Bytes,
        snapshot: Option<Bytes>,
    },
    /// An ephemeral message: the latest value wins per (`channel`, `key`). `retain`
    /// keeps it as the last value, replayed to new subscribers.
    Ephemeral {
        channel: String,
        key: String,
        message: Bytes,
        retain: bool,
    },
    /// Replace the channel's stored snapshot without a new seq (live figures moved).
    Snapshot { channel: String, message: Bytes },
}

impl Effect {
    /// The channel this effect publishes on.
    pub fn channel(&self) -> &str {
        match self {
            Effect::Durable { channel, .. }
            | Effect::Ephemeral { channel, .. }
            | Effect::Snapshot { channel, .. } => channel,
        }
    }

    /// The message (or snapshot) bytes.
    pub fn message(&self) -> &Bytes {
        match self {
            Effect::Durable { message, .. }
            | Effect::Ephemeral { message, .. }
            | Effect::Snapshot { message, .. } => message,
        }
    }

    pub(crate) fn durable(
        channel: &Channel,
        kind: &'static str,
        body: &impl Serialize,
        snapshot: Option<Bytes>,
    ) -> Self {
        let channel = channel.to_string();
        Effect::Durable {
            message: encode_on(kind, &channel, body),
            channel,
            snapshot,
        }
    }

    pub(crate) fn ephemeral(
        channel: &Channel,
        key: String,
        kind: &'static str,
        body: &impl Serialize,
        retain: bool,
    ) -> Self {
        let channel = channel.to_string();
        Effect::Ephemeral {
            message: encode_on(kind, &channel, body),
            channel,
            key,
            retain,
        }
    }

    pub(crate) fn snapshot(channel: &Channel, message: Bytes) -> Self {
        Effect::Snapshot {
            channel: channel.to_string(),
            message,
        }
    }
}

/// Why [`Engine::apply`](crate::Engine::apply) refused an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// (`src`, `seq`) was already applied: acknowledge and move on.
    #[error("duplicate event (src, seq already applied)")]
    Duplicate,
    /// The event contradicts the state (e.g. closing another login's position): it
    /// belongs in the dead-letter stream with this reason.
    #[error("{0}")]
    Invalid(String),
}

/// Encode `{"type":kind,"channel":channel,...body}` once, as the bytes every
/// subscriber receives. `body` must serialize as a JSON object.
pub(crate) fn encode(kind: &'static str, channel: &Channel, body: &impl Serialize) -> Bytes {
    encode_on(kind, &channel.to_string(), body)
}

/// [`encode`] for a channel already rendered as its name.
///
/// Writes the two envelope fields, then the body with its opening `{` turned into a
/// `,`: the same bytes as serializing an envelope struct with a `#[serde(flatten)]`
/// body, without serde's map-based path for flattening.
///
/// The JSON is written into a per-thread scratch buffer and copied out once, so each
/// message costs one allocation of its exact size.
pub(crate) fn encode_on(kind: &'static str, channel: &str, body: &impl Serialize) -> Bytes {
    encode_raw(kind, channel, |out| {
        serde_json::to_writer(out, body).expect(PLAIN);
    })
}

const PLAIN: &str = "channel messages are plain JSON objects";

/// [`encode_on`] with a body that `write_body` writes as JSON text: one object.
pub(crate) fn encode_raw(
    kind: &'static str,
    channel: &str,
    write_body: impl FnOnce(&mut Vec<u8>),
) -> Bytes {
    encode_in_scratch(
        |out| {
            out.extend_from_slice(b"{\"type\":");
            serde_json::to_writer(&mut *out, kind).expect(PLAIN);
            out.extend_from_slice(b",\"channel\":");
            serde_json::to_writer(&mut *out, channel).expect(PLAIN);
        },
        write_body,
    )
}

/// The start every message of `kind` on `channel` shares, `{"type":…,"channel":…`,
/// to give [`encode_enveloped`] for many messages.
pub(crate) fn envelope(kind: &'static str, channel: &str) -> Vec<u8> {
    let message = encode_raw(kind, channel, |out| out.extend_from_slice(b"{}"));
    message[..message.len() - 1].to_vec()
}

/// [`encode_raw`] with the envelope already rendered by [`envelope`].
pub(crate) fn encode_enveloped(envelope: &[u8], write_body: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    encode_in_scratch(|out| out.extend_from_slice(envelope), write_body)
}

/// Write the envelope then the body object in the per-thread scratch buffer, turn
/// the body's `{` into the `,` that continues the envelope, and copy the message out
/// (one allocation of its exact size).
fn encode_in_scratch(
    write_envelope: impl FnOnce(&mut Vec<u8>),
    write_body: impl FnOnce(&mut Vec<u8>),
) -> Bytes {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|out| {
        out.clear();
        write_envelope(out);
        let start = out.len();
        write_body(out);
        match &out[start..] {
            b"{}" => {
                out.truncate(start);
                out.push(b'}');
            }
            [b'{', ..] => out[start] = b',',
            _ => panic!("{PLAIN}: the body is not an object"),
        }
        let message = Bytes::copy_from_slice(out);
        // Keep a working size, not the largest message ever encoded.
        if out.capacity() > 1 << 20 {
            *out = Vec::new();
        }
        message
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Body {
        id: u64,
        profit: f64,
    }

    /// The envelope as a struct with a flattened body: what [`encode_on`] must equal.
    fn flattened(kind: &'static str, channel: &str, body: &impl Serialize) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a, B> {
            #[serde(rename = "type")]
            kind: &'static str,
            channel: &'a str,
            #[serde(flatten)]
            body: &'a B,
        }
        serde_json::to_vec(&Envelope {
            kind,
            channel,
            body,
        })
        .unwrap()
    }

    #[test]
    fn splicing_equals_flattening() {
        #[derive(Serialize)]
        struct Sparse {
            id: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            volume: Option<f64>,
            level: Option<f64>,
            name: &'static str,
        }
        #[derive(Serialize)]
        struct Outer {
            #[serde(flatten)]
            inner: Sparse,
            list: Vec<Body>,
        }
        #[derive(Serialize)]
        struct Empty {}
        let sparse = || Sparse {
            id: 7,
            volume: None,
            level: Some(-0.1 + 0.2),
            name: "a \"quoted\" \\ name\n",
        };
        let outer = Outer {
            inner: sparse(),
            list: vec![Body {
                id: 1,
                profit: 1e21,
            }],
        };
        let channel = "prices:odd \"group\"";
        assert_eq!(
            encode_on("x", channel, &sparse()),
            flattened("x", channel, &sparse())
        );
        assert_eq!(
            encode_on("x", channel, &outer),
            flattened("x", channel, &outer)
        );
        assert_eq!(
            encode_on("x", channel, &Empty {}),
            flattened("x", channel, &Empty {})
        );
        let map: std::collections::BTreeMap<&str, f64> = [("b", 2.5), ("a", f64::NAN)].into();
        assert_eq!(encode_on("x", channel, &map), flattened("x", channel, &map));
    }

    #[test]
    fn type_and_channel_come_first() {
        let bytes = encode(
            "position_update",
            &Channel::Portfolio(42),
            &Body { id: 7, profit: 1.5 },
        );
        assert_eq!(
            &bytes[..],
            br#"{"type":"position_update","channel":"portfolio:42","id":7,"profit":1.5}"#
        );
    }
}
