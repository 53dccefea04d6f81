//! JS classes `Sandboxes` (the front door: one client whatever the backend) and `Sandbox` (one sandbox as an exec
//! target) over [`crate::core::sandboxes`] and [`crate::core::backend`].

use super::call::{has_call, run, AbortSignal, CallOptions, Promise};
use super::container::{
    exec_on, read_file_on, spawn_on, write_file_on, ExecOptions, WriteFileOptions,
};
use super::exec::ExecProcess;
use super::forward::{forward_on, port_arg, Forward, ForwardOptions};
use super::policy::{secrets_of, set_secrets_on, NetworkPolicy, SecretInput, SecretPlaceholder};
use crate::core::backend::{
    ExecTarget, Expiry, SandboxBackend, SandboxSpec, SandboxSummary, SnapshotSpec, SnapshotSummary,
};
use crate::core::netpolicy;
use crate::core::sandboxes::{self, Choice, ConnectOptions};
use crate::core::sbx::VersionMode;
use crate::core::v1::V1Options;
use crate::core::{Call, Error as CoreError, Result as CoreResult};
use napi::bindgen_prelude::*;
use napi::Env;
use std::collections::HashMap;
use std::sync::Arc;

/// Options for `Sandboxes.connect()`.
#[napi(object, object_to_js = false)]
pub struct SandboxesOptions<'a> {
    /// `'sbx'` (the standalone sbx daemon), `'desktop'` (the legacy `/vm` API), `'v1'` (the Docker Sandboxes API
    /// v1: Docker's cloud, or a local socket), or `'auto'` (the default: sbx when its API answers, else the legacy
    /// API; never v1).
    #[napi(ts_type = "'auto' | 'sbx' | 'desktop' | 'v1'")]
    pub backend: Option<String>,
    /// The daemon's socket: the only candidate when set. Default: `DOCKER_SANDBOXES_API`, then the sbx
    /// sockets of this OS, then the legacy `SANDBOXD_SOCKET` / `~/.docker/sandboxes/sandboxd.sock`.
    pub socket_path: Option<String>,
    /// The sbx app name (`sbx --app-name`): a separate daemon instance.
    pub app_name: Option<String>,
    /// How the sbx daemon's `api_version` is checked: `'lenient'` (default: any later 0.x), `'strict'` (only the
    /// tested range) or `'off'`.
    #[napi(ts_type = "'strict' | 'lenient' | 'off'")]
    pub version_check: Option<String>,
    /// Desktop backend: the Docker engine a template image missing in a VM is copied from (`unix:///path` or a
    /// path). Default: `DOCKER_HOST`, then `/var/run/docker.sock`.
    pub image_source: Option<String>,
    /// v1 backend: the API's base URL (`https://…`, default `DOCKER_SANDBOXES_URL`, then Docker's cloud) or
    /// `unix:///path` (a local daemon; `socketPath` says the same).
    pub endpoint: Option<String>,
    /// v1 backend: a Docker access token (default `DOCKER_SANDBOXES_TOKEN`). Never logged or put in errors.
    pub token: Option<String>,
    /// v1 backend: the Docker ID whose personal access token `pat` is exchanged for access tokens (default
    /// `DOCKER_ID`).
    pub identifier: Option<String>,
    /// v1 backend: a personal access token with the `sandbox:use` scope (default `DOCKER_PAT`).
    pub pat: Option<String>,
    /// v1 backend: where the PAT is exchanged (default `DOCKER_HUB_URL`, then `https://hub.docker.com`).
    pub hub_url: Option<String>,
    /// v1 backend: an extra CA (PEM) trusted for HTTPS besides the platform's roots.
    pub ca: Option<String>,
    /// Aborting rejects the connect with `ABORT_ERR`.
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline for connecting in milliseconds (default 30 s).
    pub timeout_ms: Option<f64>,
}

/// One sandbox as its backend lists it.
#[napi(object)]
pub struct SandboxInfo {
    pub name: String,
    /// The backend's id for it.
    pub id: String,
    /// The backend's own status word, unchanged: sbx says `running`, `stopped`, …; desktop says `running`,
    /// `stopped`, `starting`, `no-container` or `unreachable`.
    pub status: String,
    /// The agent the sandbox was made for.
    pub agent: String,
    /// The host directory mounted at the same absolute path.
    pub workspace: String,
    pub template: Option<String>,
    pub labels: HashMap<String, String>,
    /// When the backend deletes or stops it by itself (RFC 3339; v1 with `expiry`), while a deadline is armed.
    pub expires_at: Option<String>,
}

impl From<SandboxSummary> for SandboxInfo {
    fn from(s: SandboxSummary) -> Self {
        SandboxInfo {
            name: s.name,
            id: s.id,
            status: s.status,
            agent: s.agent,
            workspace: s.workspace,
            template: s.template,
            labels: s.labels.into_iter().collect(),
            expires_at: s.expires_at,
        }
    }
}

/// An extra host directory mounted at the same path.
#[napi(object)]
pub struct AdditionalWorkspace {
    /// Absolute path of an existing host directory.
    pub path: String,
    /// Mount it read-only.
    pub read_only: Option<bool>,
}

/// A deadline after which the backend deletes or stops the sandbox by itself.
#[napi(object)]
pub struct ExpiryOptions {
    /// Milliseconds from when the sandbox is ready (1 ms to a year; the service may round or cap it).
    pub after_ms: f64,
    /// `'delete'` (the default) or `'stop'`.
    #[napi(ts_type = "'delete' | 'stop'")]
    pub action: Option<String>,
}

/// What to create: `create({ agent, workspace, … })` / `ensure(…)`.
#[napi(object, object_to_js = false)]
pub struct CreateSandboxOptions<'a> {
    /// The sandbox name (a hostname label: letters, digits, `-`, `.`; ≤ 63). Default: chosen by the backend
    /// (sbx) or the agent name (desktop).
    pub name: Option<String>,
    /// The agent the sandbox is for (`claude`, `codex`, `shell`, …).
    pub agent: String,
    /// Absolute path of an existing host directory, mounted at the same path.
    pub workspace: String,
    /// The template image. sbx: default the agent's own template; desktop: required.
    pub template: Option<String>,
    /// CPUs (sbx only).
    pub cpus: Option<u32>,
    /// Memory such as `"4g"` (sbx only).
    pub memory: Option<String>,
    /// Environment for every process in the sandbox.
    pub env: Option<HashMap<String, String>>,
    /// More host directories, mounted at the same paths.
    pub additional_workspaces: Option<Vec<AdditionalWorkspace>>,
    pub labels: Option<HashMap<String, String>>,
    /// Credentials the sandbox uses through the proxy without holding them (`create` only; sbx, v1).
    pub secrets: Option<Vec<SecretInput>>,
    /// Delete or stop it by itself after a while (v1; other backends reject with `ERR_UNSUPPORTED`).
    pub expiry: Option<ExpiryOptions>,
    /// Aborting rejects with `ABORT_ERR`.
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline in milliseconds (default 15 min: a first create pulls the template).
    pub timeout_ms: Option<f64>,
}

/// Options for removing a sandbox.
#[napi(object, object_to_js = false)]
pub struct RemoveSandboxOptions<'a> {
    /// Succeed when the sandbox is already gone instead of rejecting with `ERR_SANDBOX_NOT_FOUND`.
    pub force: Option<bool>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

/// A published port.
#[napi(object)]
pub struct PublishedPort {
    /// The host address it listens on (`127.0.0.1`, `::1`, …).
    pub host_ip: String,
    pub host_port: u32,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The port inside the sandbox.
    pub sandbox_port: u32,
}

impl From<crate::core::sbx::PortBinding> for PublishedPort {
    fn from(b: crate::core::sbx::PortBinding) -> Self {
        PublishedPort {
            host_ip: b.host_ip,
            host_port: b.host_port.into(),
            protocol: b.protocol,
            sandbox_port: b.sandbox_port.into(),
        }
    }
}

/// A port to publish, or the key of published ports to remove (unset fields match any).
#[napi(object)]
pub struct PortRequest {
    /// The port inside the sandbox.
    pub sandbox_port: u32,
    /// The host port (default: the daemon picks one).
    pub host_port: Option<u32>,
    /// The host address (default: loopback).
    pub host_ip: Option<String>,
    /// `tcp` (default) or `udp`.
    pub protocol: Option<String>,
}

fn port_specs(reqs: Vec<PortRequest>) -> CoreResult<Vec<crate::core::sbx::PortSpec>> {
    reqs.into_iter()
        .map(|r| {
            Ok(crate::core::sbx::PortSpec {
                sandbox_port: port_arg(r.sandbox_port, "sandboxPort", false)?,
                host_port: r
                    .host_port
                    .map(|p| port_arg(p, "hostPort", false))
                    .transpose()?,
                host_ip: r.host_ip,
                protocol: r.protocol,
            })
        })
        .collect()
}

/// Options for `saveTemplate()`.
#[napi(object, object_to_js = false)]
pub struct SaveOptions<'a> {
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline in milliseconds (default 15 min).
    pub timeout_ms: Option<f64>,
}

/// A saved state of a sandbox that restores as a new sandbox (backends with snapshots: v1).
#[napi(object)]
pub struct SnapshotInfo {
    /// The backend's id: what `restore()` and `removeSnapshot()` take.
    pub id: String,
    /// The name given to `snapshot()`.
    pub name: String,
    pub description: String,
    /// The id of the sandbox it was taken from.
    pub sandbox_id: String,
    /// The backend's status word, unchanged (`ready` once `snapshot()` resolves).
    #[napi(ts_type = "'creating' | 'ready' | 'failed' | 'deleted' | (string & {})")]
    pub status: String,
    /// `'disk'` (files only) or `'all'` (memory too).
    #[napi(ts_type = "'disk' | 'all' | (string & {})")]
    pub capture_mode: String,
    pub size_bytes: Option<f64>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<SnapshotSummary> for SnapshotInfo {
    fn from(s: SnapshotSummary) -> Self {
        SnapshotInfo {
            id: s.id,
            name: s.name,
            description: s.description,
            sandbox_id: s.sandbox_id,
            status: s.status,
            capture_mode: s.capture_mode,
            size_bytes: s.size_bytes.map(|n| n as f64),
            created_at: s.created_at,
        }
    }
}

/// Options for `snapshot()`.
#[napi(object, object_to_js = false)]
pub struct SnapshotOptions<'a> {
    /// Its name (not empty, no `/`). Default: the sandbox name and the time in milliseconds.
    pub name: Option<String>,
    pub description: Option<String>,
    /// `'disk'` (the default: files only) or `'all'` (memory too, where the backend can).
    #[napi(ts_type = "'disk' | 'all'")]
    pub capture_mode: Option<String>,
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline in milliseconds (default 5 min).
    pub timeout_ms: Option<f64>,
}

/// Options for `restore()`.
#[napi(object, object_to_js = false)]
pub struct RestoreOptions<'a> {
    /// The new sandbox's name (rules as for `create()`).
    pub name: String,
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline in milliseconds (default 5 min).
    pub timeout_ms: Option<f64>,
}

/// Options for `removeSnapshot()`.
#[napi(object, object_to_js = false)]
pub struct RemoveSnapshotOptions<'a> {
    /// Succeed when the snapshot is already gone instead of rejecting with `ERR_SNAPSHOT_NOT_FOUND`.
    pub force: Option<bool>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

has_call!(
    SandboxesOptions,
    CreateSandboxOptions,
    RemoveSandboxOptions,
    SaveOptions,
    SnapshotOptions,
    RestoreOptions,
    RemoveSnapshotOptions
);

fn connect_options(o: Option<&SandboxesOptions>) -> CoreResult<ConnectOptions> {
    let Some(o) = o else {
        return Ok(ConnectOptions::default());
    };
    let version_mode = match o.version_check.as_deref() {
        None | Some("lenient") => VersionMode::Lenient,
        Some("strict") => VersionMode::Strict,
        Some("off") => VersionMode::Off,
        Some(other) => {
            return Err(CoreError::invalid(format!(
                "versionCheck must be 'strict', 'lenient' or 'off', got {}",
                crate::core::validate::shown(other)
            ))
            .with("argument", "versionCheck"))
        }
    };
    let image_source = o
        .image_source
        .as_deref()
        .map(crate::core::engine::socket_from_host)
        .transpose()
        .map_err(|e| e.with("argument", "imageSource"))?;
    Ok(ConnectOptions {
        backend: o
            .backend
            .as_deref()
            .map_or(Ok(Choice::Auto), Choice::parse)?,
        socket_path: o.socket_path.clone(),
        app_name: o.app_name.clone(),
        version_mode,
        timeout: None,
        image_source,
        v1: V1Options {
            endpoint: o.endpoint.clone(),
            token: o.token.clone(),
            identifier: o.identifier.clone(),
            pat: o.pat.clone(),
            hub_url: o.hub_url.clone(),
            ca_pem: o.ca.clone(),
        },
    })
}

fn spec_of(o: &CreateSandboxOptions) -> CoreResult<SandboxSpec> {
    let expiry = o
        .expiry
        .as_ref()
        .map(|x| Expiry::new(x.after_ms, x.action.as_deref(), "expiry.afterMs"))
        .transpose()?;
    Ok(SandboxSpec {
        name: o.name.clone(),
        agent: o.agent.clone(),
        workspace: o.workspace.clone(),
        template: o.template.clone(),
        cpus: o.cpus,
        memory: o.memory.clone(),
        environment: o.env.clone().unwrap_or_default().into_iter().collect(),
        additional_workspaces: o
            .additional_workspaces
            .iter()
            .flatten()
            .map(|w| (w.path.clone(), w.read_only.unwrap_or(false)))
            .collect(),
        labels: o.labels.clone().unwrap_or_default().into_iter().collect(),
        expiry,
    })
}

/// The front door: a client for whichever sandbox daemon answers. Holds no connection: nothing to close.
#[napi]
pub struct Sandboxes {
    backend: Arc<dyn SandboxBackend>,
}

/// A sandbox handle for `summary` on `backend`; `owned` when this handle made it.
async fn open(
    backend: Arc<dyn SandboxBackend>,
    summary: SandboxSummary,
    owned: bool,
    call: &Call,
) -> CoreResult<Sandbox> {
    let target = backend.target(&summary.name, call).await?;
    Ok(Sandbox {
        backend,
        target,
        info: summary,
        owned,
    })
}

#[napi]
impl Sandboxes {
    /// Find the daemon and connect: see `SandboxesOptions`. Nothing answering rejects with
    /// `ERR_SANDBOXD_UNAVAILABLE` listing every path tried (`triedPaths`); an sbx daemon outside the supported
    /// `api_version` range with `ERR_SBX_VERSION_UNSUPPORTED`.
    #[napi(catch_unwind)]
    pub fn connect(env: Env, options: Option<SandboxesOptions>) -> Result<Promise<Sandboxes>> {
        let opts = connect_options(options.as_ref());
        run(&env, options.as_ref(), move |call| async move {
            let backend = sandboxes::connect(&opts?, &call).await?;
            Ok(Sandboxes { backend })
        })
    }

    /// Which backend answered: `'sbx'`, `'desktop'` or `'v1'`.
    #[napi(catch_unwind, getter, ts_return_type = "'sbx' | 'desktop' | 'v1'")]
    pub fn backend(&self) -> String {
        self.backend.kind().to_string()
    }

    /// The daemon's socket.
    #[napi(catch_unwind, getter)]
    pub fn socket_path(&self) -> String {
        self.backend.socket()
    }

    /// Every sandbox.
    #[napi(catch_unwind)]
    pub fn list(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<SandboxInfo>>> {
        let b = self.backend.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(b.list(&call).await?.into_iter().map(Into::into).collect())
        })
    }

    /// The sandbox of that name, or `null`.
    #[napi(catch_unwind, ts_return_type = "Promise<Sandbox | null>")]
    pub fn get(
        &self,
        env: Env,
        name: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<Option<Sandbox>>> {
        let b = self.backend.clone();
        run(&env, options.as_ref(), move |call| async move {
            match b.get(&name, &call).await? {
                Some(s) => Ok(Some(open(b, s, false, &call).await?)),
                None => Ok(None),
            }
        })
    }

    /// Create a sandbox; one of that name existing already rejects with `ERR_SANDBOX_CONFLICT`. The handle
    /// owns it: `await using` removes it at the end of the scope. With `secrets`, a sandbox whose secrets cannot
    /// be set is removed again and the call rejects.
    #[napi(catch_unwind)]
    pub fn create(&self, env: Env, mut options: CreateSandboxOptions) -> Result<Promise<Sandbox>> {
        let b = self.backend.clone();
        let spec = spec_of(&options);
        let secrets = secrets_of(options.secrets.take());
        run(&env, Some(&options), move |call| async move {
            let spec = spec?;
            let s = netpolicy::create_with_secrets(&*b, &spec, &secrets, &call).await?;
            open(b, s, true, &call).await
        })
    }

    /// Get-or-create: a sandbox of that name made differently (workspace, agent, template) rejects with
    /// `ERR_SANDBOX_CONFLICT`, never silently reused. The handle does not own it (`await using` leaves it).
    #[napi(catch_unwind)]
    pub fn ensure(&self, env: Env, options: CreateSandboxOptions) -> Result<Promise<Sandbox>> {
        let b = self.backend.clone();
        let spec = spec_of(&options);
        run(&env, Some(&options), move |call| async move {
            let s = b.ensure(&spec?, &call).await?;
            open(b, s, false, &call).await
        })
    }

    /// The network policy of this daemon: rules, checks and the proxy's decision log.
    #[napi(catch_unwind, getter)]
    pub fn policy(&self) -> NetworkPolicy {
        NetworkPolicy::new(self.backend.clone(), None)
    }

    /// Remove a sandbox by name.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn remove(
        &self,
        env: Env,
        name: String,
        options: Option<RemoveSandboxOptions>,
    ) -> Result<Promise<()>> {
        let b = self.backend.clone();
        let force = options.as_ref().and_then(|o| o.force).unwrap_or(false);
        run(&env, options.as_ref(), move |call| async move {
            b.remove(&name, force, &call).await
        })
    }

    /// Every snapshot (v1; other backends reject with `ERR_UNSUPPORTED`).
    #[napi(catch_unwind)]
    pub fn snapshots(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<SnapshotInfo>>> {
        let b = self.backend.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(b.snapshots(&call)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// A new sandbox `name` from the snapshot `id`, once it runs. The handle owns it, as from `create()`.
    #[napi(catch_unwind)]
    pub fn restore(
        &self,
        env: Env,
        id: String,
        options: RestoreOptions,
    ) -> Result<Promise<Sandbox>> {
        let b = self.backend.clone();
        let name = options.name.clone();
        run(&env, Some(&options), move |call| async move {
            let s = b.restore(&id, &name, &call).await?;
            open(b, s, true, &call).await
        })
    }

    /// Delete the snapshot `id` (`force`: one already gone is success).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn remove_snapshot(
        &self,
        env: Env,
        id: String,
        options: Option<RemoveSnapshotOptions>,
    ) -> Result<Promise<()>> {
        let b = self.backend.clone();
        let force = options.as_ref().and_then(|o| o.force).unwrap_or(false);
        run(&env, options.as_ref(), move |call| async move {
            b.remove_snapshot(&id, force, &call).await
        })
    }
}

/// One sandbox: exec, spawn and files work the same on every backend.
#[napi]
pub struct Sandbox {
    backend: Arc<dyn SandboxBackend>,
    pub(crate) target: Arc<dyn ExecTarget>,
    info: SandboxSummary,
    owned: bool,
}

impl Sandbox {
    /// The host directory mounted at the same path (where agent sessions start by default).
    pub(crate) fn workspace(&self) -> String {
        self.info.workspace.clone()
    }
}

#[napi]
impl Sandbox {
    /// The sandbox name.
    #[napi(catch_unwind, getter)]
    pub fn name(&self) -> String {
        self.info.name.clone()
    }

    /// Which backend it lives on: `'sbx'`, `'desktop'` or `'v1'`.
    #[napi(catch_unwind, getter, ts_return_type = "'sbx' | 'desktop' | 'v1'")]
    pub fn backend(&self) -> String {
        self.backend.kind().to_string()
    }

    /// What the backend said when this handle was made (`refresh()` asks again).
    #[napi(catch_unwind, getter)]
    pub fn info(&self) -> SandboxInfo {
        self.info.clone().into()
    }

    /// Whether `await using` removes it (true for handles from `create()`).
    #[napi(catch_unwind, getter)]
    pub fn owned(&self) -> bool {
        self.owned
    }

    /// Replaces its secrets (see `SecretInput`); resolves with what it sees of each. Processes started afterwards
    /// get the placeholders in their environment.
    #[napi(catch_unwind)]
    pub fn set_secrets(
        &self,
        env: Env,
        secrets: Vec<SecretInput>,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<SecretPlaceholder>>> {
        set_secrets_on(
            &env,
            self.backend.clone(),
            self.info.name.clone(),
            secrets,
            options,
        )
    }

    /// This sandbox's network policy: its own rules (with the global ones), checks and log rows.
    #[napi(catch_unwind, getter)]
    pub fn policy(&self) -> NetworkPolicy {
        NetworkPolicy::new(self.backend.clone(), Some(self.info.name.clone()))
    }

    /// Ask the backend for its current state; a sandbox gone since rejects with `ERR_SANDBOX_NOT_FOUND`.
    #[napi(catch_unwind)]
    pub fn refresh(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<SandboxInfo>> {
        let (b, name) = (self.backend.clone(), self.info.name.clone());
        run(&env, options.as_ref(), move |call| async move {
            b.get(&name, &call).await?.map(Into::into).ok_or_else(|| {
                CoreError::new(
                    crate::core::ErrorCode::SandboxNotFound,
                    format!("sandbox {name:?} no longer exists"),
                )
                .with("sandbox", name)
            })
        })
    }

    /// Run `cmd` (argv, no shell) and collect its output. A non-zero exit is a result, never a rejection.
    #[napi(catch_unwind, ts_return_type = "Promise<ExecResult>")]
    pub fn exec(
        &self,
        env: Env,
        cmd: Vec<String>,
        options: Option<ExecOptions>,
    ) -> Result<Promise<ObjectRef<false>>> {
        exec_on(env, self.target.clone(), cmd, options)
    }

    /// Run `script` with `sh -c` (the script is one argv element: nothing is interpolated by the SDK).
    #[napi(catch_unwind, ts_return_type = "Promise<ExecResult>")]
    pub fn sh(
        &self,
        env: Env,
        script: String,
        options: Option<ExecOptions>,
    ) -> Result<Promise<ObjectRef<false>>> {
        exec_on(
            env,
            self.target.clone(),
            vec!["sh".into(), "-c".into(), script],
            options,
        )
    }

    /// `exec(cmd)` with its output also handed out as it arrives (`onStdout` / `onStderr`): the chosen streams'
    /// chunks through `next()`, in order; `result()` settles as `exec` would.
    #[napi(catch_unwind)]
    pub fn exec_streamed(
        &self,
        env: Env,
        cmd: Vec<String>,
        options: Option<ExecOptions>,
        stdout: bool,
        stderr: bool,
    ) -> crate::binding::exec::ExecRun {
        crate::binding::container::exec_streamed_on(
            env,
            self.target.clone(),
            cmd,
            options,
            stdout,
            stderr,
        )
    }

    /// Start `cmd` and stream it (output as an async iterator, stdin via `write`/`end`, `kill`, `wait`).
    #[napi(catch_unwind)]
    pub fn spawn(
        &self,
        env: Env,
        cmd: Vec<String>,
        options: Option<ExecOptions>,
    ) -> Result<Promise<ExecProcess>> {
        spawn_on(env, self.target.clone(), cmd, options)
    }

    /// Files in the sandbox: list, stat, exists, mkdir, remove, rename, write, read.
    #[napi(catch_unwind, getter)]
    pub fn files(&self) -> crate::binding::files::Files {
        crate::binding::files::Files::of(self.target.clone())
    }

    /// Read one regular file. A missing path is `ERR_PATH_NOT_FOUND`; a directory is `ERR_NOT_A_FILE`.
    #[napi(catch_unwind)]
    pub fn read_file(
        &self,
        env: Env,
        path: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<Buffer>> {
        read_file_on(env, self.target.clone(), path, options)
    }

    /// Write one file (its directory must exist): no exec, no shell.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn write_file(
        &self,
        env: Env,
        path: String,
        data: Either<String, Uint8Array>,
        options: Option<WriteFileOptions>,
    ) -> Result<Promise<()>> {
        write_file_on(env, self.target.clone(), path, data, options)
    }

    /// Reach `port` inside the sandbox from the host: a listener on 127.0.0.1 (`url`) whose every connection is
    /// carried by an exec tunnel (no published port needed). `await using` closes it.
    #[napi(catch_unwind)]
    pub fn forward(
        &self,
        env: Env,
        port: u32,
        options: Option<ForwardOptions>,
    ) -> Result<Promise<Forward>> {
        forward_on(env, self.target.clone(), port, options)
    }

    /// Its published ports (sbx; other backends reject with `ERR_UNSUPPORTED`).
    #[napi(catch_unwind)]
    pub fn ports(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<PublishedPort>>> {
        let (b, name) = (self.backend.clone(), self.info.name.clone());
        run(&env, options.as_ref(), move |call| async move {
            Ok(b.ports(&name, &call)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// Publish ports on the host (sbx: the daemon's route); resolves with every published port afterwards.
    #[napi(catch_unwind)]
    pub fn publish(
        &self,
        env: Env,
        ports: Vec<PortRequest>,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<PublishedPort>>> {
        let (b, name) = (self.backend.clone(), self.info.name.clone());
        let specs = port_specs(ports);
        run(&env, options.as_ref(), move |call| async move {
            let specs = specs?;
            Ok(b.publish(&name, &specs, &call)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// Unpublish every published port matching one of `ports`; resolves with the daemon's message.
    #[napi(catch_unwind)]
    pub fn unpublish(
        &self,
        env: Env,
        ports: Vec<PortRequest>,
        options: Option<CallOptions>,
    ) -> Result<Promise<String>> {
        let (b, name) = (self.backend.clone(), self.info.name.clone());
        let specs = port_specs(ports);
        run(&env, options.as_ref(), move |call| async move {
            let specs = specs?;
            b.unpublish(&name, &specs, &call).await
        })
    }

    /// Save the sandbox as a template image `tag` (sbx; LocalSandboxd answers 501: `ERR_SBX_UNSUPPORTED`).
    #[napi(catch_unwind)]
    pub fn save_template(
        &self,
        env: Env,
        tag: String,
        options: Option<SaveOptions>,
    ) -> Result<Promise<String>> {
        let (b, name) = (self.backend.clone(), self.info.name.clone());
        run(&env, options.as_ref(), move |call| async move {
            b.save(&name, &tag, &call).await
        })
    }

    /// Snapshot it (v1: it must be running); resolves once the snapshot is ready. Restore it with
    /// `Sandboxes.restore()`.
    #[napi(catch_unwind)]
    pub fn snapshot(
        &self,
        env: Env,
        options: Option<SnapshotOptions>,
    ) -> Result<Promise<SnapshotInfo>> {
        let (b, name) = (self.backend.clone(), self.info.name.clone());
        let spec = SnapshotSpec {
            name: options.as_ref().and_then(|o| o.name.clone()),
            description: options.as_ref().and_then(|o| o.description.clone()),
            capture_mode: options.as_ref().and_then(|o| o.capture_mode.clone()),
        };
        run(&env, options.as_ref(), move |call| async move {
            Ok(b.snapshot(&name, &spec, &call).await?.into())
        })
    }

    /// Re-arm its deadline to `afterMs` from now (v1: a cloud operation; a local daemon answers `unimplemented`,
    /// `ERR_UNSUPPORTED`); resolves with what the backend reports afterwards (`expiresAt`).
    #[napi(catch_unwind)]
    pub fn renew_expiry(
        &self,
        env: Env,
        after_ms: f64,
        options: Option<CallOptions>,
    ) -> Result<Promise<SandboxInfo>> {
        let (b, name) = (self.backend.clone(), self.info.name.clone());
        let expiry = Expiry::new(after_ms, None, "afterMs");
        run(&env, options.as_ref(), move |call| async move {
            Ok(b.renew_expiry(&name, expiry?.after, &call).await?.into())
        })
    }

    /// Start it if it is stopped.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn start(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<()>> {
        let (b, name) = (self.backend.clone(), self.info.name.clone());
        run(&env, options.as_ref(), move |call| async move {
            b.start(&name, &call).await
        })
    }

    /// Stop it (its files stay; `start()` resumes it).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn stop(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<()>> {
        let (b, name) = (self.backend.clone(), self.info.name.clone());
        run(&env, options.as_ref(), move |call| async move {
            b.stop(&name, &call).await
        })
    }

    /// Remove it (`force`: one already gone is success).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn remove(&self, env: Env, options: Option<RemoveSandboxOptions>) -> Result<Promise<()>> {
        let (b, name) = (self.backend.clone(), self.info.name.clone());
        let force = options.as_ref().and_then(|o| o.force).unwrap_or(false);
        run(&env, options.as_ref(), move |call| async move {
            b.remove(&name, force, &call).await
        })
    }

    /// `await using`: removes the sandbox if this handle created it (`owned`), else does nothing.
    #[napi(
        catch_unwind,
        well_known_symbol = "asyncDispose",
        ts_return_type = "Promise<void>"
    )]
    pub fn dispose(&self, env: Env) -> Result<Promise<()>> {
        let (b, name, owned) = (self.backend.clone(), self.info.name.clone(), self.owned);
        super::call::promise(&env, async move {
            if owned {
                b.remove(&name, true, &Call::default()).await?;
            }
            Ok(())
        })
    }
}
