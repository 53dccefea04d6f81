/**
 * The front door: `Sandboxes.connect()` finds whichever sandbox daemon answers (the sbx daemon first, else the
 * legacy `/vm` API) and hands out `Sandbox` handles with one API whatever the backend.
 */
import native = require('../native/index.cjs')
import { Files } from './files'
import { call, type CallOptions } from './call'
import * as check from './check'
import { onTarget, type ExecOptions, type Forward, type ForwardOptions, type ExecProcess, type WriteFileOptions } from './exec'
import { INTERNAL, bind, internalOnly } from './internal'
import { NetworkPolicy, checkSecrets, type SecretInput, type SecretPlaceholder } from './policy'
import type { ExecResult } from './result'

/**
 * The backends a `Sandboxes` client can speak: `'sbx'` (the standalone sbx daemon), `'desktop'` (the legacy `/vm`
 * API) and `'v1'` (the Docker Sandboxes API v1: Docker's cloud over HTTPS, or a local daemon's socket).
 */
export type BackendKind = 'sbx' | 'desktop' | 'v1'

/** Options for `Sandboxes.connect()`. */
export interface SandboxesOptions extends CallOptions {
  /**
   * `'sbx'` (the standalone sbx daemon), `'desktop'` (the legacy `/vm` API of Docker Desktop's removed plugin),
   * `'v1'` (the Docker Sandboxes API v1: the cloud, or a local socket given as `socketPath`), or `'auto'` (the
   * default: sbx when its API answers, else the legacy API; never v1, which needs an endpoint and credentials).
   */
  backend?: 'auto' | BackendKind
  /**
   * The daemon's socket: the only candidate when set. Default: `DOCKER_SANDBOXES_API`, then this OS's sbx
   * sockets, then the legacy `SANDBOXD_SOCKET` / `~/.docker/sandboxes/sandboxd.sock`.
   */
  socketPath?: string
  /** The sbx app name (`sbx --app-name`): a separate daemon instance. */
  appName?: string
  /** How the sbx daemon's `api_version` is checked (default `'lenient'`: any later 0.x). */
  versionCheck?: 'strict' | 'lenient' | 'off'
  /**
   * Desktop backend: the Docker engine a template image missing in a VM is copied from (`unix:///path` or a
   * path). Default: `DOCKER_HOST`, then `/var/run/docker.sock`.
   */
  imageSource?: string
  /**
   * v1: the API's base URL (default `DOCKER_SANDBOXES_URL`, then `https://connect.docker.com/sandboxes`), or
   * `unix:///path` for a local daemon (`socketPath` says the same).
   */
  endpoint?: string
  /** v1: a Docker access token (default `DOCKER_SANDBOXES_TOKEN`). Never logged, never in an error. */
  token?: string
  /** v1: the Docker ID whose personal access token `pat` is exchanged for access tokens (default `DOCKER_ID`). */
  identifier?: string
  /** v1: a personal access token with the `sandbox:use` scope (default `DOCKER_PAT`). Refreshed as it expires. */
  pat?: string
  /** v1: where the PAT is exchanged (default `DOCKER_HUB_URL`, then `https://hub.docker.com`). */
  hubUrl?: string
  /** v1: an extra CA certificate (PEM) to trust for HTTPS, besides the platform's roots. */
  ca?: string
}

/** One sandbox as its backend lists it. */
export type SandboxInfo = native.SandboxInfo

/** An extra host directory mounted at the same path. */
export type AdditionalWorkspace = native.AdditionalWorkspace

/** What to create: `create({ agent, workspace, … })` / `ensure(…)`. */
export interface CreateSandboxOptions extends CallOptions {
  /** A hostname label (letters, digits, `-`, `.`; at most 63). Default: the backend's choice (sbx) or `agent`. */
  name?: string
  /** The agent the sandbox is for (`claude`, `codex`, `shell`, …). */
  agent: string
  /** Absolute path of an existing host directory, mounted at the same path. */
  workspace: string
  /** The template image. sbx: default the agent's own template; desktop: required. */
  template?: string
  /** CPUs (sbx only: the desktop backend rejects it with `ERR_UNSUPPORTED`). */
  cpus?: number
  /** Memory such as `"4g"` (sbx only). */
  memory?: string
  /** Environment for every process in the sandbox. */
  env?: Record<string, string>
  /** More host directories, mounted at the same paths. */
  additionalWorkspaces?: AdditionalWorkspace[]
  /** Labels to find it by. */
  labels?: Record<string, string>
  /**
   * Credentials it uses through the proxy without holding them (`create` only): see {@link SecretInput}. A
   * sandbox whose secrets cannot be set is removed again and `create` rejects.
   */
  secrets?: SecretInput[]
  /**
   * Delete (or stop) it by itself `afterMs` after it is ready (v1 `features.timeouts`; other backends reject with
   * `ERR_UNSUPPORTED`). `info.expiresAt` says when; `renewExpiry()` re-arms it.
   */
  expiry?: ExpiryOptions
}

/** A deadline after which the backend deletes or stops a sandbox by itself. */
export type ExpiryOptions = native.ExpiryOptions

/** A published port. */
export type PublishedPort = native.PublishedPort

/** A port to publish, or the key of published ports to remove (unset fields match any). */
export type PortRequest = native.PortRequest

/**
 * A saved state of a sandbox, restorable as a new sandbox with `Sandboxes.restore()` (the v1 backend; the others
 * reject snapshot calls with `ERR_UNSUPPORTED`).
 */
export type SnapshotInfo = native.SnapshotInfo

/** Options for `sandbox.snapshot()`. */
export interface SnapshotOptions extends CallOptions {
  /** Its name (not empty, no `/`). Default: the sandbox name and the time in milliseconds. */
  name?: string
  description?: string
  /** `'disk'` (the default: files only) or `'all'` (memory too, where the backend can capture it). */
  captureMode?: 'disk' | 'all'
}

/** Options for `Sandboxes.restore()`. */
export interface RestoreOptions extends CallOptions {
  /** The new sandbox's name (the rules of `create()`'s `name`). */
  name: string
}

/** Options for `Sandboxes.removeSnapshot()`. */
export interface RemoveSnapshotOptions extends CallOptions {
  /** Succeed when the snapshot is already gone instead of rejecting with `ERR_SNAPSHOT_NOT_FOUND`. */
  force?: boolean
}

/** Options for removing a sandbox. */
export interface RemoveSandboxOptions extends CallOptions {
  /** Succeed when the sandbox is already gone instead of rejecting with `ERR_SANDBOX_NOT_FOUND`. */
  force?: boolean
}

const CONNECT: check.Shape = {
  ...check.CALL,
  backend: 'string',
  socketPath: 'string',
  appName: 'string',
  versionCheck: 'string',
  imageSource: 'string',
  endpoint: 'string',
  token: 'string',
  identifier: 'string',
  pat: 'string',
  hubUrl: 'string',
  ca: 'string',
}
const CREATE: check.Shape = {
  ...check.CALL,
  name: 'string',
  agent: 'string',
  workspace: 'string',
  template: 'string',
  cpus: 'number',
  memory: 'string',
  env: 'record',
  additionalWorkspaces: 'object',
  labels: 'record',
  expiry: 'object',
}
const EXPIRY: check.Shape = { afterMs: 'number', action: 'string' }
const REMOVE: check.Shape = { ...check.CALL, force: 'boolean' }
const SNAPSHOT: check.Shape = { ...check.CALL, name: 'string', description: 'string', captureMode: 'string' }
const RESTORE: check.Shape = { ...check.CALL, name: 'string' }

/** A snapshot id, or the snapshot itself (its `id`). */
function snapshotId(snapshot: string | Pick<SnapshotInfo, 'id'>): string {
  const id = typeof snapshot === 'object' && snapshot !== null ? snapshot.id : snapshot
  check.arg('snapshot', id, 'string')
  return id
}
const PORT: check.Shape = { sandboxPort: 'number', hostPort: 'number', hostIp: 'string', protocol: 'string' }

/** `publish(p)` / `publish([p, q])`: one request or several, each checked. */
function portList(ports: PortRequest | PortRequest[]): PortRequest[] {
  const list = Array.isArray(ports) ? ports : [ports]
  list.forEach((p, i) => check.opts(`ports[${i}]`, p, PORT, ['sandboxPort']))
  return list
}

/**
 * A client for whichever sandbox daemon answers: `const sandboxes = await Sandboxes.connect()`. Code written
 * against it moves between backends by changing `backend`. Holds no connection: nothing to close.
 */
export class Sandboxes {
  readonly #inner: native.Sandboxes

  private constructor(token: symbol, inner: native.Sandboxes) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /**
   * Find the daemon and connect. Nothing answering rejects with `ERR_SANDBOXD_UNAVAILABLE` whose `triedPaths`
   * lists every path and backend tried, in order; an sbx daemon outside the supported `api_version` range with
   * `ERR_SBX_VERSION_UNSUPPORTED`.
   */
  static connect(options?: SandboxesOptions): Promise<Sandboxes> {
    return call(options?.signal, async () => {
      check.opts('options', options, CONNECT)
      return new Sandboxes(INTERNAL, await native.Sandboxes.connect(options))
    })
  }

  /** Which backend answered. */
  get backend(): BackendKind {
    return this.#inner.backend as BackendKind
  }

  /** The daemon's socket. */
  get socketPath(): string {
    return this.#inner.socketPath
  }

  /** Every sandbox. */
  list(options?: CallOptions): Promise<SandboxInfo[]> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.list(options)
    })
  }

  /** The sandbox of that name, or `null`. */
  get(name: string, options?: CallOptions): Promise<Sandbox | null> {
    return call(options?.signal, async () => {
      check.arg('name', name, 'string')
      check.opts('options', options, check.CALL)
      const s = await this.#inner.get(name, options)
      return s ? Sandbox.wrap(s) : null
    })
  }

  /**
   * Create a sandbox (a first create pulls the template: minutes; default deadline 15 min). One of that name
   * existing already rejects with `ERR_SANDBOX_CONFLICT`. The handle owns it: `await using` removes it.
   */
  create(options: CreateSandboxOptions): Promise<Sandbox> {
    return call(options?.signal, async () => {
      check.opts('options', options, CREATE, ['agent', 'workspace'])
      if (options.expiry !== undefined) check.opts('expiry', options.expiry, EXPIRY, ['afterMs'])
      if (options.secrets !== undefined) checkSecrets('secrets', options.secrets)
      return Sandbox.wrap(await this.#inner.create(options))
    })
  }

  /**
   * Get-or-create. A sandbox of that name made differently (workspace, agent, template) rejects with
   * `ERR_SANDBOX_CONFLICT`: it is never silently reused. The handle does not own it (`await using` leaves it).
   */
  ensure(options: CreateSandboxOptions): Promise<Sandbox> {
    return call(options?.signal, async () => {
      check.opts('options', options, CREATE, ['agent', 'workspace'])
      if (options.expiry !== undefined) check.opts('expiry', options.expiry, EXPIRY, ['afterMs'])
      return Sandbox.wrap(await this.#inner.ensure(options))
    })
  }

  /** The daemon's network policy: rules, checks and the proxy's decision log (see {@link NetworkPolicy}). */
  get policy(): NetworkPolicy {
    return NetworkPolicy.wrap(this.#inner.policy)
  }

  /** Remove a sandbox by name. */
  remove(name: string, options?: RemoveSandboxOptions): Promise<void> {
    return call(options?.signal, () => {
      check.arg('name', name, 'string')
      check.opts('options', options, REMOVE)
      return this.#inner.remove(name, options)
    })
  }

  /** Every snapshot (v1; other backends reject with `ERR_UNSUPPORTED`). */
  snapshots(options?: CallOptions): Promise<SnapshotInfo[]> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.snapshots(options)
    })
  }

  /**
   * A new sandbox `name` from a snapshot (its id, or what `snapshot()` resolved with), resolving once it runs. The
   * handle owns it, as one from `create()` does. An unknown id rejects with `ERR_SNAPSHOT_NOT_FOUND`; a sandbox of
   * that name existing already with `ERR_SANDBOX_CONFLICT`.
   */
  restore(snapshot: string | Pick<SnapshotInfo, 'id'>, options: RestoreOptions): Promise<Sandbox> {
    return call(options?.signal, async () => {
      const id = snapshotId(snapshot)
      check.opts('options', options, RESTORE, ['name'])
      return Sandbox.wrap(await this.#inner.restore(id, options))
    })
  }

  /** Delete a snapshot (`force`: one already gone is success). Sandboxes restored from it are not affected. */
  removeSnapshot(snapshot: string | Pick<SnapshotInfo, 'id'>, options?: RemoveSnapshotOptions): Promise<void> {
    return call(options?.signal, () => {
      const id = snapshotId(snapshot)
      check.opts('options', options, REMOVE)
      return this.#inner.removeSnapshot(id, options)
    })
  }

  /** Resolves at once: the client holds no connection between calls. */
  async [Symbol.asyncDispose](): Promise<void> {}
}

/** One sandbox: exec, spawn and files work the same on every backend. */
export class Sandbox {
  readonly #inner: native.Sandbox
  #files?: Files
  #policy?: NetworkPolicy

  private constructor(token: symbol, inner: native.Sandbox) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.Sandbox): Sandbox {
    return new Sandbox(INTERNAL, inner)
  }

  /** The sandbox name. */
  get name(): string {
    return this.#inner.name
  }
  /** Which backend it lives on. */
  get backend(): BackendKind {
    return this.#inner.backend as BackendKind
  }
  /** What the backend said when this handle was made (`refresh()` asks again). */
  get info(): SandboxInfo {
    return this.#inner.info
  }
  /** Whether `await using` removes it (true for handles from `create()`). */
  get owned(): boolean {
    return this.#inner.owned
  }

  /** Ask the backend for its current state; one gone since rejects with `ERR_SANDBOX_NOT_FOUND`. */
  refresh(options?: CallOptions): Promise<SandboxInfo> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.refresh(options)
    })
  }

  /** Run `cmd` (argv, no shell) and collect its output. A non-zero exit is a result, never a rejection. */
  exec(cmd: string[], options?: ExecOptions): Promise<ExecResult> {
    return onTarget.exec(this.#inner, cmd, options)
  }

  /** Run `script` with `sh -c` (the script is one argv element: nothing is interpolated by the SDK). */
  sh(script: string, options?: ExecOptions): Promise<ExecResult> {
    return onTarget.sh(this.#inner, script, options)
  }

  /**
   * Start `cmd` and stream it: output as an async iterator, stdin via `write`/`end`, `kill`, `wait`.
   * `timeoutMs` and `signal` apply to the process's whole life.
   */
  spawn(cmd: string[], options?: ExecOptions): Promise<ExecProcess> {
    return onTarget.spawn(this.#inner, cmd, options)
  }

  /**
   * Replace its secrets (see {@link SecretInput}); resolves with what it sees of each. Processes started afterwards
   * find the placeholders in their environment.
   */
  setSecrets(secrets: SecretInput[], options?: CallOptions): Promise<SecretPlaceholder[]> {
    return call(options?.signal, () => {
      checkSecrets('secrets', secrets)
      check.opts('options', options, check.CALL)
      return this.#inner.setSecrets(secrets, options)
    })
  }

  /**
   * Its network policy: rules that apply to it alone (with the global ones), checks decided for it, and the
   * proxy's log rows of its traffic (see {@link NetworkPolicy}). Its rules are dropped with it.
   */
  get policy(): NetworkPolicy {
    return (this.#policy ??= NetworkPolicy.wrap(this.#inner.policy))
  }

  /** Files in it: list, stat, exists, mkdir, remove, rename, write, read (see {@link Files}). */
  get files(): Files {
    return (this.#files ??= Files.wrap(this.#inner.files))
  }

  /** Read one regular file (`ERR_PATH_NOT_FOUND` when missing, `ERR_NOT_A_FILE` for a directory). */
  readFile(path: string, options?: CallOptions): Promise<Buffer> {
    return onTarget.readFile(this.#inner, path, options)
  }

  /** Write one file (its directory must exist): no exec, no shell. */
  writeFile(path: string, data: string | Uint8Array, options?: WriteFileOptions): Promise<void> {
    return onTarget.writeFile(this.#inner, path, data, options)
  }

  /**
   * Reach `port` inside from the host: a listener on 127.0.0.1 (`url`) whose every connection is carried by an
   * exec tunnel, no published port needed. `await using` closes it.
   */
  forward(port: number, options?: ForwardOptions): Promise<Forward> {
    return onTarget.forward(this.#inner, port, options)
  }

  /** Its published ports (sbx; other backends reject with `ERR_UNSUPPORTED`). */
  ports(options?: CallOptions): Promise<PublishedPort[]> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.ports(options)
    })
  }

  /**
   * Publish ports on the host through the daemon (sbx; LocalSandboxd serves them on 127.0.0.1 over exec tunnels).
   * Resolves with every published port afterwards. For a port only this process needs, `forward()` works on every
   * backend.
   */
  publish(ports: PortRequest | PortRequest[], options?: CallOptions): Promise<PublishedPort[]> {
    return call(options?.signal, () => {
      const list = portList(ports)
      check.opts('options', options, check.CALL)
      return this.#inner.publish(list, options)
    })
  }

  /** Unpublish every published port matching one of `ports`; resolves with the daemon's message. */
  unpublish(ports: PortRequest | PortRequest[], options?: CallOptions): Promise<string> {
    return call(options?.signal, () => {
      const list = portList(ports)
      check.opts('options', options, check.CALL)
      return this.#inner.unpublish(list, options)
    })
  }

  /** Save the sandbox as a template image `tag` (`sbx template save`); resolves with the daemon's message. */
  saveTemplate(tag: string, options?: CallOptions): Promise<string> {
    return call(options?.signal, () => {
      check.arg('tag', tag, 'string')
      check.opts('options', options, check.CALL)
      return this.#inner.saveTemplate(tag, options)
    })
  }

  /**
   * Snapshot it (v1: it must be running; other backends reject with `ERR_UNSUPPORTED`), resolving once the
   * snapshot is ready. `Sandboxes.restore(snapshot, { name })` makes a new sandbox from it; the snapshot stays until
   * `removeSnapshot()`.
   */
  snapshot(options?: SnapshotOptions): Promise<SnapshotInfo> {
    return call(options?.signal, () => {
      check.opts('options', options, SNAPSHOT)
      return this.#inner.snapshot(options)
    })
  }

  /**
   * Re-arm its deadline to `afterMs` from now (v1, in the cloud: a local daemon answers `unimplemented`, and the
   * other backends have no deadline: `ERR_UNSUPPORTED`). Resolves with what the backend reports (`expiresAt`).
   */
  renewExpiry(afterMs: number, options?: CallOptions): Promise<SandboxInfo> {
    return call(options?.signal, () => {
      check.arg('afterMs', afterMs, 'number')
      check.opts('options', options, check.CALL)
      return this.#inner.renewExpiry(afterMs, options)
    })
  }

  /** Start it if it is stopped. */
  start(options?: CallOptions): Promise<void> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.start(options)
    })
  }

  /** Stop it (its files stay; `start()` resumes it). */
  stop(options?: CallOptions): Promise<void> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.stop(options)
    })
  }

  /** Remove it (`force`: one already gone is success). */
  remove(options?: RemoveSandboxOptions): Promise<void> {
    return call(options?.signal, () => {
      check.opts('options', options, REMOVE)
      return this.#inner.remove(options)
    })
  }

  /** `await using`: removes the sandbox if this handle created it (`owned`), else does nothing. */
  [Symbol.asyncDispose](): Promise<void> {
    return call(null, () => this.#inner[Symbol.asyncDispose]())
  }

  /** Plain data for logging and `JSON.stringify`. */
  toJSON(): SandboxInfo & { backend: BackendKind } {
    return { ...this.info, backend: this.backend }
  }
}
