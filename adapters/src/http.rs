//! `http`: one HTTP request per task, the equivalent of Camunda's http-connector, without a
//! sandbox: the request is made by the worker itself, so what it may reach is the topic's
//! policy, enforced here.
//!
//! Per-task settings (the step's `procos.*` extension properties and input parameters):
//! `procos.method`, `procos.url` (a template: `{{name}}` is the task's variable, encoded where
//! it lands in the path or query), `procos.query`, `procos.headers`, `procos.body` (a JSON
//! document or text, a template too), `procos.auth` (the name of a secret the topic holds),
//! `procos.timeout` (within `max_timeout`), `procos.error_codes` (status → BPMN error code),
//! `procos.response_headers` and `procos.follow_redirects` (within `max_redirects`). The
//! topic's settings are their defaults and the policy.
//!
//! Outputs: `status`, `headers` (those asked for) and `body` (JSON when the answer says it is
//! JSON, else text; bytes that are not text as a `Bytes` variable). A status mapped to a BPMN
//! error code throws it with the same outputs; 5xx, 408, 429 and connection failures are
//! retried (`Retry::Later`); other 4xx raise the incident at once, with an excerpt of the body.
//!
//! `egress.rs` decides where a request may go (deny by default, internal addresses only when
//! named, checked on the resolved address the connection is pinned to, on every redirect);
//! `secrets.rs` holds the topic's credentials and cuts them out of everything that leaves the
//! adapter; `template.rs` fills the templates.

mod egress;
mod secrets;
mod template;
#[cfg(any(test, feature = "test-server"))]
pub mod test_server;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use url::Url;

use self::egress::Allowlist;
pub use self::secrets::SecretConfig;
use self::secrets::{Secret, Secrets};
use crate::{Adapter, AdapterTask, Failure, Outcome, Retry, above_ceiling, async_trait};

/// `[topics.NAME.settings]` for `http`: the defaults of the per-task settings and the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Destinations tasks may reach: `api.example.com`, `*.example.org`, `*`, an address, each
    /// with an optional `:port` (none: 80 and 443). Empty (the default): none at all.
    #[serde(default)]
    allow: Vec<String>,
    /// The URL template when the task sets no `procos.url`.
    #[serde(default)]
    url: Option<String>,
    /// The method when the task sets no `procos.method`.
    #[serde(default = "default_method")]
    method: String,
    /// Headers sent with every request; the task's `procos.headers` go over them.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The secret sent when the task names none in `procos.auth` (default: none).
    #[serde(default)]
    auth: Option<String>,
    /// How long a request may take, redirects and body included, unless the task's
    /// `procos.timeout` says otherwise.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    /// The longest `procos.timeout` a task may ask for.
    #[serde(default = "default_max_timeout", with = "humantime_serde")]
    max_timeout: Duration,
    /// Status (`"404"`, or a class such as `"4xx"`) → BPMN error code; the task's
    /// `procos.error_codes` go over them.
    #[serde(default)]
    error_codes: BTreeMap<String, String>,
    /// Response headers handed back (`"*"`: all) when the task's `procos.response_headers`
    /// names none.
    #[serde(default)]
    response_headers: Vec<String>,
    /// Whether redirects are followed when the task's `procos.follow_redirects` does not say.
    #[serde(default)]
    follow_redirects: bool,
    /// The most redirects one request follows.
    #[serde(default = "default_max_redirects")]
    max_redirects: u64,
    /// The largest response body read, in KiB; past it the task fails.
    #[serde(default = "default_max_response_kb")]
    max_response_kb: u64,
    /// Named credentials (`[topics.NAME.settings.secrets.SECRET]`), which tasks name in
    /// `procos.auth`.
    #[serde(default)]
    secrets: BTreeMap<String, SecretConfig>,
}

/// The W3C trace context header.
const TRACEPARENT: &str = "traceparent";

fn default_method() -> String {
    "GET".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_max_redirects() -> u64 {
    5
}

fn default_max_response_kb() -> u64 {
    10 * 1024
}

/// The per-task settings `http` reads (beside the worker's own).
const TASK_SETTINGS: &[&str] = &[
    "method",
    "url",
    "query",
    "headers",
    "body",
    "auth",
    "timeout",
    "error_codes",
    "response_headers",
    "follow_redirects",
];

/// Headers neither a task nor the topic may set: credentials come from secrets only, and the
/// rest belong to the connection (a `Host` of one's own would reach another virtual host
/// behind an allowed address).
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// The length of the body excerpt in a failure's details.
const EXCERPT_CHARS: usize = 500;

/// How much of an error answer's body is read: the excerpt, with room for a secret that starts
/// inside it to be recognised whole and cut.
const ERROR_BODY_BYTES: u64 = 64 * 1024;

/// The most destinations whose clients are kept; past it they are all dropped and built again.
const MAX_CLIENTS: usize = 64;

/// A checked destination: the name (none for an address in the URL) and its addresses, sorted.
type ClientKey = (Option<String>, Vec<std::net::SocketAddr>);

#[derive(Debug)]
pub(crate) struct HttpAdapter {
    topic: String,
    config: HttpConfig,
    allow: Allowlist,
    secrets: Secrets,
    method: Method,
    error_codes: ErrorCodes,
    clients: Mutex<HashMap<ClientKey, reqwest::Client>>,
}

/// Status → BPMN error code, by exact status or by class (`4xx`).
#[derive(Debug, Clone, Default)]
struct ErrorCodes(BTreeMap<String, String>);

impl ErrorCodes {
    fn parse<'a>(
        entries: impl IntoIterator<Item = (&'a String, &'a Value)>,
        key: &str,
    ) -> Result<Self, String> {
        let mut codes = BTreeMap::new();
        for (status, code) in entries {
            let status = status.trim().to_ascii_lowercase();
            let b = status.as_bytes();
            let valid = b.len() == 3
                && (b'1'..=b'5').contains(&b[0])
                && (b[1..].iter().all(u8::is_ascii_digit) || &b[1..] == b"xx");
            let code = code.as_str().map(str::trim).unwrap_or_default();
            if !valid || code.is_empty() {
                return Err(format!(
                    "{key}: `{status}` → {code:?} is not a status (100 to 599, or a class such as \"4xx\") mapped to a BPMN error code"
                ));
            }
            codes.insert(status, code.to_owned());
        }
        Ok(Self(codes))
    }

    fn over(&self, task: Self) -> Self {
        let mut merged = self.0.clone();
        merged.extend(task.0);
        Self(merged)
    }

    fn code(&self, status: u16) -> Option<&str> {
        let class = format!("{}xx", status / 100);
        self.0
            .get(&status.to_string())
            .or_else(|| self.0.get(&class))
            .map(String::as_str)
    }
}

/// One task's request, read from its settings over the topic's.
#[derive(Debug)]
struct Request<'a> {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    auth: Option<&'a Secret>,
    timeout: Duration,
    error_codes: ErrorCodes,
    /// Lower-case names; `*` for all.
    response_headers: Vec<String>,
    redirects: u64,
    max_body: u64,
}

fn parse_method(text: &str) -> Option<Method> {
    let upper = text.trim().to_ascii_uppercase();
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        .contains(&upper.as_str())
        .then(|| Method::from_bytes(upper.as_bytes()).ok())
        .flatten()
}

fn never(message: String, details: String) -> Failure {
    Failure::new(message, details, Retry::Never)
}

/// A header a task or the topic sets: checked name and value.
fn header(name: &str, value: &str, whose: &str) -> Result<(HeaderName, HeaderValue), String> {
    let lower = name.trim().to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "{whose} sets the header `{name}`, which only the adapter sets (credentials come from a secret the topic holds: name it with procos.auth)"
        ));
    }
    let name = HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| format!("{whose}: `{name}` is not a header name"))?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| format!("{whose}: the value of `{name}` holds characters a header cannot"))?;
    Ok((name, value))
}

fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

impl HttpAdapter {
    pub(crate) fn new(config: HttpConfig, topic: &str) -> Result<Self, String> {
        let allow = Allowlist::parse(&config.allow, "allow")?;
        if allow.is_empty() {
            tracing::warn!(
                topic,
                "the http topic allows no destination: every task will be refused until [topics.{topic}.settings] allow lists some"
            );
        }
        let method = parse_method(&config.method).ok_or_else(|| {
            format!(
                "method: `{}` is not GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS",
                config.method
            )
        })?;
        let codes: Map<String, Value> = config
            .error_codes
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let error_codes = ErrorCodes::parse(&codes, "error_codes")?;
        if config.timeout > config.max_timeout {
            return Err(format!(
                "timeout ({}) is above max_timeout ({})",
                humantime::format_duration(config.timeout),
                humantime::format_duration(config.max_timeout)
            ));
        }
        if config.max_response_kb == 0 {
            return Err("max_response_kb must be at least 1".to_owned());
        }
        for (name, value) in &config.headers {
            header(name, value, "headers")?;
        }
        for name in &config.response_headers {
            if name != "*" && HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("response_headers: `{name}` is not a header name"));
            }
        }
        let secrets = Secrets::read(&config.secrets)?;
        if let Some(auth) = &config.auth
            && secrets.get(auth).is_none()
        {
            return Err(format!(
                "auth names the secret `{auth}`, which [topics.{topic}.settings.secrets] does not hold"
            ));
        }
        Ok(Self {
            topic: topic.to_owned(),
            config,
            allow,
            secrets,
            method,
            error_codes,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The task's request: its settings over the topic's, within the topic's policy.
    fn request(&self, task: &AdapterTask) -> Result<Request<'_>, Failure> {
        let s = &task.settings;
        let inputs = &task.inputs;
        let method = match s.text("method")? {
            None => self.method.clone(),
            Some(text) => parse_method(&text).ok_or_else(|| {
                never(
                    format!("procos.method `{text}` is not an HTTP method this adapter sends"),
                    "Use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.".to_owned(),
                )
            })?,
        };
        let Some(template) = s.text("url")?.or_else(|| self.config.url.clone()) else {
            return Err(never(
                "the task sets no procos.url and the topic has no default url".to_owned(),
                "Set procos.url in the model (the element template's URL field), e.g. https://api.example.com/orders/{{orderId}}.".to_owned(),
            ));
        };
        let rendered = template::render_url(&template, inputs, "procos.url")?;
        let mut url = Url::parse(&rendered).map_err(|e| {
            never(
                format!("procos.url gives `{rendered}`, which is not a URL ({e})"),
                format!("The template was `{template}`. Give an absolute http:// or https:// URL."),
            )
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(never(
                "procos.url carries credentials (user:password@)".to_owned(),
                "A model never carries a credential: the operator holds it as a secret of the topic ([topics.NAME.settings.secrets.SECRET]) and the model names it with procos.auth.".to_owned(),
            ));
        }
        if let Some(query) = s.json("query")? {
            let Value::Object(pairs) = query else {
                return Err(never(
                    "procos.query is not a JSON object of name → value".to_owned(),
                    "Example: {\"status\": \"open\", \"customer\": \"{{customerId}}\"}".to_owned(),
                ));
            };
            for (name, value) in &pairs {
                let values = match value {
                    Value::Null => vec![],
                    Value::Array(items) => items.iter().collect(),
                    other => vec![other],
                };
                for value in values {
                    let text = match value {
                        Value::String(t) => template::render_text(t, inputs, "procos.query")?,
                        other => other.to_string(),
                    };
                    url.query_pairs_mut().append_pair(name, &text);
                }
            }
        }
        let mut headers = HeaderMap::new();
        let task_headers = match s.json("headers")? {
            None => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(never(
                    "procos.headers is not a JSON object of name → value".to_owned(),
                    "Example: {\"Accept\": \"application/json\", \"X-Request-Id\": \"{{requestId}}\"}".to_owned(),
                ));
            }
        };
        let topic_headers = self
            .config
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())));
        for (name, value) in topic_headers.chain(task_headers) {
            let text = match &value {
                Value::String(t) => template::render_text(t, inputs, "procos.headers")?,
                other => other.to_string(),
            };
            let (name, value) = header(&name, &text, "procos.headers").map_err(|why| {
                never(
                    why,
                    "Fix the header in procos.headers (or the topic's headers).".to_owned(),
                )
            })?;
            headers.insert(name, value);
        }
        // The step's trace context, so that the service called joins the instance's trace;
        // a `traceparent` the model sets itself goes first.
        if let Some(traceparent) = &task.traceparent
            && !headers.contains_key(TRACEPARENT)
            && let Ok(value) = HeaderValue::from_str(traceparent)
        {
            headers.insert(TRACEPARENT, value);
        }
        let body = match s.get("body") {
            None => None,
            Some((value, _)) => Some(self.body(value, inputs, &mut headers)?),
        };
        let auth = match s.text("auth")?.or_else(|| self.config.auth.clone()) {
            None => None,
            Some(name) => Some(self.secrets.get(&name).ok_or_else(|| {
                never(
                    format!("procos.auth names the secret `{name}`, which topic `{}` does not hold", self.topic),
                    format!(
                        "The topic's secrets: {}. The operator adds one as [topics.{}.settings.secrets.{name}] in procos.toml.",
                        self.secrets.names().join(", "),
                        self.topic
                    ),
                )
            })?),
        };
        if let Some(secret) = auth
            && let Some(name) = secret.header_name()
            && headers.contains_key(&name)
        {
            return Err(never(
                format!(
                    "procos.headers sets `{name}`, the header of the secret `{}`",
                    secret.name()
                ),
                "Leave the header to the secret (procos.auth).".to_owned(),
            ));
        }
        let timeout = s.duration("timeout")?.unwrap_or(self.config.timeout);
        if timeout > self.config.max_timeout {
            return Err(above_ceiling(
                &format!("procos.timeout = {}", humantime::format_duration(timeout)),
                &format!(
                    "max_timeout = {}",
                    humantime::format_duration(self.config.max_timeout)
                ),
            ));
        }
        let task_codes = match s.json("error_codes")? {
            None => ErrorCodes::default(),
            Some(Value::Object(map)) => {
                ErrorCodes::parse(&map, "procos.error_codes").map_err(|why| {
                    never(
                        why,
                        "Example: {\"404\": \"NOT_FOUND\", \"409\": \"CONFLICT\"}".to_owned(),
                    )
                })?
            }
            Some(_) => {
                return Err(never(
                    "procos.error_codes is not a JSON object of status → BPMN error code"
                        .to_owned(),
                    "Example: {\"404\": \"NOT_FOUND\", \"409\": \"CONFLICT\"}".to_owned(),
                ));
            }
        };
        let response_headers = s
            .text_list("response_headers")?
            .unwrap_or_else(|| self.config.response_headers.clone())
            .into_iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let max = self.config.max_redirects;
        let redirects = match s.json("follow_redirects")? {
            None if self.config.follow_redirects => max,
            None | Some(Value::Bool(false)) => 0,
            Some(Value::Bool(true)) => max,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= max) => {
                n.as_u64().unwrap_or(0)
            }
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                return Err(above_ceiling(
                    &format!("procos.follow_redirects = {n}"),
                    &format!("max_redirects = {max}"),
                ));
            }
            Some(other) => {
                return Err(never(
                    format!(
                        "procos.follow_redirects is `{other}`, not true, false or a number of redirects"
                    ),
                    format!("true follows up to the topic's max_redirects ({max})."),
                ));
            }
        };
        Ok(Request {
            method,
            url,
            headers,
            body,
            auth,
            timeout,
            error_codes: self.error_codes.over(task_codes),
            response_headers,
            redirects,
            max_body: self.config.max_response_kb.saturating_mul(1024),
        })
    }

    /// The request body: JSON when the task gives a JSON document (an object or a list, as a
    /// value or as text, placeholders filled), text otherwise; the content type follows unless
    /// the headers set one.
    fn body(
        &self,
        value: &Value,
        inputs: &Map<String, Value>,
        headers: &mut HeaderMap,
    ) -> Result<Vec<u8>, Failure> {
        let setting = "procos.body";
        let declared = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let wants_text = declared.is_some_and(|ct| !is_json_type(ct));
        let document = match value {
            Value::Object(_) | Value::Array(_) => {
                Some(template::render_json(value, inputs, setting)?)
            }
            Value::String(text)
                if !wants_text && matches!(text.trim_start().chars().next(), Some('{' | '[')) =>
            {
                Some(match serde_json::from_str::<Value>(text) {
                    Ok(document) => template::render_json(&document, inputs, setting)?,
                    // Placeholders that stand for whole values (`{"n": {{n}}}`) make it JSON
                    // only once filled.
                    Err(_) => {
                        let filled = template::render_json_literals(text, inputs, setting)?;
                        serde_json::from_str(&filled).map_err(|e| {
                            never(
                                format!("procos.body looks like JSON but is not ({e})"),
                                "Give a JSON document (placeholders as \"{{name}}\" or as whole values), or set a Content-Type such as text/plain in procos.headers to send it as text.".to_owned(),
                            )
                        })?
                    }
                })
            }
            _ => None,
        };
        let (bytes, content_type) = match document {
            Some(document) => (document.to_string().into_bytes(), "application/json"),
            None => {
                let text = match value {
                    Value::String(text) => template::render_text(text, inputs, setting)?,
                    other => other.to_string(),
                };
                (text.into_bytes(), "text/plain; charset=utf-8")
            }
        };
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        Ok(bytes)
    }

    /// Sends the request, following redirects as allowed, each hop checked again.
    async fn exchange(&self, request: &Request<'_>) -> Outcome {
        let mut method = request.method.clone();
        let mut url = request.url.clone();
        let mut headers = request.headers.clone();
        let mut body = request.body.clone();
        let mut auth = request.auth;
        let mut hops = 0;
        loop {
            let destination = match egress::check(&self.allow, &url, &self.topic).await {
                Ok(destination) => destination,
                Err(refused) => return Outcome::Failure(refused),
            };
            if let Some(secret) = auth
                && !secret.sends_to(&url)
            {
                return Outcome::Failure(self.secret_refused(secret, &url));
            }
            let client = match self.client(&destination) {
                Ok(client) => client,
                Err(failure) => return Outcome::Failure(failure),
            };
            let mut builder = client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(bytes) = &body {
                builder = builder.body(bytes.clone());
            }
            if let Some(secret) = auth {
                builder = secret.apply(builder);
            }
            tracing::debug!(topic = %self.topic, %method, url = %self.secrets.redact(url.as_str()), hop = hops, "http request");
            let response = match builder.send().await {
                Ok(response) => response,
                Err(e) => return Outcome::Failure(transport_failure(&method, &url, &e)),
            };
            let status = response.status();
            tracing::debug!(topic = %self.topic, status = status.as_u16(), "http response");
            let location = response.headers().get(LOCATION).cloned();
            let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            if let (true, Some(location)) = (redirect && request.redirects > 0, location) {
                if hops >= request.redirects {
                    return Outcome::Failure(never(
                        format!(
                            "{method} {url} redirected more than {} times",
                            request.redirects
                        ),
                        format!(
                            "The adapter follows at most {} redirects (procos.follow_redirects, within the topic's max_redirects). The last answer was {status}, to {location:?}.",
                            request.redirects
                        ),
                    ));
                }
                let Some(next) = location.to_str().ok().and_then(|l| url.join(l).ok()) else {
                    return Outcome::Failure(never(
                        format!(
                            "{method} {url} answered {status} with a Location that is not a URL"
                        ),
                        format!("Location: {location:?}"),
                    ));
                };
                // A credential never follows a redirect to another origin.
                if next.origin() != url.origin() {
                    auth = None;
                }
                let to_get = status == StatusCode::SEE_OTHER
                    || (matches!(status.as_u16(), 301 | 302) && method == Method::POST);
                if to_get && method != Method::HEAD {
                    method = Method::GET;
                    body = None;
                    headers.remove(CONTENT_TYPE);
                }
                url = next;
                hops += 1;
                continue;
            }
            return self.answer(response, &method, &url, request).await;
        }
    }

    /// The client for one checked destination: it connects to the checked addresses only
    /// (`resolve_to_addrs`), through no proxy, and follows no redirect itself. Building one
    /// costs tens of milliseconds (the platform's root certificates are loaded each time), so
    /// clients are kept per destination, name and addresses both: a name that resolves to
    /// other addresses gets a client of its own, checked again. Kept connections, too, only
    /// ever go to a checked address.
    fn client(&self, destination: &egress::Destination) -> Result<reqwest::Client, Failure> {
        let mut key = destination.addresses.clone();
        key.sort();
        let key = (destination.domain.clone(), key);
        let kept = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(client) = kept {
            return Ok(client);
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(domain) = &destination.domain {
            builder = builder.resolve_to_addrs(domain, &destination.addresses);
        }
        let client = builder.build().map_err(|e| {
            Failure::new(
                format!("could not make an HTTP client: {e}"),
                "The TLS backend failed to start.".to_owned(),
                Retry::Later,
            )
        })?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn secret_refused(&self, secret: &Secret, url: &Url) -> Failure {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        never(
            format!(
                "the secret `{}` may not be sent to {host}:{port}: its destinations are {}",
                secret.name(),
                secret.destinations()
            ),
            format!(
                "A secret goes only to the destinations it lists. If {host}:{port} is meant to get it, the operator adds it to `destinations` in [topics.{}.settings.secrets.{}]; otherwise correct the URL or procos.auth in the model.",
                self.topic,
                secret.name()
            ),
        )
    }

    /// The outcome of the final answer.
    async fn answer(
        &self,
        mut response: reqwest::Response,
        method: &Method,
        url: &Url,
        request: &Request<'_>,
    ) -> Outcome {
        let status = response.status();
        let code = request.error_codes.code(status.as_u16());
        let failed = code.is_none() && (status.is_client_error() || status.is_server_error());
        let headers = picked_headers(response.headers(), &request.response_headers);
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let cap = if failed {
            request.max_body.min(ERROR_BODY_BYTES)
        } else {
            request.max_body
        };
        if !failed && response.content_length().is_some_and(|n| n > cap) {
            return Outcome::Failure(self.too_large(method, url, request.max_body));
        }
        let (bytes, complete) = match read_body(&mut response, cap).await {
            Ok(read) => read,
            Err(e) => return Outcome::Failure(transport_failure(method, url, &e)),
        };
        if failed {
            let retry = if status.is_server_error()
                || matches!(
                    status,
                    StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
                ) {
                Retry::Later
            } else {
                Retry::Never
            };
            let hint = match retry {
                Retry::Later => {
                    "The task is retried with the topic's backoff, then raises an incident."
                }
                Retry::Never => {
                    "Retrying cannot help. To handle this status in the model, map it to a BPMN error with procos.error_codes, e.g. {\"404\": \"NOT_FOUND\"}, and catch it with a boundary event."
                }
            };
            return Outcome::Failure(Failure::new(
                format!("{method} {url} answered {status}"),
                format!(
                    "The server answered {status}. {hint}\nResponse body (first {EXCERPT_CHARS} characters):\n{}",
                    self.excerpt(&bytes)
                ),
                retry,
            ));
        }
        if !complete {
            return Outcome::Failure(self.too_large(method, url, request.max_body));
        }
        let body = self.body_value(bytes, &content_type);
        let mut outputs = Map::new();
        outputs.insert("status".into(), json!(status.as_u16()));
        outputs.insert("headers".into(), Value::Object(headers));
        outputs.insert("body".into(), body);
        match code {
            Some(code) => Outcome::BpmnError {
                code: code.to_owned(),
                message: format!("{method} {url} answered {status}: BPMN error {code}"),
                outputs,
            },
            None => Outcome::Complete(outputs),
        }
    }

    fn too_large(&self, method: &Method, url: &Url, max_body: u64) -> Failure {
        let kb = max_body / 1024;
        never(
            format!(
                "the response to {method} {url} is larger than the topic's limit, max_response_kb = {kb} ({kb} KiB); reading stopped there"
            ),
            format!(
                "The http adapter reads at most max_response_kb of a response body, so that one answer cannot fill the worker's memory or the engine's variables. Ask the server for less (a filter, paging), or have the operator raise max_response_kb in [topics.{}.settings].",
                self.topic
            ),
        )
    }

    /// The first characters of a body, secrets cut out before it is shortened.
    fn excerpt(&self, bytes: &[u8]) -> String {
        let text = self.secrets.redact(&String::from_utf8_lossy(bytes));
        let mut excerpt: String = text.chars().take(EXCERPT_CHARS).collect();
        if text.chars().nth(EXCERPT_CHARS).is_some() {
            excerpt.push('…');
        }
        excerpt
    }

    /// The body as an output: JSON when the answer is JSON, text when it is text, else bytes
    /// (Camunda's typed form, base64).
    fn body_value(&self, bytes: Vec<u8>, content_type: &str) -> Value {
        if is_json_type(content_type) {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Value::Null;
            }
            if let Ok(value) = serde_json::from_slice(&bytes) {
                return value;
            }
        }
        match String::from_utf8(bytes) {
            Ok(text) => Value::String(text),
            Err(e) => {
                let bytes = self.secrets.redact_bytes(e.as_bytes());
                json!({
                    "type": "Bytes",
                    "value": base64::engine::general_purpose::STANDARD.encode(bytes),
                })
            }
        }
    }
}

/// The response headers asked for (lower-case names, `*` for all), values joined by `, `.
fn picked_headers(headers: &HeaderMap, wanted: &[String]) -> Map<String, Value> {
    let all = wanted.iter().any(|w| w == "*");
    let mut picked = Map::new();
    for name in headers.keys() {
        if !all && !wanted.iter().any(|w| w == name.as_str()) {
            continue;
        }
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        picked.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    picked
}

/// Reads at most `cap` bytes of the body as it streams in; `false` when there was more.
async fn read_body(
    response: &mut reqwest::Response,
    cap: u64,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// A request that got no answer: connection refused, reset, TLS, timeout. Passing causes, so
/// retried, except a request reqwest could not even build.
fn transport_failure(method: &Method, url: &Url, e: &reqwest::Error) -> Failure {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let (what, retry) = if e.is_builder() {
        ("could not be sent", Retry::Never)
    } else if e.is_timeout() {
        ("timed out", Retry::Later)
    } else if e.is_connect() {
        ("could not connect", Retry::Later)
    } else {
        ("failed", Retry::Later)
    };
    Failure::new(
        format!("{method} {url} {what}: {chain}"),
        format!(
            "The request got no answer: {chain}. The task is retried with the topic's backoff, then raises an incident."
        ),
        retry,
    )
}

#[async_trait]
impl Adapter for HttpAdapter {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        let outcome = match self.request(&task) {
            Err(failure) => Outcome::Failure(failure),
            Ok(request) => {
                let limit = request.timeout;
                tokio::select! {
                    done = tokio::time::timeout(limit, self.exchange(&request)) => match done {
                        Ok(outcome) => outcome,
                        Err(_) => Outcome::Failure(Failure::new(
                            format!("{} {} timed out after {}", request.method, request.url, humantime::format_duration(limit)),
                            format!("The whole request (name resolution, redirects and body) must end within procos.timeout, or the topic's timeout ({}); at most max_timeout ({}).", humantime::format_duration(self.config.timeout), humantime::format_duration(self.config.max_timeout)),
                            Retry::Later,
                        )),
                    },
                    () = cancel.cancelled() => Outcome::Failure(Failure::new("cancelled", "", Retry::Later)),
                }
            }
        };
        // The one way out of the adapter: no secret passes it.
        self.secrets.redact_outcome(outcome)
    }

    fn task_settings(&self) -> &'static [&'static str] {
        TASK_SETTINGS
    }
}
