//! The simulated broker: its state, the scene it starts from and the clock that moves it.

use fastrand::Rng;
use serde_json::{Value, json};

use crate::account::{Account, FIRST_LOGIN};
use crate::config::SimConfig;
use crate::margin_call::{MARGIN_CALL_LEVEL, STOP_OUT_LEVEL};
use crate::market::Market;
use crate::network::{Network, TOP_IB};
use crate::outbox::Outbox;
use crate::poisson::Poisson;
use crate::tickets::Tickets;

/// Staff id of the simulated risk manager.
const ADMIN: u64 = 1;

/// MT5 group of every simulated trader.
pub(crate) const CLIENT_GROUP: &str = "real\\std-usd";

/// MT5 group of the IBs' own accounts.
const IB_GROUP: &str = "partners\\usd";

/// Index in [`Simulator::accounts`] of the trader the demo page offers.
pub(crate) const DEMO_TRADER: usize = 0;

/// The demo trader is well funded, so their page never runs dry.
const DEMO_DEPOSIT: f64 = 25_000.0;
const DEMO_LEVERAGE: u32 = 500;
const DEMO_OPENING_POSITIONS: usize = 4;

/// Other traders start with between 1,000 and 20,000 USD (in hundreds) and up to three
/// positions.
const OPENING_DEPOSIT_HUNDREDS: std::ops::RangeInclusive<u32> = 10..=200;
const MAX_OPENING_POSITIONS: usize = 3;

/// Logins the demo page offers as one-click identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identities {
    /// A trader who always holds a few open positions.
    pub trader: u64,
    /// The top IB: every commission in the tree reaches it.
    pub ib: u64,
    /// A risk manager's staff id.
    pub admin: u64,
}

/// A deterministic, seedable simulated broker.
///
/// Call [`bootstrap`](Simulator::bootstrap) once, then [`step`](Simulator::step) with a
/// clock that moves forward (every 50–100 ms suits a live demo).
#[derive(Debug)]
pub struct Simulator {
    pub(crate) config: SimConfig,
    pub(crate) rng: Rng,
    pub(crate) outbox: Outbox,
    pub(crate) market: Market,
    pub(crate) network: Network,
    /// Traders in login order: `accounts[i].login == FIRST_LOGIN + i`.
    pub(crate) accounts: Vec<Account>,
    pub(crate) tickets: Tickets,
    /// Started by `bootstrap`; `None` until then.
    clock: Option<Clock>,
}

/// When ticks and trading activities happen.
#[derive(Debug)]
struct Clock {
    ticks: Poisson,
    activities: Poisson,
}

/// The kinds of trading activity, with their share of all activities in percent.
#[derive(Debug, Clone, Copy)]
enum Activity {
    Open,
    Close,
    Modify,
    Funding,
    Join,
    MarginCall,
}

const ACTIVITIES: [(Activity, u32); 6] = [
    (Activity::Open, 34),
    (Activity::Close, 28),
    (Activity::Modify, 16),
    (Activity::Funding, 12),
    (Activity::Join, 6),
    (Activity::MarginCall, 4),
];

impl Simulator {
    /// Sets up the market, the IB tree and the traders; no event is emitted yet.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = Rng::with_seed(config.seed);
        let market = Market::new(config.symbols, &mut rng);
        let network = Network::new(config.ib_depth);
        let mut accounts = Vec::new();
        for n in 0..config.traders.max(1) {
            let ib = if n == DEMO_TRADER {
                network.deepest()
            } else {
                network.pick(&mut rng)
            };
            accounts.push(Account::open(FIRST_LOGIN + n as u64, ib, &mut rng));
        }
        accounts[DEMO_TRADER].leverage = DEMO_LEVERAGE;
        Simulator {
            outbox: Outbox::new(config.src.clone()),
            config,
            rng,
            market,
            network,
            accounts,
            tickets: Tickets::new(),
            clock: None,
        }
    }

    /// Events that set the scene, in order: a `symbol` and a first `tick` per symbol,
    /// an `account` per IB and per trader, the `ib_link`s that build the IB tree (top
    /// down, then the clients), an initial deposit per trader (a `balance` deal and the
    /// funded `account`) and a few opening positions, so no trader's page is empty.
    ///
    /// # Panics
    ///
    /// When called a second time: the scene is set once.
    pub fn bootstrap(&mut self, now_ms: u64) -> Vec<Value> {
        assert!(self.clock.is_none(), "the simulator is bootstrapped once");
        self.outbox.begin(now_ms);
        let symbols = self.market.symbol_count();
        for symbol in 0..symbols {
            let instrument = self.market.instrument(symbol);
            self.outbox.push(
                "symbol",
                json!({
                    "symbol": instrument.name,
                    "group": instrument.group,
                    "digits": instrument.digits,
                    "contract_size": instrument.contract_size,
                    "base_ccy": instrument.base,
                    "profit_ccy": instrument.quote,
                }),
            );
        }
        for symbol in 0..symbols {
            self.push_tick(symbol);
        }

        for ib in self.network.ibs() {
            self.outbox.push(
                "account",
                json!({
                    "login": ib.id,
                    "name": ib.name,
                    "ccy": "USD",
                    "ccy_digits": 2,
                    "group": IB_GROUP,
                    "leverage": 100,
                    "balance": 0.0,
                    "credit": 0.0,
                }),
            );
        }
        for index in 0..self.accounts.len() {
            self.push_account(index);
        }
        for ib in self.network.ibs() {
            if let Some(parent) = ib.parent {
                self.outbox.push("ib_link", ib_link(ib.id, parent));
            }
        }
        for account in &self.accounts {
            self.outbox
                .push("ib_link", ib_link(account.login, account.ib));
        }

        for index in 0..self.accounts.len() {
            let deposit = if index == DEMO_TRADER {
                DEMO_DEPOSIT
            } else {
                f64::from(self.rng.u32(OPENING_DEPOSIT_HUNDREDS) * 100)
            };
            self.balance_deal(index, deposit);
        }

        let mut demo_symbols: Vec<usize> = (0..symbols).collect();
        self.rng.shuffle(&mut demo_symbols);
        for n in 0..DEMO_OPENING_POSITIONS {
            self.open(DEMO_TRADER, demo_symbols[n % symbols]);
        }
        for index in (0..self.accounts.len()).filter(|&i| i != DEMO_TRADER) {
            for _ in 0..self.rng.usize(..=MAX_OPENING_POSITIONS) {
                let symbol = self.rng.usize(..symbols);
                self.open(index, symbol);
            }
        }

        self.clock = Some(Clock {
            ticks: Poisson::start(self.config.ticks_per_sec, now_ms, &mut self.rng),
            activities: Poisson::start(self.config.trades_per_sec, now_ms, &mut self.rng),
        });
        self.outbox.finish()
    }

    /// Everything that happened since the previous call, up to `now_ms`: ticks at
    /// `ticks_per_sec` and trading activities at `trades_per_sec` (each a Poisson
    /// process). All events carry `ts` = `now_ms`. A clock that stalls or goes back
    /// produces nothing; one that jumps ahead catches up on at most 5 s.
    ///
    /// Before [`bootstrap`](Simulator::bootstrap), this bootstraps instead.
    pub fn step(&mut self, now_ms: u64) -> Vec<Value> {
        let Some(clock) = self.clock.as_mut() else {
            return self.bootstrap(now_ms);
        };
        let ticks = clock.ticks.arrivals(now_ms, &mut self.rng);
        let activities = clock.activities.arrivals(now_ms, &mut self.rng);
        self.outbox.begin(now_ms);
        for _ in 0..ticks {
            let symbol = self.market.tick(&mut self.rng);
            self.push_tick(symbol);
        }
        for _ in 0..activities {
            self.act();
        }
        self.outbox.finish()
    }

    /// Who the demo page offers as one-click identities.
    pub fn identities(&self) -> Identities {
        Identities {
            trader: self.accounts[DEMO_TRADER].login,
            ib: TOP_IB,
            admin: ADMIN,
        }
    }

    /// Performs one random trading activity. Every activity emits events: one with
    /// nothing to act on (no position to close, the client base at its limit, no one
    /// at risk) opens a position instead, and an open nobody can afford becomes a
    /// deposit.
    fn act(&mut self) {
        let total: u32 = ACTIVITIES.iter().map(|&(_, share)| share).sum();
        let mut ticket = self.rng.u32(..total);
        let mut activity = Activity::Open;
        for (candidate, share) in ACTIVITIES {
            if ticket < share {
                activity = candidate;
                break;
            }
            ticket -= share;
        }
        let done = match activity {
            Activity::Open => self.open_random(),
            Activity::Close => self.close_random(),
            Activity::Modify => self.modify_random(),
            Activity::Funding => {
                self.fund_random();
                true
            }
            Activity::Join => self.join(),
            Activity::MarginCall => self.margin_call(),
        };
        if !done && !self.open_random() {
            self.fund_random();
        }
    }

    fn push_tick(&mut self, symbol: usize) {
        let instrument = self.market.instrument(symbol);
        let quote = self.market.quote(symbol);
        self.outbox.push(
            "tick",
            json!({
                "symbol": instrument.name,
                "bid": quote.bid,
                "ask": quote.ask,
                "digits": instrument.digits,
            }),
        );
    }

    /// An `account` event with the static inputs and the server's computed state at
    /// this instant (the gateway recomputes equity from ticks in between).
    pub(crate) fn push_account(&mut self, index: usize) {
        let account = &self.accounts[index];
        let market = &self.market;
        self.outbox.push(
            "account",
            json!({
                "login": account.login,
                "name": account.name,
                "ccy": "USD",
                "ccy_digits": 2,
                "group": CLIENT_GROUP,
                "leverage": account.leverage,
                "balance": account.balance,
                "credit": 0.0,
                "equity": account.equity(market),
                "margin": account.margin(market),
                "margin_free": account.free_margin(market),
                "margin_level": account.margin_level(market),
                "mc_level": MARGIN_CALL_LEVEL,
                "so_level": STOP_OUT_LEVEL,
                "so_mode": "percent",
            }),
        );
    }

    pub(crate) fn push_ib_link(&mut self, login: u64, ib: u64) {
        self.outbox.push("ib_link", ib_link(login, ib));
    }
}

/// `login` becomes a client (or sub-IB) of `ib`.
fn ib_link(login: u64, ib: u64) -> Value {
    json!({ "op": "set", "login": login, "ib": ib, "prev_ib": 0 })
}
