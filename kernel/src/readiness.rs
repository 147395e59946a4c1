//! Waiting for the engine: `GET /engine` answers even with REST authentication on.

use std::time::Duration;

use camunda_client::EngineClient;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The engine did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    #[error(
        "the engine at {url} did not answer within {}: {last_error}",
        humantime::format_duration(*.waited)
    )]
    Timeout {
        url: String,
        waited: Duration,
        last_error: String,
    },
    #[error("stopped while waiting for the engine")]
    Cancelled,
}

/// Polls `GET /engine` until it lists an engine, calling `progress` with the time waited about
/// every five seconds, so a person at the terminal sees that something is happening.
pub async fn wait_until_ready(
    client: &EngineClient,
    timeout: Duration,
    cancel: &CancellationToken,
    mut progress: impl FnMut(Duration),
) -> Result<(), ReadinessError> {
    let started = Instant::now();
    let mut last_report = started;
    loop {
        let last_error = match client.engines().await {
            Ok(engines) if !engines.is_empty() => return Ok(()),
            Ok(_) => "the REST API answers but lists no engine".to_owned(),
            Err(e) => e.to_string(),
        };
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(ReadinessError::Timeout {
                url: client.base_url().to_owned(),
                waited,
                last_error,
            });
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            progress(waited);
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(ReadinessError::Cancelled),
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
