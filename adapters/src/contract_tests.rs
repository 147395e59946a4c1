//! Every container a sandboxed adapter can ask for passes the sandbox proxy's check, and none
//! passes it without an always-on guard: the adapters and the proxy keep one contract.

use std::time::Duration;

use procos_sandbox_contract::docker::{check_create, create_body, strip_always_on};
use procos_sandbox_contract::{AlwaysOn, ImageAllowlist};
use serde_json::{Map, Value, json};

use crate::docker::DockerAdapter;
use crate::python::PythonAdapter;
use crate::sandbox::{ContainerSpec, pool_key, waiting};
use crate::scilab::ScilabAdapter;
use crate::{AdapterConfig, AdapterTask, BuildContext, TaskSettings};

fn images() -> ImageAllowlist {
    ImageAllowlist::new(["procos/*".to_owned()])
}

/// The most a topic can ask of a sandbox: every tunable guard at its loosest.
fn largest_sandbox() -> Value {
    json!({
        "timeout": "24h", "memory_mb": 65_536, "cpus": 64.0, "pids_limit": 65_536,
        "network": true, "read_only": false, "user": "root", "tmpfs_mb": 4_096,
        "max_output_kb": 1_048_576, "max_printed_mb": 1_048_576,
    })
}

/// The ceilings that let the largest sandbox through.
fn largest_limits() -> Value {
    json!({"max_timeout": "24h", "max_memory_mb": 65_536, "max_cpus": 64.0})
}

fn task(inputs: Value, settings: Value) -> AdapterTask {
    AdapterTask {
        traceparent: None,
        task_id: "task-1".to_owned(),
        topic: "contract".to_owned(),
        inputs: inputs.as_object().cloned().unwrap_or_default(),
        settings: TaskSettings::from_pairs(settings.as_object().cloned().unwrap_or_default()),
        root_process_instance_id: None,
    }
}

fn config(name: &str, settings: Value) -> AdapterConfig {
    let settings: Map<String, Value> = settings.as_object().cloned().unwrap_or_default();
    AdapterConfig::from_parts(name, settings).unwrap()
}

/// The container spec of one task on each sandboxed adapter, with default and with largest
/// settings: the topic's largest guards, and a task asking for its largest ceilings.
async fn specs() -> Vec<(String, ContainerSpec)> {
    let images = images();
    let mut specs = Vec::new();
    let largest_task = json!({"timeout": "24h", "memory_mb": 65_536, "cpus": 64.0});
    for (size, sandbox, limits, asked) in [
        ("default", json!({}), json!({}), json!({})),
        ("largest", largest_sandbox(), largest_limits(), largest_task),
    ] {
        let with = |mut settings: Value, more: Value| {
            if let (Some(settings), Some(more)) = (settings.as_object_mut(), more.as_object()) {
                settings.extend(more.clone());
            }
            settings
        };
        let docker = config(
            "docker",
            json!({
                "image": "procos/tool:1", "command": ["run", "--fast"],
                "env": {"MODE": "x"}, "env_from_inputs": ["n"],
                "bpmn_error_exit_codes": {"3": "NO_STOCK"}, "sandbox": sandbox,
                "limits": limits,
            }),
        );
        let AdapterConfig::Docker(docker) = docker else {
            panic!("not docker")
        };
        let context = BuildContext {
            allowed_images: images.clone(),
            ..BuildContext::default()
        };
        let docker = DockerAdapter::new(docker, &context).unwrap();
        specs.push((
            format!("docker/{size}"),
            docker
                .container_spec(task(
                    json!({"n": 1}),
                    with(json!({"error_exit_codes": "4=X"}), asked.clone()),
                ))
                .unwrap(),
        ));

        let python = config(
            "python",
            json!({"warm": 2, "sandbox": sandbox, "limits": limits}),
        );
        let AdapterConfig::Python(python) = python else {
            panic!("not python")
        };
        let python = PythonAdapter::new(python.clone(), "contract", &context).unwrap();
        specs.push((
            format!("python/{size}"),
            python
                .container_spec(task(
                    json!({}),
                    with(json!({"script": "outputs['n'] = 1"}), asked.clone()),
                ))
                .await
                .unwrap(),
        ));

        let scilab = config(
            "scilab",
            json!({"outputs": ["x"], "sandbox": sandbox, "limits": limits}),
        );
        let AdapterConfig::Scilab(scilab) = scilab else {
            panic!("not scilab")
        };
        let scilab = ScilabAdapter::new(scilab, &context).unwrap();
        specs.push((
            format!("scilab/{size}"),
            scilab
                .container_spec(task(
                    json!({"a": 2}),
                    with(json!({"script": "x = 1"}), asked.clone()),
                ))
                .await
                .unwrap(),
        ));
    }
    specs
}

/// Each spec as the Docker bodies it is created with: cold, and waiting in a warm pool.
async fn bodies() -> Vec<(String, Value)> {
    let mut bodies = Vec::new();
    for (name, spec) in specs().await {
        let cold = create_body(&spec.sandbox_spec(None));
        let warm_spec = waiting(spec.clone(), Duration::from_secs(600));
        let key = pool_key(&warm_spec);
        let warm = create_body(&warm_spec.sandbox_spec(Some((&key, Duration::from_secs(600)))));
        bodies.push((format!("{name}/cold"), serde_json::to_value(cold).unwrap()));
        bodies.push((format!("{name}/warm"), serde_json::to_value(warm).unwrap()));
    }
    bodies
}

#[tokio::test]
async fn the_proxy_accepts_every_container_an_adapter_asks_for() {
    let bodies = bodies().await;
    assert_eq!(bodies.len(), 12, "3 adapters × default/largest × cold/warm");
    for (name, body) in &bodies {
        let checked = check_create(body, &images(), None);
        assert!(checked.is_ok(), "{name}: {checked:?}\n{body:#}");
    }
}

/// A step with `procos.workspace` binds its instance's workspace, and nothing else of the host:
/// the check takes a directory directly under the workers' workspace directory at
/// `/workspace`, and refuses any other path, place or second bind, and every bind where no
/// workspace directory is configured.
#[tokio::test]
async fn a_container_binds_its_instances_workspace_and_no_other_host_path() {
    let (_, spec) = specs().await.into_iter().next().unwrap();
    let root = std::path::Path::new("/var/lib/procos/workspaces");
    let with = |workspace: &str| {
        let spec = ContainerSpec {
            workspace: Some(workspace.into()),
            ..spec.clone()
        };
        serde_json::to_value(create_body(&spec.sandbox_spec(None))).unwrap()
    };
    let body = with("/var/lib/procos/workspaces/3f1c2a4e-ef2e-11f1");
    let checked = check_create(&body, &images(), Some(root)).unwrap();
    let binds: Vec<&Value> = checked["HostConfig"]["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["Type"] == "bind")
        .collect();
    assert_eq!(binds.len(), 1);
    assert_eq!(binds[0]["Target"], "/workspace");
    assert!(
        check_create(&body, &images(), None).is_err(),
        "no workspace directory, no bind"
    );
    for outside in [
        "/etc",
        "/var/lib/procos/workspaces",
        "/var/lib/procos/workspaces/a/b",
        "/var/lib/procos/workspaces/../../etc",
        "/var/lib/procos/workspaces/..",
    ] {
        assert!(
            check_create(&with(outside), &images(), Some(root)).is_err(),
            "{outside}"
        );
    }
    let mut elsewhere = body.clone();
    for mount in elsewhere["HostConfig"]["Mounts"].as_array_mut().unwrap() {
        if mount["Type"] == "bind" {
            mount["Target"] = Value::from("/etc");
        }
    }
    assert!(check_create(&elsewhere, &images(), Some(root)).is_err());
    let mut twice = body.clone();
    let bind = binds[0].clone();
    twice["HostConfig"]["Mounts"]
        .as_array_mut()
        .unwrap()
        .push(bind);
    assert!(check_create(&twice, &images(), Some(root)).is_err());
}

#[tokio::test]
async fn no_container_passes_without_an_always_on_guard() {
    for (name, body) in bodies().await {
        for guard in AlwaysOn::ALL {
            let mut stripped = body.clone();
            strip_always_on(&mut stripped, guard);
            assert_ne!(stripped, body, "{name}: {guard:?} was not in the body");
            assert!(
                check_create(&stripped, &images(), None).is_err(),
                "{name} without {guard:?} passed the check"
            );
        }
    }
}

#[tokio::test]
async fn the_largest_settings_still_keep_the_always_on_guards() {
    let (_, spec) = specs()
        .await
        .into_iter()
        .find(|(name, _)| name == "python/largest")
        .unwrap();
    let body = serde_json::to_value(create_body(&spec.sandbox_spec(None))).unwrap();
    let host = &body["HostConfig"];
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    assert_eq!(host["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(host["Memory"], json!(65_536_i64 * 1024 * 1024));
    assert_eq!(host["NanoCpus"], json!(64_000_000_000_i64));
    assert_eq!(host["PidsLimit"], json!(65_536));
    assert_eq!(body["Labels"]["io.procos.task"], json!("task-1"));
}
