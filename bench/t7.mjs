// T7 — agent session events: an event written by the agent reaches the JS iterator in ≤ 5 ms p50 over the exec
// tunnel (after the tunnel is open). Run by bench/run.sh after run.mjs; appends its section to the report.
//
// The scripted ACP agent's `stamp N` turn writes N message chunks "stamp <sec>.<usec>", each stamped with the
// wall clock (busybox adjtimex) just before it is written, 50 ms apart. The container runs on the same kernel as
// this process (LocalSandboxd VM engine on this host), so the two clocks are the same clock; the latency is
// receive time (performance.timeOrigin + performance.now()) minus the stamp. It includes the agent's own
// printf, sandbox-agent's SSE fan-out, the exec relay (nc), the engine's exec stream, and the SDK.
import { appendFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const require = createRequire(import.meta.url)
const { DockerEngine, LocalSandboxd, SandboxAgent, Sandboxd } = require('../dist/index.js')

const out = process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : ''
const quick = process.argv.includes('--quick')
const image = process.env.SANDBOXD_AGENT_IMAGE
if (!image) throw new Error('T7 needs SANDBOXD_AGENT_IMAGE (bench/run.sh builds it)')

const rounds = quick ? 1 : 5
const perRound = quick ? 20 : 40
const ws = mkdtempSync(join(tmpdir(), 'sbx-t7-'))
const local = await LocalSandboxd.start()
const lat = []
try {
  const vm = await new Sandboxd({ socketPath: local.socketPath }).create({ agentName: 't7', workspaceDir: ws })
  const engine = await vm.engine()
  await (await DockerEngine.local()).images.copyTo(engine, image)
  const box = await engine.containers.run({ image, cmd: ['sleep', '100000'] })
  const agent = new SandboxAgent(box)
  await agent.ensureServer()
  for (let r = 0; r < rounds; r++) {
    const s = await agent.createSession({ agent: 'pi', cwd: ws })
    for await (const ev of s.prompt(`stamp ${perRound}`)) {
      if (ev.type === 'text' && ev.text.startsWith('stamp ')) {
        lat.push(performance.timeOrigin + performance.now() - Number(ev.text.slice(6)) * 1000)
      }
    }
    await s.close()
  }
  await box.remove({ force: true })
} finally {
  await local.stop()
  rmSync(ws, { recursive: true, force: true })
}
lat.sort((a, b) => a - b)
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]
const p50 = q(0.5)
const pass = p50 <= 5
const section = `
### T7 — agent session events over the exec tunnel

${rounds} session(s) × ${perRound} events from the scripted agent's \`stamp\` turn (stamped with the wall clock when
written, 50 ms apart; same kernel clock on both sides). n = ${lat.length}.

| p50 ms | p90 ms | min ms | max ms | required | result |
|---|---|---|---|---|---|
| ${p50.toFixed(2)} | ${q(0.9).toFixed(2)} | ${lat[0].toFixed(2)} | ${lat.at(-1).toFixed(2)} | p50 ≤ 5 ms | **${pass ? 'PASS' : 'FAIL'}** |
`
console.log(section)
if (out) appendFileSync(out, section)
