//! The sandbox proxy (`procos-sandbox-proxy`) in front of the real Docker engine: a `procos
//! worker` whose `DOCKER_HOST` points at it runs Python tasks as before; calls that would
//! reach beyond the sandbox are refused with 403 and a message naming the reason; containers
//! without the sandbox label are out of reach.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use procos_sandbox_proxy::{Listen, ProxyConfig, SANDBOX_LABEL, SandboxProxy};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support;

/// A proxy on a free loopback port, in this process, with the default allowlist.
struct Proxy {
    base: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        support::init_logging();
        let proxy = SandboxProxy::bind(ProxyConfig {
            listen: vec![Listen::Tcp("127.0.0.1:0".parse().unwrap())],
            grace_period: Duration::from_secs(2),
            ..ProxyConfig::default()
        })
        .await
        .unwrap();
        let address = proxy.tcp_addrs()[0];
        let stop = CancellationToken::new();
        let task = tokio::spawn(proxy.run(stop.clone()));
        Self {
            base: format!("http://{address}"),
            stop,
            task,
        }
    }

    fn docker_host(&self) -> String {
        self.base.replacen("http://", "tcp://", 1)
    }

    /// `method path` through the proxy with an optional JSON body: status and JSON answer
    /// (`null` when the answer is empty or not JSON).
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Asserts that `method path` is refused with 403 and a message containing `reason`.
    async fn assert_refused(&self, method: Method, path: &str, body: Option<&Value>, reason: &str) {
        let (status, answer) = self.call(method.clone(), path, body).await;
        if status == 201 {
            // Created after all: remove it before failing.
            if let Some(id) = answer["Id"].as_str() {
                docker(&["rm", "-f", id]);
            }
        }
        let message = answer["message"].as_str().unwrap_or_default();
        assert_eq!(status, 403, "{method} {path} is refused: {answer}");
        assert!(
            message.contains("ProcOS sandbox proxy refuses") && message.contains(reason),
            "{method} {path}: the message names the reason `{reason}`: {message}"
        );
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// Runs the docker CLI on the real socket; its stdout.
fn docker(args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A container made directly on the real socket, removed when dropped.
struct Direct(String);

impl Direct {
    fn create(labels: &[&str]) -> Self {
        let name = support::unique("procos-proxy-direct");
        let mut args = vec!["create", "--name", &name];
        for label in labels {
            args.extend(["--label", label]);
        }
        args.extend(["procos/python-sandbox:latest", "true"]);
        let id = docker(&args);
        assert_eq!(id.len(), 64, "docker create made a container: {id}");
        Self(id)
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.0]);
    }
}

/// What ProcOS's sandbox asks for with its default guards (as bollard serialises it).
fn sandbox_body() -> Value {
    json!({
        "Image": "procos/python-sandbox",
        "Cmd": ["true"],
        "User": "65534:65534",
        "WorkingDir": "/tmp",
        "NetworkDisabled": true,
        "Labels": {SANDBOX_LABEL: "proxy-test", "io.procos.topic": "proxy-test"},
        "HostConfig": {
            "NetworkMode": "none",
            "ReadonlyRootfs": true,
            "Tmpfs": {"/tmp": "rw,nosuid,nodev,size=64m,mode=1777"},
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "PidsLimit": 128,
            "Memory": 268_435_456,
            "MemorySwap": 268_435_456,
            "NanoCpus": 1_000_000_000,
            "Mounts": [{"Target": "/in", "Type": "volume"}, {"Target": "/out", "Type": "volume"}],
            "Init": true
        }
    })
}

/// `sandbox_body` with `HostConfig.key` (or the top-level `key` when `host` is false) set.
fn body_with(host: bool, key: &str, value: Value) -> Value {
    let mut body = sandbox_body();
    if host {
        body["HostConfig"][key] = value;
    } else {
        body[key] = value;
    }
    body
}

/// A `procos worker` process whose Docker engine is `docker_host`; killed when dropped.
struct Worker {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    stderr: JoinHandle<String>,
}

impl Worker {
    fn spawn(docker_host: &str, config: &str) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("procos.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_procos"))
            .arg("worker")
            .arg("--config")
            .arg(&path)
            .env("PROCOS_ENGINE_URL", support::engine_url())
            .env("PROCOS_WORKER__WORKER_ID", support::unique("proxy-worker"))
            .env("PROCOS_WORKER__LISTEN", "off")
            .env("PROCOS_LOG", "info")
            .env("DOCKER_HOST", docker_host)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = tokio::spawn(async move {
            let mut all = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[proxied worker] {line}");
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        Self {
            child,
            _dir: dir,
            stderr,
        }
    }

    /// SIGTERM, and the exit within `limit`; what it logged.
    async fn stop(mut self, limit: Duration) -> String {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id().unwrap()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("the worker stops")
            .unwrap();
        let logged = self.stderr.await.unwrap();
        assert!(status.success(), "the worker exits 0: {status}\n{logged}");
        logged
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_python_tasks_through_the_proxy_and_its_refusals_reach_the_incident() {
    let client = support::engine();
    let proxy = Proxy::start().await;
    let (python_key, python_topic) = crate::sandbox::deploy_task_process(
        &client,
        "proxy-py",
        crate::sandbox::SCRIPT_FROM_VARIABLE,
    )
    .await;
    let (docker_key, docker_topic) = support::deploy_process(&client, "proxy-docker").await;
    // The worker itself would run debian; the proxy, allowing procos/* only, would not.
    let config = format!(
        "[worker]\nlong_poll = \"1s\"\ngrace_period = \"10s\"\nallowed_images = [\"procos/*\", \"debian:bookworm-slim\"]\n\n\
         [topics.\"{python_topic}\"]\nadapter = \"python\"\nsettings = {{ warm = 1 }}\n\n\
         [topics.\"{docker_topic}\"]\nadapter = \"docker\"\nretries = 1\nsettings = {{ image = \"debian:bookworm-slim\", command = [\"true\"] }}\n"
    );
    let worker = Worker::spawn(&proxy.docker_host(), &config);

    let mut variables = support::script("outputs['total'] = inputs['a'] + inputs['b']");
    variables.insert("a".into(), camunda_client::Variable::Integer(2));
    variables.insert("b".into(), camunda_client::Variable::Integer(40));
    let first = support::start(&client, &python_key, variables.clone()).await;
    support::wait_completed(&client, &first, Duration::from_secs(90)).await;
    // The second runs in the warm container the first one's run started, handed its task
    // over an attachment through the proxy: once it served it, it is removed.
    let warm_filter = [
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "label=io.procos.warm",
        "--filter",
        "status=running",
        "--filter",
    ];
    let topic_label = format!("label=io.procos.topic={python_topic}");
    let waiting = support::assert_eventually(
        "a warm container waiting",
        Duration::from_secs(60),
        || async {
            let args: Vec<&str> = warm_filter
                .iter()
                .copied()
                .chain([topic_label.as_str()])
                .collect();
            Some(docker(&args)).filter(|id| !id.is_empty() && !id.contains('\n'))
        },
    )
    .await;
    let second = support::start(&client, &python_key, variables).await;
    support::wait_completed(&client, &second, Duration::from_secs(90)).await;
    support::assert_eventually(
        "the warm container removed after its task",
        Duration::from_secs(30),
        || async {
            docker(&[
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &format!("id={waiting}"),
            ])
            .is_empty()
            .then_some(())
        },
    )
    .await;
    for instance in [&first, &second] {
        let vars = client.historic_variables(instance).await.unwrap();
        assert_eq!(vars["total"], camunda_client::Variable::Integer(42));
    }

    let refused = support::start(&client, &docker_key, Default::default()).await;
    let incident = support::incident(&client, &refused, Duration::from_secs(60)).await;
    let message = incident.incident_message.unwrap_or_default();
    assert!(
        message.contains("ProcOS sandbox proxy refuses")
            && message.contains("`debian:bookworm-slim` is not in the proxy's allowed images"),
        "the incident carries the proxy's reason: {message}"
    );

    // Stopping removes the warm container, through the proxy too.
    worker.stop(Duration::from_secs(30)).await;
    for topic in [&python_topic, &docker_topic] {
        let left = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.procos.topic={topic}"),
        ]);
        assert_eq!(left, "", "no container of {topic} is left behind");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_reach_beyond_the_sandbox_are_refused_naming_the_reason() {
    let proxy = Proxy::start().await;
    let create = "/containers/create";
    let cases = [
        (
            body_with(true, "Privileged", json!(true)),
            "HostConfig.Privileged is true",
        ),
        (
            body_with(true, "Binds", json!(["/:/host"])),
            "HostConfig.Binds",
        ),
        (
            body_with(
                true,
                "Mounts",
                json!([{"Type": "bind", "Source": "/", "Target": "/host"}]),
            ),
            "`bind` mount of \"/\"",
        ),
        (
            body_with(true, "NetworkMode", json!("host")),
            "HostConfig.NetworkMode is \"host\"",
        ),
        (
            body_with(true, "CapAdd", json!(["SYS_ADMIN"])),
            "HostConfig.CapAdd",
        ),
        (
            body_with(true, "PidMode", json!("host")),
            "HostConfig.PidMode",
        ),
        (
            body_with(true, "SecurityOpt", json!(["seccomp=unconfined"])),
            "seccomp=unconfined",
        ),
        (
            body_with(false, "Image", json!("debian:bookworm-slim")),
            "`debian:bookworm-slim` is not in the proxy's allowed images",
        ),
        (
            body_with(false, "Labels", json!({"io.procos.topic": "x"})),
            "lacks the label `io.procos.task`",
        ),
        // The engine reads HostConfig's fields at the top level too, for old clients.
        (
            body_with(false, "Privileged", json!(true)),
            "Privileged is not among",
        ),
    ];
    for (body, reason) in &cases {
        proxy
            .assert_refused(Method::POST, create, Some(body), reason)
            .await;
        proxy
            .assert_refused(Method::POST, &format!("/v1.41{create}"), Some(body), reason)
            .await;
    }
    for (method, path, reason) in [
        (
            Method::GET,
            "/info",
            "GET /info: it is not one of the Docker API calls",
        ),
        (Method::GET, "/v1.41/info", "GET /v1.41/info"),
        (
            Method::GET,
            "/v1.41/images/json",
            "not one of the Docker API calls",
        ),
        (
            Method::POST,
            "/containers/anything/exec",
            "POST /containers/anything/exec",
        ),
        (
            Method::POST,
            "/exec/anything/start",
            "not one of the Docker API calls",
        ),
        (
            Method::POST,
            "/volumes/create",
            "not one of the Docker API calls",
        ),
        (
            Method::POST,
            "/images/create?fromImage=debian&tag=bookworm-slim",
            "`debian:bookworm-slim` is not in the proxy's allowed images",
        ),
        (
            Method::POST,
            "/images/create?fromSrc=-&repo=procos/python-sandbox",
            "`fromSrc` imports an image",
        ),
        (
            Method::GET,
            "/images/debian:bookworm-slim/json",
            "`debian:bookworm-slim` is not in the proxy's allowed images",
        ),
        (
            Method::POST,
            "/v1.23/containers/anything/start",
            "API version 1.23",
        ),
    ] {
        proxy.assert_refused(method, path, None, reason).await;
    }

    // What the sandbox asks for goes through, with or without a version prefix.
    let (status, _) = proxy.call(Method::GET, "/_ping", None).await;
    assert_eq!(status, 200);
    let (status, image) = proxy
        .call(
            Method::GET,
            "/v1.41/images/procos/python-sandbox/json",
            None,
        )
        .await;
    assert_eq!(status, 200, "{image}");
    let (status, created) = proxy
        .call(Method::POST, create, Some(&sandbox_body()))
        .await;
    assert_eq!(status, 201, "the sandbox's own body is accepted: {created}");
    let id = created["Id"].as_str().unwrap().to_owned();
    let cleanup = Direct(id.clone());
    let (status, inspected) = proxy
        .call(Method::GET, &format!("/containers/{id}/json"), None)
        .await;
    assert_eq!(status, 200, "{inspected}");
    assert_eq!(inspected["HostConfig"]["NetworkMode"], "none");
    assert_eq!(inspected["HostConfig"]["CapDrop"], json!(["ALL"]));
    proxy
        .assert_refused(
            Method::POST,
            &format!("/containers/{id}/exec"),
            Some(&json!({"Cmd": ["sh"]})),
            "/exec: it is not one of the Docker API calls",
        )
        .await;
    let (status, answer) = proxy
        .call(
            Method::DELETE,
            &format!("/v1.41/containers/{id}?force=true&v=true"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{answer}");
    assert_eq!(docker(&["ps", "-aq", "--filter", &format!("id={id}")]), "");
    drop(cleanup);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_without_the_sandbox_label_are_out_of_reach() {
    let proxy = Proxy::start().await;
    let foreign = Direct::create(&[]);
    let sandbox = Direct::create(&[&format!("{SANDBOX_LABEL}=direct")]);
    let id = foreign.0.clone();
    let name = docker(&["inspect", "--format", "{{.Name}}", &id])
        .trim_start_matches('/')
        .to_owned();
    for reference in [id.as_str(), &id[..12], name.as_str()] {
        for (method, suffix) in [
            (Method::GET, "/json"),
            (Method::POST, "/start"),
            (Method::POST, "/wait"),
            (Method::GET, "/logs?stdout=true"),
            (Method::GET, "/archive?path=/etc/passwd"),
            (Method::PUT, "/archive?path=/tmp"),
            (Method::POST, "/kill"),
            (Method::DELETE, "?force=true"),
        ] {
            proxy
                .assert_refused(
                    method,
                    &format!("/containers/{reference}{suffix}"),
                    None,
                    "is not a ProcOS sandbox container: it lacks the label `io.procos.task`",
                )
                .await;
        }
    }
    let state = docker(&["inspect", "--format", "{{.State.Status}}", &id]);
    assert_eq!(state, "created", "the foreign container was not touched");

    // A list shows sandbox containers only.
    let (status, listed) = proxy
        .call(Method::GET, "/containers/json?all=true", None)
        .await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["Id"].as_str())
        .collect();
    assert!(ids.contains(&sandbox.0.as_str()), "{ids:?}");
    assert!(!ids.contains(&id.as_str()), "{ids:?}");

    // The label is the rule, not who made the container.
    let (status, inspected) = proxy
        .call(
            Method::GET,
            &format!("/containers/{}/json", sandbox.0),
            None,
        )
        .await;
    assert_eq!(status, 200, "{inspected}");
    let (status, answer) = proxy
        .call(
            Method::DELETE,
            &format!("/containers/{}?force=true", sandbox.0),
            None,
        )
        .await;
    assert_eq!(status, 204, "{answer}");
    let (status, answer) = proxy
        .call(
            Method::GET,
            "/containers/procos-no-such-container/json",
            None,
        )
        .await;
    assert_eq!(
        status, 404,
        "the engine's own answer for a missing container: {answer}"
    );
    drop((foreign, sandbox));
    proxy.stop().await;
}

/// The Docker CLI on the proxy's unix socket: what the sandbox needs answers, the rest is
/// refused with the reason in the CLI's own error line; the socket file goes with the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_cli_on_the_unix_socket_is_told_why() {
    support::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let proxy = SandboxProxy::bind(ProxyConfig {
        listen: vec![Listen::Unix(socket.clone())],
        grace_period: Duration::from_secs(2),
        ..ProxyConfig::default()
    })
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(proxy.run(stop.clone()));
    let host = format!("unix://{}", socket.display());
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new("docker");
        command.arg("-H").arg(&host).args(args);
        async move {
            let output = command.output().await.unwrap();
            let text = String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr);
            (output.status.success(), text)
        }
    };

    let (ok, version) = cli(&["version", "--format", "{{.Server.APIVersion}}"]).await;
    assert!(ok && version.trim().starts_with("1."), "{version}");
    for (args, reason) in [
        (
            &[
                "run",
                "--rm",
                "--privileged",
                "procos/python-sandbox",
                "true",
            ][..],
            "/containers/create: HostConfig.Privileged is true",
        ),
        (
            &[
                "run",
                "--rm",
                "-v",
                "/:/host",
                "procos/python-sandbox",
                "true",
            ][..],
            "/containers/create: HostConfig.Binds is [\"/:/host\"]",
        ),
        (
            &["info"][..],
            "/info: it is not one of the Docker API calls",
        ),
    ] {
        let (_, said) = cli(args).await;
        assert!(
            said.contains("the ProcOS sandbox proxy refuses") && said.contains(reason),
            "docker {args:?} is told `{reason}`: {said}"
        );
    }
    stop.cancel();
    task.await.unwrap();
    assert!(!socket.exists(), "the socket file is removed at stop");
}
