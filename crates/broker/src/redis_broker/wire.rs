//! Frames on the pub/sub topics: how one node tells the others about a message.
//!
//! - durable: `d<epoch>\n<seq>\n<stamped message>`
//! - ephemeral: `e<key>\n<message>`
//! - ephemerals: `b` then, for each message, `<key>\n<length>\n<message>`: the
//!   ephemeral messages one publish batch has for a channel, in order, in one frame
//!   (the live figures of a portfolio are tens of messages every push; one `PUBLISH`
//!   each would cost Redis and every node a command and a frame per message)
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
    /// Several ephemeral messages of one channel, in publishing order.
    Ephemerals(Vec<(String, Bytes)>),
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

/// One frame for `messages` (key, message) of one channel: `e` for one, `b` for more.
pub(crate) fn ephemerals(messages: &[(String, Bytes)]) -> Vec<u8> {
    if let [(key, message)] = messages {
        return ephemeral(key, message);
    }
    let size: usize = messages.iter().map(|(k, m)| k.len() + m.len() + 12).sum();
    let mut frame = Vec::with_capacity(1 + size);
    frame.push(b'b');
    for (key, message) in messages {
        frame.extend_from_slice(key.as_bytes());
        frame.push(b'\n');
        frame.extend_from_slice(message.len().to_string().as_bytes());
        frame.push(b'\n');
        frame.extend_from_slice(message);
    }
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
        b'b' => {
            let mut messages = Vec::new();
            let mut at = 1;
            while at < payload.len() {
                let first = newline(at)?;
                let second = newline(first + 1)?;
                let key = text(at, first)?.to_owned();
                let length: usize = text(first + 1, second)?.parse().ok()?;
                let end = (second + 1).checked_add(length)?;
                if end > payload.len() {
                    return None;
                }
                messages.push((key, payload.slice(second + 1..end)));
                at = end;
            }
            Some(Frame::Ephemerals(messages))
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
        let batch = vec![
            (
                "position:1".to_owned(),
                Bytes::from_static(b"{\"a\":\"x\\ny\"}"),
            ),
            ("account".to_owned(), Bytes::from_static(b"{}\n")),
            ("position:2".to_owned(), Bytes::new()),
        ];
        assert_eq!(
            parse(Bytes::from(ephemerals(&batch))),
            Some(Frame::Ephemerals(batch.clone()))
        );
        // One message is a plain `e` frame.
        assert_eq!(
            parse(Bytes::from(ephemerals(&batch[..1]))),
            Some(Frame::Ephemeral {
                key: "position:1".into(),
                message: batch[0].1.clone(),
            })
        );
        // A length past the end, or a missing length, is not a frame.
        assert_eq!(parse(Bytes::from_static(b"bk\n5\n{}")), None);
        assert_eq!(parse(Bytes::from_static(b"bk\n{}")), None);
        assert_eq!(parse(Bytes::from_static(b"dx")), None);
        assert_eq!(parse(Bytes::new()), None);
    }
}
