//! The risk desk's exposure table: net position per symbol across all clients,
//! mirroring MT5's `IMTSummary`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tradecast_protocol::ingest::Side;

use crate::market::Market;
use crate::money::{cents, lots};
use crate::portfolio::Portfolio;

/// One row of the `exposure` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolExposure {
    pub symbol: String,
    pub buy_lots: f64,
    pub sell_lots: f64,
    /// buy − sell.
    pub net_lots: f64,
    /// net lots × contract size, in units of the base currency (or of the instrument).
    pub notional: f64,
    /// The notional in USD, when current prices allow the conversion.
    pub notional_usd: Option<f64>,
    pub positions: u64,
    /// Clients' floating profit in USD (an account whose currency cannot be converted
    /// counts as USD).
    pub profit: f64,
}

#[derive(Default)]
struct Totals {
    buy: u64,
    sell: u64,
    positions: u64,
    profit_usd: f64,
    contract_size: f64,
}

/// Aggregate every open position by symbol, sorted by symbol.
pub fn table<'a>(
    portfolios: impl IntoIterator<Item = &'a Portfolio>,
    market: &Market,
) -> Vec<SymbolExposure> {
    let mut by_symbol: BTreeMap<&str, Totals> = BTreeMap::new();
    for portfolio in portfolios {
        if portfolio.positions.is_empty() {
            continue;
        }
        let valuation = portfolio.value(market);
        let to_usd = market.rate(portfolio.ccy(), "USD").unwrap_or(1.0);
        for p in portfolio.positions.values().filter(|p| !p.realised()) {
            let t = by_symbol.entry(&p.symbol).or_default();
            match p.side {
                Side::Buy => t.buy += p.vol,
                Side::Sell => t.sell += p.vol,
            }
            t.positions += 1;
            t.profit_usd += valuation.positions.get(&p.id).map_or(0.0, |f| f.profit) * to_usd;
            t.contract_size = p
                .contract_size
                .unwrap_or_else(|| market.info(&p.symbol).contract_size);
        }
    }
    by_symbol
        .into_iter()
        .map(|(symbol, t)| {
            let net_lots = lots(t.buy) - lots(t.sell);
            let notional = net_lots * t.contract_size;
            SymbolExposure {
                symbol: symbol.to_owned(),
                buy_lots: lots(t.buy),
                sell_lots: lots(t.sell),
                net_lots,
                notional,
                notional_usd: notional_usd(symbol, notional, market).map(cents),
                positions: t.positions,
                profit: cents(t.profit_usd),
            }
        })
        .collect()
}

/// Base-currency notional in USD: via the base currency's USD rate, or for an
/// instrument without a base currency, price × the profit currency's USD rate.
fn notional_usd(symbol: &str, notional: f64, market: &Market) -> Option<f64> {
    let info = market.info(symbol);
    match info.base_ccy {
        Some(base) => Some(notional * market.rate(&base, "USD")?),
        None => {
            let price = market.quote(symbol)?.mid();
            Some(notional * price * market.rate(info.profit_ccy.as_deref()?, "USD")?)
        }
    }
}
