//! The fetch loop: one long poll for all topics, sized to the free slots, each fetched task run
//! in the worker's `JoinSet`, and an orderly drain on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use camunda_client::{EngineClient, FetchAndLock, LockedExternalTask, TopicSubscription};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::{ConfigError, Route, TopicConfig, WorkerConfig, build_routes};
use crate::metrics::Telemetry;
use crate::task::{self, Shared, Slots};

/// The longest wait between failed fetches: short enough that a restarted engine gets its
/// workers back within seconds, long enough that a fleet does not hammer an engine that is down.
const FETCH_BACKOFF_CAP: Duration = Duration::from_secs(10);

/// The long poll while some topic sits out at its own `max_tasks`.
const SITTING_OUT_POLL_MS: u64 = 1_000;

/// A worker, configured and ready to run.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    config: WorkerConfig,
    routes: HashMap<String, Arc<Route>>,
    subscriptions: HashMap<String, TopicSubscription>,
}

impl Worker {
    /// Validates the configuration and builds every topic's adapter. Nothing is fetched yet.
    ///
    /// The worker records its metrics and health in `telemetry`, which the process's other
    /// workers and its [`ObservabilityServer`](crate::ObservabilityServer) share.
    pub fn new(
        client: EngineClient,
        config: WorkerConfig,
        topics: &BTreeMap<String, TopicConfig>,
        telemetry: Telemetry,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let context = procos_adapters::BuildContext {
            allowed_images: procos_adapters::ImageAllowlist::new(config.allowed_images.clone()),
        };
        let routes = build_routes(topics, &context)?;
        let worker_id = config.worker_id.clone().unwrap_or_else(unique_worker_id);
        let subscriptions = routes
            .iter()
            .map(|r| (r.topic.clone(), subscription(r)))
            .collect();
        let routes = routes
            .into_iter()
            .map(|r| (r.topic.clone(), Arc::new(r)))
            .collect();
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                worker_id,
                telemetry,
            }),
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
        let mut fetch_backoff = Backoff::new(Duration::from_millis(500), FETCH_BACKOFF_CAP);
        let long_poll_ms = u64::try_from(self.config.long_poll.as_millis()).unwrap_or(u64::MAX);
        info!(
            worker_id = %self.shared.worker_id,
            topics = ?self.routes.keys().collect::<Vec<_>>(),
            max_tasks = self.config.max_tasks,
            "worker started"
        );

        let telemetry = &self.shared.telemetry;
        let worker_id = self.shared.worker_id.as_str();
        telemetry.worker_started(worker_id);
        // The first fetch, and the first after an error, answers at once: readiness then
        // reflects the engine within a round trip, not after a whole long poll.
        let mut poll_ms = 0;
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
            // Topics at their own limit sit this fetch out.
            let open: Vec<&Route> = self
                .routes
                .values()
                .map(AsRef::as_ref)
                .filter(|r| r.room() != Some(0))
                .collect();
            if open.is_empty() {
                drop(permits);
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    ended = running.join_next() => match ended {
                        Some(result) => log_abnormal_end(result),
                        // Cannot happen (a full topic has running tasks); do not spin if it does.
                        None => tokio::time::sleep(Duration::from_millis(100)).await,
                    },
                }
                continue;
            }
            let room: usize = open.iter().map(|r| r.room().unwrap_or(permits.len())).sum();
            permits.truncate(room.max(1));
            // A topic left out because it is at its limit must not wait a whole long poll for
            // its next task once a slot frees: poll briefly while any topic sits out.
            let poll = if open.len() < self.routes.len() {
                poll_ms.min(SITTING_OUT_POLL_MS)
            } else {
                poll_ms
            };
            let request = FetchAndLock {
                worker_id: worker_id.to_owned(),
                max_tasks: u32::try_from(permits.len()).unwrap_or(u32::MAX),
                use_priority: true,
                async_response_timeout: Some(poll),
                topics: open
                    .iter()
                    .filter_map(|r| self.subscriptions.get(&r.topic).cloned())
                    .collect(),
            };
            let fetch_started = Instant::now();
            // Dropping the fetch on shutdown aborts the HTTP request, which ends the long poll.
            let fetched = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                fetched = self.shared.client.fetch_and_lock(&request) => fetched,
            };
            let took = fetch_started.elapsed();
            match fetched {
                Ok(tasks) => {
                    fetch_backoff.reset();
                    poll_ms = long_poll_ms;
                    telemetry.fetched(worker_id, tasks.len(), took);
                    debug!(
                        fetched = tasks.len(),
                        asked = request.max_tasks,
                        "fetch answered"
                    );
                    for locked in tasks {
                        match self.slots_for(&locked, &mut permits) {
                            Some((route, slots)) => {
                                running.spawn(task::handle(
                                    Arc::clone(&self.shared),
                                    route,
                                    locked,
                                    abort_tasks.child_token(),
                                    slots,
                                ));
                            }
                            None => self.give_back(locked).await,
                        }
                    }
                }
                Err(e) => {
                    poll_ms = 0;
                    telemetry.fetch_failed(worker_id, &e, took);
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

        telemetry.worker_draining(worker_id);
        self.retract_long_poll().await;
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
        // Again, in case the aborted poll reached the engine only after the first retraction:
        // it would lock the tasks unlocked next, and those created by the completions above.
        self.retract_long_poll().await;
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
        for route in self.routes.values() {
            route.adapter.close().await;
        }
        self.shared.telemetry.worker_stopped(&self.shared.worker_id);
        info!(worker_id = %self.shared.worker_id, "worker stopped");
    }

    /// The worker slot and, for a topic with a limit of its own, the topic slot a fetched task
    /// runs in; `None` when the task must be handed back.
    fn slots_for(
        &self,
        locked: &LockedExternalTask,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> Option<(Arc<Route>, Slots)> {
        let route = self.routes.get(&locked.topic_name)?;
        let topic = match &route.slots {
            None => None,
            Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => Some(permit),
                // One fetch serves several topics and the engine cannot be told a per-topic
                // maximum, so a topic can get more tasks than it has room for.
                Err(_) => {
                    self.shared.telemetry.task_returned(&route.topic);
                    return None;
                }
            },
        };
        let worker = permits.pop()?;
        Some((
            Arc::clone(route),
            Slots {
                _worker: worker,
                _topic: topic,
            },
        ))
    }

    /// Withdraws this worker's pending long poll from the engine. Dropping the request ends it on
    /// our side only: the engine keeps it and would lock tasks created or unlocked meanwhile for
    /// a worker that is gone, out of every other worker's reach until the lock expires. An empty
    /// fetch under the same worker id replaces it on engines that enable
    /// `fetch-and-lock-unique-worker-request` (ProcOS's does; on others it is harmless).
    async fn retract_long_poll(&self) {
        let request = FetchAndLock {
            worker_id: self.shared.worker_id.clone(),
            max_tasks: 0,
            use_priority: false,
            async_response_timeout: Some(1),
            topics: self.subscriptions.values().cloned().collect(),
        };
        match tokio::time::timeout(
            Duration::from_secs(5),
            self.shared.client.fetch_and_lock(&request),
        )
        .await
        {
            Ok(Ok(_)) => debug!("pending long poll retracted"),
            Ok(Err(e)) => debug!(error = %e, "could not retract the pending long poll"),
            Err(_) => debug!("retracting the pending long poll timed out"),
        }
    }

    async fn give_back(&self, locked: LockedExternalTask) {
        debug!(task_id = %locked.id, topic = %locked.topic_name, "no room for this task; unlocking it for other workers");
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
        // The task's `procos.*` extension properties are its per-task settings.
        include_extension_properties: true,
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
