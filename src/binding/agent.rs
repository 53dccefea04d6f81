//! JS classes for sandbox-agent: `SandboxAgent`, `AgentSession`, `TurnStream`, `AcpClient`, `AcpEventStream`.

use super::call::{
    has_call, promise, read_call, run, settle, unlink_slot, AbortSignal, CallOptions, Linked,
    Promise, SignalOnly,
};
use super::container::Container;
use super::iter::{async_iterator, step};
use super::sandboxes::Sandbox;
use crate::core::acp::{default_init_params, AcpConnection, EventStream, StreamItem};
use crate::core::agent::AgentServer;
use crate::core::agent_install::BinarySources;
use crate::core::session::{
    AgentSession as CoreSession, PermissionAnswer, StartReport, StartSession, Turn, TurnEvent,
    TurnSummary,
};
use crate::core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi::Env;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Options for `new SandboxAgent()`.
#[napi(object)]
pub struct SandboxAgentOptions {
    /// The server's port inside the container (default 2468).
    pub port: Option<u16>,
    /// Bearer token, when the server runs with `--token`.
    pub token: Option<String>,
    /// `sandbox-agent` binaries on the host by npm cpu name (`x64`, `arm64`; `*` for any): what `installServer()`
    /// and `ensureServer()` copy into a target that has none. The TypeScript layer fills it in.
    pub agent_binaries: Option<std::collections::HashMap<String, String>>,
}

/// What `installServer()` did.
#[napi(object)]
pub struct InstallResult {
    /// The binary's path in the sandbox.
    pub path: String,
    /// False when an identical binary was already there.
    pub copied: bool,
    pub bytes: f64,
    /// Hex SHA-256 of the binary (checked after the copy).
    pub sha256: String,
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
    pub signal: Option<AbortSignal<'a>>,
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
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline for opening the connection and creating the session (default 60 s).
    pub timeout_ms: Option<f64>,
}

/// Options for `startSession()`.
#[napi(object, object_to_js = false)]
pub struct StartSessionOptions<'a> {
    /// Agent id known to sandbox-agent (`claude`, `codex`, `mock`, …).
    pub agent: String,
    /// Absolute working directory inside the sandbox (default: the sandbox's workspace).
    pub cwd: Option<String>,
    /// ACP `mcpServers` (default `[]`).
    #[napi(ts_type = "unknown[]")]
    pub mcp_servers: Option<Value>,
    /// Environment for the server when this call starts it (API keys); never logged.
    #[napi(ts_type = "Record<string, string>")]
    pub env: Option<Object<'a>>,
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline for the whole sequence (default 11 min 15 s: server start, agent install, session).
    pub timeout_ms: Option<f64>,
}

/// What `startSession()` did on the way to the session.
#[napi(object)]
#[derive(Clone, Copy)]
pub struct SessionStart {
    /// The server was not answering and this call started it (copying the binary in when missing).
    pub server_started: bool,
    /// The server listed the agent as not installed and this call installed it.
    pub agent_installed: bool,
}

impl From<StartReport> for SessionStart {
    fn from(r: StartReport) -> Self {
        SessionStart {
            server_started: r.server_started,
            agent_installed: r.agent_installed,
        }
    }
}

/// Options for `connect()` (a raw ACP connection).
#[napi(object, object_to_js = false)]
pub struct ConnectAgentOptions<'a> {
    pub agent: String,
    /// `initialize` params (default: protocol 1, no fs/terminal capabilities).
    #[napi(ts_type = "Record<string, unknown>")]
    pub init_params: Option<Value>,
    pub signal: Option<AbortSignal<'a>>,
    pub timeout_ms: Option<f64>,
}

has_call!(
    EnsureServerOptions,
    CreateSessionOptions,
    StartSessionOptions,
    ConnectAgentOptions
);

#[napi]
impl SandboxAgent {
    /// `target`: the container or sandbox where `sandbox-agent` runs (it needs `nc`, `socat`, `node` or
    /// `python3` as a relay; the sbx backend's exec route carries the tunnel like `docker exec` does).
    #[napi(catch_unwind, constructor)]
    pub fn new(target: Either<&Container, &Sandbox>, options: Option<SandboxAgentOptions>) -> Self {
        let (port, token, bins) = match options {
            Some(o) => (o.port, o.token, o.agent_binaries.unwrap_or_default()),
            None => (None, None, Default::default()),
        };
        let server = match target {
            Either::A(c) => AgentServer::for_container(c.inner.clone(), port, token),
            Either::B(s) => {
                AgentServer::new(s.target.clone(), port, token).with_workdir(s.workspace())
            }
        };
        let mut bins: Vec<(String, std::path::PathBuf)> =
            bins.into_iter().map(|(k, v)| (k, v.into())).collect();
        bins.sort();
        SandboxAgent {
            server: Arc::new(server.with_binaries(BinarySources(bins))),
        }
    }

    /// Put the `sandbox-agent` binary for the target's architecture into it (from `agentBinary` or the
    /// `@sandbox-agent/cli-linux-<cpu>` package), verified by SHA-256; an identical one already there is kept.
    #[napi(catch_unwind)]
    pub fn install_server(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<InstallResult>> {
        let server = self.server.clone();
        run(&env, options.as_ref(), move |call| async move {
            let done = server.install(&call).await?;
            Ok(InstallResult {
                path: done.path,
                copied: done.copied,
                bytes: done.bytes as f64,
                sha256: done.sha256,
            })
        })
    }

    /// Probe health; when the server is down, start `sandbox-agent server --no-telemetry` detached (with a long
    /// `SANDBOX_AGENT_ACP_REQUEST_TIMEOUT_MS`) and wait until it is healthy (default 15 s).
    #[napi(catch_unwind)]
    pub fn ensure_server(
        &self,
        env: Env,
        options: Option<EnsureServerOptions>,
    ) -> Result<Promise<EnsureServerResult>> {
        let s = self.server.clone();
        let vars = super::container::read_env(options.as_ref().and_then(|o| o.env.as_ref()));
        run(&env, options.as_ref(), move |call| async move {
            let started = s.ensure_server(&vars?, &call).await?;
            Ok(EnsureServerResult { started })
        })
    }

    /// `GET /v1/health`.
    #[napi(catch_unwind, ts_return_type = "Promise<{ status: string }>")]
    pub fn health(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<Value>> {
        let s = self.server.clone();
        run(&env, options.as_ref(), move |call| async move {
            s.health(&call).await
        })
    }

    /// `GET /v1/agents`: the agents the server knows, and whether each is installed.
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<{ agents: Array<{ id: string; installed: boolean } & Record<string, unknown>> }>"
    )]
    pub fn list_agents(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<Value>> {
        let s = self.server.clone();
        run(&env, options.as_ref(), move |call| async move {
            s.list_agents(&call).await
        })
    }

    /// `POST /v1/agents/{name}/install` (not the CLI's broken `api agents install`).
    #[napi(catch_unwind, ts_return_type = "Promise<Record<string, unknown>>")]
    pub fn install_agent(
        &self,
        env: Env,
        name: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<Value>> {
        let s = self.server.clone();
        run(&env, options.as_ref(), move |call| async move {
            s.install_agent(&name, &call).await
        })
    }

    /// Create an ACP session (its own connection and agent process) in `cwd`.
    #[napi(catch_unwind)]
    pub fn create_session(
        &self,
        env: Env,
        options: CreateSessionOptions,
    ) -> Result<Promise<AgentSession>> {
        let s = self.server.clone();
        let agent = options.agent.clone();
        let cwd = options.cwd.clone();
        let mcp = options.mcp_servers.clone().unwrap_or_else(|| json!([]));
        run(&env, Some(&options), move |call| async move {
            let inner = CoreSession::create(s, &agent, &cwd, mcp, &call).await?;
            Ok(AgentSession { inner, start: None })
        })
    }

    /// From a running sandbox to a ready session: `ensureServer()`, the agent installed when the server lists it
    /// as not installed, then `createSession()` (in the sandbox's workspace by default), under one deadline.
    #[napi(catch_unwind)]
    pub fn start_session(
        &self,
        env: Env,
        options: StartSessionOptions,
    ) -> Result<Promise<AgentSession>> {
        let s = self.server.clone();
        let vars = super::container::read_env(options.env.as_ref());
        let (agent, cwd, mcp_servers) = (
            options.agent.clone(),
            options.cwd.clone(),
            options.mcp_servers.clone(),
        );
        run(&env, Some(&options), move |call| async move {
            let opts = StartSession {
                agent,
                cwd,
                mcp_servers,
                env: vars?,
            };
            let (inner, report) = CoreSession::start(s, opts, &call).await?;
            Ok(AgentSession {
                inner,
                start: Some(report.into()),
            })
        })
    }

    /// A raw ACP connection (JSON-RPC over the server's HTTP transport), for protocol-level work.
    #[napi(catch_unwind)]
    pub fn connect(&self, env: Env, options: ConnectAgentOptions) -> Result<Promise<AcpClient>> {
        let s = self.server.clone();
        let agent = options.agent.clone();
        let init = options
            .init_params
            .clone()
            .unwrap_or_else(default_init_params);
        run(&env, Some(&options), move |call| async move {
            let (conn, init_result) = AcpConnection::open(s, &agent, init, &call).await?;
            Ok(AcpClient { conn, init_result })
        })
    }
}

/// A session with an agent. `prompt()` streams a turn's events; `send()` collects them.
#[napi]
pub struct AgentSession {
    inner: CoreSession,
    start: Option<SessionStart>,
}

/// Options for `prompt()` / `send()`.
#[napi(object, object_to_js = false)]
pub struct PromptOptions<'a> {
    /// Aborting cancels the turn (`session/cancel`) and rejects the iterator with `ABORT_ERR`.
    pub signal: Option<AbortSignal<'a>>,
    /// `send()` only: deadline for the whole turn; past it the turn is cancelled and `send` rejects `ERR_TIMEOUT`.
    pub timeout_ms: Option<f64>,
}

has_call!(PromptOptions);

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
            env.create_function_from_closure::<String, Promise<()>, _>("respond", move |ctx| {
                let choice: String = ctx.first_arg()?;
                let s = s.clone();
                let id = id.clone();
                let answer = if choice == "cancel" {
                    PermissionAnswer::Cancel
                } else {
                    PermissionAnswer::Select(choice)
                };
                promise(
                    ctx.env,
                    async move { s.respond_permission(id, answer).await },
                )
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

impl From<TurnSummary> for SendResult {
    fn from(t: TurnSummary) -> Self {
        SendResult {
            text: t.text,
            stop_reason: t.stop_reason,
            events: t.events.iter().map(event_json).collect(),
        }
    }
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

    /// What `startSession()` did on the way (`null` for a session from `createSession()`).
    #[napi(catch_unwind, getter)]
    pub fn start(&self) -> Option<SessionStart> {
        self.start
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
        // A turn takes only the signal (`timeoutMs` is `send()`'s).
        let signal = SignalOnly(options.as_ref().and_then(|o| o.signal.as_ref()));
        let (call, linked) =
            read_call(&env, Some(&signal)).map_err(|e| super::call::js_error(&env, e))?;
        let token = call.cancel;
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
        ts_args_type = "prompt: string | unknown[], options?: PromptOptions"
    )]
    pub fn send(
        &self,
        env: Env,
        prompt: Either<String, Vec<Value>>,
        options: Option<PromptOptions>,
    ) -> Result<Promise<SendResult>> {
        let session = self.inner.clone();
        let input = blocks(prompt);
        run(&env, options.as_ref(), move |call| async move {
            Ok(session.send(input, &call).await?.into())
        })
    }

    /// Cancel the running turn (`session/cancel`); open permission requests are answered `cancelled`.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn cancel(&self, env: Env) -> Result<Promise<()>> {
        let s = self.inner.clone();
        promise(&env, async move { s.cancel().await })
    }

    /// Close the session and its agent process. Idempotent.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close(&self, env: Env) -> Result<Promise<()>> {
        let s = self.inner.clone();
        promise(&env, async move {
            s.close().await;
            Ok(())
        })
    }

    /// Every message of this session's connection from the server's log, after `after`, then live.
    #[napi(catch_unwind)]
    pub fn events(&self, options: Option<EventsOptions>) -> AcpEventStream {
        AcpEventStream::new(self.inner.connection(), options)
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
    pub fn next(&self, env: Env) -> Result<Promise<ObjectRef<false>>> {
        let turn = self.turn.clone();
        let token = self.token.clone();
        let session = self.session.clone();
        let session2 = self.session.clone();
        let linked = self.linked.clone();
        settle(
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
                    unlink_slot(&linked, env);
                }
                let ev = ev.map_err(|e| super::call::js_error(env, e))?;
                let value = ev.map(|e| event_js(env, &session2, &e)).transpose()?;
                step(env, value)
            },
        )
    }
}

impl TurnStream {
    /// `return()`: the turn is cancelled unless it is over.
    fn on_return(&self, env: &Env) -> impl Future<Output = ()> + Send + 'static {
        unlink_slot(&self.linked, env);
        let turn = self.turn.clone();
        let session = self.session.clone();
        async move {
            let done = turn.try_lock().map(|t| t.is_done()).unwrap_or(false);
            if !done {
                let _ = session.cancel().await;
            }
        }
    }
}

async_iterator!(
    TurnStream,
    "Stop iterating (`break`): the turn is cancelled.",
    "Promise<IteratorResult<AgentEvent, undefined>>",
    "AsyncIterator<AgentEvent, undefined>"
);

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
    pub signal: Option<AbortSignal<'a>>,
    /// Default 60 s.
    pub timeout_ms: Option<f64>,
}

has_call!(AcpRequestOptions);

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
    ) -> Result<Promise<Value>> {
        let c = self.conn.clone();
        let id = options.as_ref().and_then(|o| o.id.clone());
        run(&env, options.as_ref(), move |call| async move {
            if let Some(id) = &id {
                if !(id.is_string() || id.is_number()) {
                    return Err(CoreError::invalid("id must be a string or a number")
                        .with("argument", "id"));
                }
            }
            c.request(&method, params.unwrap_or(Value::Null), id, &call)
                .await
        })
    }

    /// Send a notification (no response).
    #[napi(
        catch_unwind,
        ts_args_type = "method: string, params?: unknown",
        ts_return_type = "Promise<void>"
    )]
    pub fn notify(&self, env: Env, method: String, params: Option<Value>) -> Result<Promise<()>> {
        let c = self.conn.clone();
        promise(&env, async move {
            c.notify(&method, params.unwrap_or(Value::Null)).await
        })
    }

    /// Answer an agent→client request.
    #[napi(
        catch_unwind,
        ts_args_type = "id: string | number, result: unknown",
        ts_return_type = "Promise<void>"
    )]
    pub fn respond(&self, env: Env, id: Value, result: Value) -> Result<Promise<()>> {
        let c = self.conn.clone();
        promise(&env, async move { c.respond(id, result).await })
    }

    /// The connection's messages from the server's log after `after`, then live (a second SSE reader).
    #[napi(catch_unwind)]
    pub fn events(&self, options: Option<EventsOptions>) -> AcpEventStream {
        AcpEventStream::new(&self.conn, options)
    }

    /// Close the connection (DELETE, bounded) and its agent process. Idempotent.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close(&self, env: Env) -> Result<Promise<()>> {
        let c = self.conn.clone();
        promise(&env, async move {
            c.close().await;
            Ok(())
        })
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

/// Raw ACP messages with their SSE event ids; ends when the connection closes or the agent exits.
#[napi]
pub struct AcpEventStream {
    inner: Arc<EventStream>,
}

impl AcpEventStream {
    fn new(conn: &AcpConnection, options: Option<EventsOptions>) -> Self {
        let after = options.and_then(|o| o.after).unwrap_or(0);
        AcpEventStream {
            inner: Arc::new(conn.events(after as u64)),
        }
    }

    /// `return()`: stop reading.
    fn on_return(&self, _: &Env) -> impl Future<Output = ()> + Send + 'static {
        let s = self.inner.clone();
        async move { s.close().await }
    }
}

#[napi]
impl AcpEventStream {
    /// The next message (`done` at the end).
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<IteratorResult<AcpStreamEvent, undefined>>"
    )]
    pub fn next(&self, env: Env) -> Result<Promise<ObjectRef<false>>> {
        let s = self.inner.clone();
        settle(&env, None, async move { s.next().await }, |env, item| {
            let value = item.map(|i| match i {
                StreamItem::Message(ev) => {
                    json!({"type": "message", "eventId": ev.event_id, "message": ev.message})
                }
                StreamItem::Gap { from, to } => json!({"type": "gap", "from": from, "to": to}),
            });
            let value = value.map(|v| env.to_js_value(&v)).transpose()?;
            step(env, value)
        })
    }
}

async_iterator!(
    AcpEventStream,
    "Stop reading.",
    "Promise<IteratorResult<AcpStreamEvent, undefined>>",
    "AsyncIterator<AcpStreamEvent, undefined>"
);
