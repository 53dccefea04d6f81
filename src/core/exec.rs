//! exec in a container: buffered (`exec`) and streaming (`Process`), with env/cwd/user/stdin/tty, deadlines,
//! cancellation, and a kill that takes the whole process tree down.
//!
//! In a container with `/bin/sh`, every workload runs under [`launch::WRAPPER`] (`/bin/sh -c '…; echo $$ >&2;
//! exec "$@"' sh CMD…`): the first stderr line is the process id, which runc made a session and group leader, so
//! `kill -SIG -PGID` reaches every descendant. The exec also carries `SANDBOXD_EXEC_ID=<token>` in its environment
//! so that processes which `setsid` away from the group are found by a `/proc/*/environ` sweep. Without `/bin/sh`
//! the argv runs as given and kills go through the host, where that is possible (see [`launch`]).

mod launch;

use super::attach::{Input, Output};
use super::call::Call;
use super::engine::{Engine, Subject};
use super::error::{Error, ErrorCode, Result};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
pub use launch::Launch;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

/// The environment marker that identifies an exec's processes for the kill sweep.
pub const EXEC_MARKER: &str = "SANDBOXD_EXEC_ID";
/// Output kept from before the wrapper's PID line, for the message of an exec that never started.
const EARLY_OUTPUT: usize = 4096;
/// How long to wait for the stream to end after a kill before giving up on it.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(5);
/// Frames buffered between the reader task and a streaming consumer (backpressure beyond this). The demuxer hands
/// out pieces of at most 64 KiB, so at most 4 MiB waits here; 64 slots keep a consumer that sleeps 1 ms to coalesce from
/// stalling the reader on small frames.
const CHANNEL_CHUNKS: usize = 64;
/// Largest chunk `next()` hands out (and the binding hands to JS): queued output of one stream is merged up to this.
pub const MAX_CHUNK: usize = 256 * 1024;
/// A run at least this big marks a stream as pouring out bulk output (see [`next_run`]).
const BULK_RUN: usize = 16 * 1024;
/// A coalescing read of a bulk stream with less than this queued sleeps once, for this long, before returning.
const COALESCE_TARGET: usize = 128 * 1024;
const COALESCE_WAIT: Duration = Duration::from_millis(1);
/// A deadline that never comes (about 30 years).
const FOREVER: Duration = Duration::from_secs(1 << 30);

/// What to run. `Debug` prints env keys only: values may be secrets.
#[derive(Clone, Default)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// `(key, value)` pairs; validated by [`validate_env`].
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    /// The terminal's size from the start, `(cols, rows)` (needs `tty`).
    pub tty_size: Option<(u16, u16)>,
    /// Keep stdin open for writes (streaming) or feed these bytes then close it (buffered).
    pub stdin: Option<Bytes>,
    pub interactive: bool,
    pub timeout: Option<Duration>,
    /// Cap on the bytes kept per stream (buffered exec); the rest is read and dropped.
    pub max_output_bytes: Option<usize>,
    /// A buffered exec also hands its output here as it arrives (`onStdout` / `onStderr`).
    pub output: Option<OutputSink>,
}

/// Where a buffered exec hands its output as it arrives, besides collecting it: each chunk of a wanted stream is
/// sent in order, uncapped by `max_output_bytes`, and the exec waits for room (so a slow consumer slows the
/// process, as a slow reader of a spawned process does). The timeout and the abort still fire while it waits.
/// Once the receiver is gone (closed or dropped), output is only collected.
#[derive(Clone, Debug)]
pub struct OutputSink {
    pub tx: mpsc::Sender<Result<Chunk>>,
    pub stdout: bool,
    pub stderr: bool,
}

impl OutputSink {
    /// Whether `c`'s stream goes to this sink.
    pub fn wants(&self, c: &Chunk) -> bool {
        if c.is_stderr() {
            self.stderr
        } else {
            self.stdout
        }
    }
}

/// A buffered exec's side of its [`OutputSink`]: the chunk waiting for room, if any. While one waits, the exec reads
/// no more output ([`SinkFeed::waiting`] guards its read), so the consumer's pace reaches the process.
pub(crate) struct SinkFeed {
    sink: Option<OutputSink>,
    pending: Option<Chunk>,
}

impl SinkFeed {
    pub(crate) fn new(sink: Option<OutputSink>) -> SinkFeed {
        SinkFeed {
            sink,
            pending: None,
        }
    }

    /// A chunk waits for room in the sink.
    pub(crate) fn waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Keep `c` for the sink when its stream is wanted there.
    pub(crate) fn offer(&mut self, c: Chunk) {
        if self.sink.as_ref().is_some_and(|s| s.wants(&c)) {
            self.pending = Some(c);
        }
    }

    /// Wait for room and hand the waiting chunk over; a receiver that is gone ends the feeding (output is then only
    /// collected). Never ready while nothing waits.
    pub(crate) async fn hand_over(&mut self) {
        let (Some(tx), true) = (self.sink.as_ref().map(|s| s.tx.clone()), self.waiting()) else {
            return std::future::pending().await;
        };
        match (tx.reserve_owned().await, self.pending.take()) {
            (Ok(permit), Some(c)) => {
                permit.send(Ok(c));
            }
            _ => self.sink = None,
        }
    }
}

/// `KEY=<redacted>` for every variable: env values never reach debug output.
pub fn redacted_env(env: &[(String, String)]) -> Vec<String> {
    env.iter().map(|(k, _)| format!("{k}=<redacted>")).collect()
}

impl std::fmt::Debug for ExecSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSpec")
            .field("cmd", &self.cmd)
            .field("env", &redacted_env(&self.env))
            .field("cwd", &self.cwd)
            .field("user", &self.user)
            .field("tty", &self.tty)
            .field("stdin_bytes", &self.stdin.as_ref().map(|b| b.len()))
            .field("timeout", &self.timeout)
            .field("output", &self.output.is_some())
            .finish_non_exhaustive()
    }
}

/// The outcome of an exec (also the partial result attached to abort/interrupt errors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// `None` when the exit is unknown (the container vanished).
    pub exit_code: Option<i64>,
    /// The signal the SDK sent to end the process (timeout, abort, kill), if any.
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    pub aborted: bool,
    pub truncated: bool,
    pub duration_ms: u64,
}

/// One chunk of streamed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

impl Chunk {
    /// A chunk of stderr (`stderr`) or stdout.
    pub fn new(stderr: bool, data: Bytes) -> Chunk {
        if stderr {
            Chunk::Stderr(data)
        } else {
            Chunk::Stdout(data)
        }
    }

    pub fn is_stderr(&self) -> bool {
        matches!(self, Chunk::Stderr(_))
    }

    pub fn data(&self) -> &Bytes {
        match self {
            Chunk::Stdout(b) | Chunk::Stderr(b) => b,
        }
    }

    /// `(is_stderr, data)`.
    pub fn into_parts(self) -> (bool, Bytes) {
        match self {
            Chunk::Stdout(b) => (false, b),
            Chunk::Stderr(b) => (true, b),
        }
    }
}

/// What one frame of exec output means to the reader.
enum Step {
    End,
    Fail(Error),
    /// Nothing to pass on (stdin echo, or the PID line alone).
    Skip,
    Out(Chunk),
}

/// Classify a frame: stdout/stderr output, the end, or a broken stream. The first stderr line is the wrapper's
/// PID line: it is taken off and published to `pgid`. With a TTY everything is stdout.
fn classify(
    frame: Option<std::result::Result<LogOutput, bollard::errors::Error>>,
    pid: &mut PidLine,
    pgid: &Pgid,
    tty: bool,
) -> Step {
    match frame {
        None => Step::End,
        Some(Err(e)) => Step::Fail(Error::new(
            ErrorCode::StreamInterrupted,
            format!("the exec stream broke: {}", super::error::chain_message(&e)),
        )),
        Some(Ok(LogOutput::StdOut { message })) => Step::Out(Chunk::Stdout(message)),
        Some(Ok(LogOutput::StdErr { message })) | Some(Ok(LogOutput::Console { message })) => {
            let (p, rest) = pid.feed(&message);
            if let Some(p) = p {
                pgid.0.send_replace(Some(p));
            }
            if rest.is_empty() {
                Step::Skip
            } else {
                Step::Out(Chunk::new(!tty, rest))
            }
        }
        Some(Ok(LogOutput::StdIn { .. })) => Step::Skip,
    }
}

/// Consecutive output of one stream, as the frames it arrived in (see [`Process::next_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub stderr: bool,
    pub parts: Vec<Bytes>,
    /// The sum of the parts' lengths.
    pub len: usize,
}

impl From<Chunk> for Run {
    fn from(c: Chunk) -> Run {
        let (stderr, b) = c.into_parts();
        Run {
            stderr,
            len: b.len(),
            parts: vec![b],
        }
    }
}

impl Run {
    /// Append `c` (of this run's stream), at most up to `max` bytes in all; what does not fit is returned.
    fn take(&mut self, c: Chunk, max: usize) -> Option<Chunk> {
        let (stderr, mut b) = c.into_parts();
        let room = max.saturating_sub(self.len);
        let rest = (b.len() > room).then(|| b.split_off(room));
        if !b.is_empty() {
            self.len += b.len();
            self.parts.push(b);
        }
        rest.map(|r| Chunk::new(stderr, r))
    }

    /// The run as one chunk (copies only when it has several parts).
    pub fn into_chunk(self) -> Chunk {
        let data = if self.parts.len() == 1 {
            self.parts.into_iter().next().unwrap_or_default()
        } else {
            let mut buf = BytesMut::with_capacity(self.len);
            for p in &self.parts {
                buf.extend_from_slice(p);
            }
            buf.freeze()
        };
        Chunk::new(self.stderr, data)
    }
}

/// Env checks (keys, NULs, the kernel's per-string limit): see [`super::validate::env`].
pub use super::validate::env as validate_env;

fn validate_spec(spec: &ExecSpec) -> Result<()> {
    super::validate::argv(&spec.cmd)?;
    for (what, v) in [("cwd", &spec.cwd), ("user", &spec.user)] {
        if let Some(v) = v {
            if v.is_empty() || v.contains('\0') || v.contains('\n') {
                return Err(Error::invalid(format!(
                    "{what} must be a non-empty string without NUL or newlines"
                ))
                .with("argument", what));
            }
        }
    }
    if let Some(cwd) = &spec.cwd {
        if !cwd.starts_with('/') {
            return Err(Error::invalid("cwd must be an absolute path").with("argument", "cwd"));
        }
    }
    if let Some((cols, rows)) = spec.tty_size {
        if !spec.tty {
            return Err(Error::invalid("a terminal size needs tty").with("argument", "tty"));
        }
        if cols == 0 || rows == 0 {
            return Err(
                Error::invalid("tty cols and rows must be at least 1").with("argument", "tty")
            );
        }
    }
    validate_env(&spec.env)?;
    super::validate::args_total(&spec.cmd, &spec.env)
}

/// A started exec: its id, the attached streams, and what the kill needs.
struct Started {
    exec_id: String,
    output: Output,
    input: Input,
    token: String,
    launch: Launch,
}

/// Create the exec and attach to it. The create is bounded by the caller's deadline and signal: the engine holds
/// it while the container is locked (an archive being read, a stop in progress), which would otherwise last until
/// bollard's request timeout. The attach is not cut off midway, since the process may already be running.
async fn start(
    engine: &Engine,
    container: &str,
    spec: &ExecSpec,
    cancel: &CancellationToken,
) -> Result<Started> {
    validate_spec(spec)?;
    let launch = launch::launch_for(engine, container, spec.timeout, cancel).await?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("{EXEC_MARKER}={token}"));
    if let (Some((cols, rows)), Launch::Shell) = (spec.tty_size, launch) {
        // The wrapper sets the size before the program runs (the engine's ConsoleSize needs API 1.42).
        env.push(format!("{}=rows {rows} cols {cols}", launch::TTY_SIZE_VAR));
    }
    let cmd = launch.argv(&spec.cmd);
    let attach_stdin = spec.stdin.is_some() || spec.interactive;
    let create = engine.docker().create_exec(
        container,
        CreateExecOptions::<String> {
            attach_stdin: Some(attach_stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(spec.tty),
            env: Some(env),
            cmd: Some(cmd),
            user: spec.user.clone(),
            working_dir: spec.cwd.clone(),
            ..Default::default()
        },
    );
    let created = super::call::bounded("creating the exec", spec.timeout, cancel, async {
        create
            .await
            .map_err(|e| exec_start_error(engine, e, container))
    })
    .await
    .inspect_err(|_| launch::forget(engine, container))?;
    let (output, input) = super::attach::start(engine, &created.id, spec.tty)
        .await
        .map_err(|e| exec_start_error(engine, e, container))?;
    if let Some((cols, rows)) = spec.tty_size {
        // Also through the engine: where there is no wrapper (or no `stty`) this is what sizes the terminal.
        let _ = resize_exec(engine, &created.id, cols, rows).await;
    }
    Ok(Started {
        exec_id: created.id,
        output,
        input,
        token,
        launch,
    })
}

/// Resize an exec's terminal through the engine.
async fn resize_exec(engine: &Engine, exec_id: &str, cols: u16, rows: u16) -> Result<()> {
    engine
        .docker()
        .resize_exec(
            exec_id,
            bollard::exec::ResizeExecOptions {
                height: rows,
                width: cols,
            },
        )
        .await
        .map_err(|e| engine.err(e, Subject::Container(exec_id)))
}

/// The engine accepted the start, but the process never ran: it was not killed by us (`ran` covers that too), no
/// PID line came from the wrapper, and the exit code is the runtime's 126/127. Docker reports this in-band: the
/// runtime's message arrives as output ("unable to find user …", "chdir to cwd … failed", "executable file not found"), which becomes
/// `engineMessage`.
fn never_started(exit_code: Option<i64>, ran: bool, output: &[&[u8]]) -> Option<Error> {
    if ran || !matches!(exit_code, Some(126 | 127)) {
        return None;
    }
    let message: String = output.iter().map(|o| String::from_utf8_lossy(o)).collect();
    let message = message.trim().to_string();
    Some(
        Error::new(
            ErrorCode::ExecFailed,
            format!("could not start the exec: {message}"),
        )
        .with("engineMessage", message)
        .with("exitCode", exit_code.unwrap_or_default()),
    )
}

fn exec_start_error(engine: &Engine, e: bollard::errors::Error, container: &str) -> Error {
    let mut err = engine.err(e, Subject::Container(container));
    if err.code == ErrorCode::Engine {
        err.code = ErrorCode::ExecFailed;
        err.message = format!("could not start the exec: {}", err.message);
    }
    err
}

/// Splits the leading `PID\n` line off the first bytes of stderr (or of tty output).
#[derive(Default)]
struct PidLine {
    buf: BytesMut,
    done: bool,
}

impl PidLine {
    /// A splitter for `launch`: a direct launch has no PID line, so everything passes.
    fn new(launch: Launch) -> Self {
        PidLine {
            buf: BytesMut::new(),
            done: launch == Launch::Direct,
        }
    }

    /// Feed bytes; returns (pid if just learned, bytes that belong to the user).
    fn feed(&mut self, data: &[u8]) -> (Option<i64>, Bytes) {
        if self.done {
            return (None, Bytes::copy_from_slice(data));
        }
        self.buf.extend_from_slice(data);
        if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            self.done = true;
            let pid = std::str::from_utf8(&self.buf[..nl])
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok());
            if pid.is_some() {
                let _ = self.buf.split_to(nl + 1);
            }
            // Not a PID (the wrapper's own "not found" message): it is output, passed on whole.
            (pid, self.buf.split().freeze())
        } else if self.buf.len() > 64 {
            // Not a PID line (sh missing or replaced): hand everything over unchanged.
            self.done = true;
            (None, self.buf.split().freeze())
        } else {
            (None, Bytes::new())
        }
    }
}

/// Where a started exec's group id is published once known.
#[derive(Clone)]
struct Pgid(watch::Sender<Option<i64>>);

impl Pgid {
    fn new() -> Self {
        Pgid(watch::channel(None).0)
    }
    /// The group id if already known.
    fn now(&self) -> Option<i64> {
        *self.0.borrow()
    }
    async fn get(&self, within: Duration) -> Option<i64> {
        let mut rx = self.0.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|v| v.is_some())).await;
        let v = *rx.borrow();
        v
    }
}

/// What a kill needs to reach one exec's processes.
struct KillTarget {
    engine: Arc<Engine>,
    container: String,
    exec_id: String,
    token: String,
    launch: Launch,
}

impl KillTarget {
    /// Send `sig` to the exec's tree (TERM → up to 2 s → KILL with `escalate`): from a second exec where the
    /// container has a shell, else from the host (an `ERR_EXEC_FAILED` where the host cannot see the process).
    async fn kill(&self, pgid: Option<i64>, sig: &str, escalate: bool) -> Result<()> {
        match self.launch {
            Launch::Shell => {
                kill_in_container(
                    &self.engine,
                    &self.container,
                    pgid,
                    &self.token,
                    sig,
                    escalate,
                )
                .await
            }
            Launch::Direct => {
                let marker = format!("{EXEC_MARKER}={}", self.token);
                launch::host_kill(
                    &self.engine,
                    &self.container,
                    &self.exec_id,
                    &marker,
                    sig,
                    escalate,
                )
                .await
            }
        }
    }
}

/// Send `signal` to the process group and to every process carrying the exec's marker; with `escalate`,
/// TERM → up to 2 s → KILL. Runs as a second exec (root), argv only.
async fn kill_in_container(
    engine: &Engine,
    container: &str,
    pgid: Option<i64>,
    token: &str,
    signal: &str,
    escalate: bool,
) -> Result<()> {
    let script = r#"sig=$1; pg=$2; tok=$3; esc=$4
sweep() { for p in /proc/[0-9]*; do
  if grep -q "SANDBOXD_EXEC_ID=$tok" "$p/environ" 2>/dev/null; then kill -$1 "${p#/proc/}" 2>/dev/null; fi
done; }
if [ "$pg" -gt 1 ] 2>/dev/null; then kill -$sig -$pg 2>/dev/null; fi
sweep $sig
if [ "$esc" = 1 ]; then
  i=0
  while [ $i -lt 20 ]; do
    alive=0
    if [ "$pg" -gt 1 ] 2>/dev/null && kill -0 -$pg 2>/dev/null; then alive=1; fi
    [ $alive = 0 ] && break
    sleep 0.1; i=$((i+1))
  done
  if [ "$pg" -gt 1 ] 2>/dev/null; then kill -KILL -$pg 2>/dev/null; fi
  sweep KILL
fi
exit 0"#;
    let sig = signal.trim_start_matches("SIG").to_string();
    let cmd = vec![
        launch::SHELL.to_string(),
        "-c".to_string(),
        script.to_string(),
        "sh".to_string(),
        sig,
        pgid.unwrap_or(0).to_string(),
        token.to_string(),
        if escalate { "1" } else { "0" }.to_string(),
    ];
    let created = engine
        .docker()
        .create_exec(
            container,
            CreateExecOptions::<String> {
                attach_stdout: Some(false),
                attach_stderr: Some(false),
                user: Some("0".to_string()),
                cmd: Some(cmd),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| engine.err(e, Subject::Container(container)))?;
    // Detached, and watched with inspect: an attached killer's own stream can wait behind the target's
    // (a target blocked on unread output held it for the engine's full 10 s stall).
    engine
        .docker()
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| engine.err(e, Subject::Container(container)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match engine.docker().inspect_exec(&created.id).await {
            Ok(r) if r.running == Some(true) || r.exit_code.is_none() => {}
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// How the engine saw an exec end.
#[derive(Debug, Clone, Copy, Default)]
struct Ended {
    /// `None` when the exec (or its container) is gone.
    code: Option<i64>,
    /// The engine reported a process id: the runtime started the process (the engine leaves it 0 when the
    /// runtime failed to, e.g. for a missing program).
    started: bool,
}

/// The exit code once the stream has ended.
async fn exit_code(engine: &Engine, exec_id: &str) -> Result<Ended> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match engine.docker().inspect_exec(exec_id).await {
            Ok(r) if r.running == Some(true) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(r) => {
                return Ok(Ended {
                    code: r.exit_code,
                    started: r.pid.is_some_and(|p| p > 0),
                })
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(Ended::default()),
            Err(e) => return Err(engine.err(e, Subject::Exec)),
        }
    }
}

/// After a stream ended with a signal-like exit the SDK did not cause: did the container go away under it?
/// The engine may still report the container running for a moment after killing it, so watch for up to 1 s.
async fn container_gone(engine: &Engine, container: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let gone = match engine.docker().inspect_container(container, None).await {
            Ok(c) => {
                let st = c.state.unwrap_or_default();
                !st.running.unwrap_or(false)
                    || st.dead.unwrap_or(false)
                    || st.restarting.unwrap_or(false)
            }
            Err(_) => true,
        };
        if gone || Instant::now() >= deadline {
            return gone;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal_name(s: &str) -> String {
    if s.starts_with("SIG") {
        s.to_string()
    } else {
        format!("SIG{s}")
    }
}

/// Run to completion and collect the output. Non-zero exit is a result. A timeout kills the process tree
/// and resolves with `timed_out`; cancellation kills it and rejects with `ABORT_ERR` carrying the partial result.
pub async fn exec(
    engine: Arc<Engine>,
    container: String,
    spec: ExecSpec,
    cancel: CancellationToken,
) -> Result<ExecOutput> {
    let began = Instant::now();
    if cancel.is_cancelled() {
        return Err(Error::aborted());
    }
    let Started {
        exec_id,
        mut output,
        mut input,
        token,
        launch,
    } = start(&engine, &container, &spec, &cancel).await?;
    let target = KillTarget {
        engine: engine.clone(),
        container: container.clone(),
        exec_id: exec_id.clone(),
        token,
        launch,
    };
    // Feed stdin concurrently so a large input cannot deadlock against unread output.
    if let Some(data) = spec.stdin.clone() {
        tokio::spawn(async move {
            let _ = input.write_all(&data).await;
            let _ = input.shutdown().await;
        });
    } else {
        drop(input);
    }
    let mut out = ExecOutput::default();
    let limit = spec.max_output_bytes.unwrap_or(usize::MAX);
    let mut pid = PidLine::new(launch);
    let pgid = Pgid::new();
    let sleep = tokio::time::sleep(spec.timeout.unwrap_or(FOREVER));
    tokio::pin!(sleep);
    let keep = |out: &mut ExecOutput, is_err: bool, data: &[u8]| {
        let buf = if is_err {
            &mut out.stderr
        } else {
            &mut out.stdout
        };
        let room = limit.saturating_sub(buf.len());
        if data.len() > room {
            out.truncated = true;
        }
        buf.extend_from_slice(&data[..data.len().min(room)]);
    };
    let mut ended_by: Option<&'static str> = None;
    // The kill could not be done (no shell, process not visible from here): the process is left running.
    let mut left_running = false;
    let mut feed = SinkFeed::new(spec.output.clone());
    loop {
        let why = tokio::select! {
            _ = feed.hand_over(), if feed.waiting() => continue,
            frame = output.next(), if !feed.waiting() => match classify(frame, &mut pid, &pgid, spec.tty) {
                Step::End => break,
                Step::Fail(e) => {
                    out.duration_ms = began.elapsed().as_millis() as u64;
                    return Err(interrupted(&e.message, out));
                }
                Step::Skip => continue,
                Step::Out(c) => {
                    keep(&mut out, c.is_stderr(), c.data());
                    feed.offer(c);
                    continue;
                }
            },
            _ = &mut sleep => {
                if ended_by.is_some() {
                    // The stream did not end within DRAIN_AFTER_KILL of the kill: stop waiting for it.
                    break;
                }
                out.timed_out = true;
                "timeout"
            }
            _ = cancel.cancelled(), if ended_by.is_none() => {
                out.aborted = true;
                "abort"
            }
        };
        ended_by = Some(why);
        if target.kill(pgid.now(), "TERM", true).await.is_err() && launch == Launch::Direct {
            left_running = true;
            break;
        }
        out.signal = Some("SIGKILL".into());
        sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + DRAIN_AFTER_KILL);
    }
    let ended = if left_running {
        Ended::default()
    } else {
        exit_code(&engine, &exec_id).await?
    };
    out.exit_code = ended.code;
    out.duration_ms = began.elapsed().as_millis() as u64;
    if let (Some(code), Some(_)) = (out.exit_code, &out.signal) {
        // The process may have exited on TERM (143) before KILL was needed.
        if code == 143 {
            out.signal = Some("SIGTERM".into());
        } else if code != 137 {
            out.signal = None;
        }
    }
    if ended_by == Some("abort") {
        let mut e = Error::aborted();
        e.result = Some(Box::new(out));
        return Err(e);
    }
    if left_running {
        // A timeout whose kill was impossible: `timedOut` with no exit code, the process still running.
        return Ok(out);
    }
    let killed_by_us = ended_by.is_some();
    let ran = killed_by_us || started(launch, &pgid, ended);
    if let Some(mut e) = never_started(out.exit_code, ran, &[&out.stdout, &out.stderr]) {
        launch::forget(&engine, &container);
        e.result = Some(Box::new(out));
        return Err(e);
    }
    let signalled = out.exit_code.is_some_and(|c| c > 128);
    if out.exit_code.is_none()
        || (signalled && !killed_by_us && container_gone(&engine, &container).await)
    {
        return Err(interrupted(
            "the container or its engine went away before the exec finished",
            out,
        ));
    }
    Ok(out)
}

/// Whether the user's program started: under the wrapper, once it printed the PID line (it does so only after
/// finding the program); launched directly, once the engine reported a process id.
fn started(launch: Launch, pgid: &Pgid, ended: Ended) -> bool {
    match launch {
        Launch::Shell => pgid.now().is_some(),
        Launch::Direct => ended.started,
    }
}

fn interrupted(msg: &str, out: ExecOutput) -> Error {
    let mut e = Error::new(ErrorCode::StreamInterrupted, msg)
        .with("receivedStdoutBytes", out.stdout.len())
        .with("receivedStderrBytes", out.stderr.len());
    e.result = Some(Box::new(out));
    e
}

/// How a streamed process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    pub exit_code: Option<i64>,
    pub signal: Option<String>,
    pub timed_out: bool,
    /// The spawn's abort token fired while the process ran, and the process tree was killed.
    pub aborted: bool,
    pub duration_ms: u64,
}

#[allow(clippy::type_complexity)]
struct ProcShared {
    engine: Arc<Engine>,
    container: String,
    target: KillTarget,
    pgid: Pgid,
    input: tokio::sync::Mutex<Option<Input>>,
    /// The queue from the reader task (its lock also serialises readers).
    rx: tokio::sync::Mutex<mpsc::Receiver<Result<Chunk>>>,
    /// Output read ahead of the queue: the rest of a split frame, a chunk of the other stream.
    held: Mutex<VecDeque<Result<Chunk>>>,
    /// The size of the last run handed out (see [`Process::next_run`]).
    last_run: std::sync::atomic::AtomicUsize,
    exit: watch::Receiver<Option<Result<ExitStatus>>>,
    discard: AtomicBool,
    discard_now: Notify,
    consumed: AtomicBool,
    killed: Mutex<Option<String>>,
    stop: CancellationToken,
}

impl ProcShared {
    /// A timeout or an abort: TERM, then KILL, for the whole tree. The exit then reports SIGKILL (or SIGTERM when
    /// that sufficed). `false` when the kill could not be done (no shell, and the process is not visible from
    /// this host): the process keeps running.
    async fn end_tree(&self) -> bool {
        let pg = match self.target.launch {
            Launch::Shell => self.pgid.get(Duration::from_millis(500)).await,
            Launch::Direct => None,
        };
        let done = self.target.kill(pg, "TERM", true).await;
        if done.is_err() && self.target.launch == Launch::Direct {
            return false;
        }
        self.killed
            .lock()
            .map(|mut k| *k = Some("SIGKILL".into()))
            .ok();
        true
    }
}

/// The reading side of a process's output, as the daemon-backed processes (sbx, v1) hold it: the channel their
/// reader task fills, output put back by `unread`, the last run's size for coalescing ([`next_run`]), whether output
/// is still wanted, and whether anyone has read it (`wait()` discards output nobody reads).
pub(crate) struct OutputQueue {
    rx: tokio::sync::Mutex<mpsc::Receiver<Result<Chunk>>>,
    held: Mutex<VecDeque<Result<Chunk>>>,
    last_run: std::sync::atomic::AtomicUsize,
    discard: AtomicBool,
    consumed: AtomicBool,
}

impl OutputQueue {
    /// A queue over what the reader task sends into `rx`.
    pub(crate) fn new(rx: mpsc::Receiver<Result<Chunk>>) -> OutputQueue {
        OutputQueue {
            rx: tokio::sync::Mutex::new(rx),
            held: Mutex::new(VecDeque::new()),
            last_run: std::sync::atomic::AtomicUsize::new(0),
            discard: AtomicBool::new(false),
            consumed: AtomicBool::new(false),
        }
    }

    /// The next run of one stream's output, at most `max` bytes (see [`next_run`]); `None` at the end.
    pub(crate) async fn next_run(&self, max: usize, coalesce: bool) -> Option<Result<Run>> {
        self.mark_read();
        let mut rx = self.rx.lock().await;
        next_run(&mut rx, &self.held, &self.last_run, max, coalesce).await
    }

    /// Put output back in front of what is queued.
    pub(crate) fn unread(&self, c: Result<Chunk>) {
        if let Ok(mut held) = self.held.lock() {
            held.push_front(c);
        }
    }

    /// Drop all further output, and what is queued.
    pub(crate) fn discard(&self) {
        self.discard.store(true, Ordering::Relaxed);
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
        if let Ok(mut rx) = self.rx.try_lock() {
            while rx.try_recv().is_ok() {}
        }
    }

    /// Output is no longer wanted (the reader task drops it instead of queueing it).
    pub(crate) fn discarding(&self) -> bool {
        self.discard.load(Ordering::Relaxed)
    }

    /// Output nobody has asked for yet is kept for a reader from now on.
    pub(crate) fn mark_read(&self) {
        self.consumed.store(true, Ordering::SeqCst);
    }

    /// Someone has read (or means to read) the output.
    pub(crate) fn consumed(&self) -> bool {
        self.consumed.load(Ordering::SeqCst)
    }
}

/// The next run of output from one stream, read from a process's output queue `rx` (its reader task's frames)
/// and `held` (output put back: the rest of a split frame, a chunk of the other stream): what is already queued
/// for that stream, at most `max` bytes (`max` ≥ 1), as the frames it arrived in (no copy, so the binding copies
/// once, straight into a JS buffer). A frame that does not fit is split and its rest is read next. `None` at the
/// end. Every backend's process reads its output through this, so each gets the same coalescing.
///
/// With `coalesce`, a stream that is pouring out bulk output (the previous run, `last_run`, was at least
/// [`BULK_RUN`]) and has less than [`COALESCE_TARGET`] queued sleeps [`COALESCE_WAIT`] once and then takes
/// what arrived: each run costs the JS consumer a promise round trip, so 10× fewer, larger runs leave the
/// CPU to the engine.
/// Sparse output (prompts, events, lines) is never delayed.
pub(crate) async fn next_run(
    rx: &mut mpsc::Receiver<Result<Chunk>>,
    held: &Mutex<VecDeque<Result<Chunk>>>,
    last_run: &std::sync::atomic::AtomicUsize,
    max: usize,
    coalesce: bool,
) -> Option<Result<Run>> {
    let max = max.max(1);
    let pop_held = || held.lock().ok()?.pop_front();
    let unread = |c: Result<Chunk>| {
        if let Ok(mut h) = held.lock() {
            h.push_front(c);
        }
    };
    let first = match pop_held() {
        Some(c) => c,
        None => rx.recv().await?,
    };
    let first = match first {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    let mut run = Run {
        stderr: first.is_stderr(),
        parts: Vec::new(),
        len: 0,
    };
    let bulk = coalesce && last_run.load(Ordering::Relaxed) >= BULK_RUN;
    let target = if bulk { max.min(COALESCE_TARGET) } else { 0 };
    let deadline = tokio::time::Instant::now() + COALESCE_WAIT;
    let mut waited = false;
    let mut next = Some(first);
    while let Some(c) = next.take() {
        if let Some(rest) = run.take(c, max) {
            unread(Ok(rest));
            break;
        }
        if run.len >= max {
            break;
        }
        let queued = match pop_held().or_else(|| rx.try_recv().ok()) {
            Some(c) => Some(c),
            // One sleep, then take what arrived meanwhile: waiting in `recv` would wake this task once
            // per frame, and each wake can cost a thread hand-off.
            None if run.len < target && !waited => {
                waited = true;
                tokio::time::sleep_until(deadline).await;
                pop_held().or_else(|| rx.try_recv().ok())
            }
            None => None,
        };
        next = match queued {
            Some(Ok(c)) if c.is_stderr() == run.stderr => Some(c),
            Some(other) => {
                unread(other);
                None
            }
            None => None,
        };
    }
    last_run.store(run.len, Ordering::Relaxed);
    Some(Ok(run))
}

/// A streaming exec: output chunks in order, stdin writes with a real half-close, kill, wait.
#[derive(Clone)]
pub struct Process {
    shared: Arc<ProcShared>,
}

impl Process {
    /// Start `spec` in `container`. Output is read with backpressure: a consumer that stops reading stops
    /// the reader (and so the process, once the engine's buffers fill) instead of growing memory.
    pub async fn spawn(
        engine: Arc<Engine>,
        container: String,
        mut spec: ExecSpec,
        abort: CancellationToken,
    ) -> Result<Process> {
        let began = Instant::now();
        spec.interactive = true;
        let Started {
            exec_id,
            mut output,
            input,
            token,
            launch,
        } = start(&engine, &container, &spec, &abort).await?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (exit_tx, exit_rx) = watch::channel(None);
        let shared = Arc::new(ProcShared {
            engine: engine.clone(),
            container: container.clone(),
            target: KillTarget {
                engine: engine.clone(),
                container: container.clone(),
                exec_id: exec_id.clone(),
                token,
                launch,
            },
            pgid: Pgid::new(),
            input: tokio::sync::Mutex::new(Some(input)),
            rx: tokio::sync::Mutex::new(rx),
            held: Mutex::new(VecDeque::new()),
            last_run: std::sync::atomic::AtomicUsize::new(0),
            exit: exit_rx,
            discard: AtomicBool::new(false),
            discard_now: Notify::new(),
            consumed: AtomicBool::new(false),
            killed: Mutex::new(None),
            stop: CancellationToken::new(),
        });
        let s = shared.clone();
        let timeout = spec.timeout;
        let tty = spec.tty;
        tokio::spawn(async move {
            let mut pid = PidLine::new(launch);
            let mut timed_out = false;
            let mut aborted = false;
            // A timeout or abort whose kill was impossible: the process is left running, the stream ends here.
            let mut left_running = false;
            let sleep = async {
                match timeout {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(sleep);
            let mut failure: Option<Error> = None;
            let mut early: Vec<u8> = Vec::new();
            loop {
                let frame = tokio::select! {
                    f = output.next() => f,
                    _ = &mut sleep, if !timed_out && !aborted => {
                        timed_out = true;
                        if !s.end_tree().await {
                            left_running = true;
                            break;
                        }
                        continue;
                    }
                    _ = abort.cancelled(), if !timed_out && !aborted => {
                        aborted = true;
                        if !s.end_tree().await {
                            left_running = true;
                            break;
                        }
                        continue;
                    }
                    _ = s.stop.cancelled() => break,
                };
                // Frames go on as they arrived, uncopied: a coalescing read merges them once, into the JS buffer.
                let chunk = match classify(frame, &mut pid, &s.pgid, tty) {
                    Step::End => break,
                    Step::Fail(e) => {
                        failure = Some(e);
                        break;
                    }
                    Step::Skip => continue,
                    Step::Out(c) => c,
                };
                if s.pgid.now().is_none() && early.len() < EARLY_OUTPUT {
                    early.extend_from_slice(chunk.data()); // the runtime's message, if the process never ran
                }
                if s.discard.load(Ordering::SeqCst) {
                    continue;
                }
                tokio::select! {
                    r = tx.send(Ok(chunk)) => if r.is_err() { s.discard.store(true, Ordering::SeqCst) },
                    _ = s.discard_now.notified() => {}
                    _ = s.stop.cancelled() => break,
                }
            }
            let status = match failure {
                Some(e) => Err(e),
                None if left_running => Ok(ExitStatus {
                    exit_code: None,
                    signal: None,
                    timed_out,
                    aborted,
                    duration_ms: began.elapsed().as_millis() as u64,
                }),
                None => match exit_code(&s.engine, &exec_id).await {
                    Ok(Ended {
                        code: Some(code), ..
                    }) if code > 128
                        && s.killed.lock().map(|k| k.is_none()).unwrap_or(true)
                        && container_gone(&s.engine, &s.container).await =>
                    {
                        Err(Error::new(
                            ErrorCode::StreamInterrupted,
                            "the container went away before the process finished",
                        ))
                    }
                    Ok(
                        ended @ Ended {
                            code: Some(code), ..
                        },
                    ) => {
                        let mut signal = s.killed.lock().ok().and_then(|k| k.clone());
                        let ran = signal.is_some()
                            || timed_out
                            || aborted
                            || started(launch, &s.pgid, ended);
                        if signal.is_some() && code == 143 {
                            signal = Some("SIGTERM".into());
                        }
                        match never_started(Some(code), ran, &[&early]) {
                            Some(e) => {
                                launch::forget(&s.engine, &s.container);
                                Err(e)
                            }
                            None => Ok(ExitStatus {
                                exit_code: Some(code),
                                signal,
                                timed_out,
                                aborted,
                                duration_ms: began.elapsed().as_millis() as u64,
                            }),
                        }
                    }
                    Ok(Ended { code: None, .. }) => Err(Error::new(
                        ErrorCode::StreamInterrupted,
                        "the container or its engine went away before the process finished",
                    )),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = &status {
                let _ = tx.send(Err(e.clone())).await;
            }
            exit_tx.send_replace(Some(status));
        });
        Ok(Process { shared })
    }

    /// The next output chunk; `None` at the end. An interrupted stream yields its error once.
    pub async fn next(&self) -> Option<Result<Chunk>> {
        Some(self.next_run(MAX_CHUNK, false).await?.map(Run::into_chunk))
    }

    /// The next run of output from one stream (see [`next_run`]). `None` at the end.
    pub async fn next_run(&self, max: usize, coalesce: bool) -> Option<Result<Run>> {
        self.shared.consumed.store(true, Ordering::SeqCst);
        let mut rx = self.shared.rx.lock().await;
        next_run(
            &mut rx,
            &self.shared.held,
            &self.shared.last_run,
            max,
            coalesce,
        )
        .await
    }

    /// The output has a reader from now on (see [`ProcessHandle::mark_read`](super::backend::ProcessHandle)).
    pub fn mark_read(&self) {
        self.shared.consumed.store(true, Ordering::SeqCst);
    }

    /// Put output back in front of what is queued (the rest of a split frame, or bytes a JS `read()` could
    /// not deliver): it is what the next read returns.
    pub fn unread(&self, c: Result<Chunk>) {
        if let Ok(mut held) = self.shared.held.lock() {
            held.push_front(c);
        }
    }

    /// Write to stdin. Fails with `ERR_PROCESS_FINISHED` after `end()` or once the process is gone.
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        if self.exit_now().is_some() {
            return Err(Error::new(
                ErrorCode::ProcessFinished,
                "the process has exited",
            ));
        }
        let mut guard = self.shared.input.lock().await;
        let Some(input) = guard.as_mut() else {
            return Err(Error::new(
                ErrorCode::ProcessFinished,
                "stdin is already closed (end() was called)",
            ));
        };
        input.write_all(data).await.map_err(|e| {
            Error::new(
                ErrorCode::ProcessFinished,
                format!("stdin is closed: the process is gone ({e})"),
            )
        })
    }

    /// Close stdin (a real half-close: the process reads EOF). Idempotent.
    pub async fn end(&self) -> Result<()> {
        let mut guard = self.shared.input.lock().await;
        if let Some(mut input) = guard.take() {
            let _ = input.shutdown().await;
        }
        Ok(())
    }

    /// Send `signal` to the whole process group (and to processes that setsid'd away). Output still queued
    /// here stays readable; output the process writes after this is discarded.
    pub async fn kill(&self, signal: &str) -> Result<()> {
        let sig = validate_signal(signal)?;
        self.signal_tree(&sig, false).await
    }

    /// TERM, then KILL after 2 s, for the whole tree (what dispose does).
    pub async fn terminate(&self) -> Result<()> {
        self.signal_tree("TERM", true).await
    }

    async fn signal_tree(&self, sig: &str, escalate: bool) -> Result<()> {
        if self.exit_now().is_some() {
            return Ok(());
        }
        let s = &self.shared;
        let direct = s.target.launch == Launch::Direct;
        let discard = || {
            s.discard.store(true, Ordering::SeqCst);
            s.discard_now.notify_waiters();
        };
        // Output already queued stays readable; what the engine still holds is dropped. A process blocked on
        // unread output otherwise stalls every new exec in its container, the killer included (10 s measured).
        // A kill from the host needs no exec, so there output is dropped only once the kill was done.
        if !direct {
            discard();
        }
        let pg = match direct {
            false => s.pgid.get(Duration::from_secs(1)).await,
            true => None,
        };
        if let Ok(mut k) = s.killed.lock() {
            *k = Some(if escalate {
                "SIGKILL".into()
            } else {
                signal_name(sig)
            });
        }
        let done = s.target.kill(pg, sig, escalate).await;
        match (&done, direct) {
            (Ok(()), true) => discard(),
            (Err(_), true) => {
                if let Ok(mut k) = s.killed.lock() {
                    *k = None;
                }
            }
            _ => {}
        }
        done
    }

    /// Wait for the exit (no default deadline). If nobody is reading the output, it is discarded so the process
    /// cannot stall.
    pub async fn wait(&self, call: &Call) -> Result<ExitStatus> {
        if !self.shared.consumed.load(Ordering::SeqCst) {
            self.discard_output();
        }
        call.run(
            "waiting for the process",
            None,
            exit_status(self.shared.exit.clone()),
        )
        .await
    }

    /// Let go of it (`await using`): the output is discarded and, if it still runs, the tree is sent TERM, then
    /// KILL, and its exit waited for up to 10 s.
    pub async fn dispose(&self) {
        const DISPOSE_WAIT: Duration = Duration::from_secs(10);
        self.discard_output();
        if self.exit_now().is_none() {
            let _ = self.terminate().await;
            let _ = tokio::time::timeout(DISPOSE_WAIT, self.wait(&Call::default())).await;
        }
    }

    /// Drop all further output (and what is queued): for callers that only want the exit.
    pub fn discard_output(&self) {
        self.shared.discard.store(true, Ordering::SeqCst);
        self.shared.discard_now.notify_waiters();
        if let Ok(mut held) = self.shared.held.lock() {
            held.clear();
        }
        if let Ok(mut rx) = self.shared.rx.try_lock() {
            while rx.try_recv().is_ok() {}
        }
    }

    /// The exit status if the process has finished.
    pub fn exit_now(&self) -> Option<Result<ExitStatus>> {
        self.shared.exit.borrow().clone()
    }

    /// Resize the process's terminal (it must have been spawned with `tty`).
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let t = &self.shared.target;
        resize_exec(&t.engine, &t.exec_id, cols, rows).await
    }

    /// The process id inside the container, once known.
    pub fn pid(&self) -> Option<i64> {
        self.shared.pgid.now()
    }

    /// Stop reading (the process is left to the engine): used when a handle is dropped after exit.
    pub fn detach(&self) {
        self.shared.stop.cancel();
    }
}

/// `SIGTERM`, `TERM`, `KILL`, `9`… → the name busybox `kill -NAME` accepts.
pub fn validate_signal(signal: &str) -> Result<String> {
    const NAMES: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    let s = signal.trim_start_matches("SIG");
    if NAMES.contains(&s) {
        return Ok(s.to_string());
    }
    if let Ok(n) = s.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(n.to_string());
        }
    }
    Err(
        Error::invalid(format!("unknown signal {}", super::validate::shown(signal)))
            .with("argument", "signal"),
    )
}

/// The exit status a process's reader publishes on `exit`, once it is there.
pub(crate) async fn exit_status(
    mut exit: watch::Receiver<Option<Result<ExitStatus>>>,
) -> Result<ExitStatus> {
    match exit.wait_for(|v| v.is_some()).await {
        Ok(v) => v
            .clone()
            .unwrap_or_else(|| Err(Error::internal("exit status missing"))),
        Err(_) => Err(Error::internal("the exec reader ended without a status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_frames_at_max_and_concatenate_parts() {
        let mut run = Run {
            stderr: false,
            parts: Vec::new(),
            len: 0,
        };
        assert_eq!(run.take(Chunk::Stdout(Bytes::from_static(b"abc")), 5), None);
        let rest = run.take(Chunk::Stdout(Bytes::from_static(b"defgh")), 5);
        assert_eq!(rest, Some(Chunk::Stdout(Bytes::from_static(b"fgh"))));
        assert_eq!(run.len, 5);
        assert_eq!(run.parts.len(), 2);
        assert_eq!(
            run.clone().into_chunk(),
            Chunk::Stdout(Bytes::from_static(b"abcde"))
        );
        let mut err = Run {
            stderr: true,
            parts: Vec::new(),
            len: 0,
        };
        assert_eq!(
            err.take(Chunk::Stderr(Bytes::from_static(b"xy")), 1),
            Some(Chunk::Stderr(Bytes::from_static(b"y")))
        );
        assert_eq!(err.into_chunk(), Chunk::Stderr(Bytes::from_static(b"x")));
    }

    #[test]
    fn pid_line_is_split_off() {
        let mut p = PidLine::default();
        assert_eq!(p.feed(b"12"), (None, Bytes::new()));
        assert_eq!(p.feed(b"3\nerr"), (Some(123), Bytes::from_static(b"err")));
        assert_eq!(p.feed(b"more"), (None, Bytes::from_static(b"more")));
        let mut tty = PidLine::default();
        assert_eq!(tty.feed(b"7\r\nhi"), (Some(7), Bytes::from_static(b"hi")));
        // the wrapper's "not found" line is output, kept whole
        let mut msg = PidLine::new(Launch::Shell);
        assert_eq!(
            msg.feed(b"exec: \"x\": not found\n"),
            (None, Bytes::from_static(b"exec: \"x\": not found\n"))
        );
        let mut direct = PidLine::new(Launch::Direct);
        assert_eq!(direct.feed(b"12\n"), (None, Bytes::from_static(b"12\n")));
        let mut junk = PidLine::default();
        let long = vec![b'x'; 100];
        assert_eq!(junk.feed(&long).1.len(), 100);
    }

    proptest::proptest! {
        /// The PID line is found whatever the chunking, and every other byte is handed over in order.
        #[test]
        fn pid_line_any_chunking(pid in 1i64..4_000_000, rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..500),
                                 cuts in proptest::collection::vec(0usize..600, 0..10)) {
            let mut stream = format!("{pid}\n").into_bytes();
            stream.extend_from_slice(&rest);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut p = PidLine::default();
            let (mut got_pid, mut out, mut last) = (None, Vec::new(), 0);
            for c in cuts.into_iter().chain([stream.len()]) {
                let (found, bytes) = p.feed(&stream[last..c]);
                got_pid = got_pid.or(found);
                out.extend_from_slice(&bytes);
                last = c;
            }
            proptest::prop_assert_eq!(got_pid, Some(pid));
            proptest::prop_assert_eq!(out, rest);
        }
    }

    #[test]
    fn env_keys_are_checked_without_leaking_values() {
        assert!(validate_env(&[
            ("A".into(), "x=y z\n\"'$`ü".into()),
            ("E".into(), "".into())
        ])
        .is_ok());
        for k in ["", "A=B", "A\0"] {
            let e = validate_env(&[(k.into(), "secret-value".into())]).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            assert!(!e.message.contains("secret-value"));
        }
        let e = validate_env(&[("K".into(), "sec\0ret".into())]).unwrap_err();
        assert!(!e.message.contains("sec"));
    }

    #[test]
    fn debug_output_never_shows_env_values() {
        let spec = ExecSpec {
            cmd: vec!["true".into()],
            env: vec![("API_KEY".into(), "sk-secret-value".into())],
            ..Default::default()
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("API_KEY=<redacted>"));
        assert!(!shown.contains("sk-secret-value"));
    }

    #[test]
    fn signals() {
        assert_eq!(validate_signal("SIGTERM").unwrap(), "TERM");
        assert_eq!(validate_signal("KILL").unwrap(), "KILL");
        assert_eq!(validate_signal("9").unwrap(), "9");
        assert!(validate_signal("SIGNOPE").is_err());
        assert!(validate_signal("0").is_err());
        assert!(validate_signal("TERM; rm -rf /").is_err());
    }
}
