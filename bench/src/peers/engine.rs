//! The engine's side of a run: the benchmark's two models (one external task; the same with a
//! no-op expression instead, see [`Model`]), instances started at a fixed concurrency, and what history says
//! afterwards (each instance's start and end, each task's creation), all on the engine's clock.
//! Every call goes through the typed client.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use camunda_client::{
    EngineClient, ExternalTaskLogQuery, FetchAndLock, HistoricProcessInstanceQuery,
    StartProcessInstance, TopicSubscription,
};
use chrono::{DateTime, FixedOffset};
use procos_bench::Model;
use tokio::task::JoinSet;

/// Business key of the instances that warm a worker up; they are not counted.
pub const WARMUP: &str = "warmup";
/// Business key of the instances started one at a time for pickup latency.
pub const PACED: &str = "paced";
/// Business key of the instances of the throughput measurement.
pub const MEASURED: &str = "measured";

/// The benchmark's calls to one engine.
#[derive(Debug, Clone)]
pub struct Engine {
    client: EngineClient,
}

/// A finished instance as history records it, on the engine's clock.
#[derive(Debug, Clone)]
pub struct FinishedInstance {
    pub id: String,
    pub start: DateTime<FixedOffset>,
    pub end: DateTime<FixedOffset>,
}

impl Engine {
    pub fn new(client: EngineClient) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &EngineClient {
        &self.client
    }

    /// Deploys the process `key` with its service task as `model` says; the external task's
    /// topic is the key too.
    pub async fn deploy(&self, key: &str, model: Model) -> anyhow::Result<()> {
        procos_bench::deploy(&self.client, key, model).await
    }

    /// Starts `count` instances of `key` with `business_key`, `concurrency` requests at a time.
    pub async fn start_instances(
        &self,
        key: &str,
        business_key: &str,
        count: usize,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let next = Arc::new(AtomicUsize::new(0));
        let mut starters = JoinSet::new();
        for _ in 0..concurrency.clamp(1, count.max(1)) {
            let client = self.client.clone();
            let next = Arc::clone(&next);
            let start = StartProcessInstance {
                business_key: Some(business_key.to_owned()),
                ..StartProcessInstance::default()
            };
            let key = key.to_owned();
            starters.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    client
                        .start_process_instance(&key, &start)
                        .await
                        .with_context(|| format!("starting an instance of {key}"))?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = starters.join_next().await {
            done??;
        }
        Ok(())
    }

    /// Starts `count` instances of `key` with `business_key`, one every `gap` (one at a time: a
    /// start that takes longer than `gap` delays the next).
    pub async fn start_paced(
        &self,
        key: &str,
        business_key: &str,
        count: usize,
        gap: Duration,
    ) -> anyhow::Result<()> {
        let start = StartProcessInstance {
            business_key: Some(business_key.to_owned()),
            ..StartProcessInstance::default()
        };
        let mut ticks = tokio::time::interval(gap);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..count {
            ticks.tick().await;
            self.client
                .start_process_instance(key, &start)
                .await
                .with_context(|| format!("starting an instance of {key}"))?;
        }
        Ok(())
    }

    /// How many instances of `key` with `business_key` have ended.
    pub async fn finished_count(&self, key: &str, business_key: &str) -> anyhow::Result<u64> {
        Ok(self
            .client
            .historic_process_instance_count(&finished(key, business_key))
            .await?)
    }

    /// Waits until `expected` instances of `key` with `business_key` have ended, checking
    /// `alive` (the workers) between looks; gives up at `deadline`.
    pub async fn wait_finished(
        &self,
        key: &str,
        business_key: &str,
        expected: usize,
        deadline: Instant,
        mut alive: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        loop {
            let done = self.finished_count(key, business_key).await?;
            if done >= expected as u64 {
                return Ok(());
            }
            alive()?;
            if Instant::now() > deadline {
                bail!(
                    "only {done} of {expected} `{business_key}` instances of {key} ended in time"
                );
            }
            // Often enough for a second-long run, rarely enough not to load the engine.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The ended instances of `key` with `business_key`, with their start and end times.
    pub async fn finished_instances(
        &self,
        key: &str,
        business_key: &str,
    ) -> anyhow::Result<Vec<FinishedInstance>> {
        let history = self
            .client
            .historic_process_instances(&finished(key, business_key))
            .await?;
        Ok(history
            .into_iter()
            .filter_map(|instance| {
                Some(FinishedInstance {
                    start: instance.start_time?,
                    end: instance.end_time?,
                    id: instance.id,
                })
            })
            .collect())
    }

    /// When each external task of `key` was created (engine clock, epoch milliseconds), with its
    /// process instance: task id → (instance id, created).
    pub async fn task_creations(
        &self,
        key: &str,
    ) -> anyhow::Result<HashMap<String, (String, i64)>> {
        let log = self
            .client
            .external_task_log(&ExternalTaskLogQuery {
                process_definition_key: Some(key.to_owned()),
                creation_log: Some(true),
                ..ExternalTaskLogQuery::default()
            })
            .await?;
        Ok(log
            .into_iter()
            .map(|e| {
                (
                    e.external_task_id,
                    (
                        e.process_instance_id.unwrap_or_default(),
                        e.timestamp.timestamp_millis(),
                    ),
                )
            })
            .collect())
    }

    /// Withdraws the pending long poll of a stopped worker: an empty fetch under its id replaces
    /// it (the engine runs with `fetch-and-lock-unique-worker-request`). Without this, the polls
    /// of peers that do not withdraw their own would linger in the engine for up to their
    /// timeout and be woken by the next contender's tasks.
    pub async fn retract_long_poll(&self, worker_id: &str, topic: &str) {
        let request = FetchAndLock {
            worker_id: worker_id.to_owned(),
            max_tasks: 0,
            use_priority: false,
            async_response_timeout: Some(1),
            topics: vec![TopicSubscription {
                topic_name: topic.to_owned(),
                lock_duration: 1000,
                variables: None,
                local_variables: false,
                business_key: None,
                process_definition_key_in: None,
                tenant_id_in: None,
                without_tenant_id: false,
                process_variables: None,
                include_extension_properties: false,
            }],
        };
        // Best effort: a poll that is already gone needs no withdrawing.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.fetch_and_lock(&request))
            .await;
    }
}

/// History's ended instances of `key` with `business_key`.
fn finished(key: &str, business_key: &str) -> HistoricProcessInstanceQuery {
    HistoricProcessInstanceQuery {
        process_definition_key: Some(key.to_owned()),
        business_key: Some(business_key.to_owned()),
        finished: true,
        ..HistoricProcessInstanceQuery::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_query_asks_for_ended_instances_of_one_kind() {
        let query = finished("k", MEASURED);
        assert_eq!(query.process_definition_key.as_deref(), Some("k"));
        assert_eq!(query.business_key.as_deref(), Some(MEASURED));
        assert!(query.finished && !query.unfinished);
    }
}
