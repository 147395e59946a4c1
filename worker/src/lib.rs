//! The ProcOS worker: a stateless fleet member that fetch-and-locks external tasks and hands each
//! to the adapter its topic is configured with.
//!
//! - [`WorkerConfig`] is the topic table (topic → adapter, lock, retries, filters). [`Worker::new`]
//!   validates it and builds every adapter before anything is fetched.
//! - [`Worker::run`] long-polls one fetch for all topics with `maxTasks` = free slots, so the
//!   worker never locks work it cannot start, runs each task in a `JoinSet`, and writes the
//!   outcome back (complete, BPMN error, or failure with computed retries).
//! - [`TopicTable`] replaces the topic table while workers run ([`Worker::run_with_table`]):
//!   new topics are fetched, removed ones are not and their running tasks finish, changed ones
//!   apply to the next task; a table that does not validate is refused and the running one stays.
//! - Shutdown comes in as a `CancellationToken`: the pending fetch is aborted, running tasks get a
//!   grace period, and tasks that could not finish are unlocked for other workers.
//!
//! - [`Telemetry`] collects the metrics and health of every worker of the process: one value per
//!   process, handed to each [`Worker::new`]. Workers tell it what happened (a fetch answered, a
//!   lock was lost, a task finished); it alone maps that to metric families.
//!   [`ObservabilityServer`] serves it as `/metrics`, `/healthz`, `/readyz` and `/topics` (a
//!   [`TopicReport`]).
//!
//! Only this crate and the kernel talk to the engine; adapters never do.

mod backoff;
mod config;
mod engine_gate;
mod http;
mod metrics;
mod runtime;
mod table;
mod task;
mod trace_context;

pub use config::{ConfigError, TopicConfig, WorkerConfig};
pub use http::{ObservabilityServer, TopicReport, UnavailableTopic};
pub use metrics::Telemetry;
pub use runtime::Worker;
pub use table::{TableChange, TableUpdates, TopicTable};
