//! Local state models: each one applies a channel's snapshot and then its deltas, so
//! the application reads plain data that stays equal to what a fresh snapshot would
//! say. Feed them the messages a [`Session`](crate::Session) delivers
//! ([`Event::Message`](crate::Event::Message)), or any channel message by hand.
//!
//! ```no_run
//! # async fn example(mut session: tradecast_client::Session) {
//! use tradecast_client::models::{Model, Orders, Portfolio};
//! let (mut portfolio, mut orders) = (Portfolio::new(), Orders::new());
//! while let Some(event) = session.next_event().await {
//!     if let Some(message) = event.message() {
//!         if portfolio.apply(message) {
//!             println!("equity {:?}", portfolio.account.as_ref().map(|a| a.equity));
//!         }
//!         orders.apply(message);
//!     }
//! }
//! # }
//! ```
//!
//! Every struct keeps the fields it does not know in `extra` (forward compatibility),
//! and serializes back to the wire shape (`to_json`).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Fields of a channel message that are not part of the object it describes.
const ENVELOPE: &[&str] = &["type", "channel", "seq"];
const ACCOUNT_FIELDS: &[&str] = &[
    "login",
    "name",
    "ccy",
    "balance",
    "credit",
    "equity",
    "margin",
    "margin_free",
    "margin_level",
    "leverage",
];

/// A model of one channel's state.
pub trait Model {
    /// Apply one channel message (others are ignored); true when the state changed.
    fn apply(&mut self, message: &Value) -> bool;
    /// The channel followed, once known.
    fn channel(&self) -> Option<&str>;
    /// True once a snapshot has been applied.
    fn is_ready(&self) -> bool;
}

/// An open position (`position_opened`, `portfolio_full.positions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Position {
    pub id: u64,
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Lots.
    pub volume: f64,
    pub price_open: f64,
    pub sl: Option<f64>,
    pub tp: Option<f64>,
    pub swap: f64,
    /// Live floating profit in the account currency.
    pub profit: f64,
    /// Current mark.
    pub price: Option<f64>,
    /// Open time, ms since 1970 UTC.
    pub time: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A trading account (`account_update`, `portfolio_full.account`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    pub login: u64,
    pub name: Option<String>,
    pub ccy: String,
    pub balance: f64,
    pub credit: f64,
    pub equity: f64,
    pub margin: f64,
    pub margin_free: f64,
    /// Percent; `None` when no margin is in use.
    pub margin_level: Option<f64>,
    pub leverage: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A working order (`order_update`, `orders_full.orders`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Order {
    pub id: u64,
    pub symbol: String,
    pub order_type: Option<String>,
    pub state: Option<String>,
    /// Current volume, lots.
    pub volume: Option<f64>,
    pub volume_initial: Option<f64>,
    pub price: Option<f64>,
    pub price_trigger: Option<f64>,
    pub sl: Option<f64>,
    pub tp: Option<f64>,
    pub position_id: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One row of the `exposure` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExposureRow {
    pub symbol: String,
    pub buy_lots: f64,
    pub sell_lots: f64,
    pub net_lots: f64,
    pub notional: f64,
    pub notional_usd: Option<f64>,
    pub positions: u64,
    pub profit: f64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The fields of `m` that describe the object (without the envelope and `skip`).
fn body(m: &Value, skip: &[&str]) -> Map<String, Value> {
    m.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !ENVELOPE.contains(&k.as_str()) && !skip.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn parse<T: DeserializeOwned>(fields: Map<String, Value>) -> Option<T> {
    serde_json::from_value(Value::Object(fields)).ok()
}

/// Overwrite the fields of `target` that `fields` carries; false if the result does
/// not parse (then `target` is unchanged).
fn merge<T: Serialize + DeserializeOwned>(target: &mut T, fields: Map<String, Value>) -> bool {
    let Ok(Value::Object(mut current)) = serde_json::to_value(&*target) else {
        return false;
    };
    current.extend(fields);
    match parse(current) {
        Some(merged) => {
            *target = merged;
            true
        }
        None => false,
    }
}

fn kind(m: &Value) -> &str {
    m["type"].as_str().unwrap_or_default()
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Channel binding shared by the models: a fixed channel, or the first one whose name
/// starts with `prefix`.
#[derive(Debug, Clone)]
struct Binding {
    channel: Option<String>,
    prefix: &'static str,
}

impl Binding {
    fn accepts(&mut self, m: &Value) -> bool {
        let Some(channel) = m["channel"].as_str() else {
            return false;
        };
        match &self.channel {
            Some(bound) => bound == channel,
            None if channel.starts_with(self.prefix) => {
                self.channel = Some(channel.to_owned());
                true
            }
            None => false,
        }
    }
}

// ---------------------------------------------------------------------------------
// Portfolio

/// A trader's account and open positions with live profit (`portfolio:{login}`).
///
/// Applies `portfolio_full`, `position_opened`, `position_update` (only the fields it
/// carries), `position_closed`, `account_update` (durable: the whole account; live:
/// the moving figures) and the margin-call / stop-out `alert`s.
#[derive(Debug, Clone)]
pub struct Portfolio {
    binding: Binding,
    /// True once a snapshot has been applied.
    pub ready: bool,
    pub login: Option<u64>,
    /// `None` until the node has seen the account.
    pub account: Option<Account>,
    pub positions: BTreeMap<u64, Position>,
    /// The active margin-call / stop-out alert (`op: leave` clears it).
    pub margin_alert: Option<Value>,
}

impl Default for Portfolio {
    fn default() -> Self {
        Self::new()
    }
}

impl Portfolio {
    /// Binds to the first `portfolio:` channel it sees (a trader's own).
    pub fn new() -> Portfolio {
        Portfolio {
            binding: Binding {
                channel: None,
                prefix: "portfolio:",
            },
            ready: false,
            login: None,
            account: None,
            positions: BTreeMap::new(),
            margin_alert: None,
        }
    }

    /// Follows `channel` (e.g. `portfolio:42`, for an admin watching several traders).
    pub fn on(channel: impl Into<String>) -> Portfolio {
        let mut p = Portfolio::new();
        p.binding.channel = Some(channel.into());
        p
    }

    /// Sum of the open positions' floating profit.
    pub fn profit(&self) -> f64 {
        self.positions.values().map(|p| p.profit).sum()
    }

    /// The state as a `portfolio_full` body gives it: `{login, account, positions}`
    /// with positions sorted by id.
    pub fn to_json(&self) -> Value {
        json!({
            "login": self.login,
            "account": self.account.as_ref().map(to_value),
            "positions": self.positions.values().map(to_value).collect::<Vec<_>>(),
        })
    }

    fn reduce(&mut self, m: &Value) -> bool {
        match kind(m) {
            "portfolio_full" => {
                self.login = m["login"].as_u64().or(self.login);
                self.account = match &m["account"] {
                    Value::Object(a) => parse(a.clone()),
                    _ => None,
                };
                self.positions = m["positions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| serde_json::from_value::<Position>(p.clone()).ok())
                    .map(|p| (p.id, p))
                    .collect();
                self.ready = true;
                true
            }
            "position_opened" => {
                let Some(id) = m["id"].as_u64() else {
                    return false;
                };
                let mut position = self.positions.get(&id).cloned().unwrap_or_default();
                if !merge(&mut position, body(m, &[])) {
                    return false;
                }
                self.positions.insert(id, position);
                true
            }
            "position_update" => {
                let Some(p) = m["id"].as_u64().and_then(|id| self.positions.get_mut(&id)) else {
                    return false; // unknown (already closed): the next snapshot has the truth
                };
                merge(p, body(m, &[]))
            }
            "position_closed" => m["id"]
                .as_u64()
                .is_some_and(|id| self.positions.remove(&id).is_some()),
            "account_update" => {
                // A live update (no seq) carries only the moving figures: it needs an account.
                let durable = m.get("seq").is_some_and(Value::is_u64);
                if self.account.is_none() && !durable {
                    return false;
                }
                let fields: Map<String, Value> = body(m, &[])
                    .into_iter()
                    .filter(|(k, _)| ACCOUNT_FIELDS.contains(&k.as_str()))
                    .collect();
                let mut account = self.account.clone().unwrap_or_default();
                if !merge(&mut account, fields) {
                    return false;
                }
                self.account = Some(account);
                true
            }
            "alert" => {
                let alert_kind = m["kind"].as_str().unwrap_or_default();
                if alert_kind != "margin_call" && alert_kind != "stop_out" {
                    return false;
                }
                self.margin_alert = (m["op"] != "leave").then(|| m.clone());
                true
            }
            _ => false,
        }
    }
}

impl Model for Portfolio {
    fn apply(&mut self, message: &Value) -> bool {
        self.binding.accepts(message) && self.reduce(message)
    }
    fn channel(&self) -> Option<&str> {
        self.binding.channel.as_deref()
    }
    fn is_ready(&self) -> bool {
        self.ready
    }
}

// ---------------------------------------------------------------------------------
// Orders

/// A trader's working orders (`orders:{login}`): `orders_full`, then `order_update`
/// (`add` / `update` replace the order, `delete` removes it).
#[derive(Debug, Clone)]
pub struct Orders {
    binding: Binding,
    pub ready: bool,
    pub login: Option<u64>,
    pub orders: BTreeMap<u64, Order>,
}

impl Default for Orders {
    fn default() -> Self {
        Self::new()
    }
}

impl Orders {
    /// Binds to the first `orders:` channel it sees.
    pub fn new() -> Orders {
        Orders {
            binding: Binding {
                channel: None,
                prefix: "orders:",
            },
            ready: false,
            login: None,
            orders: BTreeMap::new(),
        }
    }

    /// Follows `channel` (e.g. `orders:42`).
    pub fn on(channel: impl Into<String>) -> Orders {
        let mut o = Orders::new();
        o.binding.channel = Some(channel.into());
        o
    }

    /// The orders as `orders_full.orders` gives them, sorted by id.
    pub fn to_json(&self) -> Value {
        Value::Array(self.orders.values().map(to_value).collect())
    }

    fn reduce(&mut self, m: &Value) -> bool {
        match kind(m) {
            "orders_full" => {
                self.login = m["login"].as_u64().or(self.login);
                self.orders = m["orders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| serde_json::from_value::<Order>(o.clone()).ok())
                    .map(|o| (o.id, o))
                    .collect();
                self.ready = true;
                true
            }
            "order_update" => {
                let Some(id) = m["id"].as_u64() else {
                    return false;
                };
                if m["op"] == "delete" {
                    return self.orders.remove(&id).is_some();
                }
                match parse::<Order>(body(m, &["op"])) {
                    Some(order) => {
                        self.orders.insert(id, order);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }
}

impl Model for Orders {
    fn apply(&mut self, message: &Value) -> bool {
        self.binding.accepts(message) && self.reduce(message)
    }
    fn channel(&self) -> Option<&str> {
        self.binding.channel.as_deref()
    }
    fn is_ready(&self) -> bool {
        self.ready
    }
}

// ---------------------------------------------------------------------------------
// Exposure

/// Net exposure per symbol across all clients (`exposure`, admins): each `exposure`
/// table replaces the state.
#[derive(Debug, Clone)]
pub struct Exposure {
    binding: Binding,
    pub ready: bool,
    pub symbols: BTreeMap<String, ExposureRow>,
}

impl Default for Exposure {
    fn default() -> Self {
        Self::new()
    }
}

impl Exposure {
    pub fn new() -> Exposure {
        Exposure {
            binding: Binding {
                channel: Some("exposure".into()),
                prefix: "exposure",
            },
            ready: false,
            symbols: BTreeMap::new(),
        }
    }

    /// The table's rows sorted by symbol.
    pub fn to_json(&self) -> Value {
        Value::Array(self.symbols.values().map(to_value).collect())
    }
}

impl Model for Exposure {
    fn apply(&mut self, m: &Value) -> bool {
        if !self.binding.accepts(m) || kind(m) != "exposure" {
            return false;
        }
        self.symbols = m["symbols"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| serde_json::from_value::<ExposureRow>(r.clone()).ok())
            .map(|r| (r.symbol.clone(), r))
            .collect();
        self.ready = true;
        true
    }
    fn channel(&self) -> Option<&str> {
        self.binding.channel.as_deref()
    }
    fn is_ready(&self) -> bool {
        self.ready
    }
}

// ---------------------------------------------------------------------------------
// Prices

/// The last `price` message per symbol of a price group (`prices:{group}`).
#[derive(Debug, Clone)]
pub struct Prices {
    binding: Binding,
    pub ready: bool,
    pub quotes: BTreeMap<String, Value>,
}

impl Default for Prices {
    fn default() -> Self {
        Self::new()
    }
}

impl Prices {
    /// Binds to the first `prices:` channel it sees.
    pub fn new() -> Prices {
        Prices {
            binding: Binding {
                channel: None,
                prefix: "prices:",
            },
            ready: false,
            quotes: BTreeMap::new(),
        }
    }

    /// Follows `channel` (e.g. `prices:metals`).
    pub fn on(channel: impl Into<String>) -> Prices {
        let mut p = Prices::new();
        p.binding.channel = Some(channel.into());
        p
    }

    /// `(bid, ask)` of `symbol`, if quoted.
    pub fn quote(&self, symbol: &str) -> Option<(f64, f64)> {
        let q = self.quotes.get(symbol)?;
        Some((q["bid"].as_f64()?, q["ask"].as_f64()?))
    }
}

impl Model for Prices {
    fn apply(&mut self, m: &Value) -> bool {
        if !self.binding.accepts(m) || kind(m) != "price" {
            return false;
        }
        let Some(symbol) = m["symbol"].as_str() else {
            return false;
        };
        self.quotes.insert(symbol.to_owned(), m.clone());
        self.ready = true;
        true
    }
    fn channel(&self) -> Option<&str> {
        self.binding.channel.as_deref()
    }
    fn is_ready(&self) -> bool {
        self.ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(id: u64, seq: u64) -> Value {
        json!({"type":"position_opened","channel":"portfolio:42","id":id,"symbol":"EURUSD","side":"buy",
            "volume":1.0,"price_open":1.1,"sl":null,"tp":null,"swap":0.0,"profit":0.0,"price":1.1,"time":1,"seq":seq})
    }

    #[test]
    fn portfolio_applies_snapshot_and_deltas() {
        let mut p = Portfolio::new();
        assert!(!p.apply(&json!({"type":"orders_full","channel":"orders:42","orders":[]})));
        assert!(p.apply(&json!({"type":"portfolio_full","channel":"portfolio:42","login":42,"account":null,"positions":[]})));
        assert_eq!(p.channel(), Some("portfolio:42"));
        assert!(p.ready);
        assert!(
            !p.apply(&json!({"type":"account_update","channel":"portfolio:42","equity":5.0})),
            "live needs an account"
        );
        assert!(p.apply(&json!({"type":"account_update","channel":"portfolio:42","login":42,"name":"Ann","ccy":"USD",
            "balance":10.0,"credit":0.0,"equity":10.0,"margin":0.0,"margin_free":10.0,"margin_level":null,"leverage":100,
            "kind":"balance","amount":10.0,"deal":1,"seq":1})));
        assert!(p.apply(&position(7, 2)));
        assert!(p.apply(
            &json!({"type":"position_update","channel":"portfolio:42","id":7,"sl":1.05,"seq":3})
        ));
        assert!(p.apply(&json!({"type":"position_update","channel":"portfolio:42","id":7,"profit":12.5,"price":1.2})));
        assert!(!p.apply(
            &json!({"type":"position_update","channel":"portfolio:42","id":8,"profit":1.0})
        ));
        assert!(p.apply(&json!({"type":"account_update","channel":"portfolio:42","equity":22.5,"margin":1.0,"margin_free":21.5,"margin_level":2250.0})));
        assert!(
            !p.apply(
                &position(9, 4)
                    .as_object()
                    .map(|o| {
                        let mut o = o.clone();
                        o.insert("channel".into(), json!("portfolio:43"));
                        Value::Object(o)
                    })
                    .unwrap()
            ),
            "another channel"
        );
        assert_eq!(
            p.to_json(),
            json!({"login":42,
                "account":{"login":42,"name":"Ann","ccy":"USD","balance":10.0,"credit":0.0,"equity":22.5,"margin":1.0,
                    "margin_free":21.5,"margin_level":2250.0,"leverage":100},
                "positions":[{"id":7,"symbol":"EURUSD","side":"buy","volume":1.0,"price_open":1.1,"sl":1.05,"tp":null,
                    "swap":0.0,"profit":12.5,"price":1.2,"time":1}]})
        );
        assert_eq!(p.profit(), 12.5);
        assert!(p.apply(&json!({"type":"alert","channel":"portfolio:42","kind":"margin_call","op":"enter","seq":5})));
        assert!(p.margin_alert.is_some());
        assert!(p.apply(&json!({"type":"alert","channel":"portfolio:42","kind":"margin_call","op":"leave","seq":6})));
        assert!(p.margin_alert.is_none());
        assert!(
            p.apply(&json!({"type":"position_closed","channel":"portfolio:42","id":7,"seq":7}))
        );
        assert!(p.positions.is_empty());
    }

    #[test]
    fn unknown_fields_are_kept() {
        let mut p = Portfolio::on("portfolio:42");
        let mut m = position(1, 1);
        m["commission"] = json!(-3.5);
        assert!(p.apply(&m));
        assert_eq!(p.positions[&1].extra["commission"], json!(-3.5));
        assert_eq!(p.to_json()["positions"][0]["commission"], json!(-3.5));
    }

    #[test]
    fn orders_exposure_prices() {
        let mut o = Orders::new();
        assert!(o.apply(&json!({"type":"orders_full","channel":"orders:42","login":42,"orders":[
            {"id":1,"symbol":"EURUSD","order_type":"buy_limit","state":"placed","volume":1.0,"volume_initial":1.0,
             "price":1.08,"price_trigger":null,"sl":null,"tp":null,"position_id":null}]})));
        assert!(o.apply(&json!({"type":"order_update","channel":"orders:42","op":"update","id":1,"symbol":"EURUSD",
            "order_type":"buy_limit","state":"placed","volume":1.0,"volume_initial":1.0,"price":1.08,
            "price_trigger":null,"sl":1.07,"tp":null,"position_id":null,"seq":1})));
        assert_eq!(o.orders[&1].sl, Some(1.07));
        assert!(o.apply(
            &json!({"type":"order_update","channel":"orders:42","op":"delete","id":1,"seq":2})
        ));
        assert!(o.orders.is_empty());

        let mut e = Exposure::new();
        assert!(e.apply(&json!({"type":"exposure","channel":"exposure","symbols":[
            {"symbol":"GBPUSD","buy_lots":1.0,"sell_lots":0.0,"net_lots":1.0,"notional":1.0,"notional_usd":null,"positions":1,"profit":0.0},
            {"symbol":"EURUSD","buy_lots":1.0,"sell_lots":0.0,"net_lots":1.0,"notional":1.0,"notional_usd":2.0,"positions":1,"profit":0.0}]})));
        assert_eq!(e.to_json()[0]["symbol"], "EURUSD");

        let mut p = Prices::new();
        assert!(p.apply(&json!({"type":"price","channel":"prices:forex","symbol":"EURUSD","bid":1.1,"ask":1.2,"digits":5,"ts":1})));
        assert_eq!(p.quote("EURUSD"), Some((1.1, 1.2)));
    }
}
