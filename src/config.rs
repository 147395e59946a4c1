//! `procos.toml`: one file for the engine connection, the kernel, the worker and the topic table.
//!
//! Precedence, lowest first: built-in defaults, the file, `PROCOS_SECTION__KEY` environment
//! variables (e.g. `PROCOS_WORKER__MAX_TASKS=32`, `PROCOS_TOPICS__ECHO__RETRIES=5`), then
//! command-line flags and their own environment variables (e.g. `PROCOS_ENGINE_URL`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use procos_kernel::EngineSettings;
use procos_worker::{TopicConfig, WorkerConfig};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcosConfig {
    /// `[engine]`: where the engine is and how the kernel boots one.
    pub engine: EngineSettings,
    /// `[kernel]`: what the kernel deploys.
    pub kernel: KernelSettings,
    /// `[worker]`: how workers fetch and run tasks.
    pub worker: WorkerConfig,
    /// `[topics.NAME]`: which adapter serves which topic.
    pub topics: BTreeMap<String, TopicConfig>,
}

/// `[kernel]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelSettings {
    /// The init directory (ProcOS's `/proc/init`): every model in it is deployed at boot, and
    /// again within `watch_interval` of a change.
    pub init_dir: PathBuf,
    /// Key of the root orchestrator the kernel starts once (not again while an instance runs);
    /// empty to start none.
    pub root_process: String,
    /// How often the kernel looks at the init directory and at the engine.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self {
            init_dir: PathBuf::from("bpmn/init"),
            root_process: "procos-root".to_owned(),
            watch_interval: Duration::from_secs(1),
        }
    }
}

/// Reads the configuration. A missing file is fine unless it was named explicitly.
pub fn load(path: &Path, explicit: bool) -> anyhow::Result<ProcosConfig> {
    let mut figment = Figment::new();
    if path.is_file() {
        figment = figment.merge(Toml::file_exact(path));
    } else if explicit {
        bail!(
            "the configuration file {} does not exist; create it (see procos.toml in the repository) or drop --config",
            path.display()
        );
    }
    // Only double-underscore names are file keys; single-underscore ones such as
    // PROCOS_ENGINE_URL belong to the command line.
    figment = figment.merge(
        Env::prefixed("PROCOS_")
            .filter(|key| key.as_str().contains("__"))
            .split("__"),
    );
    figment.extract().map_err(|errors| {
        let lines: Vec<String> = errors.into_iter().map(|e| describe(&e)).collect();
        anyhow::anyhow!(
            "invalid configuration in {}:\n  {}",
            path.display(),
            lines.join("\n  ")
        )
    })
}

/// One configuration error as `key: problem (from SOURCE)`.
fn describe(error: &figment::Error) -> String {
    let key = error.path.join(".");
    let source = error
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    if key.is_empty() {
        format!("{}{source}", error.kind)
    } else {
        format!("`{key}`: {}{source}", error.kind)
    }
}
