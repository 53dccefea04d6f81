// The TypeScript surface: the error class and its codes, stacks that reach the caller, aborts with the signal's
// reason, discriminated unions, results that print well, classes that cannot be constructed. No engine needed:
// a Unix socket that never answers stands in for a daemon that hangs.
import { readFileSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest'
import {
  Container,
  ErrorCodes,
  ExecResult,
  Sandboxd,
  SandboxdError,
  Vm,
  isSandboxdError,
  type AgentEvent,
  type SandboxdErrorCode,
} from 'sandboxd'

let dir: string
let silent: Server
let silentPath: string

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sbx-surface-'))
  silentPath = join(dir, 'silent.sock')
  silent = createServer((s) => s.resume()) // reads, never answers
  await new Promise<void>((r) => silent.listen(silentPath, r))
})
afterAll(async () => {
  await new Promise((r) => silent.close(r))
  rmSync(dir, { recursive: true, force: true })
})

async function failing(): Promise<unknown> {
  try {
    await new Sandboxd({ socketPath: join(dir, 'missing.sock') }).list()
  } catch (e) {
    return e
  }
  throw new Error('expected a rejection')
}

describe('errors', () => {
  it("a native rejection's stack holds the caller's frames", async () => {
    const e = await failing()
    expect(e).toBeInstanceOf(SandboxdError)
    expect((e as Error).stack).toContain('surface.spec.ts')
    expect((e as Error).stack).toContain('failing')
  })

  it('isSandboxdError narrows, with and without a code', async () => {
    const e: unknown = await failing()
    expect(isSandboxdError(e)).toBe(true)
    expect(isSandboxdError(e, 'ERR_SANDBOXD_UNAVAILABLE')).toBe(true)
    expect(isSandboxdError(e, 'ERR_TIMEOUT')).toBe(false)
    expect(isSandboxdError(new Error('x'))).toBe(false)
    if (isSandboxdError(e, ErrorCodes.SANDBOXD_UNAVAILABLE)) {
      expectTypeOf(e.code).toEqualTypeOf<'ERR_SANDBOXD_UNAVAILABLE'>()
      expect(e.socketPath).toBe(join(dir, 'missing.sock'))
      expect(e.name).toBe('SandboxdError')
    }
  })

  it("the codes constant is exactly the core's codes (src/core/error.rs)", () => {
    const rust = readFileSync(new URL('../src/core/error.rs', import.meta.url), 'utf8')
    const fromRust = [...rust.matchAll(/=> "((?:ERR_[A-Z_]+)|ABORT_ERR)"/g)].map((m) => m[1]).sort()
    expect(fromRust.length).toBeGreaterThan(20)
    expect(Object.values(ErrorCodes).sort()).toEqual(fromRust)
    expectTypeOf<SandboxdErrorCode>().toEqualTypeOf<(typeof ErrorCodes)[keyof typeof ErrorCodes]>()
  })

  it('AbortSignal.timeout() rejects with its TimeoutError reason', async () => {
    const client = new Sandboxd({ socketPath: silentPath })
    const t0 = Date.now()
    const e = await client.list({ signal: AbortSignal.timeout(150) }).catch((x: unknown) => x)
    expect(Date.now() - t0).toBeLessThan(5_000)
    expect(e).toBeInstanceOf(DOMException)
    expect((e as DOMException).name).toBe('TimeoutError')
  })

  it("controller.abort(reason) rejects with that very reason; an already aborted signal too", async () => {
    const client = new Sandboxd({ socketPath: silentPath })
    const ac = new AbortController()
    const reason = new Error('user gave up')
    const p = client.list({ signal: ac.signal })
    setTimeout(() => ac.abort(reason), 50)
    expect(await p.catch((x: unknown) => x)).toBe(reason)
    expect(await client.ping({ signal: ac.signal }).catch((x: unknown) => x)).toBe(reason)
  })

  it('a deadline rejects ERR_TIMEOUT with timeoutMs and a stack into this file', async () => {
    const e = await new Sandboxd({ socketPath: silentPath }).list({ timeoutMs: 100 }).catch((x: unknown) => x)
    expect(isSandboxdError(e, 'ERR_TIMEOUT')).toBe(true)
    expect((e as SandboxdError).timeoutMs).toBe(100)
    expect((e as Error).stack).toContain('surface.spec.ts')
  })
})

describe('types and results', () => {
  it('AgentEvent is a discriminated union', () => {
    expectTypeOf<Extract<AgentEvent, { type: 'text' }>>().toEqualTypeOf<{ type: 'text'; eventId: number; text: string }>()
    expectTypeOf<Extract<AgentEvent, { type: 'permission_request' }>['respond']>().toEqualTypeOf<(optionId: string) => Promise<void>>()
    expectTypeOf<Extract<AgentEvent, { type: 'gap' }>>().not.toHaveProperty('eventId')
    const handle = (ev: AgentEvent): string => {
      switch (ev.type) {
        case 'text':
        case 'thought':
          return ev.text
        case 'stop':
          return ev.stopReason
        case 'gap':
          return `${ev.from}-${ev.to}`
        default:
          return ev.type
      }
    }
    expect(handle({ type: 'text', eventId: 1, text: 'hi' })).toBe('hi')
  })

  it('handles the SDK creates cannot be constructed by users', () => {
    // @ts-expect-error Container has a private constructor
    expect(() => new Container()).toThrow()
    // @ts-expect-error Vm has a private constructor
    expect(() => new Vm()).toThrow()
  })

  it('ExecResult: Buffers, text for both streams, readable JSON', () => {
    const r = new ExecResult({
      exitCode: 3,
      stdout: Buffer.from('out ✓\n'),
      stderr: Buffer.from('err\n'),
      timedOut: false,
      aborted: false,
      truncated: false,
      durationMs: 12,
    })
    expect(r.text()).toBe('out ✓\n')
    expect(r.stderrText()).toBe('err\n')
    expect(JSON.parse(JSON.stringify(r))).toEqual({
      exitCode: 3,
      stdout: 'out ✓\n',
      stderr: 'err\n',
      timedOut: false,
      aborted: false,
      truncated: false,
      durationMs: 12,
    })
  })
})
