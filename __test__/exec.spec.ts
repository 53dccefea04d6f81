// exec without a shell in the image, "program not found" as one outcome with and without a shell, the kernel's
// argv/env size limits, and exec in a VM's engine (env, stdin, cwd/user, timeouts, aborts, concurrency).
// Real parts: containers on the host's private dockerd, from the busybox image and the shell-less image
// scripts/lib.sh builds (static busybox as /bin/busybox plus a few non-shell applets, no /bin/sh); LocalSandboxd
// with a private dockerd per VM and the busybox image copied in.
import { spawnSync } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Container } from 'sandboxd'
import { rejection } from './helpers/local.js'
import { callbackBackpressureAndErrors, callbacksArriveLive, callbacksMatchPlainExec } from './helpers/output.js'
import { box, engine, host, strayProcesses, useVm } from './helpers/vm.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
const NOSHELL = process.env.SANDBOXD_NOSHELL_IMAGE
if (!IMAGE || !NOSHELL) {
  throw new Error('SANDBOXD_TEST_IMAGE / SANDBOXD_NOSHELL_IMAGE are not set: run the suite with `npm test`, which builds them')
}

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

useVm('exec')

beforeAll(async () => {
  shell = await host.containers.run({ image: IMAGE!, name: `sbx-exec-sh-${tag}`, cmd: ['sleep', '100000'] })
  bare = await host.containers.run({ image: NOSHELL!, name: `sbx-exec-bare-${tag}` })
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

describe('exec', () => {
  it('passes env values byte-exact: =, spaces, quotes, newlines, unicode, empty', async () => {
    const env = {
      EQ: 'a=b=c',
      SPACES: '  two  spaces ',
      QUOTES: `'single' "double" \`back\` $HOME \\`,
      NL: 'line1\nline2\n',
      UNI: 'héllo 🌍 日本',
      EMPTY: '',
    }
    for (const [k, v] of Object.entries(env)) {
      const r = await box.exec(['sh', '-c', `printf '%s' "$${k}"`], { env })
      expect(r.exitCode).toBe(0)
      expect(r.stdout.toString('utf8'), k).toBe(v)
    }
    const set = await box.exec(['sh', '-c', 'if [ -n "${EMPTY+set}" ]; then echo set; fi'], { env })
    expect(set.text()).toBe('set\n')
  })

  it('rejects bad env keys and non-string values with ERR_INVALID_ARGUMENT, never echoing values', async () => {
    const badKeys: Record<string, string>[] = [{ 'A=B': 'v' }, { '': 'v' }, { 'A\u0000': 'v' }]
    for (const env of badKeys) {
      const e = await rejection(box.exec(['true'], { env }))
      expect(e.code).toBe('ERR_INVALID_ARGUMENT')
    }
    for (const bad of [5, true, null, undefined, { x: 1 }]) {
      const e = await rejection(box.exec(['true'], { env: { TOKEN: bad as any } }))
      expect(e.code).toBe('ERR_INVALID_ARGUMENT')
      expect(e.message).toContain('TOKEN')
    }
    const e = await rejection(box.exec(['true'], { env: { SECRET: 'sk-do-not-print\u0000x' } }))
    expect(e.code).toBe('ERR_INVALID_ARGUMENT')
    expect(e.message).not.toContain('sk-do-not-print')
  })

  it('cwd, user, exit codes 0/1, a missing program, stdin to cat with EOF, non-UTF-8 bytes preserved', async () => {
    expect((await box.exec(['pwd'], { cwd: '/tmp' })).text()).toBe('/tmp\n')
    expect((await box.exec(['id', '-u'], { user: '1234:5678' })).text()).toBe('1234\n')
    expect((await box.exec(['id', '-g'], { user: '1234:5678' })).text()).toBe('5678\n')
    expect((await box.exec(['true'])).exitCode).toBe(0)
    expect((await box.exec(['false'])).exitCode).toBe(1)
    // a program that is not there never ran: ERR_EXEC_FAILED (exec.spec.ts covers it with and without a shell)
    const missing = await rejection(box.exec(['definitely-not-a-command']))
    expect(missing).toMatchObject({ code: 'ERR_EXEC_FAILED', exitCode: 127 })

    const cat = await box.exec(['cat'], { stdin: 'hello\nworld' })
    expect(cat.exitCode).toBe(0)
    expect(cat.text()).toBe('hello\nworld')

    const bytes = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0a, 0xc3, 0x28, 0x00])
    const echoed = await box.exec(['cat'], { stdin: bytes })
    expect(Buffer.compare(echoed.stdout, bytes)).toBe(0)
    const big = Buffer.alloc(4 * 1024 * 1024, 0xab)
    const bigEcho = await box.exec(['cat'], { stdin: big })
    expect(bigEcho.stdout.length).toBe(big.length)
    expect(bigEcho.stdout.equals(big)).toBe(true)

    const split = await box.sh('echo to-out; echo to-err >&2; exit 4')
    expect(split).toMatchObject({ exitCode: 4, timedOut: false, aborted: false, truncated: false })
    expect(split.stdout.toString()).toBe('to-out\n')
    expect(split.stderr.toString()).toBe('to-err\n')
    expect(split.durationMs).toBeGreaterThan(0)

    const capped = await box.sh('head -c 100000 /dev/zero', { maxOutputBytes: 1000 })
    expect(capped.stdout.length).toBe(1000)
    expect(capped.truncated).toBe(true)
  })

  it('an exec the engine could not start (unknown user, missing cwd) is ERR_EXEC_FAILED with the daemon message', async () => {
    const user = await rejection(box.exec(['true'], { user: 'nosuchuser' }))
    expect(user).toMatchObject({ code: 'ERR_EXEC_FAILED', exitCode: 126 })
    expect(user.engineMessage).toContain('nosuchuser')
    expect(user.message).toContain(user.engineMessage)
    expect(user.result).toMatchObject({ exitCode: 126 })
    const cwd = await rejection(box.exec(['true'], { cwd: '/no/such/dir' }))
    expect(cwd.code).toBe('ERR_EXEC_FAILED')
    expect(cwd.engineMessage).toContain('/no/such/dir')
    const p = await box.spawn(['true'], { user: 'nosuchuser' })
    const w = await rejection(p.wait({ timeoutMs: 10_000 }))
    expect(w).toMatchObject({ code: 'ERR_EXEC_FAILED', exitCode: 126 })
    // a process that did start and exits 126 or 127 is a result, not a failure to start
    expect((await box.sh('exit 126')).exitCode).toBe(126)
    expect((await box.sh('exit 127')).exitCode).toBe(127)
    const spawned = await box.spawn(['sh', '-c', 'exit 126'])
    expect((await spawned.wait({ timeoutMs: 10_000 })).exitCode).toBe(126)
  })

  it('a timeout kills the whole process tree and resolves with timedOut and the partial output', async () => {
    const t0 = Date.now()
    const r = await box.sh('echo started; sleep 1000 & sleep 1000', { timeoutMs: 500 })
    expect(Date.now() - t0).toBeLessThan(8000)
    expect(r.timedOut).toBe(true)
    expect(r.text()).toBe('started\n')
    expect(r.signal).toMatch(/^SIG(TERM|KILL)$/)
    expect(await strayProcesses(box)).toEqual([])
  })

  it("an abort kills the tree and rejects with the signal's reason", async () => {
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 400)
    const e = await rejection(box.sh('echo partial; sleep 1000 & sleep 1000', { signal: ac.signal }))
    expect(e).toBe(ac.signal.reason)
    expect(e.name).toBe('AbortError')
    expect(await strayProcesses(box)).toEqual([])
    // a process that setsid's away from the group is found by the environment sweep
    const ac2 = new AbortController()
    setTimeout(() => ac2.abort(), 400)
    await rejection(box.sh('setsid sleep 1000 </dev/null >/dev/null 2>&1 & sleep 1000', { signal: ac2.signal }))
    expect(await strayProcesses(box)).toEqual([])
  })

  it('50 execs in flight all return their own output', async () => {
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => box.exec(['sh', '-c', 'echo "$N"; exit $((N % 3))'], { env: { N: String(i) } })),
    )
    results.forEach((r, i) => {
      expect(r.text()).toBe(`${i}\n`)
      expect(r.exitCode).toBe(i % 3)
    })
  })

  it('onStdout/onStderr fire as output arrives, in order, before exec resolves; the result holds it all', async () => {
    await callbacksArriveLive(box)
  })

  it('exec with callbacks gives the result plain exec gives (exit code, bytes, cap, timeout)', async () => {
    await callbacksMatchPlainExec(box)
  })

  it('async callbacks are awaited one at a time; a throwing callback kills the tree and is the rejection', async () => {
    await callbackBackpressureAndErrors(box)
  })

  it('a container removed mid-exec ends with ERR_STREAM_INTERRUPTED promptly, with what was received', async () => {
    const victim = await engine.containers.run({ image: IMAGE!, cmd: ['sleep', '100000'] })
    const pending = rejection(victim.sh('echo before; sleep 1000'))
    await new Promise((r) => setTimeout(r, 500))
    const t0 = Date.now()
    await victim.remove({ force: true })
    const e = await pending
    expect(Date.now() - t0).toBeLessThan(5000)
    expect(e.code).toBe('ERR_STREAM_INTERRUPTED')
    expect(e.result.text()).toBe('before\n')
  })
})
