/**
 * Argument checks made before any native code runs. They check types only (what the native layer could not
 * convert); values (names, paths, ranges, limits) are checked by the Rust core, which owns those rules.
 * Errors name the argument and key, never the value (it may be a secret).
 */
import { invalidArgument } from './errors'

/** The type an argument or option must have. */
export type Kind =
  | 'string'
  | 'number'
  | 'boolean'
  | 'function'
  | 'object'
  | 'signal'
  | 'data' // string | Uint8Array
  | 'bytes' // Uint8Array
  | 'strings' // string[]
  | 'record' // Record<string, string>
  | 'tty' // boolean | { cols: number, rows: number }
  | 'unknown'

/** What an options object may hold: each key's kind. */
export type Shape = Readonly<Record<string, Kind>>

/** `{ signal, timeoutMs }`, the options of every call that can wait. */
export const CALL: Shape = { signal: 'signal', timeoutMs: 'number' }

function typeName(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (v instanceof Uint8Array) return 'a Uint8Array'
  const t = typeof v
  return t === 'object' ? 'an object' : `a ${t}`
}

const EXPECTED: Record<Kind, string> = {
  string: 'a string',
  number: 'a number',
  boolean: 'a boolean',
  function: 'a function',
  object: 'an object',
  signal: 'an AbortSignal',
  data: 'a string or a Uint8Array',
  bytes: 'a Uint8Array',
  strings: 'an array of strings',
  record: 'an object of string values',
  tty: 'a boolean or { cols, rows } numbers',
  unknown: 'a value',
}

function fits(kind: Kind, v: unknown, name: string): boolean {
  switch (kind) {
    case 'string':
      return typeof v === 'string'
    case 'number':
      return typeof v === 'number'
    case 'boolean':
      return typeof v === 'boolean'
    case 'function':
      return typeof v === 'function'
    case 'object':
      return typeof v === 'object' && v !== null && !Array.isArray(v)
    case 'tty':
      return (
        typeof v === 'boolean' ||
        (typeof v === 'object' &&
          v !== null &&
          typeof (v as { cols?: unknown }).cols === 'number' &&
          typeof (v as { rows?: unknown }).rows === 'number')
      )
    case 'signal':
      return v instanceof AbortSignal
    case 'data':
      return typeof v === 'string' || v instanceof Uint8Array
    case 'bytes':
      return v instanceof Uint8Array
    case 'strings':
      if (!Array.isArray(v)) return false
      for (let i = 0; i < v.length; i++) {
        if (typeof v[i] !== 'string') throw invalidArgument(name, `${name}[${i}]: expected a string, got ${typeName(v[i])}`)
      }
      return true
    case 'record':
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return false
      for (const [k, val] of Object.entries(v)) {
        if (typeof val !== 'string') throw invalidArgument(name, `${name}: the value of key ${JSON.stringify(k)} must be a string, got ${typeName(val)}`, k)
      }
      return true
    case 'unknown':
      return true
  }
}

/** Check a required argument. */
export function arg(name: string, v: unknown, kind: Kind): void {
  if (!fits(kind, v, name)) throw invalidArgument(name, `${name}: expected ${EXPECTED[kind]}, got ${typeName(v)}`)
}

/** Check an optional argument (`undefined` or `null` pass). */
export function optArg(name: string, v: unknown, kind: Kind): void {
  if (v !== undefined && v !== null) arg(name, v, kind)
}

/**
 * Check an options object against `shape` (absent options pass; unknown keys are left alone). `required` lists
 * keys that must be present.
 */
export function opts(name: string, v: unknown, shape: Shape, required: readonly string[] = []): void {
  if (v === undefined || v === null) {
    if (required.length) throw invalidArgument(name, `${name}: expected an object with ${required.join(', ')}, got ${typeName(v)}`)
    return
  }
  if (typeof v !== 'object' || Array.isArray(v)) throw invalidArgument(name, `${name}: expected an object, got ${typeName(v)}`)
  const o = v as Record<string, unknown>
  for (const key of required) {
    if (o[key] === undefined || o[key] === null) throw invalidArgument(key, `${name}.${key} is required`)
  }
  for (const key in shape) {
    const val = o[key]
    if (val !== undefined && val !== null && !fits(shape[key], val, key)) {
      throw invalidArgument(key, `${name}.${key}: expected ${EXPECTED[shape[key]]}, got ${typeName(val)}`)
    }
  }
}

/** A native value whose generated type is looser or stricter than the public one (cast at the boundary). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Unsafe = any
