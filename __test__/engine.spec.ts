// The VM's Docker engine through the SDK: images in, containers, exec with env, streaming, files.
// Real parts: LocalSandboxd with a private dockerd per VM, images built on the host engine.
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { getEventListeners } from 'node:events'
import { closeSync, createReadStream, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DockerEngine, LocalSandboxd, Sandboxd, type Container, type Vm } from 'sandboxd'
import { rejection, startLocal, workspace } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')

let sbx: LocalSandboxd
let vm: Vm
let host: DockerEngine
let engine: DockerEngine
let box: Container
const ws = workspace()

/** Processes in the container other than PID 1 (docker-init), its main command and the `ps` itself. */
async function strayProcesses(c: Container): Promise<string[]> {
  const ps = await c.exec(['ps', '-o', 'pid,args'])
  return ps
    .text()
    .split('\n')
    .slice(1)
    .map((l) => l.trim())
    .filter((l) => l && !/^1 /.test(l) && !l.includes('ps -o pid,args') && !/^\d+ sleep 100000$/.test(l))
}

beforeAll(async () => {
  sbx = await startLocal()
  vm = await new Sandboxd({ socketPath: sbx.socketPath }).create({ agentName: 'engine', workspaceDir: ws.dir })
  host = await DockerEngine.local()
  engine = await vm.engine()
  await host.images.copyTo(engine, IMAGE!)
  box = await engine.containers.run({ image: IMAGE!, name: 'box', cmd: ['sleep', '100000'] })
})

afterAll(async () => {
  await sbx?.stop()
  ws.cleanup()
})

describe('engine', () => {
  it('negotiates a version per socket and answers ping/version', async () => {
    await engine.ping()
    const v = await engine.version()
    expect(v.apiVersion).toMatch(/^1\.\d+$/)
    expect(engine.apiVersion).toBe(v.negotiatedApiVersion)
    expect(engine.socketPath).toBe(vm.socketPath)
    const e = await rejection(DockerEngine.connect({ socketPath: '/nonexistent/docker.sock' }))
    expect(e.code).toBe('ERR_ENGINE_UNAVAILABLE')
  })
})

describe('images', () => {
  it('copies an image built on the host into the VM, runs it there, and skips a second copy', async () => {
    const tag = 'sbx-test/copied:1'
    // Build a new image on the host engine (a commit of a container with a marker file).
    const builder = await host.containers.run({ image: IMAGE!, cmd: ['sh', '-c', 'echo built-on-host > /marker; sleep 100000'] })
    await new Promise((r) => setTimeout(r, 300))
    const commit = await fetchCommit(host.socketPath, builder.id, 'sbx-test/copied', '1')
    expect(commit).toMatch(/^sha256:/)
    await builder.remove({ force: true })

    const target = await vm.engine()
    expect(await target.images.exists(tag)).toBe(false)
    const progress: number[] = []
    const first = await host.images.copyTo(target, tag, { onProgress: (n) => progress.push(n) })
    expect(first.skipped).toBe(false)
    expect(first.bytes).toBeGreaterThan(1_000_000)
    expect(first.imageId).toBe(commit)
    expect((await target.images.inspect(tag))?.id).toBe(commit)
    await new Promise((r) => setImmediate(r))
    expect(progress.length).toBeGreaterThan(0)
    expect(progress.every((n, i) => i === 0 || n >= progress[i - 1]!)).toBe(true)

    const second = await host.images.copyTo(target, tag)
    expect(second).toMatchObject({ skipped: true, bytes: 0, imageId: commit })

    const c = await target.containers.run({ image: tag, cmd: ['sleep', '100000'] })
    try {
      expect((await c.exec(['cat', '/marker'])).text()).toBe('built-on-host\n')
    } finally {
      await c.remove({ force: true })
    }
    expect((await rejection(host.images.copyTo(target, 'sbx-test/nope:0'))).code).toBe('ERR_IMAGE_NOT_FOUND')
    const missing = await rejection(target.containers.run({ image: 'sbx-test/nope:0' }))
    expect(missing.code).toBe('ERR_IMAGE_NOT_FOUND')
    expect(missing.message).toContain('copyTo')
  })
})

/** POST /commit on an engine (test-only: the SDK has no commit API yet). */
async function fetchCommit(socketPath: string, id: string, repo: string, tag: string): Promise<string> {
  const { request } = await import('node:http')
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, method: 'POST', path: `/commit?container=${id}&repo=${repo}&tag=${tag}`, headers: { Host: 'docker' } },
      (res) => {
        let body = ''
        res.on('data', (d) => (body += d))
        res.on('end', () => (res.statusCode === 201 ? resolve(JSON.parse(body).Id) : reject(new Error(body))))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

describe('containers', () => {
  it('run/get/list/inspect/stop/start/ensureRunning/wait/logs/remove', async () => {
    const c = await engine.containers.run({
      image: IMAGE!,
      name: 'life',
      cmd: ['sh', '-c', 'echo out-line; echo err-line >&2; sleep 100000'],
      env: { API_KEY: 'sk-secret-123', PLAIN: 'x' },
      labels: { 'sandboxd.test': 'life' },
    })
    expect(c.name).toBe('life')
    expect((await engine.containers.get('life'))?.id).toBe(c.id)
    expect(await engine.containers.get('nobody')).toBeNull()
    const listed = await engine.containers.list({ labels: ['sandboxd.test=life'] })
    expect(listed.map((r) => r.id)).toEqual([c.id])
    const info = await c.inspect()
    expect(info).toMatchObject({ running: true, name: 'life', init: true, labels: { 'sandboxd.test': 'life' } })
    expect(info.envKeys).toEqual(expect.arrayContaining(['API_KEY', 'PLAIN']))
    expect(JSON.stringify(info)).not.toContain('sk-secret-123')

    await new Promise((r) => setTimeout(r, 200))
    const logs: string[] = []
    for await (const chunk of c.logs()) logs.push(`${chunk.stream}:${chunk.data.toString().trim()}`)
    expect(logs.sort()).toEqual(['stderr:err-line', 'stdout:out-line'])

    await c.stop({ timeoutSec: 1 })
    expect((await c.inspect()).running).toBe(false)
    expect((await rejection(c.exec(['true']))).code).toBe('ERR_CONTAINER_NOT_RUNNING')
    await c.ensureRunning()
    expect((await c.inspect()).running).toBe(true)
    await c.ensureRunning()

    const quick = await engine.containers.run({ image: IMAGE!, cmd: ['sh', '-c', 'exit 7'] })
    expect(await quick.wait()).toBe(7)
    await quick.remove()

    await c.remove({ force: true })
    expect(await engine.containers.get('life')).toBeNull()
    expect((await rejection(c.inspect())).code).toBe('ERR_CONTAINER_NOT_FOUND')
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

/** What `fixtures/heap-stream.mjs` reports: a `for await` stream in a child process with `heapMib` of live heap. */
interface HeapStream {
  bytes: number
  exitCode: number
  majors: number
  minors: number
  rssGrowthMib: number
  heapUsedMib: number
}

function heapStream(heapMib: number, streamMib: number): HeapStream {
  return fixtureReport('heap-stream.mjs', [engine.socketPath, box.id, String(heapMib), String(streamMib)])
}

/** Run `fixtures/<name>` in a fresh node (started with `flags`) and parse the JSON line it prints last. */
function fixtureReport(name: string, args: string[], flags: string[] = []): any {
  const child = fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))
  const out = execFileSync(process.execPath, [...flags, child, ...args], { timeout: 60_000 })
  return JSON.parse(out.toString().trim().split('\n').pop()!)
}

describe('spawn', () => {
  it('streams stdout/stderr chunks, lines(), write/end half-close, wait', async () => {
    const p = await box.spawn(['sh', '-c', 'echo one; echo two >&2; echo three'])
    const got: string[] = []
    for await (const { stream, data } of p) got.push(`${stream}:${data.toString()}`)
    expect(got.join('')).toContain('one')
    expect(got.filter((g) => g.startsWith('stderr:')).join('')).toBe('stderr:two\n')
    expect(await p.wait()).toMatchObject({ exitCode: 0, timedOut: false })

    const cat = await box.spawn(['cat'])
    await cat.write('a\nb')
    await cat.write(Buffer.from('c\r\n'))
    await cat.end()
    const lines: string[] = []
    for await (const l of cat.lines()) lines.push(`${l.stream}:${l.line}`)
    expect(lines).toEqual(['stdout:a', 'stdout:bc'])
    expect((await cat.wait()).exitCode).toBe(0)
    expect((await rejection(cat.write('late'))).code).toBe('ERR_PROCESS_FINISHED')
  })

  it('kill() signals the whole group; wait() reports it; dispose kills what is left', async () => {
    const p = await box.spawn(['sh', '-c', 'sleep 1000 & sleep 1000'])
    await new Promise((r) => setTimeout(r, 300))
    expect(p.pid).toBeGreaterThan(1)
    await p.kill('SIGKILL')
    const st = await p.wait({ timeoutMs: 10_000 })
    expect(st.exitCode).toBe(137)
    expect(st.signal).toBe('SIGKILL')
    expect(await strayProcesses(box)).toEqual([])
    expect((await rejection(p.kill('SIGNOPE'))).code).toBe('ERR_INVALID_ARGUMENT')

    {
      await using q = await box.spawn(['sh', '-c', 'sleep 1000 & sleep 1000'])
      await new Promise((r) => setTimeout(r, 200))
      expect(q.pid).toBeGreaterThan(1)
    }
    expect(await strayProcesses(box)).toEqual([])
  })

  it('a timeout on spawn kills the tree and wait() says timedOut', async () => {
    const p = await box.spawn(['sh', '-c', 'sleep 1000 & sleep 1000'], { timeoutMs: 300 })
    const st = await p.wait({ timeoutMs: 10_000 })
    expect(st.timedOut).toBe(true)
    expect(await strayProcesses(box)).toEqual([])
  })

  it("spawn's signal kills the tree while the process runs; the output ends, wait() says aborted, the listener goes", async () => {
    const ac = new AbortController()
    const p = await box.spawn(['sh', '-c', 'echo up; sleep 1000 & sleep 1000'], { signal: ac.signal })
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1) // held past the spawn call, for the process
    const seen: string[] = []
    const reading = (async () => {
      for await (const { line } of p.lines()) {
        seen.push(line)
        if (line === 'up') ac.abort()
      }
    })()
    await reading // the output ends once the tree is killed
    expect(seen).toEqual(['up'])
    const st = await p.wait({ timeoutMs: 10_000 })
    expect(st.aborted).toBe(true)
    expect(st.timedOut).toBe(false)
    expect(['SIGTERM', 'SIGKILL']).toContain(st.signal)
    expect([143, 137]).toContain(st.exitCode)
    expect(await strayProcesses(box)).toEqual([])
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0)

    // a process that ends on its own lets go of the signal too, and a later abort changes nothing
    const ac2 = new AbortController()
    const q = await box.spawn(['true'], { signal: ac2.signal })
    const st2 = await q.wait({ timeoutMs: 10_000 })
    expect(st2).toMatchObject({ exitCode: 0, aborted: false, timedOut: false })
    expect(getEventListeners(ac2.signal, 'abort')).toHaveLength(0)
    ac2.abort()
    expect(await q.wait()).toMatchObject({ exitCode: 0, aborted: false })

    // aborted before the process could start: spawn itself rejects, nothing runs
    const e = await rejection(box.spawn(['sh', '-c', 'sleep 1000'], { signal: AbortSignal.abort() }))
    expect(e.name).toBe('AbortError')
    expect(await strayProcesses(box)).toEqual([])
  })

  it('streams 200 MiB with bounded RSS, and a paused consumer does not grow memory', async () => {
    const total = 200 * 1024 * 1024
    const p = await box.spawn(['head', '-c', String(total), '/dev/zero'])
    global.gc?.()
    const rss0 = process.memoryUsage().rss
    let n = 0
    let peak = rss0
    const t0 = Date.now()
    for await (const { data } of p) {
      n += data.length
      peak = Math.max(peak, process.memoryUsage.rss())
    }
    expect(n).toBe(total)
    console.log(`spawn streamed 200 MiB in ${Date.now() - t0} ms, RSS growth ${((peak - rss0) / 1048576).toFixed(1)} MiB (JS heap ${(process.memoryUsage().heapUsed / 1048576).toFixed(1)} MiB)`)
    expect((await p.wait()).exitCode).toBe(0)
    const growth = (peak - rss0) / 1024 / 1024
    expect(growth).toBeLessThan(32)

    const slow = await box.spawn(['head', '-c', String(total), '/dev/zero'])
    const first = await slow.next()
    expect(first.done).toBe(false)
    const before = process.memoryUsage().rss
    await new Promise((r) => setTimeout(r, 1500))
    const after = process.memoryUsage().rss
    expect((after - before) / 1024 / 1024).toBeLessThan(8)
    await slow.kill('SIGKILL')
    await slow.return() // stop reading: what is left is discarded, so the exit can be reached
    expect((await slow.wait({ timeoutMs: 10_000 })).exitCode).toBe(137)
  })

  it('read(buffer) fills one reused buffer: streams stay apart, bytes exact, null at the end', async () => {
    const p = await box.spawn(['sh', '-c', 'printf abcdefghij; printf XYZ >&2; printf klmnop'])
    const buf = Buffer.alloc(4)
    const got = { stdout: '', stderr: '' }
    let reads = 0
    for (let r = await p.read(buf); r !== null; r = await p.read(buf)) {
      expect(r.bytesRead).toBeLessThanOrEqual(4)
      got[r.stream] += buf.subarray(0, r.bytesRead).toString()
      reads++
    }
    expect(got).toEqual({ stdout: 'abcdefghijklmnop', stderr: 'XYZ' })
    expect(reads).toBeGreaterThanOrEqual(5) // 16 stdout bytes need at least 4 reads of 4
    expect(await p.read(buf)).toBeNull()
    expect((await p.wait()).exitCode).toBe(0)
    const e = await rejection(p.read(Buffer.alloc(0)))
    expect(e.code).toBe('ERR_INVALID_ARGUMENT')
    expect(e.argument).toBe('buffer')
  })

  it('for-await chunks are freed by young GCs: RSS growth under 16 MiB, no major GC', async () => {
    // V8 frees a dropped chunk Buffer only at a GC, and on its own scavenges after 32 MiB of new Buffers. The SDK
    // nudges it to scavenge every 4 MiB of chunks in a small heap; a major GC (what memory pressure starts)
    // would cost the stream twice the CPU.
    const r = heapStream(0, 200)
    expect(r.bytes).toBe(200 * 1048576)
    expect(r.exitCode).toBe(0)
    expect(r.minors).toBeGreaterThanOrEqual(30) // ~50 nudged; ~6 on V8's own schedule
    expect(r.majors).toBeLessThanOrEqual(1)
    expect(r.rssGrowthMib).toBeLessThan(16) // ~9–14; ~35 without nudges
  })

  it('a large JS heap is left to V8: no nudged GCs, no major GCs for for-await chunks', async () => {
    // Scavenges take longer in a large heap, so the nudge interval grows with it (a quarter of the heap) and stops
    // from 128 MiB, where V8's own schedule is as frequent. Pulses of memory pressure used to start a major GC
    // every 8 MiB, which marks the whole heap: with 150 MiB live that was 11 major GCs for 200 MiB.
    const r = heapStream(150, 200)
    expect(r.bytes).toBe(200 * 1048576)
    expect(r.exitCode).toBe(0)
    expect(r.heapUsedMib).toBeGreaterThan(150)
    expect(r.majors).toBeLessThanOrEqual(5)
    expect(r.minors).toBeLessThanOrEqual(15) // ~6; a nudge every 4 MiB would make ~50
  })

  it('archive handles dropped unfinished release their AbortSignal: no listener left on it, no signal kept alive', async () => {
    // An unfinished archive stream or upload that is garbage-collected cannot remove its abort listener then
    // (no env in a finalizer); the next call that links a signal does. Before that, the dropped handle's
    // references kept the signal alive for good and its listener stayed on it.
    const r = fixtureReport('signal-leak.mjs', [engine.socketPath, box.id], ['--expose-gc'])
    expect(r.whileAlive).toBe(20) // the fixture sees the listeners while the handles live
    expect(r.afterNextCall).toBe(0)
    expect(r.shortLivedCollected).toBe(true)
    expect(r.exitCode).toBe(0)
  })

  it('a process.memoryUsage that throws does not break for-await streaming', async () => {
    // The GC nudge reads the heap size through process.memoryUsage(); what that throws must not leak into the
    // chunk being created. 40 MiB crosses at least one nudge decision (one comes every 4–32 MiB).
    const original = process.memoryUsage
    process.memoryUsage = (() => {
      throw new Error('patched')
    }) as unknown as typeof process.memoryUsage
    try {
      const p = await box.spawn(['head', '-c', String(40 * 1048576), '/dev/zero'])
      let n = 0
      for await (const { data } of p) n += data.length
      expect(n).toBe(40 * 1048576)
      expect((await p.wait()).exitCode).toBe(0)
    } finally {
      process.memoryUsage = original
    }
  })

  it('read(buffer) streams 200 MiB with RSS growth under 16 MiB', async () => {
    const total = 200 * 1024 * 1024
    const p = await box.spawn(['head', '-c', String(total), '/dev/zero'])
    const buf = Buffer.alloc(256 * 1024)
    const rss0 = process.memoryUsage().rss
    let peak = rss0
    let n = 0
    let nonZero = 0
    for (let r = await p.read(buf); r !== null; r = await p.read(buf)) {
      expect(r.stream).toBe('stdout')
      n += r.bytesRead
      if (buf[r.bytesRead - 1] !== 0) nonZero++
      peak = Math.max(peak, process.memoryUsage().rss)
    }
    expect(n).toBe(total)
    expect(nonZero).toBe(0)
    expect((await p.wait()).exitCode).toBe(0)
    const growth = (peak - rss0) / 1048576
    console.log(`read(buffer) streamed 200 MiB, RSS growth ${growth.toFixed(1)} MiB`)
    expect(growth).toBeLessThan(16)
  })
})

describe('files', () => {
  it('writeFile/readFile/putArchive/getArchive through the archive API', async () => {
    const data = Buffer.from([0, 1, 2, 255, 254, 10])
    await box.writeFile('/tmp/bin.dat', data, { mode: 0o600 })
    expect((await box.readFile('/tmp/bin.dat')).equals(data)).toBe(true)
    expect((await box.exec(['stat', '-c', '%a', '/tmp/bin.dat'])).text()).toBe('600\n')
    await box.writeFile('/tmp/text.txt', 'héllo')
    expect((await box.readFile('/tmp/text.txt')).toString()).toBe('héllo')
    const tar = await box.getArchive('/tmp/text.txt')
    expect(tar.length % 512).toBe(0)
    await box.exec(['mkdir', '-p', '/tmp/unpacked'])
    await box.putArchive('/tmp/unpacked', tar)
    expect((await box.readFile('/tmp/unpacked/text.txt')).toString()).toBe('héllo')
    expect((await rejection(box.readFile('/no/such/file'))).code).toBe('ERR_PATH_NOT_FOUND')
    expect((await rejection(box.writeFile('relative.txt', 'x'))).code).toBe('ERR_INVALID_ARGUMENT')
  })
})

describe('streamed archives', () => {
  const MiB = 1024 * 1024

  it('getArchiveStream: 64 MiB read out in pieces, bytes exact, RSS bounded; break closes it; a bad path rejects next()', async () => {
    await box.sh('mkdir -p /tmp/out && head -c 67108864 /dev/urandom > /tmp/out/big && printf small > /tmp/out/small')
    const want = (await box.exec(['sha256sum', '/tmp/out/big'])).text().split(' ')[0]
    const dir = mkdtempSync(join(ws.dir, 'get-'))
    const tarPath = join(dir, 'out.tar')
    const fd = openSync(tarPath, 'w')
    global.gc?.()
    const rss0 = process.memoryUsage().rss
    let peak = rss0
    let pieces = 0
    for await (const piece of box.getArchiveStream('/tmp/out')) {
      expect(Buffer.isBuffer(piece)).toBe(true)
      writeSync(fd, piece)
      pieces++
      peak = Math.max(peak, process.memoryUsage.rss())
    }
    closeSync(fd)
    expect(pieces).toBeGreaterThan(16) // streamed, not handed over in one buffer
    expect((peak - rss0) / MiB).toBeLessThan(32)
    execFileSync('tar', ['-xf', tarPath, '-C', dir])
    expect(createHash('sha256').update(readFileSync(join(dir, 'out/big'))).digest('hex')).toBe(want)
    expect(readFileSync(join(dir, 'out/small'), 'utf8')).toBe('small')

    // Leaving early closes the engine's connection; the next stream works.
    for await (const piece of box.getArchiveStream('/tmp/out')) {
      expect(piece.length).toBeGreaterThan(0)
      break
    }
    const again = box.getArchiveStream('/tmp/out/small')
    expect((await again.next()).done).toBe(false)
    await again.return()
    expect((await again.next()).done).toBe(true)

    // The engine locks the container while an archive is being read: an exec cannot even be created. Its
    // timeoutMs and signal still bound the call; once the stream is closed, execs work again.
    const held = box.getArchiveStream('/tmp/out')
    expect((await held.next()).done).toBe(false)
    let t0 = Date.now()
    const late = await rejection(box.exec(['true'], { timeoutMs: 1000 }))
    expect(late.code).toBe('ERR_TIMEOUT')
    expect(Date.now() - t0).toBeLessThan(5000)
    t0 = Date.now()
    const stopped = await rejection(box.exec(['true'], { signal: AbortSignal.timeout(500) }))
    expect(stopped.name).toBe('TimeoutError')
    expect(Date.now() - t0).toBeLessThan(5000)
    await held.return()
    expect((await box.exec(['true'], { timeoutMs: 10_000 })).exitCode).toBe(0)

    const missing = await rejection(box.getArchiveStream('/no/such/dir').next())
    expect(missing.code).toBe('ERR_PATH_NOT_FOUND')
    expect(missing.path).toBe('/no/such/dir')
    expect((await rejection(box.getArchiveStream('relative').next())).code).toBe('ERR_INVALID_ARGUMENT')
  })

  it('putArchiveStream: a 32 MiB tar streamed in 64 KiB writes lands byte-exact; end() waits for extraction', async () => {
    const dir = mkdtempSync(join(ws.dir, 'put-'))
    mkdirSync(join(dir, 'src/sub'), { recursive: true })
    const big = randomBytes(32 * MiB)
    writeFileSync(join(dir, 'src/sub/big.bin'), big)
    writeFileSync(join(dir, 'src/note.txt'), 'héllo\n')
    execFileSync('tar', ['-cf', join(dir, 'in.tar'), '-C', dir, 'src'])
    await box.exec(['mkdir', '-p', '/tmp/in'])
    const up = box.putArchiveStream('/tmp/in', { timeoutMs: 60_000 })
    let writes = 0
    for await (const piece of createReadStream(join(dir, 'in.tar'), { highWaterMark: 64 * 1024 })) {
      await up.write(piece as Buffer)
      writes++
    }
    await up.end()
    expect(writes).toBeGreaterThan(500)
    const sum = (await box.exec(['sha256sum', '/tmp/in/src/sub/big.bin'])).text().split(' ')[0]
    expect(sum).toBe(createHash('sha256').update(big).digest('hex'))
    expect((await box.readFile('/tmp/in/src/note.txt')).toString()).toBe('héllo\n')
    const late = await rejection(up.write(Buffer.from('x')))
    expect(late.code).toBe('ERR_INVALID_ARGUMENT')
  })

  it('putArchiveStream errors: missing directory, abort, signal, dispose: typed errors, and the client goes on', async () => {
    const tarOf = (name: string, bytes: number): Buffer => {
      const dir = mkdtempSync(join(ws.dir, 'tar-'))
      writeFileSync(join(dir, name), randomBytes(bytes))
      return execFileSync('tar', ['-cf', '-', '-C', dir, name], { maxBuffer: 64 * MiB })
    }
    // A directory that is not there: write() or end() rejects with the path.
    const lost = box.putArchiveStream('/no/such/dir')
    const e = await rejection(lost.write(tarOf('a', 1024)).then(() => lost.end()))
    expect(e.code).toBe('ERR_PATH_NOT_FOUND')
    expect(e.path).toBe('/no/such/dir')
    expect((await rejection(box.putArchiveStream('relative/dir').end())).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(box.putArchiveStream('/tmp', { timeoutMs: -1 }).end())).code).toBe('ERR_INVALID_ARGUMENT')

    // abort() halfway through a 4 MiB file: ABORT_ERR after, and the file is not there whole.
    await box.exec(['mkdir', '-p', '/tmp/cut'])
    const tar = tarOf('cut.bin', 4 * MiB)
    const up = box.putArchiveStream('/tmp/cut')
    await up.write(tar.subarray(0, 2 * MiB))
    await up.abort()
    expect((await rejection(up.end())).code).toBe('ABORT_ERR')
    expect((await rejection(up.write(tar.subarray(2 * MiB)))).code).toBe('ABORT_ERR')
    const size = (await box.sh('stat -c %s /tmp/cut/cut.bin 2>/dev/null || echo none')).text().trim()
    expect(size).not.toBe(String(4 * MiB))

    // The AbortSignal given at the start aborts the upload: later write() and end() reject.
    const ac = new AbortController()
    const signalled = box.putArchiveStream('/tmp/cut', { signal: ac.signal })
    await signalled.write(tar.subarray(0, 512 * 1024))
    ac.abort()
    expect(await rejection(signalled.write(tar.subarray(512 * 1024)))).toBe(ac.signal.reason)
    expect(await rejection(signalled.end())).toBe(ac.signal.reason)

    // await using without end(): disposed = aborted, never a short archive committed.
    {
      await using partial = box.putArchiveStream('/tmp/cut')
      await partial.write(tar.subarray(0, 1024 * 1024))
    }
    const after = (await box.sh('stat -c %s /tmp/cut/cut.bin 2>/dev/null || echo none')).text().trim()
    expect(after).not.toBe(String(4 * MiB))
    // The client still works.
    const ok = box.putArchiveStream('/tmp/cut')
    await ok.write(tar)
    await ok.end()
    expect((await box.exec(['stat', '-c', '%s', '/tmp/cut/cut.bin'])).text().trim()).toBe(String(4 * MiB))
  })
})
