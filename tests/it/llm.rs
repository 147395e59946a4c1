//! The `llm` adapter against a real model (SmolLM2-135M) served through llama-cpp-python's
//! OpenAI-compatible server and by a real Ollama (see `support::llm_url`, `support::ollama_url`). The
//! model is small and often wrong: these tests assert structure, never wording.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use camunda_client::{Variable, Variables};
use procos_worker::TopicConfig;
use serde_json::Value;

use crate::support;

fn openai_url() -> String {
    support::llm_url().to_owned()
}

fn ollama_url() -> String {
    support::ollama_url().to_owned()
}

const YES_NO: &str = r#"{"type": "object", "required": ["answer"], "additionalProperties": false, "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}}}"#;

/// An `llm` topic from TOML settings, with `{url}` replaced by `url`.
fn llm_topic(settings: &str, url: &str) -> TopicConfig {
    let mut topic = TopicConfig::new("llm");
    topic.retries = 1;
    topic.settings = toml::from_str(&settings.replace("{url}", url)).unwrap();
    topic
}

/// Runs one instance through a worker serving `topic` with `config`; its variables, or the
/// incident message when it ends in one.
async fn run_one(config: TopicConfig, variables: Variables) -> Result<Variables, String> {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "llm").await;
    let (stop, worker) = support::start_quick_worker(&client, &topic, config);
    let instance = support::start(&client, &key, variables).await;
    let result = support::settle(&client, &instance, Duration::from_secs(120)).await;
    stop.cancel();
    worker.await.unwrap();
    result
}

fn json_of(variable: &Variable) -> Value {
    variable.to_json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_answer_reports_usage_model_latency_and_a_length_stop() {
    let config = llm_topic(
        "base_url = '{url}'\nmodel = 'smollm2'\nsystem = 'You are terse.'\nprompt = 'Say hello to {{name}}.'\nmax_tokens = 3\nseed = 1",
        &openai_url(),
    );
    let vars = run_one(
        config,
        [("name".to_owned(), Variable::String("ProcOS".into()))].into(),
    )
    .await
    .unwrap();
    assert!(
        matches!(&vars["answer"], Variable::String(s) if !s.is_empty()),
        "{:?}",
        vars["answer"]
    );
    let usage = json_of(&vars["usage"]);
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(
        vars["finish_reason"],
        Variable::String("length".into()),
        "cut at max_tokens"
    );
    assert_eq!(vars["model"], Variable::String("smollm2".into()));
    assert!(matches!(
        vars["latency_ms"],
        Variable::Integer(_) | Variable::Long(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_answers_satisfy_the_schema_on_both_providers() {
    for (provider, url) in [("openai", openai_url()), ("ollama", ollama_url())] {
        let config = llm_topic(
            &format!(
                "provider = '{provider}'\nbase_url = '{{url}}'\nmodel = 'smollm2'\nprompt = 'Is {{{{n}}}} a prime number?'\nmax_tokens = 40\nseed = 3\nschema = {}",
                toml_inline(YES_NO)
            ),
            &url,
        );
        let vars = run_one(config, [("n".to_owned(), Variable::Integer(7))].into())
            .await
            .unwrap_or_else(|e| panic!("{provider}: {e}"));
        let answer = json_of(&vars["answer"]);
        assert!(
            answer["answer"] == "yes" || answer["answer"] == "no",
            "{provider}: schema-valid: {answer}"
        );
        assert!(json_of(&vars["usage"])["total_tokens"].as_u64().unwrap() > 0);
    }
}

/// A JSON schema as a TOML inline table.
fn toml_inline(json_text: &str) -> String {
    let value: Value = serde_json::from_str(json_text).unwrap();
    let toml_value: toml::Value = serde_json::from_value(value).unwrap();
    toml_value.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_vote_reproduces() {
    let settings = format!(
        "base_url = '{{url}}'\nmodel = 'smollm2'\nprompt = 'Is {{{{n}}}} prime? Answer yes or no.'\nmax_tokens = 40\ntemperature = 0.9\nseed = 11\nschema = {}\n[probabilistic]\nsamples = 5\nwindow = 3\nmin_confidence = 0.0",
        toml_inline(YES_NO)
    );
    let mut runs = Vec::new();
    for _ in 0..2 {
        let vars = run_one(
            llm_topic(&settings, &openai_url()),
            [("n".to_owned(), Variable::Integer(9))].into(),
        )
        .await
        .unwrap();
        let samples = json_of(&vars["samples"]).as_u64().unwrap();
        assert!(
            (3..=5).contains(&samples),
            "stops early or at the budget: {samples}"
        );
        let confidence = json_of(&vars["confidence"]).as_f64().unwrap();
        assert!((0.0..=1.0).contains(&confidence));
        runs.push((
            json_of(&vars["outcome"]),
            json_of(&vars["distribution"]),
            samples,
        ));
    }
    assert_eq!(runs[0], runs[1], "the same seeds give the same vote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_then_an_incident() {
    let down = format!("http://127.0.0.1:{}/v1", support::free_port());
    let mut config = llm_topic(
        "base_url = '{url}'\nmodel = 'smollm2'\nprompt = 'hi'",
        &down,
    );
    config.retries = 2;
    config.retry_backoff = Duration::from_secs(1);
    let message = run_one(config, Variables::new()).await.unwrap_err();
    assert!(
        message.contains(&format!(
            "the model server `default` at {down} did not answer"
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_is_honoured() {
    let config = llm_topic(
        "base_url = '{url}'\nmodel = 'smollm2'\nprompt = 'Write a long story about {{topic}}.'\nmax_tokens = 400\ntimeout = '100ms'",
        &openai_url(),
    );
    let message = run_one(
        config,
        [("topic".to_owned(), Variable::String("ships".into()))].into(),
    )
    .await
    .unwrap_err();
    assert!(message.contains("did not answer within 100ms"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_prompt_variable_fails_naming_it() {
    let config = llm_topic(
        "base_url = '{url}'\nmodel = 'smollm2'\nprompt = 'Summarise {{document}}.'",
        &openai_url(),
    );
    let message = run_one(config, Variables::new()).await.unwrap_err();
    assert!(
        message.contains("the prompt needs the variable `document`"),
        "{message}"
    );
}

/// Samples that do not agree enough end in the configured BPMN error, which the model routes
/// through its boundary event, with the vote's distribution as variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_consensus_is_a_bpmn_error_the_model_routes() {
    let client = support::engine();
    let (key, topic) = support::deploy_boundary_process(&client, "llm-vote").await;
    // Free text at a high temperature: five seeds, five different answers.
    let config = llm_topic(
        "base_url = '{url}'\nmodel = 'smollm2'\nprompt = 'Invent a name for a ship.'\nmax_tokens = 8\ntemperature = 1.5\nseed = 5\n[probabilistic]\nsamples = 5\nwindow = 5\nmin_confidence = 1.0\nno_consensus_error = 'NO_STOCK'",
        &openai_url(),
    );
    let (stop, worker) = support::start_quick_worker(&client, &topic, config);
    let instance = support::start(&client, &key, Variables::new()).await;
    support::wait_completed(&client, &instance, Duration::from_secs(120)).await;
    stop.cancel();
    worker.await.unwrap();
    support::assert_caught_by_boundary(&client, &instance).await;
    let vars = client.historic_variables(&instance).await.unwrap();
    let distribution = json_of(&vars["distribution"]);
    let counted: u64 = distribution
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(
        counted, 5,
        "all five samples are in the distribution: {distribution}"
    );
    assert!(json_of(&vars["confidence"]).as_f64().unwrap() < 1.0);
}

/// The fleet's own `llm` topic as `procos.toml` defines it, its servers pointed at the test's
/// (what `PROCOS_TOPICS__LLM__SETTINGS__BASE_URL` does for an operator): no table of the test's.
pub(crate) fn default_fleet_llm_topic() -> TopicConfig {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/procos.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let mut topic: TopicConfig = table["topics"]["llm"].clone().try_into().unwrap();
    topic
        .settings
        .insert("base_url".into(), Value::String(openai_url()));
    topic.settings["providers"]["ollama"]["base_url"] = Value::String(ollama_url());
    topic
}

/// `procos.*` extension properties, as Camunda Modeler writes them.
fn properties_xml(properties: &[(&str, &str)]) -> String {
    properties
        .iter()
        .map(|(name, value)| {
            let value = support::xml_escape(value);
            format!(r#"<camunda:property name="procos.{name}" value="{value}"/>"#)
        })
        .collect()
}

/// A step whose every setting is in the model: `procos.*` extension properties.
fn step_in_the_model(key: &str, topic: &str, properties: &[(&str, &str)]) -> String {
    let properties = properties_xml(properties);
    support::model(
        key,
        topic,
        &format!(
            "<bpmn:extensionElements><camunda:properties>{properties}</camunda:properties></bpmn:extensionElements>"
        ),
        r#"<bpmn:task id="after"/>"#,
    )
}

/// Runs one instance of `xml` on the fleet's `llm` topic.
async fn run_on_the_default_fleet(
    xml: &str,
    key: &str,
    variables: Variables,
) -> Result<Variables, String> {
    let client = support::engine();
    support::deploy(&client, &format!("{key}.bpmn"), xml).await;
    let (stop, worker) = support::start_quick_worker(&client, "llm", default_fleet_llm_topic());
    let instance = support::start(&client, key, variables).await;
    let result = support::settle(&client, &instance, Duration::from_secs(180)).await;
    stop.cancel();
    worker.await.unwrap();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_set_wholly_in_the_model_runs_on_the_default_fleet() {
    for provider in ["default", "ollama"] {
        let key = support::unique("llm-in-model");
        let xml = step_in_the_model(
            &key,
            "llm",
            &[
                ("provider", provider),
                ("model", "smollm2"),
                ("system", "You answer in JSON."),
                ("prompt", "Is {{n}} a prime number?"),
                ("schema", YES_NO),
                ("temperature", "0.9"),
                ("seed", "5"),
                ("max_tokens", "40"),
                ("samples", "3"),
                ("window", "2"),
                ("min_confidence", "0"),
                ("retries", "1"),
            ],
        );
        let vars =
            run_on_the_default_fleet(&xml, &key, [("n".to_owned(), Variable::Integer(7))].into())
                .await
                .unwrap_or_else(|e| panic!("{provider}: {e}"));
        let outcome = json_of(&vars["outcome"]);
        assert!(
            outcome["answer"] == "yes" || outcome["answer"] == "no",
            "{provider}: the model's schema holds: {outcome}"
        );
        let samples = json_of(&vars["samples"]).as_u64().unwrap();
        assert!(
            (2..=3).contains(&samples),
            "{provider}: the model's vote settings: {samples}"
        );
        assert!(
            !vars.keys().any(|name| name.starts_with("procos.")),
            "settings are not variables: {:?}",
            vars.keys()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_policy_does_not_allow_is_an_incident_naming_it_and_the_allowed_ones() {
    let key = support::unique("llm-not-allowed");
    let xml = step_in_the_model(
        &key,
        "llm",
        &[("model", "gpt-4o"), ("prompt", "Hello"), ("retries", "3")],
    );
    let message = run_on_the_default_fleet(&xml, &key, Variables::new())
        .await
        .unwrap_err();
    assert!(
        message.contains("`gpt-4o` is not allowed") && message.contains("smollm2"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_variable_named_like_a_setting_is_not_a_setting() {
    // The step sets no model of its own; a process variable `procos.model` must not become one.
    let key = support::unique("llm-shadow");
    let xml = step_in_the_model(
        &key,
        "llm",
        &[("prompt", "Say hi."), ("max_tokens", "3"), ("retries", "1")],
    );
    let vars = run_on_the_default_fleet(
        &xml,
        &key,
        [("procos.model".to_owned(), Variable::String("gpt-4o".into()))].into(),
    )
    .await
    .unwrap();
    assert_eq!(
        vars["model"],
        Variable::String("smollm2".into()),
        "the topic's model"
    );
}

/// start → the `llm` step `decide` (its settings in the model, `procos.choices` among them) →
/// an exclusive gateway with one flow per choice and no default flow → an end per choice.
fn decision_model(key: &str, properties: &[(&str, &str)]) -> String {
    let properties = properties_xml(properties);
    support::bpmn(
        key,
        "",
        &format!(
            r#"<bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="decide"/>
    <bpmn:serviceTask id="decide" camunda:type="external" camunda:topic="llm">
      <bpmn:extensionElements><camunda:properties>{properties}</camunda:properties></bpmn:extensionElements>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="decide" targetRef="route"/>
    <bpmn:exclusiveGateway id="route"/>
    <bpmn:sequenceFlow id="to-approve" sourceRef="route" targetRef="approved">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">${{answer == 'approve'}}</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="to-reject" sourceRef="route" targetRef="rejected">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">${{answer == 'reject'}}</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:endEvent id="approved"/>
    <bpmn:endEvent id="rejected"/>"#
        ),
    )
}

/// 20 instances, 10 on each provider, each with its own amount and sampled without a seed:
/// every one ends at the end event of the choice its model answered, as the engine recorded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_from_fixed_choices_routes_a_gateway_without_a_default_flow() {
    let client = support::engine();
    let (stop, worker) = support::start_quick_worker(&client, "llm", default_fleet_llm_topic());
    let mut started = Vec::new();
    for provider in ["default", "ollama"] {
        let key = support::unique("llm-choices");
        let xml = decision_model(
            &key,
            &[
                ("provider", provider),
                ("model", "smollm2"),
                (
                    "prompt",
                    "An invoice of {{amount}} EUR arrived. Approve or reject it?",
                ),
                ("choices", "approve, reject"),
                ("temperature", "0.9"),
                ("max_tokens", "30"),
                ("retries", "1"),
            ],
        );
        support::deploy(&client, &format!("{key}.bpmn"), &xml).await;
        for n in 0..10 {
            let instance = support::start(
                &client,
                &key,
                [("amount".to_owned(), Variable::Integer(40 + 370 * n))].into(),
            )
            .await;
            started.push((provider, instance));
        }
    }
    let mut ends = std::collections::BTreeMap::new();
    for (provider, instance) in &started {
        let vars = support::settle(&client, instance, Duration::from_secs(300))
            .await
            .unwrap_or_else(|e| panic!("{provider}: {e}"));
        let answer = json_of(&vars["answer"]);
        let end = match answer.as_str() {
            Some("approve") => "approved",
            Some("reject") => "rejected",
            _ => panic!("{provider}: the answer is one of the choices: {answer}"),
        };
        let ended = support::passed(&client, instance).await;
        assert!(
            ended.iter().any(|a| a == end),
            "{provider}: the gateway routed on the answer `{answer}` to `{end}`: {ended:?}"
        );
        *ends.entry(end).or_insert(0) += 1;
    }
    assert_eq!(ends.values().sum::<i32>(), 20, "{ends:?}");
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_holds_the_prompt_and_every_sample_and_becomes_a_file_past_its_limit() {
    let client = support::engine();
    let secret = "sk-procos-trace-secret-4711";
    let mut topic = default_fleet_llm_topic();
    topic
        .settings
        .insert("api_key".into(), Value::String(secret.into()));
    let (stop, worker) = support::start_quick_worker(&client, "llm", topic);
    let mut traces = Vec::new();
    for limit in ["65536", "600"] {
        let key = support::unique("llm-trace");
        let xml = step_in_the_model(
            &key,
            "llm",
            &[
                ("prompt", "Is {{n}} a prime number? Answer yes or no."),
                ("schema", YES_NO),
                ("temperature", "0.9"),
                ("seed", "5"),
                ("max_tokens", "30"),
                ("samples", "3"),
                ("window", "3"),
                ("min_confidence", "0"),
                ("trace", "true"),
                ("trace_limit", limit),
                ("retries", "1"),
            ],
        );
        support::deploy(&client, &format!("{key}.bpmn"), &xml).await;
        let instance = support::start(
            &client,
            &key,
            [("n".to_owned(), Variable::Integer(7))].into(),
        )
        .await;
        let vars = support::settle(&client, &instance, Duration::from_secs(180))
            .await
            .unwrap();
        traces.push((
            vars["trace"].type_name().to_owned(),
            support::variable_data(&client, &instance, "trace").await,
            json_of(&vars["samples"]),
        ));
    }
    stop.cancel();
    worker.await.unwrap();

    let [(json_type, json_text, samples), (file_type, file_text, _)] = &traces[..] else {
        unreachable!()
    };
    assert_eq!(json_type, "Json", "within the limit: a Json variable");
    assert_eq!(file_type, "File", "past 600 bytes: a File variable");
    for text in [json_text, file_text] {
        assert!(!text.contains(secret), "no key in the trace: {text}");
        let trace: Value = serde_json::from_str(text).unwrap();
        assert_eq!(trace["kind"], "procos.llm.trace/1");
        assert_eq!(
            trace["prompt"], "Is 7 a prime number? Answer yes or no.",
            "the filled prompt"
        );
        let calls = trace["calls"].as_array().unwrap();
        let answered: Vec<&Value> = calls.iter().filter(|c| c["text"].is_string()).collect();
        let sampled: Vec<u64> = answered
            .iter()
            .filter(|c| c["round"] == "answer")
            .map(|c| c["sample"].as_u64().unwrap())
            .collect();
        assert_eq!(sampled, [1, 2, 3], "one answer per sample: {trace}");
        assert_eq!(trace["vote"]["votes"].as_array().unwrap().len(), 3);
        assert_eq!(&trace["vote"]["samples"], samples);
        let tokens: u64 = answered
            .iter()
            .map(|c| c["completion_tokens"].as_u64().unwrap())
            .sum();
        assert_eq!(trace["usage"]["completion_tokens"], tokens, "{trace}");
    }
}

/// An answer that is none of the choices (here cut short by `max_tokens`, so not even the JSON
/// the schema asks for) gets one repair round, then becomes an incident naming the answer and
/// the choices, with no retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_outside_the_choices_is_repaired_once_then_an_incident_naming_it() {
    let key = support::unique("llm-not-a-choice");
    let xml = decision_model(
        &key,
        &[
            ("model", "smollm2"),
            ("prompt", "Approve or reject the invoice?"),
            ("choices", "approve, reject"),
            ("max_tokens", "2"),
            ("retries", "3"),
        ],
    );
    let client = support::engine();
    support::deploy(&client, &format!("{key}.bpmn"), &xml).await;
    let (stop, worker) = support::start_quick_worker(&client, "llm", default_fleet_llm_topic());
    let instance = support::start(&client, &key, Variables::new()).await;
    let incident = support::incident(&client, &instance, Duration::from_secs(180)).await;
    stop.cancel();
    worker.await.unwrap();
    let message = incident.incident_message.unwrap_or_default();
    assert!(
        message.contains("which is not one of the step's choices (approve, reject)"),
        "{message}"
    );
    let details = client
        .external_task_error_details(incident.configuration.as_deref().unwrap())
        .await
        .unwrap();
    assert!(details.contains("After one repair round"), "{details}");
    let log = client
        .external_task_log(&camunda_client::ExternalTaskLogQuery {
            process_instance_id: Some(instance.clone()),
            failure_log: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 1, "no retry: one failure, at once: {log:?}");
}
