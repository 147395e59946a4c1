//! `procos up`, the README's run command: an engine whose Cockpit answers, the init models
//! deployed and the root orchestrator running once, bad files reported without stopping the
//! rest, hot redeploy, an engine restarted after it died, and on Ctrl-C (or the kernel's sudden
//! death) no `java` left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camunda_client::{
    Auth, EngineClient, HistoricProcessInstanceQuery, StartProcessInstance, Variable,
};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{self, assert_eventually};

struct Up {
    child: Child,
    port: u16,
    metrics_port: u16,
    client: EngineClient,
    /// Everything `procos up` wrote to stderr so far (and echoed, so a failing test shows it).
    stderr: Arc<Mutex<String>>,
}

impl Up {
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr holds a line containing `text`.
    async fn wait_for_line(&self, text: &str, within: Duration) {
        assert_eventually(&format!("a line with `{text}`"), within, || async {
            self.stderr().contains(text).then_some(())
        })
        .await;
    }

    async fn interrupt(mut self) -> String {
        let pid = Pid::from_raw(i32::try_from(self.child.id().unwrap()).unwrap());
        kill(pid, Signal::SIGINT).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("procos up stops within 60 s of Ctrl-C")
            .unwrap();
        assert!(status.success(), "exit status {status}");
        self.stderr()
    }
}

/// Starts `procos up` on a free port with `init_dir` and its data in `data`, and waits for its
/// "ProcOS is up" banner.
async fn procos_up(init_dir: &Path, data: &Path) -> Up {
    let port = support::free_port();
    let metrics_port = support::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_procos"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["up", "--workers", "1", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(data)
        .arg("--init-dir")
        .arg(init_dir)
        .env("PROCOS_ENGINE_JAR", support::engine_jar())
        .env("PROCOS_WORKER__LISTEN", format!("127.0.0.1:{metrics_port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let collected = Arc::clone(&stderr);
    // Ends with the process's stderr; dropped with the test.
    tokio::spawn(async move {
        while let Ok(Some(line)) = err_lines.next_line().await {
            eprintln!("{line}");
            let mut all = collected.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(180), async {
        let mut seen = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("Login:") {
                return seen;
            }
        }
        panic!("procos up ended before it was up:\n{seen}");
    })
    .await
    .expect("procos up prints its banner within 180 s");
    assert!(
        banner.contains(&format!("http://localhost:{port}/camunda/app/cockpit/")),
        "{banner}"
    );
    assert!(banner.contains("demo / demo"), "{banner}");
    let client =
        EngineClient::new(&format!("http://127.0.0.1:{port}/engine-rest"), Auth::None).unwrap();
    Up {
        child,
        port,
        metrics_port,
        client,
        stderr,
    }
}

/// A copy of the repository's init directory, to add files to.
fn init_dir_copy() -> tempfile::TempDir {
    let init = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo_init_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, init.path().join(path.file_name().unwrap())).unwrap();
    }
    init
}

fn repo_init_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bpmn/init")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_cockpit_with_the_init_models_and_ctrl_c_leaves_no_java() {
    // The repository's init models, plus files that must not stop the others: malformed XML, a
    // topic no adapter serves, a process that is not executable.
    let init = init_dir_copy();
    std::fs::write(
        init.path().join("broken.bpmn"),
        "<?xml version=\"1.0\"?>\n<bpmn:definitions xmlns:bpmn=\"http://www.omg.org/spec/BPMN/20100524/MODEL\">\n  <bpmn:process id=\"x\" isExecutable=\"true\">\n</bpmn:definitions>\n",
    )
    .unwrap();
    let unserved = support::unique("unserved");
    std::fs::write(
        init.path().join("unserved-topic.bpmn"),
        support::external_task_process(&unserved, "nobody-serves-this"),
    )
    .unwrap();
    std::fs::write(
        init.path().join("not-executable.bpmn"),
        support::external_task_process(&support::unique("draft"), "echo")
            .replace(r#"isExecutable="true""#, r#"isExecutable="false""#),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let up = procos_up(init.path(), data.path()).await;
    let http = reqwest::Client::new();
    let login = http
        .get(format!(
            "http://127.0.0.1:{}/camunda/app/welcome/default/",
            up.port
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "the Cockpit login page answers");
    let readyz = format!("http://127.0.0.1:{}/readyz", up.metrics_port);
    assert_eventually(
        "the worker fleet to be ready",
        Duration::from_secs(10),
        || async {
            let ready = http.get(&readyz).send().await.ok()?;
            (ready.status() == 200).then_some(())
        },
    )
    .await;
    let hello = up.client.process_definitions("procos-hello").await.unwrap();
    assert_eq!(hello.len(), 1, "bpmn/init/hello.bpmn is deployed");
    let root = up.client.process_instances("procos-root").await.unwrap();
    assert_eq!(root.len(), 1, "the root orchestrator runs");
    assert!(
        !support::processes_in(data.path()).is_empty(),
        "the engine runs in its data dir"
    );

    let stderr = up.interrupt().await;
    assert!(
        support::processes_in(data.path()).is_empty(),
        "no engine process is left"
    );
    let line_with = |text: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.starts_with("procos:") && l.contains(text))
            .map(str::to_owned)
            .collect()
    };
    let broken = line_with("broken.bpmn");
    assert_eq!(
        broken.len(),
        1,
        "one message for the malformed file:\n{stderr}"
    );
    assert!(
        broken[0].contains("not deployed") && broken[0].contains("broken.bpmn:4:"),
        "names the file and line: {}",
        broken[0]
    );
    let draft = line_with("not-executable.bpmn");
    assert_eq!(draft.len(), 1, "one message for the draft:\n{stderr}");
    assert!(
        draft[0].contains("executable"),
        "says what is wrong: {}",
        draft[0]
    );
    let topic = line_with("nobody-serves-this");
    assert_eq!(
        topic.len(),
        1,
        "one warning for the unserved topic:\n{stderr}"
    );
    assert!(
        topic[0].contains("unserved-topic.bpmn") && topic[0].contains("[topics."),
        "names the file and the fix: {}",
        topic[0]
    );
    let ttl = line_with("has no camunda:historyTimeToLive");
    assert!(
        ttl.iter().any(|l| l.contains("unserved-topic.bpmn")),
        "a process without a history time-to-live is noted:\n{stderr}"
    );
    assert!(
        !ttl.iter().any(|l| l.contains("hello.bpmn")),
        "hello.bpmn sets one"
    );
}

/// A second boot on the same database deploys nothing new and starts no second root instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_boot_deploys_nothing_new_and_keeps_the_one_root_orchestrator() {
    let data = tempfile::tempdir().unwrap();
    let first = procos_up(&repo_init_dir(), data.path()).await;
    let root = first.client.process_instances("procos-root").await.unwrap();
    assert_eq!(root.len(), 1);
    let stderr = first.interrupt().await;
    assert!(stderr.contains("root orchestrator started"), "{stderr}");

    let second = procos_up(&repo_init_dir(), data.path()).await;
    let again = second
        .client
        .process_instances("procos-root")
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "still one root orchestrator");
    assert_eq!(again[0].id, root[0].id, "the same one");
    for key in [
        "procos-root",
        "procos-health",
        "procos-error-recovery",
        "procos-tde",
        "procos-hello",
    ] {
        let versions = second.client.process_definitions(key).await.unwrap();
        assert_eq!(versions.len(), 1, "{key} has one version");
    }
    let stderr = second.interrupt().await;
    assert!(
        stderr.contains("root orchestrator already running"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("procos: deployed"),
        "nothing deployed again:\n{stderr}"
    );
}

/// A file edited while ProcOS runs is a new version within 5 s; an instance started before the
/// edit completes on the old version, one started after runs the new one. A malformed file
/// dropped in meanwhile is reported and changes nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_init_file_is_a_new_version_within_5_s_and_running_instances_keep_theirs() {
    let init = init_dir_copy();
    let data = tempfile::tempdir().unwrap();
    let up = procos_up(init.path(), data.path()).await;
    let key = support::unique("hot");
    // Nobody serves `hot-wait`: instances wait there until the test completes their task.
    let file = init.path().join("hot.bpmn");
    std::fs::write(&file, support::external_task_process(&key, "hot-wait")).unwrap();
    let client = &up.client;
    let within_5s = |what: &'static str, version: usize| {
        let key = key.clone();
        async move {
            assert_eventually(what, Duration::from_secs(5), || async {
                let versions = client.process_definitions(&key).await.ok()?;
                (versions.len() == version).then_some(versions)
            })
            .await
        }
    };
    let v1 = within_5s("a new file to be deployed", 1).await;
    let old = client
        .start_process_instance(&key, &StartProcessInstance::default())
        .await
        .unwrap();

    std::fs::write(
        &file,
        support::external_task_process(&key, "hot-wait").replace(
            r#"<bpmn:endEvent id="end"/>"#,
            r#"<bpmn:endEvent id="end" name="Done, v2"/>"#,
        ),
    )
    .unwrap();
    let versions = within_5s("the edited file to be a new version", 2).await;
    let v2 = versions.iter().find(|d| d.version == 2).unwrap();
    let new = client
        .start_process_instance(&key, &StartProcessInstance::default())
        .await
        .unwrap();
    assert_eq!(new.definition_id.as_deref(), Some(v2.id.as_str()));

    std::fs::write(init.path().join("late.bpmn"), "<definitions").unwrap();
    up.wait_for_line("late.bpmn", Duration::from_secs(5)).await;

    let locked = support::lock_tasks(client, "hot-wait", 2, Some(&key)).await;
    let old_task = locked
        .iter()
        .find(|t| t.process_instance_id.as_deref() == Some(old.id.as_str()))
        .expect("the old instance still waits at its task");
    client
        .complete(
            &old_task.id,
            &camunda_client::CompleteTask {
                worker_id: "test".into(),
                variables: Default::default(),
                local_variables: Default::default(),
            },
        )
        .await
        .unwrap();
    let history = client.historic_process_instance(&old.id).await.unwrap();
    assert_eq!(history.state, "COMPLETED", "the old instance completed");
    assert_eq!(
        old.definition_id.as_deref(),
        Some(v1[0].id.as_str()),
        "on the version it started with"
    );
    let stderr = up.interrupt().await;
    assert!(stderr.contains("late.bpmn"), "{stderr}");
}

/// The engine process is killed: the kernel boots it again, redeploys nothing, keeps the one root
/// orchestrator, and the workers come back: a request message to the root orchestrator runs
/// `procos-hello` to completion through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_is_restarted_and_requests_run_through_the_workers_again() {
    let data = tempfile::tempdir().unwrap();
    let up = procos_up(&repo_init_dir(), data.path()).await;
    let root = up.client.process_instances("procos-root").await.unwrap();
    assert_eq!(root.len(), 1);
    // Embedded H2 (like Camunda Run's default) writes commits to disk up to 0.5 s late; a kill
    // within that window would lose the deployments themselves, which is not what is tested.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let engines = support::processes_in(data.path());
    assert!(!engines.is_empty());
    for pid in engines {
        let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
    }
    up.wait_for_line("the engine is back", Duration::from_secs(120))
        .await;
    up.wait_for_line("root orchestrator already running", Duration::from_secs(10))
        .await;
    for key in ["procos-root", "procos-hello"] {
        let versions = up.client.process_definitions(key).await.unwrap();
        assert_eq!(versions.len(), 1, "{key}: nothing redeployed");
    }
    let again = up.client.process_instances("procos-root").await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, root[0].id);

    let greeting = support::unique("hello");
    up.client
        .correlate_message(
            "procos.request",
            &[
                (
                    "requestedProcess".to_owned(),
                    Variable::String("procos-hello".into()),
                ),
                ("greeting".to_owned(), Variable::String(greeting.clone())),
            ]
            .into(),
        )
        .await
        .unwrap();
    requested_completed(&up.client, "procos-hello", &root[0].id).await;

    // A request for the task executor: one deterministic step on the fleet's `echo` topic.
    up.client
        .correlate_message(
            "procos.request",
            &[
                (
                    "requestedProcess".to_owned(),
                    Variable::String("procos-tde".into()),
                ),
                ("mode".to_owned(), Variable::String("deterministic".into())),
                ("topic".to_owned(), Variable::String("echo".into())),
                ("greeting".to_owned(), Variable::String(greeting.clone())),
            ]
            .into(),
        )
        .await
        .unwrap();
    let executed = requested_completed(&up.client, "procos-tde", &root[0].id).await;
    let result = support::variable_data(&up.client, &executed, "result").await;
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(
        result["greeting"],
        greeting.as_str(),
        "the echo step's outputs"
    );
    up.interrupt().await;
}

/// The first completed instance of `key` the root orchestrator `root` ran for a request.
async fn requested_completed(client: &EngineClient, key: &str, root: &str) -> String {
    assert_eventually(
        &format!("the requested {key} to complete"),
        Duration::from_secs(60),
        || async {
            client
                .historic_process_instances(&HistoricProcessInstanceQuery {
                    process_definition_key: Some(key.to_owned()),
                    super_process_instance_id: Some(root.to_owned()),
                    finished: true,
                    ..HistoricProcessInstanceQuery::default()
                })
                .await
                .ok()?
                .into_iter()
                .find(|i| i.state == "COMPLETED")
                .map(|i| i.id)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_dies_with_a_killed_kernel() {
    let data = tempfile::tempdir().unwrap();
    let mut up = procos_up(&repo_init_dir(), data.path()).await;
    assert!(!support::processes_in(data.path()).is_empty());
    up.child.start_kill().unwrap(); // SIGKILL: the kernel gets no chance to stop the engine
    up.child.wait().await.unwrap();
    assert_eventually(
        "the orphaned engine to exit",
        Duration::from_secs(30),
        || async { support::processes_in(data.path()).is_empty().then_some(()) },
    )
    .await;
}
