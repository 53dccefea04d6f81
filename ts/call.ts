/** The one shape of a call into the native module: errors become {@link SandboxdError}s with the caller's stack. */
import { toSandboxdError } from './errors'

/** Options accepted by every call that can wait. */
export interface CallOptions {
  /** Aborting rejects the call with `signal.reason` and stops the work it started. */
  signal?: AbortSignal
  /** Deadline for this call in milliseconds; past it the call rejects with `ERR_TIMEOUT`. */
  timeoutMs?: number
}

/** The rejection handler of calls without a signal: one function for all of them (no closure per call). */
function rethrow(e: unknown): never {
  throw toSandboxdError(e)
}

/**
 * Run `run()` and turn its failure into the SDK's error: a synchronous throw (an argument check) rejects, and a
 * rejection is rebuilt by a handler chained with `.then`. The success path costs one chained promise and nothing
 * else (no `async` frame, no closure without a signal, no stack capture). The rebuilt error is created inside that
 * handler, when the native promise settles: V8 then walks the chain from the handler's promise to the `await`s
 * waiting on it, so the error's `stack` runs through the awaiting callers up to the user's code. `signal` is the
 * call's own signal: an abort it caused rejects with `signal.reason`.
 */
export function call<T>(signal: AbortSignal | null | undefined, run: () => Promise<T>): Promise<T> {
  let p: Promise<T>
  try {
    p = run()
  } catch (e) {
    return Promise.reject(toSandboxdError(e, signal))
  }
  return p.then(undefined, signal ? (e: unknown) => { throw toSandboxdError(e, signal) } : rethrow)
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
