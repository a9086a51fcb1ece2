//! The Rust client's resilient [`Session`] (crates/client) against the real binary:
//! the scenarios of the TypeScript SDK's tests (clients/js/test) — connect and default
//! channels, subscribe errors and tokens, heartbeat and a frozen node, the models
//! against a fresh snapshot, a killed and restarted gateway, a resume on another
//! node of a Redis deployment, a dropped durable message healed by `since`, a drain.
//!
//! Every test starts its own nodes on free loopback ports. The app side is an [`App`]:
//! a session plus the local state models, recording every event so the durable stream
//! can be checked (per channel, after each `subscribed`, contiguous `seq`: no
//! duplicate, no hole).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tokio::time::Instant;
use tradecast_client::models::{Exposure, Model, Orders, Portfolio, Prices};
use tradecast_client::session::Tap;
use tradecast_client::{
    ConnectionState, Event, ReconnectingInfo, ResetInfo, Session, SessionOptions, SubscribeCause,
    Target, Token, TokenReason,
};
use tradecast_protocol::Role;

// ---------------------------------------------------------------------------------
// The app: a session, the models, and everything it was told.

struct App {
    session: Session,
    portfolio: Portfolio,
    orders: Orders,
    prices: Prices,
    exposure: Exposure,
    events: Vec<Event>,
}

impl App {
    fn new(session: Session) -> App {
        App {
            session,
            portfolio: Portfolio::new(),
            orders: Orders::new(),
            prices: Prices::new(),
            exposure: Exposure::new(),
            events: Vec::new(),
        }
    }

    async fn connect(options: SessionOptions) -> App {
        App::new(Session::connect(options).await.expect("session connect"))
    }

    fn take(&mut self, event: Event) {
        if let Some(m) = event.message() {
            self.portfolio.apply(m);
            self.orders.apply(m);
            self.prices.apply(m);
            self.exposure.apply(m);
        }
        self.events.push(event);
    }

    /// Take every event already queued.
    fn drain(&mut self) {
        while let Some(event) = self.session.try_next_event() {
            self.take(event);
        }
    }

    /// Read events until `done` holds (checked before and after each), within `limit`.
    async fn until(&mut self, what: &str, limit: Duration, done: impl Fn(&App) -> bool) {
        let deadline = Instant::now() + limit;
        self.drain();
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.session.next_event()).await {
                Ok(Some(event)) => self.take(event),
                Ok(None) => panic!("the session ended while waiting for {what}"),
                Err(_) => panic!(
                    "timed out after {limit:?} waiting for {what}; events: {:#?}",
                    self.summary()
                ),
            }
        }
    }

    /// Read events for `period`.
    async fn read_for(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        while let Ok(Some(event)) =
            tokio::time::timeout_at(deadline, self.session.next_event()).await
        {
            self.take(event);
        }
    }

    /// The events without prices and live figures (for failure messages).
    fn summary(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.message().is_none_or(|m| m.get("seq").is_some()))
            .map(|e| format!("{e:?}"))
            .collect()
    }

    fn count(&self, predicate: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| predicate(e)).count()
    }

    fn reconnecting(&self) -> Vec<&ReconnectingInfo> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Reconnecting(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn resets(&self) -> Vec<&ResetInfo> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Reset(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// `(recovered, reset)` of each `Resumed`, sorted.
    fn resumed(&self) -> Vec<(Vec<String>, Vec<String>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Resumed { recovered, reset } => {
                    let (mut recovered, mut reset) = (recovered.clone(), reset.clone());
                    recovered.sort();
                    reset.sort();
                    Some((recovered, reset))
                }
                _ => None,
            })
            .collect()
    }

    fn messages(&self, kind: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter_map(Event::message)
            .filter(|m| m["type"] == kind)
            .collect()
    }

    /// The durable messages delivered on `channel`.
    fn durable(&self, channel: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter_map(Event::message)
            .filter(|m| m["channel"] == channel && m["seq"].is_u64())
            .collect()
    }

    fn durable_seqs(&self, channel: &str) -> Vec<u64> {
        self.durable(channel)
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    }

    /// Per channel, after each `subscribed` the durable seqs go on from its position
    /// (recovered: from where the session was) with no duplicate and no hole.
    fn check_durable(&self) {
        let mut next: HashMap<&str, u64> = HashMap::new();
        let mut epochs: HashMap<&str, &str> = HashMap::new();
        for event in &self.events {
            match event {
                Event::Subscribed(s) => {
                    if s.recovered && next.contains_key(s.channel.as_str()) {
                        assert_eq!(
                            epochs.get(s.channel.as_str()),
                            Some(&s.epoch.as_str()),
                            "recovered with another epoch: {s:?}"
                        );
                    } else {
                        next.insert(&s.channel, s.seq + 1);
                    }
                    epochs.insert(&s.channel, &s.epoch);
                }
                Event::Message(m) if m["seq"].is_u64() => {
                    let channel = m["channel"].as_str().unwrap();
                    let seq = m["seq"].as_u64().unwrap();
                    let want = *next
                        .get(channel)
                        .unwrap_or_else(|| panic!("durable message before subscribed: {m}"));
                    assert!(
                        seq >= want,
                        "duplicate on {channel}: seq {seq}, expected {want}"
                    );
                    assert!(
                        seq <= want,
                        "missing on {channel}: seq {seq}, expected {want}"
                    );
                    next.insert(channel, want + 1);
                }
                _ => {}
            }
        }
    }
}

fn options(server: &Server, sub: u64, role: Role) -> SessionOptions {
    SessionOptions::new(server.public, token(sub, role))
}

/// Short backoff and connect timeout, so reconnects happen within a test's patience.
fn fast(mut options: SessionOptions) -> SessionOptions {
    options.backoff_initial = Duration::from_millis(50);
    options.backoff_max = Duration::from_millis(250);
    options.connect_timeout = Duration::from_secs(2);
    options
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A recorder for a hook: every JSON value it is given.
fn recorder() -> (Arc<Mutex<Vec<Value>>>, Tap) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    (
        log,
        Arc::new(move |m: &Value| sink.lock().unwrap().push(m.clone())),
    )
}

// ---------------------------------------------------------------------------------
// Fresh snapshots over a plain connection, and events.

/// Everything a brand-new connection was told about `channels`.
struct Fresh {
    messages: Vec<Value>,
}

impl Fresh {
    /// The last non-durable message of `kind` on `channel` (the snapshot).
    fn last(&self, channel: &str, kind: &str) -> &Value {
        self.messages
            .iter()
            .rev()
            .find(|m| m["channel"] == channel && m["type"] == kind && m.get("seq").is_none())
            .unwrap_or_else(|| panic!("no {kind} on {channel} in {:?}", self.messages))
    }

    fn subscribed_seq(&self, channel: &str) -> u64 {
        self.messages
            .iter()
            .find(|m| m["type"] == "subscribed" && m["channel"] == channel)
            .and_then(|m| m["seq"].as_u64())
            .unwrap_or_else(|| panic!("no subscribed on {channel}"))
    }
}

/// Connect, read the first snapshot of each of `channels` and `settle` more (retained
/// values such as the latest exposure table), disconnect.
async fn fresh_snapshot(
    server: &Server,
    sub: u64,
    role: Role,
    channels: &[&str],
    settle: Duration,
) -> Fresh {
    let (mut client, welcome) = server.connect(sub, role).await;
    let defaults: Vec<&str> = welcome["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for channel in channels {
        if !defaults.contains(channel) {
            client
                .send(&json!({"type":"subscribe","channel":channel}))
                .await
                .unwrap();
        }
    }
    let mut messages = Vec::new();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut settle_until: Option<Instant> = None;
    loop {
        match tokio::time::timeout_at(settle_until.unwrap_or(deadline), client.recv()).await {
            Err(_) if settle_until.is_some() => break,
            Err(_) => panic!("no snapshot of {channels:?} within 5 s: {messages:?}"),
            Ok(Ok(Some(m))) => {
                let wanted = m["channel"].as_str().is_some_and(|c| channels.contains(&c));
                if wanted && m["type"] != "subscribed" && m.get("seq").is_none() {
                    seen.insert(m["channel"].as_str().unwrap().to_owned());
                }
                messages.push(m);
                if seen.len() == channels.len() && settle_until.is_none() {
                    settle_until = Some(Instant::now() + settle);
                }
            }
            Ok(other) => panic!("fresh connection ended: {other:?}"),
        }
    }
    Fresh { messages }
}

/// A `portfolio_full` as [`Portfolio::to_json`] gives it.
fn normalize_portfolio(full: &Value) -> Value {
    let mut positions = full["positions"].as_array().unwrap().clone();
    positions.sort_by_key(|p| p["id"].as_u64());
    json!({"login": full["login"], "account": full["account"], "positions": positions})
}

fn normalize_orders(full: &Value) -> Value {
    let mut orders = full["orders"].as_array().unwrap().clone();
    orders.sort_by_key(|o| o["id"].as_u64());
    Value::Array(orders)
}

fn normalize_exposure(table: &Value) -> Value {
    let mut rows = table["symbols"].as_array().unwrap().clone();
    rows.sort_by(|a, b| a["symbol"].as_str().cmp(&b["symbol"].as_str()));
    Value::Array(rows)
}

/// POST /v1/events: every event accepted.
async fn post(server: &Server, events: &[Value]) {
    let (status, body) = server.post_events(&json!(events)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["rejected"].as_array().is_none_or(|r| r.is_empty()),
        "events rejected: {body}"
    );
}

/// JavaScript's `Math.round` (half up), so the feed matches the JS tests' one.
fn js_round(x: f64) -> f64 {
    (x + 0.5).floor()
}

fn r5(x: f64) -> f64 {
    js_round(x * 1e5) / 1e5
}

/// Ingest events with per-source counters (one `src` for trades, one for ticks).
struct Feed {
    src: String,
    seq: u64,
    tick_seq: u64,
    ts: u64,
    deal: u64,
}

impl Feed {
    fn new(src: &str) -> Feed {
        Feed {
            src: src.into(),
            seq: 0,
            tick_seq: 0,
            ts: 1_717_430_400_000,
            deal: 500_000,
        }
    }

    fn ev(&mut self, kind: &str, fields: Value) -> Value {
        self.ts += 7;
        self.seq += 1;
        let mut event = json!({"v":1,"type":kind,"src":self.src,"seq":self.seq,"ts":self.ts});
        let object = event.as_object_mut().unwrap();
        for (k, v) in fields.as_object().unwrap() {
            object.insert(k.clone(), v.clone());
        }
        event
    }

    fn account(&mut self, login: u64, balance: f64, name: &str) -> Value {
        self.ev(
            "account",
            json!({"login":login,"name":name,"ccy":"USD","leverage":100,"balance":balance,"credit":0.0}),
        )
    }

    fn tick(&mut self, symbol: &str, bid: f64) -> Value {
        self.ts += 3;
        self.tick_seq += 1;
        json!({"v":1,"type":"tick","src":format!("{}/ticks", self.src),"seq":self.tick_seq,"ts":self.ts,
            "symbol":symbol,"bid":r5(bid),"ask":r5(bid + 0.0002),"digits":5})
    }

    fn open(&mut self, login: u64, id: u64, side: &str, lots: f64, price_open: f64) -> Value {
        self.ev(
            "position",
            json!({"op":"open","login":login,"position_id":id,"symbol":"EURUSD","side":side,
                "vol":js_round(lots * 10000.0) as u64,"price_open":price_open,"digits":5,"contract_size":100000}),
        )
    }

    fn update(&mut self, login: u64, id: u64, fields: Value) -> Value {
        let mut body = json!({"op":"update","login":login,"position_id":id});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        self.ev("position", body)
    }

    fn close_deal(
        &mut self,
        login: u64,
        id: u64,
        side: &str,
        lots: f64,
        price: f64,
        profit: f64,
    ) -> Value {
        self.deal += 1;
        let action = if side == "buy" { "sell" } else { "buy" };
        self.ev(
            "deal",
            json!({"login":login,"deal":self.deal,"position_id":id,"action":action,"entry":"out","symbol":"EURUSD",
                "vol":js_round(lots * 10000.0) as u64,"price":price,"profit":profit,"digits":5,"contract_size":100000}),
        )
    }

    fn close(&mut self, login: u64, id: u64, profit: f64) -> Value {
        let deal = self.deal;
        self.ev(
            "position",
            json!({"op":"close","login":login,"position_id":id,"close_deal":deal,"profit":profit}),
        )
    }

    fn deposit(&mut self, login: u64, amount: f64) -> Value {
        self.deal += 1;
        let deal = self.deal;
        self.ev(
            "deal",
            json!({"login":login,"deal":deal,"action":"balance","profit":amount}),
        )
    }

    fn order_add(&mut self, login: u64, order: u64, kind: &str, lots: f64, price: f64) -> Value {
        let vol = js_round(lots * 10000.0) as u64;
        self.ev(
            "order",
            json!({"op":"add","login":login,"order":order,"symbol":"EURUSD","order_type":kind,"state":"placed",
                "vol_initial":vol,"vol_current":vol,"price_order":price}),
        )
    }

    fn order_update(&mut self, login: u64, order: u64, sl: f64) -> Value {
        self.ev(
            "order",
            json!({"op":"update","login":login,"order":order,"sl":sl}),
        )
    }

    fn order_delete(&mut self, login: u64, order: u64) -> Value {
        self.ev(
            "order",
            json!({"op":"delete","login":login,"order":order,"state":"canceled"}),
        )
    }

    fn ib_link(&mut self, login: u64, ib: u64) -> Value {
        self.ev("ib_link", json!({"op":"set","login":login,"ib":ib}))
    }

    fn margin_call(&mut self, login: u64) -> Value {
        self.ev(
            "margin_call",
            json!({"op":"enter","login":login,"equity":900.0,"margin":1000.0,"margin_level":90.0,"threshold":100.0}),
        )
    }
}

/// mulberry32, as in the JS tests.
fn prng(seed: u32) -> impl FnMut() -> f64 {
    let mut a = seed;
    move || {
        a = a.wrapping_add(0x6d2b_79f5);
        let mut t = a;
        t = (t ^ (t >> 15)).wrapping_mul(t | 1);
        t ^= t.wrapping_add((t ^ (t >> 7)).wrapping_mul(t | 61));
        f64::from(t ^ (t >> 14)) / 4_294_967_296.0
    }
}

struct Trading {
    batches: Vec<Vec<Value>>,
    events: Vec<Value>,
    last_price: f64,
}

/// A deterministic trading session for `logins` (the JS tests' `tradingSession`):
/// accounts, positions opened, modified (sl/tp, partial volume), closed with a deal,
/// deposits, orders added/modified/deleted, and ticks in between; in batches of 6.
fn trading_session(feed: &mut Feed, logins: &[u64], steps: usize, seed: u32) -> Trading {
    let mut rnd = prng(seed);
    let mut events = Vec::new();
    let mut price = 1.1;
    let mut next_id = 1000;
    // In insertion order, like the JS Maps.
    let mut open: Vec<(u64, u64, &str, f64)> = Vec::new(); // id, login, side, lots
    let mut orders: Vec<(u64, u64)> = Vec::new(); // order, login
    for &login in logins {
        events.push(feed.account(login, 10000.0, &format!("Trader {login}")));
    }
    events.push(feed.tick("EURUSD", price));
    for i in 0..steps {
        let login = logins[(rnd() * logins.len() as f64) as usize];
        let r = rnd();
        let mine: Vec<usize> = (0..open.len()).filter(|&k| open[k].1 == login).collect();
        if r < 0.25 || mine.is_empty() {
            next_id += 1;
            let side = if rnd() < 0.5 { "buy" } else { "sell" };
            let lots = 0.1 * (1.0 + (rnd() * 10.0).floor());
            open.push((next_id, login, side, lots));
            events.push(feed.open(login, next_id, side, lots, r5(price)));
        } else if r < 0.4 {
            let k = mine[(rnd() * mine.len() as f64) as usize];
            let sl = r5(price - 0.005);
            let tp = r5(price + 0.005 + rnd() * 0.01);
            events.push(feed.update(login, open[k].0, json!({"sl":sl,"tp":tp})));
        } else if r < 0.48 {
            let k = mine[(rnd() * mine.len() as f64) as usize];
            if open[k].3 > 0.15 {
                open[k].3 = js_round(open[k].3 / 2.0 * 100.0) / 100.0;
                let vol = js_round(open[k].3 * 10000.0) as u64;
                events.push(feed.update(login, open[k].0, json!({"vol":vol})));
            }
        } else if r < 0.63 {
            let k = mine[(rnd() * mine.len() as f64) as usize];
            let (id, _, side, lots) = open[k];
            let profit = js_round((rnd() - 0.5) * 200.0 * 100.0) / 100.0;
            events.push(feed.close_deal(login, id, side, lots, price, profit));
            events.push(feed.close(login, id, profit));
            open.remove(k);
        } else if r < 0.7 {
            let amount = js_round(rnd() * 1000.0);
            events.push(feed.deposit(login, amount));
        } else if r < 0.78 {
            let order = 90000 + i as u64;
            orders.push((order, login));
            let at = r5(price - 0.002);
            let kind = if rnd() < 0.5 {
                "buy_limit"
            } else {
                "sell_stop"
            };
            events.push(feed.order_add(login, order, kind, 1.0, at));
        } else if r < 0.85 && !orders.is_empty() {
            let (order, l) = orders[(rnd() * orders.len() as f64) as usize];
            events.push(feed.order_update(l, order, r5(price - 0.01)));
        } else if r < 0.9 && !orders.is_empty() {
            let k = (rnd() * orders.len() as f64) as usize;
            let (order, l) = orders.remove(k);
            events.push(feed.order_delete(l, order));
        } else {
            price += (rnd() - 0.5) * 0.002;
            events.push(feed.tick("EURUSD", price));
        }
        if i % 5 == 4 {
            price += (rnd() - 0.5) * 0.001;
            events.push(feed.tick("EURUSD", price));
        }
    }
    Trading {
        batches: events.chunks(6).map(<[Value]>::to_vec).collect(),
        events,
        last_price: price,
    }
}

/// Poll until the models of `app` equal a fresh snapshot of `server` (trader 42), and
/// the session's position on `portfolio:42` is the node's.
async fn until_models_equal_fresh(app: &mut App, server: &Server, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        app.read_for(Duration::from_millis(30)).await;
        let fresh = fresh_snapshot(
            server,
            42,
            Role::Client,
            &["portfolio:42", "orders:42"],
            Duration::from_millis(150),
        )
        .await;
        app.drain();
        let want_portfolio = normalize_portfolio(fresh.last("portfolio:42", "portfolio_full"));
        let want_orders = normalize_orders(fresh.last("orders:42", "orders_full"));
        let held = app
            .session
            .channel("portfolio:42")
            .await
            .and_then(|c| c.seq);
        let node = fresh.subscribed_seq("portfolio:42");
        let (portfolio, orders) = (app.portfolio.to_json(), app.orders.to_json());
        if portfolio == want_portfolio && orders == want_orders && held == Some(node) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the models never equalled a fresh snapshot:\nportfolio {portfolio}\nfresh     {want_portfolio}\n\
             orders {orders}\nfresh  {want_orders}\nsession at {held:?}, node at {node}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Connect, default channels, subscribe errors, tokens.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_welcome_default_channels_per_role_and_state_events() {
    let server = Server::start(&[]);
    let roles = [
        (
            42,
            "client",
            vec!["portfolio:42", "orders:42", "prices:forex"],
        ),
        (7, "ib", vec!["commissions:7", "network:7"]),
        (1, "admin", vec!["exposure", "alerts"]),
    ];
    for (sub, name, channels) in roles {
        // A token printed by the binary itself works as well as one minted here.
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tradecast"))
            .args(["token", "--sub", &sub.to_string(), "--role", name])
            .args(["--jwt-secret", SECRET])
            .output()
            .unwrap();
        let printed = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let mut app = App::connect(SessionOptions::new(server.public, printed)).await;
        app.until("open", WAIT, |app| {
            app.count(|e| matches!(e, Event::Open(_))) == 1
        })
        .await;
        let welcome = app
            .events
            .iter()
            .find_map(|e| match e {
                Event::Open(w) => Some(w.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(welcome.user, sub);
        assert_eq!(welcome.role, name);
        assert_eq!(welcome.channels, strings(&channels));
        assert_eq!(app.session.state(), ConnectionState::Open);
        app.until("the default subscriptions", WAIT, |app| {
            app.count(|e| matches!(e, Event::Subscribed(_))) == channels.len()
        })
        .await;
        let subscribed: Vec<&str> = app
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Subscribed(s) => Some(s.channel.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(subscribed, channels);
        assert!(
            matches!(app.events[0], Event::Connecting { attempt: 0 }),
            "{:?}",
            app.events[0]
        );
        let infos = app.session.channels().await;
        assert_eq!(
            infos.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            channels
        );
        for info in &infos {
            let durable = !(info.name.starts_with("prices:") || info.name == "exposure");
            assert_eq!(info.durable, durable, "{info:?}");
            assert_eq!(info.seq, Some(0), "{info:?}");
            assert!(info.epoch.is_some(), "{info:?}");
            assert!(!info.resyncing, "{info:?}");
        }
        assert!(app.session.ping().await.is_ok());
        app.session.close().await;
        assert_eq!(app.session.state(), ConnectionState::Closed);
        app.read_for(Duration::from_millis(50)).await;
        assert!(matches!(
            app.events.last(),
            Some(Event::Closed { code: 1000, .. })
        ));
        assert!(app.reconnecting().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_provider_is_called_once_subscribe_errors_and_unsubscribe() {
    let server = Server::start(&[]);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let provider = Token::provider(move |reason| {
        seen.lock().unwrap().push(reason);
        async { Ok(token(42, Role::Client)) }
    });
    let mut opts = SessionOptions::new(server.public, provider);
    let (sent, hook) = recorder();
    opts.hooks.on_sent = Some(hook);
    let mut app = App::connect(opts).await;
    assert_eq!(*calls.lock().unwrap(), [TokenReason::Initial]);
    let session = app.session.handle();

    // Another trader's channel, the risk desk's channels: forbidden.
    for channel in ["portfolio:43", "alerts", "exposure", "commissions:7"] {
        let error = session.subscribe(channel).await.unwrap_err();
        assert_eq!(error.code, "forbidden", "{error}");
        assert_eq!(error.channel.as_deref(), Some(channel));
        assert!(
            session.channel(channel).await.is_none(),
            "a refused channel is not kept"
        );
    }
    for channel in ["portfolio:abc", "nope"] {
        let error = session.subscribe(channel).await.unwrap_err();
        assert_eq!(error.code, "invalid_channel", "{error}");
    }
    assert_eq!(
        session.state(),
        ConnectionState::Open,
        "errors leave the connection open"
    );

    // An extra channel: subscribed, kept, then dropped.
    let reply = session.subscribe("prices:metals").await.unwrap();
    assert_eq!(reply.channel, "prices:metals");
    assert!(!reply.recovered);
    assert!(session.channel("prices:metals").await.is_some());
    // A held channel resyncs (a fresh snapshot).
    let resync = session.subscribe("orders:42").await.unwrap();
    assert!(!resync.recovered);
    session.unsubscribe("prices:metals").await.unwrap();
    assert!(session.channel("prices:metals").await.is_none());
    // Default channels can be unsubscribed too.
    session.unsubscribe("prices:forex").await.unwrap();
    let names: Vec<String> = session
        .channels()
        .await
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["portfolio:42", "orders:42"]);
    assert!(
        sent.lock()
            .unwrap()
            .iter()
            .any(|m| m["type"] == "unsubscribe")
    );
    assert!(session.ping().await.is_ok());
    app.drain();
    assert_eq!(
        app.count(|e| matches!(e, Event::Error(_))),
        0,
        "errors answered to a request fail that request only: {:?}",
        app.summary()
    );
    assert_eq!(app.orders.orders.len(), 0);
    assert!(app.orders.ready, "the resync's snapshot was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_token_refused_at_the_upgrade_closes_without_a_reconnect_loop() {
    let server = Server::start(&[]);
    let bad = signed_token(
        &json!({"sub":"42","role":"client","exp":now_secs() + 3600}),
        "another-secret",
    );
    let mut opts = SessionOptions::new(server.public, bad);
    opts.backoff_initial = Duration::from_millis(10);
    let mut session = Session::new(opts);
    let error = session.open().await.unwrap_err();
    assert_eq!(error.code, "closed", "{error}");
    assert!(error.message.contains("401"), "{error}");
    assert_eq!(session.state(), ConnectionState::Closed);
    let mut events = Vec::new();
    while let Some(e) = session.try_next_event() {
        events.push(e);
    }
    assert!(
        !events.iter().any(|e| matches!(e, Event::Reconnecting(_))),
        "{events:?}"
    );
    assert!(matches!(
        events.last(),
        Some(Event::Closed { code: 4001, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_from_a_provider_are_asked_again_with_backoff_until_one_works() {
    let server = Server::start(&[]);
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = reasons.clone();
    let provider = Token::provider(move |reason| {
        let mut reasons = seen.lock().unwrap();
        reasons.push(reason);
        let n = reasons.len() as u64;
        async move {
            Ok(if n < 3 {
                signed_token(
                    &json!({"sub":"42","role":"client","exp":now_secs() + 3600 + n}),
                    "wrong-secret",
                )
            } else {
                token(42, Role::Client)
            })
        }
    });
    let mut opts = SessionOptions::new(server.public, provider);
    opts.backoff_initial = Duration::from_millis(20);
    opts.backoff_max = Duration::from_millis(100);
    let mut app = App::connect(opts).await;
    assert_eq!(
        *reasons.lock().unwrap(),
        [
            TokenReason::Initial,
            TokenReason::Rejected,
            TokenReason::Rejected
        ]
    );
    app.drain();
    let reconnecting = app.reconnecting();
    assert_eq!(reconnecting.len(), 2, "{reconnecting:?}");
    assert!(
        reconnecting.iter().all(|r| r.reason.contains("401")),
        "{reconnecting:?}"
    );
    assert_eq!(
        reconnecting.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2],
        "each refusal counts as a failed attempt (backoff)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_4001_asks_the_provider_again_and_resumes_never_with_the_same_token() {
    let server = Server::start(&[]);
    // Valid for about 1 s: the node closes the connection with 4001 when `exp` passes.
    let tokens = [
        token_expiring_in(42, "client", 1),
        token_expiring_in(42, "client", 3600),
    ];
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = reasons.clone();
    let provider = Token::provider(move |reason| {
        let mut reasons = seen.lock().unwrap();
        reasons.push(reason);
        let token = tokens[reasons.len() - 1].clone();
        async move { Ok(token) }
    });
    let mut app = App::connect(SessionOptions::new(server.public, provider)).await;
    app.until("a reconnect", Duration::from_secs(4), |app| {
        !app.reconnecting().is_empty()
    })
    .await;
    let first = app.reconnecting()[0].clone();
    assert_eq!(first.code, 4001);
    assert_eq!(first.delay, Duration::ZERO, "a new token needs no backoff");
    app.until("the resume", Duration::from_secs(4), |app| {
        !app.resumed().is_empty()
    })
    .await;
    assert_eq!(
        app.resumed(),
        [(strings(&["orders:42", "portfolio:42"]), vec![])]
    );
    assert_eq!(
        *reasons.lock().unwrap(),
        [TokenReason::Initial, TokenReason::Expired]
    );
    assert_eq!(app.session.state(), ConnectionState::Open);

    // A fixed token that expires: closed for good, with the code.
    let mut fixed = App::connect(SessionOptions::new(
        server.public,
        token_expiring_in(42, "client", 1),
    ))
    .await;
    fixed
        .until("closed", Duration::from_secs(4), |app| {
            app.count(|e| matches!(e, Event::Closed { .. })) == 1
        })
        .await;
    assert!(matches!(
        fixed.events.last(),
        Some(Event::Closed { code: 4001, .. })
    ));
    assert_eq!(fixed.session.state(), ConnectionState::Closed);

    // A provider that has nothing new: closed, not a reconnect with the same token.
    let same = token_expiring_in(42, "client", 1);
    let asked = Arc::new(Mutex::new(0));
    let count = asked.clone();
    let stuck = Token::provider(move |_| {
        *count.lock().unwrap() += 1;
        let token = same.clone();
        async move { Ok(token) }
    });
    let mut stuck = App::connect(SessionOptions::new(server.public, stuck)).await;
    stuck
        .until("closed", Duration::from_secs(4), |app| {
            app.count(|e| matches!(e, Event::Closed { .. })) == 1
        })
        .await;
    assert!(matches!(
        stuck.events.last(),
        Some(Event::Closed { code: 4001, .. })
    ));
    assert_eq!(*asked.lock().unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stuck.session.state(), ConnectionState::Closed);
}

// ---------------------------------------------------------------------------------
// Heartbeat.

const HEARTBEAT_MS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_pings_every_heartbeat_and_keeps_the_link() {
    let server = Server::start(&["--heartbeat-ms", &HEARTBEAT_MS.to_string()]);
    // tokio-websockets answers the node's WebSocket pings by itself (it cannot be
    // turned off), so the node would keep this link anyway: what is checked is that
    // the session sends its own JSON pings at the node's pace and stays on one
    // connection (the JS test turns auto-pong off to show the pings alone suffice).
    let mut opts = options(&server, 42, Role::Client);
    let (sent, hook) = recorder();
    opts.hooks.on_sent = Some(hook);
    let mut app = App::connect(opts).await;
    let welcome = app.session.welcome().await.unwrap();
    assert_eq!(welcome.heartbeat_ms, HEARTBEAT_MS);
    app.read_for(Duration::from_millis(10 * HEARTBEAT_MS)).await;
    assert_eq!(app.session.state(), ConnectionState::Open);
    assert!(app.reconnecting().is_empty(), "{:?}", app.summary());
    assert_eq!(app.count(|e| matches!(e, Event::Open(_))), 1);
    let pings = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "ping")
        .count();
    assert!(
        (7..=11).contains(&pings),
        "{pings} pings in {} ms",
        10 * HEARTBEAT_MS
    );
    assert_eq!(app.session.stats().await.connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_detected_as_a_dead_link_and_the_session_resumes() {
    let server = Server::start(&["--heartbeat-ms", &HEARTBEAT_MS.to_string()]);
    let mut opts = options(&server, 42, Role::Client);
    opts.heartbeat = Duration::from_millis(200); // below the node's 300: the smaller wins
    opts.connect_timeout = Duration::from_secs(1);
    opts.backoff_initial = Duration::from_millis(50);
    opts.backoff_max = Duration::from_millis(200);
    let mut app = App::connect(opts).await;
    let mut feed = Feed::new("hb");
    post(
        &server,
        &[
            feed.account(42, 5000.0, "Trader 42"),
            feed.open(42, 7001, "buy", 1.0, 1.1),
        ],
    )
    .await;
    app.until("the first messages", WAIT, |app| {
        app.durable_seqs("portfolio:42").len() == 2
    })
    .await;

    server.pause();
    let frozen_at = Instant::now();
    app.until("the dead link", Duration::from_secs(3), |app| {
        !app.reconnecting().is_empty()
    })
    .await;
    let detected_after = frozen_at.elapsed();
    server.resume();
    let r = app.reconnecting()[0].clone();
    assert!(r.reason.contains("heartbeat timeout"), "{r:?}");
    assert_eq!(r.code, 4000);
    // Nothing for 2 intervals after a ping: between 2 and 3 intervals of silence.
    assert!(
        detected_after >= Duration::from_millis(2 * 200 - 50)
            && detected_after < Duration::from_millis(3 * 200 + 300),
        "detected after {detected_after:?}"
    );

    // Published while the session is away (or just back): a replay or live, never lost.
    post(&server, &[feed.update(42, 7001, json!({"tp":1.2}))]).await;
    app.until("the resume", Duration::from_secs(5), |app| {
        !app.resumed().is_empty()
    })
    .await;
    // Same process, same epoch: a lossless replay, no snapshot.
    assert_eq!(
        app.resumed(),
        [(strings(&["orders:42", "portfolio:42"]), vec![])]
    );
    assert_eq!(app.session.state(), ConnectionState::Open);
    post(&server, &[feed.update(42, 7001, json!({"sl":1.09}))]).await;
    app.until("the last update", WAIT, |app| {
        app.durable_seqs("portfolio:42").len() == 4
    })
    .await;
    assert_eq!(app.durable_seqs("portfolio:42"), [1, 2, 3, 4]);
    assert!(app.resets().is_empty());
    app.check_durable();
    let position = &app.portfolio.positions[&7001];
    assert_eq!((position.sl, position.tp), (Some(1.09), Some(1.2)));
}

// ---------------------------------------------------------------------------------
// Models.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_equal_fresh_snapshots_after_a_stream_of_deltas() {
    let server = Server::start(&["--live-interval-ms", "50", "--exposure-interval-ms", "100"]);
    let mut trader = App::connect(options(&server, 42, Role::Client)).await;
    let mut ib = App::connect(options(&server, 7, Role::Ib)).await;
    let mut admin = App::connect(options(&server, 1, Role::Admin)).await;
    trader
        .until("the initial snapshots", WAIT, |app| {
            app.portfolio.ready && app.orders.ready
        })
        .await;
    assert_eq!(app_channel(&trader.portfolio), Some("portfolio:42"));

    let mut feed = Feed::new("sdk-test");
    post(
        &server,
        &[feed.account(42, 10000.0, "Ann Lee"), feed.ib_link(42, 7)],
    )
    .await;
    let session = trading_session(&mut feed, &[42, 43], 80, 11);
    for batch in &session.batches {
        post(&server, batch).await;
    }
    post(
        &server,
        &[
            feed.margin_call(42),
            feed.tick("EURUSD", session.last_price + 0.0007),
        ],
    )
    .await;

    // Equal to what a brand-new connection is told (live figures settle within a few
    // --live-interval-ms, the exposure table within --exposure-interval-ms).
    until_models_equal_fresh(&mut trader, &server, Duration::from_secs(5)).await;
    assert!(
        !trader.portfolio.positions.is_empty(),
        "some positions are open"
    );
    assert!(!trader.orders.orders.is_empty(), "some orders are working");
    assert!(trader.portfolio.account.is_some());

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        admin.read_for(Duration::from_millis(50)).await;
        let fresh = fresh_snapshot(
            &server,
            1,
            Role::Admin,
            &["exposure"],
            Duration::from_millis(300),
        )
        .await;
        admin.drain();
        let want = normalize_exposure(fresh.last("exposure", "exposure"));
        if admin.exposure.to_json() == want && !admin.exposure.symbols.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exposure {} never equalled {want}",
            admin.exposure.to_json()
        );
    }

    // Typed events.
    ib.until("the commissions", WAIT, |app| {
        !app.messages("client_joined").is_empty()
    })
    .await;
    ib.read_for(Duration::from_millis(100)).await;
    let closes42: Vec<u64> = session
        .events
        .iter()
        .filter(|e| e["type"] == "position" && e["op"] == "close" && e["login"] == 42)
        .map(|e| e["position_id"].as_u64().unwrap())
        .collect();
    let closed: Vec<u64> = trader
        .messages("position_closed")
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(closed, closes42, "one position_closed per close");
    assert!(!closed.is_empty());
    let joined = ib.messages("client_joined");
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["client"], 42);
    let commissions = ib.messages("commission");
    assert_eq!(
        commissions.len(),
        closes42.len(),
        "one commission per closing deal of the downline"
    );
    assert!(
        commissions
            .iter()
            .all(|c| c["client"] == 42 && c["level"] == 1 && c["amount"].as_f64().unwrap() > 0.0)
    );
    assert!(
        admin
            .messages("alert")
            .iter()
            .any(|a| a["kind"] == "margin_call" && a["login"] == 42),
        "the risk desk got the margin call"
    );
    assert_eq!(trader.messages("alert").len(), 1);
    assert_eq!(
        trader.portfolio.margin_alert.as_ref().map(|a| &a["kind"]),
        Some(&json!("margin_call"))
    );
    assert!(trader.prices.quote("EURUSD").is_some(), "prices arrive");

    // A clean stream: no duplicate, no hole, nothing lost.
    for app in [&trader, &ib, &admin] {
        app.check_durable();
        let stats = app.session.stats().await;
        assert_eq!((stats.gaps, stats.duplicates, stats.resets), (0, 0, 0));
    }
}

fn app_channel(model: &impl Model) -> Option<&str> {
    model.channel()
}

// ---------------------------------------------------------------------------------
// Kill, restart, resume.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_stream_and_restart_reconnect_reset_exact_state_no_duplicate() {
    let mut server = Server::start(&["--live-interval-ms", "50"]);
    let mut app = App::connect(fast(options(&server, 42, Role::Client))).await;
    let epoch = app.session.channel("portfolio:42").await.unwrap().epoch;

    let mut feed = Feed::new("sdk-test");
    let session = trading_session(&mut feed, &[42], 90, 5);
    let batches = &session.batches;
    let half = batches.len() / 2;
    for batch in &batches[..half] {
        post(&server, batch).await;
    }
    // One more batch in flight, and the process dies under it.
    let admin = server.admin;
    let body = json!(batches[half]).to_string();
    let in_flight =
        tokio::spawn(async move { http(admin, "POST", "/v1/events", &[], &body).await });
    tokio::time::sleep(Duration::from_millis(5)).await;
    server.kill();
    let _ = in_flight.await;
    app.until("the lost connection", WAIT, |app| {
        !app.reconnecting().is_empty()
    })
    .await;
    // From here on nothing of the old connection is delivered.
    let held_before = app
        .session
        .channel("portfolio:42")
        .await
        .unwrap()
        .seq
        .unwrap();
    assert!(
        held_before > 5,
        "the session had applied {held_before} messages"
    );
    assert_eq!(app.durable_seqs("portfolio:42").len() as u64, held_before);

    // Down for a while: the session retries with capped, jittered backoff.
    app.read_for(Duration::from_millis(600)).await;
    let reconnecting = app.reconnecting();
    assert!(reconnecting.len() >= 2, "{} attempts", reconnecting.len());
    assert!(
        reconnecting
            .iter()
            .all(|r| r.delay < Duration::from_millis(250)),
        "{reconnecting:?}"
    );
    assert_eq!(reconnecting[0].code, 1006);
    assert!(matches!(
        app.session.state(),
        ConnectionState::Reconnecting | ConnectionState::Connecting
    ));

    server.restart();
    // Back on the new node, which is still empty.
    app.until("the resume", Duration::from_secs(10), |app| {
        !app.resumed().is_empty()
    })
    .await;
    // The trade server re-sends its state (the new node lost it), then goes on.
    for batch in batches {
        post(&server, batch).await;
    }
    post(&server, &[feed.tick("EURUSD", session.last_price + 0.0004)]).await;

    assert_eq!(
        app.resumed(),
        [(vec![], strings(&["orders:42", "portfolio:42"]))]
    );
    let mut resets: Vec<(String, SubscribeCause)> = app
        .resets()
        .iter()
        .map(|r| (r.channel.clone(), r.cause))
        .collect();
    resets.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        resets,
        [
            ("orders:42".to_string(), SubscribeCause::Reconnect),
            ("portfolio:42".to_string(), SubscribeCause::Reconnect)
        ]
    );
    let reset = app.resets()[0].clone();
    let portfolio_reset = app
        .resets()
        .into_iter()
        .find(|r| r.channel == "portfolio:42")
        .unwrap()
        .clone();
    assert_eq!(portfolio_reset.previous.unwrap().seq, held_before);
    assert_ne!(Some(reset.epoch), epoch, "a new epoch");
    assert_eq!(app.session.state(), ConnectionState::Open);
    assert_eq!(app.count(|e| matches!(e, Event::Open(_))), 2);

    until_models_equal_fresh(&mut app, &server, Duration::from_secs(5)).await;

    app.check_durable(); // no duplicate, no hole, in either epoch
    let now_at = app
        .session
        .channel("portfolio:42")
        .await
        .unwrap()
        .seq
        .unwrap();
    let delivered = app.durable_seqs("portfolio:42");
    let (before, after) = delivered.split_at(held_before as usize);
    assert_eq!(before, (1..=held_before).collect::<Vec<_>>());
    // The new node's whole stream, from its first message: every one exactly once.
    assert_eq!(after, (1..=now_at).collect::<Vec<_>>());
    assert!(now_at > held_before);
    let stats = app.session.stats().await;
    assert_eq!(stats.resets, 2);
    assert_eq!(stats.connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_the_node_mid_stream_and_resume_on_another_without_loss() {
    let redis = tradecast_testkit::RedisServer::start();
    let mut a = redis::node(&redis);
    let b = redis::node(&redis);
    redis::ready(&a).await;
    redis::ready(&b).await;

    // The session's node first, then the other one (no load balancer here).
    let mut opts = fast(SessionOptions::new(
        Target::from(vec![a.public, b.public]),
        token(42, Role::Client),
    ));
    opts.connect_timeout = Duration::from_secs(5);
    let mut app = App::connect(opts).await;
    assert!(app.session.stats().await.connections == 1);

    let mut feed = Feed::new("redis-sdk");
    let session = trading_session(&mut feed, &[42], 90, 9);
    let batches = &session.batches;
    let third = batches.len() / 3;
    for batch in &batches[..third] {
        post(&b, batch).await; // into the streams, via the other node
    }
    app.until("the stream to flow", Duration::from_secs(10), |app| {
        app.durable_seqs("portfolio:42").len() >= 5
    })
    .await;

    // Mid-stream: more batches on their way while node A dies.
    for batch in &batches[third..2 * third] {
        post(&b, batch).await;
    }
    a.kill();
    app.until("the resume", Duration::from_secs(15), |app| {
        !app.resumed().is_empty()
    })
    .await;
    assert_eq!(
        app.resumed(),
        [(strings(&["orders:42", "portfolio:42"]), vec![])],
        "same epochs on every node: a replay"
    );
    for batch in &batches[2 * third..] {
        post(&b, batch).await;
    }
    post(&b, &[feed.tick("EURUSD", session.last_price + 0.0006)]).await;

    // The fresh snapshot comes from node B: compare there.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        app.read_for(Duration::from_millis(50)).await;
        let fresh = fresh_snapshot(
            &b,
            42,
            Role::Client,
            &["portfolio:42", "orders:42"],
            Duration::from_millis(300),
        )
        .await;
        app.drain();
        let want_portfolio = normalize_portfolio(fresh.last("portfolio:42", "portfolio_full"));
        let want_orders = normalize_orders(fresh.last("orders:42", "orders_full"));
        let held = app
            .session
            .channel("portfolio:42")
            .await
            .and_then(|c| c.seq);
        let node = fresh.subscribed_seq("portfolio:42");
        if app.portfolio.to_json() == want_portfolio
            && app.orders.to_json() == want_orders
            && held == Some(node)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never equal to node B's snapshot:\n{}\n{want_portfolio}\n{}\n{want_orders}\nsession at {held:?}, node at {node}",
            app.portfolio.to_json(),
            app.orders.to_json()
        );
    }

    // One epoch, every durable message exactly once.
    app.check_durable();
    assert!(app.resets().is_empty());
    for channel in ["portfolio:42", "orders:42"] {
        let at = app.session.channel(channel).await.unwrap().seq.unwrap();
        assert_eq!(
            app.durable_seqs(channel),
            (1..=at).collect::<Vec<_>>(),
            "{channel}"
        );
    }
    let stats = app.session.stats().await;
    assert_eq!(stats.connections, 2);
    assert_eq!((stats.duplicates, stats.gaps, stats.resets), (0, 0, 0));
    drop(a);
}

// ---------------------------------------------------------------------------------
// A lost message, and a drain.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_durable_message_is_detected_and_healed_by_a_resubscribe_with_since() {
    let server = Server::start(&["--live-interval-ms", "50"]);
    let mut opts = options(&server, 42, Role::Client);
    // Lose portfolio:42's seq 3 and orders:42's seq 2 on the way in, once each.
    opts.hooks.drop_durable = vec![("portfolio:42".into(), 3), ("orders:42".into(), 2)];
    let (sent, hook) = recorder();
    opts.hooks.on_sent = Some(hook);
    let (received, hook) = recorder();
    opts.hooks.on_received = Some(hook);
    let mut app = App::connect(opts).await;

    let mut feed = Feed::new("sdk-test");
    let session = trading_session(&mut feed, &[42], 50, 3);
    for batch in &session.batches {
        post(&server, batch).await;
    }
    post(&server, &[feed.tick("EURUSD", session.last_price + 0.0005)]).await;

    // POST answers once the messages are published; the session reads them a moment later.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        app.read_for(Duration::from_millis(20)).await;
        let status = app.session.status().await;
        if status.stats.gaps == 2 && status.channels.iter().all(|c| !c.resyncing) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gaps not healed: {status:?}; {:?}",
            app.summary()
        );
    }
    app.read_for(Duration::from_millis(200)).await;
    let mut gaps: Vec<(String, u64, u64)> = app
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Gap(g) => Some((g.channel.clone(), g.expected, g.received)),
            _ => None,
        })
        .collect();
    gaps.sort();
    assert_eq!(
        gaps,
        [
            ("orders:42".to_string(), 2, 3),
            ("portfolio:42".to_string(), 3, 4)
        ]
    );

    // The session asked for a replay from the last seq it applied.
    let epoch = app
        .session
        .channel("portfolio:42")
        .await
        .unwrap()
        .epoch
        .unwrap();
    let mut resubscribes: Vec<(Value, Value)> = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "subscribe")
        .map(|m| (m["channel"].clone(), m["since"].clone()))
        .collect();
    resubscribes.sort_by_key(|(c, _)| c.to_string());
    assert_eq!(
        resubscribes,
        [
            (json!("orders:42"), json!({"epoch": epoch, "seq": 1})),
            (json!("portfolio:42"), json!({"epoch": epoch, "seq": 2}))
        ]
    );
    assert!(
        app.resets().is_empty(),
        "healed by a replay, not a snapshot"
    );

    // Complete: every durable message exactly once, in order (the lost ones from the replay).
    app.check_durable();
    let seqs = app.durable_seqs("portfolio:42");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let at = app
        .session
        .channel("portfolio:42")
        .await
        .unwrap()
        .seq
        .unwrap();
    assert_eq!(seqs.len() as u64, at);
    assert!(seqs.len() > 10);
    let order_seqs = app.durable_seqs("orders:42");
    assert_eq!(
        order_seqs,
        (1..=order_seqs.len() as u64).collect::<Vec<_>>()
    );
    let lost = received
        .lock()
        .unwrap()
        .iter()
        .find(|m| m["channel"] == "portfolio:42" && m["seq"] == 3)
        .cloned()
        .unwrap();
    assert_eq!(
        app.durable("portfolio:42")[2],
        &lost,
        "the replay carried the lost message"
    );

    until_models_equal_fresh(&mut app, &server, Duration::from_secs(5)).await;
    assert_eq!(app.session.stats().await.gaps, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_reconnect_advice_and_1001_are_followed_at_once_then_the_next_node() {
    let mut node = Server::start(&["--drain-ms", "400"]);
    redis::ready(&node).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut opts = options(&node, 43, Role::Client);
    opts.backoff_initial = Duration::from_millis(50);
    opts.backoff_max = Duration::from_millis(200);
    opts.connect_timeout = Duration::from_secs(2);
    let (received, hook) = recorder();
    opts.hooks.on_received = Some(hook);
    let mut app = App::connect(opts).await;

    node.terminate();
    app.until("the move", Duration::from_secs(3), |app| {
        !app.reconnecting().is_empty()
    })
    .await;
    let first = app.reconnecting()[0].clone();
    let advice = received
        .lock()
        .unwrap()
        .iter()
        .find(|m| m["type"] == "reconnect")
        .cloned();
    assert!(
        advice
            .as_ref()
            .is_some_and(|a| a["after_ms"].as_u64().unwrap() <= 400),
        "{advice:?}"
    );
    assert_eq!(first.code, 1001, "{first:?}");
    assert_eq!(
        first.delay,
        Duration::ZERO,
        "moving is not a failure: no backoff"
    );
    assert!(node.wait_exit(Duration::from_secs(5)).is_some());
    node.restart(); // the next node, on the same address
    app.until("the resume", Duration::from_secs(10), |app| {
        !app.resumed().is_empty()
    })
    .await;
    assert_eq!(
        app.resumed(),
        [(vec![], strings(&["orders:43", "portfolio:43"]))],
        "another node: a new epoch"
    );
    assert_eq!(app.session.state(), ConnectionState::Open);
    assert!(
        app.reconnecting()[1..]
            .iter()
            .all(|r| r.code == 1006 && r.delay < Duration::from_millis(200)),
        "{:?}",
        app.reconnecting()
    );
}

#[test]
fn the_prng_matches_the_js_tests_one() {
    // mulberry32(7), as clients/js/test/support.mjs computes it.
    let mut rnd = prng(7);
    let first: Vec<f64> = (0..3).map(|_| rnd()).collect();
    assert_eq!(
        first,
        [0.011704753153026104, 0.06195825757458806, 0.97690763277933]
    );
}
