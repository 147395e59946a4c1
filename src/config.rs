//! `procos.toml`: one file for the engine connection, the kernel, the worker and the topic table.
//!
//! Precedence, lowest first: built-in defaults, the file, `PROCOS_SECTION__KEY` environment
//! variables (e.g. `PROCOS_WORKER__MAX_TASKS=32`, `PROCOS_TOPICS__ECHO__RETRIES=5`), then
//! command-line flags and their own environment variables (e.g. `PROCOS_ENGINE_URL`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use camunda_client::{Connection, OAuth2Settings};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use procos_kernel::BootSettings;
use procos_worker::{TopicConfig, WorkerConfig};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcosConfig {
    /// `[engine]`: where the engine is and how the kernel boots one.
    pub engine: EngineSection,
    /// `[kernel]`: what the kernel deploys.
    pub kernel: KernelSettings,
    /// `[worker]`: how workers fetch and run tasks.
    pub worker: WorkerConfig,
    /// `[topics.NAME]`: which adapter serves which topic.
    pub topics: BTreeMap<String, TopicConfig>,
}

impl ProcosConfig {
    /// The topics the fleet serves, as the kernel and `procos status` judge waiting tasks: this
    /// file's `[topics]` and `[kernel] fleet_topics`.
    pub fn served_topics(&self) -> BTreeSet<String> {
        self.topics
            .keys()
            .chain(&self.kernel.fleet_topics)
            .cloned()
            .collect()
    }
}

/// `[engine]`: one table in the file, two concerns in the code. Workers and `deploy`, `start`
/// and `status` only connect ([`Connection`]); the kernel also boots ([`BootSettings`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "EngineTable")]
pub struct EngineSection {
    /// `url`, `user`, `password`, `token`, `[engine.oauth2]`.
    pub connection: Connection,
    /// `port`, `jar`, `camunda_run_home`, `java`, `data_dir`, `ready_timeout`, `stop_timeout`.
    pub boot: BootSettings,
}

impl EngineSection {
    /// The engine to connect to: `url`, or else the one the kernel boots on `port` (so that
    /// `--port` also points `procos worker` and the other commands at it).
    pub fn connection(&self) -> Connection {
        let mut connection = self.connection.clone();
        connection.url.get_or_insert_with(|| self.boot.rest_url());
        connection
    }
}

/// `[engine]` as the file spells it. Both halves are listed here, not `#[serde(flatten)]`ed:
/// flattening drops the key (`engine.port`) and the list of known keys from figment's error
/// messages. The exhaustive destructuring below fails to compile when either half gains a key
/// this table lacks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EngineTable {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    oauth2: OAuth2Settings,
    port: u16,
    jar: PathBuf,
    camunda_run_home: Option<PathBuf>,
    java: PathBuf,
    data_dir: PathBuf,
    #[serde(with = "humantime_serde")]
    ready_timeout: Duration,
    #[serde(with = "humantime_serde")]
    stop_timeout: Duration,
}

impl Default for EngineTable {
    fn default() -> Self {
        let Connection {
            url,
            user,
            password,
            token,
            oauth2,
        } = Connection::default();
        let BootSettings {
            port,
            jar,
            camunda_run_home,
            java,
            data_dir,
            ready_timeout,
            stop_timeout,
        } = BootSettings::default();
        Self {
            url,
            user,
            password,
            token,
            oauth2,
            port,
            jar,
            camunda_run_home,
            java,
            data_dir,
            ready_timeout,
            stop_timeout,
        }
    }
}

impl From<EngineTable> for EngineSection {
    fn from(table: EngineTable) -> Self {
        let EngineTable {
            url,
            user,
            password,
            token,
            oauth2,
            port,
            jar,
            camunda_run_home,
            java,
            data_dir,
            ready_timeout,
            stop_timeout,
        } = table;
        Self {
            connection: Connection {
                url,
                user,
                password,
                token,
                oauth2,
            },
            boot: BootSettings {
                port,
                jar,
                camunda_run_home,
                java,
                data_dir,
                ready_timeout,
                stop_timeout,
            },
        }
    }
}

/// `[kernel]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelSettings {
    /// The init directory (ProcOS's `/proc/init`): every model in it is deployed at boot, and
    /// again within `watch_interval` of a change.
    pub init_dir: PathBuf,
    /// The library of low-level processes (files, directories, the workspace's disk space)
    /// that models call: deployed and watched like the init directory. A directory that does
    /// not exist is no library.
    pub library_dir: PathBuf,
    /// Key of the root orchestrator the kernel starts once (not again while an instance runs);
    /// empty to start none.
    pub root_process: String,
    /// How often the kernel looks at the init directory and at the engine.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// Fail tasks that waited this long with no worker serving their topic into incidents that
    /// name the topic and the fix (`PROCOS_KERNEL__FAIL_UNSERVED_AFTER`); unset: never, the
    /// kernel only warns.
    #[serde(with = "humantime_serde")]
    pub fail_unserved_after: Option<Duration>,
    /// Topics that workers of the fleet serve from a topic table of their own (a compose
    /// service with another file, say), counted as served beside this file's `[topics]`: the
    /// kernel then warns about them only when no worker fetches their tasks.
    pub fleet_topics: Vec<String>,
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self {
            init_dir: PathBuf::from("bpmn/init"),
            library_dir: PathBuf::from("bpmn/library"),
            root_process: "procos-root".to_owned(),
            watch_interval: Duration::from_secs(1),
            fail_unserved_after: None,
            fleet_topics: Vec::new(),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn load_text(text: &str) -> anyhow::Result<ProcosConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("procos.toml");
        std::fs::write(&path, text).unwrap();
        load(&path, true)
    }

    #[test]
    fn the_engine_table_splits_into_connection_and_boot_keys() {
        let config = load_text(
            "[engine]\nuser = \"demo\"\npassword = \"demo\"\nport = 9090\ndata_dir = \"/var/lib/procos\"\nready_timeout = \"5s\"\n",
        )
        .unwrap();
        let engine = &config.engine;
        assert_eq!(engine.connection.user.as_deref(), Some("demo"));
        assert_eq!(engine.boot.port, 9090);
        assert_eq!(engine.boot.data_dir, PathBuf::from("/var/lib/procos"));
        assert_eq!(engine.boot.ready_timeout, Duration::from_secs(5));
        assert_eq!(
            engine.boot.stop_timeout,
            BootSettings::default().stop_timeout
        );
        // Without a url, the commands connect to the engine the kernel boots.
        assert_eq!(
            engine.connection().rest_url(),
            "http://localhost:9090/engine-rest"
        );

        let remote = load_text("[engine]\nurl = \"http://camunda:8080/engine-rest\"\n").unwrap();
        assert_eq!(
            remote.engine.connection().rest_url(),
            "http://camunda:8080/engine-rest"
        );
    }

    #[test]
    fn failing_unserved_tasks_is_off_unless_a_wait_is_set() {
        assert_eq!(load_text("").unwrap().kernel.fail_unserved_after, None);
        let set = load_text("[kernel]\nfail_unserved_after = \"10m\"\n").unwrap();
        assert_eq!(
            set.kernel.fail_unserved_after,
            Some(Duration::from_secs(600))
        );
        let wrong = load_text("[kernel]\nfail_unserved_after = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("`kernel.fail_unserved_after`"), "{wrong}");
    }

    #[test]
    fn the_fleet_serves_the_tables_topics_and_those_other_workers_serve() {
        let names = |config: &ProcosConfig| config.served_topics().into_iter().collect::<Vec<_>>();
        let alone = load_text("[topics.echo]\nadapter = \"echo\"\n").unwrap();
        assert_eq!(names(&alone), ["echo"]);
        let fleet = load_text(
            "[kernel]\nfleet_topics = [\"python-namespace\"]\n[topics.echo]\nadapter = \"echo\"\n",
        )
        .unwrap();
        assert_eq!(names(&fleet), ["echo", "python-namespace"]);
    }

    #[test]
    fn a_bad_engine_key_is_named_with_its_table() {
        let unknown = load_text("[engine]\nbogus = 1\n").unwrap_err().to_string();
        assert!(
            unknown.contains("`engine.bogus`") && unknown.contains("`ready_timeout`"),
            "names the key and the known ones: {unknown}"
        );
        let wrong = load_text("[engine]\nport = \"eighty\"\n")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("`engine.port`"), "{wrong}");
    }
}
