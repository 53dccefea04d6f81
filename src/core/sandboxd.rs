//! The sandboxd client: list/get/create/ensure/remove microVMs over the sandboxd Unix socket.
//!
//! The API is undocumented; everything read is treated as optional, unknown fields are ignored,
//! and anything that breaks the contract becomes `ERR_SANDBOXD_PROTOCOL` with the status and a body excerpt.

use super::call::{bounded, Call};
use super::error::{excerpt, Error, ErrorCode, Result};
use super::http::{encode_segment, HttpResponse, TransportError, UnixHttp};
use super::turns;
use super::validate;
use super::vm::{Vm, VmInfo};
use base64::Engine as _;
use hyper::Method;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default deadline for list/get/remove/ping.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for create/ensure (a real VM boot can take a while).
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest response body read from sandboxd.
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The socket to use: the explicit option, then `SANDBOXD_SOCKET`, then `~/.docker/sandboxes/sandboxd.sock`.
pub fn resolve_socket_path(explicit: Option<&str>) -> PathBuf {
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("SANDBOXD_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    home.join(".docker").join("sandboxes").join("sandboxd.sock")
}

/// The client. Cheap to clone; holds no connection between calls.
#[derive(Clone)]
pub struct SandboxdClient {
    http: UnixHttp,
    socket_path: PathBuf,
    state_root: PathBuf,
    timeout: Option<Duration>,
}

#[derive(Deserialize)]
struct WireVmInfo {
    vm_id: Option<serde_json::Value>,
    vm_name: Option<String>,
    agent_name: Option<String>,
    workspace_dir: Option<String>,
    status: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireVmConfig {
    socket_path: Option<String>,
    file_sharing_directories: Option<Vec<String>>,
    state_dir: Option<String>,
    asset_dir: Option<String>,
}

#[derive(Deserialize)]
struct WireCreated {
    vm_id: Option<serde_json::Value>,
    vm_name: Option<String>,
    agent_name: Option<String>,
    workspace_dir: Option<String>,
    vm_config: Option<WireVmConfig>,
    ca_cert_path: Option<String>,
    ca_cert_data: Option<String>,
}

/// Whether a listing's `status` says the VM is not usable yet. The statuses are the Sandboxes API's words for a
/// sandbox on its way up (`creating`, `starting`) and common synonyms; any other value, or none, is usable.
fn is_starting(status: Option<&serde_json::Value>) -> bool {
    let Some(serde_json::Value::String(s)) = status else {
        return false;
    };
    matches!(
        s.to_ascii_lowercase().as_str(),
        "creating" | "starting" | "pending" | "provisioning" | "booting"
    )
}

fn id_string(v: Option<serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl SandboxdClient {
    /// `socket_path`: see [`resolve_socket_path`]. `timeout`: overrides the default deadlines of every call.
    pub fn new(socket_path: Option<&str>, timeout: Option<Duration>) -> Self {
        let socket_path = resolve_socket_path(socket_path);
        let state_root = socket_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        SandboxdClient {
            http: UnixHttp::new(socket_path.clone()),
            socket_path,
            state_root,
            timeout,
        }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The directory whose `vm/<name>/` holds each VM's state (the socket's directory).
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    fn deadline(&self, call: &Call, default: Duration) -> Duration {
        call.timeout.or(self.timeout).unwrap_or(default)
    }

    fn unavailable(&self, detail: &str) -> Error {
        Error::new(
            ErrorCode::SandboxdUnavailable,
            format!(
                "sandboxd is not reachable at {} ({detail}). Docker Sandboxes need Docker Desktop 4.58+ on macOS or \
                 Windows; elsewhere run LocalSandboxd (`npx sandboxd emulator`) and pass its socketPath, \
                 or set SANDBOXD_SOCKET",
                self.socket_path.display()
            ),
        )
        .with("socketPath", self.socket_path.display().to_string())
        .with("cause", detail)
    }

    async fn exchange(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        call: &Call,
        default_timeout: Duration,
    ) -> Result<HttpResponse> {
        let deadline = self.deadline(call, default_timeout);
        let fut = async {
            // A path that exists but is not a socket gives ECONNREFUSED from connect(); say what it really is.
            match std::fs::metadata(&self.socket_path) {
                Err(_) => return Err(self.unavailable("no such socket")),
                Ok(m) => {
                    if !super::socket::is_socket(&m) {
                        return Err(self.unavailable("the path exists but is not a socket"));
                    }
                }
            }
            let res = self
                .http
                .request(method, path, body, BODY_LIMIT)
                .await
                .map_err(|t| match t {
                    TransportError::Connect { kind, detail } => {
                        self.unavailable(&detail).with("cause", format!("{kind:?}"))
                    }
                    TransportError::Exchange { detail } => Error::protocol(
                        format!("sandboxd broke off the exchange for {what}: {detail}"),
                        None,
                        b"",
                    ),
                    TransportError::Body { status, detail, .. } => Error::protocol(
                        format!("sandboxd's response to {what} was cut off: {detail}"),
                        Some(status),
                        b"",
                    ),
                })?;
            // 503: the daemon is there but not serving (LocalSandboxd answers it while stopping).
            if res.status == 503 {
                return Err(self
                    .unavailable(&format!("HTTP 503 to {what}: {}", excerpt(&res.body)))
                    .with("status", 503)
                    .with("body", excerpt(&res.body)));
            }
            Ok(res)
        };
        bounded(
            &format!("sandboxd {what}"),
            Some(deadline),
            &call.cancel,
            fut,
        )
        .await
        .map_err(|e| e.with("socketPath", self.socket_path.display().to_string()))
    }

    /// Check that sandboxd answers the contract (`GET /vm` returns a JSON array).
    pub async fn ping(&self, call: &Call) -> Result<()> {
        self.list(call).await.map(|_| ())
    }

    /// All VMs.
    pub async fn list(&self, call: &Call) -> Result<Vec<VmInfo>> {
        let res = self
            .exchange("list", Method::GET, "/vm", None, call, DEFAULT_TIMEOUT)
            .await?;
        if res.status != 200 {
            return Err(unexpected_status("GET /vm", &res));
        }
        parse_list(&res.body)
    }

    /// The VM of that name, or `None`.
    pub async fn get(&self, name: &str, call: &Call) -> Result<Option<Vm>> {
        validate::name("VM name", name)?;
        Ok(self
            .list(call)
            .await?
            .into_iter()
            .find(|v| v.name == name)
            .map(|info| Vm::from_listing(info, &self.state_root)))
    }

    /// Create a VM for `agent_name` with `workspace_dir` shared into it.
    pub async fn create(&self, agent_name: &str, workspace_dir: &str, call: &Call) -> Result<Vm> {
        validate::name("agentName", agent_name)?;
        validate::workspace_dir(workspace_dir)?;
        let body = serde_json::json!({ "agent_name": agent_name, "workspace_dir": workspace_dir });
        let res = self
            .exchange(
                "create",
                Method::POST,
                "/vm",
                Some(body.to_string().into_bytes()),
                call,
                DEFAULT_CREATE_TIMEOUT,
            )
            .await?;
        match res.status {
            200..=299 => self.parse_created(&res.body, agent_name, workspace_dir),
            409 => Err(Error::new(
                ErrorCode::VmConflict,
                format!("sandboxd already has a VM for agent {agent_name:?}"),
            )
            .with("vmName", format!("{agent_name}-vm"))
            .with("status", 409)
            .with("body", excerpt(&res.body))),
            400 | 422 => Err(Error::invalid(format!(
                "sandboxd rejected the create request: {}",
                excerpt(&res.body)
            ))
            .with("status", res.status)
            .with("body", excerpt(&res.body))),
            _ => Err(unexpected_status("POST /vm", &res)),
        }
    }

    /// Get-or-create the VM sandboxd names `<agentName>-vm`. Idempotent, also when called concurrently: every
    /// caller with the same arguments gets the same VM and one is created. A VM of that name with another
    /// workspace is `ERR_VM_CONFLICT`, never silently reused.
    ///
    /// A VM that exists but is not ready yet (a 409 while it is not listed, or listed as starting) is waited
    /// for: looked up again with a short backoff until it is listed and ready, within the call's deadline and
    /// cancellation. Concurrent ensures of one agent on one socket in this process take turns, so only the
    /// first sends a create and the others find its VM.
    pub async fn ensure(&self, agent_name: &str, workspace_dir: &str, call: &Call) -> Result<Vm> {
        validate::name("agentName", agent_name)?;
        validate::workspace_dir(workspace_dir)?;
        let deadline = self.deadline(call, DEFAULT_CREATE_TIMEOUT);
        let waiting_for = std::sync::Mutex::new(None::<&'static str>);
        let res = bounded(
            "sandboxd ensure",
            Some(deadline),
            &call.cancel,
            self.ensure_inner(agent_name, workspace_dir, call, &waiting_for),
        )
        .await;
        res.map_err(|e| {
            let why = waiting_for.lock().ok().and_then(|w| *w);
            match (e.code, why) {
                (ErrorCode::Timeout, Some(why)) => Error {
                    message: format!("{}: {why}", e.message),
                    ..e
                }
                .with("vmName", format!("{agent_name}-vm")),
                _ => e,
            }
            .with("socketPath", self.socket_path.display().to_string())
        })
    }

    async fn ensure_inner(
        &self,
        agent_name: &str,
        workspace_dir: &str,
        call: &Call,
        waiting_for: &std::sync::Mutex<Option<&'static str>>,
    ) -> Result<Vm> {
        let name = format!("{agent_name}-vm");
        let conflict = |vm: &Vm| {
            Error::new(
                ErrorCode::VmConflict,
                format!(
                    "VM {name:?} exists with workspace {:?}, not {workspace_dir:?}",
                    vm.info.workspace_dir
                ),
            )
            .with("vmName", name.clone())
            .with("existingWorkspaceDir", vm.info.workspace_dir.clone())
            .with("requestedWorkspaceDir", workspace_dir)
        };
        let set_why = |why: Option<&'static str>| {
            if let Ok(mut w) = waiting_for.lock() {
                *w = why;
            }
        };
        set_why(Some(
            "another ensure of this agent in this process was still running",
        ));
        let _turn = turns::turn(&self.socket_path.display().to_string(), agent_name)
            .lock_owned()
            .await;
        set_why(None);
        let mut backoff = turns::Backoff::default();
        let mut just_conflicted = false;
        loop {
            let why = match self.find_for(agent_name, &name, call).await? {
                Some(vm) if !same_dir(&vm.info.workspace_dir, workspace_dir) => {
                    return Err(conflict(&vm))
                }
                Some(vm) if !vm.info.starting => return Ok(vm),
                Some(_) => "sandboxd lists the VM as still starting",
                None if just_conflicted => {
                    "sandboxd answered 409 (the VM exists) but does not list it yet"
                }
                None => match self.create(agent_name, workspace_dir, call).await {
                    Ok(vm) if same_dir(&vm.info.workspace_dir, workspace_dir) => return Ok(vm),
                    Ok(vm) => return Err(conflict(&vm)),
                    // Another creator got there first: what is listed now decides, at once.
                    Err(e) if e.code == ErrorCode::VmConflict => {
                        just_conflicted = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            set_why(Some(why));
            just_conflicted = false;
            backoff.wait().await;
        }
    }

    async fn find_for(&self, agent_name: &str, name: &str, call: &Call) -> Result<Option<Vm>> {
        let list = self.list(call).await?;
        let found = list
            .iter()
            .find(|v| v.name == name)
            .or_else(|| list.iter().find(|v| v.agent_name == agent_name))
            .cloned();
        Ok(found.map(|info| Vm::from_listing(info, &self.state_root)))
    }

    /// Remove a VM. `force`: a VM that is already gone is success instead of `ERR_VM_NOT_FOUND`.
    pub async fn remove(&self, name: &str, force: bool, call: &Call) -> Result<()> {
        validate::name("VM name", name)?;
        let path = format!("/vm/{}", encode_segment(name));
        let res = self
            .exchange("remove", Method::DELETE, &path, None, call, DEFAULT_TIMEOUT)
            .await?;
        let not_found = res.status == 404
            || (res.status >= 500 && says_not_found(&res.body))
            || (res.status == 400 && says_not_found(&res.body));
        if (200..=299).contains(&res.status) {
            Ok(())
        } else if not_found {
            if force {
                Ok(())
            } else {
                Err(
                    Error::new(ErrorCode::VmNotFound, format!("no VM named {name:?}"))
                        .with("vmName", name)
                        .with("status", res.status),
                )
            }
        } else {
            Err(unexpected_status(&format!("DELETE {path}"), &res))
        }
    }

    fn parse_created(&self, body: &[u8], agent_name: &str, workspace_dir: &str) -> Result<Vm> {
        let w: WireCreated = serde_json::from_slice(body).map_err(|e| {
            Error::protocol(
                format!("sandboxd's create response is not the expected JSON object: {e}"),
                Some(200),
                body,
            )
        })?;
        let name = w.vm_name.filter(|n| !n.is_empty()).ok_or_else(|| {
            Error::protocol("sandboxd's create response has no vm_name", Some(200), body)
        })?;
        validate::name("VM name", &name).map_err(|e| {
            Error::protocol(
                format!("sandboxd returned an unusable vm_name: {}", e.message),
                Some(200),
                body,
            )
        })?;
        let info = VmInfo {
            id: id_string(w.vm_id),
            name,
            agent_name: w.agent_name.unwrap_or_else(|| agent_name.to_string()),
            workspace_dir: w.workspace_dir.unwrap_or_else(|| workspace_dir.to_string()),
            starting: false,
        };
        let mut vm = Vm::from_listing(info, &self.state_root);
        if let Some(cfg) = w.vm_config {
            if let Some(s) = cfg.socket_path.filter(|s| !s.is_empty()) {
                vm.socket_path = PathBuf::from(s);
            }
            if let Some(s) = cfg.state_dir.filter(|s| !s.is_empty()) {
                vm.state_dir = PathBuf::from(s);
            }
            if let Some(d) = cfg.file_sharing_directories {
                vm.file_sharing_directories = d;
            }
            vm.asset_dir = cfg.asset_dir;
        }
        if let Some(p) = w.ca_cert_path.filter(|s| !s.is_empty()) {
            vm.ca_cert_path = Some(PathBuf::from(&p));
            vm.ca_cert_pem = std::fs::read_to_string(&p).ok();
        }
        if let Some(data) = w.ca_cert_data.filter(|s| !s.is_empty()) {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Error::protocol(
                        "sandboxd's ca_cert_data is not base64 of a UTF-8 PEM",
                        Some(200),
                        body,
                    )
                })?;
            vm.ca_cert_pem = Some(pem);
        }
        Ok(vm)
    }
}

/// Parse `GET /vm`: a JSON array of objects with at least `vm_name`.
pub fn parse_list(body: &[u8]) -> Result<Vec<VmInfo>> {
    let items: Vec<WireVmInfo> = serde_json::from_slice(body).map_err(|e| {
        Error::protocol(
            format!("sandboxd's VM list is not the expected JSON array: {e}"),
            Some(200),
            body,
        )
    })?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            let name = w.vm_name.filter(|n| !n.is_empty()).ok_or_else(|| {
                Error::protocol(
                    format!("entry {i} of sandboxd's VM list has no vm_name"),
                    Some(200),
                    body,
                )
            })?;
            Ok(VmInfo {
                id: id_string(w.vm_id),
                name,
                agent_name: w.agent_name.unwrap_or_default(),
                workspace_dir: w.workspace_dir.unwrap_or_default(),
                starting: is_starting(w.status.as_ref()),
            })
        })
        .collect()
}

fn unexpected_status(what: &str, res: &HttpResponse) -> Error {
    Error::protocol(
        format!(
            "sandboxd answered {what} with HTTP {}: {}",
            res.status,
            excerpt(&res.body)
        ),
        Some(res.status),
        &res.body,
    )
}

fn says_not_found(body: &[u8]) -> bool {
    let s = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_ascii_lowercase();
    s.contains("not found") || s.contains("no such") || s.contains("does not exist")
}

fn same_dir(a: &str, b: &str) -> bool {
    let norm = |p: &str| {
        std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p.trim_end_matches('/')))
    };
    a == b || norm(a) == norm(b)
}
