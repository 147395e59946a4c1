//! The Docker engine that `scripts/docker-engine.sh` installs and starts runs containers from the
//! locally built base image.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

#[tokio::test]
async fn a_container_runs_on_the_local_docker_engine() {
    let container = GenericImage::new("debian", "bookworm-slim")
        .with_wait_for(WaitFor::message_on_stdout("procos-container-ready"))
        .with_cmd([
            "sh",
            "-c",
            "echo procos-container-ready $(cat /etc/debian_version); sleep 30",
        ])
        .start()
        .await
        .expect("a container starts from the local debian:bookworm-slim base image");
    let stdout = container.stdout_to_vec().await.unwrap();
    let text = String::from_utf8_lossy(&stdout);
    assert!(
        text.starts_with("procos-container-ready 12."),
        "Debian 12 inside: {text}"
    );
    container.stop().await.unwrap();
}
