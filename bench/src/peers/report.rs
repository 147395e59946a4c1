//! The results: the figures of each run, the machine and versions they were taken on, the
//! markdown the command prints and keeps in `bench/results/peers.md`, and `peers.json`, which
//! `bench/chart/chart.py` draws `peers.png` from.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use procos_bench::{Machine, Sorted, Table, write_results};
use serde::Serialize;

use crate::contender::Kind;

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    pub instances: usize,
    /// Tasks per second: instances / (last instance end − first instance start), engine clock.
    pub tasks_per_s: f64,
    pub span_s: f64,
    /// The same window on the driver's clock, from the first start request to the last end seen.
    pub wall_s: f64,
    /// Pickup of the instances started one at a time (the worker idle in its long poll).
    pub pickup: Option<Pickup>,
    /// Pickup of the measured instances (started at full speed: includes the wait in the backlog).
    pub pickup_under_load: Option<Pickup>,
    pub worker_cpu_s_per_1000: Option<f64>,
    pub worker_peak_rss_mb: Option<f64>,
    /// Resident memory when the worker was stopped: anonymous and file-backed (its code).
    pub worker_rss_anon_mb: Option<f64>,
    pub worker_rss_file_mb: Option<f64>,
    pub engine_cpu_s_per_1000: Option<f64>,
    pub driver_cpu_s_per_1000: Option<f64>,
    /// CPU seconds over the measured window (the wall clock one).
    pub worker_cpu_s: Option<f64>,
    pub engine_cpu_s: Option<f64>,
    pub driver_cpu_s: f64,
    /// The engine's CPU over the measured window by kind of thread, largest first.
    pub engine_threads: Vec<ThreadCpu>,
}

/// CPU seconds one kind of the engine's threads used.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadCpu {
    pub kind: String,
    pub cpu_s: f64,
}

impl ThreadCpu {
    /// The difference of two per-thread-kind samples, named for people and largest first;
    /// threads that ended in between are what is left of `total`.
    pub fn breakdown(
        before: &BTreeMap<String, f64>,
        after: &BTreeMap<String, f64>,
        total: f64,
    ) -> Vec<Self> {
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        for (kind, cpu) in after {
            let used = cpu - before.get(kind).copied().unwrap_or(0.0);
            *by_name.entry(jvm_thread_name(kind)).or_insert(0.0) += used.max(0.0);
        }
        let rest = total - by_name.values().sum::<f64>();
        if rest > 0.0 {
            by_name.insert("threads that ended meanwhile".into(), rest);
        }
        let mut all: Vec<Self> = by_name
            .into_iter()
            .filter(|(_, cpu)| *cpu >= total * 0.01)
            .map(|(kind, cpu_s)| Self { kind, cpu_s })
            .collect();
        all.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
        all
    }
}

/// What a thread of Camunda's Spring Boot JVM does, from its (truncated) name.
fn jvm_thread_name(kind: &str) -> String {
    let name = if kind.starts_with("http-nio-") {
        "REST requests (Tomcat threads)"
    } else if kind.contains("CompilerThre") {
        "JIT compiler"
    } else if kind.starts_with("GC Thread") || kind.starts_with("G1 ") {
        "garbage collector"
    } else if kind.starts_with("FetchAndLockHan") {
        "long-poll handler"
    } else if kind.starts_with("H2-") || kind.starts_with("MVStore") {
        "H2 background"
    } else if kind == "VM Thread" {
        "JVM safepoints"
    } else {
        kind
    };
    name.to_owned()
}

/// Task created (engine clock) → its handler got it (machine clock), in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Pickup {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Pickup {
    pub fn from_samples(millis: Vec<f64>) -> Option<Self> {
        let sorted = Sorted::new(millis)?;
        Some(Self {
            samples: sorted.len(),
            p50_ms: sorted.percentile(0.50),
            p90_ms: sorted.percentile(0.90),
            p99_ms: sorted.percentile(0.99),
            max_ms: sorted.max(),
        })
    }
}

/// One run: a contender with a number of worker processes, and its figures or why there are none.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub contender: Kind,
    pub label: &'static str,
    pub workers: usize,
    /// The echo scenario's round (1 elsewhere).
    pub round: usize,
    pub figures: Option<RunFigures>,
    pub error: Option<String>,
}

/// The settings every contender ran with.
#[derive(Debug, Serialize)]
pub struct Settings {
    pub instances: usize,
    pub warmup: usize,
    pub engine_warmup: usize,
    pub rounds: usize,
    pub max_tasks: usize,
    pub lock_duration_ms: u64,
    pub long_poll_ms: u64,
    pub start_concurrency: usize,
    pub latency_samples: usize,
    pub latency_gap_ms: u64,
    pub scaling_instances: usize,
    pub scaling_workers: Vec<usize>,
    pub scaling_delay_ms: u64,
    pub js_interval_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub settings: Settings,
    /// Each contender's best echo round.
    pub main: Vec<RunResult>,
    /// Every echo round, in the order they ran.
    pub echo_rounds: Vec<RunResult>,
    pub scaling: Vec<RunResult>,
    pub duration_s: f64,
}

impl Report {
    /// Writes `peers.md` and `peers.json` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_results(dir, "peers", &self.markdown(), self)
    }

    fn main_figures(&self, kind: Kind) -> Option<&RunFigures> {
        self.main
            .iter()
            .find(|r| r.contender == kind)
            .and_then(|r| r.figures.as_ref())
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "# ProcOS and the official external task clients on one engine\n"
        );
        let _ = writeln!(
            out,
            "{}\n",
            self.machine.describe(&self.date, self.duration_s)
        );
        let _ = writeln!(out, "Versions:\n");
        for (what, version) in &self.versions {
            let _ = writeln!(out, "- {what}: {version}");
        }
        let _ = writeln!(out);

        let _ = writeln!(
            out,
            "## Throughput and cost: echo task, one worker process each, {} instances\n",
            s.instances
        );
        let _ = writeln!(
            out,
            "Every contender: maxTasks {}, lock duration {} s, long poll {} s. Per run: {} warm-up instances; {} instances started one every {} ms for pickup latency; then the {} measured instances, started {} at a time. Before all runs the engine warms up with {} instances with and {} without an external task. {}; each contender's best round (most tasks/s) is shown.\n",
            s.max_tasks,
            s.lock_duration_ms / 1000,
            s.long_poll_ms / 1000,
            s.warmup,
            s.latency_samples,
            s.latency_gap_ms,
            s.instances,
            s.start_concurrency,
            s.engine_warmup,
            s.engine_warmup,
            match s.rounds {
                1 => "One round".to_owned(),
                n => format!("{n} rounds, the order reversed every other round"),
            }
        );
        let procos = self.main_figures(Kind::Procos);
        let mut table = Table::new(&[
            "contender",
            "tasks/s",
            "× ProcOS",
            "pickup p50",
            "pickup p99",
            "worker CPU s / 1,000 tasks",
            "× ProcOS",
            "worker peak RSS",
            "× ProcOS",
            "engine CPU s / 1,000 tasks",
        ]);
        for run in &self.main {
            let Some(f) = &run.figures else {
                let mut row = vec![
                    run.label.to_owned(),
                    format!(
                        "failed: {}",
                        one_line(run.error.as_deref().unwrap_or("no figures"))
                    ),
                ];
                row.resize(10, String::new());
                table.row(row);
                continue;
            };
            let ratio = |value: Option<f64>, of: fn(&RunFigures) -> Option<f64>| -> String {
                match (value, procos.and_then(of)) {
                    (Some(v), Some(p)) if p > 0.0 => format!("{:.2}×", v / p),
                    _ => "—".into(),
                }
            };
            let pickup = |which: &Option<Pickup>, of: fn(&Pickup) -> f64| {
                which
                    .as_ref()
                    .map_or("—".into(), |p| format!("{:.1} ms", of(p)))
            };
            table.row(vec![
                run.label.to_owned(),
                format!("{:.0}", f.tasks_per_s),
                ratio(Some(f.tasks_per_s), |p| Some(p.tasks_per_s)),
                pickup(&f.pickup, |p| p.p50_ms),
                pickup(&f.pickup, |p| p.p99_ms),
                opt(f.worker_cpu_s_per_1000, |v| format!("{v:.3}")),
                ratio(f.worker_cpu_s_per_1000, |p| p.worker_cpu_s_per_1000),
                opt(f.worker_peak_rss_mb, |v| format!("{v:.0} MB")),
                ratio(f.worker_peak_rss_mb, |p| p.worker_peak_rss_mb),
                opt(f.engine_cpu_s_per_1000, |v| format!("{v:.2}")),
            ]);
        }
        let _ = writeln!(out, "{}", table.markdown());
        let _ = writeln!(
            out,
            "Tasks/s: measured instances ÷ (last end − first start), engine clock. Pickup: task created (external-task log) → the worker's handler got it, ±1 ms (engine timestamps are whole milliseconds); p50/p99 of the instances started one at a time, the workers idle in their long poll (`peers.json` also has it for the measured instances, where it is mostly their wait in the backlog). CPU: utime + stime over the measured window (start-up, warm-up and the paced instances excluded). Peak RSS: VmHWM just before the worker is stopped. 1 MB = 10⁶ bytes.\n"
        );
        let mut per_round: Vec<String> = Vec::new();
        for run in &self.main {
            let rounds: Vec<String> = self
                .echo_rounds
                .iter()
                .filter(|r| r.contender == run.contender)
                .map(|r| {
                    r.figures
                        .as_ref()
                        .map_or("failed".into(), |f| format!("{:.0}", f.tasks_per_s))
                })
                .collect();
            per_round.push(format!("{} {}", run.label, rounds.join(" / ")));
        }
        let _ = writeln!(
            out,
            "Tasks/s in each round, in the order the rounds ran: {}.\n",
            per_round.join("; ")
        );
        let _ = writeln!(
            out,
            "Where the CPU went in the measured window (cores busy = CPU seconds ÷ window on the driver's clock; the engine by kind of thread, CPU seconds per 1,000 tasks):\n"
        );
        let mut table = Table::new(&[
            "contender",
            "window",
            "engine cores",
            "worker cores",
            "driver cores",
            "worker RSS at the end (anon + file)",
            "engine CPU by thread, s / 1,000 tasks",
        ])
        .left(6);
        for run in &self.main {
            let Some(f) = &run.figures else { continue };
            let cores = |cpu: Option<f64>| opt(cpu, |c| format!("{:.2}", c / f.wall_s));
            let threads: Vec<String> = f
                .engine_threads
                .iter()
                .take(5)
                .map(|t| format!("{} {:.2}", t.kind, t.cpu_s / f.instances as f64 * 1000.0))
                .collect();
            let rss = match (f.worker_rss_anon_mb, f.worker_rss_file_mb) {
                (Some(anon), Some(file)) => format!("{anon:.0} + {file:.0} MB"),
                _ => "—".into(),
            };
            table.row(vec![
                run.label.to_owned(),
                format!("{:.1} s", f.wall_s),
                cores(f.engine_cpu_s),
                cores(f.worker_cpu_s),
                cores(Some(f.driver_cpu_s)),
                rss,
                if threads.is_empty() {
                    "—".into()
                } else {
                    threads.join("; ")
                },
            ]);
        }
        let _ = writeln!(out, "{}", table.markdown());

        if !self.scaling.is_empty() {
            let _ = writeln!(
                out,
                "## Scaling: {} ms task body, {} instances per run\n",
                s.scaling_delay_ms, s.scaling_instances
            );
            let _ = writeln!(
                out,
                "Tasks/s with 1 to {} worker processes of each contender (each after {} warm-up instances per process, maxTasks {} per process).\n",
                s.scaling_workers.iter().max().copied().unwrap_or(1),
                s.max_tasks,
                s.max_tasks
            );
            let mut kinds: Vec<Kind> = Vec::new();
            for r in &self.scaling {
                if !kinds.contains(&r.contender) {
                    kinds.push(r.contender);
                }
            }
            let mut header = vec!["worker processes".to_owned()];
            header.extend(s.scaling_workers.iter().map(|w| format!("{w} × tasks/s")));
            let mut table = Table::new(&header);
            for kind in kinds {
                let mut row = vec![kind.label().to_owned()];
                row.extend(s.scaling_workers.iter().map(|w| {
                    match self
                        .scaling
                        .iter()
                        .find(|r| r.contender == kind && r.workers == *w)
                    {
                        Some(RunResult {
                            figures: Some(f), ..
                        }) => format!("{:.0}", f.tasks_per_s),
                        Some(RunResult { error: Some(e), .. }) => {
                            format!("failed: {}", one_line(e))
                        }
                        _ => "—".into(),
                    }
                }));
                table.row(row);
            }
            let _ = writeln!(out, "{}", table.markdown());
        }

        let _ = writeln!(out, "## ProcOS's targets\n");
        for line in self.targets() {
            let _ = writeln!(out, "- {line}");
        }
        let _ = writeln!(out, "\n![ProcOS and the official clients](peers.png)");
        out
    }

    /// Each target with met or missed and the measured ratio.
    fn targets(&self) -> Vec<String> {
        let Some(procos) = self.main_figures(Kind::Procos) else {
            return vec!["no ProcOS figures in this run".into()];
        };
        let verdict = |met: bool| if met { "**met**" } else { "**missed**" };
        let mut lines = Vec::new();
        if let Some(ceiling) = self.main_figures(Kind::Ceiling) {
            let r = procos.tasks_per_s / ceiling.tasks_per_s;
            lines.push(format!(
                "tasks/s at least 0.9× the engine ceiling: {} ({r:.2}×: {:.0} vs {:.0})",
                verdict(r >= 0.9),
                procos.tasks_per_s,
                ceiling.tasks_per_s
            ));
        }
        let peers: Vec<&RunResult> = self
            .main
            .iter()
            .filter(|r| !matches!(r.contender, Kind::Procos | Kind::Ceiling))
            .collect();
        if let Some(best) = peers
            .iter()
            .filter_map(|r| r.figures.as_ref().map(|f| (r.label, f.tasks_per_s)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
        {
            lines.push(format!(
                "ahead of every peer in tasks/s: {} (the best peer, {}, at {:.2}× ProcOS)",
                verdict(procos.tasks_per_s > best.1),
                best.0,
                best.1 / procos.tasks_per_s
            ));
        }
        if let Some(java) = self.main_figures(Kind::Java) {
            if let (Some(p), Some(j)) = (procos.worker_cpu_s_per_1000, java.worker_cpu_s_per_1000) {
                lines.push(format!(
                    "CPU per 1,000 tasks at most 1/5 of the Java client's: {} (1/{:.1})",
                    verdict(p * 5.0 <= j),
                    j / p
                ));
            }
            if let (Some(p), Some(j)) = (procos.worker_peak_rss_mb, java.worker_peak_rss_mb) {
                lines.push(format!(
                    "peak RSS at most 1/10 of the Java client's: {} (1/{:.1})",
                    verdict(p * 10.0 <= j),
                    j / p
                ));
            }
        }
        if let Some(p) = &procos.pickup {
            lines.push(format!(
                "pickup p50 under 20 ms: {} ({:.1} ms)",
                verdict(p.p50_ms < 20.0),
                p.p50_ms
            ));
        }
        lines
    }
}

/// Replaces the results section of `doc` (between `<!-- results:peers -->` and
/// `<!-- /results:peers -->`) with `markdown`, without its title, its headings two levels down
/// and its chart linked from the document's directory. A document without the markers is left alone, with a warning.
pub fn update_doc(doc: &Path, results_dir: &Path, markdown: &str) -> anyhow::Result<()> {
    const START: &str = "<!-- results:peers -->";
    const END: &str = "<!-- /results:peers -->";
    let text = fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    let (Some(start), Some(end)) = (text.find(START), text.find(END)) else {
        eprintln!(
            "==> {} has no `{START}` … `{END}` section; not updated",
            doc.display()
        );
        return Ok(());
    };
    if end < start {
        anyhow::bail!("{}: `{END}` comes before `{START}`", doc.display());
    }
    let doc_dir = absolute(doc.parent().unwrap_or(Path::new(".")))?;
    let chart = relative(&doc_dir, &absolute(results_dir)?.join("peers.png"));
    // The section sits under a third-level heading of its own: the report's title is dropped
    // and its second-level headings become fourth-level ones.
    let body: Vec<String> = markdown
        .lines()
        .skip_while(|line| line.starts_with("# "))
        .map(|line| {
            if line.starts_with("##") {
                format!("##{line}")
            } else {
                line.replace("](peers.png)", &format!("]({chart})"))
            }
        })
        .collect();
    let updated = format!(
        "{}{START}\n{}\n{}",
        &text[..start],
        body.join("\n").trim_end(),
        &text[end..]
    );
    fs::write(doc, updated).with_context(|| format!("writing {}", doc.display()))
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}

/// `to` as seen from the directory `from` (both absolute), with `/` separators.
fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

fn opt(value: Option<f64>, show: impl Fn(f64) -> String) -> String {
    value.map_or("—".into(), show)
}

fn one_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .replace('|', "/")
        .chars()
        .take(120)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_linked_from_the_documents_directory() {
        assert_eq!(
            relative(
                Path::new("/r/docs"),
                Path::new("/r/bench/results/peers.png")
            ),
            "../bench/results/peers.png"
        );
        assert_eq!(
            relative(Path::new("/r"), Path::new("/r/peers.png")),
            "peers.png"
        );
    }

    #[test]
    fn only_the_marked_section_of_the_document_changes() {
        let dir = std::env::temp_dir().join(format!("procos-bench-doc-{}", std::process::id()));
        let results = dir.join("results");
        fs::create_dir_all(&results).unwrap();
        let doc = dir.join("doc.md");
        fs::write(
            &doc,
            "# Doc\nbefore\n<!-- results:peers -->\nold\n<!-- /results:peers -->\nafter\n",
        )
        .unwrap();
        update_doc(
            &doc,
            &results,
            "# Title\n\n## Part\n\n| a |\n\n![c](peers.png)\n",
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(&doc).unwrap(),
            "# Doc\nbefore\n<!-- results:peers -->\n\n#### Part\n\n| a |\n\n![c](results/peers.png)\n<!-- /results:peers -->\nafter\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Pickup::from_samples((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!(
            (p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        let one = Pickup::from_samples(vec![7.0]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert!(Pickup::from_samples(Vec::new()).is_none());
    }
}
