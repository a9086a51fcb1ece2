//! Property tests of who may read which channel (DESIGN.md, "Users" and "Wire
//! protocol essentials"), against an oracle written here from the design's words
//! rather than from `channel.rs`:
//!
//! - a trader (`client`) reads its own `portfolio:{login}` and `orders:{login}`;
//! - an IB (`ib`) reads its own `commissions:{ib}` and `network:{ib}`;
//! - anyone reads `prices:{group}`;
//! - only admins read `exposure` and `alerts`, and admins read everything.
//!
//! The oracle works on the channel *name* a client sends, so the properties cover the
//! parser too: random principals against random names, biased towards the tricky
//! ones (another login, leading zeros, a sign, `portfolio:42x`, numbers past
//! `u64::MAX`, non-ASCII digits, empty keys, near-miss kinds).

use proptest::prelude::*;
use tradecast_protocol::{Channel, Principal, Role};

/// What the design says a channel name is, or `None` for a name it does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    /// `portfolio:` / `orders:` of a login.
    Trader(u64),
    /// `commissions:` / `network:` of an IB.
    Ib(u64),
    Prices,
    /// `exposure` / `alerts`.
    Staff,
}

/// The number a key names: decimal digits only, written the one way `u64` prints it
/// (no sign, no leading zero), within `u64`. Anything else names no channel, so a
/// channel has exactly one name and replies echo what the client sent.
fn key_number(key: &str) -> Option<u64> {
    let canonical = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'));
    if !canonical {
        return None;
    }
    // Digits that overflow u64 name no channel either.
    key.bytes().try_fold(0u64, |n, digit| {
        n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// docs/protocol.md §3: a group is 1–64 letters, digits, `_`, `-`, `.` (ASCII).
fn valid_group(group: &str) -> bool {
    (1..=64).contains(&group.len())
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn oracle_parse(name: &str) -> Option<Name> {
    match name {
        "exposure" | "alerts" => return Some(Name::Staff),
        _ => {}
    }
    let (kind, key) = name.split_once(':')?;
    match kind {
        "portfolio" | "orders" => key_number(key).map(Name::Trader),
        "commissions" | "network" => key_number(key).map(Name::Ib),
        "prices" => valid_group(key).then_some(Name::Prices),
        _ => None,
    }
}

/// May `who` read the channel named `name`, by the design's table?
fn oracle_may_read(who: Principal, name: &Name) -> bool {
    match (who.role, name) {
        (Role::Admin, _) => true,
        (_, Name::Prices) => true,
        (Role::Client, Name::Trader(login)) => *login == who.id,
        (Role::Ib, Name::Ib(ib)) => *ib == who.id,
        _ => false,
    }
}

/// Ids that collide often (so "own channel" cases are common) plus the extremes.
fn id() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..6,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => any::<u64>(),
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Client), Just(Role::Ib), Just(Role::Admin)]
}

fn principal() -> impl Strategy<Value = Principal> {
    (id(), role()).prop_map(|(id, role)| Principal { id, role })
}

/// Keys that are numbers, near-numbers, and things that are not numbers at all.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => id().prop_map(|n| n.to_string()),
        1 => id().prop_map(|n| format!("0{n}")),
        1 => id().prop_map(|n| format!("+{n}")),
        1 => id().prop_map(|n| format!("-{n}")),
        1 => id().prop_map(|n| format!("{n}x")),
        1 => id().prop_map(|n| format!(" {n}")),
        1 => id().prop_map(|n| format!("{n}:{n}")),
        // Past u64::MAX.
        1 => (0u64..1000).prop_map(|n| format!("{}{n:03}", u64::MAX)),
        1 => Just("18446744073709551616".to_owned()),
        // Fullwidth and Arabic-Indic digits: numbers to a human, not to the protocol.
        1 => Just("４２".to_owned()),
        1 => Just("٤٢".to_owned()),
        1 => Just(String::new()),
        1 => "[a-zA-Z0-9_.\\-]{1,70}",
        1 => "\\PC{0,8}",
    ]
}

fn kind() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "portfolio", "orders", "commissions", "network", "prices", "exposure", "alerts",
        ])
        .prop_map(str::to_owned),
        1 => prop::sample::select(vec![
            "Portfolio", "ORDERS", "portfolios", "portfolio ", "", "price", "exposure ",
            "alert", "ρortfolio",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Channel names as a client could send them.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (kind(), key()).prop_map(|(kind, key)| format!("{kind}:{key}")),
        1 => kind(),
        1 => "\\PC{0,12}",
    ]
}

/// Well-formed channels (what the parser can produce).
fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        id().prop_map(Channel::Portfolio),
        id().prop_map(Channel::Orders),
        id().prop_map(Channel::Commissions),
        id().prop_map(Channel::Network),
        "[a-zA-Z0-9_.\\-]{1,64}".prop_map(Channel::Prices),
        Just(Channel::Exposure),
        Just(Channel::Alerts),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A name the design does not allow is refused; an allowed one parses to a
    /// channel whose name is exactly what was sent, and the implementation lets a
    /// user read it exactly when the design does.
    #[test]
    fn reading_a_named_channel_follows_the_design(who in principal(), name in name()) {
        let expected = oracle_parse(&name);
        match name.parse::<Channel>() {
            Err(_) => prop_assert_eq!(expected, None, "{:?} was refused", name),
            Ok(channel) => {
                let Some(expected) = expected else {
                    return Err(TestCaseError::fail(format!(
                        "{name:?} is not a channel name the design allows, yet it parsed as {channel:?}"
                    )));
                };
                prop_assert_eq!(channel.to_string(), name.as_str());
                prop_assert_eq!(
                    who.may_read(&channel),
                    oracle_may_read(who, &expected),
                    "{:?} reading {:?}", who, name
                );
            }
        }
    }

    /// The same over well-formed channels: names round-trip, and `may_read` matches.
    #[test]
    fn reading_a_channel_follows_the_design(who in principal(), channel in channel()) {
        let name = channel.to_string();
        let parsed = name.parse::<Channel>();
        prop_assert_eq!(parsed.as_ref(), Ok(&channel));
        let expected = oracle_parse(&name).expect("a displayed channel is a valid name");
        prop_assert_eq!(who.may_read(&channel), oracle_may_read(who, &expected), "{:?} reading {}", who, name);
        // Durable exactly when the design says state changes flow on it.
        prop_assert_eq!(
            channel.is_durable(),
            !matches!(channel, Channel::Prices(_) | Channel::Exposure)
        );
    }

    /// A user's default channels are the design's table for the role, and readable.
    #[test]
    fn default_channels_are_the_roles_own(who in principal()) {
        let names: Vec<String> = who.default_channels().iter().map(Channel::to_string).collect();
        let id = who.id;
        let expected: Vec<String> = match who.role {
            Role::Client => vec![format!("portfolio:{id}"), format!("orders:{id}"), "prices:forex".into()],
            Role::Ib => vec![format!("commissions:{id}"), format!("network:{id}")],
            Role::Admin => vec!["exposure".into(), "alerts".into()],
        };
        prop_assert_eq!(&names, &expected);
        for name in &names {
            let parsed = oracle_parse(name).expect("default channels are valid names");
            prop_assert!(oracle_may_read(who, &parsed), "{:?} may not read its default {}", who, name);
        }
    }

    /// No one but an admin reads a channel of another user, whatever the ids.
    #[test]
    fn other_users_channels_are_forbidden(
        id in id(),
        trader in any::<bool>(),
        offset in prop_oneof![1u64..4, 1..=u64::MAX],
    ) {
        let role = if trader { Role::Client } else { Role::Ib };
        let who = Principal { id, role };
        // Any id but the user's own (wrapping past u64::MAX).
        let other = id.wrapping_add(offset);
        for channel in [
            Channel::Portfolio(other),
            Channel::Orders(other),
            Channel::Commissions(other),
            Channel::Network(other),
            Channel::Exposure,
            Channel::Alerts,
        ] {
            prop_assert!(!who.may_read(&channel), "{:?} may read {}", who, channel);
        }
    }
}
