//! `doctor`: what the SDK finds on this machine, as a report a user can attach to a bug.
//!
//! It walks the sbx discovery candidates in order and says what happened at each; for the one the SDK would
//! connect to it reads `/daemon/health` and `/daemon/info`, applies the version gate in both modes, and probes
//! every route the SDK uses with `OPTIONS` (the daemon's router, Echo, answers a matched route with an `Allow`
//! header and an unmatched one with 404 without it: sbx-api.md §4.7). It also asks whether the legacy `/vm` API
//! answers, and ends with what the SDK would use: the backend the SDK's own `Sandboxes.connect()` auto-detection
//! returns (run for real, so the report cannot disagree with it).
//!
//! It never fails: every problem is a fact in the report. Each probe has a short deadline of its own, and the
//! whole run is bounded by the caller's [`Call`]; probes that no longer fit are reported as skipped.

use crate::core::backend::SandboxBackend;
use crate::core::call::Call;
use crate::core::sandboxd::SandboxdClient;
use crate::core::sandboxes;
use crate::core::sbx::discovery::{self, DiscoveryEnv, Endpoint, Os};
use crate::core::sbx::{
    check_version, parse_api_version, DaemonHealth, VersionMode, LENIENT_API, TESTED_API,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default deadline of one probe: a local daemon answers in milliseconds; a hung one must not stall the report.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default deadline of the whole run when the caller gives none.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest body read from one probe (health and info are small; anything bigger is not the daemon's JSON).
const PROBE_BODY_LIMIT: usize = 256 * 1024;
/// The sandbox name used in per-sandbox route probes. `_` is outside the hostname rules every sbx sandbox name
/// follows, so no sandbox of this name can exist and no probe can touch a real one.
pub const PLACEHOLDER_SANDBOX: &str = "sandboxd-doctor_absent";
/// The exec id used in exec-state probes (not 64 hex digits, so never a real exec id).
pub const PLACEHOLDER_EXEC: &str = "doctor-absent-exec";

/// What to examine.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// A socket path (or `\\.\pipe\…`): the only sbx candidate when set, and also probed for the legacy `/vm` API.
    pub socket_path: Option<String>,
    /// The sbx app name (`sbx --app-name`).
    pub app_name: Option<String>,
    /// Deadline of each probe (default [`DEFAULT_PROBE_TIMEOUT`]); the caller's [`Call`] bounds the whole run.
    pub timeout: Option<Duration>,
}

/// The whole report (JSON: camelCase).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// This SDK's version.
    pub sdk_version: String,
    /// The OS, in Node's names (`linux`, `darwin`, `win32`).
    pub platform: String,
    /// The CPU architecture, in Node's names (`x64`, `arm64`).
    pub arch: String,
    /// Where the candidate list came from: `socketPath option`, `DOCKER_SANDBOXES_API` or `defaults`.
    pub discovery: String,
    /// Every sbx candidate, in discovery order, with what happened.
    pub candidates: Vec<Candidate>,
    /// The sbx endpoint the SDK's discovery stops at (the first that answered at all), examined in detail.
    pub daemon: Option<DaemonReport>,
    /// The legacy `/vm` API: on the examined sbx endpoint and on the socket the desktop backend uses.
    pub legacy: Vec<LegacyProbe>,
    /// What `Sandboxes.connect()` returns with default options (run for real, not inferred).
    pub sdk_would_use: Choice,
    /// Whether the SDK would find a backend it can use.
    pub ok: bool,
    /// Things worth knowing that fit nowhere else (probes skipped by the deadline, …).
    pub notes: Vec<String>,
    /// How long the run took, in milliseconds.
    pub elapsed_ms: u64,
}

/// What happened at one endpoint.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Nothing at that path.
    Missing,
    /// The path exists but is not a socket.
    NotSocket,
    /// A socket nobody listens on (ECONNREFUSED).
    Refused,
    /// The socket exists but this user may not connect (EACCES/EPERM).
    PermissionDenied,
    /// Connected, but no HTTP answer came within the probe's deadline.
    Timeout,
    /// Connected, but the exchange broke (not HTTP, closed early, …).
    BrokenExchange,
    /// Connecting failed otherwise (see `detail`).
    ConnectError,
    /// An HTTP answer came (see `httpStatus`).
    Answered,
    /// Not probed: the run's deadline passed or it was aborted.
    Skipped,
}

/// One sbx discovery candidate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// The socket path or pipe name.
    pub endpoint: String,
    /// `unix` or `pipe`.
    pub transport: &'static str,
    /// What happened when `GET /daemon/health` was sent there.
    pub outcome: Outcome,
    /// The HTTP status of the health answer, when one came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The error or answer in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Whether this is where the SDK's discovery stops (the first candidate that answered at all).
    pub selected: bool,
}

/// The version gate's verdict in one mode.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateVerdict {
    /// `strict` or `lenient`.
    pub mode: &'static str,
    /// The accepted `api_version` range, e.g. `>=0.26.0 <0.27.0`.
    pub range: String,
    /// Whether the daemon passes.
    pub ok: bool,
    /// The SDK's error message when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The answer to a JSON `GET`: status and body, or what went wrong.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonAnswer {
    /// The HTTP status, when an answer came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The body as JSON, every field kept (`null` when it was not JSON).
    pub body: Value,
    /// What was wrong with the answer, if anything (transport error, non-2xx, not JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a route answered `OPTIONS`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RouteVerdict {
    /// Answered with an `Allow` header: the daemon's router knows the route.
    Served,
    /// 404 without `Allow`: on the daemon's router (Echo) this means the route does not exist.
    NotServed,
    /// Answered, but not in a way that says whether the route exists (`OPTIONS` not supported there).
    NoOptionsAnswer,
    /// No HTTP answer (timeout, broken exchange).
    Failed,
    /// Not probed: the run's deadline passed or it was aborted.
    Skipped,
}

/// One route the SDK uses, probed with `OPTIONS`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteProbe {
    /// The route as the API describes it (`/sandbox/{name}/start`).
    pub route: &'static str,
    /// The path probed (placeholders filled in).
    pub path: String,
    /// The methods the SDK sends to it.
    pub methods: Vec<&'static str>,
    /// What the probe says.
    pub verdict: RouteVerdict,
    /// The HTTP status of the `OPTIONS` answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The methods the `Allow` header lists (absent when there was no header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Methods the SDK sends that `Allow` does not list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_methods: Vec<&'static str>,
    /// The error or odd answer in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The sbx daemon the SDK's discovery stops at.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonReport {
    /// Its socket path or pipe name.
    pub endpoint: String,
    /// `GET /daemon/health` as answered.
    pub health: JsonAnswer,
    /// The daemon's `version`, if it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The daemon's `api_version`, if it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The version gate in strict mode ([`TESTED_API`]).
    pub strict: GateVerdict,
    /// The version gate in lenient mode ([`LENIENT_API`], the SDK's default).
    pub lenient: GateVerdict,
    /// `GET /daemon/info` as answered (`api_socket`, `docker_socket`, and any field the daemon adds).
    pub info: JsonAnswer,
    /// The sandbox name used in per-sandbox route probes (one that cannot exist).
    pub placeholder_sandbox: &'static str,
    /// Every route the SDK uses, probed with `OPTIONS`.
    pub routes: Vec<RouteProbe>,
}

/// The legacy `/vm` API at one socket.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyProbe {
    /// The socket path.
    pub endpoint: String,
    /// `desktop` for the socket the desktop backend uses (the explicit socket, else `SANDBOXD_SOCKET`, else
    /// `~/.docker/sandboxes/sandboxd.sock`); `sbx` for the examined sbx endpoint when that is another socket.
    pub role: &'static str,
    /// Whether `GET /vm` answered as the contract says.
    pub answers: bool,
    /// How many VMs it listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_count: Option<usize>,
    /// The SDK's error code when it did not answer (`ERR_SANDBOXD_UNAVAILABLE`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The SDK's error message when it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The backend `Sandboxes.connect()` picks with default options (and this run's socket and app name).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Choice {
    /// `sbx`, `desktop` (the legacy `/vm` API) or `none` (connect rejects).
    pub backend: &'static str,
    /// The socket it talks to (or the one its error names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// The error code connect rejects with, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Why: connect's own error message when it rejects.
    pub reason: String,
}

/// How the SDK connects: [`sandboxes::connect`] for real, a stand-in in tests.
pub type ConnectFn = for<'a> fn(
    &'a sandboxes::ConnectOptions,
    &'a Call,
) -> BoxFuture<'a, crate::core::Result<Arc<dyn SandboxBackend>>>;

/// The SDK's own auto-detection.
fn sdk_connect<'a>(
    o: &'a sandboxes::ConnectOptions,
    call: &'a Call,
) -> BoxFuture<'a, crate::core::Result<Arc<dyn SandboxBackend>>> {
    Box::pin(sandboxes::connect(o, call))
}

/// One route the SDK uses: its template, the methods sent to it, and the path probed.
struct RouteSpec {
    route: &'static str,
    methods: &'static [&'static str],
}

/// The sbx routes the SDK sends requests to (sbx-api.md §4.4), in the order the API lists them.
const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        route: "/daemon/health",
        methods: &["GET"],
    },
    RouteSpec {
        route: "/daemon/info",
        methods: &["GET"],
    },
    RouteSpec {
        route: "/sandbox",
        methods: &["GET", "POST"],
    },
    RouteSpec {
        route: "/sandbox/{name}",
        methods: &["GET", "DELETE"],
    },
    RouteSpec {
        route: "/sandbox/{name}/start",
        methods: &["POST"],
    },
    RouteSpec {
        route: "/sandbox/{name}/stop",
        methods: &["POST"],
    },
    RouteSpec {
        route: "/sandbox/{name}/exec/attach",
        methods: &["POST"],
    },
    RouteSpec {
        route: "/sandbox/{name}/exec/{id}",
        methods: &["GET"],
    },
    RouteSpec {
        route: "/sandbox/{name}/exec/{id}/resize",
        methods: &["POST"],
    },
    RouteSpec {
        route: "/sandbox/{name}/files",
        methods: &["GET", "PUT"],
    },
    RouteSpec {
        route: "/sandbox/{name}/ports",
        methods: &["GET", "POST"],
    },
    RouteSpec {
        route: "/sandbox/{name}/ports/unpublish",
        methods: &["POST"],
    },
    RouteSpec {
        route: "/sandbox/{name}/save",
        methods: &["POST"],
    },
];

/// The path probed for a route template.
fn fill(route: &str) -> String {
    route
        .replace("{name}", PLACEHOLDER_SANDBOX)
        .replace("{id}", PLACEHOLDER_EXEC)
}

/// Node's name for this OS (`process.platform`).
pub fn node_platform(os: &str) -> String {
    match os {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
    .to_string()
}

/// Node's name for this CPU (`process.arch`).
pub fn node_arch(arch: &str) -> String {
    match arch {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        "powerpc64" => "ppc64",
        other => other,
    }
    .to_string()
}

/// The methods an `Allow` header lists (`OPTIONS, GET, POST` → `["OPTIONS","GET","POST"]`).
pub fn parse_allow(v: &str) -> Vec<String> {
    v.split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect()
}

/// An HTTP answer to a probe.
#[derive(Debug)]
struct Answer {
    status: u16,
    allow: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

/// Why a probe got no HTTP answer.
#[derive(Debug)]
enum Fail {
    /// Connecting failed.
    Connect(std::io::Error),
    /// Connected, but the HTTP exchange broke.
    Exchange(String),
    /// No answer within the probe's deadline.
    Timeout(Duration),
    /// The run's deadline passed or it was aborted before the probe could run.
    Skipped,
}

impl Fail {
    fn outcome(&self) -> Outcome {
        match self {
            Fail::Connect(e) => connect_outcome(e),
            Fail::Exchange(_) => Outcome::BrokenExchange,
            Fail::Timeout(_) => Outcome::Timeout,
            Fail::Skipped => Outcome::Skipped,
        }
    }

    fn detail(&self) -> String {
        match self {
            Fail::Connect(e) => e.to_string(),
            Fail::Exchange(s) => s.clone(),
            Fail::Timeout(d) => format!("no answer within {} ms", d.as_millis()),
            Fail::Skipped => "not probed: the run's deadline passed or it was aborted".into(),
        }
    }
}

/// The outcome a connect error means.
fn connect_outcome(e: &std::io::Error) -> Outcome {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => Outcome::Missing,
        K::ConnectionRefused => Outcome::Refused,
        K::PermissionDenied => Outcome::PermissionDenied,
        _ => Outcome::ConnectError,
    }
}

/// The run's budget: each probe gets the smaller of its own deadline and what is left.
struct Budget<'a> {
    call: &'a Call,
    end: Instant,
    probe: Duration,
}

impl Budget<'_> {
    /// The deadline of the next probe, or `None` when the run is out of time or aborted.
    fn next(&self) -> Option<Duration> {
        if self.call.cancel.is_cancelled() {
            return None;
        }
        let left = self.end.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| left.min(self.probe))
    }
}

/// Send one request on a fresh connection and read the answer, within the budget.
async fn probe(
    budget: &Budget<'_>,
    ep: &Endpoint,
    method: Method,
    path: &str,
) -> Result<Answer, Fail> {
    let Some(limit) = budget.next() else {
        return Err(Fail::Skipped);
    };
    let exchange = async {
        let io = discovery::connect(ep).await.map_err(Fail::Connect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| Fail::Exchange(crate::core::error::chain_message(&e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header("Accept", "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| Fail::Exchange(e.to_string()))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| Fail::Exchange(crate::core::error::chain_message(&e)))?;
        let header = |name: hyper::header::HeaderName| {
            res.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let status = res.status().as_u16();
        let allow = header(hyper::header::ALLOW);
        let content_type = header(hyper::header::CONTENT_TYPE);
        let body = Limited::new(res.into_body(), PROBE_BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| Fail::Exchange(format!("HTTP {status}, then the body failed: {e}")))?
            .to_bytes();
        Ok(Answer {
            status,
            allow,
            content_type,
            body,
        })
    };
    tokio::select! {
        r = exchange => r,
        _ = budget.call.cancel.cancelled() => Err(Fail::Skipped),
        _ = tokio::time::sleep(limit) => Err(Fail::Timeout(limit)),
    }
}

/// A short, printable excerpt of a body.
fn excerpt(body: &[u8]) -> String {
    crate::core::error::excerpt(body).trim().to_string()
}

/// A JSON `GET` answer: the body kept as JSON, and what was wrong with it.
fn json_answer(what: &str, r: Result<Answer, Fail>) -> JsonAnswer {
    match r {
        Err(f) => JsonAnswer {
            http_status: None,
            body: Value::Null,
            error: Some(f.detail()),
        },
        Ok(a) => {
            let parsed = serde_json::from_slice::<Value>(&a.body).ok();
            let error = if !(200..300).contains(&a.status) {
                Some(format!(
                    "{what} answered HTTP {}: {}",
                    a.status,
                    excerpt(&a.body)
                ))
            } else if parsed.is_none() {
                let ct = a.content_type.as_deref().unwrap_or("none");
                Some(format!(
                    "{what} did not answer JSON (Content-Type {ct}): {}",
                    excerpt(&a.body)
                ))
            } else if !parsed.as_ref().is_some_and(Value::is_object) {
                Some(format!("{what} answered JSON that is not an object"))
            } else {
                None
            };
            JsonAnswer {
                http_status: Some(a.status),
                body: parsed.unwrap_or(Value::Null),
                error,
            }
        }
    }
}

/// The version gate's verdicts on a health answer (`None`: no usable answer).
fn gate(health: Option<&DaemonHealth>) -> (GateVerdict, GateVerdict) {
    let one = |mode: VersionMode, name: &'static str, range: String| {
        let (ok, message) = match health {
            None => (false, Some("no health answer to check".to_string())),
            Some(h) => match check_version(h, mode) {
                Ok(()) => (true, None),
                Err(e) => (false, Some(e.message)),
            },
        };
        GateVerdict {
            mode: name,
            range,
            ok,
            message,
        }
    };
    (
        one(VersionMode::Strict, "strict", TESTED_API.to_string()),
        one(VersionMode::Lenient, "lenient", LENIENT_API.to_string()),
    )
}

/// What an `OPTIONS` answer says about a route.
fn route_probe(spec: &RouteSpec, r: Result<Answer, Fail>) -> RouteProbe {
    let mut p = RouteProbe {
        route: spec.route,
        path: fill(spec.route),
        methods: spec.methods.to_vec(),
        verdict: RouteVerdict::Failed,
        http_status: None,
        allow: None,
        missing_methods: Vec::new(),
        detail: None,
    };
    match r {
        Err(Fail::Skipped) => {
            p.verdict = RouteVerdict::Skipped;
            p.detail = Some(Fail::Skipped.detail());
        }
        Err(f) => p.detail = Some(f.detail()),
        Ok(a) => {
            p.http_status = Some(a.status);
            match a.allow.as_deref().map(parse_allow) {
                Some(allow) => {
                    p.verdict = RouteVerdict::Served;
                    p.missing_methods = spec
                        .methods
                        .iter()
                        .copied()
                        .filter(|m| !allow.iter().any(|a| a == m))
                        .collect();
                    p.allow = Some(allow);
                }
                None if a.status == 404 => {
                    p.verdict = RouteVerdict::NotServed;
                    p.detail = Some(format!("404 without Allow: {}", excerpt(&a.body)));
                }
                None => {
                    p.verdict = RouteVerdict::NoOptionsAnswer;
                    p.detail = Some(format!(
                        "HTTP {} without an Allow header, so OPTIONS does not say whether the route exists: {}",
                        a.status,
                        excerpt(&a.body)
                    ));
                }
            }
        }
    }
    p
}

/// Probe the legacy `/vm` API at `path`.
async fn legacy_probe(budget: &Budget<'_>, path: &str, role: &'static str) -> LegacyProbe {
    let mut p = LegacyProbe {
        endpoint: path.to_string(),
        role,
        answers: false,
        vm_count: None,
        error_code: None,
        detail: None,
    };
    let Some(limit) = budget.next() else {
        p.detail = Some(Fail::Skipped.detail());
        return p;
    };
    let client = SandboxdClient::new(Some(path), Some(limit));
    let call = Call::new(Some(limit), budget.call.cancel.child_token());
    match client.list(&call).await {
        Ok(vms) => {
            p.answers = true;
            p.vm_count = Some(vms.len());
        }
        Err(e) => {
            p.error_code = Some(e.code.as_str().to_string());
            p.detail = Some(e.message);
        }
    }
    p
}

/// The report for this machine: discovery from the process environment and this OS, and the SDK's own
/// auto-detection for "what the SDK would use".
pub async fn doctor(opts: &DoctorOptions, call: &Call) -> Report {
    let env = DiscoveryEnv::from_process();
    let explicit = opts.socket_path.as_deref().filter(|s| !s.is_empty());
    // The socket the desktop backend uses: the explicit one, else SANDBOXD_SOCKET, else the legacy default.
    let desktop = crate::core::sandboxd::resolve_socket_path(explicit)
        .display()
        .to_string();
    doctor_with(opts, &env, Os::current(), &desktop, sdk_connect, call).await
}

/// [`doctor`] with the environment, OS, desktop socket and connect function given (tests pass their own).
pub async fn doctor_with(
    opts: &DoctorOptions,
    env: &DiscoveryEnv,
    os: Os,
    desktop_socket: &str,
    connect: ConnectFn,
    call: &Call,
) -> Report {
    let started = Instant::now();
    let budget = Budget {
        call,
        end: started + call.timeout.unwrap_or(DEFAULT_TOTAL_TIMEOUT),
        probe: opts.timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT),
    };
    let explicit = opts.socket_path.as_deref().filter(|s| !s.is_empty());
    let discovery_source = if explicit.is_some() {
        "socketPath option"
    } else if env
        .docker_sandboxes_api
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        "DOCKER_SANDBOXES_API"
    } else {
        "defaults"
    };
    let list = discovery::candidates(explicit, opts.app_name.as_deref(), env, os);

    // Every candidate: what GET /daemon/health did there. Discovery stops at the first that answered at all.
    let mut candidates = Vec::new();
    let mut health_of_selected = None;
    for ep in &list {
        let mut c = Candidate {
            endpoint: ep.to_string(),
            transport: match ep {
                Endpoint::Unix(_) => "unix",
                Endpoint::Pipe(_) => "pipe",
            },
            outcome: Outcome::Skipped,
            http_status: None,
            detail: None,
            selected: false,
        };
        if let Some(pre) = precheck(ep) {
            c.outcome = pre;
            candidates.push(c);
            continue;
        }
        match probe(&budget, ep, Method::GET, "/daemon/health").await {
            Ok(a) => {
                c.outcome = Outcome::Answered;
                c.http_status = Some(a.status);
                if health_of_selected.is_none() {
                    c.selected = true;
                    health_of_selected = Some((ep.clone(), Ok(a)));
                }
            }
            Err(f) => {
                c.outcome = f.outcome();
                c.detail = Some(f.detail());
                // A connected socket that then timed out or broke off still stops the SDK's discovery.
                let decisive = matches!(c.outcome, Outcome::Timeout | Outcome::BrokenExchange);
                if decisive && health_of_selected.is_none() {
                    c.selected = true;
                    health_of_selected = Some((ep.clone(), Err(f)));
                }
            }
        }
        candidates.push(c);
    }

    let mut notes = Vec::new();
    let mut daemon = None;
    if let Some((ep, health)) = health_of_selected {
        let health = json_answer("GET /daemon/health", health);
        let parsed: Option<DaemonHealth> = health
            .error
            .is_none()
            .then(|| serde_json::from_value(health.body.clone()).ok())
            .flatten();
        let field = |k: &str| {
            health
                .body
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (strict, lenient) = gate(parsed.as_ref());
        let info = json_answer(
            "GET /daemon/info",
            probe(&budget, &ep, Method::GET, "/daemon/info").await,
        );
        let mut routes = Vec::new();
        for spec in ROUTES {
            let r = probe(&budget, &ep, Method::OPTIONS, &fill(spec.route)).await;
            routes.push(route_probe(spec, r));
        }
        if let (Some(v), None) = (field("api_version"), &health.error) {
            if parse_api_version(&v).is_none() {
                notes.push(format!(
                    "the daemon's api_version {v:?} is not a version number"
                ));
            }
        }
        daemon = Some(DaemonReport {
            endpoint: ep.to_string(),
            version: field("version"),
            api_version: field("api_version"),
            health,
            strict,
            lenient,
            info,
            placeholder_sandbox: PLACEHOLDER_SANDBOX,
            routes,
        });
    }

    // The legacy /vm API: on the examined sbx endpoint (LocalSandboxd serves both there) and on the socket the
    // desktop backend uses. The legacy client speaks over Unix sockets only.
    let mut legacy = Vec::new();
    let is_pipe = |s: &str| s.starts_with(r"\\.\pipe\") || s.starts_with("//./pipe/");
    if let Some(d) = daemon
        .as_ref()
        .filter(|d| d.endpoint != desktop_socket && !is_pipe(&d.endpoint))
    {
        legacy.push(legacy_probe(&budget, &d.endpoint, "sbx").await);
    }
    legacy.push(legacy_probe(&budget, desktop_socket, "desktop").await);

    let sdk_would_use = sdk_choice(&budget, opts, connect).await;
    if call.cancel.is_cancelled() {
        notes.push("aborted: probes after the abort are marked skipped".into());
    } else if Instant::now() >= budget.end {
        notes.push("the run's deadline passed: probes after it are marked skipped".into());
    }
    Report {
        sdk_version: env!("CARGO_PKG_VERSION").to_string(),
        platform: node_platform(std::env::consts::OS),
        arch: node_arch(std::env::consts::ARCH),
        discovery: discovery_source.to_string(),
        candidates,
        daemon,
        legacy,
        ok: sdk_would_use.backend != "none",
        sdk_would_use,
        notes,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// What a Unix path is before connecting: `Some` when there is nothing to connect to.
fn precheck(ep: &Endpoint) -> Option<Outcome> {
    let Endpoint::Unix(p) = ep else {
        return None;
    };
    match std::fs::metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Some(Outcome::PermissionDenied)
        }
        Err(_) => Some(Outcome::Missing),
        Ok(m) if !crate::core::socket::is_socket(&m) => Some(Outcome::NotSocket),
        Ok(_) => None,
    }
}

/// What `Sandboxes.connect()` does with default options: the backend it returns, or the error it rejects with.
async fn sdk_choice(budget: &Budget<'_>, opts: &DoctorOptions, connect: ConnectFn) -> Choice {
    let none = |reason: String, code: Option<String>, socket: Option<String>| Choice {
        backend: "none",
        socket_path: socket,
        error_code: code,
        reason,
    };
    let Some(limit) = budget.next() else {
        return none(Fail::Skipped.detail(), None, None);
    };
    let o = sandboxes::ConnectOptions {
        socket_path: opts.socket_path.clone().filter(|s| !s.is_empty()),
        app_name: opts.app_name.clone(),
        timeout: Some(budget.probe),
        ..Default::default()
    };
    let call = Call::new(Some(limit), budget.call.cancel.child_token());
    // connect may try both backends: it gets the rest of the run, each of its requests one probe's deadline.
    match tokio::time::timeout(limit, connect(&o, &call)).await {
        Err(_) => none(
            format!(
                "Sandboxes.connect() did not finish within {} ms",
                limit.as_millis()
            ),
            Some("ERR_TIMEOUT".into()),
            None,
        ),
        Ok(Ok(b)) => Choice {
            backend: b.kind(),
            socket_path: Some(b.socket()),
            error_code: None,
            reason: format!(
                "Sandboxes.connect() with default options returns the {} backend",
                b.kind()
            ),
        },
        Ok(Err(e)) => {
            let socket = e
                .props
                .get("socketPath")
                .and_then(Value::as_str)
                .map(str::to_string);
            none(
                format!("Sandboxes.connect() rejects: {}", e.message),
                Some(e.code.as_str().to_string()),
                socket,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    fn answer(status: u16, allow: Option<&str>, body: &str) -> Answer {
        Answer {
            status,
            allow: allow.map(str::to_string),
            content_type: Some("application/json".into()),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn node_names_and_allow_parsing() {
        assert_eq!(node_platform("macos"), "darwin");
        assert_eq!(node_platform("windows"), "win32");
        assert_eq!(node_platform("linux"), "linux");
        assert_eq!(node_arch("x86_64"), "x64");
        assert_eq!(node_arch("aarch64"), "arm64");
        assert_eq!(
            parse_allow("OPTIONS, get,POST ,"),
            ["OPTIONS", "GET", "POST"]
        );
        assert_eq!(
            fill("/sandbox/{name}/exec/{id}"),
            format!("/sandbox/{PLACEHOLDER_SANDBOX}/exec/{PLACEHOLDER_EXEC}")
        );
        // The placeholder can never name a real sandbox.
        assert!(crate::core::sbx::validate_sandbox_name(PLACEHOLDER_SANDBOX).is_err());
    }

    #[test]
    fn route_verdicts_report_what_options_said_and_nothing_more() {
        let files = &ROUTES[9];
        assert_eq!(files.route, "/sandbox/{name}/files");
        let p = route_probe(files, Ok(answer(204, Some("OPTIONS, GET, PUT"), "")));
        assert_eq!(p.verdict, RouteVerdict::Served);
        assert!(p.missing_methods.is_empty());
        let p = route_probe(files, Ok(answer(204, Some("OPTIONS, GET"), "")));
        assert_eq!(p.verdict, RouteVerdict::Served);
        assert_eq!(p.missing_methods, ["PUT"]);
        let p = route_probe(files, Ok(answer(404, None, r#"{"message":"Not Found"}"#)));
        assert_eq!(p.verdict, RouteVerdict::NotServed);
        let p = route_probe(files, Ok(answer(405, None, "nope")));
        assert_eq!(p.verdict, RouteVerdict::NoOptionsAnswer);
        assert_eq!(p.http_status, Some(405));
        assert!(p
            .detail
            .unwrap()
            .contains("does not say whether the route exists"));
        let p = route_probe(files, Err(Fail::Timeout(Duration::from_millis(5))));
        assert_eq!(p.verdict, RouteVerdict::Failed);
        let p = route_probe(files, Err(Fail::Skipped));
        assert_eq!(p.verdict, RouteVerdict::Skipped);
    }

    #[test]
    fn gate_in_both_modes_and_json_answers() {
        let h = |api: &str| DaemonHealth {
            version: "v0.40.0".into(),
            api_version: api.into(),
            ..Default::default()
        };
        let (s, l) = gate(Some(&h("0.26.3")));
        assert!(s.ok && l.ok);
        assert_eq!(s.range, ">=0.26.0 <0.27.0");
        let (s, l) = gate(Some(&h("0.31.0")));
        assert!(!s.ok && l.ok);
        assert!(s.message.unwrap().contains("0.31.0"));
        let (s, l) = gate(Some(&h("1.2.0")));
        assert!(!s.ok && !l.ok);
        let (s, l) = gate(None);
        assert!(!s.ok && !l.ok);

        let a = json_answer(
            "GET /x",
            Ok(answer(200, None, r#"{"a":1,"new_field":[2]}"#)),
        );
        assert!(a.error.is_none());
        assert_eq!(a.body["new_field"][0], 2);
        let mut html = answer(200, None, "<html>hi</html>");
        html.content_type = Some("text/html".into());
        let a = json_answer("GET /x", Ok(html));
        assert!(a.error.unwrap().contains("Content-Type text/html"));
        assert_eq!(a.body, Value::Null);
        let a = json_answer(
            "GET /x",
            Ok(answer(401, None, r#"{"message":"no valid user session"}"#)),
        );
        assert_eq!(a.http_status, Some(401));
        assert!(a.error.unwrap().contains("HTTP 401"));
    }

    /// A stand-in for the SDK's connect that finds nothing.
    fn finds_nothing<'a>(
        _: &'a sandboxes::ConnectOptions,
        _: &'a Call,
    ) -> BoxFuture<'a, crate::core::Result<Arc<dyn SandboxBackend>>> {
        Box::pin(async {
            Err(crate::core::Error::new(
                crate::core::ErrorCode::SandboxdUnavailable,
                "no sandbox daemon answers",
            )
            .with("socketPath", "/nowhere.sock"))
        })
    }

    /// A fake daemon on a Unix socket: answers every request with `reply(method, path)` as raw HTTP bytes, or
    /// holds the connection open without answering when it returns `None`.
    fn fake(
        dir: &std::path::Path,
        reply: impl Fn(&str, &str) -> Option<String> + Send + Sync + 'static,
    ) -> PathBuf {
        let path = dir.join("fake.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let reply = std::sync::Arc::new(reply);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let mut first = head.lines().next().unwrap_or("").split(' ');
                    let (m, p) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
                    match reply(m, p) {
                        Some(r) => {
                            let _ = s.write_all(r.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        path
    }

    fn http(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn env(home: &std::path::Path) -> DiscoveryEnv {
        DiscoveryEnv {
            home: Some(home.to_path_buf()),
            ..Default::default()
        }
    }

    fn quick() -> DoctorOptions {
        DoctorOptions {
            timeout: Some(Duration::from_millis(300)),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_default_candidate_is_listed_with_what_happened() {
        let home = tempfile::tempdir().unwrap();
        // A regular file where the state-dir socket would be; a dead socket at the first short symlink path.
        let state = home
            .path()
            .join(".local/state/sandboxes/sandboxes/sandboxd");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("sandboxd.sock"), b"").unwrap();
        let run = home.path().join(".sbx/run/d");
        std::fs::create_dir_all(&run).unwrap();
        drop(std::os::unix::net::UnixListener::bind(run.join("sandboxd.sock")).unwrap());
        let legacy = home.path().join("legacy.sock");
        let r = doctor_with(
            &quick(),
            &env(home.path()),
            Os::Linux,
            legacy.to_str().unwrap(),
            finds_nothing,
            &Call::default(),
        )
        .await;
        let got: Vec<(String, Outcome)> = r
            .candidates
            .iter()
            .map(|c| {
                (
                    c.endpoint.replace(home.path().to_str().unwrap(), "~"),
                    c.outcome,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "~/.local/state/sandboxes/sandboxes/sandboxd/sandboxd.sock".to_string(),
                    Outcome::NotSocket
                ),
                (
                    "~/.local/share/com.docker.sandboxes/sandboxes/sandboxd/sandboxd.sock"
                        .to_string(),
                    Outcome::Missing
                ),
                ("~/.sbx/run/d/sandboxd.sock".to_string(), Outcome::Refused),
                ("~/.sbx/run/sandboxd.sock".to_string(), Outcome::Missing),
            ]
        );
        assert_eq!(r.discovery, "defaults");
        assert!(r.daemon.is_none());
        assert_eq!(r.legacy.len(), 1);
        assert_eq!(r.legacy[0].role, "desktop");
        assert_eq!(
            r.legacy[0].error_code.as_deref(),
            Some("ERR_SANDBOXD_UNAVAILABLE")
        );
        assert_eq!(r.sdk_would_use.backend, "none");
        assert_eq!(
            r.sdk_would_use.error_code.as_deref(),
            Some("ERR_SANDBOXD_UNAVAILABLE")
        );
        assert_eq!(
            r.sdk_would_use.socket_path.as_deref(),
            Some("/nowhere.sock")
        );
        assert!(!r.ok);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["candidates"][2]["outcome"], "refused");
        assert_eq!(json["sdkWouldUse"]["backend"], "none");
    }

    #[tokio::test]
    async fn a_conforming_daemon_is_examined_route_by_route() {
        let dir = tempfile::tempdir().unwrap();
        let sock = fake(dir.path(), |m, p| {
            Some(match (m, p) {
                ("GET", "/daemon/health") => http(
                    "200 OK",
                    "Content-Type: application/json\r\n",
                    r#"{"status":"ok","version":"v0.38.0","api_version":"0.26.0","runtime":"x"}"#,
                ),
                ("GET", "/daemon/info") => http(
                    "200 OK",
                    "Content-Type: application/json\r\n",
                    r#"{"api_socket":"/a.sock","docker_socket":"/d.sock","extra":true}"#,
                ),
                ("OPTIONS", p) if p.ends_with("/save") => {
                    http("404 Not Found", "", r#"{"message":"Not Found"}"#)
                }
                ("OPTIONS", _) => http(
                    "204 No Content",
                    "Allow: OPTIONS, GET, POST, PUT, DELETE\r\n",
                    "",
                ),
                ("GET", "/vm") => http("404 Not Found", "", r#"{"message":"Not Found"}"#),
                _ => http("500 Oops", "", ""),
            })
        });
        let mut o = quick();
        o.socket_path = Some(sock.display().to_string());
        // As in doctor(): with an explicit socket, the desktop backend uses that socket too.
        let r = doctor_with(
            &o,
            &env(dir.path()),
            Os::Linux,
            sock.to_str().unwrap(),
            sdk_connect,
            &Call::default(),
        )
        .await;
        assert_eq!(r.discovery, "socketPath option");
        assert_eq!(r.candidates.len(), 1);
        assert!(r.candidates[0].selected);
        let d = r.daemon.as_ref().unwrap();
        assert_eq!(d.version.as_deref(), Some("v0.38.0"));
        assert_eq!(d.api_version.as_deref(), Some("0.26.0"));
        assert!(d.strict.ok && d.lenient.ok);
        assert_eq!(d.health.body["runtime"], "x");
        assert_eq!(d.info.body["docker_socket"], "/d.sock");
        assert_eq!(d.info.body["extra"], true);
        assert_eq!(d.routes.len(), ROUTES.len());
        for route in &d.routes {
            let want = if route.route.ends_with("/save") {
                RouteVerdict::NotServed
            } else {
                RouteVerdict::Served
            };
            assert_eq!(route.verdict, want, "{}", route.route);
        }
        // The /vm probe on the same socket says it is not served there; the legacy socket is missing.
        assert_eq!(r.legacy.len(), 1);
        assert_eq!((r.legacy[0].role, r.legacy[0].answers), ("desktop", false));
        assert_eq!(r.sdk_would_use.backend, "sbx");
        assert_eq!(
            r.sdk_would_use.socket_path.as_deref(),
            Some(sock.to_str().unwrap())
        );
        assert!(r.ok);
    }

    #[tokio::test]
    async fn html_and_silence_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let sock = fake(dir.path(), |_, _| {
            Some(http(
                "200 OK",
                "Content-Type: text/html\r\n",
                "<html><body>hello</body></html>",
            ))
        });
        let mut o = quick();
        o.socket_path = Some(sock.display().to_string());
        let r = doctor_with(
            &o,
            &env(dir.path()),
            Os::Linux,
            sock.to_str().unwrap(),
            sdk_connect,
            &Call::default(),
        )
        .await;
        let d = r.daemon.as_ref().unwrap();
        assert!(d.health.error.as_deref().unwrap().contains("text/html"));
        assert!(!d.strict.ok && !d.lenient.ok);
        assert!(d
            .routes
            .iter()
            .all(|r| r.verdict == RouteVerdict::NoOptionsAnswer));
        assert_eq!(r.sdk_would_use.backend, "none");
        // The SDK tries the sbx API, then the /vm API on the same socket, and finds neither.
        assert_eq!(
            r.sdk_would_use.error_code.as_deref(),
            Some("ERR_SANDBOXD_UNAVAILABLE")
        );
        assert!(r
            .sdk_would_use
            .reason
            .starts_with("Sandboxes.connect() rejects"));
        assert_eq!(r.legacy.len(), 1);
        assert_eq!(
            r.legacy[0].error_code.as_deref(),
            Some("ERR_SANDBOXD_PROTOCOL")
        );

        let dir2 = tempfile::tempdir().unwrap();
        let mute = fake(dir2.path(), |_, _| None);
        let mut o = quick();
        o.socket_path = Some(mute.display().to_string());
        let call = Call::new(Some(Duration::from_millis(900)), CancellationToken::new());
        let t0 = Instant::now();
        let r = doctor_with(
            &o,
            &env(dir2.path()),
            Os::Linux,
            "/nonexistent/legacy.sock",
            sdk_connect,
            &call,
        )
        .await;
        // Bounded by the run's deadline: later probes are skipped, not waited for.
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(r.candidates[0].outcome, Outcome::Timeout);
        assert!(r.candidates[0].selected);
        let d = r.daemon.as_ref().unwrap();
        assert!(d.routes.iter().any(|r| r.verdict == RouteVerdict::Skipped));
        assert!(r.notes.iter().any(|n| n.contains("deadline")));
        assert!(!r.ok);
    }
}
