//! LocalSandboxd's Docker Sandboxes API v1 management surface (`/v1/…` on its main socket; issue #21,
//! `spec/sandboxes-api-v1.openapi.yaml`), over the same sandboxes its sbx routes serve: a v1 sandbox **is** an sbx
//! sandbox (`uid` = its id, `displayName` = its name), so one store, one engine per sandbox and one proxy.
//!
//! - Create takes `displayName` (or `displayNamePrefix` + 6 random characters; also an sbx name: no `_`),
//!   `imageRef` (required: there is no default image), `agent` (default `shell`), `environment`, `labels`; a v1
//!   sandbox's workspace is a private empty directory `<root>/v1ws/<uid>`. `resources`, `pullPolicy` and
//!   `platform` are accepted and not applied; `image`, `kits`, `mcp`, `networkPolicies`, `policyIds`,
//!   `startupExecution` and `features` are `unimplemented`; any other field is `invalidArgument`.
//! - Lifecycle: create answers 202 `creating` and starts the container in the background (then `running`, or
//!   `failed` with `failure`); start/stop/delete answer 202 `starting`/`stopping`/`deleting` likewise, 200 when
//!   there is nothing to do. Strong etags `"<n>"` are bumped on every change; mutations need `If-Match` (428
//!   without, 412 with an `EtagMismatch` detail when stale); `If-None-Match` on GET answers 304.
//! - `Idempotency-Key`: a key seen with the same operation, target and body replays the first (2xx) answer; with
//!   another body it is `409 failedPrecondition`. Keys are kept 24 h (at most [`MAX_IDEMPOTENCY_KEYS`]).
//! - Lists: `pageSize` (default 25, at most 100), opaque `pageToken` (the last key of the page, bound to the
//!   filter and order), `filter` (`name`, `display_name`, `uid`, `status`, `agent`, `label.<k>`), `orderBy`
//!   (`created_at`, `name`, optionally `desc`).
//! - Each sandbox whose container exists gets its own endpoint socket `<root>/ep/<uid>.sock`, served with the
//!   sandbox endpoint service (`core.endpoint`, `localSocket` authentication), removed with the sandbox.
//! - Sandboxes made through the sbx routes appear here too (adopted on the next v1 read), and a sandbox the sbx
//!   routes removed disappears.
//! - Network policy read-back and policy logs from the proxy (`policy.rs`), ports over the sbx port forwards
//!   (`ports.rs`), snapshots as image commits (`snapshots.rs`).
//! - Everything else under `/v1/` answers `501 unimplemented` (`updateSandbox` too: the display name is the sbx
//!   name, which keys the proxy's rules and the sandbox's state).

mod policy;
mod ports;
mod snapshots;
#[cfg(test)]
mod tests;

use super::sbx::SbxEntry;
use super::{make_private_dir, Inner, Resp, Work};
use crate::core::error::{Error, ErrorCode};
use crate::core::local::endpoint::Endpoint;
use crate::core::v1::model;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// Directory under the LocalSandboxd root holding the endpoint sockets.
pub(super) const ENDPOINT_DIR: &str = "ep";
/// Directory under the root holding the private empty workspaces of v1-created sandboxes.
pub(super) const WORKSPACE_DIR: &str = "v1ws";
/// Longest endpoint socket path (the design keeps it under 100 bytes).
const MAX_ENDPOINT_PATH: usize = 99;
/// How long an `Idempotency-Key` is remembered.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// At most this many keys are remembered (the oldest go first).
const MAX_IDEMPOTENCY_KEYS: usize = 10_000;
/// `pageSize` when omitted or zero, and its upper bound.
const DEFAULT_PAGE: usize = 25;
const MAX_PAGE: usize = 100;
/// Fields a create request may carry (the contract's `CreateSandboxRequest`); any other is refused.
const CREATE_FIELDS: &[&str] = &[
    "agent",
    "displayName",
    "displayNamePrefix",
    "environment",
    "resources",
    "pullPolicy",
    "kits",
    "mcp",
    "networkPolicies",
    "policyIds",
    "platform",
    "startupExecution",
    "labels",
    "features",
    "image",
    "imageRef",
];
/// Of those, the ones LocalSandboxd cannot honour: refused `unimplemented` rather than ignored.
const CREATE_UNSERVED: &[&str] = &[
    "kits",
    "mcp",
    "networkPolicies",
    "policyIds",
    "startupExecution",
    "features",
    "image",
];

/// A v1 sandbox's lifecycle state (`SandboxStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
    Deleting,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
            Status::Deleting => "deleting",
        }
    }

    /// No background work under way.
    fn settled(self) -> bool {
        matches!(self, Status::Running | Status::Stopped | Status::Failed)
    }
}

/// A served endpoint socket: stopping it ends its listener and connections.
struct EndpointServer {
    /// The endpoint service new connections are handed to; replaced by a fresh one when the sandbox stops.
    ep: Mutex<Arc<Endpoint>>,
    container: crate::core::container::Container,
    env: Vec<String>,
    path: PathBuf,
    stop: CancellationToken,
}

impl EndpointServer {
    fn current(&self) -> Option<Arc<Endpoint>> {
        self.ep.lock().ok().map(|e| e.clone())
    }

    /// The sandbox stopped: its processes are killed, and later connections get a fresh endpoint.
    async fn reset(&self) {
        let fresh = Endpoint::new(self.container.clone(), self.env.clone());
        let old = self
            .ep
            .lock()
            .ok()
            .map(|mut e| std::mem::replace(&mut *e, fresh));
        if let Some(old) = old {
            old.shutdown().await;
        }
    }

    async fn close(&self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.path);
        if let Some(ep) = self.current() {
            ep.shutdown().await;
        }
    }
}

/// One v1 sandbox.
struct Record {
    uid: String,
    display_name: String,
    /// Creation order (list order and page keys).
    seq: u64,
    created_at: String,
    status: Status,
    etag: u64,
    agent: String,
    image_ref: String,
    environment: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    failure: Option<Value>,
    endpoint: Option<Arc<EndpointServer>>,
    /// The private workspace made for it (v1-created sandboxes), removed with it.
    workspace: Option<PathBuf>,
    /// The published ports last seen (`core.ports`): a change, through either API, is a new etag.
    ports_seen: String,
}

impl Record {
    fn etag(&self) -> String {
        format!("\"{}\"", self.etag)
    }

    fn set(&mut self, status: Status) {
        self.status = status;
        self.etag += 1;
    }
}

/// A remembered `Idempotency-Key` answer.
struct Remembered {
    fingerprint: String,
    answer: Answer,
    at: Instant,
}

/// A v1 answer before it becomes a response: status, JSON body (none for 204/304) and ETag header.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    body: Option<Value>,
    etag: Option<String>,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Answer {
        Answer {
            status,
            body: Some(body),
            etag: None,
        }
    }

    fn with_etag(mut self, etag: String) -> Answer {
        self.etag = Some(etag);
        self
    }

    fn into_resp(self) -> Resp {
        let mut r = Response::new(Full::new(match &self.body {
            Some(b) => Bytes::from(b.to_string()),
            None => Bytes::new(),
        }));
        *r.status_mut() = self.status;
        if self.body.is_some() {
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
        }
        if let Some(e) = self.etag.as_deref().and_then(|e| e.parse().ok()) {
            r.headers_mut().insert(hyper::header::ETAG, e);
        }
        r
    }
}

/// The HTTP status the contract gives an error code.
fn status_of(code: &str) -> StatusCode {
    match code {
        "invalidArgument" | "outOfRange" => StatusCode::BAD_REQUEST,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "permissionDenied" => StatusCode::FORBIDDEN,
        "notFound" => StatusCode::NOT_FOUND,
        "alreadyExists" | "aborted" | "failedPrecondition" => StatusCode::CONFLICT,
        "resourceExhausted" => StatusCode::TOO_MANY_REQUESTS,
        "unimplemented" => StatusCode::NOT_IMPLEMENTED,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "deadlineExceeded" => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An `Error {code, message}` answer with the contract's status for `code`.
fn error(code: &str, message: impl Into<String>) -> Answer {
    Answer::json(
        status_of(code),
        json!({"code": code, "message": message.into()}),
    )
}

/// A core error as a v1 error (its code mapped; the message kept).
fn core_error(e: &Error) -> Value {
    let code = match e.code {
        ErrorCode::InvalidArgument => "invalidArgument",
        ErrorCode::ImageNotFound | ErrorCode::SandboxNotFound | ErrorCode::PathNotFound => {
            "notFound"
        }
        ErrorCode::SandboxdUnavailable | ErrorCode::EngineUnavailable => "unavailable",
        ErrorCode::Timeout => "deadlineExceeded",
        ErrorCode::Aborted => "canceled",
        ErrorCode::ContainerNotRunning | ErrorCode::SandboxStopped => "failedPrecondition",
        _ => "internal",
    };
    json!({"code": code, "message": e.message})
}

fn not_found(uid: &str) -> Answer {
    error("notFound", format!("sandbox {uid} not found"))
}

/// `428`: the operation needs `If-Match`.
fn etag_required() -> Answer {
    let mut a = error(
        "failedPrecondition",
        "etag_required: this operation needs an If-Match header with the resource's current etag",
    );
    a.status = StatusCode::PRECONDITION_REQUIRED;
    a
}

/// `412` with the `EtagMismatch` detail.
fn etag_mismatch(current: &str) -> Answer {
    Answer {
        status: StatusCode::PRECONDITION_FAILED,
        body: Some(json!({
            "code": "failedPrecondition",
            "message": "etag_mismatch: If-Match is not the resource's current etag",
            "details": [{"@type": "type.googleapis.com/docker.sandboxes.v1.EtagMismatch", "currentEtag": current}],
        })),
        etag: None,
    }
}

/// `If-Match` against the current etag: `None` when it matches (strongly, or `*`).
fn check_if_match(headers: &HeaderMap, current: &str) -> Option<Answer> {
    let Some(v) = headers.get(hyper::header::IF_MATCH) else {
        return Some(etag_required());
    };
    let v = v.to_str().unwrap_or("");
    let ok = v
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == current);
    (!ok).then(|| etag_mismatch(current))
}

/// `If-None-Match` against the current etag, compared weakly (`W/` ignored; `*` matches).
fn if_none_match(headers: &HeaderMap, current: &str) -> bool {
    headers
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == current)
        })
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    let dec = |s: &str| {
                        percent_encoding::percent_decode_str(&s.replace('+', " "))
                            .decode_utf8_lossy()
                            .into_owned()
                    };
                    (!k.is_empty()).then(|| (dec(k), dec(v)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The body as a JSON object (`{}` when empty); an `invalidArgument` answer otherwise.
async fn body_object(req: Request<Incoming>) -> Result<Map<String, Value>, Answer> {
    let b = Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| error("invalidArgument", format!("unreadable body: {e}")))?
        .to_bytes();
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&b) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error("invalidArgument", "the body must be a JSON object")),
        Err(e) => Err(error(
            "invalidArgument",
            format!("the body is not JSON: {e}"),
        )),
    }
}

/// Now as RFC 3339 (UTC, seconds).
fn now_rfc3339() -> String {
    super::sbx::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    )
}

/// Short random text (display name suffixes).
fn short_random() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

/// The v1 state of one LocalSandboxd: records by uid and remembered idempotency keys.
#[derive(Default)]
pub(super) struct State {
    records: Mutex<BTreeMap<String, Record>>,
    seq: AtomicU64,
    remembered: tokio::sync::Mutex<HashMap<(String, String, String), Remembered>>,
    snapshots: Mutex<BTreeMap<String, snapshots::Snapshot>>,
}

/// Serve one `/v1/…` request.
pub(super) async fn route(inner: &Arc<Inner>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method().clone();
    if inner.shutdown.is_cancelled() {
        return error("unavailable", "LocalSandboxd is stopping").into_resp();
    }
    inner.v1_sync();
    let a = match (&m, &segs[1..]) {
        (&Method::GET, ["sandboxes"]) => inner.v1_list(&query(&req)),
        (&Method::POST, ["sandboxes"]) => {
            create_once(inner, req, "createSandbox", "", |b| async {
                inner.v1_create(b)
            })
            .await
        }
        (&Method::GET, ["sandboxes", uid]) => inner.v1_get(uid, req.headers()),
        (&Method::PATCH, ["sandboxes", _]) => error(
            "unimplemented",
            "LocalSandboxd does not rename sandboxes (displayName is the sbx sandbox name)",
        ),
        (&Method::DELETE, ["sandboxes", uid])
        | (&Method::POST, ["sandboxes", uid, "start" | "stop"]) => {
            let verb = match segs.get(3) {
                Some(&"start") => Verb::Start,
                Some(_) => Verb::Stop,
                None => Verb::Delete,
            };
            let uid = uid.to_string();
            let key = idempotency_key(req.headers());
            let headers = req.headers().clone();
            let q = query(&req);
            match body_object(req).await {
                Ok(b) if verb != Verb::Delete && !b.is_empty() => error(
                    "invalidArgument",
                    format!(
                        "unknown field {:?}",
                        b.keys().next().map(String::as_str).unwrap_or("")
                    ),
                ),
                Ok(_) => {
                    let fp = format!("{:?}", q.get("force"));
                    inner
                        .v1_idempotent(verb.op(), &uid, key, fp, async {
                            inner.v1_transition(&uid, verb, &headers)
                        })
                        .await
                }
                Err(a) => a,
            }
        }
        (&Method::GET, ["sandboxes", uid, "network-policies"]) => inner.v1_network_policies(uid),
        (&Method::GET, ["sandboxes", uid, "policy-logs"]) => {
            inner.v1_policy_logs(Some(uid), &query(&req))
        }
        (&Method::GET, ["network-policies"]) => inner.v1_network_policies_owner(),
        (&Method::GET, ["sandboxes", uid, "ports"]) => inner.v1_list_ports(uid),
        (&Method::POST, ["sandboxes", uid, "ports"]) => {
            let uid = uid.to_string();
            create_once(inner, req, "createPort", &uid, |b| {
                inner.v1_create_port(&uid, b)
            })
            .await
        }
        (&Method::GET, ["sandboxes", uid, "ports", port]) => {
            inner.v1_get_port(uid, port, req.headers())
        }
        (&Method::DELETE, ["sandboxes", uid, "ports", port]) => {
            inner.v1_delete_port(uid, port, req.headers()).await
        }
        (&Method::POST, ["sandboxes", uid, "snapshots"]) => {
            let uid = uid.to_string();
            create_once(inner, req, "createSnapshot", &uid, |b| async {
                inner.v1_create_snapshot(&uid, b)
            })
            .await
        }
        (&Method::GET, ["snapshots"]) => inner.v1_list_snapshots(&query(&req)),
        (&Method::GET, ["snapshots", id]) => inner.v1_get_snapshot(id, req.headers()),
        (&Method::DELETE, ["snapshots", id]) => inner.v1_delete_snapshot(id, req.headers()),
        (&Method::POST, ["snapshots", id, "restore"]) => {
            let id = id.to_string();
            create_once(inner, req, "restoreSnapshot", &id, |b| async {
                inner.v1_restore_snapshot(&id, b)
            })
            .await
        }
        (&Method::GET, ["policy-logs"]) => inner.v1_policy_logs(None, &query(&req)),
        _ if segs.first() == Some(&"v1") => error(
            "unimplemented",
            format!("LocalSandboxd does not serve {m} {path}"),
        ),
        _ => error("notFound", format!("no route for {path}")),
    };
    a.into_resp()
}

/// A POST that makes something: its JSON object body handed to `f`, run once per `Idempotency-Key` (the body is
/// the key's fingerprint: see [`Inner::v1_idempotent`]).
async fn create_once<F, Fut>(
    inner: &Arc<Inner>,
    req: Request<Incoming>,
    op: &str,
    target: &str,
    f: F,
) -> Answer
where
    F: FnOnce(Map<String, Value>) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let key = idempotency_key(req.headers());
    match body_object(req).await {
        Ok(b) => {
            let fp = Value::Object(b.clone()).to_string();
            inner.v1_idempotent(op, target, key, fp, f(b)).await
        }
        Err(a) => a,
    }
}

fn idempotency_key(h: &HeaderMap) -> Option<String> {
    h.get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Start,
    Stop,
    Delete,
}

impl Verb {
    fn op(self) -> &'static str {
        match self {
            Verb::Start => "startSandbox",
            Verb::Stop => "stopSandbox",
            Verb::Delete => "deleteSandbox",
        }
    }
}

impl Inner {
    /// Run `f` once per `Idempotency-Key`: a key seen before with the same operation, target and fingerprint
    /// replays the first (2xx) answer; with another fingerprint it is `409 failedPrecondition`. `f` runs under the
    /// table's lock (it only starts background work, or publishes a port), so concurrent retries see one answer.
    async fn v1_idempotent(
        &self,
        op: &str,
        target: &str,
        key: Option<String>,
        fingerprint: String,
        f: impl std::future::Future<Output = Answer>,
    ) -> Answer {
        let Some(key) = key else { return f.await };
        let mut table = self.v1.remembered.lock().await;
        table.retain(|_, r| r.at.elapsed() < IDEMPOTENCY_TTL);
        let k = (op.to_string(), target.to_string(), key);
        if let Some(r) = table.get(&k) {
            return if r.fingerprint == fingerprint {
                r.answer.clone()
            } else {
                error(
                    "failedPrecondition",
                    "The Idempotency-Key was already used with a different payload.",
                )
            };
        }
        let a = f.await;
        if a.status.is_success() {
            if table.len() >= MAX_IDEMPOTENCY_KEYS {
                if let Some(oldest) = table
                    .iter()
                    .min_by_key(|(_, r)| r.at)
                    .map(|(k, _)| k.clone())
                {
                    table.remove(&oldest);
                }
            }
            table.insert(
                k,
                Remembered {
                    fingerprint,
                    answer: a.clone(),
                    at: Instant::now(),
                },
            );
        }
        a
    }

    /// Bring the records in line with the sbx sandboxes: adopt ones made through the sbx routes, drop settled
    /// ones the sbx routes removed, and follow a settled sandbox's running state (a bumped etag when it moved).
    fn v1_sync(self: &Arc<Self>) {
        let all = self.sbx_all();
        let mut adopt = Vec::new();
        let mut gone = Vec::new();
        {
            let Ok(mut recs) = self.v1.records.lock() else {
                return;
            };
            for e in &all {
                match recs.get_mut(&e.id) {
                    None => adopt.push(e.clone()),
                    Some(r) if r.status == Status::Running || r.status == Status::Stopped => {
                        let now = if e.running.load(Ordering::SeqCst) {
                            Status::Running
                        } else {
                            Status::Stopped
                        };
                        if r.status != now {
                            r.set(now);
                        }
                        let ports = format!("{:?}", e.port_list());
                        if r.ports_seen != ports {
                            r.ports_seen = ports;
                            r.etag += 1;
                        }
                    }
                    Some(_) => {}
                }
            }
            recs.retain(|uid, r| {
                let keep = !matches!(r.status, Status::Running | Status::Stopped)
                    || all.iter().any(|e| &e.id == uid);
                if !keep {
                    gone.extend(r.endpoint.take());
                }
                keep
            });
            for e in adopt {
                let seq = self.v1.seq.fetch_add(1, Ordering::SeqCst);
                let endpoint = self.v1_bind_endpoint(&e).ok();
                recs.insert(
                    e.id.clone(),
                    Record {
                        uid: e.id.clone(),
                        display_name: e.name.clone(),
                        seq,
                        created_at: e.created_at.clone(),
                        status: if e.running.load(Ordering::SeqCst) {
                            Status::Running
                        } else {
                            Status::Stopped
                        },
                        etag: 1,
                        agent: e.agent.clone(),
                        image_ref: e.template.clone(),
                        environment: BTreeMap::new(),
                        labels: e.labels.clone(),
                        failure: None,
                        endpoint,
                        workspace: None,
                        ports_seen: format!("{:?}", e.port_list()),
                    },
                );
            }
        }
        for g in gone {
            self.tasks.spawn(async move { g.close().await });
        }
    }

    /// The sandbox resource of a record.
    fn v1_sandbox(&self, r: &Record) -> Value {
        let entry = self.sbx_all().into_iter().find(|e| e.id == r.uid);
        let endpoint = r.endpoint.as_ref().map(|ep| model::SandboxEndpoint {
            uri: Some(format!("unix://{}", ep.path.display())),
            protocol: Some("unixSocket".into()),
            credential_audience: Some(String::new()),
            sandbox: format!("sandboxes/{}", r.uid),
            sandbox_uid: r.uid.clone(),
            api_version: "v1".into(),
            capabilities: Endpoint::capabilities()
                .into_iter()
                .map(str::to_string)
                .collect(),
            authentication: model::EndpointAuthentication {
                scheme: "localSocket".into(),
                default_ttl: None,
                max_ttl: None,
                credential_transports: Vec::new(),
            },
            extra: Map::new(),
        });
        let mut extra = Map::new();
        if let Some(e) = &entry {
            let ports: Vec<Value> = e
                .port_list()
                .into_iter()
                .map(|p| {
                    json!({"hostIp": p.host_ip, "hostPort": p.host_port, "sandboxPort": p.sandbox_port,
                           "protocol": p.protocol, "url": ports::url(&p)})
                })
                .collect();
            if !ports.is_empty() {
                extra.insert("ports".into(), Value::Array(ports));
            }
        }
        let s = model::Sandbox {
            name: format!("sandboxes/{}", r.uid),
            uid: r.uid.clone(),
            display_name: Some(r.display_name.clone()),
            core: model::SandboxCore {
                status: r.status.as_str().into(),
                created_at: r.created_at.clone(),
                etag: r.etag(),
                agent: Some(r.agent.clone()),
                image_ref: (!r.image_ref.is_empty()).then(|| r.image_ref.clone()),
                environment: r.environment.clone(),
                labels: r.labels.clone(),
                endpoint,
                extra,
            },
            failure: r
                .failure
                .clone()
                .and_then(|f| serde_json::from_value(f).ok()),
            extra: Map::new(),
        };
        serde_json::to_value(s).unwrap_or(Value::Null)
    }

    fn v1_get(&self, uid: &str, headers: &HeaderMap) -> Answer {
        let Ok(recs) = self.v1.records.lock() else {
            return error("internal", "state lock poisoned");
        };
        let Some(r) = recs.get(uid) else {
            return not_found(uid);
        };
        let etag = r.etag();
        if if_none_match(headers, &etag) {
            return Answer {
                status: StatusCode::NOT_MODIFIED,
                body: None,
                etag: Some(etag),
            };
        }
        Answer::json(StatusCode::OK, self.v1_sandbox(r)).with_etag(etag)
    }

    fn v1_list(&self, q: &HashMap<String, String>) -> Answer {
        let page = match q.get("pageSize").map(|s| s.parse::<i64>()) {
            None => DEFAULT_PAGE,
            Some(Ok(n)) if n < 0 => {
                return error("invalidArgument", "pageSize must not be negative")
            }
            Some(Ok(0)) => DEFAULT_PAGE,
            Some(Ok(n)) => (n as usize).min(MAX_PAGE),
            Some(Err(_)) => return error("invalidArgument", "pageSize must be an integer"),
        };
        let filter = q.get("filter").cloned().unwrap_or_default();
        let mut terms = Vec::new();
        for t in filter.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Some((k, v)) = t.split_once('=') else {
                return error(
                    "invalidArgument",
                    format!("filter term {t:?} is not field=value"),
                );
            };
            let k = k.trim();
            let known = matches!(
                k,
                "name" | "display_name" | "displayName" | "uid" | "status" | "agent"
            ) || k.starts_with("label.")
                || k.starts_with("labels.");
            if !known {
                return error(
                    "invalidArgument",
                    format!("cannot filter on {k:?} (name, display_name, uid, status, agent, label.<key>)"),
                );
            }
            terms.push((k.to_string(), v.trim().to_string()));
        }
        let order = q.get("orderBy").cloned().unwrap_or_default();
        let mut words = order.split_whitespace();
        let (by_name, desc) = match (words.next(), words.next(), words.next()) {
            (None, _, _) | (Some("created_at" | "createdAt"), None, _) => (false, false),
            (Some("name" | "display_name"), None, _) => (true, false),
            (Some(f @ ("created_at" | "createdAt" | "name" | "display_name")), Some(d), None)
                if d.eq_ignore_ascii_case("asc") || d.eq_ignore_ascii_case("desc") =>
            {
                (!f.starts_with("created"), d.eq_ignore_ascii_case("desc"))
            }
            _ => {
                return error(
                    "invalidArgument",
                    format!(
                    "orderBy {order:?}: use created_at or name, optionally followed by asc or desc"
                ),
                )
            }
        };
        // The token carries the last key of the previous page and the query it belongs to.
        let bound = format!("{filter}|{order}");
        let after: Option<(String, u64)> = match q.get("pageToken").filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => {
                use base64::Engine as _;
                let parsed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .and_then(|v| {
                        (v["q"].as_str() == Some(bound.as_str())).then(|| {
                            (
                                v["k"].as_str().unwrap_or_default().to_string(),
                                v["s"].as_u64().unwrap_or(0),
                            )
                        })
                    });
                match parsed {
                    Some(p) => Some(p),
                    None => {
                        return error(
                            "invalidArgument",
                            "pageToken is not one this list gave for this filter and order",
                        )
                    }
                }
            }
        };
        let Ok(recs) = self.v1.records.lock() else {
            return error("internal", "state lock poisoned");
        };
        let key = |r: &Record| {
            (
                if by_name {
                    r.display_name.clone()
                } else {
                    String::new()
                },
                r.seq,
            )
        };
        let mut rows: Vec<&Record> = recs
            .values()
            .filter(|r| {
                terms.iter().all(|(k, v)| match k.as_str() {
                    "name" => format!("sandboxes/{}", r.uid) == *v || r.display_name == *v,
                    "display_name" | "displayName" => r.display_name == *v,
                    "uid" => r.uid == *v,
                    "status" => r.status.as_str() == v,
                    "agent" => r.agent == *v,
                    l => {
                        let lk = l.split_once('.').map(|x| x.1).unwrap_or_default();
                        r.labels.get(lk) == Some(v)
                    }
                })
            })
            .collect();
        rows.sort_by_key(|r| key(r));
        if desc {
            rows.reverse();
        }
        if let Some(a) = &after {
            rows.retain(|r| if desc { key(r) < *a } else { key(r) > *a });
        }
        let more = rows.len() > page;
        rows.truncate(page);
        let next = match (more, rows.last()) {
            (true, Some(last)) => {
                use base64::Engine as _;
                let (k, s) = key(last);
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(json!({"q": bound, "k": k, "s": s}).to_string())
            }
            _ => String::new(),
        };
        let list: Vec<Value> = rows.iter().map(|r| self.v1_sandbox(r)).collect();
        let mut body = json!({ "sandboxes": list });
        if !next.is_empty() {
            body["nextPageToken"] = json!(next);
        }
        Answer::json(StatusCode::OK, body)
    }

    /// `createSandbox`: checks, a `creating` record, and the container started in the background.
    fn v1_create(self: &Arc<Self>, b: Map<String, Value>) -> Answer {
        if let Some(k) = b.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
            return error("invalidArgument", format!("unknown field {k:?}"));
        }
        if let Some(k) = b.keys().find(|k| CREATE_UNSERVED.contains(&k.as_str())) {
            return error(
                "unimplemented",
                format!("LocalSandboxd does not serve {k:?} in createSandbox"),
            );
        }
        let string = |k: &str| -> Result<Option<String>, Answer> {
            match b.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(error("invalidArgument", format!("{k} must be a string"))),
            }
        };
        let map = |k: &str| -> Result<BTreeMap<String, String>, Answer> {
            match b.get(k) {
                None | Some(Value::Null) => Ok(BTreeMap::new()),
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(n, v)| match v {
                        Value::String(s) => Ok((n.clone(), s.clone())),
                        _ => Err(error(
                            "invalidArgument",
                            format!("{k}.{n} must be a string"),
                        )),
                    })
                    .collect(),
                Some(_) => Err(error(
                    "invalidArgument",
                    format!("{k} must be an object of strings"),
                )),
            }
        };
        let parsed = (|| {
            Ok::<_, Answer>((
                string("displayName")?,
                string("displayNamePrefix")?,
                string("agent")?,
                string("imageRef")?,
                map("environment")?,
                map("labels")?,
            ))
        })();
        let (display, prefix, agent, image_ref, environment, labels) = match parsed {
            Ok(p) => p,
            Err(a) => return a,
        };
        if labels.len() > 64 {
            return error("invalidArgument", "at most 64 labels");
        }
        let agent = agent
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "shell".into());
        if let Err(e) = crate::core::validate::name("agent", &agent) {
            return error("invalidArgument", e.message);
        }
        let Some(image_ref) = image_ref.filter(|i| !i.is_empty()) else {
            return error(
                "invalidArgument",
                "imageRef is required (LocalSandboxd has no default image)",
            );
        };
        for k in environment.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return error(
                    "invalidArgument",
                    format!("environment name {k:?} is not valid"),
                );
            }
        }
        let name = match (display.filter(|d| !d.is_empty()), prefix) {
            (Some(d), None) => d,
            (Some(_), Some(_)) => {
                return error(
                    "invalidArgument",
                    "give displayName or displayNamePrefix, not both",
                )
            }
            (None, Some(p)) => format!("{p}{}", short_random()),
            (None, None) => format!("sandbox-{}", short_random()),
        };
        let bad_v1 = name.len() > 64
            || !name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if bad_v1 {
            return error(
                "invalidArgument",
                format!("displayName {name:?} must be at most 64 of [a-zA-Z0-9_-]"),
            );
        }
        if let Err(e) = crate::core::sbx::validate_sandbox_name(&name) {
            return error(
                "invalidArgument",
                format!(
                    "{} (LocalSandboxd's sandbox names are hostnames)",
                    e.message
                ),
            );
        }
        let uid = uuid::Uuid::new_v4().simple().to_string();
        let ep_path = self.root.join(ENDPOINT_DIR).join(format!("{uid}.sock"));
        if ep_path.as_os_str().len() > MAX_ENDPOINT_PATH {
            return error(
                "failedPrecondition",
                format!(
                    "the endpoint socket {} would be longer than {MAX_ENDPOINT_PATH} bytes: use a shorter root",
                    ep_path.display()
                ),
            );
        }
        let Ok(mut recs) = self.v1.records.lock() else {
            return error("internal", "state lock poisoned");
        };
        let taken = recs.values().any(|r| r.display_name == name)
            || self.sbx_get(&name).is_some()
            || self
                .busy
                .lock()
                .map(|b| b.contains_key(&format!("sbx:{name}")))
                .unwrap_or(true);
        if taken {
            return error("alreadyExists", format!("a sandbox named {name} exists"));
        }
        let workspace = self.root.join(WORKSPACE_DIR).join(&uid);
        let r = Record {
            uid: uid.clone(),
            display_name: name.clone(),
            seq: self.v1.seq.fetch_add(1, Ordering::SeqCst),
            created_at: now_rfc3339(),
            status: Status::Creating,
            etag: 1,
            agent: agent.clone(),
            image_ref: image_ref.clone(),
            environment: environment.clone(),
            labels: labels.clone(),
            failure: None,
            endpoint: None,
            workspace: Some(workspace.clone()),
            ports_seen: "[]".into(),
        };
        let answer = Answer::json(StatusCode::ACCEPTED, self.v1_sandbox(&r)).with_etag(r.etag());
        recs.insert(uid.clone(), r);
        drop(recs);
        let me = self.clone();
        self.tasks.spawn(async move {
            let made = async {
                let Some(_claim) = me.sbx_claim(
                    &format!("sbx:{name}"),
                    Work::Creating {
                        workspace: workspace.clone(),
                    },
                ) else {
                    return Err(json!({"code": "alreadyExists", "message": format!("a sandbox named {name} is being made")}));
                };
                make_private_dir(&me.root.join(WORKSPACE_DIR)).map_err(|e| core_error(&e))?;
                make_private_dir(&workspace).map_err(|e| core_error(&e))?;
                let env: Vec<(String, String)> = environment.into_iter().collect();
                let ws = workspace.display().to_string();
                me.sbx_create_inner(
                    &name,
                    &agent,
                    &ws,
                    &image_ref,
                    env,
                    Vec::new(),
                    labels,
                    uid.clone(),
                )
                .await
                .map_err(|e| core_error(&e))
            };
            let result = made.await;
            let endpoint = match &result {
                Ok(e) => me.v1_bind_endpoint(e).map_err(|e| core_error(&e)),
                Err(e) => Err(e.clone()),
            };
            let Ok(mut recs) = me.v1.records.lock() else {
                return;
            };
            let Some(r) = recs.get_mut(&uid) else { return };
            match endpoint {
                Ok(ep) => {
                    r.endpoint = Some(ep);
                    r.set(Status::Running);
                }
                Err(f) => {
                    r.failure = Some(f);
                    r.set(Status::Failed);
                }
            }
        });
        answer
    }

    /// `startSandbox`, `stopSandbox`, `deleteSandbox`: `If-Match` checked, the record moved to its transitional
    /// state, the work done in the background.
    fn v1_transition(self: &Arc<Self>, uid: &str, verb: Verb, headers: &HeaderMap) -> Answer {
        let Ok(mut recs) = self.v1.records.lock() else {
            return error("internal", "state lock poisoned");
        };
        let Some(r) = recs.get_mut(uid) else {
            // "an empty message when absent": deleting a sandbox that is gone succeeds.
            return if verb == Verb::Delete {
                Answer {
                    status: StatusCode::NO_CONTENT,
                    body: None,
                    etag: None,
                }
            } else {
                not_found(uid)
            };
        };
        if let Some(a) = check_if_match(headers, &r.etag()) {
            return a;
        }
        let entry = self.sbx_all().into_iter().find(|e| e.id == uid);
        let next = match (verb, r.status) {
            (Verb::Start, Status::Running) | (Verb::Stop, Status::Stopped) => {
                return Answer::json(StatusCode::OK, self.v1_sandbox(r)).with_etag(r.etag())
            }
            (Verb::Start, Status::Stopped) => Status::Starting,
            (Verb::Stop, Status::Running) => Status::Stopping,
            (Verb::Delete, s) if s.settled() => Status::Deleting,
            // Work remains: the resource as it is.
            (Verb::Delete, Status::Deleting) => {
                return Answer::json(StatusCode::ACCEPTED, self.v1_sandbox(r)).with_etag(r.etag())
            }
            (_, s) => {
                return error(
                    "failedPrecondition",
                    format!("sandbox {uid} is {}", s.as_str()),
                )
            }
        };
        if verb != Verb::Delete && entry.is_none() {
            return error(
                "failedPrecondition",
                format!("sandbox {uid} has no container"),
            );
        }
        r.failure = None;
        r.set(next);
        let answer = Answer::json(StatusCode::ACCEPTED, self.v1_sandbox(r)).with_etag(r.etag());
        let endpoint = r.endpoint.clone();
        let workspace = r.workspace.clone();
        drop(recs);
        let me = self.clone();
        let uid = uid.to_string();
        self.tasks.spawn(async move {
            let settle = |status: Option<Status>, failure: Option<Value>| {
                if let Ok(mut recs) = me.v1.records.lock() {
                    match status {
                        None => {
                            recs.remove(&uid);
                        }
                        Some(s) => {
                            if let Some(r) = recs.get_mut(&uid) {
                                r.failure = failure;
                                r.set(s);
                            }
                        }
                    }
                }
            };
            match (verb, entry) {
                (Verb::Start, Some(e)) => match me.sbx_set_running(&e, true).await {
                    Ok(()) => settle(Some(Status::Running), None),
                    Err(err) => settle(Some(Status::Failed), Some(core_error(&err))),
                },
                (Verb::Stop, Some(e)) => {
                    if let Some(ep) = &endpoint {
                        ep.reset().await;
                    }
                    match me.sbx_set_running(&e, false).await {
                        Ok(()) => settle(Some(Status::Stopped), None),
                        Err(err) => settle(Some(Status::Failed), Some(core_error(&err))),
                    }
                }
                (Verb::Delete, entry) => {
                    if let Some(ep) = &endpoint {
                        ep.close().await;
                    }
                    if let Some(e) = entry {
                        me.v1_remove_entry(&e).await;
                    }
                    if let Some(w) = workspace {
                        let _ = std::fs::remove_dir_all(w);
                    }
                    settle(None, None);
                }
                _ => settle(Some(Status::Failed), None),
            }
        });
        answer
    }

    /// Remove an sbx sandbox as its own DELETE route does (under the name's claim, waiting for one under way).
    async fn v1_remove_entry(&self, e: &Arc<SbxEntry>) {
        let key = format!("sbx:{}", e.name);
        let _claim = loop {
            if let Some(c) = self.sbx_claim(&key, Work::Removing) {
                break c;
            }
            // A stop tears every sandbox down itself.
            if self.shutdown.is_cancelled() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mine = self
            .sandboxes
            .lock()
            .ok()
            .and_then(|mut m| match m.get(&e.name) {
                Some(have) if have.id == e.id => m.remove(&e.name),
                _ => None,
            });
        if let Some(e) = mine {
            e.teardown(&self.proxy).await;
        }
    }

    /// Bind `<root>/ep/<uid>.sock` and serve it with the sandbox endpoint service until the sandbox goes (or
    /// LocalSandboxd stops).
    fn v1_bind_endpoint(
        self: &Arc<Self>,
        e: &SbxEntry,
    ) -> crate::core::error::Result<Arc<EndpointServer>> {
        let dir = self.root.join(ENDPOINT_DIR);
        make_private_dir(&dir)?;
        let path = dir.join(format!("{}.sock", e.id));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|err| Error::internal(format!("binding {}: {err}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|err| Error::internal(format!("chmod {}: {err}", path.display())))?;
        let env = e.secret_env.lock().map(|s| s.clone()).unwrap_or_default();
        let stop = self.shutdown.child_token();
        let server = Arc::new(EndpointServer {
            ep: Mutex::new(Endpoint::new(e.container.clone(), env.clone())),
            container: e.container.clone(),
            env,
            path,
            stop: stop.clone(),
        });
        let served = server.clone();
        let tasks = self.tasks.clone();
        self.tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let Some(ep) = served.current() else { break };
                let stop = stop.clone();
                tasks.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ep = ep.clone();
                        async move { Ok::<_, std::convert::Infallible>(ep.route(req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades();
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = stop.cancelled() => {}
                    }
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                });
            }
            // LocalSandboxd stopping (or the sandbox removed): no new connections, then every interact session
            // ends with `unavailable` before the container goes, so no client reads an exit made up here.
            drop(listener);
            if let Some(ep) = served.current() {
                ep.shutdown().await;
            }
        });
        Ok(server)
    }
}
