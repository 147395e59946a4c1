//! The script a sandboxed task runs: the task's `procos.script` setting, or a file the topic
//! names.

use crate::SETTING_PREFIX as PREFIX;
use crate::{Failure, Retry, TaskSettings};

/// A script setting names a file inside `scripts_dir`, never a path out of it.
pub(crate) fn check_script_name(name: Option<&str>) -> Result<(), String> {
    match name {
        Some(name) if name.contains('/') || name.contains("..") => Err(format!(
            "script `{name}` must be a file name inside scripts_dir, not a path"
        )),
        _ => Ok(()),
    }
}

/// The script a task runs, with a name for messages (tracebacks say `File "procos.script"`):
/// the task's setting `procos.script` (an extension property or an input parameter of the
/// step, never a process variable), else the file `file` in `scripts_dir`, read at each run so
/// that edits apply at once.
pub(crate) async fn script_source(
    settings: &TaskSettings,
    file: Option<&str>,
    scripts_dir: &std::path::Path,
) -> Result<(String, String), Failure> {
    if let Some(source) = settings.text("script")?
        && !source.trim().is_empty()
    {
        return Ok((format!("{PREFIX}script"), source));
    }
    let Some(name) = file else {
        return Err(Failure::new(
            "no script to run",
            format!(
                "Set the step's `{PREFIX}script` to the source (the template's Script field: an input parameter, or an extension property), or set `script` in the topic's settings to a file in scripts_dir."
            ),
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
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn the_tasks_script_comes_before_the_topics_file() {
        let dir = std::env::temp_dir().join(format!("procos-scripts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("topic.py"), "outputs['from'] = 'file'").unwrap();
        let own = TaskSettings::from_pairs([("script", json!("outputs['from'] = 'task'"))]);
        assert_eq!(
            script_source(&own, Some("topic.py"), &dir).await.unwrap(),
            (
                "procos.script".to_owned(),
                "outputs['from'] = 'task'".to_owned()
            )
        );
        let none = TaskSettings::default();
        assert_eq!(
            script_source(&none, Some("topic.py"), &dir)
                .await
                .unwrap()
                .1,
            "outputs['from'] = 'file'"
        );
        let blank = TaskSettings::from_pairs([("script", json!("  "))]);
        assert_eq!(
            script_source(&blank, Some("topic.py"), &dir)
                .await
                .unwrap()
                .0,
            "topic.py"
        );
        let failure = script_source(&none, None, &dir).await.unwrap_err();
        assert_eq!(failure.retry, Retry::Never);
        assert!(
            failure.details.contains("procos.script"),
            "{}",
            failure.details
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
