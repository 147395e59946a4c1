//! The namespace backend (`sandbox.backend = "namespace"`): one task in bubblewrap instead of a
//! container, with the Docker backend's guards and outcome rules.
//!
//! - **Root filesystem**: the sandbox image's, exported from the Docker engine once per image id
//!   and cached under `rootfs_dir` (or put there by the operator where no Docker engine exists,
//!   as `rootfs_dir/<image name>/` with a `procos-image.json` beside it); mounted read-only.
//! - **Isolation**: new user, PID, network, IPC, UTS, mount and cgroup namespaces
//!   (`--unshare-all`; the network only with `sandbox.network`), every capability dropped,
//!   no-new-privileges, a seccomp filter ([`seccomp`]), a fresh `/tmp` (tmpfs of
//!   `sandbox.tmpfs_mb`), `/in` read-only and `/out` writable, both per task, removed after it.
//! - **Limits**: memory (swap included), processes and CPU through cgroups v1 where the worker
//!   may create them (these hosts mount v1 only), else through rlimits (address space, and
//!   processes per user for a worker that is not root). The timeout kills the whole tree: the
//!   command is the child of bubblewrap's PID-namespace init, which dies with its parent.
//! - **Outcome**: the same [`Ended`] → [`Outcome`] rules as a container. The Python runner's
//!   end line settles the outcome as soon as it is printed: the sandbox is killed then, and
//!   waited for and removed after the outcome went back.
//!
//! bubblewrap is started through `/bin/sh`, which joins the cgroups, opens the seccomp program
//! as the descriptor bubblewrap reads and sets the rlimits before it `exec`s bubblewrap: the
//! standard library offers no safe way to do these between fork and exec.

mod cgroups;
mod rootfs;
mod seccomp;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::outcome::{
    Ended, outcome, printed_too_much, push_tail, runner_exit_code, take_runner_lines, too_large,
};
use super::warm::{GO_FILE, fits, waiting};
use super::{ContainerSpec, Runner, Sandbox, lock};
use crate::{Failure, Outcome, Retry, Unavailable, async_trait};

/// The descriptors bubblewrap reads the seccomp programs from (opened by the shell, whose
/// redirections take one digit only).
const SECCOMP_FDS: [u32; 2] = [8, 9];

/// How long an ended sandbox's processes and output streams may take to go after SIGKILL.
const REAP_WAIT: Duration = Duration::from_secs(10);

/// Runs tasks in bubblewrap sandboxes.
#[derive(Debug)]
pub(crate) struct Namespaces {
    launcher: Arc<Launcher>,
    warm: Option<Arc<WarmSandboxes>>,
    /// Waiting sandboxes being started: the pool refills beside the tasks, not in their way.
    filling: Mutex<JoinSet<()>>,
    /// Sandboxes whose outcome is known, being killed, waited for and removed after it went
    /// back (their task's completion does not wait for it); [`Runner::close`] waits for them.
    reaping: Mutex<JoinSet<()>>,
}

/// What starts a sandbox: bubblewrap, the images' root filesystems, the seccomp programs.
#[derive(Debug)]
struct Launcher {
    bwrap: PathBuf,
    roots: rootfs::RootFilesystems,
    seccomp: [Vec<u8>; 2],
}

/// Sandboxes started ahead of their task, each waiting for the one task it will run (the
/// Python runner waits for the line `go` on its stdin): the interpreter's
/// start is paid before the task arrives. Like the Docker backend's warm pool, a run that
/// differs from the spec they were made for runs cold.
#[derive(Debug)]
struct WarmSandboxes {
    made_for: ContainerSpec,
    template: ContainerSpec,
    size: usize,
    idle: Duration,
    ready: Mutex<std::collections::VecDeque<Waiting>>,
}

/// A sandbox waiting for its task.
#[derive(Debug)]
struct Waiting {
    launched: Launched,
    work: Workspace,
    cgroup: Option<cgroups::TaskCgroup>,
    since: std::time::Instant,
}

impl Namespaces {
    /// A backend exporting images from `docker` (when there is one) into `rootfs_dir`; `warm`
    /// keeps that many sandboxes of the spec started ahead, each giving up after its idle time.
    pub(crate) fn new(
        docker: Option<Sandbox>,
        rootfs_dir: PathBuf,
        warm: Option<(ContainerSpec, usize, Duration)>,
    ) -> Result<Self, String> {
        let seccomp = seccomp::programs()?;
        let warm = warm
            .filter(|(_, size, _)| *size > 0)
            .map(|(template, size, idle)| {
                let idle = idle.max(Duration::from_secs(1));
                Arc::new(WarmSandboxes {
                    made_for: template.clone(),
                    template: waiting(template, idle),
                    size,
                    idle,
                    ready: Mutex::default(),
                })
            });
        Ok(Self {
            launcher: Arc::new(Launcher {
                bwrap: find_bwrap(),
                roots: rootfs::RootFilesystems::new(rootfs_dir, docker),
                seccomp,
            }),
            warm,
            filling: Mutex::default(),
            reaping: Mutex::default(),
        })
    }

    async fn run_in(&self, spec: &ContainerSpec, cancel: &CancellationToken) -> Outcome {
        let warm = self.warm.as_ref().filter(|w| fits(&w.made_for, spec));
        let waiting = match warm {
            Some(warm) => warm.take().await,
            None => None,
        };
        let (outcome, remains) = match (warm, waiting) {
            (Some(warm), Some(waiting)) => self.run_waiting(warm, waiting, spec, cancel).await,
            (warm, _) => {
                if let Some(warm) = warm {
                    // None was ready: the pool's sandboxes start while this task runs cold.
                    self.top_up(warm);
                }
                self.run_cold(spec, cancel).await
            }
        };
        if let Some(remains) = remains {
            let mut reaping = lock(&self.reaping);
            while reaping.try_join_next().is_some() {}
            reaping.spawn(remains.reap());
        }
        outcome
    }

    async fn run_cold(
        &self,
        spec: &ContainerSpec,
        cancel: &CancellationToken,
    ) -> (Outcome, Option<Remains>) {
        match self.launcher.launch(spec, false).await {
            Ok((launched, work, cgroup)) => {
                let (outcome, remains) = launched.finish(spec, cancel, work, cgroup).await;
                (outcome, Some(remains))
            }
            Err(failure) => (Outcome::Failure(failure), None),
        }
    }

    /// Starts as many waiting sandboxes as the pool lacks (counting those already starting).
    fn top_up(&self, warm: &Arc<WarmSandboxes>) {
        let mut filling = lock(&self.filling);
        while filling.try_join_next().is_some() {}
        let missing = warm
            .size
            .saturating_sub(lock(&warm.ready).len() + filling.len());
        for _ in 0..missing {
            let launcher = Arc::clone(&self.launcher);
            let warm = Arc::clone(warm);
            filling.spawn(async move {
                let mut spec = warm.template.clone();
                spec.task_id = format!("warm-{}", super::run::rand_suffix());
                match launcher.launch(&spec, true).await {
                    Ok((launched, work, cgroup)) => lock(&warm.ready).push_back(Waiting {
                        launched,
                        work,
                        cgroup,
                        since: std::time::Instant::now(),
                    }),
                    Err(failure) => {
                        tracing::warn!(image = %spec.image, error = %failure.message, "could not start a waiting sandbox; tasks start cold meanwhile");
                    }
                }
            });
        }
    }

    /// Hands `spec`'s files to a waiting sandbox, starts its replacement and waits for the
    /// outcome.
    async fn run_waiting(
        &self,
        warm: &Arc<WarmSandboxes>,
        waiting: Waiting,
        spec: &ContainerSpec,
        cancel: &CancellationToken,
    ) -> (Outcome, Option<Remains>) {
        let Waiting {
            mut launched,
            work,
            cgroup,
            ..
        } = waiting;
        let handed = match work.hand_over(&spec.files) {
            Ok(()) => launched.go().await.map_err(|e| {
                Failure::new(
                    format!("the waiting sandbox did not take its task: {e}"),
                    "The sandbox started ahead of the task ended before the task was handed to it; the task is tried again.",
                    Retry::Later,
                )
            }),
            Err(e) => Err(workspace_failure(&e)),
        };
        // The replacement starts once this task has its sandbox, not before.
        self.top_up(warm);
        if let Err(failure) = handed {
            return (
                Outcome::Failure(failure),
                Some(launched.into_remains(work, cgroup)),
            );
        }
        let (outcome, remains) = launched.finish(spec, cancel, work, cgroup).await;
        (outcome, Some(remains))
    }
}

impl Launcher {
    /// The task's directories, cgroups and the started launcher; a `waiting` one gets a stdin
    /// the worker holds, for the line that hands it its task.
    async fn launch(
        self: &Arc<Self>,
        spec: &ContainerSpec,
        waiting: bool,
    ) -> Result<(Launched, Workspace, Option<cgroups::TaskCgroup>), Failure> {
        let root = self.roots.root_for(&spec.image).await?;
        // Directories and cgroups are file system work: off the runtime's threads.
        let prepare = {
            let launcher = Arc::clone(self);
            let spec = spec.clone();
            let root_dir = root.dir.clone();
            tokio::task::spawn_blocking(move || {
                if spec.workspace.is_some() {
                    // Root filesystems exported before `/workspace` was a mount point lack it.
                    std::fs::create_dir_all(root_dir.join("workspace"))?;
                }
                let work = Workspace::create(&spec, &launcher.seccomp)?;
                let cgroup = cgroups::TaskCgroup::create(&spec.task_id, &spec.guards);
                Ok::<_, std::io::Error>((work, cgroup))
            })
        };
        let (work, cgroup) = match prepare.await {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(e)) => return Err(workspace_failure(&e)),
            Err(e) => return Err(workspace_failure(&std::io::Error::other(e))),
        };
        let mut command = self.command(spec, &root, &work, cgroup.as_ref());
        command.stdin(if waiting {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        match Launched::spawn(&mut command) {
            Ok(launched) => Ok((launched, work, cgroup)),
            Err(failure) => {
                if let Some(cgroup) = cgroup {
                    cgroup.remove().await;
                }
                Err(failure)
            }
        }
    }

    /// `/bin/sh -c LAUNCH sh CGROUP_PROCS… -- bwrap ARGS… COMMAND…`.
    fn command(
        &self,
        spec: &ContainerSpec,
        root: &rootfs::Root,
        work: &Workspace,
        cgroup: Option<&cgroups::TaskCgroup>,
    ) -> Command {
        let guards = &spec.guards;
        let mut launch = String::new();
        let mut args: Vec<String> = Vec::new();
        if let Some(cgroup) = cgroup {
            // "0" moves the writing process (the shell, then bubblewrap and all it starts).
            for (i, procs) in cgroup.procs_files().iter().enumerate() {
                launch.push_str(&format!("echo 0 > \"${}\" || exit 125; ", i + 1));
                args.push(procs.display().to_string());
            }
        }
        for (fd, program) in SECCOMP_FDS.iter().zip(&work.seccomp) {
            launch.push_str(&format!("exec {fd}< \"${}\" || exit 125; ", args.len() + 1));
            args.push(program.display().to_string());
        }
        let n = args.len();
        launch.push_str("ulimit -c 0; ");
        if cgroup.is_none_or(|c| !c.limits_memory()) {
            // Address space is a coarse stand-in for memory, but it holds without cgroups.
            launch.push_str(&format!("ulimit -v {}; ", guards.memory_mb * 1024));
        }
        if cgroup.is_none_or(|c| !c.limits_pids()) && !running_as_root() {
            // RLIMIT_NPROC is `-u` in bash but `-p` in dash (Debian's /bin/sh), which refuses
            // `-u`; without it the task would run with no limit on its processes.
            launch.push_str(&format!(
                "{{ ulimit -u {n} 2>/dev/null || ulimit -p {n}; }} || exit 125; ",
                n = guards.pids_limit
            ));
        }
        launch.push_str(&format!("shift {n}; exec \"$@\""));

        let (uid, gid) = user_ids(&guards.user);
        let mut bwrap: Vec<String> = vec![
            self.bwrap.display().to_string(),
            "--unshare-all".into(),
            // Named again because --disable-userns requires it explicitly.
            "--unshare-user".into(),
            "--disable-userns".into(),
            "--die-with-parent".into(),
            "--new-session".into(),
            "--cap-drop".into(),
            "ALL".into(),
            "--uid".into(),
            uid.to_string(),
            "--gid".into(),
            gid.to_string(),
            "--hostname".into(),
            "sandbox".into(),
            "--ro-bind".into(),
            root.dir.display().to_string(),
            "/".into(),
            "--proc".into(),
            "/proc".into(),
            "--dev".into(),
            "/dev".into(),
            "--size".into(),
            (guards.tmpfs_mb * 1024 * 1024).to_string(),
            "--tmpfs".into(),
            "/tmp".into(),
            "--ro-bind".into(),
            work.input.display().to_string(),
            "/in".into(),
            "--bind".into(),
            work.output.display().to_string(),
            "/out".into(),
        ];
        if let Some(workspace) = &spec.workspace {
            bwrap.extend([
                "--bind".into(),
                workspace.display().to_string(),
                procos_sandbox_contract::WORKSPACE_DIR.into(),
            ]);
        }
        bwrap.extend([
            "--chdir".into(),
            root.config
                .working_dir
                .clone()
                .unwrap_or_else(|| "/tmp".into()),
            "--clearenv".into(),
        ]);
        for fd in SECCOMP_FDS {
            bwrap.extend(["--add-seccomp-fd".into(), fd.to_string()]);
        }
        if guards.network {
            bwrap.push("--share-net".into());
        }
        for pair in root.config.env.iter().chain(&spec.env) {
            if let Some((name, value)) = pair.split_once('=') {
                bwrap.extend(["--setenv".into(), name.into(), value.into()]);
            }
        }
        bwrap.push("--".into());
        match &spec.command {
            Some(command) => bwrap.extend(command.iter().cloned()),
            None => bwrap.extend(root.config.cmd.iter().cloned()),
        }

        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(launch)
            .arg("sh")
            .args(args)
            .args(bwrap)
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that a timeout kills bubblewrap and whatever it started.
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

#[async_trait]
impl Runner for Namespaces {
    async fn run(&self, spec: &ContainerSpec, cancel: &CancellationToken) -> Outcome {
        self.run_in(spec, cancel).await
    }

    /// Lets the sandboxes being started finish starting, then ends every waiting one and waits
    /// for the ended ones to be gone.
    async fn close(&self) {
        let mut filling = std::mem::take(&mut *lock(&self.filling));
        while filling.join_next().await.is_some() {}
        if let Some(warm) = &self.warm {
            let waiting: Vec<Waiting> = lock(&warm.ready).drain(..).collect();
            for waiting in waiting {
                waiting.discard().await;
            }
        }
        let mut reaping = std::mem::take(&mut *lock(&self.reaping));
        while reaping.join_next().await.is_some() {}
    }

    async fn available(&self) -> Result<(), Unavailable> {
        // What every task's sandbox asks of the kernel: its namespaces (a user namespace that
        // may make no other), a /proc of its own and a /dev. In a container, the first fails
        // under Docker's default seccomp profile, the second and third under its masked /proc.
        let probe = Command::new(&self.launcher.bwrap)
            .args([
                "--unshare-all",
                "--unshare-user",
                "--disable-userns",
                "--ro-bind",
                "/",
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--",
                "/bin/true",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let unavailable = |why: String| {
            Unavailable {
            reason: format!("bubblewrap ({}) cannot make a sandbox here: {why}", self.launcher.bwrap.display()),
            fix: "install bubblewrap (`apt-get install bubblewrap`); in a container, allow the namespace calls (a seccomp profile that permits clone and unshare with namespace flags, mount, pivot_root, umount2 and sethostname, as ProcOS's docker/compose/seccomp-bubblewrap.json does) and unmask /proc (Docker's security option systempaths=unconfined, Kubernetes' procMount: Unmasked), with user namespaces allowed on the host; or use sandbox.backend = \"docker\"".to_owned(),
        }
        };
        match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(unavailable(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            )),
            Ok(Err(e)) => Err(unavailable(e.to_string())),
            Err(_) => Err(unavailable("no answer within 5 s".to_owned())),
        }
    }
}

/// bubblewrap on `PATH`, else where Debian puts it.
fn find_bwrap() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("bwrap"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/bwrap"))
}

fn running_as_root() -> bool {
    // The real uid of this process: the owner of /proc/self.
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// `"uid:gid"`, `"uid"` or a name; the names ProcOS's images use map to their ids, anything
/// else runs as nobody.
fn user_ids(user: &str) -> (u32, u32) {
    const NOBODY: u32 = 65534;
    let user = user.trim();
    let (uid, gid) = user.split_once(':').unwrap_or((user, ""));
    let id = |text: &str| match text {
        "root" => Some(0),
        "nobody" | "nogroup" => Some(NOBODY),
        other => other.parse().ok(),
    };
    let uid = id(uid).unwrap_or(NOBODY);
    (uid, id(gid).unwrap_or(uid))
}

/// A task's directories on the host: `/in` (its files), `/out` (an empty `output.json` the
/// command may fill) and the seccomp programs; removed when dropped.
#[derive(Debug)]
struct Workspace {
    _dir: tempfile::TempDir,
    input: PathBuf,
    output: PathBuf,
    seccomp: [PathBuf; 2],
}

impl Workspace {
    fn create(spec: &ContainerSpec, programs: &[Vec<u8>; 2]) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;

        // Named after the topic, so that an operator can tell whose a left directory is.
        let topic: String = spec
            .topic
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let prefix = format!("procos-task-{topic}-");
        let dir = tempfile::Builder::new().prefix(&prefix).tempdir()?;
        let input = dir.path().join("in");
        let output = dir.path().join("out");
        std::fs::create_dir(&input)?;
        std::fs::create_dir(&output)?;
        for (name, bytes) in &spec.files {
            // Names come from the adapters (script.py, input.json), never from the task.
            std::fs::write(input.join(name), bytes)?;
            std::fs::set_permissions(input.join(name), std::fs::Permissions::from_mode(0o644))?;
        }
        let output_file = output.join("output.json");
        std::fs::write(&output_file, b"")?;
        // The command runs as an unprivileged user of its own user namespace.
        std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o777))?;
        std::fs::set_permissions(&output_file, std::fs::Permissions::from_mode(0o666))?;
        std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let seccomp = [
            dir.path().join("seccomp-refuse.bpf"),
            dir.path().join("seccomp-clone3.bpf"),
        ];
        for (file, program) in seccomp.iter().zip(programs) {
            std::fs::write(file, program)?;
        }
        Ok(Self {
            _dir: dir,
            input,
            output,
            seccomp,
        })
    }

    /// Gives a waiting sandbox its task's files, then `/in/go`, which a runner from an older
    /// sandbox image polls for (this one waits for the line `go` on its stdin, [`Launched::go`]).
    fn hand_over(&self, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;

        for (name, bytes) in files {
            let path = self.input.join(name);
            std::fs::write(&path, bytes)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::write(self.input.join(GO_FILE), b"")
    }
}

fn workspace_failure(e: &std::io::Error) -> Failure {
    Failure::new(
        format!("could not prepare the sandbox's directories: {e}"),
        "The worker writes each task's /in and /out under the system's temporary directory (TMPDIR); check that it is writable and not full.",
        Retry::Later,
    )
}

impl WarmSandboxes {
    /// A waiting sandbox that will still be waiting when its task arrives; others are dropped
    /// (killed, their directories removed).
    async fn take(&self) -> Option<Waiting> {
        loop {
            let mut waiting = lock(&self.ready).pop_front()?;
            // A margin before the runner gives up on its own, so the task never meets that.
            let fresh = waiting.since.elapsed() + Duration::from_secs(2) < self.idle;
            if fresh && matches!(waiting.launched.child.try_wait(), Ok(None)) {
                return Some(waiting);
            }
            waiting.discard().await;
        }
    }
}

impl Waiting {
    async fn discard(self) {
        self.launched
            .into_remains(self.work, self.cgroup)
            .reap()
            .await;
    }
}

/// The started launcher (and with it bubblewrap and the command) and the readers of its output.
#[derive(Debug)]
struct Launched {
    child: tokio::process::Child,
    /// A waiting sandbox's stdin, until its task is handed over.
    stdin: Option<tokio::process::ChildStdin>,
    group: Option<u32>,
    /// Reading stdout and stderr into `tails` until both end.
    readers: JoinSet<()>,
    tails: Arc<Tails>,
    /// The exit code on the Python runner's end line, when it printed one.
    runner_end: oneshot::Receiver<i64>,
}

/// How the wait for a sandbox's end ended.
enum End {
    /// The launcher exited, and with it bubblewrap and everything in the sandbox.
    Exited(Option<std::process::ExitStatus>),
    /// The runner printed its end line with this exit code: the outcome is settled.
    Runner(i64),
}

impl Launched {
    fn spawn(command: &mut Command) -> Result<Self, Failure> {
        let mut child = command.spawn().map_err(|e| {
            Failure::new(
                format!("could not start the sandbox: {e}"),
                "The namespace backend runs /bin/sh and bubblewrap on the worker's host; install bubblewrap (`apt-get install bubblewrap`) or use sandbox.backend = \"docker\".",
                Retry::Later,
            )
        })?;
        let group = child.id();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            kill_tree(group, None);
            return Err(Failure::new(
                "could not read the sandbox's output",
                "The worker could not attach to the sandbox's stdout and stderr.",
                Retry::Later,
            ));
        };
        let tails = Arc::new(Tails::default());
        let (ended, runner_end) = oneshot::channel();
        let mut readers = JoinSet::new();
        readers.spawn(read_tail(stdout, Arc::clone(&tails), Stream::Stdout(ended)));
        readers.spawn(read_tail(stderr, Arc::clone(&tails), Stream::Stderr));
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            group,
            readers,
            tails,
            runner_end,
        })
    }

    /// Tells a waiting runner that its task's files are in `/in` (the line `go`), and closes its
    /// stdin: the script reads none.
    async fn go(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        match self.stdin.take() {
            Some(mut stdin) => stdin.write_all(b"go\n").await,
            None => Ok(()),
        }
    }

    /// Waits for the outcome within the timeout (killing the tree past it, or on `cancel`);
    /// what is left of the sandbox is the caller's to reap.
    async fn finish(
        mut self,
        spec: &ContainerSpec,
        cancel: &CancellationToken,
        work: Workspace,
        cgroup: Option<cgroups::TaskCgroup>,
    ) -> (Outcome, Remains) {
        let outcome = match self
            .ended(spec, cancel, &work.output, cgroup.as_ref())
            .await
        {
            Ok(ended) => outcome(spec, ended),
            Err(failure) => Outcome::Failure(failure),
        };
        (outcome, self.into_remains(work, cgroup))
    }

    async fn ended(
        &mut self,
        spec: &ContainerSpec,
        cancel: &CancellationToken,
        out_dir: &Path,
        cgroup: Option<&cgroups::TaskCgroup>,
    ) -> Result<Ended, Failure> {
        let limit = spec.guards.timeout;
        let mut end_line_may_come = true;
        let end = {
            let wait = self.child.wait();
            tokio::pin!(wait);
            let deadline = tokio::time::sleep(limit);
            tokio::pin!(deadline);
            let mut watch = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    status = &mut wait => break End::Exited(status.ok()),
                    code = &mut self.runner_end, if end_line_may_come => match code {
                        Ok(code) => break End::Runner(code),
                        // Stdout ended without the line: the launcher's exit says how it went.
                        Err(_) => end_line_may_come = false,
                    },
                    () = &mut deadline => {
                        kill_tree(self.group, cgroup);
                        read_to_end(&mut self.readers).await;
                        return Err(Failure::new(
                            format!("the sandbox timed out after {}; it was killed", humantime::format_duration(limit)),
                            format!(
                                "`{}` ran longer than sandbox.timeout ({}). Raise the timeout if the work needs longer, or look for an endless loop. The end of its stderr:\n{}",
                                spec.image,
                                humantime::format_duration(limit),
                                String::from_utf8_lossy(&lock(&self.tails.stderr))
                            ),
                            Retry::Later,
                        ));
                    }
                    () = cancel.cancelled() => {
                        kill_tree(self.group, cgroup);
                        return Err(Failure::new("cancelled", "The worker cancelled the run (shutdown, or the lock was lost).", Retry::Later));
                    }
                    _ = watch.tick() => {
                        // Killed here; the count, which only grows, fails the run below.
                        if self.tails.printed.load(Ordering::Relaxed) > spec.guards.max_printed_bytes() {
                            kill_tree(self.group, cgroup);
                        }
                    }
                }
            }
        };
        // Whatever the command left behind dies now (after the end line, the interpreter's exit
        // and bubblewrap's teardown are not waited for).
        kill_tree(self.group, cgroup);
        let exit_code = match end {
            End::Runner(code) => code,
            End::Exited(status) => {
                // The sandbox's processes are gone: the streams end.
                read_to_end(&mut self.readers).await;
                status.map_or(-1, |status| {
                    use std::os::unix::process::ExitStatusExt as _;
                    status
                        .code()
                        .map(i64::from)
                        .or_else(|| status.signal().map(|signal| 128 + i64::from(signal)))
                        .unwrap_or(-1)
                })
            }
        };
        let stdout = lock(&self.tails.stdout).clone();
        let stderr = lock(&self.tails.stderr).clone();
        if self.tails.printed.load(Ordering::Relaxed) > spec.guards.max_printed_bytes() {
            return Err(printed_too_much(spec, &stderr));
        }
        if exit_code == 125 && stderr.starts_with(b"sh:") {
            return Err(Failure::new(
                "could not set up the sandbox's limits",
                format!(
                    "The launcher failed before bubblewrap started: {}",
                    String::from_utf8_lossy(&stderr)
                ),
                Retry::Later,
            ));
        }
        let oom_killed = cgroup.is_some_and(cgroups::TaskCgroup::oom_killed);
        let mut stdout = String::from_utf8_lossy(&stdout).into_owned();
        // The runner's lines are not part of what the command printed.
        let output_file = match take_runner_lines(&mut stdout, spec.guards.max_output_kb * 1024)? {
            Some(document) => Some(document),
            None => read_output(&spec.guards, out_dir)?,
        };
        Ok(Ended {
            exit_code,
            oom_killed,
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            output_file,
        })
    }

    fn into_remains(self, work: Workspace, cgroup: Option<cgroups::TaskCgroup>) -> Remains {
        Remains {
            child: self.child,
            group: self.group,
            readers: self.readers,
            cgroup,
            work,
        }
    }
}

/// Lets the readers take in the rest of the streams, which end once no process of the sandbox
/// holds them.
async fn read_to_end(readers: &mut JoinSet<()>) {
    let all = async { while readers.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(REAP_WAIT, all).await;
}

/// A sandbox whose outcome is known: its processes to kill and wait for, its cgroups and its
/// directories to remove.
#[derive(Debug)]
struct Remains {
    child: tokio::process::Child,
    group: Option<u32>,
    readers: JoinSet<()>,
    cgroup: Option<cgroups::TaskCgroup>,
    work: Workspace,
}

impl Remains {
    async fn reap(mut self) {
        kill_tree(self.group, self.cgroup.as_ref());
        if tokio::time::timeout(REAP_WAIT, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pid = self.group,
                "a killed sandbox's launcher did not end; its cgroup is still emptied"
            );
        }
        // Dropped after the wait, aborting a reader whose stream some stray process still holds.
        read_to_end(&mut self.readers).await;
        if let Some(cgroup) = self.cgroup {
            cgroup.remove().await;
        }
        let work = self.work;
        let _ = tokio::task::spawn_blocking(move || drop(work)).await;
    }
}

/// The tails of what a sandbox printed, and how much it printed, as its readers take it in.
#[derive(Debug, Default)]
struct Tails {
    stdout: Mutex<Vec<u8>>,
    stderr: Mutex<Vec<u8>>,
    printed: AtomicU64,
}

/// Which stream a reader reads; stdout's reader tells when the runner's end line came.
enum Stream {
    Stdout(oneshot::Sender<i64>),
    Stderr,
}

/// Reads `stream` to its end, keeping its tail in `tails` and counting all of it.
async fn read_tail(mut stream: impl AsyncRead + Unpin, tails: Arc<Tails>, which: Stream) {
    let (kept, mut end_line) = match which {
        Stream::Stdout(ended) => (&tails.stdout, Some(ended)),
        Stream::Stderr => (&tails.stderr, None),
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tails.printed.fetch_add(n as u64, Ordering::Relaxed);
                let mut kept = lock(kept);
                push_tail(&mut kept, &chunk[..n]);
                if end_line.is_some()
                    && let Some(code) = runner_exit_code(&kept)
                    && let Some(ended) = end_line.take()
                {
                    let _ = ended.send(code);
                }
            }
        }
    }
}

/// `/out/output.json`, or `None` when it is empty; over the limit is a failure.
fn read_output(
    guards: &procos_sandbox_contract::Guards,
    out: &Path,
) -> Result<Option<Vec<u8>>, Failure> {
    let path = out.join("output.json");
    let limit = guards.max_output_kb * 1024;
    let size = std::fs::symlink_metadata(&path).map_or(0, |m| {
        // A symlink the command left there is not followed: it could name a host file.
        if m.file_type().is_file() { m.len() } else { 0 }
    });
    if size > limit {
        return Err(too_large("/out/output.json", size, limit));
    }
    if size == 0 {
        return Ok(None);
    }
    match std::fs::read(&path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(None),
        Ok(bytes) => Ok(Some(bytes)),
        Err(_) => Ok(None),
    }
}

/// SIGKILL to the launcher's process group (bubblewrap's init dies with it, and with it every
/// process of the sandbox's PID namespace) and to whatever is left in the task's cgroup.
fn kill_tree(group: Option<u32>, cgroup: Option<&cgroups::TaskCgroup>) {
    if let Some(group) = group.and_then(|g| i32::try_from(g).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(group),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let Some(cgroup) = cgroup {
        cgroup.kill_all();
    }
}
