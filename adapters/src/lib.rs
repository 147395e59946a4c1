//! Adapters run the work behind an external task.
//!
//! An adapter gets a task's inputs (plain JSON) and a cancellation token and answers with an
//! [`Outcome`]: complete with outputs, raise a BPMN error, or fail (retry later or give up). It
//! knows nothing of the engine, locks, retries or write-back: those belong to the worker, and
//! this crate does not depend on the engine client, so it cannot reach the engine.
//!
//! Which adapter serves a topic is configuration: [`build`] turns an adapter name and its
//! settings table into a ready adapter, refusing unknown names and settings before any task is
//! fetched. A new adapter is one module here and one arm in [`build`].
//!
//! - `echo`: inputs back as outputs (and rehearsals of failures and BPMN errors).
//! - `docker`: an image per task in a locked-down container (`sandbox.rs` holds the guards).
//! - `python`: a script in ProcOS's Python sandbox image, on the same sandbox.
//! - `scilab`: a Scilab script in ProcOS's Scilab sandbox image, on the same sandbox.
//! - `llm`: a language model behind an OpenAI-compatible server or Ollama.

mod docker;
mod echo;
mod llm;
mod python;
mod sandbox;
mod scilab;

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

pub use async_trait::async_trait;
pub use procos_sandbox_contract::ImageAllowlist;

/// The adapters this build knows, by the name a topic configuration uses.
pub const ADAPTERS: &[&str] = &["echo", "docker", "python", "scilab", "llm"];

/// What adapters may depend on beyond their own settings: the worker's policy.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// Images the `docker` and `python` adapters may run (`[worker] allowed_images`).
    pub allowed_images: ImageAllowlist,
}

/// Runs one external task's work.
#[async_trait]
pub trait Adapter: Send + Sync + fmt::Debug {
    /// Does the work. Must return soon after `cancel` fires (the lock is gone or the worker is
    /// shutting down); what it returns then is discarded.
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome;

    /// Releases what the adapter keeps between tasks (warm containers); the worker calls it once
    /// its last task has ended.
    async fn close(&self) {}
}

/// What an adapter is given: the task's identity, for naming and logs, and its inputs.
#[derive(Debug, Clone)]
pub struct AdapterTask {
    pub task_id: String,
    pub topic: String,
    /// The task's variables in their plain-JSON view.
    pub inputs: Map<String, Value>,
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

/// A topic's adapter configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum AdapterConfigError {
    #[error("unknown adapter `{name}`; known adapters: {}", ADAPTERS.join(", "))]
    UnknownAdapter { name: String },
    #[error("invalid settings for the `{adapter}` adapter: {reason}")]
    InvalidSettings {
        adapter: &'static str,
        reason: String,
    },
}

/// Builds the adapter `name` for `topic` from its settings table. A sandbox guard turned off in
/// the settings is allowed, and said in the log.
pub fn build(
    name: &str,
    topic: &str,
    settings: &toml::Table,
    context: &BuildContext,
) -> Result<Arc<dyn Adapter>, AdapterConfigError> {
    let invalid = |adapter: &'static str| {
        move |reason: String| AdapterConfigError::InvalidSettings { adapter, reason }
    };
    let warn_relaxed = |adapter: &str, relaxed: Vec<&'static str>| {
        for guard in relaxed {
            tracing::warn!(adapter, topic, "sandbox guard off: {guard}");
        }
    };
    match name {
        "echo" => Ok(Arc::new(echo::Echo::new(parse_settings("echo", settings)?))),
        "docker" => {
            let adapter = docker::DockerAdapter::new(
                parse_settings("docker", settings)?,
                context.allowed_images.clone(),
            )
            .map_err(invalid("docker"))?;
            warn_relaxed(name, adapter.relaxed_guards());
            Ok(Arc::new(adapter))
        }
        "python" => {
            let adapter = python::PythonAdapter::new(
                parse_settings("python", settings)?,
                topic,
                &context.allowed_images,
            )
            .map_err(invalid("python"))?;
            warn_relaxed(name, adapter.relaxed_guards());
            Ok(Arc::new(adapter))
        }
        "scilab" => {
            let adapter = scilab::ScilabAdapter::new(
                parse_settings("scilab", settings)?,
                &context.allowed_images,
            )
            .map_err(invalid("scilab"))?;
            warn_relaxed(name, adapter.relaxed_guards());
            Ok(Arc::new(adapter))
        }
        "llm" => Ok(Arc::new(
            llm::LlmAdapter::new(parse_settings("llm", settings)?).map_err(invalid("llm"))?,
        )),
        other => Err(AdapterConfigError::UnknownAdapter {
            name: other.to_owned(),
        }),
    }
}

fn parse_settings<T: DeserializeOwned>(
    adapter: &'static str,
    settings: &toml::Table,
) -> Result<T, AdapterConfigError> {
    T::deserialize(toml::Value::Table(settings.clone())).map_err(|e| {
        AdapterConfigError::InvalidSettings {
            adapter,
            reason: e.to_string().trim().to_owned(),
        }
    })
}
