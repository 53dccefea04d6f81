// Load and leaks: thousands of execs and a hundred sessions, with RSS and open fds measured before and after.
import { readdirSync, readlinkSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DockerEngine, SandboxAgent, Sandboxd, type Container, type LocalSandboxd } from 'sandboxd'
import { startLocal, workspace } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
const AGENT_IMAGE = process.env.SANDBOXD_AGENT_IMAGE
if (!IMAGE || !AGENT_IMAGE) throw new Error('SANDBOXD_TEST_IMAGE / SANDBOXD_AGENT_IMAGE not set: run `npm test`')

/** Bounds, stated once: growth after the warm-up, measured after a GC and a short settle. */
const MAX_FD_GROWTH = 8
const MAX_RSS_GROWTH_MIB = 64

let sbx: LocalSandboxd
let box: Container
let agentBox: Container
const ws = workspace()

const fds = () => readdirSync('/proc/self/fd').length
/** What the open fds point at, counted by kind (`socket`, `pipe`, a path…): printed when a bound is broken. */
function fdKinds(): Record<string, number> {
  const kinds: Record<string, number> = {}
  for (const f of readdirSync('/proc/self/fd')) {
    let target = '?'
    try {
      target = readlinkSync(`/proc/self/fd/${f}`).replace(/:\[\d+\]$/, '')
    } catch {}
    kinds[target] = (kinds[target] ?? 0) + 1
  }
  return kinds
}
/** Before asserting fd growth: if it is over the bound, say which fds they are and whether they close later. */
async function explainFdGrowth(label: string, before: number, after: number): Promise<void> {
  if (after - before <= MAX_FD_GROWTH) return
  console.log(`${label}: fd growth ${after - before} > ${MAX_FD_GROWTH}; open fds by kind:`, fdKinds())
  await new Promise((r) => setTimeout(r, 3000))
  console.log(`${label}: 3 s later ${fds() - before} more fds than before`)
}
/** Wait for closes still in flight (relay and tunnel teardown runs in the background) to finish: until the fd
 * count has held for 500 ms, at most 5 s. Then GC and measure. */
async function settle(): Promise<{ fds: number; rssMiB: number }> {
  const until = Date.now() + 5000
  let n = fds()
  let stableSince = Date.now()
  while (Date.now() - stableSince < 500 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50))
    const now = fds()
    if (now !== n) [n, stableSince] = [now, Date.now()]
  }
  global.gc?.()
  return { fds: fds(), rssMiB: process.memoryUsage().rss / 1048576 }
}

beforeAll(async () => {
  sbx = await startLocal()
  const vm = await new Sandboxd({ socketPath: sbx.socketPath }).create({ agentName: 'load', workspaceDir: ws.dir })
  const engine = await vm.engine()
  const host = await DockerEngine.local()
  await host.images.copyTo(engine, IMAGE!)
  await host.images.copyTo(engine, AGENT_IMAGE!)
  box = await engine.containers.run({ image: IMAGE!, cmd: ['sleep', '100000'] })
  agentBox = await engine.containers.run({ image: AGENT_IMAGE!, cmd: ['sleep', '100000'] })
}, 180_000)

afterAll(async () => {
  await sbx?.stop()
  ws.cleanup()
})

describe('load and leaks', () => {
  it('2,000 sequential execs, then 20 batches of 50 in flight: all correct, fds and RSS bounded', async () => {
    for (let i = 0; i < 20; i++) await box.exec(['true']) // warm-up
    const before = await settle()
    for (let i = 0; i < 2000; i++) {
      const r = await box.exec(['sh', '-c', 'echo $N'], { env: { N: String(i) } })
      if (r.exitCode !== 0 || r.text() !== `${i}\n`) throw new Error(`exec ${i}: ${r.exitCode} ${r.text()}`)
    }
    const mid = await settle()
    for (let b = 0; b < 20; b++) {
      const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => box.exec(['echo', `${b}-${i}`])))
      rs.forEach((r, i) => expect(r.text()).toBe(`${b}-${i}\n`))
    }
    const after = await settle()
    console.log(
      `execs: fds ${before.fds} → ${mid.fds} → ${after.fds}; RSS ${before.rssMiB.toFixed(1)} → ${mid.rssMiB.toFixed(1)} → ${after.rssMiB.toFixed(1)} MiB`,
    )
    await explainFdGrowth('execs', before.fds, after.fds)
    expect(after.fds - before.fds).toBeLessThanOrEqual(MAX_FD_GROWTH)
    expect(after.rssMiB - before.rssMiB).toBeLessThan(MAX_RSS_GROWTH_MIB)
  }, 600_000)

  it('100 agent sessions opened, used and closed: fds and RSS bounded', async () => {
    const agent = new SandboxAgent(agentBox)
    await agent.ensureServer()
    const batch = () =>
      Promise.all(
        Array.from({ length: 10 }, async () => {
          const s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
          expect((await s.send('hello')).text).toBe('Hello, world')
          await s.close()
        }),
      )
    // Warm up with a batch of the same shape, so the idle pools (tunnels, engine connections) are at the size
    // this concurrency leaves them at: what grows after that is a leak.
    await batch()
    const before = await settle()
    for (let b = 0; b < 10; b++) await batch()
    const after = await settle()
    console.log(`sessions: fds ${before.fds} → ${after.fds}; RSS ${before.rssMiB.toFixed(1)} → ${after.rssMiB.toFixed(1)} MiB`)
    await explainFdGrowth('sessions', before.fds, after.fds)
    expect(after.fds - before.fds).toBeLessThanOrEqual(MAX_FD_GROWTH)
    expect(after.rssMiB - before.rssMiB).toBeLessThan(MAX_RSS_GROWTH_MIB)
    // and no agent process or relay is left in the container
    const ps = (await agentBox.exec(['ps', '-o', 'args'])).text()
    expect(ps.match(/scripted-acp-agent|pi-acp/g) ?? []).toEqual([])
    expect((ps.match(/nc 127\.0\.0\.1/g) ?? []).length).toBeLessThanOrEqual(4) // at most the idle keep-alive pool
  }, 600_000)

  it("1,000 VMs' worth of list() parsing", async () => {
    const body = JSON.stringify(
      Array.from({ length: 1000 }, (_, i) => ({ vm_id: `id-${i}`, vm_name: `a${i}-vm`, agent_name: `a${i}`, workspace_dir: `/w/${i}` })),
    )
    const path = join(ws.dir, 'big.sock')
    const server = createServer((_, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(body))
    await new Promise<void>((r) => server.listen(path, r))
    try {
      const c = new Sandboxd({ socketPath: path })
      const t0 = performance.now()
      for (let i = 0; i < 20; i++) {
        const vms = await c.list()
        expect(vms).toHaveLength(1000)
        expect(vms[999]).toEqual({ id: 'id-999', name: 'a999-vm', agentName: 'a999', workspaceDir: '/w/999' })
      }
      console.log(`list() of 1,000 VMs: ${((performance.now() - t0) / 20).toFixed(2)} ms each`)
    } finally {
      await new Promise((r) => server.close(r))
    }
  })
})
