//! Inputs the sandboxed adapters read alike: JSON given as a value or as Modeler text, and the
//! script a task runs.

use serde_json::{Map, Value};

use crate::{Failure, Retry};

/// An input that holds JSON: the value itself, or JSON text in a string (what a Modeler text
/// field gives). Absent, null and blank mean "not given"; text that is not JSON stays a string,
/// for the caller to refuse with its own message.
pub(crate) fn json_input(inputs: &Map<String, Value>, name: &str) -> Option<Value> {
    match inputs.get(name)? {
        Value::Null => None,
        Value::String(text) if text.trim().is_empty() => None,
        Value::String(text) => {
            Some(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())))
        }
        other => Some(other.clone()),
    }
}

/// A script setting names a file inside `scripts_dir`, never a path out of it.
pub(crate) fn check_script_name(name: Option<&str>) -> Result<(), String> {
    match name {
        Some(name) if name.contains('/') || name.contains("..") => Err(format!(
            "script `{name}` must be a file name inside scripts_dir, not a path"
        )),
        _ => Ok(()),
    }
}

/// The script a task runs, with a name for messages: the task's input `script` (the model's
/// input parameter holding the source), else the file `setting` in `scripts_dir`, read at each
/// run so that edits apply at once.
pub(crate) async fn script_source(
    inputs: &Map<String, Value>,
    setting: Option<&str>,
    scripts_dir: &std::path::Path,
) -> Result<(String, String), Failure> {
    if let Some(Value::String(source)) = inputs.get("script") {
        return Ok(("the model's `script` input".to_owned(), source.clone()));
    }
    let Some(name) = setting else {
        return Err(Failure::new(
            "no script to run",
            "Give the task an input `script` with the source (an input parameter in Camunda Modeler), or set `script` in the topic's settings to a file in scripts_dir.",
            Retry::Never,
        ));
    };
    let path = scripts_dir.join(name);
    match tokio::fs::read_to_string(&path).await {
        Ok(source) => Ok((name.to_owned(), source)),
        Err(e) => Err(Failure::new(
            format!("cannot read the script {}: {e}", path.display()),
            format!(
                "The topic's settings name the script `{name}` in scripts_dir {}.",
                scripts_dir.display()
            ),
            Retry::Later,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_inputs_come_as_values_or_as_text() {
        let inputs =
            serde_json::json!({"a": ["x"], "b": "[\"y\"]", "c": " ", "d": null, "e": "not json"});
        let inputs = inputs.as_object().cloned().unwrap_or_default();
        assert_eq!(json_input(&inputs, "a"), Some(serde_json::json!(["x"])));
        assert_eq!(json_input(&inputs, "b"), Some(serde_json::json!(["y"])));
        assert_eq!(json_input(&inputs, "c"), None);
        assert_eq!(json_input(&inputs, "d"), None);
        assert_eq!(
            json_input(&inputs, "e"),
            Some(serde_json::json!("not json"))
        );
        assert_eq!(json_input(&inputs, "missing"), None);
    }
}
