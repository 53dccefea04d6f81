// Output callbacks on exec, Readable views of a spawned process, and `break` out of its iterators: one set of
// checks run on a container (exec/spawn.spec.ts) and on a sandbox of each backend (sandboxes.spec.ts).
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { expect } from 'vitest'
import type { ExecOptions, ExecProcess, ExecResult } from 'sandboxd'

/** What exec and spawn run on: a Container or a Sandbox. */
export interface Target {
  exec(cmd: string[], options?: ExecOptions): Promise<ExecResult>
  sh(script: string, options?: ExecOptions): Promise<ExecResult>
  spawn(cmd: string[], options?: ExecOptions): Promise<ExecProcess>
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The command lines of every process in the target that mention `needle` (read from /proc, so no `ps` needed). */
export async function running(t: Target, needle: string): Promise<string[]> {
  const r = await t.sh('for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline 2>/dev/null; echo; done')
  return r.text().split('\n').filter((l) => l.includes(needle) && !l.includes('/proc/'))
}

/** Callbacks fire as output arrives: the first before the second print and before exec resolves; all in order. */
export async function callbacksArriveLive(t: Target): Promise<void> {
  const t0 = Date.now()
  const events: { stream: string; text: string; at: number }[] = []
  let resolved = false
  const done = t
    .exec(['sh', '-c', 'echo one; echo err1 >&2; sleep 1; echo two; echo err2 >&2'], {
      onStdout: (b) => void events.push({ stream: 'stdout', text: b.toString(), at: Date.now() - t0 }),
      onStderr: (b) => void events.push({ stream: 'stderr', text: b.toString(), at: Date.now() - t0 }),
    })
    .then((r) => {
      resolved = true
      return r
    })
  while (!events.some((e) => e.text.includes('one'))) {
    expect(resolved).toBe(false)
    await sleep(10)
  }
  const firstAt = Date.now() - t0
  expect(resolved).toBe(false)
  expect(events.some((e) => e.text.includes('two'))).toBe(false)
  const r = await done
  const twoAt = events.find((e) => e.text.includes('two'))!.at
  expect(twoAt - firstAt).toBeGreaterThan(700) // the first piece came a second before the second print
  expect(r.exitCode).toBe(0)
  expect(r.text()).toBe('one\ntwo\n')
  expect(r.stderr.toString()).toBe('err1\nerr2\n')
  // each stream's pieces, in order, are exactly the result's bytes
  expect(events.filter((e) => e.stream === 'stdout').map((e) => e.text).join('')).toBe('one\ntwo\n')
  expect(events.filter((e) => e.stream === 'stderr').map((e) => e.text).join('')).toBe('err1\nerr2\n')

  // only the stream with a callback is handed over; sh shares the path; stdin, env and cwd apply
  const out: string[] = []
  const s = await t.sh('cat; echo "$X" >&2; pwd', { stdin: 'in\n', env: { X: 'x' }, cwd: '/tmp', onStderr: (b) => void out.push(b.toString()) })
  expect(out.join('')).toBe('x\n')
  expect(s.text()).toBe('in\n/tmp\n')
}

/** The same command with and without callbacks: the same result (exit code, output, timedOut, signal, truncated). */
export async function callbacksMatchPlainExec(t: Target): Promise<void> {
  const pick = (r: ExecResult) => ({
    exitCode: r.exitCode,
    stdout: r.stdout.toString('base64'),
    stderr: r.stderr.toString('base64'),
    timedOut: r.timedOut,
    signal: r.signal ?? null,
    truncated: r.truncated,
    aborted: r.aborted,
  })
  const cases: [string[], ExecOptions][] = [
    [['sh', '-c', 'printf "a\\377b"; echo e >&2; head -c 300000 /dev/zero; exit 3'], {}],
    [['sh', '-c', 'seq 1 20000; seq 1 500 >&2'], { maxOutputBytes: 1000 }],
    [['sh', '-c', 'echo start; echo s2 >&2; sleep 30'], { timeoutMs: 700 }],
  ]
  for (const [cmd, opts] of cases) {
    const plain = await t.exec(cmd, opts)
    let seen = 0
    const cb = await t.exec(cmd, { ...opts, onStdout: (b) => void (seen += b.length), onStderr: (b) => void (seen += b.length) })
    expect(pick(cb), cmd.join(' ')).toEqual(pick(plain))
    if (!opts.maxOutputBytes) expect(seen).toBe(plain.stdout.length + plain.stderr.length)
    else expect(seen).toBeGreaterThan(plain.stdout.length + plain.stderr.length) // callbacks see past the cap
  }
  expect((await t.exec(['sh', '-c', 'echo start; sleep 30'], { timeoutMs: 700, onStdout: () => {} })).timedOut).toBe(true)
  expect(await running(t, 'sleep 30')).toEqual([])
}

/** Async callbacks are awaited one at a time (never overlapping), with both streams in order; a throw kills the tree. */
export async function callbackBackpressureAndErrors(t: Target): Promise<void> {
  let inFlight = 0
  let overlapped = false
  let pieces = 0
  let bytes = 0
  const r = await t.exec(['sh', '-c', 'head -c 2000000 /dev/zero; echo done >&2'], {
    onStdout: async (b) => {
      if (inFlight++) overlapped = true
      pieces++
      bytes += b.length
      if (pieces <= 5) await sleep(100) // the exec waits meanwhile
      inFlight--
    },
    onStderr: async () => {
      if (inFlight) overlapped = true
    },
  })
  expect(overlapped).toBe(false)
  expect(bytes).toBe(2_000_000)
  expect(r.stdout.length).toBe(2_000_000)
  expect(r.stderr.toString()).toBe('done\n')

  // a callback that throws: the process tree is killed and exec rejects with that error
  const boom = new Error('boom')
  const t0 = Date.now()
  const e = await t.exec(['sh', '-c', 'echo x; sleep 31337 & sleep 31337'], { onStdout: () => { throw boom } }).catch((err) => err)
  expect(e).toBe(boom)
  expect(Date.now() - t0).toBeLessThan(10_000)
  expect(await running(t, 'sleep 31337')).toEqual([])
  const e2 = await t.exec(['sh', '-c', 'echo x >&2; sleep 31338'], { onStderr: async () => Promise.reject(boom) }).catch((err) => err)
  expect(e2).toBe(boom)
  expect(await running(t, 'sleep 31338')).toEqual([])

  // a callback that never settles does not hold the call past its deadline or its signal
  const t1 = Date.now()
  const stuck = await t.exec(['sh', '-c', 'echo x; sleep 31340'], { timeoutMs: 1500, onStdout: () => new Promise<void>(() => {}) })
  expect(stuck.timedOut).toBe(true)
  expect(stuck.text()).toBe('x\n')
  expect(Date.now() - t1).toBeLessThan(10_000)
  expect(await running(t, 'sleep 31340')).toEqual([])
  const later = new AbortController()
  setTimeout(() => later.abort(new Error('later')), 500)
  const e3 = await t.exec(['sh', '-c', 'echo x; sleep 31341'], { signal: later.signal, onStdout: () => new Promise<void>(() => {}) }).catch((err) => err)
  expect(e3.message).toBe('later')
  expect(await running(t, 'sleep 31341')).toEqual([])

  // the signal aborts as without callbacks; spawn refuses the options
  const ac = new AbortController()
  const aborted = await t.exec(['sh', '-c', 'echo up; sleep 31339'], { signal: ac.signal, onStdout: () => ac.abort(new Error('stop')) }).catch((err) => err)
  expect(aborted.message).toBe('stop')
  expect(await running(t, 'sleep 31339')).toEqual([])
  const pre = await t.exec(['echo', 'x'], { signal: AbortSignal.abort(new Error('early')), onStdout: () => {} }).catch((err) => err)
  expect(pre.message).toBe('early')
  const rel = await t.exec(['true'], { cwd: 'relative', onStdout: () => {} }).catch((err) => err)
  expect(rel.code).toBe('ERR_INVALID_ARGUMENT')
  const bad = await t.spawn(['true'], { onStdout: () => {} }).catch((err) => err)
  expect(bad.code).toBe('ERR_INVALID_ARGUMENT')
  expect((await t.exec(['true'], { onStdout: 'x' as never }).catch((err) => err)).code).toBe('ERR_INVALID_ARGUMENT')
}

/**
 * `proc.stdout` / `proc.stderr` pipe to files with stream.pipeline, byte-exact, both streams at once. With
 * `failedSpawn`, a spawned program that is not there (`ERR_EXEC_FAILED` from the output and `wait()`) destroys
 * the views: the piped one with the error, the unused one quietly.
 */
export async function viewsPipeline(t: Target, failedSpawn: boolean): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sandboxd-views-'))
  try {
    const p = await t.spawn(['sh', '-c', 'seq 1 100000; seq 1 3000 >&2; printf end'])
    await Promise.all([
      pipeline(p.stdout, createWriteStream(join(dir, 'out'))),
      pipeline(p.stderr, createWriteStream(join(dir, 'err'))),
    ])
    const seq = (n: number) => Array.from({ length: n }, (_, i) => `${i + 1}\n`).join('')
    expect(readFileSync(join(dir, 'out'), 'utf8')).toBe(seq(100000) + 'end')
    expect(readFileSync(join(dir, 'err'), 'utf8')).toBe(seq(3000))
    expect(p.stdout).toBe(p.stdout) // one view per stream
    expect((await p.wait()).exitCode).toBe(0)

    // wait() beside a piped view leaves the output to the view (it discards only output nobody reads)
    const w = await t.spawn(['sh', '-c', 'sleep 0.3; seq 1 50000'])
    const piped = pipeline(w.stdout, createWriteStream(join(dir, 'w')))
    expect((await w.wait()).exitCode).toBe(0)
    await piped
    expect(readFileSync(join(dir, 'w'), 'utf8')).toBe(seq(50000))

    if (!failedSpawn) return
    const gone = await t.spawn(['definitely-not-a-command'])
    const err = await pipeline(gone.stdout, createWriteStream(join(dir, 'x'))).catch((e) => e)
    expect(err.code).toBe('ERR_EXEC_FAILED')
    expect(gone.stderr.destroyed).toBe(true) // closed quietly: no listener, so no unhandled 'error'
    expect((await gone.wait().catch((e) => e)).code).toBe('ERR_EXEC_FAILED')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** A paused view holds the process back: the SDK buffers at most about a highWaterMark and a chunk. */
export async function pausedViewIsBounded(t: Target): Promise<void> {
  const p = await t.spawn(['sh', '-c', 'while :; do head -c 1048576 /dev/zero; done'])
  const view = p.stdout
  const first: Buffer = await new Promise((resolve) => view.once('data', resolve))
  view.pause()
  expect(first.length).toBeGreaterThan(0)
  global.gc?.()
  const rss0 = process.memoryUsage().rss
  await sleep(1000)
  const held = view.readableLength
  const growth = (process.memoryUsage().rss - rss0) / 1048576
  console.log(`paused view: ${held} bytes held in the Readable (highWaterMark ${view.readableHighWaterMark}), RSS growth ${growth.toFixed(1)} MiB`)
  expect(held).toBeLessThanOrEqual(view.readableHighWaterMark + 256 * 1024)
  expect(growth).toBeLessThan(16)
  await sleep(300)
  expect(view.readableLength).toBe(held) // nothing more was pulled
  // reading again resumes; destroy() stops reading: the process keeps running until killed
  let more = 0
  view.on('data', (b: Buffer) => void (more += b.length))
  view.resume()
  await sleep(300)
  expect(more).toBeGreaterThan(held)
  view.destroy()
  p.stderr.destroy()
  const waited = await Promise.race([p.wait(), sleep(700).then(() => 'running')])
  expect(waited).toBe('running')
  await p.kill('SIGKILL')
  expect((await p.wait({ timeoutMs: 10_000 })).signal).toBe('SIGKILL')
}

/**
 * `break` out of lines() or the chunk iterator: reading stops, what follows is discarded as it comes (the process
 * is not blocked by it and nothing piles up), the process keeps running; wait() and kill() still work.
 */
export async function breakLeavesProcessRunning(t: Target): Promise<void> {
  // lines(): the process writes ~6 MiB after the break, then a marker file: it gets there, so its output was drained
  const marker = `/tmp/after-break-${Date.now()}`
  const p = await t.spawn(['sh', '-c', `echo first; seq 1 800000; touch ${marker}; sleep 31340`])
  for await (const l of p.lines()) {
    expect(l.line).toBe('first')
    break
  }
  global.gc?.()
  const rss0 = process.memoryUsage().rss
  const t0 = Date.now()
  while ((await t.exec(['test', '-e', marker])).exitCode !== 0) {
    expect(Date.now() - t0).toBeLessThan(30_000)
    await sleep(100)
  }
  expect((process.memoryUsage().rss - rss0) / 1048576).toBeLessThan(16)
  expect(await running(t, 'sleep 31340')).toHaveLength(1) // still running
  await p.kill()
  expect(await p.wait({ timeoutMs: 10_000 })).toMatchObject({ signal: 'SIGTERM', timedOut: false })
  expect(await running(t, 'sleep 31340')).toEqual([])

  // the chunk iterator: break, then the process finishes on its own and wait() has its exit code
  const q = await t.spawn(['sh', '-c', 'echo a; head -c 5000000 /dev/zero; exit 7'])
  for await (const c of q) {
    expect(c.data.length).toBeGreaterThan(0)
    break
  }
  expect(await q.wait({ timeoutMs: 20_000 })).toMatchObject({ exitCode: 7 })
}
