//! Property tests of the engine's routing: random event sequences (accounts, balance
//! operations, trade deals with and without IB amounts, positions, orders, margin
//! calls, ticks, symbol specs, IB links, replays, live flushes) are applied to an
//! [`Engine`], and every effect is checked against an oracle that keeps only who owns
//! what (positions, the IB tree, symbol groups):
//!
//! - an event about login L publishes only on L's own channels, the admins' `alerts`
//!   and, for a closing deal, the `commissions:` of L's ancestors in the IB tree (or of
//!   the IBs the deal names), one per level; an `ib_link` publishes only on `network:`
//!   of the old and new chains; a tick only on its symbol's `prices:` group;
//! - no message on `portfolio:L` (durable, live or snapshot) names another login or a
//!   position L does not hold;
//! - an event the state contradicts, or a replayed (`src`, `seq`), publishes nothing;
//! - the engine is deterministic: the same events give the same effects, also from an
//!   engine restored from its serialized state halfway through.
//!
//! Events are fed as JSON through the real ingest parser, as the pipeline does.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::Value;
use tradecast_core::{Effect, Engine, EngineConfig, Rejected};
use tradecast_protocol::ingest;

/// Traders; some of them are also IBs of others.
const LOGINS: std::ops::RangeInclusive<u64> = 1..=6;
/// IBs that are not traders.
const IBS: std::ops::RangeInclusive<u64> = 100..=102;
const SYMBOLS: [&str; 4] = ["EURUSD", "GBPJPY", "XAUUSD", "US30"];

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Step {
    Account {
        login: u64,
        balance: u32,
    },
    Balance {
        login: u64,
        deal: u64,
        amount: i32,
    },
    Trade {
        login: u64,
        deal: u64,
        position: u64,
        closing: bool,
        symbol: &'static str,
        vol: u64,
        /// `ib_commissions` the deal carries: (ib, level, amount in cents).
        payouts: Option<Vec<(u64, u32, u32)>>,
    },
    Open {
        login: u64,
        position: u64,
        symbol: &'static str,
        sell: bool,
        vol: u64,
    },
    Modify {
        login: u64,
        position: u64,
        sl: u32,
    },
    Close {
        login: u64,
        position: u64,
    },
    Order {
        op: &'static str,
        login: u64,
        order: u64,
    },
    Risk {
        kind: &'static str,
        op: &'static str,
        login: u64,
    },
    Tick {
        symbol: &'static str,
        bid: u32,
    },
    Symbol {
        symbol: &'static str,
        group: &'static str,
    },
    Link {
        login: u64,
        ib: u64,
    },
    Unlink {
        login: u64,
    },
    /// Send an earlier step's (`src`, `seq`) again.
    Replay {
        back: usize,
    },
    /// Let `ms` pass and flush live figures.
    Flush {
        ms: u64,
    },
}

fn login() -> impl Strategy<Value = u64> {
    LOGINS
}

/// Anyone in the IB tree: traders and pure IBs.
fn member() -> impl Strategy<Value = u64> {
    prop_oneof![LOGINS, IBS]
}

fn symbol() -> impl Strategy<Value = &'static str> {
    prop::sample::select(SYMBOLS.to_vec())
}

fn vol() -> impl Strategy<Value = u64> {
    // 0.01, 1, 15 and 60 lots (a large deal).
    prop::sample::select(vec![100u64, 10_000, 150_000, 600_000])
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (login(), 0u32..20_000).prop_map(|(login, balance)| Step::Account { login, balance }),
        1 => (login(), 1u64..40, -500i32..500)
            .prop_map(|(login, deal, amount)| Step::Balance { login, deal, amount }),
        4 => (
            login(),
            1u64..40,
            1u64..10,
            any::<bool>(),
            symbol(),
            vol(),
            prop::option::weighted(
                0.3,
                prop::collection::vec((member(), 1u32..4, 0u32..1000), 0..3)
            ),
        )
            .prop_map(|(login, deal, position, closing, symbol, vol, payouts)| Step::Trade {
                login, deal, position, closing, symbol, vol, payouts,
            }),
        4 => (login(), 1u64..10, symbol(), any::<bool>(), vol())
            .prop_map(|(login, position, symbol, sell, vol)| Step::Open { login, position, symbol, sell, vol }),
        2 => (login(), 1u64..10, 1u32..50)
            .prop_map(|(login, position, sl)| Step::Modify { login, position, sl }),
        2 => (login(), 1u64..10).prop_map(|(login, position)| Step::Close { login, position }),
        2 => (prop::sample::select(vec!["add", "update", "delete"]), login(), 1u64..6)
            .prop_map(|(op, login, order)| Step::Order { op, login, order }),
        1 => (
            prop::sample::select(vec!["margin_call", "stop_out"]),
            prop::sample::select(vec!["enter", "leave"]),
            login(),
        )
            .prop_map(|(kind, op, login)| Step::Risk { kind, op, login }),
        4 => (symbol(), 1u32..100).prop_map(|(symbol, bid)| Step::Tick { symbol, bid }),
        1 => (symbol(), prop::sample::select(vec!["metals", "indices", "forex", "fx.major"]))
            .prop_map(|(symbol, group)| Step::Symbol { symbol, group }),
        3 => (member(), member()).prop_map(|(login, ib)| Step::Link { login, ib }),
        1 => member().prop_map(|login| Step::Unlink { login }),
        1 => (0usize..20).prop_map(|back| Step::Replay { back }),
        2 => (0u64..400).prop_map(|ms| Step::Flush { ms }),
    ]
}

/// The body fields of a step's ingest event (`None` for steps that are not events).
fn fields(step: &Step) -> Option<String> {
    Some(match step {
        Step::Account { login, balance } => format!(
            r#""type":"account","login":{login},"name":"Holder {login}","ccy":"USD","leverage":100,"balance":{balance}.0,"credit":0.0"#
        ),
        Step::Balance {
            login,
            deal,
            amount,
        } => format!(
            r#""type":"deal","login":{login},"deal":{deal},"action":"balance","profit":{amount}.0"#
        ),
        Step::Trade {
            login,
            deal,
            position,
            closing,
            symbol,
            vol,
            payouts,
        } => {
            let entry = if *closing { "out" } else { "in" };
            let mut text = format!(
                r#""type":"deal","login":{login},"deal":{deal},"position_id":{position},"action":"sell","entry":"{entry}","symbol":"{symbol}","vol":{vol},"price":1.5,"profit":12.5"#
            );
            if let Some(payouts) = payouts {
                let list: Vec<String> = payouts
                    .iter()
                    .map(|(ib, level, cents)| {
                        format!(
                            r#"{{"ib":{ib},"level":{level},"amount":{}}}"#,
                            *cents as f64 / 100.0
                        )
                    })
                    .collect();
                text.push_str(&format!(r#","ib_commissions":[{}]"#, list.join(",")));
            }
            text
        }
        Step::Open {
            login,
            position,
            symbol,
            sell,
            vol,
        } => {
            let side = if *sell { "sell" } else { "buy" };
            format!(
                r#""type":"position","op":"open","login":{login},"position_id":{position},"symbol":"{symbol}","side":"{side}","vol":{vol},"price_open":1.25"#
            )
        }
        Step::Modify {
            login,
            position,
            sl,
        } => format!(
            r#""type":"position","op":"update","login":{login},"position_id":{position},"sl":{}"#,
            *sl as f64 / 10.0
        ),
        Step::Close { login, position } => {
            format!(r#""type":"position","op":"close","login":{login},"position_id":{position}"#)
        }
        Step::Order { op, login, order } => format!(
            r#""type":"order","op":"{op}","login":{login},"order":{order},"symbol":"EURUSD","order_type":"buy_limit","state":"placed","vol_initial":10000,"vol_current":10000,"price_order":1.{order}"#
        ),
        Step::Risk { kind, op, login } => format!(
            r#""type":"{kind}","op":"{op}","login":{login},"equity":900.0,"margin":1000.0,"margin_level":90.0"#
        ),
        Step::Tick { symbol, bid } => {
            format!(r#""type":"tick","symbol":"{symbol}","bid":{bid}.5,"ask":{bid}.75"#)
        }
        Step::Symbol { symbol, group } => format!(
            r#""type":"symbol","symbol":"{symbol}","group":"{group}","digits":2,"contract_size":100.0,"profit_ccy":"USD""#
        ),
        Step::Link { login, ib } => {
            format!(r#""type":"ib_link","op":"set","login":{login},"ib":{ib}"#)
        }
        Step::Unlink { login } => format!(r#""type":"ib_link","op":"remove","login":{login}"#),
        Step::Replay { .. } | Step::Flush { .. } => return None,
    })
}

/// What the oracle knows: ownership and the tree, nothing about money.
#[derive(Debug, Clone, Default)]
struct Oracle {
    /// Position → the login holding it.
    owners: BTreeMap<u64, u64>,
    /// Client → its direct IB.
    parent: BTreeMap<u64, u64>,
    /// Symbol → the group a `symbol` event gave it.
    groups: BTreeMap<&'static str, &'static str>,
    /// Deal tickets applied.
    deals: BTreeSet<u64>,
    /// Logins the engine keeps a portfolio for (what a flush may push on).
    portfolios: BTreeSet<u64>,
}

impl Oracle {
    fn ancestors(&self, login: u64) -> Vec<u64> {
        let mut chain = Vec::new();
        let mut at = login;
        while let Some(&up) = self.parent.get(&at) {
            chain.push(up);
            at = up;
        }
        chain
    }

    /// `ib` and everyone above it.
    fn chain_from(&self, ib: u64) -> Vec<u64> {
        std::iter::once(ib).chain(self.ancestors(ib)).collect()
    }

    fn downline(&self, ib: u64) -> BTreeSet<u64> {
        self.parent
            .keys()
            .copied()
            .filter(|&client| self.ancestors(client).contains(&ib))
            .collect()
    }

    fn group(&self, symbol: &str) -> String {
        if let Some(group) = self.groups.get(symbol) {
            return (*group).to_owned();
        }
        let pair = symbol.len() == 6 && symbol.bytes().all(|b| b.is_ascii_uppercase());
        if pair { "forex" } else { "other" }.to_owned()
    }

    fn positions_of(&self, login: u64) -> BTreeSet<u64> {
        self.owners
            .iter()
            .filter(|&(_, &owner)| owner == login)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Apply `step` to the oracle; `Err` when the design says the event contradicts
    /// the state (another login's position, a cycle in the tree), and then the
    /// oracle is unchanged.
    fn apply(&mut self, step: &Step) -> Result<(), String> {
        let owned_by_other = |position: &u64, login: &u64| {
            self.owners
                .get(position)
                .is_some_and(|owner| owner != login)
        };
        match step {
            Step::Account { login, .. } | Step::Risk { login, .. } => {
                // A risk event for an unknown login still gets its portfolio channel.
                if matches!(step, Step::Account { .. }) {
                    self.portfolios.insert(*login);
                }
            }
            Step::Balance { login, deal, .. } => {
                if self.deals.insert(*deal) {
                    self.portfolios.insert(*login);
                }
            }
            Step::Trade {
                login,
                deal,
                position,
                ..
            } => {
                if self.deals.contains(deal) {
                    return Ok(());
                }
                if owned_by_other(position, login) {
                    return Err(format!("position {position} is not {login}'s"));
                }
                self.deals.insert(*deal);
                // The deal's profit moves the balance: the login has a portfolio.
                self.portfolios.insert(*login);
            }
            Step::Open {
                login, position, ..
            } => {
                if owned_by_other(position, login) {
                    return Err(format!("position {position} is not {login}'s"));
                }
                self.owners.insert(*position, *login);
                self.portfolios.insert(*login);
            }
            Step::Modify {
                login, position, ..
            } => {
                if owned_by_other(position, login) {
                    return Err(format!("position {position} is not {login}'s"));
                }
            }
            Step::Close { login, position } => {
                if owned_by_other(position, login) {
                    return Err(format!("position {position} is not {login}'s"));
                }
                self.owners.remove(position);
            }
            Step::Symbol { symbol, group } => {
                self.groups.insert(symbol, group);
            }
            Step::Link { login, ib } => {
                if login == ib || self.ancestors(*ib).contains(login) {
                    return Err(format!("linking {login} under {ib} makes a cycle"));
                }
                self.parent.insert(*login, *ib);
            }
            Step::Unlink { login } => {
                self.parent.remove(login);
            }
            Step::Order { .. } | Step::Tick { .. } | Step::Replay { .. } | Step::Flush { .. } => {}
        }
        Ok(())
    }
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("messages are JSON")
}

/// The effect's message and, for a durable one, its snapshot: what a subscriber of
/// the effect's channel may receive.
fn readable(effect: &Effect) -> Vec<Value> {
    let mut out = vec![json(effect.message())];
    if let Effect::Durable {
        snapshot: Some(snapshot),
        ..
    } = effect
    {
        out.push(json(snapshot));
    }
    out
}

fn is_durable(effect: &Effect) -> bool {
    matches!(effect, Effect::Durable { .. })
}

/// Whatever the event: every message on `portfolio:L` is about L and L's positions
/// (`holding`: the positions L held before or after the event), and every message
/// names the channel it is published on.
fn check_ownership(
    effect: &Effect,
    oracle: &Oracle,
    holding: &dyn Fn(u64) -> BTreeSet<u64>,
) -> Result<(), TestCaseError> {
    let channel = effect.channel();
    for message in readable(effect) {
        prop_assert_eq!(message["channel"].as_str(), Some(channel), "{}", message);
        if let Some(login) = channel.strip_prefix("portfolio:") {
            let login: u64 = login.parse().expect("numeric login");
            let held = holding(login);
            if let Some(named) = message.get("login") {
                prop_assert_eq!(named.as_u64(), Some(login), "{}", message);
            }
            let ids: Vec<u64> = match message["type"].as_str() {
                Some("portfolio_full") => message["positions"]
                    .as_array()
                    .expect("positions")
                    .iter()
                    .map(|p| p["id"].as_u64().expect("id"))
                    .collect(),
                Some("position_opened" | "position_update" | "position_closed") => {
                    vec![message["id"].as_u64().expect("id")]
                }
                _ => Vec::new(),
            };
            for id in ids {
                prop_assert!(
                    held.contains(&id),
                    "{} names position {} of another login (owners {:?})",
                    message,
                    id,
                    oracle.owners
                );
            }
        }
        if let Some(ib) = channel.strip_prefix("network:") {
            let ib: u64 = ib.parse().expect("numeric ib");
            if message["type"] == "network_full" {
                prop_assert_eq!(message["ib"].as_u64(), Some(ib));
                let clients: BTreeSet<u64> = message["clients"]
                    .as_array()
                    .expect("clients")
                    .iter()
                    .map(|c| c["client"].as_u64().expect("client"))
                    .collect();
                prop_assert_eq!(&clients, &oracle.downline(ib), "{}", message);
            }
        }
        if let Some(ib) = channel.strip_prefix("commissions:")
            && message["type"] == "commissions_full"
        {
            prop_assert_eq!(
                message["ib"].as_u64().map(|i| i.to_string()),
                Some(ib.to_owned())
            );
        }
    }
    Ok(())
}

/// Check the effects of one applied event against the oracle as it was before
/// (`before`) and after (`after`) the event.
fn check_event(
    step: &Step,
    effects: &[Effect],
    before: &Oracle,
    after: &Oracle,
) -> Result<(), TestCaseError> {
    let channels: Vec<&str> = effects.iter().map(Effect::channel).collect();
    let only = |allowed: &[String]| -> Result<(), TestCaseError> {
        for channel in &channels {
            prop_assert!(
                allowed.iter().any(|a| a == channel),
                "{:?} published on {}, allowed only {:?}",
                step,
                channel,
                allowed
            );
        }
        Ok(())
    };
    match step {
        Step::Account { login, .. }
        | Step::Balance { login, .. }
        | Step::Open { login, .. }
        | Step::Modify { login, .. }
        | Step::Close { login, .. } => {
            only(&[format!("portfolio:{login}")])?;
            prop_assert!(effects.iter().all(is_durable));
        }
        Step::Order { login, .. } => {
            only(&[format!("orders:{login}")])?;
            prop_assert!(effects.iter().all(is_durable));
        }
        Step::Risk { login, .. } => {
            prop_assert_eq!(
                channels,
                vec![format!("portfolio:{login}"), "alerts".into()]
            );
            prop_assert!(effects.iter().all(is_durable));
        }
        Step::Tick { symbol, .. } => {
            prop_assert_eq!(channels, vec![format!("prices:{}", before.group(symbol))]);
            prop_assert!(!is_durable(&effects[0]));
        }
        Step::Symbol { .. } => prop_assert!(effects.is_empty()),
        Step::Trade {
            login,
            deal,
            closing,
            vol,
            payouts,
            ..
        } => {
            prop_assert!(effects.iter().all(is_durable));
            let commissions: Vec<(u64, Value)> = effects
                .iter()
                .filter_map(|e| {
                    let ib = e.channel().strip_prefix("commissions:")?;
                    Some((ib.parse().expect("numeric ib"), json(e.message())))
                })
                .collect();
            let mut allowed = vec![format!("portfolio:{login}"), "alerts".into()];
            allowed.extend(
                commissions
                    .iter()
                    .map(|(ib, _)| format!("commissions:{ib}")),
            );
            only(&allowed)?;
            for (ib, message) in &commissions {
                prop_assert_eq!(message["client"].as_u64(), Some(*login));
                prop_assert_eq!(message["deal"].as_u64(), Some(*deal));
                let level = message["level"].as_u64().expect("level") as u32;
                match payouts {
                    // The deal's own list: exactly the IBs it names, at their level.
                    Some(list) => prop_assert!(
                        list.iter().any(|&(i, l, _)| i == *ib && l == level),
                        "{} is not in the deal's list {:?}",
                        message,
                        list
                    ),
                    // From the tree: the ancestor at that level.
                    None => prop_assert_eq!(
                        before.ancestors(*login).get(level as usize - 1).copied(),
                        Some(*ib),
                        "{} paid outside the chain {:?}",
                        message,
                        before.ancestors(*login)
                    ),
                }
            }
            let paid: Vec<u64> = commissions.iter().map(|(ib, _)| *ib).collect();
            let fresh = !before.deals.contains(deal);
            let expected: Vec<u64> = match (fresh && *closing, payouts) {
                (false, _) => Vec::new(),
                (true, Some(list)) => list
                    .iter()
                    .filter(|&&(_, _, cents)| cents > 0)
                    .map(|&(ib, _, _)| ib)
                    .collect(),
                // From 1 lot up every level earns at least 0.50.
                (true, None) if *vol >= 10_000 => before.ancestors(*login),
                (true, None) => paid.clone(),
            };
            prop_assert_eq!(paid, expected, "{:?}", step);
        }
        Step::Link { login, ib } => {
            // client_left on the old chain (if it moved), client_joined on the new.
            let mut expected = Vec::new();
            match before.parent.get(login) {
                Some(old) if old == ib => {}
                old => {
                    if let Some(old) = old {
                        expected.extend(
                            before
                                .chain_from(*old)
                                .into_iter()
                                .map(|a| (format!("network:{a}"), "client_left", *old)),
                        );
                    }
                    expected.extend(
                        after
                            .chain_from(*ib)
                            .into_iter()
                            .map(|a| (format!("network:{a}"), "client_joined", *ib)),
                    );
                }
            }
            check_network(effects, *login, &expected)?;
        }
        Step::Unlink { login } => {
            let expected: Vec<_> = match before.parent.get(login) {
                Some(old) => before
                    .chain_from(*old)
                    .into_iter()
                    .map(|a| (format!("network:{a}"), "client_left", *old))
                    .collect(),
                None => Vec::new(),
            };
            check_network(effects, *login, &expected)?;
        }
        Step::Replay { .. } | Step::Flush { .. } => unreachable!("not events"),
    }
    Ok(())
}

/// The effects are exactly `expected`: (channel, type, direct IB) about `client`,
/// with levels 1, 2, … up each chain.
fn check_network(
    effects: &[Effect],
    client: u64,
    expected: &[(String, &str, u64)],
) -> Result<(), TestCaseError> {
    let got: Vec<(String, String, u64)> = effects
        .iter()
        .map(|e| {
            let m = json(e.message());
            prop_assert!(is_durable(e));
            prop_assert_eq!(m["client"].as_u64(), Some(client));
            Ok((
                e.channel().to_owned(),
                m["type"].as_str().unwrap_or_default().to_owned(),
                m["ib"].as_u64().unwrap_or_default(),
            ))
        })
        .collect::<Result<_, TestCaseError>>()?;
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(c, k, ib)| (c.clone(), (*k).to_owned(), *ib))
        .collect();
    prop_assert_eq!(got, expected);
    Ok(())
}

/// Run `steps` on `engine`, checking every effect; returns everything published.
fn run(steps: &[Step], engine: &mut Engine) -> Result<Vec<Vec<Effect>>, TestCaseError> {
    let mut oracle = Oracle::default();
    // The events the engine took, to replay: a refused one is not remembered as
    // applied (it goes to the dead letters each time), so only these are duplicates.
    let mut taken: Vec<(u64, String)> = Vec::new();
    let mut seq = 0;
    let mut published = Vec::new();
    let mut now = 1_000u64;
    for step in steps {
        let effects = match step {
            Step::Flush { ms } => {
                now += ms;
                let effects = engine.flush_live(now);
                for effect in &effects {
                    let channel = effect.channel();
                    prop_assert!(!is_durable(effect), "a flush published {:?}", effect);
                    let login = channel
                        .strip_prefix("portfolio:")
                        .and_then(|l| l.parse::<u64>().ok());
                    prop_assert!(
                        channel == "exposure"
                            || login.is_some_and(|l| oracle.portfolios.contains(&l)),
                        "a flush published on {}",
                        channel
                    );
                    check_ownership(effect, &oracle, &|l| oracle.positions_of(l))?;
                }
                effects
            }
            Step::Replay { back } => {
                if let Some((seq, fields)) = taken.len().checked_sub(back + 1).map(|i| &taken[i]) {
                    let replayed = apply(engine, *seq, fields, now);
                    prop_assert_eq!(replayed, Err(Rejected::Duplicate), "replaying {}", fields);
                }
                Vec::new()
            }
            _ => {
                let fields = fields(step).expect("an event");
                seq += 1;
                let before = oracle.clone();
                let expected = oracle.apply(step);
                match (apply(engine, seq, &fields, now), expected) {
                    (Ok(effects), Ok(())) => {
                        taken.push((seq, fields));
                        check_event(step, &effects, &before, &oracle)?;
                        let holding = |l| {
                            let mut held = before.positions_of(l);
                            held.extend(oracle.positions_of(l));
                            held
                        };
                        for effect in &effects {
                            check_ownership(effect, &oracle, &holding)?;
                        }
                        effects
                    }
                    (Err(Rejected::Invalid(_)), Err(_)) => Vec::new(),
                    (got, expected) => {
                        return Err(TestCaseError::fail(format!(
                            "{step:?}: the engine answered {got:?}, the oracle {expected:?}"
                        )));
                    }
                }
            }
        };
        published.push(effects);
    }
    Ok(published)
}

fn apply(engine: &mut Engine, seq: u64, fields: &str, now: u64) -> Result<Vec<Effect>, Rejected> {
    let d = format!(r#"{{"v":1,"src":"prop","seq":{seq},"ts":{now},{fields}}}"#);
    let event = ingest::parse(d.as_bytes()).unwrap_or_else(|e| panic!("{d}: {e}"));
    engine.apply(&event, now)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every effect goes only to the users the event concerns.
    #[test]
    fn effects_reach_only_the_users_an_event_concerns(
        steps in prop::collection::vec(step(), 1..80),
    ) {
        run(&steps, &mut Engine::new(EngineConfig::default()))?;
    }
}

proptest! {
    // Each case runs the events twice and serializes the engine: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The same events give the same effects, also after a restore from the
    /// engine's serialized state (what the ingest checkpoint does).
    #[test]
    fn the_engine_is_deterministic_across_a_restore(
        steps in prop::collection::vec(step(), 1..80),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(steps.len() + 1);
        let mut first = Engine::new(EngineConfig::default());
        let all = run(&steps, &mut first)?;

        let mut second = Engine::new(EngineConfig::default());
        let head = run(&steps[..cut], &mut second)?;
        prop_assert_eq!(&head[..], &all[..cut]);
        let saved = serde_json::to_string(&second).expect("the engine serializes");
        let restored: Engine = serde_json::from_str(&saved).expect("and deserializes");
        prop_assert_eq!(&restored, &second);
        // The rest of the events on the restored engine: `run` starts a fresh oracle
        // and `seq` numbering, so feed them directly with the seqs they had.
        let mut restored = restored;
        let mut seq = steps[..cut].iter().filter(|s| fields(s).is_some()).count() as u64;
        let mut now = 1_000 + steps[..cut]
            .iter()
            .map(|s| if let Step::Flush { ms } = s { *ms } else { 0 })
            .sum::<u64>();
        let mut tail = Vec::new();
        for step in &steps[cut..] {
            tail.push(match step {
                Step::Flush { ms } => {
                    now += ms;
                    restored.flush_live(now)
                }
                Step::Replay { .. } => Vec::new(),
                _ => {
                    seq += 1;
                    apply(&mut restored, seq, &fields(step).expect("an event"), now)
                        .unwrap_or_default()
                }
            });
        }
        prop_assert_eq!(&tail[..], &all[cut..]);
    }
}
