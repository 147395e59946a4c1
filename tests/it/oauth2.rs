//! The fleet against an engine whose REST API takes only an OAuth2 issuer's tokens: the engine
//! jar as a resource server validating the JWTs of a real OAuth2 server (mock-oauth2-server, on
//! loopback), the kernel and a worker getting their tokens by the client credentials grant.

use std::time::Duration;

use camunda_client::{Auth, ClientCredentials, ClientError, EngineClient, TokenSource};

use crate::support::{self, ProcosProcess, assert_eventually};

const SECRET: &str = "fleet-s3cret-value";

fn credentials(issuer: &str, scope: &str) -> ClientCredentials {
    ClientCredentials {
        token_url: format!("{issuer}/token"),
        client_id: "procos-fleet".into(),
        client_secret: SECRET.into(),
        scope: Some(scope.into()),
        audience: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_and_a_worker_reach_an_engine_that_takes_only_oauth2_tokens() {
    support::init_logging();
    let issuer = support::oauth2_issuer();
    let data = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let (_, engine) = support::boot_engine(
        port,
        data.path(),
        vec![
            (
                "SPRING_SECURITY_OAUTH2_RESOURCESERVER_JWT_ISSUER_URI".into(),
                issuer.to_owned(),
            ),
            (
                "SPRING_SECURITY_OAUTH2_RESOURCESERVER_JWT_AUDIENCES".into(),
                "engine-rest".into(),
            ),
        ],
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/engine-rest");

    // Without a token only the readiness probe answers; basic credentials are no token.
    let anonymous = EngineClient::new(&url, Auth::None).unwrap();
    assert!(anonymous.engines().await.is_ok());
    let refused = anonymous.latest_process_definitions().await.unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    let basic = EngineClient::new(
        &url,
        Auth::Basic {
            user: "demo".into(),
            password: "demo".into(),
        },
    )
    .unwrap();
    let refused = basic.latest_process_definitions().await.unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");

    // One token serves many calls, and is renewed before it expires (the issuer's live 20 s,
    // renewed after 15.2 s).
    let tokens = TokenSource::new(credentials(issuer, "engine-rest"));
    let client = EngineClient::new(&url, Auth::OAuth2(tokens.clone())).unwrap();
    client.latest_process_definitions().await.unwrap();
    client.latest_process_definitions().await.unwrap();
    assert_eq!(tokens.tokens_fetched(), 1);
    tokio::time::sleep(Duration::from_secs(16)).await;
    client.latest_process_definitions().await.unwrap();
    assert_eq!(tokens.tokens_fetched(), 2, "renewed before it expired");

    // A token the engine refuses (another audience) is fetched again once, then the 401 stands.
    let elsewhere = TokenSource::new(credentials(issuer, "other-api"));
    let refused = EngineClient::new(&url, Auth::OAuth2(elsewhere.clone()))
        .unwrap()
        .latest_process_definitions()
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    assert_eq!(
        elsewhere.tokens_fetched(),
        2,
        "one new token after a 401, no more"
    );

    // An issuer that cannot be reached is named, as a transient failure.
    let closed = format!("http://127.0.0.1:{}/procos", support::free_port());
    let unreachable = EngineClient::new(
        &url,
        Auth::OAuth2(TokenSource::new(credentials(&closed, "engine-rest"))),
    )
    .unwrap()
    .latest_process_definitions()
    .await
    .unwrap_err();
    assert!(
        matches!(&unreachable, ClientError::Token { url, transient: true, .. } if url.starts_with(&closed)),
        "{unreachable:?}"
    );

    // The kernel (readiness, deployment) and a worker, configured the way an operator would:
    // the secret from a file for one, from the environment for the other.
    let key = support::unique("oauth2");
    let topic = support::unique("oauth2");
    let init = tempfile::tempdir().unwrap();
    std::fs::write(
        init.path().join(format!("{key}.bpmn")),
        support::external_task_process(&key, &topic),
    )
    .unwrap();
    let secret_file = init.path().join("client-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let oauth2 = format!(
        "[engine.oauth2]\ntoken_url = \"{issuer}/token\"\nclient_id = \"procos-fleet\"\nscope = \"engine-rest\"\n"
    );
    let kernel = ProcosProcess::spawn_command(
        &["kernel", "--init-dir", init.path().to_str().unwrap()],
        &url,
        "kernel-oauth2",
        &format!(
            "{oauth2}client_secret_file = \"{}\"\n[kernel]\nroot_process = \"\"\n",
            secret_file.display()
        ),
        &[],
    );
    let worker = ProcosProcess::spawn_with_env(
        &url,
        "worker-oauth2",
        &format!(
            "{oauth2}[worker]\nlong_poll = \"2s\"\n[topics.\"{topic}\"]\nadapter = \"echo\"\n"
        ),
        &[("PROCOS_ENGINE_OAUTH2_CLIENT_SECRET", SECRET)],
    );
    assert_eventually(
        "the kernel to deploy the init directory",
        Duration::from_secs(60),
        || async {
            let definitions = client.process_definitions(&key).await.ok()?;
            (!definitions.is_empty()).then_some(())
        },
    )
    .await;
    let first = support::start(&client, &key, Default::default()).await;
    support::wait_completed(&client, &first, Duration::from_secs(30)).await;
    // Past the worker's first token's life: its calls go on with a renewed one.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let second = support::start(&client, &key, Default::default()).await;
    support::wait_completed(&client, &second, Duration::from_secs(30)).await;

    let (worker_log, kernel_log) = (worker.log(), kernel.log());
    for log in [&worker_log, &kernel_log] {
        assert!(!log.contains(SECRET), "the secret reached a log:\n{log}");
        assert!(!log.contains("401"), "a call was refused:\n{log}");
    }
    drop((worker, kernel, engine));
}
