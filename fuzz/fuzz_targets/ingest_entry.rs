//! The `d` field of an ingest stream entry, as the leader reads it
//! (`tradecast_protocol::ingest::parse`), and the same JSON already decoded
//! (`parse_value`, as `POST /v1/events` does per item).
//!
//! Checked: no panic; both paths agree; a refused entry has a short reason naming
//! the problem (it goes to the dead-letter stream); an accepted one respects the
//! contract's units (finite money, positive prices, ask not below bid, …).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tradecast_protocol::ingest::{self, EventBody, LinkOp, PositionEvent};

fuzz_target!(|data: &[u8]| {
    let parsed = ingest::parse(data);
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        assert_eq!(
            ingest::parse_value(value),
            parsed,
            "parse and parse_value agree"
        );
    }
    let event = match parsed {
        Ok(event) => event,
        Err(error) => {
            let reason = error.reason();
            assert!(!reason.is_empty());
            assert!(
                reason.len() <= 1024,
                "a dead-letter reason is short: {} bytes",
                reason.len()
            );
            return;
        }
    };
    assert!(!event.src.is_empty());
    let finite = |x: f64| assert!(x.is_finite(), "{x} in {event:?}");
    let positive = |x: f64| assert!(x > 0.0 && x.is_finite(), "{x} in {event:?}");
    match &event.body {
        EventBody::Deal(d) => {
            [d.profit, d.commission, d.swap, d.fee]
                .into_iter()
                .for_each(finite);
            d.contract_size.into_iter().for_each(positive);
            if d.action.is_trade() {
                assert!(d.entry.is_some() && d.symbol.is_some() && d.vol.is_some());
            }
            for payout in d.ib_commissions.iter().flatten() {
                assert!(payout.level >= 1);
                finite(payout.amount);
            }
        }
        EventBody::Position(PositionEvent::Open(p)) => {
            positive(p.price_open);
            p.contract_size
                .into_iter()
                .chain(p.rate_profit)
                .for_each(positive);
        }
        EventBody::Tick(t) => {
            positive(t.bid);
            positive(t.ask);
            assert!(t.ask >= t.bid);
        }
        EventBody::IbLink(l) => {
            assert!(l.op == LinkOp::Remove || l.ib.is_some_and(|ib| ib != 0));
        }
        EventBody::Symbol(s) => {
            positive(s.contract_size);
            assert!(
                format!("prices:{}", s.group)
                    .parse::<tradecast_protocol::Channel>()
                    .is_ok()
            );
        }
        EventBody::Account(a) => assert_ne!(a.leverage, Some(0)),
        _ => {}
    }
    assert_eq!(
        event.body.login().is_none(),
        matches!(event.body, EventBody::Tick(_) | EventBody::Symbol(_))
    );
});
