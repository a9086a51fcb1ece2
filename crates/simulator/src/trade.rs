//! Trading: opening positions, moving their stop loss and take profit, closing them.
//!
//! Each follows the order of events an MT5 plugin sees for one login:
//!
//! - open: `order` add (placed) → `order` delete (filled) → `deal` (entry in) →
//!   `position` open → `account`;
//! - modify: `position` update carrying only the changed `sl` / `tp`;
//! - close: `order` add → `order` delete → `deal` (entry out, with the realised
//!   `profit`) → `position` update with the remaining `vol` after a partial close, or
//!   `position` close → `account` with the new balance.

use std::ops::RangeInclusive;

use serde_json::{Value, json};

use crate::account::{Position, Side, VOL_PER_LOT, cents};
use crate::simulator::{DEMO_TRADER, Simulator};

/// Most positions a trader holds at once.
const MAX_POSITIONS: usize = 8;

/// The demo trader never fully closes a position below this many, so their page always
/// shows some (partial closes still happen).
const DEMO_MIN_POSITIONS: usize = 3;

/// Share of free margin a new position may tie up.
const MARGIN_BUDGET: f64 = 0.25;

/// Volumes a trader picks from: 0.01 to 2 lots.
const VOLUMES: [u64; 9] = [100, 200, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 20_000];

/// The volume step of the symbols: 0.01 lot.
const VOL_STEP: u64 = 100;

/// Chance that a close is partial when the position is big enough to split.
const PARTIAL_CLOSE_CHANCE: f64 = 0.3;

/// Chance that a new position comes with a stop loss, and with a take profit.
const PROTECTION_CHANCE: f64 = 0.5;

/// Distance of a stop loss or take profit from the current price, in points.
const PROTECTION_POINTS: RangeInclusive<u32> = 150..=800;

/// Where orders come from.
const REASONS: [&str; 3] = ["client", "mobile", "web"];

impl Simulator {
    /// A random trader with free margin and room for one more position opens one on a
    /// random symbol. False when nobody can.
    pub(crate) fn open_random(&mut self) -> bool {
        let candidates: Vec<usize> = (0..self.accounts.len())
            .filter(|&i| {
                let account = &self.accounts[i];
                account.positions.len() < MAX_POSITIONS && account.free_margin(&self.market) > 0.0
            })
            .collect();
        if candidates.is_empty() {
            return false;
        }
        let index = candidates[self.rng.usize(..candidates.len())];
        let symbol = self.rng.usize(..self.market.symbol_count());
        self.open(index, symbol)
    }

    /// Trader `index` opens a market position on `symbol`, sized to fit their free
    /// margin. False when even 0.01 lot does not fit.
    pub(crate) fn open(&mut self, index: usize, symbol: usize) -> bool {
        let account = &self.accounts[index];
        let instrument = self.market.instrument(symbol);
        let rate_margin = self.market.usd_per(instrument.base);
        let margin_per_lot =
            instrument.contract_size as f64 * rate_margin / f64::from(account.leverage);
        let budget = account.free_margin(&self.market) * MARGIN_BUDGET;
        // A negative budget saturates to 0 in the cast.
        let affordable =
            (budget / margin_per_lot * VOL_PER_LOT as f64) as u64 / VOL_STEP * VOL_STEP;
        let vol = VOLUMES[self.rng.usize(..VOLUMES.len())].min(affordable);
        if vol == 0 {
            return false;
        }

        let login = account.login;
        let side = if self.rng.bool() {
            Side::Buy
        } else {
            Side::Sell
        };
        let quote = self.market.quote(symbol);
        let price = match side {
            Side::Buy => quote.ask,
            Side::Sell => quote.bid,
        };
        let mut position = Position {
            id: self.tickets.order(),
            symbol,
            side,
            vol,
            price_open: price,
            sl: 0.0,
            tp: 0.0,
            rate_margin,
        };
        if self.rng.f64() < PROTECTION_CHANCE {
            position.sl = self.protective_level(&position, true);
        }
        if self.rng.f64() < PROTECTION_CHANCE {
            position.tp = self.protective_level(&position, false);
        }
        let reason = REASONS[self.rng.usize(..REASONS.len())];
        let deal = self.tickets.deal();
        let rate_profit = self.market.usd_per(instrument.quote);

        self.push_filled_order(json!({
            "login": login,
            "order": position.id,
            "symbol": instrument.name,
            "order_type": side.as_str(),
            "vol_initial": vol,
            "price_order": price,
            "sl": position.sl,
            "tp": position.tp,
            "fill": "ioc",
            "tif": "gtc",
            "position_id": 0,
            "reason": reason,
        }));
        self.outbox.push(
            "deal",
            json!({
                "login": login,
                "deal": deal,
                "order": position.id,
                "position_id": position.id,
                "action": side.as_str(),
                "entry": "in",
                "symbol": instrument.name,
                "digits": instrument.digits,
                "contract_size": instrument.contract_size,
                "vol": vol,
                "price": price,
                "profit": 0.0,
                "rate_profit": rate_profit,
                "market_bid": quote.bid,
                "market_ask": quote.ask,
                "reason": reason,
            }),
        );
        self.outbox.push(
            "position",
            json!({
                "op": "open",
                "login": login,
                "position_id": position.id,
                "symbol": instrument.name,
                "side": side.as_str(),
                "digits": instrument.digits,
                "contract_size": instrument.contract_size,
                "vol": vol,
                "price_open": price,
                "sl": position.sl,
                "tp": position.tp,
                "swap": 0.0,
                "rate_profit": rate_profit,
                "rate_margin": rate_margin,
                "profit": position.profit(vol, &self.market),
                "price_current": position.close_price(&self.market),
                "time_create": self.outbox.now_ms(),
                "reason": reason,
            }),
        );
        self.accounts[index].positions.push(position);
        self.push_account(index);
        true
    }

    /// Moves the stop loss, the take profit or both of a random open position.
    /// False when no position is open.
    pub(crate) fn modify_random(&mut self) -> bool {
        let Some((index, slot)) = self.pick_position() else {
            return false;
        };
        let mut position = self.accounts[index].positions[slot].clone();
        let mut update = json!({
            "op": "update",
            "login": self.accounts[index].login,
            "position_id": position.id,
        });
        let change = self.rng.u8(..3);
        if change != 1 {
            position.sl = self.moved_level(&position, position.sl, true);
            update["sl"] = position.sl.into();
        }
        if change != 0 {
            position.tp = self.moved_level(&position, position.tp, false);
            update["tp"] = position.tp.into();
        }
        self.accounts[index].positions[slot] = position;
        self.outbox.push("position", update);
        true
    }

    /// Closes a random open position, fully or in part. False when no position is
    /// open, or the one picked belongs to the demo trader at their minimum and cannot
    /// be split.
    pub(crate) fn close_random(&mut self) -> bool {
        let Some((index, slot)) = self.pick_position() else {
            return false;
        };
        let held = self.accounts[index].positions.len();
        let vol = self.accounts[index].positions[slot].vol;
        let keep = index == DEMO_TRADER && held <= DEMO_MIN_POSITIONS;
        let splittable = vol >= 2 * VOL_STEP;
        let closed = if splittable && (keep || self.rng.f64() < PARTIAL_CLOSE_CHANCE) {
            vol / 2 / VOL_STEP * VOL_STEP
        } else if keep {
            return false;
        } else {
            vol
        };
        self.close(index, slot, closed);
        true
    }

    /// Closes `vol` of position `slot` of trader `index` at the current price.
    fn close(&mut self, index: usize, slot: usize, vol: u64) {
        let position = self.accounts[index].positions[slot].clone();
        let login = self.accounts[index].login;
        let instrument = self.market.instrument(position.symbol);
        let quote = self.market.quote(position.symbol);
        let price = position.close_price(&self.market);
        let profit = position.profit(vol, &self.market);
        let side = position.side.opposite();
        let order = self.tickets.order();
        let deal = self.tickets.deal();
        let reason = REASONS[self.rng.usize(..REASONS.len())];

        self.push_filled_order(json!({
            "login": login,
            "order": order,
            "symbol": instrument.name,
            "order_type": side.as_str(),
            "vol_initial": vol,
            "price_order": price,
            "sl": 0.0,
            "tp": 0.0,
            "fill": "ioc",
            "tif": "gtc",
            "position_id": position.id,
            "reason": reason,
        }));
        self.outbox.push(
            "deal",
            json!({
                "login": login,
                "deal": deal,
                "order": order,
                "position_id": position.id,
                "action": side.as_str(),
                "entry": "out",
                "symbol": instrument.name,
                "digits": instrument.digits,
                "contract_size": instrument.contract_size,
                "vol": vol,
                "price": price,
                "price_position": position.price_open,
                "profit": profit,
                "rate_profit": self.market.usd_per(instrument.quote),
                "market_bid": quote.bid,
                "market_ask": quote.ask,
                "reason": reason,
            }),
        );

        let account = &mut self.accounts[index];
        account.balance = cents(account.balance + profit);
        let remaining = position.vol - vol;
        let event = if remaining > 0 {
            account.positions[slot].vol = remaining;
            json!({ "op": "update", "login": login, "position_id": position.id, "vol": remaining })
        } else {
            account.positions.remove(slot);
            json!({
                "op": "close",
                "login": login,
                "position_id": position.id,
                "close_deal": deal,
                "symbol": instrument.name,
                "profit": profit,
            })
        };
        self.outbox.push("position", event);
        self.push_account(index);
    }

    /// A market order's life as the server reports it: added as placed, then deleted
    /// from the book as filled. `order` holds the fields common to both.
    fn push_filled_order(&mut self, order: Value) {
        let mut placed = order.clone();
        placed["op"] = "add".into();
        placed["state"] = "placed".into();
        placed["vol_current"] = placed["vol_initial"].clone();
        let mut filled = order;
        filled["op"] = "delete".into();
        filled["state"] = "filled".into();
        filled["vol_current"] = 0.into();
        self.outbox.push("order", placed);
        self.outbox.push("order", filled);
    }

    /// A random open position, every open position equally likely.
    fn pick_position(&mut self) -> Option<(usize, usize)> {
        let open: usize = self.accounts.iter().map(|a| a.positions.len()).sum();
        if open == 0 {
            return None;
        }
        let mut nth = self.rng.usize(..open);
        for (index, account) in self.accounts.iter().enumerate() {
            if nth < account.positions.len() {
                return Some((index, nth));
            }
            nth -= account.positions.len();
        }
        unreachable!("nth is below the number of open positions")
    }

    /// A stop loss (`stop` true) or take profit a random distance from the current
    /// price, on the losing or winning side of the position.
    fn protective_level(&mut self, position: &Position, stop: bool) -> f64 {
        let instrument = self.market.instrument(position.symbol);
        let distance = f64::from(self.rng.u32(PROTECTION_POINTS)) * instrument.point();
        let above = (position.side == Side::Buy) != stop;
        let price = position.close_price(&self.market);
        instrument.round(if above {
            price + distance
        } else {
            price - distance
        })
    }

    /// A new protective level that differs from `current`.
    fn moved_level(&mut self, position: &Position, current: f64, stop: bool) -> f64 {
        let level = self.protective_level(position, stop);
        if level == current {
            let instrument = self.market.instrument(position.symbol);
            instrument.round(level + instrument.point())
        } else {
            level
        }
    }
}
