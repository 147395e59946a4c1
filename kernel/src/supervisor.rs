//! Keeping the engine process alive: boot it, notice when it dies, boot it again with backoff.
//!
//! The supervisor owns the process only. What the engine should hold once it answers (the init
//! models, the root orchestrator) is [`crate::Kernel`]'s business, which notices a restarted
//! engine by itself. What happens is reported as [`EngineEvent`]s for the caller to show; the
//! supervisor itself prints and logs none of it.

use std::time::Duration;

use camunda_client::EngineClient;
use tokio_util::sync::CancellationToken;

use crate::engine::{EngineProcess, KernelError, LocalEngine};

/// Boots in a row that may fail before the supervisor gives up on a crashed engine.
const MAX_FAILED_RESTARTS: u32 = 5;
const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// A booted engine process under supervision.
#[derive(Debug)]
pub struct EngineSupervisor {
    engine: LocalEngine,
    client: EngineClient,
    ready_timeout: Duration,
    process: Option<EngineProcess>,
    restarts: u32,
}

/// How a supervised engine process ended on its own.
#[derive(Debug, Clone)]
pub struct EngineExit {
    /// The exit status as the OS reports it.
    pub status: String,
    /// The end of the engine's log, for the person reading why.
    pub log_tail: String,
}

/// What happened to a supervised engine.
#[derive(Debug)]
pub enum EngineEvent {
    /// The engine process exited without being asked to; a restart follows.
    Exited(EngineExit),
    /// A boot after an exit failed (`failures` in a row); the next one starts after `retry_in`.
    RestartFailed {
        error: KernelError,
        failures: u32,
        retry_in: Duration,
    },
    /// The engine answers again, after its `restarts`-th restart.
    Restarted { restarts: u32 },
}

impl EngineSupervisor {
    /// Boots `engine` and waits until it answers. A first boot that fails is an error for the
    /// caller: it usually means a configuration to fix (no jar, port taken, bad database URL).
    pub async fn boot(
        engine: LocalEngine,
        client: EngineClient,
        ready_timeout: Duration,
        cancel: &CancellationToken,
        progress: impl FnMut(Duration),
    ) -> Result<Self, KernelError> {
        let process = engine
            .boot(&client, ready_timeout, cancel, progress)
            .await?;
        Ok(Self {
            engine,
            client,
            ready_timeout,
            process: Some(process),
            restarts: 0,
        })
    }

    /// Keeps the engine running until `cancel`: when the process exits without being asked to,
    /// boots it again, waiting 1 s, 2 s, 4 s … (at most 30 s) before each attempt, and reports
    /// each step to `on_event`. Returns `Ok` when cancelled, the engine still running (stop it
    /// with [`EngineSupervisor::stop`]); gives up after five failed boots in a row, returning the
    /// last one's error.
    pub async fn supervise(
        &mut self,
        cancel: &CancellationToken,
        mut on_event: impl FnMut(EngineEvent),
    ) -> Result<(), KernelError> {
        loop {
            let exit = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                exit = self.exited() => exit,
            };
            on_event(EngineEvent::Exited(exit));
            match self.restart(cancel, &mut on_event).await {
                Ok(()) => on_event(EngineEvent::Restarted {
                    restarts: self.restarts,
                }),
                Err(KernelError::Cancelled) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops the engine: SIGTERM to its process group, then SIGKILL after `timeout`.
    pub async fn stop(self, timeout: Duration) {
        if let Some(process) = self.process {
            process.stop(timeout).await;
        }
    }

    /// Resolves when the engine process exits without being asked to.
    async fn exited(&mut self) -> EngineExit {
        let Some(process) = self.process.as_mut() else {
            return std::future::pending().await;
        };
        let status = process
            .exited()
            .await
            .map_or_else(|e| e.to_string(), |s| s.to_string());
        let log_tail = process.log_tail(20);
        self.process = None;
        EngineExit { status, log_tail }
    }

    /// Boots the engine again with backoff until it answers, or until the fifth failure in a
    /// row, whose error it returns.
    async fn restart(
        &mut self,
        cancel: &CancellationToken,
        on_event: &mut impl FnMut(EngineEvent),
    ) -> Result<(), KernelError> {
        let mut delay = FIRST_RESTART_DELAY;
        let mut failures = 0;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Err(KernelError::Cancelled),
                () = tokio::time::sleep(delay) => {}
            }
            match self
                .engine
                .boot(&self.client, self.ready_timeout, cancel, |_| {})
                .await
            {
                Ok(process) => {
                    self.process = Some(process);
                    self.restarts += 1;
                    return Ok(());
                }
                Err(KernelError::Cancelled) => return Err(KernelError::Cancelled),
                Err(error) => {
                    failures += 1;
                    if failures >= MAX_FAILED_RESTARTS {
                        return Err(error);
                    }
                    delay = (delay * 2).min(MAX_RESTART_DELAY);
                    on_event(EngineEvent::RestartFailed {
                        error,
                        failures,
                        retry_in: delay,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use camunda_client::Auth;

    use super::*;
    use crate::engine::Launcher;

    /// Answers `GET /engine` as an engine does while `up` is set, and 503 otherwise. The
    /// supervisor knows an engine only by its process and its REST API, so a shell script can
    /// play the process and this the API.
    fn rest_api(up: Arc<AtomicBool>) -> EngineClient {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Blocks in accept until the test binary exits.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0_u8; 4096];
                let _ = stream.read(&mut request);
                let (status, body) = if up.load(Ordering::SeqCst) {
                    ("200 OK", r#"[{"name":"default"}]"#)
                } else {
                    ("503 Service Unavailable", "{}")
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        EngineClient::new(&format!("http://127.0.0.1:{port}/engine-rest"), Auth::None).unwrap()
    }

    /// A "Camunda Run" in `dir` whose `internal/run.sh` is `script`; it runs in `dir/data`.
    fn stand_in(dir: &Path, script: &str) -> LocalEngine {
        let internal = dir.join("run/internal");
        std::fs::create_dir_all(&internal).unwrap();
        let run = internal.join("run.sh");
        std::fs::write(&run, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        LocalEngine {
            launcher: Launcher::CamundaRun {
                home: dir.join("run"),
            },
            port: 0,
            data_dir: dir.join("data"),
            env: Vec::new(),
        }
    }

    #[tokio::test]
    async fn an_engine_that_exits_is_booted_again_and_each_step_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        // The first process exits after a second; the one booted after it stays.
        let engine = stand_in(
            dir.path(),
            "if [ -e booted ]; then exec sleep 600; fi\ntouch booted\nexec sleep 1",
        );
        let client = rest_api(Arc::new(AtomicBool::new(true)));
        let cancel = CancellationToken::new();
        let mut supervisor =
            EngineSupervisor::boot(engine, client, Duration::from_secs(10), &cancel, |_| {})
                .await
                .unwrap();

        let mut events = Vec::new();
        let stop = cancel.clone();
        let supervised = supervisor
            .supervise(&cancel, |event| {
                if matches!(event, EngineEvent::Restarted { .. }) {
                    stop.cancel();
                }
                events.push(event);
            })
            .await;

        assert!(supervised.is_ok(), "{supervised:?}");
        assert!(
            matches!(
                &events[..],
                [EngineEvent::Exited(exit), EngineEvent::Restarted { restarts: 1 }]
                    if exit.status.contains("exit status: 0")
            ),
            "{events:?}"
        );
        supervisor.stop(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn five_failed_boots_in_a_row_give_up_after_doubling_waits() {
        let dir = tempfile::tempdir().unwrap();
        // The first process exits after a second; every one booted after it fails at once.
        let engine = stand_in(
            dir.path(),
            "if [ -e booted ]; then exit 1; fi\ntouch booted\nexec sleep 1",
        );
        let up = Arc::new(AtomicBool::new(true));
        let client = rest_api(Arc::clone(&up));
        let cancel = CancellationToken::new();
        let mut supervisor =
            EngineSupervisor::boot(engine, client, Duration::from_secs(10), &cancel, |_| {})
                .await
                .unwrap();
        up.store(false, Ordering::SeqCst);
        // The waits between boots (1 + 2 + 4 + 8 + 16 s) pass on tokio's clock, not the test's.
        tokio::time::pause();

        let mut events = Vec::new();
        let supervised = supervisor
            .supervise(&cancel, |event| events.push(event))
            .await;

        let error = supervised.expect_err("the supervisor gives up");
        assert!(!matches!(error, KernelError::Cancelled), "{error}");
        assert!(
            matches!(events.first(), Some(EngineEvent::Exited(_))),
            "{events:?}"
        );
        let failed: Vec<(u32, Duration)> = events[1..]
            .iter()
            .map(|event| match event {
                EngineEvent::RestartFailed {
                    failures, retry_in, ..
                } => (*failures, *retry_in),
                other => panic!("only failed restarts follow the exit: {other:?}"),
            })
            .collect();
        assert_eq!(
            failed,
            [1, 2, 3, 4].map(|n| (n, Duration::from_secs(1 << n))),
            "the fifth failure is the error, not an event"
        );
        supervisor.stop(Duration::from_secs(5)).await;
    }
}
