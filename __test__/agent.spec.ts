// Agent sessions through the SDK: the real sandbox-agent 0.4.2 binary in a locally built image, in a container
// in a LocalSandboxd VM, reached only through docker-exec tunnels.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  DockerEngine,
  SandboxAgent,
  Sandboxd,
  type AgentEvent,
  type Container,
  type LocalSandboxd,
} from 'sandboxd'
import { rejection, startLocal, workspace } from './helpers/local.js'

/** The text of a `text` event (the union makes every other type say so). */
function textOf(e: AgentEvent | undefined): string {
  if (e?.type !== 'text') throw new Error(`expected a text event, got ${e?.type}`)
  return e.text
}

/** The stop reason of a `stop` event. */
function stopOf(e: AgentEvent | undefined): string {
  if (e?.type !== 'stop') throw new Error(`expected a stop event, got ${e?.type}`)
  return e.stopReason
}

const IMAGE = process.env.SANDBOXD_AGENT_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_AGENT_IMAGE is not set: run the suite with `npm test`, which builds it')

let sbx: LocalSandboxd
let box: Container
let agent: SandboxAgent
const ws = workspace()

beforeAll(async () => {
  sbx = await startLocal()
  const vm = await new Sandboxd({ socketPath: sbx.socketPath }).create({ agentName: 'agents', workspaceDir: ws.dir })
  const engine = await vm.engine()
  await (await DockerEngine.local()).images.copyTo(engine, IMAGE!)
  // Started without the server: ensureServer() must bring it up.
  box = await engine.containers.run({ image: IMAGE!, cmd: ['sleep', '100000'], stopSignal: 'SIGINT' })
  agent = new SandboxAgent(box)
})

afterAll(async () => {
  await sbx?.stop()
  ws.cleanup()
})

async function collect(it: AsyncIterable<AgentEvent>): Promise<AgentEvent[]> {
  const out: AgentEvent[] = []
  for await (const e of it) out.push(e)
  return out
}

describe('server', () => {
  it('ensureServer starts it once, health answers, agents are listed', async () => {
    await expect(agent.health()).rejects.toMatchObject({ code: 'ERR_AGENT_UNAVAILABLE' })
    expect(await agent.ensureServer()).toEqual({ started: true })
    expect(await agent.ensureServer()).toEqual({ started: false })
    expect(await agent.health()).toEqual({ status: 'ok' })
    const { agents } = await agent.listAgents()
    const ids = Object.fromEntries(agents.map((a) => [a.id, a.installed]))
    expect(ids).toMatchObject({ mock: true, pi: true })
    const installed = await agent.installAgent('mock')
    expect(installed).toHaveProperty('already_installed', true)
  })

  it('startSession on a container: cwd is required (a container has no workspace); with it, a ready session', async () => {
    const e = await rejection(agent.startSession({ agent: 'pi' }))
    expect(e).toMatchObject({ code: 'ERR_INVALID_ARGUMENT', argument: 'cwd' })
    await using s = await agent.startSession({ agent: 'pi', cwd: ws.dir })
    expect(s.start).toEqual({ serverStarted: false, agentInstalled: false })
    expect((await s.send('hello')).text).toBe('Hello, world')
  })
})

describe('transport conformance with the echo mock agent', () => {
  it('initialize round trip, string and number ids, notifications', async () => {
    await using c = await agent.connect({ agent: 'mock' })
    expect(c.serverId).toMatch(/^sdk-mock-[0-9a-f]{32}$/)
    expect((c.initResult as any).echoed.method).toBe('initialize')
    const byString: any = await c.request('x/echo', { n: 1 }, { id: 'req-str' })
    expect(byString.echoed).toMatchObject({ id: 'req-str', method: 'x/echo', params: { n: 1 } })
    const byNumber: any = await c.request('x/echo', { n: 2 }, { id: 4242 })
    expect(byNumber.echoed.id).toBe(4242)
    await c.notify('x/note', { hello: true })
    // The notification shows up as mock/echo on the event log.
    const seen: any[] = []
    for await (const e of c.events()) {
      seen.push(e)
      if (e.type === 'message' && (e.message as any).params?.message?.method === 'x/note') break
    }
    const ids = seen.map((e) => e.eventId)
    expect(ids[0]).toBe(1)
    expect(ids).toEqual([...ids].sort((a, b) => a! - b!))
  })

  it('resume with Last-Event-ID, two concurrent readers, close ends the stream', async () => {
    const c = await agent.connect({ agent: 'mock' })
    for (let i = 0; i < 5; i++) await c.request('x/echo', { i })
    // responses resolve from the POST body; the SSE reader catches up on its own
    for (let t = 0; t < 50 && c.lastEventId < 12; t++) await new Promise((r) => setTimeout(r, 100))
    const last = c.lastEventId
    expect(last).toBeGreaterThanOrEqual(12)
    const resumed: number[] = []
    const readerA: number[] = []
    const readerB: number[] = []
    const read = async (after: number, into: number[]) => {
      for await (const e of c.events({ after })) if (e.type === 'message') into.push(e.eventId)
    }
    const pa = read(0, readerA)
    const pb = read(0, readerB)
    const pr = read(last - 2, resumed)
    await new Promise((r) => setTimeout(r, 500))
    await c.close()
    await Promise.all([pa, pb, pr])
    expect(resumed[0]).toBe(last - 1)
    expect(readerA.length).toBeGreaterThanOrEqual(last)
    expect(readerB).toEqual(readerA)
    expect((await rejection(c.request('x/echo', {}))).code).toBe('ERR_CLOSED')
  })

  it('a request after the agent died is ERR_AGENT_EXITED', async () => {
    const c = await agent.connect({ agent: 'mock' })
    await c.request('x/echo', {})
    const killed = await box.sh(
      'for p in /proc/[0-9]*; do grep -q "mock-agent-[p]rocess" "$p/cmdline" 2>/dev/null && kill -KILL "${p#/proc/}"; done; true',
    )
    expect(killed.exitCode).toBe(0)
    await new Promise((r) => setTimeout(r, 500))
    const e = await rejection(c.request('x/echo', {}))
    expect(e.code).toBe('ERR_AGENT_EXITED')
    await c.close()
  })
})

describe('sessions with a scripted ACP agent', () => {
  it('streams a turn: thought, text, tool calls, plan, stop; send() collects one', async () => {
    await using s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    expect(s.agentSessionId).toMatch(/^sess-/)
    expect((s.initResult as any).agentInfo.name).toBe('scripted-acp-agent')
    const events = await collect(s.prompt('hello'))
    expect(events.map((e) => e.type)).toEqual(['thought', 'text', 'text', 'tool_call', 'tool_call_update', 'plan', 'stop'])
    const ids = events.map((e) => ('eventId' in e ? e.eventId : -1))
    expect(ids.every((id, i) => i === 0 || id > ids[i - 1]!)).toBe(true)
    expect(textOf(events[1]) + textOf(events[2])).toBe('Hello, world')
    expect(events[3]).toMatchObject({ toolCallId: 'call-0', kind: 'execute', status: 'in_progress', title: 'List files' })
    expect(events[4]).toMatchObject({ toolCallId: 'call-0', status: 'completed' })
    expect(events[6]).toMatchObject({ type: 'stop', stopReason: 'end_turn' })
    const sent = await s.send('hello')
    expect(sent.text).toBe('Hello, world')
    expect(sent.stopReason).toBe('end_turn')
  })

  it('a slow turn cancelled mid-way stops with cancelled', async () => {
    await using s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    const seen: AgentEvent[] = []
    for await (const e of s.prompt('slow')) {
      seen.push(e)
      if (seen.length === 2) await s.cancel()
    }
    expect(seen.slice(0, 2).map(textOf)).toEqual(['slow chunk 1', 'slow chunk 2'])
    expect(seen.at(-1)).toMatchObject({ type: 'stop', stopReason: 'cancelled' })
  })

  it('a permission request answered by the caller, and one left unanswered then cancelled', async () => {
    await using s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    const answered: AgentEvent[] = []
    for await (const e of s.prompt('perm')) {
      answered.push(e)
      if (e.type === 'permission_request') {
        expect(e.options!.map((o) => o.optionId)).toContain('allow')
        await e.respond!('allow')
      }
    }
    expect(answered.find((e) => e.type === 'text')?.text).toContain('selected allow')
    expect(stopOf(answered.at(-1))).toBe('end_turn')

    const ignored: AgentEvent[] = []
    for await (const e of s.prompt('perm')) {
      ignored.push(e)
      if (e.type === 'permission_request') await s.cancel() // never answered by the caller
    }
    // The SDK answered the ignored request `cancelled` (never approved, never left hanging), and the turn ended.
    expect(ignored.find((e) => e.type === 'text')?.text).toBe('permission: cancelled')
    expect(ignored.at(-1)?.type).toBe('stop')
    expect(['cancelled', 'end_turn']).toContain(stopOf(ignored.at(-1)))
  })

  it("an agent that hangs: the caller's signal ends the wait", async () => {
    await using s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 700)
    const t0 = Date.now()
    const e = await rejection(collect(s.prompt('hang', { signal: ac.signal })))
    expect(e).toBe(ac.signal.reason)
    expect(Date.now() - t0).toBeLessThan(5000)
    expect((await rejection(s.send('hang', { timeoutMs: 500 }))).code).toBe('ERR_TIMEOUT')
  })

  it('an agent that crashes: ERR_AGENT_EXITED with its exit code', async () => {
    await using s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    const e = await rejection(collect(s.prompt('crash')))
    expect(e.code).toBe('ERR_AGENT_EXITED')
    expect(e.exitCode).toBe(3)
    expect((await rejection(s.send('hello'))).code).toBe('ERR_AGENT_EXITED')
  })

  it('more than 1024 events: the live reader gets them all, a late reader is told about the gap', async () => {
    await using s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    // The server skips ahead on a live SSE reader that lags behind a burst; the SDK reads the skipped events
    // again from the replay ring, so the live turn is complete and has no gap.
    const r = await s.send('many 1100', { timeoutMs: 60_000 })
    expect(r.events.filter((e) => e.type === 'gap')).toEqual([])
    expect(r.events.filter((e) => e.type === 'text').map((e) => e.text)).toEqual(
      Array.from({ length: 1100 }, (_, i) => `chunk ${i + 1}`),
    )
    const first: any[] = []
    for await (const e of s.events({ after: 0 })) {
      first.push(e)
      if (first.length === 2) break
    }
    expect(first[0]).toMatchObject({ type: 'gap', from: 1 })
    expect(first[1].eventId).toBe(first[0].to + 1)
  })

  it('env reaches the agent only through the container call that sets it', async () => {
    const s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
    const r = await s.send('env SANDBOXD_TEST_SECRET')
    expect(r.text).toBe('<unset>')
    await s.close()
    expect((await rejection(s.send('hello'))).code).toBe('ERR_CLOSED')
  })
})
