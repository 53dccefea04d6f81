//! The sandbox-agent server inside any [`ExecTarget`] (a container, an sbx sandbox), reached over exec tunnels:
//! HTTP requests (pooled keep-alive connections), SSE streams (one dedicated connection each), health, start-up,
//! agent install.

use super::agent_install::{self, BinarySources, Installed};
use super::backend::ExecTarget;
use super::call::Call;
use super::container::Container;
use super::error::{excerpt, Error, ErrorCode, Result};
use super::exec::ExecSpec;
use super::tunnel::{probe_relay, Relay, Tunnel};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// sandbox-agent's default port.
pub const DEFAULT_PORT: u16 = 2468;
/// Largest JSON response read over a tunnel.
const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Idle keep-alive connections kept per server.
const MAX_IDLE: usize = 4;
/// Default deadline of a request to the server (health, listAgents).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline of an agent install (it downloads the agent).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time `ensure_server` waits for a server it started to become healthy.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The server's own per-request timeout is set this high so that its hung-POST bug (no response after the
/// timeout) is never reached; the SDK applies its own deadlines.
const SERVER_REQUEST_TIMEOUT_MS: &str = "86400000";

/// How to reach one sandbox-agent server.
pub struct AgentServer {
    target: Arc<dyn ExecTarget>,
    port: u16,
    token: Option<String>,
    relay: tokio::sync::OnceCell<Relay>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// Binaries `ensure_server` installs from when the target has none.
    install_from: BinarySources,
    /// The binary's path once this server installed it.
    installed: Mutex<Option<String>>,
    /// Where sessions start when the caller names no `cwd` (a sandbox's workspace).
    workdir: Option<String>,
}

/// A complete HTTP response from the agent server.
#[derive(Debug, Clone)]
pub struct AgentResponse {
    pub status: u16,
    pub body: Bytes,
}

impl AgentResponse {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(
                ErrorCode::AgentProtocol,
                format!("the agent server answered non-JSON: {e}"),
            )
            .with("status", self.status)
            .with("body", excerpt(&self.body))
        })
    }
}

/// Build the error for a non-success status (problem+json keeps its `type` and `detail`).
pub fn status_error(what: &str, res: &AgentResponse) -> Error {
    let problem: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
    let kind = problem["type"]
        .as_str()
        .unwrap_or("")
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_string();
    let detail = problem["detail"]
        .as_str()
        .or(problem["title"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| excerpt(&res.body));
    Error::new(
        ErrorCode::AgentProtocol,
        format!(
            "the agent server answered {what} with HTTP {}: {detail}",
            res.status
        ),
    )
    .with("status", res.status)
    .with("problemType", kind)
    .with("body", excerpt(&res.body))
}

fn unavailable(detail: &str) -> Error {
    Error::new(
        ErrorCode::AgentUnavailable,
        format!(
            "the sandbox-agent server does not answer ({detail}); start it with ensureServer()"
        ),
    )
}

impl AgentServer {
    /// The server at `port` (default [`DEFAULT_PORT`]) inside `target`, with bearer `token` when it runs with
    /// `--token`. Nothing is contacted until the first call.
    pub fn new(
        target: Arc<dyn ExecTarget>,
        port: Option<u16>,
        token: Option<String>,
    ) -> AgentServer {
        AgentServer {
            target,
            port: port.unwrap_or(DEFAULT_PORT),
            token,
            relay: tokio::sync::OnceCell::new(),
            idle: Mutex::new(Vec::new()),
            install_from: BinarySources::default(),
            installed: Mutex::new(None),
            workdir: None,
        }
    }

    /// Sessions start in `dir` when the caller names no `cwd` (a sandbox's workspace).
    pub fn with_workdir(mut self, dir: String) -> AgentServer {
        self.workdir = Some(dir).filter(|d| !d.is_empty());
        self
    }

    /// Where sessions start by default, when known.
    pub fn workdir(&self) -> Option<&str> {
        self.workdir.as_deref()
    }

    /// Install from `sources` when the target has no `sandbox-agent` (see [`super::agent_install`]).
    pub fn with_binaries(mut self, sources: BinarySources) -> AgentServer {
        self.install_from = sources;
        self
    }

    /// Put the `sandbox-agent` binary into the target (skipped when an identical one is there).
    pub async fn install(&self, call: &Call) -> Result<Installed> {
        let done = agent_install::install(self.target.as_ref(), &self.install_from, call).await?;
        if let Ok(mut i) = self.installed.lock() {
            *i = Some(done.path.clone());
        }
        Ok(done)
    }

    /// [`AgentServer::new`] for a container.
    pub fn for_container(
        container: Container,
        port: Option<u16>,
        token: Option<String>,
    ) -> AgentServer {
        AgentServer::new(Arc::new(container), port, token)
    }

    /// Where the server runs.
    pub fn target(&self) -> &Arc<dyn ExecTarget> {
        &self.target
    }

    /// The server's port inside the target.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The relay for this target, probed once.
    pub async fn relay(&self) -> Result<Relay> {
        self.relay
            .get_or_try_init(|| probe_relay(self.target.as_ref()))
            .await
            .copied()
    }

    /// A fresh HTTP/1.1 connection over a new tunnel.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let relay = self.relay().await?;
        let tunnel = Tunnel::open(self.target.as_ref(), relay, self.port).await?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
            .await
            .map_err(|e| unavailable(&super::error::chain_message(&e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(tx)
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, String)],
    ) -> Result<Request<Full<Bytes>>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", format!("127.0.0.1:{}", self.port));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        let body = match body {
            Some(v) => {
                req = req
                    .header("Content-Type", "application/json")
                    .header("Accept", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        req.body(body)
            .map_err(|e| Error::internal(format!("building a request: {e}")))
    }

    /// One request; reuses an idle keep-alive connection when there is one.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<AgentResponse> {
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut tx = match pooled {
            Some(tx) if tx.is_ready() => tx,
            _ => self.connect().await?,
        };
        let res = match tx
            .send_request(self.build(method.clone(), path, body, &[])?)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // A pooled connection may have been closed by the server: retry once on a new one
                // (only for requests that cannot have been received).
                if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
                    tx = self.connect().await?;
                    tx.send_request(self.build(method, path, body, &[])?)
                        .await
                        .map_err(|e| unavailable(&super::error::chain_message(&e)))?
                } else {
                    return Err(unavailable(&super::error::chain_message(&e)));
                }
            }
        };
        let status = res.status().as_u16();
        let body = Limited::new(res.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| {
                Error::new(
                    ErrorCode::AgentProtocol,
                    format!("the agent server's response broke off: {e}"),
                )
                .with("status", status)
            })?
            .to_bytes();
        if tx.is_ready() {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < MAX_IDLE {
                    idle.push(tx);
                }
            }
        }
        Ok(AgentResponse { status, body })
    }

    /// Open a streaming GET on its own connection (SSE); the caller reads the body.
    pub async fn stream(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<hyper::body::Incoming>> {
        let mut tx = self.connect().await?;
        tx.send_request(self.build(Method::GET, path, None, headers)?)
            .await
            .map_err(|e| unavailable(&super::error::chain_message(&e)))
    }

    /// `GET /v1/health` → the JSON body (`{"status":"ok"}`; default deadline [`REQUEST_TIMEOUT`]).
    pub async fn health(&self, call: &Call) -> Result<Value> {
        call.run("agent health", Some(REQUEST_TIMEOUT), self.health_now())
            .await
    }

    async fn health_now(&self) -> Result<Value> {
        let res = self.request(Method::GET, "/v1/health", None).await?;
        if res.status != 200 {
            return Err(status_error("GET /v1/health", &res));
        }
        res.json()
    }

    /// Health-probe; when down, start `sandbox-agent server` detached and wait for health (the call's deadline,
    /// default [`START_TIMEOUT`]). Returns whether this call started the server.
    pub async fn ensure_server(&self, env: &[(String, String)], call: &Call) -> Result<bool> {
        let deadline = call.timeout.unwrap_or(START_TIMEOUT);
        let cancel = &call.cancel;
        if self.health_now().await.is_ok() {
            return Ok(false);
        }
        let started = Instant::now();
        let program = self
            .installed
            .lock()
            .ok()
            .and_then(|i| i.clone())
            .unwrap_or_else(|| "sandbox-agent".into());
        let mut cmd = vec![
            program,
            "server".into(),
            "--no-telemetry".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            self.port.to_string(),
        ];
        match &self.token {
            Some(t) => cmd.extend(["--token".to_string(), t.clone()]),
            None => cmd.push("--no-token".into()),
        }
        let spec = ExecSpec {
            cmd,
            env: std::iter::once((
                "SANDBOX_AGENT_ACP_REQUEST_TIMEOUT_MS".to_string(),
                SERVER_REQUEST_TIMEOUT_MS.to_string(),
            ))
            .chain(env.iter().cloned())
            .collect(),
            ..Default::default()
        };
        let starting = Call::new(Some(deadline), cancel.clone());
        match self.target.start_detached(spec.clone(), &starting).await {
            // Not there: install it (when a binary is known) and start that.
            Err(e) if e.code == ErrorCode::ExecFailed && !self.install_from.is_empty() => {
                let done = self.install(&starting).await?;
                let mut spec = spec;
                spec.cmd[0] = done.path;
                self.target.start_detached(spec, &starting).await?;
            }
            r => r?,
        }
        let mut last = None;
        while started.elapsed() < deadline {
            if cancel.is_cancelled() {
                return Err(Error::aborted());
            }
            match self.health_now().await {
                Ok(_) => return Ok(true),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::timeout(
            "waiting for the sandbox-agent server to become healthy",
            deadline,
        )
        .with("lastError", last.map(|e| e.message).unwrap_or_default()))
    }

    /// `GET /v1/agents` (default deadline [`REQUEST_TIMEOUT`]).
    pub async fn list_agents(&self, call: &Call) -> Result<Value> {
        let res = call
            .run(
                "listAgents",
                Some(REQUEST_TIMEOUT),
                self.request(Method::GET, "/v1/agents", None),
            )
            .await?;
        if res.status != 200 {
            return Err(status_error("GET /v1/agents", &res));
        }
        res.json()
    }

    /// `POST /v1/agents/{name}/install` (never the CLI's broken `api agents install`; default deadline
    /// [`INSTALL_TIMEOUT`]).
    pub async fn install_agent(&self, name: &str, call: &Call) -> Result<Value> {
        super::validate::name("agent", name)?;
        let path = format!("/v1/agents/{}/install", super::http::encode_segment(name));
        let body = serde_json::json!({});
        let res = call
            .run(
                "installAgent",
                Some(INSTALL_TIMEOUT),
                self.request(Method::POST, &path, Some(&body)),
            )
            .await?;
        if !(200..300).contains(&res.status) {
            return Err(status_error(&format!("POST {path}"), &res));
        }
        res.json()
    }

    /// Run a command where the server runs (used for diagnostics).
    pub async fn exec(&self, cmd: Vec<String>) -> Result<super::exec::ExecOutput> {
        self.target
            .exec(
                ExecSpec {
                    cmd,
                    timeout: Some(Duration::from_secs(30)),
                    ..Default::default()
                },
                CancellationToken::new(),
            )
            .await
    }
}
