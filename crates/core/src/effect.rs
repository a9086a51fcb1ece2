//! What the engine asks the delivery layer to do, and how messages are encoded.

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
        Effect::Durable {
            channel: channel.to_string(),
            message: encode(kind, channel, body),
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
        Effect::Ephemeral {
            channel: channel.to_string(),
            key,
            message: encode(kind, channel, body),
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

/// The fields every channel message starts with.
#[derive(Serialize)]
struct Envelope<'a, B> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    #[serde(flatten)]
    body: &'a B,
}

/// Encode `{"type":kind,"channel":channel,...body}` once, as the bytes every
/// subscriber receives. `body` must serialize as a JSON object.
pub(crate) fn encode(kind: &'static str, channel: &Channel, body: &impl Serialize) -> Bytes {
    let channel = channel.to_string();
    let envelope = Envelope {
        kind,
        channel: &channel,
        body,
    };
    Bytes::from(serde_json::to_vec(&envelope).expect("channel messages are plain JSON objects"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Body {
        id: u64,
        profit: f64,
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
