/** The one shape of a call into the native module: errors become {@link SandboxdError}s with the caller's stack. */
import { toSandboxdError } from './errors'

/** Options accepted by every call that can wait. */
export interface CallOptions {
  /** Aborting rejects the call with `signal.reason` and stops the work it started. */
  signal?: AbortSignal
  /** Deadline for this call in milliseconds; past it the call rejects with `ERR_TIMEOUT`. */
  timeoutMs?: number
}

/**
 * Await `run()` and rethrow its rejection as the SDK's error. The error is created here, after the `await`, so
 * V8's async stack trace runs through the awaiting callers up to the user's code. `signal` is the call's own
 * signal: an abort it caused rejects with `signal.reason`.
 */
export async function call<T>(signal: AbortSignal | null | undefined, run: () => Promise<T>): Promise<T> {
  try {
    return await run()
  } catch (e) {
    throw toSandboxdError(e, signal)
  }
}

/** Run a synchronous native call (a constructor, a stream factory), rethrowing its error as the SDK's. */
export function callSync<T>(run: () => T): T {
  try {
    return run()
  } catch (e) {
    throw toSandboxdError(e)
  }
}

/** A rejected promise for an argument error found before any native code ran (async methods never throw). */
export function reject(e: unknown): Promise<never> {
  return Promise.reject(e)
}
