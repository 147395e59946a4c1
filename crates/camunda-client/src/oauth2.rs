//! OAuth2 client credentials (RFC 6749 §4.4), the way engines behind a gateway or set up as a
//! resource server are reached: an access token from the issuer's token endpoint, shared by every
//! clone of the client, fetched again before it expires and once after the engine refuses it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::ClientError;

/// A token endpoint answers in well under this; waiting longer only holds up every engine call.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A token is renewed this long before it expires, or a fifth of its lifetime before when that
/// is shorter: a call never goes out with a token that lapses on the way.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

/// Who the client is to the issuer.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The issuer's token endpoint, e.g. `https://login.example.com/realms/ops/protocol/openid-connect/token`.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// `scope` of the token request, space-separated, when the issuer wants one.
    pub scope: Option<String>,
    /// `audience` of the token request (Auth0, Keycloak and others name the API this way).
    pub audience: Option<String>,
}

impl fmt::Debug for ClientCredentials {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The access tokens of one set of client credentials. Cheap to clone; clones share the token,
/// and callers that need one while it is being fetched wait for that one fetch.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    credentials: ClientCredentials,
    cached: Mutex<Option<Token>>,
    fetched: AtomicU64,
}

struct Token {
    value: String,
    /// When to fetch a new one; `None` when the issuer gave no lifetime (kept until refused).
    renew_at: Option<Instant>,
}

impl TokenSource {
    pub fn new(credentials: ClientCredentials) -> Self {
        Self {
            inner: Arc::new(Inner {
                credentials,
                cached: Mutex::new(None),
                fetched: AtomicU64::new(0),
            }),
        }
    }

    /// The credentials tokens are fetched with.
    pub fn credentials(&self) -> &ClientCredentials {
        &self.inner.credentials
    }

    /// How many tokens were fetched from the issuer so far.
    pub fn tokens_fetched(&self) -> u64 {
        self.inner.fetched.load(Ordering::Relaxed)
    }

    /// The current token, fetched first when there is none or it is due for renewal.
    pub(crate) async fn token(&self, http: &reqwest::Client) -> Result<String, ClientError> {
        let mut cached = self.inner.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && token.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(token.value.clone());
        }
        let (value, lifetime) = self.fetch(http).await?;
        self.inner.fetched.fetch_add(1, Ordering::Relaxed);
        let renew_at = lifetime.map(|lifetime| Instant::now() + renew_after(lifetime));
        *cached = Some(Token {
            value: value.clone(),
            renew_at,
        });
        Ok(value)
    }

    /// The engine refused `value`: forget it, unless another caller has replaced it already.
    pub(crate) async fn refused(&self, value: &str) {
        let mut cached = self.inner.cached.lock().await;
        if cached.as_ref().is_some_and(|token| token.value == value) {
            *cached = None;
        }
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
    ) -> Result<(String, Option<Duration>), ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            token_type: String,
            expires_in: Option<u64>,
        }
        #[derive(Deserialize)]
        struct Refusal {
            error: String,
            error_description: Option<String>,
        }
        let credentials = &self.inner.credentials;
        let failed = |reason: String, transient: bool| ClientError::Token {
            url: credentials.token_url.clone(),
            reason,
            transient,
        };
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &credentials.scope {
            form.push(("scope", scope));
        }
        if let Some(audience) = &credentials.audience {
            form.push(("audience", audience));
        }
        // client_secret_basic, which every issuer must support (RFC 6749 §2.3.1): id and secret
        // form-encoded, then as basic credentials.
        let encode =
            |raw: &str| url::form_urlencoded::byte_serialize(raw.as_bytes()).collect::<String>();
        let response = http
            .post(&credentials.token_url)
            .basic_auth(
                encode(&credentials.client_id),
                Some(encode(&credentials.client_secret)),
            )
            .form(&form)
            .timeout(TOKEN_TIMEOUT)
            .send()
            .await
            .map_err(|e| failed(format!("no answer: {e}"), true))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| failed(format!("the answer broke off: {e}"), true))?;
        if !status.is_success() {
            let reason = match serde_json::from_slice::<Refusal>(&body) {
                Ok(Refusal {
                    error,
                    error_description: Some(description),
                }) => format!("answered {status}: {error}: {description}"),
                Ok(Refusal { error, .. }) => format!("answered {status}: {error}"),
                Err(_) => format!("answered {status}"),
            };
            let transient = status.is_server_error() || status.as_u16() == 429;
            let hint = if transient {
                ""
            } else {
                " (check the client id, the secret and the scope or audience the issuer expects)"
            };
            return Err(failed(format!("{reason}{hint}"), transient));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("not a token answer: {e}"), false))?;
        if !answer.token_type.eq_ignore_ascii_case("bearer") {
            return Err(failed(
                format!(
                    "the token type is `{}`; the engine's REST API takes bearer tokens",
                    answer.token_type
                ),
                false,
            ));
        }
        tracing::debug!(
            token_url = %credentials.token_url,
            expires_in = ?answer.expires_in,
            "fetched an access token for the engine"
        );
        Ok((
            answer.access_token,
            answer.expires_in.map(Duration::from_secs),
        ))
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = &self.inner.credentials;
        write!(f, "{} at {}", credentials.client_id, credentials.token_url)
    }
}

/// How long after it was issued a token of `lifetime` is renewed.
fn renew_after(lifetime: Duration) -> Duration {
    lifetime - RENEW_BEFORE.min(lifetime / 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_before_it_expires() {
        let hour = Duration::from_secs(3600);
        assert_eq!(renew_after(hour), hour - Duration::from_secs(30));
        // A short-lived token is renewed a fifth of its life early, not 30 s before it was issued.
        assert_eq!(renew_after(Duration::from_secs(10)), Duration::from_secs(8));
        assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn debug_hides_the_secret() {
        let credentials = ClientCredentials {
            token_url: "http://issuer/token".into(),
            client_id: "worker".into(),
            client_secret: "s3cret".into(),
            scope: None,
            audience: None,
        };
        let shown = format!(
            "{credentials:?} {:?}",
            TokenSource::new(credentials.clone())
        );
        assert!(
            shown.contains("worker") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
