//! The risk desk's exposure table: net position per symbol across all clients,
//! mirroring MT5's `IMTSummary`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tradecast_protocol::ingest::Side;

use crate::hash::FxHashMap;
use crate::market::{Market, Pricer};
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

struct Totals {
    buy: u64,
    sell: u64,
    positions: u64,
    profit_usd: f64,
    contract_size: f64,
    /// The symbol's own contract size, for positions that do not carry one.
    info_contract_size: f64,
}

/// Aggregate every open position by symbol, sorted by symbol.
///
/// Keep [`Portfolio::exposure_sources`] in step with the quotes this reads.
pub fn table<'a>(
    portfolios: impl IntoIterator<Item = &'a Portfolio>,
    market: &Market,
) -> Vec<SymbolExposure> {
    let mut pricer = Pricer::new(market);
    let mut table = Table::default();
    for portfolio in portfolios {
        table.add_valued(portfolio, &mut pricer);
    }
    table.finish(&mut pricer)
}

/// The [`table`] being built, one portfolio at a time in login order (the order
/// matters: it is the order profits are summed in).
#[derive(Default)]
pub(crate) struct Table {
    /// Rows in order of first sight, found through a hash index: cheaper per position
    /// than an ordered map keyed by symbol, and sorted once at the end.
    rows: Vec<(Arc<str>, Totals)>,
    row_of: FxHashMap<Arc<str>, usize>,
}

impl Table {
    /// Add `portfolio`, valuing it.
    pub(crate) fn add_valued(&mut self, portfolio: &Portfolio, pricer: &mut Pricer<'_>) {
        if !portfolio.positions.is_empty() {
            let valuation = portfolio.value_with(pricer);
            self.add(
                portfolio,
                |id| valuation.figure(id).map(|f| f.profit),
                pricer,
            );
        }
    }

    /// Add `portfolio`, whose positions' live profits at the current prices
    /// `profit_of` gives by position id.
    pub(crate) fn add(
        &mut self,
        portfolio: &Portfolio,
        profit_of: impl Fn(u64) -> Option<f64>,
        pricer: &mut Pricer<'_>,
    ) {
        if portfolio.positions.is_empty() {
            return;
        }
        let to_usd = pricer.rate(portfolio.ccy(), "USD").unwrap_or(1.0);
        for p in portfolio.positions.values().filter(|p| !p.realised()) {
            let row = match self.row_of.get(&*p.symbol) {
                Some(&row) => row,
                None => {
                    let totals = Totals {
                        buy: 0,
                        sell: 0,
                        positions: 0,
                        profit_usd: 0.0,
                        contract_size: 0.0,
                        info_contract_size: pricer.market().info(&p.symbol).contract_size,
                    };
                    self.rows.push((p.symbol.clone(), totals));
                    self.row_of.insert(p.symbol.clone(), self.rows.len() - 1);
                    self.rows.len() - 1
                }
            };
            let t = &mut self.rows[row].1;
            // A partly realised position counts its remaining volume only.
            let open = p.open_vol();
            match p.side {
                Side::Buy => t.buy += open,
                Side::Sell => t.sell += open,
            }
            t.positions += 1;
            let profit = profit_of(p.id).unwrap_or(0.0);
            let profit = if open == p.vol {
                profit
            } else {
                profit * (open as f64 / p.vol as f64)
            };
            t.profit_usd += profit * to_usd;
            t.contract_size = p.contract_size.unwrap_or(t.info_contract_size);
        }
    }

    pub(crate) fn finish(mut self, pricer: &mut Pricer<'_>) -> Vec<SymbolExposure> {
        self.rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.rows
            .into_iter()
            .map(|(symbol, t)| {
                let net_lots = lots(t.buy) - lots(t.sell);
                let notional = net_lots * t.contract_size;
                SymbolExposure {
                    symbol: symbol.to_string(),
                    buy_lots: lots(t.buy),
                    sell_lots: lots(t.sell),
                    net_lots,
                    notional,
                    notional_usd: notional_usd(&symbol, notional, pricer).map(cents),
                    positions: t.positions,
                    profit: cents(t.profit_usd),
                }
            })
            .collect()
    }
}

/// Base-currency notional in USD: via the base currency's USD rate, or for an
/// instrument without a base currency, price × the profit currency's USD rate.
fn notional_usd(symbol: &str, notional: f64, pricer: &mut Pricer<'_>) -> Option<f64> {
    let market = pricer.market();
    let info = market.info(symbol);
    match &info.base_ccy {
        Some(base) => Some(notional * pricer.rate(base, "USD")?),
        None => {
            let price = market.quote(symbol)?.mid();
            Some(notional * price * pricer.rate(info.profit_ccy.as_deref()?, "USD")?)
        }
    }
}
