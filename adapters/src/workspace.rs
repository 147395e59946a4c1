//! Workspaces, and the `workspace` adapter: files and directories an instance's steps share.
//!
//! A **workspace** belongs to one process instance tree (keyed by its root process instance, so
//! that the library processes a model calls work in their caller's workspace). It is a
//! directory under the worker's `workspace_dir`, mounted as its own tmpfs of `workspace_mb`:
//! the kernel enforces the size limit (a write past it fails with "no space"), whatever writes
//! — this adapter or, later, a sandboxed step the workspace is mounted into. The worker removes
//! it once the instance is no longer running (ended, cancelled or deleted in Cockpit): see
//! [`Workspaces::keys`] and [`Workspaces::remove`].
//!
//! Every path a model names is relative to the workspace and cannot leave it: absolute paths
//! and `..` are refused as written, and each operation resolves the path through `cap-std`,
//! which refuses a symbolic link that leads outside.

use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::{Adapter, AdapterTask, Failure, Outcome, Retry, TaskSettings, async_trait};

/// The worker's workspaces: where they live and how large each may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspaces {
    root: PathBuf,
    limit_bytes: u64,
}

impl Default for Workspaces {
    fn default() -> Self {
        Self::new(None, DEFAULT_LIMIT_MB)
    }
}

/// The size of a workspace unless `[worker] workspace_mb` says otherwise.
pub const DEFAULT_LIMIT_MB: u64 = 64;

impl Workspaces {
    /// Workspaces under `root` (default: `$XDG_DATA_HOME/procos/workspaces`, else
    /// `~/.local/share/procos/workspaces`), each of at most `limit_mb` MiB.
    pub fn new(root: Option<PathBuf>, limit_mb: u64) -> Self {
        Self {
            root: root.unwrap_or_else(default_root),
            limit_bytes: limit_mb.saturating_mul(1024 * 1024),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The keys (root process instance ids) of the workspaces that exist now.
    pub fn keys(&self) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir()
                && let Some(key) = entry.file_name().to_str()
                && valid_key(key)
            {
                keys.push(key.to_owned());
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Removes the workspace `key`: unmounts its tmpfs (which frees its content) and removes the
    /// directory. A workspace already gone is no error.
    pub fn remove(&self, key: &str) -> io::Result<()> {
        if !valid_key(key) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{key}` is no workspace"),
            ));
        }
        let path = self.root.join(key);
        if !path.exists() {
            return Ok(());
        }
        if is_mount_point(&path)? {
            nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)
                .map_err(io::Error::from)?;
        }
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The workspace of the instance tree `key`, made on first use: a directory mounted as a
    /// tmpfs of the limit's size, writable by the sandboxes' user. Blocking: call it from
    /// `spawn_blocking`.
    fn open(&self, key: &str) -> Result<Workspace, Failure> {
        if !valid_key(key) {
            return Err(Failure::new(
                format!("the task's process instance `{key}` cannot name a workspace"),
                "Workspaces are named by the root process instance id, which holds only letters, digits, `-`, `_`, `.` and `:`.",
                Retry::Never,
            ));
        }
        let path = self.root.join(key);
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Failure::new(
                format!("could not {what} the workspace {}: {e}", path.display()),
                format!(
                    "Each process instance's workspace is a tmpfs of {} mounted at {}; mounting needs root or CAP_SYS_ADMIN. Check [worker] workspace_dir and the worker's privileges.",
                    human_bytes(self.limit_bytes),
                    path.display()
                ),
                Retry::Later,
            )
        };
        std::fs::create_dir_all(&path).map_err(|e| failed("create", &e))?;
        if !is_mount_point(&path).map_err(|e| failed("inspect", &e))? {
            let options = format!("size={},mode=0777", self.limit_bytes);
            nix::mount::mount(
                Some("procos-workspace"),
                &path,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .map_err(|e| failed("mount", &e))?;
        }
        let dir =
            Dir::open_ambient_dir(&path, ambient_authority()).map_err(|e| failed("open", &e))?;
        Ok(Workspace {
            dir,
            path,
            limit_bytes: self.limit_bytes,
        })
    }

    /// The host directory of `task`'s workspace, made on first use, when the sandboxed step asks
    /// for it with `procos.workspace = true`; `None` when it does not.
    pub(crate) async fn for_sandbox(&self, task: &AdapterTask) -> Result<Option<PathBuf>, Failure> {
        if !wants_workspace(&task.settings)? {
            return Ok(None);
        }
        let Some(key) = task.root_process_instance_id.clone() else {
            return Err(Failure::new(
                "the task came without its process instance, so it has no workspace",
                "The worker names each task's root process instance for steps with `procos.workspace`; this one did not.",
                Retry::Later,
            ));
        };
        let workspaces = self.clone();
        match tokio::task::spawn_blocking(move || workspaces.open(&key).map(|w| w.path)).await {
            Ok(opened) => opened.map(Some),
            Err(e) => Err(Failure::new(
                format!("making the workspace ended abnormally: {e}"),
                "",
                Retry::Later,
            )),
        }
    }

    /// Whether this worker can make workspaces: it mounts and removes a probe. Blocking.
    fn probe(&self) -> Result<(), String> {
        let key = format!("probe-{}", std::process::id());
        let opened = self.open(&key).map(|_| ());
        let removed = self.remove(&key);
        opened.map_err(|f| f.message)?;
        removed.map_err(|e| format!("could not remove the probe workspace: {e}"))
    }
}

/// Whether a sandboxed step asks for its instance's workspace (`procos.workspace = true`).
pub(crate) fn wants_workspace(settings: &TaskSettings) -> Result<bool, Failure> {
    Ok(settings.bool("workspace")?.unwrap_or(false))
}

fn default_root() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .map_or_else(
            || PathBuf::from("/var/lib/procos/workspaces"),
            |data| data.join("procos/workspaces"),
        )
}

/// A workspace key is a process instance id: the engine's UUIDs, or ids of a custom generator
/// (letters, digits, `-`, `_`, `.`, `:`), never a path.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Whether `path` is mounted on its own (another device than its parent's).
fn is_mount_point(path: &Path) -> io::Result<bool> {
    let own = std::fs::metadata(path)?.dev();
    let parent = path.parent().unwrap_or(path);
    Ok(own != std::fs::metadata(parent)?.dev())
}

fn human_bytes(bytes: u64) -> String {
    if bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{bytes} bytes")
    }
}

/// One open workspace.
struct Workspace {
    dir: Dir,
    path: PathBuf,
    limit_bytes: u64,
}

impl Workspace {
    /// Bytes in use, as the tmpfs counts them (whole pages).
    fn used(&self) -> io::Result<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.path).map_err(io::Error::from)?;
        let block = stat.fragment_size();
        Ok((stat.blocks() - stat.blocks_free()) * block)
    }

    /// Refuses to write `adding` bytes to `path` when they would not fit.
    fn check_room(&self, path: &str, adding: u64) -> Result<(), Failure> {
        let used = self
            .used()
            .map_err(|e| io_failure("measure the workspace", path, &e))?;
        if used.saturating_add(adding) > self.limit_bytes {
            return Err(self.full(path, Some(adding), used));
        }
        Ok(())
    }

    fn full(&self, path: &str, adding: Option<u64>, used: u64) -> Failure {
        let what = adding.map_or_else(String::new, |n| format!(" ({n} bytes)"));
        Failure::new(
            format!(
                "writing `{path}`{what} would take the workspace past its limit of {}",
                human_bytes(self.limit_bytes)
            ),
            format!(
                "The workspace holds {} of {}. Delete what the instance no longer needs, or have the operator raise [worker] workspace_mb.",
                human_bytes(used),
                human_bytes(self.limit_bytes)
            ),
            Retry::Never,
        )
    }
}

/// `[topics.NAME.settings]` of `workspace`: nothing yet; the workspaces themselves are the
/// worker's (`[worker] workspace_dir`, `workspace_mb`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {}

/// The per-task settings `workspace` reads.
const TASK_SETTINGS: &[&str] = &["operation", "encoding", "recursive"];

/// What a step does in the workspace (`procos.operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Read,
    Update,
    Append,
    Delete,
    Move,
    Copy,
    Mkdir,
    List,
    Rmdir,
    Usage,
}

const OPERATIONS: &[(&str, Operation)] = &[
    ("create", Operation::Create),
    ("read", Operation::Read),
    ("update", Operation::Update),
    ("append", Operation::Append),
    ("delete", Operation::Delete),
    ("move", Operation::Move),
    ("copy", Operation::Copy),
    ("mkdir", Operation::Mkdir),
    ("list", Operation::List),
    ("rmdir", Operation::Rmdir),
    ("usage", Operation::Usage),
];

#[derive(Debug)]
pub(crate) struct WorkspaceAdapter {
    workspaces: Workspaces,
    /// Whether this worker can make workspaces, probed once.
    probed: tokio::sync::OnceCell<Result<(), String>>,
}

impl WorkspaceAdapter {
    pub(crate) fn new(workspaces: Workspaces) -> Self {
        Self {
            workspaces,
            probed: tokio::sync::OnceCell::new(),
        }
    }
}

#[async_trait]
impl Adapter for WorkspaceAdapter {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        let Some(key) = task.root_process_instance_id.clone() else {
            return Outcome::Failure(Failure::new(
                "the task came without its process instance, so it has no workspace",
                "The worker names each task's root process instance; this one did not.",
                Retry::Later,
            ));
        };
        let workspaces = self.workspaces.clone();
        let work = tokio::task::spawn_blocking(move || {
            let workspace = workspaces.open(&key)?;
            operate(&workspace, &task.settings, &task.inputs)
        });
        tokio::select! {
            done = work => match done {
                Ok(Ok(outputs)) => Outcome::Complete(outputs),
                Ok(Err(failure)) => Outcome::Failure(failure),
                Err(e) => Outcome::Failure(Failure::new(
                    format!("the workspace operation ended abnormally: {e}"),
                    "",
                    Retry::Later,
                )),
            },
            () = cancel.cancelled() => Outcome::Failure(Failure::new("cancelled", "", Retry::Later)),
        }
    }

    fn task_settings(&self) -> &'static [&'static str] {
        TASK_SETTINGS
    }

    fn uses_workspace(&self, _settings: &TaskSettings) -> bool {
        true
    }

    async fn available(&self) -> Result<(), crate::Unavailable> {
        let workspaces = self.workspaces.clone();
        let probed = self
            .probed
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || workspaces.probe())
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            })
            .await;
        probed.clone().map_err(|reason| crate::Unavailable {
            reason,
            fix: format!(
                "Workspaces are tmpfs mounts under {}: run the worker as root or with CAP_SYS_ADMIN, or point [worker] workspace_dir at a directory it may mount on.",
                self.workspaces.root.display()
            ),
        })
    }
}

/// Does the step's operation; its outputs.
fn operate(
    workspace: &Workspace,
    settings: &TaskSettings,
    inputs: &Map<String, Value>,
) -> Result<Map<String, Value>, Failure> {
    let operation = match settings.text("operation")? {
        Some(name) => OPERATIONS
            .iter()
            .find(|(known, _)| *known == name.trim())
            .map(|(_, op)| *op)
            .ok_or_else(|| {
                Failure::new(
                    format!("the step's `procos.operation` is `{name}`, which the workspace does not know"),
                    format!(
                        "Operations: {}.",
                        OPERATIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ),
                    Retry::Never,
                )
            })?,
        None => {
            return Err(Failure::new(
                "the step names no `procos.operation`",
                format!(
                    "Set `procos.operation` to one of: {}.",
                    OPERATIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
                Retry::Never,
            ));
        }
    };
    let base64 = match settings.text("encoding")?.as_deref().map(str::trim) {
        None | Some("" | "text") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(Failure::new(
                format!("the step's `procos.encoding` is `{other}`, not text or base64"),
                "text: content is a string written as UTF-8; base64: content is base64 of any bytes.",
                Retry::Never,
            ));
        }
    };
    let dir = &workspace.dir;
    let mut out = Map::new();
    match operation {
        Operation::Create | Operation::Update | Operation::Append => {
            let path = path_input(inputs, "path", false)?;
            let bytes = content(inputs, base64)?;
            workspace.check_room(&path, bytes.len() as u64)?;
            let mut options = OpenOptions::new();
            match operation {
                Operation::Create => {
                    if let Some(parent) = Path::new(&path).parent()
                        && !parent.as_os_str().is_empty()
                    {
                        dir.create_dir_all(parent)
                            .map_err(|e| io_failure("create the directories of", &path, &e))?;
                    }
                    options.write(true).create_new(true)
                }
                Operation::Update => options.write(true).truncate(true),
                _ => options.append(true),
            };
            let mut file = dir
                .open_with(&path, &options)
                .map_err(|e| io_failure(operation_verb(operation), &path, &e))?;
            file.write_all(&bytes)
                .and_then(|()| file.flush())
                .map_err(|e| match e.kind() {
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => workspace.full(
                        &path,
                        Some(bytes.len() as u64),
                        workspace.used().unwrap_or(0),
                    ),
                    _ => io_failure("write", &path, &e),
                })?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            out.insert("path".into(), json!(path));
            out.insert("size".into(), json!(size));
        }
        Operation::Read => {
            let path = path_input(inputs, "path", false)?;
            let mut file = dir.open(&path).map_err(|e| io_failure("read", &path, &e))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| io_failure("read", &path, &e))?;
            let content = if base64 {
                Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes))
            } else {
                Value::String(String::from_utf8(bytes.clone()).map_err(|_| {
                    Failure::new(
                        format!("`{path}` is not UTF-8 text"),
                        "Read it with `procos.encoding` = base64 to get its bytes.",
                        Retry::Never,
                    )
                })?)
            };
            out.insert("path".into(), json!(path));
            out.insert("content".into(), content);
            out.insert("size".into(), json!(bytes.len()));
        }
        Operation::Delete => {
            let path = path_input(inputs, "path", false)?;
            dir.remove_file(&path)
                .map_err(|e| io_failure("delete", &path, &e))?;
            out.insert("path".into(), json!(path));
        }
        Operation::Move | Operation::Copy => {
            let from = path_input(inputs, "path", false)?;
            let to = path_input(inputs, "to", false)?;
            if operation == Operation::Move {
                dir.rename(&from, dir, &to)
                    .map_err(|e| io_failure("move", &from, &e))?;
            } else {
                let size = dir
                    .metadata(&from)
                    .map_err(|e| io_failure("copy", &from, &e))?
                    .len();
                workspace.check_room(&to, size)?;
                dir.copy(&from, dir, &to)
                    .map_err(|e| io_failure("copy", &from, &e))?;
            }
            out.insert("path".into(), json!(to));
        }
        Operation::Mkdir => {
            let path = path_input(inputs, "path", false)?;
            dir.create_dir_all(&path)
                .map_err(|e| io_failure("create the directory", &path, &e))?;
            out.insert("path".into(), json!(path));
        }
        Operation::List => {
            let path = path_input(inputs, "path", true)?;
            let listed = if path.is_empty() {
                dir.entries()
            } else {
                dir.read_dir(&path)
            }
            .map_err(|e| io_failure("list", &path, &e))?;
            let mut entries = Vec::new();
            for entry in listed {
                let entry = entry.map_err(|e| io_failure("list", &path, &e))?;
                let kind = entry
                    .file_type()
                    .map_err(|e| io_failure("list", &path, &e))?;
                let size = if kind.is_file() {
                    entry.metadata().map(|m| m.len()).unwrap_or(0)
                } else {
                    0
                };
                let kind = if kind.is_dir() {
                    "directory"
                } else if kind.is_symlink() {
                    "symlink"
                } else {
                    "file"
                };
                entries.push(json!({
                    "name": entry.file_name().to_string_lossy(),
                    "type": kind,
                    "size": size,
                }));
            }
            entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            out.insert("path".into(), json!(path));
            out.insert("entries".into(), Value::Array(entries));
        }
        Operation::Rmdir => {
            let path = path_input(inputs, "path", false)?;
            if settings.bool("recursive")?.unwrap_or(false) {
                dir.remove_dir_all(&path)
            } else {
                dir.remove_dir(&path)
            }
            .map_err(|e| io_failure("remove the directory", &path, &e))?;
            out.insert("path".into(), json!(path));
        }
        Operation::Usage => {}
    }
    let used = workspace
        .used()
        .map_err(|e| io_failure("measure the workspace", ".", &e))?;
    out.insert("usedBytes".into(), json!(used));
    out.insert("limitBytes".into(), json!(workspace.limit_bytes));
    out.insert(
        "freeBytes".into(),
        json!(workspace.limit_bytes.saturating_sub(used)),
    );
    Ok(out)
}

fn operation_verb(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "create",
        Operation::Update => "update",
        _ => "append to",
    }
}

/// The input `name` as a path inside the workspace, normalised (`a/./b` is `a/b`). Absolute
/// paths and `..` are refused as written; an empty path is the workspace itself where
/// `may_be_root`.
fn path_input(
    inputs: &Map<String, Value>,
    name: &str,
    may_be_root: bool,
) -> Result<String, Failure> {
    let text = match inputs.get(name) {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) if may_be_root => String::new(),
        None | Some(Value::Null) => {
            return Err(Failure::new(
                format!("the step has no variable `{name}`, the path it works on"),
                format!(
                    "Give the step a variable `{name}`: a path inside the workspace, e.g. reports/total.csv."
                ),
                Retry::Never,
            ));
        }
        Some(other) => {
            return Err(Failure::new(
                format!("the variable `{name}` is {other}, not a path"),
                "A path inside the workspace is text, e.g. reports/total.csv.",
                Retry::Never,
            ));
        }
    };
    let escapes = |why: &str| {
        Failure::new(
            format!("the path `{text}` leaves the workspace: {why}"),
            "Paths are relative to the instance's workspace and stay inside it: no leading /, no `..`.",
            Retry::Never,
        )
    };
    let mut parts = Vec::new();
    for component in Path::new(&text).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(escapes("it goes up with `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(escapes("it is absolute"));
            }
        }
    }
    if parts.is_empty() && !may_be_root {
        return Err(Failure::new(
            format!("the variable `{name}` names no file: `{text}`"),
            "Give a path inside the workspace, e.g. reports/total.csv.",
            Retry::Never,
        ));
    }
    Ok(parts.join("/"))
}

/// The input `content`: text (any other JSON value as its JSON text), or base64.
fn content(inputs: &Map<String, Value>, base64: bool) -> Result<Vec<u8>, Failure> {
    match inputs.get("content") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) if base64 => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| {
                Failure::new(
                    format!("the variable `content` is not base64: {e}"),
                    "With `procos.encoding` = base64 the content is base64 text.",
                    Retry::Never,
                )
            }),
        Some(Value::String(text)) => Ok(text.clone().into_bytes()),
        Some(other) => Ok(other.to_string().into_bytes()),
    }
}

/// An I/O error on `path` as a failure a person can act on: a path that leads outside the
/// workspace (through a symbolic link) is named as such.
fn io_failure(what: &str, path: &str, e: &io::Error) -> Failure {
    let (message, fix, retry) = match e.kind() {
        io::ErrorKind::PermissionDenied => (
            format!(
                "the path `{path}` leads outside the workspace (through a symbolic link), so it cannot {what} it"
            ),
            "A symbolic link in the workspace may only point inside it.".to_owned(),
            Retry::Never,
        ),
        io::ErrorKind::NotFound => (
            format!("could not {what} `{path}`: it does not exist in the workspace"),
            "List the workspace (operation list) to see what is there.".to_owned(),
            Retry::Never,
        ),
        io::ErrorKind::AlreadyExists => (
            format!("could not {what} `{path}`: it already exists"),
            "Use update to replace a file, or delete it first.".to_owned(),
            Retry::Never,
        ),
        _ => (
            format!("could not {what} `{path}`: {e}"),
            String::new(),
            Retry::Never,
        ),
    };
    Failure::new(message, fix, retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn paths_stay_inside_the_workspace_as_written() {
        let ok = |p: &str| path_input(&inputs(json!({"path": p})), "path", false);
        assert_eq!(ok("a/./b.txt").unwrap(), "a/b.txt");
        for (bad, says) in [
            ("../x", "`..`"),
            ("a/../../x", "`..`"),
            ("/etc/passwd", "absolute"),
        ] {
            let failure = ok(bad).unwrap_err();
            assert!(
                failure.message.contains(bad) && failure.message.contains(says),
                "{}",
                failure.message
            );
            assert_eq!(failure.retry, Retry::Never);
        }
        assert!(ok(".").is_err(), "no file named");
        assert_eq!(
            path_input(&inputs(json!({})), "path", true).unwrap(),
            "",
            "the workspace itself"
        );
    }

    #[test]
    fn workspace_keys_are_instance_ids_never_paths() {
        assert!(valid_key("3f1c2a4e-ef2e-11f1-adc8-024270141937"));
        for bad in ["", ".", "..", "a/b", "x y"] {
            assert!(!valid_key(bad), "{bad}");
        }
    }
}
