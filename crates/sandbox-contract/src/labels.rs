//! The labels every sandbox container carries. The sandbox finds its own and dead workers'
//! containers by them; the proxy creates and touches only containers with [`TASK`].

use std::collections::HashMap;

/// Marks a ProcOS sandbox container; its value is the external task's id (or `warm-…` for a
/// container still waiting for its task).
pub const TASK: &str = "io.procos.task";
/// The topic whose task the container runs.
pub const TOPIC: &str = "io.procos.topic";
/// A warm container, with its pool's key (topic and image) as the value.
pub const WARM: &str = "io.procos.warm";
/// The Unix time (seconds) by which the container has ended on every path its worker drives:
/// created, plus the longest wait for a warm container's task, plus the timeout. Past it (and a
/// grace), any worker may remove the container: its own worker is gone.
pub const DEADLINE: &str = "io.procos.deadline";

/// The values of a sandbox container's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLabels {
    /// The external task's id ([`TASK`]).
    pub task: String,
    /// The task's topic ([`TOPIC`]).
    pub topic: String,
    /// Unix seconds ([`DEADLINE`]).
    pub deadline: u64,
    /// The warm pool's key ([`WARM`]) for a container that waits for its task.
    pub warm: Option<String>,
}

impl SandboxLabels {
    /// The labels as Docker takes them.
    pub fn to_map(&self) -> HashMap<String, String> {
        [
            (TASK.to_owned(), self.task.clone()),
            (TOPIC.to_owned(), self.topic.clone()),
            (DEADLINE.to_owned(), self.deadline.to_string()),
        ]
        .into_iter()
        .chain(self.warm.clone().map(|key| (WARM.to_owned(), key)))
        .collect()
    }
}
