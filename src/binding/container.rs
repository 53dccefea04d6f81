//! JS classes `Containers` and `Container` over [`crate::core::container`].

use super::archive::{ArchiveStream, ArchiveUpload};
use super::call::{
    has_call, read_call, run, settle, AbortSignal, CallOptions, Promise, SignalOnly,
};
use super::exec::{exec_result_ref, ExecProcess, LogStream};
use super::forward::{forward_on, Forward, ForwardOptions};
use crate::core::backend::ExecTarget;
use crate::core::container::{self as core_container, Container as CoreContainer, RunSpec};
use crate::core::engine::Engine;
use crate::core::exec::ExecSpec;
use crate::core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi::Env;
use std::collections::HashMap;
use std::sync::Arc;

/// Read a JS `Record<string, string>` env object and check its keys; any non-string value is
/// `ERR_INVALID_ARGUMENT` (the message names the key and the type, never the value).
pub fn read_env(env: Option<&Object>) -> std::result::Result<Vec<(String, String)>, CoreError> {
    let out = read_record(env, "env")?;
    crate::core::exec::validate_env(&out)?;
    Ok(out)
}

/// Read a JS `Record<string, string>` named `argument` in errors. An array or a non-string value is
/// `ERR_INVALID_ARGUMENT`, never a silent conversion (`['a']` would otherwise become `{ '0': 'a' }`).
fn read_record(
    record: Option<&Object>,
    argument: &'static str,
) -> std::result::Result<Vec<(String, String)>, CoreError> {
    let Some(obj) = record else {
        return Ok(Vec::new());
    };
    let bad = |m: String| CoreError::invalid(m).with("argument", argument);
    if obj.is_array().unwrap_or(false) {
        return Err(bad(format!(
            "{argument} must be an object of strings ({{ NAME: 'value' }}), not an array"
        )));
    }
    let keys = Object::keys(obj).map_err(|e| {
        bad(format!(
            "{argument} must be an object of strings: {}",
            e.reason
        ))
    })?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let v: Unknown = obj.get_named_property(&k).map_err(|e| {
            bad(format!(
                "{argument} {}: {}",
                crate::core::validate::shown(&k),
                e.reason
            ))
        })?;
        match v.get_type() {
            Ok(ValueType::String) => {
                let s: String = unsafe { v.cast() }.map_err(|e| bad(e.reason.clone()))?;
                out.push((k, s));
            }
            Ok(t) => {
                return Err(bad(format!(
                    "{argument} {} must be a string, got {}",
                    crate::core::validate::shown(&k),
                    format!("{t:?}").to_lowercase()
                ))
                .with("key", k))
            }
            Err(e) => return Err(bad(e.reason.clone())),
        }
    }
    Ok(out)
}

/// Options for `containers.run()`.
#[napi(object, object_to_js = false)]
pub struct RunOptions<'a> {
    /// Image reference; it must already be on this engine (copy it in with `images.copyTo`).
    pub image: String,
    pub name: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// Environment of the container's main process.
    #[napi(ts_type = "Record<string, string>")]
    pub env: Option<Object<'a>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `host:container[:ro]` bind mounts.
    pub binds: Option<Vec<String>>,
    /// Labels set on the container.
    #[napi(ts_type = "Record<string, string>")]
    pub labels: Option<Object<'a>>,
    /// Run an init as PID 1 that reaps zombies (default `true`).
    pub init: Option<bool>,
    /// Signal `stop()` sends first (default: the image's, usually SIGTERM).
    pub stop_signal: Option<String>,
    /// Remove the container when it exits.
    pub auto_remove: Option<bool>,
    /// Aborting rejects with `ABORT_ERR`.
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline in milliseconds (default 60 s).
    pub timeout_ms: Option<f64>,
}

impl RunOptions<'_> {
    fn spec(&self) -> std::result::Result<RunSpec, CoreError> {
        Ok(RunSpec {
            image: self.image.clone(),
            name: self.name.clone(),
            cmd: self.cmd.clone(),
            entrypoint: self.entrypoint.clone(),
            env: read_env(self.env.as_ref())?,
            working_dir: self.working_dir.clone(),
            user: self.user.clone(),
            binds: self.binds.clone().unwrap_or_default(),
            labels: read_record(self.labels.as_ref(), "labels")?
                .into_iter()
                .collect(),
            init: self.init,
            stop_signal: self.stop_signal.clone(),
            auto_remove: self.auto_remove.unwrap_or(false),
            ..Default::default()
        })
    }
}

/// Options for `containers.list()`.
#[napi(object, object_to_js = false)]
pub struct ListContainersOptions<'a> {
    /// Include stopped containers.
    pub all: Option<bool>,
    /// Label filters: `key` or `key=value`.
    pub labels: Option<Vec<String>>,
    /// Name filter (substring match, as the engine does it).
    pub name: Option<String>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

/// A row of `containers.list()`.
#[napi(object)]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    /// `running`, `exited`, …
    pub state: String,
    /// Human-readable status, e.g. `Up 3 seconds`.
    pub status: String,
    pub labels: HashMap<String, String>,
    /// Unix seconds.
    pub created: i64,
}

impl From<core_container::ContainerSummary> for ContainerSummary {
    fn from(r: core_container::ContainerSummary) -> Self {
        ContainerSummary {
            id: r.id,
            names: r.names,
            image: r.image,
            state: r.state,
            status: r.status,
            labels: r.labels,
            created: r.created,
        }
    }
}

/// `container.inspect()`: the essentials, with env keys only (values may be secrets).
#[napi(object)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub status: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub pid: Option<i64>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub created: Option<String>,
    pub labels: HashMap<String, String>,
    /// Names of the container's env variables (values are never returned).
    pub env_keys: Vec<String>,
    pub init: bool,
}

impl From<core_container::ContainerInfo> for ContainerInfo {
    fn from(i: core_container::ContainerInfo) -> Self {
        ContainerInfo {
            id: i.id,
            name: i.name,
            image: i.image,
            status: i.status,
            running: i.running,
            exit_code: i.exit_code,
            pid: i.pid,
            started_at: i.started_at,
            finished_at: i.finished_at,
            created: i.created,
            labels: i.labels,
            env_keys: i.env_keys,
            init: i.init,
        }
    }
}

/// Containers on one engine.
#[napi]
pub struct Containers {
    pub(crate) engine: Arc<Engine>,
}

#[napi]
impl Containers {
    /// Create and start a container. A missing image is `ERR_IMAGE_NOT_FOUND` (no registry pull).
    #[napi(catch_unwind)]
    pub fn run(&self, env: Env, options: RunOptions) -> Result<Promise<Container>> {
        let e = self.engine.clone();
        let spec = options.spec();
        run(&env, Some(&options), move |call| async move {
            let inner = core_container::run(e, spec?, &call).await?;
            Ok(Container { inner })
        })
    }

    /// The container with that name or id, or `null`.
    #[napi(catch_unwind, ts_return_type = "Promise<Container | null>")]
    pub fn get(
        &self,
        env: Env,
        name_or_id: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<Option<Container>>> {
        let e = self.engine.clone();
        run(&env, options.as_ref(), move |call| async move {
            let found = core_container::get(e, &name_or_id, &call).await?;
            Ok(found.map(|inner| Container { inner }))
        })
    }

    /// Containers on this engine (running only, unless `all`).
    #[napi(catch_unwind)]
    pub fn list(
        &self,
        env: Env,
        options: Option<ListContainersOptions>,
    ) -> Result<Promise<Vec<ContainerSummary>>> {
        let e = self.engine.clone();
        let o = options.as_ref();
        let all = o.and_then(|o| o.all).unwrap_or(false);
        let labels = o.and_then(|o| o.labels.clone()).unwrap_or_default();
        let name = o.and_then(|o| o.name.clone());
        run(&env, o, move |call| async move {
            let rows = core_container::list(&e, all, &labels, name.as_deref(), &call).await?;
            Ok(rows.into_iter().map(Into::into).collect())
        })
    }
}

/// Options for `container.exec()`, `sh()` and `spawn()`.
#[napi(object, object_to_js = false)]
pub struct ExecOptions<'a> {
    /// Environment for this command only. Values may contain anything but NUL; keys no `=` or NUL.
    #[napi(ts_type = "Record<string, string>")]
    pub env: Option<Object<'a>>,
    /// Working directory (absolute).
    pub cwd: Option<String>,
    /// `user`, `uid`, or `uid:gid`.
    pub user: Option<String>,
    /// Bytes for stdin, closed after writing (`exec`/`sh` only; with `spawn` use `write`/`end`).
    #[napi(ts_type = "string | Uint8Array")]
    pub stdin: Option<Either<String, Uint8Array>>,
    /// Allocate a TTY (stdout and stderr merge); `{ cols, rows }` also sizes it from the start.
    #[napi(ts_type = "boolean | TtySize")]
    pub tty: Option<Either<bool, super::exec::TtySize>>,
    /// Kill the whole process tree after this many milliseconds; `exec` then resolves with `timedOut: true`.
    /// If the engine has not even created the exec by then (it waits while the container is locked, e.g. by an
    /// unfinished `getArchiveStream`), the call rejects with `ERR_TIMEOUT` instead: nothing ran.
    pub timeout_ms: Option<f64>,
    /// Aborting kills the process tree; `exec` rejects with `ABORT_ERR` whose `result` holds the partial output.
    /// With `spawn` it works for the whole life of the process: the output ends, and `wait()` resolves with
    /// `aborted: true` (an abort before the process started rejects `spawn` with `ABORT_ERR`).
    pub signal: Option<AbortSignal<'a>>,
    /// Keep at most this many bytes of stdout and of stderr (the rest is read and dropped; `truncated: true`).
    pub max_output_bytes: Option<f64>,
}

fn exec_spec(
    cmd: Vec<String>,
    o: Option<&ExecOptions>,
) -> std::result::Result<ExecSpec, CoreError> {
    let Some(o) = o else {
        return Ok(ExecSpec {
            cmd,
            ..Default::default()
        });
    };
    let max = match o.max_output_bytes {
        None => None,
        Some(n) if n.is_finite() && n >= 0.0 => Some(n as usize),
        Some(_) => {
            return Err(
                CoreError::invalid("maxOutputBytes must be a non-negative number")
                    .with("argument", "maxOutputBytes"),
            )
        }
    };
    let timeout = o
        .timeout_ms
        .map(|ms| crate::core::validate::timeout_ms("timeoutMs", ms))
        .transpose()?;
    Ok(ExecSpec {
        cmd,
        env: read_env(o.env.as_ref())?,
        cwd: o.cwd.clone(),
        user: o.user.clone(),
        tty: !matches!(o.tty, None | Some(Either::A(false))),
        tty_size: match &o.tty {
            Some(Either::B(size)) => Some(size.to_core()?),
            _ => None,
        },
        stdin: o.stdin.as_ref().map(super::call::bytes_of),
        interactive: false,
        timeout,
        max_output_bytes: max,
        output: None,
    })
}

/// An exec takes only the signal from the call: its `timeoutMs` kills the process tree (see [`ExecSpec`]).
fn exec_signal<'o, 'a>(options: &'o Option<ExecOptions<'a>>) -> SignalOnly<'o, 'a> {
    SignalOnly(options.as_ref().and_then(|o| o.signal.as_ref()))
}

/// Options for `container.stop()`.
#[napi(object, object_to_js = false)]
pub struct StopOptions<'a> {
    /// Seconds to wait after the stop signal before SIGKILL (engine default 10).
    pub timeout_sec: Option<i32>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

/// Options for `container.remove()`.
#[napi(object, object_to_js = false)]
pub struct RemoveContainerOptions<'a> {
    /// Kill it first if it is running.
    pub force: Option<bool>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

/// Options for `container.logs()`.
#[napi(object)]
pub struct LogsOptions {
    /// Keep streaming new output until the container stops.
    pub follow: Option<bool>,
    /// Only logs since this Unix time (seconds).
    pub since: Option<i32>,
}

/// Options for `container.writeFile()`.
#[napi(object, object_to_js = false)]
pub struct WriteFileOptions<'a> {
    /// File mode (default `0o644`).
    pub mode: Option<u32>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

has_call!(
    RunOptions,
    ListContainersOptions,
    StopOptions,
    RemoveContainerOptions,
    WriteFileOptions
);

/// A container on an engine.
#[napi]
pub struct Container {
    pub(crate) inner: CoreContainer,
}

#[napi]
impl Container {
    /// Full container id.
    #[napi(catch_unwind, getter)]
    pub fn id(&self) -> String {
        self.inner.id.clone()
    }

    /// Container name (without the leading `/`).
    #[napi(catch_unwind, getter)]
    pub fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// Start it (a running container is fine).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn start(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<()>> {
        let c = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            c.start(&call).await
        })
    }

    /// Stop it (a stopped container is fine).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn stop(&self, env: Env, options: Option<StopOptions>) -> Result<Promise<()>> {
        let c = self.inner.clone();
        let secs = options.as_ref().and_then(|o| o.timeout_sec);
        run(&env, options.as_ref(), move |call| async move {
            c.stop(secs, &call).await
        })
    }

    /// Remove it (`force` kills it first).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn remove(&self, env: Env, options: Option<RemoveContainerOptions>) -> Result<Promise<()>> {
        let c = self.inner.clone();
        let force = options.as_ref().and_then(|o| o.force).unwrap_or(false);
        run(&env, options.as_ref(), move |call| async move {
            c.remove(force, &call).await
        })
    }

    /// State, image, labels and env keys (never env values).
    #[napi(catch_unwind)]
    pub fn inspect(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<ContainerInfo>> {
        let c = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(c.inspect(&call).await?.into())
        })
    }

    /// Wait until it stops; resolves with the exit code.
    #[napi(catch_unwind)]
    pub fn wait(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<i64>> {
        let c = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            c.wait(&call).await
        })
    }

    /// Start it if it is not running.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn ensure_running(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<()>> {
        let c = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            c.ensure_running(&call).await
        })
    }

    /// The container's logs as an async iterator of `{ stream, data }`.
    #[napi(catch_unwind)]
    pub fn logs(&self, options: Option<LogsOptions>) -> LogStream {
        let follow = options.as_ref().and_then(|o| o.follow).unwrap_or(false);
        let since = options.as_ref().and_then(|o| o.since).unwrap_or(0);
        LogStream {
            inner: Arc::new(tokio::sync::Mutex::new(Box::pin(
                self.inner.logs(follow, since),
            ))),
            stop: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Run `cmd` (argv, no shell) and collect its output. A non-zero exit is a result, never a rejection.
    #[napi(catch_unwind, ts_return_type = "Promise<ExecResult>")]
    pub fn exec(
        &self,
        env: Env,
        cmd: Vec<String>,
        options: Option<ExecOptions>,
    ) -> Result<Promise<ObjectRef<false>>> {
        self.exec_impl(env, cmd, options)
    }

    /// Run `script` with `sh -c` (the script is one argv element: nothing is interpolated by the SDK).
    #[napi(catch_unwind, ts_return_type = "Promise<ExecResult>")]
    pub fn sh(
        &self,
        env: Env,
        script: String,
        options: Option<ExecOptions>,
    ) -> Result<Promise<ObjectRef<false>>> {
        self.exec_impl(env, vec!["sh".into(), "-c".into(), script], options)
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
        exec_streamed_on(
            env,
            Arc::new(self.inner.clone()),
            cmd,
            options,
            stdout,
            stderr,
        )
    }

    fn exec_impl(
        &self,
        env: Env,
        cmd: Vec<String>,
        options: Option<ExecOptions>,
    ) -> Result<Promise<ObjectRef<false>>> {
        exec_on(env, Arc::new(self.inner.clone()), cmd, options)
    }

    /// Reach `port` inside the container from the host through exec tunnels (see `Sandbox.forward`).
    #[napi(catch_unwind)]
    pub fn forward(
        &self,
        env: Env,
        port: u32,
        options: Option<ForwardOptions>,
    ) -> Result<Promise<Forward>> {
        forward_on(env, Arc::new(self.inner.clone()), port, options)
    }

    /// Start `cmd` and stream it: output as an async iterator, stdin via `write`/`end`, `kill`, `wait`.
    /// `timeoutMs` and `signal` apply to the process's whole life, not only to starting it.
    #[napi(catch_unwind)]
    pub fn spawn(
        &self,
        env: Env,
        cmd: Vec<String>,
        options: Option<ExecOptions>,
    ) -> Result<Promise<ExecProcess>> {
        spawn_on(env, Arc::new(self.inner.clone()), cmd, options)
    }

    /// Write one file (its directory must exist) through the archive API: no exec, no shell.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn write_file(
        &self,
        env: Env,
        path: String,
        data: Either<String, Uint8Array>,
        options: Option<WriteFileOptions>,
    ) -> Result<Promise<()>> {
        write_file_on(env, Arc::new(self.inner.clone()), path, data, options)
    }

    /// Write the VM's proxy CA (`vm.caCertPem`) into the container, at `path` (default
    /// `/usr/local/share/ca-certificates/sandboxd-proxy.crt`, where `vm.proxyEnv()` points the trust variables).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn trust_ca(
        &self,
        env: Env,
        pem: String,
        path: Option<String>,
        options: Option<CallOptions>,
    ) -> Result<Promise<()>> {
        let c = self.inner.clone();
        let path = path.unwrap_or_else(|| crate::core::vm::DEFAULT_CA_PATH.to_string());
        run(&env, options.as_ref(), move |call| async move {
            c.trust_ca(&pem, &path, &call).await
        })
    }

    /// Files in the container: list, stat, exists, mkdir, remove, rename, write, read.
    #[napi(catch_unwind, getter)]
    pub fn files(&self) -> crate::binding::files::Files {
        crate::binding::files::Files::of(std::sync::Arc::new(self.inner.clone()))
    }

    /// Read one regular file through the archive API, following symbolic links. A missing path is
    /// `ERR_PATH_NOT_FOUND`; a directory, device or FIFO is `ERR_NOT_A_FILE`.
    #[napi(catch_unwind)]
    pub fn read_file(
        &self,
        env: Env,
        path: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<Buffer>> {
        read_file_on(env, Arc::new(self.inner.clone()), path, options)
    }

    /// Extract a tar archive into directory `dir`.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn put_archive(
        &self,
        env: Env,
        dir: String,
        tar: Uint8Array,
        options: Option<CallOptions>,
    ) -> Result<Promise<()>> {
        let data = bytes::Bytes::copy_from_slice(&tar);
        let c = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            c.put_archive(&dir, data, &call).await
        })
    }

    /// A tar archive of `path` (file or directory), streamed: `for await (const piece of box.getArchiveStream(p))`.
    /// Memory stays bounded whatever the size; a missing path rejects the first `next()`. `timeoutMs` (default:
    /// none) and `signal` bound the whole download. Leave with `break`/`return()`: until the archive is read or
    /// closed, the engine keeps the container locked.
    #[napi(catch_unwind)]
    pub fn get_archive_stream(
        &self,
        env: Env,
        path: String,
        options: Option<CallOptions>,
    ) -> ArchiveStream {
        ArchiveStream::new(&env, self.inner.archive_stream(&path), options.as_ref())
    }

    /// Stream a tar archive into directory `dir`: `await up.write(piece)` for each piece, then `await up.end()`.
    /// `timeoutMs` (default: none) and `signal` bound the whole upload; errors reject `write()`/`end()`.
    #[napi(catch_unwind)]
    pub fn put_archive_stream(
        &self,
        env: Env,
        dir: String,
        options: Option<CallOptions>,
    ) -> ArchiveUpload {
        let (inner, linked) = match read_call(&env, options.as_ref()) {
            Ok((call, linked)) => (
                // The request runs as a task of the SDK's runtime, which a sync call has to enter.
                napi::bindgen_prelude::within_runtime_if_available(|| {
                    crate::core::archive::Upload::start(&self.inner, &dir, call)
                }),
                linked,
            ),
            Err(e) => (crate::core::archive::Upload::failed(e), None),
        };
        ArchiveUpload {
            inner: Arc::new(inner),
            linked: std::cell::RefCell::new(linked),
        }
    }

    /// A tar archive of `path` (file or directory), in one Buffer (at most 512 MiB; see `getArchiveStream`).
    #[napi(catch_unwind)]
    pub fn get_archive(
        &self,
        env: Env,
        path: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<Buffer>> {
        let c = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(c.get_archive(&path, &call).await?.into())
        })
    }
}

/// `exec`/`sh` on any exec target (a container, an sbx sandbox): collect the output.
pub(crate) fn exec_on(
    env: Env,
    target: Arc<dyn ExecTarget>,
    cmd: Vec<String>,
    options: Option<ExecOptions>,
) -> Result<Promise<ObjectRef<false>>> {
    let started = exec_spec(cmd, options.as_ref())
        .and_then(|spec| Ok((spec, read_call(&env, Some(&exec_signal(&options)))?)));
    match started {
        Ok((spec, (call, linked))) => settle(
            &env,
            linked,
            async move { target.exec(spec, call.cancel).await },
            exec_result_ref,
        ),
        Err(e) => settle(&env, None, async move { Err(e) }, exec_result_ref),
    }
}

/// `exec`/`sh` on any exec target with its output also handed out as it arrives (the chosen streams, in order):
/// the work starts now; `next()` reads the chunks, `result()` settles like `exec`.
pub(crate) fn exec_streamed_on(
    env: Env,
    target: Arc<dyn ExecTarget>,
    cmd: Vec<String>,
    options: Option<ExecOptions>,
    stdout: bool,
    stderr: bool,
) -> crate::binding::exec::ExecRun {
    let started = exec_spec(cmd, options.as_ref())
        .and_then(|spec| Ok((spec, read_call(&env, Some(&exec_signal(&options)))?)));
    match started {
        Ok((mut spec, (call, linked))) => {
            let (tx, rx) = tokio::sync::mpsc::channel(crate::binding::exec::EXEC_RUN_QUEUE);
            spec.output = Some(crate::core::exec::OutputSink { tx, stdout, stderr });
            let cancel = call.cancel.clone();
            crate::binding::exec::ExecRun::start(linked, cancel, rx, async move {
                target.exec(spec, call.cancel).await
            })
        }
        Err(e) => crate::binding::exec::ExecRun::failed(e),
    }
}

/// `spawn` on any exec target. The signal outlives this call: while the process runs, aborting kills its tree
/// (like `timeoutMs`).
pub(crate) fn spawn_on(
    env: Env,
    target: Arc<dyn ExecTarget>,
    cmd: Vec<String>,
    options: Option<ExecOptions>,
) -> Result<Promise<ExecProcess>> {
    let started = exec_spec(cmd, options.as_ref())
        .and_then(|spec| Ok((spec, read_call(&env, Some(&exec_signal(&options)))?)));
    let (spec, call, linked) = match started {
        Ok((spec, (call, linked))) => (Ok(spec), call, linked),
        Err(e) => (Err(e), crate::core::Call::default(), None),
    };
    let link: super::exec::SignalLink = std::rc::Rc::new(std::cell::RefCell::new(linked));
    settle(
        &env,
        None,
        async move { Ok(target.spawn(spec?, call.cancel).await) },
        move |env, started| match started {
            Ok(proc) => Ok(ExecProcess {
                proc: Arc::from(proc),
                link,
            }),
            Err(e) => {
                super::call::unlink_slot(&link, env);
                Err(super::call::js_error(env, e))
            }
        },
    )
}

/// `readFile` on any exec target.
pub(crate) fn read_file_on(
    env: Env,
    target: Arc<dyn ExecTarget>,
    path: String,
    options: Option<CallOptions>,
) -> Result<Promise<Buffer>> {
    run(&env, options.as_ref(), move |call| async move {
        Ok(target.read_file(&path, &call).await?.into())
    })
}

/// `writeFile` on any exec target.
pub(crate) fn write_file_on(
    env: Env,
    target: Arc<dyn ExecTarget>,
    path: String,
    data: Either<String, Uint8Array>,
    options: Option<WriteFileOptions>,
) -> Result<Promise<()>> {
    let bytes = super::call::bytes_of(&data);
    let mode = options.as_ref().and_then(|o| o.mode);
    run(&env, options.as_ref(), move |call| async move {
        target.write_file(&path, &bytes, mode, &call).await
    })
}
