//! The worker's configuration: its own settings (`[worker]`) and the topic table (`[topics.NAME]`).
//!
//! Every option has a default and a doc line; validation names the key and the fix, and runs
//! before the worker fetches anything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use procos_adapters::{Adapter, AdapterConfig, AdapterConfigError};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

/// The engine refuses a longer `asyncResponseTimeout`.
pub(crate) const MAX_LONG_POLL: Duration = Duration::from_millis(1_800_000);

/// `[worker]`: how this worker fetches and runs tasks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// The id this worker locks tasks under. The engine checks ownership by this id alone, so it
    /// must be unique per process: the default is the host name plus a random suffix.
    pub worker_id: Option<String>,
    /// Tasks this worker runs at once, all topics together. A fetch asks for no more than the
    /// free slots, so the worker never locks work it cannot start.
    pub max_tasks: usize,
    /// How long one fetch waits for work to appear (the engine's `asyncResponseTimeout`, at most
    /// 30 min).
    #[serde(with = "humantime_serde")]
    pub long_poll: Duration,
    /// On shutdown, how long running tasks may take to finish before they are cancelled and
    /// unlocked for other workers.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Address of the HTTP endpoint with `/metrics`, `/healthz` and `/readyz`, or `off`. In a
    /// container, listen on `0.0.0.0:9464` so Prometheus can reach it.
    pub listen: String,
    /// Images the `docker` and `python` adapters may run: exact references or prefixes ending in
    /// `*`. Default: ProcOS's own sandbox images.
    pub allowed_images: Vec<String>,
    /// Where topics with `sandbox.backend = "namespace"` keep the images' root filesystems
    /// (exported from Docker once per image). Default: `~/.cache/procos/rootfs`.
    pub rootfs_dir: Option<std::path::PathBuf>,
    /// Where the process instances' workspaces live (each a tmpfs mounted there, removed once
    /// its instance is no longer running). Default: `~/.local/share/procos/workspaces`.
    pub workspace_dir: Option<std::path::PathBuf>,
    /// How large one instance's workspace may grow, in MiB.
    pub workspace_mb: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: None,
            max_tasks: 16,
            long_poll: Duration::from_secs(30),
            grace_period: Duration::from_secs(30),
            listen: "127.0.0.1:9464".to_owned(),
            allowed_images: vec!["procos/*".to_owned()],
            rootfs_dir: None,
            workspace_dir: None,
            workspace_mb: procos_adapters::DEFAULT_WORKSPACE_MB,
        }
    }
}

/// `[topics.NAME]`: which adapter serves a topic, and how its tasks are locked and retried.
/// A topic absent from the table is never fetched.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// The adapter that runs this topic's tasks, e.g. `echo`.
    pub adapter: String,
    /// The adapter's own settings (`[topics.NAME.settings]`), read into the adapter's typed
    /// configuration when the worker is built.
    #[serde(default)]
    pub settings: Map<String, Value>,
    /// How long a fetched task stays locked to this worker.
    #[serde(default = "defaults::lock_duration", with = "humantime_serde")]
    pub lock_duration: Duration,
    /// At most this many of this topic's tasks run at once on this worker; no limit of its own
    /// by default (the worker's `max_tasks` still holds).
    #[serde(default)]
    pub max_tasks: Option<usize>,
    /// Variables to fetch with each task; all of them when absent.
    #[serde(default)]
    pub variables: Option<Vec<String>>,
    /// Fetch only the variables local to the task's scope.
    #[serde(default)]
    pub local_variables: bool,
    /// Store the adapter's outputs as one `Json` variable of this name instead of one process
    /// variable per output.
    #[serde(default)]
    pub result_variable: Option<String>,
    /// Write the outputs as local variables of the task's scope rather than process variables,
    /// for the model's output mappings (`camunda:outputParameter`) to pick up.
    #[serde(default)]
    pub local_outputs: bool,
    /// Attempts in all before a failing task becomes an incident.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// Delay before the first retry; it doubles with each failure.
    #[serde(default = "defaults::retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The longest delay between retries.
    #[serde(default = "defaults::max_retry_backoff", with = "humantime_serde")]
    pub max_retry_backoff: Duration,
    /// Wall-clock limit of one run; a run past it fails (and is retried). None by default.
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// Only tasks of these process definition keys.
    #[serde(default)]
    pub process_definition_keys: Option<Vec<String>>,
    /// Only tasks of these tenants.
    #[serde(default)]
    pub tenant_ids: Option<Vec<String>>,
    /// Only tasks whose process instance has this business key.
    #[serde(default)]
    pub business_key: Option<String>,
    /// Only tasks whose process instance has these variable values.
    #[serde(default)]
    pub process_variables: Option<Map<String, Value>>,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn lock_duration() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn retries() -> u32 {
        3
    }
    pub(super) fn retry_backoff() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn max_retry_backoff() -> Duration {
        Duration::from_secs(600)
    }
}

impl TopicConfig {
    /// A topic served by `adapter` with default settings.
    pub fn new(adapter: impl Into<String>) -> Self {
        Self {
            adapter: adapter.into(),
            settings: Map::new(),
            lock_duration: defaults::lock_duration(),
            max_tasks: None,
            variables: None,
            local_variables: false,
            result_variable: None,
            local_outputs: false,
            retries: defaults::retries(),
            retry_backoff: defaults::retry_backoff(),
            max_retry_backoff: defaults::max_retry_backoff(),
            timeout: None,
            process_definition_keys: None,
            tenant_ids: None,
            business_key: None,
            process_variables: None,
        }
    }
}

/// A configuration the worker refuses to start with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{key}`: {problem}; fix: {fix}")]
pub struct ConfigError {
    /// The offending key, dotted as in the TOML file (`topics.echo.lock_duration`).
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// A topic ready to serve: its configuration, its built adapter and its own concurrency slots.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) topic: String,
    pub(crate) config: TopicConfig,
    pub(crate) adapter: Arc<dyn Adapter>,
    /// Present when the topic has a `max_tasks` of its own.
    pub(crate) slots: Option<Arc<Semaphore>>,
}

impl Route {
    /// How many more of this topic's tasks may start now; `None` when only the worker's limit
    /// applies.
    pub(crate) fn room(&self) -> Option<usize> {
        self.slots.as_ref().map(|s| s.available_permits())
    }
}

impl WorkerConfig {
    /// The observability endpoint's address; `None` when `listen = "off"`.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let listen = self.listen.trim();
        if listen.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|e| {
            ConfigError::new(
                "worker.listen",
                format!("`{listen}` is not an address and port ({e})"),
                "set listen = \"127.0.0.1:9464\" (or \"0.0.0.0:9464\" in a container, or \"off\")",
            )
        })
    }

    /// The instances' workspaces this worker makes and sweeps.
    pub fn workspaces(&self) -> procos_adapters::Workspaces {
        procos_adapters::Workspaces::new(self.workspace_dir.clone(), self.workspace_mb)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.workspace_mb == 0 {
            return Err(ConfigError::new(
                "worker.workspace_mb",
                "is 0, so no workspace could hold a byte",
                "set workspace_mb = 64 (MiB), or more",
            ));
        }
        if self.max_tasks == 0 {
            return Err(ConfigError::new(
                "worker.max_tasks",
                "must be at least 1",
                "set max_tasks = 16 (or more for I/O-bound adapters)",
            ));
        }
        if self.long_poll > MAX_LONG_POLL {
            return Err(ConfigError::new(
                "worker.long_poll",
                format!(
                    "{} is longer than the engine accepts (30m)",
                    humantime::format_duration(self.long_poll)
                ),
                "set long_poll = \"30s\" or anything up to \"30m\"",
            ));
        }
        if let Some(id) = &self.worker_id
            && id.trim().is_empty()
        {
            return Err(ConfigError::new(
                "worker.worker_id",
                "is empty",
                "remove it to get a unique id per process, or give a non-empty one",
            ));
        }
        Ok(())
    }
}

/// Checks every topic and builds its adapter; the first problem found is reported.
pub(crate) fn build_routes(
    topics: &BTreeMap<String, TopicConfig>,
    context: &procos_adapters::BuildContext,
) -> Result<Vec<Route>, ConfigError> {
    check_not_empty(topics)?;
    topics
        .iter()
        .map(|(topic, config)| build_route(topic, config, context))
        .collect()
}

/// A table without topics fetches nothing: refused at start and on reload alike.
pub(crate) fn check_not_empty(topics: &BTreeMap<String, TopicConfig>) -> Result<(), ConfigError> {
    if topics.is_empty() {
        return Err(ConfigError::new(
            "topics",
            "no topic is configured, so there is nothing to fetch",
            "add a table such as [topics.echo] with adapter = \"echo\"",
        ));
    }
    Ok(())
}

/// Checks one topic and builds its adapter (and its own slots when it has a `max_tasks`).
pub(crate) fn build_route(
    topic: &str,
    config: &TopicConfig,
    context: &procos_adapters::BuildContext,
) -> Result<Route, ConfigError> {
    let key = |field: &str| format!("topics.{topic}.{field}");
    if topic.trim().is_empty() {
        return Err(ConfigError::new(
            "topics",
            "a topic has an empty name",
            "name it as in the model's camunda:topic",
        ));
    }
    if config.lock_duration < Duration::from_secs(1) {
        return Err(ConfigError::new(
            key("lock_duration"),
            "must be at least 1s",
            "set lock_duration = \"60s\"",
        ));
    }
    if config.max_tasks == Some(0) {
        return Err(ConfigError::new(
            key("max_tasks"),
            "is 0, so the topic would never be fetched",
            "remove it (no limit of its own) or set max_tasks = 1 or more",
        ));
    }
    if config.retries == 0 {
        return Err(ConfigError::new(
            key("retries"),
            "must be at least 1 (the first attempt counts)",
            "set retries = 3",
        ));
    }
    if config.retry_backoff > config.max_retry_backoff {
        return Err(ConfigError::new(
            key("retry_backoff"),
            "is longer than max_retry_backoff",
            "make retry_backoff ≤ max_retry_backoff",
        ));
    }
    if config.timeout == Some(Duration::ZERO) {
        return Err(ConfigError::new(
            key("timeout"),
            "is zero, so every run would fail",
            "remove it, or set e.g. timeout = \"5m\"",
        ));
    }
    if let Some(name) = &config.result_variable
        && name.trim().is_empty()
    {
        return Err(ConfigError::new(
            key("result_variable"),
            "is empty",
            "remove it, or name the variable the outputs go to",
        ));
    }
    let adapter = AdapterConfig::from_parts(&config.adapter, config.settings.clone())
        .and_then(|adapter| adapter.build(topic, context))
        .map_err(|e| {
            let field = match e {
                AdapterConfigError::UnknownAdapter { .. } => "adapter",
                AdapterConfigError::InvalidSettings { .. } => "settings",
            };
            ConfigError::new(
                key(field),
                e.to_string(),
                "see the adapter's settings in the README",
            )
        })?;
    Ok(Route {
        topic: topic.to_owned(),
        config: config.clone(),
        adapter,
        slots: config.max_tasks.map(|n| Arc::new(Semaphore::new(n))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(toml_text: &str) -> BTreeMap<String, TopicConfig> {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_fill_a_minimal_topic() {
        let t = topics("[echo]\nadapter = 'echo'");
        let routes = build_routes(&t, &Default::default()).unwrap();
        assert_eq!(routes[0].topic, "echo");
        assert_eq!(routes[0].config.lock_duration, Duration::from_secs(60));
        assert_eq!(routes[0].config.retries, 3);
    }

    #[test]
    fn problems_name_the_key_and_the_fix() {
        let cases = [
            (
                "[t]\nadapter = 'nope'",
                "topics.t.adapter",
                "known adapters",
            ),
            (
                "[t]\nadapter = 'echo'\nlock_duration = '10ms'",
                "topics.t.lock_duration",
                "60s",
            ),
            (
                "[t]\nadapter = 'echo'\nmax_tasks = 0",
                "topics.t.max_tasks",
                "max_tasks = 1",
            ),
            (
                "[t]\nadapter = 'echo'\nretries = 0",
                "topics.t.retries",
                "retries = 3",
            ),
            (
                "[t]\nadapter = 'echo'\n[t.settings]\nx = 1",
                "topics.t.settings",
                "unknown field",
            ),
        ];
        for (text, key, hint) in cases {
            let err = build_routes(&topics(text), &Default::default()).unwrap_err();
            assert_eq!(err.key, key, "{text}");
            assert!(err.to_string().contains(hint), "{err}");
        }
        assert_eq!(
            build_routes(&BTreeMap::new(), &Default::default())
                .unwrap_err()
                .key,
            "topics"
        );
    }

    #[test]
    fn long_poll_beyond_the_engine_limit_is_refused() {
        let config = WorkerConfig {
            long_poll: Duration::from_secs(3600),
            ..WorkerConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "worker.long_poll");
    }

    #[test]
    fn the_observability_endpoint_can_be_moved_or_turned_off() {
        let mut config = WorkerConfig::default();
        assert_eq!(
            config.listen_addr().unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        config.listen = "off".into();
        assert_eq!(config.listen_addr().unwrap(), None);
        config.listen = "9464".into();
        let err = config.validate().unwrap_err();
        assert_eq!(err.key, "worker.listen");
        assert!(err.fix.contains("0.0.0.0:9464"), "{err}");
    }
}
