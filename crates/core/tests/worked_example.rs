//! Live P/L, equity and margin to the cent on a two-position USD account.
//!
//! ```text
//! Account: USD, balance 10,000.00, leverage 1:100.
//! buy 1.00 lot EURUSD @ 1.08000; tick 1.08250 / 1.08260
//!   profit = (1.08250 − 1.08000) × 1.00 × 100,000 × 1         = 250.00
//!   margin = 1.00 × 100,000 × 1.08000 (EUR in USD, open) / 100 = 1,080.00
//! sell 0.50 lot USDJPY @ 150.000; tick 149.500 / 149.510
//!   profit = (150.000 − 149.510) × 0.50 × 100,000 = 24,500 JPY
//!            JPY → USD at 1 / mid: 24,500 / 149.505 = 163.874… → 163.87
//!   margin = 0.50 × 100,000 × 1 (base is USD) / 100            = 500.00
//! equity       = 10,000 + 250.00 + 163.87 = 10,413.87
//! margin       = 1,580.00
//! margin_free  = 10,413.87 − 1,580.00     = 8,833.87
//! margin_level = 10,413.87 / 1,580 × 100  = 659.11 %
//! ```

mod common;

use common::*;
use serde_json::json;
use tradecast_core::Effect;

#[test]
fn profit_equity_and_margin_to_the_cent() {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada"), 1);
    feed.send(&open(42, 1, "EURUSD", "buy", 10_000, 1.08), 2);
    feed.send(&open(42, 2, "USDJPY", "sell", 5_000, 150.0), 3);
    let prices = feed.send(&tick("EURUSD", 1.0825, 1.0826), 4);
    assert_eq!(
        ephemeral(&prices, "prices:forex", "price")[0],
        json!({"type":"price","channel":"prices:forex","symbol":"EURUSD","bid":1.0825,"ask":1.0826,"digits":5,"ts":4})
    );
    feed.send(&tick("USDJPY", 149.5, 149.51), 5);

    let effects = feed.engine.flush_live(1_000);
    assert_envelopes(&effects);
    let updates = ephemeral(&effects, "portfolio:42", "position_update");
    assert_eq!(
        updates,
        vec![
            json!({"type":"position_update","channel":"portfolio:42","id":1,"profit":250.0,"price":1.0825}),
            json!({"type":"position_update","channel":"portfolio:42","id":2,"profit":163.87,"price":149.51}),
        ]
    );
    let account = &ephemeral(&effects, "portfolio:42", "account_update")[0];
    assert_eq!(
        *account,
        json!({"type":"account_update","channel":"portfolio:42","equity":10413.87,"margin":1580.0,"margin_free":8833.87,"margin_level":659.11})
    );

    // The refreshed snapshot agrees with the deltas.
    let snapshot = effects.iter().find_map(|e| match e {
        Effect::Snapshot { channel, message } if channel == "portfolio:42" => {
            Some(serde_json::from_slice::<serde_json::Value>(message).unwrap())
        }
        _ => None,
    });
    let snapshot = snapshot.expect("a portfolio snapshot");
    assert_eq!(snapshot["type"], "portfolio_full");
    assert_eq!(snapshot["account"]["equity"], 10413.87);
    assert_eq!(snapshot["account"]["name"], "Ada");
    assert_eq!(snapshot["positions"][1]["profit"], 163.87);
    assert_eq!(snapshot["positions"][0]["volume"], 1.0);
}

#[test]
fn balance_deal_moves_balance_and_equity() {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada"), 1);
    let effects = feed.send(
        r#""type":"deal","login":42,"deal":500,"action":"balance","profit":250.5"#,
        2,
    );
    let update = &durable(&effects, "portfolio:42", "account_update")[0];
    assert_eq!(update["balance"], 10250.5);
    assert_eq!(update["equity"], 10250.5);
    assert_eq!(update["margin_level"], serde_json::Value::Null);
    assert_eq!(
        (update["kind"].as_str(), update["amount"].as_f64()),
        (Some("balance"), Some(250.5))
    );
    let Effect::Durable {
        snapshot: Some(snapshot),
        ..
    } = &effects[0]
    else {
        panic!("durable with snapshot")
    };
    let snapshot: serde_json::Value = serde_json::from_slice(snapshot).unwrap();
    assert_eq!(snapshot["account"]["balance"], 10250.5);
}
