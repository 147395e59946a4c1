//! Reloading the topic table while ProcOS runs (`procos worker`, `procos up`, `procos kernel`):
//! the configuration file is watched, SIGHUP asks for a reload at once, and each new
//! `[topics.*]` table is read as at start (file + environment) and handed to the workers'
//! [`TopicTable`], which takes it or refuses it with the start's message while the running one
//! stays; the kernel's unserved-topic check then counts the new table's topics as served.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use procos_worker::{TopicConfig, TopicTable};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config;

/// How often the file's modification time is looked at. Polling one `stat` a second costs
/// nothing and works everywhere the file can live (bind mounts, ConfigMaps swapped by symlink,
/// network file systems), which inotify does not; it also spares a file-watching crate.
const POLL: Duration = Duration::from_secs(1);

/// How long the file must stay unchanged before it is read, so that a file being written is not
/// read half-way (and refused for it).
const SETTLE: Duration = Duration::from_millis(100);

/// Who takes a reloaded topic table.
#[derive(Debug, Default)]
pub struct Takers {
    /// The workers of this process; `None` under `procos kernel`, which runs none.
    pub workers: Option<TopicTable>,
    /// The kernel's unserved-topic check, which counts the fleet's topics as served: it gets the
    /// names of a table the workers took (or, without workers here, of any table that parses).
    pub kernel: Option<watch::Sender<BTreeSet<String>>>,
}

/// Watches `path` and SIGHUP until `shutdown`, handing each new topic table to `takers`.
pub async fn watch(path: PathBuf, takers: Takers, shutdown: CancellationToken) {
    // As `commands::run` decides: a file named on the command line or in PROCOS_CONFIG must exist.
    let explicit = std::env::var_os("PROCOS_CONFIG").is_some() || path != Path::new("procos.toml");
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; the topic table reloads when the configuration file changes");
            None
        }
    };
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let cause = tokio::select! {
            () = shutdown.cancelled() => return,
            // Whoever sends SIGHUP says the file is ready: it is read at once.
            () = hung_up(&mut hangup) => {
                seen = stamp(&path);
                "SIGHUP"
            }
            _ = tick.tick() => {
                if stamp(&path) == seen {
                    continue;
                }
                seen = settled_stamp(&path).await;
                "the file changed"
            }
        };
        reload(&path, explicit, &takers, cause);
    }
}

/// Reads the file as at start and offers its topic table; logs what changed or the refusal.
fn reload(path: &Path, explicit: bool, takers: &Takers, cause: &str) {
    let config = match config::load(path, explicit) {
        Ok(config) => config,
        Err(e) => {
            let problem = format!("{e:#}");
            error!(%cause, "topic table refused, the running one stays: {problem}");
            if let Some(table) = &takers.workers {
                table.refuse(&problem);
            }
            return;
        }
    };
    let names = config.served_topics();
    if let Some(table) = &takers.workers
        && !offer(path, table, config.topics, cause)
    {
        return;
    }
    if let Some(kernel) = &takers.kernel {
        let changed = kernel.send_if_modified(|served| {
            let changed = *served != names;
            *served = names.clone();
            changed
        });
        if changed && takers.workers.is_none() {
            info!(
                %cause,
                "topic table reloaded: the fleet's topics are now [{}]",
                names.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
}

/// Hands `topics` to the workers' table; whether it was taken.
fn offer(
    path: &Path,
    table: &TopicTable,
    topics: BTreeMap<String, TopicConfig>,
    cause: &str,
) -> bool {
    match table.replace(topics) {
        Ok(change) if change.is_empty() => info!(
            %cause,
            "topic table unchanged (only [topics.*] reloads while running; other settings apply at the next start)"
        ),
        Ok(change) => info!(%cause, "topic table reloaded: {change}"),
        Err(e) => {
            error!(
                %cause,
                "topic table refused, the running one stays: invalid configuration in {}: {e}",
                path.display()
            );
            return false;
        }
    }
    true
}

/// What tells a changed file: its modification time and length (`None` while it is missing).
fn stamp(path: &Path) -> Option<(Option<SystemTime>, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok(), metadata.len()))
}

/// The file's stamp once it stopped changing for [`SETTLE`] (or after a few tries).
async fn settled_stamp(path: &Path) -> Option<(Option<SystemTime>, u64)> {
    let mut last = stamp(path);
    for _ in 0..10 {
        tokio::time::sleep(SETTLE).await;
        let now = stamp(path);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Returns on SIGHUP; never, when it cannot be listened for.
async fn hung_up(hangup: &mut Option<tokio::signal::unix::Signal>) {
    match hangup {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use procos_worker::{Telemetry, WorkerConfig};

    use super::*;

    fn table() -> TopicTable {
        let topics: BTreeMap<String, TopicConfig> =
            [("a".to_owned(), TopicConfig::new("echo"))].into();
        TopicTable::new(&WorkerConfig::default(), topics, Telemetry::new())
    }

    fn names(served: &watch::Receiver<BTreeSet<String>>) -> Vec<String> {
        served.borrow().iter().cloned().collect()
    }

    #[tokio::test]
    async fn an_edited_file_is_offered_and_a_broken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("procos.toml");
        std::fs::write(&path, "[topics.a]\nadapter = \"echo\"\n").unwrap();
        let (kernel, served) = watch::channel(BTreeSet::from(["a".to_owned()]));
        let takers = Takers {
            workers: Some(table()),
            kernel: Some(kernel),
        };
        let topics = || takers.workers.as_ref().unwrap().current();

        std::fs::write(&path, "[topics.b]\nadapter = \"echo\"\n").unwrap();
        reload(&path, true, &takers, "test");
        assert!(topics().contains_key("b"));
        assert_eq!(topics().len(), 1);
        assert_eq!(names(&served), ["b"], "the kernel counts the new table");

        std::fs::write(
            &path,
            "[topics.b]\nadapter = \"echo\"\nlock_duration = \"10ms\"\n[topics.c]\nadapter = \"echo\"\n",
        )
        .unwrap();
        reload(&path, true, &takers, "test");
        assert_eq!(
            topics()["b"].lock_duration,
            Duration::from_secs(60),
            "the running table stays"
        );
        assert_eq!(names(&served), ["b"], "a refused table is not counted");

        std::fs::write(&path, "[topics.b\n").unwrap();
        reload(&path, true, &takers, "test");
        assert!(topics().contains_key("b"));
        assert_eq!(names(&served), ["b"]);
    }

    #[tokio::test]
    async fn without_workers_the_kernel_takes_the_names_of_a_table_that_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("procos.toml");
        let (kernel, served) = watch::channel(BTreeSet::from(["a".to_owned()]));
        let takers = Takers {
            workers: None,
            kernel: Some(kernel),
        };
        std::fs::write(
            &path,
            "[topics.a]\nadapter = \"echo\"\n[topics.b]\nadapter = \"python\"\n",
        )
        .unwrap();
        reload(&path, true, &takers, "test");
        assert_eq!(names(&served), ["a", "b"]);

        std::fs::write(&path, "[topics.a\n").unwrap();
        reload(&path, true, &takers, "test");
        assert_eq!(
            names(&served),
            ["a", "b"],
            "an unreadable file changes nothing"
        );
    }

    #[tokio::test]
    async fn a_file_stamp_changes_with_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("procos.toml");
        assert_eq!(stamp(&path), None);
        std::fs::write(&path, "x").unwrap();
        let first = stamp(&path);
        assert!(first.is_some());
        std::fs::write(&path, "xy").unwrap();
        assert_ne!(settled_stamp(&path).await, first);
    }
}
