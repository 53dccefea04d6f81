/**
 * The SDK's one error class, its stable codes, and the conversion of native rejections into it.
 *
 * Native errors arrive as plain `Error`s with a `code` and properties but no useful stack (they are built on the
 * JS thread when a Rust future settles). {@link toSandboxdError} rebuilds them as a {@link SandboxdError} inside the
 * awaiting wrapper, so V8's async stack trace reaches back into the caller's code.
 */
import { ExecResult, execResult } from './result'

/** Every `code` a {@link SandboxdError} can carry. Values never change meaning. */
export const ErrorCodes = {
  /** The sandboxd socket is missing, refuses, is not a socket, or the daemon answers 503. */
  SANDBOXD_UNAVAILABLE: 'ERR_SANDBOXD_UNAVAILABLE',
  /** No VM of that name. */
  VM_NOT_FOUND: 'ERR_VM_NOT_FOUND',
  /** A VM exists for the agent and does not match what was asked for. */
  VM_CONFLICT: 'ERR_VM_CONFLICT',
  /** Input rejected before anything was sent (`argument`, `key`; never the value). */
  INVALID_ARGUMENT: 'ERR_INVALID_ARGUMENT',
  /** The daemon answered something its contract does not allow. */
  SANDBOXD_PROTOCOL: 'ERR_SANDBOXD_PROTOCOL',
  /** A deadline (`timeoutMs`) passed. */
  TIMEOUT: 'ERR_TIMEOUT',
  /** The work was aborted by something other than the caller's signal (a closed stream, an aborted upload). */
  ABORTED: 'ABORT_ERR',
  /** A handle was used after `close()`/`stop()`. */
  CLOSED: 'ERR_CLOSED',
  /** LocalSandboxd could not start or run a VM backend. */
  EMULATOR: 'ERR_EMULATOR',
  /** A bug or an unexpected local failure. */
  INTERNAL: 'ERR_INTERNAL',
  /** A Docker engine socket is missing or refuses connections, or the engine hung up before answering. */
  ENGINE_UNAVAILABLE: 'ERR_ENGINE_UNAVAILABLE',
  /** Any other engine error (`statusCode`, `engineMessage`). */
  ENGINE: 'ERR_ENGINE',
  /** No such container. */
  CONTAINER_NOT_FOUND: 'ERR_CONTAINER_NOT_FOUND',
  /** A container of that name already exists. */
  CONTAINER_CONFLICT: 'ERR_CONTAINER_CONFLICT',
  /** No such image. */
  IMAGE_NOT_FOUND: 'ERR_IMAGE_NOT_FOUND',
  /** The container exists but is not running. */
  CONTAINER_NOT_RUNNING: 'ERR_CONTAINER_NOT_RUNNING',
  /** No file or directory at that path inside the container (`path`). */
  PATH_NOT_FOUND: 'ERR_PATH_NOT_FOUND',
  /** A file was expected at `path`, and something else (a directory) is there. */
  NOT_A_FILE: 'ERR_NOT_A_FILE',
  /** A directory was expected at `path` (or a parent of it), and something else is there. */
  NOT_A_DIRECTORY: 'ERR_NOT_A_DIRECTORY',
  /** Something already exists at `path` (`mkdir` without `recursive`, `rename` onto an existing path). */
  PATH_EXISTS: 'ERR_PATH_EXISTS',
  /** A symbolic link leads outside the directory an operation is confined to (`path`, `linkTarget`, `root`). */
  PATH_ESCAPES: 'ERR_PATH_ESCAPES',
  /** The sandbox refused access to `path` (permissions, a read-only file system). */
  PERMISSION_DENIED: 'ERR_PERMISSION_DENIED',
  /** The exec could not be started (unknown user, missing `cwd`, no such binary). */
  EXEC_FAILED: 'ERR_EXEC_FAILED',
  /** The container or engine went away mid-stream (`result` holds what was received). */
  STREAM_INTERRUPTED: 'ERR_STREAM_INTERRUPTED',
  /** A finished process or closed stdin was written to. */
  PROCESS_FINISHED: 'ERR_PROCESS_FINISHED',
  /** The container has no program to relay HTTP to the agent server. */
  NO_TUNNEL_RELAY: 'ERR_NO_TUNNEL_RELAY',
  /** The sandbox-agent server does not answer. */
  AGENT_UNAVAILABLE: 'ERR_AGENT_UNAVAILABLE',
  /** The agent process exited (`exitCode` when known). */
  AGENT_EXITED: 'ERR_AGENT_EXITED',
  /** The agent server or agent answered something unexpected (`status`, `rpcCode`, `rpcMessage`). */
  AGENT_PROTOCOL: 'ERR_AGENT_PROTOCOL',
  /** The sbx daemon has no valid Docker login (HTTP 401): run `sbx login` (`daemonMessage`). */
  SBX_NOT_LOGGED_IN: 'ERR_SBX_NOT_LOGGED_IN',
  /** The sbx daemon's `apiVersion` is outside `supportedRange` (`daemonVersion` attached). */
  SBX_VERSION_UNSUPPORTED: 'ERR_SBX_VERSION_UNSUPPORTED',
  /** The sbx daemon answers but is degraded (HTTP 503, `daemonMessage`). */
  SBX_DEGRADED: 'ERR_SBX_DEGRADED',
  /** This sbx daemon does not serve that route (an older or newer version lacks the feature). */
  SBX_UNSUPPORTED: 'ERR_SBX_UNSUPPORTED',
  /** No sandbox of that name (`sandbox`). */
  SANDBOX_NOT_FOUND: 'ERR_SANDBOX_NOT_FOUND',
  /** A sandbox of that name exists, or differs from what was asked for (`sandbox`). */
  SANDBOX_CONFLICT: 'ERR_SANDBOX_CONFLICT',
  /** The sandbox exists but is stopped (`sandbox`). */
  SANDBOX_STOPPED: 'ERR_SANDBOX_STOPPED',
  /** No snapshot with that id (`snapshot`). */
  SNAPSHOT_NOT_FOUND: 'ERR_SNAPSHOT_NOT_FOUND',
  /** The backend in use cannot do that (`backend`); another backend can. */
  UNSUPPORTED: 'ERR_UNSUPPORTED',
  /** The v1 service refused the credentials: missing, expired or wrong token, or a refused PAT exchange (`v1Code`). */
  UNAUTHENTICATED: 'ERR_UNAUTHENTICATED',
  /** The v1 service rate-limits or a quota is used up (`v1Code`; `retryDelayMs` when it said how long to wait). */
  RESOURCE_EXHAUSTED: 'ERR_RESOURCE_EXHAUSTED',
} as const

/** The union of every error code. */
export type SandboxdErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes]

const KNOWN_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCodes))

/** Properties an error may carry, by the situations that set them (see the README's error table). */
export interface SandboxdErrorProps {
  /** The argument that was rejected (`ERR_INVALID_ARGUMENT`). */
  argument?: string
  /** The offending key of an object argument (never its value). */
  key?: string
  /** The socket that did not answer. */
  socketPath?: string
  /** An HTTP status from the daemon or the agent server. */
  status?: number
  /** The Docker Engine's HTTP status. */
  statusCode?: number
  /** The Docker Engine's own message. */
  engineMessage?: string
  /** An excerpt of an unexpected body (≤ 512 characters). */
  body?: string
  /** The deadline that passed. */
  timeoutMs?: number
  /** The VM concerned. */
  vmName?: string
  /** A path inside a container (as the caller gave it). */
  path?: string
  /** Where `path` led through symbolic links, when an error was met past one (`readFile`). */
  resolvedPath?: string
  /** What is at `path` instead of a regular file (`ERR_NOT_A_FILE`): `directory`, `device`, `fifo`, … */
  fileType?: string
  /** The name asked for (`ERR_CONTAINER_CONFLICT`). */
  containerName?: string
  /** The container that already has the name, when the engine says (`ERR_CONTAINER_CONFLICT`). */
  existingContainerId?: string
  /** An exit code (agent exit, exec that failed before running). */
  exitCode?: number
  /** A JSON-RPC error code and message from the agent. */
  rpcCode?: number
  rpcMessage?: string
  /** What an interrupted or failed exec produced before it ended. */
  result?: ExecResult
  /** Any other property the SDK documents for a code. */
  [property: string]: unknown
}

/**
 * Every error the SDK rejects or throws with (except an abort by the caller's own signal, which rejects with
 * `signal.reason`, as `fetch` does). Narrow with {@link isSandboxdError}; branch on `code`, never the message.
 */
export class SandboxdError extends Error implements SandboxdErrorProps {
  /** The stable code. */
  readonly code: SandboxdErrorCode
  [property: string]: unknown

  /** Build an error; `props` become own properties (never put a secret in them). */
  constructor(code: SandboxdErrorCode, message: string, props: SandboxdErrorProps = {}, options?: { cause?: unknown }) {
    super(message, options)
    for (const [k, v] of Object.entries(props)) {
      if (k !== 'code' && k !== 'message' && k !== 'stack' && k !== 'name' && k !== 'cause') this[k] = v
    }
    this.code = code
    this.name = code === ErrorCodes.ABORTED ? 'AbortError' : 'SandboxdError'
  }
}

/**
 * True when `e` is a {@link SandboxdError} (with `code`, when given). Narrows `catch (e: unknown)`:
 * `if (isSandboxdError(e, 'ERR_VM_CONFLICT')) e.existingWorkspaceDir`.
 */
export function isSandboxdError<C extends SandboxdErrorCode = SandboxdErrorCode>(
  e: unknown,
  code?: C,
): e is SandboxdError & { code: C } {
  return e instanceof SandboxdError && (code === undefined || e.code === code)
}

/** An `ERR_INVALID_ARGUMENT` for `argument` (and `key` of it); the message never holds the value. */
export function invalidArgument(argument: string, message: string, key?: string): SandboxdError {
  return new SandboxdError(ErrorCodes.INVALID_ARGUMENT, message, key === undefined ? { argument } : { argument, key })
}

/**
 * The error to reject with for a native rejection `e`: the caller's `signal.reason` when that signal aborted the
 * call; else a {@link SandboxdError} with the native code and properties, created here so its stack holds the
 * caller's frames. Anything that is not a coded native error is returned as it is.
 */
export function toSandboxdError(e: unknown, signal?: AbortSignal | null): unknown {
  if (signal?.aborted && isAbort(e)) return signal.reason
  if (!(e instanceof Error) || e instanceof SandboxdError) return e
  const code = (e as { code?: unknown }).code
  if (typeof code !== 'string' || !KNOWN_CODES.has(code)) return e
  const props: SandboxdErrorProps = {}
  for (const k of Object.keys(e)) props[k] = (e as unknown as Record<string, unknown>)[k]
  if (props.result !== undefined) props.result = execResult(props.result) ?? props.result
  return new SandboxdError(code as SandboxdErrorCode, e.message, props, { cause: (e as { cause?: unknown }).cause })
}

function isAbort(e: unknown): boolean {
  return e instanceof Error && (e as { code?: unknown }).code === ErrorCodes.ABORTED
}
