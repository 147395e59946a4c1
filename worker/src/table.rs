//! The topic table while workers run: [`TopicTable`] takes a new table, checks it as
//! [`Worker::new`](crate::Worker::new) checks the first one, and hands it to every worker of the
//! process, which swaps it in between two fetches.
//!
//! A table that does not validate is refused with the [`ConfigError`] a start would have met;
//! the running table stays, and [`Telemetry`] reports the refusal (log, `/readyz`, metrics)
//! until a table is taken again.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use procos_adapters::{BuildContext, ImageAllowlist};
use tokio::sync::watch;

use crate::config::{ConfigError, TopicConfig, WorkerConfig, build_route, check_not_empty};
use crate::metrics::Telemetry;

/// The table as the workers share it.
pub(crate) type Topics = Arc<BTreeMap<String, TopicConfig>>;

/// The topic table the workers of a process serve, replaceable while they run.
///
/// Create it with the table the workers were built with, give each worker its
/// [`TopicTable::updates`] ([`Worker::run_with_table`](crate::Worker::run_with_table)), then
/// [`TopicTable::replace`] the table whenever the configuration changes.
#[derive(Debug)]
pub struct TopicTable {
    sender: watch::Sender<Topics>,
    context: BuildContext,
    telemetry: Telemetry,
}

/// What a new table changed, by topic name (each list sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableChange {
    /// Topics fetched from now on.
    pub added: Vec<String>,
    /// Topics no longer fetched; their running tasks finish.
    pub removed: Vec<String>,
    /// Topics whose settings changed; the next task fetched gets them.
    pub changed: Vec<String>,
}

impl TableChange {
    /// The new table is the running one.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for TableChange {
    /// `added [a, b], removed [], changed [c]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "added [{}], removed [{}], changed [{}]",
            self.added.join(", "),
            self.removed.join(", "),
            self.changed.join(", ")
        )
    }
}

impl TopicTable {
    /// The table the workers start with (already checked by [`Worker::new`](crate::Worker::new)),
    /// with the worker settings that apply to every table (`allowed_images`).
    pub fn new(
        worker: &WorkerConfig,
        topics: BTreeMap<String, TopicConfig>,
        telemetry: Telemetry,
    ) -> Self {
        let (sender, _) = watch::channel(Arc::new(topics));
        Self {
            sender,
            context: build_context(worker),
            telemetry,
        }
    }

    /// The table the workers serve now.
    pub fn current(&self) -> Arc<BTreeMap<String, TopicConfig>> {
        Arc::clone(&self.sender.borrow())
    }

    /// What a worker receives new tables through.
    pub fn updates(&self) -> TableUpdates {
        TableUpdates {
            receiver: Some(self.sender.subscribe()),
            // The table may have been replaced since the worker was built: look once at start.
            pending: true,
        }
    }

    /// Checks `topics` as a start would (every topic's keys, every new or changed topic's
    /// adapter built) and, when it passes, hands it to the workers: new topics are fetched,
    /// removed ones are not and their running tasks finish, changed ones apply to the next task.
    /// A table that does not pass is refused with the start's [`ConfigError`] and the running
    /// one stays.
    pub fn replace(
        &self,
        topics: BTreeMap<String, TopicConfig>,
    ) -> Result<TableChange, ConfigError> {
        let current = self.current();
        let checked = check(&current, &topics, &self.context);
        match &checked {
            Ok(change) => {
                self.telemetry.table_applied();
                if !change.is_empty() {
                    self.sender.send_replace(Arc::new(topics));
                }
            }
            Err(e) => self.telemetry.table_refused(&e.to_string()),
        }
        checked
    }

    /// A new table could not be read at all (the file does not parse, say): the running one
    /// stays, and `/readyz` names `problem` until a table is taken.
    pub fn refuse(&self, problem: &str) {
        self.telemetry.table_refused(problem);
    }
}

/// The policy adapters are built under: the same for every table of a worker.
pub(crate) fn build_context(worker: &WorkerConfig) -> BuildContext {
    BuildContext {
        allowed_images: ImageAllowlist::new(worker.allowed_images.clone()),
        rootfs_dir: worker.rootfs_dir.clone(),
        workspaces: worker.workspaces(),
        // Checking a table builds its adapters without engine access; a worker adds its own.
        engine: None,
    }
}

/// What `new` changes from `current`, once every topic of `new` that is not in `current` as it
/// is has been checked and its adapter built (and dropped: adapters start nothing until they
/// run).
fn check(
    current: &BTreeMap<String, TopicConfig>,
    new: &BTreeMap<String, TopicConfig>,
    context: &BuildContext,
) -> Result<TableChange, ConfigError> {
    check_not_empty(new)?;
    let mut change = TableChange::default();
    for (topic, config) in new {
        match current.get(topic) {
            Some(running) if running == config => continue,
            Some(_) => change.changed.push(topic.clone()),
            None => change.added.push(topic.clone()),
        }
        build_route(topic, config, context)?;
    }
    change.removed = current
        .keys()
        .filter(|topic| !new.contains_key(*topic))
        .cloned()
        .collect();
    Ok(change)
}

/// New topic tables for one worker, from its process's [`TopicTable`].
#[derive(Debug)]
pub struct TableUpdates {
    /// `None` once the table is dropped, or for a worker that never reloads.
    receiver: Option<watch::Receiver<Topics>>,
    /// A table arrived that the worker has not taken yet.
    pending: bool,
}

impl TableUpdates {
    /// No table ever arrives.
    pub(crate) fn none() -> Self {
        Self {
            receiver: None,
            pending: false,
        }
    }

    /// Returns when a new table has arrived (at once if one waits); never, when none can.
    pub(crate) async fn arrived(&mut self) {
        if self.pending {
            return;
        }
        let Some(receiver) = &mut self.receiver else {
            return std::future::pending().await;
        };
        if receiver.changed().await.is_ok() {
            self.pending = true;
        } else {
            // The table was dropped: this worker serves its last table to the end.
            self.receiver = None;
            std::future::pending::<()>().await;
        }
    }

    /// The newest table, when one arrived since the last call.
    pub(crate) fn take(&mut self) -> Option<Topics> {
        let receiver = self.receiver.as_mut()?;
        if !self.pending && !receiver.has_changed().unwrap_or(false) {
            return None;
        }
        self.pending = false;
        Some(Arc::clone(&receiver.borrow_and_update()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn table(text: &str) -> BTreeMap<String, TopicConfig> {
        toml::from_str(text).unwrap()
    }

    fn topic_table() -> TopicTable {
        TopicTable::new(
            &WorkerConfig::default(),
            table("[a]\nadapter = 'echo'\n[b]\nadapter = 'echo'"),
            Telemetry::new(),
        )
    }

    #[test]
    fn a_new_table_says_what_it_adds_removes_and_changes() {
        let topics = topic_table();
        let change = topics
            .replace(table(
                "[b]\nadapter = 'echo'\nretries = 5\n[c]\nadapter = 'echo'",
            ))
            .unwrap();
        assert_eq!(change.added, ["c"]);
        assert_eq!(change.removed, ["a"]);
        assert_eq!(change.changed, ["b"]);
        assert_eq!(change.to_string(), "added [c], removed [a], changed [b]");
        assert_eq!(topics.current()["b"].retries, 5);
        assert!(
            topics
                .replace(table(
                    "[b]\nadapter = 'echo'\nretries = 5\n[c]\nadapter = 'echo'"
                ))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_invalid_table_is_refused_with_the_start_message_and_the_running_one_stays() {
        let topics = topic_table();
        let telemetry = topics.telemetry.clone();
        let err = topics
            .replace(table("[a]\nadapter = 'echo'\nlock_duration = '10ms'"))
            .unwrap_err();
        assert_eq!(err.key, "topics.a.lock_duration");
        assert!(err.fix.contains("60s"), "{err}");
        assert_eq!(topics.current().len(), 2);
        assert_eq!(topics.current()["a"].lock_duration, Duration::from_secs(60));
        let note = telemetry.refused_table().unwrap();
        assert!(note.contains("topics.a.lock_duration"), "{note}");

        let err = topics.replace(BTreeMap::new()).unwrap_err();
        assert_eq!(err.key, "topics");

        topics.replace(table("[a]\nadapter = 'echo'")).unwrap();
        assert_eq!(telemetry.refused_table(), None);
    }

    #[tokio::test]
    async fn a_worker_sees_the_newest_table_once() {
        let topics = topic_table();
        let mut updates = topics.updates();
        // The first look at start.
        assert_eq!(updates.take().unwrap().len(), 2);
        assert!(updates.take().is_none());
        topics.replace(table("[a]\nadapter = 'echo'")).unwrap();
        topics.replace(table("[z]\nadapter = 'echo'")).unwrap();
        tokio::time::timeout(Duration::from_secs(1), updates.arrived())
            .await
            .unwrap();
        let newest = updates.take().unwrap();
        assert!(newest.contains_key("z") && newest.len() == 1);
        assert!(updates.take().is_none());
        // An unchanged table wakes nobody.
        topics.replace(table("[z]\nadapter = 'echo'")).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), updates.arrived())
                .await
                .is_err()
        );
    }
}
