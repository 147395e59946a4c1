//! Topics whose tasks wait while no worker serves them.
//!
//! The engine says which topics have tasks a worker could fetch now (no lock, retries left, not
//! suspended) and how long the oldest of them waited; [`judge`] holds that against the fleet's
//! topic table: a topic the table does not name is served by no worker of the fleet, and a topic
//! it names whose tasks waited longer than a few long polls was fetched by no worker (workers
//! down, or the topic unavailable on every worker). [`survey`] asks the engine and judges every
//! topic; `procos status` shows the result. The running kernel keeps an [`UnservedWatch`]: it
//! surveys about once a minute, reports a topic when it becomes unserved and when it no longer
//! is (never the same state twice), and, when the operator set `[kernel] fail_unserved_after`,
//! fails tasks that waited that long into incidents naming the topic and the fix
//! ([`fail_waiting_tasks`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use camunda_client::{ClientError, EngineClient, ExternalTask, FailureReport};

use crate::kernel::KernelEvent;

/// How often the running kernel surveys: one call, plus one or two per topic with waiting
/// tasks. Rare, so that the engine hardly notices.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// A configured topic is unserved after its tasks waited this long at least, however short the
/// long poll: the engine wakes long polls for tasks of other nodes and for elapsed retry
/// timeouts only every 30 s.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(60);
/// The worker id under which the kernel locks the tasks it fails.
pub const KERNEL_WORKER_ID: &str = "procos-kernel";
/// At most this many tasks of a topic are read, and failed, per check.
const PAGE: u32 = 100;
/// How long the kernel holds a task it is about to fail.
const FAIL_LOCK: Duration = Duration::from_secs(60);

/// How the kernel watches for unserved topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnservedSettings {
    /// A topic of the fleet's table counts as unserved once a task of it waited this long.
    pub stale_after: Duration,
    /// Tasks of unserved topics that waited this long are failed into incidents; `None`: never.
    pub fail_after: Option<Duration>,
    /// How often the engine is asked.
    pub check_interval: Duration,
}

impl UnservedSettings {
    /// Unserved after [`stale_after`]`(long_poll)`, checked every [`CHECK_INTERVAL`].
    pub fn new(long_poll: Duration, fail_after: Option<Duration>) -> Self {
        Self {
            stale_after: stale_after(long_poll),
            fail_after,
            check_interval: CHECK_INTERVAL,
        }
    }
}

/// How long a task of a configured topic may wait before the topic counts as unserved: three
/// of the workers' long polls, and at least [`MIN_STALE_AFTER`].
pub fn stale_after(long_poll: Duration) -> Duration {
    long_poll.saturating_mul(3).max(MIN_STALE_AFTER)
}

/// Why nobody serves a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unserved {
    /// The fleet's topic table does not name it, so no worker of the fleet fetches it.
    NotInTable,
    /// The table names it, but its tasks waited longer than a few long polls: no worker fetched
    /// it (workers down, or the topic unavailable on every worker).
    NotFetched,
}

/// A topic with waiting tasks and no worker serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnservedTopic {
    pub topic: String,
    pub reason: Unserved,
    /// Its tasks that wait: no lock, retries left, not suspended.
    pub waiting: u64,
    /// How long the longest-waiting of them waited (since it was created, or since its last
    /// lock ran out); `None` when the engine does not say (before Camunda 7.21).
    pub waited: Option<Duration>,
}

/// Whether `topic`, whose longest-waiting task waited `waited`, is unserved given the fleet's
/// topic `table` (empty: unknown here, so only the wait counts).
pub fn judge(
    topic: &str,
    waited: Option<Duration>,
    table: &BTreeSet<String>,
    stale_after: Duration,
) -> Option<Unserved> {
    if !table.is_empty() && !table.contains(topic) {
        return Some(Unserved::NotInTable);
    }
    match waited {
        Some(waited) if waited > stale_after => Some(Unserved::NotFetched),
        _ => None,
    }
}

/// How long `task` had waited at `now`: since it was created or since its last lock ran out,
/// whichever is later (a task that comes back after a retry timeout has waited only since).
/// `None` when the engine gives neither time.
pub fn waited(task: &ExternalTask, now: SystemTime) -> Option<Duration> {
    let created = task.create_time.map(|t| t.timestamp_millis());
    let unlocked = task.lock_expiration_time.map(|t| t.timestamp_millis());
    since(created.max(unlocked)?, now)
}

/// How long `task` had existed at `now`; no task that waits now has waited longer.
fn age(task: &ExternalTask, now: SystemTime) -> Option<Duration> {
    since(task.create_time?.timestamp_millis(), now)
}

/// The time from `millis` since the epoch to `now`; zero when `now` is earlier (clock skew).
fn since(millis: i64, now: SystemTime) -> Option<Duration> {
    let now = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    Some(Duration::from_millis(
        u64::try_from(now.saturating_sub(millis)).unwrap_or(0),
    ))
}

/// Every topic of the engine with waiting tasks and no worker serving it, judged against the
/// fleet's topic `table`.
pub async fn survey(
    client: &EngineClient,
    table: &BTreeSet<String>,
    stale_after: Duration,
) -> Result<Vec<UnservedTopic>, ClientError> {
    let mut found = Vec::new();
    for topic in client.waiting_topic_names().await? {
        let now = SystemTime::now();
        // The oldest task first: for a busy, served topic that is the only call.
        let Some(oldest) = client.waiting_external_tasks(&topic, 1).await?.pop() else {
            continue; // only tasks of suspended instances
        };
        // A configured topic whose oldest task is young has no task that waited long.
        if judge(&topic, None, table, stale_after).is_none()
            && age(&oldest, now).is_some_and(|age| age <= stale_after)
        {
            continue;
        }
        let tasks = client.waiting_external_tasks(&topic, PAGE).await?;
        let longest = tasks.iter().filter_map(|t| waited(t, now)).max();
        let Some(reason) = judge(&topic, longest, table, stale_after) else {
            continue;
        };
        let waiting = match u64::try_from(tasks.len()) {
            Ok(n) if n < u64::from(PAGE) => n,
            _ => client.waiting_external_task_count(&topic).await?,
        };
        if waiting == 0 {
            continue;
        }
        found.push(UnservedTopic {
            topic,
            reason,
            waiting,
            waited: longest,
        });
    }
    Ok(found)
}

/// Fails the tasks of `unserved` that waited longer than `fail_after` into incidents naming the
/// topic and the fix (`retries: 0`), locking them first under `worker_id` for that topic alone.
/// A worker that fetched one meanwhile wins: fetch-and-lock is atomic, and the kernel fails only
/// what it locked. The number failed.
pub async fn fail_waiting_tasks(
    client: &EngineClient,
    worker_id: &str,
    unserved: &UnservedTopic,
    fail_after: Duration,
) -> Result<usize, ClientError> {
    let now = SystemTime::now();
    let tasks = client.waiting_external_tasks(&unserved.topic, PAGE).await?;
    let due = due_to_fail(&tasks, now, fail_after);
    // Oldest first, up to the last task due: tasks among them that are not due go back.
    let Some(reach) = tasks.iter().rposition(|t| due.contains_key(&t.id)) else {
        return Ok(0);
    };
    let max_tasks = u32::try_from(reach + 1).unwrap_or(PAGE);
    let locked = client
        .lock_oldest_external_tasks(worker_id, &unserved.topic, max_tasks, FAIL_LOCK)
        .await?;
    let mut failed = 0;
    for task in locked {
        let Some(task_waited) = due.get(&task.id) else {
            if let Err(e) = client.unlock(&task.id).await {
                tracing::debug!(task = %task.id, error = %e, "could not hand a task back");
            }
            continue;
        };
        let report = FailureReport {
            worker_id: worker_id.to_owned(),
            error_message: incident_message(unserved, *task_waited),
            error_details: Some(incident_details(unserved, fail_after)),
            retries: 0,
            retry_timeout: 0,
        };
        match client.report_failure(&task.id, &report).await {
            Ok(()) => failed += 1,
            Err(e) => {
                tracing::debug!(task = %task.id, error = %e, "could not fail an unserved task");
                let _ = client.unlock(&task.id).await;
            }
        }
    }
    Ok(failed)
}

/// The tasks that waited longer than `fail_after`, with how long.
fn due_to_fail(
    tasks: &[ExternalTask],
    now: SystemTime,
    fail_after: Duration,
) -> HashMap<String, Duration> {
    tasks
        .iter()
        .filter_map(|t| Some((t.id.clone(), waited(t, now)?)))
        .filter(|(_, waited)| *waited > fail_after)
        .collect()
}

/// The running kernel's look at unserved topics: a survey every `check_interval`, each change
/// reported once, and tasks failed after `fail_after`.
#[derive(Debug)]
pub struct UnservedWatch {
    client: EngineClient,
    table: BTreeSet<String>,
    settings: UnservedSettings,
    /// Topics reported unserved and not reported served since.
    known: BTreeMap<String, UnservedTopic>,
    last_check: Option<Instant>,
}

impl UnservedWatch {
    pub fn new(client: EngineClient, table: BTreeSet<String>, settings: UnservedSettings) -> Self {
        Self {
            client,
            table,
            settings,
            known: BTreeMap::new(),
            last_check: None,
        }
    }

    /// Counts `table` as the fleet's topics from now on; the next check is due at once, so that
    /// a topic the table now names stops being reported, and one it dropped is reported.
    pub fn set_table(&mut self, table: BTreeSet<String>) {
        self.table = table;
        self.last_check = None;
    }

    /// Whether a check is due: never made, or made `check_interval` ago.
    pub fn due(&self) -> bool {
        self.last_check
            .is_none_or(|last| last.elapsed() >= self.settings.check_interval)
    }

    /// Surveys the engine and returns what changed: topics that became unserved, topics that no
    /// longer are, tasks failed. An engine that does not answer changes nothing.
    pub async fn check(&mut self) -> Vec<KernelEvent> {
        self.last_check = Some(Instant::now());
        let unserved = match survey(&self.client, &self.table, self.settings.stale_after).await {
            Ok(unserved) => unserved,
            Err(e) => {
                tracing::debug!(error = %e, "could not look for unserved topics");
                return Vec::new();
            }
        };
        let (new, gone) = changes(&self.known, &unserved);
        let mut events: Vec<KernelEvent> = new
            .into_iter()
            .cloned()
            .map(KernelEvent::TopicUnserved)
            .chain(
                gone.into_iter()
                    .map(|topic| KernelEvent::TopicServed { topic }),
            )
            .collect();
        if let Some(fail_after) = self.settings.fail_after {
            for topic in unserved
                .iter()
                .filter(|t| t.waited.is_some_and(|w| w > fail_after))
            {
                match fail_waiting_tasks(&self.client, KERNEL_WORKER_ID, topic, fail_after).await {
                    Ok(0) => {}
                    Ok(failed) => events.push(KernelEvent::UnservedTasksFailed {
                        topic: topic.topic.clone(),
                        failed,
                        fail_after,
                    }),
                    Err(e) => {
                        tracing::debug!(topic = %topic.topic, error = %e, "could not fail unserved tasks");
                    }
                }
            }
        }
        self.known = unserved.into_iter().map(|t| (t.topic.clone(), t)).collect();
        events
    }
}

/// What changed between the topics reported unserved (`known`) and those unserved `now`: the
/// newly unserved, and the topics no longer unserved.
pub fn changes<'a>(
    known: &BTreeMap<String, UnservedTopic>,
    now: &'a [UnservedTopic],
) -> (Vec<&'a UnservedTopic>, Vec<String>) {
    let new = now
        .iter()
        .filter(|t| !known.contains_key(&t.topic))
        .collect();
    let gone = known
        .keys()
        .filter(|topic| !now.iter().any(|t| &t.topic == *topic))
        .cloned()
        .collect();
    (new, gone)
}

/// The topic's table header as TOML spells it: `[topics.python]`, `[topics."a.b"]`.
pub fn topic_table(topic: &str) -> String {
    let bare = !topic.is_empty()
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        format!("[topics.{topic}]")
    } else {
        format!("[topics.{}]", serde_json::Value::String(topic.to_owned()))
    }
}

/// A duration to the second, as people read it: `12m 4s`.
pub fn format_wait(waited: Duration) -> String {
    humantime::format_duration(Duration::from_secs(waited.as_secs())).to_string()
}

/// One line about an unserved topic: its waiting tasks, their wait, why and the fix.
pub fn unserved_topic_message(unserved: &UnservedTopic) -> String {
    let UnservedTopic {
        topic,
        reason,
        waiting,
        waited,
    } = unserved;
    let age = match waited {
        Some(waited) => format!("the oldest for {}", format_wait(*waited)),
        None => "for how long the engine does not say".to_owned(),
    };
    let table = topic_table(topic);
    match reason {
        Unserved::NotInTable => format!(
            "topic `{topic}`: {waiting} task(s) waiting, {age}, and no worker serves it: the fleet's topic table has no {table}; add it with an adapter, or start a worker that serves `{topic}`"
        ),
        Unserved::NotFetched => format!(
            "topic `{topic}`: {waiting} task(s) waiting, {age}: {table} is configured, but no worker fetched it (workers down, or the topic unavailable on every worker); start a worker that serves `{topic}`"
        ),
    }
}

/// The incident message of a task the kernel failed.
pub fn incident_message(unserved: &UnservedTopic, waited: Duration) -> String {
    let topic = &unserved.topic;
    let table = topic_table(topic);
    let waited = format_wait(waited);
    match unserved.reason {
        Unserved::NotInTable => format!(
            "no worker serves topic `{topic}` (waited {waited}): add {table} to the fleet's topic table, or start a worker that serves it"
        ),
        Unserved::NotFetched => format!(
            "no worker fetched topic `{topic}` (waited {waited}): {table} is configured, but no worker fetched it; start a worker that serves it"
        ),
    }
}

/// The incident's details: what happened and the fix, step by step.
pub fn incident_details(unserved: &UnservedTopic, fail_after: Duration) -> String {
    let topic = &unserved.topic;
    let table = topic_table(topic);
    let why = match unserved.reason {
        Unserved::NotInTable => format!(
            "The fleet's topic table (the [topics.*] tables of procos.toml) has no {table}, so no ProcOS worker fetches tasks of topic `{topic}`."
        ),
        Unserved::NotFetched => format!(
            "The fleet's topic table has {table}, but no worker fetched this task: the workers are down, or the topic is unavailable on every worker (see the workers' logs and /readyz)."
        ),
    };
    format!(
        "{why}\nThe ProcOS kernel failed the task after it waited longer than [kernel] fail_unserved_after ({}).\n\
         To fix: add {table} with an adapter to procos.toml and restart the workers, or start a worker that serves `{topic}`; \
         then retry the task (Cockpit: the incident's retry action, or PUT /external-task/{{id}}/retries).",
        format_wait(fail_after)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn table(topics: &[&str]) -> BTreeSet<String> {
        topics.iter().map(|t| (*t).to_owned()).collect()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_topic_the_table_does_not_name_is_unserved_however_young_its_tasks() {
        let fleet = table(&["echo"]);
        assert_eq!(
            judge("python", Some(Duration::ZERO), &fleet, MINUTE),
            Some(Unserved::NotInTable)
        );
        assert_eq!(
            judge("python", None, &fleet, MINUTE),
            Some(Unserved::NotInTable)
        );
    }

    #[test]
    fn a_configured_topic_is_unserved_only_once_its_tasks_waited_too_long() {
        let fleet = table(&["echo"]);
        assert_eq!(
            judge("echo", Some(Duration::from_secs(59)), &fleet, MINUTE),
            None
        );
        assert_eq!(judge("echo", Some(MINUTE), &fleet, MINUTE), None);
        assert_eq!(
            judge("echo", Some(Duration::from_secs(61)), &fleet, MINUTE),
            Some(Unserved::NotFetched)
        );
        assert_eq!(
            judge("echo", None, &fleet, MINUTE),
            None,
            "no age, no verdict"
        );
    }

    #[test]
    fn without_a_table_only_the_wait_counts() {
        let unknown = BTreeSet::new();
        assert_eq!(
            judge("python", Some(Duration::from_secs(5)), &unknown, MINUTE),
            None
        );
        assert_eq!(
            judge("python", Some(Duration::from_secs(600)), &unknown, MINUTE),
            Some(Unserved::NotFetched)
        );
    }

    #[test]
    fn stale_means_three_long_polls_and_at_least_a_minute() {
        assert_eq!(
            stale_after(Duration::from_secs(30)),
            Duration::from_secs(90)
        );
        assert_eq!(stale_after(Duration::from_secs(5)), MINUTE);
        assert_eq!(stale_after(Duration::ZERO), MINUTE);
        assert_eq!(stale_after(Duration::MAX), Duration::MAX);
    }

    fn task(id: &str, created: &str, lock_expired: Option<&str>) -> ExternalTask {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "topicName": "python",
            "createTime": created,
            "lockExpirationTime": lock_expired,
        }))
        .unwrap()
    }

    fn at(text: &str) -> SystemTime {
        let ms = chrono_free_millis(text);
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// `2026-01-01T00:MM:SS.000+0000` in ms since the epoch (tests use this one hour only).
    fn chrono_free_millis(text: &str) -> u64 {
        const JAN_1_2026: u64 = 1_767_225_600_000;
        let minutes: u64 = text[14..16].parse().unwrap();
        let seconds: u64 = text[17..19].parse().unwrap();
        JAN_1_2026 + (minutes * 60 + seconds) * 1000
    }

    #[test]
    fn a_task_waits_since_it_was_created_or_since_its_last_lock_ran_out() {
        let now = at("2026-01-01T00:10:00.000+0000");
        let fresh = task("a", "2026-01-01T00:08:00.000+0000", None);
        assert_eq!(waited(&fresh, now), Some(Duration::from_secs(120)));
        let retried = task(
            "b",
            "2026-01-01T00:00:00.000+0000",
            Some("2026-01-01T00:09:30.000+0000"),
        );
        assert_eq!(waited(&retried, now), Some(Duration::from_secs(30)));
        let future = task("c", "2026-01-01T00:11:00.000+0000", None);
        assert_eq!(waited(&future, now), Some(Duration::ZERO), "clock skew");
        let unknown: ExternalTask = serde_json::from_value(serde_json::json!({
            "id": "d", "topicName": "python"
        }))
        .unwrap();
        assert_eq!(waited(&unknown, now), None);
    }

    #[test]
    fn only_tasks_that_waited_longer_than_the_limit_are_failed() {
        let now = at("2026-01-01T00:10:00.000+0000");
        let tasks = [
            task("old", "2026-01-01T00:00:00.000+0000", None),
            task(
                "retried",
                "2026-01-01T00:00:30.000+0000",
                Some("2026-01-01T00:09:00.000+0000"),
            ),
            task("young", "2026-01-01T00:09:50.000+0000", None),
        ];
        let due = due_to_fail(&tasks, now, Duration::from_secs(5 * 60));
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due["old"], Duration::from_secs(600));
    }

    fn unserved(topic: &str, reason: Unserved) -> UnservedTopic {
        UnservedTopic {
            topic: topic.to_owned(),
            reason,
            waiting: 3,
            waited: Some(Duration::from_secs(724)),
        }
    }

    #[test]
    fn each_change_is_reported_once() {
        let mut known = BTreeMap::new();
        let first = [unserved("python", Unserved::NotInTable)];
        let (new, gone) = changes(&known, &first);
        assert_eq!(new, [&first[0]]);
        assert!(gone.is_empty());
        known.insert("python".to_owned(), first[0].clone());

        // The same state a minute later (more tasks, longer waits) is not news.
        let later = [UnservedTopic {
            waiting: 5,
            ..first[0].clone()
        }];
        let (new, gone) = changes(&known, &later);
        assert!(new.is_empty() && gone.is_empty());

        let (new, gone) = changes(&known, &[]);
        assert!(new.is_empty());
        assert_eq!(gone, ["python"]);
    }

    #[test]
    fn messages_name_the_topic_the_wait_and_the_fix() {
        let line = unserved_topic_message(&unserved("python", Unserved::NotInTable));
        assert!(line.contains("`python`"), "{line}");
        assert!(line.contains("3 task(s) waiting"), "{line}");
        assert!(line.contains("12m 4s"), "{line}");
        assert!(line.contains("[topics.python]"), "{line}");
        let line = unserved_topic_message(&unserved("echo", Unserved::NotFetched));
        assert!(
            line.contains("is configured, but no worker fetched it"),
            "{line}"
        );

        let incident = incident_message(
            &unserved("python", Unserved::NotInTable),
            Duration::from_millis(600_400),
        );
        assert_eq!(
            incident,
            "no worker serves topic `python` (waited 10m): add [topics.python] to the fleet's topic table, or start a worker that serves it"
        );
        let details = incident_details(
            &unserved("python", Unserved::NotInTable),
            Duration::from_secs(600),
        );
        assert!(details.contains("fail_unserved_after (10m)"), "{details}");
        assert!(details.contains("To fix"), "{details}");
        assert_eq!(topic_table("a.b"), r#"[topics."a.b"]"#);
    }
}
