//! What the engine should hold while ProcOS runs: the init directory's models and one running
//! root orchestrator.
//!
//! [`Kernel::boot`] deploys the whole init directory and starts the root orchestrator unless an
//! instance already runs. [`Kernel::run`] then watches: a file that changes (or appears) is
//! deployed within a tick, and when the engine comes back after being away (restarted by the
//! supervisor, or by compose) the kernel boots it again, which deploys nothing unchanged.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use camunda_client::{EngineClient, StartProcessInstance};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::init_dir::{self, DeployReport};
use crate::unserved::{UnservedSettings, UnservedTopic, UnservedWatch};

/// What the kernel keeps in the engine.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// The init directory (ProcOS's `/proc/init`).
    pub init_dir: PathBuf,
    /// The library of low-level processes models call (`bpmn/library`), deployed and watched
    /// like the init directory; `None`, or a directory that does not exist: no library.
    pub library_dir: Option<PathBuf>,
    /// Key of the root orchestrator, started once; `None` starts nothing.
    pub root_process: Option<String>,
    /// Topics the worker fleet serves; a model's topic outside this set earns a warning. Empty:
    /// the fleet is unknown here and nothing is warned about.
    pub served_topics: BTreeSet<String>,
    /// How often the init directory and the engine are looked at.
    pub watch_interval: Duration,
    /// How topics with waiting tasks and no worker serving them are found and, optionally,
    /// failed into incidents.
    pub unserved: UnservedSettings,
}

/// What [`Kernel::boot`] did.
#[derive(Debug)]
pub struct BootReport {
    pub deploy: DeployReport,
    /// External-task topics of deployed models that no configured adapter serves, by file.
    pub unserved_topics: Vec<(PathBuf, String)>,
    pub root: RootState,
}

/// What [`Kernel::run`] noticed and did, for the caller to report.
#[derive(Debug)]
pub enum KernelEvent {
    /// The engine stopped answering; init-directory changes wait until it answers again.
    EngineAway,
    /// The engine answers again, and the kernel booted it again: deployed what is not deployed
    /// yet (nothing unchanged) and checked the root orchestrator.
    EngineBack(BootReport),
    /// Model files that changed or appeared were deployed (new instances use the new versions;
    /// running ones keep theirs).
    Redeployed {
        deploy: DeployReport,
        /// External-task topics of these models that no configured adapter serves, by file.
        unserved_topics: Vec<(PathBuf, String)>,
    },
    /// A topic has waiting tasks and no worker serves it (reported once, until it is served).
    TopicUnserved(UnservedTopic),
    /// A topic reported unserved no longer is: a worker fetched its tasks, or none waits.
    TopicServed { topic: String },
    /// Tasks of an unserved topic waited longer than `fail_after` and were failed into
    /// incidents naming the topic.
    UnservedTasksFailed {
        topic: String,
        failed: usize,
        fail_after: Duration,
    },
}

/// The root orchestrator after boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootState {
    /// No root process is configured.
    Disabled,
    /// An instance was already running (its id); no second one was started.
    AlreadyRunning(String),
    /// This boot started it (the new instance's id).
    Started(String),
    /// No definition of that key is deployed: nothing to start.
    NotDeployed(String),
    /// The engine refused to start it.
    Failed(String),
}

/// A file's identity on disk: enough to notice an edit, a replacement or a touch.
type Fingerprint = (SystemTime, u64);

/// The kernel's view of the init directory and the root orchestrator.
#[derive(Debug)]
pub struct Kernel {
    client: EngineClient,
    config: KernelConfig,
    /// Files as they were last handled (deployed, unchanged, or refused for a reason of their own).
    handled: HashMap<PathBuf, Fingerprint>,
    /// Topics with waiting tasks and no worker.
    unserved: UnservedWatch,
    /// The fleet's topic table as it is reloaded, when the caller follows it.
    served_updates: Option<watch::Receiver<BTreeSet<String>>>,
}

impl Kernel {
    pub fn new(client: EngineClient, config: KernelConfig) -> Self {
        let unserved = UnservedWatch::new(
            client.clone(),
            config.served_topics.clone(),
            config.unserved.clone(),
        );
        Self {
            client,
            config,
            handled: HashMap::new(),
            unserved,
            served_updates: None,
        }
    }

    /// Follows the fleet's topic table as the operator edits it: each set received replaces
    /// `served_topics`, for the warnings of later deployments and for the unserved-topic check,
    /// which looks again at once.
    pub fn follow_served_topics(mut self, updates: watch::Receiver<BTreeSet<String>>) -> Self {
        self.served_updates = Some(updates);
        self
    }

    /// Deploys the whole init directory and starts the root orchestrator unless an instance of
    /// it runs. The engine must be answering.
    pub async fn boot(&mut self) -> BootReport {
        let fingerprints = self.fingerprints();
        let mut deploy = init_dir::deploy_init_dir(&self.client, &self.config.init_dir).await;
        let library = self.library_files();
        if !library.is_empty() {
            deploy.absorb(init_dir::deploy_files(&self.client, &library).await);
        }
        self.handled = fingerprints;
        self.forget_unavailable(&deploy);
        let unserved_topics = self.unserved_topics(&deploy);
        let root = self.ensure_root().await;
        BootReport {
            deploy,
            unserved_topics,
            root,
        }
    }

    /// Until `shutdown`: deploys each changed or new model file within one `watch_interval`,
    /// boots again whenever the engine answers after having been away, and looks for topics
    /// with waiting tasks and no worker every `unserved.check_interval`, reporting each to
    /// `on_event`.
    pub async fn run(mut self, shutdown: CancellationToken, mut on_event: impl FnMut(KernelEvent)) {
        let mut engine_up = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.watch_interval) => {}
            }
            let reachable = self.client.engines().await.is_ok();
            match (engine_up, reachable) {
                (true, false) => {
                    engine_up = false;
                    on_event(KernelEvent::EngineAway);
                }
                (false, true) => {
                    engine_up = true;
                    on_event(KernelEvent::EngineBack(self.boot().await));
                }
                (true, true) => {
                    self.take_served_topics();
                    if let Some(event) = self.redeploy_changed().await {
                        on_event(event);
                    }
                    if self.unserved.due() {
                        self.unserved
                            .check()
                            .await
                            .into_iter()
                            .for_each(&mut on_event);
                    }
                }
                (false, false) => {}
            }
        }
    }

    fn take_served_topics(&mut self) {
        let Some(updates) = &mut self.served_updates else {
            return;
        };
        if !updates.has_changed().unwrap_or(false) {
            return;
        }
        let served = updates.borrow_and_update().clone();
        self.unserved.set_table(served.clone());
        self.config.served_topics = served;
    }

    async fn redeploy_changed(&mut self) -> Option<KernelEvent> {
        let now = self.fingerprints();
        let changed: Vec<PathBuf> = now
            .iter()
            .filter(|(path, print)| self.handled.get(*path) != Some(*print))
            .map(|(path, _)| path.clone())
            .collect();
        if changed.is_empty() {
            self.handled = now;
            return None;
        }
        let deploy = init_dir::deploy_files(&self.client, &changed).await;
        self.handled = now;
        self.forget_unavailable(&deploy);
        let unserved_topics = self.unserved_topics(&deploy);
        Some(KernelEvent::Redeployed {
            deploy,
            unserved_topics,
        })
    }

    /// A file the engine could not take because it was away is tried again on the next tick.
    fn forget_unavailable(&mut self, report: &DeployReport) {
        for problem in report.problems.iter().filter(|p| p.engine_unavailable) {
            self.handled.remove(&problem.file);
        }
    }

    /// The library's model files; none when there is no library directory.
    fn library_files(&self) -> Vec<PathBuf> {
        self.config
            .library_dir
            .as_deref()
            .and_then(|dir| init_dir::model_files(dir).ok())
            .unwrap_or_default()
    }

    fn fingerprints(&self) -> HashMap<PathBuf, Fingerprint> {
        init_dir::model_files(&self.config.init_dir)
            .unwrap_or_default()
            .into_iter()
            .chain(self.library_files())
            .filter_map(|path| {
                let meta = std::fs::metadata(&path).ok()?;
                let modified = meta.modified().ok()?;
                Some((path, (modified, meta.len())))
            })
            .collect()
    }

    fn unserved_topics(&self, report: &DeployReport) -> Vec<(PathBuf, String)> {
        if self.config.served_topics.is_empty() {
            return Vec::new();
        }
        report
            .topics
            .iter()
            .flat_map(|(file, topics)| {
                topics
                    .iter()
                    .filter(|t| !self.config.served_topics.contains(*t))
                    .map(|t| (file.clone(), t.clone()))
            })
            .collect()
    }

    async fn ensure_root(&self) -> RootState {
        let Some(key) = &self.config.root_process else {
            return RootState::Disabled;
        };
        match self.client.process_instances(key).await {
            Ok(running) => {
                if let Some(instance) = running.first() {
                    return RootState::AlreadyRunning(instance.id.clone());
                }
            }
            Err(e) => return RootState::Failed(e.to_string()),
        }
        match self.client.process_definitions(key).await {
            Ok(definitions) if definitions.is_empty() => {
                return RootState::NotDeployed(key.clone());
            }
            Ok(_) => {}
            Err(e) => return RootState::Failed(e.to_string()),
        }
        let start = StartProcessInstance {
            business_key: Some(key.clone()),
            ..StartProcessInstance::default()
        };
        match self.client.start_process_instance(key, &start).await {
            Ok(instance) => RootState::Started(instance.id),
            Err(e) => RootState::Failed(e.to_string()),
        }
    }
}

/// The warning for a model topic that no worker of this configuration serves.
pub fn unserved_message(topic: &str) -> String {
    format!(
        "external-task topic `{topic}` is served by no configured adapter, so its tasks wait; add [topics.\"{topic}\"] with an adapter to the configuration"
    )
}
