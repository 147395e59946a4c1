//! One external task, from lock to write-back: run the adapter (a panic or a timeout becomes a
//! failure, never a dead worker), then tell the engine the outcome.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use camunda_client::{
    BpmnErrorReport, ClientError, CompleteTask, EngineClient, FailureReport, LockedExternalTask,
    MULTI_INSTANCE_VARIABLES, Variable, Variables,
};
use futures_util::FutureExt as _;
use procos_adapters::{
    AdapterTask, Failure, Outcome, Retry, SETTING_PREFIX, TaskSettings, without_settings,
};
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::backoff::{Backoff, exponential};
use crate::config::{Route, TopicConfig};
use crate::metrics::{TaskOutcome, Telemetry};
use crate::trace_context;

/// Share of the lock duration after which a running task's lock is extended.
const EXTEND_AT: f64 = 0.6;
/// How long a cancelled adapter may take to clean up (stop a container, kill a process group).
const CANCEL_CLEANUP: Duration = Duration::from_secs(10);
/// The engine keeps error messages short; Cockpit shows them on one line.
const MAX_ERROR_MESSAGE: usize = 500;

/// What every task of one worker shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: EngineClient,
    pub(crate) worker_id: String,
    pub(crate) telemetry: Telemetry,
}

/// The concurrency slots a running task holds until its write-back is done: one of the worker's
/// and, for a topic with a `max_tasks` of its own, one of the topic's. Dropping it frees them.
#[derive(Debug)]
pub(crate) struct Slots {
    pub(crate) _worker: OwnedSemaphorePermit,
    pub(crate) _topic: Option<OwnedSemaphorePermit>,
}

/// Runs one locked task to its write-back.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    route: Arc<Route>,
    locked: LockedExternalTask,
    cancel: CancellationToken,
    slots: Slots,
) {
    let span = info_span!(
        "external_task",
        task_id = %locked.id,
        topic = %locked.topic_name,
        process_instance = locked.process_instance_id.as_deref().unwrap_or(""),
        outcome = tracing::field::Empty,
    );
    let traceparent = traceparent(&locked);
    trace_context::join(&span, traceparent.as_deref());
    shared.telemetry.task_started(&route.topic);
    let (outcome, ran) = handle_in_span(&shared, &route, locked, traceparent.as_deref(), cancel)
        .instrument(span.clone())
        .await;
    span.record("outcome", outcome.as_str());
    shared.telemetry.task_finished(&route.topic, outcome, ran);
    drop(slots);
}

/// The instance's W3C trace context, when it carries one in the variable `traceparent`.
fn traceparent(locked: &LockedExternalTask) -> Option<String> {
    match locked.variables.get(trace_context::TRACEPARENT)?.to_json() {
        Value::String(traceparent) => Some(traceparent),
        _ => None,
    }
}

/// Runs the adapter while keeping the lock, writes the outcome back, and says how it ended and
/// how long the adapter ran, when its answer counted. `traceparent` is the instance's trace
/// context, handed on to the step.
async fn handle_in_span(
    shared: &Shared,
    route: &Route,
    locked: LockedExternalTask,
    traceparent: Option<&str>,
    cancel: CancellationToken,
) -> (TaskOutcome, Option<Duration>) {
    let started = Instant::now();
    let lock_duration = route.config.lock_duration;
    let inputs: Map<String, Value> = locked
        .variables
        .iter()
        .map(|(name, v)| (name.clone(), v.to_json()))
        .collect();
    // A step whose settings cannot be read or break the topic's policy fails without running.
    let (settings, step, refused) = match read_settings(shared, route, &locked, &inputs).await {
        Ok((settings, step)) => (settings, step, None),
        Err(failure) => (
            TaskSettings::default(),
            StepSettings::of_topic(&route.config),
            Some(failure),
        ),
    };
    let (root_process_instance_id, refused) = match refused {
        None if route.adapter.uses_workspace(&settings) => {
            match root_instance(shared, &locked).await {
                Ok(root) => (Some(root), None),
                Err(failure) => (None, Some(failure)),
            }
        }
        refused => (None, refused),
    };
    let run_span = info_span!("adapter_run", adapter = %route.config.adapter);
    let adapter_task = AdapterTask {
        task_id: locked.id.clone(),
        topic: locked.topic_name.clone(),
        traceparent: trace_context::for_step(&run_span, traceparent),
        inputs: without_settings(inputs),
        settings,
        root_process_instance_id,
    };

    let (lock_until_tx, lock_until) = watch::channel(started + lock_duration);
    let run_ended = CancellationToken::new();
    let keeper = keep_lock(shared, route, &locked.id, lock_until_tx, &run_ended);
    let mut keeper = std::pin::pin!(keeper);
    // The adapter gets a child token: a timeout cancels the adapter alone, and is reported.
    let adapter_cancel = cancel.child_token();
    let mut run = std::pin::pin!(async {
        match refused {
            Some(failure) => Outcome::Failure(failure),
            None => {
                run_adapter(route, adapter_task, adapter_cancel)
                    .instrument(run_span)
                    .await
            }
        }
    });
    // Cancellation first: an adapter answers promptly when cancelled, and that answer must not
    // be mistaken for its result.
    let outcome = tokio::select! {
        biased;
        () = cancel.cancelled() => {
            // Give the adapter a moment to clean up; its answer no longer counts.
            let _ = tokio::time::timeout(CANCEL_CLEANUP, run).await;
            unlock(&shared.client, &locked.id).await;
            return (TaskOutcome::Unlocked, None);
        }
        Some(lost) = &mut keeper => {
            // Another worker may hold the task now: stop, and write nothing back.
            cancel.cancel();
            let _ = tokio::time::timeout(CANCEL_CLEANUP, run).await;
            shared.telemetry.lock_lost(&route.topic);
            warn!(error = %lost, "the lock is gone (the task was cancelled or another worker holds it); the run is abandoned and nothing is written back");
            return (TaskOutcome::Abandoned, None);
        }
        outcome = &mut run => outcome,
    };
    let elapsed = started.elapsed();
    // An extension still in flight would race the write-back: the engine fails one of the two
    // with an OptimisticLockingException. Let it land first; the write-back then meets its own
    // answer (a lock that is gone is a 400 or 404 there).
    run_ended.cancel();
    let _ = keeper.await;
    // Write-back may be retried while the (last extended) lock lasts, with a margin for the call.
    let lock_deadline = *lock_until.borrow() - Duration::from_secs(1).min(lock_duration / 2);
    let write_back = WriteBack {
        client: &shared.client,
        worker_id: &shared.worker_id,
        telemetry: &shared.telemetry,
        route,
        step: &step,
        locked: &locked,
        deadline: lock_deadline,
    };
    let (kind, result) = write_back
        .outcome(outcome)
        .instrument(info_span!("write_back"))
        .await;
    let ended = match result {
        Ok(()) => {
            info!(
                outcome = kind.as_str(),
                elapsed_ms = elapsed.as_millis() as u64,
                "task done"
            );
            kind
        }
        Err(e) if e.is_not_found() => {
            warn!(
                outcome = kind.as_str(),
                "the engine no longer has the task, so the result is dropped: either this worker's lock expired and another worker completed the task, or the task was cancelled (a boundary event, the instance deleted or cancelled in Cockpit)"
            );
            TaskOutcome::Gone
        }
        Err(e) if e.status() == Some(400) => {
            warn!(
                outcome = kind.as_str(),
                error = %e,
                "the engine refused the result: the task is locked by another worker now"
            );
            TaskOutcome::Refused
        }
        Err(e) => {
            error!(
                outcome = kind.as_str(),
                error = %e,
                "could not write the result back; the task runs again when its lock expires"
            );
            TaskOutcome::WriteBackFailed
        }
    };
    (ended, Some(elapsed))
}

/// Tells the engine how a run ended.
struct WriteBack<'a> {
    client: &'a EngineClient,
    worker_id: &'a str,
    telemetry: &'a Telemetry,
    route: &'a Route,
    step: &'a StepSettings,
    locked: &'a LockedExternalTask,
    deadline: Instant,
}

impl WriteBack<'_> {
    fn reach(&self, reached: Result<(), &ClientError>) {
        match reached {
            Ok(()) => self.telemetry.written_back(self.worker_id),
            Err(e) => self.telemetry.write_back_failed(self.worker_id, e),
        }
    }

    /// Makes the engine call for `outcome`; returns how the task ends if the call succeeds, and
    /// the call's result.
    async fn outcome(&self, outcome: Outcome) -> (TaskOutcome, Result<(), ClientError>) {
        let config = &self.route.config;
        let task_id = &self.locked.id;
        match outcome {
            Outcome::Complete(outputs) => {
                let outputs = match self.step.hand_back(outputs) {
                    Ok(outputs) => outputs,
                    Err(failure) => return self.failure(failure).await,
                };
                let variables =
                    match output_variables(outputs, self.step.result_variable.as_deref()) {
                        Ok(variables) => variables,
                        Err(failure) => return self.failure(failure).await,
                    };
                let (variables, local_variables) = if config.local_outputs {
                    (Variables::new(), variables)
                } else {
                    (variables, Variables::new())
                };
                let body = CompleteTask {
                    worker_id: self.worker_id.to_owned(),
                    variables,
                    local_variables,
                };
                match deliver(
                    self.deadline,
                    |r| self.reach(r),
                    || self.client.complete(task_id, &body),
                )
                .await
                {
                    // The engine is up but could not continue the instance after the task (an
                    // output mapping, a listener, a gateway condition failed): retrying the same
                    // completion cannot help, so it becomes a failure a person can read in Cockpit.
                    Err(e) if ClientError::is_engine_error(&e) => {
                        let failure = Failure::new(
                            format!(
                                "the engine could not continue the process after this task: {}",
                                engine_message(&e)
                            ),
                            format!(
                                "Completing the task failed inside the engine, so the process did not move on. \
                                 Check what follows the task in the model (output mappings, listeners, \
                                 conditions).\n\n{e}"
                            ),
                            Retry::Later,
                        );
                        self.failure(failure).await
                    }
                    result => (TaskOutcome::Completed, result),
                }
            }
            Outcome::BpmnError {
                code,
                message,
                outputs,
            } => {
                let variables = match output_variables(outputs, None) {
                    Ok(variables) => variables,
                    Err(failure) => return self.failure(failure).await,
                };
                let body = BpmnErrorReport {
                    worker_id: self.worker_id.to_owned(),
                    error_code: code,
                    error_message: Some(message),
                    variables,
                };
                let result = deliver(
                    self.deadline,
                    |r| self.reach(r),
                    || self.client.report_bpmn_error(task_id, &body),
                )
                .await;
                (TaskOutcome::BpmnError, result)
            }
            Outcome::Failure(failure) => self.failure(failure).await,
        }
    }

    async fn failure(&self, failure: Failure) -> (TaskOutcome, Result<(), ClientError>) {
        let body = failure_report(
            self.worker_id.to_owned(),
            self.step,
            self.locked.retries,
            failure,
        );
        let retries = body.retries;
        let result = deliver(
            self.deadline,
            |r| self.reach(r),
            || self.client.report_failure(&self.locked.id, &body),
        )
        .await;
        if result.is_ok() && retries == 0 {
            warn!(error = %body.error_message, "failed with no retries left: the engine raises an incident");
        } else if result.is_ok() {
            warn!(error = %body.error_message, retries, retry_in_ms = body.retry_timeout, "failed; will be retried");
        }
        let ended = if retries == 0 {
            TaskOutcome::Incident
        } else {
            TaskOutcome::Failed
        };
        (ended, result)
    }
}

fn engine_message(e: &ClientError) -> String {
    match e {
        ClientError::Rejected {
            error_type,
            message,
            ..
        } => match error_type {
            Some(t) => format!("{t}: {message}"),
            None => message.clone(),
        },
        other => other.to_string(),
    }
}

/// Extends the task's lock at about 60 % of its duration until `run_ended`, publishing each new
/// end of the lock. Returns the engine's answer when it says the lock is gone (400: expired or
/// taken; 404: the task no longer exists), `None` once the run has ended and no extension is
/// in flight; transient errors are retried.
async fn keep_lock(
    shared: &Shared,
    route: &Route,
    task_id: &str,
    lock_until: watch::Sender<Instant>,
    run_ended: &CancellationToken,
) -> Option<ClientError> {
    let lock_duration = route.config.lock_duration;
    let extend_after = lock_duration.mul_f64(EXTEND_AT);
    let mut backoff = Backoff::new(
        Duration::from_millis(250),
        extend_after.max(Duration::from_millis(250)),
    );
    let mut next = Instant::now() + extend_after;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = run_ended.cancelled() => return None,
        }
        match shared
            .client
            .extend_lock(task_id, &shared.worker_id, lock_duration)
            .await
        {
            Ok(()) => {
                let now = Instant::now();
                lock_until.send_replace(now + lock_duration);
                shared.telemetry.lock_extended(&route.topic);
                next = now + extend_after;
                backoff.reset();
                debug!(lock_ms = lock_duration.as_millis() as u64, "lock extended");
            }
            Err(e) if e.is_transient() => {
                shared
                    .telemetry
                    .lock_extension_failed(&shared.worker_id, &e);
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "could not extend the lock; trying again");
                next = Instant::now() + delay;
            }
            Err(e) => return Some(e),
        }
    }
}

/// The adapter's run, with the topic's timeout; a panic inside the adapter becomes a failure.
async fn run_adapter(route: &Route, task: AdapterTask, cancel: CancellationToken) -> Outcome {
    let adapter_name = route.config.adapter.clone();
    let run = AssertUnwindSafe(route.adapter.run(task, cancel.clone())).catch_unwind();
    let result = match route.config.timeout {
        None => run.await,
        Some(limit) => match tokio::time::timeout(limit, run).await {
            Ok(result) => result,
            Err(_) => {
                cancel.cancel();
                return Outcome::Failure(Failure::new(
                    format!(
                        "`{adapter_name}` adapter timed out after {}",
                        humantime::format_duration(limit)
                    ),
                    format!(
                        "The topic's timeout is {limit:?}; raise `timeout` in its configuration if the work needs longer."
                    ),
                    Retry::Later,
                ));
            }
        },
    };
    result.unwrap_or_else(|panic| {
        let reason = panic_message(panic.as_ref());
        Outcome::Failure(Failure::new(
            format!("`{adapter_name}` adapter crashed: {reason}"),
            format!("The adapter panicked while running this task: {reason}"),
            Retry::Later,
        ))
    })
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// The failure call: retries counted down from the step's setting (the model's, else the
/// topic's) on the first failure and from the task's own count after that, a delay that doubles
/// with each failure, and a one-line message for Cockpit.
fn failure_report(
    worker_id: String,
    step: &StepSettings,
    task_retries: Option<i32>,
    failure: Failure,
) -> FailureReport {
    let configured = i32::try_from(step.retries).unwrap_or(i32::MAX);
    let retries = match failure.retry {
        Retry::Never => 0,
        Retry::Later => task_retries.unwrap_or(configured).saturating_sub(1).max(0),
    };
    let attempt = u32::try_from(configured.saturating_sub(retries))
        .unwrap_or(1)
        .max(1);
    let retry_timeout = if retries == 0 {
        Duration::ZERO
    } else {
        exponential(step.retry_backoff, attempt, step.max_retry_backoff)
    };
    FailureReport {
        worker_id,
        error_message: one_line(&failure.message, MAX_ERROR_MESSAGE),
        error_details: (!failure.details.is_empty()).then_some(failure.details),
        retries,
        retry_timeout: u64::try_from(retry_timeout.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The per-task settings the worker itself reads, beside the adapter's.
const STEP_SETTINGS: &[&str] = &["retries", "retry_backoff", "outputs", "result_variable"];

/// The worker's part of one step: how it is retried and which outputs it hands back.
#[derive(Debug, Clone)]
struct StepSettings {
    retries: u32,
    retry_backoff: Duration,
    max_retry_backoff: Duration,
    /// Only these outputs become variables; each must be there.
    outputs: Option<Vec<String>>,
    /// All outputs go into one `Json` variable of this name (the topic's `result_variable`,
    /// or the step's `procos.result_variable`).
    result_variable: Option<String>,
}

impl StepSettings {
    fn of_topic(config: &TopicConfig) -> Self {
        Self {
            retries: config.retries,
            retry_backoff: config.retry_backoff,
            max_retry_backoff: config.max_retry_backoff,
            outputs: None,
            result_variable: config.result_variable.clone(),
        }
    }

    /// The topic's settings with what the model sets on the step.
    fn read(config: &TopicConfig, settings: &TaskSettings) -> Result<Self, Failure> {
        let mut step = Self::of_topic(config);
        if let Some(retries) = settings.u64("retries")? {
            step.retries = match u32::try_from(retries) {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(Failure::new(
                        format!(
                            "the task's setting `procos.retries` is {retries}; it must be from 1 (the first attempt counts) to {}",
                            u32::MAX
                        ),
                        "Fix `procos.retries` in the model: the attempts in all before a failing task becomes an incident.",
                        Retry::Never,
                    ));
                }
            };
        }
        if let Some(backoff) = settings.duration("retry_backoff")? {
            step.retry_backoff = backoff;
            step.max_retry_backoff = step.max_retry_backoff.max(backoff);
        }
        step.outputs = settings.text_list("outputs")?;
        if let Some(name) = settings.text("result_variable")? {
            let name = name.trim();
            if name.is_empty() || name.starts_with(SETTING_PREFIX) {
                return Err(Failure::new(
                    format!(
                        "the task's setting `procos.result_variable` is `{name}`, not a variable name"
                    ),
                    "Name the process variable the step's outputs go to, e.g. `result`; names starting with `procos.` are settings.",
                    Retry::Never,
                ));
            }
            step.result_variable = Some(name.to_owned());
        }
        Ok(step)
    }

    /// The outputs the step hands back: all of them, or those the model names (each must be
    /// there: a model that reads a missing one would fail later, further from the cause).
    fn hand_back(&self, mut outputs: Map<String, Value>) -> Result<Map<String, Value>, Failure> {
        let Some(names) = &self.outputs else {
            return Ok(outputs);
        };
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !outputs.contains_key(n.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let produced: Vec<&str> = outputs.keys().map(String::as_str).collect();
            return Err(Failure::new(
                format!(
                    "the step did not produce the output(s) {} that `procos.outputs` asks for",
                    missing.join(", ")
                ),
                format!(
                    "Outputs produced: {}. Set them in the step's work, or fix `procos.outputs` in the model.",
                    if produced.is_empty() {
                        "none".to_owned()
                    } else {
                        produced.join(", ")
                    }
                ),
                Retry::Never,
            ));
        }
        outputs.retain(|name, _| names.contains(name));
        Ok(outputs)
    }
}

/// The root of the task's process instance tree, which names its workspace: the instance
/// itself, or the one whose call activity started it (a library process works in its caller's
/// workspace).
async fn root_instance(shared: &Shared, locked: &LockedExternalTask) -> Result<String, Failure> {
    let Some(instance) = locked.process_instance_id.as_deref() else {
        return Err(Failure::new(
            "the engine named no process instance for the task, so it has no workspace",
            "",
            Retry::Never,
        ));
    };
    match shared.client.historic_process_instance(instance).await {
        Ok(found) => Ok(found.root_process_instance_id.unwrap_or(found.id)),
        Err(e) => Err(Failure::new(
            format!("could not read the task's process instance {instance}: {e}"),
            "The worker asks the engine's history for the root of the instance's call tree, which names its workspace; the engine's history level must be activity or higher.",
            retry_for(&e),
        )),
    }
}

/// How a task whose run needed an engine call that failed is retried: later when the engine may
/// answer then, never when it refused.
fn retry_for(e: &ClientError) -> Retry {
    if e.is_transient() {
        Retry::Later
    } else {
        Retry::Never
    }
}

/// The task's per-task settings: its `procos.*` extension properties and input parameters.
/// Only the task's own scope is read: when a fetched variable has a setting's name, the task's
/// local variables are asked for, so a process variable of that name is never taken.
async fn read_settings(
    shared: &Shared,
    route: &Route,
    locked: &LockedExternalTask,
    inputs: &Map<String, Value>,
) -> Result<(TaskSettings, StepSettings), Failure> {
    let properties = locked.extension_properties.clone().unwrap_or_default();
    let named = inputs.keys().any(|name| name.starts_with(SETTING_PREFIX));
    let locals: Map<String, Value> = if !named {
        Map::new()
    } else if route.config.local_variables {
        inputs.clone()
    } else {
        let Some(execution) = locked.execution_id.as_deref() else {
            return Ok((
                TaskSettings::default(),
                StepSettings::of_topic(&route.config),
            ));
        };
        match shared.client.execution_local_variables(execution).await {
            Ok(locals) => locals
                .iter()
                .map(|(name, v)| (name.clone(), v.to_json()))
                .collect(),
            Err(e) => {
                return Err(Failure::new(
                    format!("could not read the task's input parameters: {e}"),
                    format!(
                        "The worker reads the task's `procos.*` input parameters from its execution's local variables; the engine did not answer: {e}"
                    ),
                    retry_for(&e),
                ));
            }
        }
    };
    let settings = TaskSettings::from_task(&properties, &locals)?;
    let mut known: Vec<&str> = route.adapter.task_settings().to_vec();
    known.extend_from_slice(STEP_SETTINGS);
    settings.check_known(&known)?;
    let step = StepSettings::read(&route.config, &settings)?;
    Ok((settings, step))
}

/// The adapter's outputs as typed variables (see [`Variable::from_output`]), or all of them as
/// one `Json` variable. An output that cannot be stored is the adapter's fault, and retrying
/// gives the same output: the failure raises the incident at once.
fn output_variables(
    outputs: Map<String, Value>,
    result_variable: Option<&str>,
) -> Result<Variables, Failure> {
    if let Some(name) = result_variable {
        return Ok(Variables::from([(
            name.to_owned(),
            Variable::Json(Value::Object(outputs)),
        )]));
    }
    outputs
        .into_iter()
        .filter(|(name, _)| {
            let counter = MULTI_INSTANCE_VARIABLES.contains(&name.as_str());
            if counter {
                // `echo` and scripts that hand back their inputs meet this in every
                // multi-instance: a warning, not an incident.
                warn!(
                    output = %name,
                    "the output is not written: it has the name of one of the engine's multi-instance variables, and would overwrite the activity's counters so that it never completes"
                );
            }
            !counter
        })
        .map(|(name, value)| match Variable::from_output(value) {
            Ok(variable) => Ok((name, variable)),
            Err(reason) => Err(Failure::new(
                format!("the output `{name}` cannot be stored: {reason}"),
                format!(
                    "An output in Camunda's typed form ({{\"type\": …, \"value\": …}}) must hold a value of \
                     that type: Date as 2024-02-29T13:45:00.000+0100 or RFC 3339, Bytes as base64, \
                     Integer within 32 bits.\nOutput `{name}`: {reason}"
                ),
                Retry::Never,
            )),
        })
        .collect()
}

/// Makes an engine call, retrying transient failures (engine unreachable, 5xx) with jittered
/// backoff while the lock lasts. A refusal (4xx) is final and returned at once.
async fn deliver<F, Fut>(
    deadline: Instant,
    reach: impl Fn(Result<(), &ClientError>),
    mut call: F,
) -> Result<(), ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ClientError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match call().await {
            Ok(()) => {
                reach(Ok(()));
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                reach(Err(&e));
                let delay = backoff.next_delay();
                if Instant::now() + delay >= deadline {
                    return Err(e);
                }
                warn!(error = %e, retry_in = ?delay, "write-back failed; retrying while the lock lasts");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn unlock(client: &EngineClient, task_id: &str) {
    match client.unlock(task_id).await {
        Ok(()) => info!("cancelled; the task is unlocked for other workers"),
        Err(e) => {
            warn!(error = %e, "cancelled, but could not unlock; the task is fetchable again when its lock expires")
        }
    }
}

/// The first line of `text`, cut at `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() <= max {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(retry: Retry) -> Failure {
        Failure::new("boom\nsecond line", "trace", retry)
    }

    #[test]
    fn retries_count_down_from_the_configuration_then_from_the_task() {
        let config = StepSettings::of_topic(&TopicConfig::new("echo"));
        let first = failure_report("w".into(), &config, None, failure(Retry::Later));
        assert_eq!((first.retries, first.retry_timeout), (2, 10_000));
        let second = failure_report("w".into(), &config, Some(2), failure(Retry::Later));
        assert_eq!((second.retries, second.retry_timeout), (1, 20_000));
        let last = failure_report("w".into(), &config, Some(1), failure(Retry::Later));
        assert_eq!((last.retries, last.retry_timeout), (0, 0));
        assert_eq!(last.error_message, "boom");
        assert_eq!(last.error_details.as_deref(), Some("trace"));
    }

    #[test]
    fn a_failure_that_cannot_be_helped_by_retrying_raises_the_incident_at_once() {
        let config = StepSettings::of_topic(&TopicConfig::new("echo"));
        let report = failure_report("w".into(), &config, None, failure(Retry::Never));
        assert_eq!(report.retries, 0);
    }

    #[test]
    fn outputs_become_typed_variables_or_one_result_variable() {
        let outputs: Map<String, Value> = serde_json::from_str(r#"{"n": 1, "s": "x"}"#).unwrap();
        let spread = output_variables(outputs.clone(), None).unwrap();
        assert_eq!(spread["n"], Variable::Integer(1));
        let one = output_variables(outputs.clone(), Some("result")).unwrap();
        assert_eq!(one["result"], Variable::Json(Value::Object(outputs)));
    }

    #[test]
    fn a_step_names_its_result_variable_over_the_topics() {
        let mut topic = TopicConfig::new("echo");
        topic.result_variable = Some("topic_result".into());
        let read = |pairs: Vec<(&str, Value)>| {
            StepSettings::read(&topic, &TaskSettings::from_pairs(pairs))
        };
        let of_topic = read(vec![]).unwrap();
        assert_eq!(of_topic.result_variable.as_deref(), Some("topic_result"));
        let own = read(vec![("result_variable", Value::from(" result "))]).unwrap();
        assert_eq!(own.result_variable.as_deref(), Some("result"));
        for bad in ["", "procos.x"] {
            let failure = read(vec![("result_variable", Value::from(bad))]).unwrap_err();
            assert!(
                failure.message.contains("procos.result_variable"),
                "{}",
                failure.message
            );
        }
    }

    #[test]
    fn an_output_that_cannot_be_stored_raises_the_incident_naming_it() {
        let outputs: Map<String, Value> =
            serde_json::from_str(r#"{"due": {"type": "Date", "value": "tomorrow"}}"#).unwrap();
        let failure = output_variables(outputs, None).unwrap_err();
        assert!(failure.message.contains("`due`"), "{}", failure.message);
        assert_eq!(failure.retry, Retry::Never);
    }

    #[test]
    fn error_messages_are_one_bounded_line() {
        assert_eq!(one_line("\n  first \nsecond", 100), "first");
        assert_eq!(one_line(&"x".repeat(10), 5), "xxxx…");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_write_back_errors_are_retried_until_the_lock_ends() {
        let mut calls = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        let result = deliver(
            deadline,
            |_| {},
            || {
                calls += 1;
                async {
                    Err(ClientError::Rejected {
                        method: "POST",
                        path: "x".into(),
                        status: 503,
                        error_type: None,
                        message: "down".into(),
                        problems: vec![],
                    })
                }
            },
        )
        .await;
        assert!(result.is_err());
        assert!(calls > 2, "retried {calls} times");
        assert!(Instant::now() <= deadline);
    }
}
