//! Images on an engine, and the streaming copy from one engine to another
//! (`GET /images/{name}/get` piped into `POST /images/load`, never buffered).

use super::call::Call;
use super::container::validate_image_ref;
use super::engine::{Engine, Subject};
use super::error::{Error, ErrorCode, Result};
use bollard::query_parameters::{ImportImageOptions, ListImagesOptions};
use futures::{StreamExt, TryStreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// bollard's timeout covers the whole upload of `/images/load` (the engine answers after the last byte).
const IMPORT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// A row of `images.list()`.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub size: i64,
    pub created: i64,
}

/// What `images.inspect()` returns.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub size: i64,
    pub created: String,
    pub architecture: String,
    pub os: String,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub image_id: String,
    /// True when the target already had the same image id: nothing was moved.
    pub skipped: bool,
    pub bytes: u64,
    pub duration_ms: u64,
}

/// All images (no default deadline beyond bollard's request timeout).
pub async fn list(engine: &Engine, call: &Call) -> Result<Vec<ImageSummary>> {
    let rows = call
        .run("images.list", None, async {
            engine
                .docker()
                .list_images(Some(ListImagesOptions::default()))
                .await
                .map_err(|e| engine.err(e, Subject::Engine))
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ImageSummary {
            id: r.id,
            repo_tags: r.repo_tags,
            size: r.size,
            created: r.created,
        })
        .collect())
}

/// The image, or `None` (no default deadline beyond bollard's request timeout).
pub async fn inspect(engine: &Engine, reference: &str, call: &Call) -> Result<Option<ImageInfo>> {
    call.run("images.inspect", None, inspect_now(engine, reference))
        .await
}

async fn inspect_now(engine: &Engine, reference: &str) -> Result<Option<ImageInfo>> {
    validate_image_ref(reference)?;
    match engine.docker().inspect_image(reference).await {
        Ok(i) => Ok(Some(ImageInfo {
            id: i.id.unwrap_or_default(),
            repo_tags: i.repo_tags.unwrap_or_default(),
            size: i.size.unwrap_or_default(),
            created: i.created.unwrap_or_default(),
            architecture: i.architecture.unwrap_or_default(),
            os: i.os.unwrap_or_default(),
        })),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(engine.err(e, Subject::Image(reference))),
    }
}

/// A copy's progress: `(bytes moved, total bytes)`. The total is the source image's size from inspect (its
/// layers, uncompressed), which the tar that moves exceeds by its headers and metadata, so it is raised to the
/// bytes moved whenever they pass it: the ratio never goes above 1.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Bytes between two progress reports.
const PROGRESS_EVERY: u64 = 64 * 1024;

/// Stream `reference` from `source` into `target`. Skips when the target has the same image id.
/// `progress` is called as chunks move (at most every 64 KiB), and once more when the copy has succeeded, with
/// the final count as both values (so a bar ends at 100 %). It is not called for a skipped copy (nothing
/// moves; the report says `skipped`), and a failed copy gets no final call.
/// No default deadline: large images take minutes.
pub async fn copy(
    source: Arc<Engine>,
    target: Arc<Engine>,
    reference: &str,
    progress: Option<Progress>,
    call: &Call,
) -> Result<CopyReport> {
    call.run(
        "image copy",
        None,
        copy_now(source, target, reference, progress, &call.cancel),
    )
    .await
}

async fn copy_now(
    source: Arc<Engine>,
    target: Arc<Engine>,
    reference: &str,
    progress: Option<Progress>,
    cancel: &CancellationToken,
) -> Result<CopyReport> {
    let began = Instant::now();
    // Both engines are asked at once: one round trip instead of two.
    // The source's answer is judged first, so a missing image is reported as such whatever the target says.
    let (src, existing) = tokio::join!(
        inspect_now(&source, reference),
        inspect_now(&target, reference)
    );
    let src = src?.ok_or_else(|| {
        Error::new(
            ErrorCode::ImageNotFound,
            format!("image {reference:?} is not on the source engine"),
        )
        .with("image", reference)
    })?;
    if let Some(existing) = existing? {
        if existing.id == src.id {
            return Ok(CopyReport {
                image_id: src.id,
                skipped: true,
                bytes: 0,
                duration_ms: began.elapsed().as_millis() as u64,
            });
        }
    }
    let moved = Arc::new(AtomicU64::new(0));
    let counter = moved.clone();
    let estimate = u64::try_from(src.size).unwrap_or(0);
    let mut last_report = 0u64;
    let reporter = progress.clone();
    let export = source.docker().export_image(reference).map(move |chunk| {
        if let Ok(b) = &chunk {
            let so_far = counter.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
            if let Some(p) = &reporter {
                if so_far - last_report >= PROGRESS_EVERY {
                    last_report = so_far;
                    p(so_far, estimate.max(so_far));
                }
            }
        }
        chunk
    });
    let importer = target.docker().clone().with_timeout(IMPORT_TIMEOUT);
    let load = async {
        let mut results = importer.import_image_stream(
            ImportImageOptions {
                quiet: true,
                ..Default::default()
            },
            export,
            None,
        );
        while let Some(info) = results
            .try_next()
            .await
            .map_err(|e| target.err(e, Subject::Image(reference)))?
        {
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(Error::new(
                    ErrorCode::Engine,
                    format!("the target engine refused the image: {err}"),
                )
                .with("image", reference));
            }
        }
        Ok::<(), Error>(())
    };
    tokio::select! {
        r = load => r?,
        _ = cancel.cancelled() => return Err(Error::aborted().with("bytesMoved", moved.load(Ordering::Relaxed))),
    }
    let after = inspect_now(&target, reference).await?;
    if after.as_ref().map(|i| &i.id) != Some(&src.id) {
        return Err(Error::new(
            ErrorCode::Engine,
            format!(
                "after loading, {reference:?} on the target is not the source's image {}",
                src.id
            ),
        ));
    }
    let bytes = moved.load(Ordering::Relaxed);
    if let Some(p) = &progress {
        p(bytes, bytes);
    }
    Ok(CopyReport {
        image_id: src.id,
        skipped: false,
        bytes,
        duration_ms: began.elapsed().as_millis() as u64,
    })
}
