//! The fetch loop: one long poll for all topics, sized to the free slots, each fetched task run
//! in the worker's `JoinSet`, and an orderly drain on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use camunda_client::{EngineClient, FetchAndLock, LockedExternalTask, TopicSubscription};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::{ConfigError, Route, TopicConfig, WorkerConfig, build_routes};
use crate::task::{self, Shared};

/// A worker, configured and ready to run.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    config: WorkerConfig,
    routes: HashMap<String, Arc<Route>>,
    subscriptions: Vec<TopicSubscription>,
}

impl Worker {
    /// Validates the configuration and builds every topic's adapter. Nothing is fetched yet.
    pub fn new(
        client: EngineClient,
        config: WorkerConfig,
        topics: &BTreeMap<String, TopicConfig>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let routes = build_routes(topics)?;
        let worker_id = config.worker_id.clone().unwrap_or_else(unique_worker_id);
        let subscriptions = routes.iter().map(subscription).collect();
        let routes = routes
            .into_iter()
            .map(|r| (r.topic.clone(), Arc::new(r)))
            .collect();
        Ok(Self {
            shared: Arc::new(Shared { client, worker_id }),
            config,
            routes,
            subscriptions,
        })
    }

    /// The id this worker locks tasks under.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// Fetches and runs tasks until `shutdown` fires, then drains. Engine outages are waited out
    /// with backoff; this never returns because the engine is down.
    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.max_tasks));
        let mut running = JoinSet::new();
        // Cancels adapters only when the grace period is over, not when shutdown begins.
        let abort_tasks = CancellationToken::new();
        let mut fetch_backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let long_poll_ms = u64::try_from(self.config.long_poll.as_millis()).unwrap_or(u64::MAX);
        info!(
            worker_id = %self.shared.worker_id,
            topics = ?self.routes.keys().collect::<Vec<_>>(),
            max_tasks = self.config.max_tasks,
            "worker started"
        );

        loop {
            reap(&mut running);
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let mut permits = vec![first];
            while let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
                permits.push(permit);
            }
            let request = FetchAndLock {
                worker_id: self.shared.worker_id.clone(),
                max_tasks: u32::try_from(permits.len()).unwrap_or(u32::MAX),
                use_priority: true,
                async_response_timeout: Some(long_poll_ms),
                topics: self.subscriptions.clone(),
            };
            // Dropping the fetch on shutdown aborts the HTTP request, which ends the long poll.
            let fetched = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                fetched = self.shared.client.fetch_and_lock(&request) => fetched,
            };
            match fetched {
                Ok(tasks) => {
                    fetch_backoff.reset();
                    debug!(
                        fetched = tasks.len(),
                        asked = request.max_tasks,
                        "fetch answered"
                    );
                    for locked in tasks {
                        let route = self.routes.get(&locked.topic_name).cloned();
                        match (permits.pop(), route) {
                            (Some(permit), Some(route)) => {
                                running.spawn(task::handle(
                                    Arc::clone(&self.shared),
                                    route,
                                    locked,
                                    abort_tasks.child_token(),
                                    permit,
                                ));
                            }
                            // The engine never sends more than asked or an unasked topic; if it
                            // does, hand the task straight back rather than sit on its lock.
                            _ => self.give_back(locked).await,
                        }
                    }
                }
                Err(e) => {
                    let delay = fetch_backoff.next_delay();
                    if e.is_overloaded() {
                        info!(retry_in = ?delay, "the engine's long-poll queue is full; backing off");
                    } else {
                        warn!(error = %e, retry_in = ?delay, "fetch failed; retrying");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }

        self.drain(running, abort_tasks).await;
    }

    /// Lets running tasks finish within the grace period, then cancels the rest, which unlock
    /// their tasks for other workers.
    async fn drain(&self, mut running: JoinSet<()>, abort_tasks: CancellationToken) {
        reap(&mut running);
        let grace = self.config.grace_period;
        if !running.is_empty() {
            info!(
                in_flight = running.len(),
                ?grace,
                "shutting down: letting running tasks finish"
            );
        }
        let finished = tokio::time::timeout(grace, async {
            while let Some(result) = running.join_next().await {
                log_abnormal_end(result);
            }
        })
        .await;
        if finished.is_err() {
            warn!(
                in_flight = running.len(),
                "grace period over: cancelling the remaining tasks and unlocking them"
            );
            abort_tasks.cancel();
            while let Some(result) = running.join_next().await {
                log_abnormal_end(result);
            }
        }
        info!(worker_id = %self.shared.worker_id, "worker stopped");
    }

    async fn give_back(&self, locked: LockedExternalTask) {
        warn!(task_id = %locked.id, topic = %locked.topic_name, "unasked-for task; unlocking it");
        if let Err(e) = self.shared.client.unlock(&locked.id).await {
            warn!(task_id = %locked.id, error = %e, "could not unlock; it is fetchable again when its lock expires");
        }
    }
}

fn subscription(route: &Route) -> TopicSubscription {
    let c = &route.config;
    TopicSubscription {
        topic_name: route.topic.clone(),
        lock_duration: u64::try_from(c.lock_duration.as_millis()).unwrap_or(u64::MAX),
        variables: c.variables.clone(),
        local_variables: c.local_variables,
        business_key: c.business_key.clone(),
        process_definition_key_in: c.process_definition_keys.clone(),
        tenant_id_in: c.tenant_ids.clone(),
        without_tenant_id: false,
        process_variables: c.process_variables.clone(),
        include_extension_properties: false,
    }
}

fn reap(running: &mut JoinSet<()>) {
    while let Some(result) = running.try_join_next() {
        log_abnormal_end(result);
    }
}

fn log_abnormal_end(result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result {
        error!(error = %e, "a task handler ended abnormally");
    }
}

/// Host name plus a random suffix: unique per process, readable in Cockpit.
fn unique_worker_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if host.is_empty() {
        "procos".to_owned()
    } else {
        host
    };
    format!("{host}-{:08x}", rand::random::<u32>())
}
