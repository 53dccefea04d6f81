//! JS classes for sandbox-agent: `SandboxAgent`, `AgentSession`, `TurnStream`, `AcpClient`, `AcpEventStream`.

use super::call::{
    promise, promise_map, read_options, run, run_with, CallOptions, Linked, Pending,
};
use super::container::Container;
use crate::core::acp::{default_init_params, AcpConnection, Feed};
use crate::core::agent::AgentServer;
use crate::core::session::{AgentSession as CoreSession, PermissionAnswer, Turn, TurnEvent};
use crate::core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi::Env;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Options for `new SandboxAgent()`.
#[napi(object)]
pub struct SandboxAgentOptions {
    /// The server's port inside the container (default 2468).
    pub port: Option<u16>,
    /// Bearer token, when the server runs with `--token`.
    pub token: Option<String>,
}

/// The sandbox-agent server inside a container, reached through `docker exec` tunnels (no port needed).
#[napi]
pub struct SandboxAgent {
    server: Arc<AgentServer>,
}

/// Options for `ensureServer()`.
#[napi(object, object_to_js = false)]
pub struct EnsureServerOptions<'a> {
    /// Environment for the server when this call starts it; agent processes inherit it (put API keys here:
    /// they go to the container through this call only and are never logged).
    #[napi(ts_type = "Record<string, string>")]
    pub env: Option<Object<'a>>,
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
    /// How long to wait for health after starting it (default 15 s).
    pub timeout_ms: Option<f64>,
}

/// What `ensureServer()` did.
#[napi(object)]
pub struct EnsureServerResult {
    /// True when this call started the server (it was not answering).
    pub started: bool,
}

/// Options for `createSession()`.
#[napi(object, object_to_js = false)]
pub struct CreateSessionOptions<'a> {
    /// Agent id known to sandbox-agent (`claude`, `codex`, `mock`, …).
    pub agent: String,
    /// Absolute working directory inside the container.
    pub cwd: String,
    /// ACP `mcpServers` (default `[]`).
    #[napi(ts_type = "unknown[]")]
    pub mcp_servers: Option<Value>,
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
    /// Deadline for opening the connection and creating the session (default 60 s).
    pub timeout_ms: Option<f64>,
}

/// Options for `connect()` (a raw ACP connection).
#[napi(object, object_to_js = false)]
pub struct ConnectAgentOptions<'a> {
    pub agent: String,
    /// `initialize` params (default: protocol 1, no fs/terminal capabilities).
    #[napi(ts_type = "Record<string, unknown>")]
    pub init_params: Option<Value>,
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
    pub timeout_ms: Option<f64>,
}

const DEFAULT_OPEN: Duration = Duration::from_secs(60);

#[napi]
impl SandboxAgent {
    /// `container`: where `sandbox-agent` runs (it needs `nc`, `socat`, `node` or `python3` as a relay).
    #[napi(catch_unwind, constructor)]
    pub fn new(container: &Container, options: Option<SandboxAgentOptions>) -> Self {
        let (port, token) = match options {
            Some(o) => (o.port, o.token),
            None => (None, None),
        };
        SandboxAgent {
            server: Arc::new(AgentServer::new(container.inner.clone(), port, token)),
        }
    }

    /// Probe health; when the server is down, start `sandbox-agent server --no-telemetry` detached (with a long
    /// `SANDBOX_AGENT_ACP_REQUEST_TIMEOUT_MS`) and wait until it is healthy (default 15 s).
    #[napi(catch_unwind, ts_return_type = "Promise<EnsureServerResult>")]
    pub fn ensure_server(
        &self,
        env: Env,
        options: Option<EnsureServerOptions>,
    ) -> Result<Pending<EnsureServerResult>> {
        let s = self.server.clone();
        let vars = match super::container::read_env(options.as_ref().and_then(|o| o.env.as_ref())) {
            Ok(v) => v,
            Err(e) => return super::call::rejected(&env, e),
        };
        run(
            &env,
            options.as_ref().and_then(|o| o.signal.as_ref()),
            options.as_ref().and_then(|o| o.timeout_ms),
            move |t, d| async move {
                let started = s
                    .ensure_server(d.unwrap_or(Duration::from_secs(15)), &vars, &t)
                    .await?;
                Ok(EnsureServerResult { started })
            },
        )
    }

    /// `GET /v1/health`.
    #[napi(catch_unwind, ts_return_type = "Promise<{ status: string }>")]
    pub fn health(&self, env: Env, options: Option<CallOptions>) -> Result<Pending<Value>> {
        let s = self.server.clone();
        run_with(&env, options.as_ref(), move |t, d| async move {
            crate::core::http::bounded(
                "agent health",
                Some(d.unwrap_or(DEFAULT_OPEN)),
                &t,
                s.health(),
            )
            .await
        })
    }

    /// `GET /v1/agents`: the agents the server knows, and whether each is installed.
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<{ agents: Array<{ id: string; installed: boolean } & Record<string, unknown>> }>"
    )]
    pub fn list_agents(&self, env: Env, options: Option<CallOptions>) -> Result<Pending<Value>> {
        let s = self.server.clone();
        run_with(&env, options.as_ref(), move |t, d| async move {
            crate::core::http::bounded(
                "listAgents",
                Some(d.unwrap_or(DEFAULT_OPEN)),
                &t,
                s.list_agents(),
            )
            .await
        })
    }

    /// `POST /v1/agents/{name}/install` (not the CLI's broken `api agents install`).
    #[napi(catch_unwind, ts_return_type = "Promise<Record<string, unknown>>")]
    pub fn install_agent(
        &self,
        env: Env,
        name: String,
        options: Option<CallOptions>,
    ) -> Result<Pending<Value>> {
        let s = self.server.clone();
        run_with(&env, options.as_ref(), move |t, d| async move {
            crate::core::http::bounded(
                "installAgent",
                Some(d.unwrap_or(Duration::from_secs(600))),
                &t,
                s.install_agent(&name),
            )
            .await
        })
    }

    /// Create an ACP session (its own connection and agent process) in `cwd`.
    #[napi(catch_unwind, ts_return_type = "Promise<AgentSession>")]
    pub fn create_session(
        &self,
        env: Env,
        options: CreateSessionOptions,
    ) -> Result<Pending<AgentSession>> {
        let s = self.server.clone();
        let agent = options.agent.clone();
        let cwd = options.cwd.clone();
        let mcp = options.mcp_servers.clone().unwrap_or_else(|| json!([]));
        run(
            &env,
            options.signal.as_ref(),
            options.timeout_ms,
            move |t, d| async move {
                let inner =
                    CoreSession::create(s, &agent, &cwd, mcp, Some(d.unwrap_or(DEFAULT_OPEN)), &t)
                        .await?;
                Ok(AgentSession { inner })
            },
        )
    }

    /// A raw ACP connection (JSON-RPC over the server's HTTP transport), for protocol-level work.
    #[napi(catch_unwind, ts_return_type = "Promise<AcpClient>")]
    pub fn connect(&self, env: Env, options: ConnectAgentOptions) -> Result<Pending<AcpClient>> {
        let s = self.server.clone();
        let agent = options.agent.clone();
        let init = options
            .init_params
            .clone()
            .unwrap_or_else(default_init_params);
        run(
            &env,
            options.signal.as_ref(),
            options.timeout_ms,
            move |t, d| async move {
                let (conn, init_result) = crate::core::http::bounded(
                    "connecting to the agent",
                    Some(d.unwrap_or(DEFAULT_OPEN)),
                    &t,
                    AcpConnection::open(s, &agent, init),
                )
                .await?;
                Ok(AcpClient { conn, init_result })
            },
        )
    }
}

/// A session with an agent. `prompt()` streams a turn's events; `send()` collects them.
#[napi]
pub struct AgentSession {
    inner: CoreSession,
}

/// Options for `prompt()` / `send()`.
#[napi(object, object_to_js = false)]
pub struct PromptOptions<'a> {
    /// Aborting cancels the turn (`session/cancel`) and rejects the iterator with `ABORT_ERR`.
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
    /// `send()` only: deadline for the whole turn; past it the turn is cancelled and `send` rejects `ERR_TIMEOUT`.
    pub timeout_ms: Option<f64>,
}

/// Options for `events()`.
#[napi(object)]
pub struct EventsOptions {
    /// Resume after this SSE event id (`Last-Event-ID`).
    pub after: Option<u32>,
}

fn blocks(input: Either<String, Vec<Value>>) -> Value {
    match input {
        Either::A(text) => json!([{"type": "text", "text": text}]),
        Either::B(blocks) => Value::Array(blocks),
    }
}

/// A turn event as plain JSON (the permission `respond` function is added on the JS thread).
fn event_json(e: &TurnEvent) -> Value {
    let with = |base: Value, update: &Value| {
        let mut o = update.as_object().cloned().unwrap_or_default();
        o.remove("sessionUpdate");
        if let Value::Object(b) = base {
            o.extend(b);
        }
        Value::Object(o)
    };
    match e {
        TurnEvent::Text { event_id, text } => {
            json!({"type": "text", "eventId": event_id, "text": text})
        }
        TurnEvent::Thought { event_id, text } => {
            json!({"type": "thought", "eventId": event_id, "text": text})
        }
        TurnEvent::ToolCall { event_id, update } => {
            with(json!({"type": "tool_call", "eventId": event_id}), update)
        }
        TurnEvent::ToolCallUpdate { event_id, update } => with(
            json!({"type": "tool_call_update", "eventId": event_id}),
            update,
        ),
        TurnEvent::Plan { event_id, update } => {
            with(json!({"type": "plan", "eventId": event_id}), update)
        }
        TurnEvent::PermissionRequest {
            event_id,
            id,
            params,
        } => json!({
            "type": "permission_request", "eventId": event_id, "id": id,
            "toolCall": params.get("toolCall").cloned().unwrap_or(Value::Null),
            "options": params.get("options").cloned().unwrap_or(json!([])),
        }),
        TurnEvent::Raw { event_id, message } => {
            json!({"type": "raw", "eventId": event_id, "message": message})
        }
        TurnEvent::Gap { from, to } => json!({"type": "gap", "from": from, "to": to}),
        TurnEvent::Stop {
            event_id,
            stop_reason,
        } => {
            json!({"type": "stop", "eventId": event_id, "stopReason": stop_reason})
        }
    }
}

/// Convert an event for JS; permission requests get `respond(optionId | 'cancel')`.
fn event_js(env: &Env, session: &CoreSession, e: &TurnEvent) -> Result<ObjectRef<false>> {
    let v = event_json(e);
    let mut obj: Object = env.to_js_value(&v)?.coerce_to_object()?;
    if let TurnEvent::PermissionRequest { id, .. } = e {
        let s = session.clone();
        let id = id.clone();
        let respond =
            env.create_function_from_closure::<String, Pending<()>, _>("respond", move |ctx| {
                let choice: String = ctx.first_arg()?;
                let s = s.clone();
                let id = id.clone();
                let answer = if choice == "cancel" {
                    PermissionAnswer::Cancel
                } else {
                    PermissionAnswer::Select(choice)
                };
                promise(ctx.env, None, async move {
                    s.respond_permission(id, answer).await
                })
            })?;
        obj.set_named_property("respond", respond)?;
    }
    obj.create_ref::<false>()
}

/// A turn event. `type` says which fields are present.
#[napi(object)]
#[allow(dead_code)] // built field by field on the JS thread; the struct exists for index.d.ts
pub struct AgentEvent {
    /// `text` | `thought` | `tool_call` | `tool_call_update` | `plan` | `permission_request` | `raw` | `gap` | `stop`
    #[napi(
        ts_type = "'text' | 'thought' | 'tool_call' | 'tool_call_update' | 'plan' | 'permission_request' | 'raw' | 'gap' | 'stop'"
    )]
    pub r#type: String,
    /// The SSE event id (absent on `gap`).
    pub event_id: Option<u32>,
    /// `text`, `thought`: the chunk's text.
    pub text: Option<String>,
    /// `tool_call`, `tool_call_update`: ACP fields (`title`, `kind`, `status`, `content`, `rawInput`, …) are on
    /// the event itself.
    pub tool_call_id: Option<String>,
    pub title: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    #[napi(ts_type = "unknown")]
    pub content: Option<Value>,
    #[napi(ts_type = "unknown")]
    pub raw_input: Option<Value>,
    /// `plan`: the plan entries.
    #[napi(ts_type = "unknown[]")]
    pub entries: Option<Value>,
    /// `permission_request`: the JSON-RPC id, the tool call and the options.
    #[napi(ts_type = "string | number")]
    pub id: Option<Value>,
    #[napi(ts_type = "unknown")]
    pub tool_call: Option<Value>,
    #[napi(ts_type = "Array<{ optionId: string; name: string; kind: string }>")]
    pub options: Option<Value>,
    /// `permission_request`: answer with an `optionId`, or `'cancel'`.
    #[napi(ts_type = "(optionId: string) => Promise<void>")]
    pub respond: Option<Value>,
    /// `raw`: the whole JSON-RPC message.
    #[napi(ts_type = "unknown")]
    pub message: Option<Value>,
    /// `gap`: the range of lost event ids.
    pub from: Option<u32>,
    pub to: Option<u32>,
    /// `stop`: `end_turn` | `max_tokens` | `max_turn_requests` | `refusal` | `cancelled`.
    pub stop_reason: Option<String>,
}

/// What `send()` resolves with.
#[napi(object)]
pub struct SendResult {
    /// All `text` chunks joined.
    pub text: String,
    pub stop_reason: String,
    #[napi(ts_type = "AgentEvent[]")]
    pub events: Vec<Value>,
}

#[napi]
impl AgentSession {
    /// The agent's session id.
    #[napi(catch_unwind, getter)]
    pub fn agent_session_id(&self) -> String {
        self.inner.agent_session_id().to_string()
    }

    /// This session's id on the server (`sdk-<agent>-<uuid>`; one agent process per session).
    #[napi(catch_unwind, getter)]
    pub fn id(&self) -> String {
        self.inner.connection().server_id().to_string()
    }

    /// The agent id.
    #[napi(catch_unwind, getter)]
    pub fn agent(&self) -> String {
        self.inner.agent().to_string()
    }

    /// The agent's `initialize` result (agentInfo, capabilities).
    #[napi(catch_unwind, getter, ts_return_type = "Record<string, unknown>")]
    pub fn agent_info(&self) -> Value {
        self.inner.init_result().clone()
    }

    /// Send a prompt (text or ACP content blocks); iterate its events until `stop`. `break` cancels the turn.
    #[napi(
        catch_unwind,
        ts_args_type = "prompt: string | unknown[], options?: PromptOptions"
    )]
    pub fn prompt(
        &self,
        env: Env,
        prompt: Either<String, Vec<Value>>,
        options: Option<PromptOptions>,
    ) -> Result<TurnStream> {
        let (token, _, linked) =
            read_options(&env, options.as_ref().and_then(|o| o.signal.as_ref()), None)
                .map_err(|e| super::call::js_error(&env, e))?;
        let turn = self
            .inner
            .prompt(blocks(prompt))
            .map_err(|e| super::call::js_error(&env, e))?;
        Ok(TurnStream {
            turn: Arc::new(tokio::sync::Mutex::new(turn)),
            session: self.inner.clone(),
            token,
            linked: Rc::new(RefCell::new(linked)),
        })
    }

    /// Send a prompt and collect the turn: `{ text, stopReason, events }`. Permission requests in it are
    /// answered `cancelled` (use `prompt()` to answer them).
    #[napi(
        catch_unwind,
        ts_args_type = "prompt: string | unknown[], options?: PromptOptions",
        ts_return_type = "Promise<SendResult>"
    )]
    pub fn send(
        &self,
        env: Env,
        prompt: Either<String, Vec<Value>>,
        options: Option<PromptOptions>,
    ) -> Result<Pending<SendResult>> {
        let session = self.inner.clone();
        let input = blocks(prompt);
        run(
            &env,
            options.as_ref().and_then(|o| o.signal.as_ref()),
            options.as_ref().and_then(|o| o.timeout_ms),
            move |t, d| async move {
                let mut turn = session.prompt(input)?;
                let collect = async {
                    let mut text = String::new();
                    let mut events = Vec::new();
                    loop {
                        match turn.next().await? {
                            None => return Err(CoreError::closed("the session")),
                            Some(TurnEvent::Stop {
                                event_id,
                                stop_reason,
                            }) => {
                                events.push(event_json(&TurnEvent::Stop {
                                    event_id,
                                    stop_reason: stop_reason.clone(),
                                }));
                                return Ok(SendResult {
                                    text,
                                    stop_reason,
                                    events,
                                });
                            }
                            Some(e) => {
                                if let TurnEvent::Text { text: t, .. } = &e {
                                    text.push_str(t);
                                }
                                if let TurnEvent::PermissionRequest { id, .. } = &e {
                                    let _ = session
                                        .respond_permission(id.clone(), PermissionAnswer::Cancel)
                                        .await;
                                }
                                events.push(event_json(&e));
                            }
                        }
                    }
                };
                let r = crate::core::http::bounded("the prompt turn", d, &t, collect).await;
                if r.is_err()
                    && session.connection().exit().is_none()
                    && !session.connection().is_closed()
                {
                    let _ = session.cancel().await;
                }
                r
            },
        )
    }

    /// Cancel the running turn (`session/cancel`); open permission requests are answered `cancelled`.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn cancel(&self, env: Env) -> Result<Pending<()>> {
        let s = self.inner.clone();
        promise(&env, None, async move { s.cancel().await })
    }

    /// Close the session and its agent process. Idempotent.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close(&self, env: Env) -> Result<Pending<()>> {
        let s = self.inner.clone();
        promise(&env, None, async move {
            s.close().await;
            Ok(())
        })
    }

    /// Every message of this session's connection from the server's log, after `after`, then live.
    #[napi(catch_unwind)]
    pub fn events(&self, options: Option<EventsOptions>) -> AcpEventStream {
        AcpEventStream::new(
            self.inner.connection().clone(),
            options.and_then(|o| o.after).unwrap_or(0) as u64,
        )
    }

    /// `await using session = …` closes it.
    #[napi(
        catch_unwind,
        well_known_symbol = "asyncDispose",
        ts_return_type = "Promise<void>"
    )]
    pub fn dispose(&self, env: Env) -> Result<Pending<()>> {
        self.close(env)
    }
}

/// The events of one turn: `for await (const ev of session.prompt('…'))`.
#[napi]
pub struct TurnStream {
    turn: Arc<tokio::sync::Mutex<Turn>>,
    session: CoreSession,
    token: CancellationToken,
    linked: Rc<RefCell<Option<Linked>>>,
}

#[napi]
impl TurnStream {
    /// The next event (`done` after `stop`).
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<IteratorResult<AgentEvent, undefined>>"
    )]
    pub fn next(&self, env: Env) -> Result<Pending<ObjectRef<false>>> {
        let turn = self.turn.clone();
        let token = self.token.clone();
        let session = self.session.clone();
        let session2 = self.session.clone();
        let linked = self.linked.clone();
        promise_map(
            &env,
            None,
            async move {
                let mut t = turn.lock().await;
                // The outcome is mapped on the JS thread either way, so the signal is unlinked on an error too.
                Ok(tokio::select! {
                    r = t.next() => r,
                    _ = token.cancelled() => {
                        let _ = session.cancel().await;
                        Err(CoreError::aborted())
                    }
                })
            },
            move |env, ev| {
                if !matches!(ev, Ok(Some(_))) {
                    super::call::unlink_slot(&linked, env);
                }
                let ev = ev.map_err(|e| super::call::js_error(env, e))?;
                let mut step = Object::new(env)?;
                match ev {
                    None => {
                        step.set_named_property("done", true)?;
                        step.set_named_property("value", ())?;
                    }
                    Some(e) => {
                        step.set_named_property("done", false)?;
                        step.set_named_property("value", event_js(env, &session2, &e)?)?;
                    }
                }
                step.create_ref::<false>()
            },
        )
    }

    /// Stop iterating (`break`): the turn is cancelled.
    #[napi(
        catch_unwind,
        js_name = "return",
        ts_return_type = "Promise<IteratorResult<AgentEvent, undefined>>"
    )]
    pub fn return_(&self, env: Env) -> Result<Pending<Value>> {
        super::call::unlink_slot(&self.linked, &env);
        let turn = self.turn.clone();
        let session = self.session.clone();
        promise(&env, None, async move {
            let done = turn.try_lock().map(|t| t.is_done()).unwrap_or(false);
            if !done {
                let _ = session.cancel().await;
            }
            Ok(json!({"done": true}))
        })
    }

    /// The turn is its own async iterator.
    #[napi(
        catch_unwind,
        well_known_symbol = "asyncIterator",
        ts_return_type = "AsyncIterator<AgentEvent, undefined>"
    )]
    pub fn iterator<'a>(&self, this: This<'a>) -> Object<'a> {
        this.object
    }
}

/// A raw ACP connection.
#[napi]
pub struct AcpClient {
    conn: AcpConnection,
    init_result: Value,
}

/// Options for `request()`.
#[napi(object, object_to_js = false)]
pub struct AcpRequestOptions<'a> {
    /// The JSON-RPC id to use (string or number); default: the next number.
    #[napi(ts_type = "string | number")]
    pub id: Option<Value>,
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
    /// Default 60 s.
    pub timeout_ms: Option<f64>,
}

#[napi]
impl AcpClient {
    /// The server id of this connection.
    #[napi(catch_unwind, getter)]
    pub fn server_id(&self) -> String {
        self.conn.server_id().to_string()
    }

    /// The `initialize` result.
    #[napi(catch_unwind, getter, ts_return_type = "unknown")]
    pub fn init_result(&self) -> Value {
        self.init_result.clone()
    }

    /// The last SSE event id seen by the connection's reader.
    #[napi(catch_unwind, getter)]
    pub fn last_event_id(&self) -> f64 {
        self.conn.last_event_id() as f64
    }

    /// Send a JSON-RPC request and resolve with its `result` (a JSON-RPC error rejects `ERR_AGENT_PROTOCOL`
    /// with `rpcCode`/`rpcMessage`).
    #[napi(
        catch_unwind,
        ts_args_type = "method: string, params?: unknown, options?: AcpRequestOptions",
        ts_return_type = "Promise<unknown>"
    )]
    pub fn request(
        &self,
        env: Env,
        method: String,
        params: Option<Value>,
        options: Option<AcpRequestOptions>,
    ) -> Result<Pending<Value>> {
        let c = self.conn.clone();
        let id = options.as_ref().and_then(|o| o.id.clone());
        if let Some(id) = &id {
            if !(id.is_string() || id.is_number()) {
                return super::call::rejected(
                    &env,
                    CoreError::invalid("id must be a string or a number").with("argument", "id"),
                );
            }
        }
        run(
            &env,
            options.as_ref().and_then(|o| o.signal.as_ref()),
            options.as_ref().and_then(|o| o.timeout_ms),
            move |t, d| async move {
                c.request(
                    &method,
                    params.unwrap_or(Value::Null),
                    id,
                    Some(d.unwrap_or(DEFAULT_OPEN)),
                    &t,
                )
                .await
            },
        )
    }

    /// Send a notification (no response).
    #[napi(
        catch_unwind,
        ts_args_type = "method: string, params?: unknown",
        ts_return_type = "Promise<void>"
    )]
    pub fn notify(&self, env: Env, method: String, params: Option<Value>) -> Result<Pending<()>> {
        let c = self.conn.clone();
        promise(&env, None, async move {
            c.notify(&method, params.unwrap_or(Value::Null)).await
        })
    }

    /// Answer an agent→client request.
    #[napi(
        catch_unwind,
        ts_args_type = "id: string | number, result: unknown",
        ts_return_type = "Promise<void>"
    )]
    pub fn respond(&self, env: Env, id: Value, result: Value) -> Result<Pending<()>> {
        let c = self.conn.clone();
        promise(&env, None, async move { c.respond(id, result).await })
    }

    /// The connection's messages from the server's log after `after`, then live (a second SSE reader).
    #[napi(catch_unwind)]
    pub fn events(&self, options: Option<EventsOptions>) -> AcpEventStream {
        AcpEventStream::new(
            self.conn.clone(),
            options.and_then(|o| o.after).unwrap_or(0) as u64,
        )
    }

    /// Close the connection (DELETE, bounded) and its agent process. Idempotent.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close(&self, env: Env) -> Result<Pending<()>> {
        let c = self.conn.clone();
        promise(&env, None, async move {
            c.close().await;
            Ok(())
        })
    }

    /// `await using` closes it.
    #[napi(
        catch_unwind,
        well_known_symbol = "asyncDispose",
        ts_return_type = "Promise<void>"
    )]
    pub fn dispose(&self, env: Env) -> Result<Pending<()>> {
        self.close(env)
    }
}

/// One item of an event stream: `{ type: 'message', eventId, message }` or `{ type: 'gap', from, to }`.
#[napi(object)]
#[allow(dead_code)] // built as JSON; the struct exists for index.d.ts
pub struct AcpStreamEvent {
    #[napi(ts_type = "'message' | 'gap'")]
    pub r#type: String,
    pub event_id: Option<u32>,
    #[napi(ts_type = "unknown")]
    pub message: Option<Value>,
    pub from: Option<u32>,
    pub to: Option<u32>,
}

enum StreamState {
    NotStarted,
    Running(tokio::sync::mpsc::Receiver<Feed>),
    Done,
}

/// Raw ACP messages with their SSE event ids; ends when the connection closes or the agent exits.
#[napi]
pub struct AcpEventStream {
    conn: AcpConnection,
    after: u64,
    state: Arc<tokio::sync::Mutex<StreamState>>,
    stop: CancellationToken,
}

impl AcpEventStream {
    fn new(conn: AcpConnection, after: u64) -> Self {
        AcpEventStream {
            conn,
            after,
            state: Arc::new(tokio::sync::Mutex::new(StreamState::NotStarted)),
            stop: CancellationToken::new(),
        }
    }
}

#[napi]
impl AcpEventStream {
    /// The next message (`done` at the end).
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<IteratorResult<AcpStreamEvent, undefined>>"
    )]
    pub fn next(&self, env: Env) -> Result<Pending<Value>> {
        let state = self.state.clone();
        let conn = self.conn.clone();
        let after = self.after;
        let stop = self.stop.clone();
        promise(&env, None, async move {
            let mut st = state.lock().await;
            if let StreamState::NotStarted = &*st {
                *st = StreamState::Running(conn.replay(after).await?);
            }
            let StreamState::Running(rx) = &mut *st else {
                return Ok(json!({"done": true}));
            };
            let item = tokio::select! {
                f = rx.recv() => f,
                _ = stop.cancelled() => None,
            };
            match item {
                Some(Feed::Event(ev)) => Ok(
                    json!({"done": false, "value": {"type": "message", "eventId": ev.event_id, "message": ev.message}}),
                ),
                Some(Feed::Gap { from, to }) => {
                    Ok(json!({"done": false, "value": {"type": "gap", "from": from, "to": to}}))
                }
                Some(Feed::Ended(Some(e))) => {
                    *st = StreamState::Done;
                    Err(e)
                }
                Some(Feed::Ended(None)) | None => {
                    *st = StreamState::Done;
                    Ok(json!({"done": true}))
                }
            }
        })
    }

    /// Stop reading.
    #[napi(
        catch_unwind,
        js_name = "return",
        ts_return_type = "Promise<IteratorResult<AcpStreamEvent, undefined>>"
    )]
    pub fn return_(&self, env: Env) -> Result<Pending<Value>> {
        self.stop.cancel();
        let state = self.state.clone();
        promise(&env, None, async move {
            *state.lock().await = StreamState::Done;
            Ok(json!({"done": true}))
        })
    }

    /// The stream is its own async iterator.
    #[napi(
        catch_unwind,
        well_known_symbol = "asyncIterator",
        ts_return_type = "AsyncIterator<AcpStreamEvent, undefined>"
    )]
    pub fn iterator<'a>(&self, this: This<'a>) -> Object<'a> {
        this.object
    }
}
