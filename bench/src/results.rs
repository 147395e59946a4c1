//! What a benchmark's results say besides its figures (the machine, the date, the versions) and
//! how they are written: markdown tables, and `NAME.md` beside `NAME.json` in a results
//! directory.

use std::fs;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// The machine a run was taken on.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
    pub kernel: String,
    pub load_before: String,
    pub load_after: String,
}

impl Machine {
    /// From `/proc` and `/etc/os-release`; the load average is filled in around the runs.
    pub fn probe() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let memory_kib: f64 = fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let os = fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| "Linux".into());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        Self {
            cpu,
            cores,
            memory_gib: memory_kib / 1024.0 / 1024.0,
            os,
            kernel,
            load_before: load_average(),
            load_after: String::new(),
        }
    }

    /// The sentence a results file opens with: when, on what, how loaded, how long.
    pub fn describe(&self, date: &str, duration_s: f64) -> String {
        format!(
            "Run on {date} on {} ({} logical cores), {:.1} GiB RAM, {}, Linux {}; load average (1, 5, 15 min) {} before, {} after. The whole run took {duration_s:.0} s.",
            self.cpu,
            self.cores,
            self.memory_gib,
            self.os,
            self.kernel,
            self.load_before,
            self.load_after,
        )
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Now, as a results file dates its run.
pub fn report_date() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The first line a program prints when run with `args` (`java -version` prints on stderr).
pub async fn tool_version(program: &std::ffi::OsStr, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
}

/// Writes `NAME.md` (the report as printed) and `NAME.json` (its figures) into `dir`.
pub fn write_results(
    dir: &Path,
    name: &str,
    markdown: &str,
    figures: &impl Serialize,
) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = dir.join(format!("{name}.md"));
    fs::write(&md, markdown).with_context(|| format!("writing {}", md.display()))?;
    let json = dir.join(format!("{name}.json"));
    fs::write(&json, serde_json::to_string_pretty(figures)?)
        .with_context(|| format!("writing {}", json.display()))?;
    Ok(())
}

/// A markdown table: the first column (what a row is) aligned left, the figures right.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(header: &[S]) -> Self {
        Self {
            header: header.iter().map(|h| h.as_ref().to_owned()).collect(),
            right: (0..header.len()).map(|i| i > 0).collect(),
            rows: Vec::new(),
        }
    }

    /// Aligns column `index` left (text rather than a figure).
    pub fn left(mut self, index: usize) -> Self {
        if let Some(right) = self.right.get_mut(index) {
            *right = false;
        }
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The header, the alignment line and the rows, each line ending in a newline; an empty
    /// cell is `| |`.
    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| {
            let mut line = String::from("|");
            for cell in cells {
                if !cell.is_empty() {
                    line.push(' ');
                    line.push_str(cell);
                }
                line.push_str(" |");
            }
            line.push('\n');
            line
        };
        let align: Vec<String> = self
            .right
            .iter()
            .map(|&r| if r { "---:" } else { "---" }.to_owned())
            .collect();
        let mut out = line(&self.header);
        out.push_str(&line(&align));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_figures_right() {
        let mut table = Table::new(&["what", "n", "note"]).left(2);
        table.row(vec!["a".into(), "1".into(), "x".into()]);
        table.row(vec!["b".into(), String::new(), String::new()]);
        assert_eq!(
            table.markdown(),
            "| what | n | note |\n| --- | ---: | --- |\n| a | 1 | x |\n| b | | |\n"
        );
    }
}
