//! Processes: one-shot `exec`, durable processes (pipes or a PTY) and their output retention.
//!
//! Each durable process has a pump task that reads its output as it comes (so the process never stalls on a
//! slow or absent reader) into a retention buffer of numbered chunks: `streamSequence` 1, 2, … per process,
//! the oldest dropped once the buffer holds more than the endpoint's retention bytes. Readers (`readOutput`,
//! interact streams) hold a cursor, the last sequence they saw, and read the chunks after it; a cursor behind
//! the oldest retained chunk is `failedPrecondition` (output was lost to it), never a silent gap.

use super::{int64, json_body, json_response, query_one, query_only, ApiError, Endpoint, Resp};
use crate::core::call::Call;
use crate::core::exec::{Chunk, ExecSpec, Process};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Largest chunk kept in retention (bigger reads are split), so one chunk always fits a page or a frame.
pub(super) const MAX_STORED_CHUNK: usize = 64 * 1024;
/// `readOutput`'s page when `maxBytes` is 0 or absent.
const DEFAULT_PAGE_BYTES: usize = 1024 * 1024;
/// Processes kept in the table; beyond it the oldest exited ones are forgotten.
const MAX_PROCESSES: usize = 1000;
/// Idempotency receipts kept (the oldest are forgotten first).
const MAX_RECEIPTS: usize = 10_000;
/// `listProcesses` page size when none is given, and its maximum.
const DEFAULT_PAGE: usize = 25;
const MAX_PAGE: usize = 100;

/// The process table of one endpoint.
#[derive(Default)]
pub(super) struct Table {
    order: Vec<Arc<Proc>>,
    by_uid: HashMap<String, Arc<Proc>>,
    /// `Idempotency-Key` → (the request body, the first response).
    receipts: HashMap<String, (Value, Value)>,
    receipt_order: VecDeque<String>,
}

impl Table {
    pub fn all(&self) -> Vec<Arc<Proc>> {
        self.order.clone()
    }

    pub fn get(&self, uid: &str) -> Option<Arc<Proc>> {
        self.by_uid.get(uid).cloned()
    }

    fn label_taken(&self, label: &str) -> bool {
        self.order.iter().any(|p| p.label == label)
    }

    fn insert(&mut self, p: Arc<Proc>) {
        self.by_uid.insert(p.uid.clone(), p.clone());
        self.order.push(p);
        while self.order.len() > MAX_PROCESSES {
            let Some(i) = self.order.iter().position(|p| p.exited().is_some()) else {
                break;
            };
            let gone = self.order.remove(i);
            self.by_uid.remove(&gone.uid);
        }
    }

    fn remember(&mut self, key: String, request: Value, response: Value) {
        self.receipts.insert(key.clone(), (request, response));
        self.receipt_order.push_back(key);
        while self.receipt_order.len() > MAX_RECEIPTS {
            if let Some(old) = self.receipt_order.pop_front() {
                self.receipts.remove(&old);
            }
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone)]
pub(super) struct Exited {
    pub code: i64,
    pub reason: String,
    /// No exit happened that can be reported: `interact` and `readOutput` answer this error instead of an
    /// `exited` frame, so a client never reads an exit code made up here. `None` for a real exit.
    pub lost: Option<Lost>,
}

/// Why a process has no exit to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lost {
    /// The engine or the container went away mid-stream: `unavailable`.
    Gone,
    /// The program could not be started (not there, not executable, bad user or directory): `failedPrecondition`
    /// with an `ErrorInfo` of reason [`START_FAILED`], which the SDK reads as `ERR_EXEC_FAILED`.
    NotStarted,
}

/// The `ErrorInfo.reason` of a process whose program could not be started (LocalSandboxd's choice: the contract
/// names none).
pub const START_FAILED: &str = "PROCESS_START_FAILED";

impl Exited {
    /// The error a process without an exit answers with.
    pub fn lost_error(&self) -> ApiError {
        match self.lost {
            Some(Lost::NotStarted) => {
                let mut e = ApiError::precondition(self.reason.clone());
                e.details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": START_FAILED,
                    "domain": "sandboxd.local",
                }));
                e
            }
            _ => ApiError::new(
                "unavailable",
                format!("the process's exit cannot be read: {}", self.reason),
            ),
        }
    }
}

impl Exited {
    pub fn json(&self) -> Value {
        json!({"exitCode": self.code, "reason": self.reason})
    }
}

/// One retained chunk.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub seq: u64,
    pub stream: &'static str,
    pub data: Bytes,
}

impl Stored {
    pub fn json(&self) -> Value {
        use base64::Engine as _;
        json!({
            "stream": self.stream,
            "data": base64::engine::general_purpose::STANDARD.encode(&self.data),
            "streamSequence": self.seq.to_string(),
        })
    }
}

/// The retention buffer of one process.
#[derive(Default)]
pub(super) struct Output {
    chunks: VecDeque<Stored>,
    bytes: usize,
    last_seq: u64,
    exited: Option<Exited>,
}

/// What a reader at cursor `after` gets.
pub(super) enum Page {
    /// Retained chunks after the cursor (possibly none yet) and, when nothing follows them, the exit.
    Chunks(Vec<Stored>, Option<Exited>),
    /// The chunk after the cursor was dropped from retention.
    Lost { oldest: u64 },
    /// The cursor is past the last published sequence.
    Ahead { last: u64 },
}

impl Output {
    fn push(&mut self, stream: &'static str, data: Bytes, limit: usize) {
        self.last_seq += 1;
        self.bytes += data.len();
        self.chunks.push_back(Stored {
            seq: self.last_seq,
            stream,
            data,
        });
        while self.bytes > limit && self.chunks.len() > 1 {
            if let Some(old) = self.chunks.pop_front() {
                self.bytes -= old.data.len();
            }
        }
    }

    /// Bytes retained after sequence `after` (the newest chunks, counted from the back).
    fn bytes_after(&self, after: u64) -> usize {
        self.chunks
            .iter()
            .rev()
            .take_while(|c| c.seq > after)
            .map(|c| c.data.len())
            .sum()
    }

    /// The chunks after `after`, at most `max_bytes` of data (whole chunks; the first always fits).
    pub fn page(&self, after: u64, max_bytes: usize) -> Page {
        if after > self.last_seq {
            return Page::Ahead {
                last: self.last_seq,
            };
        }
        let oldest = self.chunks.front().map_or(self.last_seq + 1, |c| c.seq);
        if after + 1 < oldest {
            return Page::Lost { oldest };
        }
        let mut out = Vec::new();
        let mut size = 0;
        for c in self.chunks.iter().filter(|c| c.seq > after) {
            if !out.is_empty() && size + c.data.len() > max_bytes {
                break;
            }
            size += c.data.len();
            out.push(c.clone());
        }
        let next = out.last().map_or(after, |c| c.seq);
        let exited = (next == self.last_seq)
            .then(|| self.exited.clone())
            .flatten();
        Page::Chunks(out, exited)
    }
}

/// One durable process.
pub(super) struct Proc {
    pub uid: String,
    pub label: String,
    pub session: String,
    pub pty: bool,
    pub handle: Process,
    pub output: Mutex<Output>,
    /// Bumped on every new chunk and on the exit.
    pub changed: watch::Sender<u64>,
    /// Set once `closeStdin` closed a pipe stdin.
    pub stdin_closed: std::sync::atomic::AtomicBool,
    /// A PTY's input may flow (see `interact::pty_ready`).
    pub input_ready: std::sync::atomic::AtomicBool,
    /// Interact sessions attached now, and the highest sequence one of them has sent: while a session is
    /// attached, retention never drops output it has not sent yet: the process is held back instead (the
    /// client's backpressure reaches the program, as on every other backend).
    pub attached: std::sync::atomic::AtomicUsize,
    pub delivered: std::sync::atomic::AtomicU64,
    /// Woken when `delivered` or `attached` changes.
    pub progress: tokio::sync::Notify,
}

impl Proc {
    /// Wait until `len` more bytes fit in retention without dropping output an attached session has not sent.
    async fn room(&self, len: usize, limit: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let full = self.attached.load(SeqCst) > 0
                && self
                    .output
                    .lock()
                    .is_ok_and(|o| o.bytes_after(self.delivered.load(SeqCst)) + len > limit);
            if !full {
                return;
            }
            notified.await;
        }
    }

    pub fn exited(&self) -> Option<Exited> {
        self.output.lock().ok().and_then(|o| o.exited.clone())
    }

    pub fn page(&self, after: u64, max_bytes: usize) -> Page {
        match self.output.lock() {
            Ok(o) => o.page(after, max_bytes),
            Err(_) => Page::Chunks(Vec::new(), None),
        }
    }

    /// TERM, then KILL, for the process tree (bounded by the exec layer).
    pub async fn terminate(&self) {
        if self.exited().is_none() {
            let _ = self.handle.terminate().await;
        }
    }

    /// The `Process` resource.
    pub fn json(&self, receipt: &str) -> Value {
        let (last, exited) = match self.output.lock() {
            Ok(o) => (o.last_seq, o.exited.clone()),
            Err(_) => (0, None),
        };
        let mut v = json!({
            "uid": self.uid,
            "name": format!("processes/{}", self.uid),
            "label": self.label,
            "session": self.session,
            "state": if exited.is_some() { "exited" } else { "running" },
            "lastStreamSequence": last.to_string(),
            "receiptKind": receipt,
        });
        if let Some(pid) = self.handle.pid().and_then(|p| i32::try_from(p).ok()) {
            v["pid"] = json!(pid);
        }
        if let Some(e) = exited {
            v["exitCode"] = json!(e.code);
        }
        v
    }
}

/// Read the process's output into its retention buffer until it ends, then record the exit.
fn pump(p: Arc<Proc>, limit: usize) {
    tokio::spawn(async move {
        p.handle.mark_read();
        let mut failure = None;
        loop {
            match p.handle.next().await {
                Some(Ok(c)) => {
                    let stream = match (&c, p.pty) {
                        (_, true) => "pty",
                        (Chunk::Stderr(_), false) => "stderr",
                        (Chunk::Stdout(_), false) => "stdout",
                    };
                    let mut data = c.into_parts().1;
                    while !data.is_empty() {
                        let piece = data.split_to(data.len().min(MAX_STORED_CHUNK));
                        p.room(piece.len(), limit).await;
                        if let Ok(mut o) = p.output.lock() {
                            o.push(stream, piece, limit);
                        }
                    }
                    p.changed.send_modify(|n| *n += 1);
                }
                Some(Err(e)) => {
                    failure = Some((e.code, e.message));
                    break;
                }
                None => break,
            }
        }
        let exited = match (failure, p.handle.wait(&Call::default()).await) {
            (Some((code, msg)), _) => Exited {
                code: -1,
                reason: msg,
                lost: Some(if code == crate::core::error::ErrorCode::ExecFailed {
                    Lost::NotStarted
                } else {
                    Lost::Gone
                }),
            },
            (None, Ok(st)) => Exited {
                code: st.exit_code.unwrap_or(-1),
                reason: match (&st.signal, st.exit_code) {
                    (Some(sig), _) => format!("killed by {sig}"),
                    (None, Some(c)) if c > 128 => {
                        format!("exited with status {c} (signal {})", c - 128)
                    }
                    (None, Some(c)) => format!("exited with status {c}"),
                    (None, None) => "the exit status is unknown".into(),
                },
                lost: st.exit_code.is_none().then_some(Lost::Gone),
            },
            (None, Err(e)) => Exited {
                code: -1,
                reason: e.message,
                lost: Some(if e.code == crate::core::error::ErrorCode::ExecFailed {
                    Lost::NotStarted
                } else {
                    Lost::Gone
                }),
            },
        };
        if let Ok(mut o) = p.output.lock() {
            o.exited = Some(exited);
        }
        p.changed.send_modify(|n| *n += 1);
    });
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExecRequest {
    cmd: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    working_dir: Option<String>,
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TerminalSize {
    rows: Option<i64>,
    cols: Option<i64>,
    bounded: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PtyConfig {
    initial_size: Option<TerminalSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateProcessRequest {
    cmd: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    working_dir: Option<String>,
    user: Option<String>,
    pty: Option<PtyConfig>,
    #[serde(default)]
    session: String,
    label: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalRequest {
    signal: String,
}

/// A terminal size in `(cols, rows)`, each 1..=65535.
pub(super) fn terminal_size(rows: Option<i64>, cols: Option<i64>) -> Result<(u16, u16), ApiError> {
    let dim = |v: Option<i64>, what: &str| {
        v.and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ApiError::invalid(format!("{what} must be within 1..65535"))
                    .field(what, "must be within 1..65535")
            })
    };
    Ok((dim(cols, "cols")?, dim(rows, "rows")?))
}

fn empty_cmd(cmd: &[String]) -> Result<(), ApiError> {
    if cmd.is_empty() {
        return Err(ApiError::invalid("cmd must name a program").field("cmd", "at least one item"));
    }
    Ok(())
}

impl Endpoint {
    /// The endpoint's env, then the request's (which wins on a shared name).
    fn env_for(&self, extra: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(k, _)| !extra.contains_key(k))
            .cloned()
            .collect();
        env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// `POST /v1/processes/exec`: run to completion; output capped (combined) with `incomplete`.
    pub(super) async fn exec(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let (r, _): (ExecRequest, _) = json_body(req).await?;
        empty_cmd(&r.cmd)?;
        let cap = self.exec_capture();
        let spec = ExecSpec {
            cmd: r.cmd,
            env: self.env_for(&r.env),
            cwd: r.working_dir.filter(|s| !s.is_empty()),
            user: r.user.filter(|s| !s.is_empty()),
            max_output_bytes: Some(cap),
            ..Default::default()
        };
        // The exec runs in its own task: a client that hangs up (this future dropped) fires `cancel` through the
        // guard, and the exec layer then kills the process tree.
        let cancel = self.stop.child_token();
        let _guard = cancel.clone().drop_guard();
        let container = self.container.clone();
        let task = tokio::spawn(async move { container.exec(spec, cancel).await });
        let out = task
            .await
            .map_err(|e| ApiError::new("internal", format!("the exec task failed: {e}")))??;
        let mut stdout = out.stdout;
        let mut stderr = out.stderr;
        let mut incomplete = out.truncated;
        if stdout.len() + stderr.len() > cap {
            incomplete = true;
            stdout.truncate(cap);
            stderr.truncate(cap - stdout.len());
        }
        use base64::Engine as _;
        let b64 = &base64::engine::general_purpose::STANDARD;
        Ok(json_response(
            200,
            &json!({
                "exitCode": out.exit_code.unwrap_or(-1),
                "stdout": b64.encode(&stdout),
                "stderr": b64.encode(&stderr),
                "incomplete": incomplete,
            }),
        ))
    }

    /// `POST /v1/processes`: start a durable process (201), or replay an `Idempotency-Key`'s first result.
    pub(super) async fn create_process(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let key = req
            .headers()
            .get("idempotency-key")
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))
            })
            .transpose()?
            .filter(|k| !k.is_empty());
        let (r, raw): (CreateProcessRequest, Value) = json_body(req).await?;
        let _one_at_a_time = self.create_lock.lock().await;
        if let Some(k) = &key {
            let seen = self
                .procs
                .lock()
                .ok()
                .and_then(|t| t.receipts.get(k).cloned());
            if let Some((first_req, first_resp)) = seen {
                if first_req != raw {
                    return Err(ApiError::precondition(
                        "The Idempotency-Key was already used with a different payload.",
                    ));
                }
                let mut v = first_resp;
                v["receiptKind"] = json!("replay");
                return Ok(json_response(201, &v));
            }
        }
        empty_cmd(&r.cmd)?;
        let uid = uuid::Uuid::new_v4().simple().to_string();
        let label = match r.label {
            Some(l) if l.is_empty() => {
                return Err(
                    ApiError::invalid("label must not be empty").field("label", "minLength 1")
                )
            }
            Some(l) => l,
            None => format!("process-{}", &uid[..12]),
        };
        if self
            .procs
            .lock()
            .map(|t| t.label_taken(&label))
            .unwrap_or(false)
        {
            return Err(ApiError::new(
                "alreadyExists",
                format!("a process labelled {label:?} already exists in this sandbox"),
            ));
        }
        let tty_size = match r.pty.as_ref().and_then(|p| p.initial_size.as_ref()) {
            Some(s) if s.rows.is_some() || s.cols.is_some() || s.bounded == Some(true) => {
                Some(terminal_size(s.rows, s.cols)?)
            }
            _ => None,
        };
        let pty = r.pty.is_some();
        let spec = ExecSpec {
            cmd: r.cmd,
            env: self.env_for(&r.env),
            cwd: r.working_dir.filter(|s| !s.is_empty()),
            user: r.user.filter(|s| !s.is_empty()),
            tty: pty,
            tty_size,
            interactive: true,
            ..Default::default()
        };
        let handle = self.container.spawn(spec, self.stop.child_token()).await?;
        let (changed, _) = watch::channel(0);
        let p = Arc::new(Proc {
            uid,
            label,
            session: r.session,
            pty,
            handle,
            output: Mutex::new(Output::default()),
            changed,
            stdin_closed: Default::default(),
            input_ready: Default::default(),
            attached: Default::default(),
            delivered: Default::default(),
            progress: Default::default(),
        });
        pump(p.clone(), self.retain_bytes());
        let v = p.json("fresh");
        if let Ok(mut t) = self.procs.lock() {
            t.insert(p);
            if let Some(k) = key {
                t.remember(k, raw, v.clone());
            }
        }
        Ok(json_response(201, &v))
    }

    pub(super) fn find(&self, id: &str) -> Result<Arc<Proc>, ApiError> {
        self.procs
            .lock()
            .ok()
            .and_then(|t| t.get(id))
            .ok_or_else(|| ApiError::not_found(format!("no process {id:?} in this sandbox")))
    }

    /// `GET /v1/processes?filter=session=…,state=…&pageSize=&pageToken=`: creation order.
    pub(super) fn list_processes(&self, req: &Request<Incoming>) -> Result<Resp, ApiError> {
        let q = super::query_pairs(req)?;
        query_only(&q, &["filter", "pageSize", "pageToken"])?;
        let mut session = None;
        let mut state = None;
        if let Some(f) = query_one(&q, "filter")? {
            for term in f.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                match term.split_once('=') {
                    Some(("session", v)) => session = Some(v.to_string()),
                    Some(("state", v @ ("running" | "exited"))) => state = Some(v.to_string()),
                    Some(("state", v)) => {
                        return Err(ApiError::invalid(format!(
                            "filter state must be running or exited, not {v:?}"
                        ))
                        .field("filter", "state=running|exited"))
                    }
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "unsupported filter term {term:?} (use session=… and state=…)"
                        ))
                        .field("filter", "session and state are the filter fields"))
                    }
                }
            }
        }
        let size = match query_one(&q, "pageSize")? {
            None => DEFAULT_PAGE,
            Some(s) => match s.parse::<i64>() {
                Ok(0) => DEFAULT_PAGE,
                Ok(n) if n > 0 => (n as usize).min(MAX_PAGE),
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
        let all: Vec<Value> = self
            .procs
            .lock()
            .map(|t| t.all())
            .unwrap_or_default()
            .iter()
            .map(|p| p.json("unspecified"))
            .filter(|v| session.as_ref().is_none_or(|s| v["session"] == json!(s)))
            .filter(|v| state.as_ref().is_none_or(|s| v["state"] == json!(s)))
            .collect();
        let page: Vec<Value> = all.iter().skip(start).take(size).cloned().collect();
        let next = if start + page.len() < all.len() {
            (start + page.len()).to_string()
        } else {
            String::new()
        };
        Ok(json_response(
            200,
            &json!({"processes": page, "nextPageToken": next}),
        ))
    }

    /// `GET /v1/processes/{p}`.
    pub(super) fn get_process(&self, id: &str) -> Result<Resp, ApiError> {
        Ok(json_response(200, &self.find(id)?.json("unspecified")))
    }

    /// `GET /v1/processes/{p}/output?resumeFrom=&maxBytes=`.
    pub(super) fn read_output(&self, id: &str, req: &Request<Incoming>) -> Result<Resp, ApiError> {
        let q = super::query_pairs(req)?;
        query_only(&q, &["resumeFrom", "maxBytes"])?;
        let p = self.find(id)?;
        let after = match query_one(&q, "resumeFrom")? {
            None => 0,
            Some(s) => resume_from(&Value::String(s))?,
        };
        let max = match query_one(&q, "maxBytes")? {
            None => DEFAULT_PAGE_BYTES,
            Some(s) => match s.parse::<i64>() {
                Ok(0) => DEFAULT_PAGE_BYTES,
                Ok(n) if n > 0 => n as usize,
                _ => {
                    return Err(ApiError::invalid("maxBytes must be a non-negative integer")
                        .field("maxBytes", "non-negative integer"))
                }
            },
        };
        match p.page(after, max) {
            Page::Chunks(chunks, exited) => {
                let next = chunks.last().map_or(after, |c| c.seq);
                let mut v = json!({
                    "chunks": chunks.iter().map(Stored::json).collect::<Vec<_>>(),
                    "nextResumeFrom": next.to_string(),
                });
                match exited {
                    // the output first; the next read answers the error
                    Some(e) if e.lost.is_some() && chunks.is_empty() => return Err(e.lost_error()),
                    Some(e) if e.lost.is_none() => v["exited"] = e.json(),
                    _ => {}
                }
                Ok(json_response(200, &v))
            }
            Page::Lost { oldest } => Err(lost(after, oldest)),
            Page::Ahead { last } => Err(ahead(after, last)),
        }
    }

    /// `POST /v1/processes/{p}/signal`.
    pub(super) async fn signal(&self, id: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let p = self.find(id)?;
        let (r, _): (SignalRequest, _) = json_body(req).await?;
        let sig = match r.signal.as_str() {
            "term" => "TERM",
            "kill" => "KILL",
            "int" => "INT",
            "hup" => "HUP",
            "quit" => "QUIT",
            "usr1" => "USR1",
            "usr2" => "USR2",
            other => {
                return Err(ApiError::invalid(format!(
                    "signal must be term, kill, int, hup, quit, usr1 or usr2, not {other:?}"
                ))
                .field("signal", "term|kill|int|hup|quit|usr1|usr2"))
            }
        };
        if p.exited().is_some() {
            return Err(ApiError::precondition(format!(
                "process {id} has already exited"
            )));
        }
        match p.handle.pid() {
            // The exec layer's kill drops output written after it: right for KILL, wrong for a signal the
            // process may handle and carry on after. Those go to its process group from a second exec (the
            // shell's own `kill`; both arguments are fixed-form: a signal name from the list above, a number).
            Some(pg) if sig != "KILL" => {
                let spec = ExecSpec {
                    cmd: vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "kill -\"$1\" \"-$2\"".into(),
                        "sh".into(),
                        sig.into(),
                        pg.to_string(),
                    ],
                    user: Some("0".into()),
                    timeout: Some(std::time::Duration::from_secs(30)),
                    ..Default::default()
                };
                let out = self.container.exec(spec, self.stop.child_token()).await?;
                if out.exit_code != Some(0) && p.exited().is_none() {
                    return Err(ApiError::new(
                        "internal",
                        format!(
                            "kill -{sig} failed: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                    ));
                }
            }
            _ => p.handle.kill(sig).await?,
        }
        Ok(json_response(200, &json!({})))
    }
}

/// A `resumeFrom` value: a non-negative int64, as a number or a string.
pub(super) fn resume_from(v: &Value) -> Result<u64, ApiError> {
    let n = int64(v, "resumeFrom")?;
    u64::try_from(n).map_err(|_| {
        ApiError::invalid("resumeFrom must not be negative").field("resumeFrom", "non-negative")
    })
}

pub(super) fn lost(after: u64, oldest: u64) -> ApiError {
    ApiError::precondition(format!(
        "output after stream sequence {after} is no longer retained (the oldest retained chunk is {oldest})"
    ))
}

pub(super) fn ahead(after: u64, last: u64) -> ApiError {
    ApiError::new(
        "outOfRange",
        format!("resumeFrom {after} is past the last stream sequence ({last})"),
    )
}
