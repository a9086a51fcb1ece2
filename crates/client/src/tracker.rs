//! The session's protocol state, without I/O: per channel the `epoch` and the last
//! durable `seq` applied, the outstanding (re)subscribe, duplicates, gaps, resume
//! after a reconnect (docs/protocol.md §5–§7). The driver in `session.rs` feeds it the
//! frames of each connection and sends what it queues in `outgoing`; it delivers the
//! `events` to the application.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::session::{
    ChannelInfo, Event, GapInfo, ResetInfo, SessionError, Since, Stats, SubscribeCause, Subscribed,
    Welcome,
};

type Reply<T> = oneshot::Sender<Result<T, SessionError>>;

/// Ephemeral channels (no `seq`, nothing to resume).
pub(crate) fn is_durable_channel(name: &str) -> bool {
    !(name.starts_with("prices:") || name == "exposure")
}

struct ChannelState {
    name: String,
    durable: bool,
    /// Part of the session: resubscribed after every reconnect.
    wanted: bool,
    /// A default channel of the role (the node subscribes it by itself).
    is_default: bool,
    epoch: Option<String>,
    seq: Option<u64>,
    /// Id of our outstanding subscribe: until its reply, durable messages and
    /// snapshots are held back (the reply's replay or snapshot covers them).
    pending: Option<String>,
    pending_cause: SubscribeCause,
    pending_since: Option<Since>,
    retries: u32,
    waiters: Vec<Reply<Subscribed>>,
}

impl ChannelState {
    fn new(name: &str) -> ChannelState {
        ChannelState {
            name: name.to_owned(),
            durable: is_durable_channel(name),
            wanted: false,
            is_default: false,
            epoch: None,
            seq: None,
            pending: None,
            pending_cause: SubscribeCause::Initial,
            pending_since: None,
            retries: 0,
            waiters: Vec::new(),
        }
    }

    fn position(&self) -> Option<Since> {
        Some(Since {
            epoch: self.epoch.clone()?,
            seq: self.seq?,
        })
    }

    fn info(&self) -> ChannelInfo {
        ChannelInfo {
            name: self.name.clone(),
            durable: self.durable,
            epoch: self.epoch.clone(),
            seq: self.seq,
            resyncing: self.pending.is_some(),
        }
    }
}

enum Request {
    Ping {
        sent_at: Instant,
        reply: Reply<Duration>,
    },
    Unsubscribe {
        reply: Reply<()>,
    },
}

struct Resume {
    ids: BTreeSet<String>,
    recovered: Vec<String>,
    reset: Vec<String>,
}

/// A later resubscribe after an `unavailable` answer.
struct Retry {
    at: Instant,
    channel: String,
    since: Option<Since>,
}

/// What the driver must do about a frame besides sending `outgoing`.
#[derive(Debug, PartialEq)]
pub(crate) enum Signal {
    None,
    /// `welcome`: the connection is up; ping this often (0: the node gave none).
    Welcome {
        heartbeat_ms: u64,
    },
    /// `reconnect`: the node is draining and closes after this long.
    Drain {
        after_ms: u64,
    },
}

pub(crate) struct Tracker {
    /// In insertion order (`channels()` lists them so).
    channels: Vec<ChannelState>,
    /// Default channels the app unsubscribed from: unsubscribed again after each welcome.
    suppressed: BTreeSet<String>,
    pub welcome: Option<Welcome>,
    pub stats: Stats,
    /// A `welcome` was received on the current connection (requests may be sent).
    connected: bool,
    req_seq: u64,
    requests: HashMap<String, Request>,
    resume: Option<Resume>,
    retries: Vec<Retry>,
    /// Cap of the `unavailable` retry delay.
    retry_max: Duration,
    pub outgoing: Vec<Value>,
    pub events: Vec<Event>,
    /// Answers to the app's requests, run after `events` are handed over: whoever
    /// gets an answer finds the events that came before it already queued.
    pub replies: Vec<Box<dyn FnOnce() + Send>>,
}

impl Tracker {
    pub fn new(channels: &[String], retry_max: Duration) -> Tracker {
        let mut t = Tracker {
            channels: Vec::new(),
            suppressed: BTreeSet::new(),
            welcome: None,
            stats: Stats::default(),
            connected: false,
            req_seq: 0,
            requests: HashMap::new(),
            resume: None,
            retries: Vec::new(),
            retry_max,
            outgoing: Vec::new(),
            events: Vec::new(),
            replies: Vec::new(),
        };
        for name in channels {
            t.ensure(name);
            t.get_mut(name).unwrap().wanted = true;
        }
        t
    }

    // ------------------------------------------------------------- queries

    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.channels
            .iter()
            .filter(|c| c.wanted)
            .map(ChannelState::info)
            .collect()
    }

    #[cfg(test)]
    pub fn channel(&self, name: &str) -> Option<ChannelInfo> {
        self.get(name).filter(|c| c.wanted).map(ChannelState::info)
    }

    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.iter().map(|r| r.at).min()
    }

    // ------------------------------------------------------------- requests of the app

    /// Subscribe (kept across reconnects); `reply` gets the `subscribed` or the error.
    pub fn subscribe(&mut self, channel: &str, reply: Option<Reply<Subscribed>>) {
        self.suppressed.remove(channel);
        self.ensure(channel);
        let connected = self.connected;
        let ch = self.get_mut(channel).unwrap();
        ch.wanted = true;
        ch.waiters.extend(reply);
        if connected {
            self.send_subscribe(channel, None, SubscribeCause::Initial);
        }
    }

    pub fn unsubscribe(&mut self, channel: &str, reply: Reply<()>) {
        let was_default = self.get(channel).is_some_and(|c| c.is_default)
            || self
                .welcome
                .as_ref()
                .is_some_and(|w| w.channels.iter().any(|c| c == channel));
        if was_default {
            self.suppressed.insert(channel.to_owned());
        }
        if let Some(i) = self.index(channel) {
            let ch = self.channels.remove(i);
            for w in ch.waiters {
                self.reply(
                    w,
                    Err(SessionError::new(
                        "unsubscribed",
                        "unsubscribed",
                        Some(channel),
                    )),
                );
            }
        }
        if !self.connected {
            self.reply(reply, Ok(()));
            return;
        }
        let id = self.next_id();
        self.requests
            .insert(id.clone(), Request::Unsubscribe { reply });
        self.outgoing
            .push(json!({"type": "unsubscribe", "channel": channel, "id": id}));
    }

    pub fn ping(&mut self, reply: Reply<Duration>, now: Instant) {
        if !self.connected {
            self.reply(
                reply,
                Err(SessionError::new("not_connected", "not connected", None)),
            );
            return;
        }
        let id = self.next_id();
        self.requests.insert(
            id.clone(),
            Request::Ping {
                sent_at: now,
                reply,
            },
        );
        self.outgoing.push(json!({"type": "ping", "id": id}));
    }

    /// A heartbeat ping (its pong answers nothing).
    pub fn heartbeat(&mut self) {
        self.outgoing.push(json!({"type": "ping"}));
    }

    // ------------------------------------------------------------- connection events

    /// The connection ended: what was outstanding on it is void.
    pub fn connection_lost(&mut self) {
        self.connected = false;
        self.resume = None;
        self.retries.clear();
        self.outgoing.clear();
        for ch in &mut self.channels {
            ch.pending = None;
            ch.pending_since = None;
        }
        let requests: Vec<Request> = self.requests.drain().map(|(_, r)| r).collect();
        for request in requests {
            let error = SessionError::new("connection_lost", "the connection closed", None);
            match request {
                Request::Ping { reply, .. } => self.reply(reply, Err(error)),
                Request::Unsubscribe { reply } => self.reply(reply, Err(error)),
            }
        }
    }

    /// The session closed for good (`reason`): every waiting subscribe fails.
    pub fn closed(&mut self, reason: &str) {
        let mut waiters = Vec::new();
        for ch in &mut self.channels {
            waiters.extend(ch.waiters.drain(..).map(|w| (w, ch.name.clone())));
        }
        for (w, name) in waiters {
            self.reply(w, Err(SessionError::new("closed", reason, Some(&name))));
        }
    }

    /// `close()`: forget the session (subscriptions and resume positions).
    pub fn forget(&mut self) {
        self.channels.clear();
        self.suppressed.clear();
        self.welcome = None;
    }

    /// Resubscribe the channels whose `unavailable` retry is due.
    pub fn fire_retries(&mut self, now: Instant) {
        let (due, later): (Vec<Retry>, Vec<Retry>) =
            self.retries.drain(..).partition(|r| r.at <= now);
        self.retries = later;
        for retry in due {
            let ready = self
                .get(&retry.channel)
                .is_some_and(|c| c.wanted && c.pending.is_none());
            if ready && self.connected {
                self.send_subscribe(&retry.channel, retry.since, SubscribeCause::Retry);
            }
        }
    }

    // ------------------------------------------------------------- inbound

    /// One inbound message of the current connection.
    pub fn on_message(&mut self, m: Value, now: Instant) -> Signal {
        match m["type"].as_str().unwrap_or_default() {
            "welcome" => return self.on_welcome(&m),
            "subscribed" => self.on_subscribed(&m),
            "unsubscribed" => self.settle(&m["id"], None, now),
            "pong" => self.settle(&m["id"], None, now),
            "error" => self.on_error(&m, now),
            "reconnect" => {
                return Signal::Drain {
                    after_ms: m["after_ms"].as_u64().unwrap_or(1000),
                };
            }
            _ if m["type"].is_string() && m["channel"].is_string() => self.on_channel_message(m),
            _ => {}
        }
        Signal::None
    }

    fn on_welcome(&mut self, raw: &Value) -> Signal {
        let Ok(m) = serde_json::from_value::<Welcome>(raw.clone()) else {
            return Signal::None;
        };
        let previous = self.welcome.take();
        let reconnect = previous.is_some() && self.stats.connections > 0;
        if let Some(previous) = &previous
            && (previous.user != m.user || previous.role != m.role)
        {
            // Another identity: nothing held is valid any more.
            for ch in &mut self.channels {
                ch.epoch = None;
                ch.seq = None;
                if ch.is_default {
                    ch.wanted = false;
                }
                ch.is_default = false;
            }
            self.suppressed.clear();
        }
        self.welcome = Some(m.clone());
        self.connected = true;
        self.stats.connections += 1;
        for name in &m.channels {
            self.ensure(name);
            let suppressed = self.suppressed.contains(name);
            let ch = self.get_mut(name).unwrap();
            ch.is_default = true;
            if !suppressed {
                ch.wanted = true;
            }
        }

        // Resume: the node subscribed the default channels by itself (with a
        // snapshot); ask every channel we hold state for to continue from where we
        // are. Until each reply, its durable messages and snapshots are held back.
        for name in &self.suppressed {
            if m.channels.contains(name) {
                self.outgoing
                    .push(json!({"type": "unsubscribe", "channel": name}));
            }
        }
        self.channels.retain(|c| c.wanted || !c.waiters.is_empty());
        let mut resume_ids = BTreeSet::new();
        let names: Vec<String> = self
            .channels
            .iter()
            .filter(|c| c.wanted)
            .map(|c| c.name.clone())
            .collect();
        for name in names {
            let ch = self.get(&name).unwrap();
            let since = if ch.durable { ch.position() } else { None };
            if ch.is_default && since.is_none() {
                continue; // the node's own subscribe is all we need
            }
            let cause = if since.is_some() {
                SubscribeCause::Reconnect
            } else {
                SubscribeCause::Initial
            };
            let resuming = since.is_some();
            let id = self.send_subscribe(&name, since, cause);
            if resuming {
                resume_ids.insert(id);
            }
        }
        self.resume = reconnect.then_some(Resume {
            ids: resume_ids,
            recovered: Vec::new(),
            reset: Vec::new(),
        });
        self.events.push(Event::Open(m.clone()));
        self.maybe_resumed();
        Signal::Welcome {
            heartbeat_ms: m.heartbeat_ms,
        }
    }

    fn maybe_resumed(&mut self) {
        if self.resume.as_ref().is_some_and(|r| r.ids.is_empty()) {
            let r = self.resume.take().unwrap();
            self.events.push(Event::Resumed {
                recovered: r.recovered,
                reset: r.reset,
            });
        }
    }

    fn send_subscribe(
        &mut self,
        channel: &str,
        since: Option<Since>,
        cause: SubscribeCause,
    ) -> String {
        let id = self.next_id();
        let ch = self.get_mut(channel).unwrap();
        ch.pending = Some(id.clone());
        ch.pending_cause = cause;
        ch.pending_since = since.clone();
        let mut request = json!({"type": "subscribe", "channel": channel, "id": id});
        if let Some(since) = since {
            request["since"] = json!({"epoch": since.epoch, "seq": since.seq});
        }
        self.outgoing.push(request);
        id
    }

    fn on_subscribed(&mut self, raw: &Value) {
        let Ok(m) = serde_json::from_value::<Subscribed>(raw.clone()) else {
            return;
        };
        if self.index(&m.channel).is_none() {
            if m.id.is_some() || self.suppressed.contains(&m.channel) {
                return; // a channel we dropped
            }
            // The node subscribed us by itself.
            self.ensure(&m.channel);
            self.get_mut(&m.channel).unwrap().wanted = true;
        }
        let ch = self.get_mut(&m.channel).unwrap();
        if !ch.wanted {
            return;
        }
        // While our own (re)subscribe is outstanding, any other `subscribed` (the
        // node's automatic one after a reconnect, a server resync, an older reply) and
        // what follows it is superseded by our reply: ignore it.
        if let Some(pending) = &ch.pending
            && m.id_str().as_deref() != Some(pending.as_str())
        {
            return;
        }
        let cause = if ch.pending.is_some() {
            ch.pending_cause
        } else {
            SubscribeCause::Server
        };
        let reply_id = ch.pending.take();
        ch.pending_since = None;
        ch.retries = 0;
        let previous = ch.position();
        ch.epoch = Some(m.epoch.clone());
        if !m.recovered || ch.seq.is_none() {
            ch.seq = Some(m.seq); // a snapshot follows
        }
        // recovered: keep our seq, the replay continues right after it.
        let reset = !m.recovered && previous.is_some() && ch.durable;
        let seq = ch.seq.unwrap_or(m.seq);
        let waiters = std::mem::take(&mut ch.waiters);
        let name = ch.name.clone();
        self.events.push(Event::Subscribed(m.clone()));
        if reset {
            self.stats.resets += 1;
            self.events.push(Event::Reset(ResetInfo {
                channel: name.clone(),
                epoch: m.epoch.clone(),
                seq,
                previous,
                cause,
            }));
        }
        if let (Some(id), Some(resume)) = (&reply_id, &mut self.resume)
            && resume.ids.remove(id)
        {
            if m.recovered {
                resume.recovered.push(name);
            } else {
                resume.reset.push(name);
            }
            self.maybe_resumed();
        }
        for w in waiters {
            self.reply(w, Ok(m.clone()));
        }
    }

    fn on_channel_message(&mut self, m: Value) {
        let channel = m["channel"].as_str().unwrap_or_default();
        let Some(i) = self.index(channel).filter(|&i| self.channels[i].wanted) else {
            return;
        };
        let ch = &mut self.channels[i];
        if let Some(seq) = m.get("seq").and_then(Value::as_u64) {
            if ch.pending.is_some() {
                return; // held back: the reply's replay or snapshot covers it
            }
            if let Some(last) = ch.seq {
                if seq <= last {
                    self.stats.duplicates += 1;
                    return;
                }
                if seq > last + 1 {
                    self.stats.gaps += 1;
                    let since = ch.position();
                    let name = ch.name.clone();
                    self.events.push(Event::Gap(GapInfo {
                        channel: name.clone(),
                        expected: last + 1,
                        received: seq,
                    }));
                    self.send_subscribe(&name, since, SubscribeCause::Gap);
                    return;
                }
            }
            ch.seq = Some(seq);
        } else if ch.pending.is_some() && m["type"].as_str().is_some_and(|t| t.ends_with("_full")) {
            return; // the snapshot of a superseded `subscribed`
        }
        self.stats.messages += 1;
        self.events.push(Event::Message(m));
    }

    fn on_error(&mut self, m: &Value, now: Instant) {
        let error = SessionError::new(
            m["code"].as_str().unwrap_or("error"),
            m["message"]
                .as_str()
                .or(m["code"].as_str())
                .unwrap_or("error"),
            m["channel"].as_str(),
        );
        let Some(id) = id_string(&m["id"]) else {
            self.events.push(Event::Error(error));
            return;
        };
        if let Some(i) = self
            .channels
            .iter()
            .position(|c| c.pending.as_deref() == Some(id.as_str()))
        {
            let ch = &mut self.channels[i];
            let cause = ch.pending_cause;
            let since = ch.pending_since.take();
            ch.pending = None;
            let name = ch.name.clone();
            if let Some(resume) = &mut self.resume
                && resume.ids.remove(&id)
            {
                resume.reset.push(name.clone());
                self.maybe_resumed();
            }
            let ch = &mut self.channels[i];
            if error.code == "unavailable" && ch.epoch.is_some() {
                // The broker could not serve it now: ask again later, from the same position.
                let delay = Duration::from_secs(1)
                    .saturating_mul(1u32 << ch.retries.min(10))
                    .min(self.retry_max);
                ch.retries += 1;
                self.retries.push(Retry {
                    at: now + delay,
                    channel: name,
                    since,
                });
                self.events.push(Event::Error(error));
                return;
            }
            let waiters = std::mem::take(&mut ch.waiters);
            if ch.epoch.is_none()
                || matches!(cause, SubscribeCause::Reconnect | SubscribeCause::Retry)
            {
                // Never held, or no longer readable: drop it from the session.
                self.channels.remove(i);
            }
            if waiters.is_empty() {
                self.events.push(Event::Error(error));
            } else {
                for w in waiters {
                    self.reply(w, Err(error.clone()));
                }
            }
            return;
        }
        if self.requests.contains_key(&id) {
            self.settle(&m["id"], Some(error), now);
        } else {
            self.events.push(Event::Error(error));
        }
    }

    fn settle(&mut self, id: &Value, error: Option<SessionError>, now: Instant) {
        let Some(request) = id_string(id).and_then(|id| self.requests.remove(&id)) else {
            return;
        };
        match request {
            Request::Ping { sent_at, reply } => {
                let result = match error {
                    None => Ok(now.saturating_duration_since(sent_at)),
                    Some(e) => Err(e),
                };
                self.reply(reply, result);
            }
            Request::Unsubscribe { reply } => {
                let result = match error {
                    Some(e) if e.code != "not_subscribed" => Err(e),
                    _ => Ok(()),
                };
                self.reply(reply, result);
            }
        }
    }

    // ------------------------------------------------------------- helpers

    /// Answer a request once the events before the answer are out (see `replies`).
    fn reply<T: Send + 'static>(&mut self, to: Reply<T>, result: Result<T, SessionError>) {
        self.replies.push(Box::new(move || {
            let _ = to.send(result);
        }));
    }

    fn next_id(&mut self) -> String {
        self.req_seq += 1;
        format!("c{}", self.req_seq)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.channels.iter().position(|c| c.name == name)
    }

    fn get(&self, name: &str) -> Option<&ChannelState> {
        self.channels.iter().find(|c| c.name == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut ChannelState> {
        self.channels.iter_mut().find(|c| c.name == name)
    }

    fn ensure(&mut self, name: &str) {
        if self.index(name).is_none() {
            self.channels.push(ChannelState::new(name));
        }
    }
}

/// A request id as we send them (strings); numbers are compared as their text.
fn id_string(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Subscribed {
    fn id_str(&self) -> Option<String> {
        self.id.as_ref().and_then(id_string)
    }
}

#[cfg(test)]
mod tests {
    //! The protocol logic against scripted frames: situations the embedded broker
    //! cannot produce on demand (a server-initiated resync, an `unavailable` reply).
    use super::*;
    use crate::models::{Model, Portfolio};

    const E: &str = "epoch-one";

    fn welcome() -> Value {
        json!({"type":"welcome","user":42,"role":"client","heartbeat_ms":30000,"channels":["portfolio:42"]})
    }
    fn sub(seq: u64) -> Value {
        json!({"type":"subscribed","channel":"portfolio:42","epoch":E,"seq":seq,"recovered":false})
    }
    fn full(ids: &[u64]) -> Value {
        let positions: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id":id,"symbol":"EURUSD","side":"buy","volume":1.0,"price_open":1.1,"sl":null,"tp":null,"swap":0.0,"profit":0.0,"price":1.1,"time":1}))
            .collect();
        json!({"type":"portfolio_full","channel":"portfolio:42","login":42,"account":null,"positions":positions})
    }
    fn pos(id: u64, seq: u64) -> Value {
        json!({"type":"position_opened","channel":"portfolio:42","id":id,"symbol":"EURUSD","side":"buy","volume":1.0,
            "price_open":1.1,"sl":null,"tp":null,"swap":0.0,"profit":0.0,"price":1.1,"time":1,"seq":seq})
    }
    fn closed(id: u64, seq: u64) -> Value {
        json!({"type":"position_closed","channel":"portfolio:42","id":id,"symbol":"EURUSD","side":"buy","volume":1.0,"profit":1.0,"seq":seq})
    }

    /// A tracker plus what the app saw.
    struct Harness {
        t: Tracker,
        portfolio: Portfolio,
        durable: Vec<u64>,
        events: Vec<Event>,
        sent: Vec<Value>,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                t: Tracker::new(&[], Duration::from_millis(20)),
                portfolio: Portfolio::new(),
                durable: Vec::new(),
                events: Vec::new(),
                sent: Vec::new(),
            }
        }
        fn recv(&mut self, messages: &[Value]) {
            for m in messages {
                self.t.on_message(m.clone(), Instant::now());
            }
            self.sent.append(&mut self.t.outgoing);
            for reply in self.t.replies.drain(..) {
                reply();
            }
            for e in self.t.events.drain(..) {
                if let Event::Message(m) = &e {
                    self.portfolio.apply(m);
                    if let Some(seq) = m["seq"].as_u64() {
                        self.durable.push(seq);
                    }
                }
                self.events.push(e);
            }
        }
        fn subscribes(&self) -> Vec<&Value> {
            self.sent
                .iter()
                .filter(|m| m["type"] == "subscribe")
                .collect()
        }
        fn resets(&self) -> Vec<&ResetInfo> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    Event::Reset(r) => Some(r),
                    _ => None,
                })
                .collect()
        }
        fn positions(&self) -> Vec<u64> {
            self.portfolio.positions.keys().copied().collect()
        }
    }

    #[test]
    fn duplicates_dropped_and_a_resume_ignores_the_automatic_snapshot() {
        let mut h = Harness::new();
        h.recv(&[
            welcome(),
            sub(0),
            full(&[]),
            pos(1, 1),
            pos(2, 2),
            pos(2, 2),
            closed(1, 1),
        ]);
        assert_eq!(h.durable, [1, 2]);
        assert_eq!(
            h.t.stats.duplicates, 2,
            "the second seq 2 and the late seq 1"
        );
        assert_eq!(h.positions(), [1, 2]);
        assert!(
            h.subscribes().is_empty(),
            "the node subscribes the defaults by itself"
        );

        h.t.connection_lost();
        // The node re-subscribes the default channel by itself (snapshot at seq 5)
        // before it reads our request; then a live message; then our resume's answer.
        h.recv(&[welcome()]);
        let resume = h.subscribes()[0].clone();
        let id = resume["id"].clone();
        assert_eq!(
            resume,
            json!({"type":"subscribe","channel":"portfolio:42","id":id,"since":{"epoch":E,"seq":2}})
        );
        h.recv(&[sub(5), full(&[]), pos(6, 6)]);
        assert_eq!(
            h.positions(),
            [1, 2],
            "the automatic snapshot is superseded: ignored"
        );
        let mut reply = sub(6);
        reply["id"] = id;
        reply["recovered"] = json!(true);
        h.recv(&[
            reply,
            closed(2, 3),
            pos(4, 4),
            pos(5, 5),
            pos(6, 6), // the replay
            pos(6, 6), // a copy queued before the resync
            pos(7, 7),
        ]);
        assert_eq!(
            h.durable,
            [1, 2, 3, 4, 5, 6, 7],
            "every durable message once, in order"
        );
        assert_eq!(h.positions(), [1, 4, 5, 6, 7]);
        let resumed: Vec<&Event> = h
            .events
            .iter()
            .filter(|e| matches!(e, Event::Resumed { .. }))
            .collect();
        assert_eq!(
            resumed,
            [&Event::Resumed {
                recovered: vec!["portfolio:42".into()],
                reset: vec![]
            }]
        );
        assert!(h.resets().is_empty());
        assert_eq!(h.t.stats.connections, 2);
    }

    #[test]
    fn a_server_initiated_subscribed_resets_the_channel() {
        let mut h = Harness::new();
        h.recv(&[welcome(), sub(0), full(&[]), pos(1, 1), pos(2, 2)]);
        // E.g. the Redis broker lost the channel's log: it starts every subscriber over.
        let mut resync = sub(40);
        resync["epoch"] = json!("epoch-two");
        h.recv(&[resync, full(&[9]), pos(10, 41)]);
        assert_eq!(
            h.resets(),
            [&ResetInfo {
                channel: "portfolio:42".into(),
                epoch: "epoch-two".into(),
                seq: 40,
                previous: Some(Since {
                    epoch: E.into(),
                    seq: 2
                }),
                cause: SubscribeCause::Server,
            }]
        );
        assert_eq!(h.positions(), [9, 10]);
        assert_eq!(h.durable, [1, 2, 41]);
        assert_eq!(
            h.t.channel("portfolio:42"),
            Some(ChannelInfo {
                name: "portfolio:42".into(),
                durable: true,
                epoch: Some("epoch-two".into()),
                seq: Some(41),
                resyncing: false
            })
        );
    }

    #[test]
    fn a_gap_the_history_no_longer_covers_ends_in_a_reset_and_a_snapshot() {
        let mut h = Harness::new();
        h.recv(&[
            welcome(),
            sub(0),
            full(&[]),
            pos(1, 1),
            pos(2, 2),
            pos(4, 4),
            pos(5, 5),
        ]);
        assert!(h.events.contains(&Event::Gap(GapInfo {
            channel: "portfolio:42".into(),
            expected: 3,
            received: 4
        })));
        let resync = h.subscribes()[0].clone();
        assert_eq!(resync["since"], json!({"epoch":E,"seq":2}));
        assert!(h.t.channel("portfolio:42").unwrap().resyncing);
        assert_eq!(h.durable, [1, 2], "held back until the reply");
        let mut reply = sub(5);
        reply["id"] = resync["id"].clone();
        h.recv(&[reply, full(&[5]), pos(6, 6)]);
        assert_eq!(h.resets().len(), 1);
        assert_eq!(h.resets()[0].cause, SubscribeCause::Gap);
        assert_eq!(h.positions(), [5, 6]);
        assert_eq!(h.durable, [1, 2, 6]);
        assert_eq!(h.t.stats.gaps, 1);
    }

    #[test]
    fn an_unavailable_resume_is_asked_again_from_the_same_position() {
        let mut h = Harness::new();
        h.recv(&[welcome(), sub(0), full(&[]), pos(1, 1)]);
        h.t.connection_lost();
        h.recv(&[welcome()]);
        let first = h.subscribes()[0].clone();
        h.recv(&[json!({"type":"error","id":first["id"],"code":"unavailable","message":"broker unavailable","channel":"portfolio:42"})]);
        assert!(matches!(h.events.last(), Some(Event::Error(e)) if e.code == "unavailable"));
        let at = h.t.next_retry().expect("a retry is scheduled");
        h.t.fire_retries(at);
        h.recv(&[]);
        let retry = h.subscribes()[1].clone();
        assert_eq!(retry["since"], json!({"epoch":E,"seq":1}));
        let mut reply = sub(1);
        reply["id"] = retry["id"].clone();
        reply["recovered"] = json!(true);
        h.recv(&[reply, pos(2, 2)]);
        assert_eq!(h.durable, [1, 2]);
    }

    #[test]
    fn subscribe_errors_reject_and_drop_the_channel() {
        let mut h = Harness::new();
        h.recv(&[welcome(), sub(0), full(&[])]);
        let (tx, mut rx) = oneshot::channel();
        h.t.subscribe("alerts", Some(tx));
        h.recv(&[]);
        let id = h.subscribes()[0]["id"].clone();
        h.recv(&[
            json!({"type":"error","id":id,"code":"forbidden","message":"no","channel":"alerts"}),
        ]);
        let error = rx.try_recv().unwrap().unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.channel.as_deref()),
            ("forbidden", Some("alerts"))
        );
        assert!(h.t.channel("alerts").is_none());
        assert!(
            !h.events.iter().any(|e| matches!(e, Event::Error(_))),
            "answered to the request only"
        );
    }
}
