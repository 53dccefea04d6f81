//! `SbxClient`: discovery, the version gate, lifecycle, files, ports and save over the daemon's REST routes.

use super::discovery::{self, DiscoveryEnv, Endpoint, Os};
use super::wire::{DaemonHealth, DaemonInfo, ExecState, PortBinding, PortSpec, WireSandbox};
use crate::core::backend::{ExecTarget, SandboxBackend, SandboxSpec, SandboxSummary};
use crate::core::call::bounded;
use crate::core::error::{chain_message, excerpt, Error, ErrorCode, Result};
use crate::core::http::encode_segment;
use crate::core::netpolicy::{
    PolicyCheck, PolicyLogEntry, PolicyRule, RuleChange, SecretPlaceholder, SecretSpec,
};
use crate::core::Call;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Method;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default deadline for daemon calls other than create.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for create and ensure: the first create pulls the template image (minutes).
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(900);
/// Largest JSON body read from the daemon.
const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Largest archive read by `files` (as for containers).
const ARCHIVE_LIMIT: usize = crate::core::container::MAX_READ_BYTES;

/// A range of daemon `api_version`s: `min` inclusive, `max` exclusive, as `(major, minor, patch)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub min: (u64, u64, u64),
    pub max: (u64, u64, u64),
}

impl ApiRange {
    /// Whether `v` is in the range.
    pub fn contains(&self, v: (u64, u64, u64)) -> bool {
        v >= self.min && v < self.max
    }
}

impl std::fmt::Display for ApiRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b, c) = self.min;
        let (x, y, z) = self.max;
        write!(f, ">={a}.{b}.{c} <{x}.{y}.{z}")
    }
}

/// The `api_version`s this SDK was tested against: 0.26.x (sbx 0.38, the version the routes in sbx-api.md were
/// observed on) and LocalSandboxd, which reports 0.26.0.
pub const TESTED_API: ApiRange = ApiRange {
    min: (0, 26, 0),
    max: (0, 27, 0),
};
/// What lenient mode accepts: any later 0.x (the routes used here have been stable since 0.26; a 1.0 may not be).
pub const LENIENT_API: ApiRange = ApiRange {
    min: (0, 26, 0),
    max: (1, 0, 0),
};

/// How strictly the daemon's `api_version` is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VersionMode {
    /// Only [`TESTED_API`].
    Strict,
    /// [`LENIENT_API`] (the default): newer 0.x daemons are used; a route they dropped is `ERR_SBX_UNSUPPORTED`.
    #[default]
    Lenient,
    /// No check (for probing tools such as `doctor`).
    Off,
}

/// How to find and check the daemon.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A socket path (or `\\.\pipe\…`): the only candidate when set.
    pub socket_path: Option<String>,
    /// The sbx app name (`sbx --app-name`): a separate daemon instance.
    pub app_name: Option<String>,
    pub version_mode: VersionMode,
    /// Overrides every call's default deadline.
    pub timeout: Option<Duration>,
}

/// How exec's `env` is sent: the daemon's form is an open question (sbx-api.md §9.7), so it is probed.
const ENV_UNKNOWN: u8 = 0;
const ENV_LIST: u8 = 1;
const ENV_MAP: u8 = 2;
/// Whether `PUT /sandbox/{n}/files` works; when the daemon refuses the route, uploads go through exec + tar.
const PUT_UNKNOWN: u8 = 0;
const PUT_OK: u8 = 1;
const PUT_REFUSED: u8 = 2;

/// A complete response.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// The client. Cheap to clone; every request uses a fresh connection (the daemon closes idle ones anyway).
#[derive(Clone)]
pub struct SbxClient {
    pub(crate) endpoint: Endpoint,
    timeout: Option<Duration>,
    pub(crate) env_form: Arc<AtomicU8>,
    put_files: Arc<AtomicU8>,
    /// Which network log route answers (see `policy.rs`).
    pub(super) log_route: Arc<AtomicU8>,
}

/// A sandbox name by the hostname rules the daemon applies: 2–63 of `[A-Za-z0-9.-]`, starting and ending with a
/// letter or digit, no empty label.
pub fn validate_sandbox_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(
            Error::invalid(format!("invalid sandbox name {name:?}: {why}"))
                .with("argument", "name"),
        )
    };
    if name.len() < 2 || name.len() > 63 {
        return bad("must be 2 to 63 characters (a hostname)");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return bad("may contain only letters, digits, '.' and '-'");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return bad("must start and end with a letter or digit");
    }
    if name.contains("..") {
        return bad("must not contain an empty label ('..')");
    }
    Ok(())
}

fn validate_workspace(value: &str, argument: &str) -> Result<()> {
    crate::core::validate::workspace_dir(value).map_err(|e| {
        let msg = e.message.replacen("workspaceDir", argument, 1);
        Error::invalid(msg).with("argument", argument.to_string())
    })
}

fn validate_memory(m: &str) -> Result<()> {
    let digits = m.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && m.len() - digits.len() <= 1
        && digits.parse::<u64>().map(|n| n > 0).unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid memory {m:?}: a positive size such as \"2g\" or \"1024m\""
        ))
        .with("argument", "memory"))
    }
}

/// `"0.26.0"`, `"v0.26"`, `"0.26.0-rc1"` → `(0, 26, 0)`.
pub fn parse_api_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next().unwrap_or("0").parse().ok()?;
    let patch = it.next().unwrap_or("0").parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// Check a health answer against `mode`.
pub fn check_version(health: &DaemonHealth, mode: VersionMode) -> Result<()> {
    let range = match mode {
        VersionMode::Off => return Ok(()),
        VersionMode::Strict => TESTED_API,
        VersionMode::Lenient => LENIENT_API,
    };
    let ok = parse_api_version(&health.api_version).is_some_and(|v| range.contains(v));
    if ok {
        return Ok(());
    }
    let shown = if health.api_version.is_empty() {
        "no api_version".to_string()
    } else {
        format!("api_version {}", health.api_version)
    };
    Err(Error::new(
        ErrorCode::SbxVersionUnsupported,
        format!(
            "the sbx daemon (version {}) reports {shown}; this SDK supports api_version {range} ({} mode). \
             Update the SDK or sbx, or connect with versionMode 'lenient'/'off' at your own risk",
            if health.version.is_empty() { "unknown" } else { &health.version },
            match mode {
                VersionMode::Strict => "strict",
                _ => "lenient",
            }
        ),
    )
    .with("daemonVersion", health.version.clone())
    .with("apiVersion", health.api_version.clone())
    .with("supportedRange", range.to_string()))
}

/// The daemon's `message` (JSON `{"message": …}`), or a bounded excerpt of the body.
pub(crate) fn daemon_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| excerpt(body).trim().to_string())
}

/// Map a non-success answer to a typed error. `sandbox`: the sandbox the call was about, if any.
///
/// The daemon's router (Echo) answers an unmatched route with 404 `{"message":"Not Found"}`; a handler's 404 says
/// what was not found. So the bare message means "this daemon lacks the route" (`ERR_SBX_UNSUPPORTED`).
pub(crate) fn status_error(what: &str, sandbox: Option<&str>, status: u16, body: &[u8]) -> Error {
    let message = daemon_message(body);
    let lower = message.to_ascii_lowercase();
    let (code, text) = match status {
        401 => (
            ErrorCode::SbxNotLoggedIn,
            format!(
                "the sbx daemon refused {what}: it has no valid Docker login ({message}). Run `sbx login` \
                 (headless: `echo \"$DOCKER_PAT\" | sbx login --username <id> --password-stdin`)"
            ),
        ),
        404 if message == "Not Found" || message.is_empty() => (
            ErrorCode::SbxUnsupported,
            format!("this sbx daemon does not serve {what} (HTTP 404 from its router)"),
        ),
        404 if sandbox.is_some() && !lower.contains("path") => (
            ErrorCode::SandboxNotFound,
            format!("no sandbox named {:?} ({message})", sandbox.unwrap_or("")),
        ),
        404 => (ErrorCode::InvalidArgument, format!("{what}: {message}")),
        405 | 501 => (
            ErrorCode::SbxUnsupported,
            format!("this sbx daemon does not support {what} (HTTP {status}: {message})"),
        ),
        409 if lower.contains("not running") || lower.contains("stopped") => (
            ErrorCode::SandboxStopped,
            format!("sandbox {:?} is stopped: {message}", sandbox.unwrap_or("")),
        ),
        409 => (ErrorCode::SandboxConflict, format!("{what}: {message}")),
        503 => (
            ErrorCode::SbxDegraded,
            format!("the sbx daemon is degraded and refused {what}: {message}"),
        ),
        400 | 422 => (
            ErrorCode::InvalidArgument,
            format!("the sbx daemon rejected {what}: {message}"),
        ),
        _ => (
            ErrorCode::SandboxdProtocol,
            format!("the sbx daemon answered {what} with HTTP {status}: {message}"),
        ),
    };
    let mut e = Error::new(code, text)
        .with("status", status)
        .with("daemonMessage", message);
    if let Some(s) = sandbox {
        e = e.with("sandbox", s);
    }
    e
}

pub(super) fn seg(name: &str) -> String {
    encode_segment(name)
}

fn summary(w: WireSandbox, body: &[u8]) -> Result<SandboxSummary> {
    let name = w.name.filter(|n| !n.is_empty()).ok_or_else(|| {
        Error::protocol(
            "a sandbox in the sbx daemon's answer has no name",
            Some(200),
            body,
        )
    })?;
    let id = match w.id {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let labels = w
        .labels
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    Ok(SandboxSummary {
        name,
        id,
        status: w.status.unwrap_or_default(),
        agent: w.agent.unwrap_or_default(),
        workspace: w.workspace.unwrap_or_default(),
        template: w.template.filter(|t| !t.is_empty()),
        labels,
        expires_at: None,
    })
}

pub(super) fn json_of<T: serde::de::DeserializeOwned>(what: &str, res: &Resp) -> Result<T> {
    serde_json::from_slice(&res.body).map_err(|e| {
        let kind = match &res.content_type {
            Some(ct) if !ct.contains("json") => format!(" (Content-Type {ct})"),
            _ => String::new(),
        };
        Error::protocol(
            format!("the sbx daemon's answer to {what} is not the expected JSON{kind}: {e}"),
            Some(res.status),
            &res.body,
        )
    })
}

fn same_dir(a: &str, b: &str) -> bool {
    let norm = |p: &str| {
        std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p.trim_end_matches('/')))
    };
    a == b || norm(a) == norm(b)
}

impl SbxClient {
    /// A client for `endpoint`, without probing it.
    pub fn at(endpoint: Endpoint, timeout: Option<Duration>) -> SbxClient {
        SbxClient {
            endpoint,
            timeout,
            env_form: Arc::new(AtomicU8::new(ENV_UNKNOWN)),
            put_files: Arc::new(AtomicU8::new(PUT_UNKNOWN)),
            log_route: Arc::new(AtomicU8::new(0)),
        }
    }

    /// Find the daemon (see [`discovery`]) and check its `api_version`. Returns the client and the health
    /// answer. Nothing answering is `ERR_SANDBOXD_UNAVAILABLE` with `triedPaths` (each with why it failed).
    pub async fn connect(
        options: &ConnectOptions,
        opts: &Call,
    ) -> Result<(SbxClient, DaemonHealth)> {
        let env = DiscoveryEnv::from_process();
        let list = discovery::candidates(
            options.socket_path.as_deref(),
            options.app_name.as_deref(),
            &env,
            Os::current(),
        );
        Self::connect_to(list, options, opts).await
    }

    /// [`SbxClient::connect`] over a given candidate list.
    pub async fn connect_to(
        candidates: Vec<Endpoint>,
        options: &ConnectOptions,
        opts: &Call,
    ) -> Result<(SbxClient, DaemonHealth)> {
        let mut tried: Vec<String> = Vec::new();
        for ep in candidates {
            #[cfg(unix)]
            if let Endpoint::Unix(p) = &ep {
                use std::os::unix::fs::FileTypeExt;
                match std::fs::metadata(p) {
                    Err(_) => {
                        tried.push(format!("{ep} (no such socket)"));
                        continue;
                    }
                    Ok(m) if !m.file_type().is_socket() => {
                        tried.push(format!("{ep} (not a socket)"));
                        continue;
                    }
                    Ok(_) => {}
                }
            }
            let client = SbxClient::at(ep.clone(), options.timeout);
            match client.health(opts).await {
                Ok(h) => {
                    check_version(&h, options.version_mode)
                        .map_err(|e| e.with("socketPath", ep.to_string()))?;
                    return Ok((client, h));
                }
                Err(e) if e.code == ErrorCode::SandboxdUnavailable => {
                    tried.push(format!(
                        "{ep} ({})",
                        e.props
                            .get("cause")
                            .and_then(|c| c.as_str())
                            .unwrap_or("refused")
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            ErrorCode::SandboxdUnavailable,
            format!(
                "no sbx daemon answers. Tried, in order: {}. Install Docker Sandboxes (`sbx`) and run any `sbx` \
                 command to start its daemon, set DOCKER_SANDBOXES_API, or pass socketPath (LocalSandboxd prints \
                 its own)",
                tried.join("; ")
            ),
        )
        .with("triedPaths", tried))
    }

    /// Where this client sends requests.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn unavailable(&self, cause: &str) -> Error {
        Error::new(
            ErrorCode::SandboxdUnavailable,
            format!(
                "the sbx daemon is not reachable at {} ({cause})",
                self.endpoint
            ),
        )
        .with("socketPath", self.endpoint.to_string())
        .with("cause", cause.to_string())
    }

    /// Send one request on a fresh connection and read the whole answer (at most `limit` bytes of body).
    async fn send(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
        limit: usize,
    ) -> Result<Resp> {
        let io = discovery::connect(&self.endpoint)
            .await
            .map_err(|e| self.unavailable(&e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unavailable(&chain_message(&e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header("Accept", "application/json");
        let payload = match body {
            Some((ct, b)) => {
                req = req.header("Content-Type", ct);
                b
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| Error::invalid(format!("bad request for {what}: {e}")))?;
        let res = sender.send_request(req).await.map_err(|e| {
            Error::protocol(
                format!(
                    "the sbx daemon broke off the exchange for {what}: {}",
                    chain_message(&e)
                ),
                None,
                b"",
            )
        })?;
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(res.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                Error::protocol(
                    format!("the sbx daemon's answer to {what} was cut off: {e}"),
                    Some(status),
                    b"",
                )
            })?
            .to_bytes();
        Ok(Resp {
            status,
            content_type,
            body,
        })
    }

    /// [`SbxClient::send`] under the call's deadline and cancellation.
    // The parts of one request; a struct for them would only be built at each call site and taken apart here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
        opts: &Call,
        default: Duration,
        limit: usize,
    ) -> Result<Resp> {
        let deadline = opts.timeout.or(self.timeout).unwrap_or(default);
        bounded(
            &format!("sbx {what}"),
            Some(deadline),
            &opts.cancel,
            self.send(what, method, path, body, limit),
        )
        .await
        .map_err(|e| e.with("socketPath", self.endpoint.to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn json_call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        sandbox: Option<&str>,
        opts: &Call,
        default: Duration,
    ) -> Result<Resp> {
        let body = body.map(|b| ("application/json", Bytes::from(b.to_string())));
        let res = self
            .call(what, method, path, body, opts, default, BODY_LIMIT)
            .await?;
        if (200..300).contains(&res.status) {
            Ok(res)
        } else {
            Err(status_error(what, sandbox, res.status, &res.body))
        }
    }

    /// `GET /daemon/health` (served without a login).
    pub async fn health(&self, opts: &Call) -> Result<DaemonHealth> {
        let res = self
            .json_call(
                "GET /daemon/health",
                Method::GET,
                "/daemon/health",
                None,
                None,
                opts,
                DEFAULT_TIMEOUT,
            )
            .await?;
        json_of("GET /daemon/health", &res)
    }

    /// `GET /daemon/info`: the daemon's API socket and its Docker-compatible engine socket.
    pub async fn info(&self, opts: &Call) -> Result<DaemonInfo> {
        let res = self
            .json_call(
                "GET /daemon/info",
                Method::GET,
                "/daemon/info",
                None,
                None,
                opts,
                DEFAULT_TIMEOUT,
            )
            .await?;
        json_of("GET /daemon/info", &res)
    }

    /// Every sandbox (`GET /sandbox`, a bare array).
    pub async fn list(&self, opts: &Call) -> Result<Vec<SandboxSummary>> {
        let res = self
            .json_call(
                "GET /sandbox",
                Method::GET,
                "/sandbox",
                None,
                None,
                opts,
                DEFAULT_TIMEOUT,
            )
            .await?;
        let items: Vec<WireSandbox> = json_of("GET /sandbox", &res)?;
        items.into_iter().map(|w| summary(w, &res.body)).collect()
    }

    /// The sandbox of that name, or `None`.
    pub async fn get(&self, name: &str, opts: &Call) -> Result<Option<SandboxSummary>> {
        validate_sandbox_name(name)?;
        let what = format!("GET /sandbox/{name}");
        match self
            .json_call(
                &what,
                Method::GET,
                &format!("/sandbox/{}", seg(name)),
                None,
                Some(name),
                opts,
                DEFAULT_TIMEOUT,
            )
            .await
        {
            Ok(res) => summary(json_of(&what, &res)?, &res.body).map(Some),
            Err(e) if e.code == ErrorCode::SandboxNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The create body (snake_case), after validating every field.
    pub fn create_body(spec: &SandboxSpec) -> Result<serde_json::Value> {
        if let Some(n) = &spec.name {
            validate_sandbox_name(n)?;
        }
        crate::core::validate::name("agent", &spec.agent)?;
        validate_workspace(&spec.workspace, "workspace")?;
        let mut body = serde_json::json!({ "agent": spec.agent, "workspace": spec.workspace });
        if let Some(n) = &spec.name {
            body["name"] = n.clone().into();
        }
        if let Some(t) = &spec.template {
            crate::core::container::validate_image_ref(t)
                .map_err(|e| e.with("argument", "template"))?;
            body["template"] = t.clone().into();
        }
        if let Some(c) = spec.cpus {
            if c == 0 {
                return Err(Error::invalid("cpus must be at least 1").with("argument", "cpus"));
            }
            body["cpus"] = c.into();
        }
        if let Some(m) = &spec.memory {
            validate_memory(m)?;
            body["memory"] = m.clone().into();
        }
        if !spec.environment.is_empty() {
            let pairs: Vec<(String, String)> = spec.environment.clone().into_iter().collect();
            crate::core::validate::env(&pairs)?;
            body["environment"] = serde_json::to_value(&spec.environment).unwrap_or_default();
        }
        if !spec.additional_workspaces.is_empty() {
            let mut list = Vec::new();
            for (dir, ro) in &spec.additional_workspaces {
                validate_workspace(dir, "additionalWorkspaces")?;
                list.push(serde_json::json!({ "dir": dir, "read_only": ro }));
            }
            body["additional_workspaces"] = list.into();
        }
        if !spec.labels.is_empty() {
            body["labels"] = serde_json::to_value(&spec.labels).unwrap_or_default();
        }
        if spec.expiry.is_some() {
            return Err(super::super::backend::unsupported(
                "sbx",
                "sandbox expiry (the daemon has no deadline for a sandbox)",
            ));
        }
        Ok(body)
    }

    /// Create a sandbox (`POST /sandbox`). The first create pulls the template: the default deadline is long,
    /// and the call is cancellable. One of that name existing is `ERR_SANDBOX_CONFLICT`.
    pub async fn create(&self, spec: &SandboxSpec, opts: &Call) -> Result<SandboxSummary> {
        let body = Self::create_body(spec)?;
        let res = self
            .json_call(
                "POST /sandbox",
                Method::POST,
                "/sandbox",
                Some(body),
                spec.name.as_deref(),
                opts,
                DEFAULT_CREATE_TIMEOUT,
            )
            .await?;
        let w: WireSandbox = json_of("POST /sandbox", &res)?;
        let mut s = summary(w, &res.body)?;
        // The 201 carries only name, agent, status and workspace (sbx-api.md §4.4): the listing has the id,
        // template and labels, so one handle looks the same however it was obtained.
        if s.id.is_empty() {
            if let Ok(Some(full)) = self.get(&s.name, opts).await {
                s = full;
            }
        }
        if s.agent.is_empty() {
            s.agent = spec.agent.clone();
        }
        if s.workspace.is_empty() {
            s.workspace = spec.workspace.clone();
        }
        if s.template.is_none() {
            s.template = spec.template.clone();
        }
        Ok(s)
    }

    /// Get-or-create the sandbox `spec.name` (required here): an existing one with another workspace, agent or
    /// (when both are known) template is `ERR_SANDBOX_CONFLICT` naming what differs; a stopped one is started.
    pub async fn ensure(&self, spec: &SandboxSpec, opts: &Call) -> Result<SandboxSummary> {
        let name = spec.name.clone().ok_or_else(|| {
            Error::invalid("ensure needs a sandbox name").with("argument", "name")
        })?;
        Self::create_body(spec)?;
        let check = |s: SandboxSummary| -> Result<SandboxSummary> {
            let mut drift = Vec::new();
            if !s.workspace.is_empty() && !same_dir(&s.workspace, &spec.workspace) {
                drift.push(format!(
                    "workspace {:?} (asked {:?})",
                    s.workspace, spec.workspace
                ));
            }
            if !s.agent.is_empty() && s.agent != spec.agent {
                drift.push(format!("agent {:?} (asked {:?})", s.agent, spec.agent));
            }
            if let (Some(have), Some(want)) = (&s.template, &spec.template) {
                if have != want {
                    drift.push(format!("template {have:?} (asked {want:?})"));
                }
            }
            if drift.is_empty() {
                Ok(s)
            } else {
                Err(Error::new(
                    ErrorCode::SandboxConflict,
                    format!("sandbox {name:?} exists with {}", drift.join(", ")),
                )
                .with("sandbox", name.clone())
                .with("drift", drift))
            }
        };
        let fut = async {
            // Concurrent ensures in this process take turns; one in another process (or a create the daemon has
            // not finished) shows as a 409 for a sandbox not listed yet, or one listed as still being made: both
            // are waited for, within this call's deadline and cancellation.
            let _turn = crate::core::turns::turn(&self.endpoint.to_string(), &name)
                .lock_owned()
                .await;
            let mut backoff = crate::core::turns::Backoff::default();
            let mut just_conflicted = false;
            loop {
                match self.get(&name, opts).await? {
                    Some(s) if matches!(s.status.as_str(), "creating" | "starting" | "pending") => {
                    }
                    Some(s) => {
                        let s = check(s)?;
                        if s.status == "stopped" || s.status == "exited" {
                            self.start(&name, opts).await?;
                            return Ok(self.get(&name, opts).await?.unwrap_or(s));
                        }
                        return Ok(s);
                    }
                    None if just_conflicted => {}
                    None => match self.create(spec, opts).await {
                        Ok(s) => return check(s),
                        Err(e) if e.code == ErrorCode::SandboxConflict => {
                            just_conflicted = true;
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                }
                just_conflicted = false;
                backoff.wait().await;
            }
        };
        let deadline = opts
            .timeout
            .or(self.timeout)
            .unwrap_or(DEFAULT_CREATE_TIMEOUT);
        bounded("sbx ensure", Some(deadline), &opts.cancel, fut).await
    }

    async fn post_sandbox(&self, name: &str, verb: &str, opts: &Call) -> Result<()> {
        validate_sandbox_name(name)?;
        let path = format!("/sandbox/{}/{verb}", seg(name));
        self.json_call(
            &format!("POST {path}"),
            Method::POST,
            &path,
            None,
            Some(name),
            opts,
            DEFAULT_CREATE_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// `POST /sandbox/{n}/start`.
    pub async fn start(&self, name: &str, opts: &Call) -> Result<()> {
        self.post_sandbox(name, "start", opts).await
    }

    /// `POST /sandbox/{n}/stop`.
    pub async fn stop(&self, name: &str, opts: &Call) -> Result<()> {
        self.post_sandbox(name, "stop", opts).await
    }

    /// `DELETE /sandbox/{n}?force=…`; with `force`, a sandbox already gone is success.
    pub async fn remove(&self, name: &str, force: bool, opts: &Call) -> Result<()> {
        validate_sandbox_name(name)?;
        let path = format!("/sandbox/{}?force={force}", seg(name));
        match self
            .json_call(
                &format!("DELETE /sandbox/{name}"),
                Method::DELETE,
                &path,
                None,
                Some(name),
                opts,
                DEFAULT_TIMEOUT,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if force && e.code == ErrorCode::SandboxNotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /sandbox/{n}/exec/{id}`.
    pub async fn exec_state(&self, name: &str, exec_id: &str, opts: &Call) -> Result<ExecState> {
        let path = format!("/sandbox/{}/exec/{}", seg(name), seg(exec_id));
        let res = self
            .json_call(
                "GET exec state",
                Method::GET,
                &path,
                None,
                Some(name),
                opts,
                DEFAULT_TIMEOUT,
            )
            .await?;
        json_of("GET exec state", &res)
    }

    /// `POST /sandbox/{n}/exec/{id}/resize {cols, rows}`.
    pub async fn resize(
        &self,
        name: &str,
        exec_id: &str,
        cols: u16,
        rows: u16,
        opts: &Call,
    ) -> Result<()> {
        if cols == 0 || rows == 0 {
            return Err(
                Error::invalid("resize needs cols and rows of at least 1").with("argument", "cols")
            );
        }
        let path = format!("/sandbox/{}/exec/{}/resize", seg(name), seg(exec_id));
        self.json_call(
            "POST exec resize",
            Method::POST,
            &path,
            Some(serde_json::json!({"cols": cols, "rows": rows})),
            Some(name),
            opts,
            DEFAULT_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// A tar archive of `path` (file or directory) in the sandbox: `GET /sandbox/{n}/files?path=`.
    pub async fn get_archive(&self, name: &str, path: &str, opts: &Call) -> Result<Vec<u8>> {
        validate_sandbox_name(name)?;
        crate::core::container::validate_container_path(path)?;
        let q = format!("/sandbox/{}/files?path={}", seg(name), seg(path));
        let res = self
            .call(
                "GET files",
                Method::GET,
                &q,
                None,
                opts,
                DEFAULT_TIMEOUT,
                ARCHIVE_LIMIT,
            )
            .await?;
        if res.status == 404 && daemon_message(&res.body).contains("path") {
            return Err(Error::new(
                ErrorCode::PathNotFound,
                format!("no file or directory at {path} in sandbox {name:?}"),
            )
            .with("path", path)
            .with("status", 404)
            .with("daemonMessage", daemon_message(&res.body)));
        }
        if !(200..300).contains(&res.status) {
            return Err(status_error("GET files", Some(name), res.status, &res.body));
        }
        Ok(res.body.to_vec())
    }

    /// Read one regular file from the sandbox, following symbolic links (absolute and relative) as
    /// `fs.readFile` does and as the container backend does.
    pub async fn read_file(&self, name: &str, path: &str, opts: &Call) -> Result<Vec<u8>> {
        let mut at = path.to_string();
        for _ in 0..crate::core::container::MAX_SYMLINKS {
            let r = self.read_entry(name, &at, opts).await;
            match r {
                Ok(Ok(bytes)) => return Ok(bytes),
                Ok(Err(target)) => at = crate::core::container::link_target(&at, &target),
                Err(mut e) if at != path => {
                    e.message =
                        format!("{} (reached from {path} through symbolic links)", e.message);
                    e.props.insert("path".into(), path.into());
                    return Err(e.with("resolvedPath", at));
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            ErrorCode::NotAFile,
            format!(
                "{path}: more than {} levels of symbolic links",
                crate::core::container::MAX_SYMLINKS
            ),
        )
        .with("path", path)
        .with("fileType", "symlink"))
    }

    /// The one entry at `path`: a file's bytes (`Ok`) or a link's target (`Err`).
    async fn read_entry(
        &self,
        name: &str,
        path: &str,
        opts: &Call,
    ) -> Result<std::result::Result<Vec<u8>, String>> {
        let archive = self.get_archive(name, path, opts).await?;
        let mut ar = tar::Archive::new(archive.as_slice());
        let bad = |e: std::io::Error| {
            Error::protocol(
                format!("the sbx daemon's tar for {path} is unreadable: {e}"),
                Some(200),
                b"",
            )
        };
        for entry in ar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                return Err(Error::new(
                    ErrorCode::NotAFile,
                    format!("{path} in sandbox {name:?} is a directory, not a file"),
                )
                .with("path", path)
                .with("fileType", "directory"));
            }
            if kind.is_symlink() {
                let target = entry.link_name().map_err(bad)?.unwrap_or_default();
                return Ok(Err(target.to_string_lossy().into_owned()));
            }
            if kind.is_file() {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut out).map_err(bad)?;
                return Ok(Ok(out));
            }
        }
        Err(Error::protocol(
            format!("the sbx daemon's tar for {path} holds no file"),
            Some(200),
            b"",
        ))
    }

    /// Extract a tar archive into the existing directory `dir`: `PUT /sandbox/{n}/files?path=dir`. The route's
    /// form is unconfirmed (sbx-api.md §9.6): when the daemon refuses it as unsupported (unmatched 404, 405,
    /// 501), the upload runs `tar -x -C dir` in the sandbox with the archive on stdin instead, and later uploads
    /// go that way at once.
    pub async fn put_archive(&self, name: &str, dir: &str, tar: Bytes, opts: &Call) -> Result<()> {
        validate_sandbox_name(name)?;
        crate::core::container::validate_container_path(dir)?;
        if self.put_files.load(Ordering::Relaxed) != PUT_REFUSED {
            let q = format!("/sandbox/{}/files?path={}", seg(name), seg(dir));
            let res = self
                .call(
                    "PUT files",
                    Method::PUT,
                    &q,
                    Some(("application/x-tar", tar.clone())),
                    opts,
                    DEFAULT_TIMEOUT,
                    BODY_LIMIT,
                )
                .await?;
            if (200..300).contains(&res.status) {
                self.put_files.store(PUT_OK, Ordering::Relaxed);
                return Ok(());
            }
            let e = status_error("PUT files", Some(name), res.status, &res.body);
            if e.code != ErrorCode::SbxUnsupported {
                return Err(e);
            }
            self.put_files.store(PUT_REFUSED, Ordering::Relaxed);
        }
        let spec = crate::core::exec::ExecSpec {
            cmd: vec!["tar".into(), "-x".into(), "-C".into(), dir.into()],
            stdin: Some(tar),
            timeout: Some(opts.timeout.or(self.timeout).unwrap_or(DEFAULT_TIMEOUT)),
            ..Default::default()
        };
        let out = self.exec(name, spec, opts.cancel.clone()).await?;
        if out.exit_code == Some(0) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::ExecFailed,
                format!(
                    "extracting into {dir} in sandbox {name:?} failed (tar exit {:?}): {}",
                    out.exit_code,
                    excerpt(&out.stderr)
                ),
            )
            .with("path", dir)
            .with("fallback", "exec tar"))
        }
    }

    /// Whether uploads go through `PUT …/files` (`Some(true)`), the exec fallback (`Some(false)`), or neither was
    /// tried yet.
    pub fn put_route(&self) -> Option<bool> {
        match self.put_files.load(Ordering::Relaxed) {
            PUT_OK => Some(true),
            PUT_REFUSED => Some(false),
            _ => None,
        }
    }

    /// `GET /sandbox/{n}/ports` (bare array).
    pub async fn ports(&self, name: &str, opts: &Call) -> Result<Vec<PortBinding>> {
        validate_sandbox_name(name)?;
        let path = format!("/sandbox/{}/ports", seg(name));
        let res = self
            .json_call(
                "GET ports",
                Method::GET,
                &path,
                None,
                Some(name),
                opts,
                DEFAULT_TIMEOUT,
            )
            .await?;
        json_of("GET ports", &res)
    }

    /// `POST /sandbox/{n}/ports` with a bare array; returns the bindings after publishing (a loopback publish is
    /// two bindings, `127.0.0.1` and `::1`).
    pub async fn publish(
        &self,
        name: &str,
        ports: &[PortSpec],
        opts: &Call,
    ) -> Result<Vec<PortBinding>> {
        validate_sandbox_name(name)?;
        let path = format!("/sandbox/{}/ports", seg(name));
        let body = serde_json::to_value(ports).unwrap_or_default();
        self.json_call(
            "POST ports",
            Method::POST,
            &path,
            Some(body),
            Some(name),
            opts,
            DEFAULT_TIMEOUT,
        )
        .await?;
        self.ports(name, opts).await
    }

    /// `POST /sandbox/{n}/ports/unpublish` with a bare array of keys; returns the daemon's message.
    pub async fn unpublish(&self, name: &str, ports: &[PortSpec], opts: &Call) -> Result<String> {
        validate_sandbox_name(name)?;
        let path = format!("/sandbox/{}/ports/unpublish", seg(name));
        let body = serde_json::to_value(ports).unwrap_or_default();
        let res = self
            .json_call(
                "POST ports/unpublish",
                Method::POST,
                &path,
                Some(body),
                Some(name),
                opts,
                DEFAULT_TIMEOUT,
            )
            .await?;
        Ok(daemon_message(&res.body))
    }

    /// `POST /sandbox/{n}/save {tag}`: save the sandbox as a template image. The body's form is unconfirmed; an
    /// unsupported route is `ERR_SBX_UNSUPPORTED`.
    pub async fn save(&self, name: &str, tag: &str, opts: &Call) -> Result<String> {
        validate_sandbox_name(name)?;
        crate::core::container::validate_image_ref(tag).map_err(|e| e.with("argument", "tag"))?;
        let path = format!("/sandbox/{}/save", seg(name));
        let res = self
            .json_call(
                "POST save",
                Method::POST,
                &path,
                Some(serde_json::json!({"tag": tag})),
                Some(name),
                opts,
                DEFAULT_CREATE_TIMEOUT,
            )
            .await?;
        Ok(daemon_message(&res.body))
    }

    pub(crate) fn env_form(&self) -> u8 {
        self.env_form.load(Ordering::Relaxed)
    }
}

pub(crate) const ENV_FORM_UNKNOWN: u8 = ENV_UNKNOWN;
pub(crate) const ENV_FORM_LIST: u8 = ENV_LIST;
pub(crate) const ENV_FORM_MAP: u8 = ENV_MAP;

/// One sbx sandbox as an [`ExecTarget`].
#[derive(Clone)]
pub struct SbxSandbox {
    pub client: SbxClient,
    pub name: String,
}

impl ExecTarget for SbxSandbox {
    fn describe(&self) -> String {
        format!("sbx sandbox {}", self.name)
    }
    fn subject(&self) -> (&'static str, String) {
        ("sandbox", self.name.clone())
    }
    fn exec(
        &self,
        spec: crate::core::exec::ExecSpec,
        cancel: tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'_, Result<crate::core::exec::ExecOutput>> {
        Box::pin(self.client.exec(&self.name, spec, cancel))
    }
    fn spawn(
        &self,
        spec: crate::core::exec::ExecSpec,
        abort: tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'_, Result<Box<dyn crate::core::backend::ProcessHandle>>> {
        Box::pin(async move {
            let mut spec = spec;
            if let Some((cols, rows)) = spec.tty_size {
                // The exec body has no size (sbx-api.md §4.5): `stty` sets it before the program runs (sandbox
                // templates have a shell), and the resize route tells the daemon as well.
                let mut argv: Vec<String> = [
                    "/bin/sh",
                    "-c",
                    "stty rows \"$1\" cols \"$2\" 2>/dev/null; shift 2; exec \"$@\"",
                    "sh",
                ]
                .map(String::from)
                .to_vec();
                argv.extend([rows.to_string(), cols.to_string()]);
                argv.append(&mut spec.cmd);
                spec.cmd = argv;
            }
            let size = spec.tty_size;
            let p = self.client.spawn(&self.name, spec, abort).await?;
            if let Some((cols, rows)) = size {
                let _ = p.resize(cols, rows).await;
            }
            Ok(Box::new(p) as Box<dyn crate::core::backend::ProcessHandle>)
        })
    }
    fn read_file<'a>(&'a self, path: &'a str, call: &'a Call) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move { self.client.read_file(&self.name, path, call).await })
    }
    fn write_files<'a>(
        &'a self,
        dir: &'a str,
        tar: Bytes,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.client.put_archive(&self.name, dir, tar, call).await })
    }
}

impl SandboxBackend for SbxClient {
    fn kind(&self) -> &'static str {
        "sbx"
    }
    fn policy_rules<'a>(&'a self, opts: &'a Call) -> BoxFuture<'a, Result<Vec<PolicyRule>>> {
        Box::pin(SbxClient::policy_rules(self, opts))
    }
    fn policy_change<'a>(
        &'a self,
        changes: &'a [RuleChange],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PolicyRule>>> {
        Box::pin(SbxClient::policy_change(self, changes, opts))
    }
    fn policy_check<'a>(
        &'a self,
        target: &'a str,
        sandbox: Option<&'a str>,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<PolicyCheck>> {
        Box::pin(SbxClient::policy_check(self, target, sandbox, opts))
    }
    fn policy_log<'a>(
        &'a self,
        sandbox: Option<&'a str>,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PolicyLogEntry>>> {
        Box::pin(SbxClient::policy_log(self, sandbox, opts))
    }
    fn set_secrets<'a>(
        &'a self,
        name: &'a str,
        secrets: &'a [SecretSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<SecretPlaceholder>>> {
        Box::pin(SbxClient::set_secrets(self, name, secrets, opts))
    }
    fn list<'a>(&'a self, opts: &'a Call) -> BoxFuture<'a, Result<Vec<SandboxSummary>>> {
        Box::pin(SbxClient::list(self, opts))
    }
    fn get<'a>(
        &'a self,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Option<SandboxSummary>>> {
        Box::pin(SbxClient::get(self, name, opts))
    }
    fn create<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        Box::pin(SbxClient::create(self, spec, opts))
    }
    fn ensure<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        Box::pin(SbxClient::ensure(self, spec, opts))
    }
    fn start<'a>(&'a self, name: &'a str, opts: &'a Call) -> BoxFuture<'a, Result<()>> {
        Box::pin(SbxClient::start(self, name, opts))
    }
    fn stop<'a>(&'a self, name: &'a str, opts: &'a Call) -> BoxFuture<'a, Result<()>> {
        Box::pin(SbxClient::stop(self, name, opts))
    }
    fn remove<'a>(
        &'a self,
        name: &'a str,
        force: bool,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(SbxClient::remove(self, name, force, opts))
    }
    fn target<'a>(
        &'a self,
        name: &'a str,
        _opts: &'a Call,
    ) -> BoxFuture<'a, Result<Arc<dyn ExecTarget>>> {
        Box::pin(async move {
            validate_sandbox_name(name)?;
            Ok(Arc::new(SbxSandbox {
                client: self.clone(),
                name: name.to_string(),
            }) as Arc<dyn ExecTarget>)
        })
    }
    fn socket(&self) -> String {
        self.endpoint.to_string()
    }
    fn ports<'a>(
        &'a self,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PortBinding>>> {
        Box::pin(SbxClient::ports(self, name, opts))
    }
    fn publish<'a>(
        &'a self,
        name: &'a str,
        ports: &'a [PortSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PortBinding>>> {
        Box::pin(SbxClient::publish(self, name, ports, opts))
    }
    fn unpublish<'a>(
        &'a self,
        name: &'a str,
        ports: &'a [PortSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(SbxClient::unpublish(self, name, ports, opts))
    }
    fn save<'a>(
        &'a self,
        name: &'a str,
        tag: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(SbxClient::save(self, name, tag, opts))
    }
}
