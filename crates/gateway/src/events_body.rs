//! The body of `POST /v1/events`: one ingest event object (the `d` JSON of a stream
//! entry) or an array of them.
//!
//! Parsing is all-or-nothing: either every item is a valid event, or the reply names
//! each bad one by its index. It is outside input read before anything is applied,
//! so it lives here as a pure function, one of the fuzz targets (`fuzz/`).

use serde_json::Value;
use tradecast_protocol::ingest::{self, IngestEvent};

/// A body whose every item is a valid event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsBody {
    /// The events, in body order.
    pub events: Vec<IngestEvent>,
    /// The same items as they came (what the Redis writer appends to the streams).
    pub raw: Vec<Value>,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    /// The body is not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// Some items are not valid events: (index in the body, reason).
    #[error("{} invalid ingest event(s)", .0.len())]
    Invalid(Vec<(usize, String)>),
}

/// Parse a `POST /v1/events` body. A single object counts as an array of one.
pub fn parse(body: &[u8]) -> Result<EventsBody, BodyError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let raw = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    let mut events = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    for (index, item) in raw.iter().enumerate() {
        match ingest::parse_value(item.clone()) {
            Ok(event) => events.push(event),
            Err(error) => errors.push((index, error.to_string())),
        }
    }
    if errors.is_empty() {
        Ok(EventsBody { events, raw })
    } else {
        Err(BodyError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: &str =
        r#"{"v":1,"type":"tick","src":"a","seq":1,"ts":1,"symbol":"EURUSD","bid":1.1,"ask":1.2}"#;

    #[test]
    fn takes_an_object_or_an_array() {
        let one = parse(TICK.as_bytes()).unwrap();
        assert_eq!((one.events.len(), one.raw.len()), (1, 1));
        let two = parse(format!("[{TICK},{TICK}]").as_bytes()).unwrap();
        assert_eq!(two.events.len(), 2);
        assert_eq!(two.raw[1], serde_json::from_str::<Value>(TICK).unwrap());
        assert_eq!(parse(b"[]").unwrap().events, vec![]);
    }

    #[test]
    fn names_every_bad_item() {
        assert!(matches!(parse(b"{nope"), Err(BodyError::NotJson(_))));
        let Err(BodyError::Invalid(errors)) = parse(format!("[{TICK},1,{{}}]").as_bytes()) else {
            panic!("should be refused");
        };
        assert_eq!(
            errors,
            vec![
                (1, "expected a JSON object, got a number".to_owned()),
                (2, "missing field v (schema version, expected 1)".to_owned()),
            ]
        );
    }
}
