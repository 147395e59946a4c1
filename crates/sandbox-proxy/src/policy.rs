//! What the proxy lets through, decided from the request alone: which Docker API calls (those
//! ProcOS's sandbox makes, `adapters/src/sandbox/`), which images, and which container
//! configurations. Pure functions, so every rule is tested without a Docker engine; `proxy.rs`
//! carries the decisions out.
//!
//! A container-create body is checked by the sandbox contract
//! ([`procos_sandbox_contract::docker::check_create`]), the same crate the adapters build their
//! bodies with, and forwarded as the contract rebuilt it.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use serde_json::Value;
use url::form_urlencoded;

use procos_sandbox_contract::docker::{self as contract, CreateRefusal};
use procos_sandbox_contract::{ImageAllowlist, normalize};

/// The label every container of ProcOS's sandbox carries (its value is the task's id). The
/// proxy creates only containers that carry it and touches no container without it.
pub use procos_sandbox_contract::labels::TASK as SANDBOX_LABEL;

/// The oldest API version the rules are written for. Older versions read some calls
/// differently (before 1.24, `start` took a HostConfig of its own); a client that names no
/// version gets the engine's current one.
const MIN_API_VERSION: (u32, u32) = (1, 40);

/// The answer to a call the proxy does not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl Refusal {
    /// 403, with a message naming the call and the reason.
    pub(crate) fn forbidden(method: &Method, path: &str, reason: &str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: format!("the ProcOS sandbox proxy refuses {method} {path}: {reason}"),
        }
    }

    /// 400: a request the proxy cannot read, so cannot check.
    pub(crate) fn bad_request(method: &Method, path: &str, reason: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: format!("the ProcOS sandbox proxy cannot check {method} {path}: {reason}"),
        }
    }
}

/// A call the proxy lets through, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// `/v1.41` when the client named an API version, else empty; kept on the forwarded path.
    pub(crate) version: String,
    pub(crate) call: Call,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    /// `_ping`, `version`, an allowed image's inspection: forwarded as asked, without a body.
    Plain,
    /// `POST /images/create`: a pull, with the query rebuilt from the checked reference.
    Pull { query: String },
    /// `POST /containers/create`: the body is read, checked and rebuilt ([`check_create`]).
    Create,
    /// `GET /containers/json`: the query rebuilt with the sandbox label as a filter.
    List { query: String },
    /// One container's operation; allowed only on a container with [`SANDBOX_LABEL`].
    Container { id: String, op: ContainerOp },
}

/// The per-container operations of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContainerOp {
    Start,
    Wait,
    Inspect,
    Logs,
    /// A warm container's hand-over: its task on stdin, its output back, over one connection
    /// the engine upgrades to a raw stream.
    Attach,
    PutArchive,
    GetArchive,
    StatArchive,
    Kill,
    Remove,
}

impl ContainerOp {
    fn suffix(self) -> &'static str {
        match self {
            Self::Start => "/start",
            Self::Wait => "/wait",
            Self::Inspect => "/json",
            Self::Logs => "/logs",
            Self::Attach => "/attach",
            Self::PutArchive | Self::GetArchive | Self::StatArchive => "/archive",
            Self::Kill => "/kill",
            Self::Remove => "",
        }
    }

    /// Whether the client's request body is forwarded: only an upload's tar. Every other
    /// operation goes to the engine without a body, so nothing can ride along in one.
    pub(crate) fn takes_body(self) -> bool {
        self == Self::PutArchive
    }
}

impl Route {
    /// The path of this route's container operation on `id` (the full id the proxy checked).
    pub(crate) fn container_path(&self, id: &str, op: ContainerOp) -> String {
        format!("{}/containers/{id}{}", self.version, op.suffix())
    }
}

const CALLS: &str = "it is not one of the Docker API calls ProcOS's sandbox makes (ping, version, image inspect and pull, container create, start, wait, inspect, logs, attach, archive, kill, remove and list)";

/// Decides whether `method path?query` is a call of the sandbox, and how to forward it.
pub(crate) fn route(
    method: &Method,
    path: &str,
    query: Option<&str>,
    images: &ImageAllowlist,
) -> Result<Route, Refusal> {
    let refuse = |reason: &str| Refusal::forbidden(method, path, reason);
    let (version, rest) = split_version(path).map_err(|reason| refuse(&reason))?;
    let segments = segments(rest).map_err(|reason| refuse(&reason))?;
    let call = match (method.as_str(), segments.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) | ("GET", ["version"]) => Call::Plain,
        ("GET", ["images", name @ .., "json"]) if !name.is_empty() => {
            let image = name.join("/");
            if !images.allows(&image) {
                return Err(refuse(&not_allowed(&image, images)));
            }
            Call::Plain
        }
        ("POST", ["images", "create"]) => Call::Pull {
            query: pull_query(query, images).map_err(|reason| refuse(&reason))?,
        },
        ("POST", ["containers", "create"]) => Call::Create,
        ("GET", ["containers", "json"]) => Call::List {
            query: list_query(query).map_err(|reason| refuse(&reason))?,
        },
        (method, ["containers", id, rest @ ..]) => {
            let op = match (method, rest) {
                ("POST", ["start"]) => ContainerOp::Start,
                ("POST", ["wait"]) => ContainerOp::Wait,
                ("GET", ["json"]) => ContainerOp::Inspect,
                ("GET", ["logs"]) => ContainerOp::Logs,
                ("POST", ["attach"]) => {
                    attach_query(query).map_err(|reason| refuse(&reason))?;
                    ContainerOp::Attach
                }
                ("PUT", ["archive"]) => ContainerOp::PutArchive,
                ("GET", ["archive"]) => ContainerOp::GetArchive,
                ("HEAD", ["archive"]) => ContainerOp::StatArchive,
                ("POST", ["kill"]) => ContainerOp::Kill,
                ("DELETE", []) => ContainerOp::Remove,
                _ => return Err(refuse(CALLS)),
            };
            if !is_container_ref(id) {
                return Err(refuse(&format!("`{id}` is not a container id or name")));
            }
            Call::Container {
                id: (*id).to_owned(),
                op,
            }
        }
        _ => return Err(refuse(CALLS)),
    };
    Ok(Route {
        version: version.to_owned(),
        call,
    })
}

/// `/v1.41/containers/create` → (`/v1.41`, `/containers/create`); a path without a version
/// prefix is returned whole.
fn split_version(path: &str) -> Result<(&str, &str), String> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(("", path));
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let Some((major, minor)) = rest[..end].split_once('.') else {
        return Ok(("", path));
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return Ok(("", path));
    }
    let (Ok(major_n), Ok(minor_n)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return Err(format!("API version {major}.{minor} is not a version"));
    };
    if (major_n, minor_n) < MIN_API_VERSION {
        return Err(format!(
            "API version {major}.{minor} is older than {}.{}, the oldest the proxy's rules are written for (use a newer client, or none: the engine's own)",
            MIN_API_VERSION.0, MIN_API_VERSION.1
        ));
    }
    Ok(path.split_at(2 + end))
}

/// The path's segments, refusing any form the engine's router would clean or decode into
/// another path than the one checked.
fn segments(rest: &str) -> Result<Vec<&str>, String> {
    let plain = "the path is not in the plain form the proxy checks (no empty, `.` or `..` segments, no percent-encoding)";
    let Some(rest) = rest.strip_prefix('/') else {
        return Err(plain.to_owned());
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if rest.contains(['%', '\\'])
        || segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(plain.to_owned());
    }
    Ok(segments)
}

/// A container id, id prefix or name as Docker allows them.
fn is_container_ref(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && s.len() <= 256
}

fn not_allowed(image: &str, images: &ImageAllowlist) -> String {
    format!(
        "the image `{image}` is not in the proxy's allowed images ({}); add it to --allowed-images (PROCOS_SANDBOX_PROXY_ALLOWED_IMAGES) if it is trusted",
        images.describe()
    )
}

/// The query's pairs; a name given twice is refused, since the engine would read only one of
/// them and the proxy must check the one it reads.
fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if pairs.iter().any(|(seen, _)| *seen == name) {
            return Err(format!("the query names `{name}` twice"));
        }
        pairs.push((name.into_owned(), value.into_owned()));
    }
    Ok(pairs)
}

/// A pull's query, rebuilt from the checked reference (with its tag: a pull without one
/// would fetch every tag of the repository, not just the `:latest` that was checked).
fn pull_query(query: Option<&str>, images: &ImageAllowlist) -> Result<String, String> {
    let mut from_image = None;
    let mut tag = String::new();
    let mut platform = String::new();
    for (name, value) in query_pairs(query)? {
        match name.as_str() {
            "fromImage" => from_image = Some(value),
            "tag" => tag = value,
            "platform" => platform = value,
            "fromSrc" | "repo" | "changes" | "message" => {
                return Err(format!(
                    "`{name}` imports an image from a tarball or URL; the proxy lets through only pulls of allowed images by name"
                ));
            }
            other => {
                return Err(format!(
                    "the query parameter `{other}` is not one of a pull (fromImage, tag, platform)"
                ));
            }
        }
    }
    let from_image = from_image
        .filter(|f| !f.trim().is_empty())
        .ok_or("a pull names its image in fromImage")?;
    let last = from_image.rsplit('/').next().unwrap_or(&from_image);
    let reference = if tag.is_empty() {
        from_image.clone()
    } else if last.contains(':') || from_image.contains('@') {
        return Err("fromImage names a tag or digest and tag names another".to_owned());
    } else if tag.starts_with("sha256:") {
        format!("{from_image}@{tag}")
    } else {
        format!("{from_image}:{tag}")
    };
    let reference = normalize(&reference);
    if !images.allows(&reference) {
        return Err(not_allowed(&reference, images));
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.append_pair("fromImage", &reference);
    if !platform.is_empty() {
        out.append_pair("platform", &platform);
    }
    Ok(out.finish())
}

/// An attachment's query: only which streams, whether the past output comes first, and
/// whether it streams (no `detachKeys`: a sandbox's stdin is the worker's alone).
fn attach_query(query: Option<&str>) -> Result<(), String> {
    for (name, value) in query_pairs(query)? {
        match name.as_str() {
            "stream" | "stdin" | "stdout" | "stderr" | "logs" => {
                if !matches!(value.as_str(), "0" | "1" | "true" | "false") {
                    return Err(format!(
                        "the attach parameter `{name}` is `{value}`, not true or false"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "the query parameter `{other}` is not one of an attachment's (stream, stdin, stdout, stderr, logs)"
                ));
            }
        }
    }
    Ok(())
}

/// A list's query with [`SANDBOX_LABEL`] added to its label filters (Docker ANDs them), so a
/// list shows sandbox containers only.
fn list_query(query: Option<&str>) -> Result<String, String> {
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut filters: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for (name, value) in query_pairs(query)? {
        if name == "filters" {
            filters = parse_filters(&value)?;
        } else {
            out.append_pair(&name, &value);
        }
    }
    filters
        .entry("label".to_owned())
        .or_default()
        .insert(SANDBOX_LABEL.to_owned(), true);
    let filters = serde_json::to_string(&filters).map_err(|e| e.to_string())?;
    out.append_pair("filters", &filters);
    Ok(out.finish())
}

/// Docker's filter JSON in either of its forms: `{"label": ["a"]}` or `{"label": {"a": true}}`.
fn parse_filters(text: &str) -> Result<BTreeMap<String, BTreeMap<String, bool>>, String> {
    let bad = || format!("filters is not Docker's filter JSON: {text}");
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let Ok(Value::Object(parsed)) = serde_json::from_str::<Value>(text) else {
        return Err(bad());
    };
    let mut filters = BTreeMap::new();
    for (name, values) in parsed {
        let values: BTreeMap<String, bool> = match values {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok((s, true)),
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()?,
            Value::Object(items) => items
                .into_iter()
                .map(|(k, v)| v.as_bool().map(|b| (k, b)).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        };
        filters.insert(name, values);
    }
    Ok(filters)
}

/// Checks a `POST /containers/create` body against the sandbox contract and returns it
/// rebuilt from the checked fields; an image outside the list is refused naming the proxy's
/// own list and where it is set.
pub(crate) fn check_create(
    body: &Value,
    images: &ImageAllowlist,
    workspaces: Option<&std::path::Path>,
) -> Result<Value, String> {
    contract::check_create(body, images, workspaces).map_err(|refusal| match refusal {
        CreateRefusal::ImageNotAllowed(image) => not_allowed(&image, images),
        CreateRefusal::Body(reason) => reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn images() -> ImageAllowlist {
        ImageAllowlist::new(["procos/*".to_owned()])
    }

    /// What bollard serialises for ProcOS's sandbox with its default guards.
    fn sandbox_body() -> Value {
        json!({
            "Image": "procos/python-sandbox",
            "Env": ["PROCOS_WAIT_FOR_INPUT=stdin"],
            "User": "65534:65534",
            "WorkingDir": "/tmp",
            "NetworkDisabled": true,
            "Labels": {"io.procos.task": "t-1", "io.procos.topic": "invoice"},
            "HostConfig": {
                "NetworkMode": "none",
                "ReadonlyRootfs": true,
                "Tmpfs": {"/tmp": "rw,nosuid,nodev,size=64m,mode=1777"},
                "CapDrop": ["ALL"],
                "SecurityOpt": ["no-new-privileges"],
                "PidsLimit": 128,
                "Memory": 268_435_456,
                "MemorySwap": 268_435_456,
                "NanoCpus": 1_000_000_000,
                "Mounts": [{"Target": "/in", "Type": "volume"}, {"Target": "/out", "Type": "volume"}],
                "Init": true
            }
        })
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut body = sandbox_body();
        let mut at = &mut body;
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
        body
    }

    fn refused(body: &Value) -> String {
        match check_create(body, &images(), None) {
            Ok(rebuilt) => panic!("allowed: {rebuilt}"),
            Err(reason) => reason,
        }
    }

    #[test]
    fn the_sandbox_body_passes_unchanged() {
        let body = sandbox_body();
        assert_eq!(check_create(&body, &images(), None), Ok(body));
    }

    #[test]
    fn relaxed_guards_pass() {
        // network = true: no NetworkMode; read_only = false; user root.
        let mut body = sandbox_body();
        body["HostConfig"]
            .as_object_mut()
            .unwrap()
            .remove("NetworkMode");
        body["NetworkDisabled"] = json!(false);
        body["HostConfig"]["ReadonlyRootfs"] = json!(false);
        body["User"] = json!("0");
        assert!(check_create(&body, &images(), None).is_ok());
        for mode in ["bridge", "default", ""] {
            assert!(
                check_create(
                    &with(&["HostConfig", "NetworkMode"], json!(mode)),
                    &images(),
                    None
                )
                .is_ok()
            );
        }
        let tmpfs_mount =
            json!([{"Target": "/scratch", "Type": "tmpfs", "TmpfsOptions": {"SizeBytes": 1024}}]);
        assert!(
            check_create(
                &with(&["HostConfig", "Mounts"], tmpfs_mount),
                &images(),
                None
            )
            .is_ok()
        );
        assert!(
            check_create(
                &with(&["HostConfig", "Privileged"], json!(false)),
                &images(),
                None
            )
            .is_ok()
        );
        assert!(check_create(&with(&["HostConfig", "CapAdd"], json!([])), &images(), None).is_ok());
        let default_log = json!({"Type": "", "Config": {}});
        assert!(
            check_create(
                &with(&["HostConfig", "LogConfig"], default_log),
                &images(),
                None
            )
            .is_ok()
        );
        assert!(
            check_create(
                &with(
                    &["HostConfig", "SecurityOpt"],
                    json!(["no-new-privileges:true"])
                ),
                &images(),
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn privilege_is_refused_naming_the_field_and_the_fix() {
        let cases: &[(&[&str], Value, &str)] = &[
            (
                &["HostConfig", "Privileged"],
                json!(true),
                "HostConfig.Privileged is true",
            ),
            (
                &["HostConfig", "Binds"],
                json!(["/:/host"]),
                "HostConfig.Binds",
            ),
            (
                &["HostConfig", "NetworkMode"],
                json!("host"),
                "HostConfig.NetworkMode is \"host\"",
            ),
            (
                &["HostConfig", "NetworkMode"],
                json!("container:abc"),
                "NetworkMode",
            ),
            (
                &["HostConfig", "NetworkMode"],
                json!("procos_default"),
                "NetworkMode",
            ),
            (
                &["HostConfig", "CapAdd"],
                json!(["SYS_ADMIN"]),
                "HostConfig.CapAdd",
            ),
            (
                &["HostConfig", "PidMode"],
                json!("host"),
                "HostConfig.PidMode",
            ),
            (
                &["HostConfig", "IpcMode"],
                json!("host"),
                "HostConfig.IpcMode",
            ),
            (
                &["HostConfig", "UTSMode"],
                json!("host"),
                "HostConfig.UTSMode",
            ),
            (
                &["HostConfig", "UsernsMode"],
                json!("host"),
                "HostConfig.UsernsMode",
            ),
            (
                &["HostConfig", "CgroupnsMode"],
                json!("host"),
                "HostConfig.CgroupnsMode",
            ),
            (
                &["HostConfig", "Devices"],
                json!([{"PathOnHost": "/dev/sda"}]),
                "HostConfig.Devices",
            ),
            (
                &["HostConfig", "DeviceRequests"],
                json!([{"Count": -1}]),
                "DeviceRequests",
            ),
            (
                &["HostConfig", "DeviceCgroupRules"],
                json!(["a *:* rwm"]),
                "DeviceCgroupRules",
            ),
            (
                &["HostConfig", "SecurityOpt"],
                json!(["no-new-privileges", "seccomp=unconfined"]),
                "seccomp=unconfined",
            ),
            (
                &["HostConfig", "SecurityOpt"],
                json!(["apparmor=unconfined"]),
                "apparmor=unconfined",
            ),
            (
                &["HostConfig", "VolumesFrom"],
                json!(["other"]),
                "HostConfig.VolumesFrom",
            ),
            (
                &["HostConfig", "Sysctls"],
                json!({"kernel.x": "1"}),
                "HostConfig.Sysctls",
            ),
            (
                &["HostConfig", "CgroupParent"],
                json!("/"),
                "HostConfig.CgroupParent",
            ),
            (
                &["HostConfig", "Runtime"],
                json!("nvidia"),
                "HostConfig.Runtime",
            ),
            (
                &["HostConfig", "PortBindings"],
                json!({"80/tcp": [{"HostPort": "80"}]}),
                "PortBindings",
            ),
            (
                &["HostConfig", "PublishAllPorts"],
                json!(true),
                "PublishAllPorts",
            ),
            (
                &["HostConfig", "LogConfig"],
                json!({"Type": "syslog"}),
                "LogConfig",
            ),
            (&["HostConfig", "MaskedPaths"], json!([]), "MaskedPaths"),
            (&["HostConfig", "OomScoreAdj"], json!(-1000), "OomScoreAdj"),
            (
                &["HostConfig", "RestartPolicy"],
                json!({"Name": "always"}),
                "RestartPolicy.Name",
            ),
            (
                &["HostConfig", "Mounts"],
                json!([{"Type": "bind", "Source": "/", "Target": "/host"}]),
                "`bind` mount of \"/\"",
            ),
            (
                &["HostConfig", "Mounts"],
                json!([{"Type": "volume", "Source": "engine-data", "Target": "/d"}]),
                "mounts the volume \"engine-data\"",
            ),
            (
                &["HostConfig", "Mounts"],
                json!([{"Type": "volume", "Target": "/d", "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}}]),
                "DriverConfig",
            ),
            (
                &["HostConfig", "CapDrop"],
                json!(["NET_RAW"]),
                "CapDrop does not drop ALL",
            ),
            (
                &["HostConfig", "SecurityOpt"],
                json!([]),
                "lacks no-new-privileges",
            ),
            (&["HostConfig", "Memory"], json!(0), "HostConfig.Memory"),
            (
                &["HostConfig", "PidsLimit"],
                json!(-1),
                "HostConfig.PidsLimit",
            ),
            (
                &["HostConfig", "NanoCpus"],
                Value::Null,
                "HostConfig.NanoCpus",
            ),
            (
                &["HostConfig", "Wacky"],
                json!(1),
                "HostConfig.Wacky is not among",
            ),
            (
                &["Image"],
                json!("debian:bookworm-slim"),
                "`debian:bookworm-slim` is not in the proxy's allowed images (procos/*)",
            ),
            (
                &["Labels"],
                json!({"io.procos.topic": "x"}),
                "lacks the label `io.procos.task`",
            ),
            (&["HostConfig"], Value::Null, "HostConfig is missing"),
            (
                &["NetworkingConfig"],
                json!({"EndpointsConfig": {"procos_default": {}}}),
                "NetworkingConfig",
            ),
            (&["Volumes"], json!({"/data": {}}), "Volumes is not among"),
            (
                &["HostConfig", "LogConfig"],
                json!({"Type": "", "Config": {"syslog-address": "tcp://x:1"}}),
                "LogConfig",
            ),
        ];
        for (path, value, expected) in cases {
            let reason = refused(&with(path, value.clone()));
            assert!(reason.contains(expected), "{path:?} = {value}: {reason}");
            assert!(
                reason.contains("remove")
                    || reason.contains("set ")
                    || reason.contains("add")
                    || reason.contains("Set"),
                "the reason names the fix: {reason}"
            );
        }
    }

    #[test]
    fn decoder_tricks_do_not_reach_the_engine() {
        // Top-level HostConfig fields, which the engine reads for old clients.
        let reason = refused(&with(&["Privileged"], json!(true)));
        assert!(reason.contains("Privileged is not among"), "{reason}");
        // A differently-cased key is not the checked one.
        let reason = refused(&with(&["HostConfig", "privileged"], json!(true)));
        assert!(reason.contains("privileged"), "{reason}");
        let reason = refused(&with(&["hostconfig"], json!({"Privileged": true})));
        assert!(reason.contains("hostconfig"), "{reason}");
        let reason = refused(&with(
            &["HostConfig", "RestartPolicy"],
            json!({"Name": "no", "name": "always"}),
        ));
        assert!(reason.contains("RestartPolicy.name"), "{reason}");
        // A refused known field is named before an unknown one.
        let mut body = with(&["HostConfig", "BlkioDeviceReadBps"], json!([]));
        body["HostConfig"]["Privileged"] = json!(true);
        assert!(refused(&body).contains("HostConfig.Privileged is true"));
        // A null under another casing would clear the checked field: it is dropped.
        let body = with(&["hostConfig"], Value::Null);
        let rebuilt = check_create(&body, &images(), None).unwrap();
        assert!(rebuilt.get("hostConfig").is_none());
        assert_eq!(rebuilt, sandbox_body());
    }

    #[test]
    fn the_sandbox_calls_are_routed_with_or_without_a_version() {
        let get = Method::GET;
        for version in ["", "/v1.41", "/v1.53"] {
            let r = |method: &Method, path: &str, query: Option<&str>| {
                route(method, &format!("{version}{path}"), query, &images())
            };
            assert_eq!(r(&get, "/_ping", None).unwrap().call, Call::Plain);
            assert_eq!(r(&Method::HEAD, "/_ping", None).unwrap().call, Call::Plain);
            assert_eq!(r(&get, "/version", None).unwrap().call, Call::Plain);
            assert_eq!(
                r(&get, "/images/procos/python-sandbox/json", None)
                    .unwrap()
                    .call,
                Call::Plain
            );
            assert_eq!(
                r(
                    &Method::POST,
                    "/containers/create",
                    Some("name=procos-task-1")
                )
                .unwrap()
                .call,
                Call::Create
            );
            let route = r(&Method::POST, "/containers/abc123/start", None).unwrap();
            assert_eq!(route.version, version);
            assert_eq!(
                route.call,
                Call::Container {
                    id: "abc123".into(),
                    op: ContainerOp::Start
                }
            );
            assert_eq!(
                route.container_path("f00d", ContainerOp::Start),
                format!("{version}/containers/f00d/start")
            );
            for (method, path, op) in [
                (Method::POST, "/containers/x/wait", ContainerOp::Wait),
                (Method::GET, "/containers/x/json", ContainerOp::Inspect),
                (Method::GET, "/containers/x/logs", ContainerOp::Logs),
                (Method::POST, "/containers/x/attach", ContainerOp::Attach),
                (
                    Method::PUT,
                    "/containers/x/archive",
                    ContainerOp::PutArchive,
                ),
                (
                    Method::GET,
                    "/containers/x/archive",
                    ContainerOp::GetArchive,
                ),
                (
                    Method::HEAD,
                    "/containers/x/archive",
                    ContainerOp::StatArchive,
                ),
                (Method::POST, "/containers/x/kill", ContainerOp::Kill),
                (Method::DELETE, "/containers/x", ContainerOp::Remove),
            ] {
                assert_eq!(
                    r(&method, path, None).unwrap().call,
                    Call::Container { id: "x".into(), op },
                    "{method} {path}"
                );
            }
        }
        assert_eq!(ContainerOp::Remove.suffix(), "");
        assert!(ContainerOp::PutArchive.takes_body() && !ContainerOp::Start.takes_body());
    }

    #[test]
    fn every_other_call_is_refused_naming_it() {
        for (method, path) in [
            (Method::POST, "/containers/abc/exec"),
            (Method::POST, "/exec/abc/start"),
            (Method::GET, "/info"),
            (Method::GET, "/v1.41/info"),
            (Method::POST, "/containers/abc/update"),
            (Method::POST, "/containers/abc/rename"),
            (Method::POST, "/containers/abc/commit"),
            (Method::POST, "/build"),
            (Method::POST, "/images/procos/x/tag"),
            (Method::POST, "/images/load"),
            (Method::DELETE, "/images/procos/x"),
            (Method::GET, "/images/json"),
            (Method::POST, "/volumes/create"),
            (Method::POST, "/networks/create"),
            (Method::POST, "/networks/bridge/connect"),
            (Method::GET, "/events"),
            (Method::POST, "/swarm/init"),
            (Method::POST, "/session"),
            (Method::GET, "/containers/create"),
            (Method::POST, "/containers/prune"),
        ] {
            let refusal = route(&method, path, None, &images()).unwrap_err();
            assert_eq!(refusal.status, StatusCode::FORBIDDEN);
            assert!(
                refusal.message.starts_with(&format!(
                    "the ProcOS sandbox proxy refuses {method} {path}: "
                )),
                "{}",
                refusal.message
            );
        }
    }

    #[test]
    fn an_attachment_names_only_its_streams() {
        let r = |query| route(&Method::POST, "/containers/x/attach", query, &images());
        let asked = Some("stdin=true&stdout=true&stderr=true&stream=true&logs=true");
        assert!(r(asked).is_ok());
        assert!(r(None).is_ok());
        let keys = r(Some("stream=1&detachKeys=ctrl-p")).unwrap_err();
        assert!(
            keys.message
                .contains("the query parameter `detachKeys` is not one of an attachment's"),
            "{}",
            keys.message
        );
        let odd = r(Some("stdin=yes")).unwrap_err();
        assert!(
            odd.message.contains("`stdin` is `yes`, not true or false"),
            "{}",
            odd.message
        );
    }

    #[test]
    fn paths_the_engine_would_rewrite_are_refused() {
        for path in [
            "/containers/abc/../../info",
            "//containers/create",
            "/containers/./create",
            "/containers/abc%2Fexec/start",
            "/containers/create/",
            "/v1.23/containers/abc/start",
            "/v1.41",
            "/v1.41.0/containers/create",
            "/containers/-abc/start",
        ] {
            assert!(
                route(&Method::POST, path, None, &images()).is_err(),
                "{path}"
            );
        }
        let old = route(
            &Method::POST,
            "/v1.23/containers/abc/start",
            None,
            &images(),
        )
        .unwrap_err();
        assert!(old.message.contains("API version 1.23"), "{}", old.message);
    }

    #[test]
    fn images_outside_the_allowlist_are_neither_inspected_nor_pulled() {
        let refusal = route(
            &Method::GET,
            "/images/debian:bookworm-slim/json",
            None,
            &images(),
        )
        .unwrap_err();
        assert!(
            refusal
                .message
                .contains("`debian:bookworm-slim` is not in the proxy's allowed images"),
            "{}",
            refusal.message
        );
        let pull = |query: &str| route(&Method::POST, "/images/create", Some(query), &images());
        assert_eq!(
            pull("fromImage=procos%2Fpython-sandbox&platform=")
                .unwrap()
                .call,
            Call::Pull {
                query: "fromImage=procos%2Fpython-sandbox%3Alatest".into()
            }
        );
        assert_eq!(
            pull("fromImage=procos/x&tag=2&platform=linux/amd64")
                .unwrap()
                .call,
            Call::Pull {
                query: "fromImage=procos%2Fx%3A2&platform=linux%2Famd64".into()
            }
        );
        for (query, reason) in [
            (
                "fromImage=debian&tag=bookworm-slim",
                "`debian:bookworm-slim` is not in",
            ),
            (
                "fromSrc=-&repo=procos/python-sandbox",
                "`fromSrc` imports an image",
            ),
            (
                "fromImage=procos/x&fromImage=evil/x",
                "names `fromImage` twice",
            ),
            ("fromImage=procos/x:1&tag=2", "names a tag or digest"),
            ("tag=1", "fromImage"),
            ("fromImage=procos/x&changes=USER%200", "`changes` imports"),
        ] {
            let refusal = pull(query).unwrap_err();
            assert!(
                refusal.message.contains(reason),
                "{query}: {}",
                refusal.message
            );
        }
    }

    #[test]
    fn a_list_shows_sandbox_containers_only() {
        let list =
            |query: Option<&str>| match route(&Method::GET, "/containers/json", query, &images()) {
                Ok(Route {
                    call: Call::List { query },
                    ..
                }) => form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            };
        assert_eq!(
            list(None),
            vec![(
                "filters".to_owned(),
                r#"{"label":{"io.procos.task":true}}"#.to_owned()
            )]
        );
        assert_eq!(
            list(Some(
                r#"all=true&filters={"label":["io.procos.warm"],"status":["exited"],"exited":["75"]}"#
            )),
            vec![
                ("all".to_owned(), "true".to_owned()),
                (
                    "filters".to_owned(),
                    r#"{"exited":{"75":true},"label":{"io.procos.task":true,"io.procos.warm":true},"status":{"exited":true}}"#.to_owned()
                ),
            ]
        );
        assert_eq!(
            list(Some(r#"filters={"label":{"io.procos.task":false}}"#))[0].1,
            r#"{"label":{"io.procos.task":true}}"#
        );
        let refusal = route(
            &Method::GET,
            "/containers/json",
            Some("filters=[1]"),
            &images(),
        )
        .unwrap_err();
        assert!(
            refusal.message.contains("filter JSON"),
            "{}",
            refusal.message
        );
    }
}
