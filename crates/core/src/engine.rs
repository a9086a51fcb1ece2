//! The engine: applies ingest events to the domain state and says what to publish.
//!
//! [`Engine::apply`] handles one event and returns the durable messages it causes,
//! in publishing order; [`Engine::flush_live`], called on a short timer, turns price
//! moves into conflated live figures. Neither does I/O nor reads a clock.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tradecast_protocol::Channel;
use tradecast_protocol::ingest::{
    AccountEvent, Deal, EventBody, IbLink, IngestEvent, LinkOp, OrderEvent, PositionChange,
    PositionClose, PositionEvent, PositionOpen, RiskEvent, Side, Tick,
};

use crate::alerts::{Alert, AlertLog};
use crate::config::EngineConfig;
use crate::dedup::{RecentSet, SeqWindow};
use crate::effect::{self, Effect, Rejected, encode};
use crate::exposure::{self, SymbolExposure};
use crate::hash::FxHashMap;
use crate::ib::{Commission, IbTree, Ledger};
use crate::market::{Market, Pricer};
use crate::money::{cents, lots};
use crate::orders::{OrderBook, OrderUpdate};
use crate::portfolio::{AccountView, LiveText, Portfolio, Position};

/// How many deal tickets are remembered to pay commission only once per deal.
const DEALS_REMEMBERED: usize = 1_000_000;

/// All domain state. Serializable so it can be persisted and restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engine {
    config: EngineConfig,
    /// Applied `seq` numbers per `src`.
    seen: BTreeMap<String, SeqWindow>,
    market: Market,
    portfolios: BTreeMap<u64, Portfolio>,
    /// Position id → login, to refuse an event naming another login's position.
    owners: BTreeMap<u64, u64>,
    orders: OrderBook,
    ib: IbTree,
    ledgers: BTreeMap<u64, Ledger>,
    /// Deal tickets already applied.
    deals: RecentSet,
    alerts: AlertLog,
    live: LiveState,
}

/// Bookkeeping for [`Engine::flush_live`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct LiveState {
    exposure_dirty: bool,
    exposure_at: Option<u64>,
    exposure_sent: Vec<SymbolExposure>,
    /// Who depends on which quote, and which accounts are pending: derived from the
    /// portfolios and the market, so not persisted. A deserialized engine rebuilds it
    /// on first use with every account pending (a pending account whose figures did
    /// not move pushes nothing, so erring on that side changes no output).
    #[serde(skip)]
    index: LiveIndex,
}

/// Which accounts' live figures read which symbol's quote, and which accounts may
/// have moved since their last push.
///
/// A tick only flags its symbol (O(1)); [`Engine::flush_live`] turns the flagged
/// symbols into pending accounts once per flush, instead of every tick inserting
/// every watching login into a set. Accounts and symbols have dense ids so that this
/// is plain vector work.
#[derive(Debug, Clone, Default)]
struct LiveIndex {
    /// False until built from the portfolios; cleared when a symbol's spec changes
    /// what valuations read.
    built: bool,
    symbol_ids: FxHashMap<String, u32>,
    symbols: Vec<Watched>,
    account_ids: FxHashMap<u64, u32>,
    accounts: Vec<Watcher>,
    /// Symbols quoted since the last flush.
    quoted: Vec<u32>,
    /// Accounts whose live figures may have moved since their last push.
    pending: Vec<u32>,
}

/// A symbol whose quote some valuation reads.
#[derive(Debug, Clone, Default)]
struct Watched {
    /// Accounts whose live figures read it.
    live: Vec<u32>,
    /// How many accounts' share of the exposure table reads it.
    exposure: u32,
    /// In [`LiveIndex::quoted`].
    quoted: bool,
}

/// An account, with the symbols it reads (sorted ids).
#[derive(Debug, Clone)]
struct Watcher {
    login: u64,
    /// In [`LiveIndex::pending`].
    pending: bool,
    /// A copy of the portfolio's `pushed.at_ms`, to find due accounts without
    /// looking each one up.
    pushed_at: Option<u64>,
    live: Vec<u32>,
    exposure: Vec<u32>,
}

/// Derived data: equal whenever the state it is derived from is.
impl PartialEq for LiveIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl LiveIndex {
    fn built() -> Self {
        LiveIndex {
            built: true,
            ..LiveIndex::default()
        }
    }

    fn account(&mut self, login: u64) -> u32 {
        *self.account_ids.entry(login).or_insert_with(|| {
            self.accounts.push(Watcher {
                login,
                pending: false,
                pushed_at: None,
                live: Vec::new(),
                exposure: Vec::new(),
            });
            (self.accounts.len() - 1) as u32
        })
    }

    fn symbol(&mut self, symbol: &str) -> u32 {
        if let Some(&id) = self.symbol_ids.get(symbol) {
            return id;
        }
        self.symbols.push(Watched::default());
        let id = (self.symbols.len() - 1) as u32;
        self.symbol_ids.insert(symbol.to_owned(), id);
        id
    }

    /// The sorted ids of the symbols `sources` lists.
    fn symbols_of(&mut self, sources: impl FnOnce(&mut dyn FnMut(&str))) -> Vec<u32> {
        let mut ids = Vec::new();
        sources(&mut |symbol| ids.push(self.symbol(symbol)));
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// `login`'s live figures may have moved.
    fn mark(&mut self, login: u64) {
        let id = self.account(login);
        let account = &mut self.accounts[id as usize];
        if !account.pending {
            account.pending = true;
            self.pending.push(id);
        }
    }

    /// `symbol` was quoted; returns whether the exposure table reads its quote.
    fn quote(&mut self, symbol: &str) -> bool {
        let Some(&id) = self.symbol_ids.get(symbol) else {
            return false;
        };
        let watched = &mut self.symbols[id as usize];
        if !watched.quoted && !watched.live.is_empty() {
            watched.quoted = true;
            self.quoted.push(id);
        }
        watched.exposure > 0
    }

    /// Record what `login` reads now (both lists sorted ids).
    fn watch(&mut self, login: u64, live: Vec<u32>, exposure: Vec<u32>) {
        let id = self.account(login);
        let account = &mut self.accounts[id as usize];
        let old_live = std::mem::replace(&mut account.live, live);
        let old_exposure = std::mem::replace(&mut account.exposure, exposure);
        let account = &self.accounts[id as usize];
        for (symbol, added) in changes(&old_live, &account.live) {
            let watchers = &mut self.symbols[symbol as usize].live;
            if added {
                watchers.push(id);
            } else if let Some(at) = watchers.iter().position(|&a| a == id) {
                watchers.swap_remove(at);
            }
        }
        for (symbol, added) in changes(&old_exposure, &account.exposure) {
            let count = &mut self.symbols[symbol as usize].exposure;
            *count = if added { *count + 1 } else { *count - 1 };
        }
    }

    /// Turn the symbols quoted since the last call into pending accounts.
    fn resolve(&mut self) {
        for symbol in self.quoted.drain(..) {
            let watched = &mut self.symbols[symbol as usize];
            watched.quoted = false;
            for &id in &watched.live {
                let account = &mut self.accounts[id as usize];
                if !account.pending {
                    account.pending = true;
                    self.pending.push(id);
                }
            }
        }
    }

    /// Take the pending accounts whose last push is at least `interval` old, as
    /// (login, id) in login order; the others stay pending.
    fn take_due(&mut self, now_ms: u64, interval: u64) -> Vec<(u64, u32)> {
        let mut due = Vec::new();
        let accounts = &mut self.accounts;
        self.pending.retain(|&id| {
            let account = &mut accounts[id as usize];
            let is_due = account
                .pushed_at
                .is_none_or(|at| now_ms >= at.saturating_add(interval));
            if is_due {
                account.pending = false;
                due.push((account.login, id));
            }
            !is_due
        });
        due.sort_unstable();
        due
    }
}

/// The differences from sorted `old` to sorted `new`: (item, added?).
fn changes(old: &[u32], new: &[u32]) -> Vec<(u32, bool)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => (i, j) = (i + 1, j + 1),
            (Some(&a), Some(&b)) if a < b => {
                out.push((a, false));
                i += 1;
            }
            (Some(&a), None) => {
                out.push((a, false));
                i += 1;
            }
            (_, Some(&b)) => {
                out.push((b, true));
                j += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
    out
}

/// `position_update` body: the id plus only what changed.
#[derive(Debug, Default, PartialEq, Serialize)]
struct PositionDelta {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price_open: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sl: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tp: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swap: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<f64>,
}

/// Durable `account_update` body: the whole account, plus the balance operation that
/// caused it, if any.
#[derive(Serialize)]
struct AccountUpdate<'a> {
    #[serde(flatten)]
    account: AccountView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deal: Option<u64>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            config,
            seen: BTreeMap::new(),
            market: Market::default(),
            portfolios: BTreeMap::new(),
            owners: BTreeMap::new(),
            orders: OrderBook::default(),
            ib: IbTree::default(),
            ledgers: BTreeMap::new(),
            deals: RecentSet::new(DEALS_REMEMBERED),
            alerts: AlertLog::default(),
            live: LiveState {
                index: LiveIndex::built(),
                ..LiveState::default()
            },
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Apply one validated event; the effects come in the order they must be
    /// published.
    ///
    /// `apply` depends only on the events (their `ts`, not `now_ms`), so replaying the
    /// same events rebuilds the same state; `now_ms` is part of the signature for the
    /// pipeline's sake and pacing happens in [`Engine::flush_live`].
    ///
    /// An event whose (`src`, `seq`) was already applied is [`Rejected::Duplicate`];
    /// one that contradicts the state is [`Rejected::Invalid`] and changes nothing.
    pub fn apply(&mut self, event: &IngestEvent, _now_ms: u64) -> Result<Vec<Effect>, Rejected> {
        if self
            .seen
            .get(&event.src)
            .is_some_and(|w| w.contains(event.seq))
        {
            return Err(Rejected::Duplicate);
        }
        let ts = event.ts;
        let effects = match &event.body {
            EventBody::Tick(tick) => Ok(self.tick(tick, ts)),
            EventBody::Symbol(spec) => {
                if self.market.register(spec) {
                    // What valuations read may have changed (a symbol's currencies, a
                    // newly registered pair): re-derive the index on next use, which
                    // leaves every account pending.
                    self.live.index.built = false;
                } else {
                    self.touch(&spec.symbol);
                }
                Ok(Vec::new())
            }
            EventBody::Account(account) => Ok(self.account(account)),
            EventBody::Deal(deal) => self.deal(deal, ts),
            EventBody::Position(PositionEvent::Open(open)) => self.position_open(open, ts),
            EventBody::Position(PositionEvent::Update(change)) => self.position_update(change),
            EventBody::Position(PositionEvent::Close(close)) => self.position_close(close),
            EventBody::Order(order) => self.order(order),
            EventBody::MarginCall(risk) => Ok(self.risk("margin_call", risk, ts)),
            EventBody::StopOut(risk) => Ok(self.risk("stop_out", risk, ts)),
            EventBody::IbLink(link) => self.ib_link(link),
        }
        .map_err(Rejected::Invalid)?;
        self.seen
            .entry(event.src.clone())
            .or_default()
            .insert(event.seq);
        Ok(effects)
    }

    /// Push live figures that moved: for each account whose last push is at least
    /// `live_interval_ms` old, an ephemeral `position_update {id, profit, price}` per
    /// position whose profit or price changed and an `account_update {equity, margin,
    /// margin_free, margin_level}`, followed by a refreshed `portfolio_full` snapshot;
    /// then the `exposure` table if it changed and the last one is at least
    /// `exposure_interval_ms` old. Accounts not yet due stay pending for a later call.
    pub fn flush_live(&mut self, now_ms: u64) -> Vec<Effect> {
        let interval = self.config.live_interval_ms;
        let index = self.index();
        index.resolve();
        let due = index.take_due(now_ms, interval);
        let exposure_due = self
            .live
            .exposure_at
            .is_none_or(|at| now_ms >= at.saturating_add(self.config.exposure_interval_ms));
        // The exposure table, when due, is built in the same walk: each portfolio is
        // added right after it is valued, while its data is still in cache.
        let mut table = (self.live.exposure_dirty && exposure_due).then(exposure::Table::default);
        let index = &mut self.live.index;
        let mut pricer = Pricer::new(&self.market);
        let mut effects = Vec::with_capacity(due.len() * 4);
        if table.is_some() || due.len() * 8 >= self.portfolios.len() {
            // The table needs every portfolio, or many are due (they were pushed
            // together): one walk in login order touches less memory than a lookup
            // each.
            let mut due = due.into_iter().peekable();
            for (&login, portfolio) in &mut self.portfolios {
                while due.next_if(|&(l, _)| l < login).is_some() {}
                match (due.next_if(|&(l, _)| l == login), &mut table) {
                    (Some((_, id)), table) => {
                        if push_live(portfolio, &mut pricer, now_ms, &mut effects) {
                            index.accounts[id as usize].pushed_at = Some(now_ms);
                        }
                        // Pushed or found unchanged: `pushed.positions` are the
                        // figures at the current prices.
                        if let Some(table) = table {
                            let pushed = &portfolio.pushed.positions;
                            let profit = |id| pushed.get(&id).map(|f| f.profit);
                            table.add(portfolio, profit, &mut pricer);
                        }
                    }
                    (None, Some(table)) => table.add_valued(portfolio, &mut pricer),
                    (None, None) if due.peek().is_none() => break,
                    (None, None) => {}
                }
            }
        } else {
            for (login, id) in due {
                if let Some(portfolio) = self.portfolios.get_mut(&login)
                    && push_live(portfolio, &mut pricer, now_ms, &mut effects)
                {
                    index.accounts[id as usize].pushed_at = Some(now_ms);
                }
            }
        }
        if let Some(table) = table {
            self.live.exposure_dirty = false;
            let table = table.finish(&mut pricer);
            if table != self.live.exposure_sent {
                #[derive(Serialize)]
                struct Table<'a> {
                    symbols: &'a [SymbolExposure],
                }
                let table_body = Table { symbols: &table };
                effects.push(Effect::ephemeral(
                    &Channel::Exposure,
                    "exposure".into(),
                    "exposure",
                    &table_body,
                    true,
                ));
                self.live.exposure_at = Some(now_ms);
                self.live.exposure_sent = table;
            }
        }
        effects
    }

    /// The current snapshot of every channel the engine keeps state for, as
    /// [`Effect::Snapshot`]s (plus the retained exposure table): what a broker
    /// that lost its store (Redis restarted empty) needs to serve subscribers again.
    pub fn snapshots(&self) -> Vec<Effect> {
        let mut pricer = Pricer::new(&self.market);
        let mut effects: Vec<Effect> = self
            .portfolios
            .iter()
            .map(|(&login, p)| {
                Effect::snapshot(
                    &Channel::Portfolio(login),
                    p.snapshot(&p.value_with(&mut pricer)),
                )
            })
            .collect();
        effects.extend(
            self.orders.logins().map(|login| {
                Effect::snapshot(&Channel::Orders(login), self.orders.snapshot(login))
            }),
        );
        effects.extend(self.ledgers.iter().map(|(&ib, ledger)| {
            let channel = Channel::Commissions(ib);
            Effect::snapshot(&channel, commissions_full(&channel, ib, ledger))
        }));
        effects.extend(
            self.ib
                .ibs()
                .map(|ib| Effect::snapshot(&Channel::Network(ib), self.network_snapshot(ib))),
        );
        effects.push(Effect::snapshot(&Channel::Alerts, self.alerts.snapshot()));
        effects
    }

    fn tick(&mut self, tick: &Tick, ts: u64) -> Vec<Effect> {
        let info = self.market.update(tick, ts);
        let (digits, channel) = (info.digits, Channel::Prices(info.group.clone()));
        #[derive(Serialize)]
        struct Price<'a> {
            symbol: &'a str,
            bid: f64,
            ask: f64,
            digits: u32,
            ts: u64,
        }
        let price = Price {
            symbol: &tick.symbol,
            bid: tick.bid,
            ask: tick.ask,
            digits,
            ts,
        };
        self.touch(&tick.symbol);
        vec![Effect::ephemeral(
            &channel,
            tick.symbol.clone(),
            "price",
            &price,
            true,
        )]
    }

    /// The live index, built first if needed.
    fn index(&mut self) -> &mut LiveIndex {
        if !self.live.index.built {
            // Deserialized positions each hold their own copy of the symbol name.
            for position in self
                .portfolios
                .values_mut()
                .flat_map(|p| p.positions.values_mut())
            {
                position.symbol = self.market.intern(&position.symbol);
            }
            let mut index = LiveIndex::built();
            for (&login, portfolio) in &self.portfolios {
                watch(&mut index, login, Some(portfolio), &self.market);
                let id = index.account(login);
                index.accounts[id as usize].pushed_at = portfolio.pushed.at_ms;
                index.mark(login);
                self.live.exposure_dirty |= !portfolio.positions.is_empty();
            }
            self.live.index = index;
        }
        &mut self.live.index
    }

    /// `symbol`'s quote moved: the accounts reading it are pending, resolved at the
    /// next flush.
    fn touch(&mut self, symbol: &str) {
        if self.index().quote(symbol) {
            self.live.exposure_dirty = true;
        }
    }

    /// `login`'s live figures may have moved.
    fn mark_dirty(&mut self, login: u64) {
        self.index().mark(login);
    }

    /// Re-derive the symbols `login`'s valuation reads (its positions or account
    /// currency changed).
    fn reindex(&mut self, login: u64) {
        self.index();
        watch(
            &mut self.live.index,
            login,
            self.portfolios.get(&login),
            &self.market,
        );
    }

    fn portfolio(&mut self, login: u64) -> &mut Portfolio {
        self.portfolios
            .entry(login)
            .or_insert_with(|| Portfolio::new(login))
    }

    /// A durable message on `portfolio:{login}` with the fresh `portfolio_full`.
    fn on_portfolio(&self, login: u64, kind: &'static str, body: &impl Serialize) -> Effect {
        let channel = Channel::Portfolio(login);
        let snapshot = self
            .portfolios
            .get(&login)
            .map(|p| p.snapshot(&p.value(&self.market)));
        let snapshot = snapshot
            .unwrap_or_else(|| Bytes::from(channel.empty_snapshot().expect("portfolio has one")));
        Effect::durable(&channel, kind, body, Some(snapshot))
    }

    /// A durable `account_update` carrying the whole account.
    fn account_update(
        &mut self,
        login: u64,
        cause: Option<(&'static str, f64, u64)>,
    ) -> Option<Effect> {
        let portfolio = self.portfolios.get_mut(&login)?;
        let valuation = portfolio.value(&self.market);
        portfolio.pushed.account = Some(valuation.account);
        let portfolio = &self.portfolios[&login];
        let update = AccountUpdate {
            account: portfolio.account_view(&valuation)?,
            kind: cause.map(|c| c.0),
            amount: cause.map(|c| cents(c.1)),
            deal: cause.map(|c| c.2),
        };
        Some(self.on_portfolio(login, "account_update", &update))
    }

    fn account(&mut self, event: &AccountEvent) -> Vec<Effect> {
        let portfolio = self.portfolio(event.login);
        let old_ccy = portfolio.ccy().to_owned();
        let changed = portfolio
            .account
            .get_or_insert_with(Default::default)
            .apply(event);
        if portfolio.ccy() != old_ccy {
            self.reindex(event.login);
        }
        self.mark_dirty(event.login);
        if changed {
            self.account_update(event.login, None).into_iter().collect()
        } else {
            Vec::new()
        }
    }

    fn deal(&mut self, deal: &Deal, ts: u64) -> Result<Vec<Effect>, String> {
        if self.deals.contains(deal.deal) {
            return Ok(Vec::new());
        }
        if let Some(owner) = deal
            .position_id
            .and_then(|id| self.owners.get(&id))
            .filter(|&&o| o != deal.login)
        {
            return Err(format!(
                "deal {} names position {} of login {owner}, not of login {}",
                deal.deal,
                deal.position_id.unwrap_or_default(),
                deal.login
            ));
        }
        self.deals.insert(deal.deal);
        let mut effects = Vec::new();

        // A closing deal realises (part of) its position: mark it before valuing the
        // account below, so that the `account_update` does not count the realised
        // volume twice (once in the balance, once as floating profit).
        let closing = deal.is_closing_trade() && deal.symbol.is_some();
        if let (true, Some(vol), Some(id)) = (closing, deal.vol, deal.position_id)
            && let Some(position) = self
                .portfolios
                .get_mut(&deal.login)
                .and_then(|p| p.positions.get_mut(&id))
        {
            position.close_by(deal.deal, vol, deal.profit);
            self.mark_dirty(deal.login);
            self.live.exposure_dirty = true;
        }

        // Money: a balance operation's amount is its `profit`; a trade realises profit,
        // swap, commission and fee into the balance.
        let cash = deal.profit + deal.commission + deal.swap + deal.fee;
        if cash != 0.0 {
            let account = self
                .portfolio(deal.login)
                .account
                .get_or_insert_with(Default::default);
            if deal.action.is_credit() {
                account.credit += cash;
            } else {
                account.balance += cash;
            }
            self.mark_dirty(deal.login);
            effects.extend(
                self.account_update(deal.login, Some((deal.action.as_str(), cash, deal.deal))),
            );
        }

        let (Some(symbol), Some(vol)) = (&deal.symbol, deal.vol) else {
            return Ok(effects);
        };
        if !deal.action.is_trade() {
            return Ok(effects);
        }
        if deal.is_closing_trade() {
            effects.extend(self.commissions(deal, symbol, vol, ts));
        }
        if lots(vol) >= self.config.large_deal_lots {
            let alert = Alert {
                kind: "large_deal".into(),
                op: None,
                login: deal.login,
                symbol: Some(symbol.clone()),
                volume: Some(lots(vol)),
                deal: Some(deal.deal),
                equity: None,
                margin: None,
                margin_level: None,
                ts,
            };
            effects.push(self.alert(alert));
        }
        Ok(effects)
    }

    /// Pay every ancestor IB for a closing deal: the amounts the deal carries, or the
    /// plan's per-lot amount by level times the deal's lots.
    fn commissions(&mut self, deal: &Deal, symbol: &str, vol: u64, ts: u64) -> Vec<Effect> {
        let payouts: Vec<(u64, u32, f64)> = match &deal.ib_commissions {
            Some(list) => list.iter().map(|p| (p.ib, p.level, p.amount)).collect(),
            None => (1..)
                .zip(self.ib.ancestors(deal.login))
                .map(|(level, ib)| (ib, level, self.config.per_lot(level) * lots(vol)))
                .collect(),
        };
        let client_name = self
            .portfolios
            .get(&deal.login)
            .and_then(|p| p.name())
            .map(str::to_owned);
        let mut effects = Vec::new();
        for (ib, level, amount) in payouts {
            let amount = cents(amount);
            if amount == 0.0 {
                continue;
            }
            let commission = Commission {
                client: deal.login,
                client_name: client_name.clone(),
                symbol: symbol.to_owned(),
                volume: lots(vol),
                amount,
                level,
                deal: deal.deal,
                ts,
            };
            let ledger = self.ledgers.entry(ib).or_default();
            ledger.record(&commission);
            let channel = Channel::Commissions(ib);
            let snapshot = commissions_full(&channel, ib, ledger);
            effects.push(Effect::durable(
                &channel,
                "commission",
                &commission,
                Some(snapshot),
            ));
        }
        effects
    }

    /// Reject an event about `position_id` when it belongs to another login.
    fn check_owner(&self, position_id: u64, login: u64) -> Result<bool, String> {
        match self.owners.get(&position_id) {
            None => Ok(false),
            Some(&owner) if owner == login => Ok(true),
            Some(owner) => Err(format!(
                "position {position_id} belongs to login {owner}, not {login}"
            )),
        }
    }

    fn position_open(&mut self, open: &PositionOpen, ts: u64) -> Result<Vec<Effect>, String> {
        if self.check_owner(open.position_id, open.login)? {
            // A re-sent open (plugin resync): only what differs is news.
            let change = PositionChange {
                login: open.login,
                position_id: open.position_id,
                vol: Some(open.vol),
                price_open: Some(open.price_open),
                sl: open.sl,
                tp: open.tp,
                swap: Some(open.swap),
                rate_profit: open.rate_profit,
                rate_margin: open.rate_margin,
            };
            return self.position_update(&change);
        }
        let login = open.login;
        let position = Position::open(open, self.market.intern(&open.symbol), ts);
        let portfolio = self.portfolio(login);
        portfolio.positions.insert(open.position_id, position);
        if let Some(account) = &mut portfolio.account {
            account.server_margin = None;
        }
        self.owners.insert(open.position_id, login);
        self.reindex(login);
        self.mark_dirty(login);
        self.live.exposure_dirty = true;

        let portfolio = self.portfolios.get_mut(&login).expect("just inserted");
        let valuation = portfolio.value(&self.market);
        let figure = *valuation.figure(open.position_id).expect("just valued");
        portfolio.pushed.positions.insert(open.position_id, figure);
        let view = portfolio
            .position_view(open.position_id, &valuation)
            .expect("just inserted");
        let snapshot = portfolio.snapshot(&valuation);
        Ok(vec![Effect::durable(
            &Channel::Portfolio(login),
            "position_opened",
            &view,
            Some(snapshot),
        )])
    }

    fn position_update(&mut self, change: &PositionChange) -> Result<Vec<Effect>, String> {
        if !self.check_owner(change.position_id, change.login)? {
            // Unknown: already closed (a late or replayed update) or never seen.
            return Ok(Vec::new());
        }
        let portfolio = self
            .portfolios
            .get_mut(&change.login)
            .expect("owner has a portfolio");
        let position = portfolio
            .positions
            .get_mut(&change.position_id)
            .expect("owner has the position");
        let mut delta = PositionDelta {
            id: change.position_id,
            ..Default::default()
        };
        if let Some(vol) = change.vol.filter(|&v| v != position.vol) {
            position.vol = vol;
            position.closing = None;
            delta.volume = Some(lots(vol));
        }
        fn moved(slot: &mut f64, new: Option<f64>) -> Option<f64> {
            let new = new.filter(|n| n != slot)?;
            *slot = new;
            Some(new)
        }
        fn moved_opt(slot: &mut Option<f64>, new: Option<f64>) -> Option<f64> {
            let new = new.filter(|&n| *slot != Some(n))?;
            *slot = Some(new);
            Some(new)
        }
        delta.price_open = moved(&mut position.price_open, change.price_open);
        delta.swap = moved(&mut position.swap, change.swap);
        delta.sl = moved_opt(&mut position.sl, change.sl);
        delta.tp = moved_opt(&mut position.tp, change.tp);
        // Conversion rates are inputs, not something a trader sees, but the live
        // figures may use them.
        let rates_moved = change
            .rate_profit
            .is_some_and(|r| position.rate_profit != Some(r))
            || change
                .rate_margin
                .is_some_and(|r| position.rate_margin != Some(r));
        position.rate_profit = change.rate_profit.or(position.rate_profit);
        position.rate_margin = change.rate_margin.or(position.rate_margin);

        if delta
            == (PositionDelta {
                id: change.position_id,
                ..Default::default()
            })
        {
            if rates_moved {
                self.mark_dirty(change.login);
                self.live.exposure_dirty = true;
            }
            return Ok(Vec::new());
        }
        if let Some(account) = &mut portfolio.account {
            account.server_margin = None;
        }
        self.mark_dirty(change.login);
        self.live.exposure_dirty |=
            delta.volume.is_some() || delta.price_open.is_some() || rates_moved;
        Ok(vec![self.on_portfolio(
            change.login,
            "position_update",
            &delta,
        )])
    }

    fn position_close(&mut self, close: &PositionClose) -> Result<Vec<Effect>, String> {
        if !self.check_owner(close.position_id, close.login)? {
            // Not open: already closed (a replay), so nothing to say.
            return Ok(Vec::new());
        }
        let portfolio = self
            .portfolios
            .get_mut(&close.login)
            .expect("owner has a portfolio");
        let live = *portfolio
            .value(&self.market)
            .figure(close.position_id)
            .expect("owner has the position");
        let position = portfolio
            .positions
            .remove(&close.position_id)
            .expect("owner has the position");
        portfolio.pushed.positions.remove(&close.position_id);
        // An emptied BTreeMap keeps its root node (~2 KiB here): give it back, or every
        // account that ever traded holds on to one per map.
        if portfolio.positions.is_empty() {
            portfolio.positions = BTreeMap::new();
        }
        if portfolio.pushed.positions.is_empty() {
            portfolio.pushed.positions = BTreeMap::new();
        }
        if let Some(account) = &mut portfolio.account {
            account.server_margin = None;
        }
        self.owners.remove(&close.position_id);
        self.reindex(close.login);
        self.mark_dirty(close.login);
        self.live.exposure_dirty = true;

        // The final profit: the closing deal's, else the event's, else our last mark.
        let closing = position
            .closing
            .filter(|c| close.close_deal.is_none_or(|d| d == c.deal));
        #[derive(Serialize)]
        struct Closed<'a> {
            id: u64,
            symbol: &'a str,
            side: Side,
            volume: f64,
            profit: f64,
            #[serde(skip_serializing_if = "Option::is_none")]
            close_deal: Option<u64>,
        }
        let closed = Closed {
            id: position.id,
            symbol: &position.symbol,
            side: position.side,
            volume: lots(position.vol),
            profit: cents(
                closing
                    .map(|c| c.profit)
                    .or(close.profit)
                    .unwrap_or(live.profit),
            ),
            close_deal: close.close_deal.or(closing.map(|c| c.deal)),
        };
        Ok(vec![self.on_portfolio(
            close.login,
            "position_closed",
            &closed,
        )])
    }

    fn order(&mut self, event: &OrderEvent) -> Result<Vec<Effect>, String> {
        let Some(order) = self.orders.apply(event)? else {
            return Ok(Vec::new());
        };
        let channel = Channel::Orders(event.login);
        let snapshot = self.orders.snapshot(event.login);
        let update = OrderUpdate {
            op: event.op,
            order: &order,
        };
        Ok(vec![Effect::durable(
            &channel,
            "order_update",
            &update,
            Some(snapshot),
        )])
    }

    fn risk(&mut self, kind: &'static str, risk: &RiskEvent, ts: u64) -> Vec<Effect> {
        let ours = self
            .portfolios
            .get(&risk.login)
            .map(|p| p.value(&self.market).account);
        let alert = Alert {
            kind: kind.into(),
            op: Some(risk.op.as_str().into()),
            login: risk.login,
            symbol: None,
            volume: None,
            deal: None,
            equity: risk.equity.or(ours.map(|f| f.equity)),
            margin: risk.margin.or(ours.map(|f| f.margin)),
            margin_level: risk.margin_level.map(Some).or(ours.map(|f| f.margin_level)),
            ts,
        };
        let on_portfolio = self.on_portfolio(risk.login, "alert", &alert);
        vec![on_portfolio, self.alert(alert)]
    }

    /// Log an alert and publish it on `alerts`.
    fn alert(&mut self, alert: Alert) -> Effect {
        let effect_body = alert.clone();
        self.alerts.record(alert);
        Effect::durable(
            &Channel::Alerts,
            "alert",
            &effect_body,
            Some(self.alerts.snapshot()),
        )
    }

    fn ib_link(&mut self, link: &IbLink) -> Result<Vec<Effect>, String> {
        let old = self.ib.parent(link.login);
        let mut effects = Vec::new();
        match link.op {
            LinkOp::Set => {
                let ib = link.ib.expect("ingest requires ib on set");
                if old == Some(ib) {
                    return Ok(effects);
                }
                let old_chain = old.map(|p| self.chain_from(p)).unwrap_or_default();
                self.ib.set(link.login, ib)?;
                if let Some(old) = old {
                    effects.extend(self.network_event("client_left", link.login, old, &old_chain));
                }
                let chain = self.chain_from(ib);
                effects.extend(self.network_event("client_joined", link.login, ib, &chain));
            }
            LinkOp::Remove => {
                let Some(old) = old.filter(|&p| link.ib.is_none_or(|named| named == p)) else {
                    return Ok(effects);
                };
                let old_chain = self.chain_from(old);
                self.ib.remove(link.login);
                effects.extend(self.network_event("client_left", link.login, old, &old_chain));
            }
        }
        Ok(effects)
    }

    /// `ib` followed by its ancestors.
    fn chain_from(&self, ib: u64) -> Vec<u64> {
        std::iter::once(ib).chain(self.ib.ancestors(ib)).collect()
    }

    /// `client_joined` / `client_left` on `network:{a}` for every `a` in `chain`.
    fn network_event(
        &self,
        kind: &'static str,
        client: u64,
        parent: u64,
        chain: &[u64],
    ) -> Vec<Effect> {
        #[derive(Serialize)]
        struct Event<'a> {
            client: u64,
            ib: u64,
            level: u32,
            name: Option<&'a str>,
        }
        let name = self.portfolios.get(&client).and_then(|p| p.name());
        (1..)
            .zip(chain)
            .map(|(level, &ancestor)| {
                let channel = Channel::Network(ancestor);
                let event = Event {
                    client,
                    ib: parent,
                    level,
                    name,
                };
                Effect::durable(
                    &channel,
                    kind,
                    &event,
                    Some(self.network_snapshot(ancestor)),
                )
            })
            .collect()
    }

    /// `network_full`: the whole downline of `ib` with levels and names.
    fn network_snapshot(&self, ib: u64) -> Bytes {
        #[derive(Serialize)]
        struct Member<'a> {
            client: u64,
            level: u32,
            name: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Full<'a> {
            ib: u64,
            clients: Vec<Member<'a>>,
        }
        let clients = self
            .ib
            .downline(ib)
            .into_iter()
            .map(|(client, level)| Member {
                client,
                level,
                name: self.portfolios.get(&client).and_then(|p| p.name()),
            })
            .collect();
        encode("network_full", &Channel::Network(ib), &Full { ib, clients })
    }
}

/// Value `portfolio` and, if its live figures moved since its last push, push them:
/// a `position_update {id, profit, price}` per moved position, an `account_update`
/// with the account's figures if they moved, then the refreshed `portfolio_full`.
/// Returns whether anything was pushed.
fn push_live(
    portfolio: &mut Portfolio,
    pricer: &mut Pricer<'_>,
    now_ms: u64,
    effects: &mut Vec<Effect>,
) -> bool {
    let channel = portfolio_channel(portfolio.login);
    let valuation = portfolio.value_with(pricer);
    let text = LiveText::of(&valuation);
    let before = effects.len();
    let mut envelope = None;
    for (i, (id, figure)) in valuation.positions.iter().enumerate() {
        if portfolio.pushed.positions.get(id) != Some(figure) {
            let envelope =
                envelope.get_or_insert_with(|| effect::envelope("position_update", &channel));
            let (profit, price) = text.position(i);
            let price = figure.price.map(|_| price);
            effects.push(live_position_update(&channel, envelope, *id, profit, price));
        }
    }
    if portfolio.account.is_some() && portfolio.pushed.account != Some(valuation.account) {
        effects.push(live_account_update(&channel, text.account()));
    }
    if effects.len() == before {
        return false;
    }
    let message = portfolio.snapshot_text(&valuation, &text, &channel);
    effects.push(Effect::Snapshot { channel, message });
    portfolio.pushed.at_ms = Some(now_ms);
    // `pushed.positions = valuation.positions`, in place.
    let pushed = &mut portfolio.pushed.positions;
    if pushed.len() != valuation.positions.len() {
        pushed.retain(|id, _| valuation.figure(*id).is_some());
    }
    for &(id, figure) in &valuation.positions {
        match pushed.get_mut(&id) {
            Some(slot) => *slot = figure,
            None => {
                pushed.insert(id, figure);
            }
        }
    }
    portfolio.pushed.account = portfolio.account.as_ref().map(|_| valuation.account);
    true
}

/// The ephemeral `position_update {id, profit, price}` of a live figure on
/// `channel`, keyed `position:{id}`: the bytes of encoding a [`PositionDelta`] with
/// only those fields (`price` left out when there is none), written directly (this is
/// the most frequent message) after `envelope`, the channel's [`effect::envelope`] for
/// `position_update`. `profit` and `price` are JSON text.
fn live_position_update(
    channel: &str,
    envelope: &[u8],
    id: u64,
    profit: &[u8],
    price: Option<&[u8]>,
) -> Effect {
    let message = effect::encode_enveloped(envelope, |out| {
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(digits(id, &mut [0; 20]));
        out.extend_from_slice(b",\"profit\":");
        out.extend_from_slice(profit);
        if let Some(price) = price {
            out.extend_from_slice(b",\"price\":");
            out.extend_from_slice(price);
        }
        out.push(b'}');
    });
    let mut key = String::with_capacity(29);
    key.push_str("position:");
    key.push_str(std::str::from_utf8(digits(id, &mut [0; 20])).expect("ASCII digits"));
    Effect::Ephemeral {
        channel: channel.to_owned(),
        key,
        message,
        retain: false,
    }
}

/// The ephemeral `account_update` of live figures on `channel`, keyed `account`: the
/// bytes of encoding [`AccountFigures`], from `figures` as [`LiveText::account`]
/// gives them.
fn live_account_update(channel: &str, figures: [&[u8]; 4]) -> Effect {
    let message = effect::encode_raw("account_update", channel, |out| {
        for (key, figure) in [
            b"{\"equity\":".as_slice(),
            b",\"margin\":",
            b",\"margin_free\":",
            b",\"margin_level\":",
        ]
        .into_iter()
        .zip(figures)
        {
            out.extend_from_slice(key);
            out.extend_from_slice(figure);
        }
        out.push(b'}');
    });
    Effect::Ephemeral {
        channel: channel.to_owned(),
        key: "account".into(),
        message,
        retain: false,
    }
}

/// `portfolio:{login}`, as `Channel::Portfolio(login)` displays.
fn portfolio_channel(login: u64) -> String {
    let mut name = String::with_capacity(30);
    name.push_str("portfolio:");
    name.push_str(std::str::from_utf8(digits(login, &mut [0; 20])).expect("ASCII digits"));
    name
}

/// `n` in decimal, written at the end of `buf`.
fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Record in `index` the symbols `portfolio` (of `login`) reads now.
fn watch(index: &mut LiveIndex, login: u64, portfolio: Option<&Portfolio>, market: &Market) {
    let (live, exposure) = match portfolio {
        Some(p) => (
            index.symbols_of(|source| p.price_sources(market, source)),
            index.symbols_of(|source| p.exposure_sources(market, source)),
        ),
        None => Default::default(),
    };
    index.watch(login, live, exposure);
}

/// `commissions_full`: an IB's ledger.
fn commissions_full(channel: &Channel, ib: u64, ledger: &Ledger) -> Bytes {
    #[derive(Serialize)]
    struct Full<'a> {
        ib: u64,
        #[serde(flatten)]
        ledger: &'a Ledger,
    }
    encode("commissions_full", channel, &Full { ib, ledger })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portfolio::{AccountFigures, LiveFigure, Valuation};

    /// A valuation of positions 1.. with these figures, and these account figures.
    fn valuation(figures: &[(f64, Option<f64>)], account: AccountFigures) -> Valuation {
        Valuation {
            positions: (1..)
                .zip(figures)
                .map(|(id, &(profit, price))| (id, LiveFigure { profit, price }))
                .collect(),
            account,
        }
    }

    #[test]
    fn live_updates_encode_like_their_structs() {
        let channel = Channel::Portfolio(42);
        let name = portfolio_channel(42);
        assert_eq!(name, channel.to_string());
        assert_eq!(portfolio_channel(0), Channel::Portfolio(0).to_string());
        assert_eq!(
            portfolio_channel(u64::MAX),
            Channel::Portfolio(u64::MAX).to_string()
        );
        let figures = [
            (0.0, Some(1.08199)),
            (-12.34, None),
            (1e21, Some(-0.0)),
            (163.87, Some(149.51)),
            (f64::NAN, Some(f64::INFINITY)),
        ];
        for level in [None, Some(659.11), Some(-0.0)] {
            let account = AccountFigures {
                equity: 10413.87,
                margin: 0.0,
                margin_free: -1e-7,
                margin_level: level,
            };
            let valuation = valuation(&figures, account);
            let text = LiveText::of(&valuation);
            let envelope = effect::envelope("position_update", &name);
            for (i, &(id, figure)) in valuation.positions.iter().enumerate() {
                let delta = PositionDelta {
                    id,
                    profit: Some(figure.profit),
                    price: figure.price,
                    ..Default::default()
                };
                let expected = Effect::ephemeral(
                    &channel,
                    format!("position:{id}"),
                    "position_update",
                    &delta,
                    false,
                );
                let (profit, price) = text.position(i);
                let price = figure.price.map(|_| price);
                let written = live_position_update(&name, &envelope, id, profit, price);
                assert_eq!(written, expected);
            }
            let expected = Effect::ephemeral(
                &channel,
                "account".into(),
                "account_update",
                &account,
                false,
            );
            assert_eq!(live_account_update(&name, text.account()), expected);
        }
        let large = live_position_update(
            &name,
            &effect::envelope("position_update", &name),
            u64::MAX,
            b"1.5",
            None,
        );
        assert_eq!(large.message(), &br#"{"type":"position_update","channel":"portfolio:42","id":18446744073709551615,"profit":1.5}"#[..]);
    }
}
