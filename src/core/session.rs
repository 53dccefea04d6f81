//! Agent sessions: one ACP connection per session, `session/new`, prompts whose turn streams typed events,
//! cancel, permissions, close.

use super::acp::{default_init_params, AcpConnection, AcpEvent, Feed, Subscription};
use super::agent::AgentServer;
use super::call::Call;
use super::error::{Error, ErrorCode, Result};
use agent_client_protocol_schema::v1::{ContentBlock, SessionNotification, SessionUpdate};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Default deadline for creating a session (opening its connection, then `session/new`).
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default deadline for [`AgentSession::start`]: starting the server, installing the agent, creating the session.
pub const START_SESSION_TIMEOUT: Duration = Duration::from_secs(
    super::agent::START_TIMEOUT.as_secs()
        + super::agent::INSTALL_TIMEOUT.as_secs()
        + CREATE_TIMEOUT.as_secs(),
);

/// What [`AgentSession::start`] needs: the agent, and optionally where and with what.
#[derive(Debug, Clone, Default)]
pub struct StartSession {
    /// Agent id known to sandbox-agent (`claude`, `codex`, …).
    pub agent: String,
    /// Absolute working directory; default: the server's [`AgentServer::workdir`] (a sandbox's workspace).
    pub cwd: Option<String>,
    /// ACP `mcpServers` (default `[]`).
    pub mcp_servers: Option<Value>,
    /// Environment for the server when this call starts it (API keys); agents inherit it.
    pub env: Vec<(String, String)>,
}

/// What [`AgentSession::start`] had to do on the way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartReport {
    /// The server was not answering and this call started it (installing the binary first when missing).
    pub server_started: bool,
    /// The server listed the agent as not installed and this call installed it.
    pub agent_installed: bool,
}

/// One event of a turn, typed from ACP `session/update` (schema: agent-client-protocol-schema).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    Text {
        event_id: u64,
        text: String,
    },
    Thought {
        event_id: u64,
        text: String,
    },
    /// `tool_call`: the update object as sent (camelCase ACP fields).
    ToolCall {
        event_id: u64,
        update: Value,
    },
    ToolCallUpdate {
        event_id: u64,
        update: Value,
    },
    Plan {
        event_id: u64,
        update: Value,
    },
    /// `session/request_permission`: answer with [`AgentSession::respond_permission`].
    PermissionRequest {
        event_id: u64,
        id: Value,
        params: Value,
    },
    /// Anything else (other updates, unknown methods, other sessions' messages are filtered out).
    Raw {
        event_id: u64,
        message: Value,
    },
    /// Events lost to the server's replay ring.
    Gap {
        from: u64,
        to: u64,
    },
    /// The turn's end.
    Stop {
        event_id: u64,
        stop_reason: String,
    },
}

/// Classify one inbound message for session `sid`. `None`: not this session's business.
pub fn classify(sid: &str, ev: &AcpEvent) -> Option<TurnEvent> {
    let m = &ev.message;
    let event_id = ev.event_id;
    let method = m.get("method").and_then(|v| v.as_str());
    let params_sid = m["params"]["sessionId"].as_str();
    match method {
        Some("session/update") => {
            if params_sid != Some(sid) {
                return None;
            }
            let raw = || {
                Some(TurnEvent::Raw {
                    event_id,
                    message: m.clone(),
                })
            };
            let Ok(n) = serde_json::from_value::<SessionNotification>(m["params"].clone()) else {
                return raw();
            };
            let update = m["params"]["update"].clone();
            let text = |block: &ContentBlock| match block {
                ContentBlock::Text(t) => Some(t.text.clone()),
                _ => None,
            };
            match n.update {
                SessionUpdate::AgentMessageChunk(c) => match text(&c.content) {
                    Some(text) => Some(TurnEvent::Text { event_id, text }),
                    None => raw(),
                },
                SessionUpdate::AgentThoughtChunk(c) => match text(&c.content) {
                    Some(text) => Some(TurnEvent::Thought { event_id, text }),
                    None => raw(),
                },
                SessionUpdate::ToolCall(_) => Some(TurnEvent::ToolCall { event_id, update }),
                SessionUpdate::ToolCallUpdate(_) => {
                    Some(TurnEvent::ToolCallUpdate { event_id, update })
                }
                SessionUpdate::Plan(_) => Some(TurnEvent::Plan { event_id, update }),
                _ => raw(),
            }
        }
        Some("session/request_permission") if m.get("id").is_some() => {
            if params_sid.is_some() && params_sid != Some(sid) {
                return None;
            }
            Some(TurnEvent::PermissionRequest {
                event_id,
                id: m["id"].clone(),
                params: m["params"].clone(),
            })
        }
        Some(_) => {
            if params_sid.is_some() && params_sid != Some(sid) {
                return None;
            }
            Some(TurnEvent::Raw {
                event_id,
                message: m.clone(),
            })
        }
        None => None, // responses are matched by id, not shown as events
    }
}

/// A turn collected by [`AgentSession::send`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnSummary {
    /// Every `Text` chunk, joined.
    pub text: String,
    /// The `Stop` event's reason (empty until it arrived).
    pub stop_reason: String,
    /// Every event of the turn, in order, `Stop` last.
    pub events: Vec<TurnEvent>,
}

impl TurnSummary {
    /// Add the turn's next event; true once it was the `Stop` that ends the turn.
    pub fn add(&mut self, e: TurnEvent) -> bool {
        let stop = match &e {
            TurnEvent::Text { text, .. } => {
                self.text.push_str(text);
                false
            }
            TurnEvent::Stop { stop_reason, .. } => {
                self.stop_reason = stop_reason.clone();
                true
            }
            _ => false,
        };
        self.events.push(e);
        stop
    }
}

/// A session with an agent.
#[derive(Clone)]
pub struct AgentSession {
    conn: AcpConnection,
    session_id: String,
    agent: String,
    init: Value,
}

/// How to answer a permission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionAnswer {
    Select(String),
    Cancel,
}

impl AgentSession {
    /// Open a connection for `agent` and create a session in `cwd`. The call's deadline (default
    /// [`CREATE_TIMEOUT`]) bounds opening the connection and creating the session, each.
    pub async fn create(
        server: Arc<AgentServer>,
        agent: &str,
        cwd: &str,
        mcp_servers: Value,
        call: &Call,
    ) -> Result<AgentSession> {
        let deadline = call.timeout_or(Some(CREATE_TIMEOUT));
        let cancel = &call.cancel;
        if !cwd.starts_with('/') {
            return Err(
                Error::invalid("cwd must be an absolute path inside the container")
                    .with("argument", "cwd"),
            );
        }
        let opening = Call::new(deadline, cancel.clone());
        let (conn, init) =
            AcpConnection::open(server, agent, default_init_params(), &opening).await?;
        let created = conn
            .request_within(
                "session/new",
                json!({"cwd": cwd, "mcpServers": mcp_servers}),
                None,
                deadline,
                cancel,
            )
            .await;
        let result = match created {
            Ok(r) => r,
            Err(e) => {
                conn.close().await;
                return Err(e);
            }
        };
        let Some(session_id) = result["sessionId"].as_str().map(str::to_string) else {
            conn.close().await;
            return Err(Error::new(
                ErrorCode::AgentProtocol,
                "session/new returned no sessionId",
            )
            .with("result", result));
        };
        Ok(AgentSession {
            conn,
            session_id,
            agent: agent.to_string(),
            init,
        })
    }

    /// From a running sandbox to a ready session in one call: start the server when it does not answer (copying
    /// the binary in when the target has none), install the agent when the server lists it as not installed, then
    /// create the session. The call's deadline (default [`START_SESSION_TIMEOUT`]) bounds the whole sequence.
    pub async fn start(
        server: Arc<AgentServer>,
        opts: StartSession,
        call: &Call,
    ) -> Result<(AgentSession, StartReport)> {
        let cwd = match opts.cwd.or_else(|| server.workdir().map(str::to_string)) {
            Some(c) => c,
            None => {
                return Err(Error::invalid(
                    "cwd is required: this target has no workspace to default to",
                )
                .with("argument", "cwd"))
            }
        };
        super::validate::name("agent", &opts.agent)?;
        // Each step keeps its own default; the whole sequence is bounded by the caller's deadline.
        let steps = async {
            let server_started = server.ensure_server(&opts.env, call).await?;
            let listed = server.list_agents(call).await?;
            let known = listed["agents"]
                .as_array()
                .and_then(|all| all.iter().find(|a| a["id"] == opts.agent.as_str()));
            let agent_installed = match known {
                Some(a) if a["installed"] == false => {
                    server.install_agent(&opts.agent, call).await?;
                    true
                }
                _ => false,
            };
            let mcp = opts.mcp_servers.unwrap_or_else(|| json!([]));
            let session =
                AgentSession::create(server.clone(), &opts.agent, &cwd, mcp, call).await?;
            Ok((
                session,
                StartReport {
                    server_started,
                    agent_installed,
                },
            ))
        };
        call.run("startSession", Some(START_SESSION_TIMEOUT), steps)
            .await
    }

    pub fn connection(&self) -> &AcpConnection {
        &self.conn
    }

    /// The agent's own session id.
    pub fn agent_session_id(&self) -> &str {
        &self.session_id
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The agent's `initialize` result (capabilities, agentInfo).
    pub fn init_result(&self) -> &Value {
        &self.init
    }

    /// Start a turn. Events arrive on the returned [`Turn`]; it ends after the `Stop` event.
    pub fn prompt(&self, blocks: Value) -> Result<Turn> {
        if self.conn.is_closed() {
            return Err(Error::closed("the session"));
        }
        if let Some(x) = self.conn.exit() {
            return Err(super::acp::exited_error(&x));
        }
        // Subscribe now, so nothing sent after this point can be missed; the request itself is sent by the
        // first `next()` (it must run on the runtime).
        let sub = self.conn.subscribe();
        let id = self.conn.next_id();
        Ok(Turn {
            sub,
            sid: self.session_id.clone(),
            prompt_id: id,
            conn: self.conn.clone(),
            failed: Arc::new(std::sync::Mutex::new(None)),
            unsent: Some(json!({"sessionId": self.session_id, "prompt": blocks})),
            request: None,
            done: false,
        })
    }

    /// Send a prompt and collect its turn (no default deadline: a turn takes as long as it takes). Permission
    /// requests in it are answered `cancelled`. When the call fails (its deadline and signal included) while
    /// the connection is still open, the turn is cancelled.
    pub async fn send(&self, blocks: Value, call: &Call) -> Result<TurnSummary> {
        let mut turn = self.prompt(blocks)?;
        let collect = async {
            let mut summary = TurnSummary::default();
            loop {
                let Some(e) = turn.next().await? else {
                    return Err(Error::closed("the session"));
                };
                if let TurnEvent::PermissionRequest { id, .. } = &e {
                    let _ = self
                        .respond_permission(id.clone(), PermissionAnswer::Cancel)
                        .await;
                }
                if summary.add(e) {
                    return Ok(summary);
                }
            }
        };
        let r = call.run("the prompt turn", None, collect).await;
        if r.is_err() && self.conn.exit().is_none() && !self.conn.is_closed() {
            let _ = self.cancel().await;
        }
        r
    }

    /// Answer a permission request (`respond(optionId)` / `respond('cancel')`).
    pub async fn respond_permission(&self, id: Value, answer: PermissionAnswer) -> Result<()> {
        let outcome = match answer {
            PermissionAnswer::Select(o) => {
                json!({"outcome": {"outcome": "selected", "optionId": o}})
            }
            PermissionAnswer::Cancel => json!({"outcome": {"outcome": "cancelled"}}),
        };
        self.conn.respond(id, outcome).await
    }

    /// Cancel the running turn: `session/cancel`, and every open permission request answered `cancelled`.
    pub async fn cancel(&self) -> Result<()> {
        self.conn.cancel_permissions().await;
        self.conn
            .notify("session/cancel", json!({"sessionId": self.session_id}))
            .await
    }

    /// Close the session (and its agent process).
    pub async fn close(&self) {
        self.conn.close().await;
    }
}

/// A running turn.
pub struct Turn {
    sub: Subscription,
    sid: String,
    prompt_id: Value,
    conn: AcpConnection,
    failed: Arc<std::sync::Mutex<Option<Error>>>,
    /// The `session/prompt` params, until the first `next()` sends them.
    unsent: Option<Value>,
    request: Option<tokio::task::JoinHandle<()>>,
    done: bool,
}

impl Turn {
    /// Whether the turn has ended.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next event; `Ok(None)` after `Stop`.
    pub async fn next(&mut self) -> Result<Option<TurnEvent>> {
        if self.done {
            return Ok(None);
        }
        if let Some(params) = self.unsent.take() {
            // The request's answer also arrives on SSE, where the turn ends; the request future only reports
            // failures (HTTP errors, agent exit) — with no deadline: a turn takes as long as it takes.
            let conn = self.conn.clone();
            let failed = self.failed.clone();
            let id = self.prompt_id.clone();
            self.request = Some(tokio::spawn(async move {
                let never = CancellationToken::new();
                if let Err(e) = conn
                    .request_within("session/prompt", params, Some(id), None, &never)
                    .await
                {
                    if let Ok(mut f) = failed.lock() {
                        *f = Some(e);
                    }
                }
            }));
        }
        loop {
            let feed = tokio::select! {
                f = self.sub.recv() => f,
                _ = async {
                    // Poll the request task: an HTTP failure or agent exit ends the turn with its error.
                    match self.request.as_mut() {
                        Some(h) => { let _ = h.await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    self.request = None;
                    if let Some(e) = self.failed.lock().ok().and_then(|mut f| f.take()) {
                        self.done = true;
                        return Err(e);
                    }
                    continue;
                }
            };
            match feed {
                Feed::Event(ev) => {
                    let m = &ev.message;
                    if m.get("method").is_none() && m.get("id") == Some(&self.prompt_id) {
                        self.done = true;
                        return match super::acp::response_result(m.clone()) {
                            Ok(r) => Ok(Some(TurnEvent::Stop {
                                event_id: ev.event_id,
                                stop_reason: r["stopReason"]
                                    .as_str()
                                    .unwrap_or("end_turn")
                                    .to_string(),
                            })),
                            Err(e) => Err(e),
                        };
                    }
                    if let Some(te) = classify(&self.sid, &ev) {
                        if let TurnEvent::PermissionRequest { id, .. } = &te {
                            self.conn.track_permission(id);
                        }
                        return Ok(Some(te));
                    }
                }
                Feed::Gap { from, to } => return Ok(Some(TurnEvent::Gap { from, to })),
                Feed::Ended(e) => {
                    self.done = true;
                    if let Some(x) = self.conn.exit() {
                        return Err(super::acp::exited_error(&x));
                    }
                    return Err(e.unwrap_or_else(|| Error::closed("the session")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(message: Value) -> AcpEvent {
        AcpEvent {
            event_id: 5,
            message,
        }
    }

    #[test]
    fn classifies_updates() {
        let chunk = json!({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"content":{"text":"Hello","type":"text"},"sessionUpdate":"agent_message_chunk"}}});
        assert_eq!(
            classify("s1", &ev(chunk.clone())),
            Some(TurnEvent::Text {
                event_id: 5,
                text: "Hello".into()
            })
        );
        assert_eq!(classify("other", &ev(chunk)), None);
        let thought = json!({"method":"session/update","params":{"sessionId":"s1","update":{"content":{"text":"hm","type":"text"},"sessionUpdate":"agent_thought_chunk"}}});
        assert!(matches!(
            classify("s1", &ev(thought)),
            Some(TurnEvent::Thought { .. })
        ));
        let tool = json!({"method":"session/update","params":{"sessionId":"s1","update":{"kind":"execute","rawInput":{"command":"ls"},"sessionUpdate":"tool_call","status":"in_progress","title":"List files","toolCallId":"call-0"}}});
        match classify("s1", &ev(tool)) {
            Some(TurnEvent::ToolCall { update, .. }) => assert_eq!(update["toolCallId"], "call-0"),
            other => panic!("{other:?}"),
        }
        let upd = json!({"method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"tool_call_update","status":"completed","toolCallId":"call-0"}}});
        assert!(matches!(
            classify("s1", &ev(upd)),
            Some(TurnEvent::ToolCallUpdate { .. })
        ));
        let plan = json!({"method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"plan","entries":[{"content":"x","priority":"high","status":"pending"}]}}});
        assert!(matches!(
            classify("s1", &ev(plan)),
            Some(TurnEvent::Plan { .. })
        ));
        let unknown = json!({"method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"brand_new_thing","x":1}}});
        assert!(matches!(
            classify("s1", &ev(unknown)),
            Some(TurnEvent::Raw { .. })
        ));
        let perm = json!({"id":"perm-1","method":"session/request_permission","params":{"sessionId":"s1","options":[]}});
        assert!(matches!(
            classify("s1", &ev(perm)),
            Some(TurnEvent::PermissionRequest { .. })
        ));
        let response = json!({"id":3,"jsonrpc":"2.0","result":{"stopReason":"end_turn"}});
        assert_eq!(classify("s1", &ev(response)), None);
    }

    #[test]
    fn a_summary_joins_the_text_and_ends_at_stop() {
        let mut s = TurnSummary::default();
        let text = |event_id, t: &str| TurnEvent::Text {
            event_id,
            text: t.into(),
        };
        assert!(!s.add(text(1, "Hel")));
        assert!(!s.add(TurnEvent::Thought {
            event_id: 2,
            text: "not text".into()
        }));
        assert!(!s.add(TurnEvent::Gap { from: 3, to: 4 }));
        assert!(!s.add(text(5, "lo")));
        assert!(s.add(TurnEvent::Stop {
            event_id: 6,
            stop_reason: "end_turn".into()
        }));
        assert_eq!(s.text, "Hello");
        assert_eq!(s.stop_reason, "end_turn");
        assert_eq!(s.events.len(), 5);
        assert!(matches!(s.events.last(), Some(TurnEvent::Stop { .. })));
    }
}
