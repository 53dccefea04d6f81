/** Commands in a container: options, the streamed process, and its output items. */
import native = require('../native/index.cjs')
import { call, type CallOptions } from './call'
import * as check from './check'
import { INTERNAL, bind, internalOnly } from './internal'
import { ExecResult } from './result'
import { AsyncStream } from './stream'

/** Options for `exec()`, `sh()` and `spawn()`. */
export interface ExecOptions {
  /** Environment for this command only. Values may contain anything but NUL; keys no `=` or NUL. */
  env?: Record<string, string>
  /** Working directory (absolute). */
  cwd?: string
  /** `user`, `uid`, or `uid:gid`. */
  user?: string
  /** Bytes for stdin, closed after writing (`exec`/`sh` only; with `spawn` use `write`/`end`). */
  stdin?: string | Uint8Array
  /**
   * Allocate a TTY (stdout and stderr merge). `{ cols, rows }` also sizes it before the program starts (where
   * the container has `/bin/sh` and `stty`; elsewhere the engine's resize follows the start at once).
   */
  tty?: boolean | TtySize
  /**
   * Kill the whole process tree after this many milliseconds; `exec` then resolves with `timedOut: true`.
   * If the engine has not even created the exec by then, the call rejects with `ERR_TIMEOUT`: nothing ran.
   */
  timeoutMs?: number
  /**
   * Aborting kills the process tree; `exec` rejects with `signal.reason`. With `spawn` it works for the whole
   * life of the process: the output ends and `wait()` resolves with `aborted: true` (an abort before the
   * process started rejects `spawn` with `signal.reason`).
   */
  signal?: AbortSignal
  /** Keep at most this many bytes of stdout and of stderr (the rest is read and dropped; `truncated: true`). */
  maxOutputBytes?: number
}

/** The type of each {@link ExecOptions} key. */
export const EXEC_OPTIONS: check.Shape = {
  ...check.CALL,
  env: 'record',
  cwd: 'string',
  user: 'string',
  stdin: 'data',
  tty: 'tty',
  maxOutputBytes: 'number',
}

/** A terminal size. */
export type TtySize = native.TtySize

/** Which output stream a piece came from. */
export type StreamName = 'stdout' | 'stderr'

/** A piece of output. */
export type OutputChunk = native.OutputChunk

/** One line of output (without its line ending). */
export type OutputLine = native.OutputLine

/** What `proc.read(buffer)` put in the buffer. */
export type ReadResult = native.ReadResult

/** How a streamed process ended. */
export type ExitStatus = native.ExitStatus

/** `proc.lines()`: the output as `{ stream, line }`. */
export type LineStream = AsyncStream<OutputLine>

/**
 * A process started with `container.spawn()`. `for await (const { stream, data } of proc)` reads its output in
 * order, with backpressure; `write`/`end` feed stdin; `kill` signals the whole process group. Leaving a `for
 * await` with `break` stops reading (further output is discarded); the process keeps running until it exits,
 * is killed, or the handle is disposed.
 */
export class ExecProcess extends AsyncStream<OutputChunk> {
  readonly #inner: native.ExecProcess

  private constructor(token: symbol, inner: native.ExecProcess, signal: AbortSignal | undefined) {
    internalOnly(token, new.target.name)
    super(inner, signal)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.ExecProcess, signal: AbortSignal | undefined): ExecProcess {
    return new ExecProcess(INTERNAL, inner, signal)
  }

  /**
   * Read the next output into `buffer` (bring your own buffer): at most `buffer.length` bytes of one stream,
   * written at its start. Resolves `null` at the end. Reusing one buffer streams any amount of output with no
   * allocation per chunk.
   */
  read(buffer: Uint8Array): Promise<ReadResult | null> {
    return call(null, () => {
      check.arg('buffer', buffer, 'bytes')
      return this.#inner.read(buffer)
    })
  }

  /** Output as text lines, `{ stream, line }`, each stream split on `\n` (a trailing `\r` is dropped). */
  lines(): LineStream {
    return AsyncStream.from(this.#inner.lines() as check.Unsafe)
  }

  /** The process id inside the container (known shortly after start), or `null`. */
  get pid(): number | null {
    return this.#inner.pid
  }

  /** Write to stdin. Rejects with `ERR_PROCESS_FINISHED` after `end()` or once the process is gone. */
  write(data: string | Uint8Array): Promise<void> {
    return call(null, () => {
      check.arg('data', data, 'data')
      return this.#inner.write(data)
    })
  }

  /** Resize the terminal of a process spawned with `tty` (the program sees SIGWINCH). */
  resize(size: TtySize): Promise<void> {
    return call(null, () => {
      check.arg('size', size, typeof size === 'boolean' ? 'object' : 'tty')
      return this.#inner.resize(size)
    })
  }

  /** Close stdin: the process reads EOF (a real half-close). Idempotent. */
  end(): Promise<void> {
    return call(null, () => this.#inner.end())
  }

  /**
   * Send `signal` (default `SIGTERM`) to the whole process group, children included. Output already queued
   * stays readable; output written after the kill is discarded.
   */
  kill(signal?: string): Promise<void> {
    return call(null, () => {
      check.optArg('signal', signal, 'string')
      return this.#inner.kill(signal)
    })
  }

  /** Wait for the exit. If the output is not being read, it is discarded so the process cannot stall. */
  wait(options?: CallOptions): Promise<ExitStatus> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.wait(options)
    })
  }

  /** `await using proc = await box.spawn(…)`: kills the process tree (TERM, then KILL) if it still runs. */
  [Symbol.asyncDispose](): Promise<void> {
    return call(null, () => this.#inner[Symbol.asyncDispose]())
  }
}

/** Options for `writeFile()`. */
export interface WriteFileOptions extends CallOptions {
  /** File mode (default `0o644`). */
  mode?: number
}

/** Options for `forward(port)`. */
export interface ForwardOptions extends CallOptions {
  /** The host port on 127.0.0.1 (default: any free one). */
  hostPort?: number
}

/**
 * `forward(port)`: a loopback listener on the host whose every connection reaches `port` inside the sandbox
 * through an exec tunnel (no published port). `await using` closes it and ends its connections.
 */
export class Forward {
  readonly #inner: native.Forward

  private constructor(token: symbol, inner: native.Forward) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.Forward): Forward {
    return new Forward(INTERNAL, inner)
  }

  /** `http://127.0.0.1:<hostPort>`: give it to `fetch` or any HTTP client. */
  get url(): string {
    return this.#inner.url
  }
  /** The host port it listens on (127.0.0.1). */
  get hostPort(): number {
    return this.#inner.hostPort
  }
  /** The port inside the sandbox. */
  get port(): number {
    return this.#inner.port
  }

  /** Stop listening and end every open connection (their tunnels inside the sandbox go too). Idempotent. */
  close(): Promise<void> {
    return call(null, () => this.#inner.close())
  }

  /** `await using fwd = await box.forward(port)` closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}

/** The native methods every exec target has (a container, a sandbox): the wrappers share one implementation. */
interface NativeTarget {
  exec(cmd: string[], options?: ExecOptions): Promise<native.ExecResult>
  sh(script: string, options?: ExecOptions): Promise<native.ExecResult>
  spawn(cmd: string[], options?: ExecOptions): Promise<native.ExecProcess>
  readFile(path: string, options?: CallOptions): Promise<Buffer>
  writeFile(path: string, data: string | Uint8Array, options?: WriteFileOptions): Promise<void>
  forward(port: number, options?: ForwardOptions): Promise<native.Forward>
}

/** `exec`, `sh`, `spawn`, `readFile`, `writeFile` of the wrapper classes, over their native target. */
export const onTarget = {
  forward(t: NativeTarget, port: number, options?: ForwardOptions): Promise<Forward> {
    return call(options?.signal, async () => {
      check.arg('port', port, 'number')
      check.opts('options', options, { ...check.CALL, hostPort: 'number' })
      return Forward.wrap(await t.forward(port, options))
    })
  },
  exec(t: NativeTarget, cmd: string[], options?: ExecOptions): Promise<ExecResult> {
    return call(options?.signal, async () => {
      check.arg('cmd', cmd, 'strings')
      check.opts('options', options, EXEC_OPTIONS)
      return new ExecResult(await t.exec(cmd, options))
    })
  },
  sh(t: NativeTarget, script: string, options?: ExecOptions): Promise<ExecResult> {
    return call(options?.signal, async () => {
      check.arg('script', script, 'string')
      check.opts('options', options, EXEC_OPTIONS)
      return new ExecResult(await t.sh(script, options))
    })
  },
  spawn(t: NativeTarget, cmd: string[], options?: ExecOptions): Promise<ExecProcess> {
    return call(options?.signal, async () => {
      check.arg('cmd', cmd, 'strings')
      check.opts('options', options, EXEC_OPTIONS)
      return ExecProcess.wrap(await t.spawn(cmd, options), options?.signal)
    })
  },
  readFile(t: NativeTarget, path: string, options?: CallOptions): Promise<Buffer> {
    return call(options?.signal, () => {
      check.arg('path', path, 'string')
      check.opts('options', options, check.CALL)
      return t.readFile(path, options)
    })
  },
  writeFile(t: NativeTarget, path: string, data: string | Uint8Array, options?: WriteFileOptions): Promise<void> {
    return call(options?.signal, () => {
      check.arg('path', path, 'string')
      check.arg('data', data, 'data')
      check.opts('options', options, { ...check.CALL, mode: 'number' })
      return t.writeFile(path, data, options)
    })
  },
}
