//! Where an engine's REST API is and how to authenticate to it: all a worker, a deployment or a
//! status query needs to know about an engine, whoever booted it.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::client::{Auth, EngineClient};
use crate::error::ClientError;
use crate::oauth2::{ClientCredentials, TokenSource};

/// The connection keys of `procos.toml`'s `[engine]` table: `url`, `user`, `password`, `token`,
/// and the `[engine.oauth2]` table.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Connection {
    /// The engine's REST API, e.g. `http://camunda:8080/engine-rest`. Default:
    /// [`Connection::DEFAULT_URL`].
    pub url: Option<String>,
    /// User for the REST API's basic authentication (when it is switched on).
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<String>,
    /// Bearer token for the REST API, instead of `user` and `password`.
    pub token: Option<String>,
    /// OAuth2 client credentials, instead of `user` and `password`: used when `token_url` is set.
    pub oauth2: OAuth2Settings,
}

/// `[engine.oauth2]`: tokens from an issuer by the client credentials grant, for an engine whose
/// REST API takes that issuer's tokens (directly, or behind a gateway).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuth2Settings {
    /// The issuer's token endpoint; OAuth2 is off without it.
    pub token_url: Option<String>,
    /// The client id the issuer knows this fleet by.
    pub client_id: Option<String>,
    /// A file holding the client secret (a mounted Kubernetes or Docker secret); its trailing
    /// newline is not part of it.
    pub client_secret_file: Option<PathBuf>,
    /// The client secret itself, from the environment (`PROCOS_ENGINE_OAUTH2_CLIENT_SECRET`);
    /// never read from the configuration file, which is easily shared.
    #[serde(skip)]
    pub client_secret: Option<String>,
    /// `scope` of the token request, when the issuer wants one.
    pub scope: Option<String>,
    /// `audience` of the token request, when the issuer wants one.
    pub audience: Option<String>,
}

impl Connection {
    /// Where Camunda Run and the Spring Boot starters serve the REST API unless told otherwise.
    pub const DEFAULT_URL: &str = "http://localhost:8080/engine-rest";

    /// The REST API's URL: `url`, or [`Connection::DEFAULT_URL`].
    pub fn rest_url(&self) -> &str {
        self.url.as_deref().unwrap_or(Self::DEFAULT_URL)
    }

    /// How requests authenticate: the token if there is one, else OAuth2 when its token URL is
    /// set, else `user` and `password`, else not at all. Fails when OAuth2 lacks its client id
    /// or secret, or the secret's file cannot be read.
    pub fn auth(&self) -> Result<Auth, ClientError> {
        if let Some(token) = &self.token {
            return Ok(Auth::Bearer(token.clone()));
        }
        if let Some(credentials) = self.oauth2.credentials()? {
            return Ok(Auth::OAuth2(TokenSource::new(credentials)));
        }
        Ok(match &self.user {
            Some(user) => Auth::Basic {
                user: user.clone(),
                password: self.password.clone().unwrap_or_default(),
            },
            None => Auth::None,
        })
    }

    /// A client for the REST API, authenticated as configured.
    pub fn client(&self) -> Result<EngineClient, ClientError> {
        EngineClient::new(self.rest_url(), self.auth()?)
    }
}

impl OAuth2Settings {
    /// The client credentials, when `token_url` is set.
    fn credentials(&self) -> Result<Option<ClientCredentials>, ClientError> {
        let Some(token_url) = &self.token_url else {
            return Ok(None);
        };
        let invalid = |reason: String| ClientError::InvalidAuth { reason };
        let client_id = self.client_id.clone().ok_or_else(|| {
            invalid(format!(
                "[engine.oauth2] has token_url = \"{token_url}\" but no client_id: set client_id \
                 (or PROCOS_ENGINE_OAUTH2_CLIENT_ID) to the client the issuer knows"
            ))
        })?;
        let client_secret = match (&self.client_secret, &self.client_secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| {
                    invalid(format!(
                        "cannot read the OAuth2 client secret from {} ([engine.oauth2] \
                         client_secret_file): {e}",
                        file.display()
                    ))
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, None) => {
                return Err(invalid(format!(
                    "OAuth2 client `{client_id}` has no secret: set PROCOS_ENGINE_OAUTH2_CLIENT_SECRET, \
                     or client_secret_file in [engine.oauth2]"
                )));
            }
        };
        Ok(Some(ClientCredentials {
            token_url: token_url.clone(),
            client_id,
            client_secret,
            scope: self.scope.clone(),
            audience: self.audience.clone(),
        }))
    }
}

impl fmt::Debug for OAuth2Settings {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Settings")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret_file", &self.client_secret_file)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .finish()
    }
}

impl fmt::Debug for Connection {
    // Never print a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "***");
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("oauth2", &self.oauth2)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_token_wins_over_user_and_password() {
        let connection = Connection {
            user: Some("demo".into()),
            password: Some("secret".into()),
            token: Some("t0k3n".into()),
            ..Connection::default()
        };
        assert!(matches!(connection.auth().unwrap(), Auth::Bearer(t) if t == "t0k3n"));
        let basic = Connection {
            token: None,
            ..connection
        };
        assert!(
            matches!(basic.auth().unwrap(), Auth::Basic { user, password } if user == "demo" && password == "secret")
        );
        assert!(matches!(Connection::default().auth().unwrap(), Auth::None));
    }

    #[test]
    fn without_a_url_the_client_goes_to_camundas_default() {
        assert_eq!(
            Connection::default().client().unwrap().base_url(),
            "http://localhost:8080/engine-rest/"
        );
        let remote = Connection {
            url: Some("http://camunda:8080/engine-rest".into()),
            ..Connection::default()
        };
        assert_eq!(remote.rest_url(), "http://camunda:8080/engine-rest");
    }

    #[test]
    fn debug_hides_the_secrets() {
        let connection = Connection {
            user: Some("demo".into()),
            password: Some("pa55word".into()),
            token: Some("t0k3n".into()),
            ..Connection::default()
        };
        let shown = format!("{connection:?}");
        assert!(shown.contains("demo"), "{shown}");
        assert!(
            !shown.contains("pa55word") && !shown.contains("t0k3n"),
            "{shown}"
        );
    }

    #[test]
    fn oauth2_needs_a_client_id_and_a_secret_and_reads_the_secret_file() {
        let mut connection = Connection {
            oauth2: OAuth2Settings {
                token_url: Some("http://issuer/token".into()),
                ..OAuth2Settings::default()
            },
            ..Connection::default()
        };
        let missing = connection.auth().unwrap_err().to_string();
        assert!(missing.contains("client_id"), "{missing}");
        connection.oauth2.client_id = Some("worker".into());
        let missing = connection.auth().unwrap_err().to_string();
        assert!(
            missing.contains("PROCOS_ENGINE_OAUTH2_CLIENT_SECRET"),
            "{missing}"
        );
        let dir = std::env::temp_dir().join(format!("procos-oauth2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        connection.oauth2.client_secret_file = Some(file.clone());
        let unreadable = connection.auth().unwrap_err().to_string();
        assert!(
            unreadable.contains(&file.display().to_string()),
            "{unreadable}"
        );
        std::fs::write(&file, "s3cret\n").unwrap();
        let auth = connection.auth().unwrap();
        let Auth::OAuth2(tokens) = &auth else {
            panic!("OAuth2 expected, got {auth:?}");
        };
        assert_eq!(tokens.credentials().client_secret, "s3cret");
        assert!(!format!("{auth:?} {connection:?}").contains("s3cret"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
