//! A resilient tradecast session: one logical session over successive connections,
//! with the semantics of the TypeScript SDK (`clients/js`) and docs/protocol.md.
//!
//! - connects with a token, or a [`Token::provider`] asked again when the token expires
//!   (close `4001`, or its `exp` passed) or is refused; never reconnects with a token
//!   the node turned down;
//! - reconnects with exponential backoff and full jitter ([`Backoff`], capped at 30 s,
//!   reset after a connection that stayed up 10 s); follows the node's `reconnect`
//!   advice (drain, `1001`) at once; backs off harder after `4029`;
//! - sends `ping` every heartbeat (30 s, or the node's `heartbeat_ms` if smaller) and
//!   treats the link as dead when nothing at all arrives for 2 intervals after a ping;
//! - resumes every channel after a reconnect with `since` (holding back the node's
//!   automatic snapshot of the default channels meanwhile); drops duplicates
//!   (`seq <= last`); detects a `seq` gap and resubscribes with `since`; when
//!   continuity is lost (`recovered: false`, also a `subscribed` the node sends by
//!   itself) it emits [`Event::Reset`], and the snapshot that follows replaces the state.
//!
//! What [`Event::Message`] delivers is, per channel, a snapshot followed by durable
//! messages with contiguous `seq` (plus ephemeral figures): no duplicate, no hole.
//!
//! ```no_run
//! use tradecast_client::models::{Model, Portfolio};
//! use tradecast_client::{Event, Session, SessionOptions, Token};
//! # async fn example() -> Result<(), tradecast_client::SessionError> {
//! let options = SessionOptions::new(
//!     "ws://127.0.0.1:8080/ws",
//!     Token::provider(|_reason| async { Ok(String::from("a fresh JWT")) }),
//! );
//! let mut session = Session::connect(options).await?; // after the first `welcome`
//! session.subscribe("prices:metals").await?;          // kept across reconnects
//! let mut portfolio = Portfolio::new();
//! while let Some(event) = session.next_event().await {
//!     match &event {
//!         Event::Message(m) => {
//!             portfolio.apply(m);
//!         }
//!         Event::Reconnecting(r) => eprintln!("reconnecting in {:?}: {}", r.delay, r.reason),
//!         Event::Reset(r) => eprintln!("{}: fresh snapshot", r.channel),
//!         Event::Closed { reason, .. } => eprintln!("closed: {reason}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The session runs in a task of its own (spawned on the current tokio runtime); its
//! events queue up until the application reads them with [`Session::next_event`]. It
//! ends when the [`Session`] and every [`SessionHandle`] are dropped.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::backoff::{Backoff, Random};
use crate::tracker::{Signal, Tracker};
use crate::{Client, Closed, Connect, jwt};

// ------------------------------------------------------------------------ public types

/// The first message of every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub user: u64,
    /// `client`, `ib` or `admin`.
    pub role: String,
    #[serde(default)]
    pub heartbeat_ms: u64,
    /// The role's default channels, subscribed by the node by itself.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// A `subscribed` message: the reply to a subscribe, or sent by the node by itself
/// (`id` absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    pub channel: String,
    pub epoch: String,
    /// The channel's position: the snapshot that follows describes it (`recovered:
    /// false`), or the replay that follows ends with it (`recovered: true`).
    pub seq: u64,
    pub recovered: bool,
}

/// A resume position: the last durable message applied on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    pub epoch: String,
    pub seq: u64,
}

/// Why a channel was (re)subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeCause {
    /// The app (or the session's options) asked for it.
    Initial,
    /// Resumed after a reconnect.
    Reconnect,
    /// A missing durable message.
    Gap,
    /// The node sent `subscribed` by itself.
    Server,
    /// Asked again after an `unavailable` answer.
    Retry,
}

/// A channel that held state starts over from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetInfo {
    pub channel: String,
    pub epoch: String,
    /// The position the snapshot that follows describes.
    pub seq: u64,
    /// The position the session held before.
    pub previous: Option<Since>,
    pub cause: SubscribeCause,
}

/// A missing durable message was detected; a resubscribe with `since` is under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapInfo {
    pub channel: String,
    pub expected: u64,
    pub received: u64,
}

/// The connection ended; the next attempt starts after `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectingInfo {
    pub delay: Duration,
    /// Failed attempts counted by the backoff so far.
    pub attempt: u32,
    /// Close code of the connection that ended (1006: no close frame, refused, failed).
    pub code: u16,
    pub reason: String,
}

/// What the session tells the application, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A connection attempt starts.
    Connecting { attempt: u32 },
    /// A connection is up (`welcome` received).
    Open(Welcome),
    /// The connection ended; the session reconnects after the delay.
    Reconnecting(ReconnectingInfo),
    /// After a reconnect, every channel's resume request has its answer.
    Resumed {
        /// Channels replayed without loss (`recovered: true`).
        recovered: Vec<String>,
        /// Channels that started over from a snapshot (an [`Event::Reset`] came for each).
        reset: Vec<String>,
    },
    /// A channel lost continuity: a snapshot follows, reset what you derived from it.
    Reset(ResetInfo),
    /// Final: no more reconnects (`close()`, or a token that cannot be renewed).
    Closed { code: u16, reason: String },
    /// A missing durable message; a resubscribe with `since` follows.
    Gap(GapInfo),
    /// A `subscribed` the session accepted (the snapshot or replay follows).
    Subscribed(Subscribed),
    /// A channel message (snapshot, durable or ephemeral), after dedupe and gap handling.
    Message(Value),
    /// A server `error` that answers none of the app's requests, or a session failure.
    Error(SessionError),
}

impl Event {
    /// The channel message, for [`Event::Message`].
    pub fn message(&self) -> Option<&Value> {
        match self {
            Event::Message(m) => Some(m),
            _ => None,
        }
    }

    /// The message's `type` (`position_closed`, `commission`, …), for [`Event::Message`].
    pub fn message_type(&self) -> Option<&str> {
        self.message()?.get("type")?.as_str()
    }
}

/// An `error` from the node (its `code`: `forbidden`, `invalid_channel`,
/// `too_many_subscriptions`, `unavailable`, …) or a failure of the session (`closed`,
/// `not_connected`, `connection_lost`, `unsubscribed`, `token`, `bad_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionError {
    pub code: String,
    pub message: String,
    pub channel: Option<String>,
}

impl SessionError {
    pub(crate) fn new(code: &str, message: &str, channel: Option<&str>) -> SessionError {
        SessionError {
            code: code.to_owned(),
            message: message.to_owned(),
            channel: channel.map(str::to_owned),
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(channel) = &self.channel {
            write!(f, " ({channel})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SessionError {}

/// Counters of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections that reached `welcome`.
    pub connections: u64,
    /// Channel messages delivered to the app.
    pub messages: u64,
    /// Durable messages dropped because their seq was already applied.
    pub duplicates: u64,
    /// Gaps detected (each healed by a resubscribe with `since`).
    pub gaps: u64,
    /// Channels that started over from a snapshot after holding state.
    pub resets: u64,
}

/// A channel of the session and its resume position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: String,
    /// Durable channels carry `seq` and can be resumed.
    pub durable: bool,
    pub epoch: Option<String>,
    /// The last durable `seq` applied.
    pub seq: Option<u64>,
    /// A (re)subscribe of the session is waiting for its `subscribed` reply.
    pub resyncing: bool,
}

/// `Idle` (not started), `Connecting` (an attempt is in flight), `Open` (`welcome`
/// received), `Reconnecting` (waiting before the next attempt), `Closed` (final:
/// `close()`, or the token was rejected and cannot be renewed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Idle,
    Connecting,
    Open,
    Reconnecting,
    Closed,
}

/// Why the session asks for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenReason {
    Initial,
    /// The token expired (close 4001, or its `exp` passed).
    Expired,
    /// The node refused it at the upgrade (401).
    Rejected,
}

/// A token provider's future.
pub type TokenFuture = Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send>>;

/// Where the session gets its token (a JWT).
#[derive(Clone)]
pub enum Token {
    Fixed(String),
    /// Called before the first connection, and again when the current token expired
    /// or was refused.
    Provider(Arc<dyn Fn(TokenReason) -> TokenFuture + Send + Sync>),
}

impl Token {
    /// A token-fetching function.
    pub fn provider<F, Fut>(f: F) -> Token
    where
        F: Fn(TokenReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<String>> + Send + 'static,
    {
        Token::Provider(Arc::new(move |reason| Box::pin(f(reason))))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Fixed(_) => f.write_str("Token::Fixed(..)"),
            Token::Provider(_) => f.write_str("Token::Provider(..)"),
        }
    }
}

impl From<String> for Token {
    fn from(token: String) -> Token {
        Token::Fixed(token)
    }
}

impl From<&str> for Token {
    fn from(token: &str) -> Token {
        Token::Fixed(token.to_owned())
    }
}

/// Where to connect: `ws://host:port/path` URLs (the token goes in `?token=`).
#[derive(Clone)]
pub enum Target {
    /// One node (or a load balancer), or several: the session stays on one while it
    /// works and moves to the next in the list after a connection ends or an attempt
    /// fails.
    Urls(Vec<String>),
    /// Called before each attempt (e.g. to pick another node without a load balancer).
    Pick(Arc<dyn Fn() -> String + Send + Sync>),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Urls(urls) => f.debug_tuple("Urls").field(urls).finish(),
            Target::Pick(_) => f.write_str("Pick(..)"),
        }
    }
}

impl From<&str> for Target {
    fn from(url: &str) -> Target {
        Target::Urls(vec![url.to_owned()])
    }
}

impl From<String> for Target {
    fn from(url: String) -> Target {
        Target::Urls(vec![url])
    }
}

impl From<Vec<String>> for Target {
    fn from(urls: Vec<String>) -> Target {
        Target::Urls(urls)
    }
}

/// `ws://{addr}/ws`.
impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target::Urls(vec![format!("ws://{addr}/ws")])
    }
}

/// `ws://{addr}/ws` for each.
impl From<Vec<SocketAddr>> for Target {
    fn from(addrs: Vec<SocketAddr>) -> Target {
        Target::Urls(addrs.iter().map(|a| format!("ws://{a}/ws")).collect())
    }
}

/// How a session connects and behaves. [`SessionOptions::new`] gives the defaults.
#[derive(Clone)]
pub struct SessionOptions {
    pub target: Target,
    pub token: Token,
    /// Send a `ping` this often (capped by the node's `heartbeat_ms`); when nothing at
    /// all arrives for 2 intervals after a ping, the link is declared dead, dropped and
    /// reconnected. Default 30 s; zero turns pings and dead-link detection off.
    pub heartbeat: Duration,
    /// First retry within `[0, backoff_initial)`. Default 500 ms.
    pub backoff_initial: Duration,
    /// Cap of the backoff ceiling. Default 30 s.
    pub backoff_max: Duration,
    /// A connection up this long resets the backoff. Default 10 s.
    pub stable_after: Duration,
    /// An attempt without `welcome` by then is dropped and retried. Default 10 s.
    pub connect_timeout: Duration,
    /// Channels to subscribe on top of the role's defaults.
    pub channels: Vec<String>,
    /// Local address to connect from (a load generator spreading over 127.0.0.x).
    pub local_ip: Option<IpAddr>,
    /// Random source in `[0, 1)` for the backoff jitter (tests). Default: fastrand.
    pub random: Option<Random>,
    #[doc(hidden)]
    pub hooks: TestHooks,
}

/// A hook that sees JSON messages (tests).
#[doc(hidden)]
pub type Tap = Arc<dyn Fn(&Value) + Send + Sync>;

/// Test instrumentation (not part of the API).
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct TestHooks {
    /// Drop the durable message `(channel, seq)` on arrival, once each: a lost message.
    pub drop_durable: Vec<(String, u64)>,
    /// Sees every request the session sends.
    pub on_sent: Option<Tap>,
    /// Sees every message that arrives (before dedupe; dropped ones too).
    pub on_received: Option<Tap>,
}

impl SessionOptions {
    pub fn new(target: impl Into<Target>, token: impl Into<Token>) -> SessionOptions {
        SessionOptions {
            target: target.into(),
            token: token.into(),
            heartbeat: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            channels: Vec::new(),
            local_ip: None,
            random: None,
            hooks: TestHooks::default(),
        }
    }
}

impl fmt::Debug for SessionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionOptions")
            .field("target", &self.target)
            .field("heartbeat", &self.heartbeat)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("stable_after", &self.stable_after)
            .field("connect_timeout", &self.connect_timeout)
            .field("channels", &self.channels)
            .field("local_ip", &self.local_ip)
            .finish_non_exhaustive()
    }
}

/// A snapshot of the session's state.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: ConnectionState,
    /// The last `welcome`.
    pub welcome: Option<Welcome>,
    pub stats: Stats,
    /// The session's channels (what it resubscribes after a reconnect).
    pub channels: Vec<ChannelInfo>,
}

// ------------------------------------------------------------------------ the session

/// A resilient session (see the module documentation). Dereferences to its
/// [`SessionHandle`] for requests.
pub struct Session {
    handle: SessionHandle,
    events: mpsc::UnboundedReceiver<Event>,
}

/// Requests to a session; cheap to clone (e.g. to subscribe from another task while
/// one task reads the events).
#[derive(Clone)]
pub struct SessionHandle {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnectionState>,
}

type Reply<T> = oneshot::Sender<Result<T, SessionError>>;

enum Command {
    Open(Reply<Welcome>),
    Close(oneshot::Sender<()>),
    Subscribe(String, Reply<Subscribed>),
    Unsubscribe(String, Reply<()>),
    Ping(Reply<Duration>),
    RetryNow,
    SetToken(Token),
    Status(oneshot::Sender<Status>),
}

impl Session {
    /// A session that has not connected yet ([`SessionHandle::open`] starts it). Its
    /// task is spawned on the current tokio runtime.
    pub fn new(options: SessionOptions) -> Session {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ConnectionState::Idle);
        let driver = Driver::new(options, commands_rx, events_tx, state_tx);
        tokio::spawn(driver.run());
        Session {
            handle: SessionHandle { commands, state },
            events,
        }
    }

    /// Start a session; returns once the first `welcome` arrived, or fails when the
    /// session closes before (e.g. the token is refused). Reconnects happen by
    /// themselves afterwards.
    pub async fn connect(options: SessionOptions) -> Result<Session, SessionError> {
        let session = Session::new(options);
        session.open().await?;
        Ok(session)
    }

    /// The next event; `None` once the session's task has ended.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event if one is queued.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// A handle for requests from elsewhere.
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }
}

impl Deref for Session {
    type Target = SessionHandle;
    fn deref(&self) -> &SessionHandle {
        &self.handle
    }
}

fn gone() -> SessionError {
    SessionError::new("closed", "the session has ended", None)
}

impl SessionHandle {
    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SessionError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Start (or restart after a close) the session; resolves with the first
    /// `welcome` (at once when open).
    pub async fn open(&self) -> Result<Welcome, SessionError> {
        self.request(Command::Open).await
    }

    /// Close for good (no reconnect); subscriptions and resume positions are forgotten.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Subscribe to a channel (kept across reconnects). Resolves with the `subscribed`
    /// reply; fails with the node's error (`forbidden`, `invalid_channel`, …), in which
    /// case the channel is not kept. A channel already held is resynced (a snapshot).
    pub async fn subscribe(&self, channel: &str) -> Result<Subscribed, SessionError> {
        self.request(|tx| Command::Subscribe(channel.to_owned(), tx))
            .await
    }

    /// Stop receiving a channel (default channels too).
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), SessionError> {
        self.request(|tx| Command::Unsubscribe(channel.to_owned(), tx))
            .await
    }

    /// Round trip to the node.
    pub async fn ping(&self) -> Result<Duration, SessionError> {
        self.request(Command::Ping).await
    }

    /// Skip the backoff wait and reconnect now.
    pub fn retry_now(&self) {
        let _ = self.commands.send(Command::RetryNow);
    }

    /// Replace the token (or provider), e.g. after the session closed because its
    /// token expired: call [`open`](Self::open) next and it resumes where it stopped.
    pub fn set_token(&self, token: impl Into<Token>) {
        let _ = self.commands.send(Command::SetToken(token.into()));
    }

    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    /// Wait until the connection state satisfies `predicate`.
    pub async fn wait_state(&self, predicate: impl Fn(ConnectionState) -> bool) -> ConnectionState {
        let mut rx = self.state.clone();
        match rx.wait_for(|s| predicate(*s)).await {
            Ok(state) => *state,
            Err(_) => *self.state.borrow(),
        }
    }

    /// State, last welcome, counters and channels.
    pub async fn status(&self) -> Status {
        let (tx, rx) = oneshot::channel();
        let closed = || Status {
            state: ConnectionState::Closed,
            welcome: None,
            stats: Stats::default(),
            channels: Vec::new(),
        };
        if self.commands.send(Command::Status(tx)).is_err() {
            return closed();
        }
        rx.await.unwrap_or_else(|_| closed())
    }

    /// The session's channels and their resume positions.
    pub async fn channels(&self) -> Vec<ChannelInfo> {
        self.status().await.channels
    }

    /// One channel of the session.
    pub async fn channel(&self, name: &str) -> Option<ChannelInfo> {
        self.channels().await.into_iter().find(|c| c.name == name)
    }

    pub async fn stats(&self) -> Stats {
        self.status().await.stats
    }

    /// The last `welcome`.
    pub async fn welcome(&self) -> Option<Welcome> {
        self.status().await.welcome
    }
}

// ------------------------------------------------------------------------ the driver

/// What the driver does next.
enum Next {
    Connect,
    Wait(Duration),
    /// Not connected and not trying (idle or closed): wait for commands.
    Idle,
    /// Every handle is gone.
    Exit,
}

struct Driver {
    target: Target,
    token_source: Token,
    heartbeat: Duration,
    stable_after: Duration,
    connect_timeout: Duration,
    local_ip: Option<IpAddr>,
    hooks: TestHooks,
    tracker: Tracker,
    backoff: Backoff,
    state: ConnectionState,
    state_tx: watch::Sender<ConnectionState>,
    events: mpsc::UnboundedSender<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    token: Option<String>,
    token_reason: TokenReason,
    rejected_token: Option<String>,
    draining: bool,
    open_waiters: Vec<Reply<Welcome>>,
    url_index: usize,
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Close a connection politely without waiting for it (a dead peer never answers).
fn drop_client(client: Client) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
    });
}

/// `ws://host[:port][/path]` → (host:port, path).
fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = if let Some(rest) = url.strip_prefix("ws://") {
        rest
    } else if url.starts_with("wss://") {
        return Err(format!(
            "{url}: wss:// is not supported by this client (connect to the node's plain port)"
        ));
    } else {
        return Err(format!("{url}: not a ws:// URL"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority.ends_with(']') && authority[i + 1..].parse::<u16>().is_ok(),
        None => false,
    };
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path))
}

/// The HTTP status of a refused upgrade, if that is what `error` is.
fn refused_status(error: &anyhow::Error) -> Option<u16> {
    error.chain().find_map(
        |cause| match cause.downcast_ref::<tokio_websockets::Error>()? {
            tokio_websockets::Error::Upgrade(
                tokio_websockets::upgrade::Error::DidNotSwitchProtocols(status),
            ) => Some(*status),
            _ => None,
        },
    )
}

impl Driver {
    fn new(
        options: SessionOptions,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        state_tx: watch::Sender<ConnectionState>,
    ) -> Driver {
        let mut backoff = Backoff::new(options.backoff_initial, options.backoff_max);
        if let Some(random) = options.random.clone() {
            backoff = backoff.with_random(random);
        }
        Driver {
            tracker: Tracker::new(&options.channels, options.backoff_max),
            target: options.target,
            token_source: options.token,
            heartbeat: options.heartbeat,
            stable_after: options.stable_after,
            connect_timeout: options.connect_timeout,
            local_ip: options.local_ip,
            hooks: options.hooks,
            backoff,
            state: ConnectionState::Idle,
            state_tx,
            events,
            commands,
            token: None,
            token_reason: TokenReason::Initial,
            rejected_token: None,
            draining: false,
            open_waiters: Vec::new(),
            url_index: 0,
        }
    }

    async fn run(mut self) {
        let mut next = Next::Idle;
        loop {
            next = match next {
                Next::Connect => self.attempt().await,
                Next::Wait(delay) => self.wait(delay).await,
                Next::Idle => self.idle().await,
                Next::Exit => return,
            };
        }
    }

    // ---------------------------------------------------------------- commands

    /// Handle a command; `Some` when it changes what the driver does next.
    fn command(&mut self, command: Command) -> Option<Next> {
        match command {
            Command::Open(reply) => {
                if self.state == ConnectionState::Open
                    && let Some(welcome) = &self.tracker.welcome
                {
                    let _ = reply.send(Ok(welcome.clone()));
                    return None;
                }
                self.open_waiters.push(reply);
                if matches!(self.state, ConnectionState::Idle | ConnectionState::Closed) {
                    self.rejected_token = None;
                    self.backoff.reset();
                    return Some(Next::Connect);
                }
                None
            }
            Command::Close(ack) => {
                let next = self.finish(1000, "closed by the client");
                self.tracker.forget();
                let _ = ack.send(());
                Some(next)
            }
            Command::Subscribe(channel, reply) => {
                self.tracker.subscribe(&channel, Some(reply));
                None
            }
            Command::Unsubscribe(channel, reply) => {
                self.tracker.unsubscribe(&channel, reply);
                None
            }
            Command::Ping(reply) => {
                self.tracker.ping(reply, Instant::now().into_std());
                None
            }
            Command::RetryNow => {
                (self.state == ConnectionState::Reconnecting).then_some(Next::Connect)
            }
            Command::SetToken(token) => {
                self.token_source = token;
                self.token = None;
                self.token_reason = TokenReason::Initial;
                None
            }
            Command::Status(reply) => {
                let _ = reply.send(Status {
                    state: self.state,
                    welcome: self.tracker.welcome.clone(),
                    stats: self.tracker.stats,
                    channels: self.tracker.channels(),
                });
                None
            }
        }
    }

    fn emit(&mut self, event: Event) {
        self.tracker.events.push(event);
        self.flush_events();
    }

    /// Hand the events over, then the answers to requests (so whoever gets an
    /// answer finds the events that came before it already queued).
    fn flush_events(&mut self) {
        for event in self.tracker.events.drain(..) {
            let _ = self.events.send(event);
        }
        for reply in self.tracker.replies.drain(..) {
            reply();
        }
    }

    fn settle_open(&mut self, result: Result<Welcome, SessionError>) {
        self.flush_events();
        for waiter in self.open_waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }

    fn set_state(&mut self, state: ConnectionState) {
        if self.state != state {
            self.state = state;
            let _ = self.state_tx.send(state);
        }
    }

    // ---------------------------------------------------------------- phases

    async fn idle(&mut self) -> Next {
        loop {
            let Some(command) = self.commands.recv().await else {
                return Next::Exit;
            };
            let next = self.command(command);
            self.tracker.outgoing.clear(); // nothing to send on
            self.flush_events();
            match next {
                Some(Next::Idle) | None => {}
                Some(next) => return next,
            }
        }
    }

    async fn wait(&mut self, delay: Duration) -> Next {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return Next::Connect,
                command = self.commands.recv() => {
                    let Some(command) = command else { return Next::Exit };
                    let next = self.command(command);
                    self.flush_events();
                    if let Some(next) = next {
                        return next;
                    }
                }
            }
        }
    }

    /// The token to connect with; asks the provider when there is none or it expired.
    async fn current_token(&mut self) -> anyhow::Result<String> {
        let provider = match &self.token_source {
            Token::Fixed(token) => return Ok(token.clone()),
            Token::Provider(provider) => provider.clone(),
        };
        match &self.token {
            None => self.token = Some(provider(self.token_reason).await?),
            Some(token) if jwt::expired(token) => {
                self.rejected_token = self.token.take();
                self.token = Some(provider(TokenReason::Expired).await?);
            }
            Some(_) => {}
        }
        Ok(self.token.clone().unwrap_or_default())
    }

    fn next_url(&mut self) -> String {
        match &self.target {
            Target::Urls(urls) if urls.is_empty() => String::new(),
            Target::Urls(urls) => urls[self.url_index % urls.len()].clone(),
            Target::Pick(pick) => pick(),
        }
    }

    async fn attempt(&mut self) -> Next {
        self.set_state(ConnectionState::Connecting);
        let token = match self.current_token().await {
            Ok(token) => token,
            Err(error) => {
                self.emit(Event::Error(SessionError::new(
                    "token",
                    &format!("token provider failed: {error:#}"),
                    None,
                )));
                return self.schedule(1006, "token provider failed", None);
            }
        };
        if self.rejected_token.as_deref() == Some(token.as_str()) {
            return self.finish(4001, "token expired or rejected, and no new token");
        }
        self.emit(Event::Connecting {
            attempt: self.backoff.attempt(),
        });
        let url = self.next_url();
        let (authority, path) = match parse_url(&url) {
            Ok(parts) => parts,
            Err(error) => {
                self.emit(Event::Error(SessionError::new("bad_url", &error, None)));
                return self.finish(1006, &format!("cannot connect: {error}"));
            }
        };
        self.draining = false;
        let deadline = Instant::now() + self.connect_timeout;
        let local_ip = self.local_ip;
        let connect = async move {
            let server = tokio::net::lookup_host(&authority)
                .await?
                .next()
                .ok_or_else(|| anyhow::anyhow!("{authority}: no address"))?;
            let options = Connect {
                server,
                path,
                token,
                bearer: false,
                local_ip,
            };
            Client::connect(&options).await
        };
        tokio::pin!(connect);
        let client = loop {
            tokio::select! {
                result = &mut connect => match result {
                    Ok(client) => break client,
                    Err(error) => {
                        let reason = match refused_status(&error) {
                            Some(status) => format!("upgrade refused: HTTP {status}"),
                            None => format!("{error:#}"),
                        };
                        return self.lost(1006, &reason, false);
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let reason = format!("no welcome within {} ms", self.connect_timeout.as_millis());
                    return self.lost(1006, &reason, false);
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { return Next::Exit };
                    let next = self.command(command);
                    self.tracker.outgoing.clear();
                    self.flush_events();
                    if let Some(Next::Idle) = next {
                        return Next::Idle;
                    }
                }
            }
        };
        self.connection(client, deadline).await
    }

    /// One connection, until it ends.
    async fn connection(&mut self, mut client: Client, welcome_deadline: Instant) -> Next {
        let mut welcomed = false;
        let mut heartbeat: Option<tokio::time::Interval> = None;
        let mut silent_ticks = 0u32;
        let mut stable: Option<Instant> = None;
        let mut drain: Option<Instant> = None;
        loop {
            let retry_at = self.tracker.next_retry().map(Instant::from_std);
            tokio::select! {
                frame = client.recv_text() => match frame {
                    Ok(Some(text)) => {
                        silent_ticks = 0;
                        let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                        if let Some(hook) = &self.hooks.on_received {
                            hook(&message);
                        }
                        if self.dropped_by_test(&message) {
                            continue;
                        }
                        match self.tracker.on_message(message, Instant::now().into_std()) {
                            Signal::Welcome { heartbeat_ms } => {
                                welcomed = true;
                                self.set_state(ConnectionState::Open);
                                heartbeat = self.heartbeat_interval(heartbeat_ms);
                                stable = Some(Instant::now() + self.stable_after);
                                if let Some(welcome) = self.tracker.welcome.clone() {
                                    self.settle_open(Ok(welcome));
                                }
                            }
                            Signal::Drain { after_ms } => {
                                // The node closes with 1001 after `after_ms`; should the
                                // close never come, move by ourselves shortly after.
                                self.draining = true;
                                drain = Some(Instant::now() + Duration::from_millis(after_ms + 2000));
                            }
                            Signal::None => {}
                        }
                    }
                    Ok(None) | Err(_) => {
                        let code = match client.closed {
                            Some(Closed::Code(code)) => code,
                            _ => 1006,
                        };
                        let reason = client.close_reason().unwrap_or_default().to_owned();
                        return self.lost(code, &reason, welcomed);
                    }
                },
                _ = async { heartbeat.as_mut().unwrap().tick().await }, if heartbeat.is_some() => {
                    if silent_ticks >= 2 {
                        drop_client(client);
                        return self.lost(4000, "heartbeat timeout: nothing received for 2 intervals", welcomed);
                    }
                    silent_ticks += 1;
                    self.tracker.heartbeat();
                }
                _ = tokio::time::sleep_until(welcome_deadline), if !welcomed => {
                    drop_client(client);
                    let reason = format!("no welcome within {} ms", self.connect_timeout.as_millis());
                    return self.lost(1006, &reason, false);
                }
                _ = sleep_until_some(stable), if stable.is_some() => {
                    self.backoff.reset();
                    stable = None;
                }
                _ = sleep_until_some(drain), if drain.is_some() => {
                    drop_client(client);
                    return self.lost(1001, "server draining", welcomed);
                }
                _ = sleep_until_some(retry_at), if retry_at.is_some() => {
                    self.tracker.fire_retries(Instant::now().into_std());
                }
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        drop_client(client);
                        return Next::Exit;
                    };
                    if let Some(Next::Idle) = self.command(command) {
                        drop_client(client);
                        return Next::Idle;
                    }
                }
            }
            // Send what the tracker queued, then hand the events over.
            let outgoing: Vec<Value> = self.tracker.outgoing.drain(..).collect();
            for request in outgoing {
                if let Some(hook) = &self.hooks.on_sent {
                    hook(&request);
                }
                match tokio::time::timeout(self.connect_timeout, client.send(&request)).await {
                    Ok(Ok(())) => {}
                    // The connection is gone: the next read says how.
                    Ok(Err(_)) => break,
                    Err(_) => {
                        drop_client(client);
                        return self.lost(1006, "send timed out", welcomed);
                    }
                }
            }
            self.flush_events();
        }
    }

    fn heartbeat_interval(&self, server_ms: u64) -> Option<tokio::time::Interval> {
        if self.heartbeat.is_zero() {
            return None;
        }
        let mut interval = self.heartbeat;
        if server_ms > 0 {
            interval = interval.min(Duration::from_millis(server_ms));
        }
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Some(ticker)
    }

    fn dropped_by_test(&mut self, message: &Value) -> bool {
        if self.hooks.drop_durable.is_empty() {
            return false;
        }
        let (Some(channel), Some(seq)) = (message["channel"].as_str(), message["seq"].as_u64())
        else {
            return false;
        };
        if message["type"] == "subscribed" {
            return false;
        }
        match self
            .hooks
            .drop_durable
            .iter()
            .position(|(c, s)| c == channel && *s == seq)
        {
            Some(i) => {
                self.hooks.drop_durable.remove(i);
                true
            }
            None => false,
        }
    }

    // ---------------------------------------------------------------- ends

    /// The connection ended (or an attempt failed): decide what comes next.
    fn lost(&mut self, code: u16, reason: &str, welcomed: bool) -> Next {
        self.tracker.connection_lost();
        if self.state == ConnectionState::Closed {
            return Next::Idle;
        }
        if let Target::Urls(urls) = &self.target
            && urls.len() > 1
        {
            self.url_index = (self.url_index + 1) % urls.len();
        }
        let fixed = match &self.token_source {
            Token::Fixed(token) => Some(token.clone()),
            Token::Provider(_) => None,
        };
        let refused = !welcomed && reason.contains("HTTP 401");
        let expired = self.token.as_deref().is_some_and(jwt::expired);
        if code == 4001 || refused || (!welcomed && fixed.is_none() && expired) {
            // Never reconnect with this token: get a new one, or stop.
            if fixed.is_some() {
                let why = if code == 4001 {
                    "token expired".to_owned()
                } else {
                    format!("token rejected: {reason}")
                };
                return self.finish(4001, &why);
            }
            self.rejected_token = self.token.take();
            self.token_reason = if code == 4001 || expired {
                TokenReason::Expired
            } else {
                TokenReason::Rejected
            };
            // A token that simply ran out is replaced at once; anything that repeats
            // (a refused token, tokens that expire right away, a skewed clock) backs off.
            if code == 4001 && self.backoff.attempt() == 0 {
                self.backoff.skip();
                return self.schedule(code, reason, Some(Duration::ZERO));
            }
            return self.schedule(code, reason, None);
        }
        if let Some(token) = &fixed
            && !welcomed
            && jwt::expired(token)
        {
            return self.finish(4001, "token expired");
        }
        if self.draining {
            // The node told us to move (`reconnect`): not a failure, no backoff.
            return self.schedule(code, reason, Some(Duration::ZERO));
        }
        if code == 4029 {
            self.backoff.at_least(4); // rate limited: back off harder
        }
        self.schedule(code, reason, None)
    }

    fn schedule(&mut self, code: u16, reason: &str, delay: Option<Duration>) -> Next {
        let delay = delay.unwrap_or_else(|| self.backoff.next_delay());
        self.set_state(ConnectionState::Reconnecting);
        self.emit(Event::Reconnecting(ReconnectingInfo {
            delay,
            attempt: self.backoff.attempt(),
            code,
            reason: reason.to_owned(),
        }));
        Next::Wait(delay)
    }

    /// Final close: no more reconnects (until `open()`).
    fn finish(&mut self, code: u16, reason: &str) -> Next {
        if self.state == ConnectionState::Closed {
            return Next::Idle;
        }
        self.set_state(ConnectionState::Closed);
        self.tracker.connection_lost();
        self.tracker.closed(reason);
        self.tracker.events.push(Event::Closed {
            code,
            reason: reason.to_owned(),
        });
        self.settle_open(Err(SessionError::new("closed", reason, None)));
        Next::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:9000/ws"),
            Ok(("127.0.0.1:9000".into(), "/ws".into()))
        );
        assert_eq!(
            parse_url("ws://example.com"),
            Ok(("example.com:80".into(), "/".into()))
        );
        assert_eq!(
            parse_url("ws://[::1]:81/a?b=c"),
            Ok(("[::1]:81".into(), "/a?b=c".into()))
        );
        assert_eq!(
            parse_url("ws://h:1?x=y"),
            Ok(("h:1".into(), "/?x=y".into()))
        );
        assert!(parse_url("wss://h/ws").is_err());
        assert!(parse_url("http://h/ws").is_err());
    }
}
