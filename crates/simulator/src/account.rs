//! A trader's account as the trade server keeps it: balance, leverage, open positions.
//!
//! Margin, equity and profit follow the standard MT5 formulas (trading-domain.md §1.5,
//! §1.7), in the account currency, USD.

use fastrand::Rng;

use crate::market::Market;
use crate::names;

/// Login of the first trader; later ones count up from it.
pub const FIRST_LOGIN: u64 = 100_001;

/// MT5 volumes are integers in 1/10000 lot.
pub const VOL_PER_LOT: u64 = 10_000;

/// Leverages a new account is given.
const LEVERAGES: [u32; 3] = [100, 200, 500];

/// The direction of a position or a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    /// The side of the deal that closes a position of this side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// An open position (hedging mode: many per symbol are allowed).
#[derive(Debug, Clone)]
pub struct Position {
    /// Position ticket: the ticket of the order that opened it, as in MT5.
    pub id: u64,
    /// Index of the symbol in the [`Market`].
    pub symbol: usize,
    pub side: Side,
    /// Remaining volume in 1/10000 lot.
    pub vol: u64,
    pub price_open: f64,
    /// Stop loss; 0 when unset.
    pub sl: f64,
    /// Take profit; 0 when unset.
    pub tp: f64,
    /// USD per unit of the base currency when the position opened.
    pub rate_margin: f64,
}

impl Position {
    /// The price the position would close at now: the bid for a buy, the ask for a sell.
    pub fn close_price(&self, market: &Market) -> f64 {
        let quote = market.quote(self.symbol);
        match self.side {
            Side::Buy => quote.bid,
            Side::Sell => quote.ask,
        }
    }

    /// Profit in USD of closing `vol` of this position now (§1.7):
    /// `(bid − open) × lots × contract_size × rate_profit` for a buy,
    /// `(open − ask) × …` for a sell, rounded to cents.
    pub fn profit(&self, vol: u64, market: &Market) -> f64 {
        let instrument = market.instrument(self.symbol);
        let close = self.close_price(market);
        let move_in_favour = match self.side {
            Side::Buy => close - self.price_open,
            Side::Sell => self.price_open - close,
        };
        cents(
            move_in_favour
                * lots(vol)
                * instrument.contract_size as f64
                * market.usd_per(instrument.quote),
        )
    }

    /// Margin the position ties up: `lots × contract_size × rate_margin / leverage`.
    pub fn margin(&self, leverage: u32, market: &Market) -> f64 {
        let contract_size = market.instrument(self.symbol).contract_size as f64;
        lots(self.vol) * contract_size * self.rate_margin / f64::from(leverage)
    }
}

/// A trader's account.
#[derive(Debug, Clone)]
pub struct Account {
    pub login: u64,
    /// The holder's name, which IBs see next to their commissions.
    pub name: String,
    pub leverage: u32,
    pub balance: f64,
    /// The IB that referred this client.
    pub ib: u64,
    pub positions: Vec<Position>,
    /// Between a `margin_call` enter and its leave.
    pub in_margin_call: bool,
}

impl Account {
    /// A new, unfunded account with a random holder and leverage.
    pub fn open(login: u64, ib: u64, rng: &mut Rng) -> Account {
        Account {
            login,
            name: names::person(rng),
            leverage: LEVERAGES[rng.usize(..LEVERAGES.len())],
            balance: 0.0,
            ib,
            positions: Vec::new(),
            in_margin_call: false,
        }
    }

    pub fn margin(&self, market: &Market) -> f64 {
        let margin = self
            .positions
            .iter()
            .map(|p| p.margin(self.leverage, market));
        cents(margin.sum())
    }

    /// Balance plus the floating profit of every open position (credit and swaps are 0).
    pub fn equity(&self, market: &Market) -> f64 {
        let floating: f64 = self.positions.iter().map(|p| p.profit(p.vol, market)).sum();
        cents(self.balance + floating)
    }

    pub fn free_margin(&self, market: &Market) -> f64 {
        cents(self.equity(market) - self.margin(market))
    }

    /// Equity as a percentage of margin; 0 without open positions, as MT5 reports it.
    pub fn margin_level(&self, market: &Market) -> f64 {
        let margin = self.margin(market);
        if margin == 0.0 {
            return 0.0;
        }
        cents(self.equity(market) / margin * 100.0)
    }
}

/// `vol` (1/10000 lot) in lots.
pub fn lots(vol: u64) -> f64 {
    vol as f64 / VOL_PER_LOT as f64
}

/// Rounds money to cents (and turns −0.0 into 0.0, which JSON would print as `-0.0`).
pub fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0 + 0.0
}
