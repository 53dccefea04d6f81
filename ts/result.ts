/** The buffered outcome of a command: plain data with text accessors. */

/** The fields of an {@link ExecResult}, as the native layer gives them. */
export interface ExecResultInit {
  exitCode?: number | null
  signal?: string | null
  stdout: Buffer
  stderr: Buffer
  timedOut: boolean
  aborted: boolean
  truncated: boolean
  durationMs: number
}

/** What `JSON.stringify(result)` shows: the output as text. */
export interface ExecResultJson {
  exitCode?: number
  signal?: string
  stdout: string
  stderr: string
  timedOut: boolean
  aborted: boolean
  truncated: boolean
  durationMs: number
}

/** The outcome of `exec()`/`sh()`. A non-zero `exitCode` is a result, never an exception. */
export class ExecResult {
  /** The exit code; absent only when the exit could not be known. */
  readonly exitCode?: number
  /** The signal the SDK sent to end the process (timeout or abort), if any. */
  readonly signal?: string
  /** Everything the command wrote to stdout (up to `maxOutputBytes`). */
  readonly stdout: Buffer
  /** Everything the command wrote to stderr (up to `maxOutputBytes`). */
  readonly stderr: Buffer
  /** True when `timeoutMs` passed and the process tree was killed. */
  readonly timedOut: boolean
  /** True when the call's signal aborted it. */
  readonly aborted: boolean
  /** True when `maxOutputBytes` cut stdout or stderr. */
  readonly truncated: boolean
  /** Wall time from start to exit. */
  readonly durationMs: number

  /** A result from its fields (the SDK builds these; tests may too). */
  constructor(init: ExecResultInit) {
    if (init.exitCode != null) this.exitCode = init.exitCode
    if (init.signal != null) this.signal = init.signal
    this.stdout = init.stdout
    this.stderr = init.stderr
    this.timedOut = init.timedOut
    this.aborted = init.aborted
    this.truncated = init.truncated
    this.durationMs = init.durationMs
  }

  /** `stdout` decoded as UTF-8. */
  text(): string {
    return this.stdout.toString('utf8')
  }

  /** `stderr` decoded as UTF-8. */
  stderrText(): string {
    return this.stderr.toString('utf8')
  }

  /** Plain data with the output as text, for logs and `JSON.stringify`. */
  toJSON(): ExecResultJson {
    const { exitCode, signal, timedOut, aborted, truncated, durationMs } = this
    return { exitCode, signal, stdout: this.text(), stderr: this.stderrText(), timedOut, aborted, truncated, durationMs }
  }
}

/** Wrap a native result (or pass through anything else, e.g. `undefined`). */
export function execResult(r: unknown): ExecResult | undefined {
  if (r instanceof ExecResult) return r
  if (typeof r !== 'object' || r === null || !Buffer.isBuffer((r as ExecResultInit).stdout)) return undefined
  return new ExecResult(r as ExecResultInit)
}
