//! The private admin listener: health, readiness, Prometheus metrics and the HTTP
//! ingest endpoint. Bind it to loopback or a private network only.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

use crate::events_body::{self, BodyError, EventsBody};
use crate::node::{Ingest, Node};

#[derive(Clone)]
struct Admin {
    node: Arc<Node>,
    metrics: PrometheusHandle,
}

pub fn router(node: Arc<Node>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/v1/events", post(events))
        .with_state(Admin { node, metrics })
}

/// Ready when the broker is reachable and the node is not draining.
async fn readyz(State(admin): State<Admin>) -> Response {
    if admin.node.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if !admin.node.broker.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "broker not ready").into_response()
    } else {
        "ready".into_response()
    }
}

async fn render_metrics(State(admin): State<Admin>) -> String {
    admin.metrics.render()
}

/// `POST /v1/events`: one ingest event object, or an array of them. Either every
/// event is valid and all are taken, or none is and the reply is 400 with each bad
/// event's reason. On the embedded broker they are applied in order and the reply
/// (200) comes once their messages are published; with Redis they are appended to
/// the ingest streams and the reply (200) gives their entry ids.
async fn events(State(admin): State<Admin>, body: Bytes) -> Response {
    let EventsBody { events, raw } = match events_body::parse(&body) {
        Ok(parsed) => parsed,
        Err(BodyError::NotJson(e)) => {
            return bad_request(json!([{ "index": 0, "reason": format!("not JSON: {e}") }]));
        }
        Err(BodyError::Invalid(errors)) => {
            metrics::counter!("tradecast_ingest_dead_letters_total").increment(errors.len() as u64);
            let errors = errors
                .into_iter()
                .map(|(index, reason)| json!({ "index": index, "reason": reason }))
                .collect();
            return bad_request(Value::Array(errors));
        }
    };
    match &admin.node.ingest {
        Ingest::Local(pipeline) => match pipeline.apply(events).await {
            Ok(outcome) => axum::Json(outcome).into_response(),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        },
        Ingest::Streams(writer) => match writer.lock().await.write(&raw).await {
            Ok(ids) => axum::Json(json!({ "queued": ids.len(), "ids": ids })).into_response(),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
        },
    }
}

fn bad_request(errors: Value) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": "invalid ingest event", "errors": errors })),
    )
        .into_response()
}
