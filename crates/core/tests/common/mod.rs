//! Test helpers: feed JSON ingest events through the real parser into an engine and
//! look at the effects as JSON.

#![allow(dead_code)] // each test binary uses a different subset

use serde_json::Value;
use tradecast_core::{Effect, Engine, EngineConfig, Rejected};
use tradecast_protocol::ingest;

/// An engine fed by one source whose `seq` counts up.
pub struct Feed {
    pub engine: Engine,
    pub seq: u64,
}

impl Feed {
    pub fn new() -> Self {
        Feed {
            engine: Engine::new(EngineConfig::default()),
            seq: 0,
        }
    }

    /// Apply an event given as its body fields (`"type":"tick",...`) at time `ts`.
    pub fn send(&mut self, fields: &str, ts: u64) -> Vec<Effect> {
        self.seq += 1;
        self.try_send(self.seq, fields, ts)
            .unwrap_or_else(|e| panic!("{fields}: {e:?}"))
    }

    /// Apply with an explicit `seq`.
    pub fn try_send(&mut self, seq: u64, fields: &str, ts: u64) -> Result<Vec<Effect>, Rejected> {
        let d = format!(r#"{{"v":1,"src":"test","seq":{seq},"ts":{ts},{fields}}}"#);
        let event = ingest::parse(d.as_bytes()).unwrap_or_else(|e| panic!("{d}: {e}"));
        self.engine.apply(&event, ts)
    }
}

/// The message of an effect, parsed.
pub fn json(effect: &Effect) -> Value {
    serde_json::from_slice(effect.message()).expect("messages are JSON")
}

/// Durable messages of `kind` on `channel`, parsed.
pub fn durable(effects: &[Effect], channel: &str, kind: &str) -> Vec<Value> {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Durable { .. }) && e.channel() == channel)
        .map(json)
        .filter(|m| m["type"] == kind)
        .collect()
}

/// Ephemeral messages of `kind` on `channel`, parsed.
pub fn ephemeral(effects: &[Effect], channel: &str, kind: &str) -> Vec<Value> {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Ephemeral { .. }) && e.channel() == channel)
        .map(json)
        .filter(|m| m["type"] == kind)
        .collect()
}

/// Every message starts with `type` then `channel`, and durable ones carry no `seq`.
pub fn assert_envelopes(effects: &[Effect]) {
    for effect in effects {
        let text = std::str::from_utf8(effect.message()).unwrap();
        assert!(text.starts_with(r#"{"type":"#), "{text}");
        let channel_field = format!(r#","channel":"{}""#, effect.channel());
        let after_type = &text[text.find(',').unwrap()..];
        assert!(after_type.starts_with(&channel_field), "{text}");
        assert!(text.ends_with('}'), "{text}");
        if matches!(effect, Effect::Durable { .. }) {
            assert!(json(effect).get("seq").is_none(), "{text}");
        }
    }
}

/// A USD account with a 10,000 balance and 1:100 leverage.
pub fn usd_account(login: u64, name: &str) -> String {
    format!(
        r#""type":"account","login":{login},"name":"{name}","ccy":"USD","leverage":100,"balance":10000.0,"credit":0.0"#
    )
}

pub fn open(login: u64, id: u64, symbol: &str, side: &str, vol: u64, price_open: f64) -> String {
    format!(
        r#""type":"position","op":"open","login":{login},"position_id":{id},"symbol":"{symbol}","side":"{side}","vol":{vol},"price_open":{price_open}"#
    )
}

pub fn tick(symbol: &str, bid: f64, ask: f64) -> String {
    format!(r#""type":"tick","symbol":"{symbol}","bid":{bid},"ask":{ask}"#)
}
