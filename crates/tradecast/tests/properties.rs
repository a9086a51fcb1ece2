//! End-to-end property tests of delivery (issue 8): random users (traders, IBs in an
//! IB tree, admins), their subscriptions (the defaults plus extra subscribe attempts,
//! forbidden and malformed ones included), random trade events posted through the
//! real ingest path (`POST /v1/events` on the admin listener), and a random schedule
//! of client behaviour: reading, pausing, disconnecting and resuming with `since`,
//! unsubscribing and resubscribing. Each case runs an in-process node on the embedded
//! broker with a small outbound queue, so bursts overflow it and slow consumers are
//! closed (4009) and resume, and the real Rust [`Client`] over real WebSockets.
//!
//! Checked for every connection of every user:
//!
//! 1. every message names a channel the user may read (an oracle written here from
//!    DESIGN.md's table), and only one the connection holds;
//! 2. a forbidden subscribe gets `error` `forbidden`, a malformed name
//!    `invalid_channel`, an allowed one `subscribed`;
//! 3. per durable channel, the messages the user accepted across all its connections
//!    are exactly the channel's durable log from where the subscription started: the
//!    durable effects of a [`tradecast_core::Engine`] fed the same events, each with
//!    the next `seq` (1, 2, 3, …), none missing, none twice, in order; a resume never
//!    answers `recovered: false`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use serde_json::{Value, json};
use support::{SECRET, http, token};
use tradecast_broker::OutboxLimits;
use tradecast_client::{Client, Closed, Connect};
use tradecast_core::{Effect, Engine, EngineConfig};
use tradecast_gateway::{Authenticator, Gateway, GatewayConfig};
use tradecast_protocol::{Role, ingest};

/// The node's outbound queue per connection: some tens of messages, so a burst of
/// events overflows it before the session writes. Every snapshot must fit in it (a
/// larger one could never be delivered), so a trader holds at most `MAX_OPEN`
/// positions.
const OUTBOX_BYTES: usize = 16 << 10;
const MAX_OPEN: usize = 20;
/// Bound on reconnects of one user in one case: more means resuming makes no progress.
const MAX_RECONNECTS: u32 = 60;
const WAIT: Duration = Duration::from_secs(10);

const TRADERS: [u64; 3] = [1, 2, 3];
const IBS: [u64; 2] = [100, 101];
const ADMIN: u64 = 900;

// ---------------------------------------------------------------------------
// The oracle: DESIGN.md, "Users" and "Wire protocol essentials".

/// What a subscribe of `name` by (`id`, `role`) must get: `subscribed`, or the
/// `error` code.
fn oracle_subscribe(role: Role, id: u64, name: &str) -> Result<(), &'static str> {
    let number = |key: &str| {
        let canonical = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_digit())
            && (key == "0" || !key.starts_with('0'));
        canonical.then(|| key.parse::<u64>().ok()).flatten()
    };
    let readable = match name.split_once(':') {
        None => match name {
            "exposure" | "alerts" => role == Role::Admin,
            _ => return Err("invalid_channel"),
        },
        Some((kind, key)) => match kind {
            "portfolio" | "orders" => {
                let login = number(key).ok_or("invalid_channel")?;
                role == Role::Admin || (role == Role::Client && login == id)
            }
            "commissions" | "network" => {
                let ib = number(key).ok_or("invalid_channel")?;
                role == Role::Admin || (role == Role::Ib && ib == id)
            }
            "prices" => {
                let group_ok = (1..=64).contains(&key.len())
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
                if !group_ok {
                    return Err("invalid_channel");
                }
                true
            }
            _ => return Err("invalid_channel"),
        },
    };
    if readable { Ok(()) } else { Err("forbidden") }
}

fn default_channels(role: Role, id: u64) -> Vec<String> {
    match role {
        Role::Client => vec![
            format!("portfolio:{id}"),
            format!("orders:{id}"),
            "prices:forex".into(),
        ],
        Role::Ib => vec![format!("commissions:{id}"), format!("network:{id}")],
        Role::Admin => vec!["exposure".into(), "alerts".into()],
    }
}

fn is_durable_channel(name: &str) -> bool {
    !(name.starts_with("prices:") || name == "exposure")
}

// ---------------------------------------------------------------------------
// Scenarios.

/// What a user does in one round, before the round's events are posted.
#[derive(Debug, Clone)]
enum Action {
    /// Read everything up to a ping's pong.
    Read,
    /// Read nothing this round.
    Pause,
    /// Close the connection; reconnect and resume after the events.
    Disconnect,
    /// Unsubscribe from the n-th channel it holds (mod their number); resubscribe
    /// with `since` in the next round.
    Unsubscribe(usize),
    /// Try to subscribe to a channel (with `since` seq 0, or without `since`).
    Attempt { name: String, since: bool },
}

/// One trade event, resolved against the scenario's state when it is built.
#[derive(Debug, Clone)]
enum EventSpec {
    Account(usize),
    Open(usize, bool),
    /// Close the trader's oldest open position: a closing deal (paying the IB chain)
    /// then the position close.
    Close(usize),
    Balance(usize, u16),
    OrderAdd(usize),
    OrderDelete(usize),
    MarginCall(usize, bool),
    Tick(bool, u16),
    Link(usize, usize),
    Unlink(usize),
    /// Many trades of one trader at once (open, then close the oldest): a burst
    /// larger than the outbound queue.
    Burst(usize, u8),
}

#[derive(Debug, Clone)]
struct Scenario {
    users: Vec<(Role, u64)>,
    /// rounds × (events, one action per user)
    rounds: Vec<(Vec<EventSpec>, Vec<Action>)>,
}

fn user() -> impl Strategy<Value = (Role, u64)> {
    prop_oneof![
        3 => prop::sample::select(TRADERS.to_vec()).prop_map(|id| (Role::Client, id)),
        2 => prop::sample::select(IBS.to_vec()).prop_map(|id| (Role::Ib, id)),
        1 => Just((Role::Admin, ADMIN)),
    ]
}

fn channel_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "portfolio:1",
        "portfolio:2",
        "orders:3",
        "commissions:100",
        "network:101",
        "commissions:1",
        "exposure",
        "alerts",
        "prices:metals",
        "prices:forex",
        "portfolio:01",
        "portfolio:+1",
        "network:18446744073709551616",
        "portfolio:1x",
        "nope:1",
        "Alerts",
    ])
    .prop_map(str::to_owned)
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::Read),
        2 => Just(Action::Pause),
        2 => Just(Action::Disconnect),
        1 => (0usize..8).prop_map(Action::Unsubscribe),
        2 => (channel_name(), any::<bool>()).prop_map(|(name, since)| Action::Attempt { name, since }),
    ]
}

fn event() -> impl Strategy<Value = EventSpec> {
    let trader = || 0usize..TRADERS.len();
    prop_oneof![
        2 => trader().prop_map(EventSpec::Account),
        4 => (trader(), any::<bool>()).prop_map(|(t, sell)| EventSpec::Open(t, sell)),
        3 => trader().prop_map(EventSpec::Close),
        1 => (trader(), 1u16..500).prop_map(|(t, a)| EventSpec::Balance(t, a)),
        1 => trader().prop_map(EventSpec::OrderAdd),
        1 => trader().prop_map(EventSpec::OrderDelete),
        1 => (trader(), any::<bool>()).prop_map(|(t, enter)| EventSpec::MarginCall(t, enter)),
        2 => (any::<bool>(), 1u16..1000).prop_map(|(gold, pips)| EventSpec::Tick(gold, pips)),
        2 => (trader(), 0usize..IBS.len()).prop_map(|(t, ib)| EventSpec::Link(t, ib)),
        1 => trader().prop_map(EventSpec::Unlink),
        2 => (trader(), 10u8..40).prop_map(|(t, n)| EventSpec::Burst(t, n)),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    prop::collection::vec(user(), 2..=4).prop_flat_map(|users| {
        let n = users.len();
        let round = (
            prop::collection::vec(event(), 1..12),
            prop::collection::vec(action(), n),
        );
        prop::collection::vec(round, 2..=5).prop_map(move |rounds| Scenario {
            users: users.clone(),
            rounds,
        })
    })
}

/// Turns event specs into valid ingest events, keeping what they refer to.
#[derive(Default)]
struct Events {
    seq: u64,
    next_id: u64,
    /// Open positions per trader, oldest first.
    open: BTreeMap<u64, Vec<u64>>,
    orders: BTreeMap<u64, Vec<u64>>,
}

impl Events {
    fn envelope(&mut self, mut body: Value) -> Value {
        self.seq += 1;
        let fields = body.as_object_mut().expect("object");
        fields.insert("v".into(), json!(1));
        fields.insert("src".into(), json!("prop"));
        fields.insert("seq".into(), json!(self.seq));
        fields.insert("ts".into(), json!(1_717_430_400_000u64 + self.seq));
        body
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn build(&mut self, spec: &EventSpec, out: &mut Vec<Value>) {
        let body = match *spec {
            EventSpec::Account(t) => {
                let login = TRADERS[t];
                json!({"type":"account","login":login,"name":format!("Trader {login}"),"ccy":"USD","leverage":100,"balance":10000.0,"credit":0.0})
            }
            EventSpec::Open(t, _) if self.open.get(&TRADERS[t]).map_or(0, Vec::len) >= MAX_OPEN => {
                return self.build(&EventSpec::Close(t), out);
            }
            EventSpec::Open(t, sell) => {
                let (login, id) = (TRADERS[t], self.id());
                self.open.entry(login).or_default().push(id);
                let side = if sell { "sell" } else { "buy" };
                json!({"type":"position","op":"open","login":login,"position_id":id,"symbol":"EURUSD","side":side,"vol":10000,"price_open":1.0841,"digits":5,"contract_size":100000})
            }
            EventSpec::Close(t) => {
                let login = TRADERS[t];
                let open = self.open.entry(login).or_default();
                if open.is_empty() {
                    return self.build(&EventSpec::Open(t, false), out);
                }
                let position = open.remove(0);
                let deal = self.id();
                let deal = json!({"type":"deal","login":login,"deal":deal,"position_id":position,"action":"sell","entry":"out","symbol":"EURUSD","vol":10000,"price":1.0851,"profit":10.0});
                let deal = self.envelope(deal);
                out.push(deal);
                json!({"type":"position","op":"close","login":login,"position_id":position})
            }
            EventSpec::Balance(t, amount) => {
                let deal = self.id();
                json!({"type":"deal","login":TRADERS[t],"deal":deal,"action":"balance","profit":amount as f64})
            }
            EventSpec::OrderAdd(t) => {
                let (login, id) = (TRADERS[t], self.id());
                self.orders.entry(login).or_default().push(id);
                json!({"type":"order","op":"add","login":login,"order":id,"symbol":"EURUSD","order_type":"buy_limit","state":"placed","vol_initial":10000,"vol_current":10000,"price_order":1.08})
            }
            EventSpec::OrderDelete(t) => {
                let login = TRADERS[t];
                let Some(id) = self.orders.entry(login).or_default().pop() else {
                    return self.build(&EventSpec::OrderAdd(t), out);
                };
                json!({"type":"order","op":"delete","login":login,"order":id,"state":"canceled"})
            }
            EventSpec::MarginCall(t, enter) => {
                let op = if enter { "enter" } else { "leave" };
                json!({"type":"margin_call","op":op,"login":TRADERS[t],"equity":900.0,"margin":1000.0,"margin_level":90.0})
            }
            EventSpec::Tick(gold, pips) => {
                let (symbol, base) = if gold {
                    ("XAUUSD", 2300.0)
                } else {
                    ("EURUSD", 1.08)
                };
                let bid = base + pips as f64 * 0.0001;
                json!({"type":"tick","symbol":symbol,"bid":bid,"ask":bid + 0.0002})
            }
            EventSpec::Link(t, ib) => {
                json!({"type":"ib_link","op":"set","login":TRADERS[t],"ib":IBS[ib]})
            }
            EventSpec::Unlink(t) => json!({"type":"ib_link","op":"remove","login":TRADERS[t]}),
            EventSpec::Burst(t, n) => {
                for _ in 0..n {
                    self.build(&EventSpec::Open(t, true), out);
                    self.build(&EventSpec::Close(t), out);
                }
                return;
            }
        };
        let event = self.envelope(body);
        out.push(event);
    }
}

// ---------------------------------------------------------------------------
// One user: its connection and what it saw.

/// Counters over all cases, printed at the end.
static RECONNECTS: AtomicU64 = AtomicU64::new(0);
static SLOW_CLOSES: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// A channel the user tracks (holds, or will resubscribe).
#[derive(Debug, Default)]
struct Tracked {
    /// The `seq` the subscription started after.
    start: u64,
    /// The last durable `seq` accepted.
    last: u64,
    /// Durable messages accepted, in order.
    log: Vec<Value>,
}

/// A subscribe or unsubscribe awaiting its reply.
#[derive(Debug)]
enum Pending {
    /// A resume (or resubscribe) with `since`: must answer `recovered: true`.
    Resume(String),
    /// An attempt: the oracle's verdict.
    Attempt(String, Result<(), &'static str>),
    Unsubscribe(String),
}

struct User {
    role: Role,
    id: u64,
    server: SocketAddr,
    client: Option<Client>,
    epoch: Option<String>,
    tracked: BTreeMap<String, Tracked>,
    /// Channels this connection holds (from the server's replies).
    held: BTreeSet<String>,
    /// Channels whose durable messages are ignored until a resume's `subscribed`.
    resyncing: BTreeSet<String>,
    /// Unsubscribed, to resubscribe with `since` next round.
    unsubscribed: BTreeSet<String>,
    pending: BTreeMap<String, Pending>,
    next_request: u64,
    reconnects: u32,
    violations: Vec<String>,
}

impl User {
    fn new(server: SocketAddr, (role, id): (Role, u64)) -> User {
        User {
            role,
            id,
            server,
            client: None,
            epoch: None,
            tracked: BTreeMap::new(),
            held: BTreeSet::new(),
            resyncing: BTreeSet::new(),
            unsubscribed: BTreeSet::new(),
            pending: BTreeMap::new(),
            next_request: 0,
            reconnects: 0,
            violations: Vec::new(),
        }
    }

    fn who(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.id)
    }

    fn violation(&mut self, what: String) {
        self.violations.push(format!("{}: {what}", self.who()));
    }

    fn request_id(&mut self, prefix: &str) -> String {
        self.next_request += 1;
        format!("{prefix}{}", self.next_request)
    }

    async fn send(&mut self, request: Value) {
        if let Some(client) = &mut self.client {
            // A failed send shows up as a close on the next read.
            let _ = client.send(&request).await;
        }
    }

    /// Open a connection; on a reconnect, resume every tracked channel with `since`.
    async fn connect(&mut self) -> Result<(), String> {
        let options = Connect::new(self.server, token(self.id, self.role));
        let mut client = Client::connect(&options)
            .await
            .map_err(|e| format!("{}: connect: {e:#}", self.who()))?;
        let welcome = client
            .recv_within(WAIT)
            .await
            .map_err(|e| format!("{}: welcome: {e:#}", self.who()))?
            .ok_or_else(|| format!("{}: closed before welcome", self.who()))?;
        let defaults = default_channels(self.role, self.id);
        if welcome["type"] != "welcome" || welcome["channels"] != json!(defaults) {
            self.violation(format!("unexpected welcome {welcome}"));
        }
        self.client = Some(client);
        self.held.clear();
        self.pending.clear();
        let first = self.tracked.is_empty() && self.epoch.is_none();
        // Default channels come back subscribed (with a snapshot): resync each one we
        // track, and resume the others (extras, unsubscribed ones) the same way.
        let resume: Vec<(String, u64)> = self
            .tracked
            .iter()
            .map(|(c, t)| (c.clone(), t.last))
            .collect();
        self.resyncing = resume.iter().map(|(c, _)| c.clone()).collect();
        self.unsubscribed.clear();
        if first {
            for channel in defaults {
                self.tracked.insert(channel, Tracked::default());
            }
        }
        for (channel, last) in resume {
            self.resume(&channel, last).await;
        }
        Ok(())
    }

    async fn resume(&mut self, channel: &str, last: u64) {
        let id = self.request_id("r");
        let epoch = self
            .epoch
            .clone()
            .expect("an epoch once something was subscribed");
        self.pending
            .insert(id.clone(), Pending::Resume(channel.to_owned()));
        self.resyncing.insert(channel.to_owned());
        self.send(json!({"type":"subscribe","channel":channel,"id":id,"since":{"epoch":epoch,"seq":last}}))
            .await;
    }

    /// The round's action, before the events.
    async fn act(&mut self, action: &Action) {
        // Resubscribe what was unsubscribed last round.
        for channel in std::mem::take(&mut self.unsubscribed) {
            if let Some(last) = self.tracked.get(&channel).map(|t| t.last) {
                self.resume(&channel, last).await;
            }
        }
        match action {
            Action::Read | Action::Pause => {}
            Action::Disconnect => {
                if let Some(client) = self.client.take() {
                    client.close().await;
                }
            }
            Action::Unsubscribe(n) => {
                let held: Vec<String> = self
                    .held
                    .iter()
                    .filter(|c| !self.resyncing.contains(*c))
                    .cloned()
                    .collect();
                if let Some(channel) = (!held.is_empty()).then(|| held[n % held.len()].clone()) {
                    let id = self.request_id("u");
                    self.pending
                        .insert(id.clone(), Pending::Unsubscribe(channel.clone()));
                    self.send(json!({"type":"unsubscribe","channel":channel,"id":id}))
                        .await;
                }
            }
            Action::Attempt { name, since } => {
                let verdict = oracle_subscribe(self.role, self.id, name);
                // Re-subscribing a channel already tracked or being resumed would need
                // the resume bookkeeping; attempts are on other channels.
                if self.tracked.contains_key(name) || self.client.is_none() {
                    return;
                }
                let id = self.request_id("a");
                self.pending
                    .insert(id.clone(), Pending::Attempt(name.clone(), verdict));
                let mut request = json!({"type":"subscribe","channel":name,"id":id});
                if *since && let Some(epoch) = &self.epoch {
                    request["since"] = json!({"epoch":epoch,"seq":0});
                }
                self.send(request).await;
            }
        }
    }

    /// Read until everything the node had queued for this user has arrived (a ping's
    /// pong), reconnecting and resuming whenever the node closes the connection as a
    /// slow consumer.
    async fn sync(&mut self) -> Result<(), String> {
        loop {
            if self.client.is_none() {
                if self.reconnects >= MAX_RECONNECTS {
                    return Err(format!(
                        "{}: no progress after {MAX_RECONNECTS} reconnects",
                        self.who()
                    ));
                }
                self.reconnects += 1;
                RECONNECTS.fetch_add(1, Ordering::Relaxed);
                self.connect().await?;
            }
            let id = self.request_id("p");
            self.send(json!({"type":"ping","id":id})).await;
            loop {
                let client = self.client.as_mut().expect("connected");
                let message = match client.recv_within(WAIT).await {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(e) => return Err(format!("{}: reading: {e:#}", self.who())),
                };
                if message["type"] == "pong" && message["id"] == json!(id) {
                    // Everything is in; the subscriptions must be settled too.
                    if !self.pending.is_empty() {
                        return Err(format!(
                            "{}: requests without a reply before the pong: {:?}",
                            self.who(),
                            self.pending
                        ));
                    }
                    return Ok(());
                }
                self.on_message(message);
            }
            // The connection ended: only the slow-consumer close is expected here.
            let client = self.client.take().expect("connected");
            match &client.closed {
                Some(Closed::Code(4009)) => SLOW_CLOSES.fetch_add(1, Ordering::Relaxed),
                // The socket was mid-write when the queue overflowed: dropped, no code.
                Some(Closed::Eof) | None => DROPPED.fetch_add(1, Ordering::Relaxed),
                Some(other) => {
                    return Err(format!(
                        "{}: closed with {other:?} ({:?})",
                        self.who(),
                        client.close_reason()
                    ));
                }
            };
        }
    }

    fn on_message(&mut self, m: Value) {
        let kind = m["type"].as_str().unwrap_or_default().to_owned();
        let id = m["id"].as_str().map(str::to_owned);
        let channel = m["channel"].as_str().map(str::to_owned);
        match kind.as_str() {
            "subscribed" => {
                let channel = channel.expect("subscribed names its channel");
                let seq = m["seq"].as_u64().expect("subscribed has a seq");
                let recovered = m["recovered"].as_bool().expect("and recovered");
                let epoch = m["epoch"].as_str().expect("and an epoch").to_owned();
                if *self.epoch.get_or_insert(epoch.clone()) != epoch {
                    self.violation(format!("the epoch changed: {m}"));
                }
                if oracle_subscribe(self.role, self.id, &channel).is_err() {
                    self.violation(format!("subscribed to a channel it may not read: {m}"));
                }
                self.held.insert(channel.clone());
                match id.and_then(|id| self.pending.remove(&id)) {
                    Some(Pending::Resume(c)) => {
                        if !recovered && is_durable_channel(&c) {
                            self.violation(format!("a resume lost continuity: {m}"));
                        }
                        self.resyncing.remove(&c);
                    }
                    Some(Pending::Attempt(c, verdict)) => {
                        ACCEPTED.fetch_add(1, Ordering::Relaxed);
                        if verdict.is_err() {
                            self.violation(format!("{c} should get {verdict:?}, got {m}"));
                        }
                        // With `since` seq 0 the whole log is replayed; without, the
                        // subscription starts at the snapshot's `seq`.
                        let start = if recovered { 0 } else { seq };
                        self.tracked.insert(
                            c,
                            Tracked {
                                start,
                                last: start,
                                log: Vec::new(),
                            },
                        );
                    }
                    Some(Pending::Unsubscribe(c)) => {
                        self.violation(format!("unsubscribe of {c} answered {m}"))
                    }
                    None => {
                        // A default channel on connect: a snapshot follows. On a
                        // reconnect it is being resumed (ignored until the reply).
                        if self.resyncing.contains(&channel) {
                            return;
                        }
                        if seq != 0 || recovered {
                            self.violation(format!("first subscription not at seq 0: {m}"));
                        }
                    }
                }
            }
            "unsubscribed" => {
                let channel = channel.expect("unsubscribed names its channel");
                match id.and_then(|id| self.pending.remove(&id)) {
                    Some(Pending::Unsubscribe(c)) if c == channel => {
                        self.held.remove(&c);
                        self.unsubscribed.insert(c);
                    }
                    other => self.violation(format!("unexpected {m} for {other:?}")),
                }
            }
            "error" => {
                let code = m["code"].as_str().unwrap_or_default().to_owned();
                match id.and_then(|id| self.pending.remove(&id)) {
                    Some(Pending::Attempt(c, verdict)) => {
                        REFUSED.fetch_add(1, Ordering::Relaxed);
                        if verdict != Err(code.as_str()) {
                            self.violation(format!("{c} should get {verdict:?}, got {m}"));
                        }
                    }
                    other => self.violation(format!("error {m} for {other:?}")),
                }
            }
            "pong" => {}
            _ => {
                let Some(channel) = channel else {
                    self.violation(format!("a message without a channel: {m}"));
                    return;
                };
                if oracle_subscribe(self.role, self.id, &channel).is_err() {
                    self.violation(format!("received a message it may not read: {m}"));
                }
                if !self.held.contains(&channel) {
                    self.violation(format!("a message on a channel it does not hold: {m}"));
                }
                let Some(seq) = m["seq"].as_u64() else {
                    return; // snapshots and ephemeral figures
                };
                if self.resyncing.contains(&channel) {
                    return; // the resume's replay carries it
                }
                let Some(tracked) = self.tracked.get_mut(&channel) else {
                    self.violation(format!("a durable message on an untracked channel: {m}"));
                    return;
                };
                if seq != tracked.last + 1 {
                    let last = tracked.last;
                    self.violation(format!("after seq {last} got {m}"));
                    return;
                }
                tracked.last = seq;
                tracked.log.push(m);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// One case.

struct Node {
    public: SocketAddr,
    admin: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_node() -> Node {
    let config = GatewayConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        admin_listen: ([127, 0, 0, 1], 0).into(),
        outbox: OutboxLimits {
            max_bytes: OUTBOX_BYTES,
        },
        // Requests are few; the rate limit is not what is under test.
        max_inbound_rate: 1000,
        drain: Duration::from_millis(100),
        ..GatewayConfig::default()
    };
    let auth = Authenticator::new(Some(SECRET), None).expect("an HS256 secret");
    let gateway = Gateway::bind(config, auth, None).await.expect("binding");
    let (public, admin) = (gateway.public_addr(), gateway.admin_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.run(async move {
        let _ = stopped.await;
    }));
    Node {
        public,
        admin,
        stop,
    }
}

/// The durable log of every channel: a fresh engine fed the same events, each durable
/// effect stamped with its channel's next `seq`.
fn expected_logs(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut engine = Engine::new(EngineConfig::default());
    let mut logs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in events {
        let parsed = ingest::parse_value(event.clone()).expect("a valid event");
        let effects = engine.apply(&parsed, 0).expect("applies");
        for effect in effects {
            if let Effect::Durable {
                channel, message, ..
            } = effect
            {
                let log = logs.entry(channel).or_default();
                let mut message: Value = serde_json::from_slice(&message).expect("JSON");
                message["seq"] = json!(log.len() as u64 + 1);
                log.push(message);
            }
        }
    }
    logs
}

async fn run_case(scenario: Scenario) -> Result<(), TestCaseError> {
    let node = start_node().await;
    let mut users: Vec<User> = scenario
        .users
        .iter()
        .map(|&u| User::new(node.public, u))
        .collect();
    // Everyone is connected and subscribed before the first event.
    for user in &mut users {
        user.connect().await.map_err(TestCaseError::fail)?;
        user.sync().await.map_err(TestCaseError::fail)?;
    }
    let mut builder = Events::default();
    let mut posted = Vec::new();
    for (specs, actions) in &scenario.rounds {
        for (user, action) in users.iter_mut().zip(actions) {
            user.act(action).await;
        }
        let mut batch = Vec::new();
        for spec in specs {
            builder.build(spec, &mut batch);
        }
        let (status, body) = http(
            node.admin,
            "POST",
            "/v1/events",
            &[],
            &Value::Array(batch.clone()).to_string(),
        )
        .await;
        prop_assert_eq!(status, 200, "{}", body);
        let outcome: Value = serde_json::from_str(&body).expect("a JSON outcome");
        prop_assert_eq!(&outcome["applied"], &json!(batch.len()), "{}", body);
        posted.extend(batch);
        // A paused user reads nothing now: its messages wait in the socket and its
        // queue on the node, and it reads them next round.
        for (user, action) in users.iter_mut().zip(actions) {
            if !matches!(action, Action::Pause) {
                user.sync().await.map_err(TestCaseError::fail)?;
            }
        }
    }
    // Everyone catches up, resubscribes what it left, and settles.
    for user in &mut users {
        user.act(&Action::Read).await;
        user.sync().await.map_err(TestCaseError::fail)?;
    }

    let expected = expected_logs(&posted);
    let none = Vec::new();
    for user in &users {
        prop_assert!(user.violations.is_empty(), "{:#?}", user.violations);
        for (channel, tracked) in &user.tracked {
            if !is_durable_channel(channel) {
                continue;
            }
            let log = expected.get(channel).unwrap_or(&none);
            let want = &log[(tracked.start as usize).min(log.len())..];
            prop_assert!(
                tracked.log == want,
                "{} on {}: got seqs {:?}, the log has {:?}\n got {:#?}\n want {:#?}",
                user.who(),
                channel,
                tracked.log.iter().map(|m| &m["seq"]).collect::<Vec<_>>(),
                want.iter().map(|m| &m["seq"]).collect::<Vec<_>>(),
                tracked.log,
                want
            );
        }
    }
    let _ = node.stop.send(());
    Ok(())
}

#[test]
fn every_durable_message_reaches_every_reader_exactly_once() {
    let config = Config {
        cases: 24,
        max_shrink_iters: 64,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&scenario(), |scenario| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let result = runtime.block_on(run_case(scenario));
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    });
    eprintln!(
        "reconnects {}, slow-consumer closes {} (4009) + {} (dropped mid-write), subscribe attempts accepted {} refused {}",
        RECONNECTS.load(Ordering::Relaxed),
        SLOW_CLOSES.load(Ordering::Relaxed),
        DROPPED.load(Ordering::Relaxed),
        ACCEPTED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
    );
    if let Err(error) = result {
        panic!("{error}");
    }
}
