//! The HTTP side: one `reqwest::Client`, the engine's base URL, authentication, and one method
//! per REST call ProcOS makes.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ClientError, ErrorBody};
use crate::model::{
    BpmnErrorReport, CompleteTask, Deployment, DeploymentResult, ExternalTask,
    ExternalTaskLogEntry, ExternalTaskLogQuery, FailureReport, FetchAndLock,
    HistoricActivityInstance, HistoricProcessInstance, HistoricProcessInstanceQuery, Incident,
    LockedExternalTask, ProcessDefinition, ProcessInstance, StartProcessInstance,
};
use crate::oauth2::TokenSource;
use crate::variables::{Variable, Variables};

/// Ordinary calls answer in well under this; a slower answer means the engine is in trouble.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than its long-poll time a fetch may take before it counts as lost.
const LONG_POLL_GRACE: Duration = Duration::from_secs(15);

/// How to authenticate to the REST API.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    /// OAuth2 client credentials: a token from the issuer, cached and renewed (see [`TokenSource`]).
    OAuth2(TokenSource),
}

impl fmt::Debug for Auth {
    // Never print a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::OAuth2(tokens) => write!(f, "OAuth2({tokens:?})"),
        }
    }
}

/// A client of one engine's REST API. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct EngineClient {
    http: reqwest::Client,
    /// Always ends in `/`, so relative paths join under it.
    base: url::Url,
    auth: Auth,
}

impl EngineClient {
    /// A client for the REST API at `base_url`, e.g. `http://localhost:8080/engine-rest`.
    /// A bare `http://host:port` is taken to mean Camunda Run's `/engine-rest` on it.
    pub fn new(base_url: &str, auth: Auth) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason,
        };
        let mut base = url::Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https".into()));
        }
        if base.path() == "/" {
            base.set_path("/engine-rest");
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http, base, auth })
    }

    /// The REST API's base URL, ending in `/`.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// A client for the REST API of an engine on this machine at `port` (Camunda Run's
    /// `/engine-rest`, on the loopback address): the engine a kernel or a benchmark booted.
    pub fn local(port: u16, auth: Auth) -> Result<Self, ClientError> {
        Self::new(&format!("http://127.0.0.1:{port}/engine-rest"), auth)
    }

    /// `GET /version`: the engine's version, e.g. `7.24.0`.
    pub async fn version(&self) -> Result<String, ClientError> {
        #[derive(serde::Deserialize)]
        struct Version {
            version: String,
        }
        let version: Version = self.call(Method::GET, "version", None::<&()>).await?;
        Ok(version.version)
    }

    /// `GET /engine`: the names of the engines behind this API. Answers without credentials even
    /// when authentication is on, so it is the readiness probe.
    pub async fn engines(&self) -> Result<Vec<String>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Engine {
            name: String,
        }
        let engines: Vec<Engine> = self.call(Method::GET, "engine", None::<&()>).await?;
        Ok(engines.into_iter().map(|e| e.name).collect())
    }

    /// `POST /deployment/create` with duplicate filtering: resources identical to the last
    /// deployment of the same name create no new definitions.
    pub async fn deploy(&self, deployment: &Deployment) -> Result<DeploymentResult, ClientError> {
        // A multipart body is a stream, sent once: a second attempt (after a 401) builds it anew.
        let form = || {
            let mut form = reqwest::multipart::Form::new()
                .text("deployment-name", deployment.name.clone())
                .text("enable-duplicate-filtering", "true")
                .text("deploy-changed-only", "true");
            if let Some(source) = &deployment.source {
                form = form.text("deployment-source", source.clone());
            }
            for (name, bytes) in &deployment.resources {
                let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone());
                form = form.part(name.clone(), part);
            }
            form
        };
        let path = "deployment/create";
        let request = || self.request(Method::POST, path).multipart(form());
        self.send(request, "POST", path, CALL_TIMEOUT).await
    }

    /// `GET /process-definition?key=…`: every version of a process, oldest first.
    pub async fn process_definitions(
        &self,
        key: &str,
    ) -> Result<Vec<ProcessDefinition>, ClientError> {
        let path = "process-definition";
        let request = || {
            self.request(Method::GET, path).query(&[
                ("key", key),
                ("sortBy", "version"),
                ("sortOrder", "asc"),
            ])
        };
        self.send(request, "GET", path, CALL_TIMEOUT).await
    }

    /// `GET /process-definition?latestVersion=true`: the latest version of every process.
    pub async fn latest_process_definitions(&self) -> Result<Vec<ProcessDefinition>, ClientError> {
        let path = "process-definition";
        let request = || {
            self.request(Method::GET, path).query(&[
                ("latestVersion", "true"),
                ("sortBy", "key"),
                ("sortOrder", "asc"),
            ])
        };
        self.send(request, "GET", path, CALL_TIMEOUT).await
    }

    /// `GET /process-instance?processDefinitionKey=…`: the running instances of a process (all
    /// versions), active and suspended.
    pub async fn process_instances(&self, key: &str) -> Result<Vec<ProcessInstance>, ClientError> {
        let path = "process-instance";
        let request = || {
            self.request(Method::GET, path)
                .query(&[("processDefinitionKey", key)])
        };
        self.send(request, "GET", path, CALL_TIMEOUT).await
    }

    /// `POST /process-instance`: which of `ids` are still running (active or suspended); an
    /// instance that ended, or was cancelled or deleted, is not among them.
    pub async fn running_process_instance_ids(
        &self,
        ids: &[String],
    ) -> Result<Vec<String>, ClientError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Query<'a> {
            process_instance_ids: &'a [String],
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let running: Vec<ProcessInstance> = self
            .call(
                Method::POST,
                "process-instance",
                Some(&Query {
                    process_instance_ids: ids,
                }),
            )
            .await?;
        Ok(running.into_iter().map(|p| p.id).collect())
    }

    /// `DELETE /process-instance/{id}`: cancels a running instance, as Cockpit's "cancel" does
    /// (listeners and I/O mappings run).
    pub async fn delete_process_instance(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("process-instance/{}", segment(id));
        self.call_no_content(Method::DELETE, &path, None::<&()>)
            .await
    }

    /// `GET /metrics/{name}/sum`: the engine's count of `name` (e.g. `activity-instance-start`)
    /// since it began counting.
    pub async fn metric_sum(&self, name: &str) -> Result<u64, ClientError> {
        #[derive(serde::Deserialize)]
        struct Sum {
            result: u64,
        }
        let path = format!("metrics/{}/sum", segment(name));
        let sum: Sum = self.call(Method::GET, &path, None::<&()>).await?;
        Ok(sum.result)
    }

    /// `POST /message`: correlates a message to the one execution (or message start event)
    /// waiting for it, with `process_variables` set on the instance.
    pub async fn correlate_message(
        &self,
        message_name: &str,
        process_variables: &Variables,
    ) -> Result<(), ClientError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Correlate<'a> {
            message_name: &'a str,
            process_variables: &'a Variables,
        }
        let body = Correlate {
            message_name,
            process_variables,
        };
        self.call_no_content(Method::POST, "message", Some(&body))
            .await
    }

    /// `POST /process-definition/key/{key}/start`: starts the latest version.
    pub async fn start_process_instance(
        &self,
        key: &str,
        start: &StartProcessInstance,
    ) -> Result<ProcessInstance, ClientError> {
        let path = format!("process-definition/key/{}/start", segment(key));
        self.call(Method::POST, &path, Some(start)).await
    }

    /// `POST /external-task/fetchAndLock`, long-polling up to `asyncResponseTimeout`.
    /// Dropping the future aborts the request, which ends the engine's wait for it.
    pub async fn fetch_and_lock(
        &self,
        request: &FetchAndLock,
    ) -> Result<Vec<LockedExternalTask>, ClientError> {
        let path = "external-task/fetchAndLock";
        let long_poll = Duration::from_millis(request.async_response_timeout.unwrap_or(0));
        let builder = || self.request(Method::POST, path).json(request);
        self.send(builder, "POST", path, long_poll + LONG_POLL_GRACE)
            .await
    }

    /// `POST /external-task/{id}/complete`.
    pub async fn complete(&self, task_id: &str, body: &CompleteTask) -> Result<(), ClientError> {
        let path = format!("external-task/{}/complete", segment(task_id));
        self.call_no_content(Method::POST, &path, Some(body)).await
    }

    /// `POST /external-task/{id}/failure`.
    pub async fn report_failure(
        &self,
        task_id: &str,
        body: &FailureReport,
    ) -> Result<(), ClientError> {
        let path = format!("external-task/{}/failure", segment(task_id));
        self.call_no_content(Method::POST, &path, Some(body)).await
    }

    /// `POST /external-task/{id}/bpmnError`.
    pub async fn report_bpmn_error(
        &self,
        task_id: &str,
        body: &BpmnErrorReport,
    ) -> Result<(), ClientError> {
        let path = format!("external-task/{}/bpmnError", segment(task_id));
        self.call_no_content(Method::POST, &path, Some(body)).await
    }

    /// `POST /external-task/{id}/extendLock`: the lock now ends `new_duration` from now.
    pub async fn extend_lock(
        &self,
        task_id: &str,
        worker_id: &str,
        new_duration: Duration,
    ) -> Result<(), ClientError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ExtendLock<'a> {
            worker_id: &'a str,
            new_duration: u64,
        }
        let path = format!("external-task/{}/extendLock", segment(task_id));
        let body = ExtendLock {
            worker_id,
            new_duration: millis(new_duration),
        };
        self.call_no_content(Method::POST, &path, Some(&body)).await
    }

    /// `POST /external-task/{id}/unlock`: hands the task back for any worker to fetch at once.
    pub async fn unlock(&self, task_id: &str) -> Result<(), ClientError> {
        let path = format!("external-task/{}/unlock", segment(task_id));
        self.call_no_content(Method::POST, &path, None::<&()>).await
    }

    /// `GET /external-task?processInstanceId=…`: the instance's open external tasks.
    pub async fn external_tasks(
        &self,
        process_instance_id: &str,
    ) -> Result<Vec<ExternalTask>, ClientError> {
        let path = "external-task";
        let request = || {
            self.request(Method::GET, path)
                .query(&[("processInstanceId", process_instance_id)])
        };
        self.send(request, "GET", path, CALL_TIMEOUT).await
    }

    /// `GET /process-instance/{id}/variables`: the variables visible at the instance's root scope
    /// now (local variables of inner scopes are not among them).
    pub async fn process_instance_variables(&self, id: &str) -> Result<Variables, ClientError> {
        let path = format!("process-instance/{}/variables", segment(id));
        let request = || {
            self.request(Method::GET, &path)
                .query(&[("deserializeValues", "false")])
        };
        self.send(request, "GET", &path, CALL_TIMEOUT).await
    }

    /// `GET /execution/{id}/localVariables`: the variables of that execution's own scope (an
    /// activity's input parameters), not those it sees from enclosing scopes.
    pub async fn execution_local_variables(
        &self,
        execution_id: &str,
    ) -> Result<Variables, ClientError> {
        let path = format!("execution/{}/localVariables", segment(execution_id));
        let request = || {
            self.request(Method::GET, &path)
                .query(&[("deserializeValues", "false")])
        };
        self.send(request, "GET", &path, CALL_TIMEOUT).await
    }

    /// `GET /history/process-instance/{id}`.
    pub async fn historic_process_instance(
        &self,
        id: &str,
    ) -> Result<HistoricProcessInstance, ClientError> {
        let path = format!("history/process-instance/{}", segment(id));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `GET /history/process-instance`: every instance `query` selects, ordered by id. Read a page
    /// at a time in an order without ties: pages of an order with ties (many instances start in
    /// the same millisecond) may repeat one instance and skip another.
    pub async fn historic_process_instances(
        &self,
        query: &HistoricProcessInstanceQuery,
    ) -> Result<Vec<HistoricProcessInstance>, ClientError> {
        const PAGE: usize = 2000;
        let path = "history/process-instance";
        let mut found = Vec::new();
        let max_results = PAGE.to_string();
        loop {
            let first_result = found.len().to_string();
            let request = || {
                self.request(Method::GET, path).query(query).query(&[
                    ("sortBy", "instanceId"),
                    ("sortOrder", "asc"),
                    ("firstResult", first_result.as_str()),
                    ("maxResults", max_results.as_str()),
                ])
            };
            let page: Vec<HistoricProcessInstance> =
                self.send(request, "GET", path, CALL_TIMEOUT).await?;
            let last = page.len() < PAGE;
            found.extend(page);
            if last {
                return Ok(found);
            }
        }
    }

    /// `GET /history/process-instance/count`: how many instances `query` selects.
    pub async fn historic_process_instance_count(
        &self,
        query: &HistoricProcessInstanceQuery,
    ) -> Result<u64, ClientError> {
        #[derive(serde::Deserialize)]
        struct Count {
            count: u64,
        }
        let path = "history/process-instance/count";
        let request = || self.request(Method::GET, path).query(query);
        let count: Count = self.send(request, "GET", path, CALL_TIMEOUT).await?;
        Ok(count.count)
    }

    /// `GET /history/variable-instance?processInstanceId=…`: the instance's variables as history
    /// last saw them, including after the instance ended.
    pub async fn historic_variables(
        &self,
        process_instance_id: &str,
    ) -> Result<Variables, ClientError> {
        #[derive(serde::Deserialize)]
        struct Row {
            name: String,
            #[serde(flatten)]
            variable: Variable,
        }
        let path = "history/variable-instance";
        let request = || {
            self.request(Method::GET, path).query(&[
                ("processInstanceId", process_instance_id),
                ("deserializeValues", "false"),
            ])
        };
        let rows: Vec<Row> = self.send(request, "GET", path, CALL_TIMEOUT).await?;
        Ok(rows.into_iter().map(|r| (r.name, r.variable)).collect())
    }

    /// `GET /history/external-task-log`: what happened to external tasks (created, failed,
    /// succeeded, deleted), oldest first. Every filter in `query` is optional.
    pub async fn external_task_log(
        &self,
        query: &ExternalTaskLogQuery,
    ) -> Result<Vec<ExternalTaskLogEntry>, ClientError> {
        let path = "history/external-task-log";
        let request = || {
            self.request(Method::GET, path)
                .query(query)
                .query(&[("sortBy", "timestamp"), ("sortOrder", "asc")])
        };
        self.send(request, "GET", path, CALL_TIMEOUT).await
    }

    /// `GET /history/external-task-log/count`: how many entries `query` selects.
    pub async fn external_task_log_count(
        &self,
        query: &ExternalTaskLogQuery,
    ) -> Result<u64, ClientError> {
        #[derive(serde::Deserialize)]
        struct Count {
            count: u64,
        }
        let path = "history/external-task-log/count";
        let request = || self.request(Method::GET, path).query(query);
        let count: Count = self.send(request, "GET", path, CALL_TIMEOUT).await?;
        Ok(count.count)
    }

    /// `GET /history/activity-instance?processInstanceId=…`: the activities an instance passed
    /// through, in the order they started.
    pub async fn historic_activity_instances(
        &self,
        process_instance_id: &str,
    ) -> Result<Vec<HistoricActivityInstance>, ClientError> {
        let path = "history/activity-instance";
        let request = || {
            self.request(Method::GET, path).query(&[
                ("processInstanceId", process_instance_id),
                ("sortBy", "startTime"),
                ("sortOrder", "asc"),
            ])
        };
        self.send(request, "GET", path, CALL_TIMEOUT).await
    }

    /// `GET /incident`, optionally for one process instance.
    pub async fn incidents(
        &self,
        process_instance_id: Option<&str>,
    ) -> Result<Vec<Incident>, ClientError> {
        let path = "incident";
        let request = || {
            let request = self.request(Method::GET, path);
            match process_instance_id {
                Some(id) => request.query(&[("processInstanceId", id)]),
                None => request,
            }
        };
        self.send(request, "GET", path, CALL_TIMEOUT).await
    }

    /// `GET /external-task/{id}/errorDetails`: the details a failure report left.
    pub async fn external_task_error_details(&self, task_id: &str) -> Result<String, ClientError> {
        let path = format!("external-task/{}/errorDetails", segment(task_id));
        let request = || self.request(Method::GET, &path);
        let response = self.execute(request, "GET", &path, CALL_TIMEOUT).await?;
        response
            .text()
            .await
            .map_err(|e| unexpected("GET", &path, e))
    }

    /// `GET /external-task/topic-names?withUnlockedTasks=true&withRetriesLeft=true`: the topics
    /// that have tasks a worker could fetch now (tasks of suspended instances included).
    pub async fn waiting_topic_names(&self) -> Result<Vec<String>, ClientError> {
        let path = "external-task/topic-names";
        let request = || {
            self.request(Method::GET, path)
                .query(&[("withUnlockedTasks", "true"), ("withRetriesLeft", "true")])
        };
        self.send(request, "GET", path, CALL_TIMEOUT).await
    }

    /// `GET /external-task?topicName=…&notLocked=true&active=true&withRetriesLeft=true`, sorted
    /// by `createTime`, oldest first, at most `max_results`: tasks of `topic` that wait for a
    /// worker (no lock, retries left, not suspended).
    pub async fn waiting_external_tasks(
        &self,
        topic: &str,
        max_results: u32,
    ) -> Result<Vec<ExternalTask>, ClientError> {
        let path = "external-task";
        let max_results = max_results.to_string();
        let request = || {
            self.request(Method::GET, path)
                .query(&waiting(topic))
                .query(&[
                    ("sortBy", "createTime"),
                    ("sortOrder", "asc"),
                    ("maxResults", max_results.as_str()),
                ])
        };
        self.send(request, "GET", path, CALL_TIMEOUT).await
    }

    /// `GET /external-task/count` with the filters of [`Self::waiting_external_tasks`]: how many
    /// tasks of `topic` wait for a worker.
    pub async fn waiting_external_task_count(&self, topic: &str) -> Result<u64, ClientError> {
        #[derive(serde::Deserialize)]
        struct Count {
            count: u64,
        }
        let path = "external-task/count";
        let request = || self.request(Method::GET, path).query(&waiting(topic));
        let count: Count = self.send(request, "GET", path, CALL_TIMEOUT).await?;
        Ok(count.count)
    }

    /// `POST /external-task/fetchAndLock` for `topic` alone, oldest first (sorted by
    /// `createTime`), without variables and without waiting: locks at most `max_tasks` of its
    /// waiting tasks for `worker_id`. Atomic, like every fetch: a task another worker locked
    /// first is not among them.
    pub async fn lock_oldest_external_tasks(
        &self,
        worker_id: &str,
        topic: &str,
        max_tasks: u32,
        lock_duration: Duration,
    ) -> Result<Vec<LockedExternalTask>, ClientError> {
        let body = serde_json::json!({
            "workerId": worker_id,
            "maxTasks": max_tasks,
            "usePriority": false,
            "sorting": [{"sortBy": "createTime", "sortOrder": "asc"}],
            "topics": [{
                "topicName": topic,
                "lockDuration": millis(lock_duration),
                "variables": [],
            }],
        });
        let path = "external-task/fetchAndLock";
        self.call(Method::POST, path, Some(&body)).await
    }

    /// A request to `path`, with the basic or fixed bearer credentials. An OAuth2 token is added
    /// when the request is sent ([`Self::execute`]), since getting one may take a call.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}{}", self.base, path);
        let builder = self.http.request(method, url);
        match &self.auth {
            Auth::None | Auth::OAuth2(_) => builder,
            Auth::Basic { user, password } => builder.basic_auth(user, Some(password)),
            Auth::Bearer(token) => builder.bearer_auth(token),
        }
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let name = method_name(&method);
        let request = || with_json(self.request(method.clone(), path), body);
        self.send(request, name, path, CALL_TIMEOUT).await
    }

    async fn call_no_content<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        let name = method_name(&method);
        let request = || with_json(self.request(method.clone(), path), body);
        self.execute(request, name, path, CALL_TIMEOUT).await?;
        Ok(())
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: impl Fn() -> RequestBuilder,
        method: &'static str,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let response = self.execute(request, method, path, timeout).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unexpected(method, path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| unexpected(method, path, e))
    }

    /// Sends the request `request` builds, and turns an error status into
    /// [`ClientError::Rejected`] with the engine's message. With OAuth2, a 401 means the token
    /// was refused (revoked, or the engine's keys changed): the request is sent once more with a
    /// new token, and a second 401 is the answer.
    async fn execute(
        &self,
        request: impl Fn() -> RequestBuilder,
        method: &'static str,
        path: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        tracing::trace!(method, path, "engine call");
        let response = match &self.auth {
            Auth::OAuth2(tokens) => {
                let token = tokens.token(&self.http).await?;
                let response = self
                    .transmit(request().bearer_auth(&token), timeout)
                    .await?;
                if response.status() == StatusCode::UNAUTHORIZED {
                    tracing::debug!(
                        method,
                        path,
                        "the engine refused the access token: a new one"
                    );
                    tokens.refused(&token).await;
                    let token = tokens.token(&self.http).await?;
                    self.transmit(request().bearer_auth(&token), timeout)
                        .await?
                } else {
                    response
                }
            }
            Auth::None | Auth::Basic { .. } | Auth::Bearer(_) => {
                self.transmit(request(), timeout).await?
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(rejected(method, path, status, &text))
    }

    async fn transmit(
        &self,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        request
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.to_string(),
                source,
            })
    }
}

/// The external-task query's filters for tasks of `topic` that wait for a worker: no lock,
/// retries left, not suspended.
fn waiting(topic: &str) -> [(&'static str, &str); 4] {
    [
        ("topicName", topic),
        ("notLocked", "true"),
        ("active", "true"),
        ("withRetriesLeft", "true"),
    ]
}

fn with_json<B: Serialize + ?Sized>(request: RequestBuilder, body: Option<&B>) -> RequestBuilder {
    match body {
        Some(body) => request.json(body),
        None => request,
    }
}

fn rejected(method: &'static str, path: &str, status: StatusCode, text: &str) -> ClientError {
    let parsed: Option<ErrorBody> = serde_json::from_str(text).ok();
    let (error_type, message, problems) = match parsed {
        Some(body) => (
            body.error_type,
            body.message,
            body.details.map(|d| d.into_problems()).unwrap_or_default(),
        ),
        None => (None, None, Vec::new()),
    };
    let message = message.unwrap_or_else(|| match text.trim() {
        "" => status.canonical_reason().unwrap_or("no message").to_owned(),
        // A proxy's or servlet container's page, not Camunda's JSON: keep it short.
        other => other.chars().take(300).collect(),
    });
    ClientError::Rejected {
        method,
        path: path.to_owned(),
        status: status.as_u16(),
        error_type,
        message,
        problems,
    }
}

fn unexpected(method: &'static str, path: &str, e: impl fmt::Display) -> ClientError {
    ClientError::Unexpected {
        method,
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "HTTP",
    }
}

/// Ids and keys go into paths; keep them one segment.
fn segment(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
