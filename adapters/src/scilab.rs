//! `scilab`: runs a Scilab script in ProcOS's Scilab sandbox image (`docker/scilab-sandbox`,
//! Debian's `scilab-cli` 6.1), one locked-down container per task.
//!
//! Inputs never reach Scilab as JSON (its `fromJSON` crashes on malformed text): they are
//! checked here and written as Scilab assignments. Outputs come back through the runner's own
//! JSON writer (`toJSON` writes NaN/Inf bare and escapes only the first quote of a string), so a
//! value either round-trips or fails with a message that names it.
//!
//! Per-task settings (the step's `procos.*` extension properties and input parameters):
//! `procos.script` (the source), `procos.outputs` (the Scilab variables handed back), and
//! `procos.timeout`, `procos.memory_mb`, `procos.cpus` (within the topic's `limits`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::sandbox::{
    self, ContainerSpec, Limits, Runner, check_script_name, image_refusal, script_source, trace_env,
};
use crate::workspace::{Workspaces, wants_workspace};
use crate::{
    Adapter, AdapterTask, BuildContext, Failure, Guards, Outcome, Retry, TaskSettings, async_trait,
};

/// The runner's exit code for `procos_bpmn_error` (see `docker/scilab-sandbox/procos.sce`).
const BPMN_ERROR_EXIT: i64 = 3;

/// `[topics.NAME.settings]` for `scilab`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScilabConfig {
    /// A script file in `scripts_dir`, used when the task has no `procos.script`.
    #[serde(default)]
    script: Option<String>,
    /// Where `script` files are looked up.
    #[serde(default = "default_scripts_dir")]
    scripts_dir: PathBuf,
    /// The Scilab variables handed back as outputs after the script ran, unless the task's
    /// `procos.outputs` names them (a list, or names separated by commas), as a generic topic
    /// serving every script a model holds leaves it to do.
    #[serde(default)]
    outputs: Vec<String>,
    /// The inputs handed to Scilab; each must exist and be a Scilab value. Absent: every input
    /// that is one (numbers, booleans, strings, and rectangular arrays of them).
    #[serde(default)]
    inputs: Option<Vec<String>>,
    /// The sandbox image.
    #[serde(default = "default_image")]
    image: String,
    /// The container's guards (Scilab wants more memory than the default); a task's
    /// `procos.timeout`, `procos.memory_mb` and `procos.cpus` replace the first three, within
    /// `limits`.
    #[serde(default = "default_guards")]
    sandbox: Guards,
    /// The most a task may ask for.
    #[serde(default)]
    limits: Limits,
}

/// The per-task settings `scilab` reads (beside the worker's own).
const TASK_SETTINGS: &[&str] = &[
    "script",
    "outputs",
    "timeout",
    "memory_mb",
    "cpus",
    "workspace",
];

fn default_scripts_dir() -> PathBuf {
    PathBuf::from("scripts")
}

fn default_image() -> String {
    "procos/scilab-sandbox:latest".to_owned()
}

fn default_guards() -> Guards {
    Guards {
        memory_mb: 1024,
        ..Guards::default()
    }
}

#[derive(Debug)]
pub(crate) struct ScilabAdapter {
    settings: ScilabConfig,
    sandbox: Box<dyn Runner>,
    /// The instances' workspaces, for steps with `procos.workspace`.
    workspaces: Workspaces,
}

impl ScilabAdapter {
    pub(crate) fn new(settings: ScilabConfig, context: &BuildContext) -> Result<Self, String> {
        let allowlist = &context.allowed_images;
        if !allowlist.allows(&settings.image) {
            return Err(image_refusal(allowlist, &settings.image).message);
        }
        check_script_name(settings.script.as_deref())?;
        for name in settings
            .outputs
            .iter()
            .chain(settings.inputs.iter().flatten())
        {
            if !is_identifier(name) {
                return Err(format!(
                    "`{name}` is not a Scilab variable name (letters, digits and _, not starting with a digit, no keyword)"
                ));
            }
        }
        settings.limits.check(&settings.sandbox)?;
        let sandbox = sandbox::runner(&settings.sandbox, context.rootfs_dir(), None)?;
        Ok(Self {
            settings,
            sandbox,
            workspaces: context.workspaces.clone(),
        })
    }

    pub(crate) fn relaxed_guards(&self) -> Vec<&'static str> {
        self.settings.sandbox.relaxed()
    }
}

#[async_trait]
impl Adapter for ScilabAdapter {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        let workspace = match self.workspaces.for_sandbox(&task).await {
            Ok(workspace) => workspace,
            Err(failure) => return Outcome::Failure(failure),
        };
        match self.container_spec(task).await {
            Ok(spec) => {
                let spec = ContainerSpec { workspace, ..spec };
                self.sandbox.run(&spec, &cancel).await
            }
            Err(failure) => Outcome::Failure(failure),
        }
    }

    fn uses_workspace(&self, settings: &TaskSettings) -> bool {
        wants_workspace(settings).unwrap_or(false)
    }

    fn task_settings(&self) -> &'static [&'static str] {
        TASK_SETTINGS
    }

    async fn close(&self) {
        self.sandbox.close().await;
    }

    async fn available(&self) -> Result<(), crate::Unavailable> {
        self.sandbox.available().await
    }
}

impl ScilabAdapter {
    /// The container `task` runs in, or why it cannot run.
    pub(crate) async fn container_spec(&self, task: AdapterTask) -> Result<ContainerSpec, Failure> {
        let guards = self
            .settings
            .limits
            .guards_for(&self.settings.sandbox, &task.settings)?;
        let outputs = outputs_of(&self.settings.outputs, &task.settings)?;
        let script = script_source(
            &task.settings,
            self.settings.script.as_deref(),
            &self.settings.scripts_dir,
        );
        let (script_name, source) = script.await?;
        let assignments = scilab_inputs(&task.inputs, self.settings.inputs.as_deref())?;
        Ok(ContainerSpec {
            task_id: task.task_id,
            topic: task.topic,
            image: self.settings.image.clone(),
            command: None,
            env: std::iter::once(format!("PROCOS_SCRIPT_NAME={script_name}"))
                .chain(trace_env(task.traceparent.as_deref()))
                .collect(),
            files: vec![
                ("inputs.sce".to_owned(), assignments.into_bytes()),
                ("script.sce".to_owned(), source.into_bytes()),
                ("outputs.txt".to_owned(), outputs.join("\n").into_bytes()),
            ],
            bpmn_error_exit_codes: BTreeMap::from([(BPMN_ERROR_EXIT, String::new())]),
            guards,
            workspace: None,
        })
    }
}

/// The outputs of a task: those its `procos.outputs` names, else the topic's (`configured`).
fn outputs_of(configured: &[String], settings: &TaskSettings) -> Result<Vec<String>, Failure> {
    let Some(names) = settings.text_list("outputs")? else {
        return Ok(configured.to_vec());
    };
    if let Some(bad) = names.iter().find(|name| !is_identifier(name)) {
        return Err(Failure::new(
            format!(
                "the task's setting `procos.outputs` names `{bad}`, which is not a Scilab variable name"
            ),
            "Name the Scilab variables to hand back in `procos.outputs` (the template's Outputs field), separated by commas, e.g. `total, mean`: letters, digits and _, not starting with a digit, no keyword.",
            Retry::Never,
        ));
    }
    Ok(names)
}

/// Scilab's keywords, which no variable may be named.
const KEYWORDS: &[&str] = &[
    "if",
    "then",
    "else",
    "elseif",
    "end",
    "for",
    "while",
    "do",
    "select",
    "case",
    "switch",
    "otherwise",
    "function",
    "endfunction",
    "break",
    "continue",
    "return",
    "try",
    "catch",
];

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&name)
        && !name.starts_with("procos_")
}

/// One Scilab assignment per input. With `wanted`, each named input must exist and convert;
/// without, inputs that are no Scilab value (objects, ragged arrays) are left out.
fn scilab_inputs(
    inputs: &Map<String, Value>,
    wanted: Option<&[String]>,
) -> Result<String, Failure> {
    let mut text = String::new();
    let invalid = |name: &str, why: String| {
        Failure::new(
            format!("the input `{name}` cannot be handed to Scilab: {why}"),
            "Scilab takes numbers, booleans, strings, and vectors or rectangular matrices of one of them. Map the variable to such a value with an input parameter, or drop it from settings.inputs.",
            Retry::Never,
        )
    };
    match wanted {
        Some(names) => {
            for name in names {
                let value = inputs
                    .get(name)
                    .ok_or_else(|| invalid(name, "the task has no such variable".to_owned()))?;
                let literal = scilab_literal(value).map_err(|why| invalid(name, why))?;
                let _ = writeln!(text, "{name} = {literal};");
            }
        }
        None => {
            for (name, value) in inputs {
                if !is_identifier(name) {
                    continue;
                }
                if let Ok(literal) = scilab_literal(value) {
                    let _ = writeln!(text, "{name} = {literal};");
                }
            }
        }
    }
    Ok(text)
}

/// A JSON value as a Scilab expression.
fn scilab_literal(value: &Value) -> Result<String, String> {
    match value {
        Value::Null => Ok("[]".to_owned()),
        Value::Array(items) if items.is_empty() => Ok("[]".to_owned()),
        Value::Array(items) if items.iter().all(Value::is_array) => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|row| row_literals(row.as_array().map_or(&[][..], Vec::as_slice)))
                .collect::<Result<_, _>>()?;
            let width = rows.first().map_or(0, Vec::len);
            if rows.iter().any(|r| r.len() != width) {
                return Err("its rows differ in length; a matrix must be rectangular".to_owned());
            }
            let kinds: Vec<u8> = items
                .iter()
                .flat_map(|r| r.as_array().into_iter().flatten().map(kind))
                .collect();
            if kinds.windows(2).any(|w| w[0] != w[1]) {
                return Err("it mixes numbers, booleans and strings".to_owned());
            }
            Ok(format!(
                "[{}]",
                rows.iter()
                    .map(|r| r.join(","))
                    .collect::<Vec<_>>()
                    .join(";")
            ))
        }
        Value::Array(items) => {
            if items.windows(2).any(|w| kind(&w[0]) != kind(&w[1])) {
                return Err("it mixes numbers, booleans and strings".to_owned());
            }
            Ok(format!("[{}]", row_literals(items)?.join(",")))
        }
        scalar => scalar_literal(scalar),
    }
}

fn kind(value: &Value) -> u8 {
    match value {
        Value::Number(_) => 1,
        Value::Bool(_) => 2,
        Value::String(_) => 3,
        _ => 0,
    }
}

fn row_literals(items: &[Value]) -> Result<Vec<String>, String> {
    items.iter().map(scalar_literal).collect()
}

fn scalar_literal(value: &Value) -> Result<String, String> {
    match value {
        Value::Bool(true) => Ok("%t".to_owned()),
        Value::Bool(false) => Ok("%f".to_owned()),
        Value::Number(n) => match n.as_f64() {
            // Rust's shortest representation that reads back to the same double.
            Some(x) if x.is_finite() => Ok(format!("{x:?}")),
            _ => Err(format!("{n} is not a finite number")),
        },
        Value::String(s) => Ok(string_literal(s)),
        Value::Null => Err("null inside an array".to_owned()),
        Value::Array(_) => Err("arrays nest deeper than a matrix".to_owned()),
        Value::Object(_) => Err("it is a JSON object".to_owned()),
    }
}

/// A Scilab string expression: quotes doubled, control characters (which a literal cannot
/// hold) joined in with `ascii()`.
fn string_literal(text: &str) -> String {
    let mut parts = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_control() {
            if !current.is_empty() || parts.is_empty() {
                parts.push(format!("\"{}\"", std::mem::take(&mut current)));
            }
            parts.push(format!("ascii({})", u32::from(c)));
        } else if c == '"' || c == '\'' {
            current.push(c);
            current.push(c);
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() || parts.is_empty() {
        parts.push(format!("\"{current}\""));
    }
    parts.join(" + ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_task_names_its_outputs_over_the_topics() {
        let outputs = |value: Value| TaskSettings::from_pairs([("outputs", value)]);
        let configured = vec!["x".to_owned()];
        assert_eq!(
            outputs_of(&configured, &outputs(json!("y"))).unwrap(),
            ["y"]
        );
        assert_eq!(
            outputs_of(&configured, &TaskSettings::default()).unwrap(),
            ["x"]
        );
        assert_eq!(
            outputs_of(&[], &outputs(json!("total, mean ,n"))).unwrap(),
            ["total", "mean", "n"]
        );
        assert_eq!(
            outputs_of(&[], &outputs(json!("[\"a\", \"b\"]"))).unwrap(),
            ["a", "b"]
        );
        assert_eq!(outputs_of(&[], &outputs(json!(["a"]))).unwrap(), ["a"]);
        assert!(
            outputs_of(&[], &TaskSettings::default())
                .unwrap()
                .is_empty()
        );
        let refused = outputs_of(&[], &outputs(json!("total, 2x"))).unwrap_err();
        assert!(refused.message.contains("`2x`"), "{}", refused.message);
        assert!(
            refused.message.contains("procos.outputs"),
            "{}",
            refused.message
        );
        assert!(outputs_of(&[], &outputs(json!([1]))).is_err());
        assert!(outputs_of(&[], &outputs(json!("end"))).is_err());
        assert!(outputs_of(&[], &outputs(json!("total mean"))).is_err());
    }

    fn adapter(settings: Value) -> Result<ScilabAdapter, String> {
        let config: ScilabConfig = serde_json::from_value(settings).unwrap();
        ScilabAdapter::new(
            config,
            &BuildContext {
                allowed_images: crate::ImageAllowlist::new(["procos/*".to_owned()]),
                ..BuildContext::default()
            },
        )
    }

    fn task(inputs: Value, settings: Value) -> AdapterTask {
        AdapterTask {
            traceparent: None,
            task_id: "task-1".into(),
            topic: "scilab".into(),
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            settings: TaskSettings::from_pairs(settings.as_object().cloned().unwrap_or_default()),
            root_process_instance_id: None,
        }
    }

    #[tokio::test]
    async fn a_task_sets_its_script_outputs_and_guards_within_the_limits() {
        let scilab = adapter(json!({})).unwrap();
        let spec = scilab
            .container_spec(task(
                json!({"a": 2, "script": "not the script"}),
                json!({"script": "x = a * 2;", "outputs": "x", "memory_mb": 2048, "timeout": "1m"}),
            ))
            .await
            .unwrap();
        let file = |name: &str| {
            let bytes = &spec.files.iter().find(|(n, _)| n == name).unwrap().1;
            String::from_utf8(bytes.clone()).unwrap()
        };
        assert_eq!(file("script.sce"), "x = a * 2;");
        assert_eq!(file("outputs.txt"), "x");
        assert_eq!(
            file("inputs.sce"),
            "a = 2.0;\nscript = \"not the script\";\n"
        );
        assert_eq!(spec.guards.memory_mb, 2048);
        assert_eq!(spec.guards.timeout, std::time::Duration::from_secs(60));
        let failure = scilab
            .container_spec(task(
                json!({}),
                json!({"script": "x = 1;", "memory_mb": 20480}),
            ))
            .await
            .unwrap_err();
        assert_eq!(failure.retry, Retry::Never);
        assert!(
            failure.message.contains("procos.memory_mb = 20480")
                && failure.message.contains("limits.max_memory_mb = 2048"),
            "{}",
            failure.message
        );
        assert_eq!(
            scilab.task_settings(),
            [
                "script",
                "outputs",
                "timeout",
                "memory_mb",
                "cpus",
                "workspace"
            ]
        );
    }

    #[test]
    fn a_topic_whose_guards_pass_its_limits_does_not_build() {
        let refused = adapter(json!({"sandbox": {"cpus": 4.0}})).unwrap_err();
        assert!(refused.contains("limits.max_cpus = 2"), "{refused}");
        assert!(adapter(json!({"sandbox": {"cpus": 4.0}, "limits": {"max_cpus": 4.0}})).is_ok());
    }

    #[test]
    fn json_values_become_scilab_expressions() {
        assert_eq!(scilab_literal(&json!(2)).unwrap(), "2.0");
        assert_eq!(scilab_literal(&json!(0.1)).unwrap(), "0.1");
        assert_eq!(scilab_literal(&json!(true)).unwrap(), "%t");
        assert_eq!(scilab_literal(&json!([1, 2])).unwrap(), "[1.0,2.0]");
        assert_eq!(
            scilab_literal(&json!([[1, 2], [3, 4]])).unwrap(),
            "[1.0,2.0;3.0,4.0]"
        );
        assert_eq!(scilab_literal(&json!(["a", "b"])).unwrap(), r#"["a","b"]"#);
        assert_eq!(scilab_literal(&json!(null)).unwrap(), "[]");
        assert_eq!(
            scilab_literal(&json!("it's \"quoted\"\nnext")).unwrap(),
            r#""it''s ""quoted""" + ascii(10) + "next""#
        );
        assert_eq!(scilab_literal(&json!("\n")).unwrap(), r#""" + ascii(10)"#);
    }

    #[test]
    fn values_scilab_cannot_hold_are_refused_with_the_reason() {
        assert!(
            scilab_literal(&json!({"a": 1}))
                .unwrap_err()
                .contains("object")
        );
        assert!(
            scilab_literal(&json!([[1], [2, 3]]))
                .unwrap_err()
                .contains("rectangular")
        );
        assert!(
            scilab_literal(&json!([1, "a"]))
                .unwrap_err()
                .contains("mixes")
        );
        let inputs = json!({"x": {"a": 1}, "y": 2}).as_object().cloned().unwrap();
        let failure = scilab_inputs(&inputs, Some(&["x".to_owned()])).unwrap_err();
        assert!(failure.message.contains("`x`"), "{}", failure.message);
        // Without a list, what Scilab cannot hold is left out rather than failing the task.
        assert_eq!(scilab_inputs(&inputs, None).unwrap(), "y = 2.0;\n");
    }

    #[test]
    fn variable_names_are_checked() {
        assert!(is_identifier("total_2"));
        assert!(!is_identifier("2x"));
        assert!(!is_identifier("end"));
        assert!(!is_identifier("procos_json_value"));
    }
}
