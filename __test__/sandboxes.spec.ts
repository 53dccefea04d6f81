// One sandbox API over every backend: the same exec, spawn, files and lifecycle tests run against a sandbox from
// the sbx backend and one from the desktop (legacy /vm) backend, both served by one LocalSandboxd (a private dockerd
// per sandbox, the busybox template copied in from the host's engine). The container path is covered by
// exec/spawn/files.spec.ts; what differs per backend is asserted with the backend named.
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LegacySandboxd, SandboxAgent, Sandboxd, Sandboxes, type AgentEvent, type BackendKind, type LocalSandboxd, type Sandbox } from 'sandboxd'
import { rejection, startLocal, workspace } from './helpers/local.js'
import * as output from './helpers/output.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')

let local: LocalSandboxd
const ws = workspace('sbx-front-')

beforeAll(async () => {
  local = await startLocal()
}, 120_000)

afterAll(async () => {
  await local?.stop()
  ws.cleanup()
}, 60_000)

describe('Sandboxes.connect', () => {
  it('auto-detects the sbx API first on a socket that serves both', async () => {
    const s = await Sandboxes.connect({ socketPath: local.socketPath })
    expect(s.backend).toBe('sbx')
    expect(s.socketPath).toContain(local.socketPath)
    const d = await Sandboxes.connect({ socketPath: local.socketPath, backend: 'desktop' })
    expect(d.backend).toBe('desktop')
    expect(d.socketPath).toBe(local.socketPath)
  })

  it('the legacy /vm client is also exported under a name that says so', () => {
    expect(LegacySandboxd).toBe(Sandboxd)
    expect(new LegacySandboxd({ socketPath: local.socketPath }).socketPath).toBe(local.socketPath)
  })

  it('nothing answering lists every path and backend tried, in order', async () => {
    const sock = join(ws.dir, 'nothing.sock')
    const e = await rejection(Sandboxes.connect({ socketPath: sock }))
    expect(e.code).toBe('ERR_SANDBOXD_UNAVAILABLE')
    expect(e.triedPaths).toHaveLength(2)
    expect(e.triedPaths[0]).toMatch(/^sbx .*nothing\.sock/)
    expect(e.triedPaths[1]).toMatch(/^desktop .*nothing\.sock/)
    expect(e.message).toContain(sock)
  })

  it('bad options are ERR_INVALID_ARGUMENT naming the option', async () => {
    for (const [opts, arg] of [
      [{ backend: 'cloud' }, 'backend'],
      [{ versionCheck: 'loose' }, 'versionCheck'],
      [{ backend: 5 }, 'backend'],
      [{ imageSource: 'tcp://1.2.3.4:2375' }, 'imageSource'],
    ] as const) {
      const e = await rejection(Sandboxes.connect({ socketPath: local.socketPath, ...(opts as object) }))
      expect(e.code, JSON.stringify(opts)).toBe('ERR_INVALID_ARGUMENT')
      expect(e.argument, JSON.stringify(opts)).toBe(arg)
    }
  })
})

const BACKENDS: BackendKind[] = ['sbx', 'desktop', 'v1']

describe.each(BACKENDS)('a sandbox on the %s backend', (backend) => {
  let sandboxes: Sandboxes
  let box: Sandbox
  const name = `front-${backend}`

  beforeAll(async () => {
    sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend })
    box = await sandboxes.create({ name, agent: 'shell', workspace: ws.dir, template: IMAGE })
  }, 180_000)

  afterAll(async () => {
    await box?.remove({ force: true })
  }, 60_000)

  it('is listed, got, ensured idempotently; drift is ERR_SANDBOX_CONFLICT', async () => {
    expect(box).toMatchObject({ name, backend, owned: true })
    expect(box.info).toMatchObject({ name, agent: 'shell', workspace: ws.dir, status: 'running' })
    const listed = await sandboxes.list()
    expect(listed.map((s) => s.name)).toContain(name)
    const got = await sandboxes.get(name)
    expect(got?.name).toBe(name)
    expect(got?.owned).toBe(false)
    expect(await sandboxes.get('no-such-sandbox')).toBeNull()
    const again = await sandboxes.ensure({ name, agent: 'shell', workspace: ws.dir, template: IMAGE })
    expect(again.info.name).toBe(name)
    const other = workspace('sbx-front-other-')
    try {
      const e = await rejection(sandboxes.ensure({ name, agent: 'shell', workspace: other.dir, template: IMAGE }))
      expect(['ERR_SANDBOX_CONFLICT', 'ERR_VM_CONFLICT']).toContain(e.code)
    } finally {
      other.cleanup()
    }
    const dup = await rejection(sandboxes.create({ name, agent: 'shell', workspace: ws.dir, template: IMAGE }))
    expect(['ERR_SANDBOX_CONFLICT', 'ERR_VM_CONFLICT']).toContain(dup.code)
  })

  it('exec: stdout, stderr, exit codes, env, cwd, stdin, non-UTF-8 bytes, output cap', async () => {
    const hi = await box.exec(['echo', 'hi', 'there'])
    expect(hi).toMatchObject({ exitCode: 0, timedOut: false, aborted: false })
    expect(hi.text()).toBe('hi there\n')
    expect((await box.exec(['false'])).exitCode).toBe(1)
    const split = await box.sh('echo to-out; echo to-err >&2; exit 4')
    expect(split).toMatchObject({ exitCode: 4 })
    expect(split.stdout.toString()).toBe('to-out\n')
    expect(split.stderr.toString()).toBe('to-err\n')
    const env = { EQ: 'a=b=c', NL: 'line1\nline2\n', UNI: 'héllo 🌍', EMPTY: '' }
    for (const [k, v] of Object.entries(env)) {
      expect((await box.sh(`printf '%s' "$${k}"`, { env })).stdout.toString(), k).toBe(v)
    }
    expect((await box.exec(['pwd'], { cwd: '/tmp' })).text()).toBe('/tmp\n')
    expect((await box.exec(['cat'], { stdin: 'from stdin' })).text()).toBe('from stdin')
    const bytes = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0a, 0xc3, 0x28, 0x00])
    expect(Buffer.compare((await box.exec(['cat'], { stdin: bytes })).stdout, bytes)).toBe(0)
    const capped = await box.sh('head -c 100000 /dev/zero', { maxOutputBytes: 1000 })
    expect(capped.stdout.length).toBe(1000)
    expect(capped.truncated).toBe(true)
  })

  it('exec sees the workspace at the same absolute path', async () => {
    if (backend === 'v1') {
      // v1 has no host mounts: the workspace is an empty directory at the same path, the host's files stay out
      writeFileSync(join(ws.dir, 'from-host-v1.txt'), 'host wrote this')
      expect((await box.exec(['ls', '-A', ws.dir])).text()).toBe('')
      await box.sh(`echo sandbox wrote this > ${join(ws.dir, 'from-box-v1.txt')}`)
      expect((await box.readFile(join(ws.dir, 'from-box-v1.txt'))).toString()).toBe('sandbox wrote this\n')
      expect(readdirSync(ws.dir)).not.toContain('from-box-v1.txt')
      return
    }
    writeFileSync(join(ws.dir, `from-host-${backend}.txt`), 'host wrote this')
    expect((await box.exec(['cat', join(ws.dir, `from-host-${backend}.txt`)])).text()).toBe('host wrote this')
    await box.sh(`echo sandbox wrote this > ${join(ws.dir, `from-box-${backend}.txt`)}`)
    expect(readFileSync(join(ws.dir, `from-box-${backend}.txt`), 'utf8')).toBe('sandbox wrote this\n')
  })

  it('a timeout kills the process tree and resolves with timedOut and the partial output', async () => {
    const t0 = Date.now()
    const r = await box.sh('echo started; sleep 30 & sleep 30; echo never', { timeoutMs: 800 })
    expect(Date.now() - t0).toBeLessThan(10_000)
    expect(r.timedOut).toBe(true)
    expect(r.text()).toBe('started\n')
    const left = await box.sh('ps -o args | grep -c "^sleep 30" || true')
    expect(left.text().trim()).toBe('0')
  })

  it("an abort kills the tree and rejects with the signal's reason, keeping the partial output", async () => {
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 500)
    const e = await rejection(box.sh('echo before; sleep 31', { signal: ac.signal }))
    expect(e).toBe(ac.signal.reason)
    const left = await box.sh('ps -o args | grep -c "^sleep 31" || true')
    expect(left.text().trim()).toBe('0')
  })

  it('a program that is not there is ERR_EXEC_FAILED', async () => {
    const e = await rejection(box.exec(['definitely-not-a-command']))
    expect(e.code).toBe('ERR_EXEC_FAILED')
  })

  it('spawn: streamed chunks, lines(), write/end half-close, wait', async () => {
    const p = await box.spawn(['cat'])
    await p.write('one\ntwo')
    await p.end()
    const got: string[] = []
    for await (const { stream, data } of p) got.push(`${stream}:${data.toString()}`)
    expect(got.join('')).toBe('stdout:one\ntwo')
    expect(await p.wait()).toMatchObject({ exitCode: 0, timedOut: false, aborted: false })

    const q = await box.spawn(['sh', '-c', 'echo a; echo b >&2; echo c'])
    const lines: string[] = []
    for await (const l of q.lines()) lines.push(`${l.stream}:${l.line}`)
    expect(lines.filter((l) => l.startsWith('stdout:'))).toEqual(['stdout:a', 'stdout:c'])
    expect(lines).toContain('stderr:b')
    expect((await q.wait()).exitCode).toBe(0)
  })

  it('spawn: kill() ends the tree; a timeout says timedOut; dispose kills what is left', async () => {
    const p = await box.spawn(['sh', '-c', 'sleep 32 & sleep 32'])
    await p.kill('SIGKILL')
    const st = await p.wait({ timeoutMs: 10_000 })
    expect(st.signal).toBe('SIGKILL')
    const t = await box.spawn(['sleep', '33'], { timeoutMs: 500 })
    expect(await t.wait({ timeoutMs: 10_000 })).toMatchObject({ timedOut: true })
    {
      await using d = await box.spawn(['sleep', '34'])
      void d
    }
    const left = await box.sh('ps -o args | grep -cE "^sleep 3[234]" || true')
    expect(left.text().trim()).toBe('0')
  })

  it('exec onStdout/onStderr: live, in order, the same result as plain exec; backpressure; a throw kills the tree', async () => {
    await output.callbacksArriveLive(box)
    await output.callbacksMatchPlainExec(box)
    await output.callbackBackpressureAndErrors(box)
  }, 60_000)

  it('spawn: proc.stdout/stderr Readables pipe byte-exact; a paused one is bounded; destroy leaves the process', async () => {
    // sbx and v1: a missing program is not ERR_EXEC_FAILED on spawn's output (only exec detects the refusal)
    await output.viewsPipeline(box, backend === 'desktop')
    await output.pausedViewIsBounded(box)
  }, 60_000)

  it('spawn: break out of lines() or the chunks leaves the process running; kill/wait work', async () => {
    await output.breakLeavesProcessRunning(box)
  }, 60_000)

  it('spawn: read(buffer) streams 8 MiB byte-exact into one reused buffer', async () => {
    const p = await box.spawn(['sh', '-c', 'head -c 8388608 /dev/zero | tr "\\0" "x"'])
    const buf = Buffer.alloc(64 * 1024)
    let total = 0
    let bad = 0
    for (let r = await p.read(buf); r; r = await p.read(buf)) {
      expect(r.stream).toBe('stdout')
      for (let i = 0; i < r.bytesRead; i++) if (buf[i] !== 0x78) bad++
      total += r.bytesRead
    }
    expect(total).toBe(8 * 1024 * 1024)
    expect(bad).toBe(0)
    expect((await p.wait()).exitCode).toBe(0)
  })

  it('files: writeFile/readFile round trip with mode; missing path, directory, bad path', async () => {
    const dir = join(ws.dir, `files-${backend}`)
    mkdirSync(dir, { recursive: true })
    if (backend === 'v1') await box.exec(['mkdir', '-p', dir]) // no host mounts: the sandbox's own directory
    const data = Buffer.from([0, 1, 2, 255, 10, 13])
    await box.writeFile('/tmp/blob.bin', data, { mode: 0o600 })
    expect(Buffer.compare(await box.readFile('/tmp/blob.bin'), data)).toBe(0)
    expect((await box.exec(['stat', '-c', '%a', '/tmp/blob.bin'])).text()).toBe('600\n')
    await box.writeFile(join(dir, 'note.txt'), 'through the sandbox')
    const seen = backend === 'v1' ? (await box.readFile(join(dir, 'note.txt'))).toString() : readFileSync(join(dir, 'note.txt'), 'utf8')
    expect(seen).toBe('through the sandbox')
    expect((await rejection(box.readFile('/no/such/file'))).code).toBe('ERR_PATH_NOT_FOUND')
    expect((await rejection(box.readFile('/tmp'))).code).toBe('ERR_NOT_A_FILE')
    expect((await rejection(box.readFile('relative/path'))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(box.writeFile('/no/such/dir/f', 'x'))).code).toMatch(/ERR_PATH_NOT_FOUND|ERR_ENGINE|ERR_SANDBOXD_PROTOCOL/)
  })

  it('stop and start: exec on a stopped sandbox is a typed error; start resumes it', async () => {
    await box.stop()
    expect((await box.refresh()).status).toBe('stopped')
    const e = await rejection(box.exec(['true']))
    expect(['ERR_SANDBOX_STOPPED', 'ERR_CONTAINER_NOT_RUNNING']).toContain(e.code)
    await box.start()
    expect((await box.refresh()).status).toBe('running')
    expect((await box.exec(['echo', 'back'])).text()).toBe('back\n')
  })

  it('bad input is a typed error and the client stays usable', async () => {
    for (const bad of ['-bad', 'x', 'a'.repeat(64), 'has space', 'under_score!']) {
      const e = await rejection(sandboxes.create({ name: bad, agent: 'shell', workspace: ws.dir, template: IMAGE }))
      expect(e.code, bad).toBe('ERR_INVALID_ARGUMENT')
    }
    const rel = await rejection(sandboxes.create({ name: `rel-${backend}`, agent: 'shell', workspace: 'relative/dir', template: IMAGE }))
    expect(rel.code).toBe('ERR_INVALID_ARGUMENT')
    if (backend !== 'v1') {
      // v1 reads no host directory: the workspace is made inside the sandbox
      const missing = await rejection(sandboxes.create({ name: `mis-${backend}`, agent: 'shell', workspace: join(ws.dir, 'nope'), template: IMAGE }))
      expect(missing.code).toBe('ERR_INVALID_ARGUMENT')
    }
    const noAgent = await rejection(sandboxes.create({ workspace: ws.dir } as never))
    expect(noAgent.code).toBe('ERR_INVALID_ARGUMENT')
    const unknown = await rejection(
      sandboxes.create({ name: `unk-${backend}`, agent: 'shell', workspace: ws.dir, template: 'sandboxd-test/none:nope' }),
    )
    // sbx and v1 answer 400 naming the template (the daemon rejects the input); desktop finds no image to copy in.
    expect(unknown.code).toBe(backend === 'desktop' ? 'ERR_IMAGE_NOT_FOUND' : 'ERR_INVALID_ARGUMENT')
    expect(unknown.message).toContain('sandboxd-test/none:nope')
    expect(await sandboxes.get(`unk-${backend}`)).toBeNull()
    expect((await rejection(sandboxes.remove('never-was'))).code).toBe('ERR_SANDBOX_NOT_FOUND')
    await sandboxes.remove('never-was', { force: true })
    expect((await box.exec(['echo', 'still'])).text()).toBe('still\n')
  })

  it('snapshots: v1 captures the files and restores them as a new sandbox; other backends say ERR_UNSUPPORTED', async () => {
    if (backend !== 'v1') {
      expect((await rejection(box.snapshot())).code).toBe('ERR_UNSUPPORTED')
      expect((await rejection(sandboxes.snapshots())).code).toBe('ERR_UNSUPPORTED')
      expect((await rejection(sandboxes.restore('any', { name: `rs-${backend}` }))).code).toBe('ERR_UNSUPPORTED')
      return
    }
    const file = join(ws.dir, 'snapshot-note.txt')
    await box.writeFile(file, 'kept by the snapshot')
    const snap = await box.snapshot({ name: 'before-change', description: 'a test snapshot' })
    expect(snap).toMatchObject({ name: 'before-change', status: 'ready', captureMode: 'disk', sandboxId: box.info.id })
    expect(snap.createdAt).toMatch(/^\d{4}-\d\d-\d\dT/)
    await box.writeFile(file, 'changed after it')
    expect((await sandboxes.snapshots()).map((s) => s.id)).toContain(snap.id)
    {
      await using copy = await sandboxes.restore(snap, { name: 'restored-v1' })
      expect(copy).toMatchObject({ name: 'restored-v1', owned: true })
      expect(copy.info).toMatchObject({ status: 'running', workspace: ws.dir })
      expect((await copy.readFile(file)).toString()).toBe('kept by the snapshot')
      expect((await box.readFile(file)).toString()).toBe('changed after it')
      const dup = await rejection(sandboxes.restore(snap.id, { name: 'restored-v1' }))
      expect(dup.code).toBe('ERR_SANDBOX_CONFLICT')
    }
    expect(await sandboxes.get('restored-v1')).toBeNull()
    // bad input: typed, nothing made
    const missing = await rejection(sandboxes.restore('no-such-snapshot', { name: 'restored-never' }))
    expect(missing).toMatchObject({ code: 'ERR_SNAPSHOT_NOT_FOUND', snapshot: 'no-such-snapshot' })
    expect((await rejection(sandboxes.restore(snap, {} as never))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(sandboxes.restore(snap, { name: 'bad name' }))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(sandboxes.restore({} as never, { name: 'restored-never' }))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(box.snapshot({ captureMode: 'memory' as never }))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(box.snapshot({ name: 'a/b' }))).code).toBe('ERR_INVALID_ARGUMENT')
    // LocalSandboxd cannot capture memory: the service's `unimplemented`
    expect((await rejection(box.snapshot({ captureMode: 'all' }))).code).toBe('ERR_UNSUPPORTED')
    expect(await sandboxes.get('restored-never')).toBeNull()
    await sandboxes.removeSnapshot(snap)
    expect((await sandboxes.snapshots()).map((s) => s.id)).not.toContain(snap.id)
    expect((await rejection(sandboxes.removeSnapshot(snap.id))).code).toBe('ERR_SNAPSHOT_NOT_FOUND')
    await sandboxes.removeSnapshot(snap.id, { force: true })
  }, 180_000)

  it('expiry: a v1 cloud feature; a local socket and the other backends say ERR_UNSUPPORTED, bad input is typed', async () => {
    const base = { agent: 'shell', workspace: ws.dir, template: IMAGE }
    const e = await rejection(sandboxes.create({ ...base, name: `exp-${backend}`, expiry: { afterMs: 60_000 } }))
    expect(e).toMatchObject({ code: 'ERR_UNSUPPORTED', backend })
    expect(await sandboxes.get(`exp-${backend}`)).toBeNull()
    expect((await rejection(box.renewExpiry(60_000))).code).toBe('ERR_UNSUPPORTED')
    for (const bad of [{ afterMs: 0 }, { afterMs: -5 }, { afterMs: 60_000, action: 'explode' }, { action: 'stop' }]) {
      const b = await rejection(sandboxes.create({ ...base, name: `exp-${backend}`, expiry: bad as never }))
      expect(b.code, JSON.stringify(bad)).toBe('ERR_INVALID_ARGUMENT')
    }
    expect((await rejection(box.renewExpiry(Number.NaN))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(box.renewExpiry('60s' as never))).code).toBe('ERR_INVALID_ARGUMENT')
    expect(box.info.expiresAt ?? null).toBeNull()
  })

  it('await using removes a sandbox this handle created, and leaves one it only found', async () => {
    {
      await using tmp = await sandboxes.create({ name: `tmp-${backend}`, agent: 'shell', workspace: ws.dir, template: IMAGE })
      expect(tmp.owned).toBe(true)
      {
        await using found = await sandboxes.get(`tmp-${backend}`)
        expect(found?.owned).toBe(false)
      }
      expect(await sandboxes.get(`tmp-${backend}`)).not.toBeNull()
    }
    expect(await sandboxes.get(`tmp-${backend}`)).toBeNull()
  }, 120_000)
})

/** PIDs of the dockerd processes whose command line names `root`. */
function enginePidsUnder(root: string): number[] {
  const pids: number[] = []
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0')
      if (argv[0]?.endsWith('dockerd') && argv.some((a) => a.includes(root))) pids.push(Number(d))
    } catch {
      // the process went away
    }
  }
  return pids
}

/** How many dockerd processes name `root` on their command line (LocalSandboxd's private engines live under it). */
function enginesUnder(root: string): number {
  return enginePidsUnder(root).length
}

describe.each(BACKENDS)('concurrent ensure on the %s backend', (backend) => {
  it('20 concurrent ensures of one sandbox make one, start one engine, and every handle works', async () => {
    const sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend })
    const name = `many-${backend}`
    const before = enginesUnder(local.root)
    const spec = { name, agent: 'shell', workspace: ws.dir, template: IMAGE! }
    const all = await Promise.all(Array.from({ length: 20 }, () => sandboxes.ensure(spec)))
    try {
      expect(new Set(all.map((s) => s.info.id)).size).toBe(1)
      expect((await sandboxes.list()).filter((s) => s.name === name)).toHaveLength(1)
      expect(enginesUnder(local.root) - before).toBe(1)
      const outs = await Promise.all(all.map((s, i) => s.exec(['echo', `${i}`])))
      expect(outs.map((o) => o.text())).toEqual(all.map((_, i) => `${i}\n`))
    } finally {
      await sandboxes.remove(name, { force: true })
    }
  }, 180_000)

  it('two processes × 10 concurrent ensures make one sandbox and start one engine', async () => {
    const child = fileURLToPath(new URL('./fixtures/sandboxes-ensure-child.mjs', import.meta.url))
    const name = `procs-${backend}`
    const before = enginesUnder(local.root)
    const startAt = Date.now() + 1500
    const run = () =>
      new Promise<string>((resolve, reject) => {
        const p = spawn(process.execPath, [child, local.socketPath, backend, name, ws.dir, IMAGE!, '10', `${startAt}`])
        let out = ''
        p.stdout.on('data', (d) => (out += d))
        p.stderr.on('data', (d) => (out += d))
        p.on('error', reject)
        p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}: ${out}`))))
      })
    try {
      const outs = await Promise.all([run(), run()])
      const results = outs.flatMap((o) => JSON.parse(o.trim().split('\n').at(-1)!).results)
      expect(results).toHaveLength(20)
      expect(results.filter((r: { code?: string }) => r.code)).toEqual([])
      expect(new Set(results.map((r: { id: string }) => r.id)).size).toBe(1)
      expect(enginesUnder(local.root) - before).toBe(1)
    } finally {
      const sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend })
      await sandboxes.remove(name, { force: true })
    }
  }, 180_000)
})

/** Read `proc` until it ends; resolves with the error that ended it (or null) and the time it took. */
async function drain(proc: AsyncIterable<unknown>): Promise<{ error: (Error & Record<string, any>) | null }> {
  try {
    for await (const _ of proc) void _
    return { error: null }
  } catch (e) {
    return { error: e as Error & Record<string, any> }
  }
}

describe.each(BACKENDS)('faults on the %s backend', (backend) => {
  it('the daemon stopped mid-exec and mid-create: typed errors in bounded time', async () => {
    const own = await startLocal()
    let stopped = false
    try {
      const sandboxes = await Sandboxes.connect({ socketPath: own.socketPath, backend })
      const box = await sandboxes.create({ name: `fault-${backend}`, agent: 'shell', workspace: ws.dir, template: IMAGE! })
      const proc = await box.spawn(['sh', '-c', 'while true; do echo tick; sleep 0.1; done'])
      const buffered = rejection(box.exec(['sleep', '40']))
      const first = await proc[Symbol.asyncIterator]().next()
      expect(first.done).toBe(false)
      const creating = rejection(sandboxes.create({ name: `fault2-${backend}`, agent: 'shell', workspace: ws.dir, template: IMAGE! }))
      await new Promise((r) => setTimeout(r, 300))
      const t0 = Date.now()
      await own.stop()
      stopped = true
      const ended = await drain(proc)
      const e = await buffered
      const c = await creating
      expect(Date.now() - t0).toBeLessThan(20_000)
      const cut = ['ERR_STREAM_INTERRUPTED', 'ERR_SANDBOXD_UNAVAILABLE', 'ERR_ENGINE_UNAVAILABLE']
      for (const err of [ended.error, e]) {
        expect(err, 'each ends with an error').toBeTruthy()
        expect(cut, err!.message).toContain(err!.code)
      }
      // a create cut off answers 503 (sbx maps that to ERR_SBX_DEGRADED, the /vm client to unavailable); on
      // desktop the VM's engine may also refuse the container create while it shuts down (ERR_ENGINE)
      expect([...cut, 'ERR_SBX_DEGRADED', 'ERR_ENGINE'], c.message).toContain(c.code)
      const after = await rejection(sandboxes.list())
      expect(after.code).toBe('ERR_SANDBOXD_UNAVAILABLE')
    } finally {
      if (!stopped) await own.stop()
    }
  }, 180_000)

  it("a sandbox's engine killed mid-stream ends the stream with a typed error in bounded time", async () => {
    const sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend })
    const name = `kill-${backend}`
    const before = new Set(enginePidsUnder(local.root))
    const box = await sandboxes.create({ name, agent: 'shell', workspace: ws.dir, template: IMAGE! })
    try {
      const mine = enginePidsUnder(local.root).filter((p) => !before.has(p))
      expect(mine).toHaveLength(1)
      const proc = await box.spawn(['sh', '-c', 'while true; do echo tick; sleep 0.1; done'])
      expect((await proc[Symbol.asyncIterator]().next()).done).toBe(false)
      const t0 = Date.now()
      process.kill(mine[0]!, 'SIGKILL')
      const ended = await drain(proc)
      expect(Date.now() - t0).toBeLessThan(20_000)
      // sbx: the daemon's stream ends and no exit code can be read; desktop: the engine itself is gone.
      expect(['ERR_STREAM_INTERRUPTED', 'ERR_ENGINE_UNAVAILABLE']).toContain(ended.error?.code)
      const next = await rejection(box.exec(['true'], { timeoutMs: 15_000 }))
      // v1: the sandbox's endpoint answers `unavailable` (its engine is gone)
      const after = ['ERR_SANDBOX_STOPPED', 'ERR_ENGINE_UNAVAILABLE', 'ERR_EXEC_FAILED', 'ERR_SANDBOXD_PROTOCOL', 'ERR_SBX_DEGRADED', 'ERR_CONTAINER_NOT_RUNNING']
      expect(backend === 'v1' ? ['ERR_SANDBOXD_UNAVAILABLE'] : after, next.message).toContain(next.code)
    } finally {
      await sandboxes.remove(name, { force: true }).catch(() => {})
    }
  }, 180_000)
})

describe.each(BACKENDS)('terminals on the %s backend', (backend) => {
  let box: Sandbox

  beforeAll(async () => {
    const sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend })
    box = await sandboxes.create({ name: `tty-${backend}`, agent: 'shell', workspace: ws.dir, template: IMAGE! })
  }, 180_000)

  afterAll(async () => {
    await box?.remove({ force: true })
  }, 60_000)

  /** Read `proc` until its output contains `want`; the text so far. */
  async function until(it: AsyncIterator<{ data: Buffer }>, want: string, seen = { text: '' }): Promise<string> {
    while (!seen.text.includes(want)) {
      const n = await it.next()
      if (n.done) throw new Error(`output ended before ${JSON.stringify(want)}; got ${JSON.stringify(seen.text)}`)
      seen.text += n.value.data.toString()
    }
    return seen.text
  }

  it('spawn with { tty: { cols, rows } } has that size from the first byte', async () => {
    for (const [cols, rows] of [[91, 37], [200, 10]]) {
      const p = await box.spawn(['stty', 'size'], { tty: { cols, rows } })
      let out = ''
      for await (const { data } of p) out += data.toString()
      expect(out.trim()).toBe(`${rows} ${cols}`)
      expect((await p.wait()).exitCode).toBe(0)
    }
  })

  it('an interactive sh: write/read, resize, exit', async () => {
    const p = await box.spawn(['sh'], { tty: { cols: 80, rows: 24 } })
    const it = p[Symbol.asyncIterator]()
    const seen = { text: '' }
    await p.write('stty size; echo mark-$((6*7))\n')
    await until(it, 'mark-42', seen)
    expect(seen.text).toContain('24 80')
    await p.resize({ cols: 120, rows: 40 })
    await p.write('stty size; echo mark-$((6*8))\n')
    await until(it, 'mark-48', seen)
    expect(seen.text).toContain('40 120')
    await p.write('exit 3\n')
    for (let n = await it.next(); !n.done; n = await it.next()) void n
    expect((await p.wait()).exitCode).toBe(3)
  })

  it('bad sizes are ERR_INVALID_ARGUMENT', async () => {
    for (const tty of [{ cols: 0, rows: 10 }, { cols: 70000, rows: 10 }, { cols: 'x', rows: 1 }] as never[]) {
      expect((await rejection(box.spawn(['true'], { tty }))).code, JSON.stringify(tty)).toBe('ERR_INVALID_ARGUMENT')
    }
    const p = await box.spawn(['sleep', '5'], { tty: true })
    expect((await rejection(p.resize({ cols: 0, rows: 1 }))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(p.resize(true as never))).code).toBe('ERR_INVALID_ARGUMENT')
    await p.kill('SIGKILL')
    await p.wait()
  })
})

describe.each(BACKENDS)('an agent session in a sandbox on the %s backend', (backend) => {
  const AGENT_IMAGE = process.env.SANDBOXD_AGENT_IMAGE
  let box: Sandbox

  beforeAll(async () => {
    if (!AGENT_IMAGE) throw new Error('SANDBOXD_AGENT_IMAGE is not set: run the suite with `npm test`, which builds it')
    const sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend })
    box = await sandboxes.create({ name: `agent-${backend}`, agent: 'pi', workspace: ws.dir, template: AGENT_IMAGE })
  }, 300_000)

  afterAll(async () => {
    await box?.remove({ force: true })
  }, 60_000)

  it('sandbox-agent started through the exec route, a session, a streamed turn, cancel, close', async () => {
    const agent = new SandboxAgent(box)
    expect((await agent.ensureServer({ timeoutMs: 30_000 })).started).toBe(true)
    expect((await agent.ensureServer()).started).toBe(false)
    {
      await using s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
      const events: AgentEvent[] = []
      for await (const e of s.prompt('hello')) events.push(e)
      expect(events.map((e) => e.type)).toEqual(['thought', 'text', 'text', 'tool_call', 'tool_call_update', 'plan', 'stop'])
      expect(events.filter((e) => e.type === 'text').map((e) => (e.type === 'text' ? e.text : '')).join('')).toBe('Hello, world')
      expect(events.at(-1)).toMatchObject({ type: 'stop', stopReason: 'end_turn' })
      const seen: AgentEvent[] = []
      for await (const e of s.prompt('slow')) {
        seen.push(e)
        if (seen.length === 2) await s.cancel()
      }
      expect(seen.at(-1)).toMatchObject({ type: 'stop', stopReason: 'cancelled' })
    }
    const relays = await box.sh('ps -o args | grep -cE "^(nc|socat|busybox nc) " || true')
    expect(Number(relays.text().trim())).toBeLessThanOrEqual(4) // the pooled keep-alive tunnels, no more
  }, 120_000)

  it("sandbox-agent's own TypeScript SDK drives a session through forward()", async () => {
    await new SandboxAgent(box).ensureServer({ timeoutMs: 30_000 })
    const { SandboxAgent: Upstream } = await import('sandbox-agent')
    await using fwd = await box.forward(2468)
    const sdk = await Upstream.connect({ baseUrl: fwd.url })
    try {
      expect(await sdk.getHealth()).toMatchObject({ status: 'ok' })
      const session = await sdk.createSession({ agent: 'pi', cwd: ws.dir })
      const reply = await session.prompt([{ type: 'text', text: 'hello' }])
      expect(reply.stopReason).toBe('end_turn')
      // the SDK persists the turn's envelopes (both directions) asynchronously: read its log until the turn is in
      type Update = { sessionUpdate: string; content?: { text?: string } }
      const updates = async () =>
        (await sdk.getEvents({ sessionId: session.id, limit: 500 })).items
          .filter((e) => e.sender === 'agent')
          .map((e) => (e.payload as { params?: { update?: Update } }).params?.update)
          .filter((u): u is Update => !!u?.sessionUpdate)
      let seen = await updates()
      for (let i = 0; i < 50 && seen.length < 6; i++) {
        await new Promise((r) => setTimeout(r, 100))
        seen = await updates()
      }
      expect(seen.map((u) => u.sessionUpdate)).toEqual([
        'agent_thought_chunk', 'agent_message_chunk', 'agent_message_chunk', 'tool_call', 'tool_call_update', 'plan',
      ])
      expect(seen.filter((u) => u.sessionUpdate === 'agent_message_chunk').map((u) => u.content?.text).join('')).toBe('Hello, world')
      await sdk.destroySession(session.id)
    } finally {
      await sdk.dispose()
    }
  }, 120_000)
})

describe.each(BACKENDS)('one call from a plain image to a streamed reply on the %s backend', (backend) => {
  let box: Sandbox
  const SCRIPT = readFileSync(fileURLToPath(new URL('./fixtures/agent-image/scripted-acp-agent.sh', import.meta.url)))

  beforeAll(async () => {
    const sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend })
    box = await sandboxes.create({ name: `one-call-${backend}`, agent: 'pi', workspace: ws.dir, template: IMAGE! })
    // the scripted ACP agent in the launcher slot of `pi` (the test's own agent: nothing is downloaded)
    const slots = '/root/.local/share/sandbox-agent/bin/agent_processes'
    await box.exec(['mkdir', '-p', slots, '/usr/bin'])
    await box.writeFile(`${slots}/pi-acp`, SCRIPT, { mode: 0o755 })
    await box.exec(['sh', '-c', '[ -e /usr/bin/env ] || ln -s /bin/busybox /usr/bin/env'])
  }, 180_000)

  afterAll(async () => {
    await box?.remove({ force: true })
  }, 60_000)

  it('startSession: binary copied in, server started, session in the workspace, a streamed turn', async () => {
    expect((await box.exec(['sh', '-c', 'command -v sandbox-agent || echo none'])).text()).toBe('none\n')
    const agent = new SandboxAgent(box)
    // a deadline far too short for the sequence is ERR_TIMEOUT, in bounded time
    const t0 = Date.now()
    expect((await rejection(agent.startSession({ agent: 'pi', timeoutMs: 50 }))).code).toBe('ERR_TIMEOUT')
    expect(Date.now() - t0).toBeLessThan(5_000)

    await using session = await agent.startSession({ agent: 'pi', env: { HOME: '/root' }, timeoutMs: 120_000 })
    expect(session.start).toEqual({ serverStarted: true, agentInstalled: false })
    const text: string[] = []
    for await (const ev of session.prompt('hello')) if (ev.type === 'text') text.push(ev.text)
    expect(text.join('')).toBe('Hello, world')
    await using again = await agent.startSession({ agent: 'pi' })
    expect(again.start).toEqual({ serverStarted: false, agentInstalled: false })
  }, 180_000)

  it('startSession installs an agent the server lists as not installed', async () => {
    const agent = new SandboxAgent(box)
    const mock = async () => (await agent.listAgents()).agents.find((a) => a.id === 'mock')
    expect(await mock()).toMatchObject({ installed: false })
    // `mock` is sandbox-agent's echo agent: it installs offline, but echoes `session/new` without a sessionId
    const e = await rejection(agent.startSession({ agent: 'mock' }))
    expect(e.code).toBe('ERR_AGENT_PROTOCOL')
    expect(await mock()).toMatchObject({ installed: true })
  }, 120_000)

  it('bad options are ERR_INVALID_ARGUMENT naming the option', async () => {
    const agent = new SandboxAgent(box)
    for (const [bad, key] of [
      [{}, 'agent'],
      [{ agent: 1 }, 'agent'],
      [{ agent: 'pi', cwd: 3 }, 'cwd'],
      [{ agent: 'pi', env: ['A=1'] }, 'env'],
    ] as const) {
      const e = await rejection(agent.startSession(bad as never))
      expect(e, JSON.stringify(bad)).toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      expect(JSON.stringify(e), JSON.stringify(bad)).toContain(key)
    }
    expect((await rejection(agent.startSession({ agent: 'pi', cwd: 'relative' }))).code).toBe('ERR_INVALID_ARGUMENT')
  })
})

describe.each(BACKENDS)('forwarded ports on the %s backend', (backend) => {
  let box: Sandbox
  const big = Buffer.alloc(1024 * 1024)
  for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff

  beforeAll(async () => {
    const sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend })
    box = await sandboxes.create({ name: `fwd-${backend}`, agent: 'shell', workspace: ws.dir, template: IMAGE! })
    await box.exec(['mkdir', '-p', '/srv'])
    await box.writeFile('/srv/big.bin', big)
    await box.writeFile('/srv/hello.txt', 'hello through the tunnel\n')
    await box.spawn(['busybox', 'httpd', '-f', '-p', '127.0.0.1:8080', '-h', '/srv'])
    await box.sh('for i in $(seq 50); do nc -z 127.0.0.1 8080 && exit 0; sleep 0.1; done; exit 1')
  }, 180_000)

  afterAll(async () => {
    await box?.remove({ force: true })
  }, 60_000)

  const relays = async () => Number((await box.sh('ps -o args | grep -c "^nc 127.0.0.1 8080" || true')).text().trim())

  it('fetch gets a 1 MiB body intact; 50 concurrent requests succeed; close ends the tunnels', async () => {
    const fwd = await box.forward(8080)
    expect(fwd.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(fwd.port).toBe(8080)
    const res = await fetch(`${fwd.url}/big.bin`)
    expect(res.status).toBe(200)
    const body = Buffer.from(await res.arrayBuffer())
    expect(body.length).toBe(big.length)
    expect(body.equals(big)).toBe(true)
    const many = await Promise.all(
      Array.from({ length: 50 }, () => fetch(`${fwd.url}/hello.txt`).then(async (r) => `${r.status} ${await r.text()}`)),
    )
    expect(many).toEqual(Array(50).fill('200 hello through the tunnel\n'))
    await fwd.close()
    await expect(fetch(`${fwd.url}/hello.txt`)).rejects.toThrow()
    let left = await relays()
    for (let i = 0; i < 50 && left > 0; i++) {
      await new Promise((r) => setTimeout(r, 100))
      left = await relays()
    }
    expect(left).toBe(0)
  }, 120_000)

  it('publish/ports/unpublish through the daemon (sbx); ERR_UNSUPPORTED where the backend has none', async () => {
    if (backend === 'desktop') {
      expect((await rejection(box.ports())).code).toBe('ERR_UNSUPPORTED')
      expect((await rejection(box.publish({ sandboxPort: 8080 }))).code).toBe('ERR_UNSUPPORTED')
      expect((await rejection(box.saveTemplate('x:1'))).code).toBe('ERR_UNSUPPORTED')
      return
    }
    expect(await box.ports()).toEqual([])
    const published = await box.publish({ sandboxPort: 8080 })
    expect(published).toHaveLength(1)
    expect(published[0]).toMatchObject({ hostIp: '127.0.0.1', protocol: 'tcp', sandboxPort: 8080 })
    const url = `http://127.0.0.1:${published[0]!.hostPort}`
    expect(await (await fetch(`${url}/hello.txt`)).text()).toBe('hello through the tunnel\n')
    expect(await box.ports()).toEqual(published)
    expect((await box.refresh()).name).toBe(box.name)
    expect(await box.unpublish({ sandboxPort: 8080 })).toBe('unpublished 1 port key(s)')
    expect(await box.ports()).toEqual([])
    await expect(fetch(`${url}/hello.txt`)).rejects.toThrow()
    for (const bad of [{ sandboxPort: 0 }, { sandboxPort: 8080, hostPort: 70000 }, { hostPort: 1 }] as never[]) {
      expect((await rejection(box.publish(bad))).code, JSON.stringify(bad)).toBe('ERR_INVALID_ARGUMENT')
    }
    // LocalSandboxd does not save templates: the daemon's 501 is a typed error; v1 has snapshots, not templates
    expect((await rejection(box.saveTemplate('sandboxd-test/saved:1'))).code).toBe(backend === 'v1' ? 'ERR_UNSUPPORTED' : 'ERR_SBX_UNSUPPORTED')
  }, 60_000)

  it('await using closes it; a port nothing listens on closes the connection; bad ports are typed', async () => {
    let url = ''
    {
      await using fwd = await box.forward(8080)
      url = fwd.url
      expect((await fetch(`${url}/hello.txt`)).status).toBe(200)
    }
    await expect(fetch(`${url}/hello.txt`)).rejects.toThrow()
    {
      await using dead = await box.forward(8099)
      await expect(fetch(`${dead.url}/`)).rejects.toThrow()
    }
    for (const p of [0, 70000, -1]) expect((await rejection(box.forward(p))).code, `${p}`).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(box.forward('80' as never))).code).toBe('ERR_INVALID_ARGUMENT')
  }, 60_000)
})

describe.each(BACKENDS)('an agent from an image without sandbox-agent on the %s backend', (backend) => {
  let box: Sandbox
  const SCRIPT = readFileSync(fileURLToPath(new URL('./fixtures/agent-image/scripted-acp-agent.sh', import.meta.url)))
  const BINARY = fileURLToPath(new URL('../node_modules/@sandbox-agent/cli-linux-x64/bin/sandbox-agent', import.meta.url))

  beforeAll(async () => {
    const sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend })
    box = await sandboxes.create({ name: `bare-agent-${backend}`, agent: 'pi', workspace: ws.dir, template: IMAGE! })
  }, 180_000)

  afterAll(async () => {
    await box?.remove({ force: true })
  }, 60_000)

  it('installs the binary from the npm package (once), starts the server, runs a turn with the scripted agent', async () => {
    expect((await box.exec(['sh', '-c', 'command -v sandbox-agent || echo none'])).text()).toBe('none\n')
    // the scripted ACP agent in the launcher slot of `pi`, through the files route (the test's own agent)
    const slots = '/root/.local/share/sandbox-agent/bin/agent_processes'
    await box.exec(['mkdir', '-p', slots, '/usr/bin'])
    await box.writeFile(`${slots}/pi-acp`, SCRIPT, { mode: 0o755 })
    await box.exec(['sh', '-c', '[ -e /usr/bin/env ] || ln -s /bin/busybox /usr/bin/env'])

    const agent = new SandboxAgent(box)
    const t0 = Date.now()
    expect((await agent.ensureServer({ timeoutMs: 60_000, env: { HOME: '/root' } })).started).toBe(true)
    const firstMs = Date.now() - t0
    const again = await agent.installServer()
    const size = statSync(BINARY).size
    expect(again).toMatchObject({ path: '/usr/local/bin/sandbox-agent', copied: false, bytes: size })
    expect(again.sha256).toBe(createHash('sha256').update(readFileSync(BINARY)).digest('hex'))
    expect((await box.exec(['sha256sum', '/usr/local/bin/sandbox-agent'])).text().split(' ')[0]).toBe(again.sha256)
    await using s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    const text: string[] = []
    for await (const e of s.prompt('hello')) if (e.type === 'text') text.push(e.text)
    expect(text.join('')).toBe('Hello, world')
    console.log(`[${backend}] install + start: ${firstMs} ms for ${(size / 1e6).toFixed(1)} MB`)
  }, 180_000)

  it('a user-given binary that cannot be read is ERR_INVALID_ARGUMENT naming agentBinary', async () => {
    const missing = new SandboxAgent(box, { agentBinary: '/nonexistent/sandbox-agent' })
    const e = await rejection(missing.installServer())
    expect(e).toMatchObject({ code: 'ERR_INVALID_ARGUMENT', argument: 'agentBinary' })
    expect(e.message).toContain('/nonexistent/sandbox-agent')
  })
})

describe('secrets on the v1 backend over a local socket', () => {
  it("a local daemon answers the secret store's unimplemented: ERR_UNSUPPORTED, nothing made, no value shown", async () => {
    const v1 = await Sandboxes.connect({ socketPath: local.socketPath, backend: 'v1' })
    const secret = { env: 'GH_TOKEN', value: 'ghp_localSECRETvalue42', hosts: ['api.github.test'], format: 'Bearer %s' }
    const e = await rejection(v1.create({ name: 'sec-v1', agent: 'shell', workspace: ws.dir, template: IMAGE, secrets: [secret] }))
    expect(e).toMatchObject({ code: 'ERR_UNSUPPORTED', backend: 'v1', status: 501, v1Code: 'unimplemented' })
    expect(JSON.stringify({ ...e, message: e.message })).not.toContain(secret.value)
    expect(await v1.get('sec-v1')).toBeNull()
    // proxy-managed secrets do not exist on v1; secrets after create are not a v1 verb
    const managed = await rejection(v1.create({ name: 'sec-v1', agent: 'shell', workspace: ws.dir, template: IMAGE, secrets: [{ ...secret, managed: true }] }))
    expect(managed.code).toBe('ERR_UNSUPPORTED')
    await using box = await v1.create({ name: 'sec-v1', agent: 'shell', workspace: ws.dir, template: IMAGE })
    expect((await rejection(box.setSecrets([secret]))).code).toBe('ERR_UNSUPPORTED')
  }, 120_000)
})

describe('network policy read-back on the v1 backend', () => {
  it("rules set through sbx read back through v1; the sandbox's blocked request is in its v1 log", async () => {
    const sbx = await Sandboxes.connect({ socketPath: local.socketPath, backend: 'sbx' })
    const v1 = await Sandboxes.connect({ socketPath: local.socketPath, backend: 'v1' })
    await using box = await v1.create({ name: 'pol-v1', agent: 'shell', workspace: ws.dir, template: IMAGE })
    await sbx.policy.deny('blocked.v1.test', { sandbox: 'pol-v1' })
    const rules = await box.policy.rules()
    expect(rules).toContainEqual(expect.objectContaining({ action: 'deny', destination: 'blocked.v1.test', sandbox: 'pol-v1' }))
    // the proxy refuses it (403 from the proxy: nothing leaves the machine) and the v1 log says so
    const got = await box.sh('wget -q -O- http://blocked.v1.test/ 2>&1; echo rc=$?', { timeoutMs: 15_000 })
    expect(got.text()).not.toContain('rc=0')
    const log = await box.policy.log()
    const row = log.find((e) => e.host.startsWith('blocked.v1.test'))
    expect(row, JSON.stringify(log)).toMatchObject({ allowed: false, sandbox: 'pol-v1' })
    expect(row!.count).toBeGreaterThanOrEqual(1)
    // v1 has no policy writes: a typed error, the rules unchanged
    expect((await rejection(box.policy.allow('x.v1.test'))).code).toBe('ERR_UNSUPPORTED')
    expect(await box.policy.rules()).toEqual(rules)
  }, 120_000)
})
