//! Secrets: credentials the operator holds (`[topics.NAME.settings.secrets.SECRET]`), which a
//! model names (`procos.auth = "SECRET"`) and never carries. Each is read once, when the worker
//! builds the adapter, from an environment variable or a file; it is sent only to the
//! destinations it lists, and every occurrence of it is cut out of what leaves the adapter
//! (outputs, failure messages and details, log lines): a server that echoes a credential
//! into an error page must not put it into an incident.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use super::egress::Allowlist;
use crate::{Failure, Outcome};

/// `[topics.NAME.settings.secrets.SECRET]`: a credential and where it may be sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretConfig {
    /// `Authorization: Bearer TOKEN`.
    Bearer {
        /// The environment variable that holds the token.
        #[serde(default)]
        token_env: Option<String>,
        /// The file that holds the token (a mounted secret); surrounding whitespace is dropped.
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// Where the secret may be sent: patterns as in `allow`.
        #[serde(default)]
        destinations: Vec<String>,
    },
    /// `Authorization: Basic base64(USER:PASSWORD)`.
    Basic {
        /// The user name (not secret).
        #[serde(default)]
        user: String,
        /// The environment variable that holds the password.
        #[serde(default)]
        password_env: Option<String>,
        /// The file that holds the password.
        #[serde(default)]
        password_file: Option<PathBuf>,
        /// Where the secret may be sent: patterns as in `allow`.
        #[serde(default)]
        destinations: Vec<String>,
    },
    /// A header of its own, e.g. `X-API-Key: VALUE`.
    Header {
        /// The header's name.
        #[serde(default)]
        header: String,
        /// The environment variable that holds the value.
        #[serde(default)]
        value_env: Option<String>,
        /// The file that holds the value.
        #[serde(default)]
        value_file: Option<PathBuf>,
        /// Where the secret may be sent: patterns as in `allow`.
        #[serde(default)]
        destinations: Vec<String>,
    },
}

/// What a secret puts on a request.
enum Credential {
    Bearer(String),
    Basic { user: String, password: String },
    Header { name: HeaderName, value: String },
}

/// One secret, read. Its `Debug` shows its name, kind and destinations, never its value.
pub(super) struct Secret {
    name: String,
    credential: Credential,
    destinations: Allowlist,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.credential {
            Credential::Bearer(_) => "bearer",
            Credential::Basic { .. } => "basic",
            Credential::Header { .. } => "header",
        };
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("kind", &kind)
            .field("value", &"<redacted>")
            .field("destinations", &self.destinations)
            .finish()
    }
}

impl Secret {
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn destinations(&self) -> &Allowlist {
        &self.destinations
    }

    /// The header a `header` secret sets.
    pub(super) fn header_name(&self) -> Option<HeaderName> {
        match &self.credential {
            Credential::Header { name, .. } => Some(name.clone()),
            _ => None,
        }
    }

    /// Whether the secret may go to `url`'s destination.
    pub(super) fn sends_to(&self, url: &Url) -> bool {
        self.destinations.permits_url(url)
    }

    /// Puts the credential on `request`, marked sensitive (reqwest and hyper do not print it).
    pub(super) fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Credential::Bearer(token) => request.bearer_auth(token),
            Credential::Basic { user, password } => request.basic_auth(user, Some(password)),
            Credential::Header { name, value } => match HeaderValue::from_str(value) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request.header(name.clone(), value)
                }
                // Checked when the secret was read.
                Err(_) => request,
            },
        }
    }

    /// The texts that reveal the secret, as they may show up in an answer.
    fn forms(&self) -> Vec<String> {
        let raw = match &self.credential {
            Credential::Bearer(token) => vec![token.clone()],
            Credential::Basic { user, password } => {
                let pair = format!("{user}:{password}");
                vec![
                    password.clone(),
                    base64::engine::general_purpose::STANDARD.encode(&pair),
                    base64::engine::general_purpose::URL_SAFE.encode(&pair),
                    base64::engine::general_purpose::STANDARD_NO_PAD.encode(&pair),
                ]
            }
            Credential::Header { value, .. } => vec![value.clone()],
        };
        let mut forms = Vec::new();
        for text in raw {
            // As a server may echo it: percent-encoded, or escaped inside a JSON string.
            let encoded = super::template::encode(&text);
            let escaped = serde_json::to_string(&text).unwrap_or_default();
            let escaped = escaped.trim_matches('"').to_owned();
            forms.extend([text, encoded, escaped]);
        }
        forms.retain(|f| !f.is_empty());
        forms
    }
}

/// A topic's secrets, read, and the redaction of their values.
#[derive(Default)]
pub(super) struct Secrets {
    by_name: BTreeMap<String, Secret>,
    /// (text, what replaces it), longest first, so that a secret inside another is not cut
    /// first and the longer one left half shown.
    forms: Vec<(String, String)>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_name.values()).finish()
    }
}

impl Secrets {
    /// Reads every secret now: a missing variable or file stops the worker at start, naming
    /// the key.
    pub(super) fn read(configs: &BTreeMap<String, SecretConfig>) -> Result<Self, String> {
        let mut by_name = BTreeMap::new();
        for (name, config) in configs {
            let key = format!("secrets.{name}");
            let read = |env: &Option<String>, file: &Option<PathBuf>, what: &str| {
                read_value(&key, what, env.as_deref(), file.as_ref())
            };
            let (credential, destinations) = match config {
                SecretConfig::Bearer {
                    token_env,
                    token_file,
                    destinations,
                } => (
                    Credential::Bearer(read(token_env, token_file, "token")?),
                    destinations,
                ),
                SecretConfig::Basic {
                    user,
                    password_env,
                    password_file,
                    destinations,
                } => {
                    if user.is_empty() || user.contains(':') {
                        return Err(format!(
                            "{key}.user: a basic secret needs a user name without `:`"
                        ));
                    }
                    (
                        Credential::Basic {
                            user: user.clone(),
                            password: read(password_env, password_file, "password")?,
                        },
                        destinations,
                    )
                }
                SecretConfig::Header {
                    header,
                    value_env,
                    value_file,
                    destinations,
                } => {
                    let name = HeaderName::from_bytes(header.as_bytes())
                        .map_err(|_| format!("{key}.header: `{header}` is not a header name"))?;
                    let value = read(value_env, value_file, "value")?;
                    HeaderValue::from_str(&value).map_err(|_| {
                        format!("{key}: the value cannot be sent in a header (control characters)")
                    })?;
                    (Credential::Header { name, value }, destinations)
                }
            };
            if destinations.is_empty() {
                return Err(format!(
                    "{key}.destinations is empty: list where the secret may be sent (patterns as in `allow`, e.g. [\"api.example.com\"])"
                ));
            }
            let destinations = Allowlist::parse(destinations, &format!("{key}.destinations"))?;
            by_name.insert(
                name.clone(),
                Secret {
                    name: name.clone(),
                    credential,
                    destinations,
                },
            );
        }
        let mut forms: Vec<(String, String)> = by_name
            .values()
            .flat_map(|secret| {
                let marker = format!("[secret {} redacted]", secret.name);
                secret.forms().into_iter().map(move |f| (f, marker.clone()))
            })
            .collect();
        forms.sort_by_key(|(text, _)| (std::cmp::Reverse(text.len()), text.clone()));
        forms.dedup_by(|a, b| a.0 == b.0);
        Ok(Self { by_name, forms })
    }

    pub(super) fn get(&self, name: &str) -> Option<&Secret> {
        self.by_name.get(name)
    }

    pub(super) fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// `text` with every secret's value cut out.
    pub(super) fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (form, marker) in &self.forms {
            if text.contains(form.as_str()) {
                text = text.replace(form.as_str(), marker);
            }
        }
        text
    }

    /// `bytes` with every secret's value cut out (a body that is not text).
    pub(super) fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut bytes = bytes.to_vec();
        for (form, marker) in &self.forms {
            let form = form.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i..].starts_with(form) {
                    out.extend_from_slice(marker.as_bytes());
                    i += form.len();
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            bytes = out;
        }
        bytes
    }

    /// A JSON value with every secret cut out of its strings and keys.
    pub(super) fn redact_value(&self, value: Value) -> Value {
        if self.forms.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.redact(&s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.redact_value(v)).collect())
            }
            Value::Object(map) => Value::Object(self.redact_map(map)),
            other => other,
        }
    }

    fn redact_map(&self, map: Map<String, Value>) -> Map<String, Value> {
        map.into_iter()
            .map(|(k, v)| (self.redact(&k), self.redact_value(v)))
            .collect()
    }

    /// The outcome with every secret cut out: the last step of every run.
    pub(super) fn redact_outcome(&self, outcome: Outcome) -> Outcome {
        if self.forms.is_empty() {
            return outcome;
        }
        match outcome {
            Outcome::Complete(outputs) => Outcome::Complete(self.redact_map(outputs)),
            Outcome::BpmnError {
                code,
                message,
                outputs,
            } => Outcome::BpmnError {
                code: self.redact(&code),
                message: self.redact(&message),
                outputs: self.redact_map(outputs),
            },
            Outcome::Failure(failure) => Outcome::Failure(Failure {
                message: self.redact(&failure.message),
                details: self.redact(&failure.details),
                retry: failure.retry,
            }),
        }
    }
}

/// A secret's value from the environment variable `env` or the file `file` (exactly one).
fn read_value(
    key: &str,
    what: &str,
    env: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<String, String> {
    let value = match (env, file) {
        (Some(var), None) => std::env::var(var).map_err(|_| {
            format!("{key}.{what}_env names the environment variable `{var}`, which is not set")
        })?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("{key}.{what}_file: cannot read {}: {e}", path.display()))?
            .trim()
            .to_owned(),
        _ => {
            return Err(format!(
                "{key}: give exactly one of {what}_env (an environment variable) and {what}_file (a file)"
            ));
        }
    };
    if value.is_empty() {
        return Err(format!("{key}: the {what} is empty"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(toml_text: &str) -> Result<Secrets, String> {
        let configs: BTreeMap<String, SecretConfig> = toml::from_str(toml_text).unwrap();
        Secrets::read(&configs)
    }

    fn with_files(token: &str, password: &str) -> (tempfile_dir::Dir, Secrets) {
        let dir = tempfile_dir::Dir::new();
        let token_file = dir.write("token", &format!("{token}\n"));
        let password_file = dir.write("password", password);
        let text = format!(
            "[billing]\nkind = \"bearer\"\ntoken_file = \"{}\"\ndestinations = [\"billing.example.com\"]\n\
             [legacy]\nkind = \"basic\"\nuser = \"svc\"\npassword_file = \"{}\"\ndestinations = [\"legacy.example.com:8080\"]\n",
            token_file.display(),
            password_file.display()
        );
        let secrets = secrets(&text).unwrap();
        (dir, secrets)
    }

    /// A scratch directory removed when dropped, without a dependency for it.
    mod tempfile_dir {
        use std::path::PathBuf;

        pub(super) struct Dir(PathBuf);

        impl Dir {
            pub(super) fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "procos-http-secrets-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }

            pub(super) fn write(&self, name: &str, text: &str) -> PathBuf {
                let path = self.0.join(name);
                std::fs::write(&path, text).unwrap();
                path
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn every_form_of_every_secret_is_redacted() {
        let (_dir, secrets) = with_files("tok-3f9a\"x", "pa ss/wd");
        let basic = base64::engine::general_purpose::STANDARD.encode("svc:pa ss/wd");
        let text = format!(
            "token tok-3f9a\"x, json {{\"t\": \"tok-3f9a\\\"x\"}}, url tok-3f9a%22x, password pa ss/wd, encoded pa%20ss%2Fwd, header Basic {basic}"
        );
        let redacted = secrets.redact(&text);
        for leak in ["tok-3f9a", "pa ss", "pa%20ss", basic.as_str()] {
            assert!(!redacted.contains(leak), "{leak} in {redacted}");
        }
        assert!(redacted.contains("[secret billing redacted]"), "{redacted}");
        assert!(redacted.contains("[secret legacy redacted]"), "{redacted}");

        let outcome = secrets.redact_outcome(Outcome::Failure(Failure::new(
            "503 tok-3f9a\"x",
            "body: pa ss/wd",
            crate::Retry::Later,
        )));
        let Outcome::Failure(failure) = outcome else {
            panic!()
        };
        assert!(!failure.message.contains("tok-3f9a") && !failure.details.contains("pa ss"));

        let value = secrets.redact_value(serde_json::json!({"tok-3f9a\"x": ["pa ss/wd", 1]}));
        assert!(!value.to_string().contains("tok-3f9a"), "{value}");
        assert!(!value.to_string().contains("pa ss"), "{value}");
        let bytes = secrets.redact_bytes(b"\xff\x00tok-3f9a\"x\xfe");
        assert!(!String::from_utf8_lossy(&bytes).contains("tok-3f9a"));
    }

    #[test]
    fn debug_never_shows_a_value() {
        let (_dir, secrets) = with_files("tok-3f9a", "hunter22");
        let shown = format!("{secrets:?} {:?}", secrets.get("billing").unwrap());
        assert!(
            !shown.contains("tok-3f9a") && !shown.contains("hunter22"),
            "{shown}"
        );
        assert!(
            shown.contains("billing") && shown.contains("legacy"),
            "{shown}"
        );
    }

    #[test]
    fn secrets_go_only_to_their_destinations() {
        let (_dir, secrets) = with_files("tok", "pw");
        let billing = secrets.get("billing").unwrap();
        assert!(billing.sends_to(&Url::parse("https://billing.example.com/x").unwrap()));
        assert!(!billing.sends_to(&Url::parse("https://other.example.com/x").unwrap()));
        assert!(!billing.sends_to(&Url::parse("https://billing.example.com:8443/").unwrap()));
    }

    #[test]
    fn a_missing_variable_or_file_or_destination_is_named() {
        let err = secrets(
            "[a]\nkind = \"bearer\"\ntoken_env = \"PROCOS_TEST_NO_SUCH_VARIABLE\"\ndestinations = [\"x\"]",
        )
        .unwrap_err();
        assert!(
            err.contains("secrets.a.token_env") && err.contains("PROCOS_TEST_NO_SUCH_VARIABLE"),
            "{err}"
        );
        let err = secrets(
            "[a]\nkind = \"basic\"\nuser = \"u\"\npassword_file = \"/nonexistent/pw\"\ndestinations = [\"x\"]",
        )
        .unwrap_err();
        assert!(err.contains("secrets.a.password_file"), "{err}");
        let dir = tempfile_dir::Dir::new();
        let file = dir.write("t", "tok");
        let err = secrets(&format!(
            "[a]\nkind = \"bearer\"\ntoken_file = \"{}\"",
            file.display()
        ))
        .unwrap_err();
        assert!(err.contains("secrets.a.destinations"), "{err}");
        let err = toml::from_str::<BTreeMap<String, SecretConfig>>(
            "[a]\nkind = \"bearer\"\ntoken = \"inline\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("token"), "{err}");
    }
}
