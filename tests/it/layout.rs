//! The dependency rules of ARCHITECTURE.md hold: between the workspace's crates (read from
//! `cargo metadata`) and between the modules of `adapters/` (read from their `crate::` paths).
//! The rules are parsed from ARCHITECTURE.md itself, so the document and the check are one.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rules in the fenced block that follows `marker` in ARCHITECTURE.md: `name -> a b c`, or
/// `name -> (none)`.
fn rules(marker: &str) -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let after = doc
        .split_once(marker)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no `{marker}`"))
        .1;
    let block = after
        .split_once("```text\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("no ```text block after `{marker}` in ARCHITECTURE.md"))
        .0;
    block
        .lines()
        .filter(|line| line.contains("->"))
        .map(|line| {
            let (name, allowed) = line.split_once("->").unwrap();
            let allowed = allowed
                .split_whitespace()
                .filter(|a| *a != "(none)")
                .map(str::to_owned)
                .collect();
            (name.trim().to_owned(), allowed)
        })
        .collect()
}

#[test]
fn the_crates_depend_on_each_other_only_as_architecture_md_says() {
    let allowed = rules("<!-- crate rules -->");
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let mut problems = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        let Some(rule) = allowed.get(name) else {
            problems.push(format!("{name} has no rule in ARCHITECTURE.md"));
            continue;
        };
        for dependency in package["dependencies"].as_array().unwrap() {
            let dep = dependency["name"].as_str().unwrap();
            // Tests may use any crate; the rules are about what ships.
            let dev = dependency["kind"].as_str() == Some("dev");
            if members.contains(dep) && !dev && !rule.contains(dep) {
                problems.push(format!(
                    "{name} depends on {dep}, which its rule does not allow"
                ));
            }
        }
    }
    for stale in allowed.keys().filter(|name| !members.contains(*name)) {
        problems.push(format!(
            "ARCHITECTURE.md has a rule for {stale}, which is no crate"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `crate::NAME` paths in `text`, including those inside `use crate::{…}` groups.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's top-level entries, up to its closing brace.
            let (mut depth, mut start) = (0, 0);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.insert(first_segment(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(first_segment(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(first_segment(rest));
        }
    }
    names.remove("");
    names
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        files.extend(rust_files(&entry.unwrap().path()));
    }
    files
}

#[test]
fn the_modules_of_adapters_use_each_other_only_as_architecture_md_says() {
    let allowed = rules("<!-- adapters module rules -->");
    let src = root().join("adapters/src");
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name != "lib" {
            modules.insert(name);
        }
    }
    let mut problems = Vec::new();
    for module in &modules {
        let Some(rule) = allowed.get(module) else {
            problems.push(format!(
                "adapters/src/{module} has no rule in ARCHITECTURE.md"
            ));
            continue;
        };
        let path = if src.join(module).is_dir() {
            src.join(module)
        } else {
            src.join(format!("{module}.rs"))
        };
        for file in rust_files(&path) {
            let text = std::fs::read_to_string(&file).unwrap();
            for used in crate_paths(&text) {
                if modules.contains(&used) && used != *module && !rule.contains(&used) {
                    problems.push(format!(
                        "{} uses crate::{used}, which the rule for `{module}` does not allow",
                        file.strip_prefix(root()).unwrap().display()
                    ));
                }
            }
        }
    }
    for stale in allowed.keys().filter(|name| !modules.contains(*name)) {
        problems.push(format!(
            "ARCHITECTURE.md has a rule for adapters module `{stale}`, which does not exist"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn crate_paths_are_read_from_plain_uses_and_groups() {
    let text = "use crate::sandbox::{A, B};\nuse crate::{Adapter, inputs::json_input, config::{x, y}};\nlet v = crate::docker::f();";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["Adapter", "config", "docker", "inputs", "sandbox"]);
}
