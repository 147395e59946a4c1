//! Running one task in a sandbox: the part the `docker`, `python` and `scilab` adapters share.
//!
//! What a sandbox is (its labels, its guards, the image allowlist, the Docker body) is the
//! sandbox contract's (`procos-sandbox-contract`), which the sandbox proxy checks against too.
//! This module carries runs out:
//!
//! - `guards`: the image check and the contract's spec a run becomes;
//! - `inputs`: what the sandboxed adapters read alike from a task (its script);
//! - `limits`: the operator's ceilings ([`Limits`]) and the guards a task runs under;
//! - `run`: one container on Docker, from create to remove ([`Sandbox`]);
//! - `namespace`: one task in bubblewrap over the image's root filesystem ([`Namespaces`]);
//! - `warm`: containers started ahead of their task ([`WarmPool`]);
//! - `sweep`: clearing the containers dead workers left;
//! - `outcome`: a finished run → the task's [`Outcome`].
//!
//! Adapters hold a [`Runner`]: a Docker [`Sandbox`] (perhaps behind a [`WarmPool`]) or
//! [`Namespaces`], chosen by `sandbox.backend`, each carrying out the same spec with the same
//! guards.

mod guards;
mod inputs;
mod limits;
mod namespace;
mod outcome;
mod run;
mod sweep;
mod warm;

use std::fmt;
use std::sync::{Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::{Outcome, Unavailable, async_trait};

pub(crate) use guards::{ContainerSpec, image_refusal, trace_env};
pub(crate) use inputs::{check_script_name, script_source};
pub(crate) use limits::Limits;
pub(crate) use namespace::Namespaces;
pub(crate) use run::Sandbox;
pub(crate) use warm::WarmPool;
#[cfg(test)]
pub(crate) use warm::{pool_key, waiting};

/// The runner `guards.backend` names, starting each run cold: a Docker [`Sandbox`], or
/// [`Namespaces`] over root filesystems in `rootfs_dir` (exported through Docker when one
/// answers). `warm` keeps `template`s started ahead: a pool of waiting containers on Docker,
/// waiting sandboxes on the namespace backend.
pub(crate) fn runner(
    guards: &procos_sandbox_contract::Guards,
    rootfs_dir: std::path::PathBuf,
    warm: Option<(ContainerSpec, usize, std::time::Duration)>,
) -> Result<Box<dyn Runner>, String> {
    use procos_sandbox_contract::Backend;

    match guards.backend {
        Backend::Namespace => {
            if !guards.read_only {
                return Err(
                    "sandbox.read_only = false needs sandbox.backend = \"docker\": the namespace backend shares one read-only root filesystem between tasks".into(),
                );
            }
            let docker = Sandbox::connect(guards).ok();
            Ok(Box::new(Namespaces::new(docker, rootfs_dir, warm)?))
        }
        Backend::Docker => {
            let sandbox = Sandbox::connect(guards)?;
            Ok(match warm {
                Some((template, size, idle)) if size > 0 => {
                    Box::new(WarmPool::new(sandbox, template, size, idle))
                }
                _ => Box::new(sandbox),
            })
        }
    }
}

/// Carries a sandboxed run out: cold on the backend, or in a container started ahead.
#[async_trait]
pub(crate) trait Runner: Send + Sync + fmt::Debug {
    /// Runs `spec` until its outcome is settled and says what became of it. What is left of
    /// the sandbox (a container, a namespace sandbox's processes and directories) is removed on
    /// every path, some of it after the outcome went back.
    async fn run(&self, spec: &ContainerSpec, cancel: &CancellationToken) -> Outcome;

    /// Releases what the runner keeps between runs (sandboxes waiting for a task) and waits for
    /// the removals still under way.
    async fn close(&self) {}

    /// Whether the backend answers.
    async fn available(&self) -> Result<(), Unavailable>;
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values inside; a panic elsewhere cannot leave them half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
