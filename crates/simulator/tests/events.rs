//! The simulator's output checked against the ingest contract of DESIGN.md and the
//! payloads of trading-domain.md §6.4, by replaying it the way a gateway would.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tradecast_simulator::{SimConfig, Simulator};

const START_MS: u64 = 1_717_430_400_000;

/// Bootstraps and steps for `seconds` of simulated time, every `step_ms`; returns every
/// batch with the clock reading it was produced at.
fn run(config: SimConfig, seconds: u64, step_ms: u64) -> (Simulator, Vec<(u64, Vec<Value>)>) {
    let mut sim = Simulator::new(config);
    let mut batches = vec![(START_MS, sim.bootstrap(START_MS))];
    for now in (1..=seconds * 1000 / step_ms).map(|n| START_MS + n * step_ms) {
        batches.push((now, sim.step(now)));
    }
    (sim, batches)
}

fn events(batches: &[(u64, Vec<Value>)]) -> impl Iterator<Item = &Value> {
    batches.iter().flat_map(|(_, batch)| batch)
}

fn u64_of(event: &Value, field: &str) -> u64 {
    event[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned integer in {event}"))
}

fn f64_of(event: &Value, field: &str) -> f64 {
    event[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {event}"))
}

#[test]
fn seq_starts_at_one_and_never_skips() {
    let (_, batches) = run(SimConfig::default(), 120, 75);
    let seqs: Vec<u64> = events(&batches).map(|e| u64_of(e, "seq")).collect();
    assert!(seqs.len() > 2_000, "only {} events", seqs.len());
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected);
}

#[test]
fn every_event_carries_the_envelope() {
    let (_, batches) = run(SimConfig::default(), 60, 100);
    let account_scoped = [
        "deal",
        "position",
        "order",
        "account",
        "margin_call",
        "ib_link",
    ];
    let known = [&account_scoped[..], &["tick", "symbol"]].concat();
    for (now, batch) in &batches {
        for event in batch {
            assert_eq!(event["v"], 1, "{event}");
            assert_eq!(event["src"], "sim-01", "{event}");
            assert_eq!(u64_of(event, "ts"), *now, "{event}");
            assert_eq!(u64_of(event, "emit_ts"), *now, "{event}");
            let kind = event["type"].as_str().expect("type is a string");
            assert!(known.contains(&kind), "unknown type in {event}");
            if account_scoped.contains(&kind) {
                u64_of(event, "login");
            }
        }
    }
}

#[test]
fn volumes_are_integers_in_ten_thousandths_of_a_lot() {
    let (_, batches) = run(SimConfig::default(), 60, 100);
    for event in events(&batches) {
        for (field, value) in event.as_object().unwrap() {
            if field.starts_with("vol") {
                assert!(value.is_u64(), "{field} in {event}");
            }
        }
        let trade = matches!(event["type"].as_str(), Some("deal" | "position"));
        if trade && event["vol"].is_u64() {
            assert!(u64_of(event, "vol") > 0, "{event}");
        }
    }
}

#[test]
fn prices_have_the_symbols_digits_and_money_has_cents() {
    let (_, batches) = run(SimConfig::default(), 60, 100);
    let on_grid = |value: f64, digits: u64| {
        let scaled = value * 10f64.powi(digits as i32);
        (scaled - scaled.round()).abs() < 1e-6
    };
    let mut digits = BTreeMap::new();
    for event in events(&batches) {
        match event["type"].as_str().unwrap() {
            "symbol" => {
                let group = event["group"].as_str().unwrap();
                assert!(group == "forex" || group == "metals", "{event}");
                digits.insert(event["symbol"].as_str().unwrap(), u64_of(event, "digits"));
            }
            "tick" => {
                let d = digits[event["symbol"].as_str().unwrap()];
                let (bid, ask) = (f64_of(event, "bid"), f64_of(event, "ask"));
                assert!(bid > 0.0 && bid < ask, "{event}");
                assert!(on_grid(bid, d) && on_grid(ask, d), "{event}");
            }
            "deal" | "account" => {
                for field in ["profit", "balance", "equity", "margin"] {
                    if let Some(money) = event[field].as_f64() {
                        assert!(on_grid(money, 2), "{field} in {event}");
                    }
                }
            }
            _ => {}
        }
    }
    assert_eq!(digits["EURUSD"], 5);
    assert_eq!(digits["USDJPY"], 3);
}

/// An open position as the gateway would track it from the events.
struct Open {
    login: u64,
    symbol: String,
    side: String,
    vol: u64,
    price_open: f64,
}

/// Replays every trade event like a gateway and checks that each close refers to a
/// position that is open, that volumes add up, and that each closing deal's profit is
/// the §1.7 formula at the last ticked prices, converted to USD at the USD pair's mid price.
#[test]
fn closes_match_open_positions_and_the_profit_formula() {
    let (_, batches) = run(SimConfig::default(), 300, 100);
    let mut contract: BTreeMap<String, f64> = BTreeMap::new();
    let mut bid: BTreeMap<String, f64> = BTreeMap::new();
    let mut ask: BTreeMap<String, f64> = BTreeMap::new();
    let mut open: BTreeMap<u64, Open> = BTreeMap::new();
    let mut ever_opened = BTreeSet::new();
    let mut last_out_deal: Option<(u64, u64, u64)> = None; // deal, position, vol
    let mut closes = 0;
    let usd_per = |ccy: &str, bid: &BTreeMap<String, f64>, ask: &BTreeMap<String, f64>| {
        let mid = |symbol: &str| Some((bid.get(symbol)? + ask.get(symbol)?) / 2.0);
        match ccy {
            "USD" => 1.0,
            _ => mid(&format!("{ccy}USD"))
                .unwrap_or_else(|| 1.0 / mid(&format!("USD{ccy}")).unwrap()),
        }
    };

    for event in events(&batches) {
        let str_of = |field: &str| event[field].as_str().unwrap().to_string();
        match (event["type"].as_str().unwrap(), event["op"].as_str()) {
            ("symbol", _) => {
                contract.insert(str_of("symbol"), f64_of(event, "contract_size"));
            }
            ("tick", _) => {
                bid.insert(str_of("symbol"), f64_of(event, "bid"));
                ask.insert(str_of("symbol"), f64_of(event, "ask"));
            }
            ("deal", _) if event["entry"] == "out" => {
                let id = u64_of(event, "position_id");
                let position = open.get(&id).expect("an out deal closes an open position");
                let vol = u64_of(event, "vol");
                assert_eq!(position.login, u64_of(event, "login"));
                assert_eq!(position.symbol, str_of("symbol"));
                assert!(vol <= position.vol, "closes more than is open: {event}");
                assert_ne!(position.side, str_of("action"), "closes with the same side");
                let symbol = &position.symbol;
                let (close, gain) = if position.side == "buy" {
                    (bid[symbol], bid[symbol] - position.price_open)
                } else {
                    (ask[symbol], position.price_open - ask[symbol])
                };
                assert_eq!(f64_of(event, "price"), close, "{event}");
                let lots = vol as f64 / 10_000.0;
                let rate = usd_per(&symbol[3..], &bid, &ask);
                let expected = gain * lots * contract[symbol] * rate;
                let profit = f64_of(event, "profit");
                assert!(
                    (profit - expected).abs() < 0.006,
                    "{profit} vs {expected}: {event}"
                );
                last_out_deal = Some((u64_of(event, "deal"), id, vol));
            }
            ("position", Some("open")) => {
                let id = u64_of(event, "position_id");
                assert!(ever_opened.insert(id), "position {id} opened twice");
                let position = Open {
                    login: u64_of(event, "login"),
                    symbol: str_of("symbol"),
                    side: str_of("side"),
                    vol: u64_of(event, "vol"),
                    price_open: f64_of(event, "price_open"),
                };
                open.insert(id, position);
            }
            ("position", Some("update")) => {
                let id = u64_of(event, "position_id");
                let position = open
                    .get_mut(&id)
                    .expect("an update refers to an open position");
                if let Some(vol) = event["vol"].as_u64() {
                    let (_, closed_id, closed) = last_out_deal.take().expect("a partial close");
                    assert_eq!(closed_id, id);
                    assert_eq!(position.vol - closed, vol, "{event}");
                    position.vol = vol;
                }
            }
            ("position", Some("close")) => {
                let id = u64_of(event, "position_id");
                let position = open
                    .remove(&id)
                    .expect("a close refers to an open position");
                let (deal, closed_id, closed) = last_out_deal.take().expect("a closing deal");
                assert_eq!((closed_id, closed), (id, position.vol));
                assert_eq!(u64_of(event, "close_deal"), deal);
                closes += 1;
            }
            _ => {}
        }
    }
    assert!(closes > 20, "only {closes} full closes in five minutes");
}

#[test]
fn the_same_seed_replays_the_same_events() {
    let config = SimConfig {
        seed: 42,
        ..SimConfig::default()
    };
    let (_, first) = run(config.clone(), 30, 100);
    let (_, second) = run(config, 30, 100);
    assert_eq!(first, second);
    let (_, other) = run(
        SimConfig {
            seed: 43,
            ..SimConfig::default()
        },
        30,
        100,
    );
    assert_ne!(first, other);
}

/// Counts each trading activity once, by the event that starts it.
fn activities(batches: &[(u64, Vec<Value>)]) -> usize {
    events(&batches[1..])
        .filter(|e| match e["type"].as_str().unwrap() {
            "order" => e["op"] == "add",
            "position" => e["op"] == "update" && (e["sl"].is_number() || e["tp"].is_number()),
            "deal" => e["action"] == "balance",
            "ib_link" | "margin_call" => true,
            _ => false,
        })
        .count()
}

#[test]
fn rates_follow_the_config_over_a_simulated_minute() {
    for (config, step_ms) in [
        (SimConfig::default(), 100),
        (
            SimConfig {
                seed: 7,
                ticks_per_sec: 100.0,
                trades_per_sec: 10.0,
                ..SimConfig::default()
            },
            50,
        ),
    ] {
        let (ticks_per_sec, trades_per_sec) = (config.ticks_per_sec, config.trades_per_sec);
        let (_, batches) = run(config, 60, step_ms);
        let ticks = events(&batches[1..])
            .filter(|e| e["type"] == "tick")
            .count() as f64;
        let trades = activities(&batches) as f64;
        let (want_ticks, want_trades) = (ticks_per_sec * 60.0, trades_per_sec * 60.0);
        assert!(
            (ticks / want_ticks - 1.0).abs() < 0.15,
            "{ticks} ticks, want ~{want_ticks}"
        );
        assert!(
            (trades / want_trades - 1.0).abs() < 0.3,
            "{trades} trades, want ~{want_trades}"
        );
    }
}

#[test]
fn a_stalled_clock_produces_nothing() {
    let mut sim = Simulator::new(SimConfig::default());
    sim.bootstrap(START_MS);
    assert!(sim.step(START_MS).is_empty());
    let later = sim.step(START_MS + 1_000);
    assert!(sim.step(START_MS + 500).is_empty(), "{later:?}");
}

#[test]
fn the_scene_comes_first_and_the_identities_are_live() {
    let (sim, batches) = run(SimConfig::default(), 120, 100);
    let identities = sim.identities();
    assert_eq!(
        (identities.trader, identities.ib, identities.admin),
        (100_001, 900_001, 1)
    );

    let scene = &batches[0].1;
    let kinds: Vec<&str> = scene.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds[..12].iter().all(|&k| k == "symbol"), "{kinds:?}");
    assert!(kinds[12..24].iter().all(|&k| k == "tick"), "{kinds:?}");
    for account in scene.iter().filter(|e| e["type"] == "account") {
        assert!(
            account["name"].is_string() && account["ccy"] == "USD",
            "{account}"
        );
        u64_of(account, "leverage");
        f64_of(account, "balance");
    }
    let deposits = scene.iter().filter(|e| e["action"] == "balance").count();
    assert_eq!(deposits, 20);

    // Every trader and sub-IB reaches the top IB through the tree.
    let mut parent = BTreeMap::new();
    for link in events(&batches).filter(|e| e["type"] == "ib_link") {
        parent.insert(u64_of(link, "login"), u64_of(link, "ib"));
    }
    assert!(!parent.contains_key(&identities.ib));
    for &login in parent.keys() {
        let (mut node, mut levels) = (login, 0);
        while let Some(&up) = parent.get(&node) {
            (node, levels) = (up, levels + 1);
        }
        assert_eq!(node, identities.ib, "{login} hangs outside the tree");
        assert!(levels <= 4);
    }
    assert_eq!(
        parent[&identities.trader], 900_003,
        "the demo trader pays every level"
    );

    // The demo trader holds at least three positions after every batch.
    let mut held = BTreeSet::new();
    for (_, batch) in &batches {
        for event in batch.iter().filter(|e| e["type"] == "position") {
            if u64_of(event, "login") != identities.trader {
                continue;
            }
            match event["op"].as_str().unwrap() {
                "open" => held.insert(u64_of(event, "position_id")),
                "close" => held.remove(&u64_of(event, "position_id")),
                _ => true,
            };
        }
        assert!(held.len() >= 3, "the demo trader holds {}", held.len());
    }
}

#[test]
fn balances_add_up_deal_by_deal() {
    let (_, batches) = run(SimConfig::default(), 300, 100);
    let mut balance: BTreeMap<u64, f64> = BTreeMap::new();
    for event in events(&batches) {
        let login = event["login"].as_u64();
        match event["type"].as_str().unwrap() {
            "deal" => *balance.entry(login.unwrap()).or_default() += f64_of(event, "profit"),
            "account" if login.unwrap() < 900_000 => {
                let expected = balance.get(&login.unwrap()).copied().unwrap_or_default();
                assert!(
                    (f64_of(event, "balance") - expected).abs() < 0.005,
                    "{event}"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn small_and_large_brokers_run() {
    for (traders, symbols, ib_depth) in [(0, 0, 0), (1, 1, 1), (3, 30, 5), (50, 100, 9)] {
        let config = SimConfig {
            traders,
            symbols,
            ib_depth,
            trades_per_sec: 20.0,
            ..SimConfig::default()
        };
        let (sim, batches) = run(config, 120, 100);
        let symbols_declared = events(&batches).filter(|e| e["type"] == "symbol").count();
        assert_eq!(symbols_declared, symbols.clamp(1, 30));
        let deepest = events(&batches)
            .filter(|e| e["type"] == "ib_link" && u64_of(e, "login") == sim.identities().trader)
            .map(|e| u64_of(e, "ib"))
            .next();
        assert_eq!(deepest, Some(900_000 + ib_depth.clamp(1, 5) as u64));
    }
}

#[test]
fn the_gateway_parser_accepts_every_event() {
    let (_, batches) = run(SimConfig::default(), 120, 100);
    for event in events(&batches) {
        let parsed = tradecast_protocol::ingest::parse_value(event.clone())
            .unwrap_or_else(|e| panic!("{}: {event}", e.reason()));
        assert_eq!(parsed.body.kind(), event["type"]);
    }
}
