//! The runnable examples in `bpmn/examples`, one per adapter: each model is deployed from its
//! file, served by a `procos worker` with `bpmn/examples/procos.toml`, and run to completion with
//! the results a process engineer would see in Cockpit. The models are also checked against the
//! element templates they were made with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use camunda_client::{EngineClient, Variable, Variables};
use serde_json::{Value, json};

use crate::support::{self, ProcosProcess};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples_dir() -> PathBuf {
    repository().join("bpmn/examples")
}

fn openai_url() -> String {
    support::llm_url().to_owned()
}

/// `bpmn/examples/procos.toml` cut down to `topics`, each fetching only the tasks of
/// `processes`, and pointed at the test run's model server: the shared engine runs every test
/// at once, and no worker may take another test's tasks.
fn worker_config(topics: &[String], processes: &[&str]) -> String {
    let text = std::fs::read_to_string(examples_dir().join("procos.toml")).unwrap();
    let mut config: toml::Table = toml::from_str(&text).unwrap();
    let worker = config
        .entry("worker")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .unwrap();
    worker.insert("listen".into(), "off".into());
    worker.insert("grace_period".into(), "5s".into());
    // The examples run on the default fleet's topics (the repository's procos.toml).
    let fleet: toml::Table =
        toml::from_str(&std::fs::read_to_string(repository().join("procos.toml")).unwrap())
            .unwrap();
    let Some(toml::Value::Table(mut all)) = fleet.get("topics").cloned() else {
        panic!("procos.toml has no [topics]");
    };
    if let Some(toml::Value::Table(own)) = config.remove("topics") {
        all.extend(own);
    }
    let mut served = toml::Table::new();
    for topic in topics {
        let Some(toml::Value::Table(mut entry)) = all.get(topic).cloned() else {
            panic!("bpmn/examples/procos.toml has no [topics.{topic}], which the example uses");
        };
        entry.insert(
            "process_definition_keys".into(),
            toml::Value::Array(processes.iter().map(|p| (*p).into()).collect()),
        );
        // One attempt: a failing run shows at once as an incident with its message.
        entry.insert("retries".into(), toml::Value::Integer(1));
        if entry.get("adapter").and_then(toml::Value::as_str) == Some("llm") {
            // The fleet's model servers, pointed at the tests' own.
            let settings = entry
                .entry("settings")
                .or_insert_with(|| toml::Table::new().into())
                .as_table_mut()
                .unwrap();
            settings.insert("base_url".into(), openai_url().into());
            if let Some(toml::Value::Table(providers)) = settings.get_mut("providers")
                && let Some(toml::Value::Table(ollama)) = providers.get_mut("ollama")
            {
                ollama.insert("base_url".into(), support::ollama_url().into());
            }
        }
        served.insert(topic.clone(), entry.into());
    }
    config.insert("topics".into(), served.into());
    toml::to_string(&config).unwrap()
}

/// Deploys `bpmn/examples/FILE` (defining `process`) as `procos deploy` does, and starts a worker
/// for the topics it uses.
async fn deploy_and_serve(file: &str, process: &str) -> (EngineClient, ProcosProcess) {
    let client = support::engine();
    let report = procos_kernel::deploy_files(&client, &[examples_dir().join(file)]).await;
    assert!(report.problems.is_empty(), "{file}: {:?}", report.problems);
    assert!(
        report.without_history_ttl.is_empty(),
        "{file} sets camunda:historyTimeToLive"
    );
    let topics: Vec<String> = report.topics.into_iter().flat_map(|(_, t)| t).collect();
    assert!(!topics.is_empty(), "{file} has external tasks");
    let worker = ProcosProcess::spawn(
        &support::engine_url(),
        &support::unique(process),
        &worker_config(&topics, &[process]),
    );
    (client, worker)
}

async fn stop(worker: ProcosProcess) {
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = worker.wait(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "the worker stops cleanly: {status}\n{log}"
    );
}

/// The variables of `instance` once it completed; an incident fails the test with its message.
async fn completed(client: &EngineClient, instance: &str) -> Variables {
    support::settle(client, instance, Duration::from_secs(180))
        .await
        .unwrap_or_else(|message| panic!("the instance ended in an incident: {message}"))
}

/// Whether `path` (from [`support::passed`]) went through every one of `ids`.
fn through(path: &[String], ids: &[&str]) -> bool {
    ids.iter().all(|id| path.iter().any(|p| p == id))
}

fn vars(entries: &[(&str, Variable)]) -> Variables {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn number(variable: &Variable) -> f64 {
    variable
        .to_json()
        .as_f64()
        .unwrap_or_else(|| panic!("a number: {variable:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_prices_an_order_and_the_gateway_routes_on_the_total() {
    let process = "example-order-pricing";
    let (client, worker) = deploy_and_serve("python-order-pricing.bpmn", process).await;
    let order = |items: Value| vars(&[("items", Variable::Json(items))]);
    let small = support::start(
        &client,
        process,
        order(json!([
            {"sku": "A-1", "price": 12.5, "quantity": 4},
            {"sku": "B-2", "price": 3, "quantity": 10}
        ])),
    )
    .await;
    let large = support::start(
        &client,
        process,
        order(json!([{"sku": "C-3", "price": 250, "quantity": 5}])),
    )
    .await;
    let empty = support::start(&client, process, order(json!([]))).await;

    let small_vars = completed(&client, &small).await;
    assert_eq!(small_vars["total"], Variable::Double(80.0));
    assert_eq!(small_vars["quantity"], Variable::Integer(14));
    assert!(!small_vars.contains_key("discount"), "{small_vars:?}");
    let small_path = support::passed(&client, &small).await;
    assert!(
        through(&small_path, &["order-priced"]) && !through(&small_path, &["apply-discount"]),
        "below 1000 the discount is skipped: {small_path:?}"
    );

    let large_vars = completed(&client, &large).await;
    assert_eq!(large_vars["discount"], Variable::Double(62.5));
    assert_eq!(
        large_vars["total"],
        Variable::Double(1187.5),
        "1250 less 5 %"
    );
    assert_eq!(large_vars["quantity"], Variable::Integer(5));
    let large_path = support::passed(&client, &large).await;
    assert!(
        through(&large_path, &["apply-discount", "order-priced"]),
        "{large_path:?}"
    );

    let empty_vars = completed(&client, &empty).await;
    assert_eq!(
        empty_vars["rejection"],
        Variable::String("the order has no items".into())
    );
    assert!(!empty_vars.contains_key("total"), "{empty_vars:?}");
    let empty_path = support::passed(&client, &empty).await;
    assert!(
        through(&empty_path, &["empty-order", "order-rejected"]),
        "the boundary event caught EMPTY_ORDER: {empty_path:?}"
    );
    stop(worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_counts_words_in_a_sandbox_container() {
    let process = "example-word-count";
    let (client, worker) = deploy_and_serve("docker-word-count.bpmn", process).await;
    let text = |t: &str| vars(&[("text", Variable::String(t.into()))]);
    let counted = support::start(
        &client,
        process,
        text("The quick brown fox jumps over the lazy dog. The dog sleeps."),
    )
    .await;
    let nothing = support::start(&client, process, text("  ... ?! ")).await;

    let counted_vars = completed(&client, &counted).await;
    assert_eq!(counted_vars["wordCount"], Variable::Integer(12));
    assert_eq!(counted_vars["distinctWords"], Variable::Integer(9));
    assert_eq!(
        counted_vars["mostCommonWord"],
        Variable::String("the".into())
    );
    assert_eq!(counted_vars["mostCommonCount"], Variable::Integer(3));
    assert!(through(
        &support::passed(&client, &counted).await,
        &["words-counted"]
    ));

    let nothing_vars = completed(&client, &nothing).await;
    assert_eq!(
        nothing_vars["rejection"],
        Variable::String("the text has no words".into())
    );
    let nothing_path = support::passed(&client, &nothing).await;
    assert!(
        through(&nothing_path, &["empty-text", "nothing-to-count"]),
        "exit code 3 became EMPTY_TEXT, caught by the boundary event: {nothing_path:?}"
    );
    stop(worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scilab_solves_a_linear_system_and_refuses_a_singular_one() {
    let process = "example-linear-system";
    let (client, worker) = deploy_and_serve("scilab-linear-system.bpmn", process).await;
    let system = |a: Value, b: Value| {
        vars(&[
            ("coefficients", Variable::Json(a)),
            ("constants", Variable::Json(b)),
        ])
    };
    let regular = support::start(
        &client,
        process,
        system(
            json!([[2, 1, -1], [-3, -1, 2], [-2, 1, 2]]),
            json!([8, -11, -3]),
        ),
    )
    .await;
    let singular = support::start(
        &client,
        process,
        system(json!([[1, 2], [2, 4]]), json!([3, 6])),
    )
    .await;

    let solved = completed(&client, &regular).await;
    assert!(
        (number(&solved["determinant"]) + 1.0).abs() < 1e-9,
        "{:?}",
        solved["determinant"]
    );
    let solution: Vec<f64> = solved["solution"]
        .to_json()
        .as_array()
        .unwrap_or_else(|| panic!("a vector: {:?}", solved["solution"]))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(solution.len(), 3, "{solution:?}");
    for (x, expected) in solution.iter().zip([2.0, 3.0, -1.0]) {
        assert!((x - expected).abs() < 1e-9, "x = (2, 3, -1): {solution:?}");
    }
    assert!(through(
        &support::passed(&client, &regular).await,
        &["solved"]
    ));

    let refused = completed(&client, &singular).await;
    assert_eq!(
        refused["rejection"],
        Variable::String("the coefficient matrix is singular: no unique solution".into())
    );
    let refused_path = support::passed(&client, &singular).await;
    assert!(
        through(&refused_path, &["singular", "no-unique-solution"]),
        "{refused_path:?}"
    );
    stop(worker).await;
}

/// The model is small and often wrong: this asserts the answer's shape and that the gateway
/// follows it, never what the model judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_triages_a_ticket_into_the_schema_and_the_gateway_follows_the_answer() {
    let process = "example-ticket-triage";
    let (client, worker) = deploy_and_serve("llm-ticket-triage.bpmn", process).await;
    let instance = support::start(
        &client,
        process,
        vars(&[(
            "ticket",
            Variable::String(
                "I was charged twice for order 1042 and now I cannot pay for my new order. Please help!"
                    .into(),
            ),
        )]),
    )
    .await;
    let result = completed(&client, &instance).await;
    let answer = result["answer"].to_json();
    let fields = answer
        .as_object()
        .unwrap_or_else(|| panic!("an object: {answer}"));
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["category", "urgent"], "{answer}");
    let urgent = answer["urgent"]
        .as_bool()
        .unwrap_or_else(|| panic!("urgent is a boolean: {answer}"));
    assert!(
        ["billing", "technical", "other"].contains(&answer["category"].as_str().unwrap_or("")),
        "{answer}"
    );
    assert_eq!(result["model"], Variable::String("smollm2".into()));
    assert!(result["usage"].to_json()["total_tokens"].as_u64().unwrap() > 0);
    let path = support::passed(&client, &instance).await;
    let expected = if urgent { "escalated" } else { "queued" };
    assert!(
        through(&path, &[expected]),
        "urgent = {urgent} leads to {expected}: {path:?}"
    );
    stop(worker).await;
}

/// Either the vote has a winner, and the gateway routes on it, or it has none, and the boundary
/// event takes the review; which one depends on the small model, the routing does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_votes_on_a_review_and_the_model_routes_the_outcome() {
    let process = "example-review-sentiment";
    let (client, worker) = deploy_and_serve("llm-review-vote.bpmn", process).await;
    let instance = support::start(
        &client,
        process,
        vars(&[(
            "review",
            Variable::String(
                "The kettle stopped working after two days and nobody answers my emails.".into(),
            ),
        )]),
    )
    .await;
    let result = completed(&client, &instance).await;
    let samples = result["samples"].to_json().as_u64().unwrap();
    assert!(
        (3..=5).contains(&samples),
        "stops early or at the budget: {samples}"
    );
    let counted: u64 = result["distribution"]
        .to_json()
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(counted, samples, "every sample is in the distribution");
    let confidence = number(&result["confidence"]);
    let path = support::passed(&client, &instance).await;
    if through(&path, &["no-consensus"]) {
        assert!(confidence < 0.6, "{confidence}");
        assert!(through(&path, &["left-for-a-person"]), "{path:?}");
    } else {
        assert!(confidence >= 0.6, "{confidence}");
        let outcome = result["outcome"].to_json();
        let sentiment = outcome["sentiment"].as_str().unwrap_or("");
        assert!(
            ["positive", "negative", "neutral"].contains(&sentiment),
            "schema-shaped: {outcome}"
        );
        let expected = if sentiment == "negative" {
            "customer-care"
        } else {
            "recorded"
        };
        assert!(
            through(&path, &[expected]),
            "{sentiment} leads to {expected}: {path:?}"
        );
    }
    stop(worker).await;
}

/// The task executor's example: the small model chooses its steps, so the run may reach the
/// goal or end in one of the executor's BPMN errors; every end is checked against the rounds
/// the executor recorded and the steps it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reaches_a_goal_in_rounds_the_small_model_chooses() {
    let process = "example-word-goal";
    let client = support::engine();
    let files = [
        repository().join("bpmn/init/procos-tde.bpmn"),
        examples_dir().join("tde-word-goal.bpmn"),
    ];
    let report = procos_kernel::deploy_files(&client, &files).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // The steps' topics are in the example's `steps`; the executor's own are `llm`.
    let topics = ["llm".to_owned(), "python".to_owned()];
    let worker = ProcosProcess::spawn(
        &support::engine_url(),
        &support::unique(process),
        &worker_config(&topics, &[process, "procos-tde"]),
    );
    let text = "the quick brown fox jumps over the lazy dog";
    let instance = support::start(
        &client,
        process,
        vars(&[("text", Variable::String(text.into()))]),
    )
    .await;
    let result = completed(&client, &instance).await;
    let path = support::passed(&client, &instance).await;
    let called = client
        .historic_process_instances(&camunda_client::HistoricProcessInstanceQuery {
            super_process_instance_id: Some(instance.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let tde = &called[0].id;
    let tde_path = support::passed(&client, tde).await;
    let rounds = tde_path.iter().filter(|a| *a == "analyze").count();
    assert!((1..=3).contains(&rounds), "{tde_path:?}");
    assert_eq!(
        tde_path.iter().filter(|a| *a == "act").count(),
        rounds,
        "one step a round"
    );
    if through(&path, &["goal-reached"]) {
        let trace = result["trace"].to_json();
        let trace = trace.as_array().unwrap();
        assert_eq!(trace.len(), rounds, "{trace:?}");
        assert!(
            trace
                .iter()
                .all(|r| r["action"] == "count_words" || r["action"] == "summarise"),
            "only the listed steps: {trace:?}"
        );
        let last = trace.last().unwrap();
        assert_eq!(last["verdict"], "done");
        assert_eq!(
            number(&result["iterations"]),
            rounds as f64,
            "iterations counts the rounds"
        );
        let outputs = result["result"].to_json();
        if last["action"] == "count_words" {
            assert_eq!(outputs["words"], 9, "the Python step counted: {outputs}");
        } else {
            assert!(outputs["answer"].is_string(), "the summary: {outputs}");
        }
    } else if through(&path, &["not-reached-exhausted"]) {
        assert_eq!(rounds, 3, "exhausted after maxIterations rounds");
    } else {
        assert!(
            through(&path, &["not-reached-gave-up"]),
            "one of the ends: {path:?}"
        );
    }
    stop(worker).await;
}

/// The library's process keys (its file names).
fn library_keys() -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(repository().join("bpmn/library"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    keys.sort();
    keys
}

/// Deploys the library, `extra` models and the example `file` (defining `process`), and starts a
/// worker for `topics` that fetches the tasks of the example and of the library, its
/// workspaces under `workspaces`.
async fn serve_library_example(
    file: &str,
    process: &str,
    extra: &[PathBuf],
    topics: &[&str],
    workspaces: &std::path::Path,
) -> (EngineClient, ProcosProcess) {
    let client = support::engine();
    let mut files: Vec<PathBuf> = library_keys()
        .iter()
        .map(|k| repository().join(format!("bpmn/library/{k}.bpmn")))
        .collect();
    files.extend_from_slice(extra);
    files.push(examples_dir().join(file));
    let report = procos_kernel::deploy_files(&client, &files).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let keys = library_keys();
    let mut processes: Vec<&str> = keys.iter().map(String::as_str).collect();
    processes.push(process);
    processes.push("procos-hello");
    let topics: Vec<String> = topics.iter().map(|&t| t.to_owned()).collect();
    let mut config: toml::Table = toml::from_str(&worker_config(&topics, &processes)).unwrap();
    config["worker"]
        .as_table_mut()
        .unwrap()
        .insert("workspace_dir".into(), workspaces.to_str().unwrap().into());
    let worker = ProcosProcess::spawn(
        &support::engine_url(),
        &support::unique(process),
        &toml::to_string(&config).unwrap(),
    );
    (client, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_keeps_a_note_in_the_workspace() {
    let process = "example-file-notes";
    let workspaces = tempfile::tempdir().unwrap();
    let (client, worker) = serve_library_example(
        "library-file-notes.bpmn",
        process,
        &[],
        &["workspace"],
        workspaces.path(),
    )
    .await;
    let instance = support::start(
        &client,
        process,
        vars(&[("note", Variable::String("buy milk".into()))]),
    )
    .await;
    let result = completed(&client, &instance).await;
    assert_eq!(result["noteRead"].to_json(), "buy milk (reviewed)");
    let listed = result["notesListed"].to_json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["today.txt"],
        "the copy moved out to archive.txt: {listed}"
    );
    assert!(number(&result["usedBytes"]) > 0.0);
    assert_eq!(number(&result["limitBytes"]), 64.0 * 1024.0 * 1024.0);
    stop(worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_starts_a_process_and_watches_the_engine() {
    let process = "example-process-control";
    let workspaces = tempfile::tempdir().unwrap();
    let (client, worker) = serve_library_example(
        "library-process-control.bpmn",
        process,
        &[repository().join("bpmn/init/hello.bpmn")],
        &["engine", "echo"],
        workspaces.path(),
    )
    .await;
    let greeting = support::unique("from the library");
    let instance = support::start(
        &client,
        process,
        vars(&[("greeting", Variable::String(greeting.clone()))]),
    )
    .await;
    let result = completed(&client, &instance).await;
    assert_eq!(result["helloState"].to_json(), "COMPLETED");
    assert_eq!(
        result["helloVariables"].to_json()["greeting"],
        greeting.as_str(),
        "procos-hello ran with the greeting"
    );
    let hello = result["helloId"].to_json();
    let still: Vec<Value> = result["stillRunning"].to_json().as_array().unwrap().clone();
    assert!(
        still.iter().all(|i| i["id"] != hello),
        "the ended one is not running: {still:?}"
    );
    assert_eq!(
        result["engineVersion"].to_json(),
        client.version().await.unwrap().as_str()
    );
    assert!(result["engineMetrics"].to_json()["activity-instance-start"].as_u64() > Some(0));
    assert!(result["topics"].to_json().is_array());
    stop(worker).await;
}

/// The value of attribute `name` in the element text `tag`.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[start..start + tag[start..].find('"')?])
}

/// Each service task in the examples is what its Camunda Modeler template makes: the template's
/// id and version, an external task, and only the template's input parameters, the required
/// ones filled. And every topic in bpmn/examples/procos.toml serves some example.
#[test]
fn the_examples_are_made_with_the_element_templates() {
    let mut templates = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(repository().join("bpmn/element-templates")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let list: Vec<Value> = serde_json::from_str(&text).unwrap();
        for template in list {
            templates.insert(template["id"].as_str().unwrap().to_owned(), template);
        }
    }
    let mut used_topics = std::collections::BTreeSet::new();
    let mut models = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bpmn") {
            continue;
        }
        models += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let xml = std::fs::read_to_string(&path).unwrap();
        assert!(
            xml.contains(r#"modeler:executionPlatform="Camunda Platform""#)
                && xml.contains(r#"modeler:executionPlatformVersion="7.24.0""#),
            "{name} names its execution platform"
        );
        // Call activities of the "ProcOS: Task" template: its called process, its inputs
        // (`camunda:in` targets) and outputs (`camunda:out` sources), nothing else.
        let calls: Vec<&str> = xml.split("<bpmn:callActivity ").skip(1).collect();
        for call in &calls {
            let call = &call[..call.find("</bpmn:callActivity>").unwrap()];
            let tag = format!(" {}", &call[..call.find('>').unwrap()]);
            let id = attribute(&tag, "id").unwrap();
            let called = attribute(&tag, "calledElement").unwrap();
            if called != "procos-tde" {
                // A library process, called with plain camunda:in and camunda:out.
                assert!(
                    repository()
                        .join(format!("bpmn/library/{called}.bpmn"))
                        .is_file(),
                    "{name}: {id} calls `{called}`, which is no library process"
                );
                continue;
            }
            let template = &templates[attribute(&tag, "camunda:modelerTemplate")
                .unwrap_or_else(|| panic!("{name}: {id} uses a template"))];
            assert_eq!(
                attribute(&tag, "camunda:modelerTemplateVersion"),
                Some(template["version"].to_string().as_str()),
                "{name}: {id} has the template's version"
            );
            let offered = |binding: &str, key: &str| -> Vec<String> {
                template["properties"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["binding"]["type"] == binding)
                    .filter_map(|p| p["binding"][key].as_str().map(str::to_owned))
                    .collect()
            };
            for (element, binding, key) in [
                ("<camunda:in ", "camunda:in", "target"),
                ("<camunda:out ", "camunda:out", "source"),
            ] {
                for given in call.split(element).skip(1) {
                    let given = format!(" {}", &given[..given.find("/>").unwrap()]);
                    if let Some(name_given) = attribute(&given, key) {
                        assert!(
                            offered(binding, key).iter().any(|o| o == name_given),
                            "{name}: {id}: the template offers no {binding} {key} `{name_given}`"
                        );
                    }
                }
            }
        }
        let tasks: Vec<&str> = xml.split("<bpmn:serviceTask ").skip(1).collect();
        assert!(
            !tasks.is_empty() || !calls.is_empty(),
            "{name} has service tasks or task executor calls"
        );
        for task in tasks {
            let task = &task[..task.find("</bpmn:serviceTask>").unwrap()];
            let tag = format!(" {}", &task[..task.find('>').unwrap()]);
            let tag = tag.as_str();
            let id = attribute(tag, "id").unwrap();
            let template_id = attribute(tag, "camunda:modelerTemplate")
                .unwrap_or_else(|| panic!("{name}: {id} uses a template"));
            let template = &templates
                .get(template_id)
                .unwrap_or_else(|| panic!("{name}: {id}: no template {template_id}"));
            assert_eq!(
                attribute(tag, "camunda:modelerTemplateVersion"),
                Some(template["version"].to_string().as_str()),
                "{name}: {id} has the template's version"
            );
            assert_eq!(
                attribute(tag, "camunda:type"),
                Some("external"),
                "{name}: {id}"
            );
            used_topics.insert(attribute(tag, "camunda:topic").unwrap().to_owned());
            // Input parameters and extension properties, each only as the template offers it.
            for (binding, element) in [
                ("camunda:inputParameter", "<camunda:inputParameter name=\""),
                ("camunda:property", "<camunda:property name=\""),
            ] {
                let offered: Vec<&Value> = template["properties"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["binding"]["type"] == binding)
                    .collect();
                let given: Vec<&str> = task
                    .split(element)
                    .skip(1)
                    .map(|p| &p[..p.find('"').unwrap()])
                    .collect();
                for input in &given {
                    assert!(
                        offered.iter().any(|p| p["binding"]["name"] == *input),
                        "{name}: {id}: the template {template_id} has no {binding} `{input}`"
                    );
                }
                for property in offered {
                    if property["constraints"]["notEmpty"] == true {
                        let input = property["binding"]["name"].as_str().unwrap();
                        assert!(
                            given.contains(&input),
                            "{name}: {id}: the template requires the {binding} `{input}`"
                        );
                    }
                }
            }
        }
    }
    assert!(models >= 5, "an example per adapter, and the vote");
    let topics = |path: PathBuf| -> std::collections::BTreeSet<String> {
        let config: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        config
            .get("topics")
            .and_then(toml::Value::as_table)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    };
    let own = topics(examples_dir().join("procos.toml"));
    let fleet = topics(repository().join("procos.toml"));
    let unserved: Vec<&String> = used_topics
        .iter()
        .filter(|t| !own.contains(*t) && !fleet.contains(*t))
        .collect();
    assert!(
        unserved.is_empty(),
        "bpmn/examples/procos.toml or the fleet's procos.toml serves every example's topic: {unserved:?}"
    );
    let unused: Vec<&String> = own.difference(&used_topics).collect();
    assert!(
        unused.is_empty(),
        "bpmn/examples/procos.toml serves only the examples' topics: {unused:?}"
    );
}
