// The main job end to end: examples/docker-sandbox.ts (compiled by `npm test`) against LocalSandboxd, as a user
// runs it, plus the consumer modules (ESM and CJS) and the no-child_process rule.
import { spawn } from 'node:child_process'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { ensureAddresses } from './helpers/internet.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const OUT = `${ROOT}.tmp/examples`
const IMAGE = process.env.SANDBOXD_AGENT_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_AGENT_IMAGE is not set: run the suite with `npm test`')
if (!existsSync(`${OUT}/docker-sandbox.js`)) throw new Error('examples are not compiled: `npm test` runs tsc -p examples')

function run(file: string, env: Record<string, string> = {}, limitMs = 90_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const t = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${file} did not finish within ${limitMs} ms:\n${out}`))
    }, limitMs)
    child.on('exit', (code) => {
      clearTimeout(t)
      resolve({ code, out })
    })
  })
}

/** Point every daemon lookup at nothing, so the demo starts its own LocalSandboxd. */
const NO_DAEMON = { SANDBOXD_SOCKET: '/nonexistent/sandboxd.sock', DOCKER_SANDBOXES_API: '/nonexistent/sbx.sock' }

const sandboxdRoots = () => readdirSync('/tmp').filter((d) => d.startsWith('sandboxd-') || d.startsWith('sbxd-'))

describe('the demo flow', () => {
  it('on the sbx API: a sandbox from the template, HTTPS through the proxy, a session, a streamed reply, nothing left', async () => {
    const before = sandboxdRoots()
    // What `npm run demo` sets up for the network step: a test CA and certificate, 198.18.0.1 on the loopback.
    ensureAddresses()
    const tlsDir = mkdtempSync(join(tmpdir(), 'sbx-demo-pki-'))
    execFileSync('bash', ['-c', 'source scripts/lib.sh && make_test_pki "$@"', 'x', tlsDir, 'api.demo.test', 'blocked.demo.test'], { cwd: ROOT })
    const r = await run(`${OUT}/docker-sandbox.js`, { TEMPLATE: IMAGE!, ...NO_DAEMON, DEMO_TLS_DIR: tlsDir }).finally(() => rmSync(tlsDir, { recursive: true, force: true }))
    expect(r.code, r.out).toBe(0)
    // curl inside verified the proxy's certificate (ssl_verify_result 0) and got the fake upstream's answer.
    expect(r.out).toMatch(/HTTPS through the proxy: hello from api\.demo\.test:\d+ status=200 verified=0/)
    expect(r.out).toContain('blocked.demo.test: the proxy answered 403')
    expect(r.out).toMatch(/log: blocked\.demo\.test:\d+ blocked by blocked\.demo\.test \(denied-by-rule, connect, 1x\)/)
    expect(r.out).toMatch(/log: api\.demo\.test:\d+ allowed by (\*|api\.demo\.test) \(allowed-by-rule, intercepted, 1x\)/)
    expect(r.out).toContain('starting LocalSandboxd')
    expect(r.out).toContain('serving the sbx API')
    expect(r.out).toContain('sandbox sandbox-agent-demo (sbx) is running')
    expect(r.out).toMatch(/agent> Hello, world/)
    expect(r.out).toContain('turn ended: end_turn')
    expect(r.out).toContain('done: nothing left running')
    expect(r.out).not.toContain('NODE_TLS_REJECT_UNAUTHORIZED')
    expect(sandboxdRoots().filter((d) => !before.includes(d))).toEqual([])
  })

  it('on the legacy desktop API: the same flow, and the proxy env + CA trust are in the sandbox', async () => {
    const before = sandboxdRoots()
    const r = await run(`${OUT}/docker-sandbox.js`, { TEMPLATE: IMAGE!, DEMO_BACKEND: 'desktop', ...NO_DAEMON })
    expect(r.code, r.out).toBe(0)
    expect(r.out).toContain('serving the desktop API')
    expect(r.out).toContain('HTTPS_PROXY=http://host.docker.internal:3128; proxy CA in the sandbox: true')
    expect(r.out).toMatch(/agent> Hello, world/)
    expect(r.out).toContain('done: nothing left running')
    expect(sandboxdRoots().filter((d) => !before.includes(d))).toEqual([])
  })

  it('a secret passed to the agent server reaches the agent and appears in no output', async () => {
    const secret = 'sk-demo-secret-do-not-print-4242'
    const r = await run(`${OUT}/docker-sandbox.js`, {
      TEMPLATE: IMAGE!,
      ...NO_DAEMON,
      DEMO_AGENT: 'pi',
      DEMO_PROMPT: 'env ANTHROPIC_API_KEY',
      ANTHROPIC_API_KEY: secret,
    })
    expect(r.code, r.out).toBe(0)
    // The scripted agent echoes the variable: proof it arrived. The SDK itself printed it nowhere else.
    expect(r.out.split(secret).length - 1).toBe(1)
    expect(r.out).toContain(`agent> ${secret}`)
  })

  it('the package imports as a user would, from ESM and from CJS', async () => {
    const esm = await run(`${OUT}/consumer-esm.mjs`)
    expect(esm.code, esm.out).toBe(0)
    expect(JSON.parse(esm.out.trim())).toMatchObject({ module: 'esm', code: 'ERR_SANDBOXD_UNAVAILABLE' })
    const cjs = await run(`${OUT}/consumer-cjs.cjs`)
    expect(cjs.code, cjs.out).toBe(0)
    expect(JSON.parse(cjs.out.trim())).toEqual({ module: 'cjs', code: 'ERR_SANDBOXD_UNAVAILABLE' })
  })

  it("no child_process in examples/ or in the package's JS", () => {
    const files = [
      ...readdirSync(`${ROOT}examples`).map((f) => `${ROOT}examples/${f}`),
      ...readdirSync(`${ROOT}dist`).map((f) => `${ROOT}dist/${f}`),
      `${ROOT}bin/sandboxd.js`,
    ].filter((f) => /\.(c|m)?[jt]s$/.test(f))
    expect(files.length).toBeGreaterThan(3)
    for (const f of files) {
      const code = readFileSync(f, 'utf8').replace(/\/\/.*$/gm, '')
      expect(code, f).not.toMatch(/child_process/)
    }
  })
})
