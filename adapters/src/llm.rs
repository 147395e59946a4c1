//! `llm`: asks a language model, through any OpenAI-compatible server (async-openai: OpenAI,
//! vLLM, llama.cpp, LiteLLM) or Ollama (ollama-rs).
//!
//! The prompt is a template over the task's variables (`{{name}}`; a missing variable fails the
//! task, never becomes an empty string). With a JSON schema the answer must validate: the
//! adapter asks for OpenAI's `json_schema` format, falls back to `json_object` with the schema
//! for servers that refuse it, and then to the schema in the prompt, with one repair round when
//! the answer does not validate. In probabilistic mode it samples several seeded answers, votes,
//! stops early once a window of samples agrees, and throws a BPMN error when no answer wins.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::inputs::json_input;
use crate::{Adapter, AdapterTask, Failure, Outcome, Retry, async_trait};

/// `[topics.NAME.settings]` for `llm`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// `openai` (any OpenAI-compatible server) or `ollama`.
    #[serde(default)]
    provider: Provider,
    /// The server: e.g. `http://localhost:8000/v1` (OpenAI-compatible) or
    /// `http://localhost:11434` (Ollama). Default: OpenAI's, or Ollama's local port.
    #[serde(default)]
    base_url: Option<String>,
    /// The API key, or where to read it: `api_key_env` (an environment variable) or
    /// `api_key_file` (a secret file). None of them: no key.
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
    /// The model's name on the server.
    model: String,
    /// The system prompt (a template too).
    #[serde(default)]
    system: Option<String>,
    /// The user prompt: `{{name}}` is replaced by the variable `name` (strings as they are,
    /// other values as JSON).
    prompt: String,
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
    /// A JSON schema the answer must satisfy; the task's input `schema` overrides it.
    #[serde(default)]
    schema: Option<Value>,
    /// Sample several answers and vote (`[topics.NAME.settings.probabilistic]`).
    #[serde(default)]
    probabilistic: Option<Probabilistic>,
}

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

#[derive(Debug)]
pub(crate) struct LlmAdapter {
    settings: LlmConfig,
    schema: Option<Value>,
    client: Client,
    base_url: String,
    structured_mode: AtomicU8,
}

/// One answer.
#[derive(Debug, Clone)]
struct Answer {
    text: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    model: String,
    finish_reason: String,
}

/// Why a call gave no answer.
#[derive(Debug)]
enum CallError {
    /// The server refused the request itself (a 4xx): maybe only its format.
    Refused(String),
    /// The server is away, overloaded or broken (connection error, 5xx, 429, timeout).
    Unavailable(String),
}

impl LlmAdapter {
    pub(crate) fn new(settings: LlmConfig) -> Result<Self, String> {
        check_template(&settings.prompt)?;
        if let Some(system) = &settings.system {
            check_template(system)?;
        }
        if let Some(p) = &settings.probabilistic {
            if p.samples == 0 || p.window == 0 || p.window > p.samples {
                return Err("probabilistic: need samples ≥ window ≥ 1".to_owned());
            }
            if !(0.0..=1.0).contains(&p.min_confidence) {
                return Err("probabilistic.min_confidence must be between 0 and 1".to_owned());
            }
        }
        let schema = match &settings.schema {
            Some(schema) => {
                let schema = serde_json::to_value(schema).map_err(|e| format!("schema: {e}"))?;
                jsonschema::validator_for(&schema)
                    .map_err(|e| format!("schema is not a JSON schema: {e}"))?;
                Some(schema)
            }
            None => None,
        };
        let api_key = match (
            &settings.api_key,
            &settings.api_key_env,
            &settings.api_key_file,
        ) {
            (Some(key), _, _) => Some(key.clone()),
            (None, Some(var), _) => Some(
                std::env::var(var)
                    .map_err(|_| format!("api_key_env names `{var}`, which is not set"))?,
            ),
            (None, None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| format!("api_key_file {}: {e}", file.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None, None) => None,
        };
        let (client, base_url) = match settings.provider {
            Provider::Openai => {
                let base = settings
                    .base_url
                    .clone()
                    .unwrap_or_else(|| "https://api.openai.com/v1".to_owned());
                let mut config = OpenAIConfig::new().with_api_base(base.clone());
                if let Some(key) = api_key {
                    config = config.with_api_key(key);
                }
                (
                    Client::OpenAi(async_openai::Client::with_config(config)),
                    base,
                )
            }
            Provider::Ollama => {
                let base = settings
                    .base_url
                    .clone()
                    .unwrap_or_else(|| "http://localhost:11434".to_owned());
                let url = url::Url::parse(&base).map_err(|e| format!("base_url `{base}`: {e}"))?;
                (Client::Ollama(ollama_rs::Ollama::from_url(url)), base)
            }
        };
        Ok(Self {
            settings,
            schema,
            client,
            base_url,
            structured_mode: AtomicU8::new(MODE_JSON_SCHEMA),
        })
    }

    /// One validated answer: text, or JSON that satisfies `schema`.
    async fn answer(
        &self,
        system: Option<&str>,
        prompt: &str,
        schema: Option<&Value>,
        seed: Option<i64>,
    ) -> Result<(Value, Answer), Failure> {
        let Some(schema) = schema else {
            let answer = self
                .call(system, prompt, None, seed, MODE_PROMPT_ONLY)
                .await?;
            return Ok((Value::String(answer.text.clone()), answer));
        };
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            Failure::new(
                format!("the input `schema` is not a JSON schema: {e}"),
                "Give the schema as a JSON object, e.g. {\"type\": \"object\", \"properties\": {…}}.",
                Retry::Never,
            )
        })?;
        let mut mode = self.structured_mode.load(Ordering::Relaxed);
        let answer = loop {
            match self.call(system, prompt, Some(schema), seed, mode).await {
                Ok(answer) => break answer,
                Err(failure) if failure.retry == Retry::Never && mode < MODE_PROMPT_ONLY => {
                    // The server refused the format; try the next one, and remember.
                    mode += 1;
                    self.structured_mode.store(mode, Ordering::Relaxed);
                }
                Err(failure) => return Err(failure),
            }
        };
        match parse_and_validate(&answer.text, &validator) {
            Ok(value) => Ok((value, answer)),
            Err(problem) => {
                // One repair round: the answer, what is wrong with it, and the schema again.
                let repair = format!(
                    "{prompt}\n\nYour previous answer was:\n{}\nIt is not valid: {problem}\nAnswer again with only a JSON value that matches this JSON schema:\n{schema}",
                    answer.text
                );
                let second = self.call(system, &repair, Some(schema), seed, mode).await?;
                match parse_and_validate(&second.text, &validator) {
                    Ok(value) => Ok((value, second)),
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
        }
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
            match &self.client {
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
        let limit = self.settings.timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(CallError::Refused(why))) => Err(Failure::new(
                format!("the model server refused the request: {why}"),
                format!("Server {}, model `{}`.", self.base_url, self.settings.model),
                Retry::Never,
            )),
            Ok(Err(CallError::Unavailable(why))) => Err(Failure::new(
                format!(
                    "the model server at {} did not answer: {why}",
                    self.base_url
                ),
                format!(
                    "Model `{}`; the task is tried again with the topic's retries.",
                    self.settings.model
                ),
                Retry::Later,
            )),
            Err(_) => Err(Failure::new(
                format!(
                    "the model did not answer within {}",
                    humantime::format_duration(limit)
                ),
                format!(
                    "Waited {} for `{}` at {}; raise `timeout` or lower `max_tokens`.",
                    humantime::format_duration(started.elapsed()),
                    self.settings.model,
                    self.base_url
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
            "model": self.settings.model,
            "messages": messages,
            "stream": false,
        });
        let s = &self.settings;
        if let Some(t) = s.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(seed) = seed {
            body["seed"] = json!(seed);
        }
        if let Some(n) = s.max_tokens {
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
            model: response["model"].as_str().unwrap_or(&s.model).to_owned(),
            finish_reason: choice["finish_reason"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
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
        let s = &self.settings;
        let mut options = ModelOptions::default();
        if let Some(t) = s.temperature {
            options = options.temperature(t);
        }
        if let Some(seed) = seed {
            options = options.seed(i32::try_from(seed).unwrap_or(i32::MAX));
        }
        if let Some(n) = s.max_tokens {
            options = options.num_predict(i32::try_from(n).unwrap_or(i32::MAX));
        }
        let mut request = ChatMessageRequest::new(s.model.clone(), messages).options(options);
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
        let finish_reason = match s.max_tokens {
            Some(n) if completion_tokens >= u64::from(n) => "length",
            _ => "stop",
        };
        Ok(Answer {
            text: response.message.content,
            prompt_tokens,
            completion_tokens,
            model: response.model,
            finish_reason: finish_reason.to_owned(),
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
}

impl LlmAdapter {
    async fn run_task(&self, task: &AdapterTask) -> Outcome {
        let render = |template: &str| render(template, &task.inputs);
        let prompt = match render(&self.settings.prompt) {
            Ok(prompt) => prompt,
            Err(failure) => return Outcome::Failure(failure),
        };
        let system = match self.settings.system.as_deref().map(render).transpose() {
            Ok(system) => system,
            Err(failure) => return Outcome::Failure(failure),
        };
        // A Modeler text field gives the schema as JSON text.
        let schema = json_input(&task.inputs, "schema").or_else(|| self.schema.clone());
        let started = Instant::now();
        let Some(vote) = &self.settings.probabilistic else {
            return match self
                .answer(
                    system.as_deref(),
                    &prompt,
                    schema.as_ref(),
                    self.settings.seed,
                )
                .await
            {
                Ok((value, answer)) => Outcome::Complete(outputs(value, &[answer], started)),
                Err(failure) => Outcome::Failure(failure),
            };
        };

        let base_seed = self.settings.seed.unwrap_or(0);
        let mut answers = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        for i in 0..vote.samples {
            let seed = base_seed + i64::from(i);
            match self
                .answer(system.as_deref(), &prompt, schema.as_ref(), Some(seed))
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
    out.insert(
        "latency_ms".into(),
        json!(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
    );
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
}
