//! tradecast WebSocket clients.
//!
//! - [`Client`]: one connection: connect with a token, send requests, read JSON
//!   messages. It is the low-level layer the project's own tests use; it can connect
//!   from a chosen local address to spread connections over 127.0.0.x. (The
//!   benchmark tool, `crates/bench`, holds its sockets itself so that the kernel
//!   picks each source port at `connect()`; see its `worker.rs`.)
//! - [`Session`]: the resilient client an application wants, with the semantics of the
//!   TypeScript SDK (`clients/js`): one logical session over successive connections,
//!   reconnecting with jittered backoff, pinging and detecting a dead link, resuming
//!   every channel with `since`, dropping duplicates, healing `seq` gaps, and
//!   reporting lost continuity (`recovered: false`) as [`Event::Reset`]. Its events
//!   feed the local state [`models`] ([`Portfolio`], [`Orders`], [`Exposure`],
//!   [`Prices`]).

pub mod backoff;
mod jwt;
pub mod models;
pub mod session;
mod tracker;

pub use backoff::Backoff;
pub use models::{
    Account, Exposure, ExposureRow, Model, Order, Orders, Portfolio, Position, Prices,
};
pub use session::{
    ChannelInfo, ConnectionState, Event, GapInfo, ReconnectingInfo, ResetInfo, Session,
    SessionError, SessionHandle, SessionOptions, Since, Stats, Status, SubscribeCause, Subscribed,
    Target, Token, TokenReason, Welcome,
};

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

/// How a connection ended, as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The server sent a close frame with this code.
    Code(u16),
    /// The stream ended without a close frame (or with one without a code).
    Eof,
}

/// One connection to a tradecast node.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// The close code, once the server has closed the connection.
    pub closed: Option<Closed>,
    close_reason: Option<String>,
}

/// Where to connect and how.
#[derive(Debug, Clone)]
pub struct Connect {
    /// The node's public address.
    pub server: SocketAddr,
    /// `/ws` or `/`.
    pub path: String,
    pub token: String,
    /// Send the token in `Authorization: Bearer` instead of `?token=`.
    pub bearer: bool,
    /// Local address to connect from (e.g. 127.0.0.2), if any.
    pub local_ip: Option<IpAddr>,
}

impl Connect {
    pub fn new(server: SocketAddr, token: impl Into<String>) -> Connect {
        Connect {
            server,
            path: "/ws".into(),
            token: token.into(),
            bearer: false,
            local_ip: None,
        }
    }
}

impl Client {
    /// Open a connection (TCP, HTTP upgrade). Fails if the server refuses the upgrade.
    pub async fn connect(options: &Connect) -> anyhow::Result<Client> {
        let socket = if options.server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = options.local_ip {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding to {ip}"))?;
        }
        let stream = socket
            .connect(options.server)
            .await
            .with_context(|| format!("connecting to {}", options.server))?;
        stream.set_nodelay(true)?;
        let mut builder = if options.bearer {
            let uri = format!("ws://{}{}", options.server, options.path);
            ClientBuilder::new().uri(&uri)?.add_header(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(&format!("Bearer {}", options.token))?,
            )?
        } else {
            let separator = if options.path.contains('?') { '&' } else { '?' };
            let uri = format!(
                "ws://{}{}{separator}token={}",
                options.server, options.path, options.token
            );
            ClientBuilder::new().uri(&uri)?
        };
        builder = builder.limits(tokio_websockets::Limits::unlimited());
        let (ws, _response) = builder
            .connect_on(stream)
            .await
            .context("WebSocket upgrade refused")?;
        Ok(Client {
            ws,
            closed: None,
            close_reason: None,
        })
    }

    /// Send one JSON request.
    pub async fn send(&mut self, request: &Value) -> anyhow::Result<()> {
        self.send_text(request.to_string()).await
    }

    /// Refresh the connection's token in-band, before it expires: the node answers
    /// `{"type":"authenticated","exp":..,"id":id}` and the connection then lives until
    /// the new `exp`, or with an `error` (`invalid_token`, `forbidden`: a token of
    /// another user) and the old expiry stands. Read the reply with [`Client::recv`].
    pub async fn refresh_token(&mut self, token: &str, id: impl Into<Value>) -> anyhow::Result<()> {
        self.send(&serde_json::json!({"type": "auth", "token": token, "id": id.into()}))
            .await
    }

    /// Send a raw text frame (tests use it for malformed input).
    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.ws
            .send(Message::text(text.into()))
            .await
            .context("sending a frame")
    }

    /// Send a raw binary frame.
    pub async fn send_binary(&mut self, data: impl Into<Bytes>) -> anyhow::Result<()> {
        self.ws
            .send(Message::binary(data.into()))
            .await
            .context("sending a frame")
    }

    /// The next JSON message, or `None` once the connection is closed (see
    /// [`Client::closed`]). WebSocket pings are answered automatically.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Value>> {
        match self.recv_text().await? {
            Some(text) => {
                Ok(Some(serde_json::from_str(&text).with_context(|| {
                    format!("server sent invalid JSON: {text}")
                })?))
            }
            None => Ok(None),
        }
    }

    /// The next text frame unparsed (a load generator need not parse every copy).
    pub async fn recv_text(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            match self.ws.next().await {
                Some(Ok(message)) => {
                    if let Some(text) = message.as_text() {
                        return Ok(Some(text.to_owned()));
                    }
                    if let Some((code, reason)) = message.as_close() {
                        self.closed = Some(Closed::Code(code.into()));
                        self.close_reason = Some(reason.to_owned());
                    }
                }
                Some(Err(error)) => {
                    if self.closed.is_none() {
                        self.closed = Some(Closed::Eof);
                    }
                    if matches!(
                        error,
                        tokio_websockets::Error::Io(_) | tokio_websockets::Error::AlreadyClosed
                    ) {
                        return Ok(None);
                    }
                    return Err(error).context("reading from the server");
                }
                None => {
                    if self.closed.is_none() {
                        self.closed = Some(Closed::Eof);
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// The reason text of the server's close frame, once it has sent one.
    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }

    /// The next JSON message within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> anyhow::Result<Option<Value>> {
        match tokio::time::timeout(limit, self.recv()).await {
            Ok(result) => result,
            Err(_) => bail!("no message within {limit:?}"),
        }
    }

    /// Read until a message with this `type` arrives (within `limit`), returning
    /// it and everything read before it.
    pub async fn recv_until(
        &mut self,
        kind: &str,
        limit: Duration,
    ) -> anyhow::Result<(Value, Vec<Value>)> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self
                .recv_within(left)
                .await
                .with_context(|| format!("waiting for {kind:?}; got {before:?}"))?
            {
                Some(message) if message["type"] == kind => return Ok((message, before)),
                Some(message) => before.push(message),
                None => bail!(
                    "connection closed ({:?}) while waiting for {kind:?}; got {before:?}",
                    self.closed
                ),
            }
        }
    }

    /// Read until the connection closes (within `limit`) and return how it closed.
    pub async fn closed_within(&mut self, limit: Duration) -> anyhow::Result<Closed> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.recv()).await {
                Err(_) => bail!("still open after {limit:?}"),
                Ok(Ok(Some(_))) => continue,
                Ok(_) => return Ok(self.closed.clone().unwrap_or(Closed::Eof)),
            }
        }
    }

    /// Close the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close().await;
    }
}
