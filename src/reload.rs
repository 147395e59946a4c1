//! Reloading the topic table while workers run (`procos worker`, `procos up`): the configuration
//! file is watched, SIGHUP asks for a reload at once, and each new `[topics.*]` table is read as
//! at start (file + environment) and handed to the workers' [`TopicTable`], which takes it or
//! refuses it with the start's message while the running one stays.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use procos_worker::TopicTable;
use tokio::signal::unix::{SignalKind, signal};
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

/// Watches `path` and SIGHUP until `shutdown`, handing each new topic table to `table`.
pub async fn watch(path: PathBuf, table: TopicTable, shutdown: CancellationToken) {
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
        reload(&path, explicit, &table, cause);
    }
}

/// Reads the file as at start and offers its topic table; logs what changed or the refusal.
fn reload(path: &Path, explicit: bool, table: &TopicTable, cause: &str) {
    let config = match config::load(path, explicit) {
        Ok(config) => config,
        Err(e) => {
            let problem = format!("{e:#}");
            error!(%cause, "topic table refused, the running one stays: {problem}");
            table.refuse(&problem);
            return;
        }
    };
    match table.replace(config.topics) {
        Ok(change) if change.is_empty() => info!(
            %cause,
            "topic table unchanged (only [topics.*] reloads while running; other settings apply at the next start)"
        ),
        Ok(change) => info!(%cause, "topic table reloaded: {change}"),
        Err(e) => error!(
            %cause,
            "topic table refused, the running one stays: invalid configuration in {}: {e}",
            path.display()
        ),
    }
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

    use std::collections::BTreeMap;

    use procos_worker::{Telemetry, TopicConfig, WorkerConfig};

    use super::*;

    fn table() -> TopicTable {
        let topics: BTreeMap<String, TopicConfig> =
            [("a".to_owned(), TopicConfig::new("echo"))].into();
        TopicTable::new(&WorkerConfig::default(), topics, Telemetry::new())
    }

    #[tokio::test]
    async fn an_edited_file_is_offered_and_a_broken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("procos.toml");
        std::fs::write(&path, "[topics.a]\nadapter = \"echo\"\n").unwrap();
        let topics = table();

        std::fs::write(&path, "[topics.b]\nadapter = \"echo\"\n").unwrap();
        reload(&path, true, &topics, "test");
        assert!(topics.current().contains_key("b"));
        assert_eq!(topics.current().len(), 1);

        std::fs::write(
            &path,
            "[topics.b]\nadapter = \"echo\"\nlock_duration = \"10ms\"\n",
        )
        .unwrap();
        reload(&path, true, &topics, "test");
        assert_eq!(
            topics.current()["b"].lock_duration,
            Duration::from_secs(60),
            "the running table stays"
        );

        std::fs::write(&path, "[topics.b\n").unwrap();
        reload(&path, true, &topics, "test");
        assert!(topics.current().contains_key("b"));
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
