//! JS classes `Sandboxd` and `Vm` over [`crate::core::sandboxd::SandboxdClient`].

use super::call::{has_call, js_error, promise, run, AbortSignal, CallOptions, Promise};
use crate::core::sandboxd::SandboxdClient;
use crate::core::Call;
use crate::core::{validate, vm};
use napi::bindgen_prelude::*;
use napi::Env;

/// Options for `new Sandboxd()`.
#[napi(object)]
pub struct SandboxdOptions {
    /// The sandboxd socket. Default: `SANDBOXD_SOCKET`, then `~/.docker/sandboxes/sandboxd.sock`.
    pub socket_path: Option<String>,
    /// Deadline for every call, in milliseconds. Default: 30 s for list/get/remove/ping, 5 min for create/ensure.
    pub timeout_ms: Option<f64>,
}

/// One VM as listed by sandboxd.
#[napi(object)]
pub struct VmInfo {
    /// sandboxd's VM id.
    pub id: String,
    /// The VM name (`<agentName>-vm` for VMs created through the API).
    pub name: String,
    /// The agent the VM was created for.
    pub agent_name: String,
    /// The host directory shared into the VM at the same path.
    pub workspace_dir: String,
}

impl From<vm::VmInfo> for VmInfo {
    fn from(v: vm::VmInfo) -> Self {
        VmInfo {
            id: v.id,
            name: v.name,
            agent_name: v.agent_name,
            workspace_dir: v.workspace_dir,
        }
    }
}

/// What to create: `create({ agentName, workspaceDir })` / `ensure(…)`.
#[napi(object, object_to_js = false)]
pub struct CreateVmOptions<'a> {
    /// Agent name (letters, digits, `_`, `.`, `-`); the VM is named `<agentName>-vm`.
    pub agent_name: String,
    /// Absolute path of an existing host directory, shared into the VM at the same path.
    pub workspace_dir: String,
    /// Aborting rejects with `ABORT_ERR`.
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline in milliseconds (default 5 min).
    pub timeout_ms: Option<f64>,
}

/// Options for `remove()`.
#[napi(object, object_to_js = false)]
pub struct RemoveVmOptions<'a> {
    /// Succeed when the VM is already gone instead of rejecting with `ERR_VM_NOT_FOUND`.
    pub force: Option<bool>,
    /// Aborting rejects with `ABORT_ERR`.
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline in milliseconds (default 30 s).
    pub timeout_ms: Option<f64>,
}

/// A client for the sandboxd daemon (Docker Sandboxes) on its Unix socket. Holds no connection: nothing to close.
#[napi]
pub struct Sandboxd {
    client: SandboxdClient,
}

has_call!(CreateVmOptions, RemoveVmOptions);

#[napi]
impl Sandboxd {
    /// Socket resolution: `options.socketPath`, then `SANDBOXD_SOCKET`, then `~/.docker/sandboxes/sandboxd.sock`.
    #[napi(catch_unwind, constructor)]
    pub fn new(env: Env, options: Option<SandboxdOptions>) -> Result<Self> {
        let (socket, timeout) = match options {
            Some(o) => (o.socket_path, o.timeout_ms),
            None => (None, None),
        };
        let timeout = timeout
            .map(|ms| validate::timeout_ms("timeoutMs", ms))
            .transpose()
            .map_err(|e| js_error(&env, e))?;
        Ok(Sandboxd {
            client: SandboxdClient::new(socket.as_deref(), timeout),
        })
    }

    /// The socket this client talks to.
    #[napi(catch_unwind, getter)]
    pub fn socket_path(&self) -> String {
        self.client.socket_path().display().to_string()
    }

    /// Resolves when sandboxd answers `GET /vm` as the contract says; rejects with `ERR_SANDBOXD_UNAVAILABLE`,
    /// `ERR_SANDBOXD_PROTOCOL` or `ERR_TIMEOUT` otherwise.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn ping(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<()>> {
        let c = self.client.clone();
        run(&env, options.as_ref(), move |call| async move {
            c.ping(&call).await
        })
    }

    /// Every VM sandboxd knows.
    #[napi(catch_unwind)]
    pub fn list(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<Vec<VmInfo>>> {
        let c = self.client.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(c.list(&call).await?.into_iter().map(VmInfo::from).collect())
        })
    }

    /// The VM of that name, or `null`.
    #[napi(catch_unwind, ts_return_type = "Promise<Vm | null>")]
    pub fn get(
        &self,
        env: Env,
        name: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<Option<Vm>>> {
        let c = self.client.clone();
        run(&env, options.as_ref(), move |call| async move {
            let found = c.get(&name, &call).await?;
            Ok(found.map(|inner| Vm { inner, client: c }))
        })
    }

    /// Create a VM. A VM that already exists for the agent rejects with `ERR_VM_CONFLICT` (on LocalSandboxd).
    #[napi(catch_unwind)]
    pub fn create(&self, env: Env, options: CreateVmOptions) -> Result<Promise<Vm>> {
        let c = self.client.clone();
        let (agent, ws) = (options.agent_name.clone(), options.workspace_dir.clone());
        run(&env, Some(&options), move |call| async move {
            let inner = c.create(&agent, &ws, &call).await?;
            Ok(Vm { inner, client: c })
        })
    }

    /// Get-or-create the VM for `agentName` (idempotent). An existing VM with another workspace rejects with
    /// `ERR_VM_CONFLICT`: it is never silently reused.
    #[napi(catch_unwind)]
    pub fn ensure(&self, env: Env, options: CreateVmOptions) -> Result<Promise<Vm>> {
        let c = self.client.clone();
        let (agent, ws) = (options.agent_name.clone(), options.workspace_dir.clone());
        run(&env, Some(&options), move |call| async move {
            let inner = c.ensure(&agent, &ws, &call).await?;
            Ok(Vm { inner, client: c })
        })
    }

    /// Remove a VM by name. Rejects with `ERR_VM_NOT_FOUND` unless `force` is set.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn remove(
        &self,
        env: Env,
        name: String,
        options: Option<RemoveVmOptions>,
    ) -> Result<Promise<()>> {
        let c = self.client.clone();
        let force = options.as_ref().and_then(|o| o.force).unwrap_or(false);
        run(&env, options.as_ref(), move |call| async move {
            c.remove(&name, force, &call).await
        })
    }

    /// Resolves at once: a `Sandboxd` holds no connection between calls.
    #[napi(
        catch_unwind,
        well_known_symbol = "asyncDispose",
        ts_return_type = "Promise<void>"
    )]
    pub fn dispose(&self, env: Env) -> Result<Promise<()>> {
        promise(&env, async { Ok(()) })
    }
}

/// A sandboxd microVM: its Docker engine socket, state dir and proxy CA.
#[napi]
pub struct Vm {
    inner: vm::Vm,
    client: SandboxdClient,
}

/// A `Vm` as plain data (what `JSON.stringify(vm)` shows).
#[napi(object)]
pub struct VmJson {
    pub id: String,
    pub name: String,
    pub agent_name: String,
    pub workspace_dir: String,
    pub socket_path: String,
    pub state_dir: String,
    pub file_sharing_directories: Vec<String>,
    pub ca_cert_path: Option<String>,
}

#[napi]
impl Vm {
    /// sandboxd's VM id.
    #[napi(catch_unwind, getter)]
    pub fn id(&self) -> String {
        self.inner.info.id.clone()
    }

    /// The VM name.
    #[napi(catch_unwind, getter)]
    pub fn name(&self) -> String {
        self.inner.info.name.clone()
    }

    /// The agent the VM was created for.
    #[napi(catch_unwind, getter)]
    pub fn agent_name(&self) -> String {
        self.inner.info.agent_name.clone()
    }

    /// The host directory shared into the VM (same absolute path inside).
    #[napi(catch_unwind, getter)]
    pub fn workspace_dir(&self) -> String {
        self.inner.info.workspace_dir.clone()
    }

    /// The VM's own Docker Engine socket.
    #[napi(catch_unwind, getter)]
    pub fn socket_path(&self) -> String {
        self.inner.socket_path.display().to_string()
    }

    /// The VM's state directory on the host.
    #[napi(catch_unwind, getter)]
    pub fn state_dir(&self) -> String {
        self.inner.state_dir.display().to_string()
    }

    /// Host directories synced into the VM.
    #[napi(catch_unwind, getter)]
    pub fn file_sharing_directories(&self) -> Vec<String> {
        self.inner.file_sharing_directories.clone()
    }

    /// The VM's proxy CA certificate (PEM), or `null` when sandboxd gave none.
    #[napi(catch_unwind, getter)]
    pub fn ca_cert_pem(&self) -> Option<String> {
        self.inner.ca_cert_pem.clone()
    }

    /// Where the proxy CA lives on the host, when known.
    #[napi(catch_unwind, getter)]
    pub fn ca_cert_path(&self) -> Option<String> {
        self.inner
            .ca_cert_path
            .as_ref()
            .map(|p| p.display().to_string())
    }

    /// The environment its containers need: `HTTP(S)_PROXY`/`NO_PROXY` for the host proxy, and
    /// `NODE_EXTRA_CA_CERTS`, `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`, `GIT_SSL_CAINFO` pointing at
    /// `caPath` (default `/usr/local/share/ca-certificates/sandboxd-proxy.crt`; write it with
    /// `container.trustCa(vm.caCertPem)`). Never disables TLS verification.
    #[napi(catch_unwind)]
    pub fn proxy_env(&self, ca_path: Option<String>) -> std::collections::HashMap<String, String> {
        vm::proxy_env(ca_path.as_deref().unwrap_or(vm::DEFAULT_CA_PATH))
            .into_iter()
            .collect()
    }

    /// Connect to the VM's own Docker engine (API version negotiated for this socket).
    #[napi(catch_unwind)]
    pub fn engine(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<super::engine::DockerEngine>> {
        let socket = Ok(self.inner.socket_path.clone());
        super::engine::DockerEngine::connect_to(&env, socket, options.as_ref())
    }

    /// Remove this VM. Rejects with `ERR_VM_NOT_FOUND` if it is already gone, unless `force` is set.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn remove(&self, env: Env, options: Option<RemoveVmOptions>) -> Result<Promise<()>> {
        let c = self.client.clone();
        let name = self.inner.info.name.clone();
        let force = options.as_ref().and_then(|o| o.force).unwrap_or(false);
        run(&env, options.as_ref(), move |call| async move {
            c.remove(&name, force, &call).await
        })
    }

    /// `await using vm = …` removes the VM at the end of the scope (a VM already gone is fine).
    #[napi(
        catch_unwind,
        well_known_symbol = "asyncDispose",
        ts_return_type = "Promise<void>"
    )]
    pub fn dispose(&self, env: Env) -> Result<Promise<()>> {
        let c = self.client.clone();
        let name = self.inner.info.name.clone();
        promise(&env, async move {
            c.remove(&name, true, &Call::default()).await
        })
    }

    /// Plain data for logging and `JSON.stringify` (the CA PEM is left out).
    #[napi(catch_unwind, js_name = "toJSON")]
    pub fn to_json(&self) -> VmJson {
        VmJson {
            id: self.id(),
            name: self.name(),
            agent_name: self.agent_name(),
            workspace_dir: self.workspace_dir(),
            socket_path: self.socket_path(),
            state_dir: self.state_dir(),
            file_sharing_directories: self.file_sharing_directories(),
            ca_cert_path: self.ca_cert_path(),
        }
    }
}
