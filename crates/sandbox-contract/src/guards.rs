//! The guards of a sandbox: the settings a topic may tune or, for a few, turn off
//! ([`Guards`]), and those no sandbox container is ever without ([`AlwaysOn`]).

use std::time::Duration;

use serde::Deserialize;

/// `[topics.NAME.settings.sandbox]`: a sandbox's tunable guards. Every guard is on by default;
/// turning one off is a setting, and the worker says so in its log at start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Guards {
    /// Wall-clock limit; the sandbox is killed after it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Memory limit in MiB (swap included: no swap beyond it).
    pub memory_mb: u64,
    /// CPU limit in cores.
    pub cpus: f64,
    /// Most processes and threads the sandbox may have.
    pub pids_limit: i64,
    /// Give the sandbox a network (off: no network at all).
    pub network: bool,
    /// Keep the root filesystem read-only (only `/tmp`, `/in` and `/out` are writable).
    pub read_only: bool,
    /// The user the command runs as; ProcOS's default is `nobody`.
    pub user: String,
    /// Size of the `/tmp` tmpfs in MiB.
    pub tmpfs_mb: u64,
    /// Largest `/out/output.json` (or stdout line) taken as output, in KiB.
    pub max_output_kb: u64,
    /// Most MiB the command may print to stdout and stderr together; past it the run is killed
    /// and fails as "too much output" (only the end of each is kept for the incident).
    pub max_printed_mb: u64,
    /// What isolates the run: a Docker container, or Linux namespaces (bubblewrap) over the
    /// image's root filesystem, with the same guards.
    pub backend: Backend,
}

/// What carries a sandboxed run out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One container per task on a Docker engine.
    #[default]
    Docker,
    /// bubblewrap: own user, PID, network, IPC, UTS and mount namespaces over the image's root
    /// filesystem (exported from Docker once and cached), limits through cgroups v1 or rlimits.
    Namespace,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            memory_mb: 256,
            cpus: 1.0,
            pids_limit: 128,
            network: false,
            read_only: true,
            user: "65534:65534".to_owned(),
            tmpfs_mb: 64,
            max_output_kb: 1024,
            max_printed_mb: 64,
            backend: Backend::Docker,
        }
    }
}

impl Guards {
    /// The guards this configuration turns off, for the worker's start-up warning.
    pub fn relaxed(&self) -> Vec<&'static str> {
        let mut off = Vec::new();
        if self.network {
            off.push("network = true: the container can reach the network");
        }
        if !self.read_only {
            off.push("read_only = false: the container can write its root filesystem");
        }
        let user = self.user.trim();
        if user.is_empty() || user == "root" || user == "0" || user.starts_with("0:") {
            off.push("user is root inside the container");
        }
        off
    }

    /// Refuses limits that cannot hold: every always-on limit must be above zero.
    pub fn check(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("sandbox.timeout must be more than 0s".into());
        }
        if self.memory_mb < 8 {
            return Err("sandbox.memory_mb must be at least 8".into());
        }
        if self.cpus.is_nan() || self.cpus <= 0.0 {
            return Err("sandbox.cpus must be more than 0".into());
        }
        if self.pids_limit < 1 {
            return Err("sandbox.pids_limit must be at least 1".into());
        }
        if self.max_printed_mb < 1 {
            return Err("sandbox.max_printed_mb must be at least 1".into());
        }
        Ok(())
    }

    /// The most bytes the command may print.
    pub fn max_printed_bytes(&self) -> u64 {
        self.max_printed_mb.saturating_mul(1024 * 1024)
    }

    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> i64 {
        i64::try_from(self.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
    }
}

/// A guard every sandbox container carries whatever its topic says: no setting turns it off,
/// and the sandbox proxy refuses a container without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlwaysOn {
    /// The container is marked as ProcOS's ([`crate::labels::TASK`]).
    TaskLabel,
    /// Every capability dropped.
    NoCapabilities,
    /// No gaining privileges through setuid files.
    NoNewPrivileges,
    /// A memory limit.
    MemoryLimit,
    /// A CPU limit.
    CpuLimit,
    /// A limit on processes and threads.
    PidsLimit,
}

impl AlwaysOn {
    /// Every always-on guard.
    pub const ALL: [AlwaysOn; 6] = [
        AlwaysOn::TaskLabel,
        AlwaysOn::NoCapabilities,
        AlwaysOn::NoNewPrivileges,
        AlwaysOn::MemoryLimit,
        AlwaysOn::CpuLimit,
        AlwaysOn::PidsLimit,
    ];
}
