//! What a worker tells operators: Prometheus metrics and the health state behind `/readyz`.
//!
//! The fetch loop and the task handlers say what happened, in worker terms
//! ([`Telemetry::fetched`], [`Telemetry::lock_lost`], [`Telemetry::task_finished`], …); this
//! module alone decides which metric family or readiness state that moves. No family or label
//! leaves it, so a metric can be renamed, split or sent elsewhere without touching task code.
//!
//! One [`Telemetry`] is shared by every worker of a process (`procos up` runs several), so one
//! scrape sees the whole process. Metric names start with `procos_worker_`; counters end in
//! `_total` as Prometheus expects.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use camunda_client::ClientError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Metrics and health of the workers in this process. Cheap to clone; clones share everything.
///
/// Create one per process, hand a clone to each [`Worker::new`](crate::Worker::new) and to the
/// [`ObservabilityServer`](crate::ObservabilityServer) that serves it.
///
/// A concrete type rather than a trait: the intent methods are already the seam. A second sink
/// (OpenTelemetry, say) is one more mapping inside them, and the worker's code does not change;
/// a trait would put a type parameter or a `dyn` on `Worker` for an implementation that does not
/// exist yet, and readiness (which `/readyz` must answer from one place) would not fit it.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// How the handling of one external task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskOutcome {
    /// The engine took the completion.
    Completed,
    /// The engine took the BPMN error.
    BpmnError,
    /// The engine took the failure; retries are left.
    Failed,
    /// The engine took the failure with no retries left and raised an incident.
    Incident,
    /// The write-back met a 404: the task no longer exists.
    Gone,
    /// The write-back met a 400: another worker holds the lock now.
    Refused,
    /// The write-back did not reach the engine while the lock lasted.
    WriteBackFailed,
    /// The lock was lost during the run; nothing was written back.
    Abandoned,
    /// Cancelled on shutdown and unlocked for other workers.
    Unlocked,
}

impl TaskOutcome {
    /// The name logs and the `outcome` label of `procos_worker_tasks_total` use.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::BpmnError => "bpmn_error",
            Self::Failed => "failed",
            Self::Incident => "incident",
            Self::Gone => "gone",
            Self::Refused => "refused",
            Self::WriteBackFailed => "write_back_failed",
            Self::Abandoned => "abandoned",
            Self::Unlocked => "unlocked",
        }
    }
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    // The intents, in the order of a worker's life.

    /// A worker of this process started; it is not ready until a fetch answers.
    pub(crate) fn worker_started(&self, worker_id: &str) {
        self.workers()
            .insert(worker_id.to_owned(), WorkerState::Starting);
    }

    /// A fetch-and-lock answered with `tasks` tasks after `took` (long poll included).
    pub(crate) fn fetched(&self, worker_id: &str, tasks: usize, took: Duration) {
        self.engine_reached(worker_id, Ok(()));
        let metrics = self.metrics();
        if tasks == 0 {
            metrics.observe_fetch("empty", took);
            metrics.empty_polls.inc();
        } else {
            metrics.observe_fetch("tasks", took);
        }
    }

    /// A fetch-and-lock failed after `took`. An engine whose long-poll queue is full is up, only
    /// busy: the worker stays ready.
    pub(crate) fn fetch_failed(&self, worker_id: &str, error: &ClientError, took: Duration) {
        let metrics = self.metrics();
        metrics.observe_fetch("error", took);
        metrics.fetch_errors.inc();
        if error.is_overloaded() {
            self.engine_reached(worker_id, Ok(()));
        } else {
            self.engine_reached(worker_id, Err(error.to_string()));
        }
    }

    /// A fetched task of `topic` was unlocked at once because the topic is at its `max_tasks`.
    pub(crate) fn task_returned(&self, topic: &str) {
        self.metrics()
            .returned
            .get_or_create(&topic_label(topic))
            .inc();
    }

    /// A fetched task of `topic` got its slots and starts running.
    pub(crate) fn task_started(&self, topic: &str) {
        let metrics = self.metrics();
        let label = topic_label(topic);
        metrics.tasks_fetched.get_or_create(&label).inc();
        metrics.in_flight.get_or_create(&label).inc();
    }

    /// The lock of a running task of `topic` was extended.
    pub(crate) fn lock_extended(&self, topic: &str) {
        self.metrics()
            .lock_extensions
            .get_or_create(&topic_label(topic))
            .inc();
    }

    /// A lock extension did not reach the engine (it is tried again while the task runs).
    pub(crate) fn lock_extension_failed(&self, worker_id: &str, error: &ClientError) {
        self.engine_reached(worker_id, Err(error.to_string()));
    }

    /// The engine said the lock of a running task of `topic` is gone; the run is abandoned.
    pub(crate) fn lock_lost(&self, topic: &str) {
        self.metrics()
            .lost_locks
            .get_or_create(&topic_label(topic))
            .inc();
    }

    /// The engine took a write-back (completion, BPMN error or failure).
    pub(crate) fn written_back(&self, worker_id: &str) {
        self.engine_reached(worker_id, Ok(()));
    }

    /// A write-back did not reach the engine (it is tried again while the lock lasts).
    pub(crate) fn write_back_failed(&self, worker_id: &str, error: &ClientError) {
        self.engine_reached(worker_id, Err(error.to_string()));
    }

    /// A task of `topic` ended with `outcome`; `ran` is how long its adapter ran, when the
    /// adapter's answer counted (not for a run cancelled on shutdown or abandoned with its lock).
    pub(crate) fn task_finished(&self, topic: &str, outcome: TaskOutcome, ran: Option<Duration>) {
        let metrics = self.metrics();
        let label = topic_label(topic);
        if let Some(ran) = ran {
            metrics
                .task_duration
                .get_or_create(&label)
                .observe(ran.as_secs_f64());
        }
        metrics.in_flight.get_or_create(&label).dec();
        metrics
            .tasks
            .get_or_create(&OutcomeLabels {
                topic: label.topic,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// A new topic table was taken (or was the running one): a refusal reported before is over.
    pub(crate) fn table_applied(&self) {
        let metrics = self.metrics();
        metrics
            .table_reloads
            .get_or_create(&ReloadLabel { result: "applied" })
            .inc();
        metrics.table_refused.set(0);
        *self.refusal() = None;
    }

    /// A new topic table was refused for `problem`; the running one still serves. The process
    /// stays ready (its workers serve), but `/readyz` names the refusal until a table is taken.
    pub(crate) fn table_refused(&self, problem: &str) {
        let metrics = self.metrics();
        metrics
            .table_reloads
            .get_or_create(&ReloadLabel { result: "refused" })
            .inc();
        metrics.table_refused.set(1);
        *self.refusal() = Some(problem.to_owned());
    }

    /// A topic's adapter cannot serve now (`why`: the reason and the fix): the worker does not
    /// fetch it, and `/readyz` names it. The process stays ready for its other topics.
    pub(crate) fn topic_unavailable(&self, topic: &str, why: &str) {
        self.unavailable_topics_mut()
            .insert(topic.to_owned(), why.to_owned());
    }

    /// A topic's adapter serves again (or the topic left the table).
    pub(crate) fn topic_available(&self, topic: &str) {
        self.unavailable_topics_mut().remove(topic);
    }

    /// A worker is shutting down and fetches nothing new; it stays not ready until it stops.
    pub(crate) fn worker_draining(&self, worker_id: &str) {
        self.workers()
            .insert(worker_id.to_owned(), WorkerState::Draining);
    }

    /// A worker has stopped; readiness no longer counts it.
    pub(crate) fn worker_stopped(&self, worker_id: &str) {
        self.workers().remove(worker_id);
    }

    // What the observability endpoint reads.

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

    /// Why the last new topic table was refused, while the previous one still serves; `None`
    /// when the last one was taken. `/readyz` shows it whether or not the process is ready.
    pub fn refused_table(&self) -> Option<String> {
        self.refusal().as_ref().map(|why| {
            format!("the new topic table was refused, the previous one still serves: {why}")
        })
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// What `/topics` reports: the unavailable topics and a refused table.
    pub fn topic_report(&self) -> crate::TopicReport {
        crate::TopicReport {
            unavailable: self
                .unavailable_topics_mut()
                .iter()
                .map(|(topic, why)| crate::UnavailableTopic {
                    topic: topic.clone(),
                    why: why.clone(),
                })
                .collect(),
            refused_table: self.refusal().clone(),
        }
    }

    /// The topics this process does not fetch because their adapter cannot serve now, one line
    /// each with the reason and the fix.
    pub fn unavailable_topics(&self) -> Vec<String> {
        self.unavailable_topics_mut()
            .iter()
            .map(|(topic, why)| format!("topic `{topic}` is unavailable and not fetched: {why}"))
            .collect()
    }

    fn unavailable_topics_mut(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A plain map; a panic elsewhere cannot leave it half-written.
        self.inner
            .unavailable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn refusal(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A plain value; a panic elsewhere cannot leave it half-written.
        self.inner
            .refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records whether the worker's last engine call (fetch, write-back, lock extension) reached
    /// the engine. A draining worker stays draining.
    fn engine_reached(&self, worker_id: &str, reached: Result<(), String>) {
        if let Some(state) = self.workers().get_mut(worker_id)
            && *state != WorkerState::Draining
        {
            *state = match reached {
                Ok(()) => WorkerState::Serving,
                Err(why) => WorkerState::EngineUnavailable(why),
            };
        }
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, WorkerState>> {
        // The map holds plain values; a panic elsewhere cannot leave it half-written.
        self.inner
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

struct Inner {
    registry: Registry,
    metrics: Metrics,
    workers: Mutex<HashMap<String, WorkerState>>,
    /// Why the last new topic table was refused, if it was.
    refusal: Mutex<Option<String>>,
    /// Topics whose adapter cannot serve now, with why and the fix.
    unavailable: Mutex<BTreeMap<String, String>>,
}

impl Default for Inner {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("procos_worker");
        let metrics = Metrics::register(&mut registry);
        Self {
            registry,
            metrics,
            workers: Mutex::default(),
            refusal: Mutex::default(),
            unavailable: Mutex::default(),
        }
    }
}

/// Where one worker of the process stands, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WorkerState {
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
struct TopicLabel {
    topic: String,
}

fn topic_label(topic: &str) -> TopicLabel {
    TopicLabel {
        topic: topic.to_owned(),
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    topic: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    /// `applied` or `refused`.
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabel {
    /// `tasks`, `empty` or `error`.
    result: &'static str,
}

fn duration_histogram() -> Histogram {
    // 1 ms … about 9 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// The metric families; names are registered with the `procos_worker` prefix.
struct Metrics {
    fetch_duration: Family<FetchLabel, Histogram, fn() -> Histogram>,
    empty_polls: Counter,
    fetch_errors: Counter,
    tasks_fetched: Family<TopicLabel, Counter>,
    tasks: Family<OutcomeLabels, Counter>,
    task_duration: Family<TopicLabel, Histogram, fn() -> Histogram>,
    lock_extensions: Family<TopicLabel, Counter>,
    lost_locks: Family<TopicLabel, Counter>,
    returned: Family<TopicLabel, Counter>,
    in_flight: Family<TopicLabel, Gauge>,
    table_reloads: Family<ReloadLabel, Counter>,
    table_refused: Gauge,
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
            table_reloads: Family::default(),
            table_refused: Gauge::default(),
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
        registry.register(
            "topic_table_reloads",
            "New topic tables offered while running, by result: applied, refused",
            metrics.table_reloads.clone(),
        );
        registry.register(
            "topic_table_refused",
            "1 while the last new topic table was refused and the previous one still serves",
            metrics.table_refused.clone(),
        );
        metrics
    }

    fn observe_fetch(&self, result: &'static str, took: Duration) {
        self.fetch_duration
            .get_or_create(&FetchLabel { result })
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rejected(status: u16, message: &str) -> ClientError {
        ClientError::Rejected {
            method: "POST",
            path: "external-task/fetchAndLock".into(),
            status,
            error_type: Some("RestException".into()),
            message: message.into(),
            problems: vec![],
        }
    }

    fn overloaded() -> ClientError {
        rejected(
            500,
            "At the moment the server has to handle too many requests at the same time.",
        )
    }

    /// The scrape's sample lines: metric name with labels → value.
    fn samples(telemetry: &Telemetry) -> HashMap<String, String> {
        telemetry
            .encode_metrics()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[track_caller]
    fn assert_sample(telemetry: &Telemetry, sample: &str, value: &str) {
        let text = telemetry.encode_metrics();
        assert_eq!(
            samples(telemetry).get(sample).map(String::as_str),
            Some(value),
            "{sample} in\n{text}"
        );
    }

    #[test]
    fn metrics_are_prefixed_and_counters_end_in_total() {
        let telemetry = Telemetry::new();
        telemetry.task_started("echo");
        telemetry.task_finished("echo", TaskOutcome::Completed, Some(MS));
        telemetry.fetched("w", 0, MS);
        let text = telemetry.encode_metrics();
        assert!(
            text.contains(r#"procos_worker_tasks_total{topic="echo",outcome="completed"} 1"#),
            "{text}"
        );
        assert!(text.contains("procos_worker_empty_polls_total 1"), "{text}");
    }

    #[test]
    fn a_fetch_is_timed_by_result_and_an_empty_one_counted() {
        let telemetry = Telemetry::new();
        telemetry.fetched("w", 0, 3 * MS);
        telemetry.fetched("w", 2, 5 * MS);
        telemetry.fetched("w", 1, 5 * MS);
        let count = "procos_worker_fetch_duration_seconds_count";
        assert_sample(&telemetry, &format!(r#"{count}{{result="empty"}}"#), "1");
        assert_sample(&telemetry, &format!(r#"{count}{{result="tasks"}}"#), "2");
        assert_sample(&telemetry, "procos_worker_empty_polls_total", "1");
        assert_sample(&telemetry, "procos_worker_fetch_errors_total", "0");
    }

    #[test]
    fn a_failed_fetch_is_timed_and_counted() {
        let telemetry = Telemetry::new();
        telemetry.fetch_failed("w", &rejected(503, "down"), 7 * MS);
        telemetry.fetch_failed("w", &overloaded(), 7 * MS);
        assert_sample(
            &telemetry,
            r#"procos_worker_fetch_duration_seconds_count{result="error"}"#,
            "2",
        );
        assert_sample(
            &telemetry,
            r#"procos_worker_fetch_duration_seconds_sum{result="error"}"#,
            "0.014",
        );
        assert_sample(&telemetry, "procos_worker_fetch_errors_total", "2");
        assert_sample(&telemetry, "procos_worker_empty_polls_total", "0");
    }

    #[test]
    fn a_task_is_counted_when_it_starts_and_when_it_ends() {
        let telemetry = Telemetry::new();
        telemetry.task_started("echo");
        telemetry.task_started("echo");
        assert_sample(
            &telemetry,
            r#"procos_worker_tasks_fetched_total{topic="echo"}"#,
            "2",
        );
        assert_sample(
            &telemetry,
            r#"procos_worker_tasks_in_flight{topic="echo"}"#,
            "2",
        );
        telemetry.task_finished("echo", TaskOutcome::Incident, Some(250 * MS));
        assert_sample(
            &telemetry,
            r#"procos_worker_tasks_in_flight{topic="echo"}"#,
            "1",
        );
        assert_sample(
            &telemetry,
            r#"procos_worker_tasks_total{topic="echo",outcome="incident"}"#,
            "1",
        );
        assert_sample(
            &telemetry,
            r#"procos_worker_task_duration_seconds_sum{topic="echo"}"#,
            "0.25",
        );
        assert_sample(
            &telemetry,
            r#"procos_worker_task_duration_seconds_count{topic="echo"}"#,
            "1",
        );
    }

    #[test]
    fn a_run_whose_answer_did_not_count_is_not_timed() {
        let telemetry = Telemetry::new();
        for outcome in [TaskOutcome::Abandoned, TaskOutcome::Unlocked] {
            telemetry.task_started("echo");
            telemetry.task_finished("echo", outcome, None);
            assert_sample(
                &telemetry,
                &format!(
                    r#"procos_worker_tasks_total{{topic="echo",outcome="{}"}}"#,
                    outcome.as_str()
                ),
                "1",
            );
        }
        assert_sample(
            &telemetry,
            r#"procos_worker_tasks_in_flight{topic="echo"}"#,
            "0",
        );
        let text = telemetry.encode_metrics();
        assert!(!text.contains("task_duration_seconds_count"), "{text}");
    }

    #[test]
    fn every_outcome_has_its_documented_label() {
        let telemetry = Telemetry::new();
        let all = [
            (TaskOutcome::Completed, "completed"),
            (TaskOutcome::BpmnError, "bpmn_error"),
            (TaskOutcome::Failed, "failed"),
            (TaskOutcome::Incident, "incident"),
            (TaskOutcome::Gone, "gone"),
            (TaskOutcome::Refused, "refused"),
            (TaskOutcome::WriteBackFailed, "write_back_failed"),
            (TaskOutcome::Abandoned, "abandoned"),
            (TaskOutcome::Unlocked, "unlocked"),
        ];
        for (outcome, label) in all {
            telemetry.task_finished("t", outcome, None);
            assert_sample(
                &telemetry,
                &format!(r#"procos_worker_tasks_total{{topic="t",outcome="{label}"}}"#),
                "1",
            );
        }
    }

    #[test]
    fn lock_extensions_losses_and_returned_tasks_are_counted_by_topic() {
        let telemetry = Telemetry::new();
        telemetry.lock_extended("slow");
        telemetry.lock_extended("slow");
        telemetry.lock_lost("slow");
        telemetry.task_returned("limited");
        assert_sample(
            &telemetry,
            r#"procos_worker_lock_extensions_total{topic="slow"}"#,
            "2",
        );
        assert_sample(
            &telemetry,
            r#"procos_worker_lost_locks_total{topic="slow"}"#,
            "1",
        );
        assert_sample(
            &telemetry,
            r#"procos_worker_tasks_returned_total{topic="limited"}"#,
            "1",
        );
    }

    #[test]
    fn ready_only_when_every_worker_reaches_the_engine() {
        let telemetry = Telemetry::new();
        assert!(telemetry.readiness().is_err());
        telemetry.worker_started("a");
        telemetry.fetched("a", 0, MS);
        assert!(telemetry.readiness().is_ok());
        telemetry.worker_started("b");
        telemetry.fetch_failed("b", &rejected(503, "connection refused"), MS);
        let why = telemetry.readiness().unwrap_err();
        assert!(
            why.contains("b: cannot fetch") && why.contains("refused"),
            "{why}"
        );
        telemetry.worker_stopped("b");
        telemetry.worker_draining("a");
        telemetry.written_back("a");
        assert!(telemetry.readiness().unwrap_err().contains("shutting down"));
    }

    #[test]
    fn a_worker_is_not_ready_before_its_first_fetch_answers() {
        let telemetry = Telemetry::new();
        telemetry.worker_started("a");
        let why = telemetry.readiness().unwrap_err();
        assert!(why.contains("a: no fetch has answered yet"), "{why}");
    }

    #[test]
    fn an_overloaded_engine_is_up() {
        let telemetry = Telemetry::new();
        telemetry.worker_started("a");
        telemetry.fetch_failed("a", &overloaded(), MS);
        assert!(telemetry.readiness().is_ok());
    }

    #[test]
    fn failed_write_backs_and_lock_extensions_make_a_worker_unready_until_the_engine_answers() {
        let telemetry = Telemetry::new();
        telemetry.worker_started("a");
        telemetry.fetched("a", 1, MS);
        telemetry.write_back_failed("a", &rejected(502, "bad gateway"));
        let why = telemetry.readiness().unwrap_err();
        assert!(why.contains("bad gateway"), "{why}");
        telemetry.written_back("a");
        assert!(telemetry.readiness().is_ok());
        telemetry.lock_extension_failed("a", &rejected(503, "unavailable"));
        let why = telemetry.readiness().unwrap_err();
        assert!(why.contains("unavailable"), "{why}");
        telemetry.fetched("a", 0, MS);
        assert!(telemetry.readiness().is_ok());
    }

    #[test]
    fn a_refused_table_is_named_and_counted_until_one_is_taken() {
        let telemetry = Telemetry::new();
        telemetry.worker_started("a");
        telemetry.fetched("a", 0, MS);
        telemetry.table_refused("`topics.t.lock_duration`: must be at least 1s");
        assert!(telemetry.readiness().is_ok(), "the old table serves");
        let note = telemetry.refused_table().unwrap();
        assert!(
            note.contains("refused") && note.contains("topics.t.lock_duration"),
            "{note}"
        );
        assert_sample(
            &telemetry,
            r#"procos_worker_topic_table_reloads_total{result="refused"}"#,
            "1",
        );
        assert_sample(&telemetry, "procos_worker_topic_table_refused", "1");
        telemetry.table_applied();
        assert_eq!(telemetry.refused_table(), None);
        assert_sample(&telemetry, "procos_worker_topic_table_refused", "0");
        assert_sample(
            &telemetry,
            r#"procos_worker_topic_table_reloads_total{result="applied"}"#,
            "1",
        );
    }

    #[test]
    fn readiness_of_a_draining_worker_does_not_change_with_engine_answers() {
        let telemetry = Telemetry::new();
        telemetry.worker_started("a");
        telemetry.worker_draining("a");
        telemetry.fetched("a", 0, MS);
        telemetry.fetch_failed("a", &rejected(503, "down"), MS);
        let why = telemetry.readiness().unwrap_err();
        assert_eq!(why, "a: shutting down");
    }
}
