//! ACP over sandbox-agent's HTTP transport: one connection = one server id = one agent process.
//! SSE is the single source of truth for everything inbound (responses included); POST only sends.
//! Event ids are tracked, reconnects resume with `Last-Event-ID`, and a gap (replay ring overflow) is reported.

use super::agent::{status_error, AgentServer};
use super::call::{bounded, Call};
use super::error::{Error, ErrorCode, Result};
use super::http::encode_segment;
use super::sse::SseParser;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How long `close()` waits for DELETE (0.4.2 hangs it while the agent lives; the close still takes effect).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default deadline for opening a connection (`initialize`, which starts the agent process).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline of a request sent with [`AcpConnection::request`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest SSE line accepted.
const MAX_SSE_LINE: usize = 16 * 1024 * 1024;
/// Events queued per subscriber before it is dropped as lagging.
const SUBSCRIBER_QUEUE: usize = 8192;
/// SSE reconnect attempts in a row before the connection is declared unavailable.
const MAX_RECONNECTS: u32 = 40;

/// One message from the agent side, with its SSE event id.
#[derive(Debug, Clone, PartialEq)]
pub struct AcpEvent {
    pub event_id: u64,
    pub message: Value,
}

/// What subscribers receive.
#[derive(Debug, Clone)]
pub enum Feed {
    Event(Arc<AcpEvent>),
    /// Events `from..=to` were lost (the server's replay ring overflowed).
    Gap {
        from: u64,
        to: u64,
    },
    /// The stream is over: `None` after close or agent exit, `Some` when it failed.
    Ended(Option<Error>),
}

/// How the agent process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentExit {
    pub code: Option<i64>,
    pub success: bool,
}

struct Subscriber {
    tx: mpsc::Sender<Feed>,
    lagged: Arc<AtomicBool>,
}

struct Shared {
    server: Arc<AgentServer>,
    server_id: String,
    agent: String,
    next_id: AtomicI64,
    pending: Mutex<HashMap<String, oneshot::Sender<Result<Value>>>>,
    subscribers: Mutex<Vec<Subscriber>>,
    last_event_id: AtomicU64,
    exited: watch::Sender<Option<AgentExit>>,
    closed: CancellationToken,
    permissions: Mutex<HashMap<String, Value>>,
}

/// A live ACP connection.
#[derive(Clone)]
pub struct AcpConnection {
    shared: Arc<Shared>,
}

/// A subscription to a connection's inbound messages.
pub struct Subscription {
    rx: mpsc::Receiver<Feed>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    pub async fn recv(&mut self) -> Feed {
        match self.rx.recv().await {
            Some(f) => f,
            None if self.lagged.load(Ordering::SeqCst) => Feed::Ended(Some(Error::new(
                ErrorCode::AgentProtocol,
                "this reader fell more than 8192 events behind and was dropped",
            ))),
            None => Feed::Ended(None),
        }
    }
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

fn is_response(m: &Value) -> bool {
    m.get("id").is_some()
        && m.get("method").is_none()
        && (m.get("result").is_some() || m.get("error").is_some())
}

/// A JSON-RPC response envelope → its result, or a typed error.
pub fn response_result(envelope: Value) -> Result<Value> {
    if let Some(err) = envelope.get("error") {
        let code = err["code"].as_i64().unwrap_or(0);
        let msg = err["message"].as_str().unwrap_or("").to_string();
        return Err(Error::new(
            ErrorCode::AgentProtocol,
            format!("the agent answered with JSON-RPC error {code}: {msg}"),
        )
        .with("rpcCode", code)
        .with("rpcMessage", msg)
        .with("rpcData", err.get("data").cloned().unwrap_or(Value::Null)));
    }
    Ok(envelope.get("result").cloned().unwrap_or(Value::Null))
}

impl AcpConnection {
    /// Create a fresh server id for `agent`, send `initialize` (which spawns the agent), start the SSE reader.
    /// Returns the connection and the initialize result. Default deadline [`OPEN_TIMEOUT`].
    pub async fn open(
        server: Arc<AgentServer>,
        agent: &str,
        init_params: Value,
        call: &Call,
    ) -> Result<(AcpConnection, Value)> {
        call.run(
            "connecting to the agent",
            Some(OPEN_TIMEOUT),
            AcpConnection::open_now(server, agent, init_params),
        )
        .await
    }

    async fn open_now(
        server: Arc<AgentServer>,
        agent: &str,
        init_params: Value,
    ) -> Result<(AcpConnection, Value)> {
        super::validate::name("agent", agent)?;
        let server_id = format!("sdk-{agent}-{}", uuid::Uuid::new_v4().simple());
        let shared = Arc::new(Shared {
            server,
            server_id,
            agent: agent.to_string(),
            next_id: AtomicI64::new(1),
            pending: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            last_event_id: AtomicU64::new(0),
            exited: watch::channel(None).0,
            closed: CancellationToken::new(),
            permissions: Mutex::new(HashMap::new()),
        });
        let conn = AcpConnection { shared };
        let id = conn.shared.next_id.fetch_add(1, Ordering::SeqCst);
        let body =
            json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": init_params});
        let path = format!("{}?agent={}", conn.path(), encode_segment(agent));
        let res = conn
            .shared
            .server
            .request(Method::POST, &path, Some(&body))
            .await?;
        if res.status != 200 {
            let mut e = status_error("initialize", &res);
            if res.status == 400
                && e.props.get("problemType").and_then(|v| v.as_str()) == Some("unsupported_agent")
            {
                e.code = ErrorCode::InvalidArgument;
            }
            if res.status == 502 {
                e.code = ErrorCode::AgentExited;
                e.message = format!("the agent {agent:?} could not be started: {}", e.message);
            }
            return Err(e);
        }
        let result = response_result(res.json()?)?;
        // Return only once the SSE stream is live: everything from here on is then seen live, and everything
        // before is in the server's replay ring (read on connect).
        let (ready_tx, ready_rx) = oneshot::channel();
        let reader = conn.shared.clone();
        tokio::spawn(async move { read_sse(reader, Some(ready_tx)).await });
        match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(())) => Ok((conn, result)),
            _ => {
                conn.close().await;
                Err(Error::new(
                    ErrorCode::AgentUnavailable,
                    "the agent server's event stream did not open",
                ))
            }
        }
    }

    fn path(&self) -> String {
        format!("/v1/acp/{}", encode_segment(&self.shared.server_id))
    }

    pub fn server_id(&self) -> &str {
        &self.shared.server_id
    }

    pub fn agent(&self) -> &str {
        &self.shared.agent
    }

    pub fn last_event_id(&self) -> u64 {
        self.shared.last_event_id.load(Ordering::SeqCst)
    }

    pub fn exit(&self) -> Option<AgentExit> {
        self.shared.exited.borrow().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    fn check_open(&self) -> Result<()> {
        if let Some(x) = self.exit() {
            return Err(exited_error(&x));
        }
        if self.is_closed() {
            return Err(Error::closed("the ACP connection"));
        }
        Ok(())
    }

    /// Subscribe to everything that arrives from now on.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        if let Ok(mut s) = self.shared.subscribers.lock() {
            s.push(Subscriber {
                tx,
                lagged: lagged.clone(),
            });
        }
        Subscription { rx, lagged }
    }

    /// A new request id.
    pub fn next_id(&self) -> Value {
        json!(self.shared.next_id.fetch_add(1, Ordering::SeqCst))
    }

    /// Send a request and wait for its response (from SSE or the POST body, whichever comes first). Default
    /// deadline [`REQUEST_TIMEOUT`].
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        id: Option<Value>,
        call: &Call,
    ) -> Result<Value> {
        let deadline = call.timeout_or(Some(REQUEST_TIMEOUT));
        self.request_within(method, params, id, deadline, &call.cancel)
            .await
    }

    /// [`AcpConnection::request`] with an explicit deadline (`None`: none at all, as a turn's prompt needs).
    pub(crate) async fn request_within(
        &self,
        method: &str,
        params: Value,
        id: Option<Value>,
        deadline: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<Value> {
        self.check_open()?;
        let id = id.unwrap_or_else(|| self.next_id());
        let key = id_key(&id);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.shared.pending.lock() {
            p.insert(key.clone(), tx);
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        // The POST runs on its own: a long turn holds it open, and its answer also arrives on SSE.
        let shared = self.shared.clone();
        let post_key = key.clone();
        let what = method.to_string();
        tokio::spawn(async move {
            let path = format!("/v1/acp/{}", encode_segment(&shared.server_id));
            let outcome = shared
                .server
                .request(Method::POST, &path, Some(&body))
                .await;
            let resolved = match outcome {
                Ok(res) if res.status == 200 => res.json().map(Some),
                Ok(res) => Err(post_error(&shared, &what, &res)),
                Err(e) => Err(e),
            };
            match resolved {
                Ok(Some(envelope)) => resolve(&shared, &post_key, Ok(envelope)),
                Ok(None) => {}
                Err(e) => resolve(&shared, &post_key, Err(e)),
            }
        });
        let mut exited = self.shared.exited.subscribe();
        let wait = async {
            tokio::select! {
                r = rx => match r {
                    Ok(r) => r.and_then(response_result),
                    Err(_) => Err(Error::closed("the ACP connection")),
                },
                _ = exited.wait_for(|x| x.is_some()) => {
                    let x = self.exit().unwrap_or(AgentExit { code: None, success: false });
                    Err(exited_error(&x))
                }
                _ = self.shared.closed.cancelled() => Err(Error::closed("the ACP connection")),
            }
        };
        let r = bounded(&format!("ACP {method}"), deadline, cancel, wait).await;
        if let Ok(mut p) = self.shared.pending.lock() {
            p.remove(&key);
        }
        r
    }

    /// Send a notification (no response expected; the server answers 202).
    pub async fn notify(&self, method: &str, params: Value) -> Result<()> {
        self.check_open()?;
        self.post(
            &json!({"jsonrpc": "2.0", "method": method, "params": params}),
            method,
        )
        .await
    }

    /// Answer an agent→client request (same id, same JSON type).
    pub async fn respond(&self, id: Value, result: Value) -> Result<()> {
        self.check_open()?;
        if let Ok(mut p) = self.shared.permissions.lock() {
            p.remove(&id_key(&id));
        }
        self.post(
            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
            "response",
        )
        .await
    }

    async fn post(&self, body: &Value, what: &str) -> Result<()> {
        let res = self
            .shared
            .server
            .request(Method::POST, &self.path(), Some(body))
            .await?;
        if (200..300).contains(&res.status) {
            Ok(())
        } else {
            Err(post_error(&self.shared, what, &res))
        }
    }

    /// Remember an agent→client permission request, so close/cancel can answer it `cancelled`.
    pub fn track_permission(&self, id: &Value) {
        if let Ok(mut p) = self.shared.permissions.lock() {
            p.insert(id_key(id), id.clone());
        }
    }

    /// Answer every permission request still open with `cancelled`.
    pub async fn cancel_permissions(&self) {
        let ids: Vec<Value> = self
            .shared
            .permissions
            .lock()
            .map(|mut p| p.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        for id in ids {
            let _ = self
                .respond(id, json!({"outcome": {"outcome": "cancelled"}}))
                .await;
        }
    }

    /// Close: answer open permission requests `cancelled`, DELETE the server id (bounded: 0.4.2 hangs it),
    /// end the SSE reader and every subscriber. Idempotent.
    pub async fn close(&self) {
        if self.is_closed() {
            return;
        }
        if self.exit().is_none() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.cancel_permissions()).await;
        }
        let server = self.shared.server.clone();
        let path = self.path();
        let _ =
            tokio::time::timeout(CLOSE_TIMEOUT, server.request(Method::DELETE, &path, None)).await;
        self.shared.closed.cancel();
        fail_pending(&self.shared, || Error::closed("the ACP connection"));
        publish(&self.shared, Feed::Ended(None));
        if let Ok(mut s) = self.shared.subscribers.lock() {
            s.clear();
        }
    }

    /// Read the event log from the server again, after `after` (a second SSE reader; ends at EOF or close).
    pub async fn replay(&self, after: u64) -> Result<mpsc::Receiver<Feed>> {
        self.check_open()?;
        let mut headers = vec![("Accept", "text/event-stream".to_string())];
        if after > 0 {
            headers.push(("Last-Event-ID", after.to_string()));
        }
        let res = self.shared.server.stream(&self.path(), &headers).await?;
        if res.status() != 200 {
            return Err(Error::new(
                ErrorCode::AgentProtocol,
                format!("SSE answered HTTP {}", res.status().as_u16()),
            ));
        }
        let (tx, rx) = mpsc::channel(256);
        let closed = self.shared.closed.clone();
        tokio::spawn(async move {
            let mut body = res.into_body();
            let mut parser = SseParser::new(MAX_SSE_LINE);
            let mut last = after;
            loop {
                let frame = tokio::select! {
                    f = body.frame() => f,
                    _ = closed.cancelled() => break,
                };
                let Some(Ok(frame)) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let Ok(events) = parser.feed(&data) else {
                    break;
                };
                for feed in sequence(events, &mut last, None).0 {
                    if tx.send(feed).await.is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(Feed::Ended(None)).await;
        });
        Ok(rx)
    }
}

/// `ERR_AGENT_EXITED` with `exitCode` and `success`.
/// One item of an [`EventStream`].
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// A message from the server's log, with its SSE event id.
    Message(Arc<AcpEvent>),
    /// Events `from..=to` were lost (the server's replay ring overflowed).
    Gap { from: u64, to: u64 },
}

type OpenFeed = futures::future::BoxFuture<'static, Result<mpsc::Receiver<Feed>>>;

enum StreamState {
    /// The reader, opened by the first `next()`.
    NotStarted(OpenFeed),
    Running(mpsc::Receiver<Feed>),
    Done,
}

/// A connection's messages from the server's log after an event id, then live: a second SSE reader, opened at
/// the first [`EventStream::next`]. Ends when the connection closes or the agent exits.
pub struct EventStream {
    state: tokio::sync::Mutex<StreamState>,
    stop: CancellationToken,
}

impl EventStream {
    fn new(open: OpenFeed) -> EventStream {
        EventStream {
            state: tokio::sync::Mutex::new(StreamState::NotStarted(open)),
            stop: CancellationToken::new(),
        }
    }

    /// The next item; `None` at the end or after [`EventStream::close`]. A failure is reported once, then the
    /// stream is over.
    pub async fn next(&self) -> Result<Option<StreamItem>> {
        let mut st = self.state.lock().await;
        if let StreamState::NotStarted(_) = &*st {
            let StreamState::NotStarted(open) = std::mem::replace(&mut *st, StreamState::Done)
            else {
                unreachable!("matched above")
            };
            *st = StreamState::Running(open.await?);
        }
        let StreamState::Running(rx) = &mut *st else {
            return Ok(None);
        };
        let item = tokio::select! {
            f = rx.recv() => f,
            _ = self.stop.cancelled() => None,
        };
        match item {
            Some(Feed::Event(ev)) => Ok(Some(StreamItem::Message(ev))),
            Some(Feed::Gap { from, to }) => Ok(Some(StreamItem::Gap { from, to })),
            Some(Feed::Ended(e)) => {
                *st = StreamState::Done;
                e.map_or(Ok(None), Err)
            }
            None => {
                *st = StreamState::Done;
                Ok(None)
            }
        }
    }

    /// Stop reading: a `next()` in flight and every later one resolve `None`.
    pub async fn close(&self) {
        self.stop.cancel();
        *self.state.lock().await = StreamState::Done;
    }
}

impl AcpConnection {
    /// The connection's messages from the server's log after `after` (0: from the start), then live.
    pub fn events(&self, after: u64) -> EventStream {
        let conn = self.clone();
        EventStream::new(Box::pin(async move { conn.replay(after).await }))
    }
}

pub fn exited_error(x: &AgentExit) -> Error {
    let mut e = Error::new(
        ErrorCode::AgentExited,
        match x.code {
            Some(c) => format!("the agent process exited with code {c}"),
            None => "the agent process was killed".to_string(),
        },
    )
    .with("success", x.success);
    e = match x.code {
        Some(c) => e.with("exitCode", c),
        None => e.with("exitCode", Value::Null),
    };
    e
}

fn post_error(shared: &Shared, what: &str, res: &super::agent::AgentResponse) -> Error {
    let mut e = status_error(what, res);
    if res.status == 502 {
        if let Some(x) = shared.exited.borrow().clone() {
            return exited_error(&x);
        }
        let body = String::from_utf8_lossy(&res.body).to_ascii_lowercase();
        if body.contains("broken pipe")
            || body.contains("agent stdin")
            || body.contains("agent process")
        {
            e.code = ErrorCode::AgentExited;
        }
    }
    e
}

fn resolve(shared: &Shared, key: &str, r: Result<Value>) {
    let tx = shared.pending.lock().ok().and_then(|mut p| p.remove(key));
    if let Some(tx) = tx {
        let _ = tx.send(r);
    }
}

fn fail_pending(shared: &Shared, e: impl Fn() -> Error) {
    let all: Vec<_> = shared
        .pending
        .lock()
        .map(|mut p| p.drain().collect())
        .unwrap_or_default();
    for (_, tx) in all {
        let _ = tx.send(Err(e()));
    }
}

fn publish(shared: &Shared, feed: Feed) {
    if let Ok(mut subs) = shared.subscribers.lock() {
        subs.retain(|s| match s.tx.try_send(feed.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.lagged.store(true, Ordering::SeqCst);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

/// SSE events → feed items in id order: events already seen (`id <= last`) are dropped, a jump in ids becomes a
/// `Gap`, and `last` advances. Shared by the connection's reader and by replays.
///
/// With `started` (whether this live connection has delivered an event yet, kept up to date here), a jump after
/// the first event of a connection is not reported: the server skips events for a subscriber that lags behind a
/// burst (its SSE stream jumps, e.g. 660 → 774), while its replay ring still holds them. The items before the
/// jump are returned with `true`, and the caller reads again from `last`; a jump at the start of a connection is
/// a real loss (the ring moved on) and is reported.
fn sequence(
    events: Vec<super::sse::SseEvent>,
    last: &mut u64,
    mut started: Option<&mut bool>,
) -> (Vec<Feed>, bool) {
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        let Some(id) = ev.id.as_deref().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if id <= *last {
            continue; // already seen (replayed after a reconnect)
        }
        if id > *last + 1 {
            if started.as_deref() == Some(&true) {
                return (out, true);
            }
            out.push(Feed::Gap {
                from: *last + 1,
                to: id - 1,
            });
        }
        if let Some(s) = started.as_deref_mut() {
            *s = true;
        }
        *last = id;
        let message = serde_json::from_str(&ev.data).unwrap_or(Value::String(ev.data));
        out.push(Feed::Event(Arc::new(AcpEvent {
            event_id: id,
            message,
        })));
    }
    (out, false)
}

fn handle_message(shared: &Shared, ev: Arc<AcpEvent>) {
    let message = &ev.message;
    if is_response(message) {
        resolve(shared, &id_key(&message["id"]), Ok(message.clone()));
    }
    if message.get("method").and_then(|m| m.as_str()) == Some("_adapter/agent_exited") {
        let p = &message["params"];
        let exit = AgentExit {
            code: p["code"].as_i64(),
            success: p["success"].as_bool().unwrap_or(false),
        };
        shared.exited.send_replace(Some(exit.clone()));
        fail_pending(shared, || exited_error(&exit));
    }
    publish(shared, Feed::Event(ev));
}

/// The connection's SSE reader: follows the stream, resumes after drops, reports gaps, ends on close/exit.
async fn read_sse(shared: Arc<Shared>, mut ready: Option<oneshot::Sender<()>>) {
    let path = format!("/v1/acp/{}", encode_segment(&shared.server_id));
    let mut failures = 0u32;
    let mut final_error: Option<Error> = None;
    loop {
        if shared.closed.is_cancelled() || shared.exited.borrow().is_some() {
            break;
        }
        let last = shared.last_event_id.load(Ordering::SeqCst);
        let mut headers = vec![("Accept", "text/event-stream".to_string())];
        if last > 0 {
            headers.push(("Last-Event-ID", last.to_string()));
        }
        let opened = tokio::select! {
            r = shared.server.stream(&path, &headers) => r,
            _ = shared.closed.cancelled() => break,
        };
        match opened {
            Ok(res) if res.status() == 200 => {
                failures = 0;
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                let mut body = res.into_body();
                let mut parser = SseParser::new(MAX_SSE_LINE);
                // Whether this connection has delivered an event yet (a later jump in ids is re-read).
                let mut started = false;
                let mut resync = false;
                while !resync {
                    let frame = tokio::select! {
                        f = body.frame() => f,
                        _ = shared.closed.cancelled() => None,
                    };
                    let Some(Ok(frame)) = frame else { break };
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let events = match parser.feed(&data) {
                        Ok(ev) => ev,
                        Err(_) => break,
                    };
                    let mut last = shared.last_event_id.load(Ordering::SeqCst);
                    let (feeds, jumped) = sequence(events, &mut last, Some(&mut started));
                    resync = jumped;
                    for feed in feeds {
                        match feed {
                            Feed::Event(ev) => {
                                shared.last_event_id.store(ev.event_id, Ordering::SeqCst);
                                handle_message(&shared, ev);
                            }
                            other => publish(&shared, other),
                        }
                    }
                }
                if resync {
                    continue; // at once, with Last-Event-ID: the ring still has what this stream skipped
                }
            }
            Ok(res) => {
                failures += 1;
                if res.status() == 404 {
                    // The server forgot this id (deleted, or the server restarted): nothing to resume.
                    final_error = Some(Error::new(
                        ErrorCode::AgentUnavailable,
                        "the agent server no longer knows this connection",
                    ));
                    break;
                }
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_RECONNECTS {
                    final_error = Some(e);
                    break;
                }
            }
        }
        if shared.closed.is_cancelled() || shared.exited.borrow().is_some() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(150)) => {}
            _ = shared.closed.cancelled() => break,
        }
    }
    if let Some(e) = &final_error {
        let e2 = e.clone();
        fail_pending(&shared, move || e2.clone());
    }
    publish(&shared, Feed::Ended(final_error));
}

/// The JSON the SDK sends as `initialize` params.
pub fn default_init_params() -> Value {
    json!({
        "protocolVersion": 1,
        "clientCapabilities": { "fs": { "readTextFile": false, "writeTextFile": false }, "terminal": false },
        "clientInfo": { "name": "sandboxd", "version": env!("CARGO_PKG_VERSION") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sse::SseEvent;

    fn feed_stream(feeds: Vec<Feed>) -> EventStream {
        let (tx, rx) = mpsc::channel(16);
        for f in feeds {
            tx.try_send(f).unwrap();
        }
        EventStream::new(Box::pin(async move {
            drop(tx);
            Ok(rx)
        }))
    }

    #[tokio::test]
    async fn an_event_stream_hands_out_messages_and_gaps_then_ends() {
        let ev = Arc::new(AcpEvent {
            event_id: 7,
            message: json!({"method": "x"}),
        });
        let s = feed_stream(vec![
            Feed::Event(ev.clone()),
            Feed::Gap { from: 8, to: 9 },
            Feed::Ended(None),
            Feed::Event(ev),
        ]);
        assert!(matches!(s.next().await, Ok(Some(StreamItem::Message(m))) if m.event_id == 7));
        assert!(matches!(
            s.next().await,
            Ok(Some(StreamItem::Gap { from: 8, to: 9 }))
        ));
        assert!(matches!(s.next().await, Ok(None)));
        assert!(matches!(s.next().await, Ok(None)), "nothing after the end");
    }

    #[tokio::test]
    async fn an_event_stream_reports_a_failure_once() {
        let s = feed_stream(vec![Feed::Ended(Some(Error::closed("x")))]);
        assert!(s.next().await.is_err());
        assert!(matches!(s.next().await, Ok(None)));
        let failing = EventStream::new(Box::pin(async { Err(Error::closed("y")) }));
        assert!(failing.next().await.is_err());
        assert!(matches!(failing.next().await, Ok(None)));
    }

    #[tokio::test]
    async fn a_closed_event_stream_ends_a_pending_next() {
        let (tx, rx) = mpsc::channel::<Feed>(1);
        let s = Arc::new(EventStream::new(Box::pin(async move { Ok(rx) })));
        let reader = s.clone();
        let pending = tokio::spawn(async move { reader.next().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.close().await;
        assert!(matches!(pending.await.unwrap(), Ok(None)));
        let _ = tx.try_send(Feed::Gap { from: 1, to: 1 });
        assert!(matches!(s.next().await, Ok(None)), "nothing after close");
    }

    fn evs(ids: &[u64]) -> Vec<SseEvent> {
        ids.iter()
            .map(|i| SseEvent {
                id: Some(i.to_string()),
                event: "message".into(),
                data: format!("{{\"n\":{i}}}"),
            })
            .collect()
    }

    fn shape(feeds: &[Feed]) -> Vec<String> {
        feeds
            .iter()
            .map(|f| match f {
                Feed::Event(e) => e.event_id.to_string(),
                Feed::Gap { from, to } => format!("gap {from}-{to}"),
                Feed::Ended(_) => "end".into(),
            })
            .collect()
    }

    #[test]
    fn replays_report_jumps_and_skip_what_was_seen() {
        let mut last = 2;
        let (feeds, resync) = sequence(evs(&[1, 2, 3, 7, 8]), &mut last, None);
        assert_eq!(shape(&feeds), ["3", "gap 4-6", "7", "8"]);
        assert!(!resync);
        assert_eq!(last, 8);
    }

    #[test]
    fn a_live_stream_that_jumps_is_read_again_from_the_last_event() {
        // Mid-stream: stop before the jump, so the caller reconnects with Last-Event-ID 4.
        let (mut last, mut started) = (2, false);
        let (feeds, resync) = sequence(evs(&[3, 4, 9, 10]), &mut last, Some(&mut started));
        assert_eq!(
            (shape(&feeds), resync, last),
            (vec!["3".into(), "4".into()], true, 4)
        );
        // The new connection starts past `last + 1`: the ring lost those, a real gap.
        let mut started = false;
        let (feeds, resync) = sequence(evs(&[7, 8]), &mut last, Some(&mut started));
        assert_eq!(shape(&feeds), ["gap 5-6", "7", "8"]);
        assert!(!resync && started);
        // A jump in a later frame of the same connection is re-read again.
        let (feeds, resync) = sequence(evs(&[9, 11]), &mut last, Some(&mut started));
        assert_eq!((shape(&feeds), resync, last), (vec!["9".into()], true, 9));
    }
}
