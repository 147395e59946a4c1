//! `llm`: asks a language model, through any OpenAI-compatible server (async-openai: OpenAI,
//! vLLM, llama.cpp, LiteLLM) or Ollama (ollama-rs).
//!
//! The prompt is a template over the task's variables (`{{name}}`; a missing variable fails the
//! task, never becomes an empty string). With a JSON schema the answer must validate: the
//! adapter asks for OpenAI's `json_schema` format, falls back to `json_object` with the schema
//! for servers that refuse it, and then to the schema in the prompt, with one repair round when
//! the answer does not validate. With `procos.choices` the answer is one of a fixed set (a
//! gateway without a default flow routes on it); an answer outside it after the repair round is
//! an incident naming it. In probabilistic mode it samples several seeded answers, votes,
//! stops early once a window of samples agrees, and throws a BPMN error when no answer wins.
//! On request (`procos.trace`) a step hands back what it did, as one [`Trace`] document: a
//! `Json` variable up to a size limit, a `File` variable beyond it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::{Adapter, AdapterTask, Failure, Outcome, Retry, async_trait};

/// `[topics.NAME.settings]` for `llm`: the operator's defaults for every step of the topic, the
/// providers a step may name, and the policy that bounds what a step may ask for. A step sets
/// its own model, prompt, schema and vote through `procos.*` settings (see [`TASK_SETTINGS`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// The kind of the topic's own provider (named `default`): `openai` (any OpenAI-compatible
    /// server) or `ollama`.
    #[serde(default)]
    provider: Provider,
    /// The `default` provider's server: e.g. `http://localhost:8000/v1` (OpenAI-compatible) or
    /// `http://localhost:11434` (Ollama). Default: OpenAI's, or Ollama's local port.
    #[serde(default)]
    base_url: Option<String>,
    /// The `default` provider's API key, or where to read it: `api_key_env` (an environment
    /// variable) or `api_key_file` (a secret file). None of them: no key.
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
    /// More providers, by the name a step gives in `procos.provider`
    /// (`[topics.NAME.settings.providers.local]`). Keys are held here, never in a model.
    #[serde(default)]
    providers: BTreeMap<String, ProviderConfig>,
    /// The provider of a step that names none. Default: `default` when the flat settings
    /// define it, else the only provider in `providers`.
    #[serde(default)]
    default_provider: Option<String>,
    /// The model's name on the server, for steps that name none.
    #[serde(default)]
    model: Option<String>,
    /// The system prompt (a template too).
    #[serde(default)]
    system: Option<String>,
    /// The user prompt, for steps that give none: `{{name}}` is replaced by the variable
    /// `name` (strings as they are, other values as JSON).
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    temperature: Option<f32>,
    /// The seed of the (first) answer; sample i of the probabilistic mode uses seed + i.
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    max_tokens: Option<u32>,
    /// How long one answer may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    /// A JSON schema the answer must satisfy, for steps that give none.
    #[serde(default)]
    schema: Option<Value>,
    /// Sample several answers and vote (`[topics.NAME.settings.probabilistic]`); a step that
    /// sets `procos.samples` votes with these as its defaults.
    #[serde(default)]
    probabilistic: Option<Probabilistic>,
    /// Hand back the step's [`Trace`] in the output `trace`, for steps that do not say
    /// (`procos.trace`).
    #[serde(default)]
    trace: bool,
    /// The largest trace kept as a `Json` variable, in bytes of its JSON text; a larger one
    /// becomes a `File` variable (`trace.json`), which Cockpit offers for download.
    #[serde(default = "default_trace_limit")]
    trace_limit: u64,
    /// What a step may ask for (`[topics.NAME.settings.policy]`).
    #[serde(default)]
    policy: LlmPolicy,
}

fn default_trace_limit() -> u64 {
    64 * 1024
}

/// One model server a step may name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `openai` (any OpenAI-compatible server) or `ollama`.
    #[serde(default)]
    kind: Provider,
    /// The server; default: OpenAI's, or Ollama's local port.
    #[serde(default)]
    base_url: Option<String>,
    /// The API key, or where to read it (`api_key_env`, `api_key_file`).
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
}

/// `[topics.NAME.settings.policy]`: the ceilings and allowlists a step's settings may not pass.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmPolicy {
    /// Models a step may name: exact names or prefixes ending in `*`. Empty: any model.
    models: Vec<String>,
    /// The longest `procos.timeout` a step may ask for.
    #[serde(with = "humantime_serde")]
    max_timeout: Duration,
    /// The most `procos.max_tokens` a step may ask for; none: no ceiling of its own.
    max_tokens: Option<u32>,
    /// The most `procos.samples` a step may ask for.
    max_samples: u32,
}

impl Default for LlmPolicy {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            max_timeout: Duration::from_secs(600),
            max_tokens: None,
            max_samples: 20,
        }
    }
}

impl LlmPolicy {
    fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty()
            || self
                .models
                .iter()
                .any(|allowed| match allowed.strip_suffix('*') {
                    Some(prefix) => model.starts_with(prefix),
                    None => model == allowed,
                })
    }
}

/// The per-task settings `llm` reads (`procos.NAME`).
const TASK_SETTINGS: &[&str] = &[
    "provider",
    "model",
    "system",
    "prompt",
    "schema",
    "choices",
    "temperature",
    "seed",
    "max_tokens",
    "timeout",
    "samples",
    "window",
    "min_confidence",
    "no_consensus_error",
    "trace",
    "trace_limit",
];

/// The name of the provider the flat settings define.
const DEFAULT_PROVIDER: &str = "default";

fn default_timeout() -> Duration {
    Duration::from_secs(120)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Provider {
    #[default]
    Openai,
    Ollama,
}

/// The probabilistic mode's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Probabilistic {
    /// Most answers asked for (the budget).
    samples: u32,
    /// Stop early once this many answers in a row agree.
    window: u32,
    /// The winning answer's share needed for an outcome; below it, a BPMN error.
    min_confidence: f64,
    /// The BPMN error code when no answer wins.
    no_consensus_error: String,
}

impl Default for Probabilistic {
    fn default() -> Self {
        Self {
            samples: 5,
            window: 3,
            min_confidence: 0.5,
            no_consensus_error: "NO_CONSENSUS".to_owned(),
        }
    }
}

impl Probabilistic {
    fn check(&self) -> Result<(), String> {
        if self.samples == 0 || self.window == 0 || self.window > self.samples {
            return Err(format!(
                "need samples ≥ window ≥ 1 (samples = {}, window = {})",
                self.samples, self.window
            ));
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(format!(
                "min_confidence must be between 0 and 1 (is {})",
                self.min_confidence
            ));
        }
        if self.no_consensus_error.trim().is_empty() {
            return Err("no_consensus_error is empty".to_owned());
        }
        Ok(())
    }
}

/// How a structured answer is asked for, most precise first; a server that refuses one gets
/// the next, and the adapter remembers which one worked.
const MODE_JSON_SCHEMA: u8 = 0;
const MODE_JSON_OBJECT: u8 = 1;
const MODE_PROMPT_ONLY: u8 = 2;

#[derive(Debug)]
enum Client {
    OpenAi(async_openai::Client<OpenAIConfig>),
    Ollama(ollama_rs::Ollama),
}

/// One model server the topic may use, by the name the operator gave it.
#[derive(Debug)]
struct Server {
    name: String,
    client: Client,
    base_url: String,
    /// The most precise structured-answer format this server accepted.
    structured_mode: AtomicU8,
}

#[derive(Debug)]
pub(crate) struct LlmAdapter {
    settings: LlmConfig,
    servers: BTreeMap<String, Server>,
    default_server: Option<String>,
}

/// One step's request: the topic's settings with what the step sets, within the policy.
#[derive(Debug)]
struct Step<'a> {
    server: &'a Server,
    model: String,
    system: Option<String>,
    prompt: String,
    schema: Option<Value>,
    /// `procos.choices`: the answer is one of these (the schema is [`choices_schema`]'s).
    choices: Option<Vec<String>>,
    temperature: Option<f32>,
    seed: Option<i64>,
    max_tokens: Option<u32>,
    timeout: Duration,
    vote: Option<Probabilistic>,
    /// Hand back a [`Trace`], kept as `Json` up to this many bytes: `procos.trace` and
    /// `procos.trace_limit`.
    trace_limit: Option<u64>,
}

/// One answer.
#[derive(Debug, Clone)]
struct Answer {
    text: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    model: String,
    finish_reason: String,
    latency_ms: u64,
}

/// What an `llm` step did, handed back on request in the output `trace` so that Cockpit shows
/// why the step decided what it did. This is the one shape of it: `kind` names its version, and
/// a reader (the knowledge log) stores it as it is. It holds what the model saw and said,
/// never a provider's key or address.
#[derive(Debug, Serialize)]
struct Trace<'a> {
    /// `procos.llm.trace/1`.
    kind: &'static str,
    /// The provider's name in the topic.
    provider: &'a str,
    model: &'a str,
    /// The system prompt and the prompt, filled with the task's variables (with the
    /// choices named, for a step with `procos.choices`).
    system: Option<&'a str>,
    prompt: &'a str,
    schema: Option<&'a Value>,
    choices: Option<&'a [String]>,
    temperature: Option<f32>,
    seed: Option<i64>,
    max_tokens: Option<u32>,
    /// Every call to the model, in order: each sample's answer and its repair round.
    calls: &'a [Call],
    /// The vote, for a step that sampled several answers.
    vote: Option<Value>,
    /// The step's answer (for a vote: the winning one).
    answer: &'a Value,
    usage: &'a Value,
    latency_ms: u64,
}

/// The trace's version of its shape.
const TRACE_KIND: &str = "procos.llm.trace/1";

/// One call to the model, as the trace keeps it.
#[derive(Debug, Serialize)]
struct Call {
    /// The vote's sample, from 1 (1 for a step without a vote).
    sample: u32,
    /// `answer`, or `repair`: the second ask after an answer that did not fit the schema.
    round: &'static str,
    seed: Option<i64>,
    /// How a structured answer was asked for: `json_schema`, `json_object` or `prompt` (the
    /// schema in the prompt); none for a text answer.
    format: Option<&'static str>,
    /// The model's raw text; none when the server refused the request.
    text: Option<String>,
    /// Why the text does not fit the schema, or why the server refused the request.
    problem: Option<String>,
    prompt_tokens: u64,
    completion_tokens: u64,
    finish_reason: Option<String>,
    latency_ms: u64,
}

impl Call {
    fn new(sample: u32, round: &'static str, seed: Option<i64>, format: Option<u8>) -> Self {
        Self {
            sample,
            round,
            seed,
            format: format.map(|mode| match mode {
                MODE_JSON_SCHEMA => "json_schema",
                MODE_JSON_OBJECT => "json_object",
                _ => "prompt",
            }),
            text: None,
            problem: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            finish_reason: None,
            latency_ms: 0,
        }
    }

    fn answered(mut self, answer: &Answer) -> Self {
        self.text = Some(answer.text.clone());
        self.prompt_tokens = answer.prompt_tokens;
        self.completion_tokens = answer.completion_tokens;
        self.finish_reason = Some(answer.finish_reason.clone());
        self.latency_ms = answer.latency_ms;
        self
    }

    fn problem(mut self, problem: &str) -> Self {
        self.problem = Some(problem.to_owned());
        self
    }
}

/// Why a call gave no answer.
#[derive(Debug)]
enum CallError {
    /// The server refused the request itself (a 4xx): maybe only its format.
    Refused(String),
    /// The server is away, overloaded or broken (connection error, 5xx, 429, timeout).
    Unavailable(String),
}

/// The API key a provider's settings name: inline, from an environment variable, or a file.
fn api_key(
    key: Option<&String>,
    env: Option<&String>,
    file: Option<&PathBuf>,
    at: &str,
) -> Result<Option<String>, String> {
    Ok(match (key, env, file) {
        (Some(key), _, _) => Some(key.clone()),
        (None, Some(var), _) => Some(
            std::env::var(var)
                .map_err(|_| format!("{at}api_key_env names `{var}`, which is not set"))?,
        ),
        (None, None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| format!("{at}api_key_file {}: {e}", file.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None, None) => None,
    })
}

fn server(
    name: &str,
    kind: Provider,
    base_url: Option<&String>,
    key: Option<String>,
) -> Result<Server, String> {
    let (client, base_url) = match kind {
        Provider::Openai => {
            let base = base_url
                .cloned()
                .unwrap_or_else(|| "https://api.openai.com/v1".to_owned());
            let mut config = OpenAIConfig::new().with_api_base(base.clone());
            if let Some(key) = key {
                config = config.with_api_key(key);
            }
            (
                Client::OpenAi(async_openai::Client::with_config(config)),
                base,
            )
        }
        Provider::Ollama => {
            let base = base_url
                .cloned()
                .unwrap_or_else(|| "http://localhost:11434".to_owned());
            let url = url::Url::parse(&base).map_err(|e| format!("base_url `{base}`: {e}"))?;
            (Client::Ollama(ollama_rs::Ollama::from_url(url)), base)
        }
    };
    Ok(Server {
        name: name.to_owned(),
        client,
        base_url,
        structured_mode: AtomicU8::new(MODE_JSON_SCHEMA),
    })
}

impl LlmAdapter {
    pub(crate) fn new(settings: LlmConfig) -> Result<Self, String> {
        if let Some(prompt) = &settings.prompt {
            check_template(prompt)?;
        }
        if let Some(system) = &settings.system {
            check_template(system)?;
        }
        if let Some(p) = &settings.probabilistic {
            p.check().map_err(|e| format!("probabilistic: {e}"))?;
        }
        if let Some(schema) = &settings.schema {
            jsonschema::validator_for(schema)
                .map_err(|e| format!("schema is not a JSON schema: {e}"))?;
        }
        if let Some(model) = &settings.model
            && !settings.policy.allows_model(model)
        {
            return Err(format!(
                "model `{model}` is not among policy.models ({})",
                settings.policy.models.join(", ")
            ));
        }
        if settings.timeout > settings.policy.max_timeout {
            return Err(format!(
                "timeout {} is above policy.max_timeout {}",
                humantime::format_duration(settings.timeout),
                humantime::format_duration(settings.policy.max_timeout)
            ));
        }
        let mut servers = BTreeMap::new();
        // The flat settings are the `default` provider unless only named ones are configured.
        let flat = settings.providers.is_empty()
            || settings.base_url.is_some()
            || settings.api_key.is_some()
            || settings.api_key_env.is_some()
            || settings.api_key_file.is_some();
        if flat {
            let key = api_key(
                settings.api_key.as_ref(),
                settings.api_key_env.as_ref(),
                settings.api_key_file.as_ref(),
                "",
            )?;
            servers.insert(
                DEFAULT_PROVIDER.to_owned(),
                server(
                    DEFAULT_PROVIDER,
                    settings.provider,
                    settings.base_url.as_ref(),
                    key,
                )?,
            );
        }
        for (name, p) in &settings.providers {
            if name == DEFAULT_PROVIDER && flat {
                return Err(format!(
                    "providers.{DEFAULT_PROVIDER} clashes with the provider the flat settings (base_url, api_key…) define; rename it"
                ));
            }
            let at = format!("providers.{name}.");
            let key = api_key(
                p.api_key.as_ref(),
                p.api_key_env.as_ref(),
                p.api_key_file.as_ref(),
                &at,
            )?;
            servers.insert(
                name.clone(),
                server(name, p.kind, p.base_url.as_ref(), key).map_err(|e| format!("{at}{e}"))?,
            );
        }
        let default_server = match &settings.default_provider {
            Some(name) if servers.contains_key(name) => Some(name.clone()),
            Some(name) => {
                return Err(format!(
                    "default_provider `{name}` is not a provider of this topic ({})",
                    servers.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            None if flat => Some(DEFAULT_PROVIDER.to_owned()),
            None if servers.len() == 1 => servers.keys().next().cloned(),
            None => None,
        };
        Ok(Self {
            settings,
            servers,
            default_server,
        })
    }

    /// The step `task` asks for: the topic's settings with the task's, checked against the
    /// policy. A setting that breaks the policy fails the task at once, naming the setting,
    /// the value asked for and the ceiling.
    fn step(&self, task: &AdapterTask) -> Result<Step<'_>, Failure> {
        let s = &task.settings;
        let topic = &self.settings;
        let policy = &topic.policy;
        let known = || self.servers.keys().cloned().collect::<Vec<_>>().join(", ");
        let provider = s.text("provider")?.or_else(|| self.default_server.clone());
        let Some(provider) = provider else {
            return Err(Failure::new(
                "the step names no provider and the topic has no default one",
                format!(
                    "Set `procos.provider` in the model to one of this topic's providers ({}), or have the operator set `default_provider` in the topic's settings.",
                    known()
                ),
                Retry::Never,
            ));
        };
        let Some(server) = self.servers.get(&provider) else {
            return Err(Failure::new(
                format!(
                    "the step names the provider `{provider}`, which this topic does not have (providers: {})",
                    known()
                ),
                "Name one of the topic's providers in `procos.provider`, or have the operator add it under the topic's `providers` table.",
                Retry::Never,
            ));
        };
        let Some(model) = s.text("model")?.or_else(|| topic.model.clone()) else {
            return Err(Failure::new(
                "the step names no model and the topic has no default one",
                "Set `procos.model` in the model (Camunda Modeler: the LLM template's Model field), or `model` in the topic's settings.",
                Retry::Never,
            ));
        };
        if !policy.allows_model(&model) {
            return Err(Failure::new(
                format!(
                    "the model `{model}` is not allowed on this topic (allowed: {})",
                    policy.models.join(", ")
                ),
                format!(
                    "The operator's policy (`policy.models` in the topic's settings) lists the models a step may name: {}. Choose one of them in `procos.model`, or have the operator add `{model}`.",
                    policy.models.join(", ")
                ),
                Retry::Never,
            ));
        }
        let template = |name: &str, default: Option<&String>| -> Result<Option<String>, Failure> {
            match s.text(name)? {
                Some(text) => {
                    check_template(&text).map_err(|e| {
                        Failure::new(
                            format!("the step's `procos.{name}` is not a valid template: {e}"),
                            "Placeholders are `{{variable}}`; fix the template in the model.",
                            Retry::Never,
                        )
                    })?;
                    Ok(Some(text))
                }
                None => Ok(default.cloned()),
            }
        };
        let Some(prompt) = template("prompt", topic.prompt.as_ref())? else {
            return Err(Failure::new(
                "the step has no prompt",
                "Set `procos.prompt` in the model (the LLM template's Prompt field), or `prompt` in the topic's settings.",
                Retry::Never,
            ));
        };
        let system = template("system", topic.system.as_ref())?;
        let schema = match s.json("schema")? {
            Some(schema) => {
                jsonschema::validator_for(&schema).map_err(|e| {
                    Failure::new(
                        format!("the step's `procos.schema` is not a JSON schema: {e}"),
                        "Give the schema as a JSON object, e.g. {\"type\": \"object\", \"properties\": {…}}.",
                        Retry::Never,
                    )
                })?;
                Some(schema)
            }
            None => topic.schema.clone(),
        };
        let choices = s.text_list("choices")?;
        let schema = match &choices {
            Some(choices) => {
                check_choices(choices, s.has("schema"))?;
                Some(choices_schema(choices))
            }
            None => schema,
        };
        let prompt = match &choices {
            // The schema holds the model to the set; the prompt tells it what the set is.
            Some(choices) => format!("{prompt}\n\nAnswer with one of: {}.", choices.join(", ")),
            None => prompt,
        };
        let temperature = match s.f64("temperature")? {
            Some(t) => Some(t as f32),
            None => topic.temperature,
        };
        let seed = s.i64("seed")?.or(topic.seed);
        let max_tokens = match s.u64("max_tokens")? {
            Some(n) => {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                match policy.max_tokens {
                    Some(ceiling) => {
                        Some(s.within("max_tokens", n, ceiling, "policy.max_tokens")?)
                    }
                    None => Some(n),
                }
            }
            None => topic.max_tokens,
        };
        let timeout = match s.duration("timeout")? {
            Some(asked) if asked > policy.max_timeout => {
                return Err(crate::above_ceiling(
                    &format!("procos.timeout = {}", humantime::format_duration(asked)),
                    &format!(
                        "policy.max_timeout = {}",
                        humantime::format_duration(policy.max_timeout)
                    ),
                ));
            }
            Some(asked) if asked.is_zero() => {
                return Err(Failure::new(
                    "the step's `procos.timeout` is zero, so no answer could ever arrive",
                    "Remove it, or set e.g. \"2m\".",
                    Retry::Never,
                ));
            }
            Some(asked) => asked,
            None => topic.timeout,
        };
        let votes = ["samples", "window", "min_confidence", "no_consensus_error"]
            .iter()
            .any(|name| s.has(name));
        let vote = if votes || topic.probabilistic.is_some() {
            let mut vote = topic.probabilistic.clone().unwrap_or_default();
            if let Some(n) = s.u64("samples")? {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                vote.samples = s.within("samples", n, policy.max_samples, "policy.max_samples")?;
                // A step that asks for fewer samples than the window would never stop early.
                if !s.has("window") {
                    vote.window = vote.window.min(vote.samples);
                }
            }
            if let Some(n) = s.u64("window")? {
                vote.window = u32::try_from(n).unwrap_or(u32::MAX);
            }
            if let Some(x) = s.f64("min_confidence")? {
                vote.min_confidence = x;
            }
            if let Some(code) = s.text("no_consensus_error")? {
                vote.no_consensus_error = code;
            }
            vote.check().map_err(|e| {
                Failure::new(
                    format!("the step's vote settings cannot work: {e}"),
                    "Fix `procos.samples`, `procos.window`, `procos.min_confidence` or `procos.no_consensus_error` in the model.",
                    Retry::Never,
                )
            })?;
            Some(vote)
        } else {
            None
        };
        let trace = s.bool("trace")?.unwrap_or(topic.trace);
        let trace_limit = s.u64("trace_limit")?.unwrap_or(topic.trace_limit);
        Ok(Step {
            server,
            model,
            system,
            prompt,
            schema,
            choices,
            temperature,
            seed,
            max_tokens,
            timeout,
            vote,
            trace_limit: trace.then_some(trace_limit),
        })
    }
}

impl Step<'_> {
    /// One validated answer: text, or JSON that satisfies the schema. Every call it makes goes
    /// into `calls`, as sample `sample`.
    async fn answer(
        &self,
        system: Option<&str>,
        prompt: &str,
        seed: Option<i64>,
        sample: u32,
        calls: &mut Vec<Call>,
    ) -> Result<(Value, Answer), Failure> {
        let Some(schema) = &self.schema else {
            let answer = self
                .call(system, prompt, None, seed, MODE_PROMPT_ONLY)
                .await?;
            calls.push(Call::new(sample, "answer", seed, None).answered(&answer));
            return Ok((Value::String(answer.text.clone()), answer));
        };
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            Failure::new(
                format!("the answer schema is not a JSON schema: {e}"),
                "Give the schema as a JSON object, e.g. {\"type\": \"object\", \"properties\": {…}}.",
                Retry::Never,
            )
        })?;
        let modes = &self.server.structured_mode;
        let mut mode = modes.load(Ordering::Relaxed);
        let answer = loop {
            match self.call(system, prompt, Some(schema), seed, mode).await {
                Ok(answer) => break answer,
                Err(failure) if failure.retry == Retry::Never && mode < MODE_PROMPT_ONLY => {
                    // The server refused the format; try the next one, and remember.
                    calls.push(
                        Call::new(sample, "answer", seed, Some(mode)).problem(&failure.message),
                    );
                    mode += 1;
                    modes.store(mode, Ordering::Relaxed);
                }
                Err(failure) => return Err(failure),
            }
        };
        let first = Call::new(sample, "answer", seed, Some(mode)).answered(&answer);
        let problem = match parse_and_validate(&answer.text, &validator) {
            Ok(value) => {
                calls.push(first);
                return Ok((self.chosen(value), answer));
            }
            Err(problem) => problem,
        };
        calls.push(first.problem(&problem));
        // One repair round: the answer, what is wrong with it, and the schema again.
        let repair = format!(
            "{prompt}\n\nYour previous answer was:\n{}\nIt is not valid: {problem}\nAnswer again with only a JSON value that matches this JSON schema:\n{schema}",
            answer.text
        );
        let second = self.call(system, &repair, Some(schema), seed, mode).await?;
        let checked = parse_and_validate(&second.text, &validator);
        let call = Call::new(sample, "repair", seed, Some(mode)).answered(&second);
        calls.push(match &checked {
            Ok(_) => call,
            Err(problem) => call.problem(problem),
        });
        match checked {
            Ok(value) => Ok((self.chosen(value), second)),
            Err(_) if self.choices.is_some() => Err(self.not_a_choice(&second.text)),
            Err(problem) => Err(Failure::new(
                format!("the model's answer does not match the schema: {problem}"),
                format!(
                    "After one repair round the answer was still not valid.\nSchema: {schema}\nAnswer: {}",
                    second.text
                ),
                Retry::Later,
            )),
        }
    }

    /// The answer a step with choices hands back: the chosen string, out of its wrapper.
    fn chosen(&self, value: Value) -> Value {
        match (&self.choices, value) {
            (Some(_), Value::Object(mut answer)) => answer.remove("choice").unwrap_or(Value::Null),
            (_, value) => value,
        }
    }

    /// The failure of a step whose model answered outside its choices after the repair round:
    /// an incident at once, naming the answer, since asking again repeats the same model.
    fn not_a_choice(&self, text: &str) -> Failure {
        let choices = self.choices.as_deref().unwrap_or_default().join(", ");
        let answered = serde_json::from_str::<Value>(text.trim())
            .ok()
            .and_then(|v| v.get("choice").cloned())
            .map_or_else(|| text.trim().to_owned(), |c| c.to_string());
        let answered: String = answered.chars().take(200).collect();
        Failure::new(
            format!(
                "the model answered {answered}, which is not one of the step's choices ({choices})"
            ),
            format!(
                "`procos.choices` makes the answer one of: {choices}. After one repair round the model's answer was still: {}\nReword the prompt so that the choices are plain, or use a model that follows them.",
                text.trim()
            ),
            Retry::Never,
        )
    }

    async fn call(
        &self,
        system: Option<&str>,
        prompt: &str,
        schema: Option<&Value>,
        seed: Option<i64>,
        mode: u8,
    ) -> Result<Answer, Failure> {
        let prompt = match (schema, mode) {
            (Some(schema), MODE_PROMPT_ONLY | MODE_JSON_OBJECT) => format!(
                "{prompt}\n\nAnswer with only a JSON value that matches this JSON schema:\n{schema}"
            ),
            _ => prompt.to_owned(),
        };
        let started = Instant::now();
        let call = async {
            match &self.server.client {
                Client::OpenAi(client) => {
                    self.call_openai(client, system, &prompt, schema, seed, mode)
                        .await
                }
                Client::Ollama(client) => {
                    self.call_ollama(client, system, &prompt, schema, seed)
                        .await
                }
            }
        };
        let limit = self.timeout;
        let server = &self.server;
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(answer)) => Ok(Answer {
                latency_ms: millis(started.elapsed()),
                ..answer
            }),
            Ok(Err(CallError::Refused(why))) => Err(Failure::new(
                format!("the model server refused the request: {why}"),
                format!(
                    "Provider `{}` at {}, model `{}`.",
                    server.name, server.base_url, self.model
                ),
                Retry::Never,
            )),
            Ok(Err(CallError::Unavailable(why))) => Err(Failure::new(
                format!(
                    "the model server `{}` at {} did not answer: {why}",
                    server.name, server.base_url
                ),
                format!(
                    "Model `{}`; the task is tried again with the step's retries.",
                    self.model
                ),
                Retry::Later,
            )),
            Err(_) => Err(Failure::new(
                format!(
                    "the model did not answer within {}",
                    humantime::format_duration(limit)
                ),
                format!(
                    "Waited {} for `{}` at {}; raise `procos.timeout` (up to the topic's policy.max_timeout) or lower `procos.max_tokens`.",
                    humantime::format_duration(started.elapsed()),
                    self.model,
                    server.base_url
                ),
                Retry::Later,
            )),
        }
    }

    async fn call_openai(
        &self,
        client: &async_openai::Client<OpenAIConfig>,
        system: Option<&str>,
        prompt: &str,
        schema: Option<&Value>,
        seed: Option<i64>,
        mode: u8,
    ) -> Result<Answer, CallError> {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "stream": false,
        });
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(seed) = seed {
            body["seed"] = json!(seed);
        }
        if let Some(n) = self.max_tokens {
            body["max_tokens"] = json!(n);
        }
        if let Some(schema) = schema {
            match mode {
                MODE_JSON_SCHEMA => {
                    body["response_format"] = json!({"type": "json_schema",
                        "json_schema": {"name": "answer", "schema": schema, "strict": true}});
                }
                MODE_JSON_OBJECT => {
                    body["response_format"] = json!({"type": "json_object", "schema": schema});
                }
                _ => {}
            }
        }
        let structured = schema.is_some();
        let response: Value = client.chat().create_byot(body).await.map_err(|e| match e {
            // A refusal of the request itself; or of its response_format, which some servers
            // (llama.cpp's) answer with a 500.
            OpenAIError::ApiError(api)
                if (api.status_code.is_client_error() && api.status_code.as_u16() != 429)
                    || (structured && mentions_format(&api.api_error.message)) =>
            {
                CallError::Refused(api.to_string())
            }
            OpenAIError::JSONDeserialize(_, content) if structured && mentions_format(&content) => {
                CallError::Refused(content.chars().take(500).collect())
            }
            other => CallError::Unavailable(other.to_string()),
        })?;
        let choice = &response["choices"][0];
        let usage = &response["usage"];
        Ok(Answer {
            text: choice["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            prompt_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
            completion_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
            model: response["model"].as_str().unwrap_or(&self.model).to_owned(),
            finish_reason: choice["finish_reason"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            latency_ms: 0,
        })
    }

    async fn call_ollama(
        &self,
        client: &ollama_rs::Ollama,
        system: Option<&str>,
        prompt: &str,
        schema: Option<&Value>,
        seed: Option<i64>,
    ) -> Result<Answer, CallError> {
        use ollama_rs::generation::chat::ChatMessage;
        use ollama_rs::generation::chat::request::ChatMessageRequest;
        use ollama_rs::generation::parameters::{FormatType, JsonStructure};
        use ollama_rs::models::ModelOptions;

        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(ChatMessage::system(system.to_owned()));
        }
        messages.push(ChatMessage::user(prompt.to_owned()));
        let mut options = ModelOptions::default();
        if let Some(t) = self.temperature {
            options = options.temperature(t);
        }
        if let Some(seed) = seed {
            options = options.seed(i32::try_from(seed).unwrap_or(i32::MAX));
        }
        if let Some(n) = self.max_tokens {
            options = options.num_predict(i32::try_from(n).unwrap_or(i32::MAX));
        }
        let mut request = ChatMessageRequest::new(self.model.clone(), messages).options(options);
        if let Some(schema) = schema {
            let format = match serde_json::from_value::<schemars::Schema>(schema.clone()) {
                Ok(schema) => {
                    FormatType::StructuredJson(Box::new(JsonStructure::new_for_schema(schema)))
                }
                Err(_) => FormatType::Json,
            };
            request = request.format(format);
        }
        let response = client.send_chat_messages(request).await.map_err(|e| {
            let text = e.to_string();
            if text.contains("404") || text.contains("400") {
                CallError::Refused(text)
            } else {
                CallError::Unavailable(text)
            }
        })?;
        let (prompt_tokens, completion_tokens) = response
            .final_data
            .as_ref()
            .map_or((0, 0), |d| (d.prompt_eval_count, d.eval_count));
        // Ollama says why it stopped only in fields ollama-rs does not keep: a reply that used
        // up max_tokens was cut there.
        let finish_reason = match self.max_tokens {
            Some(n) if completion_tokens >= u64::from(n) => "length",
            _ => "stop",
        };
        Ok(Answer {
            text: response.message.content,
            prompt_tokens,
            completion_tokens,
            model: response.model,
            finish_reason: finish_reason.to_owned(),
            latency_ms: 0,
        })
    }
}

#[async_trait]
impl Adapter for LlmAdapter {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        let work = self.run_task(&task);
        tokio::select! {
            outcome = work => outcome,
            () = cancel.cancelled() => Outcome::Failure(Failure::new("cancelled", "", Retry::Later)),
        }
    }

    fn task_settings(&self) -> &'static [&'static str] {
        TASK_SETTINGS
    }
}

impl LlmAdapter {
    async fn run_task(&self, task: &AdapterTask) -> Outcome {
        let step = match self.step(task) {
            Ok(step) => step,
            Err(failure) => return Outcome::Failure(failure),
        };
        let render = |template: &str| render(template, &task.inputs);
        let prompt = match render(&step.prompt) {
            Ok(prompt) => prompt,
            Err(failure) => return Outcome::Failure(failure),
        };
        let system = match step.system.as_deref().map(render).transpose() {
            Ok(system) => system,
            Err(failure) => return Outcome::Failure(failure),
        };
        let started = Instant::now();
        let mut calls = Vec::new();
        let Some(vote) = &step.vote else {
            let answered = step
                .answer(system.as_deref(), &prompt, step.seed, 1, &mut calls)
                .await;
            return match answered {
                Ok((value, answer)) => {
                    let mut out = outputs(value, &[answer], started);
                    step.hand_back_trace(&mut out, system.as_deref(), &prompt, &calls, None);
                    Outcome::Complete(out)
                }
                Err(failure) => Outcome::Failure(failure),
            };
        };

        let base_seed = step.seed.unwrap_or(0);
        let mut answers = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        for i in 0..vote.samples {
            let seed = base_seed + i64::from(i);
            match step
                .answer(system.as_deref(), &prompt, Some(seed), i + 1, &mut calls)
                .await
            {
                Ok((value, answer)) => {
                    let key = normalise(&value);
                    values.entry(key.clone()).or_insert(value);
                    keys.push(key);
                    answers.push(answer);
                }
                Err(failure) => return Outcome::Failure(failure),
            }
            let window = vote.window as usize;
            if keys.len() >= window && keys[keys.len() - window..].windows(2).all(|w| w[0] == w[1])
            {
                break;
            }
        }
        let mut distribution: BTreeMap<&str, u64> = BTreeMap::new();
        for key in &keys {
            *distribution.entry(key).or_default() += 1;
        }
        // The most frequent answer; among equals, the one reached first.
        let Some(winner) = keys.iter().max_by_key(|k| {
            (
                distribution[k.as_str()],
                std::cmp::Reverse(keys.iter().position(|x| x == *k)),
            )
        }) else {
            return Outcome::Failure(Failure::new("no answer was sampled", "", Retry::Later));
        };
        let confidence = distribution[winner.as_str()] as f64 / keys.len() as f64;
        let mut out = outputs(values[winner].clone(), &answers, started);
        out.insert("outcome".into(), values[winner].clone());
        out.insert("confidence".into(), json!(confidence));
        out.insert("distribution".into(), json!(distribution));
        out.insert("samples".into(), json!(keys.len()));
        let voted = json!({
            "samples": keys.len(),
            "budget": vote.samples,
            "window": vote.window,
            "min_confidence": vote.min_confidence,
            "votes": keys,
            "distribution": distribution,
            "winner": winner,
            "confidence": confidence,
        });
        step.hand_back_trace(&mut out, system.as_deref(), &prompt, &calls, Some(voted));
        if confidence < vote.min_confidence {
            return Outcome::BpmnError {
                code: vote.no_consensus_error.clone(),
                message: format!(
                    "no answer won: the most frequent had {:.0} % of {} samples (needed {:.0} %)",
                    confidence * 100.0,
                    keys.len(),
                    vote.min_confidence * 100.0
                ),
                outputs: out,
            };
        }
        Outcome::Complete(out)
    }
}

impl Step<'_> {
    /// Adds the output `trace` to `out` when the step asks for it: the [`Trace`] as a document
    /// up to the step's limit, as a `File` output (`trace.json`) beyond it.
    fn hand_back_trace(
        &self,
        out: &mut Map<String, Value>,
        system: Option<&str>,
        prompt: &str,
        calls: &[Call],
        vote: Option<Value>,
    ) {
        let Some(limit) = self.trace_limit else {
            return;
        };
        let (Some(answer), Some(usage), Some(latency_ms)) =
            (out.get("answer"), out.get("usage"), out.get("latency_ms"))
        else {
            return;
        };
        let trace = Trace {
            kind: TRACE_KIND,
            provider: &self.server.name,
            model: &self.model,
            system,
            prompt,
            schema: self.schema.as_ref(),
            choices: self.choices.as_deref(),
            temperature: self.temperature,
            seed: self.seed,
            max_tokens: self.max_tokens,
            calls,
            vote,
            answer,
            usage,
            latency_ms: latency_ms.as_u64().unwrap_or(0),
        };
        let value = match serde_json::to_string(&trace) {
            Ok(text) if text.len() as u64 > limit => json!({
                "type": "File",
                "value": base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
                "valueInfo": {"filename": "trace.json", "mimeType": "application/json", "encoding": "UTF-8"},
            }),
            Ok(_) => json!(trace),
            // A trace is plain data; should it ever fail to serialize, the step's answer
            // still goes back, with the reason in place of the trace.
            Err(e) => json!({"kind": TRACE_KIND, "problem": e.to_string()}),
        };
        out.insert("trace".into(), value);
    }
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// The schema a step with `procos.choices` answers by: an object holding one of them (an
/// object at the top, which OpenAI's strict structured outputs require).
fn choices_schema(choices: &[String]) -> Value {
    json!({
        "type": "object",
        "properties": {"choice": {"type": "string", "enum": choices}},
        "required": ["choice"],
        "additionalProperties": false,
    })
}

/// `procos.choices` must name distinct, non-empty answers, and leaves no room for a schema of
/// the step's own. One choice is allowed: it forces the answer, which a model uses to fix a
/// route (say, a loop's evaluation that may only say `continue`).
fn check_choices(choices: &[String], step_schema: bool) -> Result<(), Failure> {
    let fix = "Give the answers a gateway routes on, e.g. `procos.choices` = \"approve, reject\" or [\"approve\", \"reject\"].";
    if step_schema {
        return Err(Failure::new(
            "the step sets both `procos.choices` and `procos.schema`",
            "`procos.choices` is a schema of its own (one of the choices): remove one of the two settings.",
            Retry::Never,
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = choices.iter().find(|c| !seen.insert(c.as_str())) {
        return Err(Failure::new(
            format!("the step's `procos.choices` names `{twice}` twice"),
            fix,
            Retry::Never,
        ));
    }
    if choices.is_empty()
        || choices
            .iter()
            .any(|c| c.trim().is_empty() || c.contains("{{"))
    {
        return Err(Failure::new(
            format!(
                "the step's `procos.choices` needs one or more non-empty answers without `{{{{`, not {choices:?}"
            ),
            fix,
            Retry::Never,
        ));
    }
    Ok(())
}

fn mentions_format(message: &str) -> bool {
    ["response_format", "json_schema", "json_object"]
        .iter()
        .any(|word| message.contains(word))
}

/// The outputs of one answered task: the answer and what it cost.
fn outputs(answer: Value, answers: &[Answer], started: Instant) -> Map<String, Value> {
    let prompt_tokens: u64 = answers.iter().map(|a| a.prompt_tokens).sum();
    let completion_tokens: u64 = answers.iter().map(|a| a.completion_tokens).sum();
    let last = answers.last();
    let mut out = Map::new();
    out.insert("answer".into(), answer);
    out.insert(
        "usage".into(),
        json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
               "total_tokens": prompt_tokens + completion_tokens}),
    );
    out.insert("model".into(), json!(last.map(|a| a.model.clone())));
    out.insert(
        "finish_reason".into(),
        json!(last.map(|a| a.finish_reason.clone())),
    );
    out.insert("latency_ms".into(), json!(millis(started.elapsed())));
    out
}

/// The key answers are voted by: JSON in a canonical form (keys sorted), text trimmed,
/// lower-cased, with runs of whitespace and trailing punctuation dropped.
fn normalise(value: &Value) -> String {
    match value {
        Value::String(text) => text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .trim_end_matches(['.', '!', '?', ';', ':', ','])
            .to_lowercase(),
        other => canonical(other).to_string(),
    }
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            json!(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn parse_and_validate(text: &str, validator: &jsonschema::Validator) -> Result<Value, String> {
    let trimmed = text.trim();
    // Models like to wrap JSON in a Markdown fence.
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(trimmed)
        .trim();
    let value: Value = serde_json::from_str(unfenced).map_err(|e| format!("not JSON ({e})"))?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .take(3)
        .collect();
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(errors.join("; "))
    }
}

/// Checks a template's placeholders: each `{{` closes, and holds a variable name.
fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| {
            format!(
                "the template has a `{{{{` without `}}}}`: …{}",
                &rest[open..rest.len().min(open + 30)]
            )
        })?;
        let name = after[..close].trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(format!("`{{{{{name}}}}}` is not a variable name"));
        }
        rest = &after[close + 2..];
    }
    Ok(())
}

/// Fills `{{name}}` with the variable `name`: strings as they are, other values as JSON. A
/// variable the task does not have fails the task: a prompt with a hole is a wrong prompt.
fn render(template: &str, inputs: &Map<String, Value>) -> Result<String, Failure> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = after[..close].trim();
        match inputs.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => {
                return Err(Failure::new(
                    format!("the prompt needs the variable `{name}`, which the task does not have"),
                    "Set the variable before this task (or map it with an input parameter), or change the prompt template.",
                    Retry::Never,
                ));
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_strictly() {
        let inputs = json!({"name": "ACME", "n": 3, "tags": ["a"]})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(
            render("Hello {{name}}: {{ n }} {{tags}}", &inputs).unwrap(),
            "Hello ACME: 3 [\"a\"]"
        );
        let failure = render("Hi {{missing}}", &inputs).unwrap_err();
        assert!(failure.message.contains("`missing`"), "{}", failure.message);
        assert_eq!(failure.retry, Retry::Never);
        assert!(check_template("{{unclosed").is_err());
        assert!(check_template("{{}}").is_err());
        assert!(check_template("plain {{ok}}").is_ok());
    }

    #[test]
    fn answers_are_voted_by_their_normal_form() {
        assert_eq!(normalise(&json!("  Yes.  ")), normalise(&json!("yes")));
        assert_eq!(
            normalise(&json!({"b": 1, "a": 2})),
            normalise(&json!({"a": 2, "b": 1}))
        );
        assert_ne!(normalise(&json!("yes")), normalise(&json!("no")));
    }

    #[test]
    fn json_answers_are_unfenced_and_validated() {
        let schema =
            json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert_eq!(
            parse_and_validate("```json\n{\"n\": 1}\n```", &validator).unwrap(),
            json!({"n": 1})
        );
        assert!(parse_and_validate("{\"n\": \"x\"}", &validator).is_err());
        assert!(
            parse_and_validate("no json", &validator)
                .unwrap_err()
                .contains("not JSON")
        );
    }

    fn adapter(settings: Value) -> LlmAdapter {
        LlmAdapter::new(serde_json::from_value(settings).unwrap()).unwrap()
    }

    fn task(settings: Value) -> AdapterTask {
        AdapterTask {
            traceparent: None,
            task_id: "t".into(),
            topic: "llm".into(),
            inputs: Map::new(),
            settings: crate::TaskSettings::from_pairs(
                settings.as_object().cloned().unwrap_or_default(),
            ),
            root_process_instance_id: None,
        }
    }

    #[test]
    fn a_trace_is_a_document_up_to_its_limit_and_a_file_beyond() {
        let llm = adapter(json!({
            "base_url": "http://127.0.0.1:1/v1", "model": "small", "prompt": "Hi {{x}}",
            "api_key": "sk-never-in-a-trace"
        }));
        let untraced = llm.step(&task(json!({}))).unwrap();
        let mut out = outputs(json!("hello"), &[], Instant::now());
        untraced.hand_back_trace(&mut out, None, "Hi there", &[], None);
        assert!(!out.contains_key("trace"), "only on request");

        let step = llm.step(&task(json!({"trace": "true"}))).unwrap();
        let answer = Answer {
            text: "hello".into(),
            prompt_tokens: 3,
            completion_tokens: 1,
            model: "small".into(),
            finish_reason: "stop".into(),
            latency_ms: 7,
        };
        let calls = [
            Call::new(1, "answer", Some(4), Some(MODE_JSON_SCHEMA)).problem("refused"),
            Call::new(1, "answer", Some(4), Some(MODE_JSON_OBJECT)).answered(&answer),
        ];
        step.hand_back_trace(&mut out, Some("Be brief."), "Hi there", &calls, None);
        let trace = &out["trace"];
        assert_eq!(trace["kind"], TRACE_KIND);
        assert_eq!(trace["prompt"], "Hi there");
        assert_eq!(trace["system"], "Be brief.");
        assert_eq!(trace["provider"], "default");
        assert_eq!(trace["calls"][0]["format"], "json_schema");
        assert_eq!(trace["calls"][0]["problem"], "refused");
        assert_eq!(trace["calls"][1]["text"], "hello");
        assert_eq!(trace["calls"][1]["latency_ms"], 7);
        assert_eq!(trace["answer"], "hello");
        let text = trace.to_string();
        assert!(
            !text.contains("sk-never") && !text.contains("127.0.0.1"),
            "{text}"
        );

        let small = llm
            .step(&task(json!({"trace": true, "trace_limit": 100})))
            .unwrap();
        small.hand_back_trace(&mut out, None, "Hi there", &calls, None);
        // The typed form the worker makes a File variable of (`Variable::from_output`).
        let file = &out["trace"];
        assert_eq!(file["type"], "File");
        assert_eq!(file["valueInfo"]["filename"], "trace.json");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(file["value"].as_str().unwrap())
            .unwrap();
        let document: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(bytes.len() > 100);
        assert_eq!(document["calls"][1]["text"], "hello");
    }

    #[test]
    fn choices_make_the_answer_one_of_a_set_and_leave_no_room_for_a_schema() {
        let llm = adapter(json!({
            "base_url": "http://127.0.0.1:1/v1", "model": "small", "prompt": "Route {{x}}",
            "schema": {"type": "object"}
        }));
        let step = llm
            .step(&task(json!({"choices": "approve, reject"})))
            .unwrap();
        assert_eq!(step.choices, Some(vec!["approve".into(), "reject".into()]));
        // The topic's schema gives way to the choices; the prompt names them.
        let validator = jsonschema::validator_for(step.schema.as_ref().unwrap()).unwrap();
        assert!(parse_and_validate(r#"{"choice": "reject"}"#, &validator).is_ok());
        assert!(parse_and_validate(r#"{"choice": "maybe"}"#, &validator).is_err());
        assert!(parse_and_validate(r#""approve""#, &validator).is_err());
        assert!(
            step.prompt
                .ends_with("Answer with one of: approve, reject.")
        );
        assert_eq!(step.chosen(json!({"choice": "reject"})), json!("reject"));
        let failure = step.not_a_choice(r#"{"choice": "maybe"}"#);
        assert_eq!(failure.retry, Retry::Never);
        assert!(
            failure.message.contains("\"maybe\"") && failure.message.contains("approve, reject"),
            "{}",
            failure.message
        );
        let as_json = llm
            .step(&task(json!({"choices": "[\"a\", \"b\"]"})))
            .unwrap();
        assert_eq!(as_json.choices, Some(vec!["a".into(), "b".into()]));
        let forced = llm.step(&task(json!({"choices": "done"}))).unwrap();
        assert_eq!(forced.choices, Some(vec!["done".into()]));
        for (settings, says) in [
            (json!({"choices": "yes, no", "schema": "{}"}), "both"),
            (json!({"choices": ", "}), "one or more"),
            (json!({"choices": "yes, {{no}}"}), "one or more"),
            (json!({"choices": "yes, yes"}), "twice"),
        ] {
            let failure = llm.step(&task(settings.clone())).unwrap_err();
            assert!(
                failure.message.contains(says),
                "{settings}: {}",
                failure.message
            );
            assert_eq!(failure.retry, Retry::Never);
        }
    }

    #[test]
    fn a_step_takes_the_topics_defaults_and_overrides_them_within_the_policy() {
        let llm = adapter(json!({
            "base_url": "http://127.0.0.1:1/v1", "model": "small", "prompt": "p", "timeout": "20s",
            "providers": {"local": {"kind": "ollama", "base_url": "http://127.0.0.1:2"}},
            "policy": {"models": ["small", "qwen*"], "max_timeout": "1m", "max_samples": 4}
        }));
        let step = llm.step(&task(json!({}))).unwrap();
        assert_eq!(
            (step.server.name.as_str(), step.model.as_str()),
            ("default", "small")
        );
        assert!(step.vote.is_none());
        let step = llm
            .step(&task(
                json!({"provider": "local", "model": "qwen2", "prompt": "{{x}}",
                "timeout": "30s", "samples": "3", "schema": "{\"type\": \"object\"}"}),
            ))
            .unwrap();
        assert_eq!(step.server.name, "local");
        assert_eq!(step.timeout, Duration::from_secs(30));
        let vote = step.vote.unwrap();
        assert_eq!((vote.samples, vote.window), (3, 3));
        assert_eq!(step.schema, Some(json!({"type": "object"})));

        let refused = |settings: Value, needle: &str| {
            let failure = llm.step(&task(settings)).unwrap_err();
            assert!(
                failure.message.contains(needle),
                "{needle}: {}",
                failure.message
            );
            assert_eq!(failure.retry, Retry::Never);
        };
        refused(
            json!({"model": "gpt-4o"}),
            "`gpt-4o` is not allowed on this topic (allowed: small, qwen*)",
        );
        refused(json!({"provider": "cloud"}), "provider `cloud`");
        refused(
            json!({"timeout": "5m"}),
            "procos.timeout = 5m, above the topic's ceiling (policy.max_timeout = 1m)",
        );
        refused(json!({"samples": 40}), "procos.samples = 40");
        refused(json!({"prompt": "{{unclosed"}), "procos.prompt");
        refused(json!({"samples": 2, "window": 3}), "vote settings");
    }

    #[test]
    fn a_topic_with_named_providers_only_needs_a_step_or_a_default_to_choose() {
        let two = json!({"providers": {
            "a": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"},
            "b": {"kind": "ollama"}}});
        let llm = adapter(two.clone());
        let failure = llm
            .step(&task(json!({"model": "m", "prompt": "p"})))
            .unwrap_err();
        assert!(
            failure.message.contains("names no provider"),
            "{}",
            failure.message
        );
        assert_eq!(
            llm.step(&task(json!({"provider": "b", "model": "m", "prompt": "p"})))
                .unwrap()
                .server
                .name,
            "b"
        );
        let mut chosen = two;
        chosen["default_provider"] = json!("a");
        let llm = adapter(chosen);
        assert_eq!(
            llm.step(&task(json!({"model": "m", "prompt": "p"})))
                .unwrap()
                .server
                .name,
            "a"
        );
        let bad: LlmConfig =
            serde_json::from_value(json!({"model": "x", "policy": {"models": ["y"]}})).unwrap();
        assert!(LlmAdapter::new(bad).unwrap_err().contains("policy.models"));
    }
}
