//! A C program linked against the static library publishes a trading session into a
//! real Redis; a real `tradecast serve --redis` node turns it into the WebSocket
//! messages a trader, their IBs and the risk desk see. And a C process that dies
//! with events in its spool loses none of them: the next process replays them
//! first and continues the `seq` count. The C++ wrapper works the same way.

mod support;

use serde_json::Value;
use support::*;
use tradecast_client::{Client, Connect};
use tradecast_testkit::RedisServer;

/// Connect as (`sub`, `role`) and read the welcome and every default channel's
/// `subscribed` (and its snapshot, which precedes the next `subscribed`).
async fn connect(node: &Node, sub: u64, role: &str) -> Client {
    let mut client = Client::connect(&Connect::new(node.public, token(sub, role)))
        .await
        .expect("connecting");
    let welcome = client.recv_within(WAIT).await.unwrap().expect("welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let channels = welcome["channels"].as_array().unwrap().len();
    let mut subscribed = 0;
    while subscribed < channels {
        let m = client.recv_within(WAIT).await.unwrap().expect("open");
        if m["type"] == "subscribed" {
            subscribed += 1;
        }
    }
    client
}

/// Messages until `done` holds for what was collected (or fail after WAIT without
/// progress).
async fn collect(client: &mut Client, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut got = Vec::new();
    while !done(&got) {
        match client.recv_within(WAIT).await {
            Ok(Some(m)) => got.push(m),
            other => panic!("waiting for messages: {other:?}; got {got:#?}"),
        }
    }
    got
}

/// Durable messages (with a `seq`) on `channel`, in order.
fn durable<'a>(messages: &'a [Value], channel: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|m| m["channel"] == channel && m.get("seq").is_some() && m["type"] != "subscribed")
        .collect()
}

fn has(messages: &[Value], channel: &str, kind: &str) -> bool {
    messages
        .iter()
        .any(|m| m["channel"] == channel && m["type"] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_plugin_session_reaches_the_trader_the_ib_chain_and_the_risk_desk() {
    // Build the C program and find the node binary before any clock starts.
    let program = tokio::task::spawn_blocking(|| {
        session_program();
        tradecast_bin();
    });
    program.await.unwrap();
    let redis = RedisServer::start();
    let node = tokio::task::spawn_blocking({
        let url = redis.url();
        move || {
            let node = Node::start(&url, &[]);
            node.wait_ready();
            node
        }
    })
    .await
    .unwrap();

    let mut trader = connect(&node, 500123, "client").await;
    let mut direct_ib = connect(&node, 400010, "ib").await;
    let mut second_ib = connect(&node, 400002, "ib").await;
    let mut top_ib = connect(&node, 400001, "ib").await;
    let mut risk = connect(&node, 7, "admin").await;

    let spool = temp_dir("session");
    let url = redis.url();
    let out = tokio::task::spawn_blocking(move || run_session(&url, &spool, &["session"]))
        .await
        .unwrap();
    assert!(out.contains("published=19 delivered=19"), "{out}");

    // What went into Redis: 17 trade events and 2 ticks, each source's seq from 1.
    let events = read_stream(&redis.url(), "tc:events");
    assert_eq!(seqs(&events), (1..=17).collect::<Vec<_>>());
    let ticks = read_stream(&redis.url(), "tc:ticks");
    assert_eq!(seqs(&ticks), vec![1, 2]);
    assert!(ticks.iter().all(|t| t["src"] == "mt5-live-01/ticks"));

    // The trader: their account, the order, the position's life, the margin call and
    // the deposit, in order; prices on prices:forex.
    let got = collect(&mut trader, |got| {
        durable(got, "portfolio:500123")
            .iter()
            .any(|m| m["type"] == "account_update" && m["kind"] == "balance")
            && has(got, "prices:forex", "price")
    })
    .await;
    let portfolio = durable(&got, "portfolio:500123");
    for pair in portfolio.windows(2) {
        assert_eq!(
            pair[1]["seq"].as_u64(),
            pair[0]["seq"].as_u64().map(|s| s + 1),
            "{portfolio:#?}"
        );
    }
    let find = |pred: &dyn Fn(&Value) -> bool| -> usize {
        portfolio
            .iter()
            .position(|m| pred(m))
            .unwrap_or_else(|| panic!("missing message in {portfolio:#?}"))
    };
    let account = find(&|m| {
        m["type"] == "account_update" && m["name"] == "Ada Lovelace" && m["balance"] == 10010.5
    });
    let opened = find(&|m| m["type"] == "position_opened");
    let modified = find(&|m| m["type"] == "position_update" && m["sl"] == 1.0795);
    let closed = find(&|m| m["type"] == "position_closed");
    let alert = find(&|m| m["type"] == "alert" && m["kind"] == "margin_call");
    let deposit = find(&|m| m["type"] == "account_update" && m["kind"] == "balance");
    assert!(
        account < opened
            && opened < modified
            && modified < closed
            && closed < alert
            && alert < deposit
    );
    let o = portfolio[opened];
    assert_eq!(
        (
            &o["id"],
            &o["symbol"],
            &o["side"],
            &o["volume"],
            &o["price_open"],
            &o["sl"],
            &o["tp"]
        ),
        (
            &Value::from(88004300),
            &Value::from("EURUSD"),
            &Value::from("buy"),
            &Value::from(15.0),
            &Value::from(1.08175),
            &Value::from(1.079),
            &Value::from(1.09)
        ),
        "{o}"
    );
    assert_eq!(portfolio[closed]["profit"], 367.5, "{}", portfolio[closed]);
    assert_eq!(portfolio[closed]["close_deal"], 77001234);
    assert_eq!(portfolio[deposit]["amount"], 500.0);
    let orders = durable(&got, "orders:500123");
    let ops: Vec<&str> = orders.iter().map(|m| m["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["add", "delete"], "{orders:#?}");
    assert_eq!(orders[1]["state"], "filled");
    let price = got
        .iter()
        .find(|m| m["channel"] == "prices:forex" && m["type"] == "price")
        .unwrap();
    assert_eq!(price["symbol"], "EURUSD");

    // The direct IB: the commission of level 1 from the deal's chain, and the client
    // joining its network with the name from the account event.
    let got = collect(&mut direct_ib, |got| {
        has(got, "commissions:400010", "commission") && has(got, "network:400010", "client_joined")
    })
    .await;
    let c = got.iter().find(|m| m["type"] == "commission").unwrap();
    assert_eq!(
        (
            &c["client"],
            &c["client_name"],
            &c["volume"],
            &c["amount"],
            &c["level"],
            &c["deal"]
        ),
        (
            &Value::from(500123),
            &Value::from("Ada Lovelace"),
            &Value::from(15.0),
            &Value::from(9.6),
            &Value::from(1),
            &Value::from(77001234)
        ),
        "{c}"
    );
    let joined = got.iter().find(|m| m["type"] == "client_joined").unwrap();
    assert_eq!(
        (&joined["client"], &joined["name"]),
        (&Value::from(500123), &Value::from("Ada Lovelace"))
    );

    // The two IBs above it: levels 2 and 3, the amounts the deal carried.
    for (ib, client, level, amount) in [
        (400002, &mut second_ib, 2, 2.4),
        (400001, &mut top_ib, 3, 0.6),
    ] {
        let commissions = format!("commissions:{ib}");
        let got = collect(client, |got| has(got, &commissions, "commission")).await;
        let c = got.iter().find(|m| m["type"] == "commission").unwrap();
        assert_eq!(
            (&c["client"], &c["level"], &c["amount"], &c["deal"]),
            (
                &Value::from(500123),
                &Value::from(level),
                &Value::from(amount),
                &Value::from(77001234)
            ),
            "{c}"
        );
    }

    // The risk desk: the margin-call alert.
    let got = collect(&mut risk, |got| has(got, "alerts", "alert")).await;
    let a = got
        .iter()
        .find(|m| m["channel"] == "alerts" && m["type"] == "alert")
        .unwrap();
    assert_eq!(
        (&a["kind"], &a["op"], &a["login"]),
        (
            &Value::from("margin_call"),
            &Value::from("enter"),
            &Value::from(500123)
        )
    );
}

#[test]
fn a_cpp_plugin_publishes_through_the_raii_wrapper() {
    let program = compile("wrapper.cpp");
    let redis = RedisServer::start();
    let spool = temp_dir("cpp");
    let output = std::process::Command::new(&program)
        .arg(redis.url())
        .arg(&*spool)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let events = read_stream(&redis.url(), "tc:events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["name"], "Zo\u{eb} M\u{fc}ller \u{1F600}",
        "MT5's wide strings arrive as UTF-8"
    );
    assert_eq!(read_stream(&redis.url(), "tc:ticks").len(), 1);
}

#[test]
fn a_crashed_process_leaves_its_spool_and_the_next_one_delivers_it_first() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill(); // down: the first process can only spool
    let spool = temp_dir("crash");

    let out = run_session(&url, &spool, &["crash", "50"]);
    assert!(out.contains("spooled=50"), "{out}");

    redis.restart();
    let out = run_session(&url, &spool, &["resume", "30"]);
    assert!(out.contains("next_seq=81"), "{out}");

    // Exactly once, in order: the 50 spooled deposits, then the 30 new ones.
    let events = read_stream(&url, "tc:events");
    assert_eq!(seqs(&events), (1..=80).collect::<Vec<_>>());
    let deals: Vec<u64> = events.iter().map(|e| e["deal"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1000..1050).chain(2000..2030).collect();
    assert_eq!(deals, expected);
}
