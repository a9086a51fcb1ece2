//! A stream of ingest entries as the ingest leader applies them: each line is the
//! `d` field of one entry; the valid ones go through the domain engine
//! (`tradecast_core::Engine::apply`), live figures are flushed as the event clock
//! moves (`flush_live`), effects become a broker batch (`to_batch`), and at the end
//! the engine is checkpointed and restored the way a takeover does (serde JSON).
//!
//! Checked: no panic (arithmetic overflow included: fuzz builds have overflow
//! checks); every message is a JSON object that starts with `type` and `channel` and
//! carries no `null` where a figure belongs (a NaN or an infinity serializes as
//! `null`); re-applying an applied event is a duplicate; the checkpoint loads back
//! equal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tradecast_core::{Effect, Engine, EngineConfig, Rejected};
use tradecast_ingest::effects::to_batch;
use tradecast_protocol::ingest;

/// Keys whose value is always a number: a `null` there is a NaN or an infinity.
/// (Not `volume`: a working order without `vol_current` has a `null` one.)
const FIGURES: &[&str] = &[
    "bid",
    "ask",
    "balance",
    "credit",
    "equity",
    "margin",
    "margin_free",
    "profit",
    "amount",
    "total",
    "buy_lots",
    "sell_lots",
    "net_lots",
    "notional",
    "swap",
];

fuzz_target!(|data: &[u8]| {
    let mut engine = Engine::new(EngineConfig::default());
    let mut now = 0u64;
    let mut applied = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Ok(event) = ingest::parse(line) else {
            continue;
        };
        now = now.max(event.ts);
        match engine.apply(&event, now) {
            Ok(effects) => {
                check(&effects);
                to_batch(effects, Some(applied.len() as u64 + 1));
                applied.push(event);
            }
            Err(Rejected::Duplicate) => {}
            Err(Rejected::Invalid(reason)) => assert!(!reason.is_empty()),
        }
        check(&engine.flush_live(now));
    }
    check(&engine.flush_live(now.saturating_add(60_000)));
    check(&engine.snapshots());

    let checkpoint = serde_json::to_vec(&engine).expect("the engine serializes");
    let restored: Engine = match serde_json::from_slice(&checkpoint) {
        Ok(restored) => restored,
        Err(e) => panic!("the checkpoint does not load back: {e}"),
    };
    assert!(restored == engine, "the checkpoint loads back equal");

    for event in &applied {
        assert_eq!(
            engine.apply(event, now),
            Err(Rejected::Duplicate),
            "replayed {event:?}"
        );
    }
});

fn check(effects: &[Effect]) {
    for effect in effects {
        check_message(effect.message(), effect.channel());
        if let Effect::Durable {
            snapshot: Some(snapshot),
            ..
        } = effect
        {
            check_message(snapshot, effect.channel());
        }
    }
}

/// `bytes` is a JSON object on `channel` that starts with its `type`.
fn check_message(bytes: &[u8], channel: &str) {
    let message: Value = match serde_json::from_slice(bytes) {
        Ok(message) => message,
        Err(e) => panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(bytes)),
    };
    assert!(message.is_object(), "not an object: {message}");
    // serde_json's Map is sorted, so the order is checked on the bytes.
    assert!(bytes.starts_with(br#"{"type":""#), "type first: {message}");
    assert_eq!(message["channel"], channel, "{message}");
    no_null_figure(&message);
}

fn no_null_figure(value: &Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                assert!(
                    !(field.is_null() && FIGURES.contains(&key.as_str())),
                    "{key} is not a number (NaN or infinite) in {value}"
                );
                no_null_figure(field);
            }
        }
        Value::Array(items) => items.iter().for_each(no_null_figure),
        _ => {}
    }
}
