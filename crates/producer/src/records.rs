//! The plain C structs a plugin fills in, one per MT5 record, and their codes.
//!
//! Each struct mirrors the getters of the MT5 Server API record it comes from
//! (`IMTDeal`, `IMTPosition`, `IMTOrder`, `IMTUser` + `IMTAccount`, `MTTickShort`, …):
//! the field names are the getters' in snake case, the units are MT5's own (volumes
//! `UINT64` in 1/10000 lot, times `INT64` milliseconds in the trade server's time
//! zone, enums as MT5's integer codes). The producer turns them into the ingest
//! JSON of `docs/events.md` (lowercase enum names, times converted to UTC).
//!
//! Conventions shared by every struct:
//! - Strings are UTF-8 in fixed `char` arrays, NUL-terminated unless they fill the
//!   whole array. An empty string means "absent".
//! - Optional numbers: a `double` set to NaN (`TC_ABSENT` in C) is left out of the
//!   event; an infinite one is refused. Identifiers and `digits` are left out when 0.
//! - Times: `0` (or negative) means "now" (the publish call's wall clock).
//!
//! A zero-initialised struct (`tc_deal d = {0};`, `Deal::default()`) is a valid
//! starting point: fill in what you have.
//!
//! cbindgen exports these as `tc_deal`, `tc_position`, … (see `cbindgen.toml`).

use std::ffi::c_char;

// ---------------------------------------------------------------------------
// Result codes.

/// The call succeeded.
pub const TC_OK: i32 = 0;
/// The queue is full: the writer can neither deliver to Redis nor spill to the spool
/// fast enough (in practice: Redis is unreachable and the spool reached
/// `spool_max_bytes`). The event was not taken; the call did not block.
pub const TC_ERR_FULL: i32 = -1;
/// A bad argument: NULL pointer, unknown enum code, infinite number, a string that is
/// not UTF-8, a required field missing. `tc_last_error()` names it.
pub const TC_ERR_INVALID: i32 = -2;
/// The producer is closed, or its writer thread stopped.
pub const TC_ERR_CLOSED: i32 = -3;
/// `tc_producer_flush`: not everything reached Redis within the timeout.
pub const TC_ERR_TIMEOUT: i32 = -4;
/// `tc_producer_open`: the spool directory cannot be used (or is locked by another
/// producer).
pub const TC_ERR_IO: i32 = -5;

/// Version of this C ABI; `tc_abi_version()` returns it.
pub const TC_ABI_VERSION: u32 = 1;

// ---------------------------------------------------------------------------
// Operation codes (what happened to a record).

/// `tc_position.op`: `IMTPositionSink::OnPositionAdd`.
pub const TC_POSITION_OPEN: u32 = 0;
/// `tc_position.op`: `OnPositionUpdate` (SL/TP, partial close, swap, …).
pub const TC_POSITION_UPDATE: u32 = 1;
/// `tc_position.op`: `OnPositionDelete` (fully closed).
pub const TC_POSITION_CLOSE: u32 = 2;

/// `tc_order.op`: `IMTOrderSink::OnOrderAdd`.
pub const TC_ORDER_ADD: u32 = 0;
/// `tc_order.op`: `OnOrderUpdate`.
pub const TC_ORDER_UPDATE: u32 = 1;
/// `tc_order.op`: `OnOrderDelete` (filled, cancelled, expired, …).
pub const TC_ORDER_DELETE: u32 = 2;

/// `tc_ib_link.op`: the client's agent (IB) is set.
pub const TC_IB_LINK_SET: u32 = 0;
/// `tc_ib_link.op`: the client leaves its agent.
pub const TC_IB_LINK_REMOVE: u32 = 1;

/// `tc_risk.op`: the account crossed the level downwards (`On…Enter`).
pub const TC_RISK_ENTER: u32 = 0;
/// `tc_risk.op`: the account came back above the level (`On…Leave`).
pub const TC_RISK_LEAVE: u32 = 1;

// MT5 codes, for callers without the MetaQuotes headers. A plugin passes
// `IMTDeal::Action()`, `Entry()`, … unchanged.

/// `IMTDeal::DEAL_BUY`.
pub const TC_DEAL_BUY: u32 = 0;
/// `IMTDeal::DEAL_SELL`.
pub const TC_DEAL_SELL: u32 = 1;
/// `IMTDeal::DEAL_BALANCE` (deposit or withdrawal: the amount is `profit`).
pub const TC_DEAL_BALANCE: u32 = 2;
/// `IMTDeal::DEAL_CREDIT`.
pub const TC_DEAL_CREDIT: u32 = 3;
/// `IMTDeal::DEAL_AGENT` (instant IB commission).
pub const TC_DEAL_AGENT: u32 = 18;
/// `IMTDeal::ENTRY_IN`.
pub const TC_ENTRY_IN: u32 = 0;
/// `IMTDeal::ENTRY_OUT`.
pub const TC_ENTRY_OUT: u32 = 1;
/// `IMTDeal::ENTRY_INOUT` (reversal).
pub const TC_ENTRY_INOUT: u32 = 2;
/// `IMTDeal::ENTRY_OUT_BY` (close-by).
pub const TC_ENTRY_OUT_BY: u32 = 3;
/// `IMTPosition::POSITION_BUY`.
pub const TC_POSITION_BUY: u32 = 0;
/// `IMTPosition::POSITION_SELL`.
pub const TC_POSITION_SELL: u32 = 1;

// ---------------------------------------------------------------------------
// fsync policies of the spool (see `tc_config.fsync`).

/// fsync the spool after every batch written to it, before the next batch is taken
/// (default): a power cut loses at most the batch being written.
pub const TC_FSYNC_BATCH: u32 = 0;
/// fsync at most every `fsync_interval_ms` (default 1000) while there is unsynced
/// data, and on close: a power cut loses at most that window.
pub const TC_FSYNC_INTERVAL: u32 = 1;
/// Never fsync (the OS writes back on its own); a process crash still loses
/// nothing, a power cut may lose what the OS had not written.
pub const TC_FSYNC_NEVER: u32 = 2;

// Log levels of `tc_config.log`.

/// Something failed and needs an operator (e.g. a Redis error reply).
pub const TC_LOG_ERROR: i32 = 1;
/// Something degraded (Redis unreachable: spooling).
pub const TC_LOG_WARN: i32 = 2;
/// State changes (Redis back, spool replayed).
pub const TC_LOG_INFO: i32 = 3;

// ---------------------------------------------------------------------------
// The records.

/// Implements `Default` as all zeros: a valid empty record (numbers 0, strings
/// empty, pointers NULL), exactly what `= {0}` gives in C.
macro_rules! zeroed_default {
    ($($name:ident),+) => {$(
        impl Default for $name {
            fn default() -> Self {
                // SAFETY: the struct holds only integers, floats, char arrays and raw
                // pointers, for all of which the all-zero bit pattern is valid.
                unsafe { std::mem::zeroed() }
            }
        }
    )+};
}

/// One IB of a closing deal's ancestor chain and what it earns.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IbCommission {
    /// The IB's login.
    pub ib: u64,
    /// 1: the client's direct IB, 2: its parent, …
    pub level: u32,
    /// Amount in the IB's account currency.
    pub amount: f64,
}

/// A deal (`IMTDeal`): a fill or a balance operation, from `IMTDealSink::OnDealAdd`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Deal {
    /// `Deal()`: the deal ticket.
    pub deal: u64,
    /// `Order()`: the order that produced it (0: none).
    pub order: u64,
    /// `PositionID()`: the position it opens or closes (0: none).
    pub position_id: u64,
    /// `Login()`: the client account.
    pub login: u64,
    /// `Action()`: `DEAL_BUY`=0, `DEAL_SELL`=1, `DEAL_BALANCE`=2, … `DEAL_SO_COMPENSATION_CREDIT`=20.
    pub action: u32,
    /// `Entry()`: `ENTRY_IN`=0, `ENTRY_OUT`=1, `ENTRY_INOUT`=2, `ENTRY_OUT_BY`=3 (trades only).
    pub entry: u32,
    /// `Reason()`: `DEAL_REASON_CLIENT`=0 … `DEAL_REASON_SPLIT`=18 (informational).
    pub reason: u32,
    /// `Digits()`: price digits (0: not sent).
    pub digits: u32,
    /// `TimeMsc()`: deal time, ms, trade-server time zone (0: now).
    pub time_msc: i64,
    /// `Volume()`: 1/10000 lot.
    pub volume: u64,
    /// `Price()`.
    pub price: f64,
    /// `PricePosition()`: open price of the position an OUT deal closes (0: not sent).
    pub price_position: f64,
    /// `ContractSize()` (0: not sent).
    pub contract_size: f64,
    /// `Profit()`: realised P/L, or the amount of a balance operation.
    pub profit: f64,
    /// `Commission()`.
    pub commission: f64,
    /// `Storage()`: swap.
    pub storage: f64,
    /// `Fee()`.
    pub fee: f64,
    /// `RateProfit()` (0: not sent).
    pub rate_profit: f64,
    /// `MarketBid()` (0: not sent).
    pub market_bid: f64,
    /// `MarketAsk()` (0: not sent).
    pub market_ask: f64,
    /// `Symbol()` (trades only).
    pub symbol: [c_char; 32],
    /// `Comment()`.
    pub comment: [c_char; 64],
    /// The client's group path, e.g. `real\std-usd` (informational).
    pub group: [c_char; 64],
    /// Optional: the ancestor IB chain with amounts (NULL: tradecast computes it from
    /// its IB tree). Copied by the publish call.
    pub ib_commissions: *const IbCommission,
    /// Number of elements at `ib_commissions`.
    pub ib_commissions_count: u32,
}

/// A position (`IMTPosition`), from `IMTPositionSink::OnPositionAdd/Update/Delete`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// `Position()`: the position ticket.
    pub position_id: u64,
    /// `Login()`.
    pub login: u64,
    /// `TC_POSITION_OPEN`, `TC_POSITION_UPDATE` or `TC_POSITION_CLOSE`.
    pub op: u32,
    /// `Action()`: `POSITION_BUY`=0, `POSITION_SELL`=1.
    pub action: u32,
    /// `Reason()` (informational).
    pub reason: u32,
    /// `Digits()` (0: not sent).
    pub digits: u32,
    /// `Volume()`: 1/10000 lot.
    pub volume: u64,
    /// `PriceOpen()`: (average) open price.
    pub price_open: f64,
    /// `PriceCurrent()`: the server's mark (0: not sent).
    pub price_current: f64,
    /// `PriceSL()` (0: none).
    pub price_sl: f64,
    /// `PriceTP()` (0: none).
    pub price_tp: f64,
    /// `Profit()`: the server's floating profit; on close, the final profit.
    pub profit: f64,
    /// `Storage()`: accumulated swap.
    pub storage: f64,
    /// `ContractSize()` (0: not sent).
    pub contract_size: f64,
    /// `RateProfit()` (0: not sent).
    pub rate_profit: f64,
    /// `RateMargin()` (0: not sent).
    pub rate_margin: f64,
    /// `TimeCreateMsc()` (server time zone).
    pub time_create_msc: i64,
    /// `TimeUpdateMsc()`: the event time of an update or close (0: now).
    pub time_update_msc: i64,
    /// On close: the closing deal's ticket, if the plugin knows it (0: not sent).
    pub close_deal: u64,
    /// `Symbol()`.
    pub symbol: [c_char; 32],
    /// `Comment()`.
    pub comment: [c_char; 64],
    /// The client's group path (informational).
    pub group: [c_char; 64],
}

/// A working order (`IMTOrder`), from `IMTOrderSink::OnOrderAdd/Update/Delete`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Order {
    /// `Order()`: the order ticket.
    pub order: u64,
    /// `Login()`.
    pub login: u64,
    /// `PositionID()`: the position it opened or closes (0: none).
    pub position_id: u64,
    /// `TC_ORDER_ADD`, `TC_ORDER_UPDATE` or `TC_ORDER_DELETE`.
    pub op: u32,
    /// `Type()`: `OP_BUY`=0 … `OP_CLOSE_BY`=8.
    pub order_type: u32,
    /// `State()`: `ORDER_STATE_STARTED`=0 … `ORDER_STATE_REQUEST_CANCEL`=9.
    pub state: u32,
    /// `TypeFill()`: `FOK`=0, `IOC`=1, `RETURN`=2 (informational).
    pub type_fill: u32,
    /// `TypeTime()`: `GTC`=0, `DAY`=1, `SPECIFIED`=2, `SPECIFIED_DAY`=3 (informational).
    pub type_time: u32,
    /// `Reason()` (informational).
    pub reason: u32,
    /// `Digits()` (0: prices not rounded).
    pub digits: u32,
    /// `VolumeInitial()`: 1/10000 lot.
    pub volume_initial: u64,
    /// `VolumeCurrent()`: 1/10000 lot still to fill.
    pub volume_current: u64,
    /// `PriceOrder()`.
    pub price_order: f64,
    /// `PriceTrigger()` (stop-limit).
    pub price_trigger: f64,
    /// `PriceSL()`.
    pub price_sl: f64,
    /// `PriceTP()`.
    pub price_tp: f64,
    /// `TimeSetupMsc()` (server time zone): the time of an add.
    pub time_setup_msc: i64,
    /// `TimeDoneMsc()`: the time of a delete (0: now).
    pub time_done_msc: i64,
    /// `TimeExpiration()`, seconds (informational).
    pub time_expiration: i64,
    /// `Symbol()` (required on add).
    pub symbol: [c_char; 32],
    /// `Comment()`.
    pub comment: [c_char; 64],
}

/// An account: the holder (`IMTUser`) and its money state (`IMTAccount`), from
/// `IMTUserSink::OnUserAdd/Update` and `IMTDealSink::OnDealPerform`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Account {
    /// `Login()`.
    pub login: u64,
    /// `IMTUser::Leverage()` (0: not sent).
    pub leverage: u32,
    /// `CurrencyDigits()` (0: not sent).
    pub currency_digits: u32,
    /// `Balance()` (NaN: not sent).
    pub balance: f64,
    /// `Credit()` (NaN: not sent).
    pub credit: f64,
    /// `Margin()` (NaN: not sent).
    pub margin: f64,
    /// `MarginFree()` (NaN: not sent; informational, tradecast computes it).
    pub margin_free: f64,
    /// `MarginLevel()` (NaN: not sent; informational).
    pub margin_level: f64,
    /// `Equity()` (NaN: not sent; informational).
    pub equity: f64,
    /// Event time (0: now).
    pub time_msc: i64,
    /// `IMTUser::Name()`: the holder's name, shown to the trader and their IBs.
    pub name: [c_char; 256],
    /// Deposit currency, e.g. `USD` (the group's `Currency()`).
    pub currency: [c_char; 16],
    /// `IMTUser::Group()`.
    pub group: [c_char; 64],
}

/// A margin-call or stop-out crossing, from `IMTAccountSink::OnAccountMarginCallEnter/
/// Leave` and `OnAccountStopOutEnter/Leave`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Risk {
    /// `Login()`.
    pub login: u64,
    /// `TC_RISK_ENTER` or `TC_RISK_LEAVE`.
    pub op: u32,
    /// `Equity()` (NaN: not sent).
    pub equity: f64,
    /// `Margin()` (NaN: not sent).
    pub margin: f64,
    /// `MarginLevel()`, % (NaN: not sent).
    pub margin_level: f64,
    /// The group's level that was crossed (NaN: not sent).
    pub threshold: f64,
    /// Event time (0: now).
    pub time_msc: i64,
    /// The account's group (informational).
    pub group: [c_char; 64],
}

/// A quote (`MTTickShort`), from `IMTTickSink::OnTick`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// `datetime_msc` (server time zone; 0: now).
    pub datetime_msc: i64,
    /// `bid` (> 0).
    pub bid: f64,
    /// `ask` (≥ bid).
    pub ask: f64,
    /// `last` (0: not sent).
    pub last: f64,
    /// Price digits (0: not sent; tradecast uses the `symbol` event's, else 5).
    pub digits: u32,
    /// `flags` (informational, not sent).
    pub flags: u32,
    /// The symbol.
    pub symbol: [c_char; 32],
}

/// A link of the IB tree: `login`'s agent is `ib` (from `IMTUser::Agent()` in
/// `OnUserAdd/Update`, or from the CRM).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IbLink {
    /// The client (or sub-IB).
    pub login: u64,
    /// The parent IB: required (not 0) for `TC_IB_LINK_SET`; for
    /// `TC_IB_LINK_REMOVE` optionally the parent being left (0: whichever).
    pub ib: u64,
    /// `TC_IB_LINK_SET` or `TC_IB_LINK_REMOVE`.
    pub op: u32,
    /// Event time (0: now).
    pub time_msc: i64,
}

/// A symbol's static specification (`IMTConSymbol`), at start and on change.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Symbol {
    /// `Digits()` (sent as is, 0 included).
    pub digits: u32,
    /// `ContractSize()` (> 0).
    pub contract_size: f64,
    /// Event time (0: now).
    pub time_msc: i64,
    /// `Symbol()`.
    pub symbol: [c_char; 32],
    /// Price group: its ticks go to `prices:{group}`; 1–64 of `A-Z a-z 0-9 _ - .`.
    pub group: [c_char; 64],
    /// `CurrencyBase()` (empty for e.g. an index).
    pub base_ccy: [c_char; 16],
    /// `CurrencyProfit()` (required).
    pub profit_ccy: [c_char; 16],
}

zeroed_default!(Deal, Position, Order, Account, Risk, Tick, IbLink, Symbol);

// A stored copy of a record never keeps the caller's pointer (see `Event`), so the
// records may cross to the writer thread.
// SAFETY: `Deal::ib_commissions` is the only pointer; the producer nulls it in every
// copy it keeps and reads it only inside the publish call.
unsafe impl Send for Deal {}

/// Fill a fixed `char` array from a `&str` (for Rust callers and tests): copies at
/// most `N - 1` bytes (cut at a character boundary) and NUL-terminates.
pub fn set_str<const N: usize>(dst: &mut [c_char; N], src: &str) {
    let mut end = src.len().min(N.saturating_sub(1));
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    for (d, s) in dst.iter_mut().zip(src.as_bytes()[..end].iter()) {
        *d = *s as c_char;
    }
    for d in dst.iter_mut().skip(end) {
        *d = 0;
    }
}

/// The UTF-8 text of a fixed `char` array: up to the first NUL, or all of it.
pub(crate) fn get_str<const N: usize>(src: &[c_char; N]) -> Result<&str, std::str::Utf8Error> {
    // SAFETY: c_char and u8 have the same size and alignment.
    let bytes: &[u8; N] = unsafe { &*(src as *const [c_char; N] as *const [u8; N]) };
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(N);
    std::str::from_utf8(&bytes[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_are_cut_at_a_character_boundary() {
        let mut a = [0 as c_char; 8];
        set_str(&mut a, "EURUSD");
        assert_eq!(get_str(&a).unwrap(), "EURUSD");
        set_str(&mut a, "ééééé"); // 10 bytes: 7 fit, cut back to 6
        assert_eq!(get_str(&a).unwrap(), "ééé");
        let full = [b'A' as c_char; 4]; // no NUL at all
        assert_eq!(get_str(&full).unwrap(), "AAAA");
        let bad = [0xff_u8 as c_char, 0, 0, 0];
        assert!(get_str(&bad).is_err());
    }
}
