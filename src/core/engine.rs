//! A Docker Engine connection (bollard on a Unix socket): version negotiated per socket and pinned on the wire,
//! errors mapped through the whole source chain to stable codes.

use super::error::{chain_message, io_cause, Error, ErrorCode, Result};
use bollard::{BollardRequest, Docker, API_DEFAULT_VERSION};
use bytes::Bytes;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyperlocal::UnixConnector;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// bollard's per-request timeout (until response headers). Long streams (exec, logs, image load) are bounded
/// by the SDK's own deadlines and signals instead; imports use a clone with a larger value.
pub(crate) const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Deadline for connecting and negotiating the API version.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Idle keep-alive connections kept per engine (enough for sequential calls; bursts open more, which close once
/// used, so open fds stay bounded), and how long one may stay idle.
const POOL_MAX_IDLE: usize = 2;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The request body bollard hands a custom transport (bollard names this type `BodyType` but keeps it private).
type BollardBody = Either<
    Full<Bytes>,
    StreamBody<Pin<Box<dyn futures::Stream<Item = std::io::Result<Frame<Bytes>>> + Send>>>,
>;

/// What a bollard custom transport returns for a request.
type TransportFuture = Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<
                    hyper::Response<hyper::body::Incoming>,
                    bollard::errors::Error,
                >,
            > + Send,
    >,
>;

/// bollard's own Unix transport disables keep-alive (`pool_max_idle_per_host(0)`), so every request opened a
/// new connection (three per exec). This one sends bollard's requests through a pooled hyper client instead.
/// Upgraded connections (exec start, attach) leave the pool, as they must.
fn pooled_transport(socket: PathBuf) -> impl Fn(BollardRequest) -> TransportFuture + Send + Sync {
    let client: Client<UnixConnector, BollardBody> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(UnixConnector);
    move |req: BollardRequest| {
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        parts.uri = hyperlocal::Uri::new(&socket, &pq).into();
        let fut = client.request(hyper::Request::from_parts(parts, body));
        Box::pin(async move { fut.await.map_err(bollard::errors::Error::from) })
    }
}

/// What an engine call was about, so a 404 can say which thing was not found.
#[derive(Debug, Clone)]
pub enum Subject<'a> {
    Engine,
    Container(&'a str),
    Image(&'a str),
    Exec,
}

/// One Docker Engine, reached over its Unix socket.
pub struct Engine {
    docker: Docker,
    socket: PathBuf,
    api_version: String,
}

/// `unix:///x` or a plain path → the socket path; anything else is unsupported.
pub fn socket_from_host(host: &str) -> Result<PathBuf> {
    crate::core::local::docker_host_path(host)
}

/// The host's engine: `DOCKER_HOST`, then `/var/run/docker.sock`, then `~/.docker/run/docker.sock`.
pub fn local_socket() -> Result<PathBuf> {
    if let Ok(h) = std::env::var("DOCKER_HOST") {
        if !h.is_empty() {
            return socket_from_host(&h);
        }
    }
    let mut candidates = vec![PathBuf::from("/var/run/docker.sock")];
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        candidates.push(home.join(".docker/run/docker.sock"));
        candidates.push(home.join(".docker/desktop/docker.sock"));
    }
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            Error::new(
                ErrorCode::EngineUnavailable,
                "no Docker engine found: set DOCKER_HOST or start Docker (looked at /var/run/docker.sock, \
                 ~/.docker/run/docker.sock, ~/.docker/desktop/docker.sock)",
            )
        })
}

fn unavailable(socket: &Path, detail: &str) -> Error {
    Error::new(
        ErrorCode::EngineUnavailable,
        format!(
            "the Docker engine at {} is not reachable ({detail})",
            socket.display()
        ),
    )
    .with("socketPath", socket.display().to_string())
}

impl Engine {
    /// Connect and negotiate the API version (the lower of bollard's and the daemon's), then pin it on every
    /// request path: bollard 0.21.1 negotiates but does not send the version (fixed upstream, unreleased).
    pub async fn connect(socket: &Path) -> Result<Arc<Engine>> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(socket) {
            Err(_) => return Err(unavailable(socket, "no such socket")),
            Ok(m) if !m.file_type().is_socket() => {
                return Err(unavailable(socket, "the path exists but is not a socket"))
            }
            Ok(_) => {}
        }
        let path = socket.to_string_lossy().to_string();
        let docker = Docker::connect_with_custom_transport(
            pooled_transport(socket.to_path_buf()),
            Some("http://docker"),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        )
        .map_err(|e| unavailable(socket, &chain_message(&e)))?;
        let negotiated = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| Error::timeout("connecting to the Docker engine", CONNECT_TIMEOUT))?
            .map_err(|e| map_err(e, Subject::Engine).with("socketPath", path.clone()))?;
        let v = negotiated.client_version();
        let prefix = format!("/v{}.{}", v.major_version, v.minor_version);
        let api_version = format!("{}.{}", v.major_version, v.minor_version);
        let pinned = negotiated.with_request_modifier(move |mut req| {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            if !pq.starts_with("/v1.") {
                let mut parts = req.uri().clone().into_parts();
                if let Ok(p) = format!("{prefix}{pq}").parse() {
                    parts.path_and_query = Some(p);
                    if let Ok(u) = hyper::Uri::from_parts(parts) {
                        *req.uri_mut() = u;
                    }
                }
            }
            req
        });
        Ok(Arc::new(Engine {
            docker: pinned,
            socket: socket.to_path_buf(),
            api_version,
        }))
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The API version in use (negotiated).
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// `GET /_ping`.
    pub async fn ping(&self) -> Result<()> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| self.err(e, Subject::Engine))
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<VersionInfo> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| self.err(e, Subject::Engine))?;
        Ok(VersionInfo {
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
            min_api_version: v.min_api_version.unwrap_or_default(),
            os: v.os.unwrap_or_default(),
            arch: v.arch.unwrap_or_default(),
            kernel_version: v.kernel_version.unwrap_or_default(),
            negotiated_api_version: self.api_version.clone(),
        })
    }

    /// Map a bollard error, adding this engine's socket path.
    pub fn err(&self, e: bollard::errors::Error, subject: Subject) -> Error {
        map_err(e, subject).with("socketPath", self.socket.display().to_string())
    }
}

/// The engine's version, as `engine.version()` returns it.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub version: String,
    pub api_version: String,
    pub min_api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
    pub negotiated_api_version: String,
}

/// bollard error → SDK error. 404s name the subject; connection failures are `ERR_ENGINE_UNAVAILABLE`.
pub fn map_err(e: bollard::errors::Error, subject: Subject) -> Error {
    use bollard::errors::Error as B;
    match e {
        B::DockerResponseServerError {
            status_code,
            message,
        } => {
            let lower = message.to_ascii_lowercase();
            let code = match (status_code, &subject) {
                (404, Subject::Container(_)) if lower.contains("no such image") => {
                    ErrorCode::ImageNotFound
                }
                (404, Subject::Container(_)) => ErrorCode::ContainerNotFound,
                (404, Subject::Image(_)) => ErrorCode::ImageNotFound,
                (404, Subject::Exec) if lower.contains("no such container") => {
                    ErrorCode::ContainerNotFound
                }
                (409, _) if lower.contains("is not running") || lower.contains("is paused") => {
                    ErrorCode::ContainerNotRunning
                }
                _ => ErrorCode::Engine,
            };
            let mut err = Error::new(code, format!("Docker engine: {message}"))
                .with("statusCode", status_code)
                .with("engineMessage", message);
            match subject {
                Subject::Container(c) => err = err.with("container", c),
                Subject::Image(i) => err = err.with("image", i),
                _ => {}
            }
            err
        }
        B::RequestTimeoutError => Error::new(
            ErrorCode::Timeout,
            format!("the Docker engine did not answer within {REQUEST_TIMEOUT_SECS} s"),
        )
        .with("timeoutMs", REQUEST_TIMEOUT_SECS * 1000),
        B::SocketNotFoundError(p) => Error::new(
            ErrorCode::EngineUnavailable,
            format!("the Docker engine socket {p} does not exist"),
        ),
        other => {
            let detail = chain_message(&other);
            let connect = io_cause(&other).map(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::PermissionDenied
                )
            });
            if connect == Some(true) || detail.contains("(Connect)") {
                Error::new(
                    ErrorCode::EngineUnavailable,
                    format!("the Docker engine is not reachable: {detail}"),
                )
            } else {
                Error::new(
                    ErrorCode::Engine,
                    format!("Docker engine request failed: {detail}"),
                )
            }
        }
    }
}
