//! Instruments and quotes: the symbol registry, last prices and currency conversion.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tradecast_protocol::ingest::{SymbolSpec, Tick};

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
    /// From `symbol` events.
    registered: BTreeMap<String, SymbolInfo>,
    /// Inferred from a first tick of a symbol without a `symbol` event.
    inferred: BTreeMap<String, SymbolInfo>,
    quotes: BTreeMap<String, Quote>,
    /// `"{base}{profit}"` → symbol, for registered symbols whose name is not simply the
    /// concatenation (`EURUSD.m`).
    pairs: BTreeMap<String, String>,
}

impl Market {
    pub fn register(&mut self, spec: &SymbolSpec) {
        let info = SymbolInfo {
            group: spec.group.clone(),
            digits: spec.digits.unwrap_or(5),
            contract_size: spec.contract_size,
            base_ccy: spec.base_ccy.clone(),
            profit_ccy: Some(spec.profit_ccy.clone()),
        };
        if let Some(base) = &info.base_ccy {
            self.pairs
                .entry(format!("{base}{}", spec.profit_ccy))
                .or_insert_with(|| spec.symbol.clone());
        }
        self.inferred.remove(&spec.symbol);
        self.registered.insert(spec.symbol.clone(), info);
    }

    /// What is known about `symbol`, registered or inferred.
    pub fn info(&self, symbol: &str) -> SymbolInfo {
        self.registered
            .get(symbol)
            .or_else(|| self.inferred.get(symbol))
            .cloned()
            .unwrap_or_else(|| SymbolInfo::inferred(symbol, None))
    }

    /// Store a tick's prices; returns the symbol's info (inferring it on first sight).
    pub fn update(&mut self, tick: &Tick, ts: u64) -> SymbolInfo {
        self.quotes.insert(
            tick.symbol.clone(),
            Quote {
                bid: tick.bid,
                ask: tick.ask,
                ts,
            },
        );
        if let Some(info) = self.registered.get(&tick.symbol) {
            return info.clone();
        }
        self.inferred
            .entry(tick.symbol.clone())
            .or_insert_with(|| SymbolInfo::inferred(&tick.symbol, tick.digits))
            .clone()
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

    fn direct(&self, from: &str, to: &str) -> Option<f64> {
        let mid = |base: &str, quote: &str| {
            let key = format!("{base}{quote}");
            let symbol = self.pairs.get(&key).map(String::as_str).unwrap_or(&key);
            self.quote(symbol).map(Quote::mid).filter(|m| *m > 0.0)
        };
        mid(from, to).or_else(|| mid(to, from).map(|m| 1.0 / m))
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
