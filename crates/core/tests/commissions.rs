//! IB commissions on closing deals: from the tree and plan, or from the deal.

mod common;

use common::*;

/// IB chain 100 ← 200 ← 300 ← client 42.
fn three_level_chain() -> Feed {
    let mut feed = Feed::new();
    feed.send(&usd_account(42, "Ada Lovelace"), 0);
    feed.send(r#""type":"ib_link","op":"set","login":200,"ib":100"#, 0);
    feed.send(r#""type":"ib_link","op":"set","login":300,"ib":200"#, 0);
    feed.send(r#""type":"ib_link","op":"set","login":42,"ib":300"#, 0);
    feed
}

fn closing_deal(deal: u64, vol: u64, extra: &str) -> String {
    format!(
        r#""type":"deal","login":42,"deal":{deal},"position_id":7,"action":"sell","entry":"out","symbol":"EURUSD","vol":{vol},"price":1.1,"profit":0{extra}"#
    )
}

#[test]
fn plan_pays_every_ancestor_by_level() {
    let mut feed = three_level_chain();
    let effects = feed.send(&closing_deal(9001, 15_000, ""), 10);
    assert_envelopes(&effects);
    let direct = &durable(&effects, "commissions:300", "commission")[0];
    assert_eq!(direct["client"], 42);
    assert_eq!(direct["client_name"], "Ada Lovelace");
    assert_eq!(
        (direct["symbol"].as_str(), direct["volume"].as_f64()),
        (Some("EURUSD"), Some(1.5))
    );
    assert_eq!(
        (
            direct["amount"].as_f64(),
            direct["level"].as_u64(),
            direct["deal"].as_u64()
        ),
        (Some(7.5), Some(1), Some(9001))
    );
    let second = &durable(&effects, "commissions:200", "commission")[0];
    assert_eq!(
        (second["amount"].as_f64(), second["level"].as_u64()),
        (Some(1.5), Some(2))
    );
    let third = &durable(&effects, "commissions:100", "commission")[0];
    assert_eq!(
        (third["amount"].as_f64(), third["level"].as_u64()),
        (Some(0.75), Some(3))
    );

    // The snapshot of the IB's channel accumulates.
    feed.send(&closing_deal(9002, 10_000, ""), 11);
    let effects = feed.send(&closing_deal(9003, 10_000, ""), 12);
    let tradecast_core::Effect::Durable {
        snapshot: Some(snapshot),
        ..
    } = &effects[0]
    else {
        panic!("durable")
    };
    let full: serde_json::Value = serde_json::from_slice(snapshot).unwrap();
    assert_eq!(full["type"], "commissions_full");
    assert_eq!(full["channel"], "commissions:300");
    assert_eq!(
        (full["total"].as_f64(), full["count"].as_u64()),
        (Some(17.5), Some(3))
    );
    assert_eq!(full["by_level"]["1"], 17.5);
    assert_eq!(full["recent"].as_array().unwrap().len(), 3);
}

#[test]
fn deal_amounts_override_the_plan() {
    let mut feed = three_level_chain();
    let payouts = r#","ib_commissions":[{"ib":300,"level":1,"amount":9.6},{"ib":200,"level":2,"amount":2.4},{"ib":100,"level":3,"amount":0.6}]"#;
    let effects = feed.send(&closing_deal(9001, 15_000, payouts), 10);
    let amounts: Vec<_> = ["commissions:300", "commissions:200", "commissions:100"]
        .iter()
        .map(|c| {
            durable(&effects, c, "commission")[0]["amount"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(amounts, vec![9.6, 2.4, 0.6]);
}

#[test]
fn opening_deals_pay_nothing_and_large_deals_alert() {
    let mut feed = three_level_chain();
    let open = r#""type":"deal","login":42,"deal":1,"position_id":7,"action":"buy","entry":"in","symbol":"EURUSD","vol":600000"#;
    let effects = feed.send(open, 10);
    assert!(
        effects
            .iter()
            .all(|e| !e.channel().starts_with("commissions:"))
    );
    let alert = &durable(&effects, "alerts", "alert")[0];
    assert_eq!(alert["kind"], "large_deal");
    assert_eq!(
        (
            alert["login"].as_u64(),
            alert["volume"].as_f64(),
            alert["deal"].as_u64()
        ),
        (Some(42), Some(60.0), Some(1))
    );
}
