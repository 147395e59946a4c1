//! ProcOS's sandbox proxy: the one component that holds the Docker engine's socket. Workers
//! reach Docker through it (`DOCKER_HOST=tcp://sandbox-proxy:2375`) and it lets through only
//! the calls of ProcOS's sandbox (`procos-adapters`' `sandbox.rs`): containers of allowed
//! images that carry the sandbox label and a HostConfig granting nothing beyond the sandbox's
//! own, and operations on those containers only. Everything else is answered 403 with Docker's
//! error shape, naming the call and the reason.
//!
//! `policy` decides from the request alone; `proxy` carries a decision out against the
//! engine; `server` owns listeners, connections and shutdown.

mod policy;
mod proxy;
mod server;

pub use policy::SANDBOX_LABEL;
pub use server::{Listen, ProxyConfig, ProxyError, SandboxProxy};
