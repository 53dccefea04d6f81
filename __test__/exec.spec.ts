// exec without a shell in the image, "program not found" as one outcome with and without a shell, and the kernel's
// argv/env size limits. Real parts: containers on the host's private dockerd, from the busybox image and the
// shell-less image scripts/lib.sh builds (static busybox as /bin/busybox plus a few non-shell applets, no /bin/sh).
import { spawnSync } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DockerEngine, type Container } from 'sandboxd'
import { rejection } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
const NOSHELL = process.env.SANDBOXD_NOSHELL_IMAGE
if (!IMAGE || !NOSHELL) {
  throw new Error('SANDBOXD_TEST_IMAGE / SANDBOXD_NOSHELL_IMAGE are not set: run the suite with `npm test`, which builds them')
}

let engine: DockerEngine
let shell: Container
let bare: Container
const tag = randomInt(1e6, 9e6)

/** Host PIDs of processes whose argv is exactly `args` (the engine is local: its processes are visible here). */
function hostPids(args: string[]): number[] {
  const want = args.join('\0') + '\0'
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'latin1') === want
      } catch {
        return false
      }
    })
    .map(Number)
}

beforeAll(async () => {
  engine = await DockerEngine.local()
  shell = await engine.containers.run({ image: IMAGE!, name: `sbx-exec-sh-${tag}`, cmd: ['sleep', '100000'] })
  bare = await engine.containers.run({ image: NOSHELL!, name: `sbx-exec-bare-${tag}` })
})

afterAll(async () => {
  await shell?.remove({ force: true })
  await bare?.remove({ force: true })
})

describe('exec in an image without /bin/sh', () => {
  it('the image really has no shell', async () => {
    const ls = await bare.exec(['ls', '/bin'])
    expect(ls.exitCode).toBe(0)
    const names = ls.text().split(/\s+/)
    expect(names).toContain('busybox')
    for (const sh of ['sh', 'ash', 'hush', 'bash']) expect(names).not.toContain(sh)
    expect((await rejection(bare.exec(['/bin/sh', '-c', 'true']))).code).toBe('ERR_EXEC_FAILED')
  })

  it('exec runs argv directly: stdout, stderr, exit codes, env, cwd, stdin', async () => {
    const hi = await bare.exec(['echo', 'hi', 'there'])
    expect(hi).toMatchObject({ exitCode: 0, timedOut: false, aborted: false })
    expect(hi.text()).toBe('hi there\n')
    expect((await bare.exec(['false'])).exitCode).toBe(1)
    const err = await bare.exec(['ls', '/no/such'])
    expect(err.exitCode).not.toBe(0)
    expect(err.stderr.toString()).toContain('/no/such')
    expect(err.stdout.length).toBe(0)
    const env = await bare.exec(['env'], { env: { GREETING: 'a b=c $x' } })
    expect(env.text().split('\n')).toContain('GREETING=a b=c $x')
    expect(env.text()).not.toContain('SANDBOXD_EXEC_ID=\n')
    expect((await bare.exec(['ls'], { cwd: '/bin' })).text()).toContain('busybox')
    expect((await bare.exec(['cat'], { stdin: 'from stdin' })).text()).toBe('from stdin')
    // a program that ran is a result even when its own exit code is 126/127-like
    expect((await bare.exec(['busybox', 'sh', '-c', 'exit 127'])).exitCode).toBe(127)
  })

  it('spawn runs there: streamed output, stdin with EOF, wait', async () => {
    const p = await bare.spawn(['cat'])
    await p.write('one\ntwo')
    await p.end()
    const got: string[] = []
    for await (const { stream, data } of p) got.push(`${stream}:${data.toString()}`)
    expect(got.join('')).toBe('stdout:one\ntwo')
    expect(await p.wait()).toMatchObject({ exitCode: 0, timedOut: false, aborted: false })
    const q = await bare.spawn(['ls', '/no/such'])
    const lines: string[] = []
    for await (const l of q.lines()) lines.push(`${l.stream}:${l.line}`)
    expect(lines.join('\n')).toContain('stderr:')
    expect((await q.wait()).exitCode).not.toBe(0)
  })

  it('a timeout, an abort and kill() end the process from the host (local engine)', async () => {
    const t0 = Date.now()
    const r = await bare.exec(['sleep', `${tag}1`], { timeoutMs: 500 })
    expect(Date.now() - t0).toBeLessThan(5000)
    expect(r).toMatchObject({ timedOut: true, exitCode: 143, signal: 'SIGTERM' })
    expect(hostPids(['sleep', `${tag}1`])).toEqual([])

    const ac = new AbortController()
    setTimeout(() => ac.abort(), 300)
    const aborted = await rejection(bare.exec(['sleep', `${tag}2`], { signal: ac.signal }))
    expect(aborted).toBe(ac.signal.reason)
    expect(hostPids(['sleep', `${tag}2`])).toEqual([])

    const p = await bare.spawn(['sleep', `${tag}3`], { timeoutMs: 400 })
    const chunks: unknown[] = []
    for await (const c of p) chunks.push(c)
    expect(chunks).toEqual([])
    expect(await p.wait()).toMatchObject({ timedOut: true, exitCode: 143, signal: 'SIGTERM' })
    expect(hostPids(['sleep', `${tag}3`])).toEqual([])

    const q = await bare.spawn(['sleep', `${tag}4`])
    await q.kill('SIGKILL')
    expect(await q.wait()).toMatchObject({ exitCode: 137, signal: 'SIGKILL', timedOut: false })
    expect(hostPids(['sleep', `${tag}4`])).toEqual([])
  })

  it('where the process is not visible (another PID namespace), a timeout still resolves and kill() says why', async () => {
    const fixture = fileURLToPath(new URL('./fixtures/noshell-nokill.mjs', import.meta.url))
    const run = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, fixture, bare.id, `${tag}5`], {
      encoding: 'utf8',
      timeout: 60_000,
    })
    expect(run.stderr).toBe('')
    expect(run.status).toBe(0)
    const out = JSON.parse(run.stdout.trim())
    try {
      // timedOut with no exit code, at the deadline (no 5 s drain wait): the process was left running
      expect(out.timed).toEqual({ timedOut: true, aborted: false, exitCode: null, signal: null })
      expect(out.execMs).toBeLessThan(3000)
      expect(out.spawnStatus).toEqual({ timedOut: true, aborted: false, exitCode: null, signal: null })
      expect(out.spawnMs).toBeLessThan(3000)
      expect(out.chunks).toBe(0)
      expect(out.kill.code).toBe('ERR_EXEC_FAILED')
      expect(out.kill.message).toContain('/bin/sh')
      for (const n of [1, 2, 3]) expect(hostPids(['sleep', `${tag}5${n}`])).toHaveLength(1)
    } finally {
      for (const n of [1, 2, 3]) for (const pid of hostPids(['sleep', `${tag}5${n}`])) process.kill(pid, 'SIGKILL')
    }
  })
})

describe('a program that is not there', () => {
  it('is ERR_EXEC_FAILED with engineMessage and exitCode, with and without a shell, for exec and spawn', async () => {
    for (const c of [shell, bare]) {
      for (const cmd of [['definitely-not-a-command', 'arg'], ['/no/such/program']]) {
        const e = await rejection(c.exec(cmd))
        expect(e.code).toBe('ERR_EXEC_FAILED')
        expect([126, 127]).toContain(e.exitCode)
        expect(e.engineMessage).toContain(cmd[0])
        expect(e.message).toContain(e.engineMessage)
        expect(e.result).toMatchObject({ exitCode: e.exitCode })

        const p = await c.spawn(cmd)
        const w = await rejection(p.wait({ timeoutMs: 10_000 }))
        expect(w).toMatchObject({ code: 'ERR_EXEC_FAILED', exitCode: e.exitCode })
        expect(w.engineMessage).toContain(cmd[0])
        const q = await c.spawn(cmd)
        const it = await rejection(
          (async () => {
            for await (const _ of q) void _
          })(),
        )
        expect(it.code).toBe('ERR_EXEC_FAILED')
      }
    }
    // with a shell: a file that is not executable, and a program found later in PATH
    const noexec = await rejection(shell.exec(['/etc/passwd']))
    expect(noexec).toMatchObject({ code: 'ERR_EXEC_FAILED', exitCode: 126 })
    expect((await shell.exec(['true'], { env: { PATH: '/nowhere:/bin' } })).exitCode).toBe(0)
  })
})

/** Bytes `execve` counts for one string: itself, its NUL and an 8-byte pointer. */
const cost = (s: string) => Buffer.byteLength(s) + 1 + 8
const PER_STRING = 128 * 1024 - 1
const TOTAL = 2 * 1024 * 1024 - 64 * 1024

describe('argv and env sizes (Linux MAX_ARG_STRLEN and the execve total)', () => {
  const count = ['sh', '-c', 'printf %s "$BIG" | wc -c']

  it('an env string of exactly the limit runs; one byte more is ERR_INVALID_ARGUMENT naming the key', async () => {
    for (const [len, ok] of [
      [PER_STRING - 'BIG='.length, true],
      [PER_STRING - 'BIG='.length - 1, true],
      [PER_STRING - 'BIG='.length + 1, false],
      [1e6, false],
    ] as const) {
      const env = { BIG: 'x'.repeat(len) }
      if (ok) {
        const r = await shell.exec(count, { env })
        expect(r.exitCode).toBe(0)
        expect(r.text().trim()).toBe(String(len))
        continue
      }
      for (const call of [() => shell.exec(count, { env }), () => shell.spawn(count, { env }), () => bare.exec(['true'], { env })]) {
        const e = await rejection(call())
        expect(e).toMatchObject({ code: 'ERR_INVALID_ARGUMENT', argument: 'env', limit: PER_STRING })
        expect(e.key).toContain('BIG')
        expect(e.message).toContain(String(PER_STRING))
        expect(e.message).toContain('stdin')
        expect(e.message).not.toContain('xxxx')
      }
    }
  })

  it('an argv string of exactly the limit runs; one byte more is ERR_INVALID_ARGUMENT naming its index', async () => {
    const script = ['sh', '-c', 'printf %s "$1" | wc -c', 'sh']
    for (const len of [PER_STRING, PER_STRING - 1]) {
      const r = await shell.exec([...script, 'y'.repeat(len)])
      expect(r.exitCode).toBe(0)
      expect(r.text().trim()).toBe(String(len))
    }
    const e = await rejection(shell.exec([...script, 'y'.repeat(PER_STRING + 1)]))
    expect(e).toMatchObject({ code: 'ERR_INVALID_ARGUMENT', argument: 'cmd', index: 4, limit: PER_STRING })
    expect(e.message).not.toContain('yyyy')
  })

  it('argv and env together at exactly the total run; one byte more is ERR_INVALID_ARGUMENT', async () => {
    // Entries B0…Bn of the largest size allowed, the last one filling the total exactly.
    const build = (extra: number) => {
      const names = Array.from({ length: 20 }, (_, i) => `B${i}`)
      const cmd = ['sh', '-c', `printf %s "${names.map((n) => `$${n}`).join('')}" | wc -c`]
      let left = TOTAL - cmd.reduce((a, s) => a + cost(s), 0) + extra
      const env: Record<string, string> = {}
      let bytes = 0
      for (const n of names) {
        const fixed = cost(`${n}=`)
        if (left <= fixed) break
        const len = Math.min(PER_STRING - `${n}=`.length, left - fixed)
        env[n] = 'z'.repeat(len)
        left -= fixed + len
        bytes += len
      }
      expect(left).toBe(0)
      return { cmd, env, bytes }
    }
    for (const extra of [0, -1]) {
      const { cmd, env, bytes } = build(extra)
      const total = cmd.reduce((a, s) => a + cost(s), 0) + Object.entries(env).reduce((a, [k, v]) => a + cost(`${k}=${v}`), 0)
      expect(total).toBe(TOTAL + extra)
      const r = await shell.exec(cmd, { env })
      expect(r.exitCode).toBe(0)
      expect(r.text().trim()).toBe(String(bytes))
    }
    const over = build(1)
    for (const call of [() => shell.exec(over.cmd, { env: over.env }), () => shell.spawn(over.cmd, { env: over.env })]) {
      const e = await rejection(call())
      expect(e).toMatchObject({ code: 'ERR_INVALID_ARGUMENT', argument: 'env', limit: TOTAL, size: TOTAL + 1 })
      expect(e.key).toMatch(/B\d+/)
      expect(e.message).not.toContain('zzzz')
    }
  })
})
