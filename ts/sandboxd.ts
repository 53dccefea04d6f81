/** The legacy sandboxd daemon (`/vm` API of Docker Desktop's `docker sandbox` plugin) and LocalSandboxd. */
import native = require('../native/index.cjs')
import { call, callSync, type CallOptions } from './call'
import * as check from './check'
import { DockerEngine } from './engine'
import { INTERNAL, bind, internalOnly } from './internal'

/** Options for `new Sandboxd()`. */
export interface SandboxdOptions {
  /** The sandboxd socket. Default: `SANDBOXD_SOCKET`, then `~/.docker/sandboxes/sandboxd.sock`. */
  socketPath?: string
  /** Deadline for every call, in milliseconds. Default: 30 s for list/get/remove/ping, 5 min for create/ensure. */
  timeoutMs?: number
}

/** What to create: `create({ agentName, workspaceDir })` / `ensure(…)`. */
export interface CreateVmOptions extends CallOptions {
  /** Agent name (letters, digits, `_`, `.`, `-`); the VM is named `<agentName>-vm`. */
  agentName: string
  /** Absolute path of an existing host directory, shared into the VM at the same path. */
  workspaceDir: string
}

/** Options for removing a VM. */
export interface RemoveVmOptions extends CallOptions {
  /** Succeed when the VM is already gone instead of rejecting with `ERR_VM_NOT_FOUND`. */
  force?: boolean
}

/** One VM as listed by sandboxd. */
export type VmInfo = native.VmInfo

/** A `Vm` as plain data (what `JSON.stringify(vm)` shows; the CA PEM is left out). */
export interface VmJson extends VmInfo {
  socketPath: string
  stateDir: string
  fileSharingDirectories: string[]
  caCertPath?: string
}

/** Options for `LocalSandboxd.start()`. */
export interface LocalSandboxdOptions {
  /**
   * State root: gets `sandboxd.sock` and `vm/<name>/`. Must be owned by this user and not group/world writable.
   * Default: a new private directory under /tmp, removed by `stop()`.
   */
  root?: string
  /**
   * `'dockerd'`: one private dockerd per VM (needs root and dockerd; VMs are isolated). `'relay'`: each VM socket
   * forwards to an existing engine (`dockerHost`); VMs are NOT isolated. Default: `'dockerd'` when running as
   * root with dockerd on PATH, else `'relay'`.
   */
  backend?: 'dockerd' | 'relay'
  /** For `'relay'`: the engine to forward to (`unix:///path` or a path). Default: `DOCKER_HOST`, then `/var/run/docker.sock`. */
  dockerHost?: string
  /** For `'dockerd'`: the dockerd binary. Default: `dockerd` on PATH. */
  dockerdPath?: string
  /**
   * The filtering proxy every sbx sandbox goes out through (at `host.docker.internal:3128` inside it, its only
   * route anywhere).
   */
  proxy?: LocalProxyOptions
}

/** Settings of LocalSandboxd's filtering proxy. */
export interface LocalProxyOptions {
  /**
   * Fixed answers, name → addresses, used before the system resolver: a "fake internet" of local test servers
   * (`{ 'api.example.test': ['198.18.0.1'] }`).
   */
  hosts?: Record<string, string[]>
  /** Whether other names are looked up with the system resolver (default true; tests set false). */
  systemResolver?: boolean
  /** Extra CA certificates (PEM) the proxy trusts for upstream TLS, besides the platform's. */
  upstreamCa?: string[]
  /** The global rules at start (default `'allow-all'`; private ranges stay blocked). */
  preset?: 'allow-all' | 'balanced' | 'deny-all'
}

const CREATE_VM: check.Shape = { ...check.CALL, agentName: 'string', workspaceDir: 'string' }
const REMOVE_VM: check.Shape = { ...check.CALL, force: 'boolean' }

/**
 * A client for the legacy sandboxd daemon (Docker Desktop's removed `docker sandbox` plugin) on its Unix socket,
 * or for LocalSandboxd. Holds no connection: nothing to close.
 */
export class Sandboxd {
  readonly #inner: native.Sandboxd

  /** Socket resolution: `options.socketPath`, then `SANDBOXD_SOCKET`, then `~/.docker/sandboxes/sandboxd.sock`. */
  constructor(options?: SandboxdOptions) {
    check.opts('options', options, { socketPath: 'string', timeoutMs: 'number' })
    this.#inner = bind(this, callSync(() => new native.Sandboxd(options)))
  }

  /** The socket this client talks to. */
  get socketPath(): string {
    return this.#inner.socketPath
  }

  /** Resolves when sandboxd answers `GET /vm` as the contract says. */
  ping(options?: CallOptions): Promise<void> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.ping(options)
    })
  }

  /** Every VM sandboxd knows. */
  list(options?: CallOptions): Promise<VmInfo[]> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.list(options)
    })
  }

  /** The VM of that name, or `null`. */
  get(name: string, options?: CallOptions): Promise<Vm | null> {
    return call(options?.signal, async () => {
      check.arg('name', name, 'string')
      check.opts('options', options, check.CALL)
      const vm = await this.#inner.get(name, options)
      return vm ? Vm.wrap(vm) : null
    })
  }

  /** Create a VM. A VM that already exists for the agent rejects with `ERR_VM_CONFLICT` (on LocalSandboxd). */
  create(options: CreateVmOptions): Promise<Vm> {
    return call(options?.signal, async () => {
      check.opts('options', options, CREATE_VM, ['agentName', 'workspaceDir'])
      return Vm.wrap(await this.#inner.create(options))
    })
  }

  /**
   * Get-or-create the VM for `agentName` (idempotent). Concurrent calls with the same arguments, from one process
   * or several, resolve to the same VM and one is created; a VM still starting is waited for within `timeoutMs`
   * and `signal`. An existing VM with another workspace rejects with `ERR_VM_CONFLICT`: it is never silently
   * reused.
   */
  ensure(options: CreateVmOptions): Promise<Vm> {
    return call(options?.signal, async () => {
      check.opts('options', options, CREATE_VM, ['agentName', 'workspaceDir'])
      return Vm.wrap(await this.#inner.ensure(options))
    })
  }

  /** Remove a VM by name. Rejects with `ERR_VM_NOT_FOUND` unless `force` is set. */
  remove(name: string, options?: RemoveVmOptions): Promise<void> {
    return call(options?.signal, () => {
      check.arg('name', name, 'string')
      check.opts('options', options, REMOVE_VM)
      return this.#inner.remove(name, options)
    })
  }

  /** Resolves at once: a `Sandboxd` holds no connection between calls. */
  async [Symbol.asyncDispose](): Promise<void> {}
}

/**
 * The legacy `/vm` client under a name that says so: the same class as {@link Sandboxd}. New code uses
 * `Sandboxes.connect()`, whose `desktop` backend speaks this API too.
 */
export const LegacySandboxd = Sandboxd
/** The legacy `/vm` client (see {@link LegacySandboxd}). */
export type LegacySandboxd = Sandboxd

/** A sandboxd microVM: its Docker engine socket, state dir and proxy CA. */
export class Vm {
  readonly #inner: native.Vm

  private constructor(token: symbol, inner: native.Vm) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.Vm): Vm {
    return new Vm(INTERNAL, inner)
  }

  /** sandboxd's VM id. */
  get id(): string {
    return this.#inner.id
  }
  /** The VM name. */
  get name(): string {
    return this.#inner.name
  }
  /** The agent the VM was created for. */
  get agentName(): string {
    return this.#inner.agentName
  }
  /** The host directory shared into the VM (same absolute path inside). */
  get workspaceDir(): string {
    return this.#inner.workspaceDir
  }
  /** The VM's own Docker Engine socket. */
  get socketPath(): string {
    return this.#inner.socketPath
  }
  /** The VM's state directory on the host. */
  get stateDir(): string {
    return this.#inner.stateDir
  }
  /** Host directories synced into the VM. */
  get fileSharingDirectories(): string[] {
    return this.#inner.fileSharingDirectories
  }
  /** The VM's proxy CA certificate (PEM), or `null` when sandboxd gave none. */
  get caCertPem(): string | null {
    return this.#inner.caCertPem ?? null
  }
  /** Where the proxy CA lives on the host, when known. */
  get caCertPath(): string | null {
    return this.#inner.caCertPath ?? null
  }

  /**
   * The environment its containers need: `HTTP(S)_PROXY`/`NO_PROXY` for the host proxy, and the CA trust
   * variables pointing at `caPath` (default `/usr/local/share/ca-certificates/sandboxd-proxy.crt`; write it with
   * `container.trustCa(vm.caCertPem)`). Never disables TLS verification.
   */
  proxyEnv(caPath?: string): Record<string, string> {
    check.optArg('caPath', caPath, 'string')
    return callSync(() => this.#inner.proxyEnv(caPath))
  }

  /** Connect to the VM's own Docker engine (API version negotiated for this socket). */
  engine(options?: CallOptions): Promise<DockerEngine> {
    return call(options?.signal, async () => {
      check.opts('options', options, check.CALL)
      return DockerEngine.wrap(await this.#inner.engine(options))
    })
  }

  /** Remove this VM. Rejects with `ERR_VM_NOT_FOUND` if it is already gone, unless `force` is set. */
  remove(options?: RemoveVmOptions): Promise<void> {
    return call(options?.signal, () => {
      check.opts('options', options, REMOVE_VM)
      return this.#inner.remove(options)
    })
  }

  /** `await using vm = …` removes the VM at the end of the scope (a VM already gone is fine). */
  [Symbol.asyncDispose](): Promise<void> {
    return call(null, () => this.#inner[Symbol.asyncDispose]())
  }

  /** Plain data for logging and `JSON.stringify` (the CA PEM is left out). */
  toJSON(): VmJson {
    return this.#inner.toJSON() as VmJson
  }
}

/**
 * A stand-in sandboxd on Linux, serving the same API on a Unix socket with a real Docker engine per VM. Use it in
 * tests: `await using sbx = await LocalSandboxd.start(); new Sandboxd({ socketPath: sbx.socketPath })`.
 */
export class LocalSandboxd {
  readonly #inner: native.LocalSandboxd

  private constructor(token: symbol, inner: native.LocalSandboxd) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /**
   * Start serving. Rejects with `ERR_EMULATOR` when the backend cannot run, `ERR_INVALID_ARGUMENT` for bad
   * options (an unsafe root included). Whatever is still running when Node exits is killed then.
   */
  static start(options?: LocalSandboxdOptions): Promise<LocalSandboxd> {
    return call(null, async () => {
      check.opts('options', options, { root: 'string', backend: 'string', dockerHost: 'string', dockerdPath: 'string', proxy: 'object' })
      check.opts('options.proxy', options?.proxy, { systemResolver: 'boolean', preset: 'string', upstreamCa: 'strings', hosts: 'object' })
      return new LocalSandboxd(INTERNAL, await native.LocalSandboxd.start(options))
    })
  }

  /** The sandboxd socket to pass to `new Sandboxd({ socketPath })`. */
  get socketPath(): string {
    return this.#inner.socketPath
  }
  /** The state root (`sandboxd.sock`, `vm/<name>/`). */
  get root(): string {
    return this.#inner.root
  }
  /** The backend in use. */
  get backend(): 'dockerd' | 'relay' {
    return this.#inner.backend as 'dockerd' | 'relay'
  }
  /** PIDs of the VMs' private dockerd processes (empty for `'relay'`). */
  get enginePids(): number[] {
    return this.#inner.enginePids
  }

  /**
   * Stop serving, stop every VM engine, remove sockets and state. Idempotent. Requests being served get their
   * answers (up to 10 s); a create still starting its engine is answered HTTP 503 (`ERR_SANDBOXD_UNAVAILABLE`).
   */
  stop(): Promise<void> {
    return call(null, () => this.#inner.stop())
  }

  /** `await using sbx = await LocalSandboxd.start()` stops it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop()
  }
}
