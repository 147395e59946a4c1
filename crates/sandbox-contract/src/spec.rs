//! One sandboxed run, described independently of the backend that carries it out.

use crate::guards::Guards;
use crate::labels::SandboxLabels;

/// Where a sandbox's inputs are handed in (files, before the command starts).
pub const INPUT_DIR: &str = "/in";
/// Where a sandbox's command leaves its outputs (`output.json`).
pub const OUTPUT_DIR: &str = "/out";
/// The sandbox's scratch space and working directory: fresh, small, never executable setuid.
pub const SCRATCH_DIR: &str = "/tmp";
/// Where a step that asks for it sees its process instance's workspace (read-write), the one
/// host path a sandbox may have.
pub const WORKSPACE_DIR: &str = "/workspace";

/// What to run in a sandbox and under which guards. A backend renders it (Docker:
/// [`crate::docker::create_body`]) and adds the [`crate::AlwaysOn`] guards itself, so no spec
/// can ask for a sandbox without them.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    /// The image (for Docker) or root filesystem the command runs in.
    pub image: String,
    /// `None`: the image's own command.
    pub command: Option<Vec<String>>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    pub labels: SandboxLabels,
    pub guards: Guards,
    /// The host directory of the instance's workspace, mounted at [`WORKSPACE_DIR`]: a
    /// directory directly under the worker's workspace directory, which a gatekeeper checks
    /// ([`crate::docker::check_create`]).
    pub workspace: Option<String>,
}
