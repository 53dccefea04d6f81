// Faults: a real component killed or broken at the worst moment. Each ends in a typed error within a bounded
// time, and the client is usable afterwards.
import { getEventListeners } from 'node:events'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { DockerEngine, LocalSandboxd, SandboxAgent, Sandboxd, type AgentEvent } from 'sandboxd'
import { engineDirs, rejection, workspace } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
const AGENT_IMAGE = process.env.SANDBOXD_AGENT_IMAGE
if (!IMAGE || !AGENT_IMAGE) throw new Error('SANDBOXD_TEST_IMAGE / SANDBOXD_AGENT_IMAGE not set: run `npm test`')

const ws = workspace()
const started: LocalSandboxd[] = []
afterAll(async () => {
  for (const s of started) await s.stop()
  ws.cleanup()
})

async function vmWith(image: string, agentName: string) {
  const sbx = await LocalSandboxd.start({ backend: 'dockerd' })
  started.push(sbx)
  const client = new Sandboxd({ socketPath: sbx.socketPath })
  const vm = await client.create({ agentName, workspaceDir: ws.dir })
  const engine = await vm.engine()
  await (await DockerEngine.local()).images.copyTo(engine, image)
  const [engineDir, ...more] = engineDirs(sbx.root, vm.name)
  expect(more).toEqual([])
  const dockerdPid = Number(readFileSync(join(engineDir!, 'dockerd.pid'), 'utf8'))
  return { sbx, client, vm, engine, dockerdPid }
}

/** Host processes still in a container's cgroup (its init, its execs): a dead dockerd must not leave any. */
function processesOf(containerId: string): number[] {
  const pids: number[] = []
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      if (readFileSync(`/proc/${d}/cgroup`, 'utf8').includes(containerId)) pids.push(Number(d))
    } catch {
      // the process ended while we looked
    }
  }
  return pids
}

async function noneLeft(containerId: string): Promise<void> {
  const until = Date.now() + 10_000
  while (processesOf(containerId).length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100))
  expect(processesOf(containerId)).toEqual([])
}

const within = async <T>(ms: number, p: Promise<T>): Promise<T> => {
  let t: NodeJS.Timeout | undefined
  const limit = new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`not settled within ${ms} ms`)), ms)))
  try {
    return await Promise.race([p, limit])
  } finally {
    clearTimeout(t)
  }
}

describe('a VM engine killed', () => {
  it('during an exec stream and during an image copy: typed errors, promptly; a new VM works', async () => {
    const { client, engine, dockerdPid, vm } = await vmWith(IMAGE!, 'killexec')
    const box = await engine.containers.run({ image: IMAGE!, cmd: ['sleep', '100000'] })
    const stream = box.sh('while true; do echo tick; sleep 0.1; done')
    await new Promise((r) => setTimeout(r, 500))
    process.kill(dockerdPid, 'SIGKILL')
    const e = await within(15_000, rejection(stream))
    expect(['ERR_STREAM_INTERRUPTED', 'ERR_ENGINE_UNAVAILABLE', 'ERR_ENGINE']).toContain(e.code)
    const after = await within(10_000, rejection(box.exec(['true'])))
    expect(after.code).toBe('ERR_ENGINE_UNAVAILABLE')
    expect(processesOf(box.id).length).toBeGreaterThan(0) // the container outlived its engine…
    // the sandboxd side is fine: remove the broken VM, make a new one
    await client.remove(vm.name)
    await noneLeft(box.id) // …until the VM was removed
    const again = await client.create({ agentName: 'killexec2', workspaceDir: ws.dir })
    await (await again.engine()).ping()
  })

  it('during an image copy', async () => {
    const { engine, dockerdPid } = await vmWith(IMAGE!, 'killcopy')
    const host = await DockerEngine.local()
    // a ~26 MB image takes long enough to kill the target mid-copy
    const copy = host.images.copyTo(engine, AGENT_IMAGE!)
    await new Promise((r) => setTimeout(r, 150))
    process.kill(dockerdPid, 'SIGKILL')
    const e = await within(15_000, rejection(copy))
    expect(['ERR_ENGINE_UNAVAILABLE', 'ERR_ENGINE', 'ERR_STREAM_INTERRUPTED']).toContain(e.code)
    await host.ping() // the source engine is untouched
  })
})

describe('sandbox-agent faults', () => {
  it('the VM engine killed during a session SSE stream ends the turn with a typed error', async () => {
    const { sbx, engine, dockerdPid } = await vmWith(AGENT_IMAGE!, 'killsse')
    const box = await engine.containers.run({ image: AGENT_IMAGE!, cmd: ['sleep', '100000'] })
    const agent = new SandboxAgent(box)
    await agent.ensureServer()
    const s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    const seen: AgentEvent[] = []
    const turn = (async () => {
      for await (const ev of s.prompt('slow 30')) {
        seen.push(ev)
        if (seen.length === 1) process.kill(dockerdPid, 'SIGKILL')
      }
    })()
    const e = await within(30_000, rejection(turn))
    expect(['ERR_AGENT_UNAVAILABLE', 'ERR_AGENT_EXITED', 'ERR_ENGINE_UNAVAILABLE', 'ERR_STREAM_INTERRUPTED']).toContain(e.code)
    expect(seen[0]?.type).toBe('text')
    await sbx.stop()
    await noneLeft(box.id) // the agent server and the container's init included
  })

  it('the sandbox-agent server killed mid-turn: a typed error, then ensureServer brings it back', async () => {
    const { engine } = await vmWith(AGENT_IMAGE!, 'killsrv')
    const box = await engine.containers.run({ image: AGENT_IMAGE!, cmd: ['sleep', '100000'] })
    const agent = new SandboxAgent(box)
    await agent.ensureServer()
    const s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    const ac = new AbortController()
    const turn = (async () => {
      for await (const ev of s.prompt('slow 30', { signal: ac.signal })) {
        if (ev.type === 'text') {
          await box.sh(
            'for p in /proc/[0-9]*; do grep -q "sandbox-agent.server" "$p/cmdline" 2>/dev/null && kill -KILL "${p#/proc/}"; done; true',
          )
        }
      }
    })()
    const e = await within(30_000, rejection(turn))
    expect(['ERR_AGENT_UNAVAILABLE', 'ERR_AGENT_EXITED']).toContain(e.code)
    // the turn that failed no longer listens on the caller's signal
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0)
    expect(await agent.ensureServer()).toEqual({ started: true })
    const s2 = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    expect((await s2.send('hello')).text).toBe('Hello, world')
    await s2.close()
  })
})

describe('sandboxd (LocalSandboxd) stopped and restarted', () => {
  it('between calls and during a create: typed errors, then the same client works again', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sbx-restart-'))
    try {
      let sbx = await LocalSandboxd.start({ root, backend: 'dockerd' })
      const client = new Sandboxd({ socketPath: sbx.socketPath, timeoutMs: 30_000 })
      await client.ping()
      await sbx.stop()
      expect((await rejection(client.list())).code).toBe('ERR_SANDBOXD_UNAVAILABLE')
      sbx = await LocalSandboxd.start({ root, backend: 'dockerd' })
      expect(await client.list()).toEqual([])
      // stopped while a create is in flight
      const creating = client.create({ agentName: 'midway', workspaceDir: ws.dir }).then(
        (vm) => ({ vm }),
        (e) => ({ e }),
      )
      await new Promise((r) => setTimeout(r, 30))
      await sbx.stop()
      const r = await within(30_000, creating)
      if ('e' in r) expect(['ERR_SANDBOXD_PROTOCOL', 'ERR_SANDBOXD_UNAVAILABLE']).toContain((r.e as any).code)
      sbx = await LocalSandboxd.start({ root, backend: 'dockerd' })
      started.push(sbx)
      expect(await client.list()).toEqual([]) // nothing half-made survives a stop
      await (await client.create({ agentName: 'midway', workspaceDir: ws.dir })).remove()
    } finally {
      rmSync(root, { recursive: true, force: true })
    }
  })
})
