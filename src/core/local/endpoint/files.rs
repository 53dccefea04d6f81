//! Files: content through the engine's archive API (no exec, no shell); metadata and tree changes as argv execs
//! of fixed `/bin/sh -c` scripts that take every path as a positional argument (never spliced into the script
//! text), run as root like the archive API's writes. Paths must be absolute and contain no NUL.
//!
//! The sandbox's whole file system is the jail: a symbolic link resolves inside the container wherever it
//! points, so `stat`/`list` report a link's target, and only a dangling (or looping) link reports `symlink`.

use super::{
    body_bytes, json_body, json_response, query_one, query_only, query_pairs, ApiError, Endpoint,
    Resp, MAX_FILE_BODY,
};
use crate::core::call::Call;
use crate::core::container::{single_file_tar, MAX_READ_BYTES};
use crate::core::exec::{ExecOutput, ExecSpec};
use crate::core::multipart;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Deadline of one file script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Output a file script may print (a very large directory listing).
const SCRIPT_OUTPUT: usize = 64 * 1024 * 1024;
/// `list`'s page when no `pageSize` is given, and its maximum.
const LIST_PAGE: usize = 1000;
/// Paths `remove` reports in `completedPaths` (the count carries the rest).
const REMOVED_REPORTED: usize = 1000;

/// Exit codes the scripts use for outcomes the contract names.
const NOT_FOUND: i64 = 91;
const NOT_A_DIRECTORY: i64 = 92;
const EXISTS_NOT_DIRECTORY: i64 = 93;
const MOVE_OCCUPIED: i64 = 94;
const MOVE_ONTO_DIRECTORY: i64 = 95;
const MOVE_CROSSES_FS: i64 = 96;
const NOT_EMPTY: i64 = 97;

/// `rec PATH NAME RESOLVE`: one NUL-separated record for PATH, reported as NAME. `R NAME "size perm rawmode"
/// [resolved]` when the path (through links) exists, `L NAME "size perm rawmode" target` for a link that does not
/// resolve, `E NAME` when nothing is there.
const REC: &str = r#"rec() {
  if s=$(stat -L -c '%s %a %f' -- "$1" 2>/dev/null); then
    printf 'R\0%s\0%s\0' "$2" "$s"
    if [ "$3" = 1 ]; then printf '%s\0' "$(readlink -f -- "$1")"; fi
  elif s=$(stat -c '%s %a %f' -- "$1" 2>/dev/null); then
    printf 'L\0%s\0%s\0%s\0' "$2" "$s" "$(readlink -- "$1")"
  else
    printf 'E\0%s\0' "$2"
  fi
}
"#;

/// `STAT RESOLVE PATH…`.
const STAT: &str = r#"r=$1; shift
for p do rec "$p" "$p" "$r"; done"#;

/// `LIST DIR`: a record per entry, named by its base name.
const LIST: &str = r#"d=$1
[ -e "$d" ] || [ -L "$d" ] || exit 91
[ -d "$d" ] || exit 92
cd -- "$d" || exit 1
for f in .* *; do
  case $f in .|..) continue ;; esac
  [ -e "$f" ] || [ -L "$f" ] || continue
  rec "$f" "$f" 0
done"#;

/// `MKDIR PATH MODE PARENTS`: converges on an existing directory (its mode unchanged).
const MKDIR: &str = r#"p=$1
[ -d "$p" ] && exit 0
if [ -e "$p" ] || [ -L "$p" ]; then exit 93; fi
parent=$(dirname -- "$p")
if [ "$3" = 1 ]; then mkdir -p -- "$parent" || exit 1
elif [ ! -d "$parent" ]; then exit 91; fi
mkdir -m "$2" -- "$p""#;

/// `MOVE FROM TO`: the destination is exact (never "into" a directory), never a copy across file systems.
const MOVE: &str = r#"f=$1; t=$2
[ -e "$f" ] || [ -L "$f" ] || exit 91
if [ -d "$f" ] && [ ! -L "$f" ]; then
  if [ -e "$t" ] || [ -L "$t" ]; then exit 94; fi
elif [ -d "$t" ]; then exit 95
fi
tp=$(dirname -- "$t")
[ -d "$tp" ] || exit 91
[ "$(stat -c %d -- "$f")" = "$(stat -c %d -- "$tp")" ] || exit 96
exec mv -f -- "$f" "$t""#;

/// `REMOVE PATH RECURSIVE`: prints `D<path>\0` per removed path and `F<path>\0` where a removal failed.
const REMOVE: &str = r#"p=$1
[ -e "$p" ] || [ -L "$p" ] || exit 0
if [ -d "$p" ] && [ ! -L "$p" ]; then
  if [ "$2" = 1 ]; then
    find "$p" -depth -exec sh -c 'for x do
      if [ -d "$x" ] && [ ! -L "$x" ]; then rmdir -- "$x"; else rm -f -- "$x"; fi
      if [ -e "$x" ] || [ -L "$x" ]; then printf "F%s\0" "$x"; else printf "D%s\0" "$x"; fi
    done' sh {} +
    exit 0
  fi
  if rmdir -- "$p" 2>/dev/null; then printf 'D%s\0' "$p"; exit 0; fi
  [ -n "$(ls -A -- "$p" 2>/dev/null)" ] && exit 97
  rmdir -- "$p"; exit
fi
rm -f -- "$p" && printf 'D%s\0' "$p""#;

/// What is at a path.
#[derive(Debug, Clone)]
pub(super) enum Found {
    /// Exists (through links): the target's size, permission bits and type; `resolved` is the path links lead
    /// to, when asked for.
    Here {
        size: u64,
        mode: u32,
        kind: &'static str,
        resolved: Option<String>,
    },
    /// A link that does not resolve.
    Dangling {
        target: String,
    },
    Absent,
}

impl Found {
    fn info(&self, path: &str) -> Value {
        match self {
            Found::Here {
                size, mode, kind, ..
            } => json!({
                "path": path,
                "size": size.to_string(),
                "mode": mode & 0o777,
                "isDir": *kind == "directory",
                "type": kind,
            }),
            Found::Dangling { target } => json!({
                "path": path,
                "size": target.len().to_string(),
                "mode": 0o777,
                "isDir": false,
                "type": "symlink",
                "linkTarget": target,
            }),
            Found::Absent => Value::Null,
        }
    }
}

/// Parse `rec` records: `(name, what)` in order.
fn records(out: &[u8]) -> Result<Vec<(String, Found)>, ApiError> {
    let text = String::from_utf8_lossy(out);
    let mut f = text.split('\0');
    let mut res = Vec::new();
    let bad = || ApiError::new("internal", "unreadable file metadata from the sandbox");
    let stat = |s: &str| -> Option<(u64, u32, u32)> {
        let mut it = s.split(' ');
        let size = it.next()?.parse().ok()?;
        let perm = u32::from_str_radix(it.next()?, 8).ok()?;
        let raw = u32::from_str_radix(it.next()?, 16).ok()?;
        Some((size, perm, raw))
    };
    while let Some(tag) = f.next() {
        match tag {
            "" => break,
            "R" | "RR" => {}
            "L" | "E" => {}
            _ => return Err(bad()),
        }
        let name = f.next().ok_or_else(bad)?.to_string();
        let found = match tag {
            "E" => Found::Absent,
            "L" => {
                let _ = f.next().ok_or_else(bad)?;
                Found::Dangling {
                    target: f.next().ok_or_else(bad)?.to_string(),
                }
            }
            _ => {
                let (size, mode, raw) = stat(f.next().ok_or_else(bad)?).ok_or_else(bad)?;
                Found::Here {
                    size,
                    mode,
                    kind: match raw & 0o170000 {
                        0o100000 => "regular",
                        0o040000 => "directory",
                        0o120000 => "symlink",
                        _ => "other",
                    },
                    resolved: None,
                }
            }
        };
        res.push((name, found));
    }
    Ok(res)
}

/// A sandbox path: absolute, no NUL.
fn check_path(p: &str, field: &str) -> Result<(), ApiError> {
    if p.is_empty() {
        return Err(ApiError::invalid(format!("{field} is required")).field(field, "required"));
    }
    if !p.starts_with('/') || p.contains('\0') {
        return Err(ApiError::invalid(format!(
            "{field} must be an absolute path without NUL: {p:?}"
        ))
        .field(field, "absolute path"));
    }
    Ok(())
}

/// A failed script's stderr, classified.
fn script_error(what: &str, out: &ExecOutput) -> ApiError {
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let lower = msg.to_ascii_lowercase();
    let code = if lower.contains("no such file") {
        "notFound"
    } else if lower.contains("permission denied") || lower.contains("operation not permitted") {
        "permissionDenied"
    } else if lower.contains("file exists") {
        "alreadyExists"
    } else if lower.contains("not a directory")
        || lower.contains("read-only file system")
        || lower.contains("not empty")
        || lower.contains("invalid argument")
    {
        "failedPrecondition"
    } else {
        "internal"
    };
    ApiError::new(
        code,
        format!(
            "{what} failed (exit {}): {}",
            out.exit_code.unwrap_or(-1),
            if msg.is_empty() { "no message" } else { &msg }
        ),
    )
}

fn nonregular(path: &str) -> ApiError {
    ApiError::precondition(format!(
        "path_authority_nonregular_object: {path} names a directory, socket, FIFO, device or other non-regular object where a regular file is required"
    ))
}

fn mode_bits(mode: Option<i64>, default: u32) -> u32 {
    match mode.map(|m| (m as u32) & 0o777) {
        Some(0) | None => default,
        Some(m) => m,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MkdirRequest {
    path: String,
    mode: Option<i64>,
    parents: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHeader {
    path: String,
    mode: Option<i64>,
}

/// A boolean query value.
fn query_bool(v: Option<String>, name: &str) -> Result<bool, ApiError> {
    match v.as_deref() {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::invalid(format!(
            "{name} must be true or false, not {other:?}"
        ))
        .field(name, "boolean")),
    }
}

impl Endpoint {
    /// Run a file script as root: `/bin/sh -c SCRIPT sh ARGS…`.
    async fn script(
        &self,
        what: &str,
        script: &str,
        args: &[String],
    ) -> Result<ExecOutput, ApiError> {
        let mut cmd = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!("{REC}{script}"),
            "sh".to_string(),
        ];
        cmd.extend(args.iter().cloned());
        let spec = ExecSpec {
            cmd,
            user: Some("0".into()),
            timeout: Some(SCRIPT_TIMEOUT),
            max_output_bytes: Some(SCRIPT_OUTPUT),
            ..Default::default()
        };
        let out = self.container.exec(spec, self.stop.child_token()).await?;
        if out.timed_out {
            return Err(ApiError::new(
                "deadlineExceeded",
                format!("{what} took longer than {} s", SCRIPT_TIMEOUT.as_secs()),
            ));
        }
        if out.truncated {
            return Err(ApiError::new(
                "resourceExhausted",
                format!("{what}: the answer is larger than {SCRIPT_OUTPUT} bytes"),
            ));
        }
        Ok(out)
    }

    /// What is at each path (in order); with `resolve`, `Here` carries the path links lead to.
    pub(super) async fn look(
        &self,
        paths: &[String],
        resolve: bool,
    ) -> Result<Vec<Found>, ApiError> {
        let mut args = vec![if resolve { "1" } else { "0" }.to_string()];
        args.extend(paths.iter().cloned());
        let out = self.script("stat", STAT, &args).await?;
        if out.exit_code != Some(0) {
            return Err(script_error("stat", &out));
        }
        // With `resolve`, each `R` record has one more field: re-read them with it.
        let mut found = Vec::new();
        if resolve {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut f = text.split('\0').peekable();
            let mut rebuilt = Vec::new();
            let mut resolved = Vec::new();
            while let Some(tag) = f.next() {
                if tag.is_empty() {
                    break;
                }
                let n = match tag {
                    "R" => 2,
                    "L" => 3,
                    _ => 1,
                };
                rebuilt.push(tag.to_string());
                for _ in 0..n {
                    rebuilt.push(f.next().unwrap_or_default().to_string());
                }
                resolved.push(if tag == "R" {
                    Some(f.next().unwrap_or_default().to_string())
                } else {
                    None
                });
            }
            let mut joined = rebuilt.join("\0");
            joined.push('\0');
            for ((_, mut what), r) in records(joined.as_bytes())?.into_iter().zip(resolved) {
                if let Found::Here { resolved, .. } = &mut what {
                    *resolved = r.filter(|s| !s.is_empty());
                }
                found.push(what);
            }
        } else {
            found = records(&out.stdout)?.into_iter().map(|(_, w)| w).collect();
        }
        if found.len() != paths.len() {
            return Err(ApiError::new(
                "internal",
                "file metadata for some paths is missing",
            ));
        }
        Ok(found)
    }

    /// `GET /v1/files/stat?path=`.
    pub(super) async fn stat(&self, req: &Request<Incoming>) -> Result<Resp, ApiError> {
        let q = query_pairs(req)?;
        query_only(&q, &["path"])?;
        let path = query_one(&q, "path")?.unwrap_or_default();
        check_path(&path, "path")?;
        match self
            .look(std::slice::from_ref(&path), false)
            .await?
            .remove(0)
        {
            Found::Absent => Err(ApiError::not_found(format!(
                "no such file or directory: {path}"
            ))),
            f => Ok(json_response(200, &json!({"info": f.info(&path)}))),
        }
    }

    /// `GET /v1/files?path=&pageSize=&pageToken=&orderBy=`: entries by path ascending (or `path desc`).
    pub(super) async fn list(&self, req: &Request<Incoming>) -> Result<Resp, ApiError> {
        let q = query_pairs(req)?;
        query_only(&q, &["path", "pageSize", "pageToken", "orderBy"])?;
        let path = query_one(&q, "path")?.unwrap_or_default();
        check_path(&path, "path")?;
        let desc = match query_one(&q, "orderBy")?.as_deref().map(str::trim) {
            None | Some("") | Some("path") | Some("path asc") => false,
            Some("path desc") => true,
            Some(o) => {
                return Err(
                    ApiError::invalid(format!("orderBy {o:?}: only path is supported"))
                        .field("orderBy", "path [asc|desc]"),
                )
            }
        };
        let size = match query_one(&q, "pageSize")? {
            None => LIST_PAGE,
            Some(s) => match s.parse::<i64>() {
                Ok(0) => LIST_PAGE,
                Ok(n) if n > 0 => (n as usize).min(LIST_PAGE),
                _ => {
                    return Err(ApiError::invalid("pageSize must be a non-negative integer")
                        .field("pageSize", "non-negative integer"))
                }
            },
        };
        let start = match query_one(&q, "pageToken")?.filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => t
                .parse::<usize>()
                .map_err(|_| ApiError::invalid("pageToken is not one this endpoint issued"))?,
        };
        let out = self
            .script("list", LIST, std::slice::from_ref(&path))
            .await?;
        match out.exit_code {
            Some(0) => {}
            Some(NOT_FOUND) => {
                return Err(ApiError::not_found(format!("no such directory: {path}")))
            }
            Some(NOT_A_DIRECTORY) => {
                return Err(ApiError::precondition(format!("{path} is not a directory")))
            }
            _ => return Err(script_error("list", &out)),
        }
        let base = path.trim_end_matches('/');
        let mut entries: Vec<(String, Found)> = records(&out.stdout)?
            .into_iter()
            .map(|(name, f)| (format!("{base}/{name}"), f))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        if desc {
            entries.reverse();
        }
        let page: Vec<Value> = entries
            .iter()
            .skip(start)
            .take(size)
            .filter(|(_, f)| !matches!(f, Found::Absent))
            .map(|(p, f)| f.info(p))
            .collect();
        let end = start + size;
        let next = if end < entries.len() {
            end.to_string()
        } else {
            String::new()
        };
        Ok(json_response(
            200,
            &json!({"entries": page, "nextPageToken": next}),
        ))
    }

    /// `GET /v1/files/content?path=`: the whole regular file (links followed), `application/octet-stream`.
    pub(super) async fn read_file(&self, req: &Request<Incoming>) -> Result<Resp, ApiError> {
        let q = query_pairs(req)?;
        query_only(&q, &["path"])?;
        let path = query_one(&q, "path")?.unwrap_or_default();
        check_path(&path, "path")?;
        let data = self.container.read_file(&path, &Call::default()).await?;
        Ok(octets(data))
    }

    /// `PUT /v1/files/content?path=&mode=`: replace the whole file (mode & 0777, or 0644), through the archive
    /// API. An existing link is written through to its target; a directory or other object there is refused.
    pub(super) async fn write_file(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let q = query_pairs(&req)?;
        query_only(&q, &["path", "mode"])?;
        let path = query_one(&q, "path")?.unwrap_or_default();
        check_path(&path, "path")?;
        let mode = match query_one(&q, "mode")? {
            None => None,
            Some(m) => Some(m.parse::<i64>().map_err(|_| {
                ApiError::invalid("mode must be an integer").field("mode", "integer")
            })?),
        };
        if req.headers().contains_key(hyper::header::TRANSFER_ENCODING) {
            return Err(ApiError::invalid(
                "writeFile needs an exact Content-Length (no chunked bodies)",
            ));
        }
        let data = body_bytes(req.into_body(), MAX_FILE_BODY).await?;
        let mode = mode_bits(mode, 0o644);
        let info = self.put_files(vec![(path, data, mode)], "path").await?;
        Ok(json_response(
            200,
            &json!({"info": info.into_iter().next()}),
        ))
    }

    /// Write each `(path, data, mode)` in order; their FileInfo after the write.
    async fn put_files(
        &self,
        files: Vec<(String, Bytes, u32)>,
        field: &str,
    ) -> Result<Vec<Value>, ApiError> {
        for (i, (p, _, _)) in files.iter().enumerate() {
            let f = if files.len() > 1 {
                format!("items[{i}].metadata.path")
            } else {
                field.to_string()
            };
            check_path(p, &f)?;
            if p.ends_with('/') {
                return Err(
                    ApiError::invalid(format!("{p} names a directory, not a file"))
                        .field(&f, "a file path"),
                );
            }
        }
        let paths: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
        let found = self.look(&paths, true).await?;
        let mut targets = Vec::new();
        for ((p, _, _), f) in files.iter().zip(&found) {
            targets.push(match f {
                Found::Here {
                    kind: "regular",
                    resolved,
                    ..
                } => resolved.clone().unwrap_or_else(|| p.clone()),
                Found::Here { .. } => return Err(nonregular(p)),
                // A dangling link is replaced by the file; nothing there: the file is created.
                Found::Dangling { .. } | Found::Absent => p.clone(),
            });
        }
        let mut infos = Vec::new();
        for ((p, data, mode), target) in files.into_iter().zip(targets) {
            let (dir, name) = match target.rfind('/') {
                Some(0) => ("/".to_string(), target[1..].to_string()),
                Some(i) => (target[..i].to_string(), target[i + 1..].to_string()),
                None => return Err(ApiError::invalid(format!("{target} is not absolute"))),
            };
            let tar = single_file_tar(&name, &data, mode)?;
            self.container
                .put_archive(&dir, Bytes::from(tar), &Call::default())
                .await
                .map_err(|e| {
                    let mut a = ApiError::from(e);
                    if a.code == "notFound" {
                        a.message = format!("the directory of {p} does not exist ({dir})");
                    }
                    a
                })?;
            infos.push(json!({
                "path": p,
                "size": data.len().to_string(),
                "mode": mode,
                "isDir": false,
                "type": "regular",
            }));
        }
        Ok(infos)
    }

    /// `PUT /v1/files/directories {path, mode, parents}`.
    pub(super) async fn mkdir(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let (r, _): (MkdirRequest, _) = json_body(req).await?;
        check_path(&r.path, "path")?;
        let mode = format!("{:o}", mode_bits(r.mode, 0o755));
        let parents = if r.parents.unwrap_or(false) { "1" } else { "0" };
        let out = self
            .script("mkdir", MKDIR, &[r.path.clone(), mode, parents.into()])
            .await?;
        match out.exit_code {
            Some(0) => Ok(json_response(200, &json!({}))),
            Some(NOT_FOUND) => Err(ApiError::not_found(format!(
                "the parent of {} does not exist (set parents to create it)",
                r.path
            ))),
            Some(EXISTS_NOT_DIRECTORY) => Err(ApiError::new(
                "alreadyExists",
                format!("{} exists and is not a directory", r.path),
            )),
            _ => Err(script_error("mkdir", &out)),
        }
    }

    /// `POST /v1/files/move {from, to}`.
    pub(super) async fn move_path(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let (r, _): (MoveRequest, _) = json_body(req).await?;
        check_path(&r.from, "from")?;
        check_path(&r.to, "to")?;
        let out = self
            .script("move", MOVE, &[r.from.clone(), r.to.clone()])
            .await?;
        match out.exit_code {
            Some(0) => Ok(json_response(200, &json!({}))),
            Some(NOT_FOUND) => Err(ApiError::not_found(format!(
                "{} or the directory of {} does not exist",
                r.from, r.to
            ))),
            Some(MOVE_OCCUPIED) => Err(ApiError::precondition(format!(
                "move_destination_occupied: {} is a directory and {} exists",
                r.from, r.to
            ))),
            Some(MOVE_ONTO_DIRECTORY) => Err(ApiError::precondition(format!(
                "move_destination_is_directory: {} is a directory; the destination is exact",
                r.to
            ))),
            Some(MOVE_CROSSES_FS) => Err(ApiError::precondition(format!(
                "move_crosses_filesystem: {} and {} are on different file systems",
                r.from, r.to
            ))),
            _ => Err(script_error("move", &out)),
        }
    }

    /// `DELETE /v1/files?path=&recursive=`: an absent path succeeds; partial recursive progress is reported.
    pub(super) async fn remove(&self, req: &Request<Incoming>) -> Result<Resp, ApiError> {
        let q = query_pairs(req)?;
        query_only(&q, &["path", "recursive"])?;
        let path = query_one(&q, "path")?.unwrap_or_default();
        check_path(&path, "path")?;
        let recursive = query_bool(query_one(&q, "recursive")?, "recursive")?;
        if path.trim_end_matches('/').is_empty() {
            return Err(ApiError::invalid("refusing to remove /").field("path", "not the root"));
        }
        let out = self
            .script(
                "remove",
                REMOVE,
                &[path.clone(), if recursive { "1" } else { "0" }.into()],
            )
            .await?;
        match out.exit_code {
            Some(0) => {}
            Some(NOT_EMPTY) => {
                return Err(ApiError::precondition(format!(
                    "{path} is a directory that is not empty (set recursive)"
                )))
            }
            _ => return Err(script_error("remove", &out)),
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut done = Vec::new();
        let mut count = 0usize;
        let mut failed = None;
        for rec in text.split('\0').filter(|r| !r.is_empty()) {
            if let Some(p) = rec.strip_prefix('D') {
                count += 1;
                if failed.is_none() && done.len() < REMOVED_REPORTED {
                    done.push(p.to_string());
                }
            } else if let Some(p) = rec.strip_prefix('F') {
                failed.get_or_insert_with(|| p.to_string());
            }
        }
        let mut v = json!({"completedPaths": done, "completedCount": count});
        if let Some(f) = failed {
            v["failedPath"] = json!(f);
        }
        Ok(json_response(200, &v))
    }

    /// `POST /v1/files/upload`: `multipart/form-data` of ordered `metadata` (FileHeader JSON) / `content` pairs.
    pub(super) async fn upload(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let q = query_pairs(&req)?;
        query_only(&q, &[])?;
        let ctype = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let boundary = multipart::boundary_of(&ctype, "multipart/form-data").ok_or_else(|| {
            ApiError::invalid("upload needs Content-Type: multipart/form-data; boundary=…")
        })?;
        let body = body_bytes(req.into_body(), MAX_FILE_BODY).await?;
        let parts = multipart::parse(&body, &boundary, "form-data").map_err(ApiError::invalid)?;
        let mut files = Vec::new();
        let mut it = parts.into_iter().enumerate().peekable();
        let mut item = 0usize;
        while let Some((_, meta)) = it.next() {
            let field = format!("items[{item}].metadata");
            if meta.name != "metadata" {
                return Err(ApiError::invalid(format!(
                    "item {item}: expected a metadata part, got {:?}",
                    meta.name
                ))
                .field(&field, "a metadata part starts each item"));
            }
            let h: FileHeader = serde_json::from_slice(&meta.data).map_err(|e| {
                ApiError::invalid(format!(
                    "item {item}: the metadata is not a FileHeader: {e}"
                ))
                .field(&field, "FileHeader {path, mode}")
            })?;
            let field = format!("items[{item}].content");
            let Some((_, content)) = it.next().filter(|(_, c)| c.name == "content") else {
                return Err(ApiError::invalid(format!(
                    "item {item} ({}): a content part must follow its metadata",
                    h.path
                ))
                .field(&field, &format!("content for {}", h.path)));
            };
            files.push((h.path, content.data, mode_bits(h.mode, 0o644)));
            item += 1;
        }
        let n = files.len();
        if n > 0 {
            self.put_files(files, "metadata.path").await?;
        }
        Ok(json_response(200, &json!({"filesWritten": n})))
    }

    /// `GET /v1/files/download?paths=a&paths=b`: `multipart/mixed`, per path a `metadata` + `content` pair or an
    /// `error` part, in request order (duplicates included).
    pub(super) async fn download(&self, req: &Request<Incoming>) -> Result<Resp, ApiError> {
        let q = query_pairs(req)?;
        query_only(&q, &["paths"])?;
        let paths: Vec<String> = q.into_iter().map(|(_, v)| v).collect();
        if paths.is_empty() {
            return Err(ApiError::invalid("paths is required").field("paths", "at least one"));
        }
        for (i, p) in paths.iter().enumerate() {
            check_path(p, &format!("paths[{i}]"))?;
        }
        let found = self.look(&paths, false).await?;
        let mut parts: Vec<(&'static str, &'static str, Bytes)> = Vec::new();
        let mut total = 0usize;
        let file_error = |p: &str, e: ApiError| {
            let v = json!({"path": p, "failure": e.body()});
            ("error", "application/json", Bytes::from(v.to_string()))
        };
        for (p, f) in paths.iter().zip(found) {
            match f {
                Found::Here {
                    kind: "regular",
                    mode,
                    ..
                } => match self.container.read_file(p, &Call::default()).await {
                    Ok(data) => {
                        total += data.len();
                        if total > MAX_READ_BYTES {
                            let e = ApiError::new(
                                "resourceExhausted",
                                format!("the download is larger than {MAX_READ_BYTES} bytes"),
                            );
                            parts.push((
                                "stream-error",
                                "application/json",
                                Bytes::from(e.body().to_string()),
                            ));
                            break;
                        }
                        let h = json!({"path": p, "mode": mode & 0o777});
                        parts.push(("metadata", "application/json", Bytes::from(h.to_string())));
                        parts.push(("content", "application/octet-stream", Bytes::from(data)));
                    }
                    Err(e) => parts.push(file_error(p, e.into())),
                },
                Found::Here { .. } => parts.push(file_error(p, nonregular(p))),
                Found::Dangling { .. } | Found::Absent => parts.push(file_error(
                    p,
                    ApiError::not_found(format!("no such file: {p}")),
                )),
            }
        }
        let (boundary, body) = multipart::write("attachment", &parts);
        let mut r = Response::new(Full::new(body));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={boundary}")
                .parse()
                .map_err(|_| ApiError::new("internal", "bad boundary"))?,
        );
        Ok(r)
    }
}

/// Raw bytes, `application/octet-stream` (with an exact Content-Length: the body is whole).
fn octets(data: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(data)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    r
}
