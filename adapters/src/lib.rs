//! Adapters run the work behind an external task.
//!
//! An adapter gets a task's inputs (plain JSON) and a cancellation token and answers with an
//! [`Outcome`]: complete with outputs, raise a BPMN error, or fail (retry later or give up). It
//! knows nothing of the engine, locks, retries or write-back: those belong to the worker, and
//! this crate does not depend on the engine client, so it cannot reach the engine.
//!
//! This file holds the contract between worker and adapter: the [`Adapter`] trait and the
//! outcome types. Which adapter serves a topic is configuration: [`AdapterConfig`] (in
//! `config.rs`) is one typed, serde-tagged variant per adapter whose `build` makes the adapter,
//! refusing unknown names and settings before any task is fetched.
//!
//! - `echo`: inputs back as outputs (and rehearsals of failures and BPMN errors).
//! - `docker`: an image per task in a locked-down container (`sandbox/` runs it).
//! - `python`: a script in ProcOS's Python sandbox image, on the same sandbox.
//! - `scilab`: a Scilab script in ProcOS's Scilab sandbox image, on the same sandbox.
//! - `llm`: a language model behind an OpenAI-compatible server or Ollama.

mod config;
#[cfg(test)]
mod contract_tests;
mod docker;
mod echo;
mod engine;
mod http;
mod llm;
mod python;
mod sandbox;
mod scilab;
mod settings;
mod workspace;

/// The loopback HTTP server of the http adapter's tests, for the integration tests too.
#[cfg(feature = "test-server")]
#[doc(hidden)]
pub use http::test_server;

#[cfg(test)]
use config::build;

use std::fmt;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

pub use async_trait::async_trait;
pub use config::{ADAPTERS, AdapterConfig, AdapterConfigError, BuildContext};
pub use docker::DockerConfig;
pub use echo::EchoConfig;
pub use engine::{EngineConfig, EngineGate, GateError};
pub use http::HttpConfig;
pub use llm::LlmConfig;
pub use procos_sandbox_contract::{Guards, ImageAllowlist};
pub use python::PythonConfig;
pub use scilab::ScilabConfig;
pub use settings::{
    PREFIX as SETTING_PREFIX, Source as SettingSource, TaskSettings, above_ceiling,
    without_settings,
};
pub use workspace::{DEFAULT_LIMIT_MB as DEFAULT_WORKSPACE_MB, WorkspaceConfig, Workspaces};

/// Runs one external task's work.
#[async_trait]
pub trait Adapter: Send + Sync + fmt::Debug {
    /// Does the work. Must return soon after `cancel` fires (the lock is gone or the worker is
    /// shutting down); what it returns then is discarded.
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome;

    /// The per-task settings (`procos.NAME`, without the prefix) this adapter reads from a
    /// task; the worker refuses a task that sets any other, naming these.
    fn task_settings(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether a task with these settings works in its instance's workspace: the worker then
    /// names the task's root process instance ([`AdapterTask::root_process_instance_id`]).
    fn uses_workspace(&self, _settings: &TaskSettings) -> bool {
        false
    }

    /// Releases what the adapter keeps between tasks (warm containers); the worker calls it once
    /// its last task has ended.
    async fn close(&self) {}

    /// Whether the adapter can serve tasks now (its Docker engine answers, …). The worker asks
    /// before it fetches a topic's tasks and again from time to time: a topic whose adapter is
    /// unavailable is not fetched, so in a fleet a replica that can serve it gets its tasks.
    async fn available(&self) -> Result<(), Unavailable> {
        Ok(())
    }
}

/// Why an adapter cannot serve tasks now, and what would let it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// What is missing, e.g. the Docker engine that does not answer, with the error.
    pub reason: String,
    /// What an operator can do about it.
    pub fix: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; fix: {}", self.reason, self.fix)
    }
}

/// What an adapter is given: the task's identity, for naming and logs, and its inputs.
#[derive(Debug, Clone)]
pub struct AdapterTask {
    pub task_id: String,
    pub topic: String,
    /// The W3C trace context of this run (`00-{trace id}-{span id}-{flags}`), when the instance
    /// carries one or spans are exported: what the step hands on, as the `traceparent` header
    /// of an HTTP call or the `TRACEPARENT` environment variable of a sandboxed process.
    pub traceparent: Option<String>,
    /// The task's variables in their plain-JSON view, without the per-task settings.
    pub inputs: Map<String, Value>,
    /// What the model sets on this step (`procos.*` extension properties and input
    /// parameters), over the topic's settings and within its policy.
    pub settings: TaskSettings,
    /// The root of the task's process instance tree (the instance itself unless a call activity
    /// started it): its workspace's key. Set for adapters that use the workspace
    /// ([`Adapter::uses_workspace`]).
    pub root_process_instance_id: Option<String>,
}

/// How an adapter's run ended; the worker turns it into the matching engine call.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The work is done; these outputs become process variables.
    Complete(Map<String, Value>),
    /// A business error for a boundary error event in the model.
    BpmnError {
        code: String,
        message: String,
        outputs: Map<String, Value>,
    },
    /// The work failed.
    Failure(Failure),
}

/// A failed run, told so that a person reading the incident in Cockpit can act on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// One line: what failed and why.
    pub message: String,
    /// The long story: stderr tail, traceback, the offending input.
    pub details: String,
    pub retry: Retry,
}

/// Whether trying the same task again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A passing cause: retry with the topic's retries and backoff.
    Later,
    /// Retrying cannot help (bad input, bad script): raise the incident now.
    Never,
}

impl Failure {
    pub fn new(message: impl Into<String>, details: impl Into<String>, retry: Retry) -> Self {
        Self {
            message: message.into(),
            details: details.into(),
            retry,
        }
    }
}
