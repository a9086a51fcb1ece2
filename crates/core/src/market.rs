//! Instruments and quotes: the symbol registry, last prices and currency conversion.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tradecast_protocol::ingest::{SymbolSpec, Tick};

use crate::hash::{FxHashMap, FxHashSet};

/// What the engine knows about an instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolInfo {
    /// The price group: ticks go to `prices:{group}`.
    pub group: String,
    pub digits: u32,
    pub contract_size: f64,
    pub base_ccy: Option<String>,
    /// `None` for an instrument we know nothing about.
    pub profit_ccy: Option<String>,
}

impl SymbolInfo {
    /// The defaults for a symbol that had no `symbol` event: a six-letter currency
    /// pair (`EURUSD`) is `forex` with a 100,000 contract, base = first three letters,
    /// profit currency = last three; anything else is group `other`, contract 1, in an
    /// unknown currency.
    pub fn inferred(symbol: &str, digits: Option<u32>) -> Self {
        let is_pair = symbol.len() == 6 && symbol.bytes().all(|b| b.is_ascii_uppercase());
        if is_pair {
            SymbolInfo {
                group: "forex".into(),
                digits: digits.unwrap_or(5),
                contract_size: 100_000.0,
                base_ccy: Some(symbol[..3].into()),
                profit_ccy: Some(symbol[3..].into()),
            }
        } else {
            SymbolInfo {
                group: "other".into(),
                digits: digits.unwrap_or(5),
                contract_size: 1.0,
                base_ccy: None,
                profit_ccy: None,
            }
        }
    }
}

/// The last bid/ask of a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub bid: f64,
    pub ask: f64,
    pub ts: u64,
}

impl Quote {
    pub fn mid(&self) -> f64 {
        (self.bid + self.ask) / 2.0
    }
}

/// Symbol registry plus last quotes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Market {
    /// One shared copy of each symbol name positions use (see [`Market::intern`]).
    #[serde(skip)]
    names: Names,
    /// From `symbol` events.
    registered: BTreeMap<String, SymbolInfo>,
    /// Inferred from a first tick of a symbol without a `symbol` event.
    inferred: BTreeMap<String, SymbolInfo>,
    quotes: BTreeMap<String, Quote>,
    /// `"{base}{profit}"` → symbol, for registered symbols whose name is not simply the
    /// concatenation (`EURUSD.m`).
    pairs: BTreeMap<String, String>,
}

/// Interned symbol names: derived, so not persisted and not part of equality.
#[derive(Debug, Clone, Default)]
struct Names(FxHashSet<Arc<str>>);

impl PartialEq for Names {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Market {
    /// The shared copy of the name `symbol`. Positions hold their symbol this way, so
    /// that valuing thousands of them reads one hot copy of each name rather than a
    /// separate allocation per position.
    pub fn intern(&mut self, symbol: &str) -> Arc<str> {
        if let Some(name) = self.names.0.get(symbol) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(symbol);
        self.names.0.insert(name.clone());
        name
    }

    /// Register (or re-register) a symbol. Returns whether anything a valuation reads
    /// changed: the symbol's info or the currency pairs conversions look up. A resync
    /// that repeats a known spec changes nothing.
    pub fn register(&mut self, spec: &SymbolSpec) -> bool {
        let info = SymbolInfo {
            group: spec.group.clone(),
            digits: spec.digits.unwrap_or(5),
            contract_size: spec.contract_size,
            base_ccy: spec.base_ccy.clone(),
            profit_ccy: Some(spec.profit_ccy.clone()),
        };
        let mut changed = false;
        if let Some(base) = &info.base_ccy {
            let key = format!("{base}{}", spec.profit_ccy);
            if let std::collections::btree_map::Entry::Vacant(vacant) = self.pairs.entry(key) {
                vacant.insert(spec.symbol.clone());
                changed = true;
            }
        }
        changed |= *self.info(&spec.symbol) != info;
        self.inferred.remove(&spec.symbol);
        self.registered.insert(spec.symbol.clone(), info);
        changed
    }

    /// What is known about `symbol`, registered or inferred.
    pub fn info(&self, symbol: &str) -> Cow<'_, SymbolInfo> {
        match self
            .registered
            .get(symbol)
            .or_else(|| self.inferred.get(symbol))
        {
            Some(info) => Cow::Borrowed(info),
            None => Cow::Owned(SymbolInfo::inferred(symbol, None)),
        }
    }

    /// Store a tick's prices; returns the symbol's info (inferring it on first sight).
    pub fn update(&mut self, tick: &Tick, ts: u64) -> &SymbolInfo {
        let quote = Quote {
            bid: tick.bid,
            ask: tick.ask,
            ts,
        };
        match self.quotes.get_mut(&tick.symbol) {
            Some(slot) => *slot = quote,
            None => {
                self.quotes.insert(tick.symbol.clone(), quote);
            }
        }
        if self.registered.contains_key(&tick.symbol) {
            return &self.registered[&tick.symbol];
        }
        if !self.inferred.contains_key(&tick.symbol) {
            let info = SymbolInfo::inferred(&tick.symbol, tick.digits);
            self.inferred.insert(tick.symbol.clone(), info);
        }
        &self.inferred[&tick.symbol]
    }

    pub fn quote(&self, symbol: &str) -> Option<&Quote> {
        self.quotes.get(symbol)
    }

    /// How many units of `to` one unit of `from` is worth, from current mid prices.
    ///
    /// Tries the direct pair (`from`+`to`: its mid), the inverse pair (`to`+`from`:
    /// 1 / mid), then a cross through USD. Mid is used so that converting a profit and
    /// converting it back agree; `None` when no quote connects the two currencies.
    pub fn rate(&self, from: &str, to: &str) -> Option<f64> {
        if from == to {
            return Some(1.0);
        }
        self.direct(from, to).or_else(|| {
            if from == "USD" || to == "USD" {
                return None;
            }
            Some(self.direct(from, "USD")? * self.direct("USD", to)?)
        })
    }

    /// Call `source` with every symbol whose quote [`Market::rate`]`(from, to)` may
    /// read, whether or not it has a quote yet (a first quote can change the path
    /// taken). The list depends on the registered pairs, not on prices.
    pub fn rate_sources(&self, from: &str, to: &str, mut source: impl FnMut(&str)) {
        if from == to {
            return;
        }
        let mut pair = |base: &str, quote: &str| self.pair_symbol(base, quote, &mut source);
        pair(from, to);
        pair(to, from);
        if from != "USD" && to != "USD" {
            pair(from, "USD");
            pair("USD", from);
            pair("USD", to);
            pair(to, "USD");
        }
    }

    fn direct(&self, from: &str, to: &str) -> Option<f64> {
        let mid = |base: &str, quote: &str| {
            let mut found = None;
            self.pair_symbol(base, quote, |symbol| {
                found = self.quote(symbol).map(Quote::mid).filter(|m| *m > 0.0);
            });
            found
        };
        mid(from, to).or_else(|| mid(to, from).map(|m| 1.0 / m))
    }

    /// The symbol quoting `base` in `quote`: the registered one for that pair, else the
    /// concatenation (`EURUSD`). Builds the key on the stack when it is short.
    fn pair_symbol(&self, base: &str, quote: &str, with: impl FnOnce(&str)) {
        let mut buf = [0u8; 32];
        let len = base.len() + quote.len();
        let owned;
        let key = if len <= buf.len() {
            buf[..base.len()].copy_from_slice(base.as_bytes());
            buf[base.len()..len].copy_from_slice(quote.as_bytes());
            std::str::from_utf8(&buf[..len]).expect("two str make a str")
        } else {
            owned = format!("{base}{quote}");
            &owned
        };
        with(self.pairs.get(key).map_or(key, String::as_str));
    }
}

/// Values positions against one state of the [`Market`], remembering what it looked
/// up: a pass over many portfolios asks for the same few symbols and rates.
pub struct Pricer<'a> {
    market: &'a Market,
    symbols: FxHashMap<&'a str, (&'a SymbolInfo, Option<Quote>)>,
    rates: Vec<(String, String, Option<f64>)>,
}

impl<'a> Pricer<'a> {
    pub fn new(market: &'a Market) -> Self {
        Pricer {
            market,
            symbols: FxHashMap::default(),
            rates: Vec::new(),
        }
    }

    pub fn market(&self) -> &'a Market {
        self.market
    }

    /// [`Market::info`] and [`Market::quote`] of `symbol`, or `None` for a symbol the
    /// market has no info about (never registered nor quoted: see
    /// [`SymbolInfo::inferred`]).
    pub fn symbol(&mut self, symbol: &str) -> Option<(&'a SymbolInfo, Option<Quote>)> {
        if let Some(&known) = self.symbols.get(symbol) {
            return Some(known);
        }
        let market = self.market;
        let (name, info) = market
            .registered
            .get_key_value(symbol)
            .or_else(|| market.inferred.get_key_value(symbol))?;
        let known = (info, market.quote(symbol).copied());
        self.symbols.insert(name, known);
        Some(known)
    }

    /// [`Market::rate`], computed once per (`from`, `to`).
    pub fn rate(&mut self, from: &str, to: &str) -> Option<f64> {
        if from == to {
            return Some(1.0);
        }
        if let Some(&(_, _, rate)) = self.rates.iter().find(|(f, t, _)| f == from && t == to) {
            return rate;
        }
        let rate = self.market.rate(from, to);
        self.rates.push((from.to_owned(), to.to_owned(), rate));
        rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(symbol: &str, bid: f64, ask: f64) -> Tick {
        Tick {
            symbol: symbol.into(),
            bid,
            ask,
            digits: None,
        }
    }

    #[test]
    fn infers_currency_pairs() {
        let info = SymbolInfo::inferred("USDJPY", Some(3));
        assert_eq!(
            (info.group.as_str(), info.digits, info.contract_size),
            ("forex", 3, 100_000.0)
        );
        assert_eq!(
            (info.base_ccy.as_deref(), info.profit_ccy.as_deref()),
            (Some("USD"), Some("JPY"))
        );
        assert_eq!(SymbolInfo::inferred("US500", None).group, "other");
    }

    #[test]
    fn converts_direct_inverse_and_cross() {
        let mut m = Market::default();
        m.update(&tick("EURUSD", 1.1, 1.1), 0);
        m.update(&tick("USDJPY", 150.0, 150.0), 0);
        assert_eq!(m.rate("EUR", "USD"), Some(1.1));
        assert_eq!(m.rate("JPY", "USD"), Some(1.0 / 150.0));
        assert!((m.rate("EUR", "JPY").unwrap() - 165.0).abs() < 1e-9);
        assert_eq!(m.rate("GBP", "USD"), None);
    }
}
