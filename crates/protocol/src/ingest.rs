//! The ingest contract: events a trade-server plugin writes into Redis Streams.
//!
//! Every stream entry has one field `d` holding a JSON object:
//!
//! ```json
//! {"v":1,"type":"tick","src":"mt5-live-01","seq":5550001,"ts":1717430400131,
//!  "symbol":"EURUSD","bid":1.08421,"ask":1.08429,"digits":5}
//! ```
//!
//! The envelope (`v`, `type`, `src`, `seq`, `ts`, optional `emit_ts`) is the same for
//! every type; the rest depends on `type` (field names follow the trading-domain
//! reference, §6.4). [`parse`] validates an entry into an [`IngestEvent`] or explains in
//! one short sentence why it cannot be used: that [`IngestError`] reason is what the
//! dead-letter stream records, so it names the offending field.
//!
//! Units are those of MT5: volumes are integers in 1/10000 lot (`vol: 150000` is 15.00
//! lots) and are refused when given as a float or a negative number, money is in the
//! account's currency, times are milliseconds since 1970 UTC. Unknown fields are ignored
//! so the plugin can add fields without breaking the gateway.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One validated ingest entry: the envelope plus a typed body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestEvent {
    /// The trade server (or feed) that produced the event.
    pub src: String,
    /// Per-`src` counter; (`src`, `seq`) is the idempotency key.
    pub seq: u64,
    /// Event time, ms UTC.
    pub ts: u64,
    /// When the plugin wrote the entry, ms UTC (for latency measurement).
    pub emit_ts: Option<u64>,
    pub body: EventBody,
}

/// What happened, by ingest `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventBody {
    Deal(Deal),
    Position(PositionEvent),
    Order(OrderEvent),
    Account(AccountEvent),
    /// `margin_call`: the account's margin level fell below (enter) or rose above (leave)
    /// the group's margin-call level.
    MarginCall(RiskEvent),
    /// `stop_out`: the same for the stop-out level.
    StopOut(RiskEvent),
    Tick(Tick),
    IbLink(IbLink),
    Symbol(SymbolSpec),
}

impl EventBody {
    /// The ingest `type` this body was parsed from.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Deal(_) => "deal",
            EventBody::Position(_) => "position",
            EventBody::Order(_) => "order",
            EventBody::Account(_) => "account",
            EventBody::MarginCall(_) => "margin_call",
            EventBody::StopOut(_) => "stop_out",
            EventBody::Tick(_) => "tick",
            EventBody::IbLink(_) => "ib_link",
            EventBody::Symbol(_) => "symbol",
        }
    }

    /// The trading account the event is about, if it is account-scoped.
    pub fn login(&self) -> Option<u64> {
        match self {
            EventBody::Deal(d) => Some(d.login),
            EventBody::Position(p) => Some(p.login()),
            EventBody::Order(o) => Some(o.login),
            EventBody::Account(a) => Some(a.login),
            EventBody::MarginCall(r) | EventBody::StopOut(r) => Some(r.login),
            EventBody::IbLink(l) => Some(l.login),
            EventBody::Tick(_) | EventBody::Symbol(_) => None,
        }
    }
}

/// Why an entry cannot be used, as one short human sentence
/// (e.g. `deal: vol must be a non-negative integer (1/10000 lot)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct IngestError {
    reason: String,
}

impl IngestError {
    fn new(reason: impl Into<String>) -> Self {
        IngestError {
            reason: reason.into(),
        }
    }

    /// The reason, as recorded in the dead-letter stream.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Parse the `d` field of a stream entry.
pub fn parse(d: &[u8]) -> Result<IngestEvent, IngestError> {
    let value: Value =
        serde_json::from_slice(d).map_err(|e| IngestError::new(format!("not JSON: {e}")))?;
    parse_value(value)
}

/// Parse an already decoded entry (e.g. one element of a `POST /v1/events` array).
pub fn parse_value(value: Value) -> Result<IngestEvent, IngestError> {
    let Value::Object(obj) = value else {
        return Err(IngestError::new(format!(
            "expected a JSON object, got {}",
            json_kind(&value)
        )));
    };
    let envelope = Fields {
        obj: &obj,
        ctx: None,
    };
    match envelope.get("v") {
        None => {
            return Err(IngestError::new(
                "missing field v (schema version, expected 1)",
            ));
        }
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => {
            // The reason stays one short sentence whatever `v` holds.
            let shown: String = v.to_string().chars().take(40).collect();
            return Err(IngestError::new(format!(
                "unsupported version v={shown} (expected 1)"
            )));
        }
    }
    let kind = envelope.str("type")?;
    let src = envelope.str("src")?.to_owned();
    if src.is_empty() {
        return Err(IngestError::new("src must not be empty"));
    }
    let seq = envelope.u64("seq")?;
    let ts = envelope.u64("ts")?;
    let emit_ts = envelope.opt_u64("emit_ts")?;

    let f = Fields {
        obj: &obj,
        ctx: Some(kind),
    };
    let body = match kind {
        "deal" => EventBody::Deal(Deal::parse(&f)?),
        "position" => EventBody::Position(PositionEvent::parse(&f)?),
        "order" => EventBody::Order(OrderEvent::parse(&f)?),
        "account" => EventBody::Account(AccountEvent::parse(&f)?),
        "margin_call" => EventBody::MarginCall(RiskEvent::parse(&f)?),
        "stop_out" => EventBody::StopOut(RiskEvent::parse(&f)?),
        "tick" => EventBody::Tick(Tick::parse(&f)?),
        "ib_link" => EventBody::IbLink(IbLink::parse(&f)?),
        "symbol" => EventBody::Symbol(SymbolSpec::parse(&f)?),
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(IngestError::new(format!("unknown type {shown:?}")));
        }
    };
    Ok(IngestEvent {
        src,
        seq,
        ts,
        emit_ts,
        body,
    })
}

/// Declares a lowercase wire enum with its spellings, so that parsing, printing and
/// serde all agree on one table.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every spelling accepted on the wire.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            fn from_wire(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// Direction of a position or a trade deal.
    Side { Buy = "buy", Sell = "sell" }
}

wire_enum! {
    /// MT5 `EnDealAction`: trades (`buy`, `sell`) and balance-type operations.
    DealAction {
        Buy = "buy", Sell = "sell",
        Balance = "balance", Credit = "credit", Charge = "charge", Correction = "correction",
        Bonus = "bonus", Commission = "commission", CommissionDaily = "commission_daily",
        CommissionMonthly = "commission_monthly", Agent = "agent", AgentDaily = "agent_daily",
        AgentMonthly = "agent_monthly", Interest = "interest", BuyCanceled = "buy_canceled",
        SellCanceled = "sell_canceled", Dividend = "dividend", DividendFranked = "dividend_franked",
        Tax = "tax", SoCompensation = "so_compensation", SoCompensationCredit = "so_compensation_credit",
    }
}

impl DealAction {
    /// `buy` or `sell`: a fill that opens or closes volume.
    pub fn is_trade(self) -> bool {
        matches!(self, DealAction::Buy | DealAction::Sell)
    }

    /// Does this balance-type operation move the account's credit (rather than its
    /// balance)?
    pub fn is_credit(self) -> bool {
        matches!(self, DealAction::Credit | DealAction::SoCompensationCredit)
    }
}

wire_enum! {
    /// MT5 `Entry()`: whether a deal opens or closes volume.
    DealEntry { In = "in", Out = "out", InOut = "inout", OutBy = "out_by" }
}

impl DealEntry {
    /// `out`, `inout` (a reversal) and `out_by` (close-by) realise profit.
    pub fn closes(self) -> bool {
        !matches!(self, DealEntry::In)
    }
}

wire_enum! {
    /// Pending and market order types (MT5 `OP_*`).
    OrderType {
        Buy = "buy", Sell = "sell", BuyLimit = "buy_limit", SellLimit = "sell_limit",
        BuyStop = "buy_stop", SellStop = "sell_stop", BuyStopLimit = "buy_stop_limit",
        SellStopLimit = "sell_stop_limit", CloseBy = "close_by",
    }
}

wire_enum! {
    /// Order state (MT5 `ORDER_STATE_*`).
    OrderState {
        Started = "started", Placed = "placed", Canceled = "canceled", Partial = "partial",
        Filled = "filled", Rejected = "rejected", Expired = "expired", RequestAdd = "request_add",
        RequestModify = "request_modify", RequestCancel = "request_cancel",
    }
}

wire_enum! {
    /// `order` event operation.
    OrderOp { Add = "add", Update = "update", Delete = "delete" }
}

wire_enum! {
    /// `margin_call` / `stop_out` operation.
    RiskOp { Enter = "enter", Leave = "leave" }
}

wire_enum! {
    /// `ib_link` operation.
    LinkOp { Set = "set", Remove = "remove" }
}

/// A deal: an immutable fill (`buy`/`sell`) or a balance operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deal {
    pub login: u64,
    /// Deal ticket.
    pub deal: u64,
    pub order: Option<u64>,
    pub position_id: Option<u64>,
    pub action: DealAction,
    /// Required for `buy`/`sell`, absent on balance operations.
    pub entry: Option<DealEntry>,
    /// Required for `buy`/`sell`.
    pub symbol: Option<String>,
    pub digits: Option<u32>,
    pub contract_size: Option<f64>,
    /// 1/10000 lot; required for `buy`/`sell`.
    pub vol: Option<u64>,
    pub price: Option<f64>,
    /// Realised P/L of a closing deal, or the amount of a balance operation.
    pub profit: f64,
    pub commission: f64,
    pub swap: f64,
    pub fee: f64,
    pub rate_profit: Option<f64>,
    /// The ancestor IB chain with amounts, when the plugin or CRM computed them.
    pub ib_commissions: Option<Vec<IbPayout>>,
}

/// Most `ib_commissions` one deal may carry. Real IB trees are a handful of levels
/// deep; the bound keeps one event's durable effects within the origins a replay can
/// recognise (`tradecast_ingest::effects::ORIGINS_PER_EVENT`).
pub const MAX_PAYOUTS: usize = 64;

/// One element of a deal's `ib_commissions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IbPayout {
    pub ib: u64,
    /// 1 for the client's direct IB, 2 for its parent, …
    pub level: u32,
    pub amount: f64,
}

impl Deal {
    fn parse(f: &Fields) -> Result<Self, IngestError> {
        let action: DealAction = f.wire("action", DealAction::from_wire, DealAction::NAMES)?;
        let trade = action.is_trade();
        let deal = Deal {
            login: f.u64("login")?,
            deal: f.u64("deal")?,
            order: f.opt_u64("order")?,
            position_id: f.opt_u64("position_id")?,
            action,
            entry: if trade {
                Some(f.wire("entry", DealEntry::from_wire, DealEntry::NAMES)?)
            } else {
                f.opt_wire("entry", DealEntry::from_wire, DealEntry::NAMES)?
            },
            symbol: if trade {
                Some(f.str("symbol")?.to_owned())
            } else {
                f.opt_str("symbol")?
            },
            digits: f.opt_u32("digits")?,
            contract_size: f.opt_positive("contract_size")?,
            vol: if trade {
                Some(f.vol("vol")?)
            } else {
                f.opt_vol("vol")?
            },
            price: f.opt_f64("price")?,
            profit: f.opt_f64("profit")?.unwrap_or(0.0),
            commission: f.opt_f64("commission")?.unwrap_or(0.0),
            swap: f.opt_f64("swap")?.unwrap_or(0.0),
            fee: f.opt_f64("fee")?.unwrap_or(0.0),
            rate_profit: f.opt_f64("rate_profit")?,
            ib_commissions: f.opt_payouts("ib_commissions")?,
        };
        Ok(deal)
    }

    /// Does this deal realise profit on a trade (so it pays IB commission)?
    pub fn is_closing_trade(&self) -> bool {
        self.action.is_trade() && self.entry.is_some_and(DealEntry::closes)
    }
}

/// A `position` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PositionEvent {
    Open(PositionOpen),
    Update(PositionChange),
    Close(PositionClose),
}

impl PositionEvent {
    pub fn login(&self) -> u64 {
        match self {
            PositionEvent::Open(p) => p.login,
            PositionEvent::Update(p) => p.login,
            PositionEvent::Close(p) => p.login,
        }
    }

    fn parse(f: &Fields) -> Result<Self, IngestError> {
        match f.str("op")? {
            "open" => Ok(PositionEvent::Open(PositionOpen {
                login: f.u64("login")?,
                position_id: f.u64("position_id")?,
                symbol: f.str("symbol")?.to_owned(),
                side: f.wire("side", Side::from_wire, Side::NAMES)?,
                vol: f.vol("vol")?,
                price_open: f.positive("price_open")?,
                digits: f.opt_u32("digits")?,
                contract_size: f.opt_positive("contract_size")?,
                sl: f.opt_f64("sl")?,
                tp: f.opt_f64("tp")?,
                swap: f.opt_f64("swap")?.unwrap_or(0.0),
                profit: f.opt_f64("profit")?,
                price_current: f.opt_f64("price_current")?,
                rate_profit: f.opt_positive("rate_profit")?,
                rate_margin: f.opt_positive("rate_margin")?,
                time_create: f.opt_u64("time_create")?,
            })),
            "update" => Ok(PositionEvent::Update(PositionChange {
                login: f.u64("login")?,
                position_id: f.u64("position_id")?,
                vol: f.opt_vol("vol")?,
                price_open: f.opt_positive("price_open")?,
                sl: f.opt_f64("sl")?,
                tp: f.opt_f64("tp")?,
                swap: f.opt_f64("swap")?,
                rate_profit: f.opt_positive("rate_profit")?,
                rate_margin: f.opt_positive("rate_margin")?,
            })),
            "close" => Ok(PositionEvent::Close(PositionClose {
                login: f.u64("login")?,
                position_id: f.u64("position_id")?,
                close_deal: f.opt_u64("close_deal")?,
                profit: f.opt_f64("profit")?,
            })),
            other => Err(f.error(format!(
                "unknown op {other:?} (expected open, update or close)"
            ))),
        }
    }
}

/// `position` `op: open`: the full static record of a new position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionOpen {
    pub login: u64,
    pub position_id: u64,
    pub symbol: String,
    pub side: Side,
    /// 1/10000 lot.
    pub vol: u64,
    pub price_open: f64,
    pub digits: Option<u32>,
    pub contract_size: Option<f64>,
    pub sl: Option<f64>,
    pub tp: Option<f64>,
    pub swap: f64,
    /// The server's floating profit at open time.
    pub profit: Option<f64>,
    pub price_current: Option<f64>,
    /// Profit currency → account currency, as the server saw it.
    pub rate_profit: Option<f64>,
    /// Base currency → account currency for margin, as the server saw it.
    pub rate_margin: Option<f64>,
    pub time_create: Option<u64>,
}

/// `position` `op: update`: only the static fields that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionChange {
    pub login: u64,
    pub position_id: u64,
    pub vol: Option<u64>,
    pub price_open: Option<f64>,
    pub sl: Option<f64>,
    pub tp: Option<f64>,
    pub swap: Option<f64>,
    pub rate_profit: Option<f64>,
    pub rate_margin: Option<f64>,
}

/// `position` `op: close`: the position is fully closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionClose {
    pub login: u64,
    pub position_id: u64,
    pub close_deal: Option<u64>,
    pub profit: Option<f64>,
}

/// An `order` event (working orders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    pub op: OrderOp,
    pub login: u64,
    /// Order ticket.
    pub order: u64,
    /// Required on `add`.
    pub symbol: Option<String>,
    pub order_type: Option<OrderType>,
    pub state: Option<OrderState>,
    pub vol_initial: Option<u64>,
    pub vol_current: Option<u64>,
    pub price_order: Option<f64>,
    pub price_trigger: Option<f64>,
    pub sl: Option<f64>,
    pub tp: Option<f64>,
    pub position_id: Option<u64>,
}

impl OrderEvent {
    fn parse(f: &Fields) -> Result<Self, IngestError> {
        let op = f.wire("op", OrderOp::from_wire, OrderOp::NAMES)?;
        Ok(OrderEvent {
            op,
            login: f.u64("login")?,
            order: f.u64("order")?,
            symbol: if op == OrderOp::Add {
                Some(f.str("symbol")?.to_owned())
            } else {
                f.opt_str("symbol")?
            },
            order_type: f.opt_wire("order_type", OrderType::from_wire, OrderType::NAMES)?,
            state: f.opt_wire("state", OrderState::from_wire, OrderState::NAMES)?,
            vol_initial: f.opt_vol("vol_initial")?,
            vol_current: f.opt_vol("vol_current")?,
            price_order: f.opt_f64("price_order")?,
            price_trigger: f.opt_f64("price_trigger")?,
            sl: f.opt_f64("sl")?,
            tp: f.opt_f64("tp")?,
            position_id: f.opt_u64("position_id")?,
        })
    }
}

/// An `account` event: the holder and the static money inputs of an account. Every
/// field but `login` is optional so a partial refresh only moves what it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountEvent {
    pub login: u64,
    /// The holder's name (used as `client_name` in IB commissions).
    pub name: Option<String>,
    /// Deposit currency, ISO code.
    pub ccy: Option<String>,
    pub leverage: Option<u32>,
    pub balance: Option<f64>,
    pub credit: Option<f64>,
    /// The server's margin at this instant.
    pub margin: Option<f64>,
}

impl AccountEvent {
    fn parse(f: &Fields) -> Result<Self, IngestError> {
        let leverage = f.opt_u32("leverage")?;
        if leverage == Some(0) {
            return Err(f.error("leverage must be at least 1"));
        }
        Ok(AccountEvent {
            login: f.u64("login")?,
            name: f.opt_str("name")?,
            ccy: f.opt_str("ccy")?,
            leverage,
            balance: f.opt_f64("balance")?,
            credit: f.opt_f64("credit")?,
            margin: f.opt_f64("margin")?,
        })
    }
}

/// A `margin_call` or `stop_out` event with the account figures the server saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskEvent {
    pub op: RiskOp,
    pub login: u64,
    pub equity: Option<f64>,
    pub margin: Option<f64>,
    pub margin_level: Option<f64>,
    pub threshold: Option<f64>,
}

impl RiskEvent {
    fn parse(f: &Fields) -> Result<Self, IngestError> {
        Ok(RiskEvent {
            op: f.wire("op", RiskOp::from_wire, RiskOp::NAMES)?,
            login: f.u64("login")?,
            equity: f.opt_f64("equity")?,
            margin: f.opt_f64("margin")?,
            margin_level: f.opt_f64("margin_level")?,
            threshold: f.opt_f64("threshold")?,
        })
    }
}

/// A quote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    pub symbol: String,
    pub bid: f64,
    pub ask: f64,
    pub digits: Option<u32>,
}

impl Tick {
    fn parse(f: &Fields) -> Result<Self, IngestError> {
        let tick = Tick {
            symbol: f.str("symbol")?.to_owned(),
            bid: f.positive("bid")?,
            ask: f.positive("ask")?,
            digits: f.opt_u32("digits")?,
        };
        if tick.ask < tick.bid {
            return Err(f.error(format!("ask {} is below bid {}", tick.ask, tick.bid)));
        }
        Ok(tick)
    }
}

/// An `ib_link` event: `login`'s parent in the IB tree is `ib` (`set`), or `login`
/// leaves its parent (`remove`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IbLink {
    pub op: LinkOp,
    pub login: u64,
    /// Required on `set`; on `remove` it names the parent being left, if given.
    pub ib: Option<u64>,
}

impl IbLink {
    fn parse(f: &Fields) -> Result<Self, IngestError> {
        let op = f.wire("op", LinkOp::from_wire, LinkOp::NAMES)?;
        let login = f.u64("login")?;
        let ib = match op {
            // `ib: 0` is MT5's "no agent"; on `set` it is meaningless.
            LinkOp::Set => Some(f.u64("ib")?).filter(|&ib| ib != 0),
            LinkOp::Remove => f.opt_u64("ib")?.filter(|&ib| ib != 0),
        };
        if op == LinkOp::Set && ib.is_none() {
            return Err(f.error("ib must be a non-zero login on set (use op remove to unlink)"));
        }
        Ok(IbLink { op, login, ib })
    }
}

/// A `symbol` event: the static specification of an instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolSpec {
    pub symbol: String,
    /// The price group: its ticks go to `prices:{group}`.
    pub group: String,
    pub digits: Option<u32>,
    /// Units per lot.
    pub contract_size: f64,
    /// Base currency, when the instrument has one (FX pairs; not e.g. an index).
    pub base_ccy: Option<String>,
    /// Currency profit is computed in.
    pub profit_ccy: String,
}

impl SymbolSpec {
    fn parse(f: &Fields) -> Result<Self, IngestError> {
        let group = f.str("group")?.to_owned();
        let group_ok = !group.is_empty()
            && group.len() <= 64
            && group
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !group_ok {
            return Err(f.error("group must be 1-64 letters, digits, '_', '-' or '.'"));
        }
        Ok(SymbolSpec {
            symbol: f.str("symbol")?.to_owned(),
            group,
            digits: f.opt_u32("digits")?,
            contract_size: f.positive("contract_size")?,
            base_ccy: f.opt_str("base_ccy")?,
            profit_ccy: f.str("profit_ccy")?.to_owned(),
        })
    }
}

/// Typed access to the fields of one entry, with errors that name the field.
/// A JSON `null` counts as absent.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    /// The entry's `type`, prefixed to body errors.
    ctx: Option<&'a str>,
}

impl Fields<'_> {
    fn error(&self, reason: impl fmt::Display) -> IngestError {
        match self.ctx {
            Some(kind) => IngestError::new(format!("{kind}: {reason}")),
            None => IngestError::new(reason.to_string()),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn required(&self, name: &str) -> Result<&Value, IngestError> {
        self.get(name)
            .ok_or_else(|| self.error(format!("missing field {name}")))
    }

    fn u64(&self, name: &str) -> Result<u64, IngestError> {
        self.required(name)?
            .as_u64()
            .ok_or_else(|| self.error(format!("{name} must be a non-negative integer")))
    }

    fn opt_u64(&self, name: &str) -> Result<Option<u64>, IngestError> {
        self.get(name).map(|_| self.u64(name)).transpose()
    }

    fn opt_u32(&self, name: &str) -> Result<Option<u32>, IngestError> {
        self.opt_u64(name)?
            .map(|n| u32::try_from(n).map_err(|_| self.error(format!("{name} is out of range"))))
            .transpose()
    }

    /// A volume: an integer count of 1/10000 lot.
    fn vol(&self, name: &str) -> Result<u64, IngestError> {
        self.required(name)?.as_u64().ok_or_else(|| {
            self.error(format!(
                "{name} must be a non-negative integer (1/10000 lot)"
            ))
        })
    }

    fn opt_vol(&self, name: &str) -> Result<Option<u64>, IngestError> {
        self.get(name).map(|_| self.vol(name)).transpose()
    }

    fn f64(&self, name: &str) -> Result<f64, IngestError> {
        self.required(name)?
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| self.error(format!("{name} must be a number")))
    }

    fn opt_f64(&self, name: &str) -> Result<Option<f64>, IngestError> {
        self.get(name).map(|_| self.f64(name)).transpose()
    }

    fn positive(&self, name: &str) -> Result<f64, IngestError> {
        let x = self.f64(name)?;
        if x > 0.0 {
            Ok(x)
        } else {
            Err(self.error(format!("{name} must be positive, got {x}")))
        }
    }

    fn opt_positive(&self, name: &str) -> Result<Option<f64>, IngestError> {
        self.get(name).map(|_| self.positive(name)).transpose()
    }

    fn str(&self, name: &str) -> Result<&str, IngestError> {
        self.required(name)?
            .as_str()
            .ok_or_else(|| self.error(format!("{name} must be a string")))
    }

    fn opt_str(&self, name: &str) -> Result<Option<String>, IngestError> {
        self.get(name)
            .map(|_| self.str(name).map(str::to_owned))
            .transpose()
    }

    fn wire<T>(
        &self,
        name: &str,
        from_wire: fn(&str) -> Option<T>,
        names: &[&str],
    ) -> Result<T, IngestError> {
        let text = self.str(name)?;
        from_wire(text).ok_or_else(|| {
            let shown: String = text.chars().take(40).collect();
            self.error(format!(
                "unknown {name} {shown:?} (expected {})",
                names.join(", ")
            ))
        })
    }

    fn opt_wire<T>(
        &self,
        name: &str,
        from_wire: fn(&str) -> Option<T>,
        names: &[&str],
    ) -> Result<Option<T>, IngestError> {
        self.get(name)
            .map(|_| self.wire(name, from_wire, names))
            .transpose()
    }

    fn opt_payouts(&self, name: &str) -> Result<Option<Vec<IbPayout>>, IngestError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let items = value
            .as_array()
            .ok_or_else(|| self.error(format!("{name} must be an array")))?;
        if items.len() > MAX_PAYOUTS {
            return Err(self.error(format!("{name} has more than {MAX_PAYOUTS} entries")));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let obj = item
                    .as_object()
                    .ok_or_else(|| self.error(format!("{name}[{i}] must be an object")))?;
                let ctx = format!(
                    "{}{name}[{i}]",
                    self.ctx.map(|k| format!("{k}: ")).unwrap_or_default()
                );
                let at = |e: IngestError| IngestError::new(format!("{ctx}: {}", e.reason));
                let item = Fields { obj, ctx: None };
                let level = item
                    .opt_u32("level")
                    .map_err(at)?
                    .ok_or_else(|| at(IngestError::new("missing field level")))?;
                if level == 0 {
                    return Err(at(IngestError::new("level must be 1 or more")));
                }
                Ok(IbPayout {
                    ib: item.u64("ib").map_err(at)?,
                    level,
                    amount: item.f64("amount").map_err(at)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(d: &str) -> String {
        parse(d.as_bytes()).expect_err(d).reason().to_owned()
    }

    fn ok(d: &str) -> IngestEvent {
        parse(d.as_bytes()).unwrap_or_else(|e| panic!("{d}: {e}"))
    }

    const ENV: &str = r#""v":1,"src":"mt5-live-01","seq":101,"ts":1717430400123"#;

    #[test]
    fn parses_the_reference_deal() {
        let e = ok(
            r#"{"v":1,"type":"deal","src":"mt5-live-01","seq":101,"ts":1717430400123,"emit_ts":1717430400125,
            "login":500123,"deal":77001234,"order":88004321,"position_id":88004300,
            "action":"sell","entry":"out","symbol":"EURUSD","digits":5,"contract_size":100000,
            "vol":150000,"price":1.08420,"price_position":1.08175,
            "profit":367.50,"commission":-10.50,"swap":-2.10,"fee":0.0,
            "rate_profit":1.0,"market_bid":1.08420,"market_ask":1.08428,
            "reason":"client","comment":"","group":"real\\std-usd","book":"B",
            "ib_commissions":[{"ib":400010,"level":1,"amount":9.6}]}"#,
        );
        assert_eq!(
            (e.src.as_str(), e.seq, e.ts, e.emit_ts),
            ("mt5-live-01", 101, 1717430400123, Some(1717430400125))
        );
        let EventBody::Deal(d) = e.body else {
            panic!("not a deal")
        };
        assert_eq!(
            (d.login, d.deal, d.position_id),
            (500123, 77001234, Some(88004300))
        );
        assert_eq!(
            (d.action, d.entry, d.vol),
            (DealAction::Sell, Some(DealEntry::Out), Some(150000))
        );
        assert_eq!((d.profit, d.commission, d.swap), (367.5, -10.5, -2.1));
        assert!(d.is_closing_trade());
        assert_eq!(
            d.ib_commissions,
            Some(vec![IbPayout {
                ib: 400010,
                level: 1,
                amount: 9.6
            }])
        );
    }

    #[test]
    fn parses_a_balance_deal_without_symbol_or_volume() {
        let e = ok(&format!(
            r#"{{{ENV},"type":"deal","login":7,"deal":9,"action":"balance","profit":500.0}}"#
        ));
        let EventBody::Deal(d) = e.body else {
            panic!("not a deal")
        };
        assert_eq!(
            (d.action, d.entry, d.symbol.as_deref(), d.vol, d.profit),
            (DealAction::Balance, None, None, None, 500.0)
        );
        assert!(!d.is_closing_trade());
    }

    #[test]
    fn parses_position_ops() {
        let open = ok(
            r#"{"v":1,"type":"position","op":"open","src":"mt5-live-01","seq":102,"ts":1717430400124,"emit_ts":1717430400126,
            "login":500123,"position_id":88004300,"symbol":"EURUSD","side":"buy","digits":5,"contract_size":100000,
            "vol":150000,"price_open":1.08175,"sl":1.07900,"tp":1.09000,
            "swap":0.0,"rate_profit":1.0,"rate_margin":1.08175,"profit":-12.0,"price_current":1.08167,
            "time_create":1717430400124,"reason":"mobile","group":"real\\std-usd"}"#,
        );
        let EventBody::Position(PositionEvent::Open(p)) = open.body else {
            panic!("not an open")
        };
        assert_eq!(
            (p.login, p.position_id, p.side, p.vol, p.price_open),
            (500123, 88004300, Side::Buy, 150000, 1.08175)
        );
        assert_eq!(
            (p.sl, p.tp, p.rate_margin, p.time_create),
            (Some(1.079), Some(1.09), Some(1.08175), Some(1717430400124))
        );

        let update = ok(&format!(
            r#"{{{ENV},"type":"position","op":"update","login":500123,"position_id":88004300,"sl":1.0795}}"#
        ));
        let EventBody::Position(PositionEvent::Update(u)) = update.body else {
            panic!("not an update")
        };
        assert_eq!((u.sl, u.vol, u.tp), (Some(1.0795), None, None));

        let close = ok(&format!(
            r#"{{{ENV},"type":"position","op":"close","login":500123,"position_id":88004300,"close_deal":77001234}}"#
        ));
        let EventBody::Position(PositionEvent::Close(c)) = close.body else {
            panic!("not a close")
        };
        assert_eq!((c.position_id, c.close_deal), (88004300, Some(77001234)));
    }

    #[test]
    fn parses_the_reference_order() {
        let e = ok(
            r#"{"v":1,"type":"order","op":"add","src":"mt5-live-01","seq":99,"ts":1717430400120,
            "login":500123,"order":88004321,"symbol":"EURUSD","order_type":"buy_limit","state":"placed",
            "vol_initial":150000,"vol_current":150000,"price_order":1.08000,"price_trigger":0,"sl":0,"tp":0,
            "fill":"return","tif":"gtc","expiration":0,"position_id":0,"reason":"web"}"#,
        );
        let EventBody::Order(o) = e.body else {
            panic!("not an order")
        };
        assert_eq!(
            (o.op, o.order, o.order_type, o.state),
            (
                OrderOp::Add,
                88004321,
                Some(OrderType::BuyLimit),
                Some(OrderState::Placed)
            )
        );
        assert_eq!((o.vol_current, o.price_order), (Some(150000), Some(1.08)));
    }

    #[test]
    fn parses_the_reference_account() {
        let e = ok(
            r#"{"v":1,"type":"account","src":"mt5-live-01","seq":103,"ts":1717430400124,
            "login":500123,"name":"Ada Lovelace","ccy":"USD","ccy_digits":2,"group":"real\\std-usd","leverage":500,
            "balance":10367.50,"credit":0.0,"equity":10355.50,"margin":324.53,"margin_free":10030.97,
            "margin_level":3190.9,"so_state":"none","mc_level":100,"so_level":50,"so_mode":"percent"}"#,
        );
        let EventBody::Account(a) = e.body else {
            panic!("not an account")
        };
        assert_eq!(a.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(
            (a.leverage, a.balance, a.margin),
            (Some(500), Some(10367.5), Some(324.53))
        );
    }

    #[test]
    fn parses_risk_events() {
        let e = ok(&format!(
            r#"{{{ENV},"type":"margin_call","op":"enter","login":500123,"equity":310.2,"margin":324.5,"margin_level":95.6,"threshold":100}}"#
        ));
        let EventBody::MarginCall(r) = e.body else {
            panic!("not a margin call")
        };
        assert_eq!(
            (r.op, r.login, r.margin_level),
            (RiskOp::Enter, 500123, Some(95.6))
        );
        let e = ok(&format!(
            r#"{{{ENV},"type":"stop_out","op":"leave","login":500123}}"#
        ));
        assert!(matches!(
            e.body,
            EventBody::StopOut(RiskEvent {
                op: RiskOp::Leave,
                ..
            })
        ));
    }

    #[test]
    fn parses_tick_link_and_symbol() {
        let e = ok(
            r#"{"v":1,"type":"tick","src":"mt5-live-01","seq":5550001,"ts":1717430400131,"symbol":"EURUSD","bid":1.08421,"ask":1.08429,"digits":5}"#,
        );
        assert_eq!(
            e.body,
            EventBody::Tick(Tick {
                symbol: "EURUSD".into(),
                bid: 1.08421,
                ask: 1.08429,
                digits: Some(5)
            })
        );

        let e = ok(
            r#"{"v":1,"type":"ib_link","op":"set","src":"crm","seq":42,"ts":1717430000000,
            "login":500123,"ib":400010,"prev_ib":0,"plan":"std-8usd-l3","effective_ts":1717430000000}"#,
        );
        assert_eq!(
            e.body,
            EventBody::IbLink(IbLink {
                op: LinkOp::Set,
                login: 500123,
                ib: Some(400010)
            })
        );

        let e = ok(&format!(
            r#"{{{ENV},"type":"symbol","symbol":"EURUSD","group":"forex","digits":5,"contract_size":100000,"base_ccy":"EUR","profit_ccy":"USD"}}"#
        ));
        let EventBody::Symbol(s) = e.body else {
            panic!("not a symbol")
        };
        assert_eq!(
            (s.group.as_str(), s.contract_size, s.base_ccy.as_deref()),
            ("forex", 100000.0, Some("EUR"))
        );
    }

    #[test]
    fn rejects_what_is_not_json() {
        assert!(
            reject("{nope").starts_with("not JSON: "),
            "{}",
            reject("{nope")
        );
        assert_eq!(reject("[1]"), "expected a JSON object, got an array");
    }

    #[test]
    fn rejects_unknown_type_and_version() {
        assert_eq!(
            reject(r#"{"v":1,"type":"foo","src":"a","seq":1,"ts":1}"#),
            r#"unknown type "foo""#
        );
        assert_eq!(
            reject(r#"{"v":2,"type":"tick","src":"a","seq":1,"ts":1}"#),
            "unsupported version v=2 (expected 1)"
        );
        assert_eq!(
            reject(r#"{"type":"tick","src":"a","seq":1,"ts":1}"#),
            "missing field v (schema version, expected 1)"
        );
        assert_eq!(
            reject(r#"{"v":1,"type":"tick","src":"a","ts":1}"#),
            "missing field seq"
        );
    }

    #[test]
    fn rejects_missing_login() {
        let d = format!(r#"{{{ENV},"type":"position","op":"close","position_id":5}}"#);
        assert_eq!(reject(&d), "position: missing field login");
        let d = format!(r#"{{{ENV},"type":"deal","deal":9,"action":"balance","profit":1}}"#);
        assert_eq!(reject(&d), "deal: missing field login");
    }

    #[test]
    fn rejects_negative_and_fractional_volumes() {
        let open = |vol: &str| {
            format!(
                r#"{{{ENV},"type":"position","op":"open","login":1,"position_id":2,"symbol":"EURUSD","side":"buy","vol":{vol},"price_open":1.1}}"#
            )
        };
        let expected = "position: vol must be a non-negative integer (1/10000 lot)";
        assert_eq!(reject(&open("-10000")), expected);
        assert_eq!(reject(&open("1.5")), expected);
        assert_eq!(reject(&open("\"10000\"")), expected);
        let deal = format!(
            r#"{{{ENV},"type":"deal","login":1,"deal":2,"action":"buy","entry":"in","symbol":"EURUSD","vol":-1}}"#
        );
        assert_eq!(
            reject(&deal),
            "deal: vol must be a non-negative integer (1/10000 lot)"
        );
    }

    #[test]
    fn rejects_bad_enums_and_payouts() {
        let d = format!(r#"{{{ENV},"type":"deal","login":1,"deal":2,"action":"gift","profit":1}}"#);
        assert!(
            reject(&d).starts_with(r#"deal: unknown action "gift" (expected buy, sell, balance"#)
        );
        let d = format!(
            r#"{{{ENV},"type":"deal","login":1,"deal":2,"action":"sell","symbol":"EURUSD","vol":1}}"#
        );
        assert_eq!(reject(&d), "deal: missing field entry");
        let d = format!(
            r#"{{{ENV},"type":"deal","login":1,"deal":2,"action":"sell","entry":"out","symbol":"EURUSD","vol":1,"ib_commissions":[{{"ib":5,"level":1}}]}}"#
        );
        assert_eq!(reject(&d), "deal: ib_commissions[0]: missing field amount");
        let many = vec![r#"{"ib":5,"level":1,"amount":1}"#; MAX_PAYOUTS + 1].join(",");
        let d = format!(
            r#"{{{ENV},"type":"deal","login":1,"deal":2,"action":"sell","entry":"out","symbol":"EURUSD","vol":1,"ib_commissions":[{many}]}}"#
        );
        assert_eq!(reject(&d), "deal: ib_commissions has more than 64 entries");
        let d = format!(r#"{{{ENV},"type":"ib_link","op":"set","login":1}}"#);
        assert_eq!(reject(&d), "ib_link: missing field ib");
        let d = format!(r#"{{{ENV},"type":"tick","symbol":"EURUSD","bid":1.2,"ask":1.1}}"#);
        assert_eq!(reject(&d), "tick: ask 1.1 is below bid 1.2");
    }
}
