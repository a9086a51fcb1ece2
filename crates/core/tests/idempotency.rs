//! Replays never produce a second position_closed or commission.

mod common;

use common::*;
use tradecast_core::Rejected;

#[test]
fn a_replayed_event_is_a_duplicate() {
    let mut feed = Feed::new();
    feed.try_send(5, &usd_account(42, "Ada"), 0).unwrap();
    assert_eq!(
        feed.try_send(5, &usd_account(42, "Ada"), 0),
        Err(Rejected::Duplicate)
    );
    // The key is (src, seq), whatever the content.
    assert_eq!(
        feed.try_send(5, &tick("EURUSD", 1.1, 1.1), 0),
        Err(Rejected::Duplicate)
    );
}

#[test]
fn out_of_order_sequence_numbers_are_not_duplicates() {
    let mut feed = Feed::new();
    feed.try_send(1, &usd_account(42, "Ada"), 0).unwrap();
    feed.try_send(3, &tick("EURUSD", 1.1, 1.1), 0).unwrap();
    // Seq 2 was read from another partition later: still new, but only once.
    feed.try_send(2, &tick("USDJPY", 150.0, 150.0), 0).unwrap();
    assert_eq!(
        feed.try_send(2, &tick("USDJPY", 150.0, 150.0), 0),
        Err(Rejected::Duplicate)
    );
    assert_eq!(
        feed.try_send(3, &tick("EURUSD", 1.1, 1.1), 0),
        Err(Rejected::Duplicate)
    );
}

#[test]
fn a_second_close_says_nothing() {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada"), 0);
    feed.send(&open(42, 7, "EURUSD", "buy", 10_000, 1.08), 0);
    let close = r#""type":"position","op":"close","login":42,"position_id":7,"close_deal":9001"#;
    let first = feed.send(close, 1);
    assert_eq!(durable(&first, "portfolio:42", "position_closed").len(), 1);
    // The same close again under a new seq (a plugin resync): no second message.
    assert!(feed.send(close, 2).is_empty());
}

#[test]
fn the_same_deal_ticket_pays_commission_once() {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada"), 0);
    feed.send(r#""type":"ib_link","op":"set","login":42,"ib":300"#, 0);
    let deal = r#""type":"deal","login":42,"deal":9001,"action":"sell","entry":"out","symbol":"EURUSD","vol":10000,"profit":12.5"#;
    let first = feed.send(deal, 1);
    assert_eq!(durable(&first, "commissions:300", "commission").len(), 1);
    assert_eq!(
        durable(&first, "portfolio:42", "account_update")[0]["balance"],
        10012.5
    );
    // Same ticket, different seq: no commission and no second credit of the profit.
    assert!(feed.send(deal, 2).is_empty());
}

#[test]
fn another_logins_position_is_invalid() {
    let mut feed = Feed::new();
    feed.send(&open(42, 7, "EURUSD", "buy", 10_000, 1.08), 0);
    let close = r#""type":"position","op":"close","login":43,"position_id":7"#;
    let Err(Rejected::Invalid(reason)) = feed.try_send(10, close, 1) else {
        panic!("should be invalid")
    };
    assert_eq!(reason, "position 7 belongs to login 42, not 43");
    // The refused event changed nothing: the real owner can still close it.
    let close = r#""type":"position","op":"close","login":42,"position_id":7"#;
    assert_eq!(
        durable(
            &feed.try_send(11, close, 2).unwrap(),
            "portfolio:42",
            "position_closed"
        )
        .len(),
        1
    );
}

#[test]
fn state_survives_a_json_round_trip() {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada"), 0);
    feed.send(&open(42, 7, "EURUSD", "buy", 10_000, 1.08), 0);
    let saved = serde_json::to_string(&feed.engine).unwrap();
    let restored: tradecast_core::Engine = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored, feed.engine);
    feed.engine = restored;
    assert_eq!(
        feed.try_send(feed.seq, &usd_account(42, "Ada"), 0),
        Err(Rejected::Duplicate)
    );
}
