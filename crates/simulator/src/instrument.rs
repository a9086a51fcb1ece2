//! The symbols the simulated trade server quotes.

/// A tradable symbol as the trade server configures it (`IMTConSymbol`).
#[derive(Debug, PartialEq, Eq)]
pub struct Instrument {
    /// Symbol name, e.g. `EURUSD`.
    pub name: &'static str,
    /// Price group: the gateway publishes its ticks on `prices:{group}`.
    pub group: &'static str,
    /// The currency (or metal) bought by a buy.
    pub base: &'static str,
    /// The currency prices and profit are expressed in.
    pub quote: &'static str,
    /// Decimal places of a price: 5 for EURUSD (1.08421), 3 for USDJPY (150.253).
    pub digits: u32,
    /// Units of `base` in one lot.
    pub contract_size: u64,
    /// Typical spread in points (one point is the last price digit).
    pub spread_points: u32,
}

impl Instrument {
    /// The smallest price step, `10^-digits`.
    pub fn point(&self) -> f64 {
        10f64.powi(-(self.digits as i32))
    }

    /// Rounds `price` to the symbol's digits.
    pub fn round(&self, price: f64) -> f64 {
        let scale = 10f64.powi(self.digits as i32);
        (price * scale).round() / scale
    }

    /// Whether the symbol is quoted against the US dollar; such symbols tick more often
    /// and supply the rates that convert profit and margin into USD.
    pub fn is_usd_pair(&self) -> bool {
        self.base == "USD" || self.quote == "USD"
    }
}

/// Every symbol the simulator can quote, in the order [`SimConfig::symbols`] takes them.
///
/// The USD majors come first, so any prefix can convert its own profit currencies
/// into USD. Metals are in group `metals`; everything else in `forex`.
///
/// [`SimConfig::symbols`]: crate::SimConfig::symbols
pub const CATALOGUE: [Instrument; 30] = [
    fx("EURUSD", "EUR", "USD", 5, 8),
    fx("USDJPY", "USD", "JPY", 3, 10),
    fx("GBPUSD", "GBP", "USD", 5, 12),
    fx("AUDUSD", "AUD", "USD", 5, 10),
    fx("USDCHF", "USD", "CHF", 5, 14),
    fx("USDCAD", "USD", "CAD", 5, 14),
    fx("NZDUSD", "NZD", "USD", 5, 15),
    metal("XAUUSD", "XAU", 2, 100, 25),
    fx("EURJPY", "EUR", "JPY", 3, 18),
    fx("EURGBP", "EUR", "GBP", 5, 12),
    fx("GBPJPY", "GBP", "JPY", 3, 28),
    fx("AUDJPY", "AUD", "JPY", 3, 18),
    fx("EURCHF", "EUR", "CHF", 5, 18),
    fx("EURAUD", "EUR", "AUD", 5, 22),
    fx("EURCAD", "EUR", "CAD", 5, 22),
    fx("GBPCHF", "GBP", "CHF", 5, 28),
    fx("CHFJPY", "CHF", "JPY", 3, 25),
    fx("CADJPY", "CAD", "JPY", 3, 22),
    fx("AUDNZD", "AUD", "NZD", 5, 25),
    fx("AUDCAD", "AUD", "CAD", 5, 22),
    fx("NZDJPY", "NZD", "JPY", 3, 22),
    fx("GBPAUD", "GBP", "AUD", 5, 30),
    fx("GBPCAD", "GBP", "CAD", 5, 30),
    fx("EURNZD", "EUR", "NZD", 5, 30),
    fx("AUDCHF", "AUD", "CHF", 5, 20),
    fx("CADCHF", "CAD", "CHF", 5, 22),
    fx("NZDCAD", "NZD", "CAD", 5, 25),
    fx("GBPNZD", "GBP", "NZD", 5, 40),
    fx("NZDCHF", "NZD", "CHF", 5, 25),
    metal("XAGUSD", "XAG", 3, 5000, 25),
];

const fn fx(
    name: &'static str,
    base: &'static str,
    quote: &'static str,
    digits: u32,
    spread_points: u32,
) -> Instrument {
    Instrument {
        name,
        group: "forex",
        base,
        quote,
        digits,
        contract_size: 100_000,
        spread_points,
    }
}

const fn metal(
    name: &'static str,
    base: &'static str,
    digits: u32,
    contract_size: u64,
    spread_points: u32,
) -> Instrument {
    Instrument {
        name,
        group: "metals",
        base,
        quote: "USD",
        digits,
        contract_size,
        spread_points,
    }
}
