//! `sandbox.files` / `container.files`: the core files API ([`crate::core::files::Files`]) over one exec target.

use super::call::{bytes_of, has_call, run, AbortSignal, CallOptions, Promise};
use crate::core::backend::ExecTarget;
use crate::core::files::{DirReport, FileEntry as CoreEntry, Files as CoreFiles, WriteEntry};
use crate::core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi::Env;
use std::sync::Arc;

/// One directory entry or `stat` result.
#[napi(object)]
pub struct FileEntry {
    /// The last path segment (`/` for the root).
    pub name: String,
    /// The normalised absolute path.
    pub path: String,
    /// What it is (`other`: a device, FIFO or socket).
    #[napi(
        js_name = "type",
        ts_type = "'file' | 'directory' | 'symlink' | 'other'"
    )]
    pub kind: String,
    /// Size in bytes (a symbolic link: the length of its target).
    pub size: f64,
    /// Permission bits (`0o7777` part of the mode; `0o777` at most where a v1 sandbox cannot run `stat`).
    pub mode: u32,
    /// Last modification in milliseconds since the epoch (whole seconds: what `stat` reports); `NaN` where the
    /// backend does not say (a v1 sandbox that cannot run `stat`).
    pub mtime_ms: f64,
    /// Where a symbolic link points, as stored in the link.
    pub link_target: Option<String>,
}

impl From<CoreEntry> for FileEntry {
    fn from(e: CoreEntry) -> Self {
        FileEntry {
            name: e.name,
            path: e.path,
            kind: e.kind.as_str().to_string(),
            size: e.size as f64,
            mode: e.mode,
            mtime_ms: e.mtime_ms,
            link_target: e.link_target,
        }
    }
}

/// What `uploadDir` / `downloadDir` moved.
#[napi(object)]
pub struct DirTransfer {
    /// Entries written (files, directories, links).
    pub entries: f64,
    /// Bytes of file contents.
    pub bytes: f64,
}

impl From<DirReport> for DirTransfer {
    fn from(r: DirReport) -> Self {
        DirTransfer {
            entries: r.entries as f64,
            bytes: r.bytes as f64,
        }
    }
}

/// Options for `files.mkdir()`.
#[napi(object, object_to_js = false)]
pub struct MkdirOptions<'a> {
    /// Make missing parents; an existing directory is fine (as `mkdir -p`).
    pub recursive: Option<bool>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

/// Options for `files.remove()`.
#[napi(object, object_to_js = false)]
pub struct RemoveFileOptions<'a> {
    /// Remove a directory and everything in it.
    pub recursive: Option<bool>,
    /// A missing path is success.
    pub force: Option<bool>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

/// Options for `files.rename()`.
#[napi(object, object_to_js = false)]
pub struct RenameOptions<'a> {
    /// Replace a file or link at the destination (a directory there is still `ERR_PATH_EXISTS`).
    pub overwrite: Option<bool>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

/// Options for `files.write()`.
#[napi(object, object_to_js = false)]
pub struct FilesWriteOptions<'a> {
    /// Permission bits of the file (default `0o644`; one file only: many files carry their own).
    pub mode: Option<u32>,
    /// Make missing parent directories (mode 0755).
    pub parents: Option<bool>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

/// One file of a many-file `files.write()`.
#[napi(object, object_to_js = false)]
pub struct FileToWrite {
    pub path: String,
    pub data: Either<String, Uint8Array>,
    /// Permission bits (default `0o644`).
    pub mode: Option<u32>,
}

/// Whether `files.read()`'s `encoding` asks for text; anything but `'utf8'` is `ERR_INVALID_ARGUMENT`.
fn wants_text(encoding: Option<&str>) -> std::result::Result<bool, CoreError> {
    match encoding {
        None => Ok(false),
        Some("utf8" | "utf-8") => Ok(true),
        Some(other) => Err(CoreError::invalid(format!(
            "encoding must be 'utf8', got {}",
            crate::core::validate::shown(other)
        ))
        .with("argument", "encoding")),
    }
}

/// A file's bytes as JavaScript gets them: a Buffer, or a string (invalid sequences become U+FFFD).
fn decoded(bytes: Vec<u8>, text: bool) -> Either<Buffer, String> {
    if text {
        Either::B(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        )
    } else {
        Either::A(bytes.into())
    }
}

/// Options for `files.read()`.
#[napi(object, object_to_js = false)]
pub struct FilesReadOptions<'a> {
    /// `'utf8'`: resolve with a string (invalid sequences become U+FFFD); default a Buffer.
    #[napi(ts_type = "'utf8' | 'utf-8'")]
    pub encoding: Option<String>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

has_call!(
    MkdirOptions,
    RemoveFileOptions,
    RenameOptions,
    FilesWriteOptions,
    FilesReadOptions
);

/// Files in one sandbox or container. Paths are absolute and normalised lexically (`..` removes the segment
/// before it, as `path.posix.resolve` does); no path goes through a shell.
#[napi]
pub struct Files {
    inner: CoreFiles,
}

impl Files {
    /// The files of `target`.
    pub fn of(target: Arc<dyn ExecTarget>) -> Files {
        Files {
            inner: CoreFiles::new(target),
        }
    }
}

#[napi]
impl Files {
    /// The entries of directory `dir`, sorted by name, links described as links.
    #[napi(catch_unwind)]
    pub fn list(
        &self,
        env: Env,
        dir: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<FileEntry>>> {
        let f = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(f.list(&dir, &call)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// What is at `path`: with `follow`, a final symbolic link is followed (as `fs.stat`), else described
    /// itself with `linkTarget` (as `fs.lstat`).
    #[napi(catch_unwind)]
    pub fn stat(
        &self,
        env: Env,
        path: String,
        follow: bool,
        options: Option<CallOptions>,
    ) -> Result<Promise<FileEntry>> {
        let f = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(f.stat(&path, follow, &call).await?.into())
        })
    }

    /// Whether something is at `path` (links followed: a dangling link is `false`).
    #[napi(catch_unwind)]
    pub fn exists(
        &self,
        env: Env,
        path: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<bool>> {
        let f = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            f.exists(&path, &call).await
        })
    }

    /// Make a directory (`recursive`: parents too, an existing directory is fine).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn mkdir(
        &self,
        env: Env,
        path: String,
        options: Option<MkdirOptions>,
    ) -> Result<Promise<()>> {
        let f = self.inner.clone();
        let recursive = options.as_ref().and_then(|o| o.recursive).unwrap_or(false);
        run(&env, options.as_ref(), move |call| async move {
            f.mkdir(&path, recursive, &call).await
        })
    }

    /// Remove a file, link or (with `recursive`) directory; `force`: a missing path is success.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn remove(
        &self,
        env: Env,
        path: String,
        options: Option<RemoveFileOptions>,
    ) -> Result<Promise<()>> {
        let f = self.inner.clone();
        let recursive = options.as_ref().and_then(|o| o.recursive).unwrap_or(false);
        let force = options.as_ref().and_then(|o| o.force).unwrap_or(false);
        run(&env, options.as_ref(), move |call| async move {
            f.remove(&path, recursive, force, &call).await
        })
    }

    /// Rename `from` to `to`; something at `to` is `ERR_PATH_EXISTS` unless `overwrite` (not a directory).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn rename(
        &self,
        env: Env,
        from: String,
        to: String,
        options: Option<RenameOptions>,
    ) -> Result<Promise<()>> {
        let f = self.inner.clone();
        let overwrite = options.as_ref().and_then(|o| o.overwrite).unwrap_or(false);
        run(&env, options.as_ref(), move |call| async move {
            f.rename(&from, &to, overwrite, &call).await
        })
    }

    /// Write one file (`parents`: make missing directories).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn write(
        &self,
        env: Env,
        path: String,
        data: Either<String, Uint8Array>,
        options: Option<FilesWriteOptions>,
    ) -> Result<Promise<()>> {
        let f = self.inner.clone();
        let entry = WriteEntry {
            path,
            data: bytes_of(&data),
            mode: options.as_ref().and_then(|o| o.mode),
        };
        let parents = options.as_ref().and_then(|o| o.parents).unwrap_or(false);
        run(&env, options.as_ref(), move |call| async move {
            f.write(vec![entry], parents, &call).await
        })
    }

    /// Write many files in one archive (`parents`: make missing directories).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn write_many(
        &self,
        env: Env,
        files: Vec<FileToWrite>,
        options: Option<FilesWriteOptions>,
    ) -> Result<Promise<()>> {
        let f = self.inner.clone();
        let entries: Vec<WriteEntry> = files
            .iter()
            .map(|w| WriteEntry {
                path: w.path.clone(),
                data: bytes_of(&w.data),
                mode: w.mode,
            })
            .collect();
        let parents = options.as_ref().and_then(|o| o.parents).unwrap_or(false);
        let bad_mode = options.as_ref().and_then(|o| o.mode).is_some();
        run(&env, options.as_ref(), move |call| async move {
            if bad_mode {
                return Err(CoreError::invalid(
                    "options.mode applies to one file; give each file its own mode",
                )
                .with("argument", "mode"));
            }
            f.write(entries, parents, &call).await
        })
    }

    /// The bytes of a regular file (links followed); with `encoding: 'utf8'` a string.
    #[napi(catch_unwind, ts_return_type = "Promise<Buffer | string>")]
    pub fn read(
        &self,
        env: Env,
        path: String,
        options: Option<FilesReadOptions>,
    ) -> Result<Promise<Either<Buffer, String>>> {
        let f = self.inner.clone();
        let encoding = options.as_ref().and_then(|o| o.encoding.clone());
        run(&env, options.as_ref(), move |call| async move {
            let text = wants_text(encoding.as_deref())?;
            Ok(decoded(f.read(&path, &call).await?, text))
        })
    }

    /// The bytes of each regular file in `paths`, in order (one request on v1); with `encoding: 'utf8'` strings.
    #[napi(catch_unwind, ts_return_type = "Promise<Array<Buffer | string>>")]
    pub fn read_many(
        &self,
        env: Env,
        paths: Vec<String>,
        options: Option<FilesReadOptions>,
    ) -> Result<Promise<Vec<Either<Buffer, String>>>> {
        let f = self.inner.clone();
        let encoding = options.as_ref().and_then(|o| o.encoding.clone());
        run(&env, options.as_ref(), move |call| async move {
            let text = wants_text(encoding.as_deref())?;
            let all = f.read_many(&paths, &call).await?;
            Ok(all.into_iter().map(|b| decoded(b, text)).collect())
        })
    }

    /// Copy host directory `hostDir` into sandbox directory `dir` (made if missing), streamed. A link in the
    /// host tree that leads outside it is `ERR_PATH_ESCAPES`.
    #[napi(catch_unwind)]
    pub fn upload_dir(
        &self,
        env: Env,
        host_dir: String,
        dir: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<DirTransfer>> {
        let f = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(f.upload_dir(&host_dir, &dir, &call).await?.into())
        })
    }

    /// Copy sandbox directory `dir` into host directory `hostDir` (made if missing), streamed. A link in the
    /// sandbox tree that leads outside it is `ERR_PATH_ESCAPES`.
    #[napi(catch_unwind)]
    pub fn download_dir(
        &self,
        env: Env,
        dir: String,
        host_dir: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<DirTransfer>> {
        let f = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(f.download_dir(&dir, &host_dir, &call).await?.into())
        })
    }
}
