//! LocalSandboxd's sbx API (sbx-api.md §4.4): each sandbox is the template image running as a container in the
//! sandbox's own engine (a private dockerd, or the relay), with the workspace bind-mounted at the same absolute
//! path and that engine's socket mounted inside as `/var/run/docker.sock`, so a sandbox has its own Docker
//! engine like the real ones.
//!
//! Chosen answers where the real daemon's are unknown: bad input 400, unknown sandbox 404 `sandbox <n> not
//! found`, an existing name 409, a stopped sandbox 409 `sandbox <n> is not running`, a stopping daemon 503, ports
//! and save 501 (no port publishing or image commit exists in this design: a sandbox container has no host
//! network path, and templates come from the host engine). `OPTIONS`: 204 with an `Allow` header on every route
//! it implements, 404 `Not Found` (no `Allow`) elsewhere, as the real daemon's router does for unknown routes.

use super::engine::VmEngine;
use super::netns;
use super::proxy::{Listening, Proxy};
use super::{make_private_dir, message, reply, Claim, Inner, Resp, Work, MAX_SOCKET_PATH};
use crate::core::attach;
use crate::core::backend::ExecTarget;
use crate::core::call::Call;
use crate::core::container::{self, Container, RunSpec};
use crate::core::engine::Engine;
use crate::core::error::{Error, ErrorCode, Result};
use crate::core::forward::Forward;
use crate::core::images;
use crate::core::sbx::validate_sandbox_name;
use crate::core::sbx::{PortBinding, PortSpec};
use crate::core::validate;
use bollard::exec::{CreateExecOptions, ResizeExecOptions};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `api_version` LocalSandboxd reports: the sbx version whose routes it serves (sbx 0.38).
pub const API_VERSION: &str = "0.26.0";
/// The relay's read size for exec output: more than a Unix socket holds (~200 KiB), so one read takes all
/// that is waiting.
const RELAY_READ: usize = 256 * 1024;
/// Label on every sandbox container (for sweeping the shared engine of the relay backend).
const LABEL: &str = "dev.sandboxd.local-sbx";
/// Label with a value unique to one create: what a cut-off create sweeps (never another instance's sandbox).
const CREATE_LABEL: &str = "dev.sandboxd.local-sbx.create";

/// Where the proxy listens inside every sandbox (`host.docker.internal` is this loopback there).
pub const PROXY_ADDR: &str = "127.0.0.1:3128";
/// The proxy URL a sandbox's `HTTP_PROXY`/`HTTPS_PROXY` name.
pub const PROXY_URL: &str = "http://host.docker.internal:3128";
/// Where the sandbox's proxy CA is written inside it (and appended to the image's CA bundle when it has one).
pub const CA_PATH: &str = "/usr/local/share/ca-certificates/sandboxd-proxy-ca.crt";
/// CA bundles of common images, extended with the proxy CA when present.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// One sandbox.
pub(super) struct SbxEntry {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) agent: String,
    workspace: String,
    pub(super) template: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) created_at: String,
    state_dir: PathBuf,
    engine: VmEngine,
    pub(super) container: Container,
    pub(super) running: AtomicBool,
    /// Published ports: each key served by a loopback [`Forward`] whose connections ride exec tunnels into the
    /// container (the sandbox has no network of its own here).
    pub(super) ports: std::sync::Mutex<Vec<(PortBinding, Arc<Forward>)>>,
    /// The proxy's listener in the container's network namespace, while the container runs.
    network: std::sync::Mutex<Option<Listening>>,
    /// `NAME=placeholder` of its secrets, added to every process it starts (values stay with the proxy).
    pub(super) secret_env: std::sync::Mutex<Vec<String>>,
}

impl SbxEntry {
    fn info(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "status": if self.running.load(Ordering::SeqCst) { "running" } else { "stopped" },
            "agent": self.agent,
            "workspace": self.workspace,
            "template": self.template,
            "created_at": self.created_at,
            "labels": self.labels,
            "ports": self.port_list(),
            "additional_workspaces": [],
        })
    }

    pub(super) fn port_list(&self) -> Vec<PortBinding> {
        self.ports
            .lock()
            .map(|p| p.iter().map(|(b, _)| b.clone()).collect())
            .unwrap_or_default()
    }

    /// Remove the container, then the engine (which removes its own directory), then the state.
    pub(super) async fn teardown(&self, proxy: &Proxy) {
        self.detach_network();
        proxy.policy().drop_sandbox(&self.name);
        proxy.forget_sandbox(&self.name);
        let forwards: Vec<Arc<Forward>> = match self.ports.lock() {
            Ok(mut p) => p.drain(..).map(|(_, f)| f).collect(),
            Err(_) => Vec::new(),
        };
        for f in forwards {
            f.close().await;
        }
        let _ = self.container.remove(true, &Call::default()).await;
        self.engine.stop().await;
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }

    pub(super) fn set_secret_env(&self, env: Vec<(String, String)>) {
        if let Ok(mut e) = self.secret_env.lock() {
            *e = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        }
    }

    fn detach_network(&self) {
        if let Ok(mut n) = self.network.lock() {
            n.take();
        }
    }

    /// Binds the proxy at [`PROXY_ADDR`] in the running container's network namespace (Docker's `none` network:
    /// a loopback only), so the proxy is the one address the sandbox can reach; its connections are decided with
    /// this sandbox's rules. Without root (the relay backend run by a user) there is no namespace to enter and
    /// the sandbox has no network at all.
    async fn attach_network(&self, proxy: &Proxy) -> Result<()> {
        self.detach_network();
        if unsafe { libc::geteuid() } != 0 {
            return Ok(());
        }
        let info = self.container.inspect(&Call::default()).await?;
        let pid = match info.pid {
            Some(p) if p > 0 => p as u32,
            _ => {
                return Err(Error::internal(format!(
                    "sandbox {} has no process",
                    self.name
                )))
            }
        };
        let addr: std::net::SocketAddr = PROXY_ADDR.parse().expect("static address");
        let l = tokio::task::spawn_blocking(move || netns::bind_in_netns(pid, addr))
            .await
            .map_err(|e| Error::internal(format!("binding the proxy: {e}")))??;
        let listening = proxy
            .listen_std(l, Some(self.name.clone()))
            .map_err(|e| Error::internal(format!("serving the proxy listener: {e}")))?;
        if let Ok(mut n) = self.network.lock() {
            *n = Some(listening);
        }
        Ok(())
    }

    pub(super) fn kill_now(&self) {
        self.engine.kill_now();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// The proxy variables every sandbox gets (a variable the create request sets wins).
fn proxy_env() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        v.push((k.to_string(), PROXY_URL.to_string()));
    }
    for k in ["NO_PROXY", "no_proxy"] {
        v.push((k.to_string(), "localhost,127.0.0.1,::1".to_string()));
    }
    for k in ["NODE_EXTRA_CA_CERTS", "SANDBOXD_PROXY_CA"] {
        v.push((k.to_string(), CA_PATH.to_string()));
    }
    v
}

/// Writes the proxy CA at [`CA_PATH`] and appends it to the image's CA bundle when it has one, through the
/// archive API (no shell needed in the image).
async fn install_ca(c: &Container, pem: &str) -> Result<()> {
    let call = Call::default();
    c.trust_ca(pem, CA_PATH, &call).await?;
    for bundle in CA_BUNDLES {
        let Ok(have) = c.read_file(bundle, &call).await else {
            continue;
        };
        let mut text = String::from_utf8_lossy(&have).into_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(pem);
        c.trust_ca(&text, bundle, &call).await?;
    }
    Ok(())
}

async fn body_json(req: Request<Incoming>) -> std::result::Result<Value, Resp> {
    let b = Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| message(StatusCode::BAD_REQUEST, format!("unreadable body: {e}")))?
        .to_bytes();
    if b.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&b)
        .map_err(|e| message(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))
}

fn not_found(name: &str) -> Resp {
    message(StatusCode::NOT_FOUND, format!("sandbox {name} not found"))
}

fn err_resp(e: Error) -> Resp {
    let status = match e.code {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::ContainerNotRunning => StatusCode::CONFLICT,
        ErrorCode::SandboxdUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ImageNotFound => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    message(status, e.message)
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    })
}

/// `env` as the daemon may get it: a `["K=V"]` list or a `{"K": "V"}` map.
fn env_list(v: &Value) -> std::result::Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "env entries must be strings".to_string())
            })
            .collect(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| format!("{k}={v}"))
                    .ok_or_else(|| "env values must be strings".to_string())
            })
            .collect(),
        _ => Err("env must be a list or a map".into()),
    }
}

/// The `Allow` header of an sbx route LocalSandboxd implements, `None` for any other path. The real daemon's
/// router (Echo) answers `OPTIONS` on a route it knows with an `Allow` header and on an unknown one with 404
/// without it (sbx-api.md §4.7); the 204 and the `OPTIONS, …` order follow Echo's built-in handler. The ports and
/// save routes are left out: LocalSandboxd answers them only with 501, so a probe must not report them served.
fn sbx_allow(segs: &[&str]) -> Option<&'static str> {
    Some(match segs {
        ["daemon", "health" | "info"] => "OPTIONS, GET",
        ["sandbox"] => "OPTIONS, GET, POST",
        ["sandbox", _] => "OPTIONS, DELETE, GET",
        ["sandbox", _, "start" | "stop"] => "OPTIONS, POST",
        ["sandbox", _, "exec", "attach"] => "OPTIONS, POST",
        ["sandbox", _, "exec", _] => "OPTIONS, GET",
        ["sandbox", _, "exec", _, "resize"] => "OPTIONS, POST",
        ["sandbox", _, "files"] => "OPTIONS, GET, PUT",
        ["sandbox", _, "credentials"] => "OPTIONS, POST",
        ["policy", "network", "rules"] => "OPTIONS, GET, POST",
        ["policy", "network", "check"] => "OPTIONS, POST",
        ["network", "log"] | ["policy", "network", "log"] => "OPTIONS, GET",
        _ => return None,
    })
}

/// `204 No Content` with an `Allow` header: the answer to `OPTIONS` on a known route.
fn no_content_allow(allow: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static(allow),
    );
    r
}

impl Inner {
    /// Route a request of the sbx API; `None` when the path is not one of its routes.
    pub(super) async fn route_sbx(
        &self,
        req: Request<Incoming>,
    ) -> std::result::Result<Resp, Request<Incoming>> {
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
        if m == Method::OPTIONS {
            return match (sbx_allow(&segs), segs.as_slice()) {
                (Some(allow), _) => Ok(no_content_allow(allow)),
                (None, ["daemon", ..] | ["sandbox", ..] | ["policy", ..] | ["network", ..]) => {
                    Ok(message(StatusCode::NOT_FOUND, "Not Found"))
                }
                (None, _) => Err(req),
            };
        }
        Ok(match (&m, segs.as_slice()) {
            (&Method::GET, ["daemon", "health"]) => reply(
                StatusCode::OK,
                json!({"status": "ok", "version": format!("localsandboxd-{}", env!("CARGO_PKG_VERSION")),
                       "api_version": API_VERSION, "revision": "", "release": false}),
            ),
            (&Method::GET, ["daemon", "info"]) => reply(
                StatusCode::OK,
                json!({"api_socket": self.socket_path.display().to_string(), "docker_socket": ""}),
            ),
            (&Method::GET, ["sandbox"]) => {
                let list: Vec<Value> = self.sbx_all().iter().map(|e| e.info()).collect();
                reply(StatusCode::OK, Value::Array(list))
            }
            (&Method::POST, ["sandbox"]) => match body_json(req).await {
                Ok(b) => self.sbx_create(b).await,
                Err(r) => r,
            },
            (&Method::GET, ["sandbox", n]) => match self.sbx_get(n) {
                Some(e) => reply(StatusCode::OK, e.info()),
                None => not_found(n),
            },
            (&Method::DELETE, ["sandbox", n]) => self.sbx_delete(n).await,
            (&Method::POST, ["sandbox", n, verb @ ("start" | "stop")]) => {
                self.sbx_start_stop(n, verb == &"start").await
            }
            (&Method::POST, ["sandbox", n, "exec", "attach"]) => {
                let n = n.to_string();
                self.sbx_attach(&n, req).await
            }
            (&Method::GET, ["sandbox", n, "exec", id]) => self.sbx_exec_state(n, id).await,
            (&Method::POST, ["sandbox", n, "exec", id, "resize"]) => {
                let (n, id) = (n.to_string(), id.to_string());
                match body_json(req).await {
                    Ok(b) => self.sbx_resize(&n, &id, b).await,
                    Err(r) => r,
                }
            }
            (&Method::GET, ["sandbox", n, "files"]) => {
                let p = query_param(&req, "path");
                self.sbx_files_get(n, p).await
            }
            (&Method::PUT, ["sandbox", n, "files"]) => {
                let n = n.to_string();
                self.sbx_files_put(&n, req).await
            }
            (&Method::GET, ["sandbox", n, "ports"]) => match self.sbx_get(n) {
                Some(e) => reply(StatusCode::OK, json!(e.port_list())),
                None => not_found(n),
            },
            (&Method::POST, ["sandbox", n, "ports"]) => {
                let n = n.to_string();
                match body_json(req).await {
                    Ok(b) => self.sbx_publish(&n, b).await,
                    Err(r) => r,
                }
            }
            (&Method::POST, ["sandbox", n, "ports", "unpublish"]) => {
                let n = n.to_string();
                match body_json(req).await {
                    Ok(b) => self.sbx_unpublish(&n, b).await,
                    Err(r) => r,
                }
            }
            (_, ["sandbox", n, "save"]) => {
                if self.sbx_get(n).is_none() {
                    not_found(n)
                } else {
                    message(
                        StatusCode::NOT_IMPLEMENTED,
                        "LocalSandboxd does not save templates",
                    )
                }
            }
            (&Method::POST, ["sandbox", n, "credentials"]) => {
                let n = n.to_string();
                match body_json(req).await {
                    Ok(b) => self.sbx_credentials(&n, b),
                    Err(r) => r,
                }
            }
            (&Method::GET, ["policy", "network", "rules"]) => self.policy_rules(),
            (&Method::POST, ["policy", "network", "rules"]) => match body_json(req).await {
                Ok(b) => self.policy_change(b),
                Err(r) => r,
            },
            (&Method::POST, ["policy", "network", "check"]) => match body_json(req).await {
                Ok(b) => self.policy_check(b).await,
                Err(r) => r,
            },
            (&Method::GET, ["network", "log"] | ["policy", "network", "log"]) => {
                self.policy_log(query_param(&req, "sandbox"))
            }
            (_, ["daemon", ..] | ["sandbox", ..] | ["policy", ..] | ["network", ..]) => {
                message(StatusCode::NOT_FOUND, "Not Found")
            }
            _ => return Err(req),
        })
    }

    /// `POST /sandbox/{n}/ports`: a bare array of port specs; each is served on `127.0.0.1` through a [`Forward`]
    /// into the container. One key per publish: sbx adds a second for `::1`, which clients must tolerate either way.
    async fn sbx_publish(&self, name: &str, b: Value) -> Resp {
        let Some(e) = self.sbx_get(name) else {
            return not_found(name);
        };
        let specs: Vec<PortSpec> = match serde_json::from_value(b) {
            Ok(v) => v,
            Err(err) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    format!("ports must be an array of {{sandbox_port, host_port?, host_ip?, protocol?}}: {err}"),
                )
            }
        };
        if !e.running.load(Ordering::SeqCst) {
            return message(
                StatusCode::CONFLICT,
                format!("sandbox {name} is not running"),
            );
        }
        let target: Arc<dyn ExecTarget> = Arc::new(e.container.clone());
        let mut made = Vec::new();
        for spec in specs {
            let proto = spec.protocol.clone().unwrap_or_else(|| "tcp".into());
            if proto != "tcp" || spec.sandbox_port == 0 {
                return message(
                    StatusCode::BAD_REQUEST,
                    "only tcp ports 1-65535 can be published here",
                );
            }
            if let Some(ip) = spec.host_ip.as_deref().filter(|ip| *ip != "127.0.0.1") {
                return message(
                    StatusCode::BAD_REQUEST,
                    format!("LocalSandboxd publishes on loopback only, not {ip}"),
                );
            }
            let fwd = match Forward::start(
                target.clone(),
                spec.sandbox_port,
                spec.host_port,
                &Call::default(),
            )
            .await
            {
                Ok(f) => Arc::new(f),
                Err(err) if err.code == ErrorCode::InvalidArgument => {
                    return message(StatusCode::CONFLICT, err.message)
                }
                Err(err) => return err_resp(err),
            };
            let binding = PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: fwd.addr().port(),
                protocol: proto,
                sandbox_port: spec.sandbox_port,
            };
            made.push(binding.clone());
            if let Ok(mut p) = e.ports.lock() {
                p.push((binding, fwd));
            }
        }
        reply(StatusCode::OK, json!(made))
    }

    /// `POST /sandbox/{n}/ports/unpublish`: a bare array of port keys; every published key matching one goes.
    async fn sbx_unpublish(&self, name: &str, b: Value) -> Resp {
        let Some(e) = self.sbx_get(name) else {
            return not_found(name);
        };
        let keys: Vec<PortSpec> = match serde_json::from_value(b) {
            Ok(v) => v,
            Err(err) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    format!("expected a bare array of port keys: {err}"),
                )
            }
        };
        let matches = |b: &PortBinding, k: &PortSpec| {
            b.sandbox_port == k.sandbox_port
                && k.host_port.is_none_or(|p| p == b.host_port)
                && k.host_ip.as_deref().is_none_or(|ip| ip == b.host_ip)
                && k.protocol.as_deref().is_none_or(|p| p == b.protocol)
        };
        let gone: Vec<Arc<Forward>> = match e.ports.lock() {
            Ok(mut p) => {
                let (out, keep): (Vec<_>, Vec<_>) = p
                    .drain(..)
                    .partition(|(b, _)| keys.iter().any(|k| matches(b, k)));
                *p = keep;
                out.into_iter().map(|(_, f)| f).collect()
            }
            Err(_) => Vec::new(),
        };
        let n = gone.len();
        for f in gone {
            f.close().await;
        }
        reply(
            StatusCode::OK,
            json!({"message": format!("unpublished {n} port key(s)")}),
        )
    }

    pub(super) fn sbx_all(&self) -> Vec<Arc<SbxEntry>> {
        self.sandboxes
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn sbx_get(&self, name: &str) -> Option<Arc<SbxEntry>> {
        self.sandboxes
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned())
    }

    fn sbx_running(&self, name: &str) -> std::result::Result<Arc<SbxEntry>, Box<Resp>> {
        let e = self
            .sbx_get(name)
            .ok_or_else(|| Box::new(not_found(name)))?;
        if !e.running.load(Ordering::SeqCst) {
            return Err(Box::new(message(
                StatusCode::CONFLICT,
                format!("sandbox {name} is not running"),
            )));
        }
        Ok(e)
    }

    async fn sbx_create(&self, b: Value) -> Resp {
        let s = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(agent), Some(ws)) = (s("agent"), s("workspace")) else {
            return message(
                StatusCode::BAD_REQUEST,
                "agent and workspace are required strings",
            );
        };
        if let Err(e) = validate::name("agent", &agent) {
            return message(StatusCode::BAD_REQUEST, e.message);
        }
        if let Err(e) = validate::workspace_dir(&ws) {
            return message(
                StatusCode::BAD_REQUEST,
                e.message.replacen("workspaceDir", "workspace", 1),
            );
        }
        let name = s("name").unwrap_or_else(|| {
            let base: String = Path::new(&ws)
                .file_name()
                .map(|f| {
                    f.to_string_lossy()
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                        .collect()
                })
                .unwrap_or_default();
            format!("{agent}-{}", base.trim_matches('-'))
        });
        if let Err(e) = validate_sandbox_name(&name) {
            return message(StatusCode::BAD_REQUEST, e.message);
        }
        let Some(template) = s("template") else {
            return message(
                StatusCode::BAD_REQUEST,
                "template is required (LocalSandboxd has no default template)",
            );
        };
        let mut env: Vec<(String, String)> = Vec::new();
        if let Some(Value::Object(m)) = b.get("environment") {
            for (k, v) in m {
                env.push((k.clone(), v.as_str().unwrap_or_default().to_string()));
            }
        }
        let mut extra = Vec::new();
        if let Some(Value::Array(a)) = b.get("additional_workspaces") {
            for w in a {
                let Some(dir) = w.get("dir").and_then(Value::as_str) else {
                    return message(
                        StatusCode::BAD_REQUEST,
                        "additional_workspaces entries need a dir",
                    );
                };
                if let Err(e) = validate::workspace_dir(dir) {
                    return message(StatusCode::BAD_REQUEST, e.message);
                }
                let ro = w.get("read_only").and_then(Value::as_bool).unwrap_or(false);
                extra.push(format!("{dir}:{dir}{}", if ro { ":ro" } else { "" }));
            }
        }
        let labels: BTreeMap<String, String> = match b.get("labels") {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            _ => BTreeMap::new(),
        };
        let key = format!("sbx:{name}");
        if self.shutdown.is_cancelled() {
            return message(StatusCode::SERVICE_UNAVAILABLE, "LocalSandboxd is stopping");
        }
        let claim = match self.sbx_get(&name) {
            Some(_) => None,
            None => self.sbx_claim(
                &key,
                Work::Creating {
                    workspace: PathBuf::from(&ws),
                },
            ),
        };
        let Some(_claim) = claim else {
            return message(
                StatusCode::CONFLICT,
                format!("sandbox {name} already exists"),
            );
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let r = self
            .sbx_create_inner(&name, &agent, &ws, &template, env, extra, labels, id)
            .await;
        match r {
            Ok(e) => reply(
                StatusCode::CREATED,
                json!({"name": e.name, "agent": e.agent, "status": "running", "workspace": e.workspace}),
            ),
            // Whatever failed once a stop began (the engine going away under a copy, say) is the stop's doing.
            Err(_) if self.shutdown.is_cancelled() => message(
                StatusCode::SERVICE_UNAVAILABLE,
                "LocalSandboxd stopped while the sandbox was starting",
            ),
            Err(e) => err_resp(e),
        }
    }

    /// Make sandbox `name` with id `id` (the sbx routes and v1's background create share it); the caller holds
    /// the name's claim.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn sbx_create_inner(
        &self,
        name: &str,
        agent: &str,
        ws: &str,
        template: &str,
        env: Vec<(String, String)>,
        extra: Vec<String>,
        labels: BTreeMap<String, String>,
        id: String,
    ) -> Result<Arc<SbxEntry>> {
        let state_dir = self.root.join("sbx").join(name);
        let socket = state_dir.join("docker.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::invalid(format!(
                "the sandbox socket path {} is too long",
                socket.display()
            )));
        }
        make_private_dir(&self.root.join("sbx"))?;
        let _ = std::fs::remove_dir_all(&state_dir);
        make_private_dir(&state_dir)?;
        let engine_dir = self.root.join("engines").join(format!(
            "sbx-{name}.{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let create_id = uuid::Uuid::new_v4().simple().to_string();
        let fail = |e: Error| {
            let _ = std::fs::remove_dir_all(&state_dir);
            e
        };
        let engine = tokio::select! {
            r = VmEngine::start(&self.backend, name, &socket, &engine_dir) => r.map_err(fail)?,
            _ = self.shutdown.cancelled() => {
                return Err(fail(Error::new(ErrorCode::SandboxdUnavailable, "LocalSandboxd stopped while the sandbox was starting")));
            }
        };
        let built = async {
            let api = Engine::connect(&socket, &Call::default()).await?;
            if images::inspect(&api, template, &Call::default())
                .await?
                .is_none()
            {
                let source = Engine::connect(&self.template_source, &Call::default()).await.map_err(|e| {
                    Error::invalid(format!("template {template:?} is not in the sandbox engine and the template source is unreachable: {}", e.message))
                })?;
                images::copy(
                    source,
                    api.clone(),
                    template,
                    None,
                    &Call::new(None, self.shutdown.clone()),
                )
                .await
                .map_err(|e| {
                    if e.code == ErrorCode::ImageNotFound {
                        Error::invalid(format!("unknown template {template:?}"))
                    } else {
                        e
                    }
                })?;
            }
            let mut binds = vec![
                format!("{ws}:{ws}"),
                format!("{}:/var/run/docker.sock", socket.display()),
            ];
            binds.extend(extra);
            let mut env = env;
            for (k, v) in proxy_env() {
                if !env.iter().any(|(have, _)| have == &k) {
                    env.push((k, v));
                }
            }
            let mut clabels: HashMap<String, String> = labels.clone().into_iter().collect();
            clabels.insert(LABEL.into(), name.into());
            clabels.insert(CREATE_LABEL.into(), create_id.clone());
            container::run(
                api,
                RunSpec {
                    image: template.to_string(),
                    name: Some(format!(
                        "sbx-{name}-{}",
                        &uuid::Uuid::new_v4().simple().to_string()[..6]
                    )),
                    cmd: Some(vec!["sleep".into(), "2147483647".into()]),
                    env,
                    working_dir: Some(ws.to_string()),
                    binds,
                    labels: clabels,
                    init: Some(true),
                    // No network but a loopback: the proxy's listener is bound there (attach_network).
                    network_mode: Some("none".into()),
                    extra_hosts: vec![format!(
                        "host.docker.internal:{}",
                        PROXY_ADDR.split(':').next().unwrap_or("127.0.0.1")
                    )],
                    ..Default::default()
                },
                &Call::default(),
            )
            .await
        };
        let container = tokio::select! {
            r = built => r,
            _ = self.shutdown.cancelled() => Err(Error::new(ErrorCode::SandboxdUnavailable, "LocalSandboxd stopped while the sandbox was starting")),
        };
        let container = match container {
            Ok(c) => c,
            Err(e) => {
                // A run cut off half way may have left its container (on a relay, in a shared engine).
                if let Ok(api) = Engine::connect(&socket, &Call::default()).await {
                    let label = [format!("{CREATE_LABEL}={create_id}")];
                    for c in container::list(&api, true, &label, None, &Call::default())
                        .await
                        .unwrap_or_default()
                    {
                        let _ = api
                            .docker()
                            .remove_container(
                                &c.id,
                                Some(bollard::query_parameters::RemoveContainerOptions {
                                    force: true,
                                    ..Default::default()
                                }),
                            )
                            .await;
                    }
                }
                engine.stop().await;
                return Err(fail(e));
            }
        };
        let entry = Arc::new(SbxEntry {
            id,
            name: name.to_string(),
            agent: agent.to_string(),
            workspace: ws.to_string(),
            template: template.to_string(),
            labels,
            created_at: humantime_now(),
            state_dir: state_dir.clone(),
            engine,
            container,
            running: AtomicBool::new(true),
            ports: Default::default(),
            network: Default::default(),
            secret_env: Default::default(),
        });
        // The sandbox's own proxy CA: HTTPS it sends is intercepted with leaves minted from it.
        let wired = async {
            let ca = Arc::new(super::ca::ProxyCa::generate(name)?);
            install_ca(&entry.container, ca.cert_pem()).await?;
            self.proxy.set_sandbox_ca(name, ca);
            entry.attach_network(&self.proxy).await
        };
        if let Err(e) = wired.await {
            entry.teardown(&self.proxy).await;
            return Err(e);
        }
        if self.shutdown.is_cancelled() {
            entry.teardown(&self.proxy).await;
            return Err(Error::new(
                ErrorCode::SandboxdUnavailable,
                "LocalSandboxd stopped while the sandbox was starting",
            ));
        }
        if let Ok(mut m) = self.sandboxes.lock() {
            m.insert(name.to_string(), entry.clone());
        }
        Ok(entry)
    }

    async fn sbx_delete(&self, name: &str) -> Resp {
        let key = format!("sbx:{name}");
        let Some(_claim) = self.sbx_claim(&key, Work::Removing) else {
            return message(
                StatusCode::CONFLICT,
                format!("sandbox {name} is being created or removed"),
            );
        };
        let entry = self.sandboxes.lock().ok().and_then(|mut m| m.remove(name));
        let r = match entry {
            None => not_found(name),
            Some(e) => {
                e.teardown(&self.proxy).await;
                reply(
                    StatusCode::OK,
                    json!({"message": format!("sandbox {name} removed")}),
                )
            }
        };
        r
    }

    /// Claim a sandbox name (keyed apart from VM names) for a create or delete; `None` when one is under way.
    /// The claim is released when dropped, also when the request is dropped mid-way.
    pub(super) fn sbx_claim(&self, key: &str, work: Work) -> Option<Claim<'_>> {
        let mut busy = self.busy.lock().ok()?;
        if busy.contains_key(key) {
            return None;
        }
        Some(self.claim_locked(&mut busy, key, work))
    }

    async fn sbx_start_stop(&self, name: &str, start: bool) -> Resp {
        let Some(e) = self.sbx_get(name) else {
            return not_found(name);
        };
        match self.sbx_set_running(&e, start).await {
            Ok(()) => reply(
                StatusCode::OK,
                json!({"message": format!("sandbox {name} {}", if start { "started" } else { "stopped" })}),
            ),
            Err(err) => err_resp(err),
        }
    }

    /// Start or stop a sandbox's container (a started one gets the proxy bound in its new network namespace);
    /// the sbx routes and the v1 routes share it.
    pub(super) async fn sbx_set_running(&self, e: &SbxEntry, start: bool) -> Result<()> {
        let r = if start {
            match e.container.start(&Call::default()).await {
                // A started container has a new network namespace: bind the proxy there again.
                Ok(()) => e.attach_network(&self.proxy).await,
                Err(err) => Err(err),
            }
        } else {
            e.detach_network();
            e.container.stop(Some(2), &Call::default()).await
        };
        if r.is_ok() {
            e.running.store(start, Ordering::SeqCst);
        }
        r
    }

    /// `POST /sandbox/{n}/exec/attach`: create the exec in the sandbox's engine, start it attached, answer 101
    /// with `Sandboxes-Exec-Id`, then relay: client bytes → the exec's stdin (a half-close closes it), the exec's
    /// output → stdcopy frames (raw with a tty) → the client, then close.
    async fn sbx_attach(&self, name: &str, mut req: Request<Incoming>) -> Resp {
        let e = match self.sbx_running(name) {
            Ok(e) => e,
            Err(r) => return *r,
        };
        let upgrade = hyper::upgrade::on(&mut req);
        let b = match body_json(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let cmd: Vec<String> = match b.get("cmd") {
            Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "cmd must be a non-empty list of strings",
                )
            }
        };
        let env = match env_list(b.get("env").unwrap_or(&Value::Null)) {
            // The secrets' placeholders first: a variable the request sets wins.
            Ok(v) => {
                let mut all = e.secret_env.lock().map(|s| s.clone()).unwrap_or_default();
                all.extend(v);
                all
            }
            Err(m) => return message(StatusCode::BAD_REQUEST, m),
        };
        let tty = b.get("tty").and_then(Value::as_bool).unwrap_or(false);
        let s = |k: &str| {
            b.get(k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let engine = e.container.engine.clone();
        let created = engine
            .docker()
            .create_exec(
                &e.container.id,
                CreateExecOptions::<String> {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    env: Some(env),
                    cmd: Some(cmd),
                    user: s("user"),
                    working_dir: s("working_dir"),
                    ..Default::default()
                },
            )
            .await;
        let exec_id = match created {
            Ok(c) => c.id,
            Err(err) => {
                return err_resp(engine.err(
                    err,
                    crate::core::engine::Subject::Container(&e.container.id),
                ))
            }
        };
        let (output, input) = match attach::start_raw(&engine, &exec_id, tty).await {
            Ok(x) => x,
            Err(err) => {
                return err_resp(engine.err(
                    err,
                    crate::core::engine::Subject::Container(&e.container.id),
                ))
            }
        };
        let stop = self.shutdown.clone();
        // A stop() cuts the relay off (it waits for these tasks before tearing the engines down), so the client
        // sees its stream end instead of hanging.
        self.tasks.spawn(async move {
            tokio::select! {
                _ = relay(upgrade, output, input) => {}
                _ = stop.cancelled() => {}
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("Connection", "Upgrade")
            .header("Upgrade", "tcp")
            .header("Content-Type", "application/vnd.docker.raw-stream")
            .header("Sandboxes-Exec-Id", exec_id)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| message(StatusCode::INTERNAL_SERVER_ERROR, "building the upgrade"))
    }

    async fn sbx_exec_state(&self, name: &str, id: &str) -> Resp {
        let Some(e) = self.sbx_get(name) else {
            return not_found(name);
        };
        match e.container.engine.docker().inspect_exec(id).await {
            Ok(r) => reply(
                StatusCode::OK,
                json!({"id": id, "running": r.running.unwrap_or(false), "exit_code": r.exit_code}),
            ),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => message(
                StatusCode::NOT_FOUND,
                format!("exec {id} not found in sandbox {name}"),
            ),
            Err(err) => err_resp(e.container.engine.err(
                err,
                crate::core::engine::Subject::Container(&e.container.id),
            )),
        }
    }

    async fn sbx_resize(&self, name: &str, id: &str, b: Value) -> Resp {
        let Some(e) = self.sbx_get(name) else {
            return not_found(name);
        };
        let dim = |k: &str| {
            b.get(k)
                .and_then(Value::as_u64)
                .filter(|v| *v > 0 && *v <= u16::MAX as u64)
        };
        let (Some(cols), Some(rows)) = (dim("cols"), dim("rows")) else {
            return message(
                StatusCode::BAD_REQUEST,
                "cols and rows must be positive integers",
            );
        };
        let r = e
            .container
            .engine
            .docker()
            .resize_exec(
                id,
                ResizeExecOptions {
                    height: rows as u16,
                    width: cols as u16,
                },
            )
            .await;
        match r {
            Ok(()) => reply(StatusCode::OK, json!({})),
            Err(err) => err_resp(e.container.engine.err(
                err,
                crate::core::engine::Subject::Container(&e.container.id),
            )),
        }
    }

    async fn sbx_files_get(&self, name: &str, path: Option<String>) -> Resp {
        let Some(path) = path.filter(|p| !p.is_empty()) else {
            return message(StatusCode::BAD_REQUEST, "path is required");
        };
        let e = match self.sbx_running(name) {
            Ok(e) => e,
            Err(r) => return *r,
        };
        match e.container.get_archive(&path, &Call::default()).await {
            Ok(tar) => {
                let mut r = Response::new(Full::new(Bytes::from(tar)));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/x-tar"),
                );
                r
            }
            Err(err)
                if err.code == ErrorCode::PathNotFound
                    || err.code == ErrorCode::InvalidArgument
                    || err.message.contains("No such")
                    || err.message.contains("not found") =>
            {
                message(
                    StatusCode::NOT_FOUND,
                    format!("path {path} not found in sandbox {name}"),
                )
            }
            Err(err) => err_resp(err),
        }
    }

    async fn sbx_files_put(&self, name: &str, req: Request<Incoming>) -> Resp {
        let Some(path) = query_param(&req, "path").filter(|p| !p.is_empty()) else {
            return message(StatusCode::BAD_REQUEST, "path is required");
        };
        let e = match self.sbx_running(name) {
            Ok(e) => e,
            Err(r) => return *r,
        };
        let body = match Limited::new(req.into_body(), crate::core::container::MAX_READ_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(err) => return message(StatusCode::BAD_REQUEST, format!("unreadable body: {err}")),
        };
        match e.container.put_archive(&path, body, &Call::default()).await {
            Ok(()) => reply(StatusCode::OK, json!({})),
            Err(err) => err_resp(err),
        }
    }
}

/// Relay one upgraded exec connection: client bytes → the exec's stdin (EOF closes it), the exec's output → the
/// client as the engine sent it, then close. The sbx API's stream has the engine's format (Docker's multiplexed
/// frames, or a terminal's raw bytes with `tty`), so output is passed on without being taken apart: one large read
/// and one write per run of output, where demuxing and re-framing it wrote each ≤ 64 KiB piece and each 8-byte
/// header separately, which made this relay the slowest part of the route.
async fn relay(
    upgrade: hyper::upgrade::OnUpgrade,
    mut output: attach::RawOutput,
    mut input: attach::Input,
) {
    let Ok(up) = upgrade.await else { return };
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(up));
    // Aborted when the relay ends or is dropped (a stop): it holds half of the client connection open.
    let stdin = AbortOnDrop(tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if input.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = input.shutdown().await;
    }));
    let mut buf = vec![0u8; RELAY_READ];
    loop {
        match output.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    drop(stdin);
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Now as RFC 3339 (UTC, seconds).
fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

/// `YYYY-MM-DDThh:mm:ssZ` for Unix seconds.
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_lists_the_methods_of_implemented_routes_only() {
        assert_eq!(sbx_allow(&["sandbox"]), Some("OPTIONS, GET, POST"));
        assert_eq!(
            sbx_allow(&["sandbox", "x", "exec", "id"]),
            Some("OPTIONS, GET")
        );
        assert_eq!(
            sbx_allow(&["sandbox", "x", "files"]),
            Some("OPTIONS, GET, PUT")
        );
        assert_eq!(sbx_allow(&["sandbox", "x", "ports"]), None);
        assert_eq!(sbx_allow(&["sandbox", "x", "save"]), None);
        assert_eq!(sbx_allow(&["vm"]), None);
        let r = no_content_allow("OPTIONS, GET");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()[hyper::header::ALLOW], "OPTIONS, GET");
    }
}
