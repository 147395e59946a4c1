//! The fetch loop: one long poll for all topics, sized to the free slots, each fetched task run
//! in the worker's `JoinSet`, a new topic table swapped in between two fetches, and an orderly
//! drain on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use camunda_client::{
    ClientError, EngineClient, FetchAndLock, LockedExternalTask, TopicSubscription,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::{
    ConfigError, Route, TopicConfig, WorkerConfig, build_route, build_routes, check_not_empty,
};
use crate::engine_gate::EngineAccess;
use crate::metrics::Telemetry;
use crate::table::{TableUpdates, Topics, build_context};
use crate::task::{self, Shared, Slots};

/// The longest wait between failed fetches: short enough that a restarted engine gets its
/// workers back within seconds, long enough that a fleet does not hammer an engine that is down.
const FETCH_BACKOFF_CAP: Duration = Duration::from_secs(10);

/// How often the worker removes the workspaces of instances that are no longer running: an
/// ended, cancelled or deleted instance's files go within about this long.
const WORKSPACE_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The long poll while some topic sits out at its own `max_tasks`.
const SITTING_OUT_POLL_MS: u64 = 1_000;

/// How long a long poll withdrawn for a new topic table may take to answer. ProcOS's engine
/// answers at once (`fetch-and-lock-unique-worker-request`); others keep it until it ends, and
/// the worker stops waiting for it after this.
const WITHDRAWN_POLL_WAIT: Duration = Duration::from_secs(2);

/// How often the worker asks its adapters whether they can serve (a Docker engine that went
/// away, or came back): often enough that a topic is fetched again within about a long poll
/// once its adapter serves, rarely enough to cost nothing.
const AVAILABILITY_CHECK: Duration = Duration::from_secs(30);

/// A worker, configured and ready to run.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    config: WorkerConfig,
    context: procos_adapters::BuildContext,
    /// The topic table being served. A running task holds its own `Arc` of its route, so a
    /// topic removed or changed by a new table keeps its adapter until its last task ended.
    routes: HashMap<String, Arc<Route>>,
    subscriptions: HashMap<String, TopicSubscription>,
    /// Topics whose adapter cannot serve now (why, and the fix): not fetched, so in a fleet a
    /// replica that can serve them gets their tasks.
    unavailable: HashMap<String, String>,
    /// When the adapters are next asked whether they can serve; `None`: before the next fetch.
    next_check: Option<Instant>,
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
        let mut context = build_context(&config);
        context.engine = Some(Arc::new(EngineAccess::new(
            client.clone(),
            telemetry.clone(),
        )));
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
            context,
            routes,
            subscriptions,
            unavailable: HashMap::new(),
            next_check: None,
        })
    }

    /// The id this worker locks tasks under.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// Fetches and runs tasks until `shutdown` fires, then drains. Engine outages are waited out
    /// with backoff; this never returns because the engine is down.
    pub async fn run(self, shutdown: CancellationToken) {
        self.serve(shutdown, TableUpdates::none()).await;
    }

    /// [`Worker::run`], taking each new topic table `updates` brings (from a
    /// [`TopicTable`](crate::TopicTable)) between two fetches: a long poll in flight is withdrawn
    /// when one arrives. New topics are fetched from the next fetch on; removed ones no longer
    /// are, their running tasks finish and their adapter is closed after the last one; a changed
    /// topic's next fetched task runs with its new settings. A task fetched for a topic the new
    /// table no longer has is unlocked at once.
    pub async fn run_with_table(self, shutdown: CancellationToken, updates: TableUpdates) {
        self.serve(shutdown, updates).await;
    }

    async fn serve(mut self, shutdown: CancellationToken, mut updates: TableUpdates) {
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

        let shared = Arc::clone(&self.shared);
        let telemetry = &shared.telemetry;
        let worker_id = shared.worker_id.as_str();
        telemetry.worker_started(worker_id);
        let mut background = JoinSet::new();
        background.spawn(sweep_workspaces(
            Arc::clone(&shared),
            self.config.workspaces(),
            shutdown.clone(),
        ));
        // The first fetch, and the first after an error, answers at once: readiness then
        // reflects the engine within a round trip, not after a whole long poll.
        let mut poll_ms = 0;
        loop {
            reap(&mut running);
            if let Some(topics) = updates.take() {
                self.take_table(&topics, &mut running);
            }
            self.check_availability().await;
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = updates.arrived() => continue,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let mut permits = vec![first];
            while let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
                permits.push(permit);
            }
            // Topics at their own limit sit this fetch out. The fetch's tasks run with the routes
            // they were locked under (lock duration), whatever table arrives meanwhile.
            // Topics whose adapter cannot serve now are not fetched at all.
            let serving = self
                .routes
                .values()
                .filter(|r| !self.unavailable.contains_key(&r.topic))
                .count();
            let open: Vec<Arc<Route>> = self
                .routes
                .values()
                .filter(|r| r.room() != Some(0) && !self.unavailable.contains_key(&r.topic))
                .cloned()
                .collect();
            if open.is_empty() {
                drop(permits);
                // Nothing to fetch: wait for a task to end, a new table, or the next look at
                // the adapters (when no topic can be served now).
                let next_check = self
                    .next_check
                    .unwrap_or_else(|| Instant::now() + AVAILABILITY_CHECK);
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    () = updates.arrived() => {}
                    () = tokio::time::sleep_until(next_check), if running.is_empty() => {}
                    Some(result) = running.join_next() => log_abnormal_end(result),
                }
                continue;
            }
            let room: usize = open.iter().map(|r| r.room().unwrap_or(permits.len())).sum();
            permits.truncate(room.max(1));
            // A topic left out because it is at its limit must not wait a whole long poll for
            // its next task once a slot frees: poll briefly while any topic sits out.
            let poll = if open.len() < serving {
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
            let fetched = self.fetch(&request, &shutdown, &mut updates).await;
            let took = fetch_started.elapsed();
            // A table that arrived during the fetch is taken before its tasks are dispatched:
            // a task of a topic it removed is unlocked at once.
            if let Some(topics) = updates.take() {
                self.take_table(&topics, &mut running);
            }
            let answer = match fetched {
                Fetched::Answer(answer) => answer,
                Fetched::Withdrawn(tasks) => Ok(tasks),
                Fetched::Shutdown => {
                    release(open, &mut running);
                    break;
                }
            };
            let tasks = match answer {
                Ok(tasks) => tasks,
                Err(e) => {
                    release(open, &mut running);
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
                    continue;
                }
            };
            fetch_backoff.reset();
            poll_ms = long_poll_ms;
            telemetry.fetched(worker_id, tasks.len(), took);
            debug!(
                fetched = tasks.len(),
                asked = request.max_tasks,
                "fetch answered"
            );
            for locked in tasks {
                match self.slots_for(&locked, &open, &mut permits) {
                    Some((route, slots)) => {
                        running.spawn(run_task(
                            Arc::clone(&shared),
                            route,
                            locked,
                            abort_tasks.child_token(),
                            slots,
                        ));
                    }
                    None => self.give_back(locked).await,
                }
            }
            release(open, &mut running);
        }

        telemetry.worker_draining(worker_id);
        self.retract_long_poll().await;
        self.drain(running, abort_tasks).await;
        while let Some(result) = background.join_next().await {
            log_abnormal_end(result);
        }
    }

    /// One fetch-and-lock. Dropping it on shutdown aborts the HTTP request, which ends the long
    /// poll on our side (the drain withdraws it on the engine's). When a new topic table arrives
    /// meanwhile, the long poll is withdrawn on the engine's side first and its answer still
    /// awaited: tasks the engine locked for it just before are dispatched, not left locked to a
    /// request nobody reads.
    async fn fetch(
        &self,
        request: &FetchAndLock,
        shutdown: &CancellationToken,
        updates: &mut TableUpdates,
    ) -> Fetched {
        let mut fetch = std::pin::pin!(self.shared.client.fetch_and_lock(request));
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Fetched::Shutdown,
            answer = &mut fetch => return Fetched::Answer(answer),
            () = updates.arrived() => {}
        }
        debug!("a new topic table: withdrawing the pending long poll");
        self.retract_long_poll().await;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Fetched::Shutdown,
            // The engine answers a withdrawn long poll with an error (the request is cancelled),
            // or with what it locked for it just before.
            answer = &mut fetch => Fetched::Withdrawn(answer.unwrap_or_default()),
            () = tokio::time::sleep(WITHDRAWN_POLL_WAIT) => Fetched::Withdrawn(Vec::new()),
        }
    }

    /// Serves `topics` from the next fetch on, reusing the route (adapter, slots) of every topic
    /// it keeps as it is. A table that does not build here (it was checked before it was sent,
    /// so only an adapter that builds once and not twice) is refused, and the running one stays.
    fn take_table(&mut self, topics: &Topics, running: &mut JoinSet<()>) {
        let built: Result<HashMap<String, Arc<Route>>, ConfigError> = check_not_empty(topics)
            .and_then(|()| {
                topics
                    .iter()
                    .map(|(topic, config)| Ok((topic.clone(), self.route_for(topic, config)?)))
                    .collect()
            });
        let routes = match built {
            Ok(routes) => routes,
            Err(e) => {
                error!(worker_id = %self.shared.worker_id, error = %e, "the new topic table is refused; the running one stays");
                return;
            }
        };
        let unchanged = routes.len() == self.routes.len()
            && routes.iter().all(|(topic, route)| {
                self.routes
                    .get(topic)
                    .is_some_and(|old| Arc::ptr_eq(old, route))
            });
        if unchanged {
            return;
        }
        let old = std::mem::replace(&mut self.routes, routes);
        self.subscriptions = self
            .routes
            .values()
            .map(|r| (r.topic.clone(), subscription(r)))
            .collect();
        info!(
            worker_id = %self.shared.worker_id,
            topics = ?self.routes.keys().collect::<Vec<_>>(),
            "serving the new topic table"
        );
        release(old.into_values().collect(), running);
        // New adapters are asked at once; topics that left the table are no longer reported.
        self.next_check = None;
        let gone: Vec<String> = self
            .unavailable
            .keys()
            .filter(|topic| !self.routes.contains_key(*topic))
            .cloned()
            .collect();
        for topic in gone {
            self.unavailable.remove(&topic);
            self.shared.telemetry.topic_available(&topic);
        }
    }

    /// Asks every topic's adapter whether it can serve, when a look is due; a topic that
    /// cannot is left out of the fetches (and `/readyz` and the log say why, once per change).
    async fn check_availability(&mut self) {
        if self.next_check.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.next_check = Some(Instant::now() + AVAILABILITY_CHECK);
        let routes: Vec<Arc<Route>> = self.routes.values().cloned().collect();
        let answers =
            futures_util::future::join_all(routes.iter().map(|route| route.adapter.available()))
                .await;
        let telemetry = &self.shared.telemetry;
        for (route, answer) in routes.iter().zip(answers) {
            let topic = &route.topic;
            match answer {
                Ok(()) => {
                    if self.unavailable.remove(topic).is_some() {
                        telemetry.topic_available(topic);
                        info!(topic = %topic, "the topic's adapter serves again; fetching it");
                    }
                }
                Err(why) => {
                    let why = why.to_string();
                    if self.unavailable.get(topic) != Some(&why) {
                        warn!(topic = %topic, adapter = %route.config.adapter, "the topic is unavailable and not fetched: {why}");
                        telemetry.topic_unavailable(topic, &why);
                        self.unavailable.insert(topic.clone(), why);
                    }
                }
            }
        }
    }

    /// The running route of `topic` when its configuration is unchanged, else a new one.
    fn route_for(&self, topic: &str, config: &TopicConfig) -> Result<Arc<Route>, ConfigError> {
        let old = self.routes.get(topic);
        if let Some(old) = old
            && old.config == *config
        {
            return Ok(Arc::clone(old));
        }
        let mut route = build_route(topic, config, &self.context)?;
        // An unchanged limit keeps counting the tasks still running with the old settings.
        if let Some(old) = old
            && old.config.max_tasks == config.max_tasks
        {
            route.slots.clone_from(&old.slots);
        }
        Ok(Arc::new(route))
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

    /// The route (from `fetched_with`, the routes the fetch asked for) and slots a fetched task
    /// runs with: the worker slot and, for a topic with a limit of its own, the topic slot;
    /// `None` when the task must be handed back, as when the table no longer has its topic.
    fn slots_for(
        &self,
        locked: &LockedExternalTask,
        fetched_with: &[Arc<Route>],
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> Option<(Arc<Route>, Slots)> {
        let topic = &locked.topic_name;
        if !self.routes.contains_key(topic) {
            debug!(task_id = %locked.id, %topic, "the topic left the topic table during the fetch");
            return None;
        }
        let route = fetched_with.iter().find(|r| &r.topic == topic)?;
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

/// How a fetch ended.
enum Fetched {
    /// The engine answered (or the call failed).
    Answer(Result<Vec<LockedExternalTask>, ClientError>),
    /// Withdrawn for a new topic table: what the engine had locked for it, if anything.
    Withdrawn(Vec<LockedExternalTask>),
    /// Shutdown began.
    Shutdown,
}

/// Runs one task, then closes its topic's adapter if a new table dropped or changed the topic
/// meanwhile and this was the last task of the old route.
async fn run_task(
    shared: Arc<Shared>,
    route: Arc<Route>,
    locked: LockedExternalTask,
    cancel: CancellationToken,
    slots: Slots,
) {
    task::handle(shared, Arc::clone(&route), locked, cancel, slots).await;
    if let Some(route) = Arc::into_inner(route) {
        close_retired(route).await;
    }
}

/// Drops routes held outside the table. One the table no longer holds and no task runs with is
/// the last of its adapter, which is closed in `running` (so the drain waits for it).
fn release(routes: Vec<Arc<Route>>, running: &mut JoinSet<()>) {
    for route in routes {
        if let Some(route) = Arc::into_inner(route) {
            running.spawn(close_retired(route));
        }
    }
}

async fn close_retired(route: Route) {
    debug!(topic = %route.topic, "closing the adapter of a topic the table no longer serves as it was");
    route.adapter.close().await;
}

fn subscription(route: &Route) -> TopicSubscription {
    let c = &route.config;
    TopicSubscription {
        topic_name: route.topic.clone(),
        lock_duration: u64::try_from(c.lock_duration.as_millis()).unwrap_or(u64::MAX),
        // A topic that names its variables still gets the instance's trace context.
        variables: c.variables.clone().map(|mut names| {
            if !names
                .iter()
                .any(|name| name == crate::trace_context::TRACEPARENT)
            {
                names.push(crate::trace_context::TRACEPARENT.to_owned());
            }
            names
        }),
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

/// Every [`WORKSPACE_SWEEP_INTERVAL`], removes the workspaces whose instance the engine no longer
/// runs: it ended, or was cancelled or deleted (in Cockpit, say). Workspaces are keyed by the
/// root process instance, so one that only a called library process used goes with its caller.
async fn sweep_workspaces(
    shared: Arc<Shared>,
    workspaces: procos_adapters::Workspaces,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(WORKSPACE_SWEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let listing = workspaces.clone();
        let keys = match tokio::task::spawn_blocking(move || listing.keys()).await {
            Ok(Ok(keys)) => keys,
            Ok(Err(e)) => {
                warn!(dir = %workspaces.root().display(), "cannot list the workspaces: {e}");
                continue;
            }
            Err(e) => {
                warn!("listing the workspaces ended abnormally: {e}");
                continue;
            }
        };
        if keys.is_empty() {
            continue;
        }
        let running = match shared.client.running_process_instance_ids(&keys).await {
            Ok(running) => running,
            Err(e) => {
                debug!("cannot ask which workspaces' instances run: {e}");
                continue;
            }
        };
        for key in keys.into_iter().filter(|k| !running.contains(k)) {
            let removing = workspaces.clone();
            let instance = key.clone();
            match tokio::task::spawn_blocking(move || removing.remove(&key)).await {
                Ok(Ok(())) => info!(%instance, "workspace removed: its instance no longer runs"),
                Ok(Err(e)) => warn!(%instance, "cannot remove the workspace: {e}"),
                Err(e) => warn!(%instance, "removing the workspace ended abnormally: {e}"),
            }
        }
    }
}
