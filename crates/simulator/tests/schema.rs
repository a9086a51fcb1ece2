//! The ingest contract written down three times must say one thing: the JSON Schema
//! (`docs/schema/ingest-event.schema.json`), the parser (`tradecast_protocol::ingest`,
//! the authority) and the reference page (`docs/events.md`), plus the simulator that
//! plays a trade-server plugin.
//!
//! - everything the simulator emits passes both the schema and the parser;
//! - every event shown in docs/events.md (its `json` blocks holding an event, its
//!   `XADD … d '…'` lines and the JSON lines of its `sh` blocks) passes both;
//! - a list of bad events is refused by both, a list of unusual but valid ones is
//!   accepted by both, and the two rules JSON Schema cannot express are pinned down.

use std::collections::BTreeSet;
use std::path::PathBuf;

use jsonschema::Validator;
use serde_json::{Value, json};
use tradecast_protocol::ingest;
use tradecast_simulator::{SimConfig, Simulator};

const START_MS: u64 = 1_717_430_400_000;

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn read_doc(relative: &str) -> String {
    let path = docs_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The schema, checked against the draft 2020-12 meta-schema and compiled.
fn validator() -> Validator {
    let schema: Value = serde_json::from_str(&read_doc("schema/ingest-event.schema.json"))
        .expect("the schema is JSON");
    if let Err(e) = jsonschema::meta::validate(&schema) {
        panic!("the schema is not a valid JSON Schema: {e}");
    }
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

/// Why the schema refuses `event` (empty: it accepts it).
fn schema_errors(validator: &Validator, event: &Value) -> Vec<String> {
    validator
        .iter_errors(event)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}

/// The parser's verdict on `event` sent as the `d` of a stream entry.
fn parse(event: &Value) -> Result<ingest::IngestEvent, ingest::IngestError> {
    ingest::parse(&serde_json::to_vec(event).expect("serializable"))
}

/// Both the schema and the parser accept `event`.
fn assert_accepted(validator: &Validator, event: &Value, origin: &str) {
    let errors = schema_errors(validator, event);
    assert!(
        errors.is_empty(),
        "{origin}: the schema refuses {event}: {errors:?}"
    );
    if let Err(e) = parse(event) {
        panic!("{origin}: the parser refuses {event}: {e}");
    }
}

/// `(type, op)` of an event, `op` empty when it has none.
fn kind(event: &Value) -> (String, String) {
    let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
    (text("type"), text("op"))
}

// ---------------------------------------------------------------------------------
// The simulator

fn simulate(config: SimConfig, steps: u64, step_ms: u64) -> Vec<Value> {
    let mut sim = Simulator::new(config);
    let mut events = sim.bootstrap(START_MS);
    for n in 1..=steps {
        events.extend(sim.step(START_MS + n * step_ms));
    }
    events
}

#[test]
fn every_simulated_event_passes_the_schema_and_the_parser() {
    let validator = validator();
    let busy = SimConfig {
        seed: 7,
        traders: 40,
        trades_per_sec: 20.0,
        ..SimConfig::default()
    };
    let events: Vec<Value> = [
        simulate(SimConfig::default(), 600, 100),
        simulate(busy, 400, 250),
    ]
    .concat();
    assert!(events.len() > 2_000, "only {} events", events.len());

    let mut seen = BTreeSet::new();
    for (i, event) in events.iter().enumerate() {
        assert_accepted(&validator, event, &format!("simulated event #{i}"));
        seen.insert(kind(event));
    }
    for expected in [
        ("symbol", ""),
        ("tick", ""),
        ("account", ""),
        ("ib_link", "set"),
        ("order", "add"),
        ("order", "delete"),
        ("deal", ""),
        ("position", "open"),
        ("position", "update"),
        ("position", "close"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(
            seen.contains(&expected),
            "the simulator never emitted {expected:?}; saw {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// The examples of docs/events.md

/// One event found in the page, with where it was found.
struct Example {
    origin: String,
    event: Value,
    /// The stream of a `redis-cli XADD` line.
    stream: Option<String>,
}

/// Every event docs/events.md shows: ```json blocks that hold an event (they contain
/// `"type"` and `"src"`; one object, an array, or JSON lines), `XADD … d '…'` lines,
/// and lines of ```sh blocks that are an event on their own (`{"v":…}`).
fn doc_examples() -> Vec<Example> {
    let page = read_doc("events.md");
    let mut examples = Vec::new();
    let mut block: Option<(String, usize, Vec<&str>)> = None;
    for (index, line) in page.lines().enumerate() {
        let number = index + 1;
        let Some(fence) = line.trim_start().strip_prefix("```") else {
            if let Some((_, _, lines)) = &mut block {
                lines.push(line);
            }
            continue;
        };
        match block.take() {
            None => block = Some((fence.trim().to_owned(), number, Vec::new())),
            Some((lang, start, lines)) => {
                let origin = format!("docs/events.md:{start}");
                match lang.as_str() {
                    "json" => examples.extend(json_block(&origin, &lines)),
                    "sh" => examples.extend(sh_block(start, &lines)),
                    _ => {}
                }
            }
        }
    }
    assert!(block.is_none(), "docs/events.md: unclosed code block");
    examples
}

fn json_block(origin: &str, lines: &[&str]) -> Vec<Example> {
    let text = lines.join("\n");
    if !(text.contains("\"type\"") && text.contains("\"src\"")) {
        return Vec::new();
    }
    let values: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        Ok(value) => vec![value],
        Err(whole) => lines
            .iter()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{origin}: neither one JSON value ({whole}) nor JSON lines ({e})")
                })
            })
            .collect(),
    };
    values
        .into_iter()
        .map(|event| Example {
            origin: origin.to_owned(),
            event,
            stream: None,
        })
        .collect()
}

fn sh_block(start: usize, lines: &[&str]) -> Vec<Example> {
    let mut examples = Vec::new();
    for (offset, line) in lines.iter().enumerate() {
        let origin = format!("docs/events.md:{}", start + 1 + offset);
        let (json, stream) = if let Some((head, tail)) = line.split_once(" d '") {
            let json = tail
                .rsplit_once('\'')
                .unwrap_or_else(|| panic!("{origin}: unterminated d '…'"))
                .0;
            let stream = head
                .split_once("XADD ")
                .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default())
                .map(|s| s.trim_matches('\'').to_owned());
            (json, stream)
        } else if line.trim_start().starts_with("{\"v\"") {
            (line.trim(), None)
        } else {
            continue;
        };
        let event = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{origin}: the event is not JSON: {e}"));
        examples.push(Example {
            origin,
            event,
            stream,
        });
    }
    examples
}

#[test]
fn every_example_in_the_reference_passes_the_schema_and_the_parser() {
    let validator = validator();
    let examples = doc_examples();
    assert!(examples.len() >= 20, "only {} examples", examples.len());

    let mut seen = BTreeSet::new();
    for example in &examples {
        assert_accepted(&validator, &example.event, &example.origin);
        seen.insert(kind(&example.event));
    }
    let expected = [
        ("deal", ""),
        ("position", "open"),
        ("position", "update"),
        ("position", "close"),
        ("order", "add"),
        ("order", "update"),
        ("order", "delete"),
        ("account", ""),
        ("margin_call", "enter"),
        ("stop_out", "enter"),
        ("tick", ""),
        ("ib_link", "set"),
        ("ib_link", "remove"),
        ("symbol", ""),
    ];
    for (kind, op) in expected {
        let expected = (kind.to_owned(), op.to_owned());
        assert!(
            seen.contains(&expected),
            "docs/events.md has no example of {expected:?}"
        );
    }
}

/// The `redis-cli XADD` examples write each event where the layout says: ticks to
/// `tc:ticks`, the rest to `tc:events` or, with the page's 4 partitions, to
/// `tc:events:{login mod 4}`.
#[test]
fn the_xadd_examples_use_the_right_stream() {
    let xadds: Vec<Example> = doc_examples()
        .into_iter()
        .filter(|e| e.stream.is_some())
        .collect();
    assert!(xadds.len() >= 3, "only {} XADD examples", xadds.len());
    for example in xadds {
        let stream = example.stream.as_deref().expect("filtered");
        let event = parse(&example.event).expect("checked by the other test");
        let expected = match (&event.body, stream) {
            (ingest::EventBody::Tick(_), _) => "tc:ticks".to_owned(),
            (body, s) if s.starts_with("tc:events:") => {
                format!("tc:events:{{{}}}", body.login().unwrap_or(0) % 4)
            }
            _ => "tc:events".to_owned(),
        };
        assert_eq!(stream, expected, "{}", example.origin);
    }
}

// ---------------------------------------------------------------------------------
// Bad, odd and borderline events

fn envelope(kind: &str) -> Value {
    json!({"v": 1, "type": kind, "src": "mt5-live-01", "seq": 7, "ts": START_MS})
}

/// One valid event of each shape, to derive the bad ones from.
fn valid(shape: &str) -> Value {
    let (kind, body) = match shape {
        "trade" => (
            "deal",
            json!({"login": 42, "deal": 5003, "position_id": 12345, "action": "sell",
                   "entry": "out", "symbol": "EURUSD", "vol": 10000, "price": 1.0850,
                   "profit": 9.0, "ib_commissions": [{"ib": 7, "level": 1, "amount": 5.0}]}),
        ),
        "balance" => (
            "deal",
            json!({"login": 42, "deal": 5002, "action": "balance", "profit": 500.0}),
        ),
        "open" => (
            "position",
            json!({"op": "open", "login": 42, "position_id": 12345, "symbol": "EURUSD",
                   "side": "buy", "vol": 10000, "price_open": 1.0841}),
        ),
        "update" => (
            "position",
            json!({"op": "update", "login": 42, "position_id": 12345, "vol": 5000}),
        ),
        "close" => (
            "position",
            json!({"op": "close", "login": 42, "position_id": 12345, "close_deal": 5003}),
        ),
        "order" => (
            "order",
            json!({"op": "add", "login": 42, "order": 9002, "symbol": "EURUSD",
                   "order_type": "buy_limit", "state": "placed", "vol_initial": 20000,
                   "vol_current": 20000, "price_order": 1.08}),
        ),
        "account" => (
            "account",
            json!({"login": 42, "name": "Ann Lee", "ccy": "USD", "leverage": 100,
                   "balance": 10000.0, "credit": 0.0}),
        ),
        "margin_call" | "stop_out" => (
            shape,
            json!({"op": "enter", "login": 42, "equity": 900.0, "margin": 1000.0,
                   "margin_level": 90.0}),
        ),
        "tick" => (
            "tick",
            json!({"symbol": "EURUSD", "bid": 1.0845, "ask": 1.0846, "digits": 5}),
        ),
        "ib_link" => ("ib_link", json!({"op": "set", "login": 42, "ib": 7})),
        "symbol" => (
            "symbol",
            json!({"symbol": "XAUUSD", "group": "metals", "digits": 2, "contract_size": 100,
                   "base_ccy": "XAU", "profit_ccy": "USD"}),
        ),
        other => panic!("no valid {other}"),
    };
    let mut event = envelope(kind);
    for (field, value) in body.as_object().expect("object") {
        event[field] = value.clone();
    }
    event
}

const SHAPES: [&str; 12] = [
    "trade",
    "balance",
    "open",
    "update",
    "close",
    "order",
    "account",
    "margin_call",
    "stop_out",
    "tick",
    "ib_link",
    "symbol",
];

/// `valid(shape)` with `field` set to `value`.
fn with(shape: &str, field: &str, value: Value) -> Value {
    let mut event = valid(shape);
    event[field] = value;
    event
}

/// `valid(shape)` without `field`.
fn without(shape: &str, field: &str) -> Value {
    let mut event = valid(shape);
    event
        .as_object_mut()
        .expect("object")
        .remove(field)
        .unwrap_or_else(|| panic!("{shape} has no {field}"));
    event
}

#[test]
fn the_base_events_are_valid() {
    let validator = validator();
    for shape in SHAPES {
        assert_accepted(&validator, &valid(shape), shape);
    }
}

#[test]
fn bad_events_are_refused_by_both_the_schema_and_the_parser() {
    let validator = validator();
    let bad: Vec<(&str, Value)> = vec![
        // Not an object.
        ("an array", json!([valid("tick")])),
        ("a string", json!("tick")),
        ("a number", json!(42)),
        ("null", Value::Null),
        // The envelope.
        ("unknown type", with("tick", "type", json!("quote"))),
        ("type missing", without("tick", "type")),
        ("type not a string", with("tick", "type", json!(3))),
        ("v missing", without("tick", "v")),
        ("v 2", with("tick", "v", json!(2))),
        ("v a string", with("tick", "v", json!("1"))),
        ("src missing", without("tick", "src")),
        ("src empty", with("tick", "src", json!(""))),
        ("seq missing", without("tick", "seq")),
        ("seq negative", with("tick", "seq", json!(-1))),
        ("seq fractional", with("tick", "seq", json!(1.5))),
        ("seq beyond u64", with("tick", "seq", json!(1e20))),
        (
            "ts a string",
            with("tick", "ts", json!("2024-06-03T16:00:00Z")),
        ),
        ("emit_ts negative", with("tick", "emit_ts", json!(-5))),
        // Missing login, on every account-scoped type.
        ("trade without login", without("trade", "login")),
        ("balance without login", without("balance", "login")),
        ("open without login", without("open", "login")),
        ("update without login", without("update", "login")),
        ("close without login", without("close", "login")),
        ("order without login", without("order", "login")),
        ("account without login", without("account", "login")),
        ("margin_call without login", without("margin_call", "login")),
        ("stop_out without login", without("stop_out", "login")),
        ("ib_link without login", without("ib_link", "login")),
        ("login null", with("open", "login", Value::Null)),
        ("login negative", with("account", "login", json!(-42))),
        ("login a string", with("account", "login", json!("42"))),
        // Volumes: non-negative integers in 1/10000 lot.
        ("open: negative vol", with("open", "vol", json!(-10000))),
        ("open: float vol", with("open", "vol", json!(1.5))),
        ("open: string vol", with("open", "vol", json!("10000"))),
        ("open: vol missing", without("open", "vol")),
        ("update: float vol", with("update", "vol", json!(0.5))),
        ("trade: negative vol", with("trade", "vol", json!(-1))),
        ("trade: float vol", with("trade", "vol", json!(1.25))),
        ("balance: float vol", with("balance", "vol", json!(0.1))),
        (
            "order: negative vol_initial",
            with("order", "vol_initial", json!(-20000)),
        ),
        (
            "order: float vol_current",
            with("order", "vol_current", json!(2.0e-1)),
        ),
        // Ops and other enums.
        ("position: bad op", with("open", "op", json!("modify"))),
        ("position: op missing", without("close", "op")),
        ("order: bad op", with("order", "op", json!("remove"))),
        (
            "margin_call: bad op",
            with("margin_call", "op", json!("start")),
        ),
        ("stop_out: op missing", without("stop_out", "op")),
        ("ib_link: bad op", with("ib_link", "op", json!("add"))),
        (
            "ib_link: op upper case",
            with("ib_link", "op", json!("SET")),
        ),
        ("deal: bad action", with("trade", "action", json!("gift"))),
        ("deal: bad entry", with("trade", "entry", json!("close"))),
        (
            "balance: bad entry",
            with("balance", "entry", json!("sideways")),
        ),
        ("open: bad side", with("open", "side", json!("long"))),
        (
            "order: bad order_type",
            with("order", "order_type", json!("market")),
        ),
        ("order: bad state", with("order", "state", json!("done"))),
        // Per-type required fields and rules.
        ("trade without entry", without("trade", "entry")),
        ("trade without symbol", without("trade", "symbol")),
        ("trade without vol", without("trade", "vol")),
        ("deal without ticket", without("balance", "deal")),
        ("deal without action", without("balance", "action")),
        (
            "ib_commissions not an array",
            with("trade", "ib_commissions", json!({"ib": 7})),
        ),
        (
            "ib_commissions item not an object",
            with("trade", "ib_commissions", json!([7])),
        ),
        (
            "ib_commissions without amount",
            with("trade", "ib_commissions", json!([{"ib": 7, "level": 1}])),
        ),
        (
            "ib_commissions level 0",
            with(
                "trade",
                "ib_commissions",
                json!([{"ib": 7, "level": 0, "amount": 1.0}]),
            ),
        ),
        ("open without symbol", without("open", "symbol")),
        ("open without side", without("open", "side")),
        ("open without price_open", without("open", "price_open")),
        ("open: price_open 0", with("open", "price_open", json!(0))),
        (
            "open: contract_size negative",
            with("open", "contract_size", json!(-1)),
        ),
        (
            "update: rate_margin 0",
            with("update", "rate_margin", json!(0.0)),
        ),
        ("close without position_id", without("close", "position_id")),
        ("order add without symbol", without("order", "symbol")),
        ("order without ticket", without("order", "order")),
        ("account: leverage 0", with("account", "leverage", json!(0))),
        (
            "account: leverage beyond u32",
            with("account", "leverage", json!(4_294_967_296u64)),
        ),
        (
            "account: balance a string",
            with("account", "balance", json!("10000.00")),
        ),
        ("tick without ask", without("tick", "ask")),
        ("tick: bid 0", with("tick", "bid", json!(0))),
        ("tick: negative ask", with("tick", "ask", json!(-1.0))),
        ("tick: digits negative", with("tick", "digits", json!(-5))),
        ("tick: symbol a number", with("tick", "symbol", json!(1))),
        ("ib_link set without ib", without("ib_link", "ib")),
        ("ib_link set with ib 0", with("ib_link", "ib", json!(0))),
        ("symbol without group", without("symbol", "group")),
        (
            "symbol: group with a space",
            with("symbol", "group", json!("precious metals")),
        ),
        ("symbol: group empty", with("symbol", "group", json!(""))),
        (
            "symbol: group too long",
            with("symbol", "group", json!("g".repeat(65))),
        ),
        (
            "symbol: group not ASCII",
            with("symbol", "group", json!("métaux")),
        ),
        (
            "symbol without contract_size",
            without("symbol", "contract_size"),
        ),
        (
            "symbol: contract_size 0",
            with("symbol", "contract_size", json!(0)),
        ),
        ("symbol without profit_ccy", without("symbol", "profit_ccy")),
        (
            "symbol: digits beyond u32",
            with("symbol", "digits", json!(1u64 << 32)),
        ),
    ];
    let mut failures = Vec::new();
    for (name, event) in &bad {
        if schema_errors(&validator, event).is_empty() {
            failures.push(format!("{name}: the schema accepts {event}"));
        }
        if let Ok(parsed) = parse(event) {
            failures.push(format!("{name}: the parser accepts {event} as {parsed:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn odd_but_valid_events_are_accepted_by_both() {
    let validator = validator();
    let mut balance_with_nulls = valid("balance");
    for field in [
        "entry",
        "symbol",
        "vol",
        "order",
        "position_id",
        "ib_commissions",
    ] {
        balance_with_nulls[field] = Value::Null;
    }
    let good: Vec<(&str, Value)> = vec![
        (
            "extra fields",
            with("open", "magic", json!({"any": ["thing"]})),
        ),
        ("emit_ts null", with("tick", "emit_ts", Value::Null)),
        ("optional fields null", with("open", "sl", Value::Null)),
        ("balance deal with nulls", balance_with_nulls),
        (
            "balance deal with an entry",
            with("balance", "entry", json!("in")),
        ),
        ("volume 0", with("order", "vol_current", json!(0))),
        ("largest seq", with("tick", "seq", json!(u64::MAX))),
        ("seq 0", with("tick", "seq", json!(0))),
        ("login 0", with("account", "login", json!(0))),
        ("negative money", with("balance", "profit", json!(-250.75))),
        ("negative sl", with("update", "sl", json!(-1.0))),
        (
            "tick with ask equal to bid",
            with("tick", "ask", json!(1.0845)),
        ),
        ("tick without digits", without("tick", "digits")),
        ("order delete with only keys", {
            let mut e = envelope("order");
            e["op"] = json!("delete");
            e["login"] = json!(42);
            e["order"] = json!(9002);
            e
        }),
        (
            "order update without symbol",
            with("order", "op", json!("update")),
        ),
        ("position update with only keys", {
            let mut e = valid("update");
            e.as_object_mut().expect("object").remove("vol");
            e
        }),
        ("account with only login", {
            let mut e = envelope("account");
            e["login"] = json!(42);
            e
        }),
        ("leave without figures", {
            let mut e = envelope("stop_out");
            e["op"] = json!("leave");
            e["login"] = json!(42);
            e
        }),
        ("ib_link remove without ib", {
            let mut e = without("ib_link", "ib");
            e["op"] = json!("remove");
            e
        }),
        ("ib_link remove with ib 0", {
            let mut e = with("ib_link", "ib", json!(0));
            e["op"] = json!("remove");
            e
        }),
        ("symbol without base_ccy", without("symbol", "base_ccy")),
        (
            "symbol group of 64",
            with("symbol", "group", json!("g".repeat(64))),
        ),
        (
            "symbol group with . _ -",
            with("symbol", "group", json!("cfd.US_idx-1")),
        ),
    ];
    for (name, event) in &good {
        assert_accepted(&validator, event, name);
    }
}

/// Two rules of the parser that JSON Schema cannot state (docs/events.md §9 says so):
/// the schema accepts these events and the parser refuses them. If either side
/// changes, update the page.
#[test]
fn what_only_the_parser_checks() {
    let validator = validator();
    let cases = [
        ("ask below bid", with("tick", "ask", json!(1.0844))),
        (
            "volume written 10000.0",
            with("open", "vol", json!(10000.0)),
        ),
        ("seq written 7.0", with("tick", "seq", json!(7.0))),
        ("v written 1.0", with("tick", "v", json!(1.0))),
    ];
    for (name, event) in &cases {
        assert_eq!(
            schema_errors(&validator, event),
            Vec::<String>::new(),
            "{name}: the schema now refuses {event}: update docs/events.md §9"
        );
        assert!(
            parse(event).is_err(),
            "{name}: the parser now accepts {event}"
        );
    }
}
