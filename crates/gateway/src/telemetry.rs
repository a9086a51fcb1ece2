//! Process-wide set-up: the Prometheus recorder and the open-file budget.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Install the Prometheus recorder once per process and describe the metrics.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("tradecast_connections", "Open WebSocket connections");
    describe_counter!(
        "tradecast_connections_total",
        "WebSocket connections accepted"
    );
    describe_counter!(
        "tradecast_connections_refused_total",
        "Upgrades refused after the token: 503 (reason full or draining) or 429 (user_limit)"
    );
    describe_gauge!(
        "tradecast_subscriptions",
        "Channel subscriptions held by connections"
    );
    describe_counter!(
        "tradecast_messages_out_total",
        "Channel messages queued to connections, by type"
    );
    describe_counter!(
        "tradecast_frames_out_total",
        "WebSocket text frames written"
    );
    describe_counter!("tradecast_bytes_out_total", "Bytes of text frames written");
    describe_counter!(
        "tradecast_outbox_conflated_total",
        "Ephemeral messages replaced by a newer one before being written"
    );
    describe_counter!(
        "tradecast_slow_consumer_closes_total",
        "Connections closed with 4009 because their queue overflowed"
    );
    describe_counter!(
        "tradecast_resumes_total",
        "Subscribes with since, by outcome (recovered or snapshot)"
    );
    describe_counter!(
        "tradecast_auth_failures_total",
        "Upgrades refused before the token was accepted: 401 (token reasons) or 403 (origin)"
    );
    describe_counter!(
        "tradecast_inbound_errors_total",
        "Client frames answered with an error or a close, by code"
    );
    describe_counter!(
        "tradecast_forbidden_subscriptions_total",
        "Subscriptions refused as forbidden"
    );
    describe_counter!(
        "tradecast_ingest_events_total",
        "Ingest events applied, by type"
    );
    describe_counter!(
        "tradecast_ingest_duplicates_total",
        "Ingest events skipped as already applied"
    );
    describe_counter!(
        "tradecast_ingest_rejected_total",
        "Ingest events the domain refused, by type"
    );
    describe_counter!(
        "tradecast_ingest_dead_letters_total",
        "Malformed ingest entries (dead-lettered or refused with 400)"
    );
    describe_counter!(
        "tradecast_publish_failures_total",
        "Channel messages the broker could not publish"
    );
}

/// The connection cap actually used: the configured one, but never closer than
/// 512 descriptors to the process's open-file limit (raised to its hard limit
/// first), so the node answers 503 instead of failing `accept`.
pub fn connection_cap(configured: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    let files = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return configured;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur as usize
    };
    configured.min(files.saturating_sub(512).max(1))
}
