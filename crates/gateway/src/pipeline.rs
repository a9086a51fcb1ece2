//! The ingest pipeline: validated events in, channel messages out.
//!
//! One task owns the domain [`Engine`], so events are applied strictly in the order
//! they arrive (per account, that is the stream order). Each event's effects are
//! published to the broker in order before the next event is applied. A timer calls
//! [`Engine::flush_live`] so live profit, equity and exposure go out conflated.
//! Sources (`POST /v1/events`, the demo simulator) feed the same [`Pipeline`]
//! handle. With Redis, the ingest leader (`tradecast_ingest::leader`) plays this
//! part instead, reading the streams.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tradecast_broker::Broker;
use tradecast_core::{Effect, Engine, EngineConfig, Rejected};
use tradecast_ingest::effects::to_batch;
use tradecast_protocol::ingest::IngestEvent;

/// How often conflated live figures are considered for sending.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// What became of a batch of events.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BatchOutcome {
    /// Events applied (possibly producing no message).
    pub applied: usize,
    /// Events already applied before (same `src` and `seq`), skipped.
    pub duplicates: usize,
    /// Events the domain refused, with the reason: (index in the batch, reason).
    pub rejected: Vec<(usize, String)>,
}

struct Batch {
    events: Vec<IngestEvent>,
    done: Option<oneshot::Sender<BatchOutcome>>,
}

/// A handle to feed the pipeline; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<Batch>,
}

/// The pipeline has stopped (the node is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the ingest pipeline has stopped")]
pub struct PipelineStopped;

impl Pipeline {
    /// Start the pipeline task. It ends when every [`Pipeline`] handle is dropped.
    pub fn spawn(config: EngineConfig, broker: Arc<dyn Broker>) -> (Pipeline, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(run(Engine::new(config), broker, rx));
        (Pipeline { tx }, task)
    }

    /// Apply `events` in order and wait until their messages are published.
    pub async fn apply(&self, events: Vec<IngestEvent>) -> Result<BatchOutcome, PipelineStopped> {
        let (done, outcome) = oneshot::channel();
        self.tx
            .send(Batch {
                events,
                done: Some(done),
            })
            .await
            .map_err(|_| PipelineStopped)?;
        outcome.await.map_err(|_| PipelineStopped)
    }

    /// Queue `events` without waiting for them to be applied (back-pressure only
    /// when the pipeline is 1024 batches behind).
    pub async fn feed(&self, events: Vec<IngestEvent>) -> Result<(), PipelineStopped> {
        self.tx
            .send(Batch { events, done: None })
            .await
            .map_err(|_| PipelineStopped)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn run(mut engine: Engine, broker: Arc<dyn Broker>, mut rx: mpsc::Receiver<Batch>) {
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { return };
                let mut outcome = BatchOutcome::default();
                for (index, event) in batch.events.iter().enumerate() {
                    let kind = event.body.kind();
                    match engine.apply(event, now_ms()) {
                        Ok(effects) => {
                            outcome.applied += 1;
                            metrics::counter!("tradecast_ingest_events_total", "type" => kind).increment(1);
                            publish(broker.as_ref(), effects).await;
                        }
                        Err(Rejected::Duplicate) => {
                            outcome.duplicates += 1;
                            metrics::counter!("tradecast_ingest_duplicates_total").increment(1);
                        }
                        Err(Rejected::Invalid(reason)) => {
                            metrics::counter!("tradecast_ingest_rejected_total", "type" => kind).increment(1);
                            tracing::warn!(src = %event.src, seq = event.seq, kind, %reason, "ingest event refused by the domain");
                            outcome.rejected.push((index, reason));
                        }
                    }
                }
                if let Some(done) = batch.done {
                    let _ = done.send(outcome);
                }
            }
            _ = flush.tick() => publish(broker.as_ref(), engine.flush_live(now_ms())).await,
        }
    }
}

/// Publish effects in order, in one batch. The embedded broker cannot fail; a
/// failure here is logged and counted.
async fn publish(broker: &dyn Broker, effects: Vec<Effect>) {
    if effects.is_empty() {
        return;
    }
    if let Err(error) = broker.publish(to_batch(effects, None)).await {
        metrics::counter!("tradecast_publish_failures_total").increment(1);
        tracing::error!(%error, "publishing channel messages failed");
    }
}
