/** `doctor()`: what the SDK finds on this machine (sbx daemon, routes, legacy `/vm` API), as a bug-report attachment. */
import native = require('../native/index.cjs')
import { call, type CallOptions } from './call'
import * as check from './check'

/** Options for {@link doctor}. `timeoutMs` bounds the whole run (default 30 s); probes past it are reported as skipped. */
export interface DoctorOptions extends CallOptions {
  /** A socket path (or `\\.\pipe\…`): the only sbx candidate, also probed for the legacy `/vm` API. */
  socketPath?: string
  /** The sbx app name (`sbx --app-name`). Default: `DOCKER_SANDBOXES_APP_NAME`. */
  appName?: string
}

/** What happened at one endpoint. */
export type DoctorOutcome =
  | 'missing'
  | 'notSocket'
  | 'refused'
  | 'permissionDenied'
  | 'timeout'
  | 'brokenExchange'
  | 'connectError'
  | 'answered'
  | 'skipped'

/** One sbx discovery candidate and what `GET /daemon/health` did there. */
export interface DoctorCandidate {
  /** The socket path or pipe name. */
  endpoint: string
  transport: 'unix' | 'pipe'
  outcome: DoctorOutcome
  /** The HTTP status of the health answer, when one came. */
  httpStatus?: number
  /** The error or answer in words. */
  detail?: string
  /** Whether the SDK's discovery stops here (the first candidate that answered at all). */
  selected: boolean
}

/** The version gate's verdict in one mode. */
export interface DoctorGateVerdict {
  mode: 'strict' | 'lenient'
  /** The accepted `api_version` range, e.g. `>=0.26.0 <0.27.0`. */
  range: string
  ok: boolean
  /** The SDK's error message when the daemon fails the gate. */
  message?: string
}

/** A JSON `GET` as answered: the body with every field kept (`null` when it was not JSON), and what was wrong. */
export interface DoctorJsonAnswer {
  httpStatus?: number
  body: unknown
  error?: string
}

/**
 * What `OPTIONS` said about a route: `served` (an `Allow` header came), `notServed` (404 without `Allow`: the
 * daemon's router does not know the route), `noOptionsAnswer` (an answer that does not say), `failed` (no HTTP
 * answer), `skipped` (the run's deadline passed or it was aborted).
 */
export type DoctorRouteVerdict = 'served' | 'notServed' | 'noOptionsAnswer' | 'failed' | 'skipped'

/** One route the SDK uses, probed with `OPTIONS`. */
export interface DoctorRoute {
  /** The route as the API describes it (`/sandbox/{name}/start`). */
  route: string
  /** The path probed (with a sandbox name that cannot exist). */
  path: string
  /** The methods the SDK sends to it. */
  methods: string[]
  verdict: DoctorRouteVerdict
  httpStatus?: number
  /** The methods the `Allow` header lists (absent without the header). */
  allow?: string[]
  /** Methods the SDK sends that `Allow` does not list. */
  missingMethods?: string[]
  detail?: string
}

/** The sbx daemon the SDK's discovery stops at. */
export interface DoctorDaemon {
  endpoint: string
  /** `GET /daemon/health` as answered. */
  health: DoctorJsonAnswer
  /** The daemon's `version`, if it said. */
  version?: string
  /** The daemon's `api_version`, if it said. */
  apiVersion?: string
  /** The version gate in strict mode (the tested range). */
  strict: DoctorGateVerdict
  /** The version gate in lenient mode (the SDK's default). */
  lenient: DoctorGateVerdict
  /** `GET /daemon/info` as answered (`api_socket`, `docker_socket`, and any field the daemon adds). */
  info: DoctorJsonAnswer
  /** The sandbox name used in per-sandbox route probes. */
  placeholderSandbox: string
  routes: DoctorRoute[]
}

/** The legacy `/vm` API at one socket. */
export interface DoctorLegacyProbe {
  endpoint: string
  /**
   * `desktop`: the socket the desktop backend uses (the explicit socket, else `SANDBOXD_SOCKET`, else
   * `~/.docker/sandboxes/sandboxd.sock`); `sbx`: the examined sbx endpoint when that is another socket.
   */
  role: 'sbx' | 'desktop'
  /** Whether `GET /vm` answered as the contract says. */
  answers: boolean
  vmCount?: number
  /** The SDK's error code when it did not answer. */
  errorCode?: string
  detail?: string
}

/** The backend `Sandboxes.connect()` picks with default options and this run's `socketPath`/`appName`. */
export interface DoctorChoice {
  /** `none` when connect rejects. */
  backend: 'sbx' | 'desktop' | 'none'
  /** The socket it talks to (or the one its error names). */
  socketPath?: string
  /** The code connect rejects with, when it does. */
  errorCode?: string
  /** Why: connect's own error message when it rejects. */
  reason: string
}

/** The report {@link doctor} resolves with (the CLI's `--json` output). */
export interface DoctorReport {
  sdkVersion: string
  /** Node's `process.platform` name. */
  platform: string
  /** Node's `process.arch` name. */
  arch: string
  /** Where the candidates came from: `socketPath option`, `DOCKER_SANDBOXES_API` or `defaults`. */
  discovery: string
  /** Every sbx candidate, in discovery order. */
  candidates: DoctorCandidate[]
  /** The sbx endpoint discovery stops at, examined in detail (`null` when none answered). */
  daemon: DoctorDaemon | null
  legacy: DoctorLegacyProbe[]
  /** What `Sandboxes.connect()` returns with default options (run for real, not inferred). */
  sdkWouldUse: DoctorChoice
  /** Whether the SDK would find a backend it can use. */
  ok: boolean
  notes: string[]
  elapsedMs: number
}

const DOCTOR: check.Shape = { ...check.CALL, socketPath: 'string', appName: 'string' }

/**
 * What the SDK finds on this machine: every sbx candidate socket in discovery order, the daemon's version, the
 * version gate in both modes, `/daemon/info`, which routes answer `OPTIONS`, whether the legacy `/vm` API
 * answers, and the backend the SDK would use. Problems are facts in the report: it rejects only for bad options
 * or an abort.
 */
export function doctor(options?: DoctorOptions): Promise<DoctorReport> {
  return call(options?.signal, async () => {
    check.opts('options', options, DOCTOR)
    return (await native.doctor(options)) as unknown as DoctorReport
  })
}
