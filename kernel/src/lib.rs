//! The ProcOS kernel: the small piece that stands between the machine and the engine.
//!
//! It boots a Camunda 7 engine as a child process ([`LocalEngine`]) and keeps it alive
//! ([`EngineSupervisor`]: restarts with backoff), or uses one that runs elsewhere; waits until the
//! engine answers ([`wait_until_ready`]); and keeps the init directory (ProcOS's `/proc/init`)
//! deployed and the root orchestrator running ([`Kernel`]: boot, hot redeploy, re-boot after the
//! engine was away), and names the topics whose tasks wait with no worker serving them
//! ([`survey`], [`UnservedWatch`]). After boot, behaviour lives in BPMN, not here.
//!
//! The kernel prints nothing: what it did comes back as reports ([`BootReport`],
//! [`DeployReport`]) and events ([`EngineEvent`], [`KernelEvent`]) for the caller to show, once.
//! Connecting to an engine is [`camunda_client::Connection`]'s business; [`BootSettings`] says
//! how to boot one.

mod engine;
mod init_dir;
mod kernel;
mod readiness;
mod supervisor;
mod unserved;
mod validate;

pub use engine::{BootSettings, EngineProcess, KernelError, Launcher, LocalEngine};
pub use init_dir::{DeployReport, FileProblem, deploy_files, deploy_init_dir};
pub use kernel::{BootReport, Kernel, KernelConfig, KernelEvent, RootState, unserved_message};
pub use readiness::{ReadinessError, wait_until_ready};
pub use supervisor::{EngineEvent, EngineExit, EngineSupervisor};
pub use unserved::{
    CHECK_INTERVAL, KERNEL_WORKER_ID, MIN_STALE_AFTER, Unserved, UnservedSettings, UnservedTopic,
    UnservedWatch, fail_waiting_tasks, stale_after, survey, unserved_topic_message,
};
