//! The listening side: the configured TCP and unix-socket listeners, one task per listener
//! accepting connections, one task per connection serving HTTP/1.1 through [`Proxy`], all
//! owned by `JoinSet`s. Cancellation stops accepting, lets open requests finish within the
//! grace period, then closes what is left.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;
use procos_sandbox_contract::ImageAllowlist;

/// Where the proxy accepts Docker API clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `tcp://HOST:PORT` (or `HOST:PORT`): what `DOCKER_HOST=tcp://…` clients reach.
    Tcp(SocketAddr),
    /// `unix:///PATH` (or `/PATH`): a socket file, for clients on the same host or volume.
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = ProxyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = || ProxyError::BadListen(text.to_owned());
        if let Some(path) = text.strip_prefix("unix://") {
            return if path.is_empty() {
                Err(bad())
            } else {
                Ok(Self::Unix(PathBuf::from(path)))
            };
        }
        if text.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(text)));
        }
        let address = text.strip_prefix("tcp://").unwrap_or(text);
        address.parse().map(Self::Tcp).map_err(|_| bad())
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(address) => write!(f, "tcp://{address}"),
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// How the proxy runs. [`Default`] gives the binary's defaults.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: Vec<Listen>,
    /// The Docker engine's socket: the one thing that grants power over the host.
    pub upstream: PathBuf,
    /// Images containers may be created from and pulled (`procos/*` style entries).
    pub allowed_images: Vec<String>,
    /// The workers' workspace directory: a sandbox may bind one directory directly under it at
    /// `/workspace`. `None`: no host path at all.
    pub workspace_dir: Option<PathBuf>,
    /// Largest container-create body read, in bytes.
    pub max_body_bytes: usize,
    /// After cancellation: how long open requests (waits, log streams) may take to finish.
    pub grace_period: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: vec![Listen::Tcp(SocketAddr::from(([0, 0, 0, 0], 2375)))],
            upstream: PathBuf::from("/var/run/docker.sock"),
            allowed_images: vec!["procos/*".to_owned()],
            workspace_dir: None,
            max_body_bytes: 1024 * 1024,
            grace_period: Duration::from_secs(10),
        }
    }
}

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "`{0}` is not a listen address: give tcp://HOST:PORT, HOST:PORT, unix:///PATH or /PATH"
    )]
    BadListen(String),
    #[error("nothing to listen on: give at least one listen address")]
    NoListener,
    #[error("no allowed images: give at least one (e.g. procos/*), or no container could be made")]
    NoImages,
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        listen: Listen,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {0}: a file that is not a socket is there (remove it or choose another path)"
    )]
    NotASocket(PathBuf),
    #[error("cannot listen on {0}: something already answers there (another proxy?)")]
    InUse(PathBuf),
}

/// The proxy with its listeners bound, ready to [`run`](SandboxProxy::run).
#[derive(Debug)]
pub struct SandboxProxy {
    listeners: Vec<Listener>,
    proxy: Arc<Proxy>,
    grace_period: Duration,
}

impl SandboxProxy {
    /// Binds every listener of `config`; nothing is accepted before [`run`](Self::run).
    pub async fn bind(config: ProxyConfig) -> Result<Self, ProxyError> {
        if config.listen.is_empty() {
            return Err(ProxyError::NoListener);
        }
        let images = ImageAllowlist::new(config.allowed_images.iter().cloned());
        if config.allowed_images.iter().all(|i| i.trim().is_empty()) {
            return Err(ProxyError::NoImages);
        }
        let mut listeners = Vec::with_capacity(config.listen.len());
        for listen in &config.listen {
            listeners.push(Listener::bind(listen).await?);
        }
        Ok(Self {
            listeners,
            proxy: Arc::new(Proxy::new(
                config.upstream,
                images,
                config.workspace_dir,
                config.max_body_bytes,
            )),
            grace_period: config.grace_period,
        })
    }

    /// The bound TCP addresses (with the port the system chose for port 0).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|listener| match listener {
                Listener::Tcp(tcp) => tcp.local_addr().ok(),
                Listener::Unix { .. } => None,
            })
            .collect()
    }

    /// Serves until `cancel` fires, then drains (see [`ProxyConfig::grace_period`]) and
    /// removes its unix sockets.
    pub async fn run(self, cancel: CancellationToken) {
        let mut accepting = JoinSet::new();
        for listener in self.listeners {
            tracing::info!(listen = %listener, "accepting Docker API clients");
            accepting.spawn(accept(
                listener,
                Arc::clone(&self.proxy),
                cancel.clone(),
                self.grace_period,
            ));
        }
        while accepting.join_next().await.is_some() {}
        self.proxy.close().await;
    }
}

#[derive(Debug)]
enum Listener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
}

enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    async fn bind(listen: &Listen) -> Result<Self, ProxyError> {
        let failed = |source| ProxyError::Bind {
            listen: listen.clone(),
            source,
        };
        match listen {
            Listen::Tcp(address) => TcpListener::bind(address)
                .await
                .map(Self::Tcp)
                .map_err(failed),
            Listen::Unix(path) => {
                // A socket file left by an earlier run would make bind fail; one that still
                // answers, or anything else at the path, is not ours to remove.
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt as _;
                    if !meta.file_type().is_socket() {
                        return Err(ProxyError::NotASocket(path.clone()));
                    }
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(ProxyError::InUse(path.clone()));
                    }
                    std::fs::remove_file(path).map_err(failed)?;
                }
                let listener = UnixListener::bind(path).map_err(failed)?;
                Ok(Self::Unix {
                    listener,
                    path: path.clone(),
                })
            }
        }
    }

    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Self::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                // Small request/answer exchanges; no reason to wait for more bytes.
                let _ = stream.set_nodelay(true);
                Ok(Accepted::Tcp(stream))
            }
            Self::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                Ok(Accepted::Unix(stream))
            }
        }
    }

    fn close(self) {
        if let Self::Unix { listener, path } = self {
            drop(listener);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::debug!(path = %path.display(), error = %e, "could not remove the socket file");
            }
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(listener) => match listener.local_addr() {
                Ok(address) => write!(f, "tcp://{address}"),
                Err(_) => write!(f, "tcp://?"),
            },
            Self::Unix { path, .. } => write!(f, "unix://{}", path.display()),
        }
    }
}

/// Accepts connections on `listener` until `cancel`, then gives the open ones `grace` to end.
async fn accept(listener: Listener, proxy: Arc<Proxy>, cancel: CancellationToken, grace: Duration) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(Accepted::Tcp(stream)) => {
                connections.spawn(serve(stream, Arc::clone(&proxy), cancel.clone()));
            }
            Ok(Accepted::Unix(stream)) => {
                connections.spawn(serve(stream, Arc::clone(&proxy), cancel.clone()));
            }
            Err(e) => {
                tracing::warn!(listen = %listener, error = %e, "could not accept a connection");
                // Out of file descriptors and the like: pause rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    listener.close();
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the grace period; closing them"
        );
        connections.shutdown().await;
    }
}

/// Serves HTTP/1.1 on one connection; on `cancel`, finishes the request under way and stops.
async fn serve<I>(io: I, proxy: Arc<Proxy>, cancel: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, Infallible>(proxy.handle(request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    // With upgrades: an attachment goes on as a raw stream (`Proxy::splice`).
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "a client connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_in_docker_host_style() {
        let tcp = |s: &str| Listen::from_str(s).unwrap();
        assert_eq!(
            tcp("tcp://0.0.0.0:2375"),
            Listen::Tcp("0.0.0.0:2375".parse().unwrap())
        );
        assert_eq!(
            tcp(" 127.0.0.1:1 "),
            Listen::Tcp("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            tcp("unix:///run/procos/docker.sock"),
            Listen::Unix("/run/procos/docker.sock".into())
        );
        assert_eq!(tcp("/x.sock"), Listen::Unix("/x.sock".into()));
        assert_eq!(tcp("tcp://0.0.0.0:2375").to_string(), "tcp://0.0.0.0:2375");
        for bad in [
            "",
            "unix://",
            "sandbox-proxy:2375",
            "tcp://:80",
            "http://1.2.3.4:1",
        ] {
            assert!(Listen::from_str(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_replaced_a_live_one_kept() {
        let dir = std::env::temp_dir().join(format!("procos-proxy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let listen = Listen::Unix(path.clone());
        let first = Listener::bind(&listen).await.unwrap();
        assert!(matches!(
            Listener::bind(&listen).await,
            Err(ProxyError::InUse(_))
        ));
        // Dropped without `close`: the file stays, as after a crash.
        drop(first);
        assert!(path.exists());
        let second = Listener::bind(&listen).await.unwrap();
        second.close();
        assert!(!path.exists());
        std::fs::write(&path, "not a socket").unwrap();
        assert!(matches!(
            Listener::bind(&listen).await,
            Err(ProxyError::NotASocket(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
