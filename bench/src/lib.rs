//! What the benchmark binaries share: the engine they measure, either one that already runs
//! (`--engine-url`) or a scratch engine booted through the kernel's own code.

pub mod scratch;

pub use scratch::{BenchEngine, EngineArgs, free_port, until_interrupted};
