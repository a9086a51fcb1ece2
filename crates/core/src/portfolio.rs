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
//! `close` event arrives, so equity is not counted twice in between.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tradecast_protocol::Channel;
use tradecast_protocol::ingest::{AccountEvent, PositionOpen, Side};

use crate::effect::encode;
use crate::market::Market;
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
    pub symbol: String,
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
    pub fn open(event: &PositionOpen, ts: u64) -> Self {
        Position {
            id: event.position_id,
            symbol: event.symbol.clone(),
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

    /// Has a closing deal already realised all of this position's volume?
    pub fn realised(&self) -> bool {
        self.closing.is_some_and(|c| c.vol >= self.vol)
    }

    /// Live profit (unrounded, account currency), the price it was marked at, and
    /// the margin, given current prices.
    fn value(&self, market: &Market, ccy: &str, leverage: u32) -> (f64, Option<f64>, f64) {
        let info = market.info(&self.symbol);
        let contract = self.contract_size.unwrap_or(info.contract_size);
        let lots = lots(self.vol);
        let profit_rate = info
            .profit_ccy
            .as_deref()
            .and_then(|p| market.rate(p, ccy))
            .or(self.rate_profit)
            .unwrap_or(1.0);
        let (profit, price) = match market.quote(&self.symbol) {
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
                .or_else(|| base.and_then(|b| market.rate(b, ccy)))
                .unwrap_or(self.price_open * profit_rate),
        };
        let margin = lots * contract * base_rate / f64::from(leverage.max(1));
        (profit, price, margin)
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
    pub positions: BTreeMap<u64, LiveFigure>,
    pub account: AccountFigures,
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

    /// Value every position and the account at current prices.
    pub fn value(&self, market: &Market) -> Valuation {
        let default = Account::default();
        let account = self.account.as_ref().unwrap_or(&default);
        let mut positions = BTreeMap::new();
        let (mut floating, mut margin) = (0.0, 0.0);
        for p in self.positions.values() {
            let (profit, price, pos_margin) = p.value(market, &account.ccy, account.leverage);
            let figure = LiveFigure {
                profit: cents(profit),
                price,
            };
            if !p.realised() {
                floating += figure.profit + p.swap;
                margin += pos_margin;
            }
            positions.insert(p.id, figure);
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
        Some(p.view(valuation.positions.get(&id)?))
    }

    /// The `portfolio_full` snapshot: account (or null) and every open position.
    pub fn snapshot(&self, valuation: &Valuation) -> bytes::Bytes {
        #[derive(Serialize)]
        struct Full<'a> {
            login: u64,
            account: Option<AccountView<'a>>,
            positions: Vec<PositionView<'a>>,
        }
        let positions = self
            .positions
            .values()
            .filter_map(|p| Some(p.view(valuation.positions.get(&p.id)?)))
            .collect();
        let full = Full {
            login: self.login,
            account: self.account_view(valuation),
            positions,
        };
        encode("portfolio_full", &Channel::Portfolio(self.login), &full)
    }
}
