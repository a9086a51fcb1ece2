//! The price model: a random walk of each currency's value in US dollars.
//!
//! A symbol's mid price is the ratio of its two currencies' values (EURJPY = EUR in USD
//! ÷ JPY in USD), so crosses stay consistent with the majors as real prices do. A tick
//! nudges one currency of the ticking symbol and requotes that symbol alone; the other
//! symbols keep their last quote until their own next tick, as on a real feed.

use std::collections::BTreeMap;

use fastrand::Rng;

use crate::instrument::{CATALOGUE, Instrument};

/// Starting value in USD and per-tick volatility of every currency in the catalogue.
const CURRENCIES: [(&str, f64, f64); 10] = [
    ("USD", 1.0, 0.0),
    ("EUR", 1.0850, 0.000_05),
    ("GBP", 1.2700, 0.000_06),
    ("AUD", 0.6550, 0.000_06),
    ("NZD", 0.6050, 0.000_06),
    ("JPY", 1.0 / 150.25, 0.000_06),
    ("CHF", 1.0 / 0.8800, 0.000_05),
    ("CAD", 1.0 / 1.3600, 0.000_05),
    ("XAU", 2350.0, 0.000_12),
    ("XAG", 28.50, 0.000_18),
];

/// Fraction of the distance back to its starting value a currency recovers per move,
/// so that a demo left running for days still shows familiar prices.
const REVERSION: f64 = 0.002;

/// How much more often a USD pair ticks than a cross.
const USD_PAIR_WEIGHT: usize = 3;

/// The last bid and ask published for a symbol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    pub bid: f64,
    pub ask: f64,
}

impl Quote {
    pub fn mid(&self) -> f64 {
        (self.bid + self.ask) / 2.0
    }
}

#[derive(Debug)]
struct Currency {
    usd: f64,
    anchor: f64,
    volatility: f64,
}

impl Currency {
    fn walk(&mut self, rng: &mut Rng) {
        self.usd *= 1.0 + gaussian(rng) * self.volatility;
        self.usd += (self.anchor - self.usd) * REVERSION;
    }
}

/// The quoted symbols and the currency values behind them.
#[derive(Debug)]
pub struct Market {
    symbols: Vec<(&'static Instrument, Quote)>,
    currencies: BTreeMap<&'static str, Currency>,
}

impl Market {
    /// Quotes the first `count` symbols of the catalogue (at least one).
    pub fn new(count: usize, rng: &mut Rng) -> Market {
        let currencies = CURRENCIES
            .iter()
            .map(|&(code, usd, volatility)| {
                let currency = Currency {
                    usd,
                    anchor: usd,
                    volatility,
                };
                (code, currency)
            })
            .collect();
        let mut market = Market {
            symbols: Vec::new(),
            currencies,
        };
        for instrument in CATALOGUE.iter().take(count.clamp(1, CATALOGUE.len())) {
            let quote = market.requote(instrument, rng);
            market.symbols.push((instrument, quote));
        }
        market
    }

    /// Number of quoted symbols; a symbol is addressed by its index below this.
    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    pub fn instrument(&self, symbol: usize) -> &'static Instrument {
        self.symbols[symbol].0
    }

    pub fn quote(&self, symbol: usize) -> Quote {
        self.symbols[symbol].1
    }

    /// Moves the market by one tick and returns the symbol that ticked.
    pub fn tick(&mut self, rng: &mut Rng) -> usize {
        let symbol = self.pick_ticking(rng);
        let instrument = self.instrument(symbol);
        let moved = match (instrument.base, instrument.quote) {
            ("USD", other) | (other, "USD") => other,
            (base, quote) => {
                if rng.bool() {
                    base
                } else {
                    quote
                }
            }
        };
        self.currencies
            .get_mut(moved)
            .expect("every catalogue currency has a value")
            .walk(rng);
        self.symbols[symbol].1 = self.requote(instrument, rng);
        symbol
    }

    /// US dollars per unit of `ccy` at the last mid price of its USD pair: the rate the
    /// gateway, reading the same ticks, uses to convert profit (`rate_profit`) and
    /// margin, so its live profit at the moment of a close equals the deal's profit.
    pub fn usd_per(&self, ccy: &str) -> f64 {
        if ccy == "USD" {
            return 1.0;
        }
        for (instrument, quote) in &self.symbols {
            if instrument.base == ccy && instrument.quote == "USD" {
                return quote.mid();
            }
            if instrument.base == "USD" && instrument.quote == ccy {
                return 1.0 / quote.mid();
            }
        }
        // No USD pair quoted for `ccy`: fall back to the model's own value.
        self.currencies[ccy].usd
    }

    fn pick_ticking(&self, rng: &mut Rng) -> usize {
        let weight = |instrument: &Instrument| {
            if instrument.is_usd_pair() {
                USD_PAIR_WEIGHT
            } else {
                1
            }
        };
        let total: usize = self.symbols.iter().map(|(i, _)| weight(i)).sum();
        let mut ticket = rng.usize(..total);
        for (symbol, (instrument, _)) in self.symbols.iter().enumerate() {
            match ticket.checked_sub(weight(instrument)) {
                Some(rest) => ticket = rest,
                None => return symbol,
            }
        }
        unreachable!("the ticket is below the total weight")
    }

    /// A fresh quote around the model's mid price, with the symbol's spread widened by
    /// up to a quarter at random.
    fn requote(&self, instrument: &Instrument, rng: &mut Rng) -> Quote {
        let mid = self.currencies[instrument.base].usd / self.currencies[instrument.quote].usd;
        let spread_points = instrument.spread_points + rng.u32(..=instrument.spread_points / 4);
        let spread = f64::from(spread_points) * instrument.point();
        let bid = instrument.round(mid - spread / 2.0);
        let ask = instrument.round(bid + spread);
        Quote { bid, ask }
    }
}

/// A standard normal draw, approximated by the sum of four uniforms (Irwin–Hall).
fn gaussian(rng: &mut Rng) -> f64 {
    let sum: f64 = (0..4).map(|_| rng.f64()).sum();
    (sum - 2.0) * 3f64.sqrt()
}
