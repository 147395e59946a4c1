//! Adapters built from typed configuration: one variant per adapter, tagged by the name a topic
//! table uses (`adapter = "python"`) with the adapter's settings beside it (`settings`), each
//! refusing keys it does not know. A new adapter is a module with its configuration and one
//! variant (and one arm in [`AdapterConfig::build`]) here.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::docker::{DockerAdapter, DockerConfig};
use crate::echo::{Echo, EchoConfig};
use crate::engine::{EngineAdapter, EngineConfig, EngineGate};
use crate::http::{HttpAdapter, HttpConfig};
use crate::llm::{LlmAdapter, LlmConfig};
use crate::python::{PythonAdapter, PythonConfig};
use crate::scilab::{ScilabAdapter, ScilabConfig};
use crate::workspace::{WorkspaceAdapter, WorkspaceConfig, Workspaces};
use crate::{Adapter, ImageAllowlist};

/// The adapters this build knows, by the name a topic configuration uses.
pub const ADAPTERS: &[&str] = &[
    "echo",
    "docker",
    "python",
    "scilab",
    "llm",
    "http",
    "workspace",
    "engine",
];

/// A topic's adapter and its settings: `{"adapter": "echo", "settings": {…}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "adapter", content = "settings", rename_all = "lowercase")]
pub enum AdapterConfig {
    Echo(EchoConfig),
    Docker(DockerConfig),
    Python(PythonConfig),
    Scilab(ScilabConfig),
    Llm(LlmConfig),
    Http(HttpConfig),
    Workspace(WorkspaceConfig),
    Engine(EngineConfig),
}

/// What adapters may depend on beyond their own settings: the worker's policy.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// Images the sandboxed adapters may run (`[worker] allowed_images`).
    pub allowed_images: ImageAllowlist,
    /// Where the namespace backend keeps the images' root filesystems (`[worker] rootfs_dir`);
    /// `None`: the user's cache directory.
    pub rootfs_dir: Option<std::path::PathBuf>,
    /// Where the instances' workspaces live and how large each may grow (`[worker]
    /// workspace_dir`, `workspace_mb`).
    pub workspaces: Workspaces,
    /// The engine calls the `engine` adapter may make, which the worker implements; `None`
    /// where adapters are only built to check a configuration.
    pub engine: Option<Arc<dyn EngineGate>>,
}

impl BuildContext {
    /// The namespace backend's root filesystem cache.
    pub(crate) fn rootfs_dir(&self) -> std::path::PathBuf {
        self.rootfs_dir.clone().unwrap_or_else(default_rootfs_dir)
    }
}

/// A topic's adapter configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum AdapterConfigError {
    #[error("unknown adapter `{name}`; known adapters: {}", ADAPTERS.join(", "))]
    UnknownAdapter { name: String },
    #[error("invalid settings for the `{adapter}` adapter: {reason}")]
    InvalidSettings {
        adapter: &'static str,
        reason: String,
    },
}

impl AdapterConfig {
    /// The configuration of the adapter `name` from its settings table, as a topic table
    /// holds them side by side. Missing settings are the adapter's defaults.
    pub fn from_parts(
        name: &str,
        settings: Map<String, Value>,
    ) -> Result<Self, AdapterConfigError> {
        let Some(adapter) = ADAPTERS.iter().copied().find(|known| *known == name) else {
            return Err(AdapterConfigError::UnknownAdapter {
                name: name.to_owned(),
            });
        };
        let tagged = serde_json::json!({ "adapter": adapter, "settings": settings });
        Self::deserialize(tagged).map_err(|e| AdapterConfigError::InvalidSettings {
            adapter,
            reason: e.to_string().trim().to_owned(),
        })
    }

    /// The adapter's name, as the topic table gives it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Echo(_) => "echo",
            Self::Docker(_) => "docker",
            Self::Python(_) => "python",
            Self::Scilab(_) => "scilab",
            Self::Llm(_) => "llm",
            Self::Http(_) => "http",
            Self::Workspace(_) => "workspace",
            Self::Engine(_) => "engine",
        }
    }

    /// Makes the adapter for `topic`. A sandbox guard turned off in the settings is allowed,
    /// and said in the log.
    pub fn build(
        &self,
        topic: &str,
        context: &BuildContext,
    ) -> Result<Arc<dyn Adapter>, AdapterConfigError> {
        let adapter = self.name();
        let invalid = |reason: String| AdapterConfigError::InvalidSettings { adapter, reason };
        let warn_relaxed = |relaxed: Vec<&'static str>| {
            for guard in relaxed {
                tracing::warn!(adapter, topic, "sandbox guard off: {guard}");
            }
        };
        Ok(match self {
            Self::Echo(config) => Arc::new(Echo::new(config.clone())),
            Self::Docker(config) => {
                let built = DockerAdapter::new(config.clone(), context).map_err(invalid)?;
                warn_relaxed(built.relaxed_guards());
                Arc::new(built)
            }
            Self::Python(config) => {
                let built = PythonAdapter::new(config.clone(), topic, context).map_err(invalid)?;
                warn_relaxed(built.relaxed_guards());
                Arc::new(built)
            }
            Self::Scilab(config) => {
                let built = ScilabAdapter::new(config.clone(), context).map_err(invalid)?;
                warn_relaxed(built.relaxed_guards());
                Arc::new(built)
            }
            Self::Llm(config) => Arc::new(LlmAdapter::new(config.clone()).map_err(invalid)?),
            Self::Http(config) => {
                Arc::new(HttpAdapter::new(config.clone(), topic).map_err(invalid)?)
            }
            Self::Workspace(_) => Arc::new(WorkspaceAdapter::new(context.workspaces.clone())),
            Self::Engine(config) => Arc::new(
                EngineAdapter::new(config.clone(), context.engine.clone()).map_err(invalid)?,
            ),
        })
    }
}

/// Builds adapter `name` from a TOML settings table, as the tests write them.
#[cfg(test)]
pub(crate) fn build(
    name: &str,
    topic: &str,
    settings: &toml::Table,
    context: &BuildContext,
) -> Result<Arc<dyn Adapter>, AdapterConfigError> {
    let settings = match serde_json::to_value(settings) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    AdapterConfig::from_parts(name, settings)?.build(topic, context)
}

/// `$XDG_CACHE_HOME/procos/rootfs`, else `~/.cache/procos/rootfs`, else under `/var/tmp`.
fn default_rootfs_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".cache"))
        })
        .map_or_else(
            || std::path::PathBuf::from("/var/tmp/procos-rootfs"),
            |cache| cache.join("procos/rootfs"),
        )
}
