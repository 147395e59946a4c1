//! `procos-tde`, ProcOS's task executor (`bpmn/init/procos-tde.bpmn`), called the way the
//! "ProcOS: Task" element template calls it, against the real engine and the real SmolLM2. Each
//! test serves its own `llm` and `echo` topics, so that no other test's worker takes its tasks.
//! The small model's words are never asserted: the settings force the answers a test needs
//! (`procos.choices` with one choice), and the loop's ends are what is checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use camunda_client::{EngineClient, HistoricProcessInstanceQuery, Variable, Variables};
use procos_worker::TopicConfig;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support;

/// The task executor, deployed as the kernel deploys the init directory.
async fn deploy_tde(client: &EngineClient) {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bpmn/init/procos-tde.bpmn");
    let report = procos_kernel::deploy_files(client, &[file]).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A test's own topics: `llm` as the default fleet serves it, and `echo`.
struct Topics {
    llm: String,
    echo: String,
    stop: CancellationToken,
    worker: JoinHandle<()>,
}

impl Topics {
    fn serve(client: &EngineClient) -> Self {
        let llm = support::unique("tde-llm");
        let echo = support::unique("tde-echo");
        let (stop, worker) = support::start_worker_with(
            client,
            support::quick_worker_config(),
            support::topics(&[
                (&llm, crate::llm::default_fleet_llm_topic()),
                (&echo, TopicConfig::new("echo")),
            ]),
        );
        Self {
            llm,
            echo,
            stop,
            worker,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.worker.await.unwrap();
    }
}

/// A caller: start → the call activity `task` (what the "ProcOS: Task" template writes: the
/// inputs as `camunda:in` source expressions, the outputs as `camunda:out`) → `finished`; each
/// of the executor's BPMN errors caught on the call activity and routed to its own end.
fn caller(key: &str, inputs: &[(&str, &str)]) -> String {
    let ins: String = inputs
        .iter()
        .map(|(target, value)| {
            format!(
                r#"<camunda:in sourceExpression="{}" target="{target}"/>"#,
                support::xml_escape(value)
            )
        })
        .collect();
    let errors = ["TDE_EXHAUSTED", "TDE_TIMEOUT", "TDE_GAVE_UP", "TDE_INVALID"];
    let declared: String = errors
        .iter()
        .map(|code| format!(r#"<bpmn:error id="{code}" errorCode="{code}"/>"#))
        .collect();
    let caught: String = errors
        .iter()
        .map(|code| {
            format!(
                r#"<bpmn:boundaryEvent id="caught-{code}" attachedToRef="task">
      <bpmn:errorEventDefinition errorRef="{code}" camunda:errorMessageVariable="tdeMessage"/>
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="to-{code}" sourceRef="caught-{code}" targetRef="ended-{code}"/>
    <bpmn:endEvent id="ended-{code}"/>"#
            )
        })
        .collect();
    support::bpmn(
        key,
        &declared,
        &format!(
            r#"<bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="task"/>
    <bpmn:callActivity id="task" calledElement="procos-tde" camunda:modelerTemplate="io.procos.task">
      <bpmn:extensionElements>
        <camunda:in variables="all"/>
        {ins}
        <camunda:out source="result" target="result"/>
        <camunda:out source="confidence" target="confidence"/>
        <camunda:out source="iterations" target="iterations"/>
        <camunda:out source="rounds" target="trace"/>
      </bpmn:extensionElements>
    </bpmn:callActivity>
    <bpmn:sequenceFlow id="f2" sourceRef="task" targetRef="finished"/>
    <bpmn:endEvent id="finished"/>
    {caught}"#
        ),
    )
}

/// How one run ended: the caller's variables, the end it reached, and the executor's instance.
struct Run {
    vars: Variables,
    end: String,
    tde: String,
}

/// Deploys a caller with `inputs`, starts it with `variables` and waits for its end.
async fn run(
    client: &EngineClient,
    inputs: &[(&str, &str)],
    variables: Variables,
    within: Duration,
) -> Run {
    let key = support::unique("tde-caller");
    support::deploy(client, &format!("{key}.bpmn"), &caller(&key, inputs)).await;
    let instance = support::start(client, &key, variables).await;
    let vars = match support::settle(client, &instance, within).await {
        Ok(vars) => vars,
        // The caller's incident points at the executor's, which says what happened.
        Err(_) => panic!(
            "an incident: {:?}",
            client.incidents(None).await.unwrap_or_default()
        ),
    };
    let passed = support::passed(client, &instance).await;
    let end = passed
        .iter()
        .find(|a| *a == "finished" || a.starts_with("ended-"))
        .cloned()
        .unwrap_or_else(|| panic!("an end: {passed:?}"));
    let called = client
        .historic_process_instances(&HistoricProcessInstanceQuery {
            super_process_instance_id: Some(instance.clone()),
            ..HistoricProcessInstanceQuery::default()
        })
        .await
        .unwrap();
    let [tde] = &called[..] else {
        panic!("one executor instance: {called:?}")
    };
    assert_ne!(
        tde.state, "ACTIVE",
        "nothing of the executor is left running"
    );
    assert!(
        client.external_tasks(&tde.id).await.unwrap().is_empty(),
        "no external task of the executor is left"
    );
    Run {
        vars,
        end,
        tde: tde.id.clone(),
    }
}

/// How often the executor instance passed `activity`, from its history.
async fn times(client: &EngineClient, tde: &str, activity: &str) -> usize {
    support::passed(client, tde)
        .await
        .iter()
        .filter(|a| *a == activity)
        .count()
}

fn json_of(vars: &Variables, name: &str) -> Value {
    vars.get(name)
        .unwrap_or_else(|| panic!("`{name}` in {:?}", vars.keys()))
        .to_json()
}

/// The caller's inputs for a probabilistic run over one `echo` step.
fn probabilistic<'a>(topics: &'a Topics, steps: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("mode", "probabilistic"),
        ("goal", "Repeat the word hello."),
        ("steps", steps),
        ("llmTopic", &topics.llm),
        (
            "llmSettings",
            r#"{"max_tokens": 20, "seed": 7, "temperature": 0.8}"#,
        ),
    ]
}

fn echo_steps(topics: &Topics) -> String {
    json!({"repeat": {"topic": topics.echo, "description": "hands its inputs back"}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deterministic_task_runs_one_step_with_the_callers_settings() {
    let client = support::engine();
    deploy_tde(&client).await;
    let topics = Topics::serve(&client);
    let settings = json!({"prompt": "Say hello to {{name}}.", "max_tokens": 4}).to_string();
    let done = run(
        &client,
        &[
            ("mode", "deterministic"),
            ("topic", &topics.llm),
            ("settings", &settings),
        ],
        [("name".to_owned(), Variable::String("ProcOS".into()))].into(),
        Duration::from_secs(120),
    )
    .await;
    let llm = topics.llm.clone();
    topics.stop().await;
    assert_eq!(done.end, "finished");
    let result = json_of(&done.vars, "result");
    assert_eq!(
        result["finish_reason"], "length",
        "max_tokens = 4: {result}"
    );
    assert!(result["answer"].as_str().is_some_and(|a| !a.is_empty()));
    assert_eq!(json_of(&done.vars, "iterations"), 1);
    assert_eq!(json_of(&done.vars, "confidence"), 1.0);
    let trace = json_of(&done.vars, "trace");
    assert_eq!(trace, json!([{"round": 1, "topic": llm}]));
    assert_eq!(times(&client, &done.tde, "run-step").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probabilistic_task_ends_done_when_the_evaluation_can_only_say_done() {
    let client = support::engine();
    deploy_tde(&client).await;
    let topics = Topics::serve(&client);
    let steps = echo_steps(&topics);
    let mut inputs = probabilistic(&topics, &steps);
    inputs.push(("evaluateChoices", "done"));
    let done = run(
        &client,
        &inputs,
        [("payload".to_owned(), Variable::Integer(42))].into(),
        Duration::from_secs(180),
    )
    .await;
    topics.stop().await;
    assert_eq!(done.end, "finished");
    assert_eq!(json_of(&done.vars, "iterations"), 1);
    assert_eq!(json_of(&done.vars, "confidence"), 1.0);
    assert_eq!(
        json_of(&done.vars, "result")["payload"],
        42,
        "the echo step's outputs"
    );
    let trace = json_of(&done.vars, "trace");
    assert_eq!(
        trace,
        json!([{"round": 1, "action": "repeat", "verdict": "done", "confidence": 1.0}])
    );
    for activity in ["analyze", "act", "evaluate"] {
        assert_eq!(times(&client, &done.tde, activity).await, 1, "{activity}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probabilistic_task_is_exhausted_after_exactly_max_iterations_rounds() {
    let client = support::engine();
    deploy_tde(&client).await;
    let topics = Topics::serve(&client);
    let steps = echo_steps(&topics);
    let mut inputs = probabilistic(&topics, &steps);
    inputs.extend([("evaluateChoices", "continue"), ("maxIterations", "3")]);
    let exhausted = run(&client, &inputs, Variables::new(), Duration::from_secs(240)).await;
    topics.stop().await;
    assert_eq!(exhausted.end, "ended-TDE_EXHAUSTED");
    let message = json_of(&exhausted.vars, "tdeMessage");
    assert_eq!(
        message, "the goal was not reached in 3 rounds (maxIterations = 3)",
        "the error's message names the rounds"
    );
    for activity in ["analyze", "act", "evaluate"] {
        assert_eq!(
            times(&client, &exhausted.tde, activity).await,
            3,
            "{activity} ran once a round"
        );
    }
    let rounds = support::variable_data(&client, &exhausted.tde, "rounds").await;
    let rounds: Value = serde_json::from_str(&rounds).unwrap();
    let verdicts: Vec<&Value> = rounds
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["verdict"])
        .collect();
    assert_eq!(verdicts, ["continue", "continue", "continue"], "{rounds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probabilistic_task_times_out_when_its_budget_is_spent() {
    let client = support::engine();
    deploy_tde(&client).await;
    let topics = Topics::serve(&client);
    let steps = echo_steps(&topics);
    let mut inputs = probabilistic(&topics, &steps);
    inputs.extend([
        ("evaluateChoices", "continue"),
        ("maxIterations", "1000"),
        ("timeBudget", "PT2S"),
    ]);
    // The engine's job executor fires a due timer within its acquisition interval (at most a
    // minute when idle), so the end is awaited for longer than the budget.
    let timed_out = run(&client, &inputs, Variables::new(), Duration::from_secs(150)).await;
    topics.stop().await;
    assert_eq!(timed_out.end, "ended-TDE_TIMEOUT");
    let message = json_of(&timed_out.vars, "tdeMessage");
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.starts_with("the time budget PT2S ran out after")),
        "{message}"
    );
    assert!(
        times(&client, &timed_out.tde, "budget-spent").await == 1,
        "the timer ended it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_mode_is_a_bpmn_error_naming_it() {
    let client = support::engine();
    deploy_tde(&client).await;
    let invalid = run(
        &client,
        &[("mode", "creative")],
        Variables::new(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(invalid.end, "ended-TDE_INVALID");
    assert_eq!(
        json_of(&invalid.vars, "tdeMessage"),
        "mode is creative: it must be deterministic or probabilistic"
    );
}

/// The operator's policy holds for what the executor runs, as for any task: a model outside the
/// topic's `policy.models` is an incident in the executor, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_the_executor_runs_is_held_to_the_topics_policy() {
    let client = support::engine();
    deploy_tde(&client).await;
    let topics = Topics::serve(&client);
    let settings = json!({"model": "gpt-4o", "prompt": "Hello"}).to_string();
    let key = support::unique("tde-caller");
    let xml = caller(
        &key,
        &[
            ("mode", "deterministic"),
            ("topic", &topics.llm),
            ("settings", &settings),
        ],
    );
    support::deploy(&client, &format!("{key}.bpmn"), &xml).await;
    let instance = support::start(&client, &key, Variables::new()).await;
    let message = support::assert_eventually(
        "the executor's incident",
        Duration::from_secs(120),
        || async {
            let called = client
                .historic_process_instances(&HistoricProcessInstanceQuery {
                    super_process_instance_id: Some(instance.clone()),
                    ..HistoricProcessInstanceQuery::default()
                })
                .await
                .ok()?;
            let tde = called.first()?;
            client
                .incidents(Some(&tde.id))
                .await
                .ok()?
                .into_iter()
                .find_map(|i| i.incident_message)
        },
    )
    .await;
    topics.stop().await;
    assert!(
        message.contains("`gpt-4o` is not allowed"),
        "the topic's policy.models: {message}"
    );
}
