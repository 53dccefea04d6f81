//! Files in a sandbox, written once over [`ExecTarget`]: list, stat, exists, mkdir, remove, rename, write (one
//! file or many in one archive) and read, the same on a container and an sbx sandbox.
//!
//! Rules, and why:
//! - No path ever goes through a shell. Metadata and changes are argv-only execs of standard tools present in
//!   busybox and GNU coreutils/findutils (`stat -c`, `find -print0`, `readlink`, `mkdir`, `rm`, `mv`), with `--`
//!   before paths where the tool takes it; contents move through the backend's archive routes
//!   ([`ExecTarget::write_files`], [`ExecTarget::read_file`]). Tools run with `LC_ALL=C` so their messages can be
//!   mapped to typed errors.
//! - Paths are absolute and normalised lexically before anything reaches the sandbox, as `path.posix.resolve`
//!   does: empty and `.` segments dropped, `..` removes the segment before it (`..` above `/` stays at `/`),
//!   a trailing `/` dropped. So `/a/link/../b` is `/a/b` even when `/a/link` is a symbolic link. Every path
//!   then starts with `/`, so no path can be read as an option.
//! - Output is parsed without trusting names: `find -print0` separates names with NUL; `stat` prints fixed
//!   numeric fields followed by the path it was given, matched against the known path (so names with spaces,
//!   newlines or unicode cannot shift a record).
//! - A target whose backend has its own file operations ([`ExecTarget::native_files`], the v1 sandbox endpoint)
//!   answers `exists`, `mkdir`, `remove`, `rename` and the checks of `write`, `downloadDir` and `list` with them:
//!   no process is started. The v1 contract has no modification time, no setuid/setgid/sticky bits and no
//!   `lstat` (its `Stat` and `List` describe what an in-jail link leads to), so `stat`, `lstat` and `list` (whose
//!   entries carry those) still run the tools, falling back to the native answers (links resolved, `mtime_ms`
//!   NaN, `mode & 0o777`) only where the target cannot run them (`ERR_EXEC_FAILED`: no `stat` or `find`, no
//!   shell), so the same call answers the same on every backend where it can.

use super::backend::ExecTarget;
use super::call::Call;
use super::container::single_file_tar;
use super::error::{excerpt, Error, ErrorCode, Result};
use super::exec::{ExecOutput, ExecSpec};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Default deadline of one files call.
pub const FILES_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest argv (in bytes of paths) one `stat` exec gets; longer lists are split (ARG_MAX is 128 KiB or more).
const ARGV_BATCH: usize = 64 * 1024;
/// Most output kept from one tool run (a listing of a very large directory).
const MAX_TOOL_OUTPUT: usize = 256 * 1024 * 1024;
/// The `stat -c` format of a record: raw mode in hex, size, mtime in seconds; the path follows when asked.
const STAT_FIELDS: &str = "%f %s %Y";

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

impl FileKind {
    /// The JS name: `file`, `directory`, `symlink`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
    }

    fn of_mode(raw: u32) -> FileKind {
        match raw & 0o170000 {
            0o100000 => FileKind::File,
            0o040000 => FileKind::Directory,
            0o120000 => FileKind::Symlink,
            _ => FileKind::Other,
        }
    }
}

/// One directory entry or `stat` result.
#[derive(Debug, Clone, PartialEq)]
pub struct FileEntry {
    /// The last path segment (`/` for the root).
    pub name: String,
    /// The normalised absolute path.
    pub path: String,
    pub kind: FileKind,
    /// Size in bytes (for a symbolic link: the length of its target).
    pub size: u64,
    /// Permission bits (`0o7777` part of the mode).
    pub mode: u32,
    /// Last modification, in milliseconds since the epoch (the tools report whole seconds).
    pub mtime_ms: f64,
    /// Where a symbolic link points, as stored in the link.
    pub link_target: Option<String>,
}

/// What a backend's own file service says about a path ([`FileOps`]): final symbolic links resolved, as the v1
/// contract's `Stat` and `List` do.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeInfo {
    /// What the path leads to; [`FileKind::Symlink`] only for a link that does not resolve (dangling, looping,
    /// or leading out of the service's jail).
    pub kind: FileKind,
    /// Size in bytes (a link that does not resolve: the length of its target).
    pub size: u64,
    /// Permission bits (`0o777`: the v1 contract carries no setuid, setgid or sticky bit).
    pub mode: u32,
    /// For a link that does not resolve: what it holds.
    pub link_target: Option<String>,
}

/// What a native recursive removal did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Paths removed.
    pub count: u64,
    /// Where a removal stopped partway (the service does not say why); `None` on full success.
    pub failed_path: Option<String>,
}

/// A backend's own file operations, used by [`Files`] instead of exec'd tools where a target offers them
/// ([`ExecTarget::native_files`]). Paths are normalised absolute paths. Errors carry the files codes
/// (`ERR_PATH_NOT_FOUND`, `ERR_NOT_A_DIRECTORY`, `ERR_NOT_A_FILE`, `ERR_PATH_EXISTS`, …) with `path`.
pub trait FileOps: Send + Sync {
    /// What is at `path`, final links resolved. Missing: `ERR_PATH_NOT_FOUND`.
    fn stat<'a>(&'a self, path: &'a str, call: &'a Call) -> BoxFuture<'a, Result<NativeInfo>>;
    /// The entries of directory `dir` as `(absolute path, info)`, in any order. Missing: `ERR_PATH_NOT_FOUND`;
    /// not a directory: `ERR_NOT_A_DIRECTORY`.
    fn list<'a>(
        &'a self,
        dir: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<(String, NativeInfo)>>>;
    /// Make directory `path` (mode 0755); `parents` makes missing parents. An existing directory is success; an
    /// existing other object `ERR_PATH_EXISTS`; a missing parent without `parents` `ERR_PATH_NOT_FOUND`.
    fn mkdir<'a>(
        &'a self,
        path: &'a str,
        parents: bool,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<()>>;
    /// Remove `path` (a link itself); an absent path is success. A directory that is not empty needs
    /// `recursive` (else `ERR_NOT_A_FILE`); an empty one is removed without it.
    fn remove<'a>(
        &'a self,
        path: &'a str,
        recursive: bool,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<Removed>>;
    /// Move `from` to exactly `to` (a regular file or link there is replaced; a directory there, or anything
    /// there when `from` is a directory, is `ERR_PATH_EXISTS`). A missing `from` or parent of `to`:
    /// `ERR_PATH_NOT_FOUND`.
    fn rename<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<()>>;
}

/// Native stats of a batch run this many at a time.
const NATIVE_CONCURRENCY: usize = 8;

/// One file to write.
#[derive(Debug, Clone)]
pub struct WriteEntry {
    pub path: String,
    pub data: Bytes,
    /// Permission bits; default `0o644`.
    pub mode: Option<u32>,
}

/// Normalise an absolute path lexically (see the module doc); a relative path or one with NUL is
/// `ERR_INVALID_ARGUMENT` naming `argument`.
pub fn normalize(path: &str, argument: &str) -> Result<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(Error::invalid(format!(
            "{argument} must be an absolute path without NUL: {}",
            super::validate::shown(path)
        ))
        .with("argument", argument));
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The parent directory and last segment of a normalised path (`None` for `/`).
fn split(path: &str) -> Option<(&str, &str)> {
    match path.rfind('/') {
        _ if path == "/" => None,
        Some(0) => Some(("/", &path[1..])),
        Some(i) => Some((&path[..i], &path[i + 1..])),
        None => None,
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn name_of(path: &str) -> String {
    split(path).map_or_else(|| "/".to_string(), |(_, n)| n.to_string())
}

/// The `st_mode` type bits of a kind (`Other`: a character device).
fn type_bits(kind: FileKind) -> u32 {
    match kind {
        FileKind::File => 0o100000,
        FileKind::Directory => 0o040000,
        FileKind::Symlink => 0o120000,
        FileKind::Other => 0o020000,
    }
}

/// One `stat` record: `(raw mode, size, mtime seconds)`.
type RawStat = (u32, u64, i64);

fn parse_fields(line: &[u8]) -> Option<RawStat> {
    let s = std::str::from_utf8(line).ok()?;
    let mut it = s.split(' ');
    let mode = u32::from_str_radix(it.next()?, 16).ok()?;
    let size = it.next()?.parse().ok()?;
    let mtime = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((mode, size, mtime))
}

/// Parse the output of `stat -c '%f %s %Y %n'` run on `paths` in order: each record is three numeric fields, a
/// space, the path exactly as given, and a newline. A path whose record is missing (it vanished between listing
/// and `stat`) is skipped; output that matches no expected path is an error.
pub fn parse_stat_records(out: &[u8], paths: &[String]) -> Result<Vec<(usize, RawStat)>> {
    let bad = || {
        Error::new(
            ErrorCode::Internal,
            format!("unexpected `stat` output: {}", excerpt(out)),
        )
    };
    let mut found = Vec::new();
    let mut pos = 0;
    let mut next = 0;
    while pos < out.len() {
        // Three fields, each ended by a space.
        let mut end = pos;
        for _ in 0..3 {
            let sp = out[end..].iter().position(|&b| b == b' ').ok_or_else(bad)?;
            end += sp + 1;
        }
        let fields = parse_fields(&out[pos..end - 1]).ok_or_else(bad)?;
        let rest = &out[end..];
        let i = (next..paths.len())
            .find(|&i| {
                let p = paths[i].as_bytes();
                rest.len() > p.len() && rest.starts_with(p) && rest[p.len()] == b'\n'
            })
            .ok_or_else(bad)?;
        found.push((i, fields));
        pos = end + paths[i].len() + 1;
        next = i + 1;
    }
    Ok(found)
}

/// The names in `find DIR/. -mindepth 1 -maxdepth 1 -print0` output: the text after the last `/` of each record
/// (a name never holds `/`).
pub fn parse_find_names(out: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for rec in out.split(|&b| b == 0) {
        if rec.is_empty() {
            continue;
        }
        let at = rec.iter().rposition(|&b| b == b'/').ok_or_else(|| {
            Error::internal(format!("unexpected `find` output: {}", excerpt(rec)))
        })?;
        let name = &rec[at + 1..];
        if name.is_empty() {
            return Err(Error::internal(format!(
                "unexpected `find` output: {}",
                excerpt(rec)
            )));
        }
        names.push(String::from_utf8(name.to_vec()).map_err(|_| {
            Error::new(
                ErrorCode::Unsupported,
                format!("a name in the listing is not UTF-8: {}", excerpt(name)),
            )
        })?);
    }
    Ok(names)
}

/// The typed error for a tool that failed on `path` (`op` names the operation), from its stderr in the C locale.
pub fn tool_error(op: &str, path: &str, out: &ExecOutput) -> Error {
    let msg = String::from_utf8_lossy(&out.stderr);
    let msg = msg.trim();
    let lower = msg.to_ascii_lowercase();
    let typed = |code, what: &str| {
        Error::new(code, format!("{op} {path}: {what} ({msg})")).with("path", path)
    };
    if lower.contains("no such file or directory") {
        typed(ErrorCode::PathNotFound, "no such file or directory")
    } else if lower.contains("not a directory") {
        typed(
            ErrorCode::NotADirectory,
            "a parent of the path is not a directory",
        )
    } else if lower.contains("is a directory") {
        typed(ErrorCode::NotAFile, "is a directory").with("fileType", "directory")
    } else if lower.contains("file exists") || lower.contains("directory not empty") {
        typed(ErrorCode::PathExists, "something already exists there")
    } else if lower.contains("permission denied")
        || lower.contains("operation not permitted")
        || lower.contains("read-only file system")
    {
        typed(ErrorCode::PermissionDenied, "access refused")
    } else if out.exit_code == Some(127) || out.exit_code == Some(126) {
        Error::new(
            ErrorCode::ExecFailed,
            format!("{op} {path}: the sandbox lacks a standard tool ({msg})"),
        )
        .with("path", path)
    } else {
        Error::internal(format!(
            "{op} {path} failed (exit {:?}): {msg}",
            out.exit_code
        ))
        .with("path", path)
    }
}

/// The files API over one exec target.
#[derive(Clone)]
pub struct Files {
    target: Arc<dyn ExecTarget>,
}

impl Files {
    /// Files of `target`.
    pub fn new(target: Arc<dyn ExecTarget>) -> Files {
        Files { target }
    }

    /// Run a tool (argv only) bounded by `call`.
    async fn tool(&self, argv: Vec<String>, call: &Call) -> Result<ExecOutput> {
        let spec = ExecSpec {
            cmd: argv,
            env: vec![("LC_ALL".into(), "C".into())],
            timeout: Some(
                call.timeout_or(Some(FILES_TIMEOUT))
                    .unwrap_or(FILES_TIMEOUT),
            ),
            max_output_bytes: Some(MAX_TOOL_OUTPUT),
            ..Default::default()
        };
        let out = self.target.exec(spec, call.cancel.clone()).await?;
        if out.timed_out {
            return Err(Error::timeout(
                "files",
                call.timeout_or(Some(FILES_TIMEOUT)).unwrap_or_default(),
            ));
        }
        if out.aborted {
            return Err(Error::aborted());
        }
        Ok(out)
    }

    /// Raw `stat` of one path (`follow`: through a final symbolic link).
    async fn raw_stat(&self, path: &str, follow: bool, call: &Call) -> Result<RawStat> {
        let mut argv = vec!["stat".to_string()];
        if follow {
            argv.push("-L".into());
        }
        argv.extend(["-c".into(), STAT_FIELDS.into(), "--".into(), path.into()]);
        let out = self.tool(argv, call).await?;
        if out.exit_code != Some(0) {
            return Err(tool_error("stat", path, &out));
        }
        let line = out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout);
        parse_fields(line).ok_or_else(|| {
            Error::internal(format!(
                "unexpected `stat` output: {}",
                excerpt(&out.stdout)
            ))
        })
    }

    /// `lstat` of many paths in as few execs as fit the argv: `(index, record)` for each path that exists.
    async fn lstat_many(&self, paths: &[String], call: &Call) -> Result<Vec<(usize, RawStat)>> {
        let mut found = Vec::with_capacity(paths.len());
        let mut i = 0;
        while i < paths.len() {
            let mut end = i;
            let mut bytes = 0;
            while end < paths.len() && (end == i || bytes + paths[end].len() < ARGV_BATCH) {
                bytes += paths[end].len() + 1;
                end += 1;
            }
            let batch = &paths[i..end];
            let mut argv = vec![
                "stat".to_string(),
                "-c".into(),
                format!("{STAT_FIELDS} %n"),
                "--".into(),
            ];
            argv.extend(batch.iter().cloned());
            let out = self.tool(argv, call).await?;
            for (k, raw) in parse_stat_records(&out.stdout, batch)? {
                found.push((i + k, raw));
            }
            i = end;
        }
        Ok(found)
    }

    async fn readlink(&self, path: &str, call: &Call) -> Result<String> {
        let out = self
            .tool(vec!["readlink".into(), "--".into(), path.into()], call)
            .await?;
        if out.exit_code != Some(0) {
            return Err(tool_error("readlink", path, &out));
        }
        let t = out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout);
        Ok(String::from_utf8_lossy(t).into_owned())
    }

    /// The target's own file operations, if its backend has them.
    fn native(&self) -> Option<&dyn FileOps> {
        self.target.native_files()
    }

    /// Native stats of many paths (links resolved) as `(index, record)` for each path that exists, a few at a
    /// time; a missing path (or one under a file) is skipped, as `lstat_many` skips it. The record's mode holds
    /// the kind's type bits and its mtime is 0 (its callers read only the kind).
    async fn native_many(
        ops: &dyn FileOps,
        paths: &[String],
        call: &Call,
    ) -> Result<Vec<(usize, RawStat)>> {
        let mut found = Vec::with_capacity(paths.len());
        for (c, chunk) in paths.chunks(NATIVE_CONCURRENCY).enumerate() {
            let answers = futures::future::join_all(chunk.iter().map(|p| ops.stat(p, call))).await;
            for (k, a) in answers.into_iter().enumerate() {
                match a {
                    Ok(n) => found.push((
                        c * NATIVE_CONCURRENCY + k,
                        (type_bits(n.kind) | n.mode, n.size, 0),
                    )),
                    Err(e)
                        if matches!(e.code, ErrorCode::PathNotFound | ErrorCode::NotADirectory) => {
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(found)
    }

    /// A native stat through final links, as `stat -L` answers: a link that does not resolve is
    /// `ERR_PATH_NOT_FOUND` (with its `linkTarget`), a missing path under something that is not a directory
    /// `ERR_NOT_A_DIRECTORY`.
    async fn native_stat(ops: &dyn FileOps, path: &str, call: &Call) -> Result<NativeInfo> {
        match ops.stat(path, call).await {
            Ok(n) if n.kind == FileKind::Symlink => {
                let target = n.link_target.unwrap_or_default();
                Err(Error::new(
                    ErrorCode::PathNotFound,
                    format!("stat {path}: a symbolic link that does not resolve (to {target:?})"),
                )
                .with("path", path)
                .with("linkTarget", target))
            }
            Ok(n) => Ok(n),
            Err(e) if e.code == ErrorCode::PathNotFound => {
                Err(Self::why_missing(ops, path, e, call).await)
            }
            Err(e) => Err(e),
        }
    }

    /// Why `path` is missing, as the kernel would say: the nearest ancestor that exists is a file (or another
    /// non-directory) → `ERR_NOT_A_DIRECTORY` naming `path`; else `e`. (The v1 endpoint may answer `notFound`
    /// for both.) Asks only on the error path.
    async fn why_missing(ops: &dyn FileOps, path: &str, e: Error, call: &Call) -> Error {
        let mut cur = path;
        while let Some((parent, _)) = split(cur) {
            if parent == "/" {
                break;
            }
            match ops.stat(parent, call).await {
                Ok(n) if matches!(n.kind, FileKind::File | FileKind::Other) => {
                    let kind = n.kind.as_str();
                    return Error::new(
                        ErrorCode::NotADirectory,
                        format!("{path}: a parent of the path is not a directory ({parent} is a {kind})"),
                    )
                    .with("path", path)
                    .with("fileType", kind);
                }
                Err(x) if x.code == ErrorCode::PathNotFound => cur = parent,
                _ => break,
            }
        }
        e
    }

    /// What is at `path` (through a final link when `follow`): natively where the target can, links then always
    /// resolved.
    async fn kind_of(&self, path: &str, follow: bool, call: &Call) -> Result<FileKind> {
        match self.native() {
            Some(ops) => Ok(Self::native_stat(ops, path, call).await?.kind),
            None => Ok(FileKind::of_mode(
                self.raw_stat(path, follow, call).await?.0,
            )),
        }
    }

    /// A native answer as an entry: no modification time in the v1 contract (NaN).
    fn native_entry(path: &str, n: NativeInfo) -> FileEntry {
        FileEntry {
            name: name_of(path),
            path: path.to_string(),
            kind: n.kind,
            size: n.size,
            mode: n.mode & 0o7777,
            mtime_ms: f64::NAN,
            link_target: n.link_target,
        }
    }

    fn entry(path: &str, (raw, size, mtime): RawStat) -> FileEntry {
        FileEntry {
            name: name_of(path),
            path: path.to_string(),
            kind: FileKind::of_mode(raw),
            size,
            mode: raw & 0o7777,
            mtime_ms: mtime as f64 * 1000.0,
            link_target: None,
        }
    }

    /// What is at `path`. `follow` (as `fs.stat`) describes what a final symbolic link leads to; without it (as
    /// `fs.lstat`) the link itself, with `link_target`. Missing: `ERR_PATH_NOT_FOUND`.
    ///
    /// On a target with native file operations (v1), `follow` is answered natively (`mtime_ms` NaN, `mode`
    /// without setuid/setgid/sticky bits); without `follow` the tools run, and where the target cannot run them
    /// the native answer is given (a link that resolves is then described as what it leads to).
    pub async fn stat(&self, path: &str, follow: bool, call: &Call) -> Result<FileEntry> {
        let path = normalize(path, "path")?;
        call.run("files.stat", Some(FILES_TIMEOUT), async {
            // The tools first (the v1 contract's `Stat` has no modification time and no special bits); the
            // backend's own stat where the target cannot run them.
            let native = self.native();
            let exec = async {
                let mut e = Self::entry(&path, self.raw_stat(&path, follow, call).await?);
                if e.kind == FileKind::Symlink {
                    e.link_target = Some(self.readlink(&path, call).await?);
                }
                Ok::<FileEntry, Error>(e)
            };
            match (exec.await, native) {
                (Err(e), Some(ops)) if e.code == ErrorCode::ExecFailed => {
                    if follow {
                        return Self::native_stat(ops, &path, call)
                            .await
                            .map(|n| Self::native_entry(&path, n));
                    }
                    match ops.stat(&path, call).await {
                        Ok(n) => Ok(Self::native_entry(&path, n)),
                        Err(m) if m.code == ErrorCode::PathNotFound => {
                            Err(Self::why_missing(ops, &path, m, call).await)
                        }
                        Err(m) => Err(m),
                    }
                }
                (r, _) => r,
            }
        })
        .await
    }

    /// Whether something is at `path`, following symbolic links (a dangling link is `false`, as
    /// `fs.existsSync`). A parent that is not a directory is `false` too.
    pub async fn exists(&self, path: &str, call: &Call) -> Result<bool> {
        let path = normalize(path, "path")?;
        call.run("files.exists", Some(FILES_TIMEOUT), async {
            if let Some(ops) = self.native() {
                return match ops.stat(&path, call).await {
                    Ok(n) => Ok(n.kind != FileKind::Symlink),
                    Err(e)
                        if matches!(e.code, ErrorCode::PathNotFound | ErrorCode::NotADirectory) =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(e),
                };
            }
            match self.raw_stat(&path, true, call).await {
                Ok(_) => Ok(true),
                Err(e) if matches!(e.code, ErrorCode::PathNotFound | ErrorCode::NotADirectory) => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// The entries of directory `dir` (a symbolic link to one is followed), sorted by name, each described
    /// without following links. Missing: `ERR_PATH_NOT_FOUND`; not a directory: `ERR_NOT_A_DIRECTORY`.
    ///
    /// The entries come from the tools on every target (a native listing cannot tell a link that resolves from
    /// what it leads to, nor give times); where the target cannot run them, from its native listing (links that
    /// resolve described as their targets, `mtime_ms` NaN).
    pub async fn list(&self, dir: &str, call: &Call) -> Result<Vec<FileEntry>> {
        let dir = normalize(dir, "dir")?;
        call.run("files.list", Some(FILES_TIMEOUT), async {
            match (self.list_tools(&dir, call).await, self.native()) {
                (Err(e), Some(ops)) if e.code == ErrorCode::ExecFailed => {
                    let mut entries = Vec::new();
                    for (p, n) in ops.list(&dir, call).await? {
                        entries.push(Self::native_entry(&p, n));
                    }
                    entries.sort_by(|a, b| a.name.cmp(&b.name));
                    Ok(entries)
                }
                (r, _) => r,
            }
        })
        .await
    }

    /// [`Files::list`] with the tools (the directory itself checked natively where the target can).
    async fn list_tools(&self, dir: &str, call: &Call) -> Result<Vec<FileEntry>> {
        let kind = self.kind_of(dir, true, call).await?;
        if kind != FileKind::Directory {
            return Err(Error::new(
                ErrorCode::NotADirectory,
                format!("list {dir}: not a directory (a {})", kind.as_str()),
            )
            .with("path", dir)
            .with("fileType", kind.as_str()));
        }
        let start = if dir == "/" {
            "/.".to_string()
        } else {
            format!("{dir}/.")
        };
        let argv = vec![
            "find".into(),
            start,
            "-mindepth".into(),
            "1".into(),
            "-maxdepth".into(),
            "1".into(),
            "-print0".into(),
        ];
        let out = self.tool(argv, call).await?;
        if out.exit_code != Some(0) {
            return Err(tool_error("list", dir, &out));
        }
        let mut names = parse_find_names(&out.stdout)?;
        names.sort();
        let paths: Vec<String> = names.iter().map(|n| join(dir, n)).collect();
        let mut entries = Vec::with_capacity(paths.len());
        for (k, raw) in self.lstat_many(&paths, call).await? {
            entries.push(Self::entry(&paths[k], raw));
        }
        for e in entries.iter_mut().filter(|e| e.kind == FileKind::Symlink) {
            match self.readlink(&e.path, call).await {
                Ok(t) => e.link_target = Some(t),
                Err(err) if err.code == ErrorCode::PathNotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(entries)
    }

    /// Make directory `path`; `recursive` makes missing parents and accepts an existing directory (as
    /// `mkdir -p`). Without it, an existing path is `ERR_PATH_EXISTS` and a missing parent `ERR_PATH_NOT_FOUND`.
    pub async fn mkdir(&self, path: &str, recursive: bool, call: &Call) -> Result<()> {
        let path = normalize(path, "path")?;
        call.run("files.mkdir", Some(FILES_TIMEOUT), async {
            if let Some(ops) = self.native() {
                return Self::native_mkdir(ops, &path, recursive, call).await;
            }
            let mut argv = vec!["mkdir".to_string()];
            if recursive {
                argv.push("-p".into());
            }
            argv.extend(["--".into(), path.clone()]);
            let out = self.tool(argv, call).await?;
            if out.exit_code != Some(0) {
                return Err(tool_error("mkdir", &path, &out));
            }
            Ok(())
        })
        .await
    }

    /// [`Files::mkdir`] natively: the service's mkdir converges on an existing directory, so without `recursive`
    /// an existing path is looked for first.
    async fn native_mkdir(
        ops: &dyn FileOps,
        path: &str,
        recursive: bool,
        call: &Call,
    ) -> Result<()> {
        let exists = |kind: FileKind| {
            Error::new(
                ErrorCode::PathExists,
                format!("mkdir {path}: a {} exists there", kind.as_str()),
            )
            .with("path", path)
            .with("fileType", kind.as_str())
        };
        if !recursive {
            match ops.stat(path, call).await {
                Ok(n) => return Err(exists(n.kind)),
                Err(e) if e.code == ErrorCode::PathNotFound => {}
                Err(e) => return Err(e),
            }
        }
        match ops.mkdir(path, recursive, call).await {
            Ok(()) => Ok(()),
            Err(e) if e.code == ErrorCode::PathNotFound => {
                Err(Self::why_missing(ops, path, e, call).await)
            }
            // With parents, "exists" is either the path itself or a parent that is a file (`mkdir -p`: ENOTDIR).
            Err(e) if e.code == ErrorCode::PathExists => match ops.stat(path, call).await {
                Ok(n) => Err(exists(n.kind)),
                Err(m) if m.code == ErrorCode::PathNotFound => {
                    Err(Self::why_missing(ops, path, e, call).await)
                }
                Err(_) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Remove `path` (a symbolic link itself, never what it points to). A directory needs `recursive`
    /// (else `ERR_NOT_A_FILE`); a missing path is `ERR_PATH_NOT_FOUND` unless `force`. `/` is refused.
    ///
    /// Natively (v1), an *empty* directory is removed without `recursive` (the service's removal is `rmdir`-like
    /// and cannot tell a link to a directory from a directory beforehand); a recursive removal that stops partway
    /// is `ERR_PERMISSION_DENIED` naming where (`path`) with the count removed (`removed`): the service does not
    /// say why.
    pub async fn remove(
        &self,
        path: &str,
        recursive: bool,
        force: bool,
        call: &Call,
    ) -> Result<()> {
        let path = normalize(path, "path")?;
        if path == "/" {
            return Err(Error::invalid("remove refuses to remove /").with("argument", "path"));
        }
        call.run("files.remove", Some(FILES_TIMEOUT), async {
            if let Some(ops) = self.native() {
                return Self::native_remove(ops, &path, recursive, force, call).await;
            }
            let mut argv = vec!["rm".to_string()];
            if recursive {
                argv.push("-r".into());
            }
            if force {
                argv.push("-f".into());
            }
            argv.extend(["--".into(), path.clone()]);
            let out = self.tool(argv, call).await?;
            if out.exit_code != Some(0) {
                let e = tool_error("remove", &path, &out);
                if force && e.code == ErrorCode::PathNotFound {
                    return Ok(());
                }
                return Err(e);
            }
            Ok(())
        })
        .await
    }

    /// [`Files::remove`] natively: the service answers success for an absent path, so it is looked for first.
    async fn native_remove(
        ops: &dyn FileOps,
        path: &str,
        recursive: bool,
        force: bool,
        call: &Call,
    ) -> Result<()> {
        let found = match ops.stat(path, call).await {
            Ok(n) => n,
            Err(e) if e.code == ErrorCode::PathNotFound => {
                let e = Self::why_missing(ops, path, e, call).await;
                if force && e.code == ErrorCode::PathNotFound {
                    return Ok(());
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let done = match ops.remove(path, recursive, call).await {
            Ok(done) => done,
            // Not recursive, a directory with something in it: the service's failedPrecondition.
            Err(e)
                if found.kind == FileKind::Directory
                    && !recursive
                    && matches!(e.code, ErrorCode::NotAFile | ErrorCode::PathExists) =>
            {
                let mut e = e.with("fileType", "directory");
                e.code = ErrorCode::NotAFile;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        match done.failed_path {
            None => Ok(()),
            Some(at) => Err(Error::new(
                ErrorCode::PermissionDenied,
                format!(
                    "remove {path}: stopped at {at} after removing {} paths (the sandbox does not say why)",
                    done.count
                ),
            )
            .with("path", at)
            .with("removed", done.count)),
        }
    }

    /// Rename `from` to `to`. Something at `to` is `ERR_PATH_EXISTS`, unless `overwrite` and it is not a
    /// directory (then it is replaced). A missing `from`, or a missing parent of `to`: `ERR_PATH_NOT_FOUND`.
    ///
    /// Natively (v1) links are resolved when `to` is looked at, so a link to a directory there is
    /// `ERR_PATH_EXISTS` (the tools would move `from` into that directory); a move across file systems is
    /// `ERR_UNSUPPORTED` (the service never copies).
    pub async fn rename(&self, from: &str, to: &str, overwrite: bool, call: &Call) -> Result<()> {
        let from = normalize(from, "from")?;
        let to = normalize(to, "to")?;
        call.run("files.rename", Some(FILES_TIMEOUT), async {
            if let Some(ops) = self.native() {
                return Self::native_rename(ops, &from, &to, overwrite, call).await;
            }
            self.raw_stat(&from, false, call).await?;
            match self.raw_stat(&to, false, call).await {
                Ok((raw, _, _)) => {
                    let kind = FileKind::of_mode(raw);
                    if !overwrite || kind == FileKind::Directory {
                        return Err(Error::new(
                            ErrorCode::PathExists,
                            format!("rename {from} to {to}: a {} exists there", kind.as_str()),
                        )
                        .with("path", to.as_str())
                        .with("fileType", kind.as_str()));
                    }
                }
                Err(e) if e.code == ErrorCode::PathNotFound => {}
                Err(e) => return Err(e),
            }
            let argv = vec!["mv".into(), "--".into(), from.clone(), to.clone()];
            let out = self.tool(argv, call).await?;
            if out.exit_code != Some(0) {
                let mut e = tool_error("rename", &from, &out);
                if e.code == ErrorCode::PathNotFound {
                    // `from` was there a moment ago: what is missing is the destination's directory.
                    e.props.insert("path".into(), to.as_str().into());
                }
                return Err(e.with("destination", to.as_str()));
            }
            Ok(())
        })
        .await
    }

    /// [`Files::rename`] natively.
    async fn native_rename(
        ops: &dyn FileOps,
        from: &str,
        to: &str,
        overwrite: bool,
        call: &Call,
    ) -> Result<()> {
        match ops.stat(from, call).await {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::PathNotFound => {
                return Err(Self::why_missing(ops, from, e.with("path", from), call).await)
            }
            Err(e) => return Err(e),
        }
        match ops.stat(to, call).await {
            Ok(n) if !overwrite || n.kind == FileKind::Directory => {
                let kind = n.kind.as_str();
                return Err(Error::new(
                    ErrorCode::PathExists,
                    format!("rename {from} to {to}: a {kind} exists there"),
                )
                .with("path", to)
                .with("fileType", kind));
            }
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::PathNotFound => {}
            Err(e) => return Err(e),
        }
        match ops.rename(from, to, call).await {
            Ok(()) => Ok(()),
            Err(e) if e.code == ErrorCode::PathNotFound => {
                // `from` was there a moment ago: what is missing is the destination's directory.
                let e = e.with("path", to);
                Err(Self::why_missing(ops, to, e, call)
                    .await
                    .with("destination", to))
            }
            Err(e) => Err(e.with("destination", to)),
        }
    }

    /// Write `files` in one archive through the backend's archive route. With `parents`, missing parent
    /// directories are made (mode 0755); without it, a missing one is `ERR_PATH_NOT_FOUND` naming it. A file
    /// replaces what is at its path (a symbolic link is replaced, not written through); a directory there is
    /// `ERR_NOT_A_FILE`.
    ///
    /// On a backend with its own file operations (v1) nothing is looked at first: the service refuses a directory
    /// (or a link to one) at a file's path itself, and is then asked which path it was; an existing link to a file
    /// is written through, as the v1 upload does.
    pub async fn write(&self, files: Vec<WriteEntry>, parents: bool, call: &Call) -> Result<()> {
        let mut norm = Vec::with_capacity(files.len());
        for (i, f) in files.into_iter().enumerate() {
            let p = normalize(&f.path, "path")?;
            if p == "/" {
                return Err(
                    Error::invalid(format!("files[{i}].path must name a file, not /"))
                        .with("argument", "path"),
                );
            }
            if let Some(m) = f.mode {
                if m > 0o7777 {
                    return Err(
                        Error::invalid("mode must be permission bits (at most 0o7777)")
                            .with("argument", "mode"),
                    );
                }
            }
            norm.push((p, f.data, f.mode.unwrap_or(0o644)));
        }
        if norm.is_empty() {
            return Ok(());
        }
        call.run("files.write", Some(FILES_TIMEOUT), async {
            // The engine's extraction replaces a directory with a file silently (removing the tree): refuse first.
            // A backend with its own file operations (v1) refuses a directory there itself: named after the fact.
            let paths: Vec<String> = norm.iter().map(|(p, _, _)| p.clone()).collect();
            if self.native().is_none() {
                if let Some(e) = Self::directory_there(&paths, self.lstat_many(&paths, call).await?)
                {
                    return Err(e);
                }
            }
            let dirs: BTreeSet<&str> = norm
                .iter()
                .map(|(p, _, _)| split(p).map_or("/", |(d, _)| d))
                .collect();
            // One directory and no parents to make: extract there, so the backend itself reports a missing one.
            // Otherwise extract at `/` with full names (extraction makes missing parents) after checking them.
            let (base, strip) = if dirs.len() == 1 && !parents {
                let d = *dirs.iter().next().expect("one");
                (d.to_string(), if d == "/" { 1 } else { d.len() + 1 })
            } else {
                if !parents {
                    for d in &dirs {
                        self.need_dir(d, call).await?;
                    }
                }
                ("/".to_string(), 1)
            };
            let tar = many_file_tar(norm.iter().map(|(p, d, m)| (&p[strip..], &d[..], *m)))?;
            match self.target.write_files(&base, Bytes::from(tar), call).await {
                Ok(()) => Ok(()),
                Err(e) if matches!(e.code, ErrorCode::Aborted | ErrorCode::Timeout) => Err(e),
                Err(e) => Err(self.diagnose_write(e, &dirs, &paths, parents, call).await),
            }
        })
        .await
    }

    /// `ERR_NOT_A_FILE` for the first of `paths` that `found` (stat records by index) says is a directory.
    fn directory_there(paths: &[String], found: Vec<(usize, RawStat)>) -> Option<Error> {
        let k = found
            .into_iter()
            .find(|(_, (raw, _, _))| FileKind::of_mode(*raw) == FileKind::Directory)?
            .0;
        Some(
            Error::new(
                ErrorCode::NotAFile,
                format!("write {}: a directory is there", paths[k]),
            )
            .with("path", paths[k].as_str())
            .with("fileType", "directory"),
        )
    }

    /// `dir` must exist and be a directory.
    async fn need_dir(&self, dir: &str, call: &Call) -> Result<()> {
        let kind = self.kind_of(dir, true, call).await?;
        if kind != FileKind::Directory {
            return Err(Error::new(
                ErrorCode::NotADirectory,
                format!("{dir} is a {}, not a directory", kind.as_str()),
            )
            .with("path", dir)
            .with("fileType", kind.as_str()));
        }
        Ok(())
    }

    /// A typed error for a failed write when the backend gave a generic one: a missing or non-directory parent,
    /// or (natively, where nothing was checked before) a directory at a file's path. Else the backend's own error.
    async fn diagnose_write(
        &self,
        e: Error,
        dirs: &BTreeSet<&str>,
        paths: &[String],
        parents: bool,
        call: &Call,
    ) -> Error {
        if !parents {
            for d in dirs {
                if let Err(found) = self.need_dir(d, call).await {
                    return found;
                }
            }
        }
        if let (Some(ops), ErrorCode::NotAFile) = (self.native(), e.code) {
            if let Ok(found) = Self::native_many(ops, paths, call).await {
                if let Some(there) = Self::directory_there(paths, found) {
                    return there;
                }
            }
        }
        e
    }

    /// The bytes of the regular file at `path`, following symbolic links. Missing: `ERR_PATH_NOT_FOUND`; a
    /// directory: `ERR_NOT_A_FILE`.
    pub async fn read(&self, path: &str, call: &Call) -> Result<Vec<u8>> {
        let path = normalize(path, "path")?;
        self.target.read_file(&path, call).await
    }

    /// The bytes of each regular file in `paths`, in order (a path given twice comes twice): one request where the
    /// target has a batch route (the v1 endpoint's download), else a few single reads at a time. The first path
    /// that cannot be read fails the call with [`read`](Self::read)'s error for it.
    pub async fn read_many(&self, paths: &[String], call: &Call) -> Result<Vec<Vec<u8>>> {
        let paths = paths
            .iter()
            .enumerate()
            .map(|(i, p)| normalize(p, &format!("paths[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        self.target.read_files(&paths, call).await
    }
}

/// Default deadline of a whole directory transfer.
pub const DIR_TIMEOUT: Duration = Duration::from_secs(600);
/// Chunks of a directory transfer in flight between the sandbox and the host (backpressure beyond it).
const DIR_CHANNEL: usize = 16;
/// Most stderr kept from the sandbox's `tar`.
const TAR_STDERR: usize = 64 * 1024;

/// What a directory transfer moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirReport {
    /// Entries (files, directories, links) written.
    pub entries: u64,
    /// Bytes of file contents.
    pub bytes: u64,
}

/// Whether a symbolic link at `rel` (a path relative to a copied tree's root) pointing at `target` leads
/// outside the tree: an absolute target always does (it means something else on the other side); a relative one
/// when its `..` climb above the root.
pub fn link_escapes(rel: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    let mut depth: Vec<&str> = rel
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    depth.pop();
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return true;
                }
            }
            s => depth.push(s),
        }
    }
    false
}

fn escape_error(root: &str, rel: &str, target: &str) -> Error {
    Error::new(
        ErrorCode::PathEscapes,
        format!("the symbolic link {rel} in {root} points outside it (to {target})"),
    )
    .with("path", rel)
    .with("linkTarget", target)
    .with("root", root)
}

fn host_path(path: &str, argument: &str) -> Result<std::path::PathBuf> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(Error::invalid(format!(
            "{argument} must be an absolute host path without NUL: {}",
            super::validate::shown(path)
        ))
        .with("argument", argument));
    }
    Ok(std::path::PathBuf::from(path))
}

fn host_io(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::PathNotFound,
        std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        std::io::ErrorKind::AlreadyExists => ErrorCode::PathExists,
        _ => ErrorCode::Internal,
    };
    Error::new(code, format!("{what} {}: {e}", path.display()))
        .with("path", path.display().to_string())
}

/// A blocking `Read` over chunks sent from async code (the download's tar stream).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

/// A blocking `Write` that sends chunks to async code (the upload's tar stream).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    const CHUNK: usize = 256 * 1024;
    fn flush_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(b)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.flush_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_buf()
    }
}

/// Unpack a tar stream into `dest`, refusing links that lead outside it (`root` names the sandbox directory
/// in errors). Devices and FIFOs are skipped.
fn unpack_tree(
    reader: impl std::io::Read,
    dest: &std::path::Path,
    root: &str,
) -> Result<DirReport> {
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_overwrite(true);
    let bad =
        |e: std::io::Error| Error::internal(format!("reading the sandbox's tar of {root}: {e}"));
    let mut report = DirReport::default();
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        let rel = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name().map_err(bad)?.unwrap_or_default();
            let target = target.to_string_lossy().into_owned();
            // A hard link's name is relative to the archive root, not to the link.
            let escapes = if kind.is_hard_link() {
                link_escapes("x", &target)
            } else {
                link_escapes(&rel, &target)
            };
            if escapes {
                return Err(escape_error(root, &rel, &target));
            }
        } else if !(kind.is_file() || kind.is_dir() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let size = entry.size();
        let done = entry
            .unpack_in(dest)
            .map_err(|e| host_io("writing into", dest, e))?;
        let r = rel.trim_start_matches("./");
        if done && !r.is_empty() && r != "." {
            report.entries += 1;
            if kind.is_file() {
                report.bytes += size;
            }
        }
    }
    // Read the padding after the end-of-archive marker too, so the sender sees the whole stream taken and the
    // sandbox's `tar` exits on its own (its exit status is then checked).
    std::io::copy(&mut ar.into_inner(), &mut std::io::sink()).map_err(bad)?;
    Ok(report)
}

/// Walk `root` on the host (links not followed) and refuse a link that leads outside it.
fn check_host_tree(root: &std::path::Path) -> Result<()> {
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd = std::fs::read_dir(&dir).map_err(|e| host_io("reading", &dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| host_io("reading", &dir, e))?;
            let rel = rel.join(ent.file_name());
            let ft = ent.file_type().map_err(|e| host_io("reading", &dir, e))?;
            if ft.is_symlink() {
                let target = std::fs::read_link(ent.path())
                    .map_err(|e| host_io("reading", &ent.path(), e))?;
                let (r, t) = (rel.to_string_lossy(), target.to_string_lossy());
                if link_escapes(&r, &t) {
                    return Err(escape_error(&root.display().to_string(), &r, &t));
                }
            } else if ft.is_dir() {
                stack.push(rel);
            }
        }
    }
    Ok(())
}

/// Write the tree under `root` as a tar into `out` (links kept as links, devices and FIFOs skipped).
fn pack_tree(root: &std::path::Path, out: ChannelWriter) -> Result<DirReport> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut report = DirReport::default();
    let mut stack = vec![std::path::PathBuf::new()];
    let io = |p: &std::path::Path, e: std::io::Error| host_io("reading", p, e);
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut ents: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| io(&dir, e))?;
        ents.sort_by_key(|e| e.file_name());
        for ent in ents {
            let rel = rel.join(ent.file_name());
            let path = ent.path();
            let ft = ent.file_type().map_err(|e| io(&path, e))?;
            if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
                continue;
            }
            b.append_path_with_name(&path, &rel)
                .map_err(|e| io(&path, e))?;
            report.entries += 1;
            if ft.is_file() {
                report.bytes += ent.metadata().map_err(|e| io(&path, e))?.len();
            }
            if ft.is_dir() {
                stack.push(rel);
            }
        }
    }
    let mut w = b.into_inner().map_err(|e| io(root, e))?;
    std::io::Write::flush(&mut w).map_err(|e| io(root, e))?;
    Ok(report)
}

impl Files {
    /// Copy the tree under sandbox directory `dir` into host directory `host_dir` (made if missing), streamed:
    /// the sandbox's `tar -c` is unpacked as it arrives, with backpressure. A symbolic link in the tree that
    /// leads outside it (an absolute target, or `..` above `dir`) is `ERR_PATH_ESCAPES` and stops the copy;
    /// devices and FIFOs are skipped.
    pub async fn download_dir(&self, dir: &str, host_dir: &str, call: &Call) -> Result<DirReport> {
        let dir = normalize(dir, "dir")?;
        let dest = host_path(host_dir, "hostDir")?;
        call.run("files.downloadDir", Some(DIR_TIMEOUT), async {
            self.need_dir(&dir, call).await?;
            std::fs::create_dir_all(&dest).map_err(|e| host_io("creating", &dest, e))?;
            let spec = ExecSpec {
                cmd: vec![
                    "tar".into(),
                    "-c".into(),
                    "-f".into(),
                    "-".into(),
                    "-C".into(),
                    dir.clone(),
                    ".".into(),
                ],
                env: vec![("LC_ALL".into(), "C".into())],
                ..Default::default()
            };
            let proc = self.target.spawn(spec, call.cancel.clone()).await?;
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(DIR_CHANNEL);
            let (d, root) = (dest.clone(), dir.clone());
            let unpack = tokio::task::spawn_blocking(move || {
                unpack_tree(
                    ChannelReader {
                        rx,
                        cur: Bytes::new(),
                    },
                    &d,
                    &root,
                )
            });
            let mut stderr = Vec::new();
            let mut stopped = false;
            while let Some(c) = proc.next().await {
                let (is_err, data) = match c {
                    Ok(c) => c.into_parts(),
                    Err(e) => {
                        proc.dispose().await;
                        return Err(e);
                    }
                };
                if is_err {
                    let room = TAR_STDERR.saturating_sub(stderr.len());
                    stderr.extend_from_slice(&data[..data.len().min(room)]);
                } else if tx.send(data).await.is_err() {
                    stopped = true;
                    break;
                }
            }
            drop(tx);
            let unpacked = unpack
                .await
                .map_err(|e| Error::internal(format!("unpacking {dir}: {e}")));
            if stopped {
                proc.dispose().await;
                return unpacked?;
            }
            let status = proc.wait(call).await?;
            let report = unpacked??;
            if status.exit_code != Some(0) {
                let out = ExecOutput {
                    exit_code: status.exit_code,
                    stderr,
                    ..Default::default()
                };
                return Err(tool_error("downloadDir", &dir, &out));
            }
            Ok(report)
        })
        .await
    }

    /// Copy the tree under host directory `host_dir` into sandbox directory `dir` (made if missing), streamed:
    /// packed on the host as the sandbox's `tar -x` reads it. A symbolic link in the host tree that leads outside
    /// it is `ERR_PATH_ESCAPES`, found before anything is sent; devices and FIFOs are skipped.
    pub async fn upload_dir(&self, host_dir: &str, dir: &str, call: &Call) -> Result<DirReport> {
        let src = host_path(host_dir, "hostDir")?;
        let dir = normalize(dir, "dir")?;
        call.run("files.uploadDir", Some(DIR_TIMEOUT), async {
            let meta = std::fs::metadata(&src).map_err(|e| host_io("reading", &src, e))?;
            if !meta.is_dir() {
                return Err(Error::new(
                    ErrorCode::NotADirectory,
                    format!("{} is not a directory", src.display()),
                )
                .with("path", src.display().to_string()));
            }
            let s = src.clone();
            tokio::task::spawn_blocking(move || check_host_tree(&s))
                .await
                .map_err(|e| Error::internal(format!("walking {}: {e}", src.display())))??;
            self.mkdir(&dir, true, call).await?;
            let spec = ExecSpec {
                cmd: vec![
                    "tar".into(),
                    "-x".into(),
                    "-f".into(),
                    "-".into(),
                    "-C".into(),
                    dir.clone(),
                ],
                env: vec![("LC_ALL".into(), "C".into())],
                interactive: true,
                ..Default::default()
            };
            let proc = self.target.spawn(spec, call.cancel.clone()).await?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(DIR_CHANNEL);
            let s = src.clone();
            let pack = tokio::task::spawn_blocking(move || {
                pack_tree(
                    &s,
                    ChannelWriter {
                        tx,
                        buf: Vec::with_capacity(ChannelWriter::CHUNK),
                    },
                )
            });
            while let Some(b) = rx.recv().await {
                if let Err(e) = proc.write(&b).await {
                    drop(rx);
                    proc.dispose().await;
                    let _ = pack.await;
                    return Err(e);
                }
            }
            let packed = pack
                .await
                .map_err(|e| Error::internal(format!("packing {}: {e}", src.display())));
            let report = match packed {
                Ok(Ok(r)) => r,
                Ok(Err(e)) | Err(e) => {
                    proc.dispose().await;
                    return Err(e);
                }
            };
            proc.end().await?;
            let mut stderr = Vec::new();
            while let Some(c) = proc.next().await {
                let (is_err, data) = c?.into_parts();
                if is_err {
                    let room = TAR_STDERR.saturating_sub(stderr.len());
                    stderr.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            let status = proc.wait(call).await?;
            if status.exit_code != Some(0) {
                let out = ExecOutput {
                    exit_code: status.exit_code,
                    stderr,
                    ..Default::default()
                };
                return Err(tool_error("uploadDir", &dir, &out));
            }
            Ok(report)
        })
        .await
    }
}

/// A tar of regular files `(relative name, bytes, mode)`, mtime now.
fn many_file_tar<'a>(files: impl Iterator<Item = (&'a str, &'a [u8], u32)>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (name, data, mode) in files {
        let one = single_file_tar(name, data, mode)?;
        // Each one-entry archive ends in two zero blocks; keep only its entry.
        let end = one.len() - 1024;
        out.extend_from_slice(&one[..end]);
    }
    out.extend_from_slice(&[0u8; 1024]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_lexically() {
        for (i, o) in [
            ("/", "/"),
            ("/a/b/", "/a/b"),
            ("//a//./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../x", "/x"),
            ("/a/b/..", "/a"),
            ("/-rf", "/-rf"),
            ("/with space/ü", "/with space/ü"),
            ("/a/...", "/a/..."),
        ] {
            assert_eq!(normalize(i, "path").unwrap(), o, "{i}");
        }
        for bad in ["", "rel", "./a", "/a\0b"] {
            let e = normalize(bad, "path").unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            assert_eq!(e.props["argument"], "path");
        }
    }

    #[test]
    fn split_and_join() {
        assert_eq!(split("/"), None);
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/a/b c"), Some(("/a", "b c")));
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
        assert_eq!(name_of("/"), "/");
    }

    #[test]
    fn stat_records_match_known_paths_whatever_the_names_hold() {
        let paths: Vec<String> = ["/d/a b", "/d/new\nline", "/d/gone", "/d/-rf", "/d/ü"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // `/d/gone` vanished between find and stat: no record.
        let out = b"81a4 3 1700000000 /d/a b\n41ed 4096 1700000001 /d/new\nline\n81a4 0 5 /d/-rf\na1ff 7 9 /d/\xc3\xbc\n";
        let got = parse_stat_records(out, &paths).unwrap();
        assert_eq!(
            got,
            vec![
                (0, (0o100644, 3, 1_700_000_000)),
                (1, (0o40755, 4096, 1_700_000_001)),
                (3, (0o100644, 0, 5)),
                (4, (0o120777, 7, 9)),
            ]
        );
        assert_eq!(FileKind::of_mode(0o120777), FileKind::Symlink);
        assert_eq!(FileKind::of_mode(0o20666), FileKind::Other);
        assert!(parse_stat_records(b"zz 1 2 /x\n", &paths).is_err());
        assert!(parse_stat_records(b"81a4 1 2 /other\n", &paths).is_err());
        assert_eq!(parse_stat_records(b"", &paths).unwrap(), vec![]);
    }

    #[test]
    fn find_names_split_on_nul_and_keep_the_last_segment() {
        let out = b"/d/./a b\0/d/./new\nline\0/d/./-rf\0/d/./\xc3\xbc\0";
        assert_eq!(
            parse_find_names(out).unwrap(),
            vec!["a b", "new\nline", "-rf", "ü"]
        );
        assert!(parse_find_names(b"noslash\0").is_err());
        assert!(parse_find_names(b"/d/\xff\0").is_err());
    }

    #[test]
    fn tool_errors_are_typed_from_c_locale_messages() {
        let out = |msg: &str| ExecOutput {
            exit_code: Some(1),
            stderr: msg.as_bytes().to_vec(),
            ..Default::default()
        };
        for (msg, code) in [
            (
                "stat: can't stat '/x': No such file or directory",
                ErrorCode::PathNotFound,
            ),
            (
                "stat: cannot statx '/f/x': Not a directory",
                ErrorCode::NotADirectory,
            ),
            (
                "mkdir: can't create directory '/tmp': File exists",
                ErrorCode::PathExists,
            ),
            ("rm: '/tmp/d' is a directory", ErrorCode::NotAFile),
            (
                "rm: cannot remove '/tmp/d': Is a directory",
                ErrorCode::NotAFile,
            ),
            (
                "mkdir: cannot create directory '/proc/x': Permission denied",
                ErrorCode::PermissionDenied,
            ),
            ("weird", ErrorCode::Internal),
        ] {
            let e = tool_error("op", "/p", &out(msg));
            assert_eq!(e.code, code, "{msg}");
            assert_eq!(e.props["path"], "/p");
        }
        let missing = ExecOutput {
            exit_code: Some(127),
            ..Default::default()
        };
        assert_eq!(tool_error("op", "/p", &missing).code, ErrorCode::ExecFailed);
    }

    #[test]
    fn many_files_make_one_archive() {
        let tar = many_file_tar(
            [
                ("a b/x", &b"1"[..], 0o600),
                ("ü/-rf", &b""[..], 0o644),
                (&"n".repeat(150)[..], &b"long"[..], 0o755),
            ]
            .into_iter(),
        )
        .unwrap();
        let mut ar = tar::Archive::new(tar.as_slice());
        let got: Vec<(String, u64, u32)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.size(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a b/x".to_string(), 1, 0o600),
                ("ü/-rf".to_string(), 0, 0o644),
                ("n".repeat(150), 4, 0o755),
            ]
        );
    }

    #[test]
    fn links_escape_by_absolute_targets_or_climbing_above_the_root() {
        for (rel, target, out) in [
            ("a", "b", false),
            ("./a", "b", false),
            ("d/a", "../b", false),
            ("d/a", "../../b", true),
            ("a", "../b", true),
            ("./d/e/a", "../../x/./y", false),
            ("a", "/etc", true),
            ("d/a", "x/../../y", false),
            ("d/a", "x/../../../y", true),
        ] {
            assert_eq!(link_escapes(rel, target), out, "{rel} -> {target}");
        }
    }

    #[test]
    fn unpacking_refuses_an_escaping_link_and_keeps_others() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "./in", "sub/f").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "./sub/f", &b"hi"[..]).unwrap();
        let ok = b.into_inner().unwrap();
        let dir = std::env::temp_dir().join(format!("files-unpack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = unpack_tree(ok.as_slice(), &dir, "/src").unwrap();
        assert_eq!(
            r,
            DirReport {
                entries: 2,
                bytes: 2
            }
        );
        assert_eq!(std::fs::read(dir.join("in")).unwrap(), b"hi");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "./out", "../../etc/passwd").unwrap();
        let bad = b.into_inner().unwrap();
        let e = unpack_tree(bad.as_slice(), &dir, "/src").unwrap_err();
        assert_eq!(e.code, ErrorCode::PathEscapes);
        assert_eq!(e.props["linkTarget"], "../../etc/passwd");
        assert!(!dir.join("out").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
