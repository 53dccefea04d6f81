// A "fake internet" for the network policy tests: HTTP servers on addresses of the benchmarking range
// (198.18.0.0/15) added to this machine's loopback, and the names LocalSandboxd's proxy resolves to them (its
// resolver gets only these fixed answers: no DNS query and no packet leaves the machine). Sandboxes reach them
// only through the proxy: their own network namespace holds nothing but a loopback.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const LIB = fileURLToPath(new URL('../../scripts/lib.sh', import.meta.url))

/** The addresses put on `lo` (kept afterwards: loopback-only, harmless, and shared by concurrent specs). */
export const ADDRS = ['198.18.0.1', '198.18.0.2'] as const

/** Name → addresses for `LocalSandboxd.start({ proxy: { hosts } })`. */
export const HOSTS: Record<string, string[]> = {
  'api.example.test': ['198.18.0.1'],
  'sub.api.example.test': ['198.18.0.1'],
  'deep.sub.example.test': ['198.18.0.1'],
  'example.test': ['198.18.0.1'],
  'other.test': ['198.18.0.2'],
  'evil.test': ['198.18.0.2'],
  'internal.test': ['10.0.0.5'],
  'loop.test': ['127.0.0.1'],
  'meta.test': ['169.254.169.254'],
  'mixed.test': ['198.18.0.1', '10.0.0.1'],
  'untrusted.test': ['198.18.0.2'],
}

/** Puts the fake internet's addresses on `lo` (root), or fails loudly. */
export function ensureAddresses(): void {
  const have = execFileSync('ip', ['-o', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' })
  for (const a of ADDRS) {
    if (!have.includes(` ${a}/`)) execFileSync('ip', ['addr', 'add', `${a}/32`, 'dev', 'lo'])
  }
}

/** What an upstream saw: the Host header, method, path, and the headers named in `echo`. */
function handler(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void {
  const auth = req.headers['authorization'] ?? ''
  const key = req.headers['x-api-key'] ?? ''
  res.setHeader('content-type', 'text/plain')
  res.end(`upstream host=${req.headers.host} method=${req.method} path=${req.url} auth=${auth} key=${key}\n`)
}

/** A test CA and one server certificate it signed for every fake name and address (openssl, in a temp dir). */
export interface TestPki {
  caPem: string
  key: string
  cert: string
  /** A self-signed certificate for the same names that no CA vouches for. */
  selfKey: string
  selfCert: string
}

/** Made by `make_test_pki` in scripts/lib.sh (openssl), the same function the demo uses. */
export function testPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-pki-'))
  try {
    const names = [...Object.keys(HOSTS), 'IP:198.18.0.1', 'IP:198.18.0.2']
    execFileSync('bash', ['-c', 'source "$0" && make_test_pki "$@"', LIB, dir, ...names], { stdio: ['ignore', 'ignore', 'inherit'] })
    const r = (n: string) => readFileSync(join(dir, n), 'utf8')
    return { caPem: r('ca.pem'), key: r('key.pem'), cert: r('cert.pem'), selfKey: r('self.key'), selfCert: r('self.pem') }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** HTTPS servers at `host:port` pairs with `key`/`cert`. */
export async function serveTls(at: Array<[string, number]>, tls: { key: string; cert: string }): Promise<() => Promise<void>> {
  const servers: Server[] = []
  for (const [host, port] of at) {
    const s = createTlsServer(tls, handler)
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.listen(port, host, () => resolve())
    })
    servers.push(s)
  }
  return closer(servers)
}

function closer(servers: Server[]): () => Promise<void> {
  return async () => {
    await Promise.all(servers.map((s) => new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()) })))
  }
}

/** HTTP servers at `host:port` pairs; resolves with a close function. */
export async function serve(at: Array<[string, number]>): Promise<() => Promise<void>> {
  const servers: Server[] = []
  for (const [host, port] of at) {
    const s = createServer(handler)
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.listen(port, host, () => resolve())
    })
    servers.push(s)
  }
  return closer(servers)
}
