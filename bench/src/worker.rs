//! `procos worker` as the benchmarks run it: its own process, configured by a `procos.toml` they
//! write, asked whether it is ready on its own `/readyz` (the worker's endpoint, not the
//! engine's), and signalled through kill(1) (no libc: unsafe code is denied).

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// A `procos.toml`: `[engine] url`, the `[worker]` table given, and the `[topics]`.
pub fn worker_file(
    engine_url: &str,
    worker: toml::Table,
    topics: impl IntoIterator<Item = (String, toml::Table)>,
) -> anyhow::Result<String> {
    let mut engine = toml::Table::new();
    engine.insert("url".into(), engine_url.into());
    let topics: toml::Table = topics.into_iter().map(|(n, t)| (n, t.into())).collect();
    let mut root = toml::Table::new();
    root.insert("engine".into(), engine.into());
    root.insert("worker".into(), worker.into());
    root.insert("topics".into(), topics.into());
    Ok(toml::to_string(&root)?)
}

/// A topic served by the `echo` adapter.
pub fn echo_topic() -> toml::Table {
    let mut topic = toml::Table::new();
    topic.insert("adapter".into(), "echo".into());
    topic
}

/// `procos --config CONFIG LOG… worker`, configured by the file alone: the caller's `PROCOS_*`
/// variables are not passed on.
pub fn worker_command(procos: &Path, config: &Path, log: &[&str]) -> Command {
    let mut command = Command::new(procos);
    command.arg("--config").arg(config).args(log).arg("worker");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROCOS_") {
            command.env_remove(name);
        }
    }
    command
}

/// The readiness endpoint of a worker listening on `port` of the loopback address.
pub fn readyz_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/readyz")
}

/// A client for workers' `/readyz`, which answer at once or not at all.
pub fn readyz_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?)
}

/// Whether the worker's `/readyz` answers 200: its first fetch reached the engine.
pub async fn is_ready(http: &reqwest::Client, url: &str) -> bool {
    http.get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Sends `signal` (`TERM`, `HUP`, …) to process `pid`.
pub async fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .await?;
    if !status.success() {
        anyhow::bail!("kill -{signal} {pid} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_file_has_the_engine_the_worker_and_the_topics() {
        let mut worker = toml::Table::new();
        worker.insert("long_poll".into(), "30s".into());
        let text = worker_file(
            "http://127.0.0.1:1/engine-rest/",
            worker,
            [("a.b".to_owned(), echo_topic())],
        )
        .unwrap();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["engine"]["url"].as_str(),
            Some("http://127.0.0.1:1/engine-rest/")
        );
        assert_eq!(parsed["worker"]["long_poll"].as_str(), Some("30s"));
        assert_eq!(parsed["topics"]["a.b"]["adapter"].as_str(), Some("echo"));
    }
}
