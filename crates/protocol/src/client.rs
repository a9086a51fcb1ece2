//! Requests a WebSocket client sends: one JSON object per text frame.
//!
//! ```json
//! {"type":"ping"}
//! {"type":"subscribe","channel":"prices:metals","id":7}
//! {"type":"subscribe","channel":"portfolio:42","since":{"epoch":"9f2c61d0","seq":118}}
//! {"type":"unsubscribe","channel":"prices:metals"}
//! {"type":"auth","token":"eyJhbGciOi…","id":"a1"}
//! ```
//! Any request may carry an `id` (a string or a number) that the reply echoes.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// A parsed client request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the reply so the client can match it.
    pub id: Option<Value>,
    pub kind: RequestKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RequestKind {
    /// Application heartbeat; answered with `pong`.
    Ping,
    /// Join a channel; with `since`, resume after that position.
    Subscribe {
        channel: String,
        since: Option<Since>,
    },
    /// Leave a channel.
    Unsubscribe { channel: String },
    /// Replace the connection's token with a fresh one of the same user, so the
    /// connection outlives the first token's `exp` (in-band refresh).
    Auth { token: Token },
}

/// A JWT sent in a request. Its `Debug` form hides the text, so a request that ends
/// up in a log line never carries a credential with it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A position in a channel's durable log: the client saw every message up to `seq`
/// in the log identified by `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Since {
    pub epoch: String,
    pub seq: u64,
}

/// Why a frame is not a valid request. Each maps to an `error` reply code; the
/// connection stays open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("frame is not valid JSON: {0}")]
    NotJson(String),
    #[error("a request must be a JSON object with a \"type\"")]
    NotAnObject,
    #[error("unknown request type {0:?}")]
    UnknownType(String),
    #[error("missing or invalid field {0:?}")]
    BadField(&'static str),
}

impl RequestError {
    /// The `code` of the `error` reply.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::NotJson(_) | RequestError::NotAnObject => "bad_request",
            RequestError::UnknownType(_) => "unknown_type",
            RequestError::BadField(_) => "bad_field",
        }
    }
}

impl Request {
    /// Parse one text frame. On error the `id` is still returned when it could be
    /// read, so the `error` reply can echo it.
    pub fn parse(text: &str) -> Result<Request, (Option<Value>, RequestError)> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| (None, RequestError::NotJson(e.to_string())))?;
        let Value::Object(mut obj) = value else {
            return Err((None, RequestError::NotAnObject));
        };
        let id = obj
            .remove("id")
            .filter(|id| id.is_string() || id.is_number());
        let fail = |e| Err((id.clone(), e));
        let Some(Value::String(kind)) = obj.get("type") else {
            return fail(RequestError::NotAnObject);
        };
        let channel = || match obj.get("channel") {
            Some(Value::String(c)) => Ok(c.clone()),
            _ => Err(RequestError::BadField("channel")),
        };
        let kind = match kind.as_str() {
            "ping" => RequestKind::Ping,
            "subscribe" => {
                let since = match obj.get("since") {
                    None | Some(Value::Null) => None,
                    Some(v) => match Since::deserialize(v) {
                        Ok(since) => Some(since),
                        Err(_) => return fail(RequestError::BadField("since")),
                    },
                };
                match channel() {
                    Ok(channel) => RequestKind::Subscribe { channel, since },
                    Err(e) => return fail(e),
                }
            }
            "unsubscribe" => match channel() {
                Ok(channel) => RequestKind::Unsubscribe { channel },
                Err(e) => return fail(e),
            },
            "auth" => match obj.get("token") {
                Some(Value::String(token)) if !token.is_empty() => RequestKind::Auth {
                    token: Token(token.clone()),
                },
                _ => return fail(RequestError::BadField("token")),
            },
            other => {
                let shown: String = other.chars().take(32).collect();
                return fail(RequestError::UnknownType(shown));
            }
        };
        Ok(Request { id, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_each_request() {
        assert_eq!(
            Request::parse(r#"{"type":"ping"}"#).unwrap().kind,
            RequestKind::Ping
        );
        let r = Request::parse(r#"{"type":"subscribe","channel":"alerts","id":"a1","extra":1}"#)
            .unwrap();
        assert_eq!(r.id, Some(json!("a1")));
        assert_eq!(
            r.kind,
            RequestKind::Subscribe {
                channel: "alerts".into(),
                since: None
            }
        );
        let r = Request::parse(
            r#"{"type":"subscribe","channel":"orders:1","since":{"epoch":"e","seq":5}}"#,
        )
        .unwrap();
        let since = Some(Since {
            epoch: "e".into(),
            seq: 5,
        });
        assert_eq!(
            r.kind,
            RequestKind::Subscribe {
                channel: "orders:1".into(),
                since
            }
        );
        let r = Request::parse(r#"{"type":"unsubscribe","channel":"alerts","id":3}"#).unwrap();
        assert_eq!(r.id, Some(json!(3)));
        let r = Request::parse(r#"{"type":"auth","token":"a.b.c","id":"t1"}"#).unwrap();
        assert_eq!(r.id, Some(json!("t1")));
        assert_eq!(
            r.kind,
            RequestKind::Auth {
                token: Token("a.b.c".into())
            }
        );
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let r = Request::parse(r#"{"type":"auth","token":"secret.jwt.text"}"#).unwrap();
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn refuses_bad_frames_with_codes() {
        let code = |text: &str| Request::parse(text).unwrap_err().1.code();
        assert_eq!(code("{nope"), "bad_request");
        assert_eq!(code("[1,2]"), "bad_request");
        assert_eq!(code(r#"{"id":1}"#), "bad_request");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"subscribe"}"#), "bad_field");
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"a","since":{"seq":"x"}}"#),
            "bad_field"
        );
        assert_eq!(code(r#"{"type":"auth"}"#), "bad_field");
        assert_eq!(code(r#"{"type":"auth","token":""}"#), "bad_field");
        assert_eq!(code(r#"{"type":"auth","token":7}"#), "bad_field");
        let (id, _) = Request::parse(r#"{"type":"subscribe","id":9}"#).unwrap_err();
        assert_eq!(id, Some(json!(9)), "the id is echoed even on error");
    }
}
