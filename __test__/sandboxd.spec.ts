// Sandboxd + LocalSandboxd through the JS API, against real private dockerd engines.
import { execFile, execSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LocalSandboxd, Sandboxd } from 'sandboxd'
import { dockerRequest, importRootfs, listContainers, runContainer } from './helpers/engine.js'
import { alive, engineDirs, mountsUnder, rejection, startLocal, workspace } from './helpers/local.js'

const ROOTFS = process.env.SANDBOXD_TEST_ROOTFS
if (!ROOTFS || !existsSync(ROOTFS)) {
  throw new Error('SANDBOXD_TEST_ROOTFS is not set or missing: run the suite with `npm test`, which builds it')
}

let sbx: LocalSandboxd
let client: Sandboxd
const ws1 = workspace()
const ws2 = workspace()

beforeAll(async () => {
  sbx = await startLocal()
  client = new Sandboxd({ socketPath: sbx.socketPath })
})

afterAll(async () => {
  await sbx?.stop()
  ws1.cleanup()
  ws2.cleanup()
})

describe('VM lifecycle on LocalSandboxd (dockerd backend)', () => {
  it('create → engine answers → list → ensure → isolated containers → remove leaves nothing', async () => {
    await client.ping()
    const vm = await client.create({ agentName: 'alpha', workspaceDir: ws1.dir })
    expect(vm.name).toBe('alpha-vm')
    expect(vm.agentName).toBe('alpha')
    expect(vm.workspaceDir).toBe(ws1.dir)
    expect(vm.fileSharingDirectories).toEqual([ws1.dir])
    expect(vm.stateDir).toBe(join(sbx.root, 'vm', 'alpha-vm'))
    expect(vm.socketPath).toBe(join(vm.stateDir, 'docker.sock'))
    expect(vm.caCertPem).toMatch(/^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/)
    expect(existsSync(join(vm.stateDir, 'proxy-config.json'))).toBe(true)
    expect(JSON.parse(JSON.stringify(vm))).toMatchObject({ name: 'alpha-vm', socketPath: vm.socketPath })

    // The VM's own engine answers Docker's /_ping.
    const ping = await dockerRequest(vm.socketPath, 'GET', '/_ping')
    expect(ping.status).toBe(200)
    expect(ping.body.toString()).toBe('OK')

    const listed = await client.list()
    expect(listed).toEqual([{ id: vm.id, name: 'alpha-vm', agentName: 'alpha', workspaceDir: ws1.dir }])

    const again = await client.ensure({ agentName: 'alpha', workspaceDir: ws1.dir })
    expect(again.id).toBe(vm.id)
    expect(again.socketPath).toBe(vm.socketPath)
    expect(again.caCertPem).toBe(vm.caCertPem)
    expect((await client.get('alpha-vm'))?.id).toBe(vm.id)
    expect(await client.get('nobody-vm')).toBeNull()

    // A container runs in the VM and is invisible from a second VM.
    const vm2 = await client.ensure({ agentName: 'beta', workspaceDir: ws2.dir })
    expect(vm2.socketPath).not.toBe(vm.socketPath)
    await importRootfs(vm.socketPath, ROOTFS!, 'sbx-test/busybox:latest')
    const id = await runContainer(vm.socketPath, 'sbx-test/busybox:latest', ['sleep', '300'], 'in-alpha')
    const inAlpha = await listContainers(vm.socketPath)
    expect(inAlpha.map((c) => c.Id)).toContain(id)
    expect(await listContainers(vm2.socketPath)).toEqual([])
    const images2 = await dockerRequest(vm2.socketPath, 'GET', '/images/json')
    expect(images2.json()).toEqual([])
    expect((await client.list()).map((v) => v.name).sort()).toEqual(['alpha-vm', 'beta-vm'])

    // Remove: socket gone, daemon gone, nothing mounted.
    const pidsBefore = sbx.enginePids
    expect(pidsBefore).toHaveLength(2)
    expect(engineDirs(sbx.root, 'alpha-vm')).toHaveLength(1)
    const t0 = Date.now()
    await vm.remove()
    const removeMs = Date.now() - t0
    expect(existsSync(vm.socketPath)).toBe(false)
    expect(existsSync(vm.stateDir)).toBe(false)
    const left = sbx.enginePids
    expect(left).toHaveLength(1)
    const gone = pidsBefore.filter((p) => !left.includes(p))
    expect(gone).toHaveLength(1)
    expect(alive(gone[0]!)).toBe(false)
    expect(engineDirs(sbx.root, 'alpha-vm')).toEqual([]) // its engine directory is gone…
    expect(mountsUnder(join(sbx.root, 'engines')).filter((m) => m.includes('/alpha-vm.'))).toEqual([]) // …and unmounted
    expect(await client.get('alpha-vm')).toBeNull()
    expect(removeMs).toBeLessThan(20_000)

    await vm2.remove()
    expect(await client.list()).toEqual([])
  })

  it('await using removes a VM at the end of the scope', async () => {
    let socket = ''
    {
      await using vm = await client.create({ agentName: 'scoped', workspaceDir: ws1.dir })
      socket = vm.socketPath
      expect(existsSync(socket)).toBe(true)
    }
    expect(existsSync(socket)).toBe(false)
    expect(await client.get('scoped-vm')).toBeNull()
  })
})

describe('error codes, each from a real condition', () => {
  it('ERR_SANDBOXD_UNAVAILABLE: no socket, a plain file, a stopped daemon', async () => {
    const missing = await rejection(new Sandboxd({ socketPath: '/nonexistent/sandboxd.sock' }).list())
    expect(missing).toBeInstanceOf(Error)
    expect(missing.code).toBe('ERR_SANDBOXD_UNAVAILABLE')
    expect(missing.socketPath).toBe('/nonexistent/sandboxd.sock')
    expect(missing.message).toContain('Docker Desktop 4.58+')

    const file = join(ws1.dir, 'plain-file.sock')
    writeFileSync(file, 'not a socket')
    const plain = await rejection(new Sandboxd({ socketPath: file }).ping())
    expect(plain.code).toBe('ERR_SANDBOXD_UNAVAILABLE')
    expect(plain.message).toContain('not a socket')

    const other = await LocalSandboxd.start({ backend: 'dockerd' })
    const c = new Sandboxd({ socketPath: other.socketPath })
    await c.ping()
    await other.stop()
    expect((await rejection(c.list())).code).toBe('ERR_SANDBOXD_UNAVAILABLE')
  })

  it('a create in flight when LocalSandboxd stops is answered ERR_SANDBOXD_UNAVAILABLE, and nothing is left running', async () => {
    // A real dockerd that takes 3 s to start (a create takes ~0.1 s here), so the stop lands inside the create.
    const ws = workspace()
    const slow = join(ws.dir, 'slow-dockerd')
    const dockerd = execSync('command -v dockerd', { encoding: 'utf8' }).trim()
    writeFileSync(slow, `#!/bin/sh\nsleep 3\nexec '${dockerd}' "$@"\n`, { mode: 0o755 })
    const other = await LocalSandboxd.start({ backend: 'dockerd', dockerdPath: slow })
    const c = new Sandboxd({ socketPath: other.socketPath })
    try {
      const creating = rejection(c.create({ agentName: 'cutoff', workspaceDir: ws.dir }))
      await new Promise((r) => setTimeout(r, 500)) // the request is being served: its engine is starting
      const t0 = Date.now()
      await other.stop()
      const e = await creating
      expect(Date.now() - t0).toBeLessThan(2_500) // neither the 10 s drain nor the slow start: it is cut off
      expect(e.code).toBe('ERR_SANDBOXD_UNAVAILABLE')
      expect(e.status).toBe(503)
      expect(e.message).toContain('stopped while the VM was starting')
      // The engine whose start was cut off is cleaned up by its watchdog: no process keeps the root in its cmdline.
      const running = () =>
        readdirSync('/proc')
          .filter((d) => /^\d+$/.test(d))
          .filter((d) => {
            try {
              return readFileSync(`/proc/${d}/cmdline`, 'latin1').includes(other.root)
            } catch {
              return false
            }
          })
      const until = Date.now() + 15_000
      while (running().length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100))
      expect(running()).toEqual([])
    } finally {
      await other.stop()
      ws.cleanup()
    }
  })

  it('SANDBOXD_SOCKET is used when no socketPath is given', async () => {
    const saved = process.env.SANDBOXD_SOCKET
    process.env.SANDBOXD_SOCKET = sbx.socketPath
    try {
      const c = new Sandboxd()
      expect(c.socketPath).toBe(sbx.socketPath)
      await c.ping()
    } finally {
      if (saved === undefined) delete process.env.SANDBOXD_SOCKET
      else process.env.SANDBOXD_SOCKET = saved
    }
  })

  it('ERR_VM_NOT_FOUND, and force makes remove idempotent', async () => {
    const e = await rejection(client.remove('ghost-vm'))
    expect(e.code).toBe('ERR_VM_NOT_FOUND')
    expect(e.vmName).toBe('ghost-vm')
    await client.remove('ghost-vm', { force: true })
  })

  it('ERR_VM_CONFLICT: a second create, and ensure with another workspace', async () => {
    const vm = await client.create({ agentName: 'gamma', workspaceDir: ws1.dir })
    try {
      expect((await rejection(client.create({ agentName: 'gamma', workspaceDir: ws1.dir }))).code).toBe(
        'ERR_VM_CONFLICT',
      )
      const e = await rejection(client.ensure({ agentName: 'gamma', workspaceDir: ws2.dir }))
      expect(e.code).toBe('ERR_VM_CONFLICT')
      expect(e.existingWorkspaceDir).toBe(ws1.dir)
      expect(e.requestedWorkspaceDir).toBe(ws2.dir)
      expect((await client.list()).filter((v) => v.name === 'gamma-vm')).toHaveLength(1)
    } finally {
      await vm.remove()
    }
  })

  it('ERR_INVALID_ARGUMENT: bad names, bad workspaces, bad timeouts, before anything is sent', async () => {
    for (const name of ['', 'a/b', '..', '%2e%2e', 'a\u0000b', 'a\nb', 'x'.repeat(10_000), 'a b']) {
      const e = await rejection(client.remove(name))
      expect(e.code, JSON.stringify(name)).toBe('ERR_INVALID_ARGUMENT')
      expect((await rejection(client.get(name))).code).toBe('ERR_INVALID_ARGUMENT')
      expect((await rejection(client.create({ agentName: name, workspaceDir: ws1.dir }))).code).toBe(
        'ERR_INVALID_ARGUMENT',
      )
    }
    for (const dir of ['relative/dir', '/does/not/exist', '']) {
      const e = await rejection(client.ensure({ agentName: 'delta', workspaceDir: dir }))
      expect(e.code).toBe('ERR_INVALID_ARGUMENT')
      expect(e.argument).toBe('workspaceDir')
    }
    for (const timeoutMs of [-1, 0, Number.NaN, 1e15]) {
      expect((await rejection(client.list({ timeoutMs }))).code).toBe('ERR_INVALID_ARGUMENT')
      let thrown: any
      try {
        new Sandboxd({ socketPath: sbx.socketPath, timeoutMs })
      } catch (e) {
        thrown = e
      }
      expect(thrown?.code).toBe('ERR_INVALID_ARGUMENT')
    }
    expect(await client.list()).toEqual([])
  })

  it('ERR_SANDBOXD_PROTOCOL: a Docker engine socket is not sandboxd', async () => {
    const vm = await client.create({ agentName: 'epsilon', workspaceDir: ws1.dir })
    try {
      const wrong = new Sandboxd({ socketPath: vm.socketPath })
      const e = await rejection(wrong.list())
      expect(e.code).toBe('ERR_SANDBOXD_PROTOCOL')
      expect(e.status).toBe(404)
      expect(typeof e.body).toBe('string')
      expect(e.body.length).toBeLessThanOrEqual(513)
    } finally {
      await vm.remove()
    }
  })

  describe('against a socket that accepts and never answers', () => {
    let server: Server
    const conns: Socket[] = []
    const path = join(ws2.dir, 'silent.sock')
    beforeAll(async () => {
      server = createServer((s) => conns.push(s))
      await new Promise<void>((r) => server.listen(path, r))
    })
    afterAll(async () => {
      conns.forEach((s) => s.destroy())
      await new Promise((r) => server.close(r))
    })

    it('ERR_TIMEOUT with the deadline that passed', async () => {
      const c = new Sandboxd({ socketPath: path, timeoutMs: 300 })
      const t0 = Date.now()
      const e = await rejection(c.list())
      expect(e.code).toBe('ERR_TIMEOUT')
      expect(e.timeoutMs).toBe(300)
      expect(Date.now() - t0).toBeLessThan(3000)
      expect((await rejection(c.ping({ timeoutMs: 50 }))).timeoutMs).toBe(50)
    })

    it("an AbortSignal rejects with its reason, before and during the call", async () => {
      const c = new Sandboxd({ socketPath: path })
      const pre = new AbortController()
      pre.abort()
      const e1 = await rejection(c.list({ signal: pre.signal }))
      expect(e1).toBe(pre.signal.reason)
      expect(e1.name).toBe('AbortError')

      const ac = new AbortController()
      const t0 = Date.now()
      setTimeout(() => ac.abort(), 100)
      const e2 = await rejection(c.list({ signal: ac.signal }))
      expect(e2).toBe(ac.signal.reason)
      expect(Date.now() - t0).toBeLessThan(2000)

      // One signal used for many calls leaves no listeners behind (no MaxListeners warning).
      const shared = new AbortController()
      const warnings: Error[] = []
      const onWarning = (w: Error) => warnings.push(w)
      process.on('warning', onWarning)
      try {
        for (let i = 0; i < 30; i++) await client.list({ signal: shared.signal })
      } finally {
        process.off('warning', onWarning)
      }
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([])
    })
  })
})

describe('concurrent ensure of one agent and workspace (issue #23)', () => {
  // A real dockerd behind a wrapper that logs every start and takes 2 s longer to come up (a VM boot is slow):
  // every concurrent call lands while the first create is still starting its engine.
  const dir = workspace()
  const ws = workspace()
  const otherWs = workspace()
  const starts = join(dir.dir, 'starts')
  let local: LocalSandboxd
  const engineStarts = () => (existsSync(starts) ? readFileSync(starts, 'utf8').trim().split('\n').filter(Boolean).length : 0)

  beforeAll(async () => {
    const dockerd = execSync('command -v dockerd', { encoding: 'utf8' }).trim()
    const wrapper = join(dir.dir, 'counting-dockerd')
    writeFileSync(wrapper, `#!/bin/sh\necho $$ >> '${starts}'\nsleep 2\nexec '${dockerd}' "$@"\n`, { mode: 0o755 })
    local = await LocalSandboxd.start({ backend: 'dockerd', dockerdPath: wrapper })
  })

  afterAll(async () => {
    await local?.stop()
    for (const d of [dir, ws, otherWs]) d.cleanup()
  })

  /** Remove the VM and check that nothing of it is left: no engine process, no engine or state directory. */
  async function removeAndCheck(c: Sandboxd, name: string, pids: number[]) {
    await c.remove(name)
    expect(await c.list()).toEqual([])
    expect(local.enginePids).toEqual([])
    for (const pid of pids) expect(alive(pid)).toBe(false)
    expect(engineDirs(local.root, name)).toEqual([])
    expect(existsSync(join(local.root, 'vm', name))).toBe(false)
  }

  it('20 concurrent ensures in one process resolve to one VM, one engine is started, another workspace conflicts', async () => {
    writeFileSync(starts, '')
    // Two clients on one socket, ten calls each, all at once.
    const clients = [new Sandboxd({ socketPath: local.socketPath }), new Sandboxd({ socketPath: local.socketPath })]
    const t0 = Date.now()
    const calls = Array.from({ length: 20 }, (_, i) =>
      clients[i % 2].ensure({ agentName: 'race', workspaceDir: ws.dir }),
    )
    // Another workspace for the same agent, asked while the VM is starting: a real conflict.
    await new Promise((r) => setTimeout(r, 300))
    const conflict = rejection(clients[0].ensure({ agentName: 'race', workspaceDir: otherWs.dir }))
    const settled = await Promise.allSettled(calls)
    const rejected = settled.filter((r) => r.status === 'rejected').map((r: any) => `${r.reason.code}: ${r.reason.message}`)
    expect(rejected).toEqual([])
    const vms = settled.map((r: any) => r.value)
    expect(Date.now() - t0).toBeGreaterThan(2000) // the wrapper's delay: the calls overlapped the create
    expect(new Set(vms.map((v) => v.id)).size).toBe(1)
    expect(new Set(vms.map((v) => v.socketPath)).size).toBe(1)
    expect(vms[0].name).toBe('race-vm')
    const e = await conflict
    expect(e.code).toBe('ERR_VM_CONFLICT')
    expect(e.existingWorkspaceDir).toBe(ws.dir)
    expect(e.requestedWorkspaceDir).toBe(otherWs.dir)

    expect(engineStarts()).toBe(1)
    const pids = local.enginePids
    expect(pids).toHaveLength(1)
    expect(engineDirs(local.root, 'race-vm')).toHaveLength(1)
    expect(await clients[1].list()).toEqual([{ id: vms[0].id, name: 'race-vm', agentName: 'race', workspaceDir: ws.dir }])
    await removeAndCheck(clients[0], 'race-vm', pids)
  })

  it('two Node processes ensuring at the same moment get the same VM, and one engine is started', async () => {
    writeFileSync(starts, '')
    const child = fileURLToPath(new URL('./fixtures/ensure-child.mjs', import.meta.url))
    const startAt = String(Date.now() + 1500) // after both have loaded the addon
    const run = () =>
      new Promise<any>((resolve, reject) =>
        execFile(
          process.execPath,
          [child, local.socketPath, 'race2', ws.dir, '10', startAt],
          { timeout: 60_000 },
          (err, stdout, stderr) => {
            if (err) return reject(new Error(`${err.message}\nstdout=${stdout}\nstderr=${stderr}`))
            resolve(JSON.parse(stdout.trim().split('\n').pop()!))
          },
        ),
      )
    const [a, b] = await Promise.all([run(), run()])
    // Both fired within the first create's engine start (2 s and more): they really ran at once.
    expect(Math.abs(a.sent - b.sent)).toBeLessThan(500)
    const results = [...a.results, ...b.results]
    expect(results.filter((r: any) => r.code)).toEqual([])
    expect(new Set(results.map((r: any) => r.id)).size).toBe(1)
    expect(results[0].name).toBe('race2-vm')
    expect(engineStarts()).toBe(1)
    const pids = local.enginePids
    expect(pids).toHaveLength(1)
    const c = new Sandboxd({ socketPath: local.socketPath })
    expect((await c.list()).map((v) => v.id)).toEqual([results[0].id])
    await removeAndCheck(c, 'race2-vm', pids)
  })

  it('an ensure waiting for a VM that is starting rejects at its deadline or signal, and nothing extra is created', async () => {
    writeFileSync(starts, '')
    const c = new Sandboxd({ socketPath: local.socketPath })
    // Through a symlink to the socket: a client that does not share this process's turn (as another process
    // would not), so its wait is LocalSandboxd's.
    const link = join(dir.dir, 'link.sock')
    if (!existsSync(link)) symlinkSync(local.socketPath, link)
    const viaLink = new Sandboxd({ socketPath: link })
    const first = c.ensure({ agentName: 'race3', workspaceDir: ws.dir })
    let firstDone = false
    void first.then(() => (firstDone = true)).catch(() => {})
    await new Promise((r) => setTimeout(r, 200))

    let t0 = Date.now()
    const timedOut = await rejection(c.ensure({ agentName: 'race3', workspaceDir: ws.dir, timeoutMs: 300 }))
    expect(timedOut.code).toBe('ERR_TIMEOUT')
    expect(timedOut.timeoutMs).toBe(300)
    expect(timedOut.message).toContain('another ensure of this agent in this process')
    expect(Date.now() - t0).toBeLessThan(800)

    t0 = Date.now()
    const serverSide = await rejection(viaLink.ensure({ agentName: 'race3', workspaceDir: ws.dir, timeoutMs: 300 }))
    expect(serverSide.code).toBe('ERR_TIMEOUT')
    expect(Date.now() - t0).toBeLessThan(800)

    for (const client of [c, viaLink]) {
      const ac = new AbortController()
      setTimeout(() => ac.abort(), 100)
      t0 = Date.now()
      const aborted = await rejection(client.ensure({ agentName: 'race3', workspaceDir: ws.dir, signal: ac.signal }))
      expect(aborted).toBe(ac.signal.reason)
      expect(Date.now() - t0).toBeLessThan(600)
    }

    expect(firstDone).toBe(false) // every wait above was cut off while the VM was still starting
    const vm = await first
    // Callers that gave up leave nothing behind: the one VM, one engine start; an ensure now finds it.
    expect((await viaLink.ensure({ agentName: 'race3', workspaceDir: ws.dir })).id).toBe(vm.id)
    expect(engineStarts()).toBe(1)
    const pids = local.enginePids
    expect(pids).toHaveLength(1)
    await removeAndCheck(c, 'race3-vm', pids)
  })
})
