//! LocalSandboxd: the sandboxd API (`GET /vm`, `POST /vm`, `DELETE /vm/{name}`) served on a Unix socket on
//! Linux, each VM backed by a real Docker engine. For tests and CI where Docker Desktop is not available.
//!
//! Answers the real daemon leaves unknown are chosen here (and documented in the README):
//! a second create for the same agent is `409 {"message"}`; deleting an unknown VM is `404 {"message"}`;
//! bad input is `400 {"message"}`.
//!
//! Creates of one VM name are serialised: a create that arrives while another for the same agent and workspace
//! is starting its engine waits for it and then answers as if it had come after it (409 once the VM exists, or
//! it creates the VM itself if the first create failed), so concurrent `ensure`s from any number of processes
//! end with one VM. A create for the same agent with another workspace gets 409 at once. `GET /vm` lists a VM
//! once its engine answers, never while it is starting: a listed VM is always usable.

pub mod ca;
mod credentials;
// The dockerd backend and the sweep of stale roots read /proc and unmount: Linux only. Elsewhere (macOS) a
// stand-in refuses the dockerd backend and removes no root; the relay backend and the server run on any Unix.
#[cfg_attr(not(target_os = "linux"), path = "dockerd_off_linux.rs")]
pub mod dockerd;
pub mod endpoint;
pub mod engine;
mod netns;
mod options;
mod policy_routes;
pub mod proxy;
pub mod sbx;
#[cfg_attr(not(target_os = "linux"), path = "stale_off_linux.rs")]
pub mod stale;
mod v1;

pub use options::{docker_host_path, BackendKind, LocalOptions, ProxySettings};

use crate::core::error::{Error, ErrorCode, Result};
use crate::core::http::UnixHttp;
use crate::core::validate;
use base64::Engine as _;
use bytes::Bytes;
use engine::{Backend, VmEngine};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long `stop()` lets requests being served finish before their connections are dropped.
const STOP_DRAIN: Duration = Duration::from_secs(10);

/// Longest socket path the kernel accepts: sun_path holds 108 bytes on Linux, 104 on macOS, the NUL included.
const MAX_SOCKET_PATH: usize = if cfg!(target_os = "linux") { 107 } else { 103 };

struct VmEntry {
    id: String,
    name: String,
    agent_name: String,
    workspace_dir: String,
    state_dir: PathBuf,
    engine: VmEngine,
}

/// What is under way for one VM name.
enum Work {
    /// A create for this workspace (see [`dir_key`]) is starting the VM's engine.
    Creating { workspace: PathBuf },
    /// A delete is stopping the VM's engine.
    Removing,
}

/// A claimed VM name: the work under way and a channel that closes when the claim is released.
struct Busy {
    work: Work,
    done: tokio::sync::watch::Receiver<()>,
}

/// Holds a VM name in [`Inner::busy`] until dropped, also when the request future is dropped mid-way (a client
/// that disconnects), so a name is never left claimed. Dropping it wakes every request waiting for the name.
struct Claim<'a> {
    inner: &'a Inner,
    name: String,
    _done: tokio::sync::watch::Sender<()>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.inner.busy.lock() {
            b.remove(&self.name);
        }
    }
}

struct Inner {
    root: PathBuf,
    owns_root: bool,
    socket_path: PathBuf,
    backend: Backend,
    vms: Mutex<BTreeMap<String, Arc<VmEntry>>>,
    /// The sbx API's sandboxes, by name.
    sandboxes: Mutex<BTreeMap<String, Arc<sbx::SbxEntry>>>,
    /// The engine a template missing from a new sandbox's engine is copied from (`docker_host`, `DOCKER_HOST`,
    /// `/var/run/docker.sock`).
    template_source: PathBuf,
    /// Names with a create or delete under way; at most one at a time per name.
    busy: Mutex<HashMap<String, Busy>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    stopped: AtomicBool,
    /// The filtering proxy: the sandboxes' only way out (see `sbx::PROXY_ADDR`).
    proxy: Arc<proxy::Proxy>,
    /// The Docker Sandboxes API v1 view of the sbx sandboxes (`/v1/…`).
    v1: v1::State,
}

/// A running LocalSandboxd. Dropping it without [`LocalSandboxd::stop`] kills everything synchronously.
#[derive(Clone)]
pub struct LocalSandboxd {
    inner: Arc<Inner>,
}

fn emu(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::Emulator, msg)
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

fn resolve_backend(opts: &LocalOptions) -> Result<Backend> {
    let is_root = unsafe { libc::geteuid() } == 0;
    let linux = cfg!(target_os = "linux");
    let dockerd = opts
        .dockerd_path
        .clone()
        .or_else(|| which("dockerd"))
        .filter(|_| linux);
    let relay_target = || -> Result<PathBuf> {
        match opts
            .docker_host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
        {
            Some(h) if !h.is_empty() => docker_host_path(&h),
            _ => Ok(PathBuf::from("/var/run/docker.sock")),
        }
    };
    match opts.backend {
        Some(BackendKind::Relay) => Ok(Backend::Relay {
            target: relay_target()?,
        }),
        Some(BackendKind::Dockerd) if !linux => Err(emu(
            "the dockerd backend runs on Linux only (it needs Linux mounts, cgroups and /proc); \
             use backend 'relay' over an existing engine (Docker Desktop's or colima's)",
        )),
        Some(BackendKind::Dockerd) => match dockerd {
            Some(d) if is_root => Ok(Backend::Dockerd { dockerd: d }),
            Some(_) => Err(emu(
                "the dockerd backend needs root (dockerd runs as root); use backend 'relay'",
            )),
            None => Err(emu(
                "the dockerd backend needs dockerd (apt-get install docker.io); use backend 'relay'",
            )),
        },
        None => match dockerd {
            Some(d) if is_root => Ok(Backend::Dockerd { dockerd: d }),
            _ => Ok(Backend::Relay {
                target: relay_target()?,
            }),
        },
    }
}

/// The proxy with the settings' resolver and preset (it listens only where sandboxes are attached).
fn start_proxy(settings: &ProxySettings) -> proxy::Proxy {
    let mut resolver = if settings.system_resolver {
        proxy::Resolver::system()
    } else {
        proxy::Resolver::fixed()
    };
    // Inside a sandbox this name is the host; asked of the proxy it is the host's loopback (default-blocked
    // unless a rule lifts it), as on the real products. The settings' own answers come after and win.
    resolver = resolver.with(
        "host.docker.internal",
        &[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
    );
    for (name, addrs) in &settings.hosts {
        resolver = resolver.with(name, addrs);
    }
    let policy = Arc::new(crate::core::policy::Policy::new(settings.preset));
    proxy::Proxy::new(
        policy,
        proxy::ProxyOptions {
            resolver,
            extra_roots_pem: settings.upstream_ca_pem.clone(),
            ..Default::default()
        },
    )
}

fn make_private_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| emu(format!("creating {}: {e}", p.display())))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| emu(format!("chmod 0700 {}: {e}", p.display())))
}

/// Refuse a root we do not own or that others can write to: its sockets would be theirs to replace.
fn check_root(root: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(root)
        .map_err(|e| emu(format!("reading {}: {e}", root.display())))?;
    if !m.is_dir() {
        return Err(
            Error::invalid(format!("root {} is not a directory", root.display()))
                .with("argument", "root"),
        );
    }
    let uid = unsafe { libc::geteuid() };
    if m.uid() != uid {
        return Err(Error::invalid(format!(
            "root {} is owned by uid {}, not by this process (uid {uid}); refusing to serve from it",
            root.display(),
            m.uid()
        ))
        .with("argument", "root"));
    }
    if m.mode() & 0o022 != 0 {
        return Err(Error::invalid(format!(
            "root {} is writable by group or others (mode {:o}); refusing to serve from it",
            root.display(),
            m.mode() & 0o777
        ))
        .with("argument", "root"));
    }
    Ok(())
}

impl LocalSandboxd {
    /// Bind the sandboxd socket and start serving.
    pub async fn start(opts: LocalOptions) -> Result<LocalSandboxd> {
        let backend = resolve_backend(&opts)?;
        let template_source = match opts
            .docker_host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
        {
            Some(h) if !h.is_empty() => docker_host_path(&h)?,
            _ => PathBuf::from("/var/run/docker.sock"),
        };
        let (root, owns_root) = match &opts.root {
            Some(r) => {
                if !r.is_absolute() {
                    return Err(
                        Error::invalid("root must be an absolute path").with("argument", "root")
                    );
                }
                if !r.exists() {
                    make_private_dir(r)?;
                }
                check_root(r)?;
                (r.clone(), false)
            }
            None => {
                // Roots left by processes that died without cleaning up go first (see `stale`).
                let _ = tokio::task::spawn_blocking(|| stale::sweep(Path::new("/tmp"))).await;
                let p = PathBuf::from(format!(
                    "/tmp/{}{}",
                    stale::ROOT_PREFIX,
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ));
                make_private_dir(&p)?;
                (p, true)
            }
        };
        let socket_path = root.join("sandboxd.sock");
        if socket_path.exists() {
            // Another server may be live there; never steal its socket.
            let live = UnixHttp::new(&socket_path)
                .request(Method::GET, "/vm", None, 1 << 20)
                .await
                .is_ok();
            if live {
                return Err(emu(format!(
                    "a sandboxd already answers at {}",
                    socket_path.display()
                ))
                .with("socketPath", socket_path.display().to_string()));
            }
            let _ = std::fs::remove_file(&socket_path);
        }
        make_private_dir(&root.join("vm"))?;
        let listener = UnixListener::bind(&socket_path)
            .map_err(|e| emu(format!("binding {}: {e}", socket_path.display())))?;
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| emu(format!("chmod {}: {e}", socket_path.display())))?;
        if owns_root {
            // Written once the socket is bound, so a sweep never sees an owner file without a live socket
            // while this process runs.
            std::fs::write(root.join(stale::OWNER_FILE), stale::owner_line())
                .map_err(|e| emu(format!("writing {}: {e}", root.display())))?;
        }
        let inner = Arc::new(Inner {
            root,
            owns_root,
            socket_path,
            backend,
            vms: Mutex::new(BTreeMap::new()),
            sandboxes: Mutex::new(BTreeMap::new()),
            template_source,
            busy: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            stopped: AtomicBool::new(false),
            proxy: Arc::new(start_proxy(&opts.proxy)),
            v1: v1::State::default(),
        });
        let server = inner.clone();
        inner
            .tasks
            .spawn(async move { server.serve(listener).await });
        Ok(LocalSandboxd { inner })
    }

    pub fn socket_path(&self) -> &Path {
        &self.inner.socket_path
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// PIDs of the VM engines' processes (dockerd backend), for tests that check nothing is left behind.
    pub fn engine_pids(&self) -> Vec<u32> {
        self.inner
            .vms
            .lock()
            .map(|v| v.values().filter_map(|e| e.engine.pid()).collect())
            .unwrap_or_default()
    }

    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Stop serving (requests being served are answered, up to [`STOP_DRAIN`]; an engine start is cut off and
    /// answered 503), stop every VM's engine, and remove what was created. Idempotent.
    pub async fn stop(&self) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            // A concurrent stop is already running: wait for it to finish.
            self.inner.tasks.wait().await;
            return;
        }
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let vms: Vec<Arc<VmEntry>> = match self.inner.vms.lock() {
            Ok(mut v) => std::mem::take(&mut *v).into_values().collect(),
            Err(_) => Vec::new(),
        };
        let sandboxes: Vec<Arc<sbx::SbxEntry>> = match self.inner.sandboxes.lock() {
            Ok(mut v) => std::mem::take(&mut *v).into_values().collect(),
            Err(_) => Vec::new(),
        };
        futures::future::join_all(vms.iter().map(|vm| async move {
            vm.engine.stop().await;
            let _ = std::fs::remove_dir_all(&vm.state_dir);
        }))
        .await;
        futures::future::join_all(sandboxes.iter().map(|s| s.teardown(&self.inner.proxy))).await;
        self.inner.v1_remove_snapshots().await;
        self.inner.proxy.shutdown().await;
        self.inner.cleanup_files();
    }

    /// A handle that does not keep the server alive (for exit hooks).
    pub fn downgrade(&self) -> WeakLocalSandboxd {
        WeakLocalSandboxd(Arc::downgrade(&self.inner))
    }

    /// Synchronous last-resort teardown, for process exit: kills engines without waiting for them.
    pub fn kill_now(&self) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.shutdown.cancel();
        let vms: Vec<Arc<VmEntry>> = match self.inner.vms.lock() {
            Ok(mut v) => std::mem::take(&mut *v).into_values().collect(),
            Err(_) => Vec::new(),
        };
        for vm in vms {
            vm.engine.kill_now();
            let _ = std::fs::remove_dir_all(&vm.state_dir);
        }
        self.inner.kill_sandboxes();
        self.inner.cleanup_files();
    }
}

/// See [`LocalSandboxd::downgrade`].
pub struct WeakLocalSandboxd(std::sync::Weak<Inner>);

impl WeakLocalSandboxd {
    /// Kill everything now if the server is still alive and not stopped.
    pub fn kill_now(&self) {
        if let Some(inner) = self.0.upgrade() {
            LocalSandboxd { inner }.kill_now();
        }
    }
}

#[derive(Deserialize)]
struct CreateBody {
    agent_name: Option<Value>,
    workspace_dir: Option<Value>,
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn message(status: StatusCode, msg: impl Into<String>) -> Resp {
    reply(status, json!({ "message": msg.into() }))
}

impl Inner {
    async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let me = self.clone();
            let stop = self.shutdown.clone();
            self.tasks.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, std::convert::Infallible>(me.route(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = stop.cancelled() => {}
                }
                // Stopping: idle connections close now; a request being served gets its answer (a create
                // still starting its engine is cut off and answered 503) unless it takes longer than the drain.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(STOP_DRAIN, conn).await;
            });
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }

    async fn route(self: &Arc<Self>, req: Request<Incoming>) -> Resp {
        if req.uri().path() == "/v1" || req.uri().path().starts_with("/v1/") {
            return v1::route(self, req).await;
        }
        let req = match self.route_sbx(req).await {
            Ok(resp) => return resp,
            Err(req) => req,
        };
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/vm") => self.list(),
            (&Method::POST, "/vm") => {
                let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return message(StatusCode::BAD_REQUEST, format!("unreadable body: {e}"))
                    }
                };
                self.create(&body).await
            }
            (&Method::DELETE, p) if p.starts_with("/vm/") => {
                let raw = &p["/vm/".len()..];
                let name = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
                self.delete(&name).await
            }
            (_, "/vm") => message(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => message(StatusCode::NOT_FOUND, format!("no route for {path}")),
        }
    }

    fn list(&self) -> Resp {
        let vms = self.vms.lock().map(|v| {
            v.values()
                .map(|e| {
                    json!({
                        "vm_id": e.id,
                        "vm_name": e.name,
                        "agent_name": e.agent_name,
                        "workspace_dir": e.workspace_dir,
                    })
                })
                .collect::<Vec<_>>()
        });
        match vms {
            Ok(v) => reply(StatusCode::OK, Value::Array(v)),
            Err(_) => message(StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned"),
        }
    }

    /// Claim `name` for `work` in a locked `busy` map; the caller has checked that it is free.
    fn claim_locked<'a>(
        &'a self,
        busy: &mut HashMap<String, Busy>,
        name: &str,
        work: Work,
    ) -> Claim<'a> {
        let (tx, rx) = tokio::sync::watch::channel(());
        busy.insert(name.to_string(), Busy { work, done: rx });
        Claim {
            inner: self,
            name: name.to_string(),
            _done: tx,
        }
    }

    async fn create(&self, body: &[u8]) -> Resp {
        let parsed: CreateBody = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    format!("body is not a JSON object: {e}"),
                )
            }
        };
        let (Some(Value::String(agent)), Some(Value::String(ws))) =
            (parsed.agent_name, parsed.workspace_dir)
        else {
            return message(
                StatusCode::BAD_REQUEST,
                "agent_name and workspace_dir are required strings",
            );
        };
        if let Err(e) = validate::name("agent_name", &agent) {
            return message(StatusCode::BAD_REQUEST, e.message);
        }
        if let Err(e) = validate::workspace_dir(&ws) {
            return message(StatusCode::BAD_REQUEST, e.message);
        }
        let name = format!("{agent}-vm");
        let state_dir = self.root.join("vm").join(&name);
        let socket = state_dir.join("docker.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return message(
                StatusCode::BAD_REQUEST,
                format!(
                    "the VM socket path {} would exceed {MAX_SOCKET_PATH} bytes; use a shorter root or agent name",
                    socket.display()
                ),
            );
        }
        // Wait while another request works on this name, then decide: a VM that exists is 409, a free name is
        // ours to create.
        let workspace = dir_key(&ws);
        let claim = loop {
            if self.shutdown.is_cancelled() {
                return message(StatusCode::SERVICE_UNAVAILABLE, "LocalSandboxd is stopping");
            }
            let waiting = {
                let Ok(mut busy) = self.busy.lock() else {
                    return message(StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned");
                };
                let exists = self
                    .vms
                    .lock()
                    .map(|v| v.contains_key(&name))
                    .unwrap_or(true);
                if exists {
                    return message(StatusCode::CONFLICT, format!("vm {name:?} already exists"));
                }
                match busy.get(&name) {
                    None => {
                        let work = Work::Creating {
                            workspace: workspace.clone(),
                        };
                        break self.claim_locked(&mut busy, &name, work);
                    }
                    // Another workspace can never be served by the VM being created: say so now, not after it.
                    Some(Busy {
                        work: Work::Creating { workspace: theirs },
                        ..
                    }) if *theirs != workspace => {
                        return message(
                            StatusCode::CONFLICT,
                            format!("vm {name:?} is being created for another workspace"),
                        )
                    }
                    Some(b) => b.done.clone(),
                }
            };
            let mut waiting = waiting;
            tokio::select! {
                // The claim's sender is dropped when that request finishes: `changed` then returns.
                _ = waiting.changed() => {}
                _ = self.shutdown.cancelled() => {}
            }
        };
        let result = self
            .create_vm(&name, &agent, &ws, &state_dir, &socket)
            .await;
        drop(claim);
        match result {
            Ok(v) => reply(StatusCode::OK, v),
            Err(e) if e.code == ErrorCode::SandboxdUnavailable => {
                message(StatusCode::SERVICE_UNAVAILABLE, e.message)
            }
            Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, e.message),
        }
    }

    async fn create_vm(
        &self,
        name: &str,
        agent: &str,
        ws: &str,
        state_dir: &Path,
        socket: &Path,
    ) -> Result<Value> {
        let _ = std::fs::remove_dir_all(state_dir);
        make_private_dir(state_dir)?;
        let ca_dir = state_dir.join("proxy_cacerts");
        make_private_dir(&ca_dir)?;
        let pem = ca::generate_ca_pem(name)?;
        let ca_path = ca_dir.join("proxy-ca.crt");
        let write = |p: &Path, data: &[u8]| {
            std::fs::write(p, data).map_err(|e| emu(format!("writing {}: {e}", p.display())))
        };
        write(&ca_path, pem.as_bytes())?;
        write(
            &state_dir.join("proxy-config.json"),
            serde_json::to_string_pretty(&default_policy())
                .unwrap_or_default()
                .as_bytes(),
        )?;
        // A fresh directory per start: a watchdog still cleaning up after an engine whose start was cut off (a
        // stop during a create) sweeps processes and deletes directories by path, so it must never share
        // paths with the engine of a later VM of the same name.
        let engine_dir = self.root.join("engines").join(format!(
            "{name}.{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        // A stop cuts the start off (the engine's watchdog cleans up) and the request is answered 503.
        let started = tokio::select! {
            r = VmEngine::start(&self.backend, name, socket, &engine_dir) => r,
            _ = self.shutdown.cancelled() => Err(Error::new(
                ErrorCode::SandboxdUnavailable,
                "LocalSandboxd stopped while the VM was starting",
            )),
        };
        let engine = match started {
            Ok(e) => e,
            Err(e) => {
                let _ = std::fs::remove_dir_all(state_dir);
                let _ = std::fs::remove_dir_all(&engine_dir);
                return Err(e);
            }
        };
        let entry = Arc::new(VmEntry {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            agent_name: agent.to_string(),
            workspace_dir: ws.to_string(),
            state_dir: state_dir.to_path_buf(),
            engine,
        });
        let body = json!({
            "vm_id": entry.id,
            "vm_name": name,
            "vm_config": {
                "socketPath": socket.display().to_string(),
                "fileSharingDirectories": [ws],
                "stateDir": state_dir.display().to_string(),
                "assetDir": self.root.join("assets").display().to_string(),
            },
            "ca_cert_path": ca_path.display().to_string(),
            "ca_cert_data": base64::engine::general_purpose::STANDARD.encode(pem.as_bytes()),
        });
        // Stopped while the engine was starting: tear it down instead of registering it.
        if self.shutdown.is_cancelled() {
            entry.engine.stop().await;
            let _ = std::fs::remove_dir_all(state_dir);
            return Err(Error::new(
                ErrorCode::SandboxdUnavailable,
                "LocalSandboxd stopped while the VM was starting",
            ));
        }
        if let Ok(mut v) = self.vms.lock() {
            v.insert(name.to_string(), entry);
        }
        Ok(body)
    }

    async fn delete(&self, name: &str) -> Resp {
        if validate::name("VM name", name).is_err() {
            return message(
                StatusCode::NOT_FOUND,
                format!("vm {} not found", validate::shown(name)),
            );
        }
        let claim = {
            let Ok(mut busy) = self.busy.lock() else {
                return message(StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned");
            };
            if busy.contains_key(name) {
                return message(
                    StatusCode::CONFLICT,
                    format!("vm {name:?} is being created or removed"),
                );
            }
            self.claim_locked(&mut busy, name, Work::Removing)
        };
        let entry = self.vms.lock().ok().and_then(|mut v| v.remove(name));
        let resp = match entry {
            None => message(StatusCode::NOT_FOUND, format!("vm {name:?} not found")),
            Some(vm) => {
                vm.engine.stop().await; // removes the engine's own directory
                let _ = std::fs::remove_dir_all(&vm.state_dir);
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_else(|_| message(StatusCode::NO_CONTENT, ""))
            }
        };
        drop(claim);
        resp
    }

    /// Synchronous last-resort teardown of the sbx sandboxes (their engines; a relay engine's containers are
    /// left to that engine).
    fn kill_sandboxes(&self) {
        if let Ok(mut v) = self.sandboxes.lock() {
            for (_, s) in std::mem::take(&mut *v) {
                s.kill_now();
            }
        }
    }

    fn cleanup_files(&self) {
        let _ = std::fs::remove_file(&self.socket_path);
        let _ = std::fs::remove_dir(self.root.join("sbx"));
        let _ = std::fs::remove_dir_all(self.root.join("engines"));
        let _ = std::fs::remove_dir_all(self.root.join(v1::ENDPOINT_DIR));
        let _ = std::fs::remove_dir_all(self.root.join(v1::WORKSPACE_DIR));
        let _ = std::fs::remove_dir(self.root.join("vm"));
        if self.owns_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Only reached when every handle is gone without stop(): leave nothing running.
        if !self.stopped.swap(true, Ordering::SeqCst) {
            if let Ok(mut v) = self.vms.lock() {
                for (_, vm) in std::mem::take(&mut *v) {
                    vm.engine.kill_now();
                    let _ = std::fs::remove_dir_all(&vm.state_dir);
                }
            }
            self.kill_sandboxes();
            self.cleanup_files();
        }
    }
}

/// A workspace directory as compared between creates: canonicalised, so a trailing slash or a symlink names
/// the same directory (the client's `ensure` compares the same way).
fn dir_key(dir: &str) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| PathBuf::from(dir.trim_end_matches('/')))
}

/// sandboxd's default network policy for new VMs.
pub fn default_policy() -> Value {
    json!({
        "policy": "allow",
        "network": {
            "allowedDomains": [],
            "blockedDomains": [],
            "blockCIDR": [
                "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
                "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10"
            ]
        }
    })
}
