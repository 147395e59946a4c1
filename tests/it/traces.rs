//! OpenTelemetry traces: a worker exporting to a real OTLP receiver (Jaeger, on loopback) gives
//! each external task a span with its adapter run and write-back, joins them to the trace the
//! instance's `traceparent` names, and hands each step the context of its own run.

use std::time::Duration;

use camunda_client::{Variable, Variables};
use procos_adapters::test_server::{Reply, Server};
use serde_json::{Value, json};

use crate::support::{self, ProcosProcess, assert_eventually};

/// A span as Jaeger's query API (`/api/traces/{id}`) gives it back.
#[derive(Debug)]
struct Span {
    id: String,
    parent: Option<String>,
    name: String,
    tags: serde_json::Map<String, Value>,
}

async fn trace(query: &str, trace_id: &str) -> Option<Vec<Span>> {
    let answer: Value = reqwest::get(format!("{query}/api/traces/{trace_id}"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let spans = answer["data"].get(0)?["spans"].as_array()?;
    Some(
        spans
            .iter()
            .map(|span| Span {
                id: span["spanID"].as_str().unwrap_or_default().to_owned(),
                parent: span["references"]
                    .as_array()
                    .and_then(|r| r.first())
                    .map(|r| r["spanID"].as_str().unwrap_or_default().to_owned()),
                name: span["operationName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                tags: span["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        (
                            t["key"].as_str().unwrap_or_default().to_owned(),
                            t["value"].clone(),
                        )
                    })
                    .collect(),
            })
            .collect(),
    )
}

/// (trace id, parent span id) of a W3C `traceparent`.
fn parts(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "not a traceparent: {traceparent}");
    (fields[1].to_owned(), fields[2].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_step_instance_is_one_trace_in_a_real_otlp_receiver() {
    let (otlp, query) = support::jaeger();
    let server = Server::start(|_, _| Reply::json(200, &json!({"ok": true})));
    let client = support::engine();
    let key = support::unique("traced");
    let (echo, python, http) = (
        support::unique("traced-echo"),
        support::unique("traced-python"),
        support::unique("traced-http"),
    );
    let step = |id: &str, topic: &str, extra: &str| {
        format!(
            "<bpmn:serviceTask id=\"{id}\" camunda:type=\"external\" camunda:topic=\"{topic}\"><bpmn:extensionElements>{extra}</bpmn:extensionElements></bpmn:serviceTask>"
        )
    };
    let elements = [
        "<bpmn:startEvent id=\"start\"/>".to_owned(),
        step("first", &echo, ""),
        step(
            "script",
            &python,
            "<camunda:properties><camunda:property name=\"procos.script\" value=\"import os; outputs['seen'] = os.environ.get('TRACEPARENT')\"/></camunda:properties>",
        ),
        step(
            "call",
            &http,
            &format!(
                "<camunda:properties><camunda:property name=\"procos.url\" value=\"{}\"/></camunda:properties>",
                server.url("/traced")
            ),
        ),
        "<bpmn:endEvent id=\"end\"/>".to_owned(),
        "<bpmn:sequenceFlow id=\"f1\" sourceRef=\"start\" targetRef=\"first\"/>".to_owned(),
        "<bpmn:sequenceFlow id=\"f2\" sourceRef=\"first\" targetRef=\"script\"/>".to_owned(),
        "<bpmn:sequenceFlow id=\"f3\" sourceRef=\"script\" targetRef=\"call\"/>".to_owned(),
        "<bpmn:sequenceFlow id=\"f4\" sourceRef=\"call\" targetRef=\"end\"/>".to_owned(),
    ]
    .join("\n");
    support::deploy(
        &client,
        &format!("{key}.bpmn"),
        &support::bpmn(&key, "", &elements),
    )
    .await;
    let config = format!(
        "[topics.\"{echo}\"]\nadapter = \"echo\"\n[topics.\"{python}\"]\nadapter = \"python\"\n\
         [topics.\"{http}\"]\nadapter = \"http\"\n[topics.\"{http}\".settings]\nallow = [\"127.0.0.1:{}\"]\n",
        server.port
    );
    let service = support::unique("procos-traced");
    let worker = ProcosProcess::spawn_with_env(
        &support::engine_url(),
        "worker-traces",
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_SERVICE_NAME", service.as_str()),
        ],
    );

    // The caller's context, as a client that started the instance inside its own span would
    // pass it.
    let trace_id = format!("{:032x}", rand::random::<u128>());
    let caller = format!("{:016x}", rand::random::<u64>() | 1);
    let variables = Variables::from([(
        "traceparent".to_owned(),
        Variable::from_json(json!(format!("00-{trace_id}-{caller}-01"))),
    )]);
    let instance = support::start(&client, &key, variables).await;
    support::wait_completed(&client, &instance, Duration::from_secs(120)).await;

    // The SDK exports in batches (every 5 s): wait for all nine spans.
    let spans = assert_eventually(
        "the trace's spans in Jaeger",
        Duration::from_secs(60),
        || async {
            let spans = trace(query, &trace_id).await?;
            (spans.len() >= 9).then_some(spans)
        },
    )
    .await;
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);
    let tasks: Vec<&Span> = named("external_task").collect();
    assert_eq!(tasks.len(), 3, "{spans:#?}");
    let mut topics: Vec<&str> = tasks
        .iter()
        .map(|t| t.tags["topic"].as_str().unwrap())
        .collect();
    topics.sort_unstable();
    let mut expected = vec![echo.as_str(), python.as_str(), http.as_str()];
    expected.sort_unstable();
    assert_eq!(topics, expected);
    for task in &tasks {
        assert_eq!(task.parent.as_deref(), Some(caller.as_str()), "{task:?}");
        assert_eq!(task.tags["process_instance"], json!(instance), "{task:?}");
        assert_eq!(task.tags["outcome"], json!("completed"), "{task:?}");
        assert!(
            task.tags["task_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{task:?}"
        );
        for part in ["adapter_run", "write_back"] {
            assert_eq!(
                named(part)
                    .filter(|s| s.parent.as_deref() == Some(&task.id))
                    .count(),
                1,
                "one {part} under {task:?}"
            );
        }
    }
    // Each step got the context of its own adapter run.
    let run_of = |topic: &str| {
        let task = tasks
            .iter()
            .find(|t| t.tags["topic"] == json!(topic))
            .unwrap();
        named("adapter_run")
            .find(|s| s.parent.as_deref() == Some(&task.id))
            .unwrap()
            .id
            .clone()
    };
    let seen = support::variable_data(&client, &instance, "seen").await;
    assert_eq!(
        parts(&seen),
        (trace_id.clone(), run_of(&python)),
        "TRACEPARENT in the script"
    );
    let received = server.received();
    let header = received[0]
        .header("traceparent")
        .expect("a traceparent header");
    assert_eq!(
        parts(header),
        (trace_id.clone(), run_of(&http)),
        "traceparent of the call"
    );
    // Stopped in order, so that it removes the sandboxes it keeps warm.
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = worker.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{log}");
}
