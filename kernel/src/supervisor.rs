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
