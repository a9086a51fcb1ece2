//! Channels, roles and the read-authorization rule of DESIGN.md.
//!
//! A channel name is `kind` or `kind:key`: `portfolio:{login}`, `orders:{login}`,
//! `commissions:{ib}`, `network:{ib}`, `prices:{group}`, `exposure`, `alerts`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Who a connection belongs to, from the JWT `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A trader; `sub` is the MT login.
    Client,
    /// An introducing broker; `sub` is the IB id.
    Ib,
    /// A risk manager; `sub` is the staff id.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Ib => "ib",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(Role::Client),
            "ib" => Ok(Role::Ib),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (expected client, ib or admin)"
            )),
        }
    }
}

/// An authenticated user: the JWT `sub` and `role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal {
    pub id: u64,
    pub role: Role,
}

impl Principal {
    /// The channels a connection of this user joins on connect (DESIGN.md, "Users").
    pub fn default_channels(&self) -> Vec<Channel> {
        match self.role {
            Role::Client => vec![
                Channel::Portfolio(self.id),
                Channel::Orders(self.id),
                Channel::Prices("forex".into()),
            ],
            Role::Ib => vec![Channel::Commissions(self.id), Channel::Network(self.id)],
            Role::Admin => vec![Channel::Exposure, Channel::Alerts],
        }
    }

    /// May this user read `channel`? Traders read their own `portfolio:`/`orders:`,
    /// IBs their own `commissions:`/`network:`, everyone reads `prices:*`, and admins
    /// read everything.
    pub fn may_read(&self, channel: &Channel) -> bool {
        match (self.role, channel) {
            (Role::Admin, _) => true,
            (_, Channel::Prices(_)) => true,
            (Role::Client, Channel::Portfolio(login) | Channel::Orders(login)) => *login == self.id,
            (Role::Ib, Channel::Commissions(ib) | Channel::Network(ib)) => *ib == self.id,
            _ => false,
        }
    }
}

/// A parsed channel name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// A trader's account and open positions (durable + live profit).
    Portfolio(u64),
    /// A trader's working orders.
    Orders(u64),
    /// Bid/ask of every symbol of a group (ephemeral).
    Prices(String),
    /// Commission earned by an IB from its whole downline.
    Commissions(u64),
    /// Clients joining an IB's network.
    Network(u64),
    /// Net exposure per symbol (admins).
    Exposure,
    /// Margin calls, stop outs and large deals (admins).
    Alerts,
}

impl Channel {
    /// Does this channel carry durable (sequenced, resumable) messages?
    /// `prices:` and `exposure` carry only ephemeral figures.
    pub fn is_durable(&self) -> bool {
        !matches!(self, Channel::Prices(_) | Channel::Exposure)
    }

    /// The snapshot a subscriber gets for a channel nothing has been published on
    /// yet, so every subscription starts from a well-defined state.
    pub fn empty_snapshot(&self) -> Option<String> {
        let name = serde_json::to_string(&self.to_string()).expect("string serializes");
        match self {
            Channel::Portfolio(login) => Some(format!(
                r#"{{"type":"portfolio_full","channel":{name},"login":{login},"account":null,"positions":[]}}"#
            )),
            Channel::Orders(login) => Some(format!(
                r#"{{"type":"orders_full","channel":{name},"login":{login},"orders":[]}}"#
            )),
            Channel::Commissions(ib) => Some(format!(
                r#"{{"type":"commissions_full","channel":{name},"ib":{ib},"total":0.0,"count":0,"by_level":{{}},"recent":[]}}"#
            )),
            Channel::Network(ib) => Some(format!(
                r#"{{"type":"network_full","channel":{name},"ib":{ib},"clients":[]}}"#
            )),
            Channel::Alerts => Some(format!(
                r#"{{"type":"alerts_full","channel":{name},"recent":[]}}"#
            )),
            Channel::Exposure => Some(format!(
                r#"{{"type":"exposure","channel":{name},"symbols":[]}}"#
            )),
            Channel::Prices(_) => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Portfolio(id) => write!(f, "portfolio:{id}"),
            Channel::Orders(id) => write!(f, "orders:{id}"),
            Channel::Prices(group) => write!(f, "prices:{group}"),
            Channel::Commissions(id) => write!(f, "commissions:{id}"),
            Channel::Network(id) => write!(f, "network:{id}"),
            Channel::Exposure => f.write_str("exposure"),
            Channel::Alerts => f.write_str("alerts"),
        }
    }
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel {name:?}: {reason}")]
pub struct InvalidChannel {
    pub name: String,
    pub reason: &'static str,
}

impl FromStr for Channel {
    type Err = InvalidChannel;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidChannel {
            name: name.chars().take(64).collect(),
            reason,
        };
        // One name per channel: the key is written as `u64` displays it, so "+42",
        // "042" and "４２" are refused rather than read as portfolio:42 (a client
        // tracking the name it sent would never see messages on the real one).
        let id = |key: &str| {
            let canonical = key.bytes().all(|b| b.is_ascii_digit())
                && (key.len() == 1 || !key.starts_with('0'));
            canonical
                .then(|| key.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| invalid("the key must be a number"))
        };
        match name.split_once(':') {
            None => match name {
                "exposure" => Ok(Channel::Exposure),
                "alerts" => Ok(Channel::Alerts),
                _ => Err(invalid("unknown channel kind")),
            },
            Some((kind, key)) => match kind {
                "portfolio" => Ok(Channel::Portfolio(id(key)?)),
                "orders" => Ok(Channel::Orders(id(key)?)),
                "commissions" => Ok(Channel::Commissions(id(key)?)),
                "network" => Ok(Channel::Network(id(key)?)),
                "prices" => {
                    let valid = !key.is_empty()
                        && key.len() <= 64
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
                    if valid {
                        Ok(Channel::Prices(key.to_owned()))
                    } else {
                        Err(invalid(
                            "a price group is 1-64 letters, digits, '_', '-' or '.'",
                        ))
                    }
                }
                _ => Err(invalid("unknown channel kind")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "portfolio:42",
            "orders:7",
            "prices:forex",
            "commissions:9",
            "network:1",
            "exposure",
            "alerts",
        ] {
            assert_eq!(name.parse::<Channel>().unwrap().to_string(), name);
        }
        for bad in [
            "portfolio",
            "portfolio:x",
            "portfolio:042",
            "portfolio:+42",
            "portfolio:18446744073709551616",
            "nope:1",
            "prices:",
            "prices:a b",
            "exposure:1",
        ] {
            assert!(bad.parse::<Channel>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn authorization_follows_design() {
        let trader = Principal {
            id: 42,
            role: Role::Client,
        };
        let ib = Principal {
            id: 9,
            role: Role::Ib,
        };
        let admin = Principal {
            id: 1,
            role: Role::Admin,
        };
        assert!(trader.may_read(&Channel::Portfolio(42)));
        assert!(!trader.may_read(&Channel::Portfolio(43)));
        assert!(!trader.may_read(&Channel::Commissions(42)));
        assert!(!trader.may_read(&Channel::Exposure));
        assert!(trader.may_read(&Channel::Prices("metals".into())));
        assert!(ib.may_read(&Channel::Network(9)));
        assert!(!ib.may_read(&Channel::Portfolio(42)));
        assert!(!ib.may_read(&Channel::Commissions(10)));
        assert!(!ib.may_read(&Channel::Alerts));
        assert!(admin.may_read(&Channel::Portfolio(42)) && admin.may_read(&Channel::Alerts));
    }
}
