//! What the fault tests share: waits for completions and ended instances, a worker's stop, and
//! the figures of a fault test: how many instances ran, how many ended, and whether each
//! external task completed exactly once, from the engine's external-task log and history; how
//! many runs were thrown away (a lapsed lock: the result came back to a task another worker had
//! by then), from the workers' logs. Printed, and checked by [`Tally::assert_nothing_lost`].

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use camunda_client::{EngineClient, ExternalTaskLogQuery, HistoricProcessInstanceQuery};
use nix::sys::signal::Signal;

use super::{ProcosProcess, assert_eventually};

/// What a fault run came to.
#[derive(Debug, Default)]
pub struct Tally {
    /// The fault, as the printed line names it.
    pub fault: String,
    pub instances: usize,
    /// Instances history shows completed.
    pub completed: usize,
    /// Instances that did not complete: lost.
    pub lost: usize,
    /// External tasks the log shows completed more than once.
    pub duplicate_completions: usize,
    /// Successful completions in the external-task log.
    pub completions: usize,
    /// Runs whose result the engine did not take (the task was gone, or locked by another
    /// worker after this one's lock lapsed), or that were abandoned when the lock was lost.
    pub reruns: usize,
    /// From the fault's end until every instance had completed.
    pub time_to_recover: Duration,
}

impl Tally {
    /// Counts the instances of `key` that `instances` names and their tasks' completions, and
    /// the re-runs the workers' `logs` report.
    pub async fn count(
        fault: &str,
        client: &EngineClient,
        key: &str,
        instances: &[String],
        logs: &[String],
        time_to_recover: Duration,
    ) -> Tally {
        let history = client
            .historic_process_instances(&HistoricProcessInstanceQuery {
                process_definition_key: Some(key.to_owned()),
                ..Default::default()
            })
            .await
            .unwrap();
        let completed: std::collections::HashSet<&str> = history
            .iter()
            .filter(|h| h.state == "COMPLETED")
            .map(|h| h.id.as_str())
            .collect();
        let log = client
            .external_task_log(&ExternalTaskLogQuery {
                process_definition_key: Some(key.to_owned()),
                success_log: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut per_task: HashMap<&str, usize> = HashMap::new();
        for entry in &log {
            *per_task.entry(entry.external_task_id.as_str()).or_default() += 1;
        }
        let lost = instances
            .iter()
            .filter(|id| !completed.contains(id.as_str()))
            .count();
        Tally {
            fault: fault.to_owned(),
            instances: instances.len(),
            completed: instances.len() - lost,
            lost,
            duplicate_completions: per_task.values().filter(|&&n| n > 1).count(),
            completions: log.len(),
            reruns: logs.iter().map(|log| reruns_in(log)).sum(),
            time_to_recover,
        }
    }

    /// Prints the figures and checks that nothing was lost and nothing completed twice, with
    /// `tasks_per_instance` completions for each instance.
    pub fn assert_nothing_lost(&self, tasks_per_instance: usize) {
        eprintln!("{self}");
        assert_eq!(self.lost, 0, "{self}");
        assert_eq!(self.duplicate_completions, 0, "{self}");
        assert_eq!(
            self.completions,
            self.instances * tasks_per_instance,
            "{self}"
        );
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fault `{}`: instances {}, completed {}, lost {}, duplicate completions {}, \
             completions {}, re-runs after a lapsed lock {}, time to recover {:.1} s",
            self.fault,
            self.instances,
            self.completed,
            self.lost,
            self.duplicate_completions,
            self.completions,
            self.reruns,
            self.time_to_recover.as_secs_f64()
        )
    }
}

/// Runs a worker's log reports as thrown away: the engine no longer had the task or gave it to
/// another worker when the result came, the result could not be written back before the lock
/// ran out (the task runs again), or the lock was lost while it ran.
pub fn reruns_in(log: &str) -> usize {
    log.lines()
        .filter(|line| {
            line.contains("the engine no longer has the task")
                || line.contains("the engine refused the result")
                || line.contains("could not write the result back")
                || line.contains("the lock is gone")
        })
        .count()
}

/// How many external tasks of `key` the engine's log shows completed.
pub async fn completed_tasks(client: &EngineClient, key: &str) -> Option<u64> {
    client
        .external_task_log_count(&ExternalTaskLogQuery {
            process_definition_key: Some(key.to_owned()),
            success_log: Some(true),
            ..Default::default()
        })
        .await
        .ok()
}

/// Waits until `at_least` external tasks of `key` have completed; how many had.
pub async fn wait_for_completions(
    client: &EngineClient,
    key: &str,
    at_least: u64,
    within: Duration,
) -> u64 {
    assert_eventually(
        &format!("{at_least} completed tasks of {key}"),
        within,
        || async {
            let completed = completed_tasks(client, key).await?;
            (completed >= at_least).then_some(completed)
        },
    )
    .await
}

/// Waits until history shows all `n` instances of `key` ended.
pub async fn wait_for_all_ended(client: &EngineClient, key: &str, n: usize, within: Duration) {
    assert_eventually(
        &format!("all {n} instances of {key} to end"),
        within,
        || async {
            let ended = client
                .historic_process_instance_count(&HistoricProcessInstanceQuery {
                    process_definition_key: Some(key.to_owned()),
                    finished: true,
                    ..Default::default()
                })
                .await
                .ok()?;
            (ended >= n as u64).then_some(())
        },
    )
    .await;
}

/// Asserts that `worker` is still running (it was not the one killed), then stops it in order:
/// it must drain and exit 0 `within`. Its log.
pub async fn assert_alive_and_stop(mut worker: ProcosProcess, within: Duration) -> String {
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "worker {} is still running after the fault",
        worker.worker_id
    );
    worker.signal(Signal::SIGTERM);
    let id = worker.worker_id.clone();
    let (status, log) = worker.wait(within).await;
    assert!(
        status.success(),
        "worker {id} exits 0 after SIGTERM: {status}"
    );
    log
}
