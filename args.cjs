// Arguments of the wrong type get the SDK's own error.
//
// napi-rs converts a method's arguments before any Rust code runs, and on a wrong type it throws its own error
// synchronously (code 'StringExpected', 'ArrayExpected', 'InvalidArg', … or a bare TypeError). This wraps every
// method of the exported classes once, at load time, so that such an error carries `code: 'ERR_INVALID_ARGUMENT'`
// (napi's code stays in `napiCode`) and, from a method that returns a promise, arrives as a rejection like
// every other error of that method. The value itself is cut out of napi's message (it may be a secret). Values that
// convert are passed through untouched.
'use strict'

/** Codes napi-rs gives argument conversion failures. */
const NAPI_ARG_CODES = new Set([
  'InvalidArg',
  'ObjectExpected',
  'StringExpected',
  'NameExpected',
  'FunctionExpected',
  'NumberExpected',
  'BooleanExpected',
  'ArrayExpected',
  'BigintExpected',
  'DateExpected',
  'ArrayBufferExpected',
  'DetachableArraybufferExpected',
])

/** Methods that return a value, not a promise (everything else returns a promise). */
const SYNC_METHODS = new Set(['events', 'prompt', 'logs', 'lines', 'proxyEnv', 'toJSON', 'getArchiveStream', 'putArchiveStream'])

function isArgumentError(e) {
  if (!(e instanceof Error)) return false
  if (typeof e.code === 'string') return NAPI_ARG_CODES.has(e.code)
  return e instanceof TypeError && e.code === undefined
}

/** napi-rs's message quotes the offending value (as JSON for objects), which may hold a secret: keep its kind only. */
function redact(message) {
  return String(message).replace(/JavaScript value `(\w+)[\s\S]*` into rust type/, (_m, kind) => `a JavaScript ${kind.toLowerCase()} into rust type`)
}

function invalidArgument(e, where) {
  const err = new TypeError(`${where}: ${redact(e.message)}`)
  err.code = 'ERR_INVALID_ARGUMENT'
  if (e.code !== undefined) err.napiCode = e.code
  return err
}

function wrap(owner, key, where) {
  const desc = Object.getOwnPropertyDescriptor(owner, key)
  if (!desc || typeof desc.value !== 'function' || !desc.writable) return
  const sync = typeof key === 'symbol' || SYNC_METHODS.has(key)
  Object.defineProperty(owner, key, { ...desc, value: guarded(desc.value, where, sync) })
}

/** A function that runs `fn` and turns an argument error into the SDK's (thrown, or rejected if `!sync`). */
function guarded(fn, where, sync) {
  return {
    [fn.name || where](...args) {
      try {
        return fn.apply(this, args)
      } catch (e) {
        if (!isArgumentError(e)) throw e
        const err = invalidArgument(e, where)
        if (sync) throw err
        return Promise.reject(err)
      }
    },
  }[fn.name || where]
}

/**
 * Wrap the methods and the constructor of every exported class. Prototype methods are replaced in place. Static
 * methods of a napi class are read-only and non-configurable, so the export becomes a proxy (over a stand-in
 * function, as a proxy of the class itself would have to return those very functions) that hands out wrapped
 * statics and constructs the real class; `instanceof X` works, and objects the addon creates are instances too.
 */
module.exports = function wrapArgumentErrors(exports) {
  for (const [name, cls] of Object.entries(exports)) {
    if (typeof cls !== 'function' || !cls.prototype) continue
    for (const key of Reflect.ownKeys(cls.prototype)) {
      if (key !== 'constructor') wrap(cls.prototype, key, `${name}.${String(key)}()`)
    }
    const statics = new Map()
    for (const key of Reflect.ownKeys(cls)) {
      const v = Object.getOwnPropertyDescriptor(cls, key)?.value
      if (typeof v === 'function') statics.set(key, guarded(v, `${name}.${String(key)}()`, false))
    }
    const standIn = function () {}
    standIn.prototype = cls.prototype
    const proxy = new Proxy(standIn, {
      get(_t, key) {
        return statics.get(key) ?? Reflect.get(cls, key)
      },
      has(_t, key) {
        return Reflect.has(cls, key)
      },
      apply(_t, self, args) {
        return Reflect.apply(cls, self, args)
      },
      construct(_t, args, newTarget) {
        try {
          return Reflect.construct(cls, args, newTarget === proxy ? cls : newTarget)
        } catch (e) {
          throw isArgumentError(e) ? invalidArgument(e, `new ${name}()`) : e
        }
      },
    })
    try {
      cls.prototype.constructor = proxy
    } catch {
      // a frozen prototype keeps its own constructor
    }
    exports[name] = proxy
  }
  return exports
}
module.exports.SYNC_METHODS = SYNC_METHODS
