//! From what the domain engine decided to what the broker publishes.

use tradecast_broker::Publish;
use tradecast_core::Effect;

/// Durable effects of one event are numbered `event * ORIGINS_PER_EVENT + i`.
pub const ORIGINS_PER_EVENT: u64 = 1024;

/// Snapshots to put back after the broker's store lost them (see
/// [`Publish::Restore`]).
pub fn to_restore(snapshots: Vec<Effect>) -> Vec<Publish> {
    snapshots
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Snapshot { channel, message } => Some(Publish::Restore { channel, message }),
            _ => None,
        })
        .collect()
}

/// Turn `effects` into one broker batch. With `event` (the event's number in the
/// ingest order), every durable message gets an origin that is unique and rises
/// with the order of publishing, so a replay of the same event is recognised by
/// each channel and appended nowhere a second time.
pub fn to_batch(effects: Vec<Effect>, event: Option<u64>) -> Vec<Publish> {
    let mut durable = 0u64;
    effects
        .into_iter()
        .map(|effect| match effect {
            Effect::Durable {
                channel,
                message,
                snapshot,
            } => {
                let origin = event
                    .filter(|_| durable < ORIGINS_PER_EVENT)
                    .map(|n| n * ORIGINS_PER_EVENT + durable);
                durable += 1;
                Publish::Durable {
                    channel,
                    message,
                    snapshot,
                    origin,
                }
            }
            Effect::Ephemeral {
                channel,
                key,
                message,
                retain,
            } => Publish::Ephemeral {
                channel,
                key,
                message,
                retain,
            },
            Effect::Snapshot { channel, message } => Publish::Snapshot { channel, message },
        })
        .collect()
}
