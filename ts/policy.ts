/**
 * Network policy: the rules the daemon's filtering proxy applies to every sandbox's traffic, a check that sends no
 * traffic, and the proxy's decision log (a snapshot, or followed with `for await`). `sandboxes.policy` is the
 * daemon's whole policy; `sandbox.policy` is scoped to one sandbox (its rules, its checks, its log rows).
 */
import native = require('../native/index.cjs')
import { call, callSync, type CallOptions } from './call'
import * as check from './check'
import { invalidArgument } from './errors'
import { INTERNAL, bind, internalOnly } from './internal'

/** One rule. */
export type PolicyRule = native.PolicyRule

/** What the proxy would do with a connection, and why (`check()`). */
export type PolicyCheck = native.PolicyCheck

/** The proxy's decisions about one host, grouped by sandbox, proxy type, rule and reason. */
export type PolicyLogEntry = native.PolicyLogEntry

/**
 * A credential a sandbox uses without holding it: inside, `env` holds a placeholder (`sbx-cs-…`, or
 * `proxy-managed` with `managed: true`); the proxy writes the value into `header` of HTTPS requests to `hosts`
 * (exact names, 1 to 10) and nowhere else. The value is never logged, never in an error, never in argv, never
 * written inside the sandbox.
 */
export type SecretInput = native.SecretInput

/** What a sandbox sees of a secret. */
export type SecretPlaceholder = native.SecretPlaceholder

const SECRET: check.Shape = { env: 'string', value: 'string', hosts: 'strings', header: 'string', format: 'string', managed: 'boolean' }

/** Checks the shape of a list of secrets (values and hosts are checked by the core); the messages hold no value. */
export function checkSecrets(name: string, secrets: unknown): void {
  if (!Array.isArray(secrets)) throw invalidArgument(name, `${name}: expected an array of secrets`)
  secrets.forEach((s, i) => check.opts(`${name}[${i}]`, s, SECRET, ['env', 'value', 'hosts']))
}

/** The rule sets `preset()` installs: every public host, a list of common developer hosts, or nothing. */
export type PolicyPreset = 'allow-all' | 'balanced' | 'deny-all'

/**
 * A change for `change()`: add an `allow` / `deny` / `bypass` rule, `remove` every rule on a destination, or
 * install a `preset`. `sandbox` scopes the change to one sandbox (a scoped policy fills in its own).
 */
export type PolicyChange =
  | { op: 'allow' | 'deny' | 'bypass' | 'remove'; destination: string; sandbox?: string }
  | { op: 'preset'; preset: PolicyPreset }

/** Options of `allow()`, `deny()`, `bypass()`, `remove()`. */
export interface RuleOptions extends CallOptions {
  /** The sandbox whose rules change (default: the global rules; a scoped policy: its sandbox). */
  sandbox?: string
}

/** Options of `follow()`. */
export interface FollowOptions {
  /** Ends the iteration: the pending `next()` rejects with the signal's reason. */
  signal?: AbortSignal
  /** How often the log is read (default 250 ms). */
  intervalMs?: number
}

const RULE: check.Shape = { ...check.CALL, sandbox: 'string' }
const FOLLOW: check.Shape = { signal: 'signal', intervalMs: 'number' }
const CHANGE: check.Shape = { op: 'string', destination: 'string', preset: 'string', sandbox: 'string' }
const OPS = new Set(['allow', 'deny', 'bypass', 'remove', 'preset'])

/** `allow('a.com')` / `allow(['a.com', 'b.com'])`, each a non-empty string. */
function destinations(d: string | string[]): string[] {
  const list = Array.isArray(d) ? d : [d]
  list.forEach((x, i) => check.arg(`destinations[${i}]`, x, 'string'))
  return list
}

/**
 * The rules, checks and decision log of one daemon's filtering proxy (`sandboxes.policy`), or of one sandbox
 * (`sandbox.policy`). Destinations: `host` (that name only), `host:port`, `*.domain` (its subdomains, not the
 * domain), `*`, `*:443`, a CIDR. Deny wins over allow; the private, loopback and link-local ranges stay blocked
 * unless an allow rule names a range inside them.
 */
export class NetworkPolicy {
  readonly #inner: native.NetworkPolicy

  private constructor(token: symbol, inner: native.NetworkPolicy) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.NetworkPolicy): NetworkPolicy {
    return new NetworkPolicy(INTERNAL, inner)
  }

  /** The sandbox this policy is scoped to, or `null` for the daemon's whole policy. */
  get sandbox(): string | null {
    return this.#inner.sandbox ?? null
  }

  /** Every rule (a scoped policy: the global rules and its sandbox's). */
  rules(options?: CallOptions): Promise<PolicyRule[]> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.rules(options)
    })
  }

  /**
   * Apply changes, every one checked before any is sent (a malformed destination rejects with
   * `ERR_INVALID_ARGUMENT` naming `changes[i]`, and nothing changes). Resolves with the rules afterwards. A daemon
   * that takes rule changes in another form rejects with `ERR_SBX_UNSUPPORTED`.
   */
  change(changes: PolicyChange[], options?: CallOptions): Promise<PolicyRule[]> {
    return call(options?.signal, () => {
      if (!Array.isArray(changes)) throw invalidArgument('changes', 'changes: expected an array of changes')
      changes.forEach((c, i) => {
        check.opts(`changes[${i}]`, c, CHANGE, ['op'])
        if (!OPS.has(c.op)) {
          throw invalidArgument(`changes[${i}]`, `changes[${i}].op must be allow, deny, bypass, remove or preset`, 'op')
        }
      })
      check.opts('options', options, check.CALL)
      return this.#inner.change(changes as native.PolicyChange[], options)
    })
  }

  /** Allow destinations (one or several). Resolves with the rules afterwards. */
  allow(destination: string | string[], options?: RuleOptions): Promise<PolicyRule[]> {
    return this.#rules('allow', destination, options)
  }

  /** Deny destinations; deny wins over any allow. Resolves with the rules afterwards. */
  deny(destination: string | string[], options?: RuleOptions): Promise<PolicyRule[]> {
    return this.#rules('deny', destination, options)
  }

  /** Tunnel these (allowed) destinations without TLS interception, for clients that pin certificates. */
  bypass(destination: string | string[], options?: RuleOptions): Promise<PolicyRule[]> {
    return this.#rules('bypass', destination, options)
  }

  /** Remove every rule on these destinations in the scope. Resolves with the rules afterwards. */
  remove(destination: string | string[], options?: RuleOptions): Promise<PolicyRule[]> {
    return this.#rules('remove', destination, options)
  }

  /** Replace the global rules with a preset. Resolves with the rules afterwards. */
  preset(name: PolicyPreset, options?: CallOptions): Promise<PolicyRule[]> {
    return call(options?.signal, () => {
      check.arg('name', name, 'string')
      check.opts('options', options, check.CALL)
      return this.#inner.change([{ op: 'preset', preset: name }], options)
    })
  }

  #rules(op: 'allow' | 'deny' | 'bypass' | 'remove', destination: string | string[], options?: RuleOptions): Promise<PolicyRule[]> {
    return call(options?.signal, () => {
      const list = destinations(destination)
      check.opts('options', options, RULE)
      const sandbox = options?.sandbox ?? undefined
      return this.#inner.change(list.map((d) => ({ op, destination: d, sandbox })), options)
    })
  }

  /**
   * Decide `target` (`host`, `host:port`, an IP; port 443 when none is given) exactly as the proxy would decide a
   * connection from this policy's sandbox, without sending it any traffic: `allowed`, the `rule` that decided and
   * the `reason`.
   */
  check(target: string, options?: CallOptions): Promise<PolicyCheck> {
    return call(options?.signal, () => {
      check.arg('target', target, 'string')
      check.opts('options', options, check.CALL)
      return this.#inner.check(target, options)
    })
  }

  /** The decision log now: one row per host, sandbox, proxy type, rule and reason, with counts and times. */
  log(options?: CallOptions): Promise<PolicyLogEntry[]> {
    return call(options?.signal, () => {
      check.opts('options', options, check.CALL)
      return this.#inner.log(options)
    })
  }

  /**
   * Follow the decision log: `for await (const e of policy.follow({ signal }))` yields every decision made after
   * the call, each row's `count` being the requests since its previous appearance. Ends when `signal` aborts
   * (rejecting with its reason) or the loop breaks.
   */
  async *follow(options?: FollowOptions): AsyncGenerator<PolicyLogEntry, void, undefined> {
    check.opts('options', options, FOLLOW)
    const f = callSync(() => this.#inner.follow(options?.intervalMs))
    const signal = options?.signal
    for (;;) {
      const rows = await call(signal, () => f.next(signal ? { signal } : undefined))
      for (const r of rows) yield r
    }
  }
}
