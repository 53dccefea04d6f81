// The sandbox-agent "Docker Sandbox" guide's TypeScript example, on the SDK: no child_process anywhere.
// Run it with `npm run demo` (which builds the template image and compiles this file).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DockerEngine, LocalSandboxd, SandboxAgent, Sandboxd, type AgentSession, type Container, type Vm } from 'sandboxd'

const TEMPLATE = process.env.TEMPLATE ?? 'sandboxd-test/agent:latest'
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

async function main(): Promise<void> {
  // 1. sandboxd: the real daemon when its socket answers, else the embedded LocalSandboxd.
  let sandboxd = new Sandboxd()
  try {
    await sandboxd.ping({ timeoutMs: 2000 })
    step(`using sandboxd at ${sandboxd.socketPath}`)
  } catch (e) {
    step(`no sandboxd answers at ${sandboxd.socketPath} (${(e as any).code}); starting LocalSandboxd`)
    const local = await LocalSandboxd.start()
    cleanups.push(() => local.stop())
    sandboxd = new Sandboxd({ socketPath: local.socketPath })
    step(`LocalSandboxd (${local.backend}) serving ${local.socketPath}`)
  }

  // 2. The VM for the agent, with the workspace shared at the same path.
  const workspace = mkdtempSync(join(tmpdir(), 'sandboxd-demo-'))
  cleanups.push(async () => rmSync(workspace, { recursive: true, force: true }))
  const vm: Vm = await sandboxd.ensure({ agentName: 'sandbox-agent', workspaceDir: workspace })
  cleanups.push(() => vm.remove({ force: true }))
  step(`VM ${vm.name} ready; its engine: ${vm.socketPath}`)

  // 3. Copy the template image from the host engine into the VM's engine, with a progress bar.
  const host = await DockerEngine.local()
  const engine = await vm.engine()
  const size = (await host.images.inspect(TEMPLATE))?.size ?? 0
  let shown = -1
  const copied = await host.images.copyTo(engine, TEMPLATE, {
    onProgress: (bytes) => {
      const pct = size ? Math.min(100, Math.floor((bytes / size) * 20) * 5) : 0
      if (pct === shown) return
      shown = pct
      process.stdout.write(`\r    copying ${TEMPLATE} [${'#'.repeat(pct / 5).padEnd(20)}] ${(bytes / 1e6).toFixed(1)} MB`)
    },
  })
  process.stdout.write('\n')
  step(copied.skipped ? `${TEMPLATE} already in the VM` : `copied ${(copied.bytes / 1e6).toFixed(1)} MB in ${copied.durationMs} ms`)

  // 4. The container: workspace at the same path, the VM's proxy settings, and its proxy CA trusted
  //    (vm.proxyEnv() points NODE_EXTRA_CA_CERTS/SSL_CERT_FILE/… at the file trustCa() writes;
  //    TLS verification is never disabled).
  const box: Container = await engine.containers.run({
    image: TEMPLATE,
    cmd: ['sleep', 'infinity'],
    binds: [`${workspace}:${workspace}`],
    workingDir: workspace,
    env: vm.proxyEnv(),
  })
  cleanups.push(() => box.remove({ force: true }))
  if (vm.caCertPem) await box.trustCa(vm.caCertPem)
  const check = await box.sh('echo "$HTTPS_PROXY"; cat "$SSL_CERT_FILE"')
  const [proxy, ...pem] = check.text().split('\n')
  step(`container ${box.id.slice(0, 12)} running; HTTPS_PROXY=${proxy}`)
  step(`proxy CA in the container matches the VM's: ${pem.join('\n') === vm.caCertPem}`)

  // 5. The sandbox-agent server (started if it is not running), then a session.
  const agent = new SandboxAgent(box)
  // API keys reach the container only through the call that starts the server (agents inherit its env).
  const keys: Record<string, string> = {}
  for (const k of ['ANTHROPIC_API_KEY', 'OPENAI_API_KEY']) if (process.env[k]) keys[k] = process.env[k]!
  const { started } = await agent.ensureServer({ timeoutMs: 20_000, env: keys })
  step(started ? 'sandbox-agent server started and healthy' : 'sandbox-agent server already healthy')
  // A real model agent when a key is set (its image must have it installed), else the scripted agent `pi`.
  const agentId = process.env.DEMO_AGENT ?? (keys.ANTHROPIC_API_KEY ? 'claude' : keys.OPENAI_API_KEY ? 'codex' : 'pi')
  const known = (await agent.listAgents()).agents.find((a) => a.id === agentId)
  if (known && !known.installed) {
    step(`installing agent ${agentId} (downloads through the VM's proxy)`)
    await agent.installAgent(agentId)
  }
  const session: AgentSession = await agent.createSession({ agent: agentId, cwd: workspace })
  cleanups.push(() => session.close())
  step(`session ${session.agentSessionId} with agent ${agentId}`)

  // 6. A prompt whose reply streams to the terminal as it arrives.
  process.stdout.write('    agent> ')
  for await (const ev of session.prompt(process.env.DEMO_PROMPT ?? 'hello')) {
    if (ev.type === 'text') process.stdout.write(ev.text ?? '')
    else if (ev.type === 'tool_call') process.stdout.write(`\n    [tool] ${ev.title} (${ev.status})\n    agent> `)
    else if (ev.type === 'permission_request') await ev.respond!('reject')
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
