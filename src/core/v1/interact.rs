//! A durable v1 process (`POST /v1/processes`) driven over its `interact` WebSocket (subprotocol `sandboxes.v1`,
//! text JSON frames): output in order, stdin as base64 frames, `closeStdin`, `resize`, signals through
//! `POST …/signal`, the exit from the `exited` frame.
//!
//! A socket that drops (EOF, reset, close 1011, or 1008 when the scoped credential expired: the credential is
//! renewed first) is re-attached with `resumeFrom` = the last `streamSequence` received; a chunk at or below it
//! is dropped, so output is neither lost nor repeated. Stdin is never replayed: a write whose frame could not be
//! sent fails. At most [`MAX_RECONNECTS`] re-attachments in a row without new output; then the process reports
//! `ERR_STREAM_INTERRUPTED`. Close codes 1002/1003/1007/1009, binary frames and frames above [`MAX_FRAME`] are
//! protocol errors (no retry). A quiet socket is pinged; one where nothing arrives for [`IDLE_LIMIT`] is re-attached.
//!
//! When no socket can be had at all (the first handshake fails at the transport level — a proxy that does not pass
//! WebSockets — or the re-attachments run out), the output is **polled** with `readOutput` from the same cursor, so
//! it is still neither lost nor repeated, until the exit. Polling carries no stdin, `closeStdin` or resize: those
//! fail with `ERR_STREAM_INTERRUPTED`; signals still work (they are plain requests).

use super::super::call::Call;
use super::super::error::{Error, ErrorCode, Result};
use super::super::exec::{Chunk, ExitStatus, OutputQueue, Run, MAX_CHUNK};
use super::client::{enc, Body, Budget, Client, Cred, Ctx, EndpointRef};
use super::transport::Io;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use hyper::Method;
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// The largest frame accepted from the server.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Re-attachments in a row without new output before the process is given up as interrupted.
pub const MAX_RECONNECTS: u32 = 3;
/// A socket is pinged when quiet this long, and given up (re-attached) when nothing at all, not even a pong or a
/// heartbeat, came for [`IDLE_LIMIT`]: a server that stops answering is noticed in bounded time.
const IDLE_PING: Duration = if cfg!(test) {
    Duration::from_millis(200)
} else {
    Duration::from_secs(20)
};
const IDLE_LIMIT: Duration = if cfg!(test) {
    Duration::from_millis(700)
} else {
    Duration::from_secs(60)
};
/// How long opening (and attaching) one socket may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Polling waits this long after an empty page at first, doubling up to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(1);
/// The most stdin bytes in one frame.
const STDIN_FRAME: usize = 512 * 1024;
/// Output chunks queued ahead of the reader.
const QUEUE: usize = 64;

type Ws = WebSocketStream<Pin<Box<dyn Io>>>;

enum Cmd {
    Frame(Value, oneshot::Sender<Result<()>>),
}

/// A running v1 process.
pub struct V1Process {
    shared: Arc<Shared>,
}

struct Shared {
    client: Arc<Client>,
    ep: EndpointRef,
    id: String,
    pid: Option<i64>,
    tty: bool,
    out: OutputQueue,
    cmd: mpsc::Sender<Cmd>,
    exit: watch::Receiver<Option<Result<ExitStatus>>>,
    stdin_closed: AtomicBool,
    killed: AtomicBool,
    /// Re-attachments made (tests read it).
    reconnects: AtomicUsize,
    /// The output is being polled (no socket).
    polling: AtomicBool,
}

/// What the reader task needs.
struct Reader {
    shared: std::sync::Weak<Shared>,
    client: Arc<Client>,
    ep: EndpointRef,
    id: String,
    name: String,
    tx: mpsc::Sender<Result<Chunk>>,
    cmd: mpsc::Receiver<Cmd>,
    exit: watch::Sender<Option<Result<ExitStatus>>>,
    /// The handle was dropped (its command channel is closed).
    handle_gone: bool,
}

/// How a socket ended.
enum End {
    Exited(i64),
    /// Re-attach (`fresh`: renew the credential first), with why.
    Retry(bool, String, Option<u16>),
    Fail(Error),
}

/// The v1 signal name for `signal` (`SIGTERM`, `TERM`, `15`…), if the contract has it.
pub fn v1_signal(signal: &str) -> Option<&'static str> {
    let s = signal.trim_start_matches("SIG");
    Some(match s {
        "TERM" | "15" => "term",
        "KILL" | "9" => "kill",
        "INT" | "2" => "int",
        "HUP" | "1" => "hup",
        "QUIT" | "3" => "quit",
        "USR1" | "10" => "usr1",
        "USR2" | "12" => "usr2",
        _ => return None,
    })
}

impl V1Process {
    /// Attach to the created process `process` (a `Process` resource) and start reading.
    pub async fn start(
        client: Arc<Client>,
        ep: EndpointRef,
        process: &Value,
        tty: bool,
        timeout: Option<Duration>,
        abort: CancellationToken,
    ) -> Result<V1Process> {
        let name = process["name"]
            .as_str()
            .map(str::to_string)
            .or_else(|| process["uid"].as_str().map(|u| format!("processes/{u}")))
            .ok_or_else(|| Error::protocol("the created process has no name", Some(201), b""))?;
        let id = super::client::id_of(&name).to_string();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (exit_tx, exit_rx) = watch::channel(None);
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            client: client.clone(),
            ep: ep.clone(),
            id: id.clone(),
            pid: process["pid"].as_i64(),
            tty,
            out: OutputQueue::new(rx),
            cmd: cmd_tx,
            exit: exit_rx,
            stdin_closed: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            reconnects: AtomicUsize::new(0),
            polling: AtomicBool::new(false),
        });
        let reader = Reader {
            shared: Arc::downgrade(&shared),
            client,
            ep,
            id,
            name,
            tx,
            cmd: cmd_rx,
            exit: exit_tx,
            handle_gone: false,
        };
        // The first socket is opened here so a refused attach is the spawn's error. One that cannot be had at the
        // transport level is replaced by polling, if the endpoint answers `readOutput`.
        let ws = match reader.open(0, false).await {
            Ok(ws) => Some(ws),
            Err(e) if e.code == ErrorCode::SandboxdUnavailable => {
                read_output(&reader.client, &reader.ep, &reader.id, 0)
                    .await
                    .map_err(|_| e)?;
                None
            }
            Err(e) => return Err(e),
        };
        tokio::spawn(reader.run(ws, timeout, abort));
        Ok(V1Process { shared })
    }

    /// Re-attachments so far.
    pub fn reconnects(&self) -> usize {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Whether the output is being polled (no interact socket could be had).
    pub fn polling(&self) -> bool {
        self.shared.polling.load(Ordering::Relaxed)
    }

    async fn frame(&self, v: Value) -> Result<()> {
        let (ack, done) = oneshot::channel();
        if self.shared.cmd.send(Cmd::Frame(v, ack)).await.is_err() {
            return Err(Error::new(
                ErrorCode::ProcessFinished,
                "the process has ended",
            ));
        }
        done.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorCode::ProcessFinished,
                "the process has ended",
            ))
        })
    }

    /// The next output chunk.
    pub async fn next(&self) -> Option<Result<Chunk>> {
        Some(self.next_run(MAX_CHUNK, false).await?.map(Run::into_chunk))
    }

    /// The next run of one stream's output (see [`crate::core::exec::next_run`]).
    pub async fn next_run(&self, max: usize, coalesce: bool) -> Option<Result<Run>> {
        self.shared.out.next_run(max, coalesce).await
    }

    /// Put output back in front.
    pub fn unread(&self, c: Result<Chunk>) {
        self.shared.out.unread(c);
    }

    /// Drop all further output.
    pub fn discard_output(&self) {
        self.shared.out.discard();
    }

    /// Write stdin (split into frames of at most 512 KiB). Never replayed after a dropped socket.
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        if self.shared.stdin_closed.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorCode::ProcessFinished, "stdin is closed"));
        }
        for part in data.chunks(STDIN_FRAME) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(part);
            self.frame(json!({ "stdin": b64 })).await?;
        }
        Ok(())
    }

    /// Close stdin (`closeStdin`).
    pub async fn end(&self) -> Result<()> {
        if self.shared.stdin_closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        match self.frame(json!({ "closeStdin": true })).await {
            Err(e) if e.code == ErrorCode::ProcessFinished => Ok(()),
            r => r,
        }
    }

    /// Resize the terminal.
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        if !self.shared.tty {
            return Err(Error::invalid("resize needs a process spawned with a tty"));
        }
        self.frame(json!({ "resize": { "rows": rows, "cols": cols } }))
            .await
    }

    /// Send `signal` (`POST /v1/processes/{id}/signal`).
    pub async fn kill(&self, signal: &str) -> Result<()> {
        let sig = crate::core::exec::validate_signal(signal)?;
        let v1 = v1_signal(&sig).ok_or_else(|| {
            crate::core::backend::unsupported(
                "v1",
                &format!("signal {sig} (term, kill, int, hup, quit, usr1, usr2 only)"),
            )
        })?;
        self.shared.killed.store(true, Ordering::Relaxed);
        if self.shared.exit.borrow().is_some() {
            return Ok(());
        }
        signal_process(&self.shared.client, &self.shared.ep, &self.shared.id, v1).await
    }

    /// Wait for the exit.
    pub async fn wait(&self, call: &Call) -> Result<ExitStatus> {
        if !self.shared.out.consumed() {
            self.discard_output();
        }
        call.run(
            "waiting for the v1 process to exit",
            None,
            crate::core::exec::exit_status(self.shared.exit.clone()),
        )
        .await
    }

    /// The exit, if it is known already.
    pub fn exited(&self) -> bool {
        self.shared.exit.borrow().is_some()
    }

    /// Let go: TERM, KILL after 2 s, bounded.
    pub async fn dispose(&self) {
        self.discard_output();
        if self.exited() {
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

    /// The process id in the sandbox.
    pub fn pid(&self) -> Option<i64> {
        self.shared.pid
    }

    /// Output nobody has asked for yet is kept for a reader from now on.
    pub fn mark_read(&self) {
        self.shared.out.mark_read();
    }
}

/// `POST /v1/processes/{id}/signal`.
pub async fn signal_process(client: &Client, ep: &EndpointRef, id: &str, sig: &str) -> Result<()> {
    let b = Budget::of(&Call::default(), Duration::from_secs(15));
    let ctx = Ctx::process(format!(
        "signalling a process in v1 sandbox {:?}",
        ep.display
    ));
    let res = client
        .on_endpoint(
            ep,
            &["sandboxesExec"],
            Method::POST,
            &format!("/v1/processes/{}/signal", enc(id)),
            &Body::Json(json!({ "signal": sig })),
            &[],
            &b,
            &ctx,
        )
        .await?;
    client.json::<Value>(&res, &[200], &ctx).map(|_| ())
}

impl Reader {
    /// Open a socket and attach from `resume`.
    async fn open(&self, resume: i64, fresh: bool) -> Result<Ws> {
        let b = Budget::of(&Call::default(), OPEN_TIMEOUT);
        let perms: &[&'static str] = &["sandboxesExec"];
        let token = self
            .client
            .token(Cred::Endpoint(&self.ep, perms), fresh, &b)
            .await?;
        let what = format!("attaching to a process in v1 sandbox {:?}", self.ep.display);
        let path = format!("/v1/processes/{}/interact", enc(&self.id));
        let ws = b
            .bound(&what, async {
                let io = self.ep.base.connect().await?;
                let mut req = self
                    .ep
                    .base
                    .ws_url(&path)
                    .into_client_request()
                    .map_err(|e| Error::internal(format!("building the interact request: {e}")))?;
                let h = req.headers_mut();
                match &token {
                    // the credential as the non-echoed subprotocol offer, beside the API's own
                    Some(t) if self.ep.ws_subprotocol_auth => {
                        use base64::Engine;
                        let enc =
                            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t.expose());
                        let mut v = hyper::header::HeaderValue::from_str(&format!(
                            "sandboxes.v1, sandboxes.bearer.v1.{enc}"
                        ))
                        .map_err(|_| {
                            Error::new(ErrorCode::Unauthenticated, "bad credential subprotocol")
                        })?;
                        v.set_sensitive(true);
                        h.insert("sec-websocket-protocol", v);
                    }
                    _ => {
                        h.insert(
                            "sec-websocket-protocol",
                            hyper::header::HeaderValue::from_static("sandboxes.v1"),
                        );
                    }
                }
                if let Some(t) = token.as_ref().filter(|_| !self.ep.ws_subprotocol_auth) {
                    let mut v =
                        hyper::header::HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                            .map_err(|_| {
                                Error::new(ErrorCode::Unauthenticated, "bad credential header")
                            })?;
                    v.set_sensitive(true);
                    h.insert("authorization", v);
                }
                let mut cfg = tungstenite::protocol::WebSocketConfig::default();
                cfg.max_message_size = Some(MAX_FRAME);
                cfg.max_frame_size = Some(MAX_FRAME);
                let (mut ws, res) = tokio_tungstenite::client_async_with_config(req, io, Some(cfg))
                    .await
                    .map_err(|e| self.handshake_error(e))?;
                let proto = res
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok());
                if proto != Some("sandboxes.v1") {
                    return Err(Error::protocol(
                        "the interact socket did not agree on the sandboxes.v1 subprotocol",
                        Some(101),
                        b"",
                    ));
                }
                let attach =
                    json!({"attach": {"name": self.name, "resumeFrom": resume.to_string()}});
                ws.send(Message::text(attach.to_string()))
                    .await
                    .map_err(|e| interrupted(&format!("sending attach: {e}"), None))?;
                Ok(ws)
            })
            .await;
        ws.map_err(|e| self.client.scrub(e))
    }

    fn handshake_error(&self, e: tungstenite::Error) -> Error {
        let ctx = Ctx::process(format!(
            "attaching to a process in v1 sandbox {:?}",
            self.ep.display
        ));
        match e {
            tungstenite::Error::Http(res) => {
                let status = res.status().as_u16();
                let body = res.body().clone().unwrap_or_default();
                super::client::api_error(status, &body, &ctx)
            }
            e => Error::new(
                ErrorCode::SandboxdUnavailable,
                format!("{}: the WebSocket handshake failed: {e}", ctx.what),
            ),
        }
    }

    async fn run(mut self, first: Option<Ws>, timeout: Option<Duration>, abort: CancellationToken) {
        let began = Instant::now();
        let mut ws = first;
        let mut last_seq: i64 = 0;
        let mut failures: u32 = 0;
        let mut ended_by: Option<&'static str> = None;
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(1 << 30)));
        tokio::pin!(deadline);
        let outcome: Result<i64> = 'outer: loop {
            let Some(mut sock) = ws.take() else {
                // no socket to be had: poll the output to the exit
                let end = self
                    .poll(&mut last_seq, &mut deadline, &abort, &mut ended_by)
                    .await;
                break match end {
                    End::Exited(code) => Ok(code),
                    End::Fail(e) => Err(e),
                    End::Retry(_, why, close) => Err(interrupted(&why, close)),
                };
            };
            let end = self
                .pump(
                    &mut sock,
                    &mut last_seq,
                    &mut failures,
                    &mut deadline,
                    &abort,
                    &mut ended_by,
                )
                .await;
            let _ = sock.close(None).await;
            match end {
                End::Exited(code) => break Ok(code),
                End::Fail(e) => break Err(e),
                End::Retry(mut fresh, mut why, close) => {
                    let mut unopenable = false;
                    loop {
                        failures += 1;
                        if failures > MAX_RECONNECTS {
                            // No socket could be opened again (the handshake itself failed, as behind a proxy that
                            // does not pass WebSockets): poll, if the endpoint answers readOutput. A server that keeps
                            // closing the sockets it opened is not second-guessed.
                            if !unopenable
                                || read_output(&self.client, &self.ep, &self.id, last_seq)
                                    .await
                                    .is_err()
                            {
                                break 'outer Err(interrupted(&why, close));
                            }
                            ws = None;
                            break;
                        }
                        if let Some(s) = self.shared.upgrade() {
                            s.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        if fresh {
                            self.client
                                .drop_credential(&self.ep, &["sandboxesExec"])
                                .await;
                        }
                        tokio::time::sleep(Duration::from_millis(50 * failures as u64)).await;
                        match self.open(last_seq, fresh).await {
                            Ok(s) => {
                                ws = Some(s);
                                break;
                            }
                            // A refusal that a fresh credential cannot fix ends it now.
                            Err(e)
                                if !matches!(
                                    e.code,
                                    ErrorCode::Unauthenticated
                                        | ErrorCode::SandboxdUnavailable
                                        | ErrorCode::StreamInterrupted
                                        | ErrorCode::Timeout
                                ) =>
                            {
                                break 'outer Err(e);
                            }
                            Err(e) => {
                                fresh = e.code == ErrorCode::Unauthenticated;
                                unopenable = e.code == ErrorCode::SandboxdUnavailable;
                                why = e.message;
                            }
                        }
                    }
                }
            }
        };
        let killed = ended_by.is_some()
            || self
                .shared
                .upgrade()
                .is_some_and(|s| s.killed.load(Ordering::Relaxed));
        let status = match outcome {
            Ok(code) => Ok(ExitStatus {
                exit_code: Some(code),
                // A timeout or an abort sends `kill`; a caller's kill reports what the exit code says.
                signal: match (ended_by.is_some(), killed, code) {
                    (_, true, 143) => Some("SIGTERM".into()),
                    (true, _, _) | (_, true, 137) => Some("SIGKILL".into()),
                    _ => None,
                },
                timed_out: ended_by == Some("timeout"),
                aborted: ended_by == Some("abort"),
                duration_ms: began.elapsed().as_millis() as u64,
            }),
            Err(e) => {
                let e = self.client.scrub(e);
                let _ = self.tx.send(Err(e.clone())).await;
                Err(e)
            }
        };
        let _ = self.exit.send(Some(status));
    }

    #[allow(clippy::too_many_arguments)]
    async fn pump(
        &mut self,
        ws: &mut Ws,
        last_seq: &mut i64,
        failures: &mut u32,
        deadline: &mut Pin<&mut tokio::time::Sleep>,
        abort: &CancellationToken,
        ended_by: &mut Option<&'static str>,
    ) -> End {
        let mut last_error: Option<Value> = None;
        let mut last_rx = Instant::now();
        let mut idle = tokio::time::interval(IDLE_PING);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        idle.tick().await;
        loop {
            tokio::select! {
                msg = ws.next() => match stamped(&mut last_rx, msg) {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = match serde_json::from_str(t.as_str()) {
                            Ok(v) => v,
                            Err(_) => return End::Fail(Error::protocol("the interact socket sent a frame that is not JSON", None, t.as_bytes())),
                        };
                        if let Some(c) = v.get("chunk") {
                            match self.deliver(c, last_seq).await {
                                Ok(true) => *failures = 0,
                                Ok(false) => {}
                                Err(e) => return End::Fail(e),
                            }
                        } else if let Some(x) = v.get("exited") {
                            return End::Exited(x["exitCode"].as_i64().unwrap_or(0));
                        } else if v.get("heartbeat").is_some() {
                        } else if v.get("code").is_some() {
                            last_error = Some(v);
                        } else {
                            return End::Fail(Error::protocol("the interact socket sent an unknown frame", None, t.as_bytes()));
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        return End::Fail(Error::protocol("the interact socket sent a binary frame (the contract has text frames only)", None, b""));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.as_ref().map(|f| u16::from(f.code));
                        let reason = frame.as_ref().map(|f| f.reason.to_string()).unwrap_or_default();
                        let said = last_error.as_ref().map(|e| format!("{} ({})", e["message"].as_str().unwrap_or(""), e["code"].as_str().unwrap_or(""))).unwrap_or(reason);
                        return match frame.map(|f| f.code) {
                            Some(CloseCode::Policy) => {
                                // 1008: a 4xx, or the credential expired; a local socket has none to renew.
                                let other = last_error.as_ref().and_then(|e| e["code"].as_str()).is_some_and(|c| c != "unauthenticated");
                                if self.ep.local || other {
                                    End::Fail(close_error(code, &said, last_error.as_ref()))
                                } else {
                                    End::Retry(true, format!("closed with 1008: {said}"), code)
                                }
                            }
                            Some(CloseCode::Error) | Some(CloseCode::Away) | Some(CloseCode::Restart) | Some(CloseCode::Again) | None => End::Retry(false, format!("closed with {}: {said}", code.unwrap_or(1005)), code),
                            Some(CloseCode::Normal) => End::Retry(false, format!("closed (1000) before the exit: {said}"), code),
                            _ => End::Fail(close_error(code, &said, last_error.as_ref())),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(tungstenite::Error::Capacity(e))) => {
                        return End::Fail(Error::protocol(format!("the interact socket sent a frame above {MAX_FRAME} bytes: {e}"), None, b""));
                    }
                    Some(Err(tungstenite::Error::Protocol(e))) => {
                        return End::Retry(false, format!("the socket broke: {e}"), None);
                    }
                    Some(Err(e)) => return End::Retry(false, format!("the socket broke: {e}"), None),
                    None => return End::Retry(false, "the socket ended".into(), None),
                },
                cmd = self.cmd.recv(), if !self.handle_gone => match cmd {
                    Some(Cmd::Frame(v, ack)) => {
                        let r = ws.send(Message::text(v.to_string())).await.map_err(|e| interrupted(&format!("the frame could not be sent ({e}); stdin is not replayed"), None));
                        // A failed send leaves the read side to drain what already arrived; its end re-attaches.
                        let _ = ack.send(r);
                    }
                    // The handle is gone: keep reading to the exit (and stop polling the closed channel).
                    None => self.handle_gone = true,
                },
                _ = idle.tick() => {
                    if last_rx.elapsed() >= IDLE_LIMIT {
                        return End::Retry(false, format!("nothing came for {} ms", IDLE_LIMIT.as_millis()), None);
                    }
                    let _ = ws.send(Message::Ping(Default::default())).await;
                }
                _ = deadline.as_mut(), if ended_by.is_none() => {
                    *ended_by = Some("timeout");
                    self.kill_in_background();
                }
                _ = abort.cancelled(), if ended_by.is_none() => {
                    *ended_by = Some("abort");
                    self.kill_in_background();
                }
            }
        }
    }

    /// Hand on one `ProcessChunk` (from a frame or a page) that comes after `last_seq`; one at or below it was
    /// delivered already (a replay on resume) and is skipped. Whether it was new.
    async fn deliver(&self, c: &Value, last_seq: &mut i64) -> Result<bool> {
        let seq = int64(&c["streamSequence"]).unwrap_or(*last_seq + 1);
        if seq <= *last_seq {
            return Ok(false);
        }
        *last_seq = seq;
        let data = base64::engine::general_purpose::STANDARD
            .decode(c["data"].as_str().unwrap_or(""))
            .map_err(|_| Error::protocol("an output chunk's data is not base64", None, b""))?;
        let stderr = c["stream"].as_str() == Some("stderr");
        let discard = self.shared.upgrade().is_none_or(|s| s.out.discarding());
        if !discard && !data.is_empty() {
            let _ = self.tx.send(Ok(Chunk::new(stderr, data.into()))).await;
        }
        Ok(true)
    }

    /// Output by `readOutput` from `last_seq` to the exit (no socket): chunks in order, none repeated; frames
    /// (stdin, `closeStdin`, resize) refused; the deadline and the abort still kill the process.
    async fn poll(
        &mut self,
        last_seq: &mut i64,
        deadline: &mut Pin<&mut tokio::time::Sleep>,
        abort: &CancellationToken,
        ended_by: &mut Option<&'static str>,
    ) -> End {
        if let Some(s) = self.shared.upgrade() {
            s.polling.store(true, Ordering::Relaxed);
        }
        let mut wait = Duration::ZERO;
        let mut errors = 0u32;
        loop {
            let (client, ep, id, from) = (
                self.client.clone(),
                self.ep.clone(),
                self.id.clone(),
                *last_seq,
            );
            let step = async move {
                tokio::time::sleep(wait).await;
                read_output(&client, &ep, &id, from).await
            };
            tokio::select! {
                page = step => match page {
                    Ok(page) => {
                        errors = 0;
                        let mut fresh = false;
                        for c in page["chunks"].as_array().into_iter().flatten() {
                            match self.deliver(c, last_seq).await {
                                Ok(new) => fresh |= new,
                                Err(e) => return End::Fail(e),
                            }
                        }
                        if let Some(next) = int64(&page["nextResumeFrom"]) {
                            *last_seq = (*last_seq).max(next);
                        }
                        if let Some(x) = page.get("exited").filter(|x| x.is_object()) {
                            return End::Exited(x["exitCode"].as_i64().unwrap_or(0));
                        }
                        wait = if fresh { Duration::ZERO } else { (wait * 2).clamp(POLL_MIN, POLL_MAX) };
                    }
                    Err(e) if errors < MAX_RECONNECTS && matches!(e.code, ErrorCode::SandboxdUnavailable | ErrorCode::Timeout | ErrorCode::Unauthenticated) => {
                        errors += 1;
                        wait = POLL_MAX;
                    }
                    Err(e) => return End::Fail(e),
                },
                cmd = self.cmd.recv(), if !self.handle_gone => match cmd {
                    Some(Cmd::Frame(_, ack)) => {
                        let _ = ack.send(Err(interrupted("no interact socket could be had and the output is polled: stdin, closeStdin and resize need the socket", None)));
                    }
                    None => self.handle_gone = true,
                },
                _ = deadline.as_mut(), if ended_by.is_none() => {
                    *ended_by = Some("timeout");
                    self.kill_in_background();
                }
                _ = abort.cancelled(), if ended_by.is_none() => {
                    *ended_by = Some("abort");
                    self.kill_in_background();
                }
            }
        }
    }

    fn kill_in_background(&self) {
        let (c, ep, id) = (self.client.clone(), self.ep.clone(), self.id.clone());
        tokio::spawn(async move {
            let _ = signal_process(&c, &ep, &id, "kill").await;
        });
    }
}

/// `v`, with `at` set to now (when something arrived).
fn stamped<T>(at: &mut Instant, v: T) -> T {
    *at = Instant::now();
    v
}

/// One page of `readOutput` after `from`.
async fn read_output(client: &Client, ep: &EndpointRef, id: &str, from: i64) -> Result<Value> {
    let b = Budget::of(&Call::default(), OPEN_TIMEOUT);
    let ctx = Ctx::process(format!(
        "reading the output of a process in v1 sandbox {:?}",
        ep.display
    ));
    let res = client
        .on_endpoint(
            ep,
            &["sandboxesExec"],
            Method::GET,
            &format!("/v1/processes/{}/output?resumeFrom={from}", enc(id)),
            &Body::Empty,
            &[],
            &b,
            &ctx,
        )
        .await?;
    client.json(&res, &[200], &ctx)
}

/// An int64 that may arrive as a string or a number.
pub fn int64(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

fn interrupted(why: &str, close: Option<u16>) -> Error {
    let mut e = Error::new(
        ErrorCode::StreamInterrupted,
        format!("the v1 process stream was interrupted: {why}"),
    );
    if let Some(c) = close {
        e = e.with("closeCode", c);
    }
    e
}

/// The error of a close that is not retried.
fn close_error(code: Option<u16>, said: &str, body: Option<&Value>) -> Error {
    let c = code.unwrap_or(1005);
    // LocalSandboxd's `ErrorInfo` for a program that could not be started (the contract names no reason)
    let not_started = body
        .and_then(|b| b["details"].as_array())
        .is_some_and(|d| d.iter().any(|x| x["reason"] == "PROCESS_START_FAILED"));
    let kind = match (c, body.and_then(|b| b["code"].as_str())) {
        _ if not_started => ErrorCode::ExecFailed,
        (_, Some("unauthenticated")) => ErrorCode::Unauthenticated,
        (_, Some("permissionDenied")) => ErrorCode::PermissionDenied,
        (_, Some("notFound")) => ErrorCode::ProcessFinished,
        (_, Some("failedPrecondition")) => ErrorCode::StreamInterrupted,
        (1008, _) => ErrorCode::StreamInterrupted,
        _ => ErrorCode::SandboxdProtocol,
    };
    let mut e = Error::new(
        kind,
        format!("the v1 process stream was closed with {c}: {said}"),
    )
    .with("closeCode", c);
    if let Some(code) = body.and_then(|b| b["code"].as_str()) {
        e = e.with("v1Code", code);
    }
    e
}
