//! The engine as a child process: how to launch it (the assembled 7.24 jar, or a real Camunda Run
//! install), where it keeps its data and log, and how it is stopped without leaving a `java`
//! behind.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use camunda_client::EngineClient;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::readiness::{ReadinessError, wait_until_ready};

/// The boot keys of `procos.toml`'s `[engine]` table: how the kernel boots an engine of its own.
/// Where an engine is and how to authenticate to it is [`camunda_client::Connection`]'s business.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootSettings {
    /// Port of the engine the kernel boots.
    pub port: u16,
    /// The assembled Camunda 7.24 engine (built from `docker/camunda`).
    pub jar: PathBuf,
    /// A real Camunda Run install to boot instead of the jar (also `CAMUNDA_RUN_HOME`).
    pub camunda_run_home: Option<PathBuf>,
    /// The `java` that runs the jar.
    pub java: PathBuf,
    /// Where the booted engine keeps its H2 database and its log.
    pub data_dir: PathBuf,
    /// How long the engine may take to answer after it was started.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// How long the engine may take to stop before it is killed.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
}

impl Default for BootSettings {
    fn default() -> Self {
        Self {
            port: 8080,
            jar: PathBuf::from("docker/camunda/target/procos-camunda-engine.jar"),
            camunda_run_home: None,
            java: PathBuf::from("java"),
            data_dir: PathBuf::from(".procos/engine"),
            ready_timeout: Duration::from_secs(180),
            stop_timeout: Duration::from_secs(20),
        }
    }
}

impl BootSettings {
    /// The REST API of the engine these settings boot.
    pub fn rest_url(&self) -> String {
        format!("http://localhost:{}/engine-rest", self.port)
    }

    /// The engine to boot, from these settings.
    pub fn local_engine(&self) -> LocalEngine {
        let launcher = match &self.camunda_run_home {
            Some(home) => Launcher::CamundaRun { home: home.clone() },
            None => Launcher::Jar {
                java: self.java.clone(),
                jar: self.jar.clone(),
            },
        };
        LocalEngine {
            launcher,
            port: self.port,
            data_dir: self.data_dir.clone(),
            env: Vec::new(),
        }
    }
}

/// What starts the engine process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launcher {
    /// `java -jar` the assembled engine.
    Jar { java: PathBuf, jar: PathBuf },
    /// A Camunda Run install: `internal/run.sh start --webapps --rest` in the foreground.
    CamundaRun { home: PathBuf },
}

/// An engine the kernel boots and owns.
#[derive(Debug, Clone)]
pub struct LocalEngine {
    pub launcher: Launcher,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Extra environment for the engine (`DB_URL`, `CAMUNDA_BPM_RUN_AUTH_ENABLED`, …).
    pub env: Vec<(String, String)>,
}

/// Booting or stopping the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "the engine jar {} does not exist; build it with `mvn -f docker/camunda package` (scripts/up.sh builds it when missing), or point `engine.jar` (PROCOS_ENGINE_JAR) at it",
        .0.display()
    )]
    EngineJarMissing(PathBuf),
    #[error(
        "{} is not a Camunda Run install (no internal/run.sh in it); point CAMUNDA_RUN_HOME at the unpacked distribution",
        .0.display()
    )]
    NotCamundaRun(PathBuf),
    #[error("cannot use {} for the engine's data and log: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the engine with `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("the engine exited while booting ({status}); the end of {}:\n{tail}", log.display())]
    ExitedDuringBoot {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{source}; the end of {}:\n{tail}", log.display())]
    NotReady {
        #[source]
        source: ReadinessError,
        log: PathBuf,
        tail: String,
    },
    #[error("stopped while booting the engine")]
    Cancelled,
}

impl LocalEngine {
    /// Starts the engine in its own process group, so a Ctrl-C at the terminal reaches the
    /// kernel alone and the kernel stops the engine in order. Output goes to `engine.log` in the
    /// data directory.
    pub fn spawn(&self) -> Result<EngineProcess, KernelError> {
        let data_dir = absolute(&self.data_dir);
        let data_err = |source| KernelError::DataDir {
            path: data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&data_dir).map_err(data_err)?;
        let log_path = data_dir.join("engine.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(data_err)?;
        let log_err = log.try_clone().map_err(data_err)?;

        let mut command = match &self.launcher {
            Launcher::Jar { java, jar } => {
                let jar = absolute(jar);
                if !jar.is_file() {
                    return Err(KernelError::EngineJarMissing(jar));
                }
                let mut c = Command::new(java);
                c.arg("-jar").arg(jar);
                c
            }
            Launcher::CamundaRun { home } => {
                let script = home.join("internal").join("run.sh");
                if !script.is_file() {
                    return Err(KernelError::NotCamundaRun(home.clone()));
                }
                let mut c = Command::new(script);
                c.args(["start", "--webapps", "--rest"]);
                c
            }
        };
        command
            .current_dir(&data_dir)
            .env("SERVER_PORT", self.port.to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let description = format!("{:?}", command.as_std());
        let child = command.spawn().map_err(|source| KernelError::Spawn {
            command: description,
            source,
        })?;
        // The caller says what it boots; the process id is detail for debugging.
        debug!(pid = child.id(), port = self.port, log = %log_path.display(), "engine process started");
        Ok(EngineProcess {
            child,
            log: log_path,
        })
    }

    /// Spawns the engine and waits until its REST API answers. If the process dies first, the
    /// error carries the end of its log instead of waiting out the timeout.
    pub async fn boot(
        &self,
        client: &EngineClient,
        ready_timeout: Duration,
        cancel: &CancellationToken,
        progress: impl FnMut(Duration),
    ) -> Result<EngineProcess, KernelError> {
        let mut process = self.spawn()?;
        let outcome = tokio::select! {
            ready = wait_until_ready(client, ready_timeout, cancel, progress) => ready.map_err(|e| match e {
                ReadinessError::Cancelled => KernelError::Cancelled,
                source => KernelError::NotReady { source, log: process.log.clone(), tail: process.log_tail(30) },
            }),
            status = process.child.wait() => Err(KernelError::ExitedDuringBoot {
                status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                log: process.log.clone(),
                tail: process.log_tail(30),
            }),
        };
        match outcome {
            Ok(()) => Ok(process),
            Err(e) => {
                process.stop(Duration::from_secs(10)).await;
                Err(e)
            }
        }
    }
}

/// A running engine process.
#[derive(Debug)]
pub struct EngineProcess {
    child: Child,
    log: PathBuf,
}

impl EngineProcess {
    /// The engine's process id (also its process group id).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Where the engine writes its output.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Resolves when the engine process exits by itself.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The last `lines` lines of the engine's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Asks the engine to stop (SIGTERM to its process group), waits up to `timeout`, then
    /// kills whatever is left of the group.
    pub async fn stop(mut self, timeout: Duration) {
        let Some(pgid) = self.child.id().and_then(|id| i32::try_from(id).ok()) else {
            return; // already reaped
        };
        let group = Pid::from_raw(pgid);
        if let Err(e) = killpg(group, Signal::SIGTERM) {
            warn!(error = %e, "could not signal the engine's process group");
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => debug!(%status, "engine stopped"),
            Ok(Err(e)) => warn!(error = %e, "could not wait for the engine"),
            Err(_) => warn!(?timeout, "the engine did not stop in time; killing it"),
        }
        // Whatever is left in the group (a launcher script's java, a hung JVM) goes now.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait().await;
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Asks Linux to SIGTERM the engine when the kernel dies, even by SIGKILL, so that no `java`
/// outlives it. The signal follows the thread that spawned the child; the kernel spawns from
/// runtime threads that live as long as the process.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        command
            .pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(io::Error::from));
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}
