//! The seam between "what a sandbox is" and "how a backend provides it".
//!
//! Two small traits, written so exec, files and the agent tunnel are implemented once over anything that runs
//! processes, and so a new backend (sbx today, the cloud later) only says how to list, create and reach sandboxes:
//! - [`SandboxBackend`]: the lifecycle of named sandboxes (list/get/create/ensure/start/stop/remove) and a way to
//!   reach one as an [`ExecTarget`].
//! - [`ExecTarget`]: a place where commands run and files live (a container in a VM's engine, an sbx sandbox).
//!
//! The traits return boxed futures so both can be used as trait objects (`Arc<dyn ExecTarget>`): the binding
//! holds one handle type whatever the backend.

use super::container::{single_file_tar, validate_container_path, Container};
use super::error::{Error, ErrorCode, Result};
use super::exec::{Chunk, ExecOutput, ExecSpec, ExitStatus, Process, Run};
use super::files::FileOps;
use super::netpolicy::{
    PolicyCheck, PolicyLogEntry, PolicyRule, RuleChange, SecretPlaceholder, SecretSpec,
};
use super::sbx::{PortBinding, PortSpec};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A running process started by [`ExecTarget::spawn`]: output in order, stdin with a real half-close, kill, wait.
pub trait ProcessHandle: Send + Sync {
    /// The next output chunk; `None` once both streams ended.
    fn next(&self) -> BoxFuture<'_, Option<Result<Chunk>>>;
    /// The next run of one stream's output, at most `max` bytes, as the pieces it arrived in (see
    /// [`Process::next_run`]; `coalesce` lets a bulk stream gather more before answering). Default: one chunk,
    /// split at `max` with the rest put back.
    fn next_run(&self, max: usize, coalesce: bool) -> BoxFuture<'_, Option<Result<Run>>> {
        let _ = coalesce;
        Box::pin(async move {
            let c = match self.next().await? {
                Ok(c) => c,
                Err(e) => return Some(Err(e)),
            };
            let (stderr, mut data) = c.into_parts();
            if data.len() > max.max(1) {
                let rest = data.split_off(max.max(1));
                self.unread(Ok(Chunk::new(stderr, rest)));
            }
            Some(Ok(Run::from(Chunk::new(stderr, data))))
        })
    }
    /// Put output back in front of what is queued: it is what the next read returns.
    fn unread(&self, chunk: Result<Chunk>);
    /// The process id where it runs, once known (`None` where the backend does not say).
    fn pid(&self) -> Option<i64> {
        None
    }
    /// Resize the process's terminal (spawned with `tty`).
    fn resize(&self, cols: u16, rows: u16) -> BoxFuture<'_, Result<()>>;
    /// Drop all further output (and what is queued): for callers that only want the exit.
    fn discard_output(&self);
    /// The output has a reader from now on, even before its first read: `wait()` then leaves the output to it
    /// instead of discarding it (JS Readables that pull only when read).
    fn mark_read(&self);
    /// Let go of it: output discarded and, if it still runs, its tree sent TERM, then KILL; bounded.
    fn dispose(&self) -> BoxFuture<'_, ()>;
    /// Write to stdin (the process must have been spawned interactive).
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<()>>;
    /// Close stdin: the process reads EOF.
    fn end(&self) -> BoxFuture<'_, Result<()>>;
    /// Send `signal` to the process tree.
    fn kill<'a>(&'a self, signal: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Wait for the exit (output nobody reads is discarded so the process cannot stall).
    fn wait<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, Result<ExitStatus>>;
}

/// Something commands run in and files live in.
pub trait ExecTarget: Send + Sync {
    /// A short human description for messages (`container abc123`, `sbx sandbox dev`).
    fn describe(&self) -> String;
    /// The detail field that names this target in errors: `("container", id)`, `("sandbox", name)`. The default
    /// is `("target", describe())`.
    fn subject(&self) -> (&'static str, String) {
        ("target", self.describe())
    }
    /// Run to completion and collect the output (the [`ExecSpec`] timeout, cap and stdin apply).
    fn exec(&self, spec: ExecSpec, cancel: CancellationToken) -> BoxFuture<'_, Result<ExecOutput>>;
    /// Start a streaming process.
    fn spawn(
        &self,
        spec: ExecSpec,
        abort: CancellationToken,
    ) -> BoxFuture<'_, Result<Box<dyn ProcessHandle>>>;
    /// Read one regular file.
    fn read_file<'a>(&'a self, path: &'a str, call: &'a Call) -> BoxFuture<'a, Result<Vec<u8>>>;
    /// Read regular files `paths`, their bytes in the same order (a path given twice is read twice). The first
    /// that cannot be read fails the call with its error. Default: [`read_file`](Self::read_file), a few at a time;
    /// targets with a batch route (the v1 endpoint's download) use one.
    fn read_files<'a>(
        &'a self,
        paths: &'a [String],
        call: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>>> {
        use futures::{StreamExt, TryStreamExt};
        Box::pin(
            futures::stream::iter(paths)
                .map(move |p| self.read_file(p, call))
                .buffered(READ_CONCURRENCY)
                .try_collect(),
        )
    }
    /// Extract a tar archive into the directory `dir` (which must exist).
    fn write_files<'a>(
        &'a self,
        dir: &'a str,
        tar: Bytes,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<()>>;
    /// Write one file (its directory must exist) with `mode` (default 0644), as a one-entry archive: no exec,
    /// no shell.
    fn write_file<'a>(
        &'a self,
        path: &'a str,
        data: &'a [u8],
        mode: Option<u32>,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            validate_container_path(path)?;
            let (dir, name) = match path.rfind('/') {
                Some(0) => ("/", &path[1..]),
                Some(i) => (&path[..i], &path[i + 1..]),
                None => unreachable!("validated absolute"),
            };
            if name.is_empty() {
                return Err(
                    Error::invalid("writeFile needs a file path, not a directory")
                        .with("argument", "path"),
                );
            }
            let tar = single_file_tar(name, data, mode.unwrap_or(0o644))?;
            self.write_files(dir, Bytes::from(tar), call).await
        })
    }
    /// The target's own file operations, when its backend has them (the v1 sandbox endpoint): [`Files`] then
    /// answers metadata and tree changes with them instead of running tools. Default: none.
    ///
    /// [`Files`]: super::files::Files
    fn native_files(&self) -> Option<&dyn FileOps> {
        None
    }
    /// Start `spec` detached (a server): it runs on after this returns, with its output discarded and nobody
    /// waiting for it; `spec.env` is its environment, `spec.cwd`/`spec.user` apply. The call's deadline and signal
    /// bound the start only. A program that is not there fails with `ERR_EXEC_FAILED`.
    ///
    /// The default runs a shell that checks the program exists and backgrounds it with stdin/stdout/stderr on
    /// `/dev/null` (so the exec's stream ends when the shell exits): it needs `sh` in the target. Targets whose
    /// engine has a native detached exec (containers) use that instead.
    fn start_detached<'a>(&'a self, spec: ExecSpec, call: &'a Call) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let program = spec.cmd.first().cloned().unwrap_or_default();
            if program.is_empty() {
                return Err(
                    Error::invalid("exec needs a non-empty command").with("argument", "cmd")
                );
            }
            let mut cmd: Vec<String> =
                vec!["sh".into(), "-c".into(), DETACH_SCRIPT.into(), "sh".into()];
            cmd.extend(spec.cmd.iter().cloned());
            let wrapped = ExecSpec {
                cmd,
                env: spec.env.clone(),
                cwd: spec.cwd.clone(),
                user: spec.user.clone(),
                timeout: Some(call.timeout.unwrap_or(DETACH_TIMEOUT)),
                ..Default::default()
            };
            let out = self.exec(wrapped, call.cancel.clone()).await?;
            if out.timed_out {
                return Err(Error::timeout(
                    "starting a detached process",
                    call.timeout.unwrap_or(DETACH_TIMEOUT),
                ));
            }
            if out.exit_code == Some(0) {
                return Ok(());
            }
            let (field, name) = self.subject();
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(Error::new(
                ErrorCode::ExecFailed,
                format!(
                    "{program:?} could not be started in {}: {}",
                    self.describe(),
                    if stderr.is_empty() {
                        "the launcher shell failed"
                    } else {
                        &stderr
                    }
                ),
            )
            .with(field, name)
            .with("exitCode", out.exit_code.unwrap_or(-1)))
        })
    }
}

/// The shell of [`ExecTarget::start_detached`]'s default: `$@` is the command. A missing program is reported
/// (exit 127) instead of failing unseen in the background.
const DETACH_SCRIPT: &str =
    "command -v \"$1\" >/dev/null 2>&1 || { echo \"$1: not found\" >&2; exit 127; }; \
\"$@\" </dev/null >/dev/null 2>&1 & exit 0";
/// Files a default [`ExecTarget::read_files`] reads at once.
const READ_CONCURRENCY: usize = 4;
/// How long the launcher shell of [`ExecTarget::start_detached`] may take when the call sets no deadline.
const DETACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a backend reports about one sandbox; fields a backend does not know are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxSummary {
    pub name: String,
    pub id: String,
    /// The backend's own status word (`running`, `stopped`, …), unchanged.
    pub status: String,
    pub agent: String,
    /// The host directory mounted at the same absolute path.
    pub workspace: String,
    pub template: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// When the backend will act on it (delete or stop), RFC 3339; `None` when no deadline is armed.
    pub expires_at: Option<String>,
}

/// A deadline after which the backend deletes or stops a sandbox by itself (v1 `features.timeouts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// From when the sandbox is ready (a renewal: from when the backend accepts it).
    pub after: std::time::Duration,
    /// `delete` (the default) or `stop`.
    pub action: String,
}

impl Expiry {
    /// The longest deadline the SDK passes on (a year); the backend may allow less.
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

    /// Checks `after_ms` (a positive number of milliseconds up to [`Self::MAX`]) and the action.
    pub fn new(after_ms: f64, action: Option<&str>, argument: &str) -> Result<Expiry> {
        if !after_ms.is_finite() || after_ms < 1.0 || after_ms > Self::MAX.as_millis() as f64 {
            return Err(Error::invalid(format!(
                "{argument} must be a number of milliseconds from 1 to {} (a year)",
                Self::MAX.as_millis()
            ))
            .with("argument", argument.to_string()));
        }
        let action = match action {
            None | Some("delete") => "delete",
            Some("stop") => "stop",
            Some(other) => {
                return Err(Error::invalid(format!(
                    "expiry.action must be 'delete' or 'stop', got {}",
                    super::validate::shown(other)
                ))
                .with("argument", "expiry.action"))
            }
        };
        Ok(Expiry {
            after: std::time::Duration::from_millis(after_ms as u64),
            action: action.into(),
        })
    }
}

/// What to create. `agent` and `workspace` are required by every backend; the rest is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxSpec {
    pub name: Option<String>,
    pub agent: String,
    pub workspace: String,
    pub template: Option<String>,
    pub cpus: Option<u32>,
    /// A size string such as `"2g"` or `"1024m"`.
    pub memory: Option<String>,
    pub environment: BTreeMap<String, String>,
    /// Extra host directories mounted at the same path: `(dir, read_only)`.
    pub additional_workspaces: Vec<(String, bool)>,
    pub labels: BTreeMap<String, String>,
    /// A deadline for the sandbox (v1 only; the other backends answer `ERR_UNSUPPORTED`).
    pub expiry: Option<Expiry>,
}

/// A saved state of a sandbox that restores as a new sandbox (backends with snapshots: v1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The backend's immutable id (what `restore` and `remove_snapshot` take).
    pub id: String,
    /// The name given at creation.
    pub name: String,
    pub description: String,
    /// The id of the sandbox it was taken from.
    pub sandbox_id: String,
    /// The backend's status word (`creating`, `ready`, `failed`, …), unchanged.
    pub status: String,
    /// `disk` or `all` (memory and disk).
    pub capture_mode: String,
    pub size_bytes: Option<u64>,
    /// RFC 3339.
    pub created_at: String,
}

/// What to snapshot a sandbox as; unset fields take the backend's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotSpec {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `disk` (the default) or `all`.
    pub capture_mode: Option<String>,
}

/// Deadline and cancellation for one backend call.
use super::call::Call;

/// The lifecycle of named sandboxes.
pub trait SandboxBackend: Send + Sync {
    /// `sbx`, `desktop`, …: which backend this is (shown in reports and errors).
    fn kind(&self) -> &'static str;
    /// Every sandbox.
    fn list<'a>(&'a self, opts: &'a Call) -> BoxFuture<'a, Result<Vec<SandboxSummary>>>;
    /// The sandbox of that name, or `None`.
    fn get<'a>(
        &'a self,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Option<SandboxSummary>>>;
    /// Create a sandbox; one of that name existing already is a conflict.
    fn create<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>>;
    /// Create a sandbox that holds `secrets` (already checked). Default: create, then [`Self::set_secrets`]; if
    /// the secrets cannot be set, the new sandbox is removed again and the error returned.
    fn create_with_secrets<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        secrets: &'a [SecretSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        Box::pin(async move {
            let made = self.create(spec, opts).await?;
            if secrets.is_empty() {
                return Ok(made);
            }
            if let Err(e) = self.set_secrets(&made.name, secrets, opts).await {
                let _ = self.remove(&made.name, true, &Call::default()).await;
                return Err(e);
            }
            Ok(made)
        })
    }
    /// Get-or-create: an existing sandbox that differs from `spec` (workspace, agent, template) is a conflict,
    /// never silently reused.
    fn ensure<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>>;
    /// Start a stopped sandbox.
    fn start<'a>(&'a self, name: &'a str, opts: &'a Call) -> BoxFuture<'a, Result<()>>;
    /// Stop a running sandbox.
    fn stop<'a>(&'a self, name: &'a str, opts: &'a Call) -> BoxFuture<'a, Result<()>>;
    /// Remove a sandbox; with `force`, one already gone is success.
    fn remove<'a>(
        &'a self,
        name: &'a str,
        force: bool,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<()>>;
    /// The sandbox as a place to run commands and move files (a backend may have to look it up).
    fn target<'a>(
        &'a self,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Arc<dyn ExecTarget>>>;
    /// Where the backend's daemon listens (shown in reports and errors).
    fn socket(&self) -> String;
    /// The sandbox's published ports. Default: `ERR_UNSUPPORTED` (the backend has no port route).
    fn ports<'a>(
        &'a self,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PortBinding>>> {
        let _ = (name, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "published ports")) })
    }
    /// Publish ports of the sandbox on the host; returns every published port afterwards.
    fn publish<'a>(
        &'a self,
        name: &'a str,
        ports: &'a [PortSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PortBinding>>> {
        let _ = (name, ports, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "published ports")) })
    }
    /// Unpublish every key matching one of `ports`; the daemon's message.
    fn unpublish<'a>(
        &'a self,
        name: &'a str,
        ports: &'a [PortSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<String>> {
        let _ = (name, ports, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "published ports")) })
    }
    /// Save the sandbox as a template image tagged `tag`; the daemon's message.
    fn save<'a>(
        &'a self,
        name: &'a str,
        tag: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<String>> {
        let _ = (name, tag, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "saving a sandbox as a template")) })
    }
    /// The network policy's rules, global and per sandbox. Default: `ERR_UNSUPPORTED`.
    fn policy_rules<'a>(&'a self, opts: &'a Call) -> BoxFuture<'a, Result<Vec<PolicyRule>>> {
        let _ = opts;
        Box::pin(async move { Err(unsupported(self.kind(), "network policy")) })
    }
    /// Applies rule changes (each checked before any is sent); the rules afterwards.
    fn policy_change<'a>(
        &'a self,
        changes: &'a [RuleChange],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PolicyRule>>> {
        let _ = (changes, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "network policy changes")) })
    }
    /// Decides `target` (`host[:port]`, an IP, …) as the proxy would, for one sandbox or globally, sending no
    /// traffic to it.
    fn policy_check<'a>(
        &'a self,
        target: &'a str,
        sandbox: Option<&'a str>,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<PolicyCheck>> {
        let _ = (target, sandbox, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "network policy check")) })
    }
    /// Replaces a sandbox's secrets; what the sandbox sees of each. Default: `ERR_UNSUPPORTED`.
    fn set_secrets<'a>(
        &'a self,
        name: &'a str,
        secrets: &'a [SecretSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<SecretPlaceholder>>> {
        let _ = (name, secrets, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "secrets")) })
    }
    /// Re-arm the sandbox's deadline to `after` from now; what the backend reports afterwards. Default:
    /// `ERR_UNSUPPORTED`.
    fn renew_expiry<'a>(
        &'a self,
        name: &'a str,
        after: std::time::Duration,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        let _ = (name, after, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "sandbox expiry")) })
    }
    /// Snapshot the sandbox `name`, resolving once the snapshot is ready. Default: `ERR_UNSUPPORTED`.
    fn snapshot<'a>(
        &'a self,
        name: &'a str,
        spec: &'a SnapshotSpec,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SnapshotSummary>> {
        let _ = (name, spec, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "snapshots")) })
    }
    /// Every snapshot. Default: `ERR_UNSUPPORTED`.
    fn snapshots<'a>(&'a self, opts: &'a Call) -> BoxFuture<'a, Result<Vec<SnapshotSummary>>> {
        let _ = opts;
        Box::pin(async move { Err(unsupported(self.kind(), "snapshots")) })
    }
    /// A new sandbox `name` from the snapshot `id`, resolving once it runs. Default: `ERR_UNSUPPORTED`.
    fn restore<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        let _ = (id, name, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "snapshots")) })
    }
    /// Delete the snapshot `id`; with `force`, one already gone is success. Default: `ERR_UNSUPPORTED`.
    fn remove_snapshot<'a>(
        &'a self,
        id: &'a str,
        force: bool,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        let _ = (id, force, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "snapshots")) })
    }
    /// The proxy's decision log (one sandbox's rows, or all).
    fn policy_log<'a>(
        &'a self,
        sandbox: Option<&'a str>,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PolicyLogEntry>>> {
        let _ = (sandbox, opts);
        Box::pin(async move { Err(unsupported(self.kind(), "network log")) })
    }
}

/// `ERR_UNSUPPORTED` for a feature `backend` lacks.
pub(crate) fn unsupported(backend: &str, what: &str) -> Error {
    Error::new(
        ErrorCode::Unsupported,
        format!("the {backend} backend has no {what}"),
    )
    .with("backend", backend)
}

impl ProcessHandle for Process {
    fn next(&self) -> BoxFuture<'_, Option<Result<Chunk>>> {
        Box::pin(Process::next(self))
    }
    fn next_run(&self, max: usize, coalesce: bool) -> BoxFuture<'_, Option<Result<Run>>> {
        Box::pin(Process::next_run(self, max, coalesce))
    }
    fn unread(&self, chunk: Result<Chunk>) {
        Process::unread(self, chunk)
    }
    fn mark_read(&self) {
        Process::mark_read(self)
    }
    fn pid(&self) -> Option<i64> {
        Process::pid(self)
    }
    fn resize(&self, cols: u16, rows: u16) -> BoxFuture<'_, Result<()>> {
        Box::pin(Process::resize(self, cols, rows))
    }
    fn discard_output(&self) {
        Process::discard_output(self)
    }
    fn dispose(&self) -> BoxFuture<'_, ()> {
        Box::pin(Process::dispose(self))
    }
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(Process::write(self, data))
    }
    fn end(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Process::end(self))
    }
    fn kill<'a>(&'a self, signal: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(Process::kill(self, signal))
    }
    fn wait<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, Result<ExitStatus>> {
        Box::pin(Process::wait(self, call))
    }
}

impl ExecTarget for Container {
    fn describe(&self) -> String {
        format!("container {}", self.name)
    }
    fn subject(&self) -> (&'static str, String) {
        ("container", self.id.clone())
    }
    fn exec(&self, spec: ExecSpec, cancel: CancellationToken) -> BoxFuture<'_, Result<ExecOutput>> {
        Box::pin(Container::exec(self, spec, cancel))
    }
    fn spawn(
        &self,
        spec: ExecSpec,
        abort: CancellationToken,
    ) -> BoxFuture<'_, Result<Box<dyn ProcessHandle>>> {
        Box::pin(async move {
            let p = Container::spawn(self, spec, abort).await?;
            Ok(Box::new(p) as Box<dyn ProcessHandle>)
        })
    }
    fn read_file<'a>(&'a self, path: &'a str, call: &'a Call) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(Container::read_file(self, path, call))
    }
    fn write_files<'a>(
        &'a self,
        dir: &'a str,
        tar: Bytes,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Container::put_archive(self, dir, tar, call))
    }
    /// The engine's own detached exec (no shell needed, no stream held open); engine errors are mapped for this
    /// container (gone → `ERR_CONTAINER_NOT_FOUND`, stopped → `ERR_CONTAINER_NOT_RUNNING`, …), and the runtime's
    /// refusal to start the program (not found, bad user or cwd) is `ERR_EXEC_FAILED`, as for an attached exec.
    fn start_detached<'a>(&'a self, spec: ExecSpec, call: &'a Call) -> BoxFuture<'a, Result<()>> {
        Box::pin(call.run("starting a detached exec", None, async move {
            let program = spec.cmd.first().cloned().unwrap_or_default();
            let engine = &self.engine;
            let exec_err = |e| engine.err(e, super::engine::Subject::Container(&self.id));
            let created = engine
                .docker()
                .create_exec(
                    &self.id,
                    bollard::exec::CreateExecOptions::<String> {
                        cmd: Some(spec.cmd),
                        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                        working_dir: spec.cwd,
                        user: spec.user,
                        attach_stdout: Some(false),
                        attach_stderr: Some(false),
                        ..Default::default()
                    },
                )
                .await
                .map_err(exec_err)?;
            engine
                .docker()
                .start_exec(
                    &created.id,
                    Some(bollard::exec::StartExecOptions {
                        detach: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| {
                    let e = exec_err(e);
                    let said = e.props.get("engineMessage").and_then(|m| m.as_str());
                    match said {
                        Some(m) if e.code == ErrorCode::Engine && m.contains("exec failed") => {
                            Error::new(
                                ErrorCode::ExecFailed,
                                format!(
                                    "{program:?} could not be started in container {}: {m}",
                                    self.name
                                ),
                            )
                            .with("container", self.id.clone())
                            .with("engineMessage", m.to_string())
                        }
                        _ => e,
                    }
                })?;
            Ok(())
        }))
    }
}
