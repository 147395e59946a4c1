//! Clearing what dead workers left: a worker removes its own containers on every path, but one
//! that was killed cannot. Any worker may do it, on rules that never touch a container a live
//! worker still uses.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use procos_sandbox_contract::labels;

use super::guards::unix_now;
use super::warm::GAVE_UP_WAITING;
use super::{Sandbox, lock};

/// How far past its deadline a container must be before another worker takes it for a dead
/// worker's: its own kills it at the deadline and removes it seconds later. Also absorbs clock
/// skew between workers on different machines sharing one Docker engine.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);
/// How often at most one sandbox looks for containers of dead workers (a list call or two).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Sandbox {
    /// Clears away what dead workers left, at most every [`SWEEP_EVERY`]: a worker removes its
    /// own containers on every path, but one that was killed cannot. Any worker may do it, on
    /// rules that never touch a container a live worker still uses.
    pub(super) async fn sweep_if_due(&self) {
        {
            let mut last = lock(&self.last_sweep);
            if last.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.remove_unremoved().await;
        self.remove_given_up_warm_containers().await;
        self.remove_containers_past_their_deadline().await;
    }

    /// Warm containers that exited with the runner's give-up code: their task never came. A
    /// warm container that was handed a task carries the same label but ends with the task's
    /// code (the runner maps every script exit to 0, 1 or 3), and its worker may still be
    /// reading its output.
    async fn remove_given_up_warm_containers(&self) {
        let filters = HashMap::from([
            ("label", vec![labels::WARM.to_owned()]),
            ("status", vec!["exited".to_owned()]),
            ("exited", vec![GAVE_UP_WAITING.to_string()]),
        ]);
        for container in self.list(&filters).await {
            if let Some(id) = container.id {
                self.remove(&id).await;
            }
        }
    }

    /// Sandbox containers, running or not, more than [`ORPHAN_GRACE`] past their deadline:
    /// their worker would have killed them at it and removed them within seconds, so it is
    /// gone. Containers without a deadline are left alone.
    async fn remove_containers_past_their_deadline(&self) {
        let filters = HashMap::from([("label", vec![labels::DEADLINE.to_owned()])]);
        let cutoff = unix_now().saturating_sub(ORPHAN_GRACE.as_secs());
        for container in self.list(&filters).await {
            let deadline = container
                .labels
                .as_ref()
                .and_then(|labels| labels.get(labels::DEADLINE))
                .and_then(|value| value.parse::<u64>().ok());
            if let (Some(id), Some(deadline)) = (container.id, deadline)
                && deadline < cutoff
            {
                tracing::info!(container = %id, state = ?container.state, "removing a sandbox container its worker left behind (past its deadline)");
                self.remove(&id).await;
            }
        }
    }

    /// Every container, running or not, that matches `filters`; none (and a warning) when Docker
    /// cannot say.
    async fn list(
        &self,
        filters: &HashMap<&str, Vec<String>>,
    ) -> Vec<bollard::models::ContainerSummary> {
        let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(filters)
            .build();
        match self.docker.list_containers(Some(options)).await {
            Ok(containers) => containers,
            Err(e) => {
                tracing::warn!(error = %e, "could not list sandbox containers to clear those of dead workers; trying again in a minute");
                Vec::new()
            }
        }
    }
}
