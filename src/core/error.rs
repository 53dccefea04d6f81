//! One error type for the whole core: a stable code, a message for humans, and properties for programs.

use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// Stable error codes. They are the `code` property of the JS errors and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The sandboxd socket is missing, refuses connections, or is not a socket.
    SandboxdUnavailable,
    /// No VM of that name.
    VmNotFound,
    /// A VM of that name exists and does not match what was asked for.
    VmConflict,
    /// Input rejected before anything was sent (or rejected by the daemon with 400).
    InvalidArgument,
    /// The daemon answered something the contract does not allow.
    SandboxdProtocol,
    /// A deadline passed.
    Timeout,
    /// The caller's AbortSignal fired.
    Aborted,
    /// A handle was used after `close()`/`stop()`.
    Closed,
    /// LocalSandboxd could not start or run a VM backend.
    Emulator,
    /// A bug or an unexpected local failure (I/O on the SDK's own files, a panic).
    Internal,
    /// A Docker engine socket is missing or refuses connections, or the engine hung up before answering.
    EngineUnavailable,
    /// The engine answered with an error the SDK has no specific code for (`statusCode` and `message` kept).
    Engine,
    /// No such container.
    ContainerNotFound,
    /// No such image.
    ImageNotFound,
    /// A container of the requested name already exists (`containerName`; the engine's message kept).
    ContainerConflict,
    /// No such file or directory in the container (`path`): a runtime condition, not a bad argument.
    PathNotFound,
    /// The path exists but is not a regular file, where one file was asked for (`path`, `fileType`).
    NotAFile,
    /// The path (or one of its parents) exists but is not a directory, where one was needed (`path`, `fileType`).
    NotADirectory,
    /// Something already exists at the path (`mkdir` without `recursive`, `rename` onto an existing path).
    PathExists,
    /// A symbolic link leads outside the directory an operation is confined to (`path`, `linkTarget`, `root`).
    PathEscapes,
    /// The sandbox refused access to the path (`path`): permissions, a read-only file system.
    PermissionDenied,
    /// The container exists but is not running.
    ContainerNotRunning,
    /// An exec could not be started (the daemon's message is included).
    ExecFailed,
    /// The container or daemon went away mid-stream; what was received is attached.
    StreamInterrupted,
    /// A finished process or closed handle was used again.
    ProcessFinished,
    /// The container has no program to relay HTTP to the agent server.
    NoTunnelRelay,
    /// The sandbox-agent server does not answer (not running, or not reachable).
    AgentUnavailable,
    /// The agent process exited (crash, kill, or close); `exitCode` is attached when known.
    AgentExited,
    /// The agent server or agent answered something unexpected (HTTP problem, JSON-RPC error).
    AgentProtocol,
    /// The sbx daemon has no valid Docker login (HTTP 401 "no valid user session"): run `sbx login`.
    SbxNotLoggedIn,
    /// The sbx daemon's `api_version` is outside the range this SDK supports (`daemonVersion`, `apiVersion`,
    /// `supportedRange` attached), or it reports none.
    SbxVersionUnsupported,
    /// The sbx daemon answers but is degraded (HTTP 503); its `daemonMessage` says why.
    SbxDegraded,
    /// The sbx daemon does not serve that route (unmatched 404, 405, 501): this daemon version lacks the feature.
    SbxUnsupported,
    /// No sandbox of that name.
    SandboxNotFound,
    /// A sandbox of that name exists (create), or differs from what was asked for (ensure).
    SandboxConflict,
    /// The sandbox exists but is stopped (exec, files and ports need it running).
    SandboxStopped,
    /// No snapshot with that id (`snapshot`).
    SnapshotNotFound,
    /// The backend in use cannot do that (`backend` attached); another backend can.
    Unsupported,
    /// The v1 service refused the credentials (missing, expired or wrong token; a refused PAT exchange).
    Unauthenticated,
    /// The v1 service is rate-limiting or a quota is used up (`v1Code` `resourceExhausted`; `retryDelayMs` when
    /// the service said how long to wait and the retry budget or the deadline did not allow it).
    ResourceExhausted,
}

impl ErrorCode {
    /// The string JS sees as `err.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SandboxdUnavailable => "ERR_SANDBOXD_UNAVAILABLE",
            ErrorCode::VmNotFound => "ERR_VM_NOT_FOUND",
            ErrorCode::VmConflict => "ERR_VM_CONFLICT",
            ErrorCode::InvalidArgument => "ERR_INVALID_ARGUMENT",
            ErrorCode::SandboxdProtocol => "ERR_SANDBOXD_PROTOCOL",
            ErrorCode::Timeout => "ERR_TIMEOUT",
            ErrorCode::Aborted => "ABORT_ERR",
            ErrorCode::Closed => "ERR_CLOSED",
            ErrorCode::Emulator => "ERR_EMULATOR",
            ErrorCode::Internal => "ERR_INTERNAL",
            ErrorCode::EngineUnavailable => "ERR_ENGINE_UNAVAILABLE",
            ErrorCode::Engine => "ERR_ENGINE",
            ErrorCode::ContainerNotFound => "ERR_CONTAINER_NOT_FOUND",
            ErrorCode::ImageNotFound => "ERR_IMAGE_NOT_FOUND",
            ErrorCode::ContainerConflict => "ERR_CONTAINER_CONFLICT",
            ErrorCode::PathNotFound => "ERR_PATH_NOT_FOUND",
            ErrorCode::NotAFile => "ERR_NOT_A_FILE",
            ErrorCode::NotADirectory => "ERR_NOT_A_DIRECTORY",
            ErrorCode::PathExists => "ERR_PATH_EXISTS",
            ErrorCode::PathEscapes => "ERR_PATH_ESCAPES",
            ErrorCode::PermissionDenied => "ERR_PERMISSION_DENIED",
            ErrorCode::ContainerNotRunning => "ERR_CONTAINER_NOT_RUNNING",
            ErrorCode::ExecFailed => "ERR_EXEC_FAILED",
            ErrorCode::StreamInterrupted => "ERR_STREAM_INTERRUPTED",
            ErrorCode::ProcessFinished => "ERR_PROCESS_FINISHED",
            ErrorCode::NoTunnelRelay => "ERR_NO_TUNNEL_RELAY",
            ErrorCode::AgentUnavailable => "ERR_AGENT_UNAVAILABLE",
            ErrorCode::AgentExited => "ERR_AGENT_EXITED",
            ErrorCode::AgentProtocol => "ERR_AGENT_PROTOCOL",
            ErrorCode::SbxNotLoggedIn => "ERR_SBX_NOT_LOGGED_IN",
            ErrorCode::SbxVersionUnsupported => "ERR_SBX_VERSION_UNSUPPORTED",
            ErrorCode::SbxDegraded => "ERR_SBX_DEGRADED",
            ErrorCode::SbxUnsupported => "ERR_SBX_UNSUPPORTED",
            ErrorCode::SandboxNotFound => "ERR_SANDBOX_NOT_FOUND",
            ErrorCode::SandboxConflict => "ERR_SANDBOX_CONFLICT",
            ErrorCode::SandboxStopped => "ERR_SANDBOX_STOPPED",
            ErrorCode::SnapshotNotFound => "ERR_SNAPSHOT_NOT_FOUND",
            ErrorCode::Unsupported => "ERR_UNSUPPORTED",
            ErrorCode::Unauthenticated => "ERR_UNAUTHENTICATED",
            ErrorCode::ResourceExhausted => "ERR_RESOURCE_EXHAUSTED",
        }
    }
}

/// The core's error: `code` + `message` + named properties (status, body excerpt, socket path, …).
#[derive(Debug, Clone)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub props: Map<String, Value>,
    /// The partial result of an exec that was aborted or interrupted (JS: `err.result`).
    pub result: Option<Box<crate::core::exec::ExecOutput>>,
}

/// Result alias used across the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest body excerpt kept on protocol errors.
pub const BODY_EXCERPT_LIMIT: usize = 512;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            props: Map::new(),
            result: None,
        }
    }

    /// Attach a property (shows up on the JS error object under the same name).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.props.insert(key.to_string(), value.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }

    pub fn aborted() -> Self {
        Error::new(ErrorCode::Aborted, "The operation was aborted")
    }

    pub fn timeout(what: &str, after: Duration) -> Self {
        Error::new(
            ErrorCode::Timeout,
            format!("{what} timed out after {} ms", after.as_millis()),
        )
        .with("timeoutMs", after.as_millis() as u64)
    }

    pub fn closed(what: &str) -> Self {
        Error::new(ErrorCode::Closed, format!("{what} is closed"))
    }

    /// A protocol error that keeps the HTTP status and a bounded excerpt of the body.
    pub fn protocol(message: impl Into<String>, status: Option<u16>, body: &[u8]) -> Self {
        let mut e = Error::new(ErrorCode::SandboxdProtocol, message);
        if let Some(s) = status {
            e = e.with("status", s);
        }
        e.with("body", excerpt(body))
    }
}

/// A bounded, lossy UTF-8 excerpt of a body, for error properties and messages.
pub fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_EXCERPT_LIMIT)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if body.len() > BODY_EXCERPT_LIMIT {
        s.push('…');
    }
    s
}

/// The innermost `io::Error` in a source chain, if any (hyper wraps the real cause several layers deep).
pub fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut found = None;
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            found = Some(io);
        }
        cur = err.source();
    }
    found
}

/// Every message in a source chain, joined: what `Display` on hyper errors hides.
pub fn chain_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if parts.last() != Some(&s) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_bounded() {
        let body = vec![b'x'; 10_000];
        let e = Error::protocol("bad", Some(500), &body);
        let b = e.props["body"].as_str().unwrap();
        assert!(b.chars().count() <= BODY_EXCERPT_LIMIT + 1);
        assert_eq!(e.props["status"], 500);
        assert_eq!(e.code.as_str(), "ERR_SANDBOXD_PROTOCOL");
    }

    #[test]
    fn chain_reaches_the_io_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let o = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            io_cause(&o).unwrap().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        assert!(chain_message(&o).starts_with("client error (Connect): "));
    }
}
