//! One request's way through the proxy: the policy's decision (`policy.rs`), then the call on
//! the Docker engine's socket with the answer streamed back. Owns the upstream connections
//! (each request opens its own, driven by a task in [`Proxy`]'s `JoinSet`) and the memory of
//! which containers are known to be sandbox containers.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;
use tokio::task::JoinSet;

use crate::policy::{self, Call, ContainerOp, Refusal, Route, SANDBOX_LABEL};
use procos_sandbox_contract::ImageAllowlist;

/// The body of every request and answer the proxy sends: streamed from the other side, or
/// made here.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Largest inspection answer read while checking a container's label.
const INSPECT_LIMIT: usize = 4 * 1024 * 1024;
/// Largest create answer read for the new container's id.
const CREATED_LIMIT: usize = 64 * 1024;
/// Ids remembered as sandbox containers; past it the memory starts again (a miss only costs
/// one inspection).
const REMEMBERED: usize = 4096;

/// Headers that belong to one connection, not to the request or answer carried over it.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The proxy's state shared by all connections.
#[derive(Debug)]
pub(crate) struct Proxy {
    upstream: PathBuf,
    images: ImageAllowlist,
    /// The workers' workspace directory, whose direct subdirectories a sandbox may bind.
    workspaces: Option<PathBuf>,
    max_body: usize,
    /// Full ids of containers seen to carry [`SANDBOX_LABEL`]. Docker never changes a
    /// container's labels, so a checked id stays good until the container is removed.
    sandbox_ids: Mutex<HashSet<String>>,
    /// The tasks driving upstream connections; each ends when its answer has been read.
    drivers: Mutex<JoinSet<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain values inside; a panic elsewhere cannot leave them half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    pub(crate) fn new(
        upstream: PathBuf,
        images: ImageAllowlist,
        workspaces: Option<PathBuf>,
        max_body: usize,
    ) -> Self {
        Self {
            upstream,
            images,
            workspaces,
            max_body,
            sandbox_ids: Mutex::default(),
            drivers: Mutex::new(JoinSet::new()),
        }
    }

    /// Ends the upstream connections still open (after the listeners' grace period).
    pub(crate) async fn close(&self) {
        let mut drivers = std::mem::take(&mut *lock(&self.drivers));
        drivers.shutdown().await;
    }

    /// Answers one request: refused with Docker's error shape, or the engine's answer.
    pub(crate) async fn handle(&self, mut request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().map(str::to_owned);
        let route = match policy::route(&method, &path, query.as_deref(), &self.images) {
            Ok(route) => route,
            Err(refusal) => return refused(&refusal),
        };
        // An attachment becomes a raw stream both ways once the engine agrees (101).
        let upgrade = matches!(
            route.call,
            Call::Container {
                op: ContainerOp::Attach,
                ..
            }
        )
        .then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let answer = match &route.call {
            Call::Plain => {
                let target = with_query(&path, query.as_deref());
                self.forward(&method, &target, &parts.headers, Forwarded::Nothing)
                    .await
            }
            Call::Pull { query } | Call::List { query } => {
                let target = with_query(&path, Some(query));
                self.forward(&method, &target, &parts.headers, Forwarded::Nothing)
                    .await
            }
            Call::Create => {
                self.create(&method, &path, query.as_deref(), &parts.headers, body)
                    .await
            }
            Call::Container { id, op } => {
                let request = (&method, query.as_deref(), &parts.headers);
                self.container(&route, id, *op, request, body, upgrade)
                    .await
            }
        };
        match answer {
            Ok(response) => {
                tracing::debug!(%method, %path, status = %response.status(), "forwarded");
                response
            }
            Err(response) => response,
        }
    }

    /// `POST /containers/create`: read (bounded), checked, rebuilt, forwarded; the new id is
    /// remembered as a sandbox container's.
    async fn create(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Incoming,
    ) -> Result<Response<Body>, Response<Body>> {
        let bytes = match Limited::new(body, self.max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(refused(&Refusal {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!(
                        "the ProcOS sandbox proxy refuses {method} {path}: the body is over {} KiB (--max-body-kb)",
                        self.max_body / 1024
                    ),
                }));
            }
            Err(e) => {
                return Err(refused(&Refusal::bad_request(
                    method,
                    path,
                    &format!("the body could not be read: {e}"),
                )));
            }
        };
        let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| {
            refused(&Refusal::bad_request(
                method,
                path,
                &format!("the body is not JSON: {e}"),
            ))
        })?;
        let checked = policy::check_create(&parsed, &self.images, self.workspaces.as_deref())
            .map_err(|reason| refused(&Refusal::forbidden(method, path, &reason)))?;
        let image = checked
            .get("Image")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let rebuilt = serde_json::to_vec(&checked).map_err(|e| {
            refused(&Refusal::bad_request(
                method,
                path,
                &format!("the body cannot be written again: {e}"),
            ))
        })?;
        let target = with_query(path, query);
        let response = self
            .send(
                method,
                &target,
                headers,
                Forwarded::Json(Bytes::from(rebuilt)),
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Ok(relay(response));
        }
        let (mut parts, body) = response.into_parts();
        let bytes = read(body, CREATED_LIMIT)
            .await
            .map_err(|e| self.broken(&e))?;
        let id = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_owned));
        match id {
            Some(id) => {
                tracing::info!(container = %id, %image, "created a sandbox container");
                self.remember(id);
            }
            None => tracing::warn!("the engine's create answer carried no container id"),
        }
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, full(bytes)))
    }

    /// One container's operation, on the full id of a container checked to be a sandbox
    /// container: a name or id prefix cannot come to mean another container in between.
    async fn container(
        &self,
        route: &Route,
        id: &str,
        op: ContainerOp,
        (method, query, headers): (&Method, Option<&str>, &HeaderMap),
        body: Incoming,
        upgrade: Option<OnUpgrade>,
    ) -> Result<Response<Body>, Response<Body>> {
        let shown = route.container_path(id, op);
        let full_id = self.sandbox_id(method, &shown, id, headers).await?;
        let target = with_query(&route.container_path(&full_id, op), query);
        let forwarded = if op.takes_body() {
            Forwarded::Tar(body.boxed())
        } else if upgrade.is_some() {
            Forwarded::Upgrade
        } else {
            Forwarded::Nothing
        };
        let mut response = self.send(method, &target, headers, forwarded).await?;
        if op == ContainerOp::Remove && response.status().is_success() {
            lock(&self.sandbox_ids).remove(&full_id);
        }
        if let Some(client) = upgrade
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let engine = hyper::upgrade::on(&mut response);
            self.splice(full_id, client, engine);
            let (mut parts, _) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            parts
                .headers
                .insert(header::UPGRADE, HeaderValue::from_static("tcp"));
            return Ok(Response::from_parts(parts, empty()));
        }
        Ok(relay(response))
    }

    /// Copies both ways between the client's upgraded connection and the engine's, once both
    /// are upgraded, in the drivers' `JoinSet`: it ends when either side closes.
    fn splice(&self, container: String, client: OnUpgrade, engine: OnUpgrade) {
        let mut drivers = lock(&self.drivers);
        while drivers.try_join_next().is_some() {}
        drivers.spawn(async move {
            let (client, engine) = match tokio::try_join!(client, engine) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(%container, error = %e, "an attachment was not upgraded");
                    return;
                }
            };
            let copied =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(engine))
                    .await;
            if let Err(e) = copied {
                tracing::debug!(%container, error = %e, "an attachment ended with an error");
            }
        });
    }

    /// The full id of `id` when it is a sandbox container; otherwise the answer to send: the
    /// engine's own (no such container) or a refusal.
    async fn sandbox_id(
        &self,
        method: &Method,
        path: &str,
        id: &str,
        headers: &HeaderMap,
    ) -> Result<String, Response<Body>> {
        if lock(&self.sandbox_ids).contains(id) {
            return Ok(id.to_owned());
        }
        let inspect = format!("/containers/{id}/json");
        let response = self
            .send(&Method::GET, &inspect, headers, Forwarded::Nothing)
            .await?;
        let (parts, body) = response.into_parts();
        let bytes = read(body, INSPECT_LIMIT)
            .await
            .map_err(|e| self.broken(&e))?;
        if parts.status != StatusCode::OK {
            return Err(json_response(parts.status, bytes));
        }
        let inspected: Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.broken(&format!("its inspection is not JSON: {e}")))?;
        let full_id = inspected
            .get("Id")
            .and_then(Value::as_str)
            .filter(|full| full.len() == 64 && full.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.broken("its inspection carries no container id"))?;
        let labelled = inspected
            .pointer("/Config/Labels")
            .and_then(|labels| labels.get(SANDBOX_LABEL))
            .is_some_and(Value::is_string);
        if !labelled {
            return Err(refused(&Refusal::forbidden(
                method,
                path,
                &format!(
                    "the container `{id}` is not a ProcOS sandbox container: it lacks the label `{SANDBOX_LABEL}`, and the proxy touches no other container"
                ),
            )));
        }
        let full_id = full_id.to_owned();
        self.remember(full_id.clone());
        Ok(full_id)
    }

    fn remember(&self, id: String) {
        let mut ids = lock(&self.sandbox_ids);
        if ids.len() >= REMEMBERED {
            ids.clear();
        }
        ids.insert(id);
    }

    /// Sends the call upstream and relays the answer, or says the engine cannot be reached.
    async fn forward(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: Forwarded,
    ) -> Result<Response<Body>, Response<Body>> {
        self.send(method, target, headers, body).await.map(relay)
    }

    /// One call on a fresh connection to the engine's socket.
    async fn send(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: Forwarded,
    ) -> Result<Response<Incoming>, Response<Body>> {
        let stream = UnixStream::connect(&self.upstream)
            .await
            .map_err(|e| self.unreachable(&e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(&e.to_string()))?;
        {
            let mut drivers = lock(&self.drivers);
            while drivers.try_join_next().is_some() {}
            drivers.spawn(async move {
                // With upgrades: an attachment's connection goes on as a raw stream.
                if let Err(e) = connection.with_upgrades().await {
                    tracing::debug!(error = %e, "a connection to the Docker engine ended with an error");
                }
            });
        }
        let mut forwarded = HeaderMap::new();
        for (name, value) in headers {
            if !HOP_BY_HOP.contains(name)
                && name != header::HOST
                && name != header::CONTENT_LENGTH
                && name != header::CONTENT_TYPE
                && name != header::CONTENT_ENCODING
                // Answered by this proxy's own HTTP server already.
                && name != header::EXPECT
            {
                forwarded.append(name.clone(), value.clone());
            }
        }
        // The engine's HTTP server wants a Host; any name does on its socket.
        forwarded.insert(header::HOST, HeaderValue::from_static("docker"));
        let body = match body {
            Forwarded::Nothing => empty(),
            Forwarded::Upgrade => {
                forwarded.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                forwarded.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
                empty()
            }
            Forwarded::Json(bytes) => {
                forwarded.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                forwarded.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                full(bytes)
            }
            Forwarded::Tar(body) => {
                // Always a tar: a form content type would make the engine read the body as
                // query parameters.
                forwarded.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-tar"),
                );
                if let Some(length) = headers.get(header::CONTENT_LENGTH) {
                    forwarded.insert(header::CONTENT_LENGTH, length.clone());
                }
                body
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = target
            .parse()
            .map_err(|e| self.broken(&format!("the path `{target}` is not a URI: {e}")))?;
        *request.headers_mut() = forwarded;
        sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(&e.to_string()))
    }

    fn unreachable(&self, error: &str) -> Response<Body> {
        tracing::warn!(upstream = %self.upstream.display(), %error, "cannot reach the Docker engine");
        message_response(
            StatusCode::BAD_GATEWAY,
            &format!(
                "the ProcOS sandbox proxy cannot reach the Docker engine at {}: {error}",
                self.upstream.display()
            ),
        )
    }

    fn broken(&self, error: &str) -> Response<Body> {
        tracing::warn!(%error, "the Docker engine's answer could not be read");
        message_response(
            StatusCode::BAD_GATEWAY,
            &format!("the ProcOS sandbox proxy could not read the Docker engine's answer: {error}"),
        )
    }
}

/// What goes upstream as the request's body.
enum Forwarded {
    /// No body: the calls that need none get none, so nothing can ride along in one.
    Nothing,
    /// No body, and the connection asked to become a raw stream (an attachment).
    Upgrade,
    /// A checked and rebuilt container configuration.
    Json(Bytes),
    /// An upload's tar, streamed.
    Tar(Body),
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_owned(),
    }
}

async fn read(body: Incoming, limit: usize) -> Result<Bytes, String> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| e.to_string())
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The engine's answer, streamed back.
fn relay(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

fn json_response(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Docker's error shape, `{"message": "…"}`, which Docker clients (bollard among them) show.
fn message_response(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    json_response(status, Bytes::from(body))
}

fn refused(refusal: &Refusal) -> Response<Body> {
    tracing::warn!(status = %refusal.status, reason = %refusal.message, "refused");
    message_response(refusal.status, &refusal.message)
}
