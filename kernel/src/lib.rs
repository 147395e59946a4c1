//! The ProcOS kernel: the small piece that stands between the machine and the engine.
//!
//! It boots a Camunda 7 engine as a supervised child process ([`LocalEngine`]), or uses one that
//! runs elsewhere, waits until the engine answers ([`wait_until_ready`]), and deploys the init
//! directory (ProcOS's `/proc/init`) with the engine's duplicate filtering ([`deploy_init_dir`]).
//! After boot, behaviour lives in BPMN, not here.

mod engine;
mod init_dir;
mod readiness;
mod validate;

pub use engine::{EngineProcess, EngineSettings, KernelError, Launcher, LocalEngine};
pub use init_dir::{DeployReport, FileProblem, deploy_files, deploy_init_dir};
pub use readiness::{ReadinessError, wait_until_ready};
