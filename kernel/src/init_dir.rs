//! Deploying the init directory (ProcOS's `/proc/init`).
//!
//! Each file is its own deployment, named after the file, with the engine's duplicate filtering:
//! an unchanged file makes no new version, and a bad file cannot take the good ones down with it.
//! What happened is returned as a [`DeployReport`] for the caller to show; nothing is logged here.

use std::fmt;
use std::path::{Path, PathBuf};

use camunda_client::{DeployedResource, Deployment, EngineClient};

use crate::validate::{self, Finding};

/// Tells Cockpit where a deployment came from.
const DEPLOYMENT_SOURCE: &str = "procos";
/// Models are drawings of processes, some kilobytes; one of megabytes carries data it should
/// not (an embedded document, a script that belongs in a file). The engine would store it in
/// its database with every version, and the kernel reads it whole.
const MAX_MODEL_BYTES: u64 = 10_000_000;

/// What deploying a set of model files did.
#[derive(Debug, Default)]
pub struct DeployReport {
    /// Files that made new definition versions, with those definitions as `key:version`.
    pub deployed: Vec<(PathBuf, Vec<String>)>,
    /// Files identical to what the engine already has.
    pub unchanged: Vec<PathBuf>,
    /// Files that could not be deployed, each with its reason.
    pub problems: Vec<FileProblem>,
    /// External-task topics the deployed models use, by file.
    pub topics: Vec<(PathBuf, Vec<String>)>,
    /// Processes without `camunda:historyTimeToLive`, by file: they get the engine's default.
    pub without_history_ttl: Vec<(PathBuf, String)>,
}

impl DeployReport {
    /// No file was deployed, unchanged or refused: there was no model file.
    pub fn is_empty(&self) -> bool {
        self.deployed.is_empty() && self.unchanged.is_empty() && self.problems.is_empty()
    }

    /// Adds what `other` reports (another directory's deployment).
    pub fn absorb(&mut self, other: DeployReport) {
        self.deployed.extend(other.deployed);
        self.unchanged.extend(other.unchanged);
        self.problems.extend(other.problems);
        self.topics.extend(other.topics);
        self.without_history_ttl.extend(other.without_history_ttl);
    }
}

/// A file that could not be deployed: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub file: PathBuf,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
    pub fix: String,
    /// The engine could not be reached: the file itself may be fine, so it is tried again.
    pub engine_unavailable: bool,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}

impl FileProblem {
    fn from_finding(file: &Path, finding: Finding) -> Self {
        Self {
            file: file.to_path_buf(),
            line: finding.line,
            column: finding.column,
            message: finding.message,
            fix: finding.fix,
            engine_unavailable: false,
        }
    }

    fn whole_file(file: &Path, message: String, fix: &str) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message,
            fix: fix.to_owned(),
            engine_unavailable: false,
        }
    }
}

/// Deploys every `.bpmn`, `.dmn` and `.form` file of `dir`, in name order. An unreadable
/// directory is one problem in the report, not an error: the kernel keeps running and retries
/// on the next change. A directory without models gives an empty report
/// ([`DeployReport::is_empty`]).
pub async fn deploy_init_dir(client: &EngineClient, dir: &Path) -> DeployReport {
    let files = match model_files(dir) {
        Ok(files) => files,
        Err(e) => {
            let problem = FileProblem::whole_file(
                dir,
                format!("cannot read the init directory: {e}"),
                "create it, or point --init-dir (PROCOS_INIT_DIR) at the directory that holds the root models",
            );
            return DeployReport {
                problems: vec![problem],
                ..DeployReport::default()
            };
        }
    };
    deploy_files(client, &files).await
}

/// The `.bpmn`, `.dmn` and `.form` files directly in `dir`, in name order.
pub(crate) fn model_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(validate::is_model_file)
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Deploys the given model files, each on its own; problems are collected, not raised.
pub async fn deploy_files(client: &EngineClient, files: &[PathBuf]) -> DeployReport {
    let mut report = DeployReport::default();
    for file in files {
        match deploy_one(client, file).await {
            Ok((definitions, summary)) => {
                let topics = summary.topics;
                report.without_history_ttl.extend(
                    summary
                        .without_history_ttl
                        .into_iter()
                        .map(|process| (file.clone(), process)),
                );
                if definitions.is_empty() {
                    report.unchanged.push(file.clone());
                } else {
                    report.deployed.push((file.clone(), definitions));
                }
                if !topics.is_empty() {
                    report.topics.push((file.clone(), topics));
                }
            }
            Err(problem) => report.problems.push(problem),
        }
    }
    report
}

async fn deploy_one(
    client: &EngineClient,
    file: &Path,
) -> Result<(Vec<String>, validate::ModelSummary), FileProblem> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            FileProblem::whole_file(file, "the file name is not UTF-8".into(), "rename the file")
        })?
        .to_owned();
    let unreadable = |e: std::io::Error| {
        FileProblem::whole_file(
            file,
            format!("cannot read the file: {e}"),
            "check its permissions",
        )
    };
    let size = tokio::fs::metadata(file).await.map_err(unreadable)?.len();
    if size > MAX_MODEL_BYTES {
        return Err(FileProblem::whole_file(
            file,
            format!(
                "the file is {:.1} MB; a model may be at most {} MB",
                size as f64 / 1e6,
                MAX_MODEL_BYTES / 1_000_000
            ),
            "keep data out of the model: pass it as process variables or files, or split the model into processes that call each other",
        ));
    }
    let bytes = tokio::fs::read(file).await.map_err(unreadable)?;
    let summary = validate::check(&name, &bytes).map_err(|f| FileProblem::from_finding(file, f))?;
    let deployment = Deployment {
        name: name.clone(),
        source: Some(DEPLOYMENT_SOURCE.to_owned()),
        resources: vec![(name, bytes)],
    };
    let result = client.deploy(&deployment).await.map_err(|e| {
        // The engine's parser knows things ours does not (a missing topic, a bad expression);
        // its first finding carries the line.
        let first = e.parse_problems().first().cloned();
        let transient = e.is_transient() && !e.is_engine_error();
        FileProblem {
            file: file.to_path_buf(),
            line: first.as_ref().and_then(|p| p.line),
            column: first.as_ref().and_then(|p| p.column),
            message: match &first {
                Some(p) => match &p.element_id {
                    Some(id) => format!("the engine refused element `{id}`: {}", p.message),
                    None => format!("the engine refused the model: {}", p.message),
                },
                None => format!("the engine refused the deployment: {e}"),
            },
            // A 500 with the engine's own exception (an expression it cannot parse) is the
            // model's fault: deploying it again unchanged fails the same way.
            fix: if transient {
                "none needed if the file is right: deploy it again once the engine answers (a running kernel does so by itself)".into()
            } else {
                "fix the model in Camunda Modeler; the kernel deploys it again when the file changes".into()
            },
            engine_unavailable: transient,
        }
    })?;
    let definitions = result
        .new_definitions()
        .into_iter()
        .map(|d: &DeployedResource| format!("{}:{}", d.key, d.version))
        .collect();
    Ok((definitions, summary))
}
