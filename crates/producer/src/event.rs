//! From a validated MT5 record to the ingest JSON of `docs/events.md`.
//!
//! Validation happens in the publish call (so a bad record is refused synchronously
//! with `TC_ERR_INVALID` and never reaches Redis, where tradecast would only
//! dead-letter it); serialisation happens later on the writer thread, once the event
//! has its `seq`. Everything a publish call keeps is a plain copy: no allocation
//! unless a deal carries an IB chain.

use std::fmt::Write as _;

use crate::records::*;

/// A validated event, as queued for the writer thread.
#[derive(Debug, Clone)]
pub enum Event {
    /// A deal, with its IB chain copied out of the caller's memory.
    Deal(Deal, Vec<IbCommission>),
    Position(Position),
    Order(Order),
    Account(Account),
    MarginCall(Risk),
    StopOut(Risk),
    Tick(Tick),
    IbLink(IbLink),
    Symbol(Symbol),
}

/// Why a record was refused.
pub type Invalid = String;

/// `EnDealAction` codes 0..=20, as the ingest `action` names.
const DEAL_ACTIONS: [&str; 21] = [
    "buy",
    "sell",
    "balance",
    "credit",
    "charge",
    "correction",
    "bonus",
    "commission",
    "commission_daily",
    "commission_monthly",
    "agent_daily",
    "agent_monthly",
    "interest",
    "buy_canceled",
    "sell_canceled",
    "dividend",
    "dividend_franked",
    "tax",
    "agent",
    "so_compensation",
    "so_compensation_credit",
];
const DEAL_ENTRIES: [&str; 4] = ["in", "out", "inout", "out_by"];
/// `EnDealReason` (shared by positions and orders), informational.
const REASONS: [&str; 19] = [
    "client",
    "expert",
    "dealer",
    "sl",
    "tp",
    "so",
    "rollover",
    "external_client",
    "vmargin",
    "gateway",
    "signal",
    "settlement",
    "transfer",
    "sync",
    "external_service",
    "migration",
    "mobile",
    "web",
    "split",
];
const SIDES: [&str; 2] = ["buy", "sell"];
const POSITION_OPS: [&str; 3] = ["open", "update", "close"];
const ORDER_OPS: [&str; 3] = ["add", "update", "delete"];
const ORDER_TYPES: [&str; 9] = [
    "buy",
    "sell",
    "buy_limit",
    "sell_limit",
    "buy_stop",
    "sell_stop",
    "buy_stop_limit",
    "sell_stop_limit",
    "close_by",
];
const ORDER_STATES: [&str; 10] = [
    "started",
    "placed",
    "canceled",
    "partial",
    "filled",
    "rejected",
    "expired",
    "request_add",
    "request_modify",
    "request_cancel",
];
const FILLS: [&str; 3] = ["fok", "ioc", "return"];
const TIFS: [&str; 4] = ["gtc", "day", "specified", "specified_day"];
const LINK_OPS: [&str; 2] = ["set", "remove"];
const RISK_OPS: [&str; 2] = ["enter", "leave"];

fn code(table: &[&'static str], value: u32, what: &str) -> Result<&'static str, Invalid> {
    table
        .get(value as usize)
        .copied()
        .ok_or_else(|| format!("{what}: unknown code {value} (0..={})", table.len() - 1))
}

fn text<'a, const N: usize>(
    field: &'a [std::ffi::c_char; N],
    what: &str,
) -> Result<&'a str, Invalid> {
    get_str(field).map_err(|_| format!("{what} is not UTF-8"))
}

fn required<'a, const N: usize>(
    field: &'a [std::ffi::c_char; N],
    what: &str,
) -> Result<&'a str, Invalid> {
    let s = text(field, what)?;
    if s.is_empty() {
        return Err(format!("{what} is required"));
    }
    Ok(s)
}

/// A number above 0 (NaN and infinity are not).
fn positive_finite(value: f64) -> bool {
    value.is_finite() && value > 0.0
}

/// Refuse infinities (NaN is allowed: it means "absent").
fn finite(values: &[(f64, &str)]) -> Result<(), Invalid> {
    match values.iter().find(|(v, _)| v.is_infinite()) {
        Some((v, name)) => Err(format!("{name} is {v}")),
        None => Ok(()),
    }
}

impl Event {
    /// Validate a deal and copy its IB chain.
    pub fn deal(d: &Deal, ib: &[IbCommission]) -> Result<Event, Invalid> {
        let action = code(&DEAL_ACTIONS, d.action, "deal.action")?;
        if action == "buy" || action == "sell" {
            code(&DEAL_ENTRIES, d.entry, "deal.entry")?;
            required(&d.symbol, "deal.symbol")?;
        }
        text(&d.comment, "deal.comment")?;
        text(&d.group, "deal.group")?;
        finite(&[
            (d.price, "deal.price"),
            (d.price_position, "deal.price_position"),
            (d.contract_size, "deal.contract_size"),
            (d.profit, "deal.profit"),
            (d.commission, "deal.commission"),
            (d.storage, "deal.storage"),
            (d.fee, "deal.fee"),
            (d.rate_profit, "deal.rate_profit"),
            (d.market_bid, "deal.market_bid"),
            (d.market_ask, "deal.market_ask"),
        ])?;
        if d.contract_size < 0.0 {
            return Err("deal.contract_size is negative".into());
        }
        for c in ib {
            if c.level == 0 {
                return Err("deal.ib_commissions: level must be at least 1".into());
            }
            if !c.amount.is_finite() {
                return Err("deal.ib_commissions: amount must be a finite number".into());
            }
        }
        let mut copy = *d;
        copy.ib_commissions = std::ptr::null();
        copy.ib_commissions_count = 0;
        Ok(Event::Deal(copy, ib.to_vec()))
    }

    pub fn position(p: &Position) -> Result<Event, Invalid> {
        let op = code(&POSITION_OPS, p.op, "position.op")?;
        text(&p.comment, "position.comment")?;
        text(&p.group, "position.group")?;
        text(&p.symbol, "position.symbol")?;
        finite(&[
            (p.price_open, "position.price_open"),
            (p.price_current, "position.price_current"),
            (p.price_sl, "position.price_sl"),
            (p.price_tp, "position.price_tp"),
            (p.profit, "position.profit"),
            (p.storage, "position.storage"),
            (p.contract_size, "position.contract_size"),
            (p.rate_profit, "position.rate_profit"),
            (p.rate_margin, "position.rate_margin"),
        ])?;
        if op == "open" {
            code(&SIDES, p.action, "position.action")?;
            required(&p.symbol, "position.symbol")?;
            // An open needs its price (NaN included).
            if !positive_finite(p.price_open) {
                return Err("position.price_open must be > 0 on open".into());
            }
        }
        Ok(Event::Position(*p))
    }

    pub fn order(o: &Order) -> Result<Event, Invalid> {
        let op = code(&ORDER_OPS, o.op, "order.op")?;
        code(&ORDER_TYPES, o.order_type, "order.order_type")?;
        code(&ORDER_STATES, o.state, "order.state")?;
        text(&o.comment, "order.comment")?;
        if op == "add" {
            required(&o.symbol, "order.symbol")?;
        } else {
            text(&o.symbol, "order.symbol")?;
        }
        finite(&[
            (o.price_order, "order.price_order"),
            (o.price_trigger, "order.price_trigger"),
            (o.price_sl, "order.price_sl"),
            (o.price_tp, "order.price_tp"),
        ])?;
        Ok(Event::Order(*o))
    }

    pub fn account(a: &Account) -> Result<Event, Invalid> {
        text(&a.name, "account.name")?;
        text(&a.currency, "account.currency")?;
        text(&a.group, "account.group")?;
        finite(&[
            (a.balance, "account.balance"),
            (a.credit, "account.credit"),
            (a.margin, "account.margin"),
            (a.margin_free, "account.margin_free"),
            (a.margin_level, "account.margin_level"),
            (a.equity, "account.equity"),
        ])?;
        Ok(Event::Account(*a))
    }

    fn risk(r: &Risk, what: &str) -> Result<(), Invalid> {
        code(&RISK_OPS, r.op, &format!("{what}.op"))?;
        text(&r.group, "group")?;
        finite(&[
            (r.equity, "equity"),
            (r.margin, "margin"),
            (r.margin_level, "margin_level"),
            (r.threshold, "threshold"),
        ])
    }

    pub fn margin_call(r: &Risk) -> Result<Event, Invalid> {
        Self::risk(r, "margin_call")?;
        Ok(Event::MarginCall(*r))
    }

    pub fn stop_out(r: &Risk) -> Result<Event, Invalid> {
        Self::risk(r, "stop_out")?;
        Ok(Event::StopOut(*r))
    }

    pub fn tick(t: &Tick) -> Result<Event, Invalid> {
        required(&t.symbol, "tick.symbol")?;
        finite(&[(t.last, "tick.last")])?;
        if !positive_finite(t.bid) || !positive_finite(t.ask) {
            return Err(format!(
                "tick: bid and ask must be positive numbers (bid {}, ask {})",
                t.bid, t.ask
            ));
        }
        if t.ask < t.bid {
            return Err(format!("tick: ask {} is below bid {}", t.ask, t.bid));
        }
        Ok(Event::Tick(*t))
    }

    pub fn ib_link(l: &IbLink) -> Result<Event, Invalid> {
        let op = code(&LINK_OPS, l.op, "ib_link.op")?;
        if op == "set" && l.ib == 0 {
            return Err(
                "ib_link: set needs a non-zero ib (0 is MT5's 'no agent': use TC_IB_LINK_REMOVE)"
                    .into(),
            );
        }
        if l.ib == l.login && op == "set" {
            return Err("ib_link: a login cannot be its own IB".into());
        }
        Ok(Event::IbLink(*l))
    }

    pub fn symbol(s: &Symbol) -> Result<Event, Invalid> {
        required(&s.symbol, "symbol.symbol")?;
        let group = required(&s.group, "symbol.group")?;
        if !group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(format!(
                "symbol.group {group:?} may hold only letters, digits, '_', '-' and '.'"
            ));
        }
        required(&s.profit_ccy, "symbol.profit_ccy")?;
        text(&s.base_ccy, "symbol.base_ccy")?;
        if !positive_finite(s.contract_size) {
            return Err("symbol.contract_size must be > 0".into());
        }
        Ok(Event::Symbol(*s))
    }

    /// True for ticks: they go to the tick stream under the tick source.
    pub fn is_tick(&self) -> bool {
        matches!(self, Event::Tick(_))
    }

    /// The account the event is about (`None`: a tick or a symbol).
    pub fn login(&self) -> Option<u64> {
        match self {
            Event::Deal(d, _) => Some(d.login),
            Event::Position(p) => Some(p.login),
            Event::Order(o) => Some(o.login),
            Event::Account(a) => Some(a.login),
            Event::MarginCall(r) | Event::StopOut(r) => Some(r.login),
            Event::IbLink(l) => Some(l.login),
            Event::Tick(_) | Event::Symbol(_) => None,
        }
    }
}

/// The envelope values the writer adds to an event.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub src: &'a str,
    pub seq: u64,
    /// The publish call's wall clock, ms UTC: `emit_ts`, and `ts` when the record
    /// has no time.
    pub emit_ms: u64,
    /// The trade server's offset from UTC, minutes (subtracted from MT times).
    pub tz_offset_minutes: i32,
}

impl Envelope<'_> {
    /// An MT time (ms, server zone) as ms UTC; `emit_ms` when absent.
    fn utc(&self, msc: i64) -> u64 {
        if msc <= 0 {
            return self.emit_ms;
        }
        let utc = msc - i64::from(self.tz_offset_minutes) * 60_000;
        if utc <= 0 { self.emit_ms } else { utc as u64 }
    }
}

/// A JSON object written field by field into a reused buffer.
struct Obj<'a> {
    out: &'a mut String,
}

impl Obj<'_> {
    fn key(&mut self, key: &str) {
        self.out.push_str(",\"");
        self.out.push_str(key);
        self.out.push_str("\":");
    }
    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(self.out, value);
    }
    /// A string field, left out when empty.
    fn opt_str(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.str(key, value);
        }
    }
    fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }
    /// An identifier or count, left out when 0.
    fn nz(&mut self, key: &str, value: u64) {
        if value != 0 {
            self.u64(key, value);
        }
    }
    /// A number, left out when NaN (absent).
    fn num(&mut self, key: &str, value: f64) {
        if !value.is_nan() {
            self.key(key);
            push_number(self.out, value);
        }
    }
    /// A number left out when NaN or 0.
    fn num_nz(&mut self, key: &str, value: f64) {
        if value != 0.0 {
            self.num(key, value);
        }
    }
    /// A price: rounded to `digits` when known, left out when NaN.
    fn price(&mut self, key: &str, value: f64, digits: u32) {
        self.num(key, round_to(value, digits));
    }
    fn price_nz(&mut self, key: &str, value: f64, digits: u32) {
        if value != 0.0 {
            self.price(key, value, digits);
        }
    }
}

/// Round to `digits` decimals (0: unknown, as is), so that MT5's binary noise
/// (1.0817500000000001) does not reach the wire.
fn round_to(value: f64, digits: u32) -> f64 {
    if digits == 0 || digits > 15 || !value.is_finite() {
        return value;
    }
    let scale = 10f64.powi(digits as i32);
    let rounded = (value * scale).round() / scale;
    if rounded.is_finite() { rounded } else { value }
}

/// A finite f64 as a JSON number: Rust prints the shortest text that reads back as
/// the same double, never with an exponent (`1`, `1.08175`, `0.0000001`).
fn push_number(out: &mut String, value: f64) {
    debug_assert!(value.is_finite(), "validated before queuing");
    if value.is_finite() {
        let _ = write!(out, "{value}");
    } else {
        out.push('0');
    }
}

/// A JSON string literal with the escapes RFC 8259 requires.
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn reason(table_value: u32) -> Option<&'static str> {
    REASONS.get(table_value as usize).copied()
}

/// The text behind a record's already validated string field.
fn s<const N: usize>(field: &[std::ffi::c_char; N]) -> &str {
    get_str(field).unwrap_or("")
}

impl Event {
    /// The ingest JSON of this event (the `d` field), appended to `out`.
    pub fn write_json(&self, env: &Envelope<'_>, out: &mut String) {
        let (kind, op, ts) = match self {
            Event::Deal(d, _) => ("deal", None, env.utc(d.time_msc)),
            Event::Position(p) => {
                let t = if p.op == TC_POSITION_OPEN && p.time_update_msc <= 0 {
                    p.time_create_msc
                } else {
                    p.time_update_msc
                };
                ("position", Some(POSITION_OPS[p.op as usize]), env.utc(t))
            }
            Event::Order(o) => {
                let t = match o.op {
                    TC_ORDER_ADD => o.time_setup_msc,
                    TC_ORDER_DELETE => o.time_done_msc,
                    _ => 0,
                };
                ("order", Some(ORDER_OPS[o.op as usize]), env.utc(t))
            }
            Event::Account(a) => ("account", None, env.utc(a.time_msc)),
            Event::MarginCall(r) => (
                "margin_call",
                Some(RISK_OPS[r.op as usize]),
                env.utc(r.time_msc),
            ),
            Event::StopOut(r) => (
                "stop_out",
                Some(RISK_OPS[r.op as usize]),
                env.utc(r.time_msc),
            ),
            Event::Tick(t) => ("tick", None, env.utc(t.datetime_msc)),
            Event::IbLink(l) => (
                "ib_link",
                Some(LINK_OPS[l.op as usize]),
                env.utc(l.time_msc),
            ),
            Event::Symbol(s) => ("symbol", None, env.utc(s.time_msc)),
        };
        out.push_str("{\"v\":1,\"type\":\"");
        out.push_str(kind);
        out.push('"');
        let mut o = Obj { out };
        if let Some(op) = op {
            o.str("op", op);
        }
        o.str("src", env.src);
        o.u64("seq", env.seq);
        o.u64("ts", ts);
        o.u64("emit_ts", env.emit_ms);
        match self {
            Event::Deal(d, ib) => write_deal(&mut o, d, ib),
            Event::Position(p) => write_position(&mut o, p, env),
            Event::Order(x) => write_order(&mut o, x, env),
            Event::Account(a) => write_account(&mut o, a),
            Event::MarginCall(r) | Event::StopOut(r) => {
                o.u64("login", r.login);
                o.num("equity", r.equity);
                o.num("margin", r.margin);
                o.num("margin_level", r.margin_level);
                o.num("threshold", r.threshold);
                o.opt_str("group", s(&r.group));
            }
            Event::Tick(t) => {
                o.str("symbol", s(&t.symbol));
                o.price("bid", t.bid, t.digits);
                o.price("ask", t.ask, t.digits);
                o.price_nz("last", t.last, t.digits);
                o.nz("digits", u64::from(t.digits));
            }
            Event::IbLink(l) => {
                o.u64("login", l.login);
                o.nz("ib", l.ib);
            }
            Event::Symbol(x) => {
                o.str("symbol", s(&x.symbol));
                o.str("group", s(&x.group));
                o.u64("digits", u64::from(x.digits));
                o.num("contract_size", x.contract_size);
                o.opt_str("base_ccy", s(&x.base_ccy));
                o.str("profit_ccy", s(&x.profit_ccy));
            }
        }
        out.push('}');
    }
}

fn write_deal(o: &mut Obj<'_>, d: &Deal, ib: &[IbCommission]) {
    let action = DEAL_ACTIONS[d.action as usize];
    let trade = action == "buy" || action == "sell";
    o.u64("login", d.login);
    o.u64("deal", d.deal);
    o.nz("order", d.order);
    o.nz("position_id", d.position_id);
    o.str("action", action);
    if trade {
        o.str("entry", DEAL_ENTRIES[d.entry as usize]);
        o.str("symbol", s(&d.symbol));
        o.nz("digits", u64::from(d.digits));
        o.num_nz("contract_size", d.contract_size);
        o.u64("vol", d.volume);
        o.price("price", d.price, d.digits);
        o.price_nz("price_position", d.price_position, d.digits);
    }
    o.num("profit", d.profit);
    o.num("commission", d.commission);
    o.num("swap", d.storage);
    o.num("fee", d.fee);
    if trade {
        o.num_nz("rate_profit", d.rate_profit);
        o.price_nz("market_bid", d.market_bid, d.digits);
        o.price_nz("market_ask", d.market_ask, d.digits);
    }
    if let Some(r) = reason(d.reason) {
        o.str("reason", r);
    }
    o.opt_str("comment", s(&d.comment));
    o.opt_str("group", s(&d.group));
    if !ib.is_empty() {
        o.key("ib_commissions");
        o.out.push('[');
        for (i, c) in ib.iter().enumerate() {
            if i > 0 {
                o.out.push(',');
            }
            let _ = write!(o.out, "{{\"ib\":{},\"level\":{},\"amount\":", c.ib, c.level);
            push_number(o.out, c.amount);
            o.out.push('}');
        }
        o.out.push(']');
    }
}

fn write_position(o: &mut Obj<'_>, p: &Position, env: &Envelope<'_>) {
    o.u64("login", p.login);
    o.u64("position_id", p.position_id);
    let digits = p.digits;
    match p.op {
        TC_POSITION_OPEN => {
            o.str("symbol", s(&p.symbol));
            o.str("side", SIDES[p.action as usize]);
            o.nz("digits", u64::from(digits));
            if p.contract_size > 0.0 {
                o.num("contract_size", p.contract_size);
            }
            o.u64("vol", p.volume);
            o.price("price_open", p.price_open, digits);
            o.price("sl", p.price_sl, digits);
            o.price("tp", p.price_tp, digits);
            o.num("swap", p.storage);
            o.num("profit", p.profit);
            o.price_nz("price_current", p.price_current, digits);
            positive(o, "rate_profit", p.rate_profit);
            positive(o, "rate_margin", p.rate_margin);
            if p.time_create_msc > 0 {
                o.u64("time_create", env.utc(p.time_create_msc));
            }
            if let Some(r) = reason(p.reason) {
                o.str("reason", r);
            }
            o.opt_str("comment", s(&p.comment));
            o.opt_str("group", s(&p.group));
        }
        TC_POSITION_UPDATE => {
            // MT5 hands over the whole record; tradecast compares it with what it
            // knows and tells the trader only what changed.
            o.u64("vol", p.volume);
            if p.price_open > 0.0 {
                o.price("price_open", p.price_open, digits);
            }
            o.price("sl", p.price_sl, digits);
            o.price("tp", p.price_tp, digits);
            o.num("swap", p.storage);
            positive(o, "rate_profit", p.rate_profit);
            positive(o, "rate_margin", p.rate_margin);
            o.opt_str("symbol", s(&p.symbol));
        }
        _ => {
            o.nz("close_deal", p.close_deal);
            o.num("profit", p.profit);
            o.opt_str("symbol", s(&p.symbol));
        }
    }
}

/// A field that must be > 0 when present: left out otherwise.
fn positive(o: &mut Obj<'_>, key: &str, value: f64) {
    if value > 0.0 {
        o.num(key, value);
    }
}

fn write_order(o: &mut Obj<'_>, x: &Order, env: &Envelope<'_>) {
    let digits = x.digits;
    o.u64("login", x.login);
    o.u64("order", x.order);
    o.opt_str("symbol", s(&x.symbol));
    o.str("order_type", ORDER_TYPES[x.order_type as usize]);
    o.str("state", ORDER_STATES[x.state as usize]);
    o.u64("vol_initial", x.volume_initial);
    o.u64("vol_current", x.volume_current);
    o.price("price_order", x.price_order, digits);
    o.price("price_trigger", x.price_trigger, digits);
    o.price("sl", x.price_sl, digits);
    o.price("tp", x.price_tp, digits);
    o.u64("position_id", x.position_id);
    if let Some(f) = FILLS.get(x.type_fill as usize) {
        o.str("fill", f);
    }
    if let Some(t) = TIFS.get(x.type_time as usize) {
        o.str("tif", t);
    }
    if x.time_expiration > 0 {
        o.u64("expiration", x.time_expiration as u64);
    }
    if let Some(r) = reason(x.reason) {
        o.str("reason", r);
    }
    o.opt_str("comment", s(&x.comment));
    let _ = env;
}

fn write_account(o: &mut Obj<'_>, a: &Account) {
    o.u64("login", a.login);
    o.opt_str("name", s(&a.name));
    o.opt_str("ccy", s(&a.currency));
    o.nz("ccy_digits", u64::from(a.currency_digits));
    o.opt_str("group", s(&a.group));
    o.nz("leverage", u64::from(a.leverage));
    o.num("balance", a.balance);
    o.num("credit", a.credit);
    o.num("margin", a.margin);
    o.num("equity", a.equity);
    o.num("margin_free", a.margin_free);
    o.num("margin_level", a.margin_level);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope<'static> {
        Envelope {
            src: "mt5-live-01",
            seq: 7,
            emit_ms: 1_717_430_400_999,
            tz_offset_minutes: 120,
        }
    }

    #[test]
    fn times_are_converted_from_server_time_to_utc() {
        let e = env();
        assert_eq!(e.utc(1_717_430_400_000 + 7_200_000), 1_717_430_400_000);
        assert_eq!(e.utc(0), e.emit_ms);
        assert_eq!(e.utc(-5), e.emit_ms);
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "real\\std \"x\"\n\u{1}é");
        assert_eq!(out, r#""real\\std \"x\"\n\u0001é""#);
    }

    #[test]
    fn prices_lose_binary_noise() {
        assert_eq!(round_to(0.1 + 0.2, 5), 0.3); // 0.30000000000000004
        assert_eq!(round_to(2345.1, 0), 2345.1);
        let mut out = String::new();
        push_number(&mut out, round_to(1.0842, 5));
        assert_eq!(out, "1.0842");
    }

    #[test]
    fn bad_records_are_refused_with_a_reason() {
        let mut t = Tick::default();
        assert!(Event::tick(&t).unwrap_err().contains("symbol"));
        set_str(&mut t.symbol, "EURUSD");
        t.bid = 1.2;
        t.ask = 1.1;
        assert_eq!(
            Event::tick(&t).unwrap_err(),
            "tick: ask 1.1 is below bid 1.2"
        );
        let d = Deal {
            action: 99,
            ..Deal::default()
        };
        assert!(Event::deal(&d, &[]).unwrap_err().contains("deal.action"));
        let l = IbLink {
            login: 5,
            ..IbLink::default()
        };
        assert!(Event::ib_link(&l).unwrap_err().contains("non-zero ib"));
        let mut p = Position::default();
        set_str(&mut p.symbol, "EURUSD");
        p.price_open = f64::INFINITY;
        assert!(Event::position(&p).unwrap_err().contains("inf"));
    }
}
