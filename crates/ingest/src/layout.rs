//! Stream names, and which stream an event belongs in.
//!
//! With `partitions = 0` every trade event goes to the one stream `events`
//! (`tc:events` by default). With `partitions = N` an account-scoped event goes to
//! `{events}:{login mod N}` (e.g. `tc:events:{3}`), so one account's events stay in
//! one stream and in order, and an event that is about no account (`symbol`) to
//! partition 0. Ticks always go to the tick stream. The leader reads them all in one
//! command, so on Redis Cluster the names must share a hash tag (`{tc}:events`).

use tradecast_protocol::ingest::EventBody;

/// The ingest streams a deployment uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLayout {
    /// Trade-event stream name (or partition prefix).
    pub events: String,
    /// Tick stream name.
    pub ticks: String,
    /// 0: one events stream; N: partitions `{events}:{n}` for n in 0..N.
    pub partitions: u32,
}

impl Default for StreamLayout {
    fn default() -> Self {
        StreamLayout {
            events: "tc:events".into(),
            ticks: "tc:ticks".into(),
            partitions: 0,
        }
    }
}

impl StreamLayout {
    /// Every stream a reader must consume, trade events first, ticks last.
    pub fn streams(&self) -> Vec<String> {
        let mut streams: Vec<String> = if self.partitions == 0 {
            vec![self.events.clone()]
        } else {
            (0..self.partitions).map(|n| self.partition(n)).collect()
        };
        streams.push(self.ticks.clone());
        streams
    }

    /// The name of events partition `n`.
    pub fn partition(&self, n: u32) -> String {
        format!("{}:{{{n}}}", self.events)
    }

    /// The stream an event of this body belongs in.
    pub fn stream_for(&self, body: &EventBody) -> String {
        match body {
            EventBody::Tick(_) => self.ticks.clone(),
            _ if self.partitions == 0 => self.events.clone(),
            _ => {
                let login = body.login().unwrap_or(0);
                self.partition((login % u64::from(self.partitions)) as u32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradecast_protocol::ingest;

    fn body(json: &str) -> EventBody {
        ingest::parse(json.as_bytes()).expect("valid event").body
    }

    #[test]
    fn accounts_stay_on_one_partition_and_ticks_on_the_tick_stream() {
        let layout = StreamLayout {
            partitions: 4,
            ..StreamLayout::default()
        };
        let account = body(
            r#"{"v":1,"type":"account","src":"s","seq":1,"ts":1,"login":10,"name":"A","currency":"USD","balance":0,"credit":0,"leverage":100,"group":"real"}"#,
        );
        assert_eq!(layout.stream_for(&account), "tc:events:{2}");
        let tick = body(
            r#"{"v":1,"type":"tick","src":"s","seq":2,"ts":1,"symbol":"EURUSD","bid":1.1,"ask":1.2}"#,
        );
        assert_eq!(layout.stream_for(&tick), "tc:ticks");
        assert_eq!(layout.streams().len(), 5);
        assert_eq!(StreamLayout::default().stream_for(&account), "tc:events");
    }
}
