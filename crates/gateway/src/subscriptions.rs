//! A connection's channels, and its channel requests waiting for the broker.
//!
//! Subscribing may wait on Redis (a round trip, or seconds when Redis is slow or
//! gone), and the connection's task must never wait with it: it still has to write
//! the outbox, read frames, answer pings and run the heartbeat. So a subscribe runs
//! as an owned future that the session polls next to its socket
//! ([`Subscriptions::next_done`]), and the bookkeeping that follows it (the channel
//! is now held, or the client gets `unavailable`) happens when it completes
//! ([`Subscriptions::complete`]).
//!
//! Channel requests (`subscribe`, `unsubscribe`, the default channels) are handled
//! one at a time, in the order they came: at most one subscribe is in flight, the
//! others wait in a queue. This keeps what the protocol promises about order: the
//! default channels' `subscribed` replies and snapshots come in the listed order,
//! each snapshot right after its `subscribed` (the broker queues both into the
//! outbox itself, so two subscribes in flight at once could interleave), and the
//! replies to one connection's channel requests come in request order, so an
//! `unsubscribe` sent behind a `subscribe` of the same channel really ends it.
//! The limits (`too_many_subscriptions`, `not_subscribed`) are checked when a
//! request's turn comes, against the channels held then. On the embedded broker a
//! subscribe completes when first polled, so nothing ever waits there.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::Value;
use tradecast_broker::{BrokerError, Outbox, Position};
use tradecast_protocol::client::Since;
use tradecast_protocol::{Channel, server};

use crate::node::Node;
use crate::session::reply_error;

/// A `subscribe` or `unsubscribe` whose channel parsed and may be read.
pub enum ChannelRequest {
    Subscribe {
        channel: Channel,
        since: Option<Since>,
        id: Option<Value>,
    },
    Unsubscribe {
        channel: Channel,
        id: Option<Value>,
    },
}

impl ChannelRequest {
    fn id(&self) -> Option<&Value> {
        match self {
            ChannelRequest::Subscribe { id, .. } | ChannelRequest::Unsubscribe { id, .. } => {
                id.as_ref()
            }
        }
    }

    fn channel(&self) -> &Channel {
        match self {
            ChannelRequest::Subscribe { channel, .. }
            | ChannelRequest::Unsubscribe { channel, .. } => channel,
        }
    }
}

/// A finished subscribe: what the bookkeeping after it needs.
pub struct Subscribed {
    channel: Channel,
    id: Option<Value>,
    /// It was a resume (`since` given), counted by outcome.
    resume: bool,
    result: Result<Position, BrokerError>,
}

/// The subscribe in flight: it owns everything it uses, so it can outlive the
/// session (see [`Subscriptions::leave_all`]).
type Inflight = Pin<Box<dyn Future<Output = Subscribed> + Send>>;

pub struct Subscriptions {
    node: Arc<Node>,
    outbox: Arc<Outbox>,
    /// The channels this connection holds.
    held: Vec<Channel>,
    /// Requests waiting for the subscribe in flight, oldest first.
    waiting: VecDeque<ChannelRequest>,
    inflight: Option<Inflight>,
}

impl Subscriptions {
    pub fn new(node: Arc<Node>, outbox: Arc<Outbox>) -> Subscriptions {
        Subscriptions {
            node,
            outbox,
            held: Vec::new(),
            waiting: VecDeque::new(),
            inflight: None,
        }
    }

    /// Handle `request` now, or queue it behind the subscribe in flight.
    ///
    /// At most twice the subscription limit may wait (enough to resume every
    /// channel after a reconnect while the default channels are still being
    /// subscribed); a request beyond that is answered `unavailable` at once.
    pub async fn request(&mut self, request: ChannelRequest) {
        if self.waiting.len() >= self.node.config.max_subscriptions.saturating_mul(2) {
            reply_error(
                &self.outbox,
                request.id(),
                "unavailable",
                "too many subscribe and unsubscribe requests are waiting for the broker: retry later",
                Some(&request.channel().to_string()),
            );
            return;
        }
        self.waiting.push_back(request);
        self.advance().await;
    }

    /// Is a subscribe in flight?
    pub fn is_busy(&self) -> bool {
        self.inflight.is_some()
    }

    /// Wait for the subscribe in flight to finish (forever when there is none);
    /// hand the result to [`complete`](Self::complete). Cancel-safe: dropping
    /// this future leaves the subscribe in flight.
    pub async fn next_done(&mut self) -> Subscribed {
        let Some(inflight) = self.inflight.as_mut() else {
            return std::future::pending().await;
        };
        let done = inflight.await;
        self.inflight = None;
        done
    }

    /// The bookkeeping after a subscribe, then the next waiting requests.
    pub async fn complete(&mut self, done: Subscribed) {
        self.record(done).await;
        self.advance().await;
    }

    /// Handle waiting requests in order until one has to wait for the broker.
    async fn advance(&mut self) {
        while self.inflight.is_none() {
            let Some(request) = self.waiting.pop_front() else {
                return;
            };
            match request {
                ChannelRequest::Subscribe { channel, since, id } => {
                    let known = self.held.contains(&channel);
                    if !known && self.held.len() >= self.node.config.max_subscriptions {
                        reply_error(
                            &self.outbox,
                            id.as_ref(),
                            "too_many_subscriptions",
                            "unsubscribe from a channel first",
                            Some(&channel.to_string()),
                        );
                        continue;
                    }
                    let mut subscribe = self.start(channel, since, id);
                    // The embedded broker is done at the first poll: then the reply
                    // is queued before the next frame is even read.
                    match subscribe.as_mut().now_or_never() {
                        Some(done) => self.record(done).await,
                        None => self.inflight = Some(subscribe),
                    }
                }
                ChannelRequest::Unsubscribe { channel, id } => {
                    let name = channel.to_string();
                    let Some(index) = self.held.iter().position(|c| *c == channel) else {
                        reply_error(
                            &self.outbox,
                            id.as_ref(),
                            "not_subscribed",
                            "this connection is not subscribed to the channel",
                            Some(&name),
                        );
                        continue;
                    };
                    self.held.swap_remove(index);
                    // Only hands the leave to the broker: never waits on Redis.
                    self.node.broker.unsubscribe(&channel, &self.outbox).await;
                    metrics::gauge!("tradecast_subscriptions").decrement(1.0);
                    self.outbox.push(server::unsubscribed(id.as_ref(), &name));
                }
            }
        }
    }

    /// The subscribe (or resync) of `channel`, as an owned future; the broker
    /// queues the reply and the data into the outbox itself.
    fn start(&self, channel: Channel, since: Option<Since>, id: Option<Value>) -> Inflight {
        let node = self.node.clone();
        let outbox = self.outbox.clone();
        Box::pin(async move {
            let result = node
                .broker
                .subscribe(&channel, since.as_ref(), &outbox, id.as_ref())
                .await;
            Subscribed {
                channel,
                id,
                resume: since.is_some(),
                result,
            }
        })
    }

    /// The channel is held now, or the client learns it is not.
    async fn record(&mut self, done: Subscribed) {
        let Subscribed {
            channel,
            id,
            resume,
            result,
        } = done;
        match result {
            Ok(position) => {
                if resume {
                    let outcome = if position.recovered {
                        "recovered"
                    } else {
                        "snapshot"
                    };
                    metrics::counter!("tradecast_resumes_total", "outcome" => outcome).increment(1);
                }
                if !self.held.contains(&channel) {
                    self.held.push(channel);
                    metrics::gauge!("tradecast_subscriptions").increment(1.0);
                }
            }
            Err(error) => {
                if !self.held.contains(&channel) {
                    // A subscribe that gave up waiting may have been registered by
                    // the broker just then: the client is told it does not hold
                    // the channel, so make sure the broker agrees.
                    self.node.broker.unsubscribe(&channel, &self.outbox).await;
                }
                reply_error(
                    &self.outbox,
                    id.as_ref(),
                    "unavailable",
                    &error.to_string(),
                    Some(&channel.to_string()),
                );
            }
        }
    }

    /// Leave every channel (the session ended; its outbox is closed). Waiting
    /// requests are dropped. A subscribe still in flight may yet register the
    /// outbox with the broker, so it is left to finish in a task of its own (the
    /// broker bounds how long a subscribe takes) and its channel is left after it,
    /// whatever it returned: no subscriber outlives the session in the broker.
    pub async fn leave_all(&mut self) {
        self.waiting.clear();
        if let Some(subscribe) = self.inflight.take() {
            let node = self.node.clone();
            let outbox = self.outbox.clone();
            tokio::spawn(async move {
                let done = subscribe.await;
                node.broker.unsubscribe(&done.channel, &outbox).await;
            });
        }
        for channel in self.held.drain(..) {
            self.node.broker.unsubscribe(&channel, &self.outbox).await;
            metrics::gauge!("tradecast_subscriptions").decrement(1.0);
        }
    }
}
