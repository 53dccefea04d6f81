// The sandbox-agent "Docker Sandbox" guide's TypeScript example, on the SDK: no child_process anywhere.
// Run it with `npm run demo` (which builds the template image and compiles this file).
// The real sbx daemon when one answers (or the legacy Desktop plugin), else LocalSandboxd serving the sbx API;
// DEMO_BACKEND=desktop runs the legacy /vm flow (a VM plus the template container, the VM's proxy and CA).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalSandboxd, SandboxAgent, Sandboxes, isSandboxdError, type AgentSession } from 'sandboxd'

const TEMPLATE = process.env.TEMPLATE ?? 'sandboxd-test/agent:latest'
const BACKEND = process.env.DEMO_BACKEND === 'desktop' ? 'desktop' : undefined
// A "fake internet" for the network step on LocalSandboxd: npm run demo makes a test CA and a certificate for
// api.demo.test / blocked.demo.test in this directory and puts 198.18.0.1 on the loopback.
const TLS_DIR = process.env.DEMO_TLS_DIR
const t0 = Date.now()
const step = (msg: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(2)}s] ${msg}`)

// Everything created is undone in reverse order, on success, on errors and on Ctrl-C.
const cleanups: Array<() => Promise<unknown>> = []
let cleaning: Promise<void> | undefined
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const undo of cleanups.reverse()) {
      try {
        await undo()
      } catch (e) {
        console.error(`cleanup: ${(e as Error).message}`)
      }
    }
  })()
  return cleaning
}
process.on('SIGINT', () => {
  step('Ctrl-C: cleaning up')
  void cleanup().then(() => process.exit(130))
})

/** An HTTPS server on 198.18.0.1 (a port of its choosing) with the demo's certificate. */
async function fakeInternet(dir: string): Promise<{ ca: string; port: number }> {
  const read = (n: string) => readFileSync(join(dir, n), 'utf8')
  const server: Server = createServer({ key: read('key.pem'), cert: read('cert.pem') }, (req, res) => {
    res.end(`hello from ${req.headers.host}\n`)
  })
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '198.18.0.1', resolve))
  cleanups.push(() => new Promise((r) => { server.closeAllConnections(); server.close(r) }))
  return { ca: read('ca.pem'), port: (server.address() as AddressInfo).port }
}

let fake: { ca: string; port: number } | undefined

async function main(): Promise<void> {
  // 1. The daemon: whichever answers (sbx first), else the embedded LocalSandboxd.
  let sandboxes: Sandboxes
  try {
    sandboxes = await Sandboxes.connect({ backend: BACKEND, timeoutMs: 3000 })
    step(`using the ${sandboxes.backend} daemon at ${sandboxes.socketPath}`)
  } catch (e) {
    if (!isSandboxdError(e) || e.code !== 'ERR_SANDBOXD_UNAVAILABLE') throw e
    step(`no sandbox daemon answers (tried ${((e as { triedPaths?: string[] }).triedPaths ?? []).length} paths); starting LocalSandboxd`)
    if (TLS_DIR && BACKEND !== 'desktop') fake = await fakeInternet(TLS_DIR)
    // The proxy resolves the fake names only (no DNS query leaves the machine) and trusts the fake CA upstream.
    const local = await LocalSandboxd.start(
      fake ? { proxy: { hosts: { 'api.demo.test': ['198.18.0.1'], 'blocked.demo.test': ['198.18.0.1'] }, systemResolver: false, upstreamCa: [fake.ca] } } : undefined,
    )
    cleanups.push(() => local.stop())
    sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend: BACKEND })
    step(`LocalSandboxd (${local.backend}) serving the ${sandboxes.backend} API on ${local.socketPath}`)
  }

  // 2. A sandbox from the template, with the workspace at the same path.
  const workspace = mkdtempSync(join(tmpdir(), 'sandboxd-demo-'))
  cleanups.push(async () => rmSync(workspace, { recursive: true, force: true }))
  const box = await sandboxes.create({ name: 'sandbox-agent-demo', agent: 'sandbox-agent', workspace, template: TEMPLATE })
  cleanups.push(() => box.remove({ force: true }))
  step(`sandbox ${box.name} (${box.backend}) is ${box.info.status}; workspace ${workspace}`)
  if (box.backend === 'desktop') {
    // The legacy flow's container gets the VM's proxy settings and trusts its proxy CA (TLS stays verified).
    const check = await box.sh('echo "$HTTPS_PROXY"; test -s "$SSL_CERT_FILE" && echo ca-trusted')
    const [proxy, ca] = check.text().split('\n')
    step(`HTTPS_PROXY=${proxy}; proxy CA in the sandbox: ${ca === 'ca-trusted'}`)
  }

  if (fake) {
    // The network: the sandbox's only way out is the proxy. HTTPS is intercepted with a certificate from the
    // sandbox's own CA, which curl inside verifies; the proxy verified the upstream. The blocked host is in the log.
    await box.policy.allow('api.demo.test')
    await box.policy.deny('blocked.demo.test')
    const ok = await box.sh(`curl -sS https://api.demo.test:${fake.port}/ -w 'status=%{http_code} verified=%{ssl_verify_result}'`)
    step(`HTTPS through the proxy: ${ok.text().replace('\n', ' ').trim()}`)
    const no = await box.sh(`curl -sS -o /dev/null -w '%{http_connect}' https://blocked.demo.test:${fake.port}/ 2>/dev/null; true`)
    step(`blocked.demo.test: the proxy answered ${no.text()}`)
    for (const e of await box.policy.log()) {
      step(`log: ${e.host} ${e.allowed ? 'allowed' : 'blocked'} by ${e.rule ?? '-'} (${e.reason ?? '-'}, ${e.proxyType}, ${e.count}x)`)
    }
  }

  // 3. One call to a ready session: the sandbox-agent server started (its binary copied in when the template has
  //    none), the agent installed when the server lists it as missing, a session in the workspace.
  // API keys reach the sandbox only through this call (the server and its agents inherit them).
  const keys: Record<string, string> = {}
  for (const k of ['ANTHROPIC_API_KEY', 'OPENAI_API_KEY']) if (process.env[k]) keys[k] = process.env[k]!
  // A real model agent when a key is set (its image must have it installed), else the scripted agent `pi`.
  const agentId = process.env.DEMO_AGENT ?? (keys.ANTHROPIC_API_KEY ? 'claude' : keys.OPENAI_API_KEY ? 'codex' : 'pi')
  const session: AgentSession = await new SandboxAgent(box).startSession({ agent: agentId, env: keys, timeoutMs: 600_000 })
  cleanups.push(() => session.close())
  const { serverStarted, agentInstalled } = session.start!
  step(`session ${session.agentSessionId} with agent ${agentId} (server ${serverStarted ? 'started' : 'already running'}${agentInstalled ? ', agent installed' : ''})`)

  // 4. A prompt whose reply streams to the terminal as it arrives.
  process.stdout.write('    agent> ')
  for await (const ev of session.prompt(process.env.DEMO_PROMPT ?? 'hello')) {
    if (ev.type === 'text') process.stdout.write(ev.text)
    else if (ev.type === 'tool_call') process.stdout.write(`\n    [tool] ${ev.title} (${ev.status})\n    agent> `)
    else if (ev.type === 'permission_request') await ev.respond('reject')
    else if (ev.type === 'stop') process.stdout.write(`\n`), step(`turn ended: ${ev.stopReason}`)
  }
}

main()
  .then(cleanup)
  .then(() => step('done: nothing left running'))
  .catch(async (e) => {
    console.error(`demo failed: ${e.code ?? ''} ${e.message}`)
    await cleanup()
    process.exit(1)
  })
