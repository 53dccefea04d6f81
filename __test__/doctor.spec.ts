// `doctor()` and `npx sandboxd doctor` against LocalSandboxd, against nothing, and against a socket that answers
// HTML (an in-process fake: no real daemon answers that way).
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, request, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { doctor, type DoctorReport, type LocalSandboxd } from 'sandboxd'
import { rejection, startLocal } from './helpers/local.js'

const CLI = fileURLToPath(new URL('../bin/sandboxd.js', import.meta.url))

/** Run the CLI in a child with `env` replacing the discovery variables; resolves with its exit code and output. */
function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const base = { ...process.env }
  for (const k of ['DOCKER_SANDBOXES_API', 'DOCKER_SANDBOXES_APP_NAME', 'SANDBOXD_SOCKET', 'XDG_STATE_HOME', 'XDG_DATA_HOME']) {
    delete base[k]
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const t = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`sandboxd ${args.join(' ')} did not finish within 30 s:\n${stdout}\n${stderr}`))
    }, 30_000)
    child.on('exit', (code) => {
      clearTimeout(t)
      resolve({ code, stdout, stderr })
    })
  })
}

/** `OPTIONS path` on a Unix socket: status and `Allow` header. */
function options(socketPath: string, path: string): Promise<{ status: number; allow?: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'OPTIONS' }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode!, allow: res.headers.allow }))
    })
    req.on('error', reject)
    req.end()
  })
}

const dirs: string[] = []
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'sbx-doctor-'))
  dirs.push(d)
  return d
}

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

describe('doctor against LocalSandboxd', () => {
  let sbx: LocalSandboxd
  let home: string

  beforeAll(async () => {
    sbx = await startLocal()
    home = tempDir()
  })
  afterAll(async () => {
    await sbx?.stop()
  })

  it('LocalSandboxd answers OPTIONS on its routes with 204 and Allow, and 404 elsewhere', async () => {
    expect(await options(sbx.socketPath, '/sandbox')).toEqual({ status: 204, allow: 'OPTIONS, GET, POST' })
    expect(await options(sbx.socketPath, '/sandbox/some-name/files')).toEqual({ status: 204, allow: 'OPTIONS, GET, PUT' })
    expect(await options(sbx.socketPath, '/sandbox/some-name/nope')).toEqual({ status: 404, allow: undefined })
    expect(await options(sbx.socketPath, '/sandbox/some-name/ports')).toEqual({ status: 404, allow: undefined })
  })

  it('the report names the sbx daemon, its api_version, the routes that answer, and the socket the SDK would use', async () => {
    const r = await doctor({ socketPath: sbx.socketPath })
    expect(r.discovery).toBe('socketPath option')
    expect(r.candidates).toEqual([
      { endpoint: sbx.socketPath, transport: 'unix', outcome: 'answered', httpStatus: 200, selected: true },
    ])
    const d = r.daemon!
    expect(d.apiVersion).toBe('0.26.0')
    expect(d.version).toMatch(/^localsandboxd-/)
    expect(d.strict).toMatchObject({ ok: true, range: '>=0.26.0 <0.27.0' })
    expect(d.lenient).toMatchObject({ ok: true, range: '>=0.26.0 <1.0.0' })
    expect(d.info.body).toEqual({ api_socket: sbx.socketPath, docker_socket: '' })
    const verdicts = Object.fromEntries(d.routes.map((p) => [p.route, p.verdict]))
    expect(verdicts).toEqual({
      '/daemon/health': 'served',
      '/daemon/info': 'served',
      '/sandbox': 'served',
      '/sandbox/{name}': 'served',
      '/sandbox/{name}/start': 'served',
      '/sandbox/{name}/stop': 'served',
      '/sandbox/{name}/exec/attach': 'served',
      '/sandbox/{name}/exec/{id}': 'served',
      '/sandbox/{name}/exec/{id}/resize': 'served',
      '/sandbox/{name}/files': 'served',
      // LocalSandboxd answers these only with 501, so its OPTIONS does not claim them.
      '/sandbox/{name}/ports': 'notServed',
      '/sandbox/{name}/ports/unpublish': 'notServed',
      '/sandbox/{name}/save': 'notServed',
    })
    for (const p of d.routes.filter((x) => x.verdict === 'served')) expect(p.missingMethods, p.route).toBeUndefined()
    expect(d.routes.find((p) => p.route === '/sandbox/{name}')!.path).toBe(`/sandbox/${d.placeholderSandbox}`)
    // LocalSandboxd serves the legacy /vm API on the same socket (which the desktop backend would use too).
    expect(r.legacy).toEqual([{ endpoint: sbx.socketPath, role: 'desktop', answers: true, vmCount: 0 }])
    expect(r.sdkWouldUse).toMatchObject({ backend: 'sbx', socketPath: sbx.socketPath })
    expect(r.sdkWouldUse.errorCode).toBeUndefined()
    expect(r.ok).toBe(true)
    expect(r.notes).toEqual([])
  })

  it('the CLI prints the same report as JSON and exits 0', async () => {
    const c = await cli(['doctor', '--json', '--socket', sbx.socketPath], { HOME: home })
    expect(c.code, c.stderr).toBe(0)
    const r = JSON.parse(c.stdout) as DoctorReport
    expect(r.daemon?.apiVersion).toBe('0.26.0')
    expect(r.sdkWouldUse).toMatchObject({ backend: 'sbx', socketPath: sbx.socketPath })
    expect(r.daemon?.routes.filter((p) => p.verdict === 'served')).toHaveLength(10)
    expect(r.legacy.map((l) => [l.endpoint, l.role, l.answers])).toEqual([[sbx.socketPath, 'desktop', true]])
  })

  it('found through DOCKER_SANDBOXES_API, the desktop backend would look at its own socket instead', async () => {
    const c = await cli(['doctor', '--json'], { HOME: home, DOCKER_SANDBOXES_API: sbx.socketPath })
    expect(c.code, c.stderr).toBe(0)
    const r = JSON.parse(c.stdout) as DoctorReport
    expect(r.discovery).toBe('DOCKER_SANDBOXES_API')
    expect(r.candidates.map((x) => [x.endpoint, x.outcome, x.selected])).toEqual([[sbx.socketPath, 'answered', true]])
    expect(r.legacy.map((l) => [l.endpoint, l.role, l.answers])).toEqual([
      [sbx.socketPath, 'sbx', true],
      [join(home, '.docker/sandboxes/sandboxd.sock'), 'desktop', false],
    ])
    expect(r.sdkWouldUse).toMatchObject({ backend: 'sbx', socketPath: sbx.socketPath })
  })

  it('the CLI prints a short human report ending with what the SDK would use', async () => {
    const c = await cli(['doctor', '--socket', sbx.socketPath], { HOME: home })
    expect(c.code, c.stderr).toBe(0)
    const lines = c.stdout.trimEnd().split('\n')
    expect(lines[0]).toMatch(/^sandboxd doctor: SDK \S+ on linux\/(x64|arm64)$/)
    expect(lines).toContain(`  answered HTTP 200  ${sbx.socketPath}  <- discovery stops here`)
    expect(lines.some((l) => /^ {2}api_version +0\.26\.0$/.test(l))).toBe(true)
    expect(lines.some((l) => /^ {4}served +204 +GET,POST +\/sandbox$/.test(l))).toBe(true)
    expect(lines.some((l) => /^ {4}not served +404 +POST +\/sandbox\/\{name\}\/save$/.test(l))).toBe(true)
    expect(lines.some((l) => l.startsWith('  answers (0 VMs)') && l.includes(sbx.socketPath))).toBe(true)
    expect(lines.at(-1)).toBe(`SDK would use: sbx at ${sbx.socketPath}`)
  })
})

describe('doctor with nothing answering', () => {
  it('lists every path tried and exits 1 (explicit socket and discovery defaults)', async () => {
    const home = tempDir()
    const state = join(home, 'state')
    mkdirSync(state)
    const sock = join(tempDir(), 'sandboxd.sock')
    const one = await cli(['doctor', '--json', '--socket', sock], { HOME: home, XDG_STATE_HOME: state })
    expect(one.code, one.stderr).toBe(1)
    const r1 = JSON.parse(one.stdout) as DoctorReport
    expect(r1.candidates).toEqual([{ endpoint: sock, transport: 'unix', outcome: 'missing', selected: false }])
    expect(r1.daemon).toBeNull()
    expect(r1.sdkWouldUse).toMatchObject({ backend: 'none', errorCode: 'ERR_SANDBOXD_UNAVAILABLE' })
    expect(r1.sdkWouldUse.reason).toContain(sock)
    // The desktop backend would use the same explicit socket.
    expect(r1.legacy.map((l) => [l.endpoint, l.role, l.answers, l.errorCode])).toEqual([
      [sock, 'desktop', false, 'ERR_SANDBOXD_UNAVAILABLE'],
    ])

    const all = await cli(['doctor', '--json'], { HOME: home, XDG_STATE_HOME: state })
    expect(all.code, all.stderr).toBe(1)
    const r = JSON.parse(all.stdout) as DoctorReport
    expect(r.discovery).toBe('defaults')
    const tried = [
      join(state, 'sandboxes/sandboxes/sandboxd/sandboxd.sock'),
      join(home, '.local/share/com.docker.sandboxes/sandboxes/sandboxd/sandboxd.sock'),
      join(home, '.sbx/run/d/sandboxd.sock'),
      join(home, '.sbx/run/sandboxd.sock'),
    ]
    expect(r.candidates.map((c) => [c.endpoint, c.outcome])).toEqual(tried.map((p) => [p, 'missing']))
    const desktop = join(home, '.docker/sandboxes/sandboxd.sock')
    expect(r.legacy.map((l) => [l.endpoint, l.role, l.answers])).toEqual([[desktop, 'desktop', false]])
    // The SDK's own error lists every path of both backends.
    for (const p of [...tried, desktop]) expect(r.sdkWouldUse.reason).toContain(p)
    expect(r.ok).toBe(false)

    const text = await cli(['doctor'], { HOME: home, XDG_STATE_HOME: state })
    expect(text.code).toBe(1)
    for (const p of tried) expect(text.stdout).toContain(`  missing  ${p}\n`)
    const tail = text.stdout.trimEnd().split('\n').slice(-2)
    expect(tail[0]).toMatch(/^Sandboxes\.connect\(\) rejects: no sandbox daemon answers\. Tried, in order: /)
    expect(tail[1]).toBe('SDK would use: none (ERR_SANDBOXD_UNAVAILABLE)')
  })
})

describe('doctor against a socket that answers HTML', () => {
  let server: Server
  let sock: string

  beforeAll(async () => {
    sock = join(tempDir(), 'html.sock')
    server = createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html' })
      res.end(`<html><body>${req.method} ${req.url} is not here</body></html>`)
    })
    await new Promise<void>((resolve) => server.listen(sock, resolve))
  })
  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve))
  })

  it('reports the non-answer instead of crashing, and the SDK would use nothing', async () => {
    const r = await doctor({ socketPath: sock })
    expect(r.candidates[0]).toMatchObject({ outcome: 'answered', httpStatus: 200, selected: true })
    const d = r.daemon!
    expect(d.health.error).toMatch(/did not answer JSON \(Content-Type text\/html\): <html>/)
    expect(d.health.body).toBeNull()
    expect(d.apiVersion).toBeUndefined()
    expect(d.strict.ok).toBe(false)
    expect(d.lenient.ok).toBe(false)
    expect(d.info.error).toMatch(/text\/html/)
    // OPTIONS answered 200 without Allow: the report says it cannot tell, not that the routes exist.
    expect(new Set(d.routes.map((p) => p.verdict))).toEqual(new Set(['noOptionsAnswer']))
    expect(r.legacy).toEqual([
      expect.objectContaining({ endpoint: sock, role: 'desktop', answers: false, errorCode: 'ERR_SANDBOXD_PROTOCOL' }),
    ])
    // The SDK tries the sbx API there, then the /vm API, and finds neither.
    expect(r.sdkWouldUse).toMatchObject({ backend: 'none', errorCode: 'ERR_SANDBOXD_UNAVAILABLE' })
    expect(r.sdkWouldUse.reason).toMatch(/^Sandboxes\.connect\(\) rejects: /)

    const home = tempDir()
    const c = await cli(['doctor', '--socket', sock], { HOME: home })
    expect(c.code, c.stderr).toBe(1)
    expect(c.stdout).toContain('no OPTIONS answer')
    expect(c.stdout).toMatch(/health +GET \/daemon\/health did not answer JSON/)
  })
})

describe('doctor options', () => {
  it('rejects bad options and an abort, and nothing else', async () => {
    const e = await rejection(doctor({ socketPath: 1 as unknown as string }))
    expect(e.code).toBe('ERR_INVALID_ARGUMENT')
    const ac = new AbortController()
    ac.abort()
    const a = await rejection(doctor({ socketPath: join(tempDir(), 'x.sock'), signal: ac.signal }))
    expect(a.name).toBe('AbortError')
  })
})
