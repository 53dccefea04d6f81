//! Containers on an engine: run/get/list, lifecycle, logs, exec entry points and file copy (archive API).

use super::call::Call;
use super::engine::{Engine, Subject};
use super::error::{Error, ErrorCode, Result};
use super::exec::{self, ExecOutput, ExecSpec, Process};
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Default deadline of a container call (run, get, list, start, remove, inspect, ensureRunning, file copy).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline of `stop`: the engine waits out the stop signal's grace period, then kills.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// Default deadline for a streamed exec to start (the process then runs as long as it runs).
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest file `readFile` / archive `getArchive` returns in one buffer.
pub const MAX_READ_BYTES: usize = 512 * 1024 * 1024;
/// Symbolic links `readFile` follows before giving up (Linux's own limit, `MAXSYMLINKS`).
pub(crate) const MAX_SYMLINKS: usize = 40;

/// What `containers.run()` creates and starts. `Debug` prints env keys only.
#[derive(Clone, Default)]
pub struct RunSpec {
    pub image: String,
    pub name: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub binds: Vec<String>,
    pub labels: HashMap<String, String>,
    /// Default true: a PID 1 that reaps, so killed exec trees leave no zombies.
    pub init: Option<bool>,
    pub stop_signal: Option<String>,
    pub auto_remove: bool,
    /// The network mode (`none`, `host`, a network name); default: the engine's.
    pub network_mode: Option<String>,
    /// `/etc/hosts` lines as `name:address`.
    pub extra_hosts: Vec<String>,
}

impl std::fmt::Debug for RunSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSpec")
            .field("image", &self.image)
            .field("name", &self.name)
            .field("cmd", &self.cmd)
            .field("env", &exec::redacted_env(&self.env))
            .field("binds", &self.binds)
            .finish_non_exhaustive()
    }
}

/// A container on an engine.
#[derive(Clone)]
pub struct Container {
    pub engine: Arc<Engine>,
    pub id: String,
    pub name: String,
}

/// A row of `containers.list()`.
#[derive(Debug, Clone)]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    pub state: String,
    pub status: String,
    pub labels: HashMap<String, String>,
    pub created: i64,
}

/// What `container.inspect()` returns. Env values are never included: only the keys.
#[derive(Debug, Clone)]
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
    pub env_keys: Vec<String>,
    pub init: bool,
}

/// Container names and ids: `[A-Za-z0-9][A-Za-z0-9_.-]*` up to 128 bytes (a leading `/` is dropped).
pub fn validate_container_ref(value: &str) -> Result<String> {
    let v = value.strip_prefix('/').unwrap_or(value);
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "invalid container name or id {}: {why}",
            super::validate::shown(value)
        ))
        .with("argument", "container"))
    };
    if v.is_empty() {
        return bad("must not be empty");
    }
    if v.len() > 128 {
        return bad("longer than 128 bytes");
    }
    if !v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if v.contains("..")
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return bad("use letters, digits, '_', '.', '-'");
    }
    Ok(v.to_string())
}

/// Image references: non-empty, printable, no whitespace, at most 512 bytes.
pub fn validate_image_ref(value: &str) -> Result<()> {
    if value.is_empty()
        || value.len() > 512
        || value.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Error::invalid(format!(
            "invalid image reference {}",
            super::validate::shown(value)
        ))
        .with("argument", "image"));
    }
    Ok(())
}

/// A path inside the container: absolute, no NUL.
pub fn validate_container_path(value: &str) -> Result<()> {
    if !value.starts_with('/') || value.contains('\0') {
        return Err(Error::invalid(format!(
            "container paths must be absolute and contain no NUL: {}",
            super::validate::shown(value)
        ))
        .with("argument", "path"));
    }
    Ok(())
}

/// Create and start a container (default deadline [`CALL_TIMEOUT`]).
pub async fn run(engine: Arc<Engine>, spec: RunSpec, call: &Call) -> Result<Container> {
    call.run("containers.run", Some(CALL_TIMEOUT), run_now(engine, spec))
        .await
}

async fn run_now(engine: Arc<Engine>, spec: RunSpec) -> Result<Container> {
    validate_image_ref(&spec.image)?;
    if let Some(n) = &spec.name {
        validate_container_ref(n)?;
    }
    exec::validate_env(&spec.env)?;
    if let Some(sig) = &spec.stop_signal {
        exec::validate_signal(sig)?;
    }
    let config = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.cmd.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        labels: Some(spec.labels.clone()),
        stop_signal: spec.stop_signal.clone(),
        host_config: Some(HostConfig {
            init: Some(spec.init.unwrap_or(true)),
            binds: Some(spec.binds.clone()),
            auto_remove: Some(spec.auto_remove),
            network_mode: spec.network_mode.clone(),
            extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = engine
        .docker()
        .create_container(
            Some(CreateContainerOptions {
                name: spec.name.clone(),
                ..Default::default()
            }),
            config,
        )
        .await
        .map_err(|e| {
            let mut err = engine.err(e, Subject::Image(&spec.image));
            if err.code == ErrorCode::ImageNotFound {
                err.message = format!(
                    "image {:?} is not on this engine (a VM engine starts empty: copy it in with \
                     hostEngine.images.copyTo(vmEngine, ref))",
                    spec.image
                );
            } else if err.props.get("statusCode").and_then(|v| v.as_u64()) == Some(409) {
                err = match &spec.name {
                    Some(name) => name_conflict(err, name),
                    None => Error {
                        code: ErrorCode::Engine,
                        ..err
                    },
                };
            }
            err
        })?;
    let c = Container {
        engine: engine.clone(),
        id: created.id.clone(),
        name: spec.name.clone().unwrap_or_default(),
    };
    if let Err(e) = c.start_now().await {
        let _ = c.remove_now(true).await;
        return Err(e);
    }
    Ok(match c.inspect_now().await {
        Ok(info) => Container {
            name: info.name,
            ..c
        },
        Err(_) => c,
    })
}

/// A create refused with 409 when a name was given: the name is taken (the engine's only 409 on create).
/// `ERR_CONTAINER_CONFLICT` with `containerName`, and `existingContainerId` when the engine's message names it.
fn name_conflict(err: Error, name: &str) -> Error {
    let existing = err
        .props
        .get("engineMessage")
        .and_then(|m| m.as_str())
        .and_then(|m| m.split("by container \"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string);
    let mut e = Error {
        code: ErrorCode::ContainerConflict,
        message: format!("a container named {name:?} already exists on this engine"),
        ..err
    };
    e.props.remove("image");
    e = e.with("containerName", name);
    if let Some(id) = existing {
        e.message = format!("{} ({id})", e.message);
        e = e.with("existingContainerId", id);
    }
    e
}

/// The container with that name or id, or `None` (default deadline [`CALL_TIMEOUT`]).
pub async fn get(engine: Arc<Engine>, name_or_id: &str, call: &Call) -> Result<Option<Container>> {
    let r = validate_container_ref(name_or_id)?;
    let found = call.run("containers.get", Some(CALL_TIMEOUT), async {
        match engine.docker().inspect_container(&r, None).await {
            Ok(c) => Ok(Some(c)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(engine.err(e, Subject::Container(&r))),
        }
    });
    Ok(found.await?.map(|c| Container {
        engine: engine.clone(),
        id: c.id.unwrap_or_default(),
        name: bare_name(c.name),
    }))
}

/// Containers, filtered by labels (`k=v` or `k`) and name (default deadline [`CALL_TIMEOUT`]).
pub async fn list(
    engine: &Engine,
    all: bool,
    labels: &[String],
    name: Option<&str>,
    call: &Call,
) -> Result<Vec<ContainerSummary>> {
    let mut filters: HashMap<String, Vec<String>> = HashMap::new();
    if !labels.is_empty() {
        filters.insert("label".into(), labels.to_vec());
    }
    if let Some(n) = name {
        filters.insert("name".into(), vec![n.to_string()]);
    }
    let rows = engine.docker().list_containers(Some(ListContainersOptions {
        all,
        filters: if filters.is_empty() {
            None
        } else {
            Some(filters)
        },
        ..Default::default()
    }));
    let rows = call
        .run("containers.list", Some(CALL_TIMEOUT), async {
            rows.await.map_err(|e| engine.err(e, Subject::Engine))
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ContainerSummary {
            id: r.id.unwrap_or_default(),
            names: r
                .names
                .unwrap_or_default()
                .into_iter()
                .map(|n| bare_name(Some(n)))
                .collect(),
            image: r.image.unwrap_or_default(),
            state: r.state.map(|s| s.to_string()).unwrap_or_default(),
            status: r.status.unwrap_or_default(),
            labels: r.labels.unwrap_or_default(),
            created: r.created.unwrap_or_default(),
        })
        .collect())
}

/// The engine reports names with a leading `/`; the SDK shows them without.
fn bare_name(name: Option<String>) -> String {
    let n = name.unwrap_or_default();
    n.strip_prefix('/').map(str::to_string).unwrap_or(n)
}

/// Build a one-file tar archive.
pub(crate) fn single_file_tar(name: &str, data: &[u8], mode: u32) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::with_capacity(data.len() + 1024));
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)
        .map_err(|e| Error::internal(format!("building a tar: {e}")))?;
    b.into_inner()
        .map_err(|e| Error::internal(format!("building a tar: {e}")))
}

impl Container {
    fn err(&self, e: bollard::errors::Error) -> Error {
        self.engine.err(e, Subject::Container(&self.id))
    }

    /// Start it (a running container is fine; default deadline [`CALL_TIMEOUT`]).
    pub async fn start(&self, call: &Call) -> Result<()> {
        call.run("container.start", Some(CALL_TIMEOUT), self.start_now())
            .await
    }

    async fn start_now(&self) -> Result<()> {
        match self.engine.docker().start_container(&self.id, None).await {
            Ok(()) => Ok(()),
            // 304: already started.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Stop it, `timeout_sec` after the stop signal killing it (a stopped container is fine; default deadline
    /// [`STOP_TIMEOUT`]).
    pub async fn stop(&self, timeout_sec: Option<i32>, call: &Call) -> Result<()> {
        let stop = self.engine.docker().stop_container(
            &self.id,
            Some(StopContainerOptions {
                t: timeout_sec,
                signal: None,
            }),
        );
        call.run("container.stop", Some(STOP_TIMEOUT), async {
            match stop.await {
                Ok(()) => Ok(()),
                // 304: already stopped.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => Ok(()),
                Err(e) => Err(self.err(e)),
            }
        })
        .await
    }

    /// Remove it (`force` kills it first; default deadline [`CALL_TIMEOUT`]).
    pub async fn remove(&self, force: bool, call: &Call) -> Result<()> {
        call.run(
            "container.remove",
            Some(CALL_TIMEOUT),
            self.remove_now(force),
        )
        .await
    }

    async fn remove_now(&self, force: bool) -> Result<()> {
        self.engine
            .docker()
            .remove_container(
                &self.id,
                Some(RemoveContainerOptions {
                    force,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| self.err(e))
    }

    /// State, image, labels and env keys (default deadline [`CALL_TIMEOUT`]).
    pub async fn inspect(&self, call: &Call) -> Result<ContainerInfo> {
        call.run("container.inspect", Some(CALL_TIMEOUT), self.inspect_now())
            .await
    }

    async fn inspect_now(&self) -> Result<ContainerInfo> {
        let c = self
            .engine
            .docker()
            .inspect_container(&self.id, None)
            .await
            .map_err(|e| self.err(e))?;
        let state = c.state.unwrap_or_default();
        let config = c.config.unwrap_or_default();
        Ok(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: bare_name(c.name),
            image: config.image.unwrap_or_default(),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            pid: state.pid,
            started_at: state.started_at,
            finished_at: state.finished_at,
            created: c.created,
            labels: config.labels.unwrap_or_default(),
            env_keys: config
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|kv| kv.split('=').next().unwrap_or_default().to_string())
                .collect(),
            init: c.host_config.and_then(|h| h.init).unwrap_or(false),
        })
    }

    /// Wait for the container to stop; resolves with its exit code (non-zero is a result). No default deadline:
    /// waiting is the point.
    pub async fn wait(&self, call: &Call) -> Result<i64> {
        call.run("container.wait", None, async {
            let mut s = self.engine.docker().wait_container(&self.id, None);
            match s.next().await {
                Some(Ok(r)) => Ok(r.status_code),
                // bollard turns a non-zero exit into an error; it is still the exit code.
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Ok(code)
                }
                Some(Err(e)) => Err(self.err(e)),
                None => Ok(self.inspect_now().await?.exit_code.unwrap_or(-1)),
            }
        })
        .await
    }

    /// Start it if it is not running (a stopped container is started; a missing one is an error; default
    /// deadline [`CALL_TIMEOUT`]).
    pub async fn ensure_running(&self, call: &Call) -> Result<()> {
        call.run("container.ensureRunning", Some(CALL_TIMEOUT), async {
            if !self.inspect_now().await?.running {
                self.start_now().await?;
            }
            Ok(())
        })
        .await
    }

    /// The container's log stream (stdout/stderr chunks).
    pub fn logs(
        &self,
        follow: bool,
        since: i32,
    ) -> impl Stream<Item = Result<exec::Chunk>> + Send + 'static {
        let engine = self.engine.clone();
        let id = self.id.clone();
        self.engine
            .docker()
            .logs(
                &self.id,
                Some(LogsOptions {
                    follow,
                    stdout: true,
                    stderr: true,
                    since,
                    tail: "all".into(),
                    ..Default::default()
                }),
            )
            .filter_map(move |r| {
                let out = match r {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        Some(Ok(exec::Chunk::Stdout(message)))
                    }
                    Ok(LogOutput::StdErr { message }) => Some(Ok(exec::Chunk::Stderr(message))),
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(engine.err(e, Subject::Container(&id)))),
                };
                futures::future::ready(out)
            })
    }

    /// Buffered exec.
    pub async fn exec(&self, spec: ExecSpec, cancel: CancellationToken) -> Result<ExecOutput> {
        exec::exec(self.engine.clone(), self.id.clone(), spec, cancel).await
    }

    /// Streaming exec. `abort` works for the process's whole life; starting it is bounded by [`SPAWN_TIMEOUT`].
    pub async fn spawn(&self, spec: ExecSpec, abort: CancellationToken) -> Result<Process> {
        let started = Process::spawn(self.engine.clone(), self.id.clone(), spec, abort.clone());
        super::call::bounded("container.spawn", Some(SPAWN_TIMEOUT), &abort, started).await
    }

    /// Upload a tar archive and extract it into `dir` (default deadline [`CALL_TIMEOUT`]).
    pub async fn put_archive(&self, dir: &str, tar: Bytes, call: &Call) -> Result<()> {
        call.run(
            "container.putArchive",
            Some(CALL_TIMEOUT),
            self.put_archive_now(dir, tar),
        )
        .await
    }

    async fn put_archive_now(&self, dir: &str, tar: Bytes) -> Result<()> {
        validate_container_path(dir)?;
        self.engine
            .docker()
            .upload_to_container(
                &self.id,
                Some(UploadToContainerOptions {
                    path: dir.to_string(),
                    ..Default::default()
                }),
                bollard::body_full(tar),
            )
            .await
            .map_err(|e| self.path_err(e, dir))
    }

    /// A tar archive of `path` (file or directory) as a stream, read only as fast as it is consumed (the engine
    /// waits meanwhile). A bad or missing path is the stream's first item, as an error.
    pub fn archive_stream(&self, path: &str) -> BoxStream<'static, Result<Bytes>> {
        if let Err(e) = validate_container_path(path) {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        let me = self.clone();
        let p = path.to_string();
        self.engine
            .docker()
            .download_from_container(
                &self.id,
                Some(DownloadFromContainerOptions {
                    path: path.to_string(),
                }),
            )
            .map_err(move |e| me.path_err(e, &p))
            .boxed()
    }

    /// A tar archive of `path` (file or directory), in one buffer of at most [`MAX_READ_BYTES`] (default deadline
    /// [`CALL_TIMEOUT`]).
    pub async fn get_archive(&self, path: &str, call: &Call) -> Result<Vec<u8>> {
        let archive = collect_archive(self.archive_stream(path), path, false);
        call.run("container.getArchive", Some(CALL_TIMEOUT), archive)
            .await
    }

    /// Write a CA certificate (PEM) to `path`, creating its directories (through the archive API, no shell;
    /// default deadline [`CALL_TIMEOUT`]).
    pub async fn trust_ca(&self, pem: &str, path: &str, call: &Call) -> Result<()> {
        validate_container_path(path)?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::invalid("trustCa needs a PEM certificate").with("argument", "pem"));
        }
        let rel = path.trim_start_matches('/');
        let mut b = tar::Builder::new(Vec::new());
        let parts: Vec<&str> = rel.split('/').collect();
        let fail = |e: std::io::Error| Error::internal(format!("building a tar: {e}"));
        for i in 1..parts.len() {
            let dir = parts[..i].join("/");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, format!("{dir}/"), std::io::empty())
                .map_err(fail)?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(pem.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, rel, pem.as_bytes()).map_err(fail)?;
        let tar = b.into_inner().map_err(fail)?;
        call.run(
            "container.trustCa",
            Some(CALL_TIMEOUT),
            self.put_archive_now("/", Bytes::from(tar)),
        )
        .await
    }

    /// Read one regular file, following symbolic links as `fs.readFile` does (the engine archives a link
    /// itself, not its target). A directory (or a device, a FIFO) is `ERR_NOT_A_FILE`, found from the
    /// archive's first header, before a directory's contents are downloaded. Errors met past a link keep the
    /// `path` asked for and add `resolvedPath`. Default deadline [`CALL_TIMEOUT`], over all links followed.
    pub async fn read_file(&self, path: &str, call: &Call) -> Result<Vec<u8>> {
        call.run(
            "container.readFile",
            Some(CALL_TIMEOUT),
            self.read_file_now(path),
        )
        .await
    }

    async fn read_file_now(&self, path: &str) -> Result<Vec<u8>> {
        let mut at = path.to_string();
        for _ in 0..MAX_SYMLINKS {
            match self.read_entry(&at).await {
                Ok(Entry::File(bytes)) => return Ok(bytes),
                Ok(Entry::Symlink(target)) => at = link_target(&at, &target),
                Err(e) if at == path => return Err(e),
                Err(e) => return Err(past_links(e, path, &at)),
            }
        }
        let e = Error::new(
            ErrorCode::NotAFile,
            format!("{path}: more than {MAX_SYMLINKS} levels of symbolic links"),
        )
        .with("path", path)
        .with("fileType", "symlink");
        Err(past_links(e, path, &at))
    }

    /// The one entry an archive of `path` holds: a file's bytes or a link's target.
    async fn read_entry(&self, path: &str) -> Result<Entry> {
        let archive = collect_archive(self.archive_stream(path), path, true).await?;
        let mut ar = tar::Archive::new(archive.as_slice());
        let tar_err = |e: std::io::Error| Error::internal(format!("reading the engine's tar: {e}"));
        for entry in ar.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let mut buf = Vec::with_capacity(entry.size() as usize);
                std::io::Read::read_to_end(&mut entry, &mut buf).map_err(tar_err)?;
                return Ok(Entry::File(buf));
            }
            if kind.is_symlink() {
                let target = entry.link_name().map_err(tar_err)?.unwrap_or_default();
                return Ok(Entry::Symlink(target.to_string_lossy().into_owned()));
            }
            if let Some(what) = not_a_file(kind) {
                return Err(not_a_file_error(path, what));
            }
        }
        Err(not_a_file_error(path, "other"))
    }

    pub(crate) fn path_err(&self, e: bollard::errors::Error, path: &str) -> Error {
        let mut err = self.err(e);
        let not_found = err.props.get("statusCode").and_then(|v| v.as_u64()) == Some(404);
        if not_found
            && !err
                .message
                .to_ascii_lowercase()
                .contains("no such container")
        {
            err.code = ErrorCode::PathNotFound;
            err.message = format!("no such file or directory in the container: {path}");
            err = err.with("path", path);
        }
        err
    }
}

/// Read an archive stream into one buffer of at most [`MAX_READ_BYTES`]. With `one_file`, the first tar header
/// is checked as soon as it has arrived: a directory (or a link, a device, …) ends the download at once with
/// `ERR_NOT_A_FILE`, so reading a large directory as a file costs one header, not the whole tree.
async fn collect_archive(
    mut s: BoxStream<'static, Result<Bytes>>,
    path: &str,
    one_file: bool,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut checked = !one_file;
    while let Some(chunk) = s.try_next().await? {
        if out.len() + chunk.len() > MAX_READ_BYTES {
            return Err(Error::invalid(format!(
                "{path} is larger than {MAX_READ_BYTES} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
        if !checked && out.len() >= 512 {
            checked = true;
            if let Some(what) = first_entry_not_a_file(&out[..512]) {
                return Err(not_a_file_error(path, what));
            }
        }
    }
    Ok(out)
}

/// What the first header of an archive describes, when that is plainly not a regular file. `None` for a file,
/// a symbolic link (followed by `readFile`), and extension headers (PAX, GNU long names) that only the full
/// parse can look past.
fn first_entry_not_a_file(block: &[u8]) -> Option<&'static str> {
    let kind = tar::Header::from_byte_slice(block.get(..512)?).entry_type();
    if kind.is_symlink() {
        return None;
    }
    not_a_file(kind)
}

/// What one entry of a `readFile` archive held.
enum Entry {
    File(Vec<u8>),
    Symlink(String),
}

/// Where the link at `link` points: an absolute target as it is, a relative one from the link's directory,
/// with `.` and `..` resolved (the engine resolves paths inside the container's root either way).
pub(crate) fn link_target(link: &str, target: &str) -> String {
    let base = if target.starts_with('/') {
        ""
    } else {
        link.rsplit_once('/').map_or("", |(dir, _)| dir)
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in base.split('/').chain(target.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// An error met at `resolved`, reached from `path` through symbolic links: it names both.
fn past_links(mut e: Error, path: &str, resolved: &str) -> Error {
    e.message = format!("{} (reached from {path} through symbolic links)", e.message);
    e.props.insert("path".into(), path.into());
    e.with("resolvedPath", resolved)
}

/// The `fileType` of an entry that is not a regular file; `None` for files and for extension headers.
fn not_a_file(kind: tar::EntryType) -> Option<&'static str> {
    use tar::EntryType as T;
    match kind {
        T::Regular
        | T::Continuous
        | T::XHeader
        | T::XGlobalHeader
        | T::GNULongName
        | T::GNULongLink
        | T::GNUSparse => None,
        T::Directory => Some("directory"),
        T::Symlink => Some("symlink"),
        T::Link => Some("hardlink"),
        T::Char | T::Block => Some("device"),
        T::Fifo => Some("fifo"),
        _ => Some("other"),
    }
}

fn not_a_file_error(path: &str, what: &str) -> Error {
    let is = match what {
        "directory" => "is a directory (getArchive or getArchiveStream read one)",
        "symlink" => "is a symbolic link",
        "hardlink" => "is a hard link",
        "device" => "is a device",
        "fifo" => "is a FIFO",
        _ => "is not a regular file",
    };
    Error::new(
        ErrorCode::NotAFile,
        format!("{path} {is}; readFile reads one regular file"),
    )
    .with("path", path)
    .with("fileType", what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_name_is_a_conflict_with_the_existing_id() {
        let msg = "Conflict. The container name \"/box\" is already in use by container \"0123abcd\". You have to remove (or rename) that container to be able to reuse that name.";
        let engine_err = Error::new(ErrorCode::Engine, format!("Docker engine: {msg}"))
            .with("statusCode", 409)
            .with("engineMessage", msg)
            .with("image", "busybox");
        let e = name_conflict(engine_err.clone(), "box");
        assert_eq!(e.code.as_str(), "ERR_CONTAINER_CONFLICT");
        assert_eq!(e.props["containerName"], "box");
        assert_eq!(e.props["existingContainerId"], "0123abcd");
        assert_eq!(e.props["statusCode"], 409);
        assert_eq!(e.props["engineMessage"], msg);
        assert!(!e.props.contains_key("image"));
        assert!(e.message.contains("\"box\""), "{}", e.message);
        // a message without an id still gives the code and the name
        let other = Error::new(ErrorCode::Engine, "x").with("engineMessage", "Conflict.");
        let e = name_conflict(other, "box");
        assert_eq!(e.code.as_str(), "ERR_CONTAINER_CONFLICT");
        assert!(!e.props.contains_key("existingContainerId"));
    }

    fn header(kind: tar::EntryType) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path("x").unwrap();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn the_first_header_tells_a_directory_from_a_file() {
        use tar::EntryType as T;
        assert_eq!(first_entry_not_a_file(&header(T::Regular)), None);
        assert_eq!(
            first_entry_not_a_file(&header(T::Directory)),
            Some("directory")
        );
        assert_eq!(first_entry_not_a_file(&header(T::Symlink)), None);
        assert_eq!(first_entry_not_a_file(&header(T::Fifo)), Some("fifo"));
        // extension headers come before the entry they describe: only the full parse can judge
        assert_eq!(first_entry_not_a_file(&header(T::XHeader)), None);
        assert_eq!(first_entry_not_a_file(&header(T::GNULongName)), None);
        assert_eq!(first_entry_not_a_file(&[0u8; 100]), None);
    }

    #[test]
    fn link_targets_resolve_like_the_kernel() {
        assert_eq!(link_target("/bin/sh", "busybox"), "/bin/busybox");
        assert_eq!(link_target("/tmp/link", "/etc/hostname"), "/etc/hostname");
        assert_eq!(link_target("/a/b/c", "../d/./e"), "/a/d/e");
        assert_eq!(link_target("/a", "../../x"), "/x");
        assert_eq!(link_target("/link", "."), "/");
    }

    #[tokio::test]
    async fn a_directory_archive_stops_at_its_first_header() {
        let dir = header(tar::EntryType::Directory);
        let rest: Result<Bytes> = Err(Error::internal("read past the first header"));
        let s = futures::stream::iter(vec![Ok(Bytes::from(dir)), rest]).boxed();
        let e = collect_archive(s, "/etc", true).await.unwrap_err();
        assert_eq!(e.code.as_str(), "ERR_NOT_A_FILE");
        assert_eq!(e.props["path"], "/etc");
        assert_eq!(e.props["fileType"], "directory");
        assert!(e.message.contains("getArchive"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_file_archive_is_read_whole() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", &b"hello"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        // handed over in pieces smaller than a header, as the engine may
        let pieces: Vec<Result<Bytes>> = tar
            .chunks(100)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let s = futures::stream::iter(pieces).boxed();
        assert_eq!(collect_archive(s, "/f", true).await.unwrap(), tar);
    }
}
