//! Replays the inputs of the `engine_events` fuzz target
//! (`fuzz/fuzz_targets/engine_events.rs`) through the same path: each line is the `d`
//! of one ingest entry; valid events are applied, live figures flushed as the event
//! clock moves, and the engine is checkpointed and restored as a takeover does. The
//! inputs are the committed seeds (`fuzz/corpus/engine_events/`) and every input that
//! once crashed a target (`fuzz/regressions/engine_events/`).

use serde_json::Value;
use tradecast_core::{Effect, Engine, EngineConfig, Rejected};
use tradecast_protocol::ingest;
use tradecast_testkit::fuzz;

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

#[test]
fn event_streams_apply_without_panic() {
    let mut messages = 0;
    for (name, bytes) in fuzz::inputs("engine_events") {
        let mut engine = Engine::new(EngineConfig::default());
        let mut now = 0u64;
        let mut applied = Vec::new();
        let mut effects = Vec::new();
        for line in bytes.split(|&b| b == b'\n') {
            let Ok(event) = ingest::parse(line) else {
                continue;
            };
            now = now.max(event.ts);
            match engine.apply(&event, now) {
                Ok(out) => {
                    effects.extend(out);
                    applied.push(event);
                }
                Err(Rejected::Duplicate) => {}
                Err(Rejected::Invalid(reason)) => assert!(!reason.is_empty(), "{name}"),
            }
            effects.extend(engine.flush_live(now));
        }
        effects.extend(engine.flush_live(now.saturating_add(60_000)));
        effects.extend(engine.snapshots());
        for effect in &effects {
            check_message(&name, effect.message(), effect.channel());
            if let Effect::Durable {
                snapshot: Some(snapshot),
                ..
            } = effect
            {
                check_message(&name, snapshot, effect.channel());
            }
        }
        messages += effects.len();

        let checkpoint = serde_json::to_vec(&engine).expect("the engine serializes");
        let restored: Engine = serde_json::from_slice(&checkpoint)
            .unwrap_or_else(|e| panic!("{name}: the checkpoint does not load back: {e}"));
        // `regressions/engine_events/alert_null_margin_level_checkpoint.jsonl`: an alert with
        // `"margin_level":null` came back from the checkpoint without it.
        assert!(
            restored == engine,
            "{name}: the checkpoint loads back equal"
        );
        for event in &applied {
            assert_eq!(
                engine.apply(event, now),
                Err(Rejected::Duplicate),
                "{name}: replayed {event:?}"
            );
        }
    }
    assert!(messages > 0, "the seeds produce messages");
}

fn check_message(name: &str, bytes: &[u8], channel: &str) {
    let message: Value = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {}", String::from_utf8_lossy(bytes)));
    assert!(
        bytes.starts_with(br#"{"type":""#),
        "{name}: type first: {message}"
    );
    assert_eq!(message["channel"], channel, "{name}: {message}");
    assert_figures(name, &message);
}

fn assert_figures(name: &str, value: &Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                assert!(
                    !(field.is_null() && FIGURES.contains(&key.as_str())),
                    "{name}: {key} is not a number (NaN or infinite) in {value}"
                );
                assert_figures(name, field);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| assert_figures(name, item)),
        _ => {}
    }
}
