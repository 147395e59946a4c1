//! What the integration tests share: one engine, and the model servers of the LLM tests. Each is
//! taken from the environment when given (`PROCOS_TEST_ENGINE_URL`, `PROCOS_TEST_LLM_URL`,
//! `PROCOS_TEST_OLLAMA_URL`), else started here on first use, once per test binary, so that a
//! plain `cargo test` runs on its own. What cannot be started fails the test, naming what is
//! missing and how to get it; nothing is skipped.
//!
//! Each service is started from a thread of its own that lives as long as the test binary: the
//! kernel sets `PR_SET_PDEATHSIG` on the engine (and this module on the model servers), and Linux
//! sends that signal when the *thread* that spawned the child ends. A `#[tokio::test]`'s runtime
//! threads end with the test, which would take the shared engine down with the first test that
//! used it. At exit, an `atexit` handler kills and reaps what was started and removes the
//! engine's data; the death signal covers a test binary that is killed outright.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once, OnceLock, PoisonError, mpsc};
use std::time::Duration;

use camunda_client::{Auth, EngineClient};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// The shared engine's REST URL: `PROCOS_TEST_ENGINE_URL`, or an engine booted for this test
/// binary through the kernel's own [`procos_kernel::LocalEngine`]. Panics, saying what is
/// missing, when there is none.
pub fn engine_url() -> &'static str {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    // Tests that ask while the engine boots wait here for the one boot; a failed boot is
    // remembered, so every test reports it at once instead of booting again.
    let url = URL.get_or_init(|| match std::env::var("PROCOS_TEST_ENGINE_URL") {
        Ok(url) => Ok(url),
        Err(_) => boot_engine(),
    });
    url.as_deref().unwrap_or_else(|why| panic!("{why}"))
}

/// An OpenAI-compatible server (`…/v1`) serving SmolLM2 as `smollm2`: `PROCOS_TEST_LLM_URL`, or
/// llama-cpp-python's server as `scripts/llm-server.sh` installed it.
pub fn llm_url() -> &'static str {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    let url = URL.get_or_init(|| match std::env::var("PROCOS_TEST_LLM_URL") {
        Ok(url) => Ok(url),
        Err(_) => start_llm_server(),
    });
    url.as_deref().unwrap_or_else(|why| panic!("{why}"))
}

/// The same model served by a real Ollama: `PROCOS_TEST_OLLAMA_URL`, or Ollama as
/// `scripts/ollama.sh` built it, with the model it registered.
pub fn ollama_url() -> &'static str {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    let url = URL.get_or_init(|| match std::env::var("PROCOS_TEST_OLLAMA_URL") {
        Ok(url) => Ok(url),
        Err(_) => start_ollama(),
    });
    url.as_deref().unwrap_or_else(|why| panic!("{why}"))
}

/// The issuer of the OAuth2 tests: NAV's mock-oauth2-server as `scripts/oauth2-server.sh`
/// installed it, serving the issuer `procos` (`…/procos`, token endpoint `…/procos/token`). Its
/// tokens live 20 s (the answer says 19), so that a test sees them renewed (after 15.2 s, a
/// fifth of their life early) while two calls in a row, on a loaded machine, still share one;
/// the scope `engine-rest` gets the audience `engine-rest`, any other scope the audience
/// `elsewhere`.
pub fn oauth2_issuer() -> &'static str {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    let url = URL.get_or_init(start_oauth2_server);
    url.as_deref().unwrap_or_else(|why| panic!("{why}"))
}

fn start_oauth2_server() -> Result<String, String> {
    let cache = procos_cache();
    let installs = cache.join("oauth2-server");
    let lib = std::fs::read_dir(&installs)
        .ok()
        .and_then(|versions| {
            versions
                .filter_map(Result::ok)
                .map(|version| version.path())
                .find(|version| version.join(".complete").is_file())
        })
        .map(|version| version.join("lib"))
        .ok_or_else(|| {
            format!(
                "the OAuth2 tests need an OAuth2 server, and none is installed in {}: run \
                 `scripts/oauth2-server.sh install` once (scripts/test.sh does)",
                installs.display()
            )
        })?;
    let port = super::free_port();
    let log = log_file(&cache, "oauth2-server.log")?;
    let url = format!("http://127.0.0.1:{port}/procos");
    let config = serde_json::json!({
        "interactiveLogin": false,
        "tokenCallbacks": [{
            "issuerId": "procos",
            "tokenExpiry": 20,
            "requestMappings": [
                {"requestParam": "scope", "match": "engine-rest",
                 "claims": {"sub": "${clientId}", "aud": ["engine-rest"]}},
                {"requestParam": "scope", "match": "*",
                 "claims": {"sub": "${clientId}", "aud": ["elsewhere"]}},
            ],
        }],
    });
    let mut command = Command::new("java");
    command
        .arg("-cp")
        .arg(lib.join("*"))
        .arg("no.nav.security.mock.oauth2.StandaloneMockOAuth2ServerKt")
        .env("SERVER_HOSTNAME", "127.0.0.1")
        .env("SERVER_PORT", port.to_string())
        .env("JSON_CONFIG", config.to_string());
    start_server(
        "the OAuth2 server",
        command,
        log,
        format!("{url}/.well-known/openid-configuration"),
    )?;
    Ok(url)
}

/// A real OpenTelemetry trace receiver: Jaeger v2 as `scripts/jaeger.sh` built it, keeping
/// traces in memory; (its OTLP/HTTP base URL, its query API's base URL).
pub fn jaeger() -> &'static (String, String) {
    static URLS: OnceLock<Result<(String, String), String>> = OnceLock::new();
    let urls = URLS.get_or_init(start_jaeger);
    urls.as_ref().unwrap_or_else(|why| panic!("{why}"))
}

fn start_jaeger() -> Result<(String, String), String> {
    let cache = procos_cache();
    let jaeger = std::fs::read_dir(cache.join("jaeger"))
        .ok()
        .and_then(|versions| {
            versions
                .filter_map(Result::ok)
                .map(|version| version.path().join("jaeger"))
                .find(|binary| binary.is_file())
        })
        .ok_or_else(|| {
            format!(
                "the trace tests need an OTLP receiver, and no Jaeger is built in {}: run \
                 `scripts/jaeger.sh install` once (scripts/test.sh does)",
                cache.join("jaeger").display()
            )
        })?;
    let (grpc, http, query) = (super::free_port(), super::free_port(), super::free_port());
    let log = log_file(&cache, "jaeger-tests.log")?;
    // As scripts/jaeger.sh writes it: OTLP in, an in-memory store, the query API, all on
    // loopback; Jaeger's own metrics and self-tracing off.
    let config = format!(
        "service:\n  extensions: [jaeger_storage, jaeger_query]\n  pipelines:\n    traces:\n      \
         receivers: [otlp]\n      exporters: [jaeger_storage_exporter]\n  telemetry:\n    metrics:\n      \
         level: none\nextensions:\n  jaeger_storage:\n    backends:\n      memstore:\n        memory:\n          \
         max_traces: 100000\n  jaeger_query:\n    storage:\n      traces: memstore\n    enable_tracing: false\n    \
         http:\n      endpoint: 127.0.0.1:{query}\n    grpc:\n      endpoint: 127.0.0.1:0\nreceivers:\n  otlp:\n    \
         protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         exporters:\n  jaeger_storage_exporter:\n    trace_storage: memstore\n"
    );
    let config_file = log.with_file_name(format!("jaeger-tests-{query}.yaml"));
    std::fs::write(&config_file, config)
        .map_err(|e| format!("cannot write {}: {e}", config_file.display()))?;
    let mut command = Command::new(jaeger);
    command.arg("--config").arg(&config_file);
    let query_url = format!("http://127.0.0.1:{query}");
    start_server(
        "Jaeger",
        command,
        log,
        format!("{query_url}/api/v3/services"),
    )?;
    Ok((format!("http://127.0.0.1:{http}"), query_url))
}

fn boot_engine() -> Result<String, String> {
    let jar = super::engine_jar();
    if !jar.is_file() {
        return Err(format!(
            "the integration tests need an engine, and there is no engine jar at {} to boot one: run \
             scripts/test.sh once (it builds the jar), or `mvn -f docker/camunda package`, or point \
             PROCOS_ENGINE_JAR at the jar; or point PROCOS_TEST_ENGINE_URL at a running engine's \
             /engine-rest",
            jar.display()
        ));
    }
    if let Err(e) = Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        return Err(format!(
            "the integration tests boot an engine with `java`, which cannot be run ({e}): install \
             Java 17 or later (scripts/test.sh installs openjdk-17-jdk-headless), or point \
             PROCOS_TEST_ENGINE_URL at a running engine's /engine-rest"
        ));
    }
    let data_dir = engine_data_dir()?;
    let port = super::free_port();
    let url = format!("http://127.0.0.1:{port}/engine-rest");
    eprintln!(
        "tests: booting the shared engine on port {port} (log: {}; set PROCOS_TEST_ENGINE_URL to use a running one)",
        data_dir.join("engine.log").display()
    );
    on_lasting_thread("shared-engine", move |runtime| {
        let engine = procos_kernel::LocalEngine {
            launcher: procos_kernel::Launcher::Jar {
                java: "java".into(),
                jar,
            },
            port,
            data_dir: data_dir.clone(),
            env: Vec::new(),
        };
        let client = EngineClient::new(&url, Auth::None).map_err(|e| e.to_string())?;
        let booted = runtime.block_on(engine.boot(
            &client,
            Duration::from_secs(180),
            &CancellationToken::new(),
            |_| {},
        ));
        match booted {
            Ok(process) => {
                at_exit(process.pid(), Some(data_dir));
                Ok((url, process))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&data_dir);
                Err(format!("the shared test engine did not boot: {e}"))
            }
        }
    })
}

/// A fresh directory for the engine's H2 database and log, under the target directory's `tmp`
/// rather than `/tmp`: should a killed test binary leave it behind, it is found and removed by
/// the next run (named after the pid that made it) or by `cargo clean`.
fn engine_data_dir() -> Result<PathBuf, String> {
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(parent) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("procos-test-engine-"))
            else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = parent.join(format!("procos-test-engine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create {} for the test engine: {e}", dir.display()))?;
    Ok(dir)
}

fn start_llm_server() -> Result<String, String> {
    let cache = procos_cache();
    let python = cache.join("llm/venv/bin/python");
    let model = cache.join("llm/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !python.is_file() || !model.is_file() {
        return Err(format!(
            "the LLM tests need a model server, and none is installed in {}: run \
             `scripts/llm-server.sh install` once (scripts/test.sh does), or point \
             PROCOS_TEST_LLM_URL at an OpenAI-compatible server's /v1 serving SmolLM2 as `smollm2`",
            cache.join("llm").display()
        ));
    }
    let port = super::free_port();
    let log = log_file(&cache, "llm-server.log")?;
    let url = format!("http://127.0.0.1:{port}/v1");
    let mut command = Command::new(python);
    command
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_ctx", "2048", "--model_alias", "smollm2"]);
    start_server("the model server", command, log, format!("{url}/models"))?;
    Ok(url)
}

fn start_ollama() -> Result<String, String> {
    let cache = procos_cache();
    let ollama = cache.join("ollama/ollama");
    let models = cache.join("ollama/models");
    if !ollama.is_file() || !models.join("manifests").is_dir() {
        return Err(format!(
            "the LLM tests' Ollama provider needs a real Ollama, and none is installed in {}: run \
             `scripts/ollama.sh install` once (scripts/test.sh does), or point \
             PROCOS_TEST_OLLAMA_URL at an Ollama server that serves SmolLM2 as `smollm2`",
            cache.join("ollama").display()
        ));
    }
    let port = super::free_port();
    let log = log_file(&cache, "ollama.log")?;
    let url = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(ollama);
    command
        .arg("serve")
        .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
        .env("OLLAMA_MODELS", models)
        // Loading the model is most of a short answer: keep it loaded for the whole run.
        .env("OLLAMA_KEEP_ALIVE", "-1");
    start_server("Ollama", command, log, format!("{url}/api/tags"))?;
    Ok(url)
}

/// Starts `command` (output to `log`) from a lasting thread and waits until `probe` answers.
fn start_server(
    what: &str,
    mut command: Command,
    log: PathBuf,
    probe: String,
) -> Result<(), String> {
    let name = what;
    let what = what.to_owned();
    on_lasting_thread(name, move |runtime| {
        let output = std::fs::File::create(&log)
            .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
        let errors = output
            .try_clone()
            .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .process_group(0);
        die_with_this_thread(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {what} ({command:?}): {e}"))?;
        at_exit(child.id().into(), None);
        let ready = runtime.block_on(async {
            let http = reqwest::Client::new();
            for _ in 0..240 {
                if http
                    .get(&probe)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    return true;
                }
                if child.try_wait().ok().flatten().is_some() {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            false
        });
        if ready {
            Ok(((), child))
        } else {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "{what} did not answer at {probe} within 120 s; the end of {}:\n{}",
                log.display(),
                tail.join("\n")
            ))
        }
    })
}

/// Runs `start` on a new thread with a runtime of its own, and hands back its result. On
/// success the thread keeps what `start` made (the child process, the runtime) and parks until
/// the test binary exits, so that the death signal its children carry fires only then.
fn on_lasting_thread<T, K>(
    name: &str,
    start: impl FnOnce(&Runtime) -> Result<(T, K), String> + Send + 'static,
) -> Result<T, String>
where
    T: Send + 'static,
    K: 'static,
{
    let (sender, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = sender.send(Err(format!("cannot build a runtime: {e}")));
                    return;
                }
            };
            match start(&runtime) {
                Ok((value, kept)) => {
                    let _ = sender.send(Ok(value));
                    let _kept = (kept, runtime);
                    loop {
                        std::thread::park();
                    }
                }
                Err(why) => {
                    let _ = sender.send(Err(why));
                }
            }
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a thread for {name}: {e}"));
    }
    receiver
        .recv()
        .map_err(|_| format!("the thread starting {name} ended without a word"))?
}

/// Process groups started here, and directories to remove once they are gone.
static STARTED: Mutex<Vec<(Option<u32>, Option<PathBuf>)>> = Mutex::new(Vec::new());

/// Kills and reaps `pid`'s process group, then removes `dir`, when the test binary exits.
fn at_exit(pid: Option<u32>, dir: Option<PathBuf>) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: atexit(3) only records the function; `clean_up` is an `extern "C"` function
        // without arguments that does not unwind (it panics nowhere).
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::atexit(clean_up);
        }
    });
    STARTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((pid, dir));
}

extern "C" fn clean_up() {
    // try_lock: a thread stopped while registering must not hang the exit; the death signal
    // still takes its process.
    let mut started = match STARTED.try_lock() {
        Ok(started) => started,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for (pid, dir) in started.drain(..) {
        if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
            let pid = Pid::from_raw(pid);
            // Each was started as the leader of its own process group.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Has Linux kill the child when the thread that spawns it ends; see the module's comment.
fn die_with_this_thread(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// `$PROCOS_CACHE`, with `scripts/lib.sh`'s default.
fn procos_cache() -> PathBuf {
    if let Some(cache) = std::env::var_os("PROCOS_CACHE") {
        return PathBuf::from(cache);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("procos")
}

/// A log in the cache's `logs`, where `scripts/llm-server.sh` keeps the same servers' logs.
fn log_file(cache: &Path, name: &str) -> Result<PathBuf, String> {
    let logs = cache.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    Ok(logs.join(name))
}
