/** Commands in a container: options, the streamed process, and its output items. */
import { Readable } from 'node:stream'
import native = require('../native/index.cjs')
import { call, type CallOptions } from './call'
import * as check from './check'
import { invalidArgument } from './errors'
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
  /**
   * `exec`/`sh` only: called with each piece of stdout as it arrives, in order, before `exec` resolves (which
   * happens after the last call). Pieces are Buffers cut anywhere, also inside a UTF-8 character (E2B passes
   * strings: use a `StringDecoder` for text). The result still holds the whole output, as in E2B's `commands.run`;
   * `maxOutputBytes` caps only what the result keeps, never what the callback sees (`maxOutputBytes: 0` to keep
   * nothing twice). A returned promise is awaited before the next piece (of either stream) and the process's
   * output waits meanwhile: a slow callback slows the process, never grows memory. A callback that throws (or
   * rejects) kills the process tree and `exec` rejects with that error. `timeoutMs` and `signal` work as
   * without callbacks.
   */
  onStdout?: (chunk: Buffer) => void | Promise<void>
  /** `exec`/`sh` only: as `onStdout`, for stderr (with `tty`, all output is stdout). */
  onStderr?: (chunk: Buffer) => void | Promise<void>
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
  onStdout: 'function',
  onStderr: 'function',
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
 * A process started with `spawn()`. `for await (const { stream, data } of proc)` reads its output in order, with
 * backpressure; `write`/`end` feed stdin; `kill` signals the whole process group. The output is read once, one
 * way: iterate the process, `lines()`, `read(buffer)`, or the Readables `proc.stdout` / `proc.stderr`.
 *
 * Leaving a `for await` over the process or over `lines()` with `break` (or `return()`) stops reading: output
 * already queued and all further output of both streams is discarded as it comes (nothing is buffered, the
 * process is never blocked by it), and the process keeps running until it exits, `kill()` ends it, or the
 * handle is disposed. `wait()` and `kill()` work as before. To stop the process on `break`, use
 * `await using proc = …` or call `kill()`.
 */
export class ExecProcess extends AsyncStream<OutputChunk> {
  readonly #inner: native.ExecProcess
  #views: OutputViews | undefined

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

  /**
   * Output as text lines, `{ stream, line }`, each stream split on `\n` (a trailing `\r` is dropped). `break`
   * stops reading as on the process itself: the rest of the output is discarded, the process keeps running.
   */
  lines(): LineStream {
    return AsyncStream.from(this.#inner.lines() as check.Unsafe)
  }

  /**
   * stdout as a Node `Readable` (bytes), for `pipe()` / `stream.pipeline()`. `proc.stdout` and `proc.stderr` are
   * created together on first use and pull from the process only while read: output is taken only while every
   * view not destroyed has room below its `highWaterMark`, so a paused view holds the process back as a full
   * pipe would (the SDK never buffers more than that). As with Node's own subprocess pipes, read both or destroy
   * the one you do not need: after `destroy()` on a view, that stream's chunks are dropped as reading the other
   * view pulls them; destroying both is `break` (all output is discarded as it comes, the process keeps running
   * until it exits or is killed or disposed). The views and the process's other readers (`for await`, `lines()`,
   * `read()`) take from one queue: use one of them. Both end when the output ends. An interrupted or failed process destroys them: with its error where an `'error'` listener is attached
   * (as `stream.pipeline` attaches one), quietly otherwise (so an unused view cannot crash the program);
   * `wait()` rejects with that error either way.
   */
  get stdout(): Readable {
    return this.#outputViews().stdout
  }

  /** stderr as a Node `Readable`: see {@link ExecProcess.stdout}. With `tty`, all output is stdout. */
  get stderr(): Readable {
    return this.#outputViews().stderr
  }

  #outputViews(): OutputViews {
    if (!this.#views) {
      this.#inner.markRead() // `proc.stdout.pipe(f); await proc.wait()`: the wait must not discard the output
      this.#views = new OutputViews(this)
    }
    return this.#views
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

/**
 * `proc.stdout` / `proc.stderr`: one pump over the process's output (interleaved, in order) feeding two
 * Readables. It pulls the next chunk only while a view asked for data and every live view has room, so the
 * process's own backpressure reaches the producer; a destroyed view's chunks are dropped.
 */
class OutputViews {
  readonly stdout: Readable
  readonly stderr: Readable
  readonly #proc: ExecProcess
  /** The views whose `_read` asked for data not yet pushed to them. */
  readonly #wanted = new Set<Readable>()
  #pumping = false
  #ended = false

  constructor(proc: ExecProcess) {
    this.#proc = proc
    const view = (): Readable => {
      const v: Readable = new Readable({
        read: () => {
          this.#wanted.add(v)
          void this.#pump()
        },
        destroy: (err, done) => {
          this.#wanted.delete(v)
          this.#gone()
          done(err)
        },
      })
      return v
    }
    this.stdout = view()
    this.stderr = view()
  }

  #live(): Readable[] {
    return [this.stdout, this.stderr].filter((v) => !v.destroyed)
  }

  /**
   * Another chunk may be taken: a live view asked for data, and every live view that did not is below its
   * `highWaterMark` (the chunk may be its).
   */
  #room(): boolean {
    const live = this.#live()
    return (
      live.some((v) => this.#wanted.has(v)) &&
      live.every((v) => this.#wanted.has(v) || v.readableLength < v.readableHighWaterMark)
    )
  }

  async #pump(): Promise<void> {
    if (this.#pumping || this.#ended) return
    this.#pumping = true
    try {
      while (!this.#ended && this.#room()) {
        const step = await this.#proc.next()
        if (step.done) {
          this.#ended = true
          for (const v of this.#live()) v.push(null)
          break
        }
        const v = step.value.stream === 'stdout' ? this.stdout : this.stderr
        if (!v.destroyed) {
          this.#wanted.delete(v) // its _read is called again if it wants more
          v.push(step.value.data)
        }
      }
    } catch (e) {
      // Each view someone listens to for errors gets it (pipeline() does); the others just close, so an unread
      // view cannot crash the process with an unhandled 'error'. wait() reports it too.
      this.#ended = true
      for (const v of this.#live()) v.destroy(v.listenerCount('error') > 0 ? (e as Error) : undefined)
    } finally {
      this.#pumping = false
    }
  }

  /** A view was destroyed: once both are, the rest of the output is discarded by the SDK (as on `break`). */
  #gone(): void {
    if (!this.#ended && this.#live().length === 0) {
      this.#ended = true
      void this.#proc.return().catch(() => {})
    }
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
  execStreamed(cmd: string[], options: ExecOptions | undefined, stdout: boolean, stderr: boolean): native.ExecRun
  readFile(path: string, options?: CallOptions): Promise<Buffer>
  writeFile(path: string, data: string | Uint8Array, options?: WriteFileOptions): Promise<void>
  forward(port: number, options?: ForwardOptions): Promise<native.Forward>
}

/**
 * `exec` with `onStdout`/`onStderr`: the core runs the same exec as without them and also hands each chunk of a
 * chosen stream over as it arrives; each callback is awaited before the next chunk is read. A callback that
 * throws aborts the exec (its process tree is killed) and its error is the call's. Once the exec has timed out or
 * failed, a callback still pending is no longer waited for: the call settles at its deadline whatever a callback does.
 */
async function execStreamed(t: NativeTarget, cmd: string[], options: ExecOptions): Promise<ExecResult> {
  const { onStdout, onStderr } = options
  const run = t.execStreamed(cmd, options, !!onStdout, !!onStderr)
  const outcome = run.result().then(
    (r) => ({ r }),
    (e: unknown) => ({ e }),
  )
  // settles only when the exec ended early (deadline, abort, failure): then callbacks are not waited for
  const endedEarly = outcome.then((o) => ('e' in o || o.r.timedOut ? o : new Promise<never>(() => {})))
  const finish = (o: { r: native.ExecResult } | { e: unknown }): ExecResult => {
    if ('e' in o) throw o.e
    return new ExecResult(o.r)
  }
  try {
    for (;;) {
      const step = await Promise.race([run.next(), endedEarly])
      if ('r' in step || 'e' in step) return finish(step)
      if (step.done) break
      const { stream, data } = step.value
      const pending = (stream === 'stdout' ? onStdout : onStderr)?.(data)
      if (pending) {
        const early = await Promise.race([Promise.resolve(pending).then(() => null), endedEarly])
        if (early) return finish(early)
      }
    }
  } catch (e) {
    run.abort()
    await outcome
    throw e
  }
  return finish(await outcome)
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
      if (options?.onStdout || options?.onStderr) return execStreamed(t, cmd, options)
      return new ExecResult(await t.exec(cmd, options))
    })
  },
  sh(t: NativeTarget, script: string, options?: ExecOptions): Promise<ExecResult> {
    return call(options?.signal, async () => {
      check.arg('script', script, 'string')
      check.opts('options', options, EXEC_OPTIONS)
      // The argv the native `sh` runs: one element, nothing interpolated.
      if (options?.onStdout || options?.onStderr) return execStreamed(t, ['sh', '-c', script], options)
      return new ExecResult(await t.sh(script, options))
    })
  },
  spawn(t: NativeTarget, cmd: string[], options?: ExecOptions): Promise<ExecProcess> {
    return call(options?.signal, async () => {
      check.arg('cmd', cmd, 'strings')
      check.opts('options', options, EXEC_OPTIONS)
      for (const key of ['onStdout', 'onStderr'] as const) {
        if (options?.[key]) {
          throw invalidArgument(key, `options.${key} is for exec() and sh(); read a spawned process's output instead (for await, lines(), proc.stdout)`)
        }
      }
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
