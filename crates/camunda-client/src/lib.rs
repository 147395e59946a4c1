//! A typed client for the Camunda 7 REST API (`/engine-rest`).
//!
//! This crate owns the engine's JSON: typed variables, external-task requests and answers,
//! deployments, history and incidents. Everything above it (kernel, worker) speaks in the domain
//! types exported here and never builds a request body by hand.
//!
//! Errors say what the caller should do next: [`ClientError::is_transient`] separates "the engine
//! is away, try again" from "the engine refused this", and the status helpers name Camunda's
//! meanings (404 = the task is gone, 400 on a task = locked by another worker).

mod client;
mod connection;
mod error;
mod model;
mod oauth2;
mod variables;

pub use client::{Auth, EngineClient};
pub use connection::{Connection, OAuth2Settings};
pub use error::{ClientError, ParseProblem};
pub use model::{
    BpmnErrorReport, CompleteTask, DeployedResource, Deployment, DeploymentResult, ExternalTask,
    ExternalTaskLogEntry, ExternalTaskLogQuery, FailureReport, FetchAndLock,
    HistoricActivityInstance, HistoricProcessInstance, HistoricProcessInstanceQuery, Incident,
    LockedExternalTask, ProcessDefinition, ProcessInstance, StartProcessInstance,
    TopicSubscription,
};
pub use oauth2::{ClientCredentials, TokenSource};
pub use variables::{MULTI_INSTANCE_VARIABLES, Variable, Variables};
