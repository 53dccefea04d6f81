/** sandbox-agent in a container: the server, ACP sessions with typed turn events, and raw ACP connections. */
import native = require('../native/index.cjs')
import { call, callSync, type CallOptions } from './call'
import * as check from './check'
import { invalidArgument } from './errors'
import { Container } from './engine'
import { Sandbox } from './sandboxes'
import { INTERNAL, bind, internalOnly, unwrap } from './internal'
import { AsyncStream } from './stream'

/** Options for `new SandboxAgent()`. */
export interface SandboxAgentOptions {
  /** The server's port inside the container (default 2468). */
  port?: number
  /** Bearer token, when the server runs with `--token`. */
  token?: string
  /**
   * The `sandbox-agent` binary to copy into a target that has none (a host path, for the target's architecture).
   * Default: `@sandbox-agent/cli-linux-x64` / `-arm64` from your dependencies, chosen by the target's `uname -m`.
   */
  agentBinary?: string
}

/** What `installServer()` did. */
export type InstallResult = native.InstallResult

/** The `sandbox-agent` binaries Node can resolve from the npm packages, by npm cpu name. */
function packagedBinaries(): Record<string, string> {
  const found: Record<string, string> = {}
  for (const cpu of ['x64', 'arm64']) {
    const id = `@sandbox-agent/cli-linux-${cpu}/bin/sandbox-agent`
    for (const paths of [undefined, [process.cwd()]]) {
      try {
        found[cpu] = require.resolve(id, paths ? { paths } : undefined)
        break
      } catch {
        // not installed where this looked
      }
    }
  }
  return found
}

/** Options for `ensureServer()`. */
export interface EnsureServerOptions extends CallOptions {
  /**
   * Environment for the server when this call starts it; agent processes inherit it (put API keys here: they go
   * to the container through this call only and are never logged).
   */
  env?: Record<string, string>
}

/** What `ensureServer()` did. */
export type EnsureServerResult = native.EnsureServerResult

/** An agent the server knows. */
export interface AgentListing {
  id: string
  installed: boolean
  [field: string]: unknown
}

/** Options for `createSession()`. */
export interface CreateSessionOptions extends CallOptions {
  /** Agent id known to sandbox-agent (`claude`, `codex`, `mock`, …). */
  agent: string
  /** Absolute working directory inside the container. */
  cwd: string
  /** ACP `mcpServers` (default `[]`). */
  mcpServers?: unknown[]
}

/** Options for `startSession()`. */
export interface StartSessionOptions extends CallOptions {
  /** Agent id known to sandbox-agent (`claude`, `codex`, `mock`, …). */
  agent: string
  /** Absolute working directory inside the sandbox. Default: a `Sandbox`'s workspace (required for a `Container`). */
  cwd?: string
  /** ACP `mcpServers` (default `[]`). */
  mcpServers?: unknown[]
  /**
   * Environment for the server when this call starts it; agents inherit it (API keys go here: into the sandbox
   * through this call only, never logged).
   */
  env?: Record<string, string>
}

/** What `startSession()` did on the way to the session. */
export type SessionStart = native.SessionStart

/** Options for `connect()` (a raw ACP connection). */
export interface ConnectAgentOptions extends CallOptions {
  agent: string
  /** `initialize` params (default: protocol 1, no fs/terminal capabilities). */
  initParams?: Record<string, unknown>
}

/** Options for `prompt()` / `send()`. */
export interface PromptOptions {
  /** Aborting cancels the turn (`session/cancel`) and rejects with `signal.reason`. */
  signal?: AbortSignal
  /** `send()` only: deadline for the whole turn; past it the turn is cancelled and `send` rejects `ERR_TIMEOUT`. */
  timeoutMs?: number
}

/** Options for `events()`. */
export interface EventsOptions {
  /** Resume after this SSE event id (`Last-Event-ID`). */
  after?: number
}

/** Options for `request()`. */
export interface AcpRequestOptions extends CallOptions {
  /** The JSON-RPC id to use (string or number); default: the next number. */
  id?: string | number
}

/** A permission option the agent offers. */
export interface PermissionOption {
  optionId: string
  name: string
  kind: string
}

/** ACP tool-call fields (`title`, `kind`, `status`, `content`, `rawInput`, …), as the agent sent them. */
export interface ToolCallFields {
  toolCallId: string
  title?: string
  kind?: string
  status?: string
  content?: unknown
  rawInput?: unknown
  [field: string]: unknown
}

/** One event of a turn, discriminated by `type`. Every event but `gap` has its SSE `eventId`. */
export type AgentEvent =
  | { type: 'text'; eventId: number; text: string }
  | { type: 'thought'; eventId: number; text: string }
  | ({ type: 'tool_call'; eventId: number } & ToolCallFields)
  | ({ type: 'tool_call_update'; eventId: number } & ToolCallFields)
  | { type: 'plan'; eventId: number; entries: unknown[]; [field: string]: unknown }
  | {
      type: 'permission_request'
      eventId: number
      /** The JSON-RPC id of the agent's request. */
      id: string | number
      toolCall: unknown
      options: PermissionOption[]
      /** Answer with an `optionId`, or `'cancel'`. Unanswered requests are cancelled when the turn ends. */
      respond: (optionId: string) => Promise<void>
    }
  | { type: 'raw'; eventId: number; message: unknown }
  | { type: 'gap'; from: number; to: number }
  | { type: 'stop'; eventId: number; stopReason: StopReason }

/** Why a turn ended (ACP's stop reasons; another string if the agent sends one ACP does not name). */
export type StopReason = 'end_turn' | 'max_tokens' | 'max_turn_requests' | 'refusal' | 'cancelled' | (string & {})

/** What `send()` resolves with. */
export interface SendResult {
  /** All `text` chunks joined. */
  text: string
  stopReason: StopReason
  events: AgentEvent[]
}

/** One item of a raw event stream. */
export type AcpStreamEvent =
  | { type: 'message'; eventId: number; message: unknown }
  | { type: 'gap'; from: number; to: number }

/** The events of one turn: `for await (const ev of session.prompt('…'))`. `break` cancels the turn. */
export type TurnStream = AsyncStream<AgentEvent>

/** Raw ACP messages with their SSE event ids; ends when the connection closes or the agent exits. */
export type AcpEventStream = AsyncStream<AcpStreamEvent>

/** Give a permission request's `respond` the SDK's errors. */
function withRespond(ev: AgentEvent): AgentEvent {
  if (ev.type === 'permission_request') {
    const respond = ev.respond
    ev.respond = (optionId: string) =>
      call(null, () => {
        check.arg('optionId', optionId, 'string')
        return respond(optionId)
      })
  }
  return ev
}

const PROMPT: check.Shape = check.CALL

/** The sandbox-agent server inside a container, reached through `docker exec` tunnels (no port needed). */
export class SandboxAgent {
  readonly #inner: native.SandboxAgent

  /**
   * `target`: the container or sandbox where `sandbox-agent` runs (it needs `nc`, `socat`, `node` or `python3` as
   * a relay). On an sbx sandbox the tunnel runs over the daemon's exec route, on a container over `docker exec`.
   */
  constructor(target: Container | Sandbox, options?: SandboxAgentOptions) {
    if (!(target instanceof Sandbox) && !(target instanceof Container)) {
      throw invalidArgument('target', 'target: expected a Container or a Sandbox')
    }
    const t =
      target instanceof Sandbox
        ? unwrap<native.Sandbox>('target', target, Sandbox)
        : unwrap<native.Container>('target', target, Container)
    check.opts('options', options, { port: 'number', token: 'string', agentBinary: 'string' })
    const agentBinaries = options?.agentBinary ? { '*': options.agentBinary } : packagedBinaries()
    const nativeOptions = { port: options?.port, token: options?.token, agentBinaries }
    this.#inner = bind(this, callSync(() => new native.SandboxAgent(t, nativeOptions)))
  }

  /**
   * Put the `sandbox-agent` binary for the target's architecture into it (`agentBinary`, or the
   * `@sandbox-agent/cli-linux-<cpu>` package), verified by size and SHA-256; an identical one already there is not
   * copied again. `ensureServer()` does this by itself when the target has no `sandbox-agent`.
   */
  installServer(options?: CallOptions): Promise<InstallResult> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.installServer(options)
    })
  }

  /**
   * Probe health; when the server is down, start `sandbox-agent server --no-telemetry` detached and wait until it
   * is healthy (default 15 s).
   */
  ensureServer(options?: EnsureServerOptions): Promise<EnsureServerResult> {
    return call(options?.signal, () => {
      check.opts('options', options, { ...check.CALL, env: 'record' })
      return this.#inner.ensureServer(options as check.Unsafe)
    })
  }

  /** `GET /v1/health`. */
  health(options?: CallOptions): Promise<{ status: string }> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.health(options)
    })
  }

  /** `GET /v1/agents`: the agents the server knows, and whether each is installed. */
  listAgents(options?: CallOptions): Promise<{ agents: AgentListing[] }> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.listAgents(options)
    })
  }

  /** `POST /v1/agents/{name}/install`. */
  installAgent(name: string, options?: CallOptions): Promise<Record<string, unknown>> {
    return call(options?.signal, () => {
      check.arg('name', name, 'string')
      check.opts('options', options, check.CALL)
      return this.#inner.installAgent(name, options)
    })
  }

  /** Create an ACP session (its own connection and agent process) in `cwd`. */
  createSession(options: CreateSessionOptions): Promise<AgentSession> {
    return call(options?.signal, async () => {
      check.opts('options', options, { ...check.CALL, agent: 'string', cwd: 'string', mcpServers: 'unknown' }, ['agent', 'cwd'])
      return AgentSession.wrap(await this.#inner.createSession(options))
    })
  }

  /**
   * From a running sandbox to a ready session in one call: `ensureServer()` (copying the binary in when the sandbox
   * has none), the agent installed when the server lists it as not installed, then `createSession()` — in the
   * sandbox's workspace unless `cwd` says otherwise. One deadline bounds it all (default 11 min 15 s, most of it for
   * an agent install); `session.start` tells what had to be done.
   */
  startSession(options: StartSessionOptions): Promise<AgentSession> {
    return call(options?.signal, async () => {
      check.opts(
        'options',
        options,
        { ...check.CALL, agent: 'string', cwd: 'string', mcpServers: 'unknown', env: 'record' },
        ['agent'],
      )
      return AgentSession.wrap(await this.#inner.startSession(options as check.Unsafe))
    })
  }

  /** A raw ACP connection (JSON-RPC over the server's HTTP transport), for protocol-level work. */
  connect(options: ConnectAgentOptions): Promise<AcpClient> {
    return call(options?.signal, async () => {
      check.opts('options', options, { ...check.CALL, agent: 'string', initParams: 'object' }, ['agent'])
      return AcpClient.wrap(await this.#inner.connect(options))
    })
  }
}

/** A session with an agent. `prompt()` streams a turn's events; `send()` collects them. */
export class AgentSession {
  readonly #inner: native.AgentSession

  private constructor(token: symbol, inner: native.AgentSession) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.AgentSession): AgentSession {
    return new AgentSession(INTERNAL, inner)
  }

  /** The agent's session id. */
  get agentSessionId(): string {
    return this.#inner.agentSessionId
  }
  /** This session's connection id on the server (`sdk-<agent>-<uuid>`; one agent process per session). */
  get serverId(): string {
    return this.#inner.id
  }
  /** The agent id. */
  get agent(): string {
    return this.#inner.agent
  }
  /** What `startSession()` did on the way (server started, agent installed); `null` after `createSession()`. */
  get start(): SessionStart | null {
    return this.#inner.start ?? null
  }
  /** The agent's `initialize` result (agentInfo, capabilities). */
  get initResult(): Record<string, unknown> {
    return this.#inner.agentInfo
  }

  /** Send a prompt (text or ACP content blocks); iterate its events until `stop`. `break` cancels the turn. */
  prompt(prompt: string | unknown[], options?: PromptOptions): TurnStream {
    checkPrompt(prompt)
    check.opts('options', options, PROMPT)
    const turn = callSync(() => this.#inner.prompt(prompt, options))
    return AsyncStream.from(turn as check.Unsafe, options?.signal, withRespond)
  }

  /**
   * Send a prompt and collect the turn: `{ text, stopReason, events }`. Permission requests in it are answered
   * `cancelled` (use `prompt()` to answer them).
   */
  send(prompt: string | unknown[], options?: PromptOptions): Promise<SendResult> {
    return call(options?.signal, async () => {
      checkPrompt(prompt)
      check.opts('options', options, PROMPT)
      return (await this.#inner.send(prompt, options)) as SendResult
    })
  }

  /** Cancel the running turn (`session/cancel`); open permission requests are answered `cancelled`. */
  cancel(): Promise<void> {
    return call(null, () => this.#inner.cancel())
  }

  /** Close the session and its agent process. Idempotent. */
  close(): Promise<void> {
    return call(null, () => this.#inner.close())
  }

  /** Every message of this session's connection from the server's log, after `after`, then live. */
  events(options?: EventsOptions): AcpEventStream {
    check.opts('options', options, { after: 'number' })
    return AsyncStream.from(callSync(() => this.#inner.events(options)) as check.Unsafe)
  }

  /** `await using session = …` closes it. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}

function checkPrompt(prompt: unknown): void {
  if (!Array.isArray(prompt)) check.arg('prompt', prompt, 'string')
}

/** A raw ACP connection. */
export class AcpClient {
  readonly #inner: native.AcpClient

  private constructor(token: symbol, inner: native.AcpClient) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.AcpClient): AcpClient {
    return new AcpClient(INTERNAL, inner)
  }

  /** The server id of this connection. */
  get serverId(): string {
    return this.#inner.serverId
  }
  /** The `initialize` result. */
  get initResult(): unknown {
    return this.#inner.initResult
  }
  /** The last SSE event id seen by the connection's reader. */
  get lastEventId(): number {
    return this.#inner.lastEventId
  }

  /** Send a JSON-RPC request and resolve with its `result` (an error rejects `ERR_AGENT_PROTOCOL`, `rpcCode`). */
  request(method: string, params?: unknown, options?: AcpRequestOptions): Promise<unknown> {
    return call(options?.signal, () => {
      check.arg('method', method, 'string')
      check.opts('options', options, { ...check.CALL, id: 'unknown' })
      if (options?.id !== undefined && typeof options.id !== 'string' && typeof options.id !== 'number') {
        check.arg('options.id', options.id, 'string')
      }
      return this.#inner.request(method, params, options)
    })
  }

  /** Send a notification (no response). */
  notify(method: string, params?: unknown): Promise<void> {
    return call(null, () => {
      check.arg('method', method, 'string')
      return this.#inner.notify(method, params)
    })
  }

  /** Answer an agent→client request. */
  respond(id: string | number, result: unknown): Promise<void> {
    return call(null, () => {
      if (typeof id !== 'number') check.arg('id', id, 'string')
      return this.#inner.respond(id, result)
    })
  }

  /** The connection's messages from the server's log after `after`, then live (a second SSE reader). */
  events(options?: EventsOptions): AcpEventStream {
    check.opts('options', options, { after: 'number' })
    return AsyncStream.from(callSync(() => this.#inner.events(options)) as check.Unsafe)
  }

  /** Close the connection (DELETE, bounded) and its agent process. Idempotent. */
  close(): Promise<void> {
    return call(null, () => this.#inner.close())
  }

  /** `await using` closes it. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}
