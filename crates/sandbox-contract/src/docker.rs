//! The sandbox on Docker: the container-create body a sandbox run sends ([`create_body`]) and
//! the check a gatekeeper holding the Docker socket runs on any such body ([`check_create`]).
//! Both live here so that what the adapters build and what the proxy lets through cannot
//! drift apart: a test builds every adapter's body and runs it through the check.
//!
//! Bodies are checked against an allowlist of fields and *rebuilt* from the fields that
//! passed: Docker's JSON decoder matches keys case-insensitively, lets a later key overwrite
//! (or, for objects, merge into) an earlier one, and reads a top-level copy of HostConfig's
//! fields for old clients. Forwarding the rebuilt body means the engine decodes exactly what
//! was checked, whatever tricks the original text played.

use std::collections::HashMap;
use std::path::Path;

use bollard_stubs::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use serde_json::{Map, Value};

use crate::guards::AlwaysOn;
use crate::images::ImageAllowlist;
use crate::labels;
use crate::spec::{INPUT_DIR, OUTPUT_DIR, SCRATCH_DIR, SandboxSpec, WORKSPACE_DIR};

/// The security option that keeps setuid files from raising privileges.
const NO_NEW_PRIVILEGES: &str = "no-new-privileges";

/// The container-create body of `spec`: its guards, the [`AlwaysOn`] ones whatever the spec
/// says, anonymous `/in` and `/out` volumes, a tmpfs `/tmp`, the labels, and the instance's
/// workspace bound at `/workspace` when the spec has one.
pub fn create_body(spec: &SandboxSpec) -> ContainerCreateBody {
    let g = &spec.guards;
    let memory = g.memory_bytes();
    let volume = |target: &str| Mount {
        target: Some(target.to_owned()),
        typ: Some(MountType::VOLUME),
        ..Default::default()
    };
    let host_config = HostConfig {
        network_mode: (!g.network).then(|| "none".to_owned()),
        readonly_rootfs: Some(g.read_only),
        tmpfs: Some(HashMap::from([(
            SCRATCH_DIR.to_owned(),
            format!("rw,nosuid,nodev,size={}m,mode=1777", g.tmpfs_mb),
        )])),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec![NO_NEW_PRIVILEGES.to_owned()]),
        // A limit of 0 would mean none to Docker: at least 1 whatever the settings say.
        pids_limit: Some(g.pids_limit.max(1)),
        memory: Some(memory.max(1)),
        memory_swap: Some(memory.max(1)),
        nano_cpus: Some(((g.cpus * 1e9) as i64).max(1)),
        mounts: Some(
            [volume(INPUT_DIR), volume(OUTPUT_DIR)]
                .into_iter()
                .chain(spec.workspace.as_ref().map(|host| Mount {
                    target: Some(WORKSPACE_DIR.to_owned()),
                    source: Some(host.clone()),
                    typ: Some(MountType::BIND),
                    read_only: Some(false),
                    ..Default::default()
                }))
                .collect(),
        ),
        // An init reaps the command's children and passes signals on.
        init: Some(true),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        env: Some(spec.env.clone()),
        user: Some(g.user.clone()).filter(|u| !u.trim().is_empty()),
        working_dir: Some(SCRATCH_DIR.to_owned()),
        network_disabled: Some(!g.network),
        labels: Some(spec.labels.to_map()),
        host_config: Some(host_config),
        // A container started ahead of its task gets it on its stdin, over an attachment.
        open_stdin: Some(spec.labels.warm.is_some()),
        ..Default::default()
    }
}

/// Why [`check_create`] refused a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateRefusal {
    /// The image is not on the allowlist; the gatekeeper says where its list is set.
    ImageNotAllowed(String),
    /// A field asks for more than a sandbox may have, or an always-on guard is missing.
    Body(String),
}

/// The always-on guard `guard` removed from a create body (JSON as Docker reads it), for tests
/// that show the check refuses a body without it.
pub fn strip_always_on(body: &mut Value, guard: AlwaysOn) {
    match guard {
        AlwaysOn::TaskLabel => {
            if let Some(labels) = body.get_mut("Labels").and_then(Value::as_object_mut) {
                labels.remove(labels::TASK);
            }
        }
        other => {
            let key = match other {
                AlwaysOn::NoCapabilities => "CapDrop",
                AlwaysOn::NoNewPrivileges => "SecurityOpt",
                AlwaysOn::MemoryLimit => "Memory",
                AlwaysOn::CpuLimit => "NanoCpus",
                AlwaysOn::PidsLimit => "PidsLimit",
                AlwaysOn::TaskLabel => return,
            };
            if let Some(host) = body.get_mut("HostConfig").and_then(Value::as_object_mut) {
                host.remove(key);
            }
        }
    }
}

/// What becomes of one field of an object being rebuilt.
enum Field {
    /// Forwarded as it is.
    Keep,
    /// Forwarded as this (a nested object, rebuilt).
    Replace(Value),
    /// Left out (a harmless empty value of a field the engine would only be confused by).
    Drop,
    /// Not a field the sandbox sets: left out when null, refused otherwise.
    Unknown,
}

/// Rebuilds `object` from the fields `check` accepts; `at` prefixes field names in messages.
fn rebuild(
    object: &Map<String, Value>,
    at: &str,
    mut check: impl FnMut(&str, &Value) -> Result<Field, String>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    // Reported only when no known field is refused: that one says more.
    let mut unknown = None;
    for (key, value) in object {
        match check(key, value)? {
            Field::Keep => {
                out.insert(key.clone(), value.clone());
            }
            Field::Replace(value) => {
                out.insert(key.clone(), value);
            }
            Field::Drop => {}
            // A null sets nothing the sandbox needs; dropping it also keeps a null under a
            // differently-cased key from clearing a checked field in the engine's decoder.
            Field::Unknown if value.is_null() => {}
            Field::Unknown => {
                unknown.get_or_insert_with(|| {
                    format!(
                        "{at}{key} is not among the settings ProcOS's sandbox uses, and the proxy lets through none it does not know (remove {at}{key})"
                    )
                });
            }
        }
    }
    match unknown {
        Some(reason) => Err(reason),
        None => Ok(out),
    }
}

/// Null, false, empty: the value that asks for nothing.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) | Value::Bool(true) => false,
    }
}

fn is_one_of(value: &Value, allowed: &[&str]) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => allowed.contains(&s.as_str()),
        _ => false,
    }
}

fn positive(value: Option<&Value>) -> bool {
    value.and_then(Value::as_i64).is_some_and(|n| n > 0)
}

fn brief(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 120 {
        text.chars().take(117).collect::<String>() + "…"
    } else {
        text
    }
}

/// The forms of no-new-privileges Docker accepts.
const NO_NEW_PRIVILEGES_FORMS: [&str; 3] = [
    "no-new-privileges",
    "no-new-privileges:true",
    "no-new-privileges=true",
];

/// Checks a `POST /containers/create` body and returns it rebuilt from the checked fields
/// only: an allowed image, the [`labels::TASK`] label, and a HostConfig that grants nothing
/// beyond what ProcOS's sandbox asks for and keeps the [`AlwaysOn`] guards.
pub fn check_create(
    body: &Value,
    images: &ImageAllowlist,
    workspaces: Option<&Path>,
) -> Result<Value, CreateRefusal> {
    let rebuilt = check_fields(body, workspaces).map_err(CreateRefusal::Body)?;
    if let Some(Value::String(image)) = rebuilt.get("Image")
        && !images.allows(image)
    {
        return Err(CreateRefusal::ImageNotAllowed(image.clone()));
    }
    check_sandbox(&rebuilt).map_err(CreateRefusal::Body)?;
    Ok(Value::Object(rebuilt))
}

/// The body rebuilt from the fields a sandbox may set, with an image named.
fn check_fields(body: &Value, workspaces: Option<&Path>) -> Result<Map<String, Value>, String> {
    let Value::Object(config) = body else {
        return Err("the body is not a JSON object".to_owned());
    };
    let rebuilt = rebuild(config, "", |key, value| {
        Ok(match key {
            "Image" | "Labels" | "Cmd" | "Entrypoint" | "Env" | "User" | "WorkingDir"
            | "NetworkDisabled" | "Hostname" | "Domainname" | "AttachStdin" | "AttachStdout"
            | "AttachStderr" | "Tty" | "OpenStdin" | "StdinOnce" | "StopSignal" | "StopTimeout"
            | "ArgsEscaped" | "Healthcheck" | "Shell" => Field::Keep,
            "HostConfig" => match value {
                Value::Object(host) => {
                    Field::Replace(Value::Object(check_host_config(host, workspaces)?))
                }
                _ => Field::Keep,
            },
            "NetworkingConfig" => {
                let endpoints = value.get("EndpointsConfig").unwrap_or(&Value::Null);
                let only_endpoints = value
                    .as_object()
                    .is_none_or(|o| o.iter().all(|(k, v)| k == "EndpointsConfig" || v.is_null()));
                if is_empty(value) || (only_endpoints && is_empty(endpoints)) {
                    Field::Drop
                } else {
                    return Err(format!(
                        "NetworkingConfig attaches the container to networks ({}); sandbox containers get no network or Docker's default bridge (remove NetworkingConfig)",
                        brief(value)
                    ));
                }
            }
            _ => Field::Unknown,
        })
    })?;

    match rebuilt.get("Image") {
        Some(Value::String(image)) if !image.trim().is_empty() => Ok(rebuilt),
        _ => Err("Image is missing: a sandbox container names its image".to_owned()),
    }
}

/// The sandbox's mark and its always-on guards.
fn check_sandbox(rebuilt: &Map<String, Value>) -> Result<(), String> {
    let labelled = rebuilt
        .get("Labels")
        .and_then(|labels| labels.get(labels::TASK))
        .is_some_and(Value::is_string);
    if !labelled {
        return Err(format!(
            "the container lacks the label `{}` that marks ProcOS's sandbox containers (add it to Labels)",
            labels::TASK
        ));
    }
    let Some(Value::Object(host)) = rebuilt.get("HostConfig") else {
        return Err(
            "HostConfig is missing: sandbox containers drop all capabilities, set no-new-privileges and limit memory, CPU and processes (add HostConfig)"
                .to_owned(),
        );
    };
    required_guards(host)
}

fn check_host_config(
    host: &Map<String, Value>,
    workspaces: Option<&Path>,
) -> Result<Map<String, Value>, String> {
    rebuild(host, "HostConfig.", |key, value| {
        let shown = brief(value);
        let refuse = |why: &str| Err(format!("HostConfig.{key} is {shown}: {why} (remove {key})"));
        Ok(match key {
            "ReadonlyRootfs" | "Init" | "AutoRemove" | "Tmpfs" | "CapDrop" | "Memory"
            | "MemorySwap" | "MemoryReservation" | "MemorySwappiness" | "NanoCpus"
            | "CpuShares" | "CpuPeriod" | "CpuQuota" | "CpusetCpus" | "CpusetMems"
            | "PidsLimit" | "ShmSize" | "Ulimits" | "BlkioWeight" | "ExtraHosts" | "Dns"
            | "DnsOptions" | "DnsSearch" | "GroupAdd" | "ConsoleSize" => Field::Keep,
            "NetworkMode" => {
                if !is_one_of(value, &["", "none", "default", "bridge"]) {
                    return Err(format!(
                        "HostConfig.NetworkMode is {shown}: sandbox containers get no network (`none`) or, when a topic turns networking on, Docker's default bridge; `host`, `container:…` and named networks are refused (set NetworkMode to \"none\")"
                    ));
                }
                Field::Keep
            }
            "SecurityOpt" => {
                let options = value.as_array().map(Vec::as_slice).unwrap_or_default();
                if !value.is_null() && !value.is_array() {
                    return refuse("not a list of options");
                }
                if let Some(other) = options.iter().find(|o| {
                    !o.as_str()
                        .is_some_and(|o| NO_NEW_PRIVILEGES_FORMS.contains(&o))
                }) {
                    return Err(format!(
                        "HostConfig.SecurityOpt holds {}: sandbox containers keep Docker's seccomp and AppArmor profiles and take only no-new-privileges (remove it)",
                        brief(other)
                    ));
                }
                Field::Keep
            }
            "Mounts" => Field::Replace(check_mounts(value, workspaces)?),
            "RestartPolicy" => match value {
                Value::Null => Field::Drop,
                Value::Object(policy) => {
                    let policy = rebuild(policy, "HostConfig.RestartPolicy.", |k, v| {
                        Ok(match k {
                            "Name" if is_one_of(v, &["", "no"]) => Field::Keep,
                            "Name" => {
                                return Err(format!(
                                    "HostConfig.RestartPolicy.Name is {}: a sandbox container runs once (remove RestartPolicy)",
                                    brief(v)
                                ));
                            }
                            "MaximumRetryCount" => Field::Keep,
                            _ => Field::Unknown,
                        })
                    })?;
                    Field::Replace(Value::Object(policy))
                }
                _ => return refuse("not a restart policy"),
            },
            "Privileged" if is_empty(value) => Field::Keep,
            "Privileged" => {
                return refuse(
                    "a privileged container is root on the host; sandbox containers never are",
                );
            }
            "PublishAllPorts" if is_empty(value) => Field::Keep,
            "PublishAllPorts" => return refuse("it publishes the container's ports on the host"),
            "OomKillDisable" if is_empty(value) => Field::Keep,
            "OomKillDisable" => {
                return refuse("the kernel could not reclaim the container's memory");
            }
            "CapAdd" if is_empty(value) => Field::Keep,
            "CapAdd" => return refuse("sandbox containers run with no capabilities"),
            "Binds" if is_empty(value) => Field::Keep,
            "Binds" => {
                return refuse(
                    "it mounts host paths; sandbox containers get only anonymous volumes and tmpfs",
                );
            }
            "Devices" | "DeviceRequests" | "DeviceCgroupRules" if is_empty(value) => Field::Keep,
            "Devices" | "DeviceRequests" | "DeviceCgroupRules" => {
                return refuse("it gives the container host devices");
            }
            "VolumesFrom" if is_empty(value) => Field::Keep,
            "VolumesFrom" => return refuse("it mounts another container's volumes"),
            "Links" if is_empty(value) => Field::Keep,
            "Links" => return refuse("it links the container to others"),
            "PortBindings" if is_empty(value) => Field::Keep,
            "PortBindings" => return refuse("it publishes ports on the host"),
            "Sysctls" if is_empty(value) => Field::Keep,
            "Sysctls" => return refuse("it sets kernel parameters"),
            "PidMode" | "UTSMode" | "UsernsMode" | "CgroupParent" | "VolumeDriver"
                if is_empty(value) =>
            {
                Field::Keep
            }
            "IpcMode" if is_one_of(value, &["", "private", "none", "shareable"]) => Field::Keep,
            "CgroupnsMode" if is_one_of(value, &["", "private"]) => Field::Keep,
            "PidMode" | "UTSMode" | "UsernsMode" | "IpcMode" | "CgroupnsMode" | "CgroupParent" => {
                return refuse(
                    "sandbox containers keep namespaces and a cgroup of their own, shared with neither the host nor other containers",
                );
            }
            "VolumeDriver" => {
                return refuse("a volume driver can mount host paths into the container");
            }
            "Runtime" if is_one_of(value, &["", "runc"]) => Field::Keep,
            "Runtime" => return refuse("sandbox containers run on Docker's default runtime"),
            "OomScoreAdj" if value.is_null() || value.as_i64().is_some_and(|n| n >= 0) => {
                Field::Keep
            }
            "OomScoreAdj" => return refuse("it makes the host's OOM killer spare the container"),
            "LogConfig" if is_default_log_config(value) => Field::Drop,
            "LogConfig" => {
                return refuse(
                    "a log driver can carry the container's output out of the sandbox; sandbox containers use the engine's default",
                );
            }
            "MaskedPaths" | "ReadonlyPaths" if value.is_null() => Field::Drop,
            "MaskedPaths" | "ReadonlyPaths" => {
                return refuse("it changes which of the host's /proc and /sys files are hidden");
            }
            _ => Field::Unknown,
        })
    })
}

/// No log configuration, or one that names no driver and no options: the engine's default.
fn is_default_log_config(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(config) => config.iter().all(|(key, value)| match key.as_str() {
            "Type" | "Config" => is_empty(value),
            _ => value.is_null(),
        }),
        _ => false,
    }
}

/// Anonymous volumes and tmpfs, and at most one bind: an instance's workspace, a directory
/// directly under `workspaces` (the workers' workspace directory; `None`: no bind at all),
/// read-write at `/workspace`. No named volume, no volume driver options (the `local` driver's
/// `o=bind` mounts a host path through an "anonymous" volume).
fn check_mounts(mounts: &Value, workspaces: Option<&Path>) -> Result<Value, String> {
    let items = match mounts {
        Value::Null => return Ok(Value::Null),
        Value::Array(items) => items,
        other => return Err(format!("HostConfig.Mounts is {}: not a list", brief(other))),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("HostConfig.Mounts[{i}].");
        let Value::Object(mount) = item else {
            return Err(format!("HostConfig.Mounts[{i}] is not a mount"));
        };
        let kind = mount.get("Type").and_then(Value::as_str).unwrap_or("");
        let source = mount.get("Source").unwrap_or(&Value::Null);
        if kind == "bind" {
            if out.iter().any(|m: &Value| m["Type"] == "bind") {
                return Err(format!(
                    "HostConfig.Mounts[{i}] is a second bind mount: a sandbox gets at most its instance's workspace (remove it)"
                ));
            }
            out.push(check_workspace_bind(mount, i, workspaces)?);
            continue;
        }
        if !matches!(kind, "volume" | "tmpfs") {
            return Err(format!(
                "HostConfig.Mounts[{i}] is a `{kind}` mount of {}: sandbox containers get only anonymous volumes and tmpfs (remove it)",
                brief(source)
            ));
        }
        if !is_empty(source) {
            return Err(format!(
                "HostConfig.Mounts[{i}] mounts the {kind} {}: sandbox volumes are anonymous, made for the container and removed with it (remove Source)",
                brief(source)
            ));
        }
        if mount
            .get("Target")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("HostConfig.Mounts[{i}] has no Target"));
        }
        let rebuilt = rebuild(mount, &at, |key, value| {
            Ok(match key {
                "Type" | "Target" | "Source" | "ReadOnly" | "Consistency" | "TmpfsOptions" => {
                    Field::Keep
                }
                "VolumeOptions" => match value {
                    Value::Null => Field::Drop,
                    Value::Object(options) => {
                        let options = rebuild(options, &format!("{at}VolumeOptions."), |k, v| {
                            Ok(match k {
                                "NoCopy" | "Labels" => Field::Keep,
                                "Subpath" if is_empty(v) => Field::Drop,
                                "DriverConfig" if !v.is_null() => {
                                    return Err(format!(
                                        "{at}VolumeOptions.DriverConfig is {}: a volume driver's options can mount a host path (remove DriverConfig)",
                                        brief(v)
                                    ));
                                }
                                _ => Field::Unknown,
                            })
                        })?;
                        Field::Replace(Value::Object(options))
                    }
                    other => {
                        return Err(format!(
                            "{at}VolumeOptions is {}: not options",
                            brief(other)
                        ));
                    }
                },
                _ => Field::Unknown,
            })
        })?;
        out.push(Value::Object(rebuilt));
    }
    Ok(Value::Array(out))
}

/// A bind mount is only ever an instance's workspace: `Source` a directory directly under
/// `workspaces`, named like a process instance id (no `..`, no further levels), `Target`
/// `/workspace`, nothing else set but `ReadOnly`.
fn check_workspace_bind(
    mount: &Map<String, Value>,
    i: usize,
    workspaces: Option<&Path>,
) -> Result<Value, String> {
    let source = mount.get("Source").and_then(Value::as_str).unwrap_or("");
    let Some(root) = workspaces else {
        return Err(format!(
            "HostConfig.Mounts[{i}] is a `bind` mount of {source:?}: sandbox containers get only anonymous volumes and tmpfs here, no workspace directory being configured (remove it)"
        ));
    };
    let under_root = Path::new(source)
        .strip_prefix(root)
        .ok()
        .and_then(|rest| {
            let mut parts = rest.components();
            match (parts.next(), parts.next()) {
                (Some(std::path::Component::Normal(name)), None) => name.to_str(),
                _ => None,
            }
        })
        .is_some_and(|name| {
            !name.starts_with('.')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        });
    if !under_root {
        return Err(format!(
            "HostConfig.Mounts[{i}] is a `bind` mount of {source:?}, which is no workspace: only a directory directly under {} may be bound (remove it)",
            root.display()
        ));
    }
    if mount.get("Target").and_then(Value::as_str) != Some(WORKSPACE_DIR) {
        return Err(format!(
            "HostConfig.Mounts[{i}] binds a workspace at {}: set its Target to {WORKSPACE_DIR}",
            brief(mount.get("Target").unwrap_or(&Value::Null))
        ));
    }
    let rebuilt = rebuild(mount, &format!("HostConfig.Mounts[{i}]."), |key, _| {
        Ok(match key {
            "Type" | "Target" | "Source" | "ReadOnly" => Field::Keep,
            _ => Field::Unknown,
        })
    })?;
    Ok(Value::Object(rebuilt))
}

/// The [`AlwaysOn`] guards, required so that a client holding the proxy
/// cannot make a container without them either.
fn required_guards(host: &Map<String, Value>) -> Result<(), String> {
    let drops_all = host
        .get("CapDrop")
        .and_then(Value::as_array)
        .is_some_and(|caps| {
            caps.iter()
                .any(|c| c.as_str().is_some_and(|c| c.eq_ignore_ascii_case("ALL")))
        });
    if !drops_all {
        return Err(
            "HostConfig.CapDrop does not drop ALL capabilities: sandbox containers run without any (set CapDrop to [\"ALL\"])"
                .to_owned(),
        );
    }
    let no_new_privileges = host
        .get("SecurityOpt")
        .and_then(Value::as_array)
        .is_some_and(|opts| {
            opts.iter().any(|o| {
                o.as_str()
                    .is_some_and(|o| NO_NEW_PRIVILEGES_FORMS.contains(&o))
            })
        });
    if !no_new_privileges {
        return Err(
            "HostConfig.SecurityOpt lacks no-new-privileges: sandbox containers cannot gain privileges through setuid files (add \"no-new-privileges\")"
                .to_owned(),
        );
    }
    for (key, what) in [
        ("Memory", "a memory limit"),
        ("NanoCpus", "a CPU limit"),
        ("PidsLimit", "a process limit"),
    ] {
        if !positive(host.get(key)) {
            return Err(format!(
                "HostConfig.{key} is not set above 0: sandbox containers always have {what} (set {key})"
            ));
        }
    }
    Ok(())
}
