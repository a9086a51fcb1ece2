//! One trader's account and open positions, and their live valuation.
//!
//! Live figures follow the reference formulas (trading-domain §1.5, §1.7):
//!
//! ```text
//! lots          = vol / 10000
//! buy  profit   = (bid - price_open) * lots * contract_size * rate
//! sell profit   = (price_open - ask) * lots * contract_size * rate
//! rate          = profit ccy -> account ccy at the current mid price (Market::rate),
//!                 else the position's rate_profit, else 1
//! equity        = balance + credit + Σ (profit + swap)
//! margin        = Σ lots * contract_size * base_rate / leverage
//! margin_free   = equity - margin
//! margin_level  = equity / margin * 100   (absent when margin is 0)
//! ```
//!
//! `base_rate` is the value of one unit of the base currency in the account
//! currency: 1 when the base is the account currency (USDJPY on USD), `price_open`
//! when the profit currency is (EURUSD on USD: MT5's forex mode), else the position's
//! `rate_margin`, else the current mid conversion, else `price_open × rate`.
//!
//! Each position's profit is rounded to cents before summing, as MT5 does, so the
//! profits a trader sees add up to their equity exactly. A position whose whole volume
//! a closing deal has already realised into the balance counts for nothing until its
//! `close` event arrives, so equity is not counted twice in between; one partly
//! realised counts only its remaining volume (profit, swap and margin pro rata) until
//! the server's `update` reports the new volume.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tradecast_protocol::Channel;
use tradecast_protocol::ingest::{AccountEvent, PositionOpen, Side};

use crate::effect::encode_raw;
use crate::market::{Market, Pricer, SymbolInfo};
use crate::money::{cents, lots};

/// Account currency assumed until an `account` event says otherwise.
pub const DEFAULT_CCY: &str = "USD";
/// Leverage assumed until an `account` event says otherwise.
pub const DEFAULT_LEVERAGE: u32 = 100;

/// The static money inputs of an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub name: Option<String>,
    pub ccy: String,
    pub leverage: u32,
    pub balance: f64,
    pub credit: f64,
    /// The server's margin from the last `account` event; used instead of our own
    /// figure until the positions change.
    pub server_margin: Option<f64>,
}

impl Account {
    /// Apply an `account` event; returns whether anything a trader sees changed.
    pub fn apply(&mut self, event: &AccountEvent) -> bool {
        let before = self.clone();
        if let Some(name) = &event.name {
            self.name = Some(name.clone());
        }
        if let Some(ccy) = &event.ccy {
            self.ccy = ccy.clone();
        }
        self.leverage = event.leverage.unwrap_or(self.leverage);
        self.balance = event.balance.unwrap_or(self.balance);
        self.credit = event.credit.unwrap_or(self.credit);
        self.server_margin = event.margin.or(self.server_margin);
        Account {
            server_margin: None,
            ..before
        } != Account {
            server_margin: None,
            ..self.clone()
        }
    }
}

impl Default for Account {
    fn default() -> Self {
        Account {
            name: None,
            ccy: DEFAULT_CCY.into(),
            leverage: DEFAULT_LEVERAGE,
            balance: 0.0,
            credit: 0.0,
            server_margin: None,
        }
    }
}

/// A closing deal seen for a still-open position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClosingDeal {
    pub deal: u64,
    pub vol: u64,
    pub profit: f64,
}

/// An open position's static record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub id: u64,
    /// Shared by the positions in the same symbol (see [`Market::intern`]).
    pub symbol: Arc<str>,
    pub side: Side,
    /// 1/10000 lot.
    pub vol: u64,
    pub price_open: f64,
    pub sl: Option<f64>,
    pub tp: Option<f64>,
    pub swap: f64,
    pub contract_size: Option<f64>,
    pub rate_profit: Option<f64>,
    pub rate_margin: Option<f64>,
    pub time: Option<u64>,
    /// The server's profit and price at open, shown until a tick arrives.
    pub server_profit: Option<f64>,
    pub server_price: Option<f64>,
    /// The last closing deal of this position, for `position_closed.profit`.
    pub closing: Option<ClosingDeal>,
}

impl Position {
    /// The position `event` opens, its symbol name being `symbol` (interned).
    pub fn open(event: &PositionOpen, symbol: Arc<str>, ts: u64) -> Self {
        Position {
            id: event.position_id,
            symbol,
            side: event.side,
            vol: event.vol,
            price_open: event.price_open,
            sl: event.sl,
            tp: event.tp,
            swap: event.swap,
            contract_size: event.contract_size,
            rate_profit: event.rate_profit,
            rate_margin: event.rate_margin,
            time: Some(event.time_create.unwrap_or(ts)),
            server_profit: event.profit,
            server_price: event.price_current,
            closing: None,
        }
    }

    /// Record a closing deal of `vol` for this position, ahead of the server's
    /// `update` (partial close) or `close`. Closing deals seen since the last volume
    /// change add up.
    pub fn close_by(&mut self, deal: u64, vol: u64, profit: f64) {
        let before = self.closing.map_or(0, |c| c.vol);
        self.closing = Some(ClosingDeal {
            deal,
            vol: before.saturating_add(vol),
            profit,
        });
    }

    /// The volume not yet realised by closing deals (1/10000 lot).
    pub fn open_vol(&self) -> u64 {
        self.vol.saturating_sub(self.closing.map_or(0, |c| c.vol))
    }

    /// Has a closing deal already realised all of this position's volume?
    pub fn realised(&self) -> bool {
        self.open_vol() == 0
    }

    /// Live profit (unrounded, account currency), the price it was marked at, and
    /// the margin, given current prices.
    fn value(&self, pricer: &mut Pricer<'_>, ccy: &str, leverage: u32) -> (f64, Option<f64>, f64) {
        let unknown;
        let (info, quote) = match pricer.symbol(&self.symbol) {
            Some(known) => known,
            None => {
                unknown = SymbolInfo::inferred(&self.symbol, None);
                (&unknown, pricer.market().quote(&self.symbol).copied())
            }
        };
        let contract = self.contract_size.unwrap_or(info.contract_size);
        let lots = lots(self.vol);
        let profit_rate = info
            .profit_ccy
            .as_deref()
            .and_then(|p| pricer.rate(p, ccy))
            .or(self.rate_profit)
            .unwrap_or(1.0);
        let (profit, price) = match quote {
            Some(q) => {
                let (diff, price) = match self.side {
                    Side::Buy => (q.bid - self.price_open, q.bid),
                    Side::Sell => (self.price_open - q.ask, q.ask),
                };
                (diff * lots * contract * profit_rate, Some(price))
            }
            None => (self.server_profit.unwrap_or(0.0), self.server_price),
        };
        let base_rate = match (info.base_ccy.as_deref(), info.profit_ccy.as_deref()) {
            (Some(base), _) if base == ccy => 1.0,
            (_, Some(profit)) if profit == ccy => self.price_open,
            (base, _) => self
                .rate_margin
                .or_else(|| base.and_then(|b| pricer.rate(b, ccy)))
                .unwrap_or(self.price_open * profit_rate),
        };
        let margin = lots * contract * base_rate / f64::from(leverage.max(1));
        (profit, price, margin)
    }

    /// Every symbol whose quote [`Position::value`] may read for an account in `ccy`:
    /// its own, and those of the conversions it needs (none when the profit currency
    /// is the account's).
    fn price_sources(&self, market: &Market, ccy: &str, source: &mut impl FnMut(&str)) {
        source(&self.symbol);
        let info = market.info(&self.symbol);
        let (base, profit) = (info.base_ccy.as_deref(), info.profit_ccy.as_deref());
        if let Some(profit) = profit {
            market.rate_sources(profit, ccy, &mut *source);
        }
        let margin_converts = base != Some(ccy) && profit != Some(ccy);
        if let (true, None, Some(base)) = (margin_converts, self.rate_margin, base) {
            market.rate_sources(base, ccy, &mut *source);
        }
    }

    fn view(&self, live: &LiveFigure) -> PositionView<'_> {
        PositionView {
            id: self.id,
            symbol: &self.symbol,
            side: self.side,
            volume: lots(self.vol),
            price_open: self.price_open,
            sl: self.sl,
            tp: self.tp,
            swap: self.swap,
            profit: live.profit,
            price: live.price,
            time: self.time,
        }
    }
}

/// A position as clients see it (`position_opened` and `portfolio_full.positions`).
#[derive(Debug, Serialize)]
pub struct PositionView<'a> {
    pub id: u64,
    pub symbol: &'a str,
    pub side: Side,
    /// Lots.
    pub volume: f64,
    pub price_open: f64,
    pub sl: Option<f64>,
    pub tp: Option<f64>,
    pub swap: f64,
    pub profit: f64,
    pub price: Option<f64>,
    pub time: Option<u64>,
}

impl PositionView<'_> {
    /// Write as JSON, with the profit and price already written as JSON text: the
    /// bytes serializing it gives (tested), field by field, since this runs for every
    /// position of every portfolio a live flush pushes.
    fn write_json(&self, out: &mut Vec<u8>, profit: &[u8], price: &[u8]) {
        out.extend_from_slice(b"{\"id\":");
        json(out, &self.id);
        out.extend_from_slice(b",\"symbol\":");
        json(out, self.symbol);
        out.extend_from_slice(b",\"side\":");
        json(out, &self.side);
        out.extend_from_slice(b",\"volume\":");
        json(out, &self.volume);
        out.extend_from_slice(b",\"price_open\":");
        json(out, &self.price_open);
        out.extend_from_slice(b",\"sl\":");
        json(out, &self.sl);
        out.extend_from_slice(b",\"tp\":");
        json(out, &self.tp);
        out.extend_from_slice(b",\"swap\":");
        json(out, &self.swap);
        out.extend_from_slice(b",\"profit\":");
        out.extend_from_slice(profit);
        out.extend_from_slice(b",\"price\":");
        out.extend_from_slice(price);
        out.extend_from_slice(b",\"time\":");
        json(out, &self.time);
        out.push(b'}');
    }
}

/// Append `value` as JSON.
fn json(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("plain JSON");
}

/// A position's live profit (cents) and mark price.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LiveFigure {
    pub profit: f64,
    pub price: Option<f64>,
}

/// An account's live money figures, in cents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AccountFigures {
    pub equity: f64,
    pub margin: f64,
    pub margin_free: f64,
    pub margin_level: Option<f64>,
}

/// A portfolio valued at current prices.
#[derive(Debug, Clone, PartialEq)]
pub struct Valuation {
    /// Each position's figures, by id in increasing order.
    pub positions: Vec<(u64, LiveFigure)>,
    pub account: AccountFigures,
}

impl Valuation {
    /// The figures of position `id`.
    pub fn figure(&self, id: u64) -> Option<&LiveFigure> {
        let at = self.positions.binary_search_by_key(&id, |&(i, _)| i).ok()?;
        Some(&self.positions[at].1)
    }
}

/// The account as clients see it (`account_update` and `portfolio_full.account`).
#[derive(Debug, Serialize)]
pub struct AccountView<'a> {
    pub login: u64,
    pub name: Option<&'a str>,
    pub ccy: &'a str,
    pub balance: f64,
    pub credit: f64,
    pub equity: f64,
    pub margin: f64,
    pub margin_free: f64,
    pub margin_level: Option<f64>,
    pub leverage: u32,
}

impl AccountView<'_> {
    /// Write as JSON, with the live figures already written as JSON text (see
    /// [`LiveText::account`]): the bytes serializing it gives (tested).
    fn write_json(&self, out: &mut Vec<u8>, figures: [&[u8]; 4]) {
        out.extend_from_slice(b"{\"login\":");
        json(out, &self.login);
        out.extend_from_slice(b",\"name\":");
        json(out, &self.name);
        out.extend_from_slice(b",\"ccy\":");
        json(out, self.ccy);
        out.extend_from_slice(b",\"balance\":");
        json(out, &self.balance);
        out.extend_from_slice(b",\"credit\":");
        json(out, &self.credit);
        for (key, figure) in [
            b",\"equity\":".as_slice(),
            b",\"margin\":",
            b",\"margin_free\":",
            b",\"margin_level\":",
        ]
        .into_iter()
        .zip(figures)
        {
            out.extend_from_slice(key);
            out.extend_from_slice(figure);
        }
        out.extend_from_slice(b",\"leverage\":");
        json(out, &self.leverage);
        out.push(b'}');
    }
}

/// A valuation's live numbers as JSON text, each formatted once for all the messages
/// of a push that show it: `position_update`, `account_update` and `portfolio_full`.
pub(crate) struct LiveText {
    text: Vec<u8>,
    /// Where each number ends in `text`: each position's profit and price, in the
    /// valuation's order, then the account's equity, margin, free margin and level.
    ends: Vec<usize>,
}

impl LiveText {
    pub(crate) fn of(valuation: &Valuation) -> Self {
        let count = 2 * valuation.positions.len() + 4;
        let mut text = Vec::with_capacity(12 * count);
        let mut ends = Vec::with_capacity(count);
        for (_, figure) in &valuation.positions {
            json(&mut text, &figure.profit);
            ends.push(text.len());
            json(&mut text, &figure.price);
            ends.push(text.len());
        }
        let a = &valuation.account;
        json(&mut text, &a.equity);
        ends.push(text.len());
        json(&mut text, &a.margin);
        ends.push(text.len());
        json(&mut text, &a.margin_free);
        ends.push(text.len());
        json(&mut text, &a.margin_level);
        ends.push(text.len());
        LiveText { text, ends }
    }

    fn number(&self, n: usize) -> &[u8] {
        let start = n.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.text[start..self.ends[n]]
    }

    /// The profit and the price (`null` for none) of the valuation's `i`-th position.
    pub(crate) fn position(&self, i: usize) -> (&[u8], &[u8]) {
        (self.number(2 * i), self.number(2 * i + 1))
    }

    /// Equity, margin, free margin and margin level (`null` for none).
    pub(crate) fn account(&self) -> [&[u8]; 4] {
        let first = self.ends.len() - 4;
        std::array::from_fn(|k| self.number(first + k))
    }
}

/// What was last pushed for this portfolio's live figures, to send only changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LivePushed {
    pub at_ms: Option<u64>,
    pub positions: BTreeMap<u64, LiveFigure>,
    pub account: Option<AccountFigures>,
}

/// A trader's account (once known) and open positions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Portfolio {
    pub login: u64,
    /// `None` until the first `account` event.
    pub account: Option<Account>,
    pub positions: BTreeMap<u64, Position>,
    pub pushed: LivePushed,
}

impl Portfolio {
    pub fn new(login: u64) -> Self {
        Portfolio {
            login,
            ..Portfolio::default()
        }
    }

    /// The account currency (USD until known).
    pub fn ccy(&self) -> &str {
        self.account
            .as_ref()
            .map_or(DEFAULT_CCY, |a| a.ccy.as_str())
    }

    pub fn name(&self) -> Option<&str> {
        self.account.as_ref().and_then(|a| a.name.as_deref())
    }

    /// Every symbol whose quote the live figures ([`Portfolio::value`]) may read.
    pub fn price_sources(&self, market: &Market, mut source: impl FnMut(&str)) {
        for p in self.positions.values() {
            p.price_sources(market, self.ccy(), &mut source);
        }
    }

    /// Every symbol whose quote this portfolio's share of the exposure table may read:
    /// its live figures' sources, the account currency in USD, and each symbol's
    /// notional in USD (see [`crate::exposure::table`]).
    pub fn exposure_sources(&self, market: &Market, mut source: impl FnMut(&str)) {
        if self.positions.is_empty() {
            return;
        }
        self.price_sources(market, &mut source);
        market.rate_sources(self.ccy(), "USD", &mut source);
        for p in self.positions.values() {
            let info = market.info(&p.symbol);
            match (&info.base_ccy, &info.profit_ccy) {
                (Some(base), _) => market.rate_sources(base, "USD", &mut source),
                (None, profit) => {
                    source(&p.symbol);
                    if let Some(profit) = profit {
                        market.rate_sources(profit, "USD", &mut source);
                    }
                }
            }
        }
    }

    /// Value every position and the account at current prices.
    pub fn value(&self, market: &Market) -> Valuation {
        self.value_with(&mut Pricer::new(market))
    }

    /// [`Portfolio::value`] with a pricer shared by a pass over many portfolios.
    pub fn value_with(&self, pricer: &mut Pricer<'_>) -> Valuation {
        let default = Account::default();
        let account = self.account.as_ref().unwrap_or(&default);
        let mut positions = Vec::with_capacity(self.positions.len());
        let (mut floating, mut margin) = (0.0, 0.0);
        for p in self.positions.values() {
            let (profit, price, pos_margin) = p.value(pricer, &account.ccy, account.leverage);
            let figure = LiveFigure {
                profit: cents(profit),
                price,
            };
            // Closing deals already put the realised part (profit and its share of
            // swap) into the balance: only the rest floats and needs margin.
            let open = p.open_vol();
            if open == p.vol {
                floating += figure.profit + p.swap;
                margin += pos_margin;
            } else if open > 0 {
                let share = open as f64 / p.vol as f64;
                floating += cents(profit * share) + p.swap * share;
                margin += pos_margin * share;
            }
            positions.push((p.id, figure));
        }
        let margin = cents(account.server_margin.unwrap_or(margin));
        let equity = cents(account.balance + account.credit + floating);
        let figures = AccountFigures {
            equity,
            margin,
            margin_free: cents(equity - margin),
            margin_level: (margin > 0.0).then(|| cents(equity / margin * 100.0)),
        };
        Valuation {
            positions,
            account: figures,
        }
    }

    /// The account as shown to clients, `None` before any `account` event.
    pub fn account_view(&self, valuation: &Valuation) -> Option<AccountView<'_>> {
        let a = self.account.as_ref()?;
        let f = valuation.account;
        Some(AccountView {
            login: self.login,
            name: a.name.as_deref(),
            ccy: &a.ccy,
            balance: cents(a.balance),
            credit: cents(a.credit),
            equity: f.equity,
            margin: f.margin,
            margin_free: f.margin_free,
            margin_level: f.margin_level,
            leverage: a.leverage,
        })
    }

    /// A position as shown to clients, valued.
    pub fn position_view<'a>(&'a self, id: u64, valuation: &Valuation) -> Option<PositionView<'a>> {
        let p = self.positions.get(&id)?;
        Some(p.view(valuation.figure(id)?))
    }

    /// The `portfolio_full` snapshot: account (or null) and every open position.
    pub fn snapshot(&self, valuation: &Valuation) -> bytes::Bytes {
        self.snapshot_on(valuation, &Channel::Portfolio(self.login).to_string())
    }

    /// [`Portfolio::snapshot`] given the channel's name.
    pub(crate) fn snapshot_on(&self, valuation: &Valuation, channel: &str) -> bytes::Bytes {
        self.snapshot_text(valuation, &LiveText::of(valuation), channel)
    }

    /// [`Portfolio::snapshot_on`] with the valuation's numbers already formatted.
    ///
    /// Written field by field: the bytes serializing `{login, account, positions}`
    /// would give (tested).
    pub(crate) fn snapshot_text(
        &self,
        valuation: &Valuation,
        text: &LiveText,
        channel: &str,
    ) -> bytes::Bytes {
        encode_raw("portfolio_full", channel, |out| {
            out.extend_from_slice(b"{\"login\":");
            json(out, &self.login);
            out.extend_from_slice(b",\"account\":");
            match self.account_view(valuation) {
                Some(account) => account.write_json(out, text.account()),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"positions\":[");
            let mut first = true;
            for p in self.positions.values() {
                let found = valuation
                    .positions
                    .binary_search_by_key(&p.id, |&(id, _)| id);
                if let Ok(i) = found {
                    if !std::mem::take(&mut first) {
                        out.push(b',');
                    }
                    let (profit, price) = text.position(i);
                    p.view(&valuation.positions[i].1)
                        .write_json(out, profit, price);
                }
            }
            out.extend_from_slice(b"]}");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::encode_on;
    use tradecast_protocol::ingest::{self, EventBody, PositionEvent};

    /// The snapshot as serde writes it.
    fn serialized(p: &Portfolio, valuation: &Valuation) -> bytes::Bytes {
        #[derive(Serialize)]
        struct Full<'a> {
            login: u64,
            account: Option<AccountView<'a>>,
            positions: Vec<PositionView<'a>>,
        }
        let positions = p
            .positions
            .values()
            .filter_map(|p| Some(p.view(valuation.figure(p.id)?)))
            .collect();
        let full = Full {
            login: p.login,
            account: p.account_view(valuation),
            positions,
        };
        encode_on("portfolio_full", "portfolio:7", &full)
    }

    fn open(id: u64, fields: &str) -> Position {
        let text = format!(
            r#"{{"v":1,"src":"t","seq":1,"ts":5,"type":"position","op":"open","login":7,"position_id":{id},"symbol":"EURUSD","side":"sell","vol":12345,"price_open":1.2{fields}}}"#
        );
        let EventBody::Position(PositionEvent::Open(open)) =
            ingest::parse(text.as_bytes()).unwrap().body
        else {
            panic!("an open")
        };
        Position::open(&open, open.symbol.as_str().into(), 5)
    }

    #[test]
    fn written_snapshots_equal_serialized_ones() {
        let mut p = Portfolio::new(7);
        p.positions
            .insert(1, open(1, r#","sl":1.1,"swap":-0.0,"time_create":9"#));
        let mut odd = open(2, r#","tp":3e-7,"swap":1e21"#);
        odd.symbol = "US\"500\\\u{1}é".into();
        odd.side = Side::Buy;
        p.positions.insert(2, odd);
        p.positions.insert(3, open(3, ""));
        let mut valuation = Valuation {
            positions: Vec::new(),
            account: AccountFigures {
                equity: 1.0,
                margin: 0.0,
                margin_free: -0.0,
                margin_level: None,
            },
        };
        let check = |p: &Portfolio, valuation: &Valuation| {
            assert_eq!(
                p.snapshot_on(valuation, "portfolio:7"),
                serialized(p, valuation)
            );
        };
        // No account, no figures: no positions listed.
        check(&p, &valuation);
        let figure = |profit, price| LiveFigure { profit, price };
        valuation.positions.push((1, figure(-12.34, Some(1.23456))));
        valuation.positions.push((2, figure(f64::NAN, None)));
        check(&p, &valuation);
        p.account = Some(Account {
            name: Some("Zoë \"Q\" \u{7}".into()),
            balance: 1234.5,
            credit: -0.004,
            ..Account::default()
        });
        check(&p, &valuation);
        valuation.account.margin_level = Some(1e-7);
        valuation.positions.push((3, figure(0.0, Some(-0.0))));
        check(&p, &valuation);
    }
}
