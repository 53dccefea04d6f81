/** The one async-iterator shape over a native stream: `for await`, `next()`, `return()`, SDK errors. */
import { call } from './call'

/** What a native stream offers: `next()` and `return()`. */
export interface NativeStream<T> {
  next(): Promise<IteratorResult<T, undefined>>
  return(): Promise<IteratorResult<T, undefined>>
}

/**
 * An async stream of `T`. `for await (const x of stream)` reads it; `break` (or `return()`) stops reading and
 * releases what the stream holds on the native side. A stream is read once. Errors are {@link SandboxdError}s,
 * or the `signal.reason` of the signal that aborted it.
 */
export class AsyncStream<T> implements AsyncIterableIterator<T, undefined> {
  readonly #inner: NativeStream<T>
  readonly #signal: AbortSignal | null | undefined
  readonly #map: ((v: T) => T) | undefined

  /** Streams are made by the SDK's methods, never by `new`. */
  protected constructor(inner: NativeStream<T>, signal?: AbortSignal | null, map?: (v: T) => T) {
    this.#inner = inner
    this.#signal = signal
    this.#map = map
  }

  /** @internal Wrap a native stream (`map` adapts each item, `signal` is the one that can abort it). */
  static from<T>(inner: NativeStream<T>, signal?: AbortSignal | null, map?: (v: T) => T): AsyncStream<T> {
    return new AsyncStream(inner, signal, map)
  }

  /** The next item (`done` at the end). */
  next(): Promise<IteratorResult<T, undefined>> {
    return call(this.#signal, async () => {
      const step = await this.#inner.next()
      return this.#map && !step.done ? { done: false, value: this.#map(step.value) } : step
    })
  }

  /** Stop reading (what `break` calls). */
  return(): Promise<IteratorResult<T, undefined>> {
    return call(this.#signal, () => this.#inner.return())
  }

  /** The stream is its own async iterator. */
  [Symbol.asyncIterator](): this {
    return this
  }
}
