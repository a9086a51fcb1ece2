//! The engine: applies ingest events to the domain state and says what to publish.
//!
//! [`Engine::apply`] handles one event and returns the durable messages it causes,
//! in publishing order; [`Engine::flush_live`], called on a short timer, turns price
//! moves into conflated live figures. Neither does I/O nor reads a clock.

use std::collections::{BTreeMap, BTreeSet};

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
use crate::effect::{Effect, Rejected, encode};
use crate::exposure::{self, SymbolExposure};
use crate::ib::{Commission, IbTree, Ledger};
use crate::market::Market;
use crate::money::{cents, lots};
use crate::orders::{OrderBook, OrderUpdate};
use crate::portfolio::{AccountView, Portfolio, Position};

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
    /// Logins whose live figures may have moved since their last push.
    dirty: BTreeSet<u64>,
    /// `"sym:EURUSD"` / `"ccy:JPY"` → logins whose valuation depends on that symbol's
    /// price or on that currency's conversion rate.
    watchers: BTreeMap<String, BTreeSet<u64>>,
    /// The keys each login is registered under in `watchers`.
    watching: BTreeMap<u64, BTreeSet<String>>,
    exposure_dirty: bool,
    exposure_at: Option<u64>,
    exposure_sent: Vec<SymbolExposure>,
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
            live: LiveState::default(),
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
                self.market.register(spec);
                self.touch(&[format!("sym:{}", spec.symbol)]);
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
        let due: Vec<u64> = self
            .live
            .dirty
            .iter()
            .copied()
            .filter(|login| {
                self.portfolios.get(login).is_none_or(|p| {
                    p.pushed
                        .at_ms
                        .is_none_or(|at| now_ms >= at.saturating_add(interval))
                })
            })
            .collect();
        let mut effects = Vec::new();
        for login in due {
            self.live.dirty.remove(&login);
            let Some(portfolio) = self.portfolios.get_mut(&login) else {
                continue;
            };
            let channel = Channel::Portfolio(login);
            let valuation = portfolio.value(&self.market);
            let before = effects.len();
            for (&id, figure) in &valuation.positions {
                if portfolio.pushed.positions.get(&id) != Some(figure) {
                    let delta = PositionDelta {
                        id,
                        profit: Some(figure.profit),
                        price: figure.price,
                        ..Default::default()
                    };
                    effects.push(Effect::ephemeral(
                        &channel,
                        format!("position:{id}"),
                        "position_update",
                        &delta,
                        false,
                    ));
                }
            }
            if portfolio.account.is_some() && portfolio.pushed.account != Some(valuation.account) {
                effects.push(Effect::ephemeral(
                    &channel,
                    "account".into(),
                    "account_update",
                    &valuation.account,
                    false,
                ));
            }
            if effects.len() > before {
                effects.push(Effect::snapshot(&channel, portfolio.snapshot(&valuation)));
                portfolio.pushed.at_ms = Some(now_ms);
                portfolio.pushed.positions = valuation.positions;
                portfolio.pushed.account = portfolio.account.as_ref().map(|_| valuation.account);
            }
        }
        let exposure_due = self
            .live
            .exposure_at
            .is_none_or(|at| now_ms >= at.saturating_add(self.config.exposure_interval_ms));
        if self.live.exposure_dirty && exposure_due {
            self.live.exposure_dirty = false;
            let table = exposure::table(self.portfolios.values(), &self.market);
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
        let mut effects: Vec<Effect> = self
            .portfolios
            .iter()
            .map(|(&login, p)| {
                Effect::snapshot(
                    &Channel::Portfolio(login),
                    p.snapshot(&p.value(&self.market)),
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
            digits: info.digits,
            ts,
        };
        let mut keys = vec![format!("sym:{}", tick.symbol)];
        keys.extend(
            info.base_ccy
                .iter()
                .chain(&info.profit_ccy)
                .map(|c| format!("ccy:{c}")),
        );
        self.touch(&keys);
        let channel = Channel::Prices(info.group);
        vec![Effect::ephemeral(
            &channel,
            tick.symbol.clone(),
            "price",
            &price,
            true,
        )]
    }

    /// Mark every login watching one of `keys` as having moved live figures.
    fn touch(&mut self, keys: &[String]) {
        for key in keys {
            if let Some(logins) = self.live.watchers.get(key) {
                self.live.dirty.extend(logins);
                self.live.exposure_dirty |= !logins.is_empty();
            }
        }
    }

    /// Re-register `login` under the symbols and currencies its valuation depends on.
    fn reindex(&mut self, login: u64) {
        let keys: BTreeSet<String> = match self.portfolios.get(&login) {
            Some(p) => {
                let ccy = p.ccy();
                p.positions
                    .values()
                    .flat_map(|pos| {
                        let info = self.market.info(&pos.symbol);
                        let foreign = [info.base_ccy, info.profit_ccy]
                            .into_iter()
                            .flatten()
                            .filter(|c| c != ccy);
                        std::iter::once(format!("sym:{}", pos.symbol))
                            .chain(foreign.map(|c| format!("ccy:{c}")))
                    })
                    .collect()
            }
            None => BTreeSet::new(),
        };
        for old in self.live.watching.remove(&login).unwrap_or_default() {
            if let Some(set) = self.live.watchers.get_mut(&old) {
                set.remove(&login);
                if set.is_empty() {
                    self.live.watchers.remove(&old);
                }
            }
        }
        for key in &keys {
            self.live
                .watchers
                .entry(key.clone())
                .or_default()
                .insert(login);
        }
        if !keys.is_empty() {
            self.live.watching.insert(login, keys);
        }
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
        self.live.dirty.insert(event.login);
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
            self.live.dirty.insert(deal.login);
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
            let position = deal
                .position_id
                .and_then(|id| self.portfolios.get_mut(&deal.login)?.positions.get_mut(&id));
            if let Some(position) = position {
                position.closing = Some(crate::portfolio::ClosingDeal {
                    deal: deal.deal,
                    vol,
                    profit: deal.profit,
                });
                self.live.dirty.insert(deal.login);
                self.live.exposure_dirty = true;
            }
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
        let position = Position::open(open, ts);
        let portfolio = self.portfolio(login);
        portfolio.positions.insert(open.position_id, position);
        if let Some(account) = &mut portfolio.account {
            account.server_margin = None;
        }
        self.owners.insert(open.position_id, login);
        self.reindex(login);
        self.live.dirty.insert(login);
        self.live.exposure_dirty = true;

        let portfolio = self.portfolios.get_mut(&login).expect("just inserted");
        let valuation = portfolio.value(&self.market);
        let figure = valuation.positions[&open.position_id];
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
        // Conversion rates are inputs, not something a trader sees.
        position.rate_profit = change.rate_profit.or(position.rate_profit);
        position.rate_margin = change.rate_margin.or(position.rate_margin);

        if delta
            == (PositionDelta {
                id: change.position_id,
                ..Default::default()
            })
        {
            return Ok(Vec::new());
        }
        if let Some(account) = &mut portfolio.account {
            account.server_margin = None;
        }
        self.live.dirty.insert(change.login);
        self.live.exposure_dirty |= delta.volume.is_some();
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
        let live = portfolio.value(&self.market).positions[&close.position_id];
        let position = portfolio
            .positions
            .remove(&close.position_id)
            .expect("owner has the position");
        portfolio.pushed.positions.remove(&close.position_id);
        if let Some(account) = &mut portfolio.account {
            account.server_margin = None;
        }
        self.owners.remove(&close.position_id);
        self.reindex(close.login);
        self.live.dirty.insert(close.login);
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
