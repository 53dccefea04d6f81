//! LocalSandboxd's v1 *sandbox endpoint*: the Processes and Files operations of the Docker Sandboxes API v1
//! (`spec/sandboxes-api-v1.openapi.yaml`) for one sandbox container, served on that sandbox's own Unix socket.
//!
//! - Processes (`process.rs`): one-shot `exec`, durable processes with pipes or a PTY, each with a bounded
//!   output retention buffer whose chunks carry a per-process `streamSequence` (1, 2, …), read by polling
//!   (`readOutput`) or over the interact WebSocket (`interact.rs`), which resumes after any retained sequence.
//! - Files (`files.rs`): content read/write through the engine's archive API; stat, list, mkdir, move and remove
//!   as argv execs of fixed `sh` scripts (paths are arguments, never spliced into the script); multipart upload
//!   and download.
//!
//! Every refusal is the contract's `Error` body `{code, message, details?}` with the HTTP status of its code.

mod files;
mod interact;
mod process;
#[cfg(test)]
mod tests;

use crate::core::container::Container;
use crate::core::error::{Error as CoreError, ErrorCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// A response of the endpoint.
pub(crate) type Resp = Response<Full<Bytes>>;

/// Output retained per process for `readOutput` and interact resumes (the contract's floor is 64 KiB).
const RETAIN_BYTES: usize = 8 * 1024 * 1024;
/// Combined stdout + stderr a one-shot `exec` captures; beyond it the response says `incomplete`.
const EXEC_CAPTURE_BYTES: usize = 16 * 1024 * 1024;
/// Largest JSON request body.
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;
/// Largest raw (`writeFile`) or multipart (`upload`) request body.
const MAX_FILE_BODY: usize = 512 * 1024 * 1024;

/// One sandbox's endpoint state: its process table with output retention, idempotency receipts, and the
/// container everything runs in.
pub struct Endpoint {
    container: Container,
    /// `NAME=value` pairs added to every process (before the request's own `env`).
    env: Vec<(String, String)>,
    procs: Mutex<process::Table>,
    /// Serializes `createProcess` (label uniqueness and `Idempotency-Key` replays are decided under it).
    create_lock: tokio::sync::Mutex<()>,
    /// Fired by [`Endpoint::shutdown`]: running execs are killed, interact streams close.
    stop: CancellationToken,
    retain_bytes: AtomicUsize,
    exec_capture: AtomicUsize,
}

impl Endpoint {
    /// The endpoint of the sandbox `container`; `env` (`NAME=value`) is added to every process it starts.
    pub fn new(container: Container, env: Vec<String>) -> Arc<Endpoint> {
        let env = env
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        Arc::new(Endpoint {
            container,
            env,
            procs: Mutex::new(process::Table::default()),
            create_lock: tokio::sync::Mutex::new(()),
            stop: CancellationToken::new(),
            retain_bytes: AtomicUsize::new(RETAIN_BYTES),
            exec_capture: AtomicUsize::new(EXEC_CAPTURE_BYTES),
        })
    }

    /// The operationIds served (for `endpoint.capabilities`).
    pub fn capabilities() -> Vec<&'static str> {
        vec![
            "exec",
            "createProcess",
            "listProcesses",
            "getProcess",
            "readOutput",
            "signal",
            "interact",
            "readFile",
            "writeFile",
            "stat",
            "list",
            "mkdir",
            "move",
            "remove",
            "upload",
            "download",
        ]
    }

    /// Kill every process (sandbox stopped/deleted) and close every interact stream; bounded.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let procs = self.procs.lock().map(|t| t.all()).unwrap_or_default();
        let kills = procs.iter().map(|p| p.terminate());
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            futures::future::join_all(kills),
        )
        .await;
    }

    /// Serve one HTTP request of the endpoint surface (`/v1/processes…`, `/v1/files…`; WebSocket upgrade for
    /// interact). Unknown routes are `404 notFound`.
    pub async fn route(self: &Arc<Self>, req: Request<Incoming>) -> Resp {
        match self.dispatch(req).await {
            Ok(r) => r,
            Err(e) => e.response(),
        }
    }

    async fn dispatch(self: &Arc<Self>, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let path = req.uri().path().to_string();
        let segs: Vec<&str> = path
            .strip_prefix("/v1/")
            .map(|p| p.split('/').collect())
            .unwrap_or_default();
        let m = req.method().clone();
        match (segs.as_slice(), &m) {
            (["processes", "exec"], &Method::POST) => self.exec(req).await,
            (["processes"], &Method::POST) => self.create_process(req).await,
            (["processes"], &Method::GET) => self.list_processes(&req),
            (["processes", id], &Method::GET) => self.get_process(&decode(id)?),
            (["processes", id, "output"], &Method::GET) => self.read_output(&decode(id)?, &req),
            (["processes", id, "signal"], &Method::POST) => {
                let id = decode(id)?;
                self.signal(&id, req).await
            }
            (["processes", id, "interact"], &Method::GET) => {
                let id = decode(id)?;
                self.interact(id, req)
            }
            (["files", "content"], &Method::GET) => self.read_file(&req).await,
            (["files", "content"], &Method::PUT) => self.write_file(req).await,
            (["files", "stat"], &Method::GET) => self.stat(&req).await,
            (["files"], &Method::GET) => self.list(&req).await,
            (["files"], &Method::DELETE) => self.remove(&req).await,
            (["files", "directories"], &Method::PUT) => self.mkdir(req).await,
            (["files", "move"], &Method::POST) => self.move_path(req).await,
            (["files", "upload"], &Method::POST) => self.upload(req).await,
            (["files", "download"], &Method::GET) => self.download(&req).await,
            _ => Err(ApiError::not_found(format!("no route {m} {path}"))),
        }
    }
}

/// A path segment, percent-decoded.
fn decode(seg: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::invalid("the path is not UTF-8"))
}

/// The query's `(name, value)` pairs, decoded (`+` is a space), in order.
pub(crate) fn query_pairs(req: &Request<Incoming>) -> Result<Vec<(String, String)>, ApiError> {
    let q = req.uri().query().unwrap_or_default();
    let mut out = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| ApiError::invalid("the query string is not UTF-8"))
        };
        out.push((dec(k)?, dec(v)?));
    }
    Ok(out)
}

/// The one value of query parameter `name` (a repeated one is refused).
pub(crate) fn query_one(
    pairs: &[(String, String)],
    name: &str,
) -> Result<Option<String>, ApiError> {
    let mut it = pairs.iter().filter(|(k, _)| k == name);
    let first = it.next().map(|(_, v)| v.clone());
    if it.next().is_some() {
        return Err(ApiError::invalid(format!(
            "query parameter {name} is repeated"
        )));
    }
    Ok(first)
}

/// Refuse query parameters other than `allowed`.
pub(crate) fn query_only(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    match pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) => Err(ApiError::invalid(format!("unknown query parameter {k:?}"))),
        None => Ok(()),
    }
}

/// Read the whole body, at most `limit` bytes.
pub(crate) async fn body_bytes(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            "resourceExhausted",
            format!("the request body is larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::invalid(format!("reading the request body: {e}"))),
    }
}

/// A JSON request body, parsed into `T` (unknown fields refused where `T` says so).
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<(T, Value), ApiError> {
    let bytes = body_bytes(req.into_body(), MAX_JSON_BODY).await?;
    let raw: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))?;
    let t = serde_json::from_value(raw.clone())
        .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?;
    Ok((t, raw))
}

/// A JSON response.
pub(crate) fn json_response(status: u16, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A refusal in the contract's terms: an `Error` body and the HTTP status of its code.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: &'static str,
    pub message: String,
    pub details: Vec<Value>,
}

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new("invalidArgument", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new("notFound", message)
    }
    pub fn precondition(message: impl Into<String>) -> ApiError {
        ApiError::new("failedPrecondition", message)
    }
    /// Add a `google.rpc.BadRequest` detail naming `field`.
    pub fn field(mut self, field: &str, description: &str) -> ApiError {
        self.details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": description}],
        }));
        self
    }

    /// The HTTP status of the code (the gRPC ↔ HTTP mapping the contract uses).
    pub fn status(&self) -> u16 {
        match self.code {
            "invalidArgument" | "outOfRange" => 400,
            "unauthenticated" => 401,
            "permissionDenied" => 403,
            "notFound" => 404,
            "alreadyExists" | "failedPrecondition" | "aborted" => 409,
            "resourceExhausted" => 429,
            "canceled" => 499,
            "unimplemented" => 501,
            "unavailable" => 503,
            "deadlineExceeded" => 504,
            _ => 500,
        }
    }

    /// The `Error` body.
    pub fn body(&self) -> Value {
        let mut v = json!({"code": self.code, "message": self.message});
        if !self.details.is_empty() {
            v["details"] = Value::Array(self.details.clone());
        }
        v
    }

    pub fn response(&self) -> Resp {
        json_response(self.status(), &self.body())
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let code = match e.code {
            ErrorCode::InvalidArgument => "invalidArgument",
            ErrorCode::PathNotFound | ErrorCode::ContainerNotFound => "notFound",
            ErrorCode::NotAFile
            | ErrorCode::NotADirectory
            | ErrorCode::PathEscapes
            | ErrorCode::ProcessFinished
            | ErrorCode::ExecFailed
            | ErrorCode::ContainerNotRunning => "failedPrecondition",
            ErrorCode::PathExists => "alreadyExists",
            ErrorCode::PermissionDenied => "permissionDenied",
            ErrorCode::Timeout => "deadlineExceeded",
            ErrorCode::Aborted => "canceled",
            ErrorCode::EngineUnavailable | ErrorCode::StreamInterrupted => "unavailable",
            _ => "internal",
        };
        ApiError::new(code, e.message)
    }
}

/// An int64 given as a JSON number or a decimal string (the contract's int64 input rule).
pub(crate) fn int64(v: &Value, what: &str) -> Result<i64, ApiError> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::invalid(format!(
            "{what} must be an int64 (a number or a decimal string)"
        ))
    })
}

/// Test knobs: smaller retention and capture so their limits can be reached.
#[cfg(test)]
impl Endpoint {
    pub(crate) fn set_limits(&self, retain_bytes: usize, exec_capture: usize) {
        self.retain_bytes.store(retain_bytes, Ordering::SeqCst);
        self.exec_capture.store(exec_capture, Ordering::SeqCst);
    }
}

impl Endpoint {
    fn retain_bytes(&self) -> usize {
        self.retain_bytes.load(Ordering::SeqCst)
    }
    fn exec_capture(&self) -> usize {
        self.exec_capture.load(Ordering::SeqCst)
    }
}
