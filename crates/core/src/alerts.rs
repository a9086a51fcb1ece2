//! Risk alerts: margin calls, stop-outs and large deals.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use tradecast_protocol::Channel;

use crate::effect::encode;

/// One alert, as sent on `alerts` (and, for account alerts, on `portfolio:{login}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `margin_call`, `stop_out` or `large_deal`.
    pub kind: String,
    /// `enter` or `leave` for account alerts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    pub login: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// Lots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deal: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// Percent; `null` on an account alert when the margin is 0.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub margin_level: Option<Option<f64>>,
    pub ts: u64,
}

/// A field that is present, even as `null`: `Some(None)`, so that an alert read back
/// from a checkpoint still says `"margin_level":null` (plain serde reads `null` as an
/// absent field, `None`). Absent fields are `None` through `#[serde(default)]`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// The most recent alerts, for the `alerts_full` snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertLog {
    recent: VecDeque<Alert>,
}

impl AlertLog {
    /// How many alerts the snapshot lists.
    pub const RECENT: usize = 50;

    pub fn record(&mut self, alert: Alert) {
        self.recent.push_back(alert);
        if self.recent.len() > Self::RECENT {
            self.recent.pop_front();
        }
    }

    /// The `alerts_full` snapshot.
    pub fn snapshot(&self) -> Bytes {
        #[derive(Serialize)]
        struct Full<'a> {
            recent: &'a VecDeque<Alert>,
        }
        encode(
            "alerts_full",
            &Channel::Alerts,
            &Full {
                recent: &self.recent,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_margin_level_survives_a_round_trip() {
        for margin_level in [None, Some(None), Some(Some(95.6))] {
            let alert = Alert {
                kind: "margin_call".into(),
                op: Some("enter".into()),
                login: 42,
                symbol: None,
                volume: None,
                deal: None,
                equity: None,
                margin: None,
                margin_level,
                ts: 1,
            };
            let text = serde_json::to_string(&alert).unwrap();
            assert_eq!(
                serde_json::from_str::<Alert>(&text).unwrap(),
                alert,
                "{text}"
            );
        }
    }
}
