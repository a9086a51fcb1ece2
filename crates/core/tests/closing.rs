//! The account figures sent while a position closes count only what is still open.
//!
//! ```text
//! Account: USD, balance 10,000.00, leverage 1:100.
//! #1 buy  1.00 lot EURUSD @ 1.08000; tick 1.08250 / 1.08260 -> profit 250.00, margin 1,080.00
//! #2 sell 0.50 lot GBPUSD @ 1.27000; tick 1.26500 / 1.26520 -> profit 240.00, margin   635.00
//! closing deal for #1, profit 249.50 -> balance 10,249.50
//!   equity = 10,249.50 + 240.00 (#2 only)  = 10,489.50
//!   margin = 635.00 (#2 only); free 9,854.50; level 10,489.50 / 635 × 100 = 1,651.89 %
//! ```

mod common;

use common::*;
use serde_json::{Value, json};
use tradecast_core::Effect;

/// The `portfolio_full` carried by the first durable effect of `kind` on `channel`.
fn snapshot_of(effects: &[Effect], channel: &str, kind: &str) -> Value {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Durable {
                channel: c,
                message,
                snapshot: Some(snapshot),
            } if c == channel && json(e)["type"] == kind => {
                let _ = message;
                Some(serde_json::from_slice(snapshot).unwrap())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {kind} on {channel}"))
}

/// equity == balance + credit + `floating` (the remaining open positions' profit and
/// swap), to the cent, and the margin figures follow from it.
fn assert_account(update: &Value, balance: f64, floating: f64, margin: f64) {
    let cents = |x: f64| (x * 100.0).round() / 100.0;
    let equity = cents(balance + update["credit"].as_f64().unwrap() + floating);
    assert_eq!(update["balance"], json!(balance), "{update}");
    assert_eq!(update["equity"], json!(equity), "{update}");
    assert_eq!(update["margin"], json!(margin), "{update}");
    assert_eq!(
        update["margin_free"],
        json!(cents(equity - margin)),
        "{update}"
    );
    assert_eq!(
        update["margin_level"],
        json!(cents(equity / margin * 100.0)),
        "{update}"
    );
}

/// Two open positions with floating profit, everything pushed.
fn two_positions() -> Feed {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada"), 0);
    feed.send(&open(42, 1, "EURUSD", "buy", 10_000, 1.08), 1);
    feed.send(&open(42, 2, "GBPUSD", "sell", 5_000, 1.27), 2);
    feed.send(&tick("EURUSD", 1.0825, 1.0826), 3);
    feed.send(&tick("GBPUSD", 1.265, 1.2652), 4);
    let effects = feed.engine.flush_live(1_000);
    let account = &ephemeral(&effects, "portfolio:42", "account_update")[0];
    assert_eq!(account["equity"], 10_490.0); // 10,000 + 250 + 240
    assert_eq!(account["margin"], 1_715.0); // 1,080 + 635
    feed
}

#[test]
fn the_account_update_of_a_closing_deal_leaves_the_closed_position_out() {
    let mut feed = two_positions();
    let effects = feed.send(
        r#""type":"deal","login":42,"deal":9001,"position_id":1,"action":"sell","entry":"out","symbol":"EURUSD","vol":10000,"price":1.08245,"profit":249.5"#,
        5,
    );
    let update = &durable(&effects, "portfolio:42", "account_update")[0];
    assert_eq!(
        (update["kind"].as_str(), update["amount"].as_f64()),
        (Some("sell"), Some(249.5))
    );
    // Not 10,739.50 (the closed position's 250.00 counted twice) nor margin 1,715.
    assert_account(update, 10_249.5, 240.0, 635.0);
    // The snapshot stored with it agrees.
    let full = snapshot_of(&effects, "portfolio:42", "account_update");
    assert_eq!(full["account"]["equity"], update["equity"]);
    assert_eq!(full["account"]["margin"], update["margin"]);

    // Nothing for the next live push to correct.
    let live = feed.engine.flush_live(2_000);
    assert!(
        ephemeral(&live, "portfolio:42", "account_update").is_empty(),
        "{:?}",
        ephemeral(&live, "portfolio:42", "account_update")
    );

    // The close itself changes neither figure.
    let closed = feed.send(
        r#""type":"position","op":"close","login":42,"position_id":1"#,
        6,
    );
    assert_eq!(
        durable(&closed, "portfolio:42", "position_closed")[0]["profit"],
        249.5
    );
    let full = snapshot_of(&closed, "portfolio:42", "position_closed");
    assert_eq!(full["account"]["equity"], 10_489.5);
    assert_eq!(full["account"]["margin"], 635.0);
    assert_eq!(full["positions"].as_array().unwrap().len(), 1);
}

#[test]
fn a_partial_closing_deal_counts_only_the_remaining_volume() {
    let mut feed = two_positions();
    // Close 0.60 of #1's 1.00 lot: 0.40 lot stays open, worth 0.4 × 250 = 100.00,
    // with margin 0.4 × 1,080 = 432.00.
    let effects = feed.send(
        r#""type":"deal","login":42,"deal":9001,"position_id":1,"action":"sell","entry":"out","symbol":"EURUSD","vol":6000,"price":1.0825,"profit":150"#,
        5,
    );
    let update = &durable(&effects, "portfolio:42", "account_update")[0];
    assert_account(update, 10_150.0, 100.0 + 240.0, 432.0 + 635.0);
    let live = feed.engine.flush_live(2_000);
    assert!(ephemeral(&live, "portfolio:42", "account_update").is_empty());

    // The server then reports the remaining volume: same figures.
    let changed = feed.send(
        r#""type":"position","op":"update","login":42,"position_id":1,"vol":4000"#,
        6,
    );
    assert_eq!(
        durable(&changed, "portfolio:42", "position_update")[0]["volume"],
        0.4
    );
    let full = snapshot_of(&changed, "portfolio:42", "position_update");
    assert_eq!(full["account"]["equity"], update["equity"]);
    assert_eq!(full["account"]["margin"], update["margin"]);
    assert!(
        ephemeral(
            &feed.engine.flush_live(3_000),
            "portfolio:42",
            "account_update"
        )
        .is_empty()
    );

    // Two partial deals before the server's update add up.
    let effects = feed.send(
        r#""type":"deal","login":42,"deal":9002,"position_id":1,"action":"sell","entry":"out","symbol":"EURUSD","vol":1000,"price":1.0825,"profit":25"#,
        7,
    );
    let update = &durable(&effects, "portfolio:42", "account_update")[0];
    assert_account(update, 10_175.0, 75.0 + 240.0, 324.0 + 635.0);
    let effects = feed.send(
        r#""type":"deal","login":42,"deal":9003,"position_id":1,"action":"sell","entry":"out","symbol":"EURUSD","vol":3000,"price":1.0825,"profit":75"#,
        8,
    );
    let update = &durable(&effects, "portfolio:42", "account_update")[0];
    assert_account(update, 10_250.0, 240.0, 635.0);
    let closed = feed.send(
        r#""type":"position","op":"close","login":42,"position_id":1"#,
        9,
    );
    assert_eq!(
        durable(&closed, "portfolio:42", "position_closed")[0]["close_deal"],
        9003
    );
}

#[test]
fn a_close_without_a_deal_leaves_the_position_out() {
    let mut feed = two_positions();
    let closed = feed.send(
        r#""type":"position","op":"close","login":42,"position_id":1"#,
        5,
    );
    assert_eq!(
        durable(&closed, "portfolio:42", "position_closed")[0]["profit"],
        250.0
    );
    let full = snapshot_of(&closed, "portfolio:42", "position_closed");
    // No deal: the balance has not moved yet, and #1 no longer floats.
    assert_eq!(full["account"]["balance"], 10_000.0);
    assert_eq!(full["account"]["equity"], 10_240.0);
    assert_eq!(full["account"]["margin"], 635.0);
    // The late deal then realises it, and the live push agrees with the durable one.
    let effects = feed.send(
        r#""type":"deal","login":42,"deal":9001,"position_id":1,"action":"sell","entry":"out","symbol":"EURUSD","vol":10000,"price":1.0825,"profit":250"#,
        6,
    );
    let update = &durable(&effects, "portfolio:42", "account_update")[0];
    assert_account(update, 10_250.0, 240.0, 635.0);
    let live = feed.engine.flush_live(2_000);
    assert!(ephemeral(&live, "portfolio:42", "account_update").is_empty());
}
