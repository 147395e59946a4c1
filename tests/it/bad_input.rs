//! The bad-input corpus: malformed and hostile models in the init directory, and wrong, missing,
//! oversized or malformed input to each adapter. Each case must end in a clear error or incident
//! naming what is wrong and where, and the kernel and the worker stay up for the next.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use camunda_client::{Variable, Variables};
use procos_adapters::test_server::{Reply, Server};
use procos_worker::TopicConfig;
use serde_json::{Value, json};

use crate::support::{self, ProcosProcess, assert_eventually};

/// A valid model beside the bad ones, so that the kernel is seen to go on deploying.
fn good_model(key: &str) -> String {
    support::external_task_process(key, "echo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_malformed_models_in_the_init_directory_are_refused_by_name() {
    let client = support::engine();
    let init = tempfile::tempdir().unwrap();
    let secret = init.path().join("secret.txt");
    std::fs::write(&secret, "not-for-the-engine-7f3a").unwrap();
    let model =
        |key: &str| good_model(key).replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "", 1);
    let xxe_key = support::unique("xxe");
    let laughs_key = support::unique("laughs");
    let huge_key = support::unique("huge");
    let good_key = support::unique("good");
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        // An external entity that reads a file of the kernel's machine into the model.
        (
            "xxe.bpmn".into(),
            format!(
                "<?xml version=\"1.0\"?>\n<!DOCTYPE d [<!ENTITY leak SYSTEM \"file://{}\">]>\n{}",
                secret.display(),
                model(&xxe_key).replace("<bpmn:startEvent id=\"start\"/>", "<bpmn:startEvent id=\"start\" name=\"&leak;\"/>")
            )
            .into_bytes(),
            "declares a DTD",
        ),
        // Entities that expand to billions of characters.
        (
            "laughs.bpmn".into(),
            {
                let mut entities = String::from("<!ENTITY l0 \"lol\">");
                for i in 1..10 {
                    let prev = i - 1;
                    entities.push_str(&format!(
                        "<!ENTITY l{i} \"&l{prev};&l{prev};&l{prev};&l{prev};&l{prev};&l{prev};&l{prev};&l{prev};&l{prev};&l{prev};\">"
                    ));
                }
                format!(
                    "<?xml version=\"1.0\"?>\n<!DOCTYPE d [{entities}]>\n{}",
                    model(&laughs_key).replace("<bpmn:startEvent id=\"start\"/>", "<bpmn:startEvent id=\"start\" name=\"&l9;\"/>")
                )
                .into_bytes()
            },
            "declares a DTD",
        ),
        // 50 MB: a valid model padded with a comment.
        (
            "huge.bpmn".into(),
            {
                let mut bytes = good_model(&huge_key).into_bytes();
                bytes.extend_from_slice(b"<!--");
                bytes.resize(bytes.len() + 50_000_000, b'x');
                bytes.extend_from_slice(b"-->\n");
                bytes
            },
            "a model may be at most 10 MB",
        ),
        (
            "broken.bpmn".into(),
            b"<?xml version=\"1.0\"?>\n<bpmn:definitions xmlns:bpmn=\"http://www.omg.org/spec/BPMN/20100524/MODEL\">\n  <bpmn:process id=\"p\">\n</bpmn:definitions>\n".to_vec(),
            "not well-formed",
        ),
        ("latin1.bpmn".into(), b"<?xml version=\"1.0\"?><a name=\"caf\xe9\"/>".to_vec(), "not UTF-8"),
        ("not-bpmn.bpmn".into(), b"{\"this\": \"is JSON\"}".to_vec(), "not well-formed"),
    ];
    for (name, bytes, _) in &cases {
        std::fs::write(init.path().join(name), bytes).unwrap();
    }
    std::fs::write(init.path().join("good.bpmn"), good_model(&good_key)).unwrap();
    let kernel = ProcosProcess::spawn_command(
        &["kernel", "--init-dir", init.path().to_str().unwrap()],
        &support::engine_url(),
        "kernel-bad-input",
        "[kernel]\nroot_process = \"\"\n",
        &[],
    );
    assert_eventually(
        "the good model deployed",
        Duration::from_secs(60),
        || async { (!client.process_definitions(&good_key).await.ok()?.is_empty()).then_some(()) },
    )
    .await;
    assert_eventually(
        "every bad file reported",
        Duration::from_secs(30),
        || async {
            let log = kernel.log();
            cases
                .iter()
                .all(|(name, _, _)| log.contains(name.as_str()))
                .then_some(())
        },
    )
    .await;
    let log = kernel.log();
    for (name, _, why) in &cases {
        let line = log
            .lines()
            .find(|line| line.contains(name.as_str()))
            .unwrap_or_default();
        assert!(
            line.contains(why),
            "{name}: expected `{why}` in\n{line}\n\n{log}"
        );
    }
    for key in [&xxe_key, &laughs_key, &huge_key] {
        assert!(
            client.process_definitions(key).await.unwrap().is_empty(),
            "{key} never reaches the engine"
        );
    }
    assert!(!log.contains("not-for-the-engine-7f3a"), "{log}");
    assert!(
        kernel.child.id().is_some() && std::fs::metadata(format!("/proc/{}", kernel.pid())).is_ok(),
        "the kernel runs on"
    );
    kernel.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = kernel.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{log}");
}

/// One case of the adapters' table: a step on a topic of `adapter`, the step's `procos.*`
/// extension properties, the instance's variables, and what must come of it.
struct Case {
    what: &'static str,
    adapter: &'static str,
    properties: Vec<(&'static str, String)>,
    variables: Value,
    /// Each must be in the incident's message (or, for a step that must pass, `Ok`).
    expect: Result<(), Vec<&'static str>>,
}

fn case(
    what: &'static str,
    adapter: &'static str,
    properties: &[(&'static str, &str)],
    variables: Value,
    expect: Result<(), Vec<&'static str>>,
) -> Case {
    Case {
        what,
        adapter,
        properties: properties
            .iter()
            .map(|(n, v)| (*n, (*v).to_owned()))
            .collect(),
        variables,
        expect,
    }
}

/// start → one external task on `topic` with `properties` → end.
fn one_step(key: &str, topic: &str, properties: &[(&str, String)]) -> String {
    let properties = support::procos_properties(properties);
    support::bpmn(
        key,
        "",
        &format!(
            "<bpmn:startEvent id=\"start\"/>\n<bpmn:serviceTask id=\"step\" camunda:type=\"external\" camunda:topic=\"{topic}\"><bpmn:extensionElements><camunda:properties>{properties}</camunda:properties></bpmn:extensionElements></bpmn:serviceTask>\n<bpmn:endEvent id=\"end\"/>\n<bpmn:sequenceFlow id=\"f1\" sourceRef=\"start\" targetRef=\"step\"/>\n<bpmn:sequenceFlow id=\"f2\" sourceRef=\"step\" targetRef=\"end\"/>"
        ),
    )
}

fn topic(adapter: &str, settings: Value) -> TopicConfig {
    let mut topic = TopicConfig::new(adapter);
    topic.settings = serde_json::from_value(settings).unwrap();
    // The first failure is the incident: what a person would see, without waiting out retries.
    topic.retries = 1;
    topic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_each_adapter_ends_in_an_incident_naming_it() {
    let client = support::engine();
    let server = Server::start(|_, _| Reply::json(200, &json!({"ok": true})));
    let ten_mb = "x".repeat(10_000_000);
    let cases = vec![
        case(
            "a variable of the wrong type",
            "python",
            &[("script", "outputs['y'] = inputs['n'] + 1")],
            json!({"n": "seven"}),
            Err(vec!["TypeError"]),
        ),
        case(
            "a missing variable",
            "python",
            &[("script", "outputs['y'] = inputs['amount']")],
            json!({}),
            Err(vec!["KeyError", "amount"]),
        ),
        case(
            "a setting of the wrong type",
            "python",
            &[("script", "outputs['y'] = 1"), ("timeout", "soon")],
            json!({}),
            Err(vec!["procos.timeout"]),
        ),
        case(
            "a script that writes 1 GB to stdout",
            "python",
            &[(
                "script",
                "import sys; c = 'x' * (1 << 20); [sys.stdout.write(c) for _ in range(1024)]",
            )],
            json!({}),
            Err(vec!["printed more than", "killed"]),
        ),
        case(
            "a missing variable in a URL",
            "http",
            &[("url", &format!("{}/orders/{{{{orderId}}}}", server.url("")))],
            json!({}),
            Err(vec!["orderId"]),
        ),
        case(
            "headers that are no JSON",
            "http",
            &[("url", &server.url("/x")), ("headers", "{not json")],
            json!({}),
            Err(vec!["procos.headers"]),
        ),
        case(
            "a command that is no JSON",
            "docker",
            &[("command", "[\"echo\", ")],
            json!({}),
            Err(vec!["procos.command"]),
        ),
        case(
            "a schema that is no JSON",
            "llm",
            &[("schema", "{\"type\": ")],
            json!({}),
            Err(vec!["procos.schema"]),
        ),
        case(
            "an input Scilab cannot take",
            "scilab",
            &[("script", "y = 1")],
            json!({"m": {"a": 1}}),
            Err(vec!["`m`", "Scilab"]),
        ),
        case(
            "an operation that does not exist",
            "engine",
            &[("operation", "explode")],
            json!({}),
            Err(vec!["explode"]),
        ),
        case(
            "a 10 MB variable",
            "echo",
            &[],
            json!({"document": ten_mb}),
            Ok(()),
        ),
    ];
    let settings = |adapter: &str| match adapter {
        "http" => json!({"allow": [format!("127.0.0.1:{}", server.port)]}),
        "docker" => json!({"image": "procos/python-sandbox:latest"}),
        "llm" => json!({"base_url": support::llm_url(), "model": "smollm2", "prompt": "hi"}),
        "scilab" => json!({"inputs": ["m"]}),
        "engine" => json!({"processes": ["none-*"]}),
        // One task each: containers kept warm for more would only cost the suite.
        "python" => json!({"warm": 0}),
        _ => json!({}),
    };
    let mut topics = Vec::new();
    let mut runs = Vec::new();
    for case in &cases {
        let topic_name = support::unique(&format!("bad-{}", case.adapter));
        let key = support::unique("bad-input");
        support::deploy(
            &client,
            &format!("{key}.bpmn"),
            &one_step(&key, &topic_name, &case.properties),
        )
        .await;
        topics.push((topic_name, topic(case.adapter, settings(case.adapter))));
        runs.push(key);
    }
    let table: Vec<(&str, TopicConfig)> = topics
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let (stop, worker) = support::start_worker(&client, support::topics(&table));
    let mut instances = Vec::new();
    for (case, key) in cases.iter().zip(&runs) {
        let Value::Object(variables) = &case.variables else {
            unreachable!()
        };
        let variables: Variables = variables
            .iter()
            .map(|(name, value)| (name.clone(), Variable::from_json(value.clone())))
            .collect();
        instances.push(support::start(&client, key, variables).await);
    }
    let mut failures = Vec::new();
    for (case, instance) in cases.iter().zip(&instances) {
        let settled = support::settle(&client, instance, Duration::from_secs(180)).await;
        match (&case.expect, settled) {
            (Ok(()), Ok(_)) => {}
            (Err(words), Err(message)) if words.iter().all(|w| message.contains(w)) => {
                eprintln!("bad input, {}: {message}", case.what);
            }
            (expect, got) => failures.push(format!(
                "{} ({}): expected {expect:?}, got {:?}",
                case.what,
                case.adapter,
                got.map(|v| v.keys().cloned().collect::<Vec<_>>())
            )),
        }
    }
    // The 10 MB variable came back whole (the engine keeps text that long as a String object,
    // whose serialized value is the JSON string).
    let echoed = support::variable_data(&client, instances.last().unwrap(), "document").await;
    let echoed: String = serde_json::from_str(&echoed).unwrap_or(echoed);
    assert_eq!(echoed, ten_mb);
    assert!(!worker.is_finished(), "the worker runs on");
    stop.cancel();
    worker.await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
