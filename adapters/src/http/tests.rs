//! The adapter's run against a small HTTP/1.1 server on loopback, started by each test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpListener;

use super::test_server::{Reply, Server};
use super::*;
use crate::{BuildContext, TaskSettings};

fn built(settings: &str) -> Arc<dyn Adapter> {
    let settings: toml::Table = toml::from_str(settings).unwrap();
    crate::build("http", "web", &settings, &BuildContext::default()).unwrap()
}

fn task(inputs: Value, settings: Value) -> AdapterTask {
    AdapterTask {
        traceparent: None,
        task_id: "t1".into(),
        topic: "web".into(),
        inputs: inputs.as_object().cloned().unwrap(),
        settings: TaskSettings::from_pairs(settings.as_object().cloned().unwrap()),
        root_process_instance_id: None,
    }
}

async fn run(adapter: &Arc<dyn Adapter>, task: AdapterTask) -> Outcome {
    adapter.run(task, CancellationToken::new()).await
}

fn failure(outcome: Outcome) -> Failure {
    match outcome {
        Outcome::Failure(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A file holding `text`, for secrets read from files.
fn secret_file(text: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "procos-http-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_get_fills_the_url_and_hands_back_status_headers_and_json() {
    let server = Server::start(|_, _| {
        Reply::new(200, "application/json", r#"{"id": 7, "ok": true}"#).header("x-trace", "abc")
    });
    let adapter = built(&format!("allow = [\"127.0.0.1:{}\"]", server.port));
    let outcome = run(
        &adapter,
        task(
            json!({"id": "a/b c", "kind": "x&y"}),
            json!({
                "url": server.url("/orders/{{id}}?kind={{kind}}"),
                "query": "{\"page\": 2, \"tag\": [\"a\", \"{{kind}}\"]}",
                "headers": {"Accept": "application/json", "X-Id": "{{id}}"},
                "response_headers": "x-trace, content-type",
            }),
        ),
    )
    .await;
    assert_eq!(
        outcome,
        Outcome::Complete(
            json!({"status": 200, "headers": {"x-trace": "abc", "content-type": "application/json"}, "body": {"id": 7, "ok": true}})
                .as_object()
                .cloned()
                .unwrap()
        )
    );
    let got = &server.received()[0];
    assert_eq!(got.method, "GET");
    assert_eq!(
        got.target,
        "/orders/a%2Fb%20c?kind=x%26y&page=2&tag=a&tag=x%26y"
    );
    assert_eq!(got.header("x-id"), Some("a/b c"));
    assert_eq!(got.header("accept"), Some("application/json"));
    assert_eq!(got.header("authorization"), None);
}

#[tokio::test]
async fn bodies_are_json_for_documents_and_text_otherwise() {
    let server = Server::start(|r, _| Reply::new(201, "text/plain", r.body.clone()));
    let adapter = built(&format!("allow = [\"127.0.0.1:{}\"]", server.port));
    let inputs = json!({"n": 3, "name": "ACME"});
    let cases = [
        (
            json!("{\"n\": \"{{n}}\", \"who\": \"{{name}}\"}"),
            "application/json",
            r#"{"n":3,"who":"ACME"}"#,
        ),
        (json!({"n": "{{n}}"}), "application/json", r#"{"n":3}"#),
        (json!("{\"n\": {{n}}}"), "application/json", r#"{"n":3}"#),
        (
            json!("hello {{name}}"),
            "text/plain; charset=utf-8",
            "hello ACME",
        ),
    ];
    for (body, content_type, sent) in cases {
        let outcome = run(
            &adapter,
            task(
                inputs.clone(),
                json!({"method": "post", "url": server.url("/in"), "body": body}),
            ),
        )
        .await;
        let Outcome::Complete(outputs) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(outputs["status"], 201);
        assert_eq!(outputs["body"], sent);
        let got = server.received().pop().unwrap();
        assert_eq!(got.method, "POST");
        assert_eq!(got.header("content-type"), Some(content_type));
    }
    // A content type of the task's own makes even a document text.
    let outcome = run(
        &adapter,
        task(inputs, json!({"method": "PUT", "url": server.url("/in"), "body": "<a>{{name}}</a>", "headers": {"content-type": "application/xml"}})),
    )
    .await;
    assert!(matches!(outcome, Outcome::Complete(_)), "{outcome:?}");
    assert_eq!(server.received().pop().unwrap().body, b"<a>ACME</a>");
}

#[tokio::test]
async fn statuses_become_bpmn_errors_retries_or_incidents() {
    let server = Server::start(|r, _| match r.target.as_str() {
        "/missing" => Reply::new(404, "application/json", r#"{"error": "no such order"}"#),
        "/conflict" => Reply::new(409, "text/plain", "already there"),
        _ => Reply::new(
            503,
            "text/html",
            format!("<h1>down</h1>{}", "x".repeat(2000)),
        ),
    });
    let adapter = built(&format!(
        "allow = [\"127.0.0.1:{}\"]\nerror_codes = {{ \"409\" = \"CONFLICT\" }}",
        server.port
    ));
    let outcome = run(
        &adapter,
        task(
            json!({}),
            json!({"url": server.url("/missing"), "error_codes": "{\"404\": \"NOT_FOUND\"}"}),
        ),
    )
    .await;
    let Outcome::BpmnError {
        code,
        message,
        outputs,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(code, "NOT_FOUND");
    assert!(message.contains("404"), "{message}");
    assert_eq!(outputs["body"], json!({"error": "no such order"}));

    let outcome = run(
        &adapter,
        task(json!({}), json!({"url": server.url("/conflict")})),
    )
    .await;
    assert!(
        matches!(outcome, Outcome::BpmnError { ref code, .. } if code == "CONFLICT"),
        "{outcome:?}"
    );

    let f = failure(
        run(
            &adapter,
            task(json!({}), json!({"url": server.url("/missing")})),
        )
        .await,
    );
    assert_eq!(f.retry, Retry::Never);
    assert!(f.message.contains("404 Not Found"), "{}", f.message);
    assert!(
        f.details.contains("no such order") && f.details.contains("procos.error_codes"),
        "{}",
        f.details
    );

    let f = failure(
        run(
            &adapter,
            task(json!({}), json!({"url": server.url("/down")})),
        )
        .await,
    );
    assert_eq!(f.retry, Retry::Later);
    assert!(f.message.contains("503"), "{}", f.message);
    assert!(f.details.contains("<h1>down</h1>xxx"), "{}", f.details);
    assert!(
        f.details.len() < 1200,
        "an excerpt, not the body: {}",
        f.details.len()
    );
}

#[tokio::test]
async fn a_body_past_the_limit_fails_naming_it_whether_announced_or_streamed() {
    let server = Server::start(|r, _| {
        let mut a = Reply::new(200, "text/plain", "y".repeat(64 * 1024));
        a.repeat = 64; // 4 MiB
        a.content_length = r.target == "/announced";
        a
    });
    let adapter = built(&format!(
        "allow = [\"127.0.0.1:{}\"]\nmax_response_kb = 1024",
        server.port
    ));
    for path in ["/announced", "/streamed"] {
        let f = failure(run(&adapter, task(json!({}), json!({"url": server.url(path)}))).await);
        assert_eq!(f.retry, Retry::Never);
        assert!(
            f.message.contains("max_response_kb = 1024"),
            "{}",
            f.message
        );
    }
    let adapter = adapter_with_limit(server.port, 8192);
    let outcome = run(
        &adapter,
        task(json!({}), json!({"url": server.url("/streamed")})),
    )
    .await;
    let Outcome::Complete(outputs) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(outputs["body"].as_str().unwrap().len(), 4 * 1024 * 1024);
}

fn adapter_with_limit(port: u16, kb: u64) -> Arc<dyn Adapter> {
    built(&format!(
        "allow = [\"127.0.0.1:{port}\"]\nmax_response_kb = {kb}"
    ))
}

#[tokio::test]
async fn redirects_are_followed_only_when_asked_and_checked_at_every_hop() {
    let other = Server::start(|_, _| Reply::new(200, "text/plain", "elsewhere"));
    let other_port = other.port;
    let server = Server::start(move |r, _| {
        let to = match r.target.as_str() {
            "/same" => "/final".to_owned(),
            "/other" => format!("http://127.0.0.1:{other_port}/final"),
            "/inside" => "http://10.0.0.1/admin".to_owned(),
            "/metadata" => "http://localhost:9/".to_owned(),
            "/loop" => "/loop".to_owned(),
            _ => return Reply::new(200, "text/plain", "final"),
        };
        Reply::new(302, "text/plain", "").header("location", &to)
    });
    let token = secret_file("tok-7f3e9a1c");
    let adapter = built(&format!(
        "allow = [\"127.0.0.1:{}\", \"127.0.0.1:{other_port}\", \"*\", \"*:9\"]\nmax_redirects = 3\n\
         [secrets.api]\nkind = \"bearer\"\ntoken_file = \"{}\"\ndestinations = [\"127.0.0.1:{}\", \"127.0.0.1:{other_port}\"]",
        server.port,
        token.display(),
        server.port
    ));

    // Not followed unless asked: the 302 is the answer.
    let outcome = run(
        &adapter,
        task(
            json!({}),
            json!({"url": server.url("/same"), "response_headers": "location"}),
        ),
    )
    .await;
    let Outcome::Complete(outputs) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(outputs["status"], 302);
    assert_eq!(outputs["headers"]["location"], "/final");

    // Same origin: the credential follows; another origin: it does not.
    let follow =
        |path: &str| json!({"url": server.url(path), "follow_redirects": true, "auth": "api"});
    let outcome = run(&adapter, task(json!({}), follow("/same"))).await;
    assert!(
        matches!(&outcome, Outcome::Complete(o) if o["body"] == "final"),
        "{outcome:?}"
    );
    let got = server.received();
    assert_eq!(got.last().unwrap().target, "/final");
    assert_eq!(
        got.last().unwrap().header("authorization"),
        Some("Bearer tok-7f3e9a1c")
    );
    let outcome = run(&adapter, task(json!({}), follow("/other"))).await;
    assert!(
        matches!(&outcome, Outcome::Complete(o) if o["body"] == "elsewhere"),
        "{outcome:?}"
    );
    assert_eq!(other.received()[0].header("authorization"), None);

    // A hop to an internal address is refused, even under a wildcard.
    for path in ["/inside", "/metadata"] {
        let f = failure(
            run(
                &adapter,
                task(
                    json!({}),
                    json!({"url": server.url(path), "follow_redirects": 3}),
                ),
            )
            .await,
        );
        assert_eq!(f.retry, Retry::Never);
        assert!(f.message.contains("is refused"), "{}", f.message);
        assert!(
            f.message.contains("10.0.0.1") || f.message.contains("localhost:9"),
            "{}",
            f.message
        );
    }
    let f = failure(
        run(
            &adapter,
            task(
                json!({}),
                json!({"url": server.url("/loop"), "follow_redirects": true}),
            ),
        )
        .await,
    );
    assert!(f.message.contains("more than 3"), "{}", f.message);
    let f = failure(
        run(
            &adapter,
            task(
                json!({}),
                json!({"url": server.url("/loop"), "follow_redirects": 4}),
            ),
        )
        .await,
    );
    assert!(f.message.contains("max_redirects = 3"), "{}", f.message);
}

#[tokio::test]
async fn secrets_go_only_to_their_destinations_and_never_come_back() {
    let server = Server::start(|r, _| {
        let credential = r.header("authorization").unwrap_or_default().to_owned();
        let status = if r.target == "/fail" { 500 } else { 200 };
        Reply::new(
            status,
            "application/json",
            json!({"you sent": credential}).to_string(),
        )
        .header("x-echo", &credential)
    });
    let other = Server::start(|_, _| Reply::new(200, "text/plain", "ok"));
    let password = secret_file("s3cr3t-pa55");
    let adapter = built(&format!(
        "allow = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n\
         [secrets.legacy]\nkind = \"basic\"\nuser = \"svc\"\npassword_file = \"{}\"\ndestinations = [\"127.0.0.1:{}\"]",
        server.port,
        other.port,
        password.display(),
        server.port
    ));
    let basic = base64::engine::general_purpose::STANDARD.encode("svc:s3cr3t-pa55");
    for path in ["/ok", "/fail"] {
        let outcome = run(
            &adapter,
            task(
                json!({}),
                json!({"url": server.url(path), "auth": "legacy", "response_headers": "*"}),
            ),
        )
        .await;
        let shown = format!("{outcome:?}");
        assert!(
            !shown.contains(&basic) && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(shown.contains("[secret legacy redacted]"), "{shown}");
    }
    assert_eq!(
        server.received()[0].header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );

    let f = failure(
        run(
            &adapter,
            task(json!({}), json!({"url": other.url("/"), "auth": "legacy"})),
        )
        .await,
    );
    assert_eq!(f.retry, Retry::Never);
    assert!(
        f.message.contains("secret `legacy`") && f.message.contains(&other.port.to_string()),
        "{}",
        f.message
    );
    assert!(other.received().is_empty(), "nothing was sent");

    let f = failure(
        run(
            &adapter,
            task(
                json!({}),
                json!({"url": server.url("/"), "auth": "billing"}),
            ),
        )
        .await,
    );
    assert!(
        f.message.contains("`billing`") && f.details.contains("legacy"),
        "{}: {}",
        f.message,
        f.details
    );
    let f = failure(
        run(
            &adapter,
            task(
                json!({}),
                json!({"url": server.url("/"), "headers": {"Authorization": "Bearer x"}}),
            ),
        )
        .await,
    );
    assert!(f.message.contains("procos.auth"), "{}", f.message);
}

#[tokio::test]
async fn refusals_name_the_destination_the_allow_list_and_the_fix() {
    let adapter = built("allow = [\"api.example.com\"]");
    let f = failure(
        run(
            &adapter,
            task(json!({}), json!({"url": "http://127.0.0.1:1/"})),
        )
        .await,
    );
    assert_eq!(f.retry, Retry::Never);
    for part in [
        "127.0.0.1:1",
        "\"api.example.com\"",
        "[topics.web.settings] allow",
    ] {
        assert!(f.message.contains(part), "{part}: {}", f.message);
    }
    let f = failure(
        run(
            &adapter,
            task(json!({}), json!({"url": "http://api.example.com/{{id}}"})),
        )
        .await,
    );
    assert!(f.message.contains("`id`"), "{}", f.message);
    let f = failure(run(&adapter, task(json!({}), json!({}))).await);
    assert!(f.message.contains("procos.url"), "{}", f.message);
    let f = failure(
        run(
            &adapter,
            task(json!({}), json!({"url": "https://u:p@api.example.com/"})),
        )
        .await,
    );
    assert!(f.message.contains("credentials"), "{}", f.message);
    let f = failure(
        run(
            &adapter,
            task(
                json!({}),
                json!({"url": "https://api.example.com/", "timeout": "1h"}),
            ),
        )
        .await,
    );
    assert!(f.message.contains("max_timeout = 5m"), "{}", f.message);
}

#[tokio::test]
async fn connection_failures_and_timeouts_are_retried() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let adapter = built(&format!("allow = [\"127.0.0.1:{port}\"]"));
    let f = failure(
        run(
            &adapter,
            task(
                json!({}),
                json!({"url": format!("http://127.0.0.1:{port}/")}),
            ),
        )
        .await,
    );
    assert_eq!(f.retry, Retry::Later);
    assert!(f.message.contains("could not connect"), "{}", f.message);

    // A server that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let adapter = built(&format!("allow = [\"127.0.0.1:{port}\"]"));
    let f = failure(
        run(
            &adapter,
            task(
                json!({}),
                json!({"url": format!("http://127.0.0.1:{port}/"), "timeout": "300ms"}),
            ),
        )
        .await,
    );
    assert_eq!(f.retry, Retry::Later);
    assert!(f.message.contains("timed out after 300ms"), "{}", f.message);
}

#[test]
fn bad_topic_settings_stop_the_build_naming_the_key() {
    for (settings, expected) in [
        ("allow = [\"a:b\"]", "allow"),
        ("method = \"FETCH\"", "method"),
        ("error_codes = { \"4x4\" = \"X\" }", "error_codes"),
        ("timeout = \"10m\"", "max_timeout"),
        (
            "headers = { Authorization = \"Bearer x\" }",
            "Authorization",
        ),
        ("auth = \"nope\"", "nope"),
        ("colour = \"red\"", "colour"),
        (
            "[secrets.a]\nkind = \"bearer\"\ntoken_env = \"PROCOS_TEST_UNSET_TOKEN\"\ndestinations = [\"x\"]",
            "PROCOS_TEST_UNSET_TOKEN",
        ),
    ] {
        let table: toml::Table = toml::from_str(settings).unwrap();
        let err = crate::build("http", "web", &table, &BuildContext::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{settings}: {err}");
    }
}

#[test]
fn error_codes_match_exact_statuses_before_classes() {
    let codes = ErrorCodes::parse(
        &json!({"404": "NOT_FOUND", "4xx": "CLIENT"})
            .as_object()
            .cloned()
            .unwrap(),
        "k",
    )
    .unwrap();
    assert_eq!(codes.code(404), Some("NOT_FOUND"));
    assert_eq!(codes.code(418), Some("CLIENT"));
    assert_eq!(codes.code(500), None);
    let task =
        ErrorCodes::parse(&json!({"4xx": "TASK"}).as_object().cloned().unwrap(), "k").unwrap();
    assert_eq!(codes.over(task).code(418), Some("TASK"));
}

/// Pinning the checked addresses takes a client per destination; building one loads the
/// platform's root certificates (tens of milliseconds), so it is kept for the next request.
#[tokio::test]
async fn a_client_is_built_once_per_destination() {
    let server = Server::start(|_, _| Reply::new(200, "text/plain", "ok"));
    let adapter = built(&format!("allow = [\"127.0.0.1:{}\"]", server.port));
    let request = || run(&adapter, task(json!({}), json!({"url": server.url("/")})));
    let started = Instant::now();
    assert!(matches!(request().await, Outcome::Complete(_)));
    let first = started.elapsed();
    let started = Instant::now();
    for _ in 0..20 {
        assert!(matches!(request().await, Outcome::Complete(_)));
    }
    let next = started.elapsed() / 20;
    eprintln!("first request (client built): {first:?}; next ones: {next:?}");
    assert!(next < Duration::from_millis(100), "{next:?}");
}
