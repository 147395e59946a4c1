//! The `http` adapter against the real engine and a real HTTP server each test starts on
//! loopback: round trips set up by the model's `procos.*` settings, retries and incidents,
//! BPMN errors, the egress rules (allow list, internal addresses behind names and redirects),
//! the response size limit, and secrets that reach the server and nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use camunda_client::{EngineClient, ExternalTaskLogQuery, Variable, Variables};
use procos_adapters::test_server::{Reply, Server};
use procos_worker::TopicConfig;
use serde_json::{Value, json};

use crate::support::{self, ProcosProcess, assert_eventually};

// ---------------------------------------------------------------------------------------------
// Models and topics.

/// One `http` step: `procos.*` extension properties and input parameters (names without the
/// prefix).
struct Step<'a> {
    id: &'a str,
    properties: &'a [(&'a str, &'a str)],
    inputs: &'a [(&'a str, &'a str)],
}

/// start → each step on `topic` in turn → (a user task `review`, when `wait`) → end `done`. With
/// `catch`, a boundary error event for that code on the first step leads to the end `caught`.
fn http_model(key: &str, topic: &str, steps: &[Step], catch: Option<&str>, wait: bool) -> String {
    let mut elements = String::new();
    let mut previous = "start".to_owned();
    let mut flows = 0;
    let mut flow = |from: &str, to: &str, elements: &mut String| {
        flows += 1;
        elements.push_str(&format!(
            "<bpmn:sequenceFlow id=\"f{flows}\" sourceRef=\"{from}\" targetRef=\"{to}\"/>\n"
        ));
    };
    for step in steps {
        let properties = support::procos_properties(step.properties);
        let inputs: String = step
            .inputs
            .iter()
            .map(|(n, v)| {
                format!(
                    "<camunda:inputParameter name=\"procos.{n}\">{}</camunda:inputParameter>",
                    support::xml_escape(v)
                )
            })
            .collect();
        elements.push_str(&format!(
            "<bpmn:serviceTask id=\"{}\" camunda:type=\"external\" camunda:topic=\"{topic}\"><bpmn:extensionElements><camunda:properties>{properties}</camunda:properties><camunda:inputOutput>{inputs}</camunda:inputOutput></bpmn:extensionElements></bpmn:serviceTask>\n",
            step.id
        ));
        flow(&previous, step.id, &mut elements);
        previous = step.id.to_owned();
    }
    if wait {
        elements.push_str("<bpmn:userTask id=\"review\"/>\n");
        flow(&previous, "review", &mut elements);
        previous = "review".to_owned();
    }
    elements.push_str("<bpmn:endEvent id=\"done\"/>\n");
    flow(&previous, "done", &mut elements);
    let mut errors = String::new();
    if let Some(code) = catch {
        errors = format!("<bpmn:error id=\"caught-error\" errorCode=\"{code}\"/>");
        elements.push_str(&format!(
            "<bpmn:boundaryEvent id=\"on-error\" attachedToRef=\"{}\"><bpmn:errorEventDefinition errorRef=\"caught-error\"/></bpmn:boundaryEvent>\n<bpmn:endEvent id=\"caught\"/>\n",
            steps[0].id
        ));
        flow("on-error", "caught", &mut elements);
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="defs-{key}" targetNamespace="https://procos.io/test">
  {errors}
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="P1D">
    <bpmn:startEvent id="start"/>
    {elements}
  </bpmn:process>
</bpmn:definitions>
"#
    )
}

/// Deploys the model of `steps` as a process and topic of their own; (key, topic).
async fn deploy(
    client: &EngineClient,
    prefix: &str,
    steps: &[Step<'_>],
    catch: Option<&str>,
    wait: bool,
) -> (String, String) {
    support::deploy_new(client, prefix, |key, topic| {
        http_model(key, topic, steps, catch, wait)
    })
    .await
}

/// An `http` topic with the TOML `settings`; two attempts, 200 ms apart.
fn http_topic(settings: &str) -> TopicConfig {
    let mut topic = TopicConfig::new("http");
    topic.settings = toml::from_str(settings).unwrap();
    topic.retries = 2;
    topic.retry_backoff = Duration::from_millis(200);
    topic
}

fn text(variable: &Variable) -> String {
    variable.to_json().to_string()
}

async fn incident_of(client: &EngineClient, instance: &str) -> (String, String) {
    let incident = support::incident(client, instance, Duration::from_secs(60)).await;
    let details = client
        .external_task_error_details(&incident.configuration.clone().unwrap())
        .await
        .unwrap();
    (incident.incident_message.unwrap_or_default(), details)
}

// ---------------------------------------------------------------------------------------------

/// A GET whose URL, query and headers come from the model, then a POST whose JSON body is
/// filled from the first answer: the server sees what the model said, the instance gets
/// `status`, `headers` and `body`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_round_trips_carry_what_the_model_sets() {
    let client = support::engine();
    let server = Server::start(|r, _| match r.method.as_str() {
        "GET" => Reply::json(200, &json!({"id": "A 1/2", "total": 42.5, "lines": [1, 2]}))
            .header("x-request-id", "r-17"),
        _ => {
            let sent: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            Reply::json(201, &json!({"invoice": "INV-1", "received": sent}))
        }
    });
    let get = format!(
        "{}/orders/{{{{orderId}}}}?expand={{{{expand}}}}",
        server.url("")
    );
    let post = server.url("/invoices");
    let (key, topic) = deploy(
        &client,
        "http-round-trip",
        &[
            Step {
                id: "fetch",
                properties: &[
                    ("url", &get),
                    ("headers", r#"{"Accept": "application/json"}"#),
                    ("response_headers", "x-request-id"),
                ],
                inputs: &[],
            },
            Step {
                id: "invoice",
                properties: &[("url", &post)],
                inputs: &[
                    ("method", "POST"),
                    (
                        "body",
                        r#"{"order": "{{orderId}}", "total": {{body.total}}, "note": "for {{customer}}"}"#,
                    ),
                ],
            },
        ],
        None,
        false,
    )
    .await;
    let (stop, worker) = support::start_quick_worker(
        &client,
        &topic,
        http_topic(&format!("allow = [\"127.0.0.1:{}\"]", server.port)),
    );
    let instance = support::start(
        &client,
        &key,
        Variables::from([
            ("orderId".to_owned(), Variable::String("A 1/2".into())),
            ("expand".to_owned(), Variable::String("lines&notes".into())),
            ("customer".to_owned(), Variable::String("ACME".into())),
        ]),
    )
    .await;
    let vars = support::settle(&client, &instance, Duration::from_secs(60))
        .await
        .unwrap_or_else(|incident| panic!("the instance ran into an incident: {incident}"));
    stop.cancel();
    worker.await.unwrap();

    let got = server.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[0].target, "/orders/A%201%2F2?expand=lines%26notes");
    assert_eq!(got[0].header("accept"), Some("application/json"));
    assert_eq!(got[1].method, "POST");
    assert_eq!(got[1].target, "/invoices");
    assert_eq!(got[1].header("content-type"), Some("application/json"));
    let sent: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(
        sent,
        json!({"order": "A 1/2", "total": 42.5, "note": "for ACME"})
    );

    // The last step's answer is the instance's; the first one's header was handed back on the
    // way (the second step asked for none).
    assert_eq!(vars["status"].to_json(), json!(201));
    assert_eq!(
        vars["body"].to_json(),
        json!({"invoice": "INV-1", "received": sent})
    );
    assert_eq!(vars["headers"].to_json(), json!({}));
    let log = support::completions(&client, &key).await;
    assert_eq!(log.len(), 2, "two steps, each completed once");
}

/// A 503 is retried with the topic's backoff, then raises an incident whose message names the
/// status and whose details hold the start of the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_then_raises_an_incident_with_the_status_and_a_body_excerpt() {
    let client = support::engine();
    let server = Server::start(|_, _| {
        Reply::new(
            503,
            "text/html",
            format!(
                "<h1>Maintenance window until 12:00</h1>{}",
                "z".repeat(5000)
            ),
        )
    });
    let url = server.url("/ledger");
    let (key, topic) = deploy(
        &client,
        "http-5xx",
        &[Step {
            id: "post",
            properties: &[("url", &url), ("method", "POST"), ("body", "entry 7")],
            inputs: &[],
        }],
        None,
        false,
    )
    .await;
    let (stop, worker) = support::start_quick_worker(
        &client,
        &topic,
        http_topic(&format!("allow = [\"127.0.0.1:{}\"]", server.port)),
    );
    let instance = support::start(&client, &key, Variables::new()).await;
    let (message, details) = incident_of(&client, &instance).await;
    stop.cancel();
    worker.await.unwrap();

    assert!(message.contains("503"), "{message}");
    assert!(message.contains("/ledger"), "{message}");
    assert!(
        details.contains("<h1>Maintenance window until 12:00</h1>zzz"),
        "{details}"
    );
    assert!(details.len() < 2000, "an excerpt: {} bytes", details.len());
    let got = server.received();
    assert_eq!(got.len(), 2, "two attempts: {got:?}");
    assert_eq!(got[0].body, b"entry 7");
    assert_eq!(
        got[0].header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let failures = support::task_log(
        &client,
        ExternalTaskLogQuery {
            process_instance_id: Some(instance.clone()),
            failure_log: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(failures.len(), 2, "retried once, then the incident");
}

/// `procos.error_codes` maps 404 to a BPMN error, which the model's boundary event catches,
/// with the answer as its variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_mapped_to_a_bpmn_error_is_caught_by_the_boundary_event() {
    let client = support::engine();
    let server = Server::start(|_, _| Reply::json(404, &json!({"error": "no such customer"})));
    let url = server.url("/customers/{{customerId}}");
    let (key, topic) = deploy(
        &client,
        "http-404",
        &[Step {
            id: "lookup",
            properties: &[("url", &url), ("error_codes", r#"{"404": "NOT_FOUND"}"#)],
            inputs: &[],
        }],
        Some("NOT_FOUND"),
        false,
    )
    .await;
    let (stop, worker) = support::start_quick_worker(
        &client,
        &topic,
        http_topic(&format!("allow = [\"127.0.0.1:{}\"]", server.port)),
    );
    let instance = support::start(
        &client,
        &key,
        Variables::from([("customerId".to_owned(), Variable::Integer(77))]),
    )
    .await;
    support::wait_completed(&client, &instance, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();

    support::assert_caught_by(&client, &instance, "on-error", "caught", "done").await;
    assert_eq!(server.received()[0].target, "/customers/77");
    let vars = client.historic_variables(&instance).await.unwrap();
    assert_eq!(vars["status"].to_json(), json!(404));
    assert_eq!(vars["body"].to_json(), json!({"error": "no such customer"}));
}

/// The incident of a task whose request the egress rules refused, and what the server got.
async fn refused(
    client: &EngineClient,
    prefix: &str,
    settings: &str,
    properties: &[(&str, &str)],
) -> String {
    let (key, topic) = deploy(
        client,
        prefix,
        &[Step {
            id: "call",
            properties,
            inputs: &[],
        }],
        None,
        false,
    )
    .await;
    let (stop, worker) = support::start_quick_worker(client, &topic, http_topic(settings));
    let instance = support::start(client, &key, Variables::new()).await;
    let (message, _) = incident_of(client, &instance).await;
    stop.cancel();
    worker.await.unwrap();
    let failures = support::task_log(
        client,
        ExternalTaskLogQuery {
            process_instance_id: Some(instance),
            failure_log: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(failures.len(), 1, "a refusal is not retried");
    message
}

/// A destination the topic does not list is refused at once, naming it, the allow list and
/// the fix; the server hears nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_off_the_allow_list_is_refused() {
    let client = support::engine();
    let server = Server::start(|_, _| Reply::new(200, "text/plain", "should not be reached"));
    let url = server.url("/");
    let message = refused(
        &client,
        "http-off-list",
        "allow = [\"api.example.com\"]",
        &[("url", &url)],
    )
    .await;
    for part in [
        format!("127.0.0.1:{}", server.port),
        "\"api.example.com\"".to_owned(),
        "settings] allow".to_owned(),
    ] {
        assert!(message.contains(&part), "{part}: {message}");
    }
    assert!(server.received().is_empty());
}

/// `localhost` matches the wildcard `*:PORT` by name, but its address is loopback, which only
/// an entry naming it admits: refused, and the server hears nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_address_behind_a_name_is_refused() {
    let client = support::engine();
    let server = Server::start(|_, _| Reply::new(200, "text/plain", "should not be reached"));
    let url = format!("http://localhost:{}/", server.port);
    let message = refused(
        &client,
        "http-loopback",
        &format!("allow = [\"*:{}\"]", server.port),
        &[("url", &url)],
    )
    .await;
    assert!(
        message.contains(&format!("localhost:{}", server.port)),
        "{message}"
    );
    assert!(
        message.contains("127.0.0.1") || message.contains("::1"),
        "names the address: {message}"
    );
    assert!(message.contains("loopback"), "{message}");
    assert!(
        message.contains(&format!("\"*:{}\"", server.port)),
        "{message}"
    );
    assert!(server.received().is_empty());
}

/// A redirect to the cloud metadata address is refused, though the first hop was allowed and a
/// wildcard matches the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_refused_address_is_refused() {
    let client = support::engine();
    let server = Server::start(|_, _| {
        Reply::new(302, "text/plain", "").header(
            "location",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        )
    });
    let url = server.url("/start");
    let message = refused(
        &client,
        "http-redirect",
        &format!("allow = [\"127.0.0.1:{}\", \"*\"]", server.port),
        &[("url", &url), ("follow_redirects", "true")],
    )
    .await;
    assert!(message.contains("169.254.169.254"), "{message}");
    assert!(message.contains("link-local"), "{message}");
    assert_eq!(server.received().len(), 1, "the first hop was made");
}

/// A 50 MB answer stops at the topic's limit (10 MiB by default) and fails naming it; the
/// adapter stopped reading, so the server could not write it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_response_fails_at_the_size_limit() {
    let client = support::engine();
    let server = Server::start(|_, _| Reply {
        repeat: 50,
        content_length: false,
        ..Reply::new(200, "application/octet-stream", vec![b'x'; 1024 * 1024])
    });
    let url = server.url("/export");
    let message = refused(
        &client,
        "http-large",
        &format!("allow = [\"127.0.0.1:{}\"]", server.port),
        &[("url", &url)],
    )
    .await;
    assert!(message.contains("max_response_kb = 10240"), "{message}");
    let written = server.written();
    assert!(
        written < 40 * 1024 * 1024,
        "the body was not read to its end: {written} bytes written"
    );
}

/// A secret the topic holds reaches the server; when the server echoes it (a 500 once, then in
/// the 200's body and headers, and in the 500s of an instance that never succeeds) it appears
/// in no variable, log entry, error details, incident, or line the worker logged at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_server_and_nothing_else() {
    let client = support::engine();
    let token = format!("tok-{}", support::unique("billing"));
    let flaky_calls = std::sync::atomic::AtomicUsize::new(0);
    let server = Server::start(move |r, _| {
        let credential = r.header("authorization").unwrap_or("none").to_owned();
        let echo = json!({"you sent": credential});
        let first_flaky = r.target == "/flaky" && flaky_calls.fetch_add(1, Ordering::Relaxed) == 0;
        let fails = r.target == "/broken" || first_flaky;
        let status = if fails { 500 } else { 200 };
        Reply::json(status, &echo).header("x-echo", &credential)
    });
    let flaky = server.url("/flaky");
    let broken = server.url("/broken");
    let key = support::unique("http-secret");
    let topic = support::unique("http-secret");
    let model = |url: &str, key: &str| {
        http_model(
            key,
            &topic,
            &[Step {
                id: "charge",
                properties: &[
                    ("url", url),
                    ("auth", "billing"),
                    ("response_headers", "x-echo"),
                ],
                inputs: &[],
            }],
            None,
            true,
        )
    };
    let broken_key = format!("{key}-broken");
    support::deploy(&client, &format!("{key}.bpmn"), &model(&flaky, &key)).await;
    support::deploy(
        &client,
        &format!("{broken_key}.bpmn"),
        &model(&broken, &broken_key),
    )
    .await;
    let config = format!(
        r#"[worker]
long_poll = "500ms"
grace_period = "5s"

[topics."{topic}"]
adapter = "http"
retries = 2
retry_backoff = "200ms"

[topics."{topic}".settings]
allow = ["127.0.0.1:{port}"]

[topics."{topic}".settings.secrets.billing]
kind = "bearer"
token_env = "PROCOS_TEST_BILLING_TOKEN"
destinations = ["127.0.0.1:{port}"]
"#,
        port = server.port
    );
    let worker = ProcosProcess::spawn_with_env(
        &support::engine_url(),
        &support::unique("http-secret-worker"),
        &config,
        &[
            ("PROCOS_LOG", "debug"),
            // Plain text: no colour codes between a value's characters.
            ("NO_COLOR", "1"),
            ("PROCOS_TEST_BILLING_TOKEN", token.as_str()),
        ],
    );
    let flaky_instance = support::start(&client, &key, Variables::new()).await;
    let broken_instance = support::start(&client, &broken_key, Variables::new()).await;

    // The flaky one waits in `review` after its second attempt; the broken one in an incident.
    let runtime = assert_eventually(
        "the flaky call to succeed",
        Duration::from_secs(60),
        || async {
            let vars = client
                .process_instance_variables(&flaky_instance)
                .await
                .ok()?;
            vars.contains_key("status").then_some(vars)
        },
    )
    .await;
    let (incident_message, incident_details) = incident_of(&client, &broken_instance).await;
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = worker.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "the worker stops cleanly: {status}");

    // The server got the credential on every request.
    let got = server.received();
    assert_eq!(got.len(), 4, "two attempts each: {got:?}");
    let bearer = format!("Bearer {token}");
    assert!(
        got.iter()
            .all(|r| r.header("authorization") == Some(bearer.as_str()))
    );

    // It reached nothing else. The echoes did come back, cut out: the checks can fail.
    let marker = "[secret billing redacted]";
    assert_eq!(runtime["status"].to_json(), json!(200));
    let body = text(&runtime["body"]);
    assert!(
        body.contains(marker),
        "the echo came back, redacted: {body}"
    );
    let mut seen: Vec<(String, String)> = Vec::new();
    for (name, value) in &runtime {
        seen.push((format!("runtime variable {name}"), text(value)));
    }
    for instance in [&flaky_instance, &broken_instance] {
        for (name, value) in client.historic_variables(instance).await.unwrap() {
            seen.push((format!("historic variable {name}"), text(&value)));
        }
        let entries = support::task_log(
            &client,
            ExternalTaskLogQuery {
                process_instance_id: Some(instance.clone()),
                ..Default::default()
            },
        )
        .await;
        for entry in entries.iter().filter(|e| e.failure_log) {
            seen.push((
                format!("log entry {}", entry.id),
                entry.error_message.clone().unwrap_or_default(),
            ));
            let details = history_error_details(&entry.id).await;
            assert!(
                details.contains(marker),
                "the details hold the echo: {details}"
            );
            seen.push((format!("error details of {}", entry.id), details));
        }
    }
    seen.push(("incident message".into(), incident_message.clone()));
    seen.push(("incident's error details".into(), incident_details.clone()));
    assert!(incident_message.contains("500"), "{incident_message}");
    assert!(incident_details.contains(marker), "{incident_details}");
    seen.push(("the worker's log".into(), log.clone()));
    assert!(
        log.contains("http request") && log.contains("DEBUG"),
        "the log is at debug level and shows the adapter's requests:\n{log}"
    );
    for (place, text) in &seen {
        assert!(
            !text.contains(&token),
            "the secret leaked into the {place}: {text}"
        );
    }
}

/// `GET /history/external-task-log/{id}/error-details`: the details a failure left, kept in
/// history after the task is gone.
async fn history_error_details(log_id: &str) -> String {
    reqwest::get(format!(
        "{}/history/external-task-log/{log_id}/error-details",
        support::engine_url().trim_end_matches('/')
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap()
}

/// A secret goes only where its `destinations` say: a task that names it for another
/// destination is refused before anything is sent, and a redirect to another destination
/// arrives without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_not_sent_to_a_destination_it_does_not_list() {
    let client = support::engine();
    let other = Server::start(|_, _| Reply::new(200, "text/plain", "other"));
    let other_url = other.url("/landing");
    let home =
        Server::start(move |_, _| Reply::new(302, "text/plain", "").header("location", &other_url));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-only-for-home\n").unwrap();
    let settings = format!(
        "allow = [\"127.0.0.1:{home}\", \"127.0.0.1:{other}\"]\n\
         [secrets.billing]\nkind = \"bearer\"\ntoken_file = \"{file}\"\ndestinations = [\"127.0.0.1:{home}\"]\n",
        home = home.port,
        other = other.port,
        file = token_file.display()
    );
    let direct = other.url("/direct");
    let message = refused(
        &client,
        "http-secret-elsewhere",
        &settings,
        &[("url", &direct), ("auth", "billing")],
    )
    .await;
    assert!(
        message.contains("secret `billing`")
            && message.contains(&format!("127.0.0.1:{}", other.port)),
        "{message}"
    );
    assert!(other.received().is_empty(), "nothing was sent there");

    let start = home.url("/start");
    let (key, topic) = deploy(
        &client,
        "http-secret-redirect",
        &[Step {
            id: "call",
            properties: &[
                ("url", &start),
                ("auth", "billing"),
                ("follow_redirects", "true"),
            ],
            inputs: &[],
        }],
        None,
        false,
    )
    .await;
    let (stop, worker) = support::start_quick_worker(&client, &topic, http_topic(&settings));
    let instance = support::start(&client, &key, Variables::new()).await;
    let vars = support::settle(&client, &instance, Duration::from_secs(60))
        .await
        .unwrap();
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(vars["body"].to_json(), json!("other"));
    assert_eq!(
        home.received()[0].header("authorization"),
        Some("Bearer tok-only-for-home")
    );
    let landed = other.received();
    assert_eq!(landed[0].target, "/landing");
    assert_eq!(
        landed[0].header("authorization"),
        None,
        "dropped at the redirect"
    );
}

/// `bpmn/examples/http-process-lookup.bpmn`, deployed from its file, asks the test engine's own
/// REST API: a known key ends in `found` with the definition in `definition`, an unknown one
/// is the BPMN error NOT_FOUND its boundary event catches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_looks_up_a_process_definition_through_the_engines_rest_api() {
    let client = support::engine();
    let example = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("bpmn/examples/http-process-lookup.bpmn");
    let report = procos_kernel::deploy_files(&client, &[example]).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let key = "example-process-lookup";
    let rest = support::engine_url().trim_end_matches('/').to_owned();
    // The engine's host:port, which the topic names (it is a loopback address).
    let address = rest
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap();
    let mut topic = http_topic(&format!("allow = [\"{address}\"]"));
    // The shared engine runs the other examples too: only this one's tasks.
    topic.process_definition_keys = Some(vec![key.to_owned()]);
    let (stop, worker) = support::start_quick_worker(&client, "http", topic);
    let start = |wanted: &str| {
        support::start(
            &client,
            key,
            Variables::from([
                ("engineRest".to_owned(), Variable::String(rest.clone())),
                ("processKey".to_owned(), Variable::String(wanted.to_owned())),
            ]),
        )
    };
    let known = start(key).await;
    let unknown = start("no-such-process-key").await;
    let vars = support::settle(&client, &known, Duration::from_secs(60))
        .await
        .unwrap_or_else(|incident| panic!("the lookup ran into an incident: {incident}"));
    support::settle(&client, &unknown, Duration::from_secs(60))
        .await
        .unwrap_or_else(|incident| panic!("the lookup ran into an incident: {incident}"));
    stop.cancel();
    worker.await.unwrap();

    assert_eq!(vars["status"].to_json(), json!(200));
    assert_eq!(vars["definition"].to_json()["key"], json!(key));
    assert_eq!(
        vars["headers"].to_json()["content-type"],
        json!("application/json")
    );
    assert!(
        support::passed(&client, &known)
            .await
            .contains(&"found".to_owned())
    );
    let passed = support::passed(&client, &unknown).await;
    assert!(
        passed.contains(&"not-found".to_owned()) && passed.contains(&"unknown".to_owned()),
        "{passed:?}"
    );
}
