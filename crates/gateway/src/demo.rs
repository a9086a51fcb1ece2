//! `tradecast demo`: the built-in simulator feeding the node's own pipeline.
//!
//! The simulator writes MT5-style ingest events; they go through exactly the path
//! Redis events take (parse, validate, the domain engine, the broker), so the demo
//! shows the real product, not a mock-up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tradecast_protocol::ingest;
use tradecast_protocol::{Principal, Role};
use tradecast_simulator::{SimConfig, Simulator};

use crate::auth::Authenticator;
use crate::node::DemoIdentity;
use crate::pipeline::Pipeline;

/// How often the simulator is advanced.
const STEP: Duration = Duration::from_millis(100);

/// Tokens minted for the demo identities stay valid this long.
const DEMO_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A trader, an IB and a risk manager of the simulated broker, with tokens.
pub fn identities(
    simulator: &Simulator,
    auth: &Authenticator,
) -> anyhow::Result<Vec<DemoIdentity>> {
    let who = simulator.identities();
    let mut out = Vec::new();
    for (label, role, sub) in [
        (format!("Trader {}", who.trader), Role::Client, who.trader),
        (format!("IB {}", who.ib), Role::Ib, who.ib),
        (format!("Risk desk {}", who.admin), Role::Admin, who.admin),
    ] {
        let token = auth.mint(Principal { id: sub, role }, DEMO_TOKEN_TTL_SECS)?;
        out.push(DemoIdentity {
            label,
            role: role.as_str(),
            sub,
            token,
        });
    }
    Ok(out)
}

/// Apply the simulator's bootstrap events (accounts, IB tree, first positions),
/// so the scene is set before anyone connects, then advance it every 100 ms until
/// the pipeline stops.
pub async fn start(mut simulator: Simulator, pipeline: Pipeline) -> anyhow::Result<JoinHandle<()>> {
    pipeline
        .apply(parse_all(simulator.bootstrap(now_ms())))
        .await?;
    Ok(tokio::spawn(async move {
        let mut clock = tokio::time::interval(STEP);
        clock.tick().await;
        loop {
            clock.tick().await;
            if pipeline
                .feed(parse_all(simulator.step(now_ms())))
                .await
                .is_err()
            {
                return;
            }
        }
    }))
}

/// Simulator events through the ingest parser, as if they came from Redis.
fn parse_all(events: Vec<serde_json::Value>) -> Vec<ingest::IngestEvent> {
    events
        .into_iter()
        .filter_map(|value| match ingest::parse_value(value) {
            Ok(event) => Some(event),
            Err(error) => {
                tracing::error!(%error, "the simulator produced an invalid event");
                None
            }
        })
        .collect()
}

/// The simulator the demo runs by default.
pub fn simulator(seed: u64) -> Simulator {
    Simulator::new(SimConfig {
        seed,
        ..SimConfig::default()
    })
}
