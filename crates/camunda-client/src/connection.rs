//! Where an engine's REST API is and how to authenticate to it: all a worker, a deployment or a
//! status query needs to know about an engine, whoever booted it.

use std::fmt;

use serde::Deserialize;

use crate::client::{Auth, EngineClient};
use crate::error::ClientError;

/// The connection keys of `procos.toml`'s `[engine]` table: `url`, `user`, `password`, `token`.
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
}

impl Connection {
    /// Where Camunda Run and the Spring Boot starters serve the REST API unless told otherwise.
    pub const DEFAULT_URL: &str = "http://localhost:8080/engine-rest";

    /// The REST API's URL: `url`, or [`Connection::DEFAULT_URL`].
    pub fn rest_url(&self) -> &str {
        self.url.as_deref().unwrap_or(Self::DEFAULT_URL)
    }

    /// How requests authenticate: the token if there is one, else `user` and `password`, else
    /// not at all.
    pub fn auth(&self) -> Auth {
        match (&self.token, &self.user) {
            (Some(token), _) => Auth::Bearer(token.clone()),
            (None, Some(user)) => Auth::Basic {
                user: user.clone(),
                password: self.password.clone().unwrap_or_default(),
            },
            (None, None) => Auth::None,
        }
    }

    /// A client for the REST API, authenticated as configured.
    pub fn client(&self) -> Result<EngineClient, ClientError> {
        EngineClient::new(self.rest_url(), self.auth())
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
        assert!(matches!(connection.auth(), Auth::Bearer(t) if t == "t0k3n"));
        let basic = Connection {
            token: None,
            ..connection
        };
        assert!(
            matches!(basic.auth(), Auth::Basic { user, password } if user == "demo" && password == "secret")
        );
        assert!(matches!(Connection::default().auth(), Auth::None));
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
            password: Some("secret".into()),
            token: Some("t0k3n".into()),
            ..Connection::default()
        };
        let shown = format!("{connection:?}");
        assert!(shown.contains("demo"), "{shown}");
        assert!(
            !shown.contains("secret") && !shown.contains("t0k3n"),
            "{shown}"
        );
    }
}
