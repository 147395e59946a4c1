//! One task's cgroups (v1: the hierarchy these hosts mount): memory (swap included where the
//! host accounts it), processes, and CPU through the CFS quota. A controller the worker may not
//! use (not mounted, not writable) is left out, and the launcher falls back to rlimits for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use procos_sandbox_contract::Guards;

/// Where the v1 controllers are mounted.
const ROOT: &str = "/sys/fs/cgroup";
/// ProcOS's own sub-tree in each controller.
const PARENT: &str = "procos";
/// CFS period: 100 ms, the kernel's default.
const CFS_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// The cgroups made for one task; [`TaskCgroup::remove`] takes them away.
#[derive(Debug)]
pub(super) struct TaskCgroup {
    dirs: Vec<(Controller, PathBuf)>,
}

impl TaskCgroup {
    /// Makes the task's cgroups with `guards`' limits; `None` when no controller can be used.
    pub(super) fn create(task_id: &str, guards: &Guards) -> Option<Self> {
        let name = format!("{}-{}", clean(task_id), std::process::id());
        let memory = guards.memory_bytes().to_string();
        let quota = ((guards.cpus * CFS_PERIOD_US as f64).ceil() as u64).max(1000);
        let settings: [(Controller, Vec<(&str, String)>); 3] = [
            (
                Controller::Memory,
                vec![("memory.limit_in_bytes", memory.clone())],
            ),
            (
                Controller::Pids,
                vec![("pids.max", guards.pids_limit.to_string())],
            ),
            (
                Controller::Cpu,
                vec![
                    ("cpu.cfs_period_us", CFS_PERIOD_US.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            ),
        ];
        let mut dirs = Vec::new();
        for (controller, files) in settings {
            let dir = Path::new(ROOT)
                .join(controller.name())
                .join(PARENT)
                .join(&name);
            let made = std::fs::create_dir_all(&dir).is_ok()
                && files
                    .iter()
                    .all(|(file, value)| std::fs::write(dir.join(file), value).is_ok());
            if made {
                if controller == Controller::Memory {
                    // Only where the host accounts swap; elsewhere there is none to limit.
                    let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), &memory);
                }
                dirs.push((controller, dir));
            } else {
                let _ = std::fs::remove_dir(&dir);
            }
        }
        (!dirs.is_empty()).then_some(Self { dirs })
    }

    /// The `cgroup.procs` files the launcher writes itself into.
    pub(super) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(_, dir)| dir.join("cgroup.procs"))
            .collect()
    }

    pub(super) fn limits_memory(&self) -> bool {
        self.has(Controller::Memory)
    }

    pub(super) fn limits_pids(&self) -> bool {
        self.has(Controller::Pids)
    }

    fn has(&self, controller: Controller) -> bool {
        self.dirs.iter().any(|(c, _)| *c == controller)
    }

    /// Whether the kernel's OOM killer killed a process of the task at its memory limit.
    pub(super) fn oom_killed(&self) -> bool {
        self.dirs
            .iter()
            .filter(|(c, _)| *c == Controller::Memory)
            .filter_map(|(_, dir)| std::fs::read_to_string(dir.join("memory.oom_control")).ok())
            .any(|control| {
                control.lines().any(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
    }

    /// SIGKILL to every process still in the task's cgroups.
    pub(super) fn kill_all(&self) {
        for (_, dir) in &self.dirs {
            let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
                continue;
            };
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Kills what is left and removes the cgroups, waiting briefly for killed processes to go.
    pub(super) async fn remove(mut self) {
        for _ in 0..50 {
            self.kill_all();
            self.dirs
                .retain(|(_, dir)| std::fs::remove_dir(dir).is_err() && dir.exists());
            if self.dirs.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (_, dir) in &self.dirs {
            tracing::warn!(cgroup = %dir.display(), "could not remove a task's cgroup");
        }
    }
}

fn clean(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect()
}
