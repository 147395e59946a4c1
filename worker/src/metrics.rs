//! What a worker tells operators: Prometheus metrics and the health state behind `/readyz`.
//!
//! One [`Telemetry`] is shared by every worker of a process (`procos up` runs several), so one
//! scrape sees the whole process. Metric names start with `procos_worker_`; counters end in
//! `_total` as Prometheus expects.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Metrics and health of the workers in this process. Cheap to clone; clones share everything.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

struct Inner {
    registry: Registry,
    metrics: Metrics,
    workers: Mutex<HashMap<String, WorkerState>>,
}

impl Default for Inner {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("procos_worker");
        let metrics = Metrics::register(&mut registry);
        Self {
            registry,
            metrics,
            workers: Mutex::default(),
        }
    }
}

/// Where one worker of the process stands, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkerState {
    /// Started; no fetch has answered yet.
    Starting,
    /// The last fetch reached the engine.
    Serving,
    /// The last fetch could not reach the engine (or the engine refused it).
    EngineUnavailable(String),
    /// Shutting down: fetches nothing new.
    Draining,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicLabel {
    pub(crate) topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) topic: String,
    pub(crate) outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FetchLabel {
    /// `tasks`, `empty` or `error`.
    pub(crate) result: &'static str,
}

fn duration_histogram() -> Histogram {
    // 1 ms … about 9 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// The metric families; names are registered with the `procos_worker` prefix.
pub(crate) struct Metrics {
    pub(crate) fetch_duration: Family<FetchLabel, Histogram, fn() -> Histogram>,
    pub(crate) empty_polls: Counter,
    pub(crate) fetch_errors: Counter,
    pub(crate) tasks_fetched: Family<TopicLabel, Counter>,
    pub(crate) tasks: Family<OutcomeLabels, Counter>,
    pub(crate) task_duration: Family<TopicLabel, Histogram, fn() -> Histogram>,
    pub(crate) lock_extensions: Family<TopicLabel, Counter>,
    pub(crate) lost_locks: Family<TopicLabel, Counter>,
    pub(crate) returned: Family<TopicLabel, Counter>,
    pub(crate) in_flight: Family<TopicLabel, Gauge>,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            fetch_duration: Family::new_with_constructor(duration_histogram),
            empty_polls: Counter::default(),
            fetch_errors: Counter::default(),
            tasks_fetched: Family::default(),
            tasks: Family::default(),
            task_duration: Family::new_with_constructor(duration_histogram),
            lock_extensions: Family::default(),
            lost_locks: Family::default(),
            returned: Family::default(),
            in_flight: Family::default(),
        };
        registry.register(
            "fetch_duration_seconds",
            "Round trip of fetch-and-lock calls (long polls included), by result: tasks, empty, error",
            metrics.fetch_duration.clone(),
        );
        registry.register(
            "empty_polls",
            "Long polls that ended without a task",
            metrics.empty_polls.clone(),
        );
        registry.register(
            "fetch_errors",
            "Fetch-and-lock calls that failed (engine unreachable, overloaded or refusing)",
            metrics.fetch_errors.clone(),
        );
        registry.register(
            "tasks_fetched",
            "External tasks locked by this worker",
            metrics.tasks_fetched.clone(),
        );
        registry.register(
            "tasks",
            "External tasks by topic and how they ended: completed, bpmn_error, failed (retries left), \
             incident (no retries left), gone (404 on write-back), refused (locked by another worker), \
             write_back_failed, abandoned (lock lost), unlocked (cancelled on shutdown)",
            metrics.tasks.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "How long adapters ran, by topic",
            metrics.task_duration.clone(),
        );
        registry.register(
            "lock_extensions",
            "Locks extended because a task was still running",
            metrics.lock_extensions.clone(),
        );
        registry.register(
            "lost_locks",
            "Runs abandoned because the engine said the lock was gone",
            metrics.lost_locks.clone(),
        );
        registry.register(
            "tasks_returned",
            "Tasks unlocked at once because their topic was at its max_tasks",
            metrics.returned.clone(),
        );
        registry.register(
            "tasks_in_flight",
            "Tasks running now",
            metrics.in_flight.clone(),
        );
        metrics
    }
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn record_fetch(&self, result: &'static str, took: Duration) {
        self.metrics()
            .fetch_duration
            .get_or_create(&FetchLabel { result })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn record_outcome(&self, topic: &str, outcome: &'static str) {
        self.metrics()
            .tasks
            .get_or_create(&OutcomeLabels {
                topic: topic.to_owned(),
                outcome,
            })
            .inc();
    }

    pub(crate) fn topic_counter(family: &Family<TopicLabel, Counter>, topic: &str) -> Counter {
        family
            .get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            })
            .clone()
    }

    pub(crate) fn set_state(&self, worker_id: &str, state: WorkerState) {
        self.workers().insert(worker_id.to_owned(), state);
    }

    /// Records whether the worker's last engine call (fetch, write-back, lock extension) reached
    /// the engine. A draining worker stays draining.
    pub(crate) fn engine_reached(&self, worker_id: &str, reached: Result<(), String>) {
        if let Some(state) = self.workers().get_mut(worker_id)
            && *state != WorkerState::Draining
        {
            *state = match reached {
                Ok(()) => WorkerState::Serving,
                Err(why) => WorkerState::EngineUnavailable(why),
            };
        }
    }

    pub(crate) fn remove_worker(&self, worker_id: &str) {
        self.workers().remove(worker_id);
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, WorkerState>> {
        // The map holds plain values; a panic elsewhere cannot leave it half-written.
        self.inner
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The metrics in the OpenMetrics text format Prometheus scrapes.
    pub fn encode_metrics(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// `Ok` when every worker of the process has reached the engine with its last fetch and none
    /// is draining; otherwise what is wrong, one line per worker.
    pub fn readiness(&self) -> Result<(), String> {
        let workers = self.workers();
        if workers.is_empty() {
            return Err("no worker is running".to_owned());
        }
        let problems: Vec<String> = workers
            .iter()
            .filter_map(|(id, state)| match state {
                WorkerState::Serving => None,
                WorkerState::Starting => Some(format!("{id}: no fetch has answered yet")),
                WorkerState::EngineUnavailable(why) => {
                    Some(format!("{id}: cannot fetch from the engine: {why}"))
                }
                WorkerState::Draining => Some(format!("{id}: shutting down")),
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prefixed_and_counters_end_in_total() {
        let telemetry = Telemetry::new();
        telemetry.record_outcome("echo", "completed");
        telemetry.metrics().empty_polls.inc();
        let text = telemetry.encode_metrics();
        assert!(
            text.contains(r#"procos_worker_tasks_total{topic="echo",outcome="completed"} 1"#),
            "{text}"
        );
        assert!(text.contains("procos_worker_empty_polls_total 1"), "{text}");
    }

    #[test]
    fn ready_only_when_every_worker_reaches_the_engine() {
        let telemetry = Telemetry::new();
        assert!(telemetry.readiness().is_err());
        telemetry.set_state("a", WorkerState::Serving);
        assert!(telemetry.readiness().is_ok());
        telemetry.set_state(
            "b",
            WorkerState::EngineUnavailable("connection refused".into()),
        );
        let why = telemetry.readiness().unwrap_err();
        assert!(
            why.contains("b: cannot fetch") && why.contains("refused"),
            "{why}"
        );
        telemetry.remove_worker("b");
        telemetry.set_state("a", WorkerState::Draining);
        telemetry.engine_reached("a", Ok(()));
        assert!(telemetry.readiness().unwrap_err().contains("shutting down"));
    }
}
