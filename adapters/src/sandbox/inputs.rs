//! The script a sandboxed task runs: the model's `script` input, or a file the topic names.

use serde_json::{Map, Value};

use crate::{Failure, Retry};

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
