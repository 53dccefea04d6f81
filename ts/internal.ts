/** Package-internal plumbing shared by the wrapper classes (not exported from the package). */
import { invalidArgument } from './errors'

/** Each wrapper object's native object, for arguments that take another wrapper (`copyTo(target)`, …). */
const NATIVE = new WeakMap<object, unknown>()

/** Record `inner` as the native object behind `wrapper`. */
export function bind<T>(wrapper: object, inner: T): T {
  NATIVE.set(wrapper, inner)
  return inner
}

/** The native object behind `v`, which must be an instance of `cls` (else `ERR_INVALID_ARGUMENT` for `name`). */
export function unwrap<N>(name: string, v: unknown, cls: { prototype: object; name: string }): N {
  if (typeof v === 'object' && v !== null && cls.prototype.isPrototypeOf(v)) {
    const inner = NATIVE.get(v)
    if (inner !== undefined) return inner as N
  }
  throw invalidArgument(name, `${name}: expected a ${cls.name}`)
}

/** The token that lets the SDK's own code construct its handle classes (their constructors are private). */
export const INTERNAL: unique symbol = Symbol('sandboxd.internal')

/** Throw unless `token` is {@link INTERNAL}: handles come from the SDK's methods, never from `new`. */
export function internalOnly(token: unknown, cls: string): void {
  if (token !== INTERNAL) throw new TypeError(`${cls} objects are created by the SDK's methods, not with new`)
}
