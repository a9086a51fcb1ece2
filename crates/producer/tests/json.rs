//! The JSON the producer writes is the ingest contract of `docs/events.md`: for every
//! example event on that page, the same MT5 record published through this library
//! gives an event that tradecast's own parser (`tradecast_protocol::ingest::parse`)
//! reads back as the example.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use tradecast_producer::event::{Envelope, Event};
use tradecast_producer::*;
use tradecast_protocol::ingest;

/// The event examples of docs/events.md (```json blocks holding a `"v":1` event),
/// by (`src`, `seq`).
fn doc_examples() -> HashMap<(String, u64), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut examples = HashMap::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match (&mut block, line.trim()) {
            (None, "```json") => block = Some(String::new()),
            (Some(b), "```") => {
                if let Ok(v) = serde_json::from_str::<Value>(b)
                    && v["v"] == 1
                {
                    let key = (
                        v["src"].as_str().unwrap().to_owned(),
                        v["seq"].as_u64().unwrap(),
                    );
                    examples.insert(key, b.clone());
                }
                block = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    examples
}

/// Serialise `event` with the example's envelope (`ts` also as the publish time,
/// for records whose operation carries no time of its own).
fn produce(event: &Event, example: &Value) -> String {
    let mut out = String::new();
    event.write_json(
        &Envelope {
            src: example["src"].as_str().unwrap(),
            seq: example["seq"].as_u64().unwrap(),
            emit_ms: example["ts"].as_u64().unwrap(),
            tz_offset_minutes: 0,
        },
        &mut out,
    );
    out
}

/// Every non-null value of `doc` is in `ours` (numbers compared as f64).
fn contains(ours: &Value, doc: &Value, path: &str) -> Result<(), String> {
    match (ours, doc) {
        (_, Value::Null) => Ok(()),
        (Value::Object(o), Value::Object(d)) => d.iter().try_for_each(|(k, v)| {
            contains(o.get(k).unwrap_or(&Value::Null), v, &format!("{path}.{k}"))
        }),
        (Value::Array(o), Value::Array(d)) if o.len() == d.len() => o
            .iter()
            .zip(d)
            .enumerate()
            .try_for_each(|(i, (o, d))| contains(o, d, &format!("{path}[{i}]"))),
        (Value::Number(o), Value::Number(d)) if o.as_f64() == d.as_f64() => Ok(()),
        (o, d) if o == d => Ok(()),
        (o, d) => Err(format!("{path}: ours {o}, docs {d}")),
    }
}

/// Check one example: ours parses, and reads back as the docs' event (exactly, or
/// as a superset for updates, which carry the whole MT5 record).
fn check(
    examples: &HashMap<(String, u64), String>,
    src: &str,
    seq: u64,
    event: Event,
    exact: bool,
) {
    let doc_text = examples
        .get(&(src.to_owned(), seq))
        .unwrap_or_else(|| panic!("docs/events.md has no example {src} #{seq}"));
    let doc_value: Value = serde_json::from_str(doc_text).unwrap();
    let ours_text = produce(&event, &doc_value);
    let ours = ingest::parse(ours_text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {ours_text}"));
    let doc = ingest::parse(doc_text.as_bytes()).unwrap();
    assert_eq!(
        (&ours.src, ours.seq, ours.ts),
        (&doc.src, doc.seq, doc.ts),
        "{ours_text}"
    );
    let ours_body = serde_json::to_value(&ours.body).unwrap();
    let doc_body = serde_json::to_value(&doc.body).unwrap();
    if exact {
        assert_eq!(ours_body, doc_body, "\nours: {ours_text}\ndocs: {doc_text}");
    } else {
        contains(&ours_body, &doc_body, "body")
            .unwrap_or_else(|e| panic!("{e}\nours: {ours_text}\ndocs: {doc_text}"));
    }
    // Integers are written as integers.
    let raw: Value = serde_json::from_str(&ours_text).unwrap();
    for key in [
        "seq",
        "ts",
        "emit_ts",
        "vol",
        "login",
        "deal",
        "position_id",
        "order",
    ] {
        if let Some(v) = raw.get(key) {
            assert!(v.is_u64(), "{key} = {v} in {ours_text}");
        }
    }
}

const T: i64 = 1_717_430_400_000;

#[test]
fn every_example_of_the_ingest_docs_comes_out_of_the_matching_mt5_record() {
    let ex = doc_examples();

    // deal: a closing trade with its IB chain, and a deposit.
    let mut deal = Deal {
        deal: 77001234,
        order: 88004400,
        position_id: 88004300,
        login: 500123,
        action: TC_DEAL_SELL,
        entry: TC_ENTRY_OUT,
        digits: 5,
        time_msc: T + 100_123,
        volume: 150000,
        price: 1.08420,
        price_position: 1.08175,
        contract_size: 100000.0,
        profit: 367.50,
        commission: -10.50,
        storage: -2.10,
        rate_profit: 1.0,
        market_bid: 1.08420,
        market_ask: 1.08428,
        ..Deal::default()
    };
    set_str(&mut deal.symbol, "EURUSD");
    set_str(&mut deal.group, "real\\std-usd");
    let chain = [
        IbCommission {
            ib: 400010,
            level: 1,
            amount: 9.6,
        },
        IbCommission {
            ib: 400002,
            level: 2,
            amount: 2.4,
        },
        IbCommission {
            ib: 400001,
            level: 3,
            amount: 0.6,
        },
    ];
    check(
        &ex,
        "mt5-live-01",
        108,
        Event::deal(&deal, &chain).unwrap(),
        true,
    );
    let mut deposit = Deal {
        deal: 77001300,
        login: 500123,
        action: TC_DEAL_BALANCE,
        profit: 500.0,
        time_msc: T + 200_000,
        ..Deal::default()
    };
    set_str(&mut deposit.comment, "deposit");
    check(
        &ex,
        "mt5-live-01",
        110,
        Event::deal(&deposit, &[]).unwrap(),
        true,
    );

    // position: open, update, close.
    let mut p = Position {
        position_id: 88004300,
        login: 500123,
        op: TC_POSITION_OPEN,
        action: TC_POSITION_BUY,
        reason: 17, // web
        digits: 5,
        volume: 150000,
        price_open: 1.08175,
        price_current: 1.08167,
        price_sl: 1.079,
        price_tp: 1.09,
        profit: -120.0,
        contract_size: 100000.0,
        rate_profit: 1.0,
        rate_margin: 1.08175,
        time_create_msc: T + 124,
        ..Position::default()
    };
    set_str(&mut p.symbol, "EURUSD");
    set_str(&mut p.group, "real\\std-usd");
    check(&ex, "mt5-live-01", 102, Event::position(&p).unwrap(), true);
    p.op = TC_POSITION_UPDATE;
    p.price_sl = 1.0795;
    p.time_update_msc = T + 60_000;
    check(&ex, "mt5-live-01", 104, Event::position(&p).unwrap(), false);
    p.op = TC_POSITION_CLOSE;
    p.close_deal = 77001234;
    p.profit = 367.5;
    p.time_update_msc = T + 100_124;
    check(&ex, "mt5-live-01", 109, Event::position(&p).unwrap(), true);

    // order: add, update, delete.
    let mut o = Order {
        order: 88004321,
        login: 500123,
        op: TC_ORDER_ADD,
        order_type: 2, // buy_limit
        state: 1,      // placed
        type_fill: 2,  // return
        reason: 17,
        digits: 5,
        volume_initial: 150000,
        volume_current: 150000,
        price_order: 1.08175,
        time_setup_msc: T + 120,
        ..Order::default()
    };
    set_str(&mut o.symbol, "EURUSD");
    check(&ex, "mt5-live-01", 99, Event::order(&o).unwrap(), true);
    o.op = TC_ORDER_UPDATE;
    o.price_sl = 1.079;
    o.price_tp = 1.09;
    check(&ex, "mt5-live-01", 100, Event::order(&o).unwrap(), false);
    o.op = TC_ORDER_DELETE;
    o.state = 4; // filled
    o.volume_current = 0;
    o.position_id = 88004300;
    o.time_done_msc = T + 124;
    check(&ex, "mt5-live-01", 103, Event::order(&o).unwrap(), false);

    // account.
    let mut a = Account {
        login: 500123,
        leverage: 500,
        currency_digits: 2,
        balance: 10010.50,
        credit: 0.0,
        margin: 0.0,
        margin_free: 10010.50,
        margin_level: f64::NAN,
        equity: 10010.50,
        time_msc: T + 100,
        ..Account::default()
    };
    set_str(&mut a.name, "Ada Lovelace");
    set_str(&mut a.currency, "USD");
    set_str(&mut a.group, "real\\std-usd");
    check(&ex, "mt5-live-01", 98, Event::account(&a).unwrap(), true);

    // margin call and stop out.
    let mut r = Risk {
        login: 500123,
        op: TC_RISK_ENTER,
        equity: 310.2,
        margin: 324.5,
        margin_level: 95.6,
        threshold: 100.0,
        time_msc: T + 70_000,
        ..Risk::default()
    };
    set_str(&mut r.group, "real\\std-usd");
    check(
        &ex,
        "mt5-live-01",
        105,
        Event::margin_call(&r).unwrap(),
        true,
    );
    let r = Risk {
        equity: 160.0,
        margin_level: 49.3,
        threshold: 50.0,
        time_msc: T + 90_000,
        group: [0; 64],
        ..r
    };
    check(&ex, "mt5-live-01", 107, Event::stop_out(&r).unwrap(), true);

    // tick.
    let mut t = Tick {
        datetime_msc: T + 110,
        bid: 1.08167,
        ask: 1.08175,
        digits: 5,
        ..Tick::default()
    };
    set_str(&mut t.symbol, "EURUSD");
    check(
        &ex,
        "mt5-live-01/ticks",
        5550001,
        Event::tick(&t).unwrap(),
        true,
    );

    // ib_link: set, remove.
    let l = IbLink {
        login: 500123,
        ib: 400010,
        op: TC_IB_LINK_SET,
        time_msc: T - 400_000,
    };
    check(&ex, "crm", 42, Event::ib_link(&l).unwrap(), true);
    let l = IbLink {
        op: TC_IB_LINK_REMOVE,
        time_msc: T + 300_000,
        ..l
    };
    check(&ex, "crm", 43, Event::ib_link(&l).unwrap(), true);

    // symbol.
    let mut s = Symbol {
        digits: 5,
        contract_size: 100000.0,
        time_msc: T - 400_000,
        ..Symbol::default()
    };
    set_str(&mut s.symbol, "EURUSD");
    set_str(&mut s.group, "forex");
    set_str(&mut s.base_ccy, "EUR");
    set_str(&mut s.profit_ccy, "USD");
    check(&ex, "mt5-live-01", 1, Event::symbol(&s).unwrap(), true);
}

#[test]
fn absent_values_are_left_out_and_times_become_utc() {
    let mut a = Account {
        login: 7,
        balance: f64::NAN,
        credit: f64::NAN,
        margin: f64::NAN,
        margin_free: f64::NAN,
        margin_level: f64::NAN,
        equity: f64::NAN,
        time_msc: T + 3 * 3_600_000, // server at UTC+3
        ..Account::default()
    };
    set_str(&mut a.name, "Grace \"Amazing\" Hopper\\");
    let mut out = String::new();
    Event::account(&a).unwrap().write_json(
        &Envelope {
            src: "s",
            seq: 1,
            emit_ms: 5,
            tz_offset_minutes: 180,
        },
        &mut out,
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"v":1,"type":"account","src":"s","seq":1,"ts":T,"emit_ts":5,
            "login":7,"name":"Grace \"Amazing\" Hopper\\"})
    );
    ingest::parse(out.as_bytes()).unwrap();
}

#[test]
fn every_record_type_is_accepted_by_the_gateway_parser_when_minimal() {
    // The smallest valid record of each type, as a plugin might fill it.
    let mut deal = Deal {
        login: 1,
        deal: 2,
        volume: 10000,
        ..Deal::default()
    };
    set_str(&mut deal.symbol, "XAUUSD");
    let mut position = Position {
        login: 1,
        position_id: 3,
        volume: 10000,
        price_open: 2345.1,
        ..Position::default()
    };
    set_str(&mut position.symbol, "XAUUSD");
    let mut order = Order {
        login: 1,
        order: 4,
        ..Order::default()
    };
    set_str(&mut order.symbol, "XAUUSD");
    let mut tick = Tick {
        bid: 2345.1,
        ask: 2345.4,
        ..Tick::default()
    };
    set_str(&mut tick.symbol, "XAUUSD");
    let mut symbol = Symbol {
        contract_size: 100.0,
        digits: 2,
        ..Symbol::default()
    };
    set_str(&mut symbol.symbol, "XAUUSD");
    set_str(&mut symbol.group, "metals");
    set_str(&mut symbol.profit_ccy, "USD");
    let events = [
        Event::deal(&deal, &[]).unwrap(),
        Event::position(&position).unwrap(),
        Event::position(&Position {
            op: TC_POSITION_UPDATE,
            ..position
        })
        .unwrap(),
        Event::position(&Position {
            op: TC_POSITION_CLOSE,
            ..position
        })
        .unwrap(),
        Event::order(&order).unwrap(),
        Event::order(&Order {
            op: TC_ORDER_DELETE,
            ..Order::default()
        })
        .unwrap(),
        Event::account(&Account {
            login: 1,
            ..Account::default()
        })
        .unwrap(),
        Event::margin_call(&Risk {
            login: 1,
            ..Risk::default()
        })
        .unwrap(),
        Event::stop_out(&Risk {
            login: 1,
            op: TC_RISK_LEAVE,
            ..Risk::default()
        })
        .unwrap(),
        Event::tick(&tick).unwrap(),
        Event::ib_link(&IbLink {
            login: 1,
            ib: 2,
            ..IbLink::default()
        })
        .unwrap(),
        Event::ib_link(&IbLink {
            login: 1,
            op: TC_IB_LINK_REMOVE,
            ..IbLink::default()
        })
        .unwrap(),
        Event::symbol(&symbol).unwrap(),
    ];
    for (i, event) in events.iter().enumerate() {
        let mut out = String::new();
        event.write_json(
            &Envelope {
                src: "mt5",
                seq: i as u64 + 1,
                emit_ms: 1,
                tz_offset_minutes: 0,
            },
            &mut out,
        );
        ingest::parse(out.as_bytes()).unwrap_or_else(|e| panic!("{e}: {out}"));
    }
}
