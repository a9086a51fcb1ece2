//! The public listener: WebSocket upgrades on `/ws` and `/`, and the demo page.
//!
//! The token is checked before the upgrade, so a bad one gets a plain HTTP 401 and
//! no WebSocket is ever opened; a node at its connection cap answers 503 so a load
//! balancer can try another node. Request URIs (which carry `?token=`) are never
//! logged.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum_tws::{Limits, WebSocketUpgrade};

use crate::auth::{AuthError, Identity};
use crate::credentials;
use crate::node::Node;
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
    let identity = match authenticate(&node, parts.uri.query(), &parts.headers) {
        Ok(identity) => identity,
        Err(error) => {
            metrics::counter!("tradecast_auth_failures_total", "reason" => error.label())
                .increment(1);
            return (StatusCode::UNAUTHORIZED, error.to_string()).into_response();
        }
    };
    let Some(guard) = node.admit() else {
        metrics::counter!("tradecast_connections_refused_total").increment(1);
        let reason = if node.is_draining() {
            "node is draining"
        } else {
            "node is at its connection limit"
        };
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            reason,
        )
            .into_response();
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
