//! `ib_link` events on `network:{ib}` for the whole ancestor chain.

mod common;

use common::*;
use serde_json::json;
use tradecast_core::{Effect, Rejected};

#[test]
fn joining_reaches_every_ancestor_and_cycles_are_refused() {
    let mut feed = Feed::new();
    feed.send(r#""type":"ib_link","op":"set","login":200,"ib":100"#, 0);
    feed.send(&usd_account(42, "Ada"), 0);
    let effects = feed.send(r#""type":"ib_link","op":"set","login":42,"ib":200"#, 1);
    assert_envelopes(&effects);
    assert_eq!(
        durable(&effects, "network:200", "client_joined"),
        vec![
            json!({"type":"client_joined","channel":"network:200","client":42,"ib":200,"level":1,"name":"Ada"})
        ]
    );
    assert_eq!(
        durable(&effects, "network:100", "client_joined")[0]["level"],
        2
    );
    let Effect::Durable {
        snapshot: Some(snapshot),
        ..
    } = &effects[1]
    else {
        panic!("durable")
    };
    let full: serde_json::Value = serde_json::from_slice(snapshot).unwrap();
    assert_eq!(
        full,
        json!({"type":"network_full","channel":"network:100","ib":100,"clients":[
            {"client":200,"level":1,"name":null},{"client":42,"level":2,"name":"Ada"}]})
    );

    let cycle = feed.try_send(100, r#""type":"ib_link","op":"set","login":100,"ib":42"#, 2);
    assert!(matches!(cycle, Err(Rejected::Invalid(reason)) if reason.contains("cycle")));

    let left = feed.send(r#""type":"ib_link","op":"remove","login":42"#, 3);
    assert_eq!(durable(&left, "network:200", "client_left").len(), 1);
    assert_eq!(durable(&left, "network:100", "client_left")[0]["level"], 2);
    assert!(
        feed.send(r#""type":"ib_link","op":"remove","login":42"#, 4)
            .is_empty()
    );
}
