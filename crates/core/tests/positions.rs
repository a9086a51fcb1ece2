//! Position lifecycle on `portfolio:{login}`: opened, changed fields only, closed.

mod common;

use common::*;
use serde_json::json;

#[test]
fn open_update_close() {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada"), 0);
    feed.send(&tick("EURUSD", 1.0825, 1.0826), 0);
    let opened = feed.send(
        r#""type":"position","op":"open","login":42,"position_id":7,"symbol":"EURUSD","side":"buy","vol":15000,"price_open":1.08,"sl":1.07,"tp":1.1,"swap":0,"time_create":1717430400124"#,
        5,
    );
    assert_envelopes(&opened);
    assert_eq!(
        durable(&opened, "portfolio:42", "position_opened")[0],
        json!({"type":"position_opened","channel":"portfolio:42","id":7,"symbol":"EURUSD","side":"buy","volume":1.5,
               "price_open":1.08,"sl":1.07,"tp":1.1,"swap":0.0,"profit":375.0,"price":1.0825,"time":1717430400124u64})
    );

    // Only the fields that changed, plus the id.
    let update = r#""type":"position","op":"update","login":42,"position_id":7,"sl":1.075,"tp":1.1,"vol":15000"#;
    let changed = feed.send(update, 6);
    assert_eq!(
        durable(&changed, "portfolio:42", "position_update"),
        vec![json!({"type":"position_update","channel":"portfolio:42","id":7,"sl":1.075})]
    );
    assert!(
        feed.send(update, 7).is_empty(),
        "nothing changed the second time"
    );
    let partial = feed.send(
        r#""type":"position","op":"update","login":42,"position_id":7,"vol":5000,"swap":-1.2"#,
        8,
    );
    assert_eq!(
        durable(&partial, "portfolio:42", "position_update"),
        vec![
            json!({"type":"position_update","channel":"portfolio:42","id":7,"volume":0.5,"swap":-1.2})
        ]
    );

    // The closing deal's profit is the final profit.
    feed.send(r#""type":"deal","login":42,"deal":9001,"position_id":7,"action":"sell","entry":"out","symbol":"EURUSD","vol":5000,"profit":123.45"#, 9);
    let closed = feed.send(
        r#""type":"position","op":"close","login":42,"position_id":7"#,
        10,
    );
    assert_eq!(
        durable(&closed, "portfolio:42", "position_closed"),
        vec![
            json!({"type":"position_closed","channel":"portfolio:42","id":7,"symbol":"EURUSD","side":"buy","volume":0.5,"profit":123.45,"close_deal":9001})
        ]
    );
    let tradecast_core::Effect::Durable {
        snapshot: Some(snapshot),
        ..
    } = &closed[0]
    else {
        panic!("durable")
    };
    let full: serde_json::Value = serde_json::from_slice(snapshot).unwrap();
    assert_eq!(full["positions"], json!([]));
    // 10,000 + 123.45 realised: the swap went with the position.
    assert_eq!(full["account"]["balance"], 10123.45);
    assert_eq!(full["account"]["equity"], 10123.45);
}

#[test]
fn without_a_deal_the_close_reports_the_last_mark() {
    let mut feed = Feed::new();
    feed.send(&open(42, 7, "USDJPY", "sell", 10_000, 150.0), 0);
    feed.send(&tick("USDJPY", 149.0, 149.0), 0);
    let closed = feed.send(
        r#""type":"position","op":"close","login":42,"position_id":7"#,
        1,
    );
    // (150 − 149) × 100,000 JPY / 149 = 671.14 USD
    assert_eq!(
        durable(&closed, "portfolio:42", "position_closed")[0]["profit"],
        671.14
    );
}

#[test]
fn orders_and_account_alerts() {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada"), 0);
    let add = r#""type":"order","op":"add","login":42,"order":5,"symbol":"EURUSD","order_type":"buy_limit","state":"placed","vol_initial":15000,"vol_current":15000,"price_order":1.08"#;
    let effects = feed.send(add, 1);
    let update = &durable(&effects, "orders:42", "order_update")[0];
    assert_eq!(
        (
            update["op"].as_str(),
            update["id"].as_u64(),
            update["volume"].as_f64()
        ),
        (Some("add"), Some(5), Some(1.5))
    );
    assert_eq!(update["order_type"], "buy_limit");
    assert!(feed.send(add, 2).is_empty(), "a replayed add says nothing");
    let deleted = feed.send(
        r#""type":"order","op":"delete","login":42,"order":5,"state":"filled""#,
        3,
    );
    assert_eq!(
        durable(&deleted, "orders:42", "order_update")[0]["state"],
        "filled"
    );
    let tradecast_core::Effect::Durable {
        snapshot: Some(snapshot),
        ..
    } = &deleted[0]
    else {
        panic!("durable")
    };
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(snapshot).unwrap()["orders"],
        json!([])
    );

    let effects = feed.send(r#""type":"margin_call","op":"enter","login":42,"equity":310.2,"margin":324.5,"margin_level":95.6"#, 4);
    let expected = json!({"kind":"margin_call","op":"enter","login":42,"equity":310.2,"margin":324.5,"margin_level":95.6,"ts":4});
    for channel in ["portfolio:42", "alerts"] {
        let mut alert = durable(&effects, channel, "alert")[0].clone();
        alert
            .as_object_mut()
            .unwrap()
            .retain(|k, _| k != "type" && k != "channel");
        assert_eq!(alert, expected, "on {channel}");
    }
}
