//! JS classes `Containers` and `Container` over [`crate::core::container`].

use super::archive::{ArchiveStream, ArchiveUpload};
use super::call::{promise_map, run, run_with, CallOptions, Pending};
use super::exec::{exec_promise, ExecProcess, LogStream};
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
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
    /// Deadline in milliseconds (default 60 s).
    pub timeout_ms: Option<f64>,
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
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
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

/// Containers on one engine.
#[napi]
pub struct Containers {
    pub(crate) engine: Arc<Engine>,
}

const DEFAULT_CALL: std::time::Duration = std::time::Duration::from_secs(60);

/// A container call bounded by `timeoutMs` (default 60 s) and the signal.
fn bounded_call<T, F>(
    env: &Env,
    options: Option<&CallOptions>,
    what: &'static str,
    fut: F,
) -> Result<Pending<T>>
where
    T: ToNapiValue + Send + 'static,
    F: std::future::Future<Output = crate::core::Result<T>> + Send + 'static,
{
    run_with(env, options, move |t, d| async move {
        crate::core::http::bounded(what, Some(d.unwrap_or(DEFAULT_CALL)), &t, fut).await
    })
}

#[napi]
impl Containers {
    /// Create and start a container. A missing image is `ERR_IMAGE_NOT_FOUND` (no registry pull).
    #[napi(catch_unwind, ts_return_type = "Promise<Container>")]
    pub fn run(&self, env: Env, options: RunOptions) -> Result<Pending<Container>> {
        let e = self.engine.clone();
        let (env_vars, labels) = match read_env(options.env.as_ref())
            .and_then(|v| Ok((v, read_record(options.labels.as_ref(), "labels")?)))
        {
            Ok(v) => v,
            Err(err) => return super::call::rejected(&env, err),
        };
        let spec = RunSpec {
            image: options.image.clone(),
            name: options.name.clone(),
            cmd: options.cmd.clone(),
            entrypoint: options.entrypoint.clone(),
            env: env_vars,
            working_dir: options.working_dir.clone(),
            user: options.user.clone(),
            binds: options.binds.clone().unwrap_or_default(),
            labels: labels.into_iter().collect(),
            init: options.init,
            stop_signal: options.stop_signal.clone(),
            auto_remove: options.auto_remove.unwrap_or(false),
        };
        run(
            &env,
            options.signal.as_ref(),
            options.timeout_ms,
            move |t, d| async move {
                let c = crate::core::http::bounded(
                    "containers.run",
                    Some(d.unwrap_or(DEFAULT_CALL)),
                    &t,
                    core_container::run(e, spec),
                )
                .await?;
                Ok(Container { inner: c })
            },
        )
    }

    /// The container with that name or id, or `null`.
    #[napi(catch_unwind, ts_return_type = "Promise<Container | null>")]
    pub fn get(
        &self,
        env: Env,
        name_or_id: String,
        options: Option<CallOptions>,
    ) -> Result<Pending<Option<Container>>> {
        let e = self.engine.clone();
        run_with(&env, options.as_ref(), move |t, d| async move {
            let c = crate::core::http::bounded(
                "containers.get",
                Some(d.unwrap_or(DEFAULT_CALL)),
                &t,
                core_container::get(e, &name_or_id),
            )
            .await?;
            Ok(c.map(|inner| Container { inner }))
        })
    }

    /// Containers on this engine (running only, unless `all`).
    #[napi(catch_unwind, ts_return_type = "Promise<ContainerSummary[]>")]
    pub fn list(
        &self,
        env: Env,
        options: Option<ListContainersOptions>,
    ) -> Result<Pending<Vec<ContainerSummary>>> {
        let e = self.engine.clone();
        let all = options.as_ref().and_then(|o| o.all).unwrap_or(false);
        let labels = options
            .as_ref()
            .and_then(|o| o.labels.clone())
            .unwrap_or_default();
        let name = options.as_ref().and_then(|o| o.name.clone());
        run(
            &env,
            options.as_ref().and_then(|o| o.signal.as_ref()),
            options.as_ref().and_then(|o| o.timeout_ms),
            move |t, d| async move {
                let rows = crate::core::http::bounded(
                    "containers.list",
                    Some(d.unwrap_or(DEFAULT_CALL)),
                    &t,
                    core_container::list(&e, all, &labels, name.as_deref()),
                )
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| ContainerSummary {
                        id: r.id,
                        names: r.names,
                        image: r.image,
                        state: r.state,
                        status: r.status,
                        labels: r.labels,
                        created: r.created,
                    })
                    .collect())
            },
        )
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
    /// Allocate a TTY (stdout and stderr merge).
    pub tty: Option<bool>,
    /// Kill the whole process tree after this many milliseconds; `exec` then resolves with `timedOut: true`.
    /// If the engine has not even created the exec by then (it waits while the container is locked, e.g. by an
    /// unfinished `getArchiveStream`), the call rejects with `ERR_TIMEOUT` instead: nothing ran.
    pub timeout_ms: Option<f64>,
    /// Aborting kills the process tree; `exec` rejects with `ABORT_ERR` whose `result` holds the partial output.
    /// With `spawn` it works for the whole life of the process: the output ends, and `wait()` resolves with
    /// `aborted: true` (an abort before the process started rejects `spawn` with `ABORT_ERR`).
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
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
        tty: o.tty.unwrap_or(false),
        stdin: o.stdin.as_ref().map(super::call::bytes_of),
        interactive: false,
        timeout,
        max_output_bytes: max,
    })
}

/// Options for `container.stop()`.
#[napi(object, object_to_js = false)]
pub struct StopOptions<'a> {
    /// Seconds to wait after the stop signal before SIGKILL (engine default 10).
    pub timeout_sec: Option<i32>,
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
    pub timeout_ms: Option<f64>,
}

/// Options for `container.remove()`.
#[napi(object, object_to_js = false)]
pub struct RemoveContainerOptions<'a> {
    /// Kill it first if it is running.
    pub force: Option<bool>,
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
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
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
    pub timeout_ms: Option<f64>,
}

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
    pub fn start(&self, env: Env, options: Option<CallOptions>) -> Result<Pending<()>> {
        let c = self.inner.clone();
        bounded_call(&env, options.as_ref(), "container.start", async move {
            c.start().await
        })
    }

    /// Stop it (a stopped container is fine).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn stop(&self, env: Env, options: Option<StopOptions>) -> Result<Pending<()>> {
        let c = self.inner.clone();
        let secs = options.as_ref().and_then(|o| o.timeout_sec);
        run(
            &env,
            options.as_ref().and_then(|o| o.signal.as_ref()),
            options.as_ref().and_then(|o| o.timeout_ms),
            move |t, d| async move {
                crate::core::http::bounded(
                    "container.stop",
                    Some(d.unwrap_or(DEFAULT_CALL * 2)),
                    &t,
                    c.stop(secs),
                )
                .await
            },
        )
    }

    /// Remove it (`force` kills it first).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn remove(&self, env: Env, options: Option<RemoveContainerOptions>) -> Result<Pending<()>> {
        let c = self.inner.clone();
        let force = options.as_ref().and_then(|o| o.force).unwrap_or(false);
        run(
            &env,
            options.as_ref().and_then(|o| o.signal.as_ref()),
            options.as_ref().and_then(|o| o.timeout_ms),
            move |t, d| async move {
                crate::core::http::bounded(
                    "container.remove",
                    Some(d.unwrap_or(DEFAULT_CALL)),
                    &t,
                    c.remove(force),
                )
                .await
            },
        )
    }

    /// State, image, labels and env keys (never env values).
    #[napi(catch_unwind, ts_return_type = "Promise<ContainerInfo>")]
    pub fn inspect(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Pending<ContainerInfo>> {
        let c = self.inner.clone();
        run_with(&env, options.as_ref(), move |t, d| async move {
            let i = crate::core::http::bounded(
                "container.inspect",
                Some(d.unwrap_or(DEFAULT_CALL)),
                &t,
                c.inspect(),
            )
            .await?;
            Ok(ContainerInfo {
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
            })
        })
    }

    /// Wait until it stops; resolves with the exit code.
    #[napi(catch_unwind, ts_return_type = "Promise<number>")]
    pub fn wait(&self, env: Env, options: Option<CallOptions>) -> Result<Pending<i64>> {
        let c = self.inner.clone();
        run_with(&env, options.as_ref(), move |t, d| async move {
            crate::core::http::bounded("container.wait", d, &t, c.wait(&t)).await
        })
    }

    /// Start it if it is not running.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn ensure_running(&self, env: Env, options: Option<CallOptions>) -> Result<Pending<()>> {
        let c = self.inner.clone();
        bounded_call(
            &env,
            options.as_ref(),
            "container.ensureRunning",
            async move { c.ensure_running().await },
        )
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
    ) -> Result<Pending<ObjectRef<false>>> {
        self.exec_impl(env, cmd, options)
    }

    /// Run `script` with `sh -c` (the script is one argv element: nothing is interpolated by the SDK).
    #[napi(catch_unwind, ts_return_type = "Promise<ExecResult>")]
    pub fn sh(
        &self,
        env: Env,
        script: String,
        options: Option<ExecOptions>,
    ) -> Result<Pending<ObjectRef<false>>> {
        self.exec_impl(env, vec!["sh".into(), "-c".into(), script], options)
    }

    fn exec_impl(
        &self,
        env: Env,
        cmd: Vec<String>,
        options: Option<ExecOptions>,
    ) -> Result<Pending<ObjectRef<false>>> {
        let spec = match exec_spec(cmd, options.as_ref()) {
            Ok(s) => s,
            Err(e) => return exec_promise(&env, None, async move { Err(e) }),
        };
        let (token, _, linked) = match super::call::read_options(
            &env,
            options.as_ref().and_then(|o| o.signal.as_ref()),
            None,
        ) {
            Ok(v) => v,
            Err(e) => return exec_promise(&env, None, async move { Err(e) }),
        };
        let c = self.inner.clone();
        exec_promise(&env, linked, async move { c.exec(spec, token).await })
    }

    /// Start `cmd` and stream it: output as an async iterator, stdin via `write`/`end`, `kill`, `wait`.
    /// `timeoutMs` and `signal` apply to the process's whole life, not only to starting it.
    #[napi(catch_unwind, ts_return_type = "Promise<ExecProcess>")]
    pub fn spawn(
        &self,
        env: Env,
        cmd: Vec<String>,
        options: Option<ExecOptions>,
    ) -> Result<Pending<ExecProcess>> {
        let spec = match exec_spec(cmd, options.as_ref()) {
            Ok(s) => s,
            Err(e) => return super::call::rejected(&env, e),
        };
        let c = self.inner.clone();
        // The signal outlives this call: while the process runs, aborting kills its tree (like `timeoutMs`).
        let (t, _, linked) = match super::call::read_options(
            &env,
            options.as_ref().and_then(|o| o.signal.as_ref()),
            None,
        ) {
            Ok(r) => r,
            Err(e) => return super::call::rejected(&env, e),
        };
        let link: super::exec::SignalLink = std::rc::Rc::new(std::cell::RefCell::new(linked));
        promise_map(
            &env,
            None,
            async move {
                let started = c.spawn(spec, t.clone());
                Ok(
                    crate::core::http::bounded("container.spawn", Some(DEFAULT_CALL), &t, started)
                        .await,
                )
            },
            move |env, started| match started {
                Ok(proc) => Ok(ExecProcess { proc, link }),
                Err(e) => {
                    super::call::unlink_slot(&link, env);
                    Err(super::call::js_error(env, e))
                }
            },
        )
    }

    /// Write one file (its directory must exist) through the archive API: no exec, no shell.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn write_file(
        &self,
        env: Env,
        path: String,
        data: Either<String, Uint8Array>,
        options: Option<WriteFileOptions>,
    ) -> Result<Pending<()>> {
        let bytes = super::call::bytes_of(&data);
        let mode = options.as_ref().and_then(|o| o.mode);
        let c = self.inner.clone();
        run(
            &env,
            options.as_ref().and_then(|o| o.signal.as_ref()),
            options.as_ref().and_then(|o| o.timeout_ms),
            move |t, d| async move {
                crate::core::http::bounded(
                    "container.writeFile",
                    Some(d.unwrap_or(DEFAULT_CALL)),
                    &t,
                    c.write_file(&path, &bytes, mode),
                )
                .await
            },
        )
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
    ) -> Result<Pending<()>> {
        let c = self.inner.clone();
        let path = path.unwrap_or_else(|| crate::core::vm::DEFAULT_CA_PATH.to_string());
        bounded_call(&env, options.as_ref(), "container.trustCa", async move {
            c.trust_ca(&pem, &path).await
        })
    }

    /// Read one regular file through the archive API, following symbolic links. A missing path is
    /// `ERR_PATH_NOT_FOUND`; a directory, device or FIFO is `ERR_NOT_A_FILE`.
    #[napi(catch_unwind, ts_return_type = "Promise<Buffer>")]
    pub fn read_file(
        &self,
        env: Env,
        path: String,
        options: Option<CallOptions>,
    ) -> Result<Pending<Buffer>> {
        let c = self.inner.clone();
        bounded_call(&env, options.as_ref(), "container.readFile", async move {
            Ok(c.read_file(&path).await?.into())
        })
    }

    /// Extract a tar archive into directory `dir`.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn put_archive(
        &self,
        env: Env,
        dir: String,
        tar: Uint8Array,
        options: Option<CallOptions>,
    ) -> Result<Pending<()>> {
        let data = bytes::Bytes::copy_from_slice(&tar);
        let c = self.inner.clone();
        bounded_call(&env, options.as_ref(), "container.putArchive", async move {
            c.put_archive(&dir, data).await
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
        let read = super::call::read_options(
            &env,
            options.as_ref().and_then(|o| o.signal.as_ref()),
            options.as_ref().and_then(|o| o.timeout_ms),
        );
        let (inner, linked) = match read {
            Ok((token, deadline, linked)) => (
                // The request runs as a task of the SDK's runtime, which a sync call has to enter.
                napi::bindgen_prelude::within_runtime_if_available(|| {
                    crate::core::archive::Upload::start(&self.inner, &dir, deadline, token)
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
    #[napi(catch_unwind, ts_return_type = "Promise<Buffer>")]
    pub fn get_archive(
        &self,
        env: Env,
        path: String,
        options: Option<CallOptions>,
    ) -> Result<Pending<Buffer>> {
        let c = self.inner.clone();
        bounded_call(&env, options.as_ref(), "container.getArchive", async move {
            Ok(c.get_archive(&path).await?.into())
        })
    }
}
