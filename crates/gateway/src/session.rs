//! One WebSocket connection, from `welcome` to close.
//!
//! A single task per connection does everything: it reads client frames, writes
//! whatever the [`Outbox`] holds (all of it, then one flush), sends the heartbeat
//! and watches for the node draining. While a write is stuck (the client stopped
//! reading), the task still notices the outbox closing or the heartbeat deadline and
//! drops the connection, so a stalled client never holds resources for long and
//! never slows anyone else: publishers only ever touch its outbox. Nor does the task
//! ever wait on the broker: a subscribe that needs Redis is in flight next to the
//! socket ([`Subscriptions`]), so a slow or vanished Redis delays only the replies
//! that need it, never the `welcome`, a `pong` or the heartbeat.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_websockets::{CloseCode, Message};
use tradecast_broker::{CloseReason, Outbox};
use tradecast_protocol::client::{Request, RequestKind, Token};
use tradecast_protocol::{Channel, Principal, server};

use crate::auth::Identity;
use crate::node::{ConnectionGuard, Node};
use crate::rate::TokenBucket;
use crate::subscriptions::{ChannelRequest, Subscriptions};

/// Close codes of the protocol (DESIGN.md, "Close codes").
pub mod close {
    /// Token expired or revoked: do not reconnect with the same token.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Nothing arrived for 3 heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4008;
    /// The outbound queue overflowed: reconnect and resume with `since`.
    pub const SLOW_CONSUMER: u16 = 4009;
    /// Too many inbound frames.
    pub const RATE_LIMITED: u16 = 4029;
}

type Socket = axum_tws::WebSocket;

/// How long a write in progress may still take once the outbox overflowed: a socket
/// that cannot take what was queued by then is stuck (the client stopped reading).
const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(1);

/// How a session ended, for the close frame.
enum End {
    /// Send a close frame with this code and reason, then stop.
    Close(u16, &'static str),
    /// The socket is gone or unusable: just drop it.
    Drop,
}

struct Session {
    node: Arc<Node>,
    principal: Principal,
    /// When the connection's token expires (close 4001); an in-band `auth` moves it.
    expires_at: Instant,
    outbox: Arc<Outbox>,
    subscriptions: Subscriptions,
    inbound: TokenBucket,
}

/// Serve one authenticated connection until it closes.
pub async fn run(node: Arc<Node>, mut socket: Socket, identity: Identity, guard: ConnectionGuard) {
    let Identity {
        principal,
        expires_at,
        ..
    } = identity;
    let outbox = Arc::new(Outbox::new(guard.id(), node.config.outbox));
    let inbound = TokenBucket::new(node.config.max_inbound_rate);
    let mut session = Session {
        subscriptions: Subscriptions::new(node.clone(), outbox.clone()),
        node,
        principal,
        expires_at,
        outbox,
        inbound,
    };
    // Log lines name the connection and the user by number, never a token or a name.
    let conn = guard.id();
    tracing::debug!(
        conn,
        user = principal.id,
        role = principal.role.as_str(),
        "connection opened"
    );
    let end = session.serve(&mut socket).await;
    session.leave_all().await;
    match end {
        End::Close(code, reason) => {
            tracing::debug!(conn, code, reason, "connection closed");
            let code = CloseCode::try_from(code).expect("protocol close codes are valid");
            let bye = async {
                let _ = socket.send(Message::close(Some(code), reason)).await;
                // Read until the peer acknowledges the close (or a short timeout).
                while let Some(Ok(_)) = socket.next().await {}
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
        }
        End::Drop => tracing::debug!(conn, "connection dropped"),
    }
    drop(guard);
}

impl Session {
    async fn serve(&mut self, socket: &mut Socket) -> End {
        let heartbeat = self.node.config.heartbeat;
        let defaults = self.principal.default_channels();
        let names: Vec<String> = defaults.iter().map(Channel::to_string).collect();
        self.outbox.push(server::welcome(
            self.principal.id,
            self.principal.role.as_str(),
            heartbeat.as_millis() as u64,
            &names,
        ));
        // Subscribed in order, without holding up the welcome (see Subscriptions).
        for channel in defaults {
            self.subscriptions
                .request(ChannelRequest::Subscribe {
                    channel,
                    since: None,
                    id: None,
                })
                .await;
        }

        let mut draining = self.node.draining();
        let mut drain_close: Option<Instant> = None;
        let mut last_seen = Instant::now();
        let mut next_ping = Instant::now() + heartbeat;
        let mut batch = Vec::with_capacity(0);
        // One timer per connection for every deadline (heartbeat, token expiry,
        // drain), re-armed only when the earliest deadline changes: registering a
        // timer per loop turn would cost more than the write itself.
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut timer = pin!(sleep_until(next_ping.min(self.expires_at)));
        loop {
            if drain_close.is_none() && self.node.is_draining() {
                let after = self.node.drain_delay();
                self.outbox
                    .push(server::reconnect(after.as_millis() as u64));
                drain_close = Some(Instant::now() + after);
            }
            let next = next_ping
                .min(self.expires_at)
                .min(drain_close.unwrap_or(far));
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            // Write everything queued, in one flush.
            let closed = self.outbox.drain(&mut batch);
            if !batch.is_empty() {
                let give_up = last_seen + heartbeat * 3;
                if let Err(end) = self
                    .write(socket, &mut batch, timer.as_mut(), give_up)
                    .await
                {
                    return end;
                }
                if batch.capacity() > 64 {
                    batch = Vec::new(); // do not keep the largest burst's buffer while idle
                }
                continue;
            }
            if let Some(reason) = closed {
                return match reason {
                    CloseReason::SlowConsumer => {
                        End::Close(close::SLOW_CONSUMER, "slow consumer: resume with since")
                    }
                    CloseReason::Gone => End::Drop,
                };
            }
            tokio::select! {
                _ = self.outbox.ready() => {}
                frame = socket.next() => {
                    last_seen = Instant::now();
                    match frame {
                        Some(Ok(message)) => {
                            if let Err(end) = self.on_frame(message).await {
                                return end;
                            }
                        }
                        Some(Err(error)) => {
                            tracing::debug!(%error, "connection read failed");
                            // A protocol error or an oversized frame: the close frame
                            // (1009, 1002, 1007) is already queued; push it out.
                            let _ = tokio::time::timeout(Duration::from_secs(1), socket.flush()).await;
                            metrics::counter!("tradecast_inbound_errors_total", "code" => "protocol").increment(1);
                            return End::Drop;
                        }
                        None => return End::Drop,
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= self.expires_at {
                        return End::Close(close::TOKEN_EXPIRED, "token expired");
                    }
                    if drain_close.is_some_and(|at| now >= at) {
                        return End::Close(1001, "server draining: reconnect");
                    }
                    if now >= next_ping {
                        if now.duration_since(last_seen) >= heartbeat * 3 {
                            return End::Close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                        }
                        next_ping = now + heartbeat;
                        if socket.send(Message::ping(Bytes::new())).await.is_err() {
                            return End::Drop;
                        }
                    }
                }
                done = self.subscriptions.next_done(), if self.subscriptions.is_busy() => {
                    self.subscriptions.complete(done).await;
                }
                _ = draining.changed(), if drain_close.is_none() => {}
            }
        }
    }

    /// Write `batch` with one flush. Gives up when nothing has been heard from the
    /// client by `give_up`, or when the outbox overflowed (slow consumer) and the
    /// socket still has not taken the batch [`SLOW_CONSUMER_GRACE`] later: then it is
    /// stuck and a close frame could not get through either. A write that finishes
    /// in time is followed by the 4009 close. `timer` is the session's timer,
    /// borrowed so a stuck write needs no timer of its own. (`&mut self`: the
    /// session is `Send` but not `Sync`, because of its subscribe in flight.)
    async fn write(
        &mut self,
        socket: &mut Socket,
        batch: &mut Vec<Bytes>,
        mut timer: Pin<&mut Sleep>,
        mut give_up: Instant,
    ) -> Result<(), End> {
        let bytes: usize = batch.iter().map(Bytes::len).sum();
        let frames = batch.len();
        let write = async {
            for frame in batch.drain(..) {
                socket.feed(Message::text(frame)).await?;
            }
            socket.flush().await
        };
        let mut write = pin!(write);
        let mut overflowed = false;
        loop {
            tokio::select! {
                result = &mut write => {
                    return match result {
                        Ok(()) => {
                            self.node.counters.bytes_out.increment(bytes as u64);
                            self.node.counters.frames_out.increment(frames as u64);
                            Ok(())
                        }
                        Err(_) => Err(End::Drop),
                    };
                }
                _ = self.outbox.ready(), if !overflowed => {
                    if self.outbox.closed() == Some(CloseReason::SlowConsumer) {
                        overflowed = true;
                        give_up = give_up.min(Instant::now() + SLOW_CONSUMER_GRACE);
                        timer.as_mut().reset(give_up);
                    }
                }
                _ = timer.as_mut() => {
                    if Instant::now() >= give_up {
                        return Err(End::Drop);
                    }
                    // Another deadline is due; it is handled once the write is done.
                    timer.as_mut().reset(give_up);
                }
            }
        }
    }

    async fn on_frame(&mut self, message: Message) -> Result<(), End> {
        if message.is_ping() || message.is_pong() || message.is_close() {
            return Ok(()); // answered by the WebSocket layer; counts as life
        }
        if !self.inbound.take() {
            metrics::counter!("tradecast_inbound_errors_total", "code" => "rate_limited")
                .increment(1);
            return Err(End::Close(close::RATE_LIMITED, "rate limited"));
        }
        let Some(text) = message.as_text() else {
            return self.reply_error(
                None,
                "binary_frame",
                "binary frames are not accepted: send JSON text",
                None,
            );
        };
        let request = match Request::parse(text) {
            Ok(request) => request,
            Err((id, error)) => {
                return self.reply_error(id.as_ref(), error.code(), &error.to_string(), None);
            }
        };
        let id = request.id.as_ref();
        match request.kind {
            RequestKind::Ping => {
                self.outbox.push(server::pong(id));
                Ok(())
            }
            RequestKind::Subscribe { channel, since } => {
                let parsed = match channel.parse::<Channel>() {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        return self.reply_error(
                            id,
                            "invalid_channel",
                            &e.to_string(),
                            Some(&channel),
                        );
                    }
                };
                if !self.principal.may_read(&parsed) {
                    metrics::counter!("tradecast_forbidden_subscriptions_total").increment(1);
                    return self.reply_error(
                        id,
                        "forbidden",
                        "you may not read this channel",
                        Some(&channel),
                    );
                }
                self.subscriptions
                    .request(ChannelRequest::Subscribe {
                        channel: parsed,
                        since,
                        id: id.cloned(),
                    })
                    .await;
                Ok(())
            }
            RequestKind::Unsubscribe { channel } => {
                let Ok(parsed) = channel.parse::<Channel>() else {
                    // An unparsable name is never held.
                    return self.reply_error(
                        id,
                        "not_subscribed",
                        "this connection is not subscribed to the channel",
                        Some(&channel),
                    );
                };
                self.subscriptions
                    .request(ChannelRequest::Unsubscribe {
                        channel: parsed,
                        id: id.cloned(),
                    })
                    .await;
                Ok(())
            }
            RequestKind::Auth { token } => self.refresh(&token, id),
        }
    }

    /// In-band token refresh: a valid token of the same user replaces the
    /// connection's expiry; anything else is refused and the old expiry stands.
    fn refresh(&mut self, token: &Token, id: Option<&serde_json::Value>) -> Result<(), End> {
        let identity = match self.node.auth.verify(&token.0) {
            Ok(identity) if identity.expires_at > Instant::now() => identity,
            Ok(_) => return self.reply_error(id, "invalid_token", "token expired", None),
            Err(error) => {
                return self.reply_error(id, "invalid_token", &error.to_string(), None);
            }
        };
        if identity.principal != self.principal {
            return self.reply_error(
                id,
                "forbidden",
                "the token is for another user or role",
                None,
            );
        }
        self.expires_at = identity.expires_at;
        tracing::debug!(
            conn = self.outbox.id(),
            exp = identity.exp,
            "token refreshed in-band"
        );
        self.outbox.push(server::authenticated(id, identity.exp));
        Ok(())
    }

    fn reply_error(
        &self,
        id: Option<&serde_json::Value>,
        code: &'static str,
        message: &str,
        channel: Option<&str>,
    ) -> Result<(), End> {
        reply_error(&self.outbox, id, code, message, channel);
        Ok(())
    }

    async fn leave_all(&mut self) {
        self.outbox.close(CloseReason::Gone);
        self.subscriptions.leave_all().await;
    }
}

/// Queue an `error` reply (counted by code); the connection stays open.
pub(crate) fn reply_error(
    outbox: &Outbox,
    id: Option<&serde_json::Value>,
    code: &'static str,
    message: &str,
    channel: Option<&str>,
) {
    metrics::counter!("tradecast_inbound_errors_total", "code" => code).increment(1);
    outbox.push(server::error(id, code, message, channel));
}
