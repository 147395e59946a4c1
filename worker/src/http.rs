//! The worker's HTTP endpoint for operators: `/metrics` (Prometheus), `/healthz` (the process
//! answers) and `/readyz` (every worker reaches the engine and none is draining; the body also
//! names a refused topic table).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Telemetry;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
