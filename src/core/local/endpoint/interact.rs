//! `GET /v1/processes/{p}/interact`: the `sandboxes.v1` WebSocket (the contract's `x-websocket`).
//!
//! Text JSON frames only. The client's first frame is `attach {name, resumeFrom}`; then `stdin` (base64),
//! `closeStdin`, `resize`. The server sends `chunk {stream, data, streamSequence}` for every retained chunk
//! after the cursor, `exited` once the output is drained and the process has ended (then closes 1000), and
//! `heartbeat` when idle. A refusal is an `Error` text frame followed by a close: 1002 no subprotocol, 1003
//! binary frame, 1007 a frame that is not an `InteractRequest`, 1009 an oversized frame, 1008 a 4xx code,
//! 1011 a 5xx code.

use super::process::{ahead, lost, resume_from, terminal_size, Page, Proc};
use super::{ApiError, Endpoint, Resp};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// The one subprotocol spoken (echoed when offered).
pub(super) const SUBPROTOCOL: &str = "sandboxes.v1";
/// Largest frame or message a client may send.
pub(super) const MAX_CLIENT_FRAME: usize = 1024 * 1024;
/// Data per server `chunk` frame is one retained chunk; frames are sent a page of this many bytes at a time.
const PAGE_BYTES: usize = 256 * 1024;
/// An idle stream gets a `heartbeat` this often.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a PTY's first input waits for the launcher's PID line (see [`pty_ready`]).
const PTY_READY_WAIT: Duration = Duration::from_secs(2);
/// How long the client has to send `attach` after the upgrade.
const ATTACH_WAIT: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<TokioIo<Upgraded>>;
type Tx = SplitSink<Ws, Message>;
type Rx = SplitStream<Ws>;

/// A client frame.
enum In {
    Attach {
        name: String,
        resume: u64,
    },
    Stdin(Bytes),
    CloseStdin(bool),
    Resize {
        rows: Option<i64>,
        cols: Option<i64>,
    },
}

/// Why a session ends: a close code and the error frame sent before it (none for a clean end).
struct End(u16, Option<ApiError>);

/// Counts a session in [`Proc::attached`] while it lives (the retention then holds the process back rather than
/// drop what the session has not sent).
struct Attached<'a>(&'a Proc);

impl<'a> Attached<'a> {
    fn new(p: &'a Proc) -> Attached<'a> {
        p.attached.fetch_add(1, Ordering::SeqCst);
        p.progress.notify_waiters();
        Attached(p)
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.0.attached.fetch_sub(1, Ordering::SeqCst);
        self.0.progress.notify_waiters();
    }
}

impl From<ApiError> for End {
    fn from(e: ApiError) -> End {
        let code = if e.status() >= 500 { 1011 } else { 1008 };
        End(code, Some(e))
    }
}

impl Endpoint {
    /// Check the handshake, answer 101 (echoing `sandboxes.v1` when offered) and run the session on the upgraded
    /// connection.
    pub(super) fn interact(
        self: &Arc<Self>,
        id: String,
        mut req: Request<Incoming>,
    ) -> Result<Resp, ApiError> {
        if req.uri().query().is_some_and(|q| !q.is_empty()) {
            return Err(ApiError::invalid(
                "interact takes no query parameters (credentials in the query are refused)",
            ));
        }
        let h = req.headers();
        let has = |name: &str, token: &str| {
            h.get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        if !has("upgrade", "websocket") || !has("connection", "upgrade") {
            return Err(ApiError::invalid(
                "interact is a WebSocket: send Upgrade: websocket",
            ));
        }
        if !has("sec-websocket-version", "13") {
            return Err(ApiError::invalid("Sec-WebSocket-Version must be 13"));
        }
        let Some(key) = h.get("sec-websocket-key").map(|k| k.as_bytes().to_vec()) else {
            return Err(ApiError::invalid("Sec-WebSocket-Key is missing"));
        };
        let offered = has("sec-websocket-protocol", SUBPROTOCOL);
        let accept = tungstenite::handshake::derive_accept_key(&key);
        let upgrade = hyper::upgrade::on(&mut req);
        let me = self.clone();
        tokio::spawn(async move {
            let Ok(up) = upgrade.await else { return };
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_CLIENT_FRAME))
                .max_frame_size(Some(MAX_CLIENT_FRAME));
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, Some(config))
                .await;
            let (mut tx, mut rx) = ws.split();
            let end = if offered {
                me.session(&id, &mut tx, &mut rx).await
            } else {
                End(
                    1002,
                    Some(ApiError::invalid(format!(
                        "offer the {SUBPROTOCOL} subprotocol (Sec-WebSocket-Protocol)"
                    ))),
                )
            };
            finish(&mut tx, end).await;
        });
        let mut r = Response::new(Default::default());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let hs = r.headers_mut();
        hs.insert("upgrade", "websocket".parse().expect("static"));
        hs.insert("connection", "Upgrade".parse().expect("static"));
        hs.insert(
            "sec-websocket-accept",
            accept
                .parse()
                .map_err(|_| ApiError::new("internal", "bad accept key"))?,
        );
        if offered {
            hs.insert(
                "sec-websocket-protocol",
                SUBPROTOCOL.parse().expect("static"),
            );
        }
        Ok(r)
    }

    async fn session(&self, id: &str, tx: &mut Tx, rx: &mut Rx) -> End {
        let first = match tokio::time::timeout(ATTACH_WAIT, next_frame(rx)).await {
            Err(_) => {
                return ApiError::new("deadlineExceeded", "no attach frame within 30 s").into()
            }
            Ok(Err(end)) => return end,
            Ok(Ok(f)) => f,
        };
        let (name, resume) = match first {
            In::Attach { name, resume } => (name, resume),
            _ => {
                return ApiError::invalid("the first frame must be attach")
                    .field("attach", "required first")
                    .into()
            }
        };
        if name != format!("processes/{id}") {
            return ApiError::invalid(format!(
                "attach names {name:?} but the path names processes/{id}"
            ))
            .field("attach.name", "must match the path")
            .into();
        }
        let p = match self.find(id) {
            Ok(p) => p,
            Err(e) => return e.into(),
        };
        match self.stream(&p, resume, tx, rx).await {
            Ok(()) => End(1000, None),
            Err(end) => end,
        }
    }

    /// Send output after `cursor` as it is retained and apply client frames, until the process has exited and
    /// its output is drained, the client leaves, or a refusal.
    async fn stream(
        &self,
        p: &Arc<Proc>,
        mut cursor: u64,
        tx: &mut Tx,
        rx: &mut Rx,
    ) -> Result<(), End> {
        let mut changed = p.changed.subscribe();
        let _attached = Attached::new(p);
        let start = tokio::time::Instant::now() + HEARTBEAT;
        let mut heartbeat = tokio::time::interval_at(start, HEARTBEAT);
        loop {
            loop {
                match p.page(cursor, PAGE_BYTES) {
                    Page::Chunks(chunks, exited) => {
                        if chunks.is_empty() {
                            if let Some(e) = exited {
                                if e.lost.is_some() {
                                    return Err(e.lost_error().into());
                                }
                                send(tx, &json!({"exited": e.json()})).await?;
                                return Ok(());
                            }
                            break;
                        }
                        for c in chunks {
                            send(tx, &json!({"chunk": c.json()})).await?;
                            cursor = c.seq;
                            p.delivered.fetch_max(cursor, Ordering::SeqCst);
                            p.progress.notify_waiters();
                        }
                        heartbeat.reset();
                    }
                    Page::Lost { oldest } => return Err(lost(cursor, oldest).into()),
                    Page::Ahead { last } => return Err(ahead(cursor, last).into()),
                }
            }
            tokio::select! {
                _ = changed.changed() => {}
                f = next_frame(rx) => self.apply(p, f?).await?,
                _ = heartbeat.tick() => send(tx, &json!({"heartbeat": {}})).await?,
                _ = self.stop.cancelled() => {
                    return Err(ApiError::new("unavailable", "the sandbox is stopping").into())
                }
            }
        }
    }

    async fn apply(&self, p: &Proc, f: In) -> Result<(), End> {
        if matches!(f, In::Stdin(_) | In::CloseStdin(true)) {
            pty_ready(p).await;
        }
        match f {
            In::Attach { .. } => {
                Err(ApiError::invalid("attach may only be the first frame").into())
            }
            In::Stdin(data) => {
                if !p.pty && p.stdin_closed.load(Ordering::SeqCst) {
                    return Err(
                        ApiError::precondition("stdin is closed (closeStdin was sent)").into(),
                    );
                }
                match p.handle.write(&data).await {
                    Ok(()) => Ok(()),
                    // Input for a process that has exited goes nowhere; its exit is on its way.
                    Err(_) if p.handle.exit_now().is_some() => Ok(()),
                    Err(e) => Err(ApiError::from(e).into()),
                }
            }
            In::CloseStdin(false) => Ok(()),
            In::CloseStdin(true) if p.pty => {
                // One VEOF (^D, the default) through the line discipline per frame; the PTY stays open.
                match p.handle.write(&[0x04]).await {
                    Err(e) if p.handle.exit_now().is_none() => Err(ApiError::from(e).into()),
                    _ => Ok(()),
                }
            }
            In::CloseStdin(true) => {
                p.stdin_closed.store(true, Ordering::SeqCst);
                p.handle
                    .end()
                    .await
                    .map_err(|e| End::from(ApiError::from(e)))
            }
            In::Resize { rows, cols } => {
                let (cols, rows) = terminal_size(rows, cols).map_err(End::from)?;
                if !p.pty {
                    return Err(ApiError::precondition(
                        "resize needs a process created with a pty",
                    )
                    .into());
                }
                if p.handle.exit_now().is_some() {
                    return Ok(());
                }
                p.handle
                    .resize(cols, rows)
                    .await
                    .map_err(|e| End::from(ApiError::from(e)))
            }
        }
    }
}

/// On a PTY, input echoed before the exec layer's launcher has printed its PID line would be taken for that line
/// (a TTY has one output stream): hold the first input until the PID is known (or the process ended), at most
/// [`PTY_READY_WAIT`].
async fn pty_ready(p: &Proc) {
    if !p.pty || p.input_ready.load(Ordering::SeqCst) {
        return;
    }
    let deadline = tokio::time::Instant::now() + PTY_READY_WAIT;
    while p.handle.pid().is_none()
        && p.handle.exit_now().is_none()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.input_ready.store(true, Ordering::SeqCst);
}

/// The next client frame, parsed. Pings are answered by the library; a close (or a broken connection) ends the
/// session without an error frame.
async fn next_frame(rx: &mut Rx) -> Result<In, End> {
    loop {
        let msg = match rx.next().await {
            None => return Err(End(1000, None)),
            Some(Ok(m)) => m,
            Some(Err(tungstenite::Error::Capacity(e))) => {
                return Err(End(
                    1009,
                    Some(ApiError::new(
                        "resourceExhausted",
                        format!("frame too large ({e}; at most {MAX_CLIENT_FRAME} bytes)"),
                    )),
                ))
            }
            Some(Err(_)) => return Err(End(1000, None)),
        };
        return match msg {
            Message::Text(t) => parse(t.as_str()).map_err(|e| End(1007, Some(e))),
            Message::Binary(_) => Err(End(
                1003,
                Some(ApiError::invalid(
                    "binary frames are refused: every frame is text JSON",
                )),
            )),
            Message::Close(_) => Err(End(1000, None)),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
    }
}

/// An `InteractRequest`: exactly one of attach, stdin, closeStdin, resize.
fn parse(text: &str) -> Result<In, ApiError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(format!("the frame is not JSON: {e}")))?;
    let obj = v.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
        ApiError::invalid(
            "a frame is an object with exactly one of attach, stdin, closeStdin, resize",
        )
    })?;
    let (k, val) = obj.iter().next().expect("one entry");
    let bad = |what: &str| ApiError::invalid(format!("invalid {k}: {what}")).field(k, what);
    match k.as_str() {
        "attach" => {
            let a = val.as_object().ok_or_else(|| bad("an object"))?;
            if let Some(x) = a.keys().find(|x| *x != "name" && *x != "resumeFrom") {
                return Err(bad(&format!("unknown field {x}")));
            }
            let name = a
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| {
                    n.strip_prefix("processes/")
                        .is_some_and(|r| !r.is_empty() && !r.contains('/'))
                })
                .ok_or_else(|| bad("name must be processes/{process}"))?;
            let resume = match a.get("resumeFrom") {
                None | Some(Value::Null) => 0,
                Some(r) => resume_from(r)?,
            };
            Ok(In::Attach {
                name: name.to_string(),
                resume,
            })
        }
        "stdin" => {
            use base64::Engine as _;
            let s = val.as_str().ok_or_else(|| bad("a base64 string"))?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(s)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
                .map_err(|_| bad("a base64 string"))?;
            Ok(In::Stdin(Bytes::from(data)))
        }
        "closeStdin" => Ok(In::CloseStdin(
            val.as_bool().ok_or_else(|| bad("a boolean"))?,
        )),
        "resize" => {
            let r = val.as_object().ok_or_else(|| bad("an object"))?;
            if let Some(x) = r
                .keys()
                .find(|x| !matches!(x.as_str(), "rows" | "cols" | "bounded"))
            {
                return Err(bad(&format!("unknown field {x}")));
            }
            let dim = |n: &str| match r.get(n) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(x)) => x
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| bad("integer rows and cols")),
                Some(_) => Err(bad("integer rows and cols")),
            };
            Ok(In::Resize {
                rows: dim("rows")?,
                cols: dim("cols")?,
            })
        }
        _ => Err(ApiError::invalid(format!(
            "unknown frame {k:?} (attach, stdin, closeStdin, resize)"
        ))),
    }
}

async fn send(tx: &mut Tx, v: &Value) -> Result<(), End> {
    tx.send(Message::text(v.to_string()))
        .await
        .map_err(|_| End(1000, None))
}

/// The error frame (if any), then the close frame with a reason of at most 123 bytes.
async fn finish(tx: &mut Tx, End(code, err): End) {
    let mut reason = String::new();
    if let Some(e) = &err {
        let _ = tx.send(Message::text(e.body().to_string())).await;
        for ch in format!("{}: {}", e.code, e.message).chars() {
            if reason.len() + ch.len_utf8() > 123 {
                break;
            }
            reason.push(ch);
        }
    }
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tx.send(Message::Close(Some(frame))).await;
    let _ = tx.close().await;
}
