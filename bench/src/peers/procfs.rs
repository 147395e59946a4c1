//! What a worker process costs, read from `/proc` without touching the process: CPU time
//! (utime + stime of the process and of its children, reaped or alive) and peak resident memory
//! (`VmHWM`, the high-water mark the kernel keeps).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::process::Command;

use anyhow::{Context, bail};

/// Clock ticks per second of the times in `/proc/PID/stat`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    ticks_per_second: f64,
}

impl Clock {
    /// Asks `getconf CLK_TCK`; Linux reports these times in USER_HZ, which is 100 on every
    /// common architecture, so that is the answer when getconf is missing.
    pub fn probe() -> Self {
        let ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0);
        Self {
            ticks_per_second: ticks,
        }
    }

    /// CPU seconds used so far by `pid` and every process below it: its own utime + stime, its
    /// reaped children's (cutime + cstime), and the live descendants' own.
    pub fn tree_cpu_seconds(&self, pid: u32) -> anyhow::Result<f64> {
        let root = stat(pid)?;
        let mut ticks = root.utime + root.stime + root.cutime + root.cstime;
        for child in descendants(pid) {
            // A child may exit between the scan and this read; its time then shows up in the
            // parent's cutime at the next sample.
            if let Ok(s) = stat(child) {
                ticks += s.utime + s.stime;
            }
        }
        Ok(ticks as f64 / self.ticks_per_second)
    }

    /// CPU seconds used so far by `pid` alone (with its reaped children).
    pub fn cpu_seconds(&self, pid: u32) -> anyhow::Result<f64> {
        let s = stat(pid)?;
        Ok((s.utime + s.stime + s.cutime + s.cstime) as f64 / self.ticks_per_second)
    }

    /// CPU seconds used so far by the live threads of `pid`, summed per kind of thread (the
    /// thread's name without its numbers: a JVM's `GC Thread#0` and `GC Thread#1` are one
    /// kind). Two samples subtracted show where a process spent a stretch of time: a profile
    /// by thread, read from outside.
    pub fn threads_cpu_seconds(&self, pid: u32) -> anyhow::Result<BTreeMap<String, f64>> {
        let dir = format!("/proc/{pid}/task");
        let mut kinds = BTreeMap::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let path = entry?.path();
            // A thread may end between the listing and these reads.
            let (Ok(comm), Ok(text)) = (
                fs::read_to_string(path.join("comm")),
                fs::read_to_string(path.join("stat")),
            ) else {
                continue;
            };
            let Ok(s) = parse_stat(&text) else { continue };
            *kinds.entry(thread_kind(comm.trim())).or_insert(0.0) +=
                (s.utime + s.stime) as f64 / self.ticks_per_second;
        }
        Ok(kinds)
    }
}

/// A thread's name with each number that stands apart (after `-`, `#`, a space, or at the start)
/// replaced by `N`: `http-nio-8080-` → `http-nio-N-`, `GC Thread#1` → `GC Thread#N`, while the
/// digits of a word stay (`H2-save`, `C2 CompilerThre`).
fn thread_kind(name: &str) -> String {
    let mut kind = String::with_capacity(name.len());
    let mut in_number = false;
    for c in name.chars() {
        let starts_number = kind.is_empty() || kind.ends_with(['-', '#', ' ', '_']);
        if c.is_ascii_digit() && (in_number || starts_number) {
            if !in_number {
                kind.push('N');
                in_number = true;
            }
        } else {
            in_number = false;
            kind.push(c);
        }
    }
    kind
}

/// Resident memory of `pid` now, in bytes: anonymous (heap, stacks) and file-backed (the
/// program's own code and libraries, mapped from disk).
pub fn rss_parts_bytes(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    Ok((field("RssAnon:"), field("RssFile:")))
}

/// Peak resident set size (`VmHWM`) of `pid` plus that of each live descendant, in bytes. A sum of
/// peaks is an upper bound of the tree's peak; the workers measured here are single processes.
pub fn tree_peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let mut total = peak_rss_bytes(pid)?;
    for child in descendants(pid) {
        total += peak_rss_bytes(child).unwrap_or(0);
    }
    Ok(total)
}

fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .with_context(|| format!("no VmHWM in {path}"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("unreadable VmHWM in {path}: {line}"))?;
    Ok(kib * 1024)
}

#[derive(Debug)]
struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

fn stat(pid: u32) -> anyhow::Result<Stat> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text).with_context(|| format!("unreadable {path}"))
}

/// `/proc/PID/stat`: the command name is in parentheses and may hold spaces, so fields are
/// counted from the last `)`: state, ppid, … utime (14), stime, cutime, cstime (17).
fn parse_stat(text: &str) -> anyhow::Result<Stat> {
    let Some((_, rest)) = text.rsplit_once(')') else {
        bail!("no `)` after the command name");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        let raw = fields
            .get(n - 3)
            .with_context(|| format!("field {n} is missing"))?;
        raw.parse::<u64>()
            .with_context(|| format!("field {n} is not a number: {raw}"))
    };
    Ok(Stat {
        ppid: u32::try_from(field(4)?)?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// Every live process below `pid`, found by walking parent links over `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(s) = stat(child) {
            children.entry(s.ppid).or_default().push(child);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line =
            "4242 (java (x) y) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 7 3 20 0 30 0 1 2 3";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.ppid, 1);
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (250, 50, 7, 3));
    }

    #[test]
    fn thread_kinds_drop_their_numbers() {
        assert_eq!(thread_kind("http-nio-48697-"), "http-nio-N-");
        assert_eq!(thread_kind("GC Thread#1"), "GC Thread#N");
        assert_eq!(thread_kind("VM Thread"), "VM Thread");
        assert_eq!(thread_kind("H2-serializatio"), "H2-serializatio");
        assert_eq!(thread_kind("C2 CompilerThre"), "C2 CompilerThre");
        assert_eq!(thread_kind("G1 Conc#0"), "G1 Conc#N");
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_peak() {
        let clock = Clock::probe();
        assert!(clock.tree_cpu_seconds(std::process::id()).unwrap() >= 0.0);
        assert!(tree_peak_rss_bytes(std::process::id()).unwrap() > 0);
        assert!(
            !clock
                .threads_cpu_seconds(std::process::id())
                .unwrap()
                .is_empty()
        );
        assert!(rss_parts_bytes(std::process::id()).unwrap().0 > 0);
    }
}
