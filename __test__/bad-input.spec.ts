// Bad input: every row names the call, the input and the code it must produce. Nothing may crash the process,
// and a bad call must leave the client usable.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  DockerEngine,
  SandboxAgent as SandboxAgentFor,
  Sandboxd,
  SandboxdError,
  isSandboxdError,
  type Container,
  type LocalSandboxd,
} from 'sandboxd'
import { rejection, startLocal, workspace } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`')

let sbx: LocalSandboxd
let client: Sandboxd
let box: Container
const ws = workspace()

beforeAll(async () => {
  sbx = await startLocal()
  client = new Sandboxd({ socketPath: sbx.socketPath })
  const vm = await client.create({ agentName: 'badinput', workspaceDir: ws.dir })
  const engine = await vm.engine()
  await (await DockerEngine.local()).images.copyTo(engine, IMAGE!)
  box = await engine.containers.run({ image: IMAGE!, cmd: ['sleep', '100000'] })
})

afterAll(async () => {
  await sbx?.stop()
  ws.cleanup()
})

const NAMES: Array<[string, string]> = [
  ['slash', 'a/b'],
  ['dot-dot', '..'],
  ['encoded dot-dot', '%2e%2e'],
  ['NUL', 'a\u0000b'],
  ['newline', 'a\nb'],
  ['10 KB', 'x'.repeat(10_240)],
  ['empty', ''],
  ['space', 'a b'],
]

describe('names (VM and container)', () => {
  it.each(NAMES)('%s → ERR_INVALID_ARGUMENT everywhere', async (_label, name) => {
    const calls: Array<() => Promise<unknown>> = [
      () => client.get(name),
      () => client.remove(name),
      () => client.create({ agentName: name, workspaceDir: ws.dir }),
      () => client.ensure({ agentName: name, workspaceDir: ws.dir }),
    ]
    for (const call of calls) expect((await rejection(call())).code).toBe('ERR_INVALID_ARGUMENT')
    const engine = await (await client.get('badinput-vm'))!.engine()
    expect((await rejection(engine.containers.get(name))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(engine.containers.run({ image: IMAGE!, name }))).code).toBe('ERR_INVALID_ARGUMENT')
  })
})

describe('env', () => {
  const rows: Array<[string, Record<string, unknown>]> = [
    ['key with =', { 'A=B': 'v' }],
    ['key with NUL', { 'A\u0000B': 'v' }],
    ['empty key', { '': 'v' }],
    ['value with NUL', { K: 'v\u0000w' }],
    ['number value', { K: 1 }],
    ['boolean value', { K: true }],
    ['null value', { K: null }],
    ['undefined value', { K: undefined }],
    ['object value', { K: { a: 1 } }],
    ['array value', { K: ['a'] }],
    ['an array instead of an object', ['A=1'] as unknown as Record<string, unknown>],
  ]
  it.each(rows)('%s → ERR_INVALID_ARGUMENT (exec, spawn, run), value never echoed', async (_label, env) => {
    const engine = await (await client.get('badinput-vm'))!.engine()
    const calls: Array<() => Promise<unknown>> = [
      () => box.exec(['true'], { env: env as any }),
      () => box.spawn(['true'], { env: env as any }),
      () => engine.containers.run({ image: IMAGE!, env: env as any }),
    ]
    for (const call of calls) {
      const e = await rejection(call())
      expect(e.code).toBe('ERR_INVALID_ARGUMENT')
      expect(e.message).not.toMatch(/v\u0000w|\{"a":1\}/)
    }
  })
})

describe('labels', () => {
  it.each([
    ['an array instead of an object', ['a']],
    ['number value', { team: 1 }],
    ['null value', { team: null }],
  ])('%s → ERR_INVALID_ARGUMENT, nothing created', async (_label, labels) => {
    const engine = await (await client.get('badinput-vm'))!.engine()
    const before = (await engine.containers.list({ all: true })).length
    const e = await rejection(engine.containers.run({ image: IMAGE!, cmd: ['true'], labels: labels as any }))
    expect(e.code).toBe('ERR_INVALID_ARGUMENT')
    expect(e.argument).toBe('labels')
    expect((await engine.containers.list({ all: true })).length).toBe(before)
  })

  it('string labels are set as given', async () => {
    const engine = await (await client.get('badinput-vm'))!.engine()
    const c = await engine.containers.run({ image: IMAGE!, cmd: ['true'], labels: { 'team.x': 'a=b c', empty: '' } })
    try {
      const { labels } = await c.inspect()
      expect(labels['team.x']).toBe('a=b c')
      expect(labels.empty).toBe('')
      expect(Object.keys(labels)).not.toContain('0')
    } finally {
      await c.remove({ force: true })
    }
  })
})

describe('paths and timeouts', () => {
  it.each([
    ['relative workspace', 'relative/dir'],
    ['missing workspace', '/does/not/exist'],
    ['a file, not a directory', '/etc/hostname'],
  ])('%s → ERR_INVALID_ARGUMENT', async (_l, dir) => {
    expect((await rejection(client.create({ agentName: 'pathcheck', workspaceDir: dir }))).code).toBe('ERR_INVALID_ARGUMENT')
  })

  it.each([
    ['negative', -1],
    ['zero', 0],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['huge', 1e15],
  ])('timeoutMs %s → ERR_INVALID_ARGUMENT', async (_l, timeoutMs) => {
    expect((await rejection(client.list({ timeoutMs }))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(box.exec(['true'], { timeoutMs }))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(box.inspect({ timeoutMs }))).code).toBe('ERR_INVALID_ARGUMENT')
  })

  it.each([
    ['relative cwd', { cwd: 'tmp' }],
    ['empty cmd', null],
    ['bad signal', 'SIGNOPE'],
  ])('%s → ERR_INVALID_ARGUMENT', async (label, arg) => {
    if (label === 'relative cwd') expect((await rejection(box.exec(['pwd'], arg as any))).code).toBe('ERR_INVALID_ARGUMENT')
    if (label === 'empty cmd') expect((await rejection(box.exec([]))).code).toBe('ERR_INVALID_ARGUMENT')
    if (label === 'bad signal') {
      const p = await box.spawn(['sleep', '5'])
      expect((await rejection(p.kill(arg as string))).code).toBe('ERR_INVALID_ARGUMENT')
      await p.kill('SIGKILL')
      await p.wait()
    }
  })
})

describe('argument types', () => {
  // The TypeScript layer checks every argument's type before native code runs.
  const calls: Array<[string, string, () => unknown]> = [
    ['exec(cmd as a string)', 'cmd', () => box.exec('ls -la' as any)],
    ['exec(cmd with a number)', 'cmd', () => box.exec([1] as any)],
    ['exec timeoutMs as a string', 'timeoutMs', () => box.exec(['true'], { timeoutMs: '100' as any })],
    ['sh(a number)', 'script', () => box.sh(42 as any)],
    ['spawn stdin as a number', 'stdin', () => box.spawn(['cat'], { stdin: 5 as any })],
    ['writeFile(data as a number)', 'data', () => box.writeFile('/tmp/x', 123 as any)],
    ['containers.get(null)', 'nameOrId', async () => (await (await client.get('badinput-vm'))!.engine()).containers.get(null as any)],
    ['containers.run() without options', 'options', async () => (await (await client.get('badinput-vm'))!.engine()).containers.run(undefined as any)],
    ['client.list({ timeoutMs: {} })', 'timeoutMs', () => client.list({ timeoutMs: {} as any })],
    ['client.list({ signal: "x" })', 'signal', () => client.list({ signal: 'x' as any })],
    ['DockerEngine.connect({ socketPath: 1 })', 'socketPath', () => DockerEngine.connect({ socketPath: 1 as any })],
    ['images.copyTo(a plain object)', 'target', async () => (await DockerEngine.local()).images.copyTo({} as any, 'x')],
    [
      'upload.write(a number)',
      'data',
      async () => {
        const up = box.putArchiveStream('/tmp')
        try {
          return await up.write(5 as any)
        } finally {
          await up.abort() // an open upload keeps the engine's lock on the container
        }
      },
    ],
  ]
  it.each(calls)('%s → a rejection with ERR_INVALID_ARGUMENT naming %s, not a throw', async (_label, argument, call) => {
    let p: unknown
    expect(() => (p = call())).not.toThrow()
    const e = await rejection(p as Promise<unknown>)
    expect(isSandboxdError(e, 'ERR_INVALID_ARGUMENT')).toBe(true)
    expect(e).toBeInstanceOf(SandboxdError)
    expect(e.argument).toBe(argument)
    expect((await box.exec(['true'])).exitCode).toBe(0)
  })

  it('a wrongly typed argument is never quoted in the error (it may be a secret)', async () => {
    const e = await rejection(box.exec(['curl', '-H', { Authorization: 'Bearer hunter2-secret' } as any]))
    expect(e.code).toBe('ERR_INVALID_ARGUMENT')
    expect(e.message).toBe('cmd[2]: expected a string, got an object')
    let thrown: any
    try {
      new Sandboxd({ socketPath: ['hunter2-secret'] as any })
    } catch (err) {
      thrown = err
    }
    for (const err of [e, thrown]) {
      expect(`${err.message} ${err.stack} ${JSON.stringify(err)}`).not.toContain('hunter2')
    }
  })

  it('new Sandboxd({ socketPath: 1 }) throws ERR_INVALID_ARGUMENT; the class still works', () => {
    let err: any
    try {
      new Sandboxd({ socketPath: 1 as any })
    } catch (e) {
      err = e
    }
    expect(isSandboxdError(err, 'ERR_INVALID_ARGUMENT')).toBe(true)
    expect(err.argument).toBe('socketPath')
    const ok = new Sandboxd({ socketPath: sbx.socketPath })
    expect(ok).toBeInstanceOf(Sandboxd)
    expect(ok.constructor).toBe(Sandboxd)
    expect(client).toBeInstanceOf(Sandboxd)
  })

  it('a sync method (getArchiveStream) throws ERR_INVALID_ARGUMENT for an argument of the wrong type', () => {
    let err: any
    try {
      box.getArchiveStream(1 as any)
    } catch (e) {
      err = e
    }
    expect(isSandboxdError(err, 'ERR_INVALID_ARGUMENT')).toBe(true)
    expect(err.argument).toBe('path')
  })

  it('new SandboxAgent(neither a Container nor a Sandbox) throws ERR_INVALID_ARGUMENT', () => {
    expect(() => new SandboxAgentFor({ id: 'x' } as any)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT', argument: 'target', message: 'target: expected a Container or a Sandbox' }),
    )
  })
})

describe('finished and closed handles', () => {
  it('a finished ExecProcess: write rejects, kill and wait are harmless, iteration is done', async () => {
    const p = await box.spawn(['true'])
    const first = await p.wait()
    expect(first.exitCode).toBe(0)
    expect(await p.wait()).toEqual(first)
    expect((await rejection(p.write('late'))).code).toBe('ERR_PROCESS_FINISHED')
    await p.kill('SIGTERM')
    expect((await p.next()).done).toBe(true)
    await p.end()
    await p[Symbol.asyncDispose]()
  })

  it('a stopped LocalSandboxd: calls reject ERR_SANDBOXD_UNAVAILABLE, stop() twice is fine', async () => {
    const other = await startLocal()
    const c = new Sandboxd({ socketPath: other.socketPath })
    await other.stop()
    await other.stop()
    expect((await rejection(c.list())).code).toBe('ERR_SANDBOXD_UNAVAILABLE')
    // and the suite's own client still works after all of the above
    expect((await client.list()).map((v) => v.name)).toEqual(['badinput-vm'])
  })
})

describe('closed sessions', () => {
  const AGENT_IMAGE = process.env.SANDBOXD_AGENT_IMAGE
  it('prompt, send and cancel on a closed session → ERR_CLOSED; close twice is fine', async () => {
    if (!AGENT_IMAGE) throw new Error('SANDBOXD_AGENT_IMAGE is not set: run `npm test`')
    const engine = await (await client.get('badinput-vm'))!.engine()
    await (await DockerEngine.local()).images.copyTo(engine, AGENT_IMAGE)
    const c = await engine.containers.run({ image: AGENT_IMAGE, cmd: ['sleep', '100000'] })
    try {
      const agent = new SandboxAgentFor(c)
      await agent.ensureServer()
      const s = await agent.createSession({ agent: 'pi', cwd: ws.dir })
      await s.close()
      await s.close()
      expect((await rejection(s.send('hello'))).code).toBe('ERR_CLOSED')
      expect((await rejection(s.cancel())).code).toBe('ERR_CLOSED')
      let thrown: any
      try {
        s.prompt('hello')
      } catch (e) {
        thrown = e
      }
      expect(thrown?.code).toBe('ERR_CLOSED')
    } finally {
      await c.remove({ force: true })
    }
  })
})

describe('secrets', () => {
  it('an env value never appears in any error the SDK builds', async () => {
    const SECRET = 'sk-live-SECRET-0123456789'
    const env = { API_KEY: SECRET }
    const engine = await (await client.get('badinput-vm'))!.engine()
    const stopped = await engine.containers.run({ image: IMAGE!, cmd: ['sleep', '100000'] })
    await stopped.stop({ timeoutSec: 0 })
    const failures: Array<() => Promise<unknown>> = [
      () => box.exec(['true'], { env: { ...env, 'BAD=KEY': 'x' } }),
      () => box.exec(['true'], { env: { ...env, OTHER: 5 as any } }),
      () => box.exec(['true'], { env: { API_KEY: `${SECRET}\u0000` } }),
      () => stopped.exec(['true'], { env }),
      () => stopped.spawn(['true'], { env }),
      () => engine.containers.run({ image: 'sbx-test/missing:0', env }),
      () => engine.containers.run({ image: IMAGE!, name: 'bad/name', env }),
      // (no binary to install: a box without sandbox-agent would otherwise get one from the npm package)
      () => new SandboxAgentFor(box, { agentBinary: '/nonexistent/sandbox-agent' }).ensureServer({ env, timeoutMs: 1500 }),
      () => box.exec(['true'], { env, timeoutMs: -5 }),
    ]
    for (const f of failures) {
      const e = await rejection(f())
      expect(e.code).toMatch(/^ERR_|^ABORT_ERR$/)
      const everything = JSON.stringify(e, Object.getOwnPropertyNames(e)) + String(e) + (e.stack ?? '')
      expect(everything, e.code).not.toContain(SECRET)
      expect(everything).not.toContain('sk-live')
    }
    await stopped.remove({ force: true })
  })
})
