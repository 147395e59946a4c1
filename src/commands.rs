//! The subcommands: each builds its runtime part from the configuration and runs it until a
//! signal or its own end.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use camunda_client::{EngineClient, StartProcessInstance, Variable, Variables};
use procos_kernel::{
    BootReport, BootSettings, DeployReport, EngineEvent, EngineSupervisor, Kernel, KernelConfig,
    KernelError, KernelEvent, RootState, UnservedSettings, deploy_files, unserved_topic_message,
};
use procos_worker::{
    ObservabilityServer, Telemetry, TopicReport, TopicTable, Worker, WorkerConfig,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{self, EngineSection, ProcosConfig};
use crate::{Cli, Command, EngineArgs, EngineKind, reload, shutdown};

/// Exit code of `procos deploy` when some file was not deployed, and of `procos start` when the
/// engine refused the start.
const EXIT_REFUSED: u8 = 2;
/// Exit code of `procos status` when incidents are open.
const EXIT_INCIDENTS: u8 = 3;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let explicit =
        std::env::var_os("PROCOS_CONFIG").is_some() || cli.config != Path::new("procos.toml");
    let mut config = config::load(&cli.config, explicit)?;
    apply_engine_args(&mut config.engine, cli.engine);

    let shutdown = CancellationToken::new();
    // Owned here so the signal listener ends with the command, never detached.
    let mut background = JoinSet::new();
    background.spawn(shutdown::on_signal(shutdown.clone()));

    let result = match cli.command {
        Command::Up { workers, init_dir } => {
            if config.engine.connection.url.is_some() {
                bail!(
                    "`procos up` boots its own engine; for an engine that runs elsewhere use `procos kernel --engine-url …` and `procos worker`"
                );
            }
            let init_dir = init_dir.unwrap_or_else(|| config.kernel.init_dir.clone());
            kernel(config, &cli.config, &init_dir, workers, shutdown.clone()).await
        }
        Command::Kernel { init_dir } => {
            let init_dir = init_dir.unwrap_or_else(|| config.kernel.init_dir.clone());
            kernel(config, &cli.config, &init_dir, 0, shutdown.clone()).await
        }
        Command::Worker => worker(config, &cli.config, shutdown.clone()).await,
        Command::Deploy { files } => deploy(&config, &files).await,
        Command::Start {
            key,
            variables,
            business_key,
        } => start(&config, &key, &variables, business_key).await,
        Command::Status { workers } => status(&config, &workers).await,
    };
    background.shutdown().await;
    result
}

fn apply_engine_args(engine: &mut EngineSection, args: EngineArgs) {
    let EngineArgs {
        engine_url,
        engine_user,
        engine_password,
        engine_token,
        engine_oauth2_token_url,
        engine_oauth2_client_id,
        engine_oauth2_client_secret,
        engine_oauth2_client_secret_file,
        engine_oauth2_scope,
        engine_oauth2_audience,
        engine_kind,
        engine_jar,
        camunda_run_home,
        port,
        data_dir,
    } = args;
    let EngineSection { connection, boot } = engine;
    connection.url = engine_url.or(connection.url.take());
    connection.user = engine_user.or(connection.user.take());
    connection.password = engine_password.or(connection.password.take());
    connection.token = engine_token.or(connection.token.take());
    let oauth2 = &mut connection.oauth2;
    oauth2.token_url = engine_oauth2_token_url.or(oauth2.token_url.take());
    oauth2.client_id = engine_oauth2_client_id.or(oauth2.client_id.take());
    oauth2.client_secret = engine_oauth2_client_secret.or(oauth2.client_secret.take());
    oauth2.client_secret_file =
        engine_oauth2_client_secret_file.or(oauth2.client_secret_file.take());
    oauth2.scope = engine_oauth2_scope.or(oauth2.scope.take());
    oauth2.audience = engine_oauth2_audience.or(oauth2.audience.take());
    boot.camunda_run_home = camunda_run_home.or(boot.camunda_run_home.take());
    if let Some(jar) = engine_jar.or(engine_kind.map(EngineKind::jar)) {
        boot.jar = jar;
    }
    if let Some(port) = port {
        boot.port = port;
    }
    if let Some(dir) = data_dir {
        boot.data_dir = dir;
    }
}

/// `procos kernel` and `procos up`: get an engine (boot one, or wait for a remote one), deploy
/// the init directory, run `workers` local workers, and stop everything in order on a signal.
async fn kernel(
    config: ProcosConfig,
    config_path: &Path,
    init_dir: &Path,
    workers: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let client = config.engine.connection().client()?;
    let telemetry = Telemetry::new();
    // Workers are configured before the engine boots, so a bad topic table fails at once.
    let fleet_members = (0..workers)
        .map(|i| {
            let mut worker_config = config.worker.clone();
            if let (Some(id), true) = (&worker_config.worker_id, workers > 1) {
                worker_config.worker_id = Some(format!("{id}-{i}"));
            }
            Worker::new(
                client.clone(),
                worker_config,
                &config.topics,
                telemetry.clone(),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid worker configuration in {}", config_path.display()))?;
    // The workers take a changed topic table while they run.
    let table = TopicTable::new(&config.worker, config.topics.clone(), telemetry.clone());
    let mut observability = if workers > 0 {
        serve_observability(&config.worker, config_path, telemetry, &shutdown).await?
    } else {
        JoinSet::new()
    };
    let started = Instant::now();
    let progress =
        |waited: Duration| say(&format!("waiting for the engine… {} s", waited.as_secs()));

    let boot_settings = &config.engine.boot;
    let mut supervisor: Option<EngineSupervisor> = None;
    if config.engine.connection.url.is_some() {
        say(&format!("waiting for the engine at {}", client.base_url()));
        procos_kernel::wait_until_ready(&client, boot_settings.ready_timeout, &shutdown, progress)
            .await
            .context("the engine is not ready")?;
    } else {
        let local = boot_settings.local_engine();
        say(&format!(
            "booting the engine {} on port {} (log: {})",
            match &boot_settings.camunda_run_home {
                Some(home) => format!("of Camunda Run at {}", home.display()),
                None => boot_settings.jar.display().to_string(),
            },
            local.port,
            local.data_dir.join("engine.log").display()
        ));
        match EngineSupervisor::boot(
            local,
            client.clone(),
            boot_settings.ready_timeout,
            &shutdown,
            progress,
        )
        .await
        {
            Ok(booted) => supervisor = Some(booted),
            Err(KernelError::Cancelled) => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e).context("the engine did not boot"),
        }
    }
    say(&format!(
        "engine ready after {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    let served_topics = config.served_topics();
    // The unserved-topic check follows the topic table as it is reloaded.
    let (served_updates, served_receiver) = watch::channel(served_topics.clone());
    let mut kernel = Kernel::new(
        client.clone(),
        KernelConfig {
            init_dir: init_dir.to_path_buf(),
            library_dir: Some(config.kernel.library_dir.clone())
                .filter(|dir| !dir.as_os_str().is_empty()),
            root_process: Some(config.kernel.root_process.clone()).filter(|k| !k.is_empty()),
            served_topics,
            watch_interval: config.kernel.watch_interval,
            unserved: UnservedSettings::new(
                config.worker.long_poll,
                config.kernel.fail_unserved_after,
            ),
        },
    )
    .follow_served_topics(served_receiver);
    print_boot(&kernel.boot().await, init_dir);
    let mut kernel_loop = JoinSet::new();
    let watched = init_dir.to_path_buf();
    kernel_loop.spawn(kernel.run(shutdown.child_token(), move |event| {
        print_kernel_event(&event, &watched);
    }));
    say(&format!("watching {} for changes", init_dir.display()));

    let mut fleet = JoinSet::new();
    for worker in fleet_members {
        fleet.spawn(worker.run_with_table(shutdown.child_token(), table.updates()));
    }
    let mut reloads = JoinSet::new();
    reloads.spawn(reload::watch(
        config_path.to_path_buf(),
        reload::Takers {
            workers: (workers > 0).then_some(table),
            kernel: Some(served_updates),
        },
        shutdown.clone(),
    ));
    if workers > 0 {
        say(&format!(
            "{workers} worker(s) serving topics: {}",
            config.topics.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if supervisor.is_some() {
        print_welcome(&client, boot_settings);
    }
    say("press Ctrl-C to stop");

    let code = match supervisor.as_mut() {
        Some(engine) => match engine.supervise(&shutdown, print_engine_event).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("procos: the engine cannot be restarted, stopping: {e}");
                shutdown.cancel();
                ExitCode::FAILURE
            }
        },
        None => {
            shutdown.cancelled().await;
            ExitCode::SUCCESS
        }
    };

    while fleet.join_next().await.is_some() {}
    reloads.shutdown().await;
    kernel_loop.shutdown().await;
    observability.shutdown().await;
    if let Some(engine) = supervisor {
        say("stopping the engine");
        engine.stop(boot_settings.stop_timeout).await;
    }
    say("stopped");
    Ok(code)
}

/// `procos worker`: a fleet member for an engine that runs elsewhere.
async fn worker(
    config: ProcosConfig,
    config_path: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let client = config.engine.connection().client()?;
    let telemetry = Telemetry::new();
    let worker = Worker::new(
        client,
        config.worker.clone(),
        &config.topics,
        telemetry.clone(),
    )
    .with_context(|| {
        format!(
            "the worker refuses to start: invalid configuration in {}",
            config_path.display()
        )
    })?;
    let table = TopicTable::new(&config.worker, config.topics.clone(), telemetry.clone());
    let updates = table.updates();
    let mut observability =
        serve_observability(&config.worker, config_path, telemetry, &shutdown).await?;
    let mut reloads = JoinSet::new();
    reloads.spawn(reload::watch(
        config_path.to_path_buf(),
        reload::Takers {
            workers: Some(table),
            kernel: None,
        },
        shutdown.clone(),
    ));
    worker.run_with_table(shutdown.clone(), updates).await;
    // The endpoint outlives the drain so that /readyz said "shutting down" meanwhile.
    shutdown.cancel();
    reloads.shutdown().await;
    observability.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Binds `[worker] listen` (unless it is `off`) and serves `/metrics`, `/healthz` and `/readyz`
/// until `shutdown`, in the returned set. A port in use stops the command before anything is
/// fetched.
async fn serve_observability(
    worker: &WorkerConfig,
    config_path: &Path,
    telemetry: Telemetry,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinSet<()>> {
    let mut tasks = JoinSet::new();
    let invalid = || format!("invalid worker configuration in {}", config_path.display());
    let Some(addr) = worker.listen_addr().with_context(invalid)? else {
        return Ok(tasks);
    };
    let server = ObservabilityServer::bind(addr, telemetry)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {addr} for /metrics, /healthz and /readyz; set `listen` under [worker] \
                 (or PROCOS_WORKER__LISTEN) to a free address, or to \"off\""
            )
        })?;
    let bound = server.local_addr().unwrap_or(addr);
    say(&format!(
        "metrics and health on http://{bound}/metrics, /healthz, /readyz"
    ));
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = server.run(shutdown).await {
            tracing::error!(error = %e, "the observability endpoint stopped");
        }
    });
    Ok(tasks)
}

/// `procos deploy FILE…`: exit 0 when every file deployed (or was unchanged), 2 otherwise.
async fn deploy(config: &ProcosConfig, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let client: EngineClient = config.engine.connection().client()?;
    let report = deploy_files(&client, files).await;
    print_report(&report);
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    })
}

/// `procos start KEY`: prints the new instance's id.
async fn start(
    config: &ProcosConfig,
    key: &str,
    variables: &[String],
    business_key: Option<String>,
) -> anyhow::Result<ExitCode> {
    let client = config.engine.connection().client()?;
    let variables = variables
        .iter()
        .map(|pair| parse_variable(pair))
        .collect::<anyhow::Result<Variables>>()?;
    let start = StartProcessInstance {
        variables,
        business_key,
    };
    match client.start_process_instance(key, &start).await {
        Ok(instance) => {
            println!("{}", instance.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_transient() => Err(e).context("the engine is not answering"),
        Err(e) => {
            eprintln!("procos: the engine refused to start `{key}`: {e}");
            if e.is_not_found() {
                eprintln!(
                    "procos: deploy a process with this id first (`procos status` lists the deployed ones)"
                );
            }
            Ok(ExitCode::from(EXIT_REFUSED))
        }
    }
}

/// `NAME=VALUE`: JSON when VALUE parses as JSON, a string otherwise.
fn parse_variable(pair: &str) -> anyhow::Result<(String, Variable)> {
    let Some((name, value)) = pair.split_once('=') else {
        bail!("`--var {pair}`: expected NAME=VALUE, e.g. --var amount=42 or --var customer=ACME");
    };
    let name = name.trim();
    if name.is_empty() {
        bail!("`--var {pair}`: the variable has no name; expected NAME=VALUE");
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    let variable = Variable::from_output(value)
        .map_err(|reason| anyhow::anyhow!("`--var {pair}`: {reason}"))?;
    Ok((name.to_owned(), variable))
}

/// `procos status`: what is deployed, what runs, what waits for a worker that does not come,
/// which topics a worker cannot serve, what is stuck.
async fn status(config: &ProcosConfig, workers: &[String]) -> anyhow::Result<ExitCode> {
    let client = config.engine.connection().client()?;
    let definitions = client
        .latest_process_definitions()
        .await
        .with_context(|| format!("cannot read the engine at {}", client.base_url()))?;
    let incidents = client.incidents(None).await?;
    println!("{:<32} {:>7} {:>9}  name", "process", "version", "running");
    for definition in &definitions {
        let running = client.process_instances(&definition.key).await?.len();
        println!(
            "{:<32} {:>7} {:>9}  {}",
            definition.key,
            definition.version,
            running,
            definition.name.as_deref().unwrap_or("")
        );
    }
    let table = config.served_topics();
    let stale_after = procos_kernel::stale_after(config.worker.long_poll);
    let unserved = procos_kernel::survey(&client, &table, stale_after).await?;
    if !unserved.is_empty() {
        println!(
            "\n{} topic(s) with waiting tasks and no worker serving them:",
            unserved.len()
        );
        for topic in &unserved {
            println!("  {}", unserved_topic_message(topic));
        }
    }
    print_worker_reports(&worker_reports(config, workers).await);
    if incidents.is_empty() {
        println!("\nno open incidents");
        return Ok(ExitCode::SUCCESS);
    }
    println!("\n{} open incident(s):", incidents.len());
    for incident in &incidents {
        println!(
            "  {} at {} in instance {}: {}",
            incident.incident_type,
            incident.activity_id.as_deref().unwrap_or("?"),
            incident.process_instance_id.as_deref().unwrap_or("?"),
            incident
                .incident_message
                .as_deref()
                .unwrap_or("(no message)")
        );
    }
    Ok(ExitCode::from(EXIT_INCIDENTS))
}

/// How long `procos status` waits for a worker's endpoint.
const WORKER_REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Each worker endpoint's [`TopicReport`] (or why it could not be read): the ones named, else
/// the configuration's own `[worker] listen` (quietly skipped when nothing listens there: then
/// no local fleet runs).
async fn worker_reports(
    config: &ProcosConfig,
    named: &[String],
) -> Vec<(String, Result<TopicReport, String>)> {
    let mut urls: Vec<(String, bool)> = named
        .iter()
        .map(|url| (url.trim_end_matches('/').to_owned(), true))
        .collect();
    if urls.is_empty()
        && let Ok(Some(mut addr)) = config.worker.listen_addr()
    {
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        urls.push((format!("http://{addr}"), false));
    }
    let http = match reqwest::Client::builder()
        .timeout(WORKER_REPORT_TIMEOUT)
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            return urls
                .into_iter()
                .map(|(url, _)| (url, Err(e.to_string())))
                .collect();
        }
    };
    let mut reports = Vec::new();
    for (url, named) in urls {
        let answer = async {
            http.get(format!("{url}/topics"))
                .send()
                .await?
                .error_for_status()?
                .json::<TopicReport>()
                .await
        }
        .await;
        match answer {
            Ok(report) => reports.push((url, Ok(report))),
            Err(e) if named => reports.push((url, Err(e.to_string()))),
            Err(_) => {}
        }
    }
    reports
}

fn print_worker_reports(reports: &[(String, Result<TopicReport, String>)]) {
    for (url, report) in reports {
        match report {
            Ok(report) => {
                if !report.unavailable.is_empty() {
                    println!(
                        "
{} topic(s) the worker(s) at {url} cannot serve now, and do not fetch:",
                        report.unavailable.len()
                    );
                    for topic in &report.unavailable {
                        println!("  topic `{}` is unavailable: {}", topic.topic, topic.why);
                    }
                }
                if let Some(why) = &report.refused_table {
                    println!(
                        "
the worker(s) at {url} refused the edited topic table and serve the previous one: {why}"
                    );
                }
            }
            Err(why) => println!(
                "
cannot ask the worker(s) at {url}: {why}"
            ),
        }
    }
}

fn print_report(report: &DeployReport) {
    for (file, definitions) in &report.deployed {
        say(&format!(
            "deployed {} ({})",
            file.display(),
            definitions.join(", ")
        ));
    }
    for file in &report.unchanged {
        say(&format!("unchanged {} (no new version)", file.display()));
    }
    for problem in &report.problems {
        eprintln!("procos: not deployed: {problem}");
    }
    for (file, process) in &report.without_history_ttl {
        eprintln!(
            "procos: note: {}: process `{process}` has no camunda:historyTimeToLive, so the engine's default applies (ProcOS's engine: P180D; an engine without a default refuses it); set \"History cleanup › Time to live\" in Camunda Modeler to choose",
            file.display()
        );
    }
}

/// What the kernel's boot did: the deployments, unserved topics and the root orchestrator.
fn print_boot(boot: &BootReport, init_dir: &Path) {
    if boot.deploy.is_empty() {
        eprintln!(
            "procos: warning: the init directory {} holds no .bpmn, .dmn or .form file",
            init_dir.display()
        );
    }
    print_report(&boot.deploy);
    print_unserved(&boot.unserved_topics);
    match &boot.root {
        RootState::Started(id) => say(&format!("root orchestrator started (instance {id})")),
        RootState::AlreadyRunning(id) => say(&format!(
            "root orchestrator already running (instance {id})"
        )),
        RootState::NotDeployed(key) => eprintln!(
            "procos: warning: the root orchestrator `{key}` is not deployed; put its model in {} or set kernel.root_process",
            init_dir.display()
        ),
        RootState::Failed(why) => {
            eprintln!("procos: warning: could not start the root orchestrator: {why}")
        }
        RootState::Disabled => {}
    }
}

fn print_unserved(unserved_topics: &[(PathBuf, String)]) {
    for (file, topic) in unserved_topics {
        eprintln!(
            "procos: warning: {}: {}",
            file.display(),
            procos_kernel::unserved_message(topic)
        );
    }
}

/// What the running kernel noticed: the engine away and back, files redeployed.
fn print_kernel_event(event: &KernelEvent, init_dir: &Path) {
    match event {
        KernelEvent::EngineAway => eprintln!(
            "procos: warning: the engine does not answer; init-directory changes wait until it does"
        ),
        KernelEvent::EngineBack(boot) => {
            say("the engine answers again; checking the init directory and the root orchestrator");
            print_boot(boot, init_dir);
        }
        KernelEvent::Redeployed {
            deploy,
            unserved_topics,
        } => {
            print_report(deploy);
            if !deploy.deployed.is_empty() {
                say("new instances use the new version; running ones keep theirs");
            }
            print_unserved(unserved_topics);
        }
        KernelEvent::TopicUnserved(unserved) => {
            eprintln!("procos: warning: {}", unserved_topic_message(unserved))
        }
        KernelEvent::TopicServed { topic } => {
            say(&format!("topic `{topic}`: no task waits unserved any more"))
        }
        KernelEvent::UnservedTasksFailed {
            topic,
            failed,
            fail_after,
        } => eprintln!(
            "procos: warning: failed {failed} task(s) of topic `{topic}` into incidents: they waited longer than {} (kernel.fail_unserved_after) with no worker serving them",
            humantime::format_duration(*fail_after)
        ),
    }
}

/// What the supervisor did with an engine that exited by itself.
fn print_engine_event(event: EngineEvent) {
    match event {
        EngineEvent::Exited(exit) => eprintln!(
            "procos: the engine exited unexpectedly ({}); restarting it. The end of its log:\n{}",
            exit.status, exit.log_tail
        ),
        EngineEvent::RestartFailed {
            error,
            failures,
            retry_in,
        } => eprintln!(
            "procos: warning: the engine did not come back ({failures} failed boot(s) in a row; trying again in {}): {error}",
            humantime::format_duration(retry_in)
        ),
        EngineEvent::Restarted { restarts } => {
            say(&format!("the engine is back (restart {restarts})"))
        }
    }
}

fn print_welcome(client: &EngineClient, engine: &BootSettings) {
    let root = client
        .base_url()
        .trim_end_matches('/')
        .trim_end_matches("engine-rest");
    let user = std::env::var("CAMUNDA_ADMIN_USER").unwrap_or_else(|_| "demo".into());
    let password = std::env::var("CAMUNDA_ADMIN_PASSWORD").unwrap_or_else(|_| "demo".into());
    println!();
    println!("ProcOS is up.");
    println!("  Cockpit:  {root}camunda/app/cockpit/");
    println!("  Login:    {user} / {password}");
    println!("  REST API: {}", client.base_url());
    println!("  Data:     {}", engine.data_dir.display());
    println!();
}

fn say(message: &str) {
    eprintln!("procos: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_on_the_command_line_are_json_when_they_can_be() {
        assert_eq!(
            parse_variable("amount=42").unwrap(),
            ("amount".to_owned(), Variable::Integer(42))
        );
        assert_eq!(
            parse_variable("customer=ACME Corp").unwrap(),
            ("customer".to_owned(), Variable::String("ACME Corp".into()))
        );
        assert_eq!(
            parse_variable(r#"order={"id":7}"#).unwrap().1,
            Variable::Json(serde_json::json!({"id": 7}))
        );
        assert_eq!(
            parse_variable(r#"due={"type":"Date","value":"2026-01-01T00:00:00Z"}"#)
                .unwrap()
                .1
                .type_name(),
            "Date"
        );
        let err = parse_variable("no-equals-sign").unwrap_err().to_string();
        assert!(err.contains("NAME=VALUE"), "{err}");
        assert!(parse_variable("=5").is_err());
    }
}
