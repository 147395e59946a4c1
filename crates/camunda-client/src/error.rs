//! What can go wrong talking to the engine, and what the caller should make of it.

use serde::Deserialize;

/// A failed call to the engine's REST API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The engine could not be reached, or did not answer in time. Worth trying again later.
    #[error("cannot reach the engine at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The engine answered with an error status.
    #[error("{method} {path} answered {status}: {message}")]
    Rejected {
        method: &'static str,
        path: String,
        status: u16,
        /// Camunda's exception type, e.g. `RestException`, `ParseException`.
        error_type: Option<String>,
        message: String,
        /// Parser findings the engine attached (deployments of invalid models).
        problems: Vec<ParseProblem>,
    },
    /// The engine answered 2xx but with a body this client cannot read.
    #[error("{method} {path}: unexpected answer from the engine: {reason}")]
    Unexpected {
        method: &'static str,
        path: String,
        reason: String,
    },
    /// No access token for the engine: the OAuth2 token endpoint could not be reached, or
    /// refused the client's credentials.
    #[error("cannot get an access token for the engine from {url}: {reason}")]
    Token {
        url: String,
        reason: String,
        /// The issuer was away or overloaded, rather than refusing the credentials.
        transient: bool,
    },
    /// The configured authentication is incomplete or unreadable.
    #[error("invalid engine authentication: {reason}")]
    InvalidAuth { reason: String },
    /// The configured engine URL is not usable.
    #[error(
        "invalid engine URL `{url}`: {reason} (expected e.g. http://localhost:8080/engine-rest)"
    )]
    InvalidUrl { url: String, reason: String },
}

impl ClientError {
    /// The HTTP status the engine answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the same call may succeed later unchanged: the engine (or the issuer of its
    /// tokens) was unreachable, timed out, or answered 5xx (which includes the engine's "too many
    /// requests" answer to long polls).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Rejected { status, .. } => *status >= 500,
            ClientError::Token { transient, .. } => *transient,
            ClientError::Unexpected { .. }
            | ClientError::InvalidUrl { .. }
            | ClientError::InvalidAuth { .. } => false,
        }
    }

    /// A 500 with the engine's own exception: the engine is up and refused this call for a
    /// reason that will not pass by itself (a bad expression, a failing listener), unlike an
    /// unreachable engine, a 502/503 from a proxy, a full long-poll queue or a concurrent update.
    pub fn is_engine_error(&self) -> bool {
        matches!(self, ClientError::Rejected { status: 500, error_type: Some(t), .. }
            if t != "OptimisticLockingException")
            && !self.is_overloaded()
    }

    /// The engine's long-poll queue is full ("too many requests", a 500): back off, it is
    /// backpressure, not a fault.
    pub fn is_overloaded(&self) -> bool {
        match self {
            ClientError::Rejected {
                status: 500,
                message,
                ..
            } => message.contains("too many requests"),
            _ => false,
        }
    }

    /// 404: the resource is gone; for an external task, usually cancelled by a boundary event or
    /// a deleted instance.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Findings of the engine's BPMN/DMN parser, with line and column where it knows them.
    pub fn parse_problems(&self) -> &[ParseProblem] {
        match self {
            ClientError::Rejected { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// One finding of the engine's model parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseProblem {
    pub resource: String,
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub element_id: Option<String>,
}

/// Camunda's error body: `{"type": "...", "message": "...", "details": {...}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(rename = "type")]
    pub error_type: Option<String>,
    pub message: Option<String>,
    #[serde(default)]
    pub details: Option<ParseDetails>,
}

/// `details` of a `ParseException`: resource name → errors and warnings.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct ParseDetails(std::collections::BTreeMap<String, ResourceReport>);

#[derive(Debug, Deserialize)]
pub(crate) struct ResourceReport {
    #[serde(default)]
    errors: Vec<ResourceFinding>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResourceFinding {
    message: String,
    line: Option<i64>,
    column: Option<i64>,
    main_element_id: Option<String>,
}

impl ParseDetails {
    pub(crate) fn into_problems(self) -> Vec<ParseProblem> {
        let positive = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
        self.0
            .into_iter()
            .flat_map(|(resource, report)| {
                report.errors.into_iter().map(move |f| ParseProblem {
                    resource: resource.clone(),
                    message: f.message,
                    line: positive(f.line),
                    column: positive(f.column),
                    element_id: f.main_element_id,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_engines_own_exceptions_count_as_engine_errors() {
        let with_type = |status, error_type: Option<&str>, message: &str| ClientError::Rejected {
            method: "POST",
            path: "x".into(),
            status,
            error_type: error_type.map(Into::into),
            message: message.into(),
            problems: vec![],
        };
        assert!(ClientError::is_engine_error(&with_type(
            500,
            Some("ProcessEngineException"),
            "Unknown property used in expression"
        )));
        assert!(!ClientError::is_engine_error(&with_type(
            500,
            Some("OptimisticLockingException"),
            "x"
        )));
        assert!(!ClientError::is_engine_error(&with_type(
            503, None, "proxy"
        )));
        assert!(!ClientError::is_engine_error(&with_type(
            500,
            Some("RestException"),
            "too many requests"
        )));
    }

    fn rejected(status: u16, message: &str) -> ClientError {
        ClientError::Rejected {
            method: "POST",
            path: "external-task/fetchAndLock".into(),
            status,
            error_type: Some("RestException".into()),
            message: message.into(),
            problems: vec![],
        }
    }

    #[test]
    fn the_engines_full_long_poll_queue_is_backpressure() {
        let full = rejected(
            500,
            "At the moment the server has to handle too many requests at the same time. Please try again later.",
        );
        assert!(full.is_overloaded() && full.is_transient());
        assert!(!rejected(500, "ENGINE-03005 something else").is_overloaded());
        assert!(!rejected(400, "too many requests").is_transient());
    }

    #[test]
    fn parse_details_keep_the_line_of_each_finding() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"type":"ParseException","message":"ENGINE-01009 Error while parsing process",
                "details":{"x.bpmn":{"errors":[{"message":"External tasks must specify a 'topic' attribute",
                "line":9,"column":62,"mainElementId":"work","elementIds":["work"]}],"warnings":[]}}}"#,
        )
        .unwrap();
        let problems = body.details.unwrap().into_problems();
        assert_eq!(problems.len(), 1);
        assert_eq!((problems[0].line, problems[0].column), (Some(9), Some(62)));
        assert_eq!(problems[0].element_id.as_deref(), Some("work"));
    }
}
