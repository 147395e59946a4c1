//! Outputs a model can use as it expects, against the real engine and a real Python sandbox: a
//! list an adapter returns is a Java list to the engine (a parallel multi-instance activity runs
//! once per element, `${items.size()}` measures it), a list of objects hands each instance its
//! object, and a text longer than a `String` variable holds comes back whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use camunda_client::{EngineClient, Variable};
use procos_worker::TopicConfig;
use serde_json::{Value, json};

use crate::support;

/// The long text both Python steps build: 10,000 characters with quotes, a newline and
/// non-ASCII letters in every line.
const TEXT_PY: &str = r#"('ProcOS «é» "quoted" line\n' * 400)[:10000]"#;

fn expected_text() -> String {
    "ProcOS «é» \"quoted\" line\n"
        .repeat(400)
        .chars()
        .take(10_000)
        .collect()
}

/// Forty numbers, forty objects and a long text.
const PRODUCE: &str = r#"outputs['items'] = list(range(1, 41))
outputs['orders'] = [{'n': i, 'sku': 'S-%d' % i, 'price': i * 1.5} for i in range(1, 41)]
outputs['text'] = TEXT
"#;

/// What the step after the multi-instance activities reads.
const REREAD: &str = r#"text = inputs['text']
outputs['text_matches'] = text == TEXT
outputs['text_length'] = len(text)
outputs['text_again'] = text
outputs['items_total'] = sum(inputs['items'])
outputs['orders_total'] = sum(order['n'] for order in inputs['orders'])
"#;

fn order(n: i64) -> Value {
    json!({"n": n, "sku": format!("S-{n}"), "price": n as f64 * 1.5})
}

/// Python `produce` → gateway on `${items.size() == 40 and orders.size() == 40}` → a parallel
/// multi-instance `numbers` over `items` (element `item`) → one `records` over `orders`
/// (element `order`) → Python `reread` → end; a wrong size ends at `wrong-size`.
fn model(key: &str, python: &str, each_number: &str, each_order: &str) -> String {
    let script = |source: &str| support::xml_escape(&source.replace("TEXT", TEXT_PY));
    let elements = r#"<bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="produce"/>
    <bpmn:serviceTask id="produce" camunda:type="external" camunda:topic="PYTHON">
      <bpmn:extensionElements><camunda:inputOutput>
        <camunda:inputParameter name="procos.script">PRODUCE</camunda:inputParameter>
      </camunda:inputOutput></bpmn:extensionElements>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="produce" targetRef="sized"/>
    <bpmn:exclusiveGateway id="sized" default="f-wrong"/>
    <bpmn:sequenceFlow id="f-forty" sourceRef="sized" targetRef="numbers">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">${items.size() == 40 and orders.size() == 40}</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f-wrong" sourceRef="sized" targetRef="wrong-size"/>
    <bpmn:endEvent id="wrong-size"/>
    <bpmn:serviceTask id="numbers" camunda:type="external" camunda:topic="EACH_NUMBER">
      <bpmn:multiInstanceLoopCharacteristics camunda:collection="${items}" camunda:elementVariable="item"/>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="f3" sourceRef="numbers" targetRef="records"/>
    <bpmn:serviceTask id="records" camunda:type="external" camunda:topic="EACH_ORDER">
      <bpmn:multiInstanceLoopCharacteristics camunda:collection="${orders}" camunda:elementVariable="order"/>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="f4" sourceRef="records" targetRef="reread"/>
    <bpmn:serviceTask id="reread" camunda:type="external" camunda:topic="PYTHON">
      <bpmn:extensionElements><camunda:inputOutput>
        <camunda:inputParameter name="procos.script">REREAD</camunda:inputParameter>
      </camunda:inputOutput></bpmn:extensionElements>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="f5" sourceRef="reread" targetRef="end"/>
    <bpmn:endEvent id="end"/>"#
        .replace("PYTHON", python)
    .replace("EACH_NUMBER", each_number)
    .replace("EACH_ORDER", each_order)
        .replace("PRODUCE", &script(PRODUCE))
        .replace("REREAD", &script(REREAD));
    support::bpmn(key, "", &elements)
}

/// An echo topic for a multi-instance activity: it fetches only the element variable and
/// writes it back, as the local variable `seen` of its own instance (`{"<element>": value}`).
fn echo_element(element: &str) -> TopicConfig {
    let mut echo = TopicConfig::new("echo");
    echo.variables = Some(vec![element.to_owned()]);
    echo.result_variable = Some("seen".to_owned());
    echo.local_outputs = true;
    echo
}

/// One value of a variable in history.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoricValue {
    execution_id: String,
    activity_instance_id: String,
    #[serde(flatten)]
    variable: Variable,
}

/// Every value of the variable `name` in `instance`'s history, local ones of ended scopes
/// included.
async fn historic_values(client: &EngineClient, instance: &str, name: &str) -> Vec<HistoricValue> {
    reqwest::Client::new()
        .get(format!(
            "{}/history/variable-instance",
            client.base_url().trim_end_matches('/')
        ))
        .query(&[
            ("processInstanceId", instance),
            ("variableName", name),
            ("includeDeleted", "true"),
            ("deserializeValues", "false"),
        ])
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// What the instances of a multi-instance activity saw of their element (the `seen` variables
/// holding `element`), sorted; panics unless each instance, in an execution and activity
/// instance of its own, wrote one.
async fn seen(client: &EngineClient, instance: &str, element: &str) -> Vec<Value> {
    let rows: Vec<HistoricValue> = historic_values(client, instance, "seen")
        .await
        .into_iter()
        .filter(|row| row.variable.to_json().get(element).is_some())
        .collect();
    let executions: BTreeSet<&str> = rows.iter().map(|r| r.execution_id.as_str()).collect();
    let activities: BTreeSet<&str> = rows
        .iter()
        .map(|r| r.activity_instance_id.as_str())
        .collect();
    assert_eq!(
        executions.len(),
        rows.len(),
        "one execution each: {rows:#?}"
    );
    assert_eq!(
        activities.len(),
        rows.len(),
        "one activity instance each: {rows:#?}"
    );
    let mut values: Vec<Value> = rows
        .iter()
        .map(|row| {
            let doc = row.variable.to_json();
            assert_eq!(doc.as_object().map(|o| o.len()), Some(1), "{doc}");
            doc[element].clone()
        })
        .collect();
    values.sort_by_key(|v| v.to_string());
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_drive_a_multi_instance_activity_and_long_text_comes_back_whole() {
    let client = support::engine();
    let key = support::unique("outputs");
    let python = support::unique("outputs-py");
    let each_number = support::unique("outputs-number");
    let each_order = support::unique("outputs-order");
    support::deploy(
        &client,
        &format!("{key}.bpmn"),
        &model(&key, &python, &each_number, &each_order),
    )
    .await;
    let mut python_topic = TopicConfig::new("python");
    python_topic.retries = 1;
    let (stop, worker) = support::start_worker_with(
        &client,
        support::quick_worker_config(),
        support::topics(&[
            (&python, python_topic),
            (&each_number, echo_element("item")),
            (&each_order, echo_element("order")),
        ]),
    );
    let instance = support::start(&client, &key, Default::default()).await;
    let settled = support::settle(&client, &instance, Duration::from_secs(180)).await;
    stop.cancel();
    worker.await.unwrap();
    let vars = settled.unwrap_or_else(|incident| panic!("the instance failed: {incident}"));

    // The lists are Java lists serialized as JSON; the gateway measured them.
    let numbers: Vec<Value> = (1..=40).map(Value::from).collect();
    let orders: Vec<Value> = (1..=40).map(order).collect();
    assert_eq!(
        vars["items"],
        Variable::from_json(Value::from(numbers.clone()))
    );
    assert_eq!(
        vars["orders"],
        Variable::from_json(Value::from(orders.clone()))
    );
    let Variable::Object { class, .. } = &vars["items"] else {
        panic!("items is an Object: {:?}", vars["items"]);
    };
    assert_eq!(class, "java.util.ArrayList");
    let passed = support::passed(&client, &instance).await;
    assert!(!passed.contains(&"wrong-size".to_owned()), "{passed:?}");
    for activity in ["numbers", "records"] {
        let runs = passed.iter().filter(|a| *a == activity).count();
        assert_eq!(runs, 40, "{activity} ran once per element: {passed:?}");
    }

    // Each instance saw its own element, each element was seen once.
    let mut expected_numbers = numbers.clone();
    expected_numbers.sort_by_key(|v| v.to_string());
    assert_eq!(seen(&client, &instance, "item").await, expected_numbers);
    let mut expected_orders = orders.clone();
    expected_orders.sort_by_key(|v| v.to_string());
    assert_eq!(seen(&client, &instance, "order").await, expected_orders);

    // The engine stored each object element as JSON (its default serialization format), each
    // number as a number.
    let elements = historic_values(&client, &instance, "order").await;
    assert_eq!(elements.len(), 40, "{elements:#?}");
    for element in &elements {
        let Variable::Object { class, .. } = &element.variable else {
            panic!("an object element is an Object serialized as JSON: {element:?}");
        };
        assert!(class.starts_with("java.util.LinkedHashMap"), "{class}");
        assert!(orders.contains(&element.variable.to_json()), "{element:?}");
    }
    let elements = historic_values(&client, &instance, "item").await;
    assert_eq!(elements.len(), 40, "{elements:#?}");
    assert!(
        elements
            .iter()
            .all(|e| matches!(e.variable, Variable::Integer(1..=40))),
        "{elements:#?}"
    );

    // The long text: stored whole, read whole by the next step, and written back again.
    let text = expected_text();
    assert_eq!(text.chars().count(), 10_000);
    assert_eq!(vars["text"].to_json(), Value::String(text.clone()));
    assert_eq!(
        vars["text"],
        Variable::from_json(Value::String(text.clone()))
    );
    assert_eq!(vars["text"].type_name(), "Object");
    assert_eq!(vars["text_matches"], Variable::Boolean(true));
    assert_eq!(vars["text_length"], Variable::Integer(10_000));
    assert_eq!(vars["text_again"], vars["text"]);
    assert_eq!(vars["items_total"], Variable::Integer(820));
    assert_eq!(vars["orders_total"], Variable::Integer(820));
}

/// A step in a parallel multi-instance whose outputs carry the engine's own multi-instance
/// variables (`echo` hands back every variable it fetched, `loopCounter` and `nrOf…` among
/// them) does not overwrite the body's counters: the instance completes (with them written,
/// it never does), the other outputs are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_named_like_the_multi_instance_counters_are_not_written() {
    let client = support::engine();
    let key = support::unique("mi-counters");
    let topic = support::unique("mi-counters-echo");
    let xml = support::bpmn(
        &key,
        "",
        &format!(
            r#"<bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="each"/>
    <bpmn:serviceTask id="each" camunda:type="external" camunda:topic="{topic}">
      <bpmn:multiInstanceLoopCharacteristics isSequential="false">
        <bpmn:loopCardinality>3</bpmn:loopCardinality>
      </bpmn:multiInstanceLoopCharacteristics>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="each" targetRef="end"/>
    <bpmn:endEvent id="end"/>"#
        ),
    );
    support::deploy(&client, &format!("{key}.bpmn"), &xml).await;
    let (stop, worker) = support::start_quick_worker(&client, &topic, TopicConfig::new("echo"));
    let instance = support::start(
        &client,
        &key,
        [("greeting".to_owned(), Variable::String("hello".into()))].into(),
    )
    .await;
    let settled = support::settle(&client, &instance, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();
    let vars = settled.unwrap_or_else(|incident| panic!("the instance failed: {incident}"));
    assert_eq!(vars["greeting"], Variable::String("hello".into()));
    // History keeps the body's own counters, as the engine set them.
    assert_eq!(vars["nrOfInstances"], Variable::Integer(3));
    assert_eq!(vars["nrOfCompletedInstances"], Variable::Integer(3));
    let passed = support::passed(&client, &instance).await;
    assert_eq!(
        passed.iter().filter(|a| *a == "each").count(),
        3,
        "{passed:?}"
    );
}
