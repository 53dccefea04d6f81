// The package as users get it: `npm pack` of the main package and of this platform's package, installed into a
// fresh project from the tarballs (no link to this checkout), then used from ESM, from CJS, and type-checked by
// strict `tsc` consumers (NodeNext, and ESNext + Bundler).
import { execFileSync } from 'node:child_process'
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc')
const TYPES = join(ROOT, 'node_modules/@types')
let dir: string
let app: string
let packed: { name: string; size: number; unpackedSize: number; files: Array<{ path: string }> }

function run(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

/** This machine's platform package directory under npm/ and the .node file it ships. */
function platformPackage(): { dir: string; node: string } {
  const node = readdirSync(join(ROOT, 'native')).find((f) => f.endsWith('.node'))
  if (!node) throw new Error('no native/*.node: build the package first (npm run build:debug)')
  const triple = node.replace(/^sandboxd\./, '').replace(/\.node$/, '')
  return { dir: join(ROOT, 'npm', triple), node: join(ROOT, 'native', node) }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sbx-pack-'))
  const [main] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], ROOT))
  packed = main
  const plat = platformPackage()
  const platDir = join(dir, 'platform')
  cpSync(plat.dir, platDir, { recursive: true })
  copyFileSync(plat.node, join(platDir, plat.node.split('/').pop()!))
  const [platPacked] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], platDir))
  app = join(dir, 'app')
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }))
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', join(dir, main.filename), join(dir, platPacked.filename)], app)
}, 240_000)

afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('the packed package', () => {
  it('contains only what it must', () => {
    const files = packed.files.map((f) => f.path).sort()
    console.log(`sandboxd tarball: ${packed.size} bytes packed, ${packed.unpackedSize} unpacked, ${files.length} files`)
    expect(files).toContain('dist/index.js')
    expect(files).toContain('dist/index.d.ts')
    expect(files).toContain('native/index.cjs')
    expect(files).toContain('package.json')
    for (const f of files) expect(f, f).toMatch(/^(dist\/|native\/index\.(cjs|d\.cts)$|bin\/|package\.json$|README\.md$|LICENSE)/)
    expect(files.some((f) => f.endsWith('.node'))).toBe(false) // the binary comes from the platform package
  })

  it('works from ESM (named imports) and from CJS, and never loads child_process', () => {
    const esm = `
      import { Sandboxd, SandboxdError, isSandboxdError, ErrorCodes } from 'sandboxd'
      const e = await new Sandboxd({ socketPath: '/nonexistent/s.sock' }).list().catch((x) => x)
      console.log(JSON.stringify({ ok: e instanceof SandboxdError, narrowed: isSandboxdError(e, ErrorCodes.SANDBOXD_UNAVAILABLE) }))`
    writeFileSync(join(app, 'esm.mjs'), esm)
    expect(JSON.parse(run('node', ['esm.mjs'], app))).toEqual({ ok: true, narrowed: true })
    const cjs = `
      const Module = require('node:module')
      const seen = []
      const load = Module._load
      Module._load = function (request, ...rest) { seen.push(request); return load.call(this, request, ...rest) }
      const { Sandboxd } = require('sandboxd')
      new Sandboxd({ socketPath: '/nonexistent/s.sock' }).list().catch((e) => {
        console.log(JSON.stringify({ code: e.code, childProcess: seen.some((r) => r.includes('child_process')) }))
      })`
    writeFileSync(join(app, 'cjs.cjs'), cjs)
    expect(JSON.parse(run('node', ['cjs.cjs'], app))).toEqual({ code: 'ERR_SANDBOXD_UNAVAILABLE', childProcess: false })
  })

  const consumer = `
    import { LocalSandboxd, Sandboxd, isSandboxdError, type AgentEvent, type ExecResult } from 'sandboxd'
    export async function main(): Promise<string> {
      const client = new Sandboxd({ socketPath: '/nonexistent/s.sock' })
      try {
        await client.list({ signal: AbortSignal.timeout(1000) })
      } catch (e: unknown) {
        if (isSandboxdError(e, 'ERR_SANDBOXD_UNAVAILABLE')) return e.code
      }
      const ev = {} as AgentEvent
      if (ev.type === 'text') return ev.text
      const r = {} as ExecResult
      void LocalSandboxd
      return r.text()
    }
  `
  it.each([
    ['NodeNext', { module: 'NodeNext', moduleResolution: 'NodeNext' }, ['index.mts', 'index.cts']],
    ['ESNext + Bundler', { module: 'ESNext', moduleResolution: 'Bundler' }, ['index.ts']],
  ])('a strict tsc consumer with %s type-checks', (name, options, files) => {
    const d = join(app, name.replace(/\W+/g, '-'))
    mkdirSync(d, { recursive: true })
    for (const f of files) writeFileSync(join(d, f), consumer)
    const tsconfig = {
      compilerOptions: { ...options, target: 'ES2022', lib: ['ES2022', 'ESNext.Disposable'], strict: true, noEmit: true, types: ['node'], typeRoots: [TYPES] },
      include: files,
    }
    writeFileSync(join(d, 'tsconfig.json'), JSON.stringify(tsconfig))
    expect(run('node', [TSC, '-p', d], d)).toBe('')
  })
})
