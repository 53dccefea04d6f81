//! JS classes `DockerEngine` and `Images` over [`crate::core::engine`] and [`crate::core::images`].

use super::call::{has_call, run, AbortSignal, CallOptions, HasCall, Promise};
use super::container::Containers;
use crate::core::engine::{self, Engine};
use crate::core::images;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Env;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Options for `DockerEngine.connect()`.
#[napi(object, object_to_js = false)]
pub struct ConnectOptions<'a> {
    /// The engine's Unix socket (a path or `unix:///path`).
    pub socket_path: String,
    /// Aborting rejects with `ABORT_ERR`.
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline in milliseconds (default 15 s).
    pub timeout_ms: Option<f64>,
}

/// `engine.version()`.
#[napi(object)]
pub struct EngineVersion {
    /// Engine version, e.g. `20.10.24`.
    pub version: String,
    /// The newest API version the engine speaks.
    pub api_version: String,
    /// The oldest API version the engine speaks.
    pub min_api_version: String,
    /// The API version this client negotiated and sends on every request.
    pub negotiated_api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
}

impl From<engine::VersionInfo> for EngineVersion {
    fn from(v: engine::VersionInfo) -> Self {
        EngineVersion {
            version: v.version,
            api_version: v.api_version,
            min_api_version: v.min_api_version,
            negotiated_api_version: v.negotiated_api_version,
            os: v.os,
            arch: v.arch,
            kernel_version: v.kernel_version,
        }
    }
}

/// A Docker Engine (the host's, or a VM's own) on its Unix socket. The API version is negotiated once per
/// socket and pinned on every request. Holds no connection between calls.
#[napi]
pub struct DockerEngine {
    pub(crate) inner: Arc<Engine>,
}

impl DockerEngine {
    /// Connect to the engine at `socket` (shared by `DockerEngine.connect`, `local` and `vm.engine()`).
    pub(crate) fn connect_to(
        env: &Env,
        socket: crate::core::Result<std::path::PathBuf>,
        options: Option<&impl HasCall>,
    ) -> Result<Promise<DockerEngine>> {
        run(env, options, move |call| async move {
            let inner = Engine::connect(&socket?, &call).await?;
            Ok(DockerEngine { inner })
        })
    }
}

#[napi]
impl DockerEngine {
    /// Connect to the engine on `socketPath` and negotiate the API version.
    /// Rejects with `ERR_ENGINE_UNAVAILABLE` when nothing answers there.
    #[napi(catch_unwind)]
    pub fn connect(env: Env, options: ConnectOptions) -> Result<Promise<DockerEngine>> {
        let socket = engine::socket_from_host(&options.socket_path);
        DockerEngine::connect_to(&env, socket, Some(&options))
    }

    /// The host's engine: `DOCKER_HOST` (unix only), then `/var/run/docker.sock`, then Docker Desktop's sockets.
    #[napi(catch_unwind)]
    pub fn local(env: Env, options: Option<CallOptions>) -> Result<Promise<DockerEngine>> {
        DockerEngine::connect_to(&env, engine::local_socket(), options.as_ref())
    }

    /// The engine's socket path.
    #[napi(catch_unwind, getter)]
    pub fn socket_path(&self) -> String {
        self.inner.socket().display().to_string()
    }

    /// The negotiated API version (e.g. `1.41`).
    #[napi(catch_unwind, getter)]
    pub fn api_version(&self) -> String {
        self.inner.api_version().to_string()
    }

    /// `GET /_ping`.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn ping(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<()>> {
        let e = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            e.ping(&call).await
        })
    }

    /// `GET /version`.
    #[napi(catch_unwind)]
    pub fn version(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<EngineVersion>> {
        let e = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(e.version(&call).await?.into())
        })
    }

    /// Images on this engine.
    #[napi(catch_unwind, getter)]
    pub fn images(&self) -> Images {
        Images {
            engine: self.inner.clone(),
        }
    }

    /// Containers on this engine.
    #[napi(catch_unwind, getter)]
    pub fn containers(&self) -> Containers {
        Containers {
            engine: self.inner.clone(),
        }
    }
}

/// A row of `images.list()`.
#[napi(object)]
pub struct ImageSummary {
    /// `sha256:…`
    pub id: String,
    pub repo_tags: Vec<String>,
    /// Bytes.
    pub size: i64,
    /// Unix seconds.
    pub created: i64,
}

impl From<images::ImageSummary> for ImageSummary {
    fn from(r: images::ImageSummary) -> Self {
        ImageSummary {
            id: r.id,
            repo_tags: r.repo_tags,
            size: r.size,
            created: r.created,
        }
    }
}

/// `images.inspect(ref)`.
#[napi(object)]
pub struct ImageInfo {
    /// `sha256:…`
    pub id: String,
    pub repo_tags: Vec<String>,
    /// Bytes.
    pub size: i64,
    /// RFC 3339.
    pub created: String,
    pub architecture: String,
    pub os: String,
}

impl From<images::ImageInfo> for ImageInfo {
    fn from(i: images::ImageInfo) -> Self {
        ImageInfo {
            id: i.id,
            repo_tags: i.repo_tags,
            size: i.size,
            created: i.created,
            architecture: i.architecture,
            os: i.os,
        }
    }
}

/// Options for `images.copyTo()`.
#[napi(object, object_to_js = false)]
pub struct CopyImageOptions<'a> {
    /// Called with the bytes moved so far and the total while the tar streams (at most every 64 KiB), and once
    /// more when the copy has succeeded, before its promise resolves, with `bytesMoved === totalBytes`. Until
    /// then `totalBytes` is an estimate: the image's size from inspect, which the tar exceeds by its headers
    /// and metadata, raised to `bytesMoved` whenever that passes it. Not called for a skipped copy. Never keeps
    /// the process alive.
    #[napi(ts_type = "(bytesMoved: number, totalBytes: number) => void")]
    pub on_progress: Option<Function<'a, FnArgs<(f64, f64)>, ()>>,
    /// Aborting stops the copy and rejects with `ABORT_ERR`.
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline in milliseconds (default: none; large images take minutes).
    pub timeout_ms: Option<f64>,
}

/// What `images.copyTo()` did.
#[napi(object)]
pub struct CopyReport {
    /// The image id on both engines.
    pub image_id: String,
    /// True when the target already had this image id: nothing moved.
    pub skipped: bool,
    /// Bytes of image tar streamed.
    pub bytes: f64,
    pub duration_ms: f64,
}

/// `onProgress(bytesMoved, totalBytes)`, weak (it never keeps the event loop alive), errors not passed to JS.
type ProgressArgs = FnArgs<(f64, f64)>;
type ProgressTsfn = ThreadsafeFunction<ProgressArgs, (), ProgressArgs, Status, false, true>;

/// `onProgress` as the core calls it: a weak threadsafe function (it never keeps the process alive) that
/// counts the calls JS has not run yet. Progress calls and the promise's settlement reach JS through different
/// queues, so without [`JsProgress::drained`] the final call could arrive after the promise resolved.
struct JsProgress {
    tsfn: ProgressTsfn,
    queued: Arc<(AtomicUsize, Notify)>,
}

/// The longest a copy's promise waits for JS to run its queued progress calls. JS runs them before it could
/// settle the promise anyway; the bound only keeps a task from waiting for good on a JS thread that has
/// gone away (a terminated worker), whose queued calls never run.
const PROGRESS_DRAIN_LIMIT: Duration = Duration::from_secs(10);

impl JsProgress {
    fn new(f: &Function<'_, FnArgs<(f64, f64)>, ()>) -> Result<JsProgress> {
        let tsfn = f
            .build_threadsafe_function()
            .weak::<true>()
            .callee_handled::<false>()
            .build()?;
        Ok(JsProgress {
            tsfn,
            queued: Arc::new((AtomicUsize::new(0), Notify::new())),
        })
    }

    fn call(&self, moved: u64, total: u64) {
        self.queued.0.fetch_add(1, Ordering::SeqCst);
        let queued = self.queued.clone();
        let done = move || {
            queued.0.fetch_sub(1, Ordering::SeqCst);
            queued.1.notify_waiters();
        };
        let done_here = done.clone();
        let status = self.tsfn.call_with_return_value(
            FnArgs::from((moved as f64, total as f64)),
            ThreadsafeFunctionCallMode::NonBlocking,
            // A callback that throws still reaches the process as an uncaught exception, as a plain call would.
            move |r, _| {
                done();
                r
            },
        );
        if status != Status::Ok {
            done_here();
        }
    }

    /// Wait until JS has run every call made so far.
    async fn drained(&self) {
        let all_run = async {
            loop {
                let notified = self.queued.1.notified();
                if self.queued.0.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(PROGRESS_DRAIN_LIMIT, all_run).await;
    }
}

impl From<images::CopyReport> for CopyReport {
    fn from(r: images::CopyReport) -> Self {
        CopyReport {
            image_id: r.image_id,
            skipped: r.skipped,
            bytes: r.bytes as f64,
            duration_ms: r.duration_ms as f64,
        }
    }
}

has_call!(ConnectOptions, CopyImageOptions);

/// Images on one engine.
#[napi]
pub struct Images {
    engine: Arc<Engine>,
}

#[napi]
impl Images {
    /// All images.
    #[napi(catch_unwind)]
    pub fn list(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<ImageSummary>>> {
        let e = self.engine.clone();
        run(&env, options.as_ref(), move |call| async move {
            let rows = images::list(&e, &call).await?;
            Ok(rows.into_iter().map(Into::into).collect())
        })
    }

    /// Whether `ref` (name:tag or id) is on this engine.
    #[napi(catch_unwind)]
    pub fn exists(
        &self,
        env: Env,
        reference: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<bool>> {
        let e = self.engine.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(images::inspect(&e, &reference, &call).await?.is_some())
        })
    }

    /// The image, or `null`.
    #[napi(catch_unwind, ts_return_type = "Promise<ImageInfo | null>")]
    pub fn inspect(
        &self,
        env: Env,
        reference: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<Option<ImageInfo>>> {
        let e = self.engine.clone();
        run(&env, options.as_ref(), move |call| async move {
            let found = images::inspect(&e, &reference, &call).await?;
            Ok(found.map(ImageInfo::from))
        })
    }

    /// Stream image `ref` from this engine into `target` (`docker save | docker load`, without the CLI and
    /// without buffering the tar). Skips when the target already has the same image id.
    #[napi(catch_unwind)]
    pub fn copy_to(
        &self,
        env: Env,
        target: &DockerEngine,
        reference: String,
        options: Option<CopyImageOptions>,
    ) -> Result<Promise<CopyReport>> {
        let src = self.engine.clone();
        let dst = target.inner.clone();
        let progress = match options.as_ref().and_then(|o| o.on_progress.as_ref()) {
            Some(f) => Some(Arc::new(JsProgress::new(f)?)),
            None => None,
        };
        run(&env, options.as_ref(), move |call| async move {
            let report = progress.clone().map(|p| -> images::Progress {
                Arc::new(move |moved, total| p.call(moved, total))
            });
            let r = images::copy(src, dst, &reference, report, &call).await?;
            if let Some(p) = progress {
                p.drained().await;
            }
            Ok(r.into())
        })
    }
}
