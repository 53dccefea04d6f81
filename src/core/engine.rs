//! A Docker Engine connection (bollard on a Unix socket): version negotiated per socket and pinned on the wire,
//! errors mapped through the whole source chain to stable codes.

use super::call::Call;
use super::error::{io_cause, Error, ErrorCode, Result};
use super::socket as transport;
use bollard::{BollardRequest, Docker, API_DEFAULT_VERSION};
use bytes::Bytes;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// bollard's per-request timeout (until response headers). Long streams (exec, logs, image load) are bounded
/// by the SDK's own deadlines and signals instead; imports use a clone with a larger value.
pub(crate) const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Default deadline for connecting and negotiating the API version.
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
    let client: Client<transport::Connector, BollardBody> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(transport::Connector);
    move |req: BollardRequest| {
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        parts.uri = transport::uri(&socket, &pq);
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
    /// Default deadline [`CONNECT_TIMEOUT`].
    pub async fn connect(socket: &Path, call: &Call) -> Result<Arc<Engine>> {
        call.run(
            "connecting to the Docker engine",
            Some(CONNECT_TIMEOUT),
            Engine::connect_now(socket),
        )
        .await
    }

    async fn connect_now(socket: &Path) -> Result<Arc<Engine>> {
        match std::fs::metadata(socket) {
            Err(_) => return Err(unavailable(socket, "no such socket")),
            Ok(m) if !transport::is_socket(&m) => {
                return Err(unavailable(socket, "the path exists but is not a socket"))
            }
            Ok(_) => {}
        }
        let docker = Docker::connect_with_custom_transport(
            pooled_transport(socket.to_path_buf()),
            Some("http://docker"),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        )
        .map_err(|e| transport_error(&e, Some(socket)))?;
        let negotiated = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| Error::timeout("connecting to the Docker engine", CONNECT_TIMEOUT))?
            .map_err(|e| map_err_at(e, Subject::Engine, socket))?;
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

    /// `GET /_ping` (no default deadline beyond bollard's request timeout).
    pub async fn ping(&self, call: &Call) -> Result<()> {
        call.run("engine ping", None, async {
            self.docker
                .ping()
                .await
                .map(|_| ())
                .map_err(|e| self.err(e, Subject::Engine))
        })
        .await
    }

    /// `GET /version` (no default deadline beyond bollard's request timeout).
    pub async fn version(&self, call: &Call) -> Result<VersionInfo> {
        let v = call
            .run("engine version", None, async {
                self.docker
                    .version()
                    .await
                    .map_err(|e| self.err(e, Subject::Engine))
            })
            .await?;
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
        map_err_at(e, subject, &self.socket)
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
        other => transport_error(&other, None),
    }
}

/// bollard error → SDK error, naming the engine's socket in connection failures.
pub fn map_err_at(e: bollard::errors::Error, subject: Subject, socket: &Path) -> Error {
    let err = match e {
        bollard::errors::Error::DockerResponseServerError { .. }
        | bollard::errors::Error::RequestTimeoutError
        | bollard::errors::Error::SocketNotFoundError(_) => map_err(e, subject),
        other => transport_error(&other, Some(socket)),
    };
    err.with("socketPath", socket.display().to_string())
}

/// How a request failed before the engine answered it, in words for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Transport {
    /// The engine cannot be reached or went away: `ERR_ENGINE_UNAVAILABLE`.
    Unavailable(String),
    /// Something else broke (a malformed answer, a body cut off after the head): `ERR_ENGINE`.
    Failed(String),
}

/// A transport failure (connect, send, read) as a typed error whose message names what happened, never the
/// HTTP crates' own wrappers ("Error in the hyper legacy client: client error (Connect)" says nothing to a user).
fn transport_error(e: &(dyn std::error::Error + 'static), socket: Option<&Path>) -> Error {
    match classify_transport(e) {
        Transport::Unavailable(why) => match socket {
            Some(s) => unavailable(s, &why),
            None => Error::new(
                ErrorCode::EngineUnavailable,
                format!("the Docker engine is not reachable ({why})"),
            ),
        },
        Transport::Failed(why) => Error::new(
            ErrorCode::Engine,
            match socket {
                Some(s) => format!(
                    "a request to the Docker engine at {} failed: {why}",
                    s.display()
                ),
                None => format!("a request to the Docker engine failed: {why}"),
            },
        ),
    }
}

fn classify_transport(e: &(dyn std::error::Error + 'static)) -> Transport {
    use std::io::ErrorKind as K;
    if let Some(io) = io_cause(e) {
        let why = match io.kind() {
            K::NotFound => Some("no such socket".to_string()),
            K::ConnectionRefused => {
                Some("connection refused: nothing listens on the socket".to_string())
            }
            K::PermissionDenied => Some("permission denied on the socket".to_string()),
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                Some("the engine closed the connection".to_string())
            }
            _ => None,
        };
        if let Some(why) = why {
            return Transport::Unavailable(why);
        }
    }
    let mut connect = false;
    let mut closed = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(l) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= l.is_connect();
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            closed |= h.is_incomplete_message() || h.is_closed() || h.is_canceled();
        }
        cur = err.source();
    }
    let detail = innermost_message(e);
    if connect {
        Transport::Unavailable(format!("could not connect: {detail}"))
    } else if closed {
        Transport::Unavailable("the engine closed the connection before answering".to_string())
    } else {
        Transport::Failed(detail)
    }
}

/// The message of the deepest error in a source chain: the specific cause, without the wrappers around it.
fn innermost_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The error a ping through the SDK's own transport gets from whatever is (or is not) at `socket`.
    async fn ping_error(socket: &Path) -> Error {
        let docker = Docker::connect_with_custom_transport(
            pooled_transport(socket.to_path_buf()),
            Some("http://docker"),
            5,
            API_DEFAULT_VERSION,
        )
        .unwrap();
        let e = docker.ping().await.unwrap_err();
        map_err_at(e, Subject::Engine, socket)
    }

    /// A server that reads a request head, then writes `reply` (nothing: just closes) and closes.
    fn serve(path: &Path, reply: &'static [u8]) {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(reply).await;
            }
        });
    }

    fn assert_clean(e: &Error) {
        for word in [
            "hyper",
            "legacy",
            "client error",
            "(Connect)",
            "(SendRequest)",
        ] {
            assert!(!e.message.contains(word), "{word:?} in {:?}", e.message);
        }
    }

    #[tokio::test]
    async fn a_vanished_socket_is_unavailable_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        let e = ping_error(&path).await;
        assert_eq!(e.code.as_str(), "ERR_ENGINE_UNAVAILABLE");
        assert_eq!(e.props["socketPath"], path.display().to_string());
        assert!(
            e.message.contains(&path.display().to_string()),
            "{}",
            e.message
        );
        assert!(e.message.contains("no such socket"), "{}", e.message);
        assert_clean(&e);
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.sock");
        // a listener closed without removing its file, as a killed engine leaves it
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let e = ping_error(&path).await;
        assert_eq!(e.code.as_str(), "ERR_ENGINE_UNAVAILABLE");
        assert!(e.message.contains("refused"), "{}", e.message);
        assert_clean(&e);
    }

    #[tokio::test]
    async fn an_engine_that_hangs_up_before_answering_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hangup.sock");
        serve(&path, b"");
        let e = ping_error(&path).await;
        assert_eq!(e.code.as_str(), "ERR_ENGINE_UNAVAILABLE");
        assert!(e.message.contains("closed the connection"), "{}", e.message);
        assert_clean(&e);
    }

    #[tokio::test]
    async fn a_garbled_answer_is_an_engine_error_in_plain_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbled.sock");
        serve(&path, b"NOT HTTP AT ALL\r\n\r\n");
        let e = ping_error(&path).await;
        assert_eq!(e.code.as_str(), "ERR_ENGINE");
        assert!(
            e.message.contains(&path.display().to_string()),
            "{}",
            e.message
        );
        assert_clean(&e);
    }
}
