// Network policy on LocalSandboxd's real filtering proxy: every row of the table is decided twice, once by a real
// request from inside a sandbox container (busybox wget through HTTP_PROXY, or a raw CONNECT with nc) and once by
// the check call, and the two must agree. The "internet" is local HTTP servers on 198.18.0.x (loopback) behind
// fixed names; the proxy's resolver knows only those names, and a sandbox's network namespace holds only a
// loopback with the proxy's listener on it. (busybox 1.35's wget crashes with -T behind a proxy: the exec's
// timeoutMs bounds each request instead.)
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LocalSandboxd, Sandboxes, type PolicyLogEntry, type Sandbox } from 'sandboxd'
import { HOSTS, ensureAddresses, serve, serveTls, testPki, type TestPki } from './helpers/internet.js'
import { rejection, workspace } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')
const CURL_IMAGE = process.env.SANDBOXD_CURL_IMAGE
if (!CURL_IMAGE) throw new Error('SANDBOXD_CURL_IMAGE is not set: run the suite with `npm test`, which builds it')

let local: LocalSandboxd
let sandboxes: Sandboxes
let sb: Sandbox
let closeServers: () => Promise<void>
let closeTls: () => Promise<void>
let pki: TestPki
const ws = workspace('sbx-policy-')

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (private dockerd, loopback addresses)')
  ensureAddresses()
  closeServers = await serve([
    ['198.18.0.1', 80],
    ['198.18.0.1', 8080],
    ['198.18.0.2', 80],
    ['127.0.0.1', 18081],
  ])
  pki = testPki()
  const closeTrusted = await serveTls([['198.18.0.1', 443], ['198.18.0.2', 443]], pki)
  const closeSelf = await serveTls([['198.18.0.2', 8443]], { key: pki.selfKey, cert: pki.selfCert })
  closeTls = async () => { await closeTrusted(); await closeSelf() }
  local = await LocalSandboxd.start({
    backend: 'dockerd',
    // The proxy verifies upstreams against the fake internet's CA (and the platform's, which sign nothing here).
    proxy: { hosts: HOSTS, systemResolver: false, preset: 'deny-all', upstreamCa: [pki.caPem] },
  })
  sandboxes = await Sandboxes.connect({ socketPath: local.socketPath })
  sb = await sandboxes.create({ name: 'pol-main', agent: 'shell', workspace: ws.dir, template: IMAGE })
}, 180_000)

afterAll(async () => {
  await sb?.remove({ force: true }).catch(() => {})
  await local?.stop()
  await closeServers?.()
  await closeTls?.()
  ws.cleanup()
}, 60_000)

type Op = 'allow' | 'deny' | 'bypass'
interface Row {
  name: string
  /** This sandbox's rules for the row. */
  rules?: Array<[Op, string]>
  /** Global rules for the row (removed after it). */
  global?: Array<[Op, string]>
  /** `GET <url>` through HTTP_PROXY, or `CONNECT <connect>` by hand. */
  url?: string
  connect?: string
  /** Extra wget arguments (headers). */
  wget?: string
  /** What the check call is asked (default: the URL's host:port). */
  target?: string
  allowed: boolean
  /** For allowed rows: the upstream must have answered (false when nothing can answer, e.g. an unknown name). */
  reach?: boolean
  /** Text the upstream's answer must hold. */
  saw?: string
}

const rows: Row[] = [
  { name: 'exact host', rules: [['allow', 'api.example.test']], url: 'http://api.example.test/', allowed: true },
  { name: 'exact host does not match a subdomain', rules: [['allow', 'api.example.test']], url: 'http://sub.api.example.test/', allowed: false },
  { name: 'a subdomain rule does not match its parent', rules: [['allow', 'sub.api.example.test']], url: 'http://api.example.test/', allowed: false },
  { name: 'names are case-insensitive', rules: [['allow', 'api.example.test']], url: 'http://API.Example.TEST/', allowed: true },
  { name: 'a trailing dot is the same name', rules: [['allow', 'api.example.test']], url: 'http://api.example.test./', allowed: true },
  { name: 'host:port allows that port', rules: [['allow', 'api.example.test:8080']], url: 'http://api.example.test:8080/', allowed: true },
  { name: 'host:port does not allow another port', rules: [['allow', 'api.example.test:8080']], url: 'http://api.example.test/', allowed: false },
  { name: '*.domain matches a subdomain', rules: [['allow', '*.example.test']], url: 'http://api.example.test/', allowed: true },
  { name: '*.domain matches deeper subdomains', rules: [['allow', '*.example.test']], url: 'http://deep.sub.example.test/', allowed: true },
  { name: '*.domain does not match the domain itself', rules: [['allow', '*.example.test']], url: 'http://example.test/', allowed: false },
  { name: '* allows any public host', rules: [['allow', '*']], url: 'http://other.test/', allowed: true },
  { name: '*:443 does not allow port 80', rules: [['allow', '*:443']], url: 'http://other.test/', allowed: false },
  { name: '*:80 allows port 80', rules: [['allow', '*:80']], url: 'http://other.test/', allowed: true },
  { name: 'deny wins over allow *', rules: [['allow', '*'], ['deny', 'evil.test']], url: 'http://evil.test/', allowed: false },
  { name: 'deny *.domain wins over allow *', rules: [['allow', '*'], ['deny', '*.example.test']], url: 'http://api.example.test/', allowed: false },
  { name: 'deny wins over the same exact allow', rules: [['allow', 'api.example.test'], ['deny', 'api.example.test']], url: 'http://api.example.test/', allowed: false },
  { name: 'a global deny wins over a sandbox allow', global: [['deny', 'evil.test']], rules: [['allow', 'evil.test']], url: 'http://evil.test/', allowed: false },
  { name: 'a global allow applies to the sandbox', global: [['allow', 'other.test']], url: 'http://other.test/', allowed: true },
  { name: 'a CIDR allows an IP literal', rules: [['allow', '198.18.0.0/24']], url: 'http://198.18.0.1/', allowed: true },
  { name: 'a CIDR allows a name by what it resolves to', rules: [['allow', '198.18.0.2/32']], url: 'http://other.test/', allowed: true },
  { name: 'a CIDR deny blocks a name by what it resolves to', rules: [['allow', '*'], ['deny', '198.18.0.2/32']], url: 'http://other.test/', allowed: false },
  { name: 'a CIDR deny blocks an IP literal', rules: [['allow', '*'], ['deny', '198.18.0.0/24']], url: 'http://198.18.0.1/', allowed: false },
  { name: 'no rule: blocked', url: 'http://api.example.test/', allowed: false },
  { name: '10/8 literal is default-blocked', rules: [['allow', '*']], url: 'http://10.0.0.1/', allowed: false },
  { name: 'a name resolving into 10/8 is default-blocked', rules: [['allow', '*']], url: 'http://internal.test/', allowed: false },
  { name: 'an allowed name resolving to loopback stays blocked', rules: [['allow', 'loop.test']], url: 'http://loop.test/', allowed: false },
  { name: 'loopback literal (the host) is blocked', rules: [['allow', '*']], url: 'http://127.0.0.1:18081/', allowed: false },
  { name: 'the metadata address is blocked', rules: [['allow', '*']], url: 'http://169.254.169.254/', allowed: false },
  { name: 'a name resolving to the metadata address is blocked', rules: [['allow', '*']], url: 'http://meta.test/', allowed: false },
  { name: 'IPv6 loopback is blocked', rules: [['allow', '*']], url: 'http://[::1]/', target: '[::1]:80', allowed: false },
  { name: 'IPv4-mapped IPv6 loopback is blocked', rules: [['allow', '*']], url: 'http://[::ffff:127.0.0.1]/', target: '[::ffff:127.0.0.1]:80', allowed: false },
  { name: 'decimal IPv4 form of loopback is blocked', rules: [['allow', '*']], url: 'http://2130706433/', allowed: false },
  { name: 'hex IPv4 form of loopback is blocked', rules: [['allow', '*']], url: 'http://0x7f000001/', allowed: false },
  { name: 'short IPv4 form of loopback is blocked', rules: [['allow', '*']], url: 'http://127.1/', allowed: false },
  { name: '0.0.0.0 is blocked', rules: [['allow', '*']], url: 'http://0.0.0.0/', allowed: false },
  { name: 'a name with one private address among public ones is blocked', rules: [['allow', '*']], url: 'http://mixed.test/', allowed: false },
  { name: 'a narrow allow lifts one loopback port', rules: [['allow', '127.0.0.1:18081']], url: 'http://127.0.0.1:18081/', allowed: true },
  { name: 'the lift does not reach another port', rules: [['allow', '127.0.0.1:18081']], url: 'http://127.0.0.1:18082/', allowed: false },
  { name: 'a bypass rule alone allows nothing', rules: [['bypass', 'other.test']], url: 'http://other.test/', allowed: false },
  { name: 'a spoofed Host header does not change the target', rules: [['allow', 'api.example.test']], url: 'http://api.example.test/', wget: "--header 'Host: evil.test'", allowed: true, saw: 'host=api.example.test' },
  { name: 'a Host header naming an allowed host does not open a blocked one', rules: [['allow', 'api.example.test']], url: 'http://evil.test/', wget: "--header 'Host: api.example.test'", allowed: false },
  { name: 'userinfo before the host does not change the target', rules: [['allow', 'api.example.test']], url: 'http://api.example.test@evil.test/', target: 'evil.test:80', allowed: false },
  { name: 'a name that does not resolve is not reached', rules: [['allow', '*']], url: 'http://nowhere.test/', allowed: true, reach: false },
  { name: 'CONNECT to an allowed host:port', rules: [['allow', 'api.example.test']], connect: 'api.example.test:80', allowed: true },
  { name: 'CONNECT to a blocked host', rules: [['allow', 'api.example.test']], connect: 'evil.test:80', allowed: false },
  { name: 'CONNECT to loopback is blocked', rules: [['allow', '*']], connect: '127.0.0.1:18081', allowed: false },
  { name: 'CONNECT to a decimal loopback form is blocked', rules: [['allow', '*']], connect: '2130706433:18081', allowed: false },
  { name: 'CONNECT to the proxy itself is blocked', rules: [['allow', '*']], connect: 'host.docker.internal:3128', target: 'host.docker.internal:3128', allowed: false },
]

function targetOf(r: Row): string {
  if (r.target) return r.target
  if (r.connect) return r.connect
  const u = new URL(r.url!)
  return `${u.hostname}:${u.port || 80}`
}

/** What a request from inside the sandbox got: the proxy's refusal, or the upstream's answer. */
async function request(r: Row): Promise<{ blocked: boolean; text: string }> {
  const script = r.connect
    ? `printf 'CONNECT ${r.connect} HTTP/1.1\\r\\nHost: ${r.connect}\\r\\n\\r\\nGET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | nc -w 5 host.docker.internal 3128`
    : `wget -q -O- ${r.wget ?? ''} '${r.url}' 2>&1`
  const res = await sb.sh(`${script}; echo "rc=$?"`, { timeoutMs: 20_000 })
  const text = res.text()
  return { blocked: /\b403\b/.test(text), text }
}

async function clearRules(): Promise<void> {
  const rules = await sandboxes.policy.rules()
  const own = rules.filter((r) => r.sandbox === sb.name).map((r) => r.destination)
  if (own.length) await sb.policy.remove([...new Set(own)])
}

describe('the policy table: a real request from inside and the check call agree', () => {
  it(`has at least 40 rows (${rows.length})`, () => {
    expect(rows.length).toBeGreaterThanOrEqual(40)
  })

  for (const r of rows) {
    it(r.name, async () => {
      await clearRules()
      for (const [op, d] of r.rules ?? []) await sb.policy[op](d)
      for (const [op, d] of r.global ?? []) await sandboxes.policy[op](d)
      try {
        const got = await request(r)
        const checked = await sb.policy.check(targetOf(r))
        expect({ request: !got.blocked, check: checked.allowed }, got.text).toEqual({ request: r.allowed, check: r.allowed })
        if (r.allowed && r.reach !== false) expect(got.text).toContain('upstream host=')
        if (r.saw) expect(got.text).toContain(r.saw)
        if (!r.allowed) expect(checked.reason).toMatch(/^(denied-by-rule|default-blocked-range|no-matching-rule)$/)
      } finally {
        if (r.global?.length) await sandboxes.policy.remove(r.global.map(([, d]) => d))
      }
    })
  }
})

describe('the proxy is the only way out', () => {
  it('a sandbox has no route, no DNS and no host service but the proxy', async () => {
    await clearRules()
    await sb.policy.allow('*')
    const res = await sb.sh(
      [
        'cat /proc/net/route | wc -l',
        'nc -w 2 198.18.0.1 80 </dev/null; echo direct=$?',
        'env -u http_proxy -u HTTP_PROXY wget -q -O- http://198.18.0.1/ 2>&1; echo noproxy=$?',
        'nc -w 2 127.0.0.1 18081 </dev/null; echo hostport=$?',
        'nslookup api.example.test 2>&1 | tail -1; echo dns=$?',
      ].join('; '),
      { timeoutMs: 30_000 },
    )
    const t = res.text()
    expect(t.split('\n')[0].trim()).toBe('1') // the header line only: no routes
    expect(t).toMatch(/direct=[1-9]/)
    expect(t).toMatch(/noproxy=[1-9]/)
    expect(t).toMatch(/hostport=[1-9]/)
    expect(t).not.toContain('upstream host=')
    // The same destination through the proxy works.
    expect((await sb.sh("wget -q -O- http://198.18.0.1/ 2>&1")).text()).toContain('upstream host=198.18.0.1')
  })

  it('the sandbox sees the proxy variables and the proxy CA', async () => {
    const env = (await sb.exec(['env'])).text()
    expect(env).toContain('HTTPS_PROXY=http://host.docker.internal:3128')
    expect(env).toContain('NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/sandboxd-proxy-ca.crt')
    const pem = (await sb.readFile('/usr/local/share/ca-certificates/sandboxd-proxy-ca.crt')).toString()
    expect(pem).toMatch(/^-----BEGIN CERTIFICATE-----/)
  })
})

describe('rules at run time', () => {
  it('a change applies to the next request, without restarting anything', async () => {
    await clearRules()
    await sb.policy.allow('other.test')
    const get = async () => (await sb.sh("wget -q -O- http://other.test/ 2>&1; echo")).text()
    expect(await get()).toContain('upstream host=other.test')
    await sb.policy.deny('other.test')
    expect(await get()).toMatch(/403/)
    await sb.policy.remove('other.test')
    await sb.policy.allow('other.test')
    expect(await get()).toContain('upstream host=other.test')
  })

  it('a stopped and started sandbox is wired to the proxy again', async () => {
    await clearRules()
    await sb.policy.allow('api.example.test')
    await sb.stop()
    await sb.start()
    expect((await sb.sh("wget -q -O- http://api.example.test/ 2>&1")).text()).toContain('upstream host=api.example.test')
  })

  it("a removed sandbox's rules are dropped with it; other sandboxes' stay", async () => {
    const dir = join(ws.dir, 'second')
    mkdirSync(dir)
    {
      await using other = await sandboxes.create({ name: 'pol-second', agent: 'shell', workspace: dir, template: IMAGE })
      await other.policy.allow(['other.test', '*.example.test'])
      await sb.policy.allow('evil.test')
      const listed = await sandboxes.policy.rules()
      expect(listed.filter((r) => r.sandbox === 'pol-second').map((r) => r.destination).sort()).toEqual(['*.example.test', 'other.test'])
      expect(await other.policy.rules()).not.toContainEqual(expect.objectContaining({ sandbox: sb.name }))
    }
    const after = await sandboxes.policy.rules()
    expect(after.filter((r) => r.sandbox === 'pol-second')).toEqual([])
    expect(after).toContainEqual(expect.objectContaining({ sandbox: sb.name, destination: 'evil.test', action: 'allow' }))
  }, 120_000)

  it('presets replace the global rules', async () => {
    const balanced = await sandboxes.policy.preset('balanced')
    expect(balanced.filter((r) => r.scope === 'global').length).toBeGreaterThan(3)
    const none = await sandboxes.policy.preset('deny-all')
    expect(none.filter((r) => r.scope === 'global')).toEqual([])
  })
})

describe('the decision log', () => {
  it('shows a blocked host with its rule and reason, and an allowed one with counts', async () => {
    await clearRules()
    await sb.policy.allow('api.example.test')
    await sb.policy.deny('evil.test')
    await sb.sh("wget -q -O- http://api.example.test/ >/dev/null 2>&1; wget -q -O- http://api.example.test/ >/dev/null 2>&1; wget -q -O- http://evil.test/ 2>&1; true")
    const log = await sb.policy.log()
    const blocked = log.find((e) => e.host === 'evil.test:80' && !e.allowed && e.rule === 'evil.test')
    expect(blocked).toMatchObject({ sandbox: sb.name, reason: 'denied-by-rule', proxyType: 'forward' })
    expect(blocked!.count).toBeGreaterThanOrEqual(1)
    const ok = log.find((e) => e.host === 'api.example.test:80' && e.allowed && e.rule === 'api.example.test')
    expect(ok!.count).toBeGreaterThanOrEqual(2)
    expect(ok!.lastSeenMs).toBeGreaterThanOrEqual(ok!.firstSeenMs!)
    expect(ok!.lastSeen).toMatch(/^\d{4}-\d\d-\d\dT/)
    // The global view holds the same rows; the sandbox's view only its own.
    expect((await sandboxes.policy.log()).length).toBeGreaterThanOrEqual(log.length)
    expect(log.every((e) => e.sandbox === sb.name)).toBe(true)
  })

  it('follow() yields decisions made after it started, and ends with the signal', async () => {
    await clearRules()
    await sb.policy.deny('meta.test')
    const ac = new AbortController()
    const seen: PolicyLogEntry[] = []
    const following = (async () => {
      for await (const e of sb.policy.follow({ signal: ac.signal, intervalMs: 50 })) {
        seen.push(e)
        if (seen.some((x) => x.host === 'meta.test:80')) ac.abort()
      }
    })()
    await new Promise((r) => setTimeout(r, 300))
    await sb.sh('wget -q -O- http://meta.test/ 2>&1; true')
    const err = await rejection(following)
    expect(err.name).toBe('AbortError')
    const e = seen.find((x) => x.host === 'meta.test:80')!
    expect(e).toMatchObject({ allowed: false, rule: 'meta.test', reason: 'denied-by-rule', count: 1 })
  })
})

describe('bad input loses nothing', () => {
  it('a malformed destination is ERR_INVALID_ARGUMENT naming it, and no rule of the batch is applied', async () => {
    await clearRules()
    const before = await sandboxes.policy.rules()
    for (const bad of ['', 'not a host!', 'a.com:99999', '10.0.0.0/33', '*.']) {
      const e = await rejection(sb.policy.allow(['fine.test', bad]))
      expect(e.code).toBe('ERR_INVALID_ARGUMENT')
      expect(e.argument).toMatch(/^(destinations\[1\]|changes\[1\]|rules\[1\])$/)
    }
    expect(await sandboxes.policy.rules()).toEqual(before)
  })

  it('bad calls are typed errors', async () => {
    expect((await rejection(sandboxes.policy.preset('open' as never))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(sandboxes.policy.change([{ op: 'permit' } as never]))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(sandboxes.policy.change('allow *' as never))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(sandboxes.policy.check(''))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(sandboxes.policy.check('a b c'))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(sandboxes.policy.allow('x.test', { sandbox: 'no-such-sandbox' }))).code).toBe('ERR_SANDBOX_NOT_FOUND')
    const ac = new AbortController()
    ac.abort()
    expect((await rejection(sandboxes.policy.rules({ signal: ac.signal }))).name).toBe('AbortError')
  })

})

describe('HTTPS through the proxy', () => {
  const SECRET = 'sk-test-7f3a9c1e5b2d4f6a8c0e'
  const SERVICE_SECRET = 'svc-key-4b8d2f6a0c1e3g5h'
  let tls: Sandbox

  beforeAll(async () => {
    const dir = join(ws.dir, 'tls')
    mkdirSync(dir)
    tls = await sandboxes.create({
      name: 'pol-tls',
      agent: 'shell',
      workspace: dir,
      template: CURL_IMAGE,
      secrets: [
        { env: 'API_TOKEN', value: SECRET, hosts: ['api.example.test'] },
        { env: 'SVC_KEY', value: SERVICE_SECRET, hosts: ['other.test'], header: 'x-api-key', managed: true },
      ],
    })
    await tls.policy.allow(['api.example.test', 'other.test', 'untrusted.test:8443'])
  }, 120_000)

  afterAll(async () => {
    await tls?.remove({ force: true }).catch(() => {})
  })

  const curl = async (args: string) => (await tls.sh(`curl -sS --max-time 10 ${args} 2>&1; echo " rc=$?"`, { timeoutMs: 30_000 })).text()

  it('is intercepted: curl inside verifies a leaf from the sandbox CA; the proxy verified the upstream', async () => {
    const out = await curl('-v https://api.example.test/')
    expect(out).toContain('upstream host=api.example.test')
    expect(out).toMatch(/issuer: .*LocalSandboxd/)
    expect(out).toContain(' rc=0')
    const log = await tls.policy.log()
    expect(log).toContainEqual(expect.objectContaining({ host: 'api.example.test:443', allowed: true, proxyType: 'intercepted' }))
  })

  it('an upstream whose certificate nobody vouches for is refused by the proxy, with a typed log entry', async () => {
    const out = await curl("-w ' status=%{http_code}' https://untrusted.test:8443/")
    expect(out).not.toContain('upstream host=')
    expect(out).toContain('status=502') // the proxy's answer, inside the intercepted connection
    expect(out).toContain('upstream TLS failed')
    const log = await tls.policy.log()
    const entry = log.find((e) => e.host === 'untrusted.test:8443') // allowed by policy, failed at TLS
    expect(entry?.reason ?? JSON.stringify(log)).toMatch(/^upstream-(certificate|tls)$/)
  })

  it('a bypassed host is tunnelled: the client sees the upstream\'s own certificate', async () => {
    await tls.policy.bypass('api.example.test')
    try {
      // The sandbox trusts only its proxy CA: the upstream's real certificate fails verification…
      expect(await curl('https://api.example.test/')).toMatch(/rc=60/)
      // …and with the fake internet's CA it is the upstream answering, unintercepted.
      await tls.writeFile('/tmp/fake-ca.pem', pki.caPem)
      const out = await curl('-v --cacert /tmp/fake-ca.pem https://api.example.test/')
      expect(out).toContain('upstream host=api.example.test')
      expect(out).toMatch(/issuer: CN ?= ?sandboxd fake internet CA/)
    } finally {
      await tls.policy.remove('api.example.test')
      await tls.policy.allow('api.example.test')
    }
  })

  it('a Host header that disagrees with the CONNECT target is refused', async () => {
    const out = await curl("-H 'Host: evil.test' https://api.example.test/")
    expect(out).not.toContain('upstream host=evil.test')
    expect(out).not.toContain('upstream host=api.example.test')
  })

  it('a secret reaches its host; the sandbox holds only the placeholder; other hosts get the placeholder', async () => {
    const env = (await tls.exec(['env'])).text()
    const placeholder = /API_TOKEN=(sbx-cs-[0-9a-f]+)/.exec(env)?.[1]
    expect(placeholder).toBeTruthy()
    expect(env).toContain('SVC_KEY=proxy-managed')
    expect(env).not.toContain(SECRET)
    // Its host gets the value, over intercepted HTTPS.
    expect(await curl('-H "Authorization: Bearer $API_TOKEN" https://api.example.test/')).toContain(`auth=Bearer ${SECRET}`)
    // Another host gets the placeholder unchanged; so does plain HTTP to its own host.
    expect(await curl('-H "Authorization: Bearer $API_TOKEN" https://other.test/')).toContain(`auth=Bearer ${placeholder}`)
    expect(await curl('-H "Authorization: Bearer $API_TOKEN" http://api.example.test/')).toContain(`auth=Bearer ${placeholder}`)
    // A managed secret: the whole header is written by the proxy for its host only.
    expect(await curl('-H "x-api-key: $SVC_KEY" https://other.test/')).toContain(`key=${SERVICE_SECRET}`)
    expect(await curl('-H "x-api-key: $SVC_KEY" https://api.example.test/')).toContain('key=proxy-managed')
  })

  it('no value in the sandbox\'s files, the log, errors or LocalSandboxd\'s files', async () => {
    const found = await tls.sh(`grep -rl -e '${SECRET}' -e '${SERVICE_SECRET}' /etc /tmp /root /usr /var /home /bin 2>/dev/null; true`)
    expect(found.text()).toBe('')
    const log = JSON.stringify([await sandboxes.policy.log(), await sandboxes.policy.rules()])
    expect(log).not.toContain(SECRET)
    expect(log).not.toContain(SERVICE_SECRET)
    // A refused set names the entry, never the value.
    const e = await rejection(tls.setSecrets([{ env: 'API_TOKEN', value: SECRET, hosts: ['*.example.test'] }]))
    expect(e.code).toBe('ERR_INVALID_ARGUMENT')
    expect(e.argument).toBe('secrets[0]')
    expect(JSON.stringify({ m: e.message, ...e })).not.toContain(SECRET)
    // Every file under LocalSandboxd's root (engines, state, sockets skipped).
    const hits: string[] = []
    const walk = (d: string) => {
      for (const n of readdirSync(d)) {
        const p = join(d, n)
        let st
        try { st = statSync(p) } catch { continue }
        if (st.isDirectory()) walk(p)
        else if (st.isFile() && st.size < 64 << 20) {
          const b = readFileSync(p)
          if (b.includes(SECRET) || b.includes(SERVICE_SECRET)) hits.push(p)
        }
      }
    }
    walk(local.root)
    expect(hits).toEqual([])
  })

  it('setSecrets replaces the set: a dropped secret is no longer injected', async () => {
    const [p] = await tls.setSecrets([{ env: 'API_TOKEN', value: 'second-value-1234', hosts: ['other.test'] }])
    expect(p).toMatchObject({ env: 'API_TOKEN', hosts: ['other.test'], header: 'authorization' })
    expect(p.placeholder).toMatch(/^sbx-cs-/)
    expect(await curl('-H "Authorization: Bearer $API_TOKEN" https://other.test/')).toContain('auth=Bearer second-value-1234')
    expect(await curl('-H "Authorization: Bearer $API_TOKEN" https://api.example.test/')).toContain(`auth=Bearer ${p.placeholder}`)
  })

  it('a create whose secrets are refused leaves no sandbox behind', async () => {
    const dir = join(ws.dir, 'refused')
    mkdirSync(dir)
    const e = await rejection(sandboxes.create({ name: 'pol-refused', agent: 'shell', workspace: dir, template: IMAGE, secrets: [{ env: '1BAD', value: 'v', hosts: ['a.test'] }] }))
    expect(e.code).toBe('ERR_INVALID_ARGUMENT')
    expect(await sandboxes.get('pol-refused')).toBeNull()
  })
})

describe('the legacy desktop backend: each VM\'s proxy-config.json, typed', () => {
  it('reads and writes per-sandbox rules in the file, checks on them, and says what it cannot do', async () => {
    const d = await Sandboxes.connect({ socketPath: local.socketPath, backend: 'desktop' })
    const dir = join(ws.dir, 'desk')
    mkdirSync(dir)
    await using box = await d.create({ name: 'pol-desk', agent: 'shell', workspace: dir, template: IMAGE })
    const file = join(local.root, 'vm', 'pol-desk-vm', 'proxy-config.json')
    // LocalSandboxd's default file: policy allow, the default blocked CIDRs.
    const before = await box.policy.rules()
    expect(before).toContainEqual({ action: 'allow', destination: '*', scope: 'sandbox:pol-desk', sandbox: 'pol-desk' })
    expect(before).toContainEqual(expect.objectContaining({ action: 'deny', destination: '10.0.0.0/8' }))
    await box.policy.deny(['evil.test', '203.0.113.0/24'])
    await box.policy.remove('*')
    await box.policy.allow('api.example.test')
    const json = JSON.parse(readFileSync(file, 'utf8'))
    expect(json.policy).toBe('deny')
    expect(json.network.allowedDomains).toEqual(['api.example.test'])
    expect(json.network.blockedDomains).toEqual(['evil.test'])
    expect(json.network.blockCIDR).toContain('203.0.113.0/24')
    expect((await box.policy.check('api.example.test')).allowed).toBe(true)
    expect(await box.policy.check('other.test')).toMatchObject({ allowed: false, reason: 'no-matching-rule' })
    expect(await box.policy.check('203.0.113.9:443')).toMatchObject({ allowed: false, reason: 'denied-by-rule', rule: '203.0.113.0/24' })
    await box.policy.allow('*')
    expect(await box.policy.check('evil.test')).toMatchObject({ allowed: false, rule: 'evil.test' })
    expect(JSON.parse(readFileSync(file, 'utf8')).policy).toBe('allow')
    // What the file cannot say, and what the /vm API does not have.
    expect((await rejection(d.policy.allow('x.test'))).code).toBe('ERR_UNSUPPORTED')
    expect((await rejection(box.policy.allow('198.51.100.0/24'))).code).toBe('ERR_UNSUPPORTED')
    expect((await rejection(d.policy.preset('balanced'))).code).toBe('ERR_UNSUPPORTED')
    expect((await rejection(box.policy.log())).code).toBe('ERR_UNSUPPORTED')
    expect((await rejection(box.setSecrets([{ env: 'K', value: 'v', hosts: ['a.test'] }]))).code).toBe('ERR_UNSUPPORTED')
    expect((await rejection(d.policy.allow('x.test', { sandbox: 'no-such' }))).code).toBe('ERR_SANDBOX_NOT_FOUND')
  }, 120_000)
})
