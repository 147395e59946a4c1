//! Bad input in the init directory: each bad file gets one clear message naming it (and the
//! line, where the parser knows it), the good files still deploy, and an unchanged file makes no
//! new version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use procos_kernel::deploy_init_dir;

use crate::support;

#[tokio::test]
async fn bad_files_are_reported_and_good_ones_still_deploy() {
    let client = support::engine();
    let dir = tempfile::tempdir().unwrap();
    let good_key = support::unique("init-good");
    let good = support::external_task_process(&good_key, "echo");
    std::fs::write(dir.path().join("a-good.bpmn"), &good).unwrap();
    // Line 9 loses its closing tag.
    let malformed = good.replace(
        r#"<bpmn:serviceTask id="work" camunda:type="external" camunda:topic="echo"/>"#,
        r#"<bpmn:serviceTask id="work">"#,
    );
    std::fs::write(dir.path().join("b-malformed.bpmn"), malformed).unwrap();
    let not_executable = support::external_task_process(&support::unique("init-noexec"), "echo")
        .replace(r#"isExecutable="true""#, r#"isExecutable="false""#);
    std::fs::write(dir.path().join("c-not-executable.bpmn"), not_executable).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a model").unwrap();

    let report = deploy_init_dir(&client, dir.path()).await;

    assert_eq!(report.deployed.len(), 1, "{report:?}");
    assert!(report.deployed[0].0.ends_with("a-good.bpmn"));
    assert_eq!(report.deployed[0].1, [format!("{good_key}:1")]);
    let definitions = client.process_definitions(&good_key).await.unwrap();
    assert_eq!(definitions.len(), 1);

    assert_eq!(report.problems.len(), 2, "{report:?}");
    let malformed = report.problems[0].to_string();
    assert!(
        malformed.contains("b-malformed.bpmn:") && malformed.contains("not well-formed"),
        "{malformed}"
    );
    assert!(
        report.problems[0].line.is_some(),
        "the parser knows the line: {malformed}"
    );
    let not_executable = report.problems[1].to_string();
    assert!(
        not_executable.contains("c-not-executable.bpmn") && not_executable.contains("isExecutable"),
        "{not_executable}"
    );

    // Deploying again: nothing changed, so no new version.
    let again = deploy_init_dir(&client, dir.path()).await;
    assert!(again.deployed.is_empty(), "{again:?}");
    assert_eq!(again.unchanged.len(), 1);
    assert_eq!(
        client.process_definitions(&good_key).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_model_the_engine_refuses_is_reported_with_the_engines_reason() {
    let client = support::engine();
    let dir = tempfile::tempdir().unwrap();
    // Well-formed and executable, but an external task without a topic: only the engine knows.
    let model = support::external_task_process(&support::unique("init-notopic"), "echo")
        .replace(r#" camunda:topic="echo""#, "");
    std::fs::write(dir.path().join("no-topic.bpmn"), model).unwrap();

    let report = deploy_init_dir(&client, dir.path()).await;

    assert!(report.deployed.is_empty());
    let problem = report.problems.first().expect("one problem").to_string();
    assert!(
        problem.contains("no-topic.bpmn") && problem.contains("engine refused"),
        "{problem}"
    );
    assert!(problem.contains("work"), "names the element: {problem}");
}
