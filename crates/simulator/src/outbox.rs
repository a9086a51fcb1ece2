//! The ingest envelope: every event leaves the simulator through an [`Outbox`].

use serde_json::Value;

/// Collects the events of one `bootstrap` or `step` call and stamps each with the
/// envelope of DESIGN.md: `v`, `type`, `src`, `seq`, `ts` and `emit_ts`.
///
/// One counter numbers every event of the source, ticks included, so `seq` runs
/// 1, 2, 3, … without gaps for the whole life of the simulator. (`src`, `seq`) is the
/// idempotency key the gateway deduplicates on.
#[derive(Debug)]
pub(crate) struct Outbox {
    src: String,
    seq: u64,
    now_ms: u64,
    events: Vec<Value>,
}

impl Outbox {
    pub(crate) fn new(src: String) -> Outbox {
        Outbox {
            src,
            seq: 0,
            now_ms: 0,
            events: Vec::new(),
        }
    }

    /// Starts a batch whose events all happen at `now_ms`.
    pub(crate) fn begin(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// The time of the current batch.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Appends an event of type `kind`; `body` is a JSON object of its own fields.
    pub(crate) fn push(&mut self, kind: &str, mut body: Value) {
        self.seq += 1;
        let fields = body
            .as_object_mut()
            .expect("an event body is a JSON object");
        fields.insert("v".into(), 1.into());
        fields.insert("type".into(), kind.into());
        fields.insert("src".into(), self.src.as_str().into());
        fields.insert("seq".into(), self.seq.into());
        fields.insert("ts".into(), self.now_ms.into());
        fields.insert("emit_ts".into(), self.now_ms.into());
        self.events.push(body);
    }

    /// Hands over the batch.
    pub(crate) fn finish(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }
}
