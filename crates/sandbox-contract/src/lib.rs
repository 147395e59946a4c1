//! The sandbox contract: what ProcOS's sandboxes and the sandbox proxy agree on.

mod images;

pub use images::{ImageAllowlist, normalize};
