//! What the benchmark binaries share: the engine they measure (one that already runs, given by
//! `--engine-url`, or a scratch engine booted through the kernel's own code), the process they
//! deploy on it and what its external-task log says, the `procos worker` processes they start,
//! the statistics of their samples and the results files they write.

pub mod process;
pub mod results;
pub mod scratch;
pub mod stats;
pub mod worker;

pub use process::{Model, completion_count, completions, deploy, deploy_new, poll_until};
pub use results::{Machine, Table, load_average, report_date, tool_version, write_results};
pub use scratch::{BenchEngine, EngineArgs, free_port, run_on_engine, say, until_interrupted};
pub use stats::{Sorted, millis};
