//! The body of `POST /v1/events` on the admin listener: one ingest event or an array
//! of them (`tradecast_gateway::events_body::parse`).
//!
//! Checked: no panic; all-or-nothing (every item is an event, or each bad item is
//! named by a valid index with a reason); each item parses as it would alone.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tradecast_gateway::events_body::{self, BodyError};
use tradecast_protocol::ingest;

fuzz_target!(|data: &[u8]| {
    let items = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Array(items)) => Some(items),
        Ok(single) => Some(vec![single]),
        Err(_) => None,
    };
    match (events_body::parse(data), items) {
        (Ok(body), Some(items)) => {
            assert_eq!(body.raw, items);
            assert_eq!(body.events.len(), items.len());
            for (event, item) in body.events.iter().zip(items) {
                assert_eq!(ingest::parse_value(item).as_ref(), Ok(event));
            }
        }
        (Err(BodyError::Invalid(errors)), Some(items)) => {
            assert!(!errors.is_empty());
            assert!(errors.windows(2).all(|w| w[0].0 < w[1].0), "indexes rise");
            for (index, reason) in &errors {
                let item = items.get(*index).expect("the index names an item").clone();
                let error = ingest::parse_value(item).expect_err("the named item is bad");
                assert_eq!(&error.to_string(), reason);
            }
            let good = items
                .iter()
                .filter(|&i| ingest::parse_value(i.clone()).is_ok());
            assert_eq!(
                good.count() + errors.len(),
                items.len(),
                "every bad item is named"
            );
        }
        (Err(BodyError::NotJson(reason)), None) => assert!(!reason.is_empty()),
        (outcome, items) => panic!("{outcome:?} for a body whose JSON reads {items:?}"),
    }
});
