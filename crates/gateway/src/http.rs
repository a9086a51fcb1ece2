//! The public listener: WebSocket upgrades on `/ws` and `/`, and the demo page.
//!
//! Everything is checked before the upgrade, each refusal a plain HTTP answer, and no
//! WebSocket is ever opened for it, in this order: the browser page's `Origin` (403),
//! the token (401), the node's connection cap or drain (503, so a load balancer can
//! try another node), the user's connection limit on this node (429). Request URIs
//! (which carry `?token=`) are never logged.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum_tws::{Limits, WebSocketUpgrade};

use crate::auth::{AuthError, Identity};
use crate::credentials;
use crate::node::{Node, Refused};
use crate::session;

/// The demo dashboard, served on a plain `GET /` and `GET /demo`.
const PAGE: &str = include_str!("../assets/index.html");

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/ws", get(upgrade))
        .route("/demo", get(page))
        .route("/demo/identities", get(identities))
        .with_state(node)
}

/// `/` upgrades when asked to, and serves the page otherwise.
async fn root(state: State<Arc<Node>>, request: Request) -> Response {
    let wants_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if wants_upgrade {
        upgrade(state, request).await
    } else {
        page().await.into_response()
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn identities(State(node): State<Arc<Node>>) -> Response {
    match &node.demo {
        Some(identities) => axum::Json(identities.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn upgrade(State(node): State<Arc<Node>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let origin = parts.headers.get(header::ORIGIN);
    if !node
        .config
        .allowed_origins
        .allows(origin, parts.headers.get(header::HOST))
    {
        metrics::counter!("tradecast_auth_failures_total", "reason" => "origin").increment(1);
        tracing::debug!(origin = ?origin, "upgrade refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let identity = match authenticate(&node, parts.uri.query(), &parts.headers) {
        Ok(identity) => identity,
        Err(error) => {
            metrics::counter!("tradecast_auth_failures_total", "reason" => error.label())
                .increment(1);
            tracing::debug!(reason = error.label(), "upgrade refused: token");
            return (StatusCode::UNAUTHORIZED, error.to_string()).into_response();
        }
    };
    let guard = match node.admit(identity.principal) {
        Ok(guard) => guard,
        Err(refused) => {
            metrics::counter!("tradecast_connections_refused_total", "reason" => refused.label())
                .increment(1);
            tracing::debug!(
                reason = refused.label(),
                user = identity.principal.id,
                "upgrade refused"
            );
            let (status, retry_after, reason) = match refused {
                Refused::Draining => (StatusCode::SERVICE_UNAVAILABLE, "1", "node is draining"),
                Refused::Full => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "1",
                    "node is at its connection limit",
                ),
                Refused::UserLimit => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "5",
                    "too many connections for this user",
                ),
            };
            return (status, [(header::RETRY_AFTER, retry_after)], reason).into_response();
        }
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let limits = Limits::default().max_payload_len(Some(node.config.max_frame_bytes));
    upgrade
        .limits(limits)
        .on_upgrade(move |socket| session::run(node, socket, identity, guard))
}

/// The token from `?token=` or `Authorization: Bearer`, verified.
fn authenticate(
    node: &Node,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Identity, AuthError> {
    let token = credentials::bearer_token(query, headers).ok_or(AuthError::Missing)?;
    node.auth.verify(&token)
}
