//! The sandbox contract: what ProcOS's sandboxes and the sandbox proxy agree on, defined once.
//!
//! - [`ImageAllowlist`]: which images a sandbox may be made from.
//! - [`labels`]: the labels every sandbox container carries.
//! - [`Guards`] (tunable per topic) and [`AlwaysOn`] (never off).
//! - [`SandboxSpec`]: one sandboxed run, independent of the backend.
//! - [`docker`]: the Docker rendering of a spec, and the check the sandbox proxy runs on every
//!   container it is asked to create.
//!
//! The adapters build their containers through [`docker::create_body`]; the proxy checks
//! bodies with [`docker::check_create`]. A second backend (namespaces rather than containers)
//! renders the same [`SandboxSpec`] with the same guards in a module of its own.

pub mod docker;
mod guards;
mod images;
pub mod labels;
mod spec;

pub use guards::{AlwaysOn, Backend, Guards};
pub use images::{ImageAllowlist, normalize};
pub use spec::{INPUT_DIR, OUTPUT_DIR, SCRATCH_DIR, SandboxSpec, WORKSPACE_DIR};
