//! `procos up`, the README's run command: an engine whose Cockpit answers, the init models
//! deployed, and on Ctrl-C (or the kernel's sudden death) no `java` left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::support::{self, assert_eventually};

struct Up {
    child: Child,
    port: u16,
    metrics_port: u16,
    data: tempfile::TempDir,
    stderr: JoinHandle<String>,
}

/// Starts `procos up` on a free port with `init_dir` and waits for its "ProcOS is up" banner.
async fn procos_up(init_dir: &Path) -> Up {
    let port = support::free_port();
    let metrics_port = support::free_port();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_procos"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["up", "--workers", "1", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--init-dir")
        .arg(init_dir)
        .env("PROCOS_ENGINE_JAR", support::engine_jar())
        .env("PROCOS_WORKER__LISTEN", format!("127.0.0.1:{metrics_port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Collected until the process ends; echoed so a failing test shows it.
    let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let stderr = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(line)) = err_lines.next_line().await {
            eprintln!("{line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
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
    Up {
        child,
        port,
        metrics_port,
        data,
        stderr,
    }
}

fn repo_init_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bpmn/init")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_cockpit_with_the_init_models_and_ctrl_c_leaves_no_java() {
    // The repository's init models, plus one broken file that must not stop the others.
    let init = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo_init_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, init.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        init.path().join("broken.bpmn"),
        "<?xml version=\"1.0\"?>\n<bpmn:definitions xmlns:bpmn=\"http://www.omg.org/spec/BPMN/20100524/MODEL\">\n  <bpmn:process id=\"x\" isExecutable=\"true\">\n</bpmn:definitions>\n",
    )
    .unwrap();
    let mut up = procos_up(init.path()).await;
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
    let client = camunda_client::EngineClient::new(
        &format!("http://127.0.0.1:{}/engine-rest", up.port),
        camunda_client::Auth::None,
    )
    .unwrap();
    let hello = client.process_definitions("procos-hello").await.unwrap();
    assert_eq!(hello.len(), 1, "bpmn/init/hello.bpmn is deployed");
    assert!(
        !support::processes_in(up.data.path()).is_empty(),
        "the engine runs in its data dir"
    );

    let pid = Pid::from_raw(i32::try_from(up.child.id().unwrap()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), up.child.wait())
        .await
        .expect("procos up stops within 60 s of Ctrl-C")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        support::processes_in(up.data.path()).is_empty(),
        "no engine process is left"
    );
    let stderr = up.stderr.await.unwrap();
    let broken: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("not deployed:"))
        .collect();
    assert_eq!(
        broken.len(),
        1,
        "one message for the one bad file:\n{stderr}"
    );
    assert!(
        broken[0].contains("broken.bpmn:4:"),
        "names the file and line: {}",
        broken[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_dies_with_a_killed_kernel() {
    let mut up = procos_up(&repo_init_dir()).await;
    assert!(!support::processes_in(up.data.path()).is_empty());
    up.child.start_kill().unwrap(); // SIGKILL: the kernel gets no chance to stop the engine
    up.child.wait().await.unwrap();
    assert_eventually(
        "the orphaned engine to exit",
        Duration::from_secs(30),
        || async {
            support::processes_in(up.data.path())
                .is_empty()
                .then_some(())
        },
    )
    .await;
}
