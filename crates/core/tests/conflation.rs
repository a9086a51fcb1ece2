//! Live figures are conflated: at most one push per account per live interval, and
//! exposure at most once per exposure interval.

mod common;

use common::*;
use tradecast_core::Effect;

#[test]
fn a_burst_of_ticks_yields_few_position_updates() {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada"), 0);
    feed.send(&open(42, 1, "EURUSD", "buy", 10_000, 1.08), 0);
    feed.engine.flush_live(0);

    // 100 ticks over 247.5 ms, each followed by the pipeline's flush.
    let mut updates = 0;
    let mut last_profit = None;
    for i in 0..100u32 {
        let now = 1_000 + u64::from(i) * 5 / 2;
        let bid = 1.081 + f64::from(i) * 0.00001;
        feed.send(&tick("EURUSD", bid, bid + 0.0001), now);
        let effects = feed.engine.flush_live(now);
        let pushed = ephemeral(&effects, "portfolio:42", "position_update");
        updates += pushed.len();
        if let Some(last) = pushed.last() {
            last_profit = last["profit"].as_f64();
        }
    }
    assert!(updates < 100, "{updates} position_update for 100 ticks");
    assert_eq!(updates, 1, "all 100 ticks fall inside one 250 ms window");

    // After the interval the latest price is pushed, not an intermediate one.
    let effects = feed.engine.flush_live(1_250);
    let pushed = ephemeral(&effects, "portfolio:42", "position_update");
    assert_eq!(pushed.len(), 1);
    assert_ne!(pushed[0]["profit"].as_f64(), last_profit);
    assert_eq!(pushed[0]["price"], 1.08199);
    assert_eq!(pushed[0]["profit"], 199.0); // (1.08199 − 1.08) × 100,000

    // Nothing moved since: nothing to push.
    assert!(
        feed.engine
            .flush_live(2_000)
            .iter()
            .all(|e| !matches!(e, Effect::Ephemeral { .. } if e.channel() == "portfolio:42"))
    );
}

#[test]
fn exposure_is_paced_and_retained() {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada"), 0);
    feed.send(&usd_account(43, "Bob"), 0);
    feed.send(&open(42, 1, "EURUSD", "buy", 20_000, 1.08), 0);
    feed.send(&open(43, 2, "EURUSD", "sell", 5_000, 1.08), 0);
    feed.send(&tick("EURUSD", 1.0825, 1.0826), 0);

    let effects = feed.engine.flush_live(0);
    let table = &ephemeral(&effects, "exposure", "exposure")[0];
    let row = &table["symbols"][0];
    assert_eq!(row["symbol"], "EURUSD");
    assert_eq!(
        (
            row["buy_lots"].as_f64(),
            row["sell_lots"].as_f64(),
            row["net_lots"].as_f64()
        ),
        (Some(2.0), Some(0.5), Some(1.5))
    );
    assert_eq!(row["notional"], 150_000.0);
    assert_eq!(row["notional_usd"], 162_382.5); // 150,000 EUR × mid 1.08255
    assert_eq!(row["positions"], 2);
    assert_eq!(row["profit"], 370.0); // 2 × 250 − 0.5 × 260
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Ephemeral { key, retain: true, .. } if key == "exposure"))
    );

    // A tick 500 ms later waits for the 1 s exposure interval.
    feed.send(&tick("EURUSD", 1.083, 1.0831), 500);
    assert!(ephemeral(&feed.engine.flush_live(500), "exposure", "exposure").is_empty());
    assert_eq!(
        ephemeral(&feed.engine.flush_live(1_000), "exposure", "exposure").len(),
        1
    );
}
