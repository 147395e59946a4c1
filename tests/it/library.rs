//! The library of low-level processes (`bpmn/library`) and the instances' workspaces, against
//! the real engine: each process called the way a model calls it (a call activity with
//! `camunda:in` and `camunda:out`), the workspace a tmpfs of its own on the host, removed once
//! the instance no longer runs. One test function: the library's topic is `workspace`, and one
//! worker serves it with the test's own workspace directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use camunda_client::{EngineClient, HistoricProcessInstanceQuery, Variable, Variables};
use procos_worker::{TopicConfig, WorkerConfig};
use serde_json::{Value, json};

use crate::support::{self, assert_eventually};

/// One call of a library process: its key, its inputs (`target` ← source expression) and the
/// outputs the caller keeps (`source` → `target`).
struct Call<'a> {
    process: &'a str,
    inputs: &'a [(&'a str, &'a str)],
    outputs: &'a [(&'a str, &'a str)],
}

/// start → the calls `before` → (a receive task `hold`, message `release-KEY`, when `hold`) →
/// the calls `after` → end.
fn caller(key: &str, before: &[Call<'_>], hold: bool, after: &[Call<'_>]) -> String {
    let mut elements = String::new();
    let mut previous = "start".to_owned();
    let message = if hold {
        format!(r#"<bpmn:message id="release" name="release-{key}"/>"#)
    } else {
        String::new()
    };
    let held = before.len();
    for (i, call) in before.iter().chain(after).enumerate() {
        if hold && i == held {
            elements.push_str(&format!(
                r#"<bpmn:sequenceFlow id="to-hold" sourceRef="{previous}" targetRef="hold"/>
    <bpmn:receiveTask id="hold" messageRef="release"/>
    "#
            ));
            previous = "hold".to_owned();
        }
        let id = format!("call-{i}");
        let ins: String = call
            .inputs
            .iter()
            .map(|(target, value)| {
                if let Some(source) = value.strip_prefix('=') {
                    format!(r#"<camunda:in source="{source}" target="{target}"/>"#)
                } else {
                    format!(
                        r#"<camunda:in sourceExpression="{}" target="{target}"/>"#,
                        support::xml_escape(value)
                    )
                }
            })
            .collect();
        let outs: String = call
            .outputs
            .iter()
            .map(|(source, target)| {
                format!(r#"<camunda:out source="{source}" target="{target}"/>"#)
            })
            .collect();
        elements.push_str(&format!(
            r#"<bpmn:sequenceFlow id="to-{id}" sourceRef="{previous}" targetRef="{id}"/>
    <bpmn:callActivity id="{id}" calledElement="{}">
      <bpmn:extensionElements>{ins}{outs}</bpmn:extensionElements>
    </bpmn:callActivity>
    "#,
            call.process
        ));
        previous = id;
    }
    if hold && held == before.len() + after.len() {
        elements.push_str(&format!(
            r#"<bpmn:sequenceFlow id="to-hold" sourceRef="{previous}" targetRef="hold"/>
    <bpmn:receiveTask id="hold" messageRef="release"/>
    "#
        ));
        previous = "hold".to_owned();
    }
    support::bpmn(
        key,
        &message,
        &format!(
            r#"<bpmn:startEvent id="start"/>
    {elements}
    <bpmn:sequenceFlow id="to-end" sourceRef="{previous}" targetRef="end"/>
    <bpmn:endEvent id="end"/>"#
        ),
    )
}

async fn start(
    client: &EngineClient,
    before: &[Call<'_>],
    hold: bool,
    after: &[Call<'_>],
    variables: Variables,
) -> (String, String) {
    let key = support::unique("library-caller");
    let xml = caller(&key, before, hold, after);
    support::deploy(client, &format!("{key}.bpmn"), &xml).await;
    let instance = support::start(client, &key, variables).await;
    (key, instance)
}

/// Waits until `instance` reaches its receive task `hold`; its variables then.
async fn held(client: &EngineClient, instance: &str) -> Variables {
    assert_eventually("the caller at `hold`", Duration::from_secs(120), || async {
        if !client.incidents(Some(instance)).await.ok()?.is_empty() {
            panic!("an incident: {}", library_incident(client, instance).await);
        }
        let passed = support::passed(client, instance).await;
        passed.iter().any(|a| a == "hold").then_some(())
    })
    .await;
    client.process_instance_variables(instance).await.unwrap()
}

/// The message of the incident a library process called by `caller` ended in.
async fn library_incident(client: &EngineClient, caller: &str) -> String {
    assert_eventually(
        "the library process's incident",
        Duration::from_secs(120),
        || async {
            let called = client
                .historic_process_instances(&HistoricProcessInstanceQuery {
                    super_process_instance_id: Some(caller.to_owned()),
                    unfinished: true,
                    ..HistoricProcessInstanceQuery::default()
                })
                .await
                .ok()?;
            for instance in called {
                if let Some(message) = client
                    .incidents(Some(&instance.id))
                    .await
                    .ok()?
                    .into_iter()
                    .find_map(|i| i.incident_message)
                {
                    return Some(message);
                }
            }
            None
        },
    )
    .await
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

async fn gone(path: &Path) {
    assert_eventually("the workspace removed", Duration::from_secs(60), || async {
        (!path.exists() && !mounted(path)).then_some(())
    })
    .await;
}

fn json_of(vars: &Variables, name: &str) -> Value {
    vars.get(name)
        .unwrap_or_else(|| panic!("`{name}` in {:?}", vars.keys()))
        .to_json()
}

async fn delete_instance(client: &EngineClient, instance: &str) {
    let response = reqwest::Client::new()
        .delete(format!(
            "{}/process-instance/{instance}",
            client.base_url().trim_end_matches('/')
        ))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_works_in_each_instances_workspace_and_keeps_to_it() {
    let client = support::engine();
    let library: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("bpmn/library"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    let report = procos_kernel::deploy_files(&client, &library).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let root = tempfile::tempdir().unwrap();
    let config = WorkerConfig {
        workspace_dir: Some(root.path().to_owned()),
        workspace_mb: 1,
        ..support::quick_worker_config()
    };
    let (stop, worker) = support::start_worker_with(
        &client,
        config,
        support::topics(&[("workspace", TopicConfig::new("workspace"))]),
    );

    // Every file and directory process, in one caller's workspace.
    let calls = [
        Call {
            process: "procos-file-create",
            inputs: &[("path", "notes/a.txt"), ("content", "hello")],
            outputs: &[("size", "createdSize")],
        },
        Call {
            process: "procos-file-update",
            inputs: &[("path", "notes/a.txt"), ("content", "hello, world")],
            outputs: &[],
        },
        Call {
            process: "procos-file-read",
            inputs: &[("path", "notes/a.txt")],
            outputs: &[("content", "readBack")],
        },
        Call {
            process: "procos-file-copy",
            inputs: &[("path", "notes/a.txt"), ("to", "notes/b.txt")],
            outputs: &[],
        },
        Call {
            process: "procos-file-move",
            inputs: &[("path", "notes/b.txt"), ("to", "c.txt")],
            outputs: &[],
        },
        Call {
            process: "procos-directory-create",
            inputs: &[("path", "empty/inner")],
            outputs: &[],
        },
        Call {
            process: "procos-directory-list",
            inputs: &[],
            outputs: &[("entries", "top")],
        },
        Call {
            process: "procos-file-delete",
            inputs: &[("path", "c.txt")],
            outputs: &[],
        },
        Call {
            process: "procos-directory-delete",
            inputs: &[("path", "empty"), ("recursive", "${true}")],
            outputs: &[],
        },
        Call {
            process: "procos-directory-list",
            inputs: &[("path", "notes")],
            outputs: &[("entries", "notes")],
        },
        Call {
            process: "procos-workspace-usage",
            inputs: &[],
            outputs: &[
                ("usedBytes", "used"),
                ("limitBytes", "limit"),
                ("freeBytes", "free"),
            ],
        },
    ];
    let (key, instance) = start(&client, &calls, true, &[], Variables::new()).await;
    let vars = held(&client, &instance).await;
    assert_eq!(json_of(&vars, "createdSize"), 5);
    assert_eq!(json_of(&vars, "readBack"), "hello, world");
    assert_eq!(
        json_of(&vars, "top"),
        json!([
            {"name": "c.txt", "type": "file", "size": 12},
            {"name": "empty", "type": "directory", "size": 0},
            {"name": "notes", "type": "directory", "size": 0},
        ])
    );
    assert_eq!(
        json_of(&vars, "notes"),
        json!([{"name": "a.txt", "type": "file", "size": 12}])
    );
    assert_eq!(json_of(&vars, "limit"), 1024 * 1024);
    let used = json_of(&vars, "used").as_u64().unwrap();
    assert!(used > 0, "the file takes room: {used}");
    assert_eq!(json_of(&vars, "free"), 1024 * 1024 - used);
    // The workspace is the caller's: a tmpfs named by its instance, holding what the steps left.
    let workspace = root.path().join(&instance);
    assert!(mounted(&workspace), "a tmpfs of its own");
    assert_eq!(
        std::fs::read_to_string(workspace.join("notes/a.txt")).unwrap(),
        "hello, world"
    );
    assert!(!workspace.join("c.txt").exists() && !workspace.join("empty").exists());
    client
        .correlate_message(&format!("release-{key}"), &Variables::new())
        .await
        .unwrap();
    support::settle(&client, &instance, Duration::from_secs(60))
        .await
        .unwrap();
    gone(&workspace).await;

    // Paths that leave the workspace, as written or through a symbolic link, are incidents
    // that name them.
    for (path, says) in [
        (
            "../x",
            "the path `../x` leaves the workspace: it goes up with `..`",
        ),
        (
            "/etc/passwd",
            "the path `/etc/passwd` leaves the workspace: it is absolute",
        ),
    ] {
        let read = [Call {
            process: "procos-file-read",
            inputs: &[("path", path)],
            outputs: &[],
        }];
        let (_, reader) = start(&client, &read, false, &[], Variables::new()).await;
        let message = library_incident(&client, &reader).await;
        assert!(message.contains(says), "{path}: {message}");
        delete_instance(&client, &reader).await;
    }
    let (key, reader) = start(
        &client,
        &[Call {
            process: "procos-directory-create",
            inputs: &[("path", "d")],
            outputs: &[],
        }],
        true,
        &[Call {
            process: "procos-file-read",
            inputs: &[("path", "link/passwd")],
            outputs: &[],
        }],
        Variables::new(),
    )
    .await;
    held(&client, &reader).await;
    // A step (a sandboxed script, say) left a link to the host's /etc in the workspace.
    std::os::unix::fs::symlink("/etc", root.path().join(&reader).join("link")).unwrap();
    client
        .correlate_message(&format!("release-{key}"), &Variables::new())
        .await
        .unwrap();
    let message = library_incident(&client, &reader).await;
    assert!(
        message.contains(
            "the path `link/passwd` leads outside the workspace (through a symbolic link)"
        ),
        "{message}"
    );
    delete_instance(&client, &reader).await;
    gone(&root.path().join(&reader)).await;

    // A write past the workspace's size limit fails naming the path and the limit.
    let big = "x".repeat(1_100_000);
    let (_, writer) = start(
        &client,
        &[Call {
            process: "procos-file-create",
            inputs: &[("path", "big.txt"), ("content", "=big")],
            outputs: &[],
        }],
        false,
        &[],
        [("big".to_owned(), Variable::from_json(Value::String(big)))].into(),
    )
    .await;
    let message = library_incident(&client, &writer).await;
    assert!(
        message.contains(
            "writing `big.txt` (1100000 bytes) would take the workspace past its limit of 1 MiB"
        ),
        "{message}"
    );

    // An instance deleted in Cockpit leaves no workspace behind.
    delete_instance(&client, &writer).await;
    gone(&root.path().join(&writer)).await;

    // Sandboxed steps that ask for it (`procos.workspace`) share the workspace with each other
    // and with the library: a Python step on Docker writes a file, the library reads it, a
    // Python step on the namespace backend reads it and writes another.
    let docker = support::unique("ws-python-docker");
    let namespace = support::unique("ws-python-namespace");
    let mut on_namespace = TopicConfig::new("python");
    on_namespace.settings = toml::from_str("[sandbox]\nbackend = 'namespace'").unwrap();
    let (stop_python, python_worker) = support::start_worker_with(
        &client,
        WorkerConfig {
            workspace_dir: Some(root.path().to_owned()),
            workspace_mb: 1,
            ..support::quick_worker_config()
        },
        support::topics(&[
            (&docker, TopicConfig::new("python")),
            (&namespace, on_namespace),
        ]),
    );
    let key = support::unique("library-sandboxed");
    let xml = sandboxed_model(&key, &docker, &namespace);
    support::deploy(&client, &format!("{key}.bpmn"), &xml).await;
    let instance = support::start(
        &client,
        &key,
        [("who".to_owned(), Variable::String("ProcOS".into()))].into(),
    )
    .await;
    let vars = held(&client, &instance).await;
    assert_eq!(json_of(&vars, "fromSandbox"), "written by ProcOS");
    assert_eq!(json_of(&vars, "seen"), "written by ProcOS");
    let workspace = root.path().join(&instance);
    assert_eq!(
        std::fs::read_to_string(workspace.join("seen.txt")).unwrap(),
        "seen: written by ProcOS"
    );
    client
        .correlate_message(&format!("release-{key}"), &Variables::new())
        .await
        .unwrap();
    support::settle(&client, &instance, Duration::from_secs(60))
        .await
        .unwrap();
    gone(&workspace).await;
    stop_python.cancel();
    python_worker.await.unwrap();

    stop.cancel();
    worker.await.unwrap();
}

/// start → a Python step on `docker` writing `/workspace/report.txt` → `procos-file-read` of it
/// → a Python step on `namespace` reading it and writing `/workspace/seen.txt` → `hold` → end.
fn sandboxed_model(key: &str, docker: &str, namespace: &str) -> String {
    let step = |id: &str, topic: &str, script: &str| {
        format!(
            r#"<bpmn:serviceTask id="{id}" camunda:type="external" camunda:topic="{topic}">
      <bpmn:extensionElements>
        <camunda:properties><camunda:property name="procos.workspace" value="true"/></camunda:properties>
        <camunda:inputOutput><camunda:inputParameter name="procos.script">{}</camunda:inputParameter></camunda:inputOutput>
      </bpmn:extensionElements>
    </bpmn:serviceTask>"#,
            support::xml_escape(script)
        )
    };
    let write = step(
        "write",
        docker,
        "open('/workspace/report.txt', 'w').write('written by ' + inputs['who'])",
    );
    let read = step(
        "read",
        namespace,
        "text = open('/workspace/report.txt').read()\nopen('/workspace/seen.txt', 'w').write('seen: ' + text)\noutputs['seen'] = text",
    );
    support::bpmn(
        key,
        &format!(r#"<bpmn:message id="release" name="release-{key}"/>"#),
        &format!(
            r#"<bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="write"/>
    {write}
    <bpmn:sequenceFlow id="f2" sourceRef="write" targetRef="library-read"/>
    <bpmn:callActivity id="library-read" calledElement="procos-file-read">
      <bpmn:extensionElements>
        <camunda:in sourceExpression="report.txt" target="path"/>
        <camunda:out source="content" target="fromSandbox"/>
      </bpmn:extensionElements>
    </bpmn:callActivity>
    <bpmn:sequenceFlow id="f3" sourceRef="library-read" targetRef="read"/>
    {read}
    <bpmn:sequenceFlow id="f4" sourceRef="read" targetRef="hold"/>
    <bpmn:receiveTask id="hold" messageRef="release"/>
    <bpmn:sequenceFlow id="f5" sourceRef="hold" targetRef="end"/>
    <bpmn:endEvent id="end"/>"#
        ),
    )
}

/// A process that waits at a receive task (`holding`), or ends at once (`done`).
fn target(key: &str, holding: bool) -> String {
    let body = if holding {
        r#"<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="wait"/>
    <bpmn:receiveTask id="wait"/>
    <bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="end"/>"#
    } else {
        r#"<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="end"/>"#
    };
    support::bpmn(
        key,
        "",
        &format!(
            r#"<bpmn:startEvent id="start"/>
    {body}
    <bpmn:endEvent id="end"/>"#
        ),
    )
}

const ENGINE_PROCESSES: &[&str] = &[
    "procos-process-start",
    "procos-process-wait",
    "procos-process-terminate",
    "procos-process-list",
    "procos-engine-health",
    "procos-engine-metrics",
    "procos-fleet-topics",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_and_system_processes_do_what_the_topic_allows() {
    let client = support::engine();
    let library: Vec<PathBuf> = ENGINE_PROCESSES
        .iter()
        .chain(&["procos-http-request"])
        .map(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("bpmn/library/{p}.bpmn")))
        .collect();
    let report = procos_kernel::deploy_files(&client, &library).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let prefix = support::unique("managed");
    let holding = format!("{prefix}-holding");
    let done = format!("{prefix}-done");
    support::deploy(&client, &format!("{holding}.bpmn"), &target(&holding, true)).await;
    support::deploy(&client, &format!("{done}.bpmn"), &target(&done, false)).await;

    let mut engine = TopicConfig::new("engine");
    engine.settings = toml::from_str(&format!("processes = [\"{prefix}-*\"]")).unwrap();
    engine.process_definition_keys = Some(ENGINE_PROCESSES.iter().map(|&p| p.to_owned()).collect());
    let rest = client.base_url().trim_end_matches('/').to_owned();
    let address = rest
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    let mut http = TopicConfig::new("http");
    http.settings = toml::from_str(&format!("allow = [\"{address}\"]")).unwrap();
    http.process_definition_keys = Some(vec!["procos-http-request".to_owned()]);
    let (stop, worker) = support::start_worker_with(
        &client,
        support::quick_worker_config(),
        support::topics(&[("engine", engine), ("http", http)]),
    );

    let variables = r#"{"n": 7}"#;
    let engine_url = format!("{rest}/engine");
    let calls = [
        Call {
            process: "procos-process-start",
            inputs: &[
                ("processKey", &holding),
                ("variables", variables),
                ("businessKey", "bk-1"),
            ],
            outputs: &[("processInstanceId", "held")],
        },
        Call {
            process: "procos-process-list",
            inputs: &[("processKey", &holding)],
            outputs: &[("instances", "listed")],
        },
        Call {
            process: "procos-process-terminate",
            inputs: &[("processInstanceId", "=held")],
            outputs: &[("state", "terminated")],
        },
        Call {
            process: "procos-process-start",
            inputs: &[("processKey", &done), ("variables", variables)],
            outputs: &[("processInstanceId", "finished")],
        },
        Call {
            process: "procos-process-wait",
            inputs: &[("processInstanceId", "=finished")],
            outputs: &[("state", "waited"), ("variables", "endedWith")],
        },
        Call {
            process: "procos-engine-health",
            inputs: &[],
            outputs: &[("version", "version"), ("reachable", "reachable")],
        },
        Call {
            process: "procos-engine-metrics",
            inputs: &[],
            outputs: &[("metrics", "metrics")],
        },
        Call {
            process: "procos-fleet-topics",
            inputs: &[],
            outputs: &[("topics", "topics")],
        },
        Call {
            process: "procos-http-request",
            inputs: &[("url", &engine_url)],
            outputs: &[("status", "status"), ("body", "engines")],
        },
    ];
    let (key, instance) = start(&client, &calls, true, &[], Variables::new()).await;
    let vars = held(&client, &instance).await;
    let held_id = json_of(&vars, "held");
    let listed = json_of(&vars, "listed");
    assert_eq!(
        listed,
        json!([{"id": held_id, "processKey": holding, "businessKey": "bk-1", "state": "ACTIVE"}])
    );
    assert_eq!(json_of(&vars, "terminated"), "EXTERNALLY_TERMINATED");
    let state = client
        .historic_process_instance(held_id.as_str().unwrap())
        .await
        .unwrap()
        .state;
    assert_eq!(state, "EXTERNALLY_TERMINATED", "the engine says so too");
    assert_eq!(json_of(&vars, "waited"), "COMPLETED");
    assert_eq!(json_of(&vars, "endedWith")["n"], 7, "the started variables");
    assert_eq!(json_of(&vars, "reachable"), true);
    let version = client.version().await.unwrap();
    assert_eq!(json_of(&vars, "version"), version.as_str());
    let metrics = json_of(&vars, "metrics");
    assert!(
        metrics["activity-instance-start"].as_u64().unwrap() > 0,
        "{metrics}"
    );
    let topics = json_of(&vars, "topics");
    assert!(topics.is_array(), "{topics}");
    assert_eq!(json_of(&vars, "status"), 200);
    assert_eq!(json_of(&vars, "engines"), json!([{"name": "default"}]));
    client
        .correlate_message(&format!("release-{key}"), &Variables::new())
        .await
        .unwrap();
    support::settle(&client, &instance, Duration::from_secs(60))
        .await
        .unwrap();

    // Outside the allowlist: an incident naming the process, and nothing started.
    let refused = [Call {
        process: "procos-process-start",
        inputs: &[("processKey", "procos-root")],
        outputs: &[],
    }];
    let (_, caller) = start(&client, &refused, false, &[], Variables::new()).await;
    let message = library_incident(&client, &caller).await;
    assert!(
        message.contains("the process `procos-root` is not one this topic lets a model manage"),
        "{message}"
    );
    delete_instance(&client, &caller).await;

    stop.cancel();
    worker.await.unwrap();
}
