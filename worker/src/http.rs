//! The worker's HTTP endpoint for operators: `/metrics` (Prometheus), `/healthz` (the process
//! answers), `/readyz` (every worker reaches the engine and none is draining; the body also
//! names a refused topic table and unavailable topics) and `/topics` (the same notes as JSON,
//! a [`TopicReport`], which `procos status` reads).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Telemetry;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a worker process says about its topics at `GET /topics`: the contract between the
/// endpoint and `procos status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicReport {
    /// Configured topics the process does not fetch because their adapter cannot serve now.
    pub unavailable: Vec<UnavailableTopic>,
    /// Why the last edit of the topic table was refused (the previous table serves); `None`
    /// when the last one was taken.
    pub refused_table: Option<String>,
}

/// A topic a worker process does not fetch, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnavailableTopic {
    pub topic: String,
    /// The reason and the fix, as the log and `/readyz` give them.
    pub why: String,
}

/// A bound, not yet serving, observability endpoint. Binding first lets a busy port stop the
/// worker before it fetches anything.
#[derive(Debug)]
pub struct ObservabilityServer {
    listener: TcpListener,
    telemetry: Telemetry,
}

impl ObservabilityServer {
    /// Binds `addr`; port 0 picks a free port (see [`ObservabilityServer::local_addr`]).
    pub async fn bind(addr: SocketAddr, telemetry: Telemetry) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            telemetry,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/topics", get(topics))
            .with_state(self.telemetry);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

async fn metrics(State(telemetry): State<Telemetry>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        telemetry.encode_metrics(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn topics(State(telemetry): State<Telemetry>) -> Response {
    let report = telemetry.topic_report();
    match serde_json::to_string(&report) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A refused topic table does not make the process unready (the previous table serves), but
/// the body names it either way.
async fn readyz(State(telemetry): State<Telemetry>) -> Response {
    let note: String = telemetry
        .refused_table()
        .into_iter()
        .chain(telemetry.unavailable_topics())
        .map(|why| format!("note: {why}\n"))
        .collect();
    match telemetry.readiness() {
        Ok(()) => (StatusCode::OK, format!("ready\n{note}")).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{why}\n{note}"),
        )
            .into_response(),
    }
}
