//! Root filesystems for namespace sandboxes: a sandbox image's files, exported from the Docker
//! engine once per image id and unpacked under the cache directory as `NAME/` with the image's
//! configuration (id, environment, command, working directory) in `NAME.json`. Where there is
//! no Docker engine (a worker in Kubernetes), the operator puts both there (e.g. baked into the
//! worker's image), and they are used as they are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::super::{Sandbox, lock};
use crate::{Failure, Retry};

/// What of the image's configuration a run needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(in crate::sandbox) struct ImageConfig {
    /// The image id the files were exported from.
    pub(in crate::sandbox) id: String,
    pub(in crate::sandbox) env: Vec<String>,
    pub(in crate::sandbox) cmd: Vec<String>,
    pub(in crate::sandbox) working_dir: Option<String>,
}

/// An unpacked root filesystem.
#[derive(Debug)]
pub(in crate::sandbox) struct Root {
    pub(in crate::sandbox) dir: PathBuf,
    pub(in crate::sandbox) config: ImageConfig,
}

/// The cache of root filesystems, by image name.
#[derive(Debug)]
pub(super) struct RootFilesystems {
    dir: PathBuf,
    docker: Option<Sandbox>,
    ready: Mutex<HashMap<String, Arc<Root>>>,
    /// One export at a time: two tasks of a new image wait for the same one.
    exporting: tokio::sync::Mutex<()>,
}

impl RootFilesystems {
    pub(super) fn new(dir: PathBuf, docker: Option<Sandbox>) -> Self {
        Self {
            dir,
            docker,
            ready: Mutex::default(),
            exporting: tokio::sync::Mutex::new(()),
        }
    }

    /// `image`'s root filesystem, exported first if it is not in the cache (or was exported
    /// from another id of the image). A rebuilt image is taken when the adapter is built again
    /// (the worker's next start, or a reload of its topic).
    pub(super) async fn root_for(&self, image: &str) -> Result<Arc<Root>, Failure> {
        if let Some(root) = lock(&self.ready).get(image) {
            return Ok(Arc::clone(root));
        }
        let _one_at_a_time = self.exporting.lock().await;
        if let Some(root) = lock(&self.ready).get(image) {
            return Ok(Arc::clone(root));
        }
        let root = Arc::new(self.load_or_export(image).await?);
        lock(&self.ready).insert(image.to_owned(), Arc::clone(&root));
        Ok(root)
    }

    async fn load_or_export(&self, image: &str) -> Result<Root, Failure> {
        let name = dir_name(image);
        let dir = self.dir.join(&name);
        let config_file = self.dir.join(format!("{name}.json"));
        let cached: Option<ImageConfig> = std::fs::read(&config_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(|_| dir.is_dir());
        // Where the files come from when neither the cache nor Docker has them.
        let missing = |why: &str| {
            Failure::new(
                format!("no root filesystem for `{image}`, and {why}"),
                format!(
                    "The namespace backend runs a task over the image's files, unpacked in {} with its configuration in {} (id, env, cmd, working_dir). Export it where Docker runs (`docker export $(docker create {image}) | tar -x -C {}`) and ship both with the worker, or give the worker a Docker engine.",
                    dir.display(),
                    config_file.display(),
                    dir.display()
                ),
                Retry::Later,
            )
        };
        let Some(sandbox) = &self.docker else {
            return match cached {
                Some(config) => Ok(Root { dir, config }),
                None => Err(missing("no Docker engine to export one from")),
            };
        };
        let inspected = match (sandbox.docker.inspect_image(image).await, cached) {
            (Ok(inspected), _) => inspected,
            // Docker went away after the export: the cached files still serve.
            (Err(_), Some(config)) => return Ok(Root { dir, config }),
            (Err(e), None) => {
                return Err(missing(&format!(
                    "the Docker engine to export one from could not give the image: {e}"
                )));
            }
        };
        let id = inspected.id.clone().unwrap_or_default();
        if let Ok(bytes) = std::fs::read(&config_file)
            && let Ok(config) = serde_json::from_slice::<ImageConfig>(&bytes)
            && config.id == id
            && dir.is_dir()
        {
            return Ok(Root { dir, config });
        }
        let image_config = inspected.config.unwrap_or_default();
        let config = ImageConfig {
            id,
            env: image_config.env.unwrap_or_default(),
            cmd: image_config.cmd.unwrap_or_default(),
            working_dir: image_config.working_dir.filter(|d| !d.is_empty()),
        };
        tracing::info!(image, dir = %dir.display(), "exporting the image's root filesystem for the namespace backend");
        self.export(sandbox, image, &dir)
            .await
            .map_err(|why| {
                Failure::new(
                    format!("could not export the root filesystem of `{image}`: {why}"),
                    format!(
                        "The namespace backend unpacks the image's files into {} once. Check that the directory is writable and has room (an image takes about its size), and that the Docker engine answers.",
                        self.dir.display()
                    ),
                    Retry::Later,
                )
            })?;
        let json = serde_json::to_vec_pretty(&config).map_err(|e| {
            Failure::new(
                format!("could not record the image's configuration: {e}"),
                "",
                Retry::Later,
            )
        })?;
        std::fs::write(&config_file, json).map_err(|e| {
            Failure::new(
                format!("could not write {}: {e}", config_file.display()),
                "Check that the root filesystem cache is writable.",
                Retry::Later,
            )
        })?;
        Ok(Root { dir, config })
    }

    /// Unpacks `image`'s files into `dir` (beside it first, then renamed, so a half-done export
    /// is never used).
    async fn export(&self, sandbox: &Sandbox, image: &str, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: Some(vec!["true".to_owned()]),
            network_disabled: Some(true),
            ..Default::default()
        };
        let created = sandbox
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| e.to_string())?;
        let unpacked = self.unpack(sandbox, &created.id, dir).await;
        let _ = sandbox
            .docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await;
        unpacked
    }

    async fn unpack(&self, sandbox: &Sandbox, container: &str, dir: &Path) -> Result<(), String> {
        let scratch = tempfile::Builder::new()
            .prefix(".export-")
            .tempdir_in(&self.dir)
            .map_err(|e| e.to_string())?;
        let tar_path = scratch.path().join("rootfs.tar");
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&tar_path).map_err(|e| e.to_string())?;
            let mut stream = sandbox.docker.export_container(container);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                file.write_all(&chunk).map_err(|e| e.to_string())?;
            }
        }
        let root = scratch.path().join("root");
        let unpack_root = root.clone();
        // Unpacking a few hundred MiB is blocking work: off the async threads.
        tokio::task::spawn_blocking(move || unpack_tar(&tar_path, &unpack_root))
            .await
            .map_err(|e| e.to_string())??;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::rename(&root, dir).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Unpacks regular files, directories and links (device nodes are not needed: bubblewrap
/// mounts its own `/dev`), then makes the mount points a sandbox needs.
fn unpack_tar(tar_path: &Path, root: &Path) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
    let file = std::fs::File::open(tar_path).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    archive.set_preserve_permissions(true);
    archive.set_unpack_xattrs(false);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        use tar::EntryType;
        match entry.header().entry_type() {
            EntryType::Regular
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Continuous => {
                entry.unpack_in(root).map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
    for mount_point in ["in", "out", "tmp", "proc", "dev", "workspace"] {
        std::fs::create_dir_all(root.join(mount_point)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `procos/python-sandbox:latest` → `procos_python-sandbox_latest`.
fn dir_name(image: &str) -> String {
    image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
