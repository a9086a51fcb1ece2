//! Frames on the pub/sub topics: how one node tells the others about a message.
//!
//! - durable: `d<epoch>\n<seq>\n<stamped message>`
//! - ephemeral: `e<key>\n<message>`
//! - restored: `r` (the snapshot was put back after Redis lost it: resync from it)
//!
//! The message bytes are exactly what subscribers receive, so a node forwards the
//! tail of the frame without re-encoding it.

use bytes::Bytes;

/// A frame read from a topic.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Frame {
    Durable {
        epoch: String,
        seq: u64,
        message: Bytes,
    },
    Ephemeral {
        key: String,
        message: Bytes,
    },
    Restored,
}

/// The whole `restored` frame.
pub(crate) const RESTORED: &str = "r";

pub(crate) fn ephemeral(key: &str, message: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(2 + key.len() + message.len());
    frame.push(b'e');
    frame.extend_from_slice(key.as_bytes());
    frame.push(b'\n');
    frame.extend_from_slice(message);
    frame
}

/// Parse a frame; `None` for anything that is not one (it is logged and skipped).
pub(crate) fn parse(payload: Bytes) -> Option<Frame> {
    let kind = *payload.first()?;
    let newline = |from: usize| {
        payload[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| i + from)
    };
    let text = |from: usize, to: usize| std::str::from_utf8(&payload[from..to]).ok();
    match kind {
        b'd' => {
            let first = newline(1)?;
            let second = newline(first + 1)?;
            Some(Frame::Durable {
                epoch: text(1, first)?.to_owned(),
                seq: text(first + 1, second)?.parse().ok()?,
                message: payload.slice(second + 1..),
            })
        }
        b'e' => {
            let first = newline(1)?;
            Some(Frame::Ephemeral {
                key: text(1, first)?.to_owned(),
                message: payload.slice(first + 1..),
            })
        }
        b'r' => Some(Frame::Restored),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let durable = Bytes::from_static(b"dab12\n7\n{\"type\":\"x\",\"seq\":7}");
        assert_eq!(
            parse(durable),
            Some(Frame::Durable {
                epoch: "ab12".into(),
                seq: 7,
                message: Bytes::from_static(b"{\"type\":\"x\",\"seq\":7}"),
            })
        );
        let eph = Bytes::from(ephemeral("EURUSD", b"{}"));
        assert_eq!(
            parse(eph),
            Some(Frame::Ephemeral {
                key: "EURUSD".into(),
                message: Bytes::from_static(b"{}"),
            })
        );
        assert_eq!(parse(Bytes::from_static(b"dx")), None);
        assert_eq!(parse(Bytes::new()), None);
    }
}
