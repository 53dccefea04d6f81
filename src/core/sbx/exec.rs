//! Exec in an sbx sandbox: `POST /sandbox/{n}/exec/attach` with `Upgrade: tcp` → `101` + `Sandboxes-Exec-Id`,
//! then the hijacked connection carries Docker stdcopy frames (raw bytes with a tty), read by `attach.rs`'s
//! demuxer; stdin is written to it and half-closed for EOF; the exit code is `GET /sandbox/{n}/exec/{id}`.
//!
//! The daemon has no kill, timeout or output cap, so they are given the container semantics here: every exec
//! carries a `SANDBOXD_EXEC_ID=<token>` variable, and a kill is a second exec that signals every process whose
//! environment holds that marker (the whole tree: children inherit it). Partial output is kept.

use super::client::{
    daemon_message, status_error, SbxClient, DEFAULT_TIMEOUT, ENV_FORM_LIST, ENV_FORM_MAP,
    ENV_FORM_UNKNOWN,
};
use super::discovery;
use crate::core::attach::{self, Input, Output};
use crate::core::backend::ProcessHandle;
use crate::core::call::bounded;
use crate::core::error::{chain_message, Error, ErrorCode, Result};
use crate::core::exec::{
    validate_env, Chunk, ExecOutput, ExecSpec, ExitStatus, OutputQueue, Run, SinkFeed, EXEC_MARKER,
    MAX_CHUNK,
};
use crate::core::http::encode_segment;
use crate::core::Call;
use bollard::container::LogOutput;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch, Mutex};
use tokio_util::sync::CancellationToken;

/// After a kill, how long the stream may take to end before it is given up on.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(3);
/// After TERM, how long before KILL.
const TERM_GRACE: Duration = Duration::from_millis(500);
/// How long the exit code may take to appear once the stream ended.
const EXIT_WAIT: Duration = Duration::from_secs(5);
/// Output pieces queued behind a slow consumer of a streaming process (as for containers).
const QUEUE: usize = 64;

/// A started exec: its id, output frames and stdin.
pub(crate) struct Attached {
    pub exec_id: String,
    pub output: Output,
    pub input: Input,
}

fn body_for(spec: &ExecSpec, marker: &str, map_env: bool) -> serde_json::Value {
    let mut env: Vec<(String, String)> = spec.env.clone();
    env.push((EXEC_MARKER.to_string(), marker.to_string()));
    let env = if map_env {
        serde_json::Value::Object(env.into_iter().map(|(k, v)| (k, v.into())).collect())
    } else {
        env.into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .into()
    };
    let mut b = serde_json::json!({
        "cmd": spec.cmd, "env": env, "tty": spec.tty, "privileged": false,
    });
    if let Some(d) = &spec.cwd {
        b["working_dir"] = d.clone().into();
    }
    if let Some(u) = &spec.user {
        b["user"] = u.clone().into();
    }
    b
}

fn check_spec(spec: &ExecSpec) -> Result<()> {
    if spec.cmd.is_empty() || spec.cmd[0].is_empty() {
        return Err(Error::invalid("exec needs a non-empty command").with("argument", "cmd"));
    }
    validate_env(&spec.env)?;
    if let Some(d) = &spec.cwd {
        crate::core::container::validate_container_path(d)
            .map_err(|e| e.with("argument", "cwd"))?;
    }
    Ok(())
}

enum Refused {
    /// The daemon answered with an error status (body kept).
    Status(u16, Bytes),
    Other(Error),
}

impl SbxClient {
    async fn attach_once(
        &self,
        name: &str,
        body: &serde_json::Value,
        tty: bool,
    ) -> std::result::Result<Attached, Refused> {
        let what = format!("POST /sandbox/{name}/exec/attach");
        let io = discovery::connect(&self.endpoint).await.map_err(|e| {
            Refused::Other(
                Error::new(
                    ErrorCode::SandboxdUnavailable,
                    format!("the sbx daemon is not reachable at {} ({e})", self.endpoint),
                )
                .with("socketPath", self.endpoint.to_string()),
            )
        })?;
        let broke = |detail: String| {
            Refused::Other(Error::protocol(
                format!("the sbx daemon broke off {what} before the upgrade: {detail}"),
                None,
                b"",
            ))
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| broke(chain_message(&e)))?;
        tokio::spawn(conn.with_upgrades());
        let req = hyper::Request::post(format!("/sandbox/{}/exec/attach", encode_segment(name)))
            .header("Host", "localhost")
            .header("Content-Type", "application/json")
            .header("Connection", "Upgrade")
            .header("Upgrade", "tcp")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Refused::Other(Error::internal(e.to_string())))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| broke(chain_message(&e)))?;
        let status = res.status().as_u16();
        if status != 101 {
            let body = Limited::new(res.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(Refused::Status(status, body));
        }
        let exec_id = res
            .headers()
            .get("Sandboxes-Exec-Id")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                Refused::Other(
                    Error::protocol(
                        format!(
                            "the sbx daemon upgraded {what} without a Sandboxes-Exec-Id header"
                        ),
                        Some(101),
                        b"",
                    )
                    .with("header", "Sandboxes-Exec-Id"),
                )
            })?;
        let upgraded = hyper::upgrade::on(res)
            .await
            .map_err(|e| broke(chain_message(&e)))?;
        let (read, write) = tokio::io::split(TokioIo::new(upgraded));
        Ok(Attached {
            exec_id,
            output: attach::frames(read, tty),
            input: Box::pin(write),
        })
    }

    /// Start `spec` attached. `env` goes as a Docker-style list first; a daemon that rejects that form (400
    /// naming `env`) gets a map, and the form that worked is kept for this client (sbx-api.md §9.7).
    pub(crate) async fn attach(
        &self,
        name: &str,
        spec: &ExecSpec,
        marker: &str,
        cancel: &CancellationToken,
    ) -> Result<Attached> {
        super::client::validate_sandbox_name(name)?;
        check_spec(spec)?;
        let fut = async {
            let form = self.env_form();
            let first_map = form == ENV_FORM_MAP;
            let mut tries = vec![first_map];
            if form == ENV_FORM_UNKNOWN {
                tries.push(true);
            }
            let mut last = None;
            for map in tries {
                match self
                    .attach_once(name, &body_for(spec, marker, map), spec.tty)
                    .await
                {
                    Ok(a) => {
                        self.env_form.store(
                            if map { ENV_FORM_MAP } else { ENV_FORM_LIST },
                            Ordering::Relaxed,
                        );
                        return Ok(a);
                    }
                    Err(Refused::Status(400, body))
                        if !map && daemon_message(&body).to_ascii_lowercase().contains("env") =>
                    {
                        last = Some((400, body));
                    }
                    Err(Refused::Status(s, body)) => return Err(exec_refused(name, s, &body)),
                    Err(Refused::Other(e)) => return Err(e),
                }
            }
            let (s, body) = last.unwrap_or((400, Bytes::new()));
            Err(exec_refused(name, s, &body))
        };
        bounded("sbx exec attach", Some(DEFAULT_TIMEOUT), cancel, fut).await
    }

    /// The exit code of a finished exec, polled until the daemon says it is no longer running.
    pub(crate) async fn exit_code(&self, name: &str, exec_id: &str) -> Result<Option<i64>> {
        let give_up = Instant::now() + EXIT_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            let st = self.exec_state(name, exec_id, &Call::default()).await?;
            if !st.running {
                return Ok(st.exit_code);
            }
            if Instant::now() >= give_up {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Signal every process of the exec `marker` in the sandbox (a second exec; the daemon has no kill).
    /// Returns how many processes were signalled. The processes are found first, stopped, signalled and continued:
    /// signalled one by one while running, a shell whose child died first would run its next command before its own
    /// signal arrived (`/proc` lists PIDs in text order, so `100` comes before `99`).
    pub(crate) async fn kill_marked(
        &self,
        name: &str,
        marker: &str,
        signal: &str,
    ) -> Result<usize> {
        let script = "sig=$1; id=$2; n=0; pids=; for d in /proc/[0-9]*; do p=${d#/proc/}; [ \"$p\" = \"$$\" ] && continue; \
                      if tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | grep -qx \"$id\"; then pids=\"$pids $p\"; fi; done; \
                      if [ -n \"$pids\" ]; then kill -STOP $pids 2>/dev/null; \
                      for p in $pids; do kill -\"$sig\" \"$p\" 2>/dev/null && n=$((n+1)); done; kill -CONT $pids 2>/dev/null; fi; \
                      echo $n; exit 0";
        let spec = ExecSpec {
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                script.into(),
                "sh".into(),
                signal.into(),
                format!("{EXEC_MARKER}={marker}"),
            ],
            ..Default::default()
        };
        let token = uuid::Uuid::new_v4().simple().to_string();
        let Attached {
            exec_id,
            mut output,
            mut input,
        } = self
            .attach(name, &spec, &token, &CancellationToken::new())
            .await?;
        let _ = input.shutdown().await;
        let mut said = Vec::new();
        let _ = tokio::time::timeout(DRAIN_AFTER_KILL, async {
            while let Some(frame) = output.next().await {
                if let Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) = frame {
                    said.extend_from_slice(&message);
                }
            }
        })
        .await;
        let _ = self.exit_code(name, &exec_id).await;
        Ok(String::from_utf8_lossy(&said).trim().parse().unwrap_or(0))
    }

    async fn kill_tree(&self, name: &str, marker: &str) {
        let _ = self.kill_marked(name, marker, "TERM").await;
        tokio::time::sleep(TERM_GRACE).await;
        let _ = self.kill_marked(name, marker, "KILL").await;
    }

    /// Run to completion and collect the output, with the container semantics: a non-zero exit is a result; a
    /// timeout kills the process tree and resolves with `timed_out`; cancellation kills it and rejects with
    /// `ABORT_ERR` carrying the partial result; `max_output_bytes` caps what is kept per stream.
    pub async fn exec(
        &self,
        name: &str,
        spec: ExecSpec,
        cancel: CancellationToken,
    ) -> Result<ExecOutput> {
        let began = Instant::now();
        let marker = uuid::Uuid::new_v4().simple().to_string();
        let Attached {
            exec_id,
            mut output,
            mut input,
        } = self.attach(name, &spec, &marker, &cancel).await?;
        match spec.stdin.clone() {
            Some(data) => {
                tokio::spawn(async move {
                    let _ = input.write_all(&data).await;
                    let _ = input.shutdown().await;
                });
            }
            None => {
                let _ = input.shutdown().await;
            }
        }
        let mut out = ExecOutput::default();
        let limit = spec.max_output_bytes.unwrap_or(usize::MAX);
        let sleep = tokio::time::sleep(spec.timeout.unwrap_or(Duration::from_secs(1 << 30)));
        tokio::pin!(sleep);
        let mut ended_by: Option<&'static str> = None;
        let mut cut: Option<String> = None;
        let mut killer: Option<tokio::task::JoinHandle<()>> = None;
        let mut feed = SinkFeed::new(spec.output.clone());
        loop {
            tokio::select! {
                _ = feed.hand_over(), if feed.waiting() => {}
                frame = output.next(), if !feed.waiting() => match frame {
                    None => break,
                    Some(Err(e)) => { cut = Some(e.to_string()); break; }
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Ok(o)) => {
                        let (is_err, data) = match o {
                            LogOutput::StdErr { message } => (true, message),
                            LogOutput::StdOut { message } | LogOutput::Console { message } => (false, message),
                            LogOutput::StdIn { message } => (false, message),
                        };
                        let buf = if is_err { &mut out.stderr } else { &mut out.stdout };
                        let room = limit.saturating_sub(buf.len());
                        if data.len() > room {
                            out.truncated = true;
                        }
                        buf.extend_from_slice(&data[..data.len().min(room)]);
                        feed.offer(Chunk::new(is_err, data));
                    }
                },
                _ = &mut sleep => {
                    if ended_by.is_some() {
                        break;
                    }
                    out.timed_out = true;
                    ended_by = Some("timeout");
                }
                _ = cancel.cancelled(), if ended_by.is_none() => {
                    out.aborted = true;
                    ended_by = Some("abort");
                }
            }
            if ended_by.is_some() && killer.is_none() {
                let (c, n, m) = (self.clone(), name.to_string(), marker.clone());
                killer = Some(tokio::spawn(async move { c.kill_tree(&n, &m).await }));
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + DRAIN_AFTER_KILL + TERM_GRACE);
            }
        }
        if let Some(k) = killer {
            let _ = k.await;
        }
        out.duration_ms = began.elapsed().as_millis() as u64;
        let code = if cut.is_none() {
            self.exit_code(name, &exec_id).await.ok().flatten()
        } else {
            None
        };
        out.exit_code = code;
        if ended_by.is_none() {
            if let Some(e) = runtime_refused(code, &out) {
                return Err(e.with("sandbox", name));
            }
        }
        if ended_by.is_some() {
            out.signal = match code {
                Some(143) => Some("SIGTERM".into()),
                Some(137) | None => Some("SIGKILL".into()),
                _ => None,
            };
        }
        if ended_by == Some("abort") {
            let mut e = Error::aborted();
            e.result = Some(Box::new(out));
            return Err(e);
        }
        if ended_by.is_none() && (cut.is_some() || code.is_none()) {
            let why = cut.unwrap_or_else(|| "the daemon reports no exit code".into());
            let mut e = Error::new(
                ErrorCode::StreamInterrupted,
                format!("the exec in sandbox {name:?} was cut off before it finished: {why}"),
            )
            .with("sandbox", name)
            .with("receivedStdoutBytes", out.stdout.len())
            .with("receivedStderrBytes", out.stderr.len());
            e.result = Some(Box::new(out));
            return Err(e);
        }
        Ok(out)
    }

    /// Start a streaming process (stdin kept open for writes, output read with backpressure).
    pub async fn spawn(
        &self,
        name: &str,
        spec: ExecSpec,
        abort: CancellationToken,
    ) -> Result<SbxProcess> {
        SbxProcess::spawn(self.clone(), name, spec, abort).await
    }
}

fn exec_refused(name: &str, status: u16, body: &[u8]) -> Error {
    let e = status_error(
        &format!("exec in sandbox {name:?}"),
        Some(name),
        status,
        body,
    );
    if e.code == ErrorCode::SandboxdProtocol && status >= 500 {
        // The daemon could not start the process (unknown user, missing cwd or program): as for containers.
        let msg = daemon_message(body);
        return Error::new(
            ErrorCode::ExecFailed,
            format!("the exec in sandbox {name:?} could not start: {msg}"),
        )
        .with("status", status)
        .with("daemonMessage", msg)
        .with("sandbox", name);
    }
    e
}

/// How long `kill()` looks for a process the daemon has not started yet.
const KILL_FIND: Duration = Duration::from_secs(3);

/// The runtime refused to start the program (missing, not executable, unknown user, bad cwd): Docker reports that
/// in-band, as output starting with `OCI runtime exec failed` and exit code 126/127. That is
/// `ERR_EXEC_FAILED`, as on containers; a program that ran and exited 126/127 is a result.
fn runtime_refused(code: Option<i64>, out: &ExecOutput) -> Option<Error> {
    const PREFIX: &[u8] = b"OCI runtime exec failed";
    if !matches!(code, Some(126 | 127)) {
        return None;
    }
    let said = [&out.stdout, &out.stderr]
        .into_iter()
        .find(|b| b.starts_with(PREFIX))?;
    let message = String::from_utf8_lossy(said).trim().to_string();
    Some(
        Error::new(
            ErrorCode::ExecFailed,
            format!("could not start the exec: {message}"),
        )
        .with("engineMessage", message)
        .with("exitCode", code.unwrap_or_default()),
    )
}

/// A streaming exec in an sbx sandbox.
#[derive(Clone)]
pub struct SbxProcess {
    shared: Arc<Shared>,
}

struct Shared {
    client: SbxClient,
    name: String,
    exec_id: String,
    marker: String,
    out: OutputQueue,
    input: Mutex<Option<Input>>,
    exit: watch::Receiver<Option<Result<ExitStatus>>>,
    killed: AtomicBool,
}

impl SbxProcess {
    async fn spawn(
        client: SbxClient,
        name: &str,
        spec: ExecSpec,
        abort: CancellationToken,
    ) -> Result<SbxProcess> {
        let began = Instant::now();
        let marker = uuid::Uuid::new_v4().simple().to_string();
        let Attached {
            exec_id,
            mut output,
            input,
        } = client.attach(name, &spec, &marker, &abort).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (exit_tx, exit_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            client: client.clone(),
            name: name.to_string(),
            exec_id: exec_id.clone(),
            marker: marker.clone(),
            out: OutputQueue::new(rx),
            input: Mutex::new(Some(input)),
            exit: exit_rx,
            killed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&shared);
        let timeout = spec.timeout;
        let name = name.to_string();
        tokio::spawn(async move {
            let sleep = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(1 << 30)));
            tokio::pin!(sleep);
            let mut ended_by: Option<&'static str> = None;
            let mut cut: Option<String> = None;
            loop {
                tokio::select! {
                    frame = output.next() => match frame {
                        None => break,
                        Some(Err(e)) => { cut = Some(e.to_string()); break; }
                        Some(Ok(o)) => {
                            let c = match o {
                                LogOutput::StdErr { message } => Chunk::new(true, message),
                                LogOutput::StdOut { message } | LogOutput::Console { message } => Chunk::new(false, message),
                                LogOutput::StdIn { .. } => continue,
                            };
                            let discard = weak.upgrade().is_none_or(|s| s.out.discarding());
                            if !discard && tx.send(Ok(c)).await.is_err() {
                                // Nobody reads any more: keep draining so the process is not blocked.
                            }
                        }
                    },
                    _ = &mut sleep, if ended_by.is_none() => { ended_by = Some("timeout"); }
                    _ = abort.cancelled(), if ended_by.is_none() => { ended_by = Some("abort"); }
                }
                if ended_by.is_some() {
                    let (c, n, m) = (client.clone(), name.clone(), marker.clone());
                    tokio::spawn(async move { c.kill_tree(&n, &m).await });
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + Duration::from_secs(1 << 30));
                }
            }
            let code = if cut.is_none() {
                match client.exit_code(&name, &exec_id).await {
                    Ok(Some(c)) => Some(c),
                    // The output ended but no exit code can be had: the daemon or the sandbox's engine went away.
                    Ok(None) => {
                        cut = Some("the daemon reports no exit code".into());
                        None
                    }
                    Err(e) => {
                        cut = Some(format!("its exit code could not be read: {}", e.message));
                        None
                    }
                }
            } else {
                None
            };
            let killed = ended_by.is_some()
                || weak
                    .upgrade()
                    .is_some_and(|s| s.killed.load(Ordering::Relaxed));
            let status = if cut.is_some() && !killed {
                let e = Error::new(
                    ErrorCode::StreamInterrupted,
                    format!(
                        "the exec in sandbox {name:?} was cut off: {}",
                        cut.unwrap_or_default()
                    ),
                )
                .with("sandbox", name.clone());
                let _ = tx.send(Err(e.clone())).await;
                Err(e)
            } else {
                Ok(ExitStatus {
                    exit_code: code,
                    signal: if killed {
                        match code {
                            Some(143) => Some("SIGTERM".into()),
                            Some(137) | None => Some("SIGKILL".into()),
                            _ => None,
                        }
                    } else {
                        None
                    },
                    timed_out: ended_by == Some("timeout"),
                    aborted: ended_by == Some("abort"),
                    duration_ms: began.elapsed().as_millis() as u64,
                })
            };
            let _ = exit_tx.send(Some(status));
        });
        Ok(SbxProcess { shared })
    }

    /// The daemon's exec id (for `resize`).
    pub fn exec_id(&self) -> &str {
        &self.shared.exec_id
    }

    /// Resize the exec's terminal.
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let s = &self.shared;
        s.client
            .resize(&s.name, &s.exec_id, cols, rows, &Call::default())
            .await
    }

    /// The next output chunk (queued output of one stream merged up to [`MAX_CHUNK`]); `None` at the end.
    pub async fn next(&self) -> Option<Result<Chunk>> {
        Some(self.next_run(MAX_CHUNK, false).await?.map(Run::into_chunk))
    }

    /// The next run of one stream's output, at most `max` bytes, read the way a container process reads it
    /// ([`crate::core::exec::next_run`]: no copy, and with `coalesce` bulk output gathered into fewer, larger
    /// runs, each of which costs a JS consumer one promise round trip). `None` at the end.
    pub async fn next_run(&self, max: usize, coalesce: bool) -> Option<Result<Run>> {
        self.shared.out.next_run(max, coalesce).await
    }

    /// Put output back in front of what is queued.
    pub fn unread(&self, c: Result<Chunk>) {
        self.shared.out.unread(c);
    }

    /// Drop all further output (and what is queued).
    pub fn discard_output(&self) {
        self.shared.out.discard();
    }

    /// Let go of it: output discarded and, if it still runs, TERM to its tree, KILL after 2 s, then its exit
    /// waited for up to 10 s.
    pub async fn dispose(&self) {
        self.discard_output();
        if self.shared.exit.borrow().is_some() {
            return;
        }
        let exited = || crate::core::exec::exit_status(self.shared.exit.clone());
        let _ = self.kill("TERM").await;
        if tokio::time::timeout(Duration::from_secs(2), exited())
            .await
            .is_err()
        {
            let _ = self.kill("KILL").await;
            let _ = tokio::time::timeout(Duration::from_secs(10), exited()).await;
        }
    }

    /// Write to stdin.
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        let mut g = self.shared.input.lock().await;
        let w = g
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::ProcessFinished, "stdin is closed"))?;
        w.write_all(data).await.map_err(|e| {
            Error::new(
                ErrorCode::ProcessFinished,
                format!("the process no longer reads stdin: {e}"),
            )
        })
    }

    /// Half-close stdin: the process reads EOF.
    pub async fn end(&self) -> Result<()> {
        if let Some(mut w) = self.shared.input.lock().await.take() {
            let _ = w.shutdown().await;
        }
        Ok(())
    }

    /// Signal the process tree. A process the daemon has not started yet (an attach answers before the process
    /// runs) is waited for, up to [`KILL_FIND`], so a kill right after spawn is not lost.
    pub async fn kill(&self, signal: &str) -> Result<()> {
        let sig = crate::core::exec::validate_signal(signal)?;
        self.shared.killed.store(true, Ordering::Relaxed);
        let s = &self.shared;
        let give_up = Instant::now() + KILL_FIND;
        let mut pause = Duration::from_millis(20);
        loop {
            let hit = s.client.kill_marked(&s.name, &s.marker, &sig).await?;
            if hit > 0 || s.exit.borrow().is_some() || Instant::now() >= give_up {
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Wait for the exit (bounded by the call's deadline and cancellation). If nobody is reading the output, it is
    /// discarded so the process cannot stall (as for containers: a reader that runs beside `wait()` keeps it).
    pub async fn wait(&self, call: &Call) -> Result<ExitStatus> {
        if !self.shared.out.consumed() {
            self.discard_output();
        }
        call.run(
            "waiting for the exec to exit",
            None,
            crate::core::exec::exit_status(self.shared.exit.clone()),
        )
        .await
    }
}

impl ProcessHandle for SbxProcess {
    fn next(&self) -> BoxFuture<'_, Option<Result<Chunk>>> {
        Box::pin(SbxProcess::next(self))
    }
    fn next_run(&self, max: usize, coalesce: bool) -> BoxFuture<'_, Option<Result<Run>>> {
        Box::pin(SbxProcess::next_run(self, max, coalesce))
    }
    fn unread(&self, chunk: Result<Chunk>) {
        SbxProcess::unread(self, chunk)
    }
    fn mark_read(&self) {
        self.shared.out.mark_read();
    }
    fn resize(&self, cols: u16, rows: u16) -> BoxFuture<'_, Result<()>> {
        Box::pin(SbxProcess::resize(self, cols, rows))
    }
    fn discard_output(&self) {
        SbxProcess::discard_output(self)
    }
    fn dispose(&self) -> BoxFuture<'_, ()> {
        Box::pin(SbxProcess::dispose(self))
    }
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(SbxProcess::write(self, data))
    }
    fn end(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(SbxProcess::end(self))
    }
    fn kill<'a>(&'a self, signal: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(SbxProcess::kill(self, signal))
    }
    fn wait<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, Result<ExitStatus>> {
        Box::pin(SbxProcess::wait(self, call))
    }
}

#[cfg(test)]
mod runtime_tests {
    use super::*;

    fn out(stdout: &[u8]) -> ExecOutput {
        ExecOutput {
            stdout: stdout.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_runtimes_own_message_with_126_or_127_is_a_failed_start() {
        let oci = b"OCI runtime exec failed: exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH: unknown\r\n";
        let e = runtime_refused(Some(126), &out(oci)).unwrap();
        assert_eq!(e.code, ErrorCode::ExecFailed);
        assert!(e.props["engineMessage"].as_str().unwrap().contains("nope"));
        assert!(runtime_refused(Some(127), &out(oci)).is_some());
        assert!(runtime_refused(Some(1), &out(oci)).is_none());
        assert!(runtime_refused(Some(127), &out(b"my program exits 127\n")).is_none());
        assert!(runtime_refused(None, &out(oci)).is_none());
    }
}
