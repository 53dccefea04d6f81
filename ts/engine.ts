/** A Docker Engine and what lives on it: images, containers, archives. */
import native = require('../native/index.cjs')
import { Files } from './files'
import { call, callSync, type CallOptions } from './call'
import * as check from './check'
export type { WriteFileOptions } from './exec'
import { ExecProcess, onTarget, type Forward, type ForwardOptions, type ExecOptions, type OutputChunk, type WriteFileOptions } from './exec'
import { INTERNAL, bind, internalOnly, unwrap } from './internal'
import { ExecResult } from './result'
import { AsyncStream } from './stream'

/** Options for `DockerEngine.connect()`. */
export interface ConnectEngineOptions extends CallOptions {
  /** The engine's Unix socket (a path or `unix:///path`). */
  socketPath: string
}

/** `engine.version()`. */
export type EngineVersion = native.EngineVersion

/** Options for `images.copyTo()`. */
export interface CopyImageOptions extends CallOptions {
  /**
   * Called with the bytes moved so far and the total while the tar streams (at most every 64 KiB), and once more
   * when the copy has succeeded, before its promise resolves, with `bytesMoved === totalBytes`. Until then
   * `totalBytes` is an estimate: the image's size from inspect, which the tar exceeds by its headers and
   * metadata, raised to `bytesMoved` whenever that passes it. Not called for a skipped copy. Never keeps the
   * process alive.
   */
  onProgress?: (bytesMoved: number, totalBytes: number) => void
}

/** What `images.copyTo()` did. */
export type CopyReport = native.CopyReport

/** `images.inspect(ref)`. */
export type ImageInfo = native.ImageInfo

/** A row of `images.list()`. */
export type ImageSummary = native.ImageSummary

/** Options for `containers.run()`. */
export interface RunOptions extends CallOptions {
  /** Image reference; it must already be on this engine (copy it in with `images.copyTo`). */
  image: string
  /** Container name; one in use rejects with `ERR_CONTAINER_CONFLICT`. */
  name?: string
  cmd?: string[]
  entrypoint?: string[]
  /** Environment of the container's main process. */
  env?: Record<string, string>
  workingDir?: string
  user?: string
  /** `host:container[:ro]` bind mounts. */
  binds?: string[]
  /** Labels set on the container. */
  labels?: Record<string, string>
  /** Run an init as PID 1 that reaps zombies (default `true`). */
  init?: boolean
  /** Signal `stop()` sends first (default: the image's, usually SIGTERM). */
  stopSignal?: string
  /** Remove the container when it exits. */
  autoRemove?: boolean
}

/** Options for `containers.list()`. */
export interface ListContainersOptions extends CallOptions {
  /** Include stopped containers. */
  all?: boolean
  /** Label filters: `key` or `key=value`. */
  labels?: string[]
  /** Name filter (substring match, as the engine does it). */
  name?: string
}

/** A row of `containers.list()`. */
export type ContainerSummary = native.ContainerSummary

/** `container.inspect()`: the essentials, with env keys only (values may be secrets). */
export type ContainerInfo = native.ContainerInfo

/** Options for `container.stop()`. */
export interface StopContainerOptions extends CallOptions {
  /** Seconds to wait after the stop signal before SIGKILL (engine default 10). */
  timeoutSec?: number
}

/** Options for `container.remove()`. */
export interface RemoveContainerOptions extends CallOptions {
  /** Kill it first if it is running. */
  force?: boolean
}

/** Options for `container.logs()`. */
export interface LogsOptions {
  /** Keep streaming new output until the container stops. */
  follow?: boolean
  /** Only logs since this Unix time (seconds). */
  since?: number
}

/** `container.logs()`: log chunks `{ stream, data }`; with `follow`, until the container stops or `break`. */
export type LogStream = AsyncStream<OutputChunk>

const RUN: check.Shape = {
  ...check.CALL,
  image: 'string',
  name: 'string',
  cmd: 'strings',
  entrypoint: 'strings',
  env: 'record',
  workingDir: 'string',
  user: 'string',
  binds: 'strings',
  labels: 'record',
  init: 'boolean',
  stopSignal: 'string',
  autoRemove: 'boolean',
}

/**
 * A Docker Engine (the host's, or a VM's own) on its Unix socket. The API version is negotiated once per socket
 * and pinned on every request. Holds no connection between calls: nothing to close.
 */
export class DockerEngine {
  readonly #inner: native.DockerEngine
  /** Images on this engine. */
  readonly images: Images
  /** Containers on this engine. */
  readonly containers: Containers

  private constructor(token: symbol, inner: native.DockerEngine) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
    this.images = Images.wrap(inner.images)
    this.containers = Containers.wrap(inner.containers)
  }

  /** @internal */
  static wrap(inner: native.DockerEngine): DockerEngine {
    return new DockerEngine(INTERNAL, inner)
  }

  /** Connect to the engine on `socketPath` and negotiate the API version (`ERR_ENGINE_UNAVAILABLE` if none). */
  static connect(options: ConnectEngineOptions): Promise<DockerEngine> {
    return call(options?.signal, async () => {
      check.opts('options', options, { ...check.CALL, socketPath: 'string' }, ['socketPath'])
      return new DockerEngine(INTERNAL, await native.DockerEngine.connect(options))
    })
  }

  /** The host's engine: `DOCKER_HOST` (unix only), then `/var/run/docker.sock`, then Docker Desktop's sockets. */
  static local(options?: CallOptions): Promise<DockerEngine> {
    return call(options?.signal, async () => {
      check.opts('options', options, check.CALL)
      return new DockerEngine(INTERNAL, await native.DockerEngine.local(options))
    })
  }

  /** The engine's socket path. */
  get socketPath(): string {
    return this.#inner.socketPath
  }

  /** The negotiated API version (e.g. `1.41`). */
  get apiVersion(): string {
    return this.#inner.apiVersion
  }

  /** `GET /_ping`. */
  ping(options?: CallOptions): Promise<void> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.ping(options)
    })
  }

  /** `GET /version`. */
  version(options?: CallOptions): Promise<EngineVersion> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.version(options)
    })
  }

  /** Resolves at once: an engine client holds no connection between calls. */
  async [Symbol.asyncDispose](): Promise<void> {}
}

/** Images on one engine. */
export class Images {
  readonly #inner: native.Images

  private constructor(token: symbol, inner: native.Images) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.Images): Images {
    return new Images(INTERNAL, inner)
  }

  /** All images. */
  list(options?: CallOptions): Promise<ImageSummary[]> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.list(options)
    })
  }

  /** Whether `reference` (name:tag or id) is on this engine. */
  exists(reference: string, options?: CallOptions): Promise<boolean> {
    return call(options?.signal, () => {
      check.arg('reference', reference, 'string')
      check.opts('options', options, check.CALL)
      return this.#inner.exists(reference, options)
    })
  }

  /** The image, or `null`. */
  inspect(reference: string, options?: CallOptions): Promise<ImageInfo | null> {
    return call(options?.signal, async () => {
      check.arg('reference', reference, 'string')
      check.opts('options', options, check.CALL)
      return (await this.#inner.inspect(reference, options)) ?? null
    })
  }

  /**
   * Stream image `reference` from this engine into `target` (`docker save | docker load`, without the CLI and
   * without buffering the tar). Skips when the target already has the same image id.
   */
  copyTo(target: DockerEngine, reference: string, options?: CopyImageOptions): Promise<CopyReport> {
    return call(options?.signal, () => {
      const t = unwrap<native.DockerEngine>('target', target, DockerEngine)
      check.arg('reference', reference, 'string')
      check.opts('options', options, { ...check.CALL, onProgress: 'function' })
      return this.#inner.copyTo(t, reference, options as check.Unsafe)
    })
  }
}

/** Containers on one engine. */
export class Containers {
  readonly #inner: native.Containers

  private constructor(token: symbol, inner: native.Containers) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.Containers): Containers {
    return new Containers(INTERNAL, inner)
  }

  /** Create and start a container. A missing image is `ERR_IMAGE_NOT_FOUND` (no registry pull). */
  run(options: RunOptions): Promise<Container> {
    return call(options?.signal, async () => {
      check.opts('options', options, RUN, ['image'])
      return Container.wrap(await this.#inner.run(options))
    })
  }

  /** The container with that name or id, or `null`. */
  get(nameOrId: string, options?: CallOptions): Promise<Container | null> {
    return call(options?.signal, async () => {
      check.arg('nameOrId', nameOrId, 'string')
      check.opts('options', options, check.CALL)
      const c = await this.#inner.get(nameOrId, options)
      return c ? Container.wrap(c) : null
    })
  }

  /** Containers on this engine (running only, unless `all`). */
  list(options?: ListContainersOptions): Promise<ContainerSummary[]> {
    return call(options?.signal, () => {
      check.opts('options', options, { ...check.CALL, all: 'boolean', labels: 'strings', name: 'string' })
      return this.#inner.list(options)
    })
  }
}

/**
 * `container.getArchiveStream(path)`: a tar archive as Buffers, read from the engine only as fast as it is
 * consumed. The engine locks the container until the archive is read or closed, so leave with `break`,
 * `return()` or `await using`, not by dropping the stream.
 */
export class ArchiveStream extends AsyncStream<Buffer> {
  readonly #inner: native.ArchiveStream

  private constructor(token: symbol, inner: native.ArchiveStream, signal: AbortSignal | undefined) {
    internalOnly(token, new.target.name)
    super(inner, signal)
    this.#inner = inner
  }

  /** @internal */
  static wrap(inner: native.ArchiveStream, signal: AbortSignal | undefined): ArchiveStream {
    return new ArchiveStream(INTERNAL, inner, signal)
  }

  /** `await using pieces = box.getArchiveStream(path)`: closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return call(null, () => this.#inner[Symbol.asyncDispose]())
  }
}

/**
 * `container.putArchiveStream(dir)`: a tar archive streamed into directory `dir` as it is written. `write()`
 * waits while the engine is behind; `end()` resolves once the engine has extracted everything. Errors reject the
 * pending `write()` or `end()`.
 */
export class ArchiveUpload {
  readonly #inner: native.ArchiveUpload
  readonly #signal: AbortSignal | undefined

  private constructor(token: symbol, inner: native.ArchiveUpload, signal: AbortSignal | undefined) {
    internalOnly(token, new.target.name)
    this.#inner = inner
    this.#signal = signal
  }

  /** @internal */
  static wrap(inner: native.ArchiveUpload, signal: AbortSignal | undefined): ArchiveUpload {
    return new ArchiveUpload(INTERNAL, inner, signal)
  }

  /** Send the next piece of the tar (a string is sent as UTF-8). */
  write(data: string | Uint8Array): Promise<void> {
    return call(this.#signal, () => {
      check.arg('data', data, 'data')
      return this.#inner.write(data)
    })
  }

  /** End the archive; resolves once the engine has extracted it. */
  end(): Promise<void> {
    return call(this.#signal, () => this.#inner.end())
  }

  /**
   * Break the upload off: the engine sees a broken body, not a short archive (what it had already extracted
   * stays). Pending and later `write()`/`end()` reject with `ABORT_ERR`.
   */
  abort(): Promise<void> {
    return call(null, () => this.#inner.abort())
  }

  /** `await using up = box.putArchiveStream(dir)`: aborts the upload unless `end()` was called. */
  [Symbol.asyncDispose](): Promise<void> {
    return call(null, () => this.#inner[Symbol.asyncDispose]())
  }
}

/** A container on an engine. */
export class Container {
  readonly #inner: native.Container
  #files?: Files

  private constructor(token: symbol, inner: native.Container) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.Container): Container {
    return new Container(INTERNAL, inner)
  }

  /** Full container id. */
  get id(): string {
    return this.#inner.id
  }

  /** Container name (without the leading `/`). */
  get name(): string {
    return this.#inner.name
  }

  /** Start it (a running container is fine). */
  start(options?: CallOptions): Promise<void> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.start(options)
    })
  }

  /** Stop it (a stopped container is fine). */
  stop(options?: StopContainerOptions): Promise<void> {
    return call(options?.signal, () => {
      check.opts('options', options, { ...check.CALL, timeoutSec: 'number' })
      return this.#inner.stop(options)
    })
  }

  /** Remove it (`force` kills it first). */
  remove(options?: RemoveContainerOptions): Promise<void> {
    return call(options?.signal, () => {
      check.opts('options', options, { ...check.CALL, force: 'boolean' })
      return this.#inner.remove(options)
    })
  }

  /** State, image, labels and env keys (never env values). */
  inspect(options?: CallOptions): Promise<ContainerInfo> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.inspect(options)
    })
  }

  /** Wait until it stops; resolves with the exit code. */
  wait(options?: CallOptions): Promise<number> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.wait(options)
    })
  }

  /** Start it if it is not running. */
  ensureRunning(options?: CallOptions): Promise<void> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.ensureRunning(options)
    })
  }

  /** The container's logs as `{ stream, data }` chunks. */
  logs(options?: LogsOptions): LogStream {
    check.opts('options', options, { follow: 'boolean', since: 'number' })
    return AsyncStream.from(callSync(() => this.#inner.logs(options)) as check.Unsafe)
  }

  /**
   * Run `cmd` (argv; no shell is involved) and collect its output. A non-zero exit is a result, never a
   * rejection. A binary that does not exist rejects with `ERR_EXEC_FAILED`.
   */
  exec(cmd: string[], options?: ExecOptions): Promise<ExecResult> {
    return onTarget.exec(this.#inner, cmd, options)
  }

  /** Run `script` with `sh -c` (the script is one argv element: nothing is interpolated by the SDK). */
  sh(script: string, options?: ExecOptions): Promise<ExecResult> {
    return onTarget.sh(this.#inner, script, options)
  }

  /**
   * Reach `port` inside from the host: a listener on 127.0.0.1 (`url`) whose every connection is carried by an
   * exec tunnel, no published port needed. `await using` closes it.
   */
  forward(port: number, options?: ForwardOptions): Promise<Forward> {
    return onTarget.forward(this.#inner, port, options)
  }

  /**
   * Start `cmd` and stream it: output as an async iterator, stdin via `write`/`end`, `kill`, `wait`.
   * `timeoutMs` and `signal` apply to the process's whole life, not only to starting it.
   */
  spawn(cmd: string[], options?: ExecOptions): Promise<ExecProcess> {
    return onTarget.spawn(this.#inner, cmd, options)
  }

  /** Write one file (its directory must exist) through the archive API: no exec, no shell. */
  writeFile(path: string, data: string | Uint8Array, options?: WriteFileOptions): Promise<void> {
    return onTarget.writeFile(this.#inner, path, data, options)
  }

  /**
   * Write the VM's proxy CA (`vm.caCertPem`) into the container, at `path` (default
   * `/usr/local/share/ca-certificates/sandboxd-proxy.crt`, where `vm.proxyEnv()` points the trust variables).
   */
  trustCa(pem: string, path?: string, options?: CallOptions): Promise<void> {
    return call(options?.signal, () => {
      check.arg('pem', pem, 'string')
      check.optArg('path', path, 'string')
      check.opts('options', options, check.CALL)
      return this.#inner.trustCa(pem, path, options)
    })
  }

  /** Files in it: list, stat, exists, mkdir, remove, rename, write, read (see {@link Files}). */
  get files(): Files {
    return (this.#files ??= Files.wrap(this.#inner.files))
  }

  /**
   * Read one regular file through the archive API, following symbolic links (`ERR_PATH_NOT_FOUND` when it does
   * not exist, `ERR_NOT_A_FILE` for a directory, device or FIFO).
   */
  readFile(path: string, options?: CallOptions): Promise<Buffer> {
    return onTarget.readFile(this.#inner, path, options)
  }

  /** Extract a tar archive into directory `dir`. */
  putArchive(dir: string, tar: Uint8Array, options?: CallOptions): Promise<void> {
    return call(options?.signal, () => {
      check.arg('dir', dir, 'string')
      check.arg('tar', tar, 'bytes')
      check.opts('options', options, check.CALL)
      return this.#inner.putArchive(dir, tar, options)
    })
  }

  /**
   * A tar archive of `path` (file or directory), streamed. Memory stays bounded whatever the size; a missing
   * path rejects the first `next()`. `timeoutMs` (default: none) and `signal` bound the whole download.
   */
  getArchiveStream(path: string, options?: CallOptions): ArchiveStream {
    check.arg('path', path, 'string')
    check.opts('options', options, check.CALL)
    return ArchiveStream.wrap(
      callSync(() => this.#inner.getArchiveStream(path, options)),
      options?.signal,
    )
  }

  /**
   * Stream a tar archive into directory `dir`: `await up.write(piece)` for each piece, then `await up.end()`.
   * `timeoutMs` (default: none) and `signal` bound the whole upload; errors reject `write()`/`end()`.
   */
  putArchiveStream(dir: string, options?: CallOptions): ArchiveUpload {
    check.arg('dir', dir, 'string')
    check.opts('options', options, check.CALL)
    return ArchiveUpload.wrap(
      callSync(() => this.#inner.putArchiveStream(dir, options)),
      options?.signal,
    )
  }

  /** A tar archive of `path` (file or directory), in one Buffer (at most 512 MiB; see `getArchiveStream`). */
  getArchive(path: string, options?: CallOptions): Promise<Buffer> {
    return call(options?.signal, () => {
      check.arg('path', path, 'string')
      check.opts('options', options, check.CALL)
      return this.#inner.getArchive(path, options)
    })
  }

  /**
   * `await using box = await engine.containers.run(…)`: removes the container (force) at the end of the scope;
   * one already gone is fine.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.remove({ force: true })
    } catch (e) {
      if (!(e instanceof Error && (e as { code?: string }).code === 'ERR_CONTAINER_NOT_FOUND')) throw e
    }
  }
}
