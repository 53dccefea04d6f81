// `npm run bench` (via bench/run.sh): the performance targets T1–T6, T8, T9 and T10, measured side by side with the peers
// (dockerode, the docker CLI, curl glue) in one interleaved run, written to BENCHMARKS.md.
//
//   node bench/run.mjs [--quick] [--out FILE] [--only T1,T3] [--keep-images] [--strict]
//
// Needs DOCKER_HOST (unix socket) and an image with busybox (BENCH_IMAGE, else SANDBOXD_TEST_IMAGE); run.sh
// provides both the way scripts/test.sh does. Peers run in separate processes (bench/peer.mjs), driven in
// rounds with the order rotated every round; RSS and CPU are measured in fresh processes.
import { fork, spawn, execFileSync } from 'node:child_process'
import { createServer } from 'node:net'
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { EXEC_ENV, EXEC_EXPECT, EXEC_SCRIPT, MiB, REPO, dockerCli, engineRequest, max, median, min, p90, quantile, require, streamCmd } from './lib.mjs'

// ---------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------

const argv = process.argv.slice(2)
const flag = (f) => argv.includes(f)
const opt = (f) => {
  const i = argv.indexOf(f)
  return i >= 0 ? argv[i + 1] : undefined
}
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  if (['--quick', '--keep-images', '--strict', '--no-diagnostics'].includes(a)) continue
  if (['--out', '--only'].includes(a)) {
    i++
    continue
  }
  if (a === '-h' || a === '--help') {
    console.log('usage: npm run bench [-- --quick] [--out FILE] [--only T1,T2,…] [--keep-images] [--strict] [--no-diagnostics]')
    process.exit(0)
  }
  console.error(`bench: unknown argument ${a}`)
  process.exit(2)
}
const QUICK = flag('--quick')
const STRICT = flag('--strict')
const KEEP_IMAGES = flag('--keep-images')
const ONLY = new Set((opt('--only') ?? 'T1,T2,T3,T4,T5,T6,T8,T9,T10').toUpperCase().split(',').filter(Boolean))
const OUT = path.resolve(REPO, opt('--out') ?? (QUICK ? '.tmp/BENCHMARKS.quick.md' : 'BENCHMARKS.md'))

const CFG = QUICK
  ? {
      t1Rounds: 3, t1PerRound: 5,
      cpuRounds: 1, cpuN: 10, cpuWarm: 3,
      t2Batches: 2, t2N: 50,
      t3Rounds: 1, t3Bytes: 64 * MiB, pausedBytes: 512 * MiB, pauseMs: 1500,
      t4Rounds: 1, bigMiB: 16,
      t5Rounds: 2, t5FastN: 100, t5CurlN: 10,
      t6Rounds: 3,
      t8Rounds: 3, t8PerRound: 5, t8StreamRounds: 1, t8Bytes: 64 * MiB,
      t10Rounds: 2, t10N: 20, t10NewN: 5, t10CliN: 3, t10DlRounds: 1, t10Bytes: 64 * MiB,
      t9Rounds: 1, t9Requests: 500, t9MiB: 64, t9Runs: 1, t9PolicySecs: 1,
    }
  : {
      t1Rounds: 12, t1PerRound: 10,
      cpuRounds: 3, cpuN: 40, cpuWarm: 5,
      t2Batches: 10, t2N: 50,
      t3Rounds: 9, t3Bytes: 200 * MiB, pausedBytes: 1024 * MiB, pauseMs: 3000,
      t4Rounds: 8, bigMiB: 100,
      t5Rounds: 8, t5FastN: 250, t5CurlN: 25,
      t6Rounds: 10,
      t8Rounds: 12, t8PerRound: 10, t8StreamRounds: 7, t8Bytes: 256 * MiB,
      t10Rounds: 6, t10N: 50, t10NewN: 10, t10CliN: 5, t10DlRounds: 5, t10Bytes: 64 * MiB,
      t9Rounds: 3, t9Requests: 2000, t9MiB: 256, t9Runs: 3, t9PolicySecs: 3,
    }

const PEER = path.join(REPO, 'bench/peer.mjs')
const PROBE = path.join(REPO, 'bench/require-probe.cjs')
const T_START = Date.now()
const log = (...a) => console.error(`[bench +${((Date.now() - T_START) / 1000).toFixed(0)}s]`, ...a)
const rotate = (xs, r) => xs.slice(r % xs.length).concat(xs.slice(0, r % xs.length))

const host = process.env.DOCKER_HOST ?? ''
if (!host.startsWith('unix://')) {
  console.error(`bench: DOCKER_HOST must be a unix:// socket (got ${JSON.stringify(host)}); run it through "npm run bench"`)
  process.exit(2)
}
const HOST_SOCK = host.slice('unix://'.length)
const IMAGE = process.env.BENCH_IMAGE || process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) {
  console.error('bench: set BENCH_IMAGE (or SANDBOXD_TEST_IMAGE) to a busybox image on DOCKER_HOST')
  process.exit(2)
}
const TAG = `sbx-bench-${process.pid}`
const LABELS = { 'sandboxd-bench': '1' }

// ---------------------------------------------------------------------------
// child processes
// ---------------------------------------------------------------------------

const children = new Set()

class Agent {
  static async start(kind, cfg) {
    const child = fork(PEER, ['agent', kind, JSON.stringify(cfg)], {
      execArgv: ['--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    })
    children.add(child)
    const a = new Agent(kind, child)
    await new Promise((resolve, reject) => {
      const onMsg = (m) => {
        if (m?.ready) {
          child.off('message', onMsg)
          resolve()
        } else if (m?.ok === false) reject(new Error(`${kind} agent: ${m.error}`))
      }
      child.on('message', onMsg)
      child.once('exit', (code) => reject(new Error(`${kind} agent exited (${code}) before it was ready`)))
    })
    return a
  }
  constructor(kind, child) {
    this.kind = kind
    this.child = child
    this.seq = 0
    this.pending = new Map()
    child.on('message', (m) => {
      const p = this.pending.get(m?.id)
      if (!p) return
      this.pending.delete(m.id)
      if (m.ok) p.resolve(m.result)
      else p.reject(new Error(`${kind}: ${m.error}`))
    })
    child.on('exit', (code, sig) => {
      children.delete(child)
      for (const p of this.pending.values()) p.reject(new Error(`${kind} agent exited (${code ?? sig})`))
      this.pending.clear()
    })
  }
  call(op, args) {
    const id = ++this.seq
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.child.send({ id, op, args })
    })
  }
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    const exited = new Promise((r) => this.child.once('exit', r))
    try {
      this.child.disconnect()
    } catch {}
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(t)
  }
}

/** Run one measurement in a fresh process (bench/peer.mjs once OP). */
function once(op, args, timeoutMs = 180_000) {
  return new Promise((resolve, reject) => {
    const child = fork(PEER, ['once', op, JSON.stringify(args)], {
      execArgv: ['--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    })
    children.add(child)
    let answer
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('message', (m) => (answer = m))
    child.on('exit', (code, sig) => {
      clearTimeout(t)
      children.delete(child)
      if (answer?.ok) resolve(answer.result)
      else reject(new Error(`once ${op}: ${answer?.error ?? `exited ${code ?? sig} without an answer`}`))
    })
  })
}

/** Run a command (no shell unless it is bash), wall time in ms; stdout discarded unless capture. */
function timeCmd(cmd, args, { capture = false, env = process.env } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(cmd, args, { stdio: ['ignore', capture ? 'pipe' : 'ignore', 'pipe'], env })
    children.add(child)
    let out = ''
    let err = ''
    child.stdout?.on('data', (b) => (out += b))
    child.stderr.on('data', (b) => (err += b))
    child.on('error', reject)
    child.on('close', (code) => {
      children.delete(child)
      resolve({ ms: performance.now() - t0, code, stdout: out, stderr: err.slice(-500) })
    })
  })
}

// ---------------------------------------------------------------------------
// environment
// ---------------------------------------------------------------------------

/** The environment without the snapshot override: `require('sandboxd')` exactly as a user gets it. */
const PACKAGE_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NAPI_RS_NATIVE_LIBRARY_PATH'))

// Another build may replace the addon in the package root while the run goes on (a shared working tree):
// every process of the run loads one private copy of it, taken now, through the loader's
// NAPI_RS_NATIVE_LIBRARY_PATH override (T6 alone loads the package root as a user would).
const ADDON_AT_START = addonFacts()
const ADDON_SNAPSHOT = (() => {
  if (!ADDON_AT_START.path) return null
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sbx-bench-addon-'))
  const dst = path.join(dir, ADDON_AT_START.file)
  copyFileSync(ADDON_AT_START.path, dst)
  return dst
})()
if (ADDON_SNAPSHOT) process.env.NAPI_RS_NATIVE_LIBRARY_PATH = ADDON_SNAPSHOT
const sdk = require(REPO)
const state = { container: null, lsbx: null, vm: null, workspace: null, bigRef: null, bigCreated: false, agents: [], sandbox: null, fwdContainer: null, directId: null }

async function cleanup() {
  if (cleanup.done) return
  cleanup.done = true
  const step = async (what, fn) => {
    try {
      await fn()
    } catch (e) {
      log(`cleanup: ${what}: ${e?.message ?? e}`)
    }
  }
  for (const a of state.agents) await step('agent', () => a.stop())
  for (const c of children) await step('child', () => c.kill('SIGKILL'))
  if (state.container) await step('container', () => state.container.remove({ force: true }))
  if (state.fwdContainer) await step('T10 container', () => state.fwdContainer.remove({ force: true }))
  if (state.directId) await step('T10 host-network container', () => engineRequest(HOST_SOCK, 'DELETE', `/containers/${state.directId}?force=1`))
  if (state.vm) await step('vm', () => state.vm.remove({ force: true }))
  if (state.sandbox) await step('sandbox', () => state.sandbox.remove({ force: true }))
  if (state.lsbx) await step('LocalSandboxd', () => state.lsbx.stop())
  if (state.workspace) await step('workspace', () => rmSync(state.workspace, { recursive: true, force: true }))
  if (ADDON_SNAPSHOT) await step('addon copy', () => rmSync(path.dirname(ADDON_SNAPSHOT), { recursive: true, force: true }))
  if (state.bigRef && state.bigCreated && !KEEP_IMAGES) {
    await step('image', () => engineRequest(HOST_SOCK, 'DELETE', `/images/${encodeURIComponent(state.bigRef)}?force=1`))
  }
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    log(`${sig}: cleaning up`)
    cleanup().finally(() => process.exit(130))
  })
}

function tryExec(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return null
  }
}

function addonFacts() {
  const file = readdirSync(path.join(REPO, 'native')).find((f) => /^sandboxd\..*\.node$/.test(f))
  if (!file) return { file: '(none)', note: 'no addon file in native/' }
  const full = path.join(REPO, 'native', file)
  const st = statSync(full)
  const size = st.size
  const sections = tryExec('readelf', ['-S', '-W', full]) ?? ''
  const fileOut = tryExec('file', ['-L', full]) ?? ''
  const debugInfo = sections.includes('.debug_info') || fileOut.includes('with debug_info')
  return {
    file,
    path: full,
    sizeMiB: size / MiB,
    mtime: st.mtime.toISOString().slice(0, 19).replace('T', ' '),
    debugInfo,
    // the release profile (Cargo.toml) has strip = "symbols": debug info means a dev-profile (unoptimized) build
    profile: debugInfo ? 'dev profile (unoptimized, `napi build` without --release)' : 'release profile',
  }
}

async function facts(hostEngine, vmEngine) {
  const v = await hostEngine.version()
  const info = (await engineRequest(HOST_SOCK, 'GET', '/info')).json ?? {}
  const vmv = vmEngine ? await vmEngine.version() : null
  const cpus = os.cpus()
  const running = (await engineRequest(HOST_SOCK, 'GET', '/containers/json')).json ?? []
  return {
    loadStart: os.loadavg(),
    otherContainers: running.filter((c) => c.Labels?.['sandboxd-bench'] !== '1').length,
    date: new Date().toISOString(),
    cores: cpus.length,
    cpuModel: cpus[0]?.model ?? '?',
    memGiB: os.totalmem() / 1024 ** 3,
    kernel: os.release(),
    distro: (tryExec('sh', ['-c', '. /etc/os-release && echo "$PRETTY_NAME"']) ?? '?'),
    node: process.version,
    engine: `${v.version} (API ${v.apiVersion}, negotiated ${v.negotiatedApiVersion}), storage ${info.Driver ?? '?'}, cgroup v${info.CgroupVersion ?? '?'}`,
    vmEngine: vmv ? `${vmv.version} (LocalSandboxd dockerd backend, storage vfs)` : '-',
    dockerCli: tryExec('docker', ['version', '--format', '{{.Client.Version}}']) ?? '?',
    curl: (tryExec('curl', ['--version']) ?? '?').split('\n')[0].split(' ').slice(0, 2).join(' '),
    dockerode: require('dockerode/package.json').version,
    dockerModem: require('docker-modem/package.json').version,
    addon: ADDON_AT_START,
    image: IMAGE,
  }
}

async function imageSize(sock, ref) {
  const r = await engineRequest(sock, 'GET', `/images/${encodeURIComponent(ref)}/json`)
  return r.status === 200 ? r.json.Size : null
}

async function removeImage(sock, ref) {
  const r = await engineRequest(sock, 'DELETE', `/images/${encodeURIComponent(ref)}?force=1`)
  if (r.status !== 200 && r.status !== 404) throw new Error(`removing ${ref}: ${r.status} ${r.text}`)
}

/** A ~N MiB image on the host engine: a container writes N MiB of urandom, committed via POST /commit. */
async function ensureBigImage(hostEngine, mib) {
  const ref = `sbx-bench/big:${mib}m`
  state.bigRef = ref
  if (await hostEngine.images.exists(ref)) return ref
  log(`building ${ref} (${mib} MiB of urandom on ${IMAGE})`)
  state.bigCreated = true
  const c = await hostEngine.containers.run({
    image: IMAGE,
    name: `${TAG}-build`,
    labels: LABELS,
    cmd: ['sh', '-c', `head -c ${mib * MiB} /dev/urandom > /blob`],
  })
  try {
    const code = await c.wait({ timeoutMs: 120_000 })
    if (code !== 0) throw new Error(`building the big image: exit ${code}`)
    const r = await engineRequest(
      HOST_SOCK,
      'POST',
      `/commit?container=${c.id}&repo=sbx-bench/big&tag=${mib}m`,
      { Cmd: ['sh'], Labels: LABELS },
    )
    if (r.status !== 201) throw new Error(`commit: ${r.status} ${r.text}`)
  } finally {
    await c.remove({ force: true })
  }
  return ref
}

// ---------------------------------------------------------------------------
// measurements
// ---------------------------------------------------------------------------

const R = {}

async function runT1(agents) {
  const kinds = ['sdk', 'dockerode', 'cli']
  // 'idle': the control, a 50 ms sleep in the SDK's agent instead of a call. 'busy': the same sleep while the
  // dockerode agent (another process) runs its execs, so the daemon loads the machine as during a call but this
  // process makes none: its stalls are what the machine does to an event loop during an exec.
  const slots = [...kinds, 'idle', 'busy']
  const acc = Object.fromEntries(slots.map((k) => [k, { lat: [], delay: [], mainCpu: [], mainWait: [], failures: 0, errors: [] }]))
  for (let r = 0; r < CFG.t1Rounds; r++) {
    for (const k of rotate(slots, r)) {
      const res = k === 'idle'
        ? await agents.sdk.call('execLatency', { n: CFG.t1PerRound, idle: true })
        : k === 'busy'
          ? (await Promise.all([
              agents.sdk.call('execLatency', { n: CFG.t1PerRound, idle: true }),
              agents.dockerode.call('execLatency', { n: CFG.t1PerRound }),
            ]))[0]
          : await agents[k].call('execLatency', { n: CFG.t1PerRound })
      for (const f of ['lat', 'delay', 'mainCpu', 'mainWait', 'errors']) acc[k][f].push(...res[f])
      acc[k].failures += res.failures
    }
    log(`T1 round ${r + 1}/${CFG.t1Rounds}: p50 so far ` + kinds.map((k) => `${k} ${median(acc[k].lat).toFixed(1)}ms`).join(', ') + `; loop stall p99 sdk ${quantile(acc.sdk.delay, 0.99).toFixed(1)}ms, control ${quantile(acc.idle.delay, 0.99).toFixed(1)}ms, loaded control ${quantile(acc.busy.delay, 0.99).toFixed(1)}ms`)
  }
  const cpu = Object.fromEntries(kinds.map((k) => [k, []]))
  for (let r = 0; r < CFG.cpuRounds; r++) {
    for (const k of rotate(kinds, r)) {
      const res = await once('cpu', { kind: k, cfg: agentCfg, n: CFG.cpuN, warm: CFG.cpuWarm })
      if (res.failures) acc[k].failures += res.failures
      cpu[k].push(res)
    }
    log(`T1 cpu round ${r + 1}/${CFG.cpuRounds}: ` + kinds.map((k) => `${k} ${cpu[k].at(-1).cpuMsPerExec.toFixed(2)}ms`).join(', '))
  }
  R.T1 = { acc, cpu }
}

async function runT2(agents) {
  const kinds = ['sdk', 'dockerode']
  const warm = {}
  for (const k of kinds) warm[k] = await agents[k].call('execBatch', { n: CFG.t2N })
  const batches = Object.fromEntries(kinds.map((k) => [k, []]))
  for (let b = 0; b < CFG.t2Batches; b++) {
    for (const k of rotate(kinds, b)) batches[k].push(await agents[k].call('execBatch', { n: CFG.t2N }))
    log(`T2 batch ${b + 1}/${CFG.t2Batches}: ` + kinds.map((k) => `${k} ${batches[k].at(-1).wall.toFixed(0)}ms`).join(', '))
  }
  R.T2 = { warm, batches }
}

/** bench/floor/stream_floor.rs, built by bench/run.sh (profile bench-helper). */
const FLOOR_BIN = path.join(REPO, 'target/bench-helper/examples/stream-floor')

async function runT3() {
  if (!existsSync(FLOOR_BIN)) throw new Error(`${FLOOR_BIN} is missing: bench/run.sh builds it (cargo build --profile bench-helper --example stream-floor --no-default-features)`)
  const kinds = ['sdk', 'sdk-read', 'dockerode', 'cli', 'floor']
  const runs = Object.fromEntries(kinds.map((k) => [k, []]))
  const bytes = CFG.t3Bytes
  for (let r = 0; r < CFG.t3Rounds; r++) {
    for (const k of rotate(kinds, r)) {
      if (k === 'floor') {
        const res = await timeCmd(FLOOR_BIN, [HOST_SOCK, state.container.id, JSON.stringify(streamCmd(bytes))], { capture: true })
        const out = JSON.parse(res.stdout.trim().split('\n').at(-1) || '{}')
        runs.floor.push({ mibps: out.mibps, secs: out.secs, cpuSecs: out.cpuSecs, ok: res.code === 0 && out.bytes === bytes && out.exitCode === 0, stderr: res.stderr })
      } else if (k === 'cli') {
        const cid = state.container.id
        const res = await timeCmd('docker', [...dockerCli(HOST_SOCK), 'exec', cid, ...streamCmd(bytes)])
        runs.cli.push({ mibps: bytes / MiB / (res.ms / 1000), secs: res.ms / 1000, ok: res.code === 0, stderr: res.stderr })
      } else {
        runs[k].push(await once('stream', { kind: k, cfg: agentCfg, bytes }))
      }
    }
    log(`T3 round ${r + 1}/${CFG.t3Rounds}: ` + kinds.map((k) => `${k} ${runs[k].at(-1).mibps.toFixed(0)} MiB/s`).join(', '))
  }
  const paused = {}
  for (const k of ['sdk', 'dockerode']) {
    paused[k] = await once('paused', { kind: k, cfg: agentCfg, bytes: CFG.pausedBytes, pauseMs: CFG.pauseMs })
    log(`T3 paused consumer ${k}: RSS +${(paused[k].growth / MiB).toFixed(1)} MiB over ${CFG.pauseMs} ms`)
  }
  R.T3 = { runs, paused, bytes }
}

/** bench/floor/sbx_floor.rs, built by bench/run.sh (profile bench-helper). */
const SBX_FLOOR_BIN = path.join(REPO, 'target/bench-helper/examples/sbx-floor')

/**
 * T8's sandbox: an sbx sandbox on this run's LocalSandboxd, and the same sandbox's container reached directly.
 * LocalSandboxd runs an sbx sandbox as the template's container in the sandbox's own private dockerd, whose
 * socket is `<root>/sbx/<name>/docker.sock` (src/core/local/sbx.rs). Both routes therefore exec in one container
 * on one engine, and the only difference measured is the route: the sbx API's attach relay in LocalSandboxd and
 * the SDK's sbx client, against the SDK's engine client on the engine's socket.
 */
async function setupT8() {
  const t0 = Date.now()
  const sandboxes = await sdk.Sandboxes.connect({ socketPath: state.lsbx.socketPath, backend: 'sbx' })
  const name = `bench${process.pid}`
  state.sandbox = await sandboxes.create({ name, agent: 'shell', workspace: state.workspace, template: IMAGE })
  const engineSock = path.join(state.lsbx.root, 'sbx', name, 'docker.sock')
  if (!existsSync(engineSock)) throw new Error(`T8: the sandbox engine's socket is not at ${engineSock} (has LocalSandboxd's layout changed?)`)
  const engine = await sdk.DockerEngine.connect({ socketPath: engineSock })
  const [c] = await engine.containers.list({ labels: [`dev.sandboxd.local-sbx=${name}`] })
  if (!c) throw new Error(`T8: no container labelled dev.sandboxd.local-sbx=${name} in the sandbox engine`)
  log(`T8: sbx sandbox ${name} (container ${c.id.slice(0, 12)} in its engine ${engineSock}) (${Date.now() - t0} ms)`)
  return {
    sbxCfg: { sbxApiSock: state.lsbx.socketPath, sandbox: name },
    ctrCfg: { hostSock: engineSock, container: c.id, sbxSock: null },
  }
}

async function runT8({ sbxCfg, ctrCfg }) {
  for (const bin of [FLOOR_BIN, SBX_FLOOR_BIN]) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: bench/run.sh builds it (cargo build --profile bench-helper --example stream-floor --example sbx-floor --no-default-features)`)
  }
  // exec latency: one warm agent per route ('sbx': Sandbox.sh, 'ctr': Container.sh), the floor in rounds
  const agents = { sbx: await Agent.start('sbx', sbxCfg), ctr: await Agent.start('sdk', ctrCfg) }
  state.agents.push(agents.sbx, agents.ctr)
  const kinds = ['sbx', 'ctr', 'floor']
  const lat = Object.fromEntries(kinds.map((k) => [k, { lat: [], failures: 0, errors: [] }]))
  const n = CFG.t8PerRound
  for (let r = 0; r < CFG.t8Rounds; r++) {
    for (const k of rotate(kinds, r)) {
      if (k === 'floor') {
        const args = ['exec', sbxCfg.sbxApiSock, sbxCfg.sandbox, String(n), JSON.stringify(['sh', '-c', EXEC_SCRIPT]), JSON.stringify(EXEC_ENV), EXEC_EXPECT]
        const res = await timeCmd(SBX_FLOOR_BIN, args, { capture: true })
        if (res.code !== 0) throw new Error(`sbx-floor exec exited ${res.code}: ${res.stderr}`)
        const out = JSON.parse(res.stdout.trim().split('\n').at(-1))
        lat.floor.lat.push(...out.lat)
        lat.floor.failures += out.failures
      } else {
        const res = await agents[k].call('execLatency', { n })
        lat[k].lat.push(...res.lat)
        lat[k].failures += res.failures
        lat[k].errors.push(...res.errors)
      }
    }
    log(`T8 round ${r + 1}/${CFG.t8Rounds}: exec p50 so far ` + kinds.map((k) => `${k} ${median(lat[k].lat).toFixed(1)}ms`).join(', '))
  }
  for (const a of [agents.sbx, agents.ctr]) await a.stop()
  // streaming: each SDK stream in a fresh, warm process (bench/peer.mjs once stream), the floors as processes
  const skinds = ['sbx', 'sbx-read', 'ctr', 'ctr-read', 'floor-sbx', 'floor-ctr']
  const runs = Object.fromEntries(skinds.map((k) => [k, []]))
  const bytes = CFG.t8Bytes
  const cmd = JSON.stringify(streamCmd(bytes))
  for (let r = 0; r < CFG.t8StreamRounds; r++) {
    for (const k of rotate(skinds, r)) {
      if (k.startsWith('floor-')) {
        const res = k === 'floor-sbx'
          ? await timeCmd(SBX_FLOOR_BIN, ['stream', sbxCfg.sbxApiSock, sbxCfg.sandbox, cmd], { capture: true })
          : await timeCmd(FLOOR_BIN, [ctrCfg.hostSock, ctrCfg.container, cmd], { capture: true })
        const out = JSON.parse(res.stdout.trim().split('\n').at(-1) || '{}')
        runs[k].push({ mibps: out.mibps, secs: out.secs, cpuSecs: out.cpuSecs, ok: res.code === 0 && out.bytes === bytes && out.exitCode === 0, stderr: res.stderr })
      } else if (k.startsWith('sbx')) {
        runs[k].push(await once('stream', { kind: k, cfg: sbxCfg, bytes }))
      } else {
        runs[k].push(await once('stream', { kind: k === 'ctr' ? 'sdk' : 'sdk-read', cfg: ctrCfg, bytes }))
      }
    }
    log(`T8 stream round ${r + 1}/${CFG.t8StreamRounds}: ` + skinds.map((k) => `${k} ${runs[k].at(-1).mibps.toFixed(0)} MiB/s`).join(', '))
  }
  R.T8 = { lat, runs, bytes }
}

/** A free TCP port on 127.0.0.1 (bound and released: the host-network container listens on it next). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/**
 * T10's servers: a container of the sandbox-agent test image (no published port, no network but its loopback)
 * running sandbox-agent (started by `SandboxAgent.ensureServer()`) and busybox httpd serving a `t10Bytes` file of
 * random bytes; and, for the no-tunnel floor, the same two servers in a host-network container on free loopback
 * ports (the same binaries, reached by Node directly).
 */
async function setupT10(hostEngine) {
  const image = process.env.SANDBOXD_AGENT_IMAGE
  if (!image) throw new Error('T10: SANDBOXD_AGENT_IMAGE is not set (bench/run.sh builds the sandbox-agent test image)')
  const t0 = Date.now()
  const mibs = CFG.t10Bytes / MiB
  const agentPort = 2468
  const httpPort = 8080
  const blob = `mkdir -p /srv && dd if=/dev/urandom of=/srv/blob bs=1048576 count=${mibs} status=none`
  const box = await hostEngine.containers.run({ image, name: `${TAG}-fwd`, labels: LABELS, cmd: ['sleep', '86400'] })
  state.fwdContainer = box
  const prep = await box.sh(`${blob} && echo ok > /srv/ok && busybox httpd -p 127.0.0.1:${httpPort} -h /srv && for i in $(seq 50); do wget -qO /dev/null http://127.0.0.1:${httpPort}/ok && exit 0; sleep 0.1; done; exit 1`)
  if (prep.exitCode !== 0) throw new Error(`T10: preparing the container: exit ${prep.exitCode}: ${prep.stderrText()}`)
  await new sdk.SandboxAgent(box, { port: agentPort }).ensureServer()
  const [directAgent, directHttp] = [await freePort(), await freePort()]
  const script = `${blob} && busybox httpd -p 127.0.0.1:${directHttp} -h /srv && exec sandbox-agent server --no-telemetry --no-token -H 127.0.0.1 -p ${directAgent}`
  const created = await engineRequest(HOST_SOCK, 'POST', `/containers/create?name=${TAG}-direct`, { Image: image, Cmd: ['sh', '-c', script], Labels: LABELS, HostConfig: { NetworkMode: 'host' } })
  if (created.status !== 201) throw new Error(`T10: creating the host-network container: ${created.status} ${created.text}`)
  state.directId = created.json.Id
  const started = await engineRequest(HOST_SOCK, 'POST', `/containers/${state.directId}/start`)
  if (started.status !== 204) throw new Error(`T10: starting the host-network container: ${started.status} ${started.text}`)
  const cfg = {
    hostSock: HOST_SOCK,
    container: box.id,
    agentPort,
    httpPort,
    directAgentUrl: `http://127.0.0.1:${directAgent}`,
    directHttpUrl: `http://127.0.0.1:${directHttp}`,
  }
  for (let i = 0; ; i++) {
    const up = await Promise.all([`${cfg.directAgentUrl}/v1/health`, `${cfg.directHttpUrl}/blob`].map((u) => fetch(u, { method: 'HEAD' }).then((r) => r.status < 500, () => false)))
    if (up.every(Boolean)) break
    if (i > 300) throw new Error('T10: the host-network servers did not come up in 30 s')
    await new Promise((r) => setTimeout(r, 100))
  }
  log(`T10: container ${box.id.slice(0, 12)} (sandbox-agent :${agentPort}, httpd :${httpPort}, ${mibs} MiB blob); host-network floor :${directAgent} / :${directHttp} (${Date.now() - t0} ms)`)
  return cfg
}

async function runT10(cfg) {
  if (!existsSync(FLOOR_BIN)) throw new Error(`${FLOOR_BIN} is missing: bench/run.sh builds it`)
  const a = await Agent.start('fwd', cfg)
  state.agents.push(a)
  const digests = await a.call('blobDigests')
  // requests: one warm client process; each route warmed (its tunnel or connection open) before the rounds
  const kinds = ['fwd', 'agent', 'direct', 'fwd-http', 'direct-http', 'fwd-new', 'cli']
  for (const k of kinds) await a.call('httpLatency', { n: 2, via: k })
  const lat = Object.fromEntries(kinds.map((k) => [k, { lat: [], failures: 0, errors: [] }]))
  for (let r = 0; r < CFG.t10Rounds; r++) {
    for (const k of rotate(kinds, r)) {
      const n = k === 'fwd-new' ? CFG.t10NewN : k === 'cli' ? CFG.t10CliN : CFG.t10N
      const res = await a.call('httpLatency', { n, via: k })
      lat[k].lat.push(...res.lat)
      lat[k].failures += res.failures
      lat[k].errors.push(...res.errors)
    }
    log(`T10 round ${r + 1}/${CFG.t10Rounds}: request p50 so far ` + kinds.map((k) => `${k} ${median(lat[k].lat).toFixed(2)}ms`).join(', '))
  }
  // downloads of the same file: through the forward, on loopback, and the exec paths beside them
  const bytes = CFG.t10Bytes
  const dkinds = ['fwd', 'direct', 'exec', 'readFile', 'floor', 'cli']
  const runs = Object.fromEntries(dkinds.map((k) => [k, []]))
  for (let r = 0; r < CFG.t10DlRounds; r++) {
    for (const k of rotate(dkinds, r)) {
      if (k === 'floor') {
        const res = await timeCmd(FLOOR_BIN, [HOST_SOCK, cfg.container, JSON.stringify(['cat', '/srv/blob'])], { capture: true })
        const out = JSON.parse(res.stdout.trim().split('\n').at(-1) || '{}')
        runs.floor.push({ mibps: out.mibps, secs: out.secs, cpuSecs: out.cpuSecs, ok: res.code === 0 && out.bytes === bytes && out.exitCode === 0, stderr: res.stderr })
      } else if (k === 'cli') {
        const res = await timeCmd('docker', [...dockerCli(HOST_SOCK), 'exec', cfg.container, 'cat', '/srv/blob'])
        runs.cli.push({ mibps: bytes / MiB / (res.ms / 1000), secs: res.ms / 1000, ok: res.code === 0, stderr: res.stderr })
      } else {
        runs[k].push(await a.call('download', { via: k, bytes }))
      }
    }
    log(`T10 download round ${r + 1}/${CFG.t10DlRounds}: ` + dkinds.map((k) => `${k} ${runs[k].at(-1).mibps.toFixed(0)} MiB/s`).join(', '))
  }
  await a.stop()
  R.T10 = { lat, runs, bytes, digests }
}

/** bench/floor/proxy_floor.rs and policy_floor.rs, built by bench/run.sh (profile bench-helper). */
const PROXY_FLOOR_BIN = path.join(REPO, 'target/bench-helper/examples/proxy-floor')
const POLICY_FLOOR_BIN = path.join(REPO, 'target/bench-helper/examples/policy-floor')

/**
 * T9: the filtering proxy (src/core/local/proxy) in a network namespace proxy-floor creates (root), beside the
 * same traffic sent directly: keep-alive request latency and a CONNECT tunnel download; then policy-floor's
 * decisions per second with 1,000 rules. Each round is a fresh proxy-floor process.
 */
async function runT9() {
  for (const bin of [PROXY_FLOOR_BIN, POLICY_FLOOR_BIN]) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: bench/run.sh builds it (cargo build --profile bench-helper --example proxy-floor --example policy-floor --no-default-features)`)
  }
  const rounds = []
  for (let r = 0; r < CFG.t9Rounds; r++) {
    const res = await timeCmd(PROXY_FLOOR_BIN, [String(CFG.t9Requests), String(CFG.t9MiB), String(CFG.t9Runs)], { capture: true })
    if (res.code !== 0) throw new Error(`proxy-floor exited ${res.code}: ${res.stderr}`)
    const out = JSON.parse(res.stdout.trim().split('\n').at(-1))
    rounds.push(out)
    log(`T9 round ${r + 1}/${CFG.t9Rounds}: p50 ${out.latency.directP50Us} µs direct, ${out.latency.proxyP50Us} µs proxied; tunnel ${out.tunnel.ratio}× direct (${out.tunnel.tunnelMibps.join('/')} vs ${out.tunnel.directMibps.join('/')} MiB/s)`)
  }
  const res = await timeCmd(POLICY_FLOOR_BIN, [String(CFG.t9PolicySecs)], { capture: true })
  if (res.code !== 0) throw new Error(`policy-floor exited ${res.code}: ${res.stderr}`)
  const policy = JSON.parse(res.stdout.trim().split('\n').at(-1))
  log(`T9 policy: ${policy.perSec} decisions/s with ${policy.rules} rules`)
  R.T9 = { rounds, policy }
}

async function runT4(vmSock) {
  const images = [
    { label: 'busybox', ref: IMAGE },
    { label: `${CFG.bigMiB} MiB`, ref: state.bigRef },
  ]
  for (const img of images) {
    img.size = await imageSize(HOST_SOCK, img.ref)
    await removeImage(vmSock, img.ref)
  }
  const kinds = ['sdk', 'cli']
  const runs = images.map(() => ({ sdk: [], cli: [] }))
  for (let r = 0; r < CFG.t4Rounds; r++) {
    for (const [i, img] of images.entries()) {
      for (const k of rotate(kinds, r + i)) {
        if (k === 'sdk') {
          const res = await once('copy', { hostSock: HOST_SOCK, vmSock, ref: img.ref }, 600_000)
          if (res.report.skipped) throw new Error(`copyTo skipped ${img.ref}: the VM still had it`)
          runs[i].sdk.push({ ...res, ok: true })
        } else {
          const sh = `docker -H unix://${HOST_SOCK} save ${img.ref} | docker -H unix://${vmSock} load`
          const res = await timeCmd('bash', ['-o', 'pipefail', '-c', sh])
          const there = (await imageSize(vmSock, img.ref)) !== null
          runs[i].cli.push({ wallMs: res.ms, ok: res.code === 0 && there, stderr: res.stderr })
        }
        await removeImage(vmSock, img.ref)
      }
      log(`T4 round ${r + 1}/${CFG.t4Rounds} ${img.label}: sdk ${runs[i].sdk.at(-1).wallMs.toFixed(0)}ms, cli ${runs[i].cli.at(-1).wallMs.toFixed(0)}ms`)
    }
  }
  R.T4 = { images, runs }
}

async function runT5(agents) {
  const sets = { engine: ['sdk', 'native', 'dockerode', 'cli'], sandboxd: ['sdk', 'native', 'cli'] }
  const acc = { engine: {}, sandboxd: {} }
  for (const [what, kinds] of Object.entries(sets)) for (const k of kinds) acc[what][k] = { lat: [], failures: 0 }
  const paired = { engine: { sdk: [], native: [], failures: 0 }, sandboxd: { sdk: [], native: [], failures: 0 } }
  for (let r = 0; r < CFG.t5Rounds; r++) {
    for (const what of Object.keys(sets)) {
      const res = await agents.sdk.call('tsLayer', { n: CFG.t5FastN, what })
      paired[what].sdk.push(...res.sdk)
      paired[what].native.push(...res.native)
      paired[what].failures += res.failures
    }
    for (const [what, kinds] of Object.entries(sets)) {
      for (const k of rotate(kinds, r)) {
        const n = k === 'cli' ? CFG.t5CurlN : CFG.t5FastN
        const res = await agents[k].call('callLatency', { n, what })
        acc[what][k].lat.push(...res.lat)
        acc[what][k].failures += res.failures
      }
    }
    log(`T5 round ${r + 1}/${CFG.t5Rounds}: ping p50 ` + sets.engine.map((k) => `${k} ${(median(acc.engine[k].lat) * 1000).toFixed(0)}µs`).join(', ') + `; paired in one process: sdk ${(median(paired.engine.sdk) * 1000).toFixed(0)}µs, native ${(median(paired.engine.native) * 1000).toFixed(0)}µs`)
  }
  acc.paired = paired
  R.T5 = acc
}

async function runT6() {
  const whats = ['none', 'sdk', 'native', 'dockerode']
  const acc = Object.fromEntries(whats.map((w) => [w, []]))
  for (let r = 0; r < CFG.t6Rounds; r++) {
    for (const w of rotate(whats, r)) {
      const res = await timeCmd(process.execPath, [PROBE, w], { capture: true, env: PACKAGE_ENV })
      if (res.code !== 0) throw new Error(`require probe ${w}: ${res.stderr}`)
      acc[w].push({ ...JSON.parse(res.stdout), processMs: res.ms })
    }
  }
  log(`T6: require sdk p50 ${median(acc.sdk.map((x) => x.ms)).toFixed(1)}ms, +${(median(acc.sdk.map((x) => x.rssDelta)) / 1e6).toFixed(1)} MB`)
  R.T6 = acc
}

/** Engine connections opened per ping and per exec (strace, when installed): explains T1/T2/T5. */
async function runConns() {
  if (!tryExec('sh', ['-c', 'command -v strace'])) {
    log('diagnostics: strace not installed, skipping the connections-per-call count')
    return
  }
  const out = {}
  const n = 20
  for (const kind of ['sdk', 'dockerode']) {
    const file = path.join(os.tmpdir(), `sbx-bench-strace-${process.pid}-${kind}`)
    const args = JSON.stringify({ kind, cfg: agentCfg, n, batch: CFG.t2N })
    const res = await timeCmd('strace', ['-f', '-qq', '-e', 'trace=connect', '-o', file, process.execPath, PEER, 'conns', args])
    try {
      if (res.code !== 0) throw new Error(`strace probe ${kind} exited ${res.code}: ${res.stderr}`)
      const lines = readFileSync(file, 'utf8').split('\n')
      const at = (m) => lines.findIndex((l) => l.includes(`sbx-bench-marker-${m}"`))
      const count = (a, b) => lines.slice(at(a) + 1, at(b)).filter((l) => l.includes(`sun_path="${HOST_SOCK}"`)).length
      out[kind] = {
        ping: count('ping-start', 'ping-end') / n,
        exec: count('exec-start', 'exec-end') / n,
        batch: count('batch-start', 'batch-end') / CFG.t2N,
      }
    } finally {
      rmSync(file, { force: true })
    }
  }
  log(`diagnostics: engine connections per ping / exec / exec in a batch: ` + Object.entries(out).map(([k, v]) => `${k} ${v.ping}/${v.exec}/${v.batch}`).join(", "))
  R.conns = out
}

// ---------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------

const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : '–')
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '–')
const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : '–')
const us = (ms) => (Number.isFinite(ms) ? (ms * 1000).toFixed(0) : '–')
const mib = (b) => (Number.isFinite(b) ? (b / MiB).toFixed(1) : '–')
const x = (r) => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '–')
const verdict = (ok) => (ok === null ? 'n/a' : ok ? '**PASS**' : '**FAIL**')
const table = (head, rows) =>
  [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n')
const PEER_NAME = {
  sdk: 'sandboxd (this SDK)',
  'sdk-read': 'sandboxd (this SDK)',
  floor: 'raw Rust floor',
  dockerode: 'dockerode',
  cli: 'docker CLI',
}

const checks = [] // { id, what, measured, target, ok }
function check(id, what, value, cmp, limit, shown, unit = '×') {
  const ok = Number.isFinite(value) ? (cmp === '<=' ? value <= limit : value >= limit) : false
  checks.push({ id, what, measured: shown ?? x(value), target: `${cmp === '<=' ? '≤' : '≥'} ${limit}${unit}`, ok })
  return ok
}

function reportT1() {
  const { acc, cpu } = R.T1
  const L = Object.fromEntries(Object.entries(acc).map(([k, a]) => [k, { p50: median(a.lat), p90: p90(a.lat), dp50: median(a.delay), dp99: quantile(a.delay, 0.99), dmax: max(a.delay), mcpu: median(a.mainCpu), mwait: median(a.mainWait) }]))
  const C = Object.fromEntries(Object.entries(cpu).map(([k, rs]) => [k, { cpu: median(rs.map((r) => r.cpuMsPerExec)), own: median(rs.map((r) => r.ownMsPerExec)), child: median(rs.map((r) => r.childMsPerExec)) }]))
  const control = (k) => k === 'idle' || k === 'busy'
  const rows = ['sdk', 'dockerode', 'cli', 'idle', 'busy'].map((k) => [
    k === 'idle' ? '_control: no call (50 ms sleep)_'
      : k === 'busy' ? '_loaded control: the same sleep while dockerode\'s process runs its execs_'
        : PEER_NAME[k] + (k === 'cli' ? ' (`spawnSync`)' : ''),
    acc[k].lat.length,
    control(k) ? '–' : f1(L[k].p50),
    control(k) ? '–' : f1(L[k].p90),
    `${f2(L[k].dp50)} / ${f2(L[k].dp99)} / ${f1(L[k].dmax)}`,
    `${f2(L[k].mcpu)} / ${f2(L[k].mwait)}`,
    control(k) ? '–' : k === 'cli' ? `${f2(C[k].own)} + ${f2(C[k].child)} in the CLI` : f2(C[k].cpu),
    control(k) ? '–' : acc[k].failures,
  ])
  const ratioDockerode = L.sdk.p50 / L.dockerode.p50
  const speedupCli = L.cli.p50 / L.sdk.p50
  check('T1', 'exec p50 vs dockerode (SDK / dockerode)', ratioDockerode, '<=', 1.1)
  check('T1', 'exec p50 vs `spawnSync` docker CLI (CLI / SDK)', speedupCli, '>=', 1.35)
  check('T1', 'event-loop delay caused by an exec (p99 of per-call max)', L.sdk.dp99, '<=', 2, `${f2(L.sdk.dp99)} ms (control ${f2(L.idle.dp99)}, loaded control ${f2(L.busy.dp99)})`, ' ms')
  check('T1', 'client CPU per exec (own process, all threads)', C.sdk.cpu, '<=', 1, `${f2(C.sdk.cpu)} ms`, ' ms')
  check('T1', 'exec failures', acc.sdk.failures, '<=', 0, String(acc.sdk.failures), '')
  return [
    `### T1 — exec latency: \`sh -c 'echo hi'\` + 1 env var, warm client`,
    '',
    `${CFG.t1Rounds} rounds × ${CFG.t1PerRound} sequential execs per peer, peer order rotated each round, one long-lived process per peer. Event-loop delay per call: \`monitorEventLoopDelay({ resolution: 1 })\` reset before the call (plus one tick), read 3 ms after it returns so a blocked loop is recorded; the stall is the longest tick interval minus the 1 ms resolution. The control row runs the same loop around a 50 ms sleep instead of a call: its stalls are this machine's scheduling noise (2 cores shared with dockerd, containerd and runc). The loaded control runs that sleep while dockerode's process (another process) runs the same execs: the daemon then loads the machine as during a call, but this process makes none, so its stalls are the machine's and not a client's. It is shown for context; the check is on the SDK's own number. Main-thread CPU / run-queue wait: \`/proc/self/task/<pid>/schedstat\` deltas of the JS thread over the call (the CPU part is what can block the loop; the wait part is time the thread was runnable but had no core). Client CPU: \`process.cpuUsage()\` (all threads) over ${CFG.cpuN} execs in a fresh process doing nothing else (${CFG.cpuRounds} round(s), median); for the CLI, its own CPU plus the reaped \`docker\` children's.`,
    '',
    table(['peer', 'n', 'p50 ms', 'p90 ms', 'loop stall per call p50 / p99 / max (ms)', 'JS-thread CPU / run-queue wait per call, p50 (ms)', 'client CPU per exec, all threads (ms)', 'failures'], rows),
    '',
    table(['target', 'measured', 'required', 'result'], [
      ['p50 SDK / dockerode', x(ratioDockerode), '≤ 1.10×', verdict(ratioDockerode <= 1.1)],
      ['p50 `spawnSync` CLI / SDK', x(speedupCli), '≥ 1.35×', verdict(speedupCli >= 1.35)],
      ['event-loop delay per call (p99)', `${f2(L.sdk.dp99)} ms (control, no call: ${f2(L.idle.dp99)} ms; loaded control, no call in this process while another runs execs: ${f2(L.busy.dp99)} ms)`, '≤ 2 ms', verdict(L.sdk.dp99 <= 2)],
      ['client CPU per exec', `${f2(C.sdk.cpu)} ms`, '≤ 1 ms', verdict(C.sdk.cpu <= 1)],
    ]),
  ].join('\n')
}

function reportT2() {
  const { warm, batches } = R.T2
  const S = {}
  for (const k of ['sdk', 'dockerode']) {
    const bs = batches[k]
    const walls = bs.map((b) => b.wall)
    S[k] = {
      p50: median(walls),
      p90: p90(walls),
      failures: bs.reduce((a, b) => a + b.failures, 0) + warm[k].failures,
      errors: [...warm[k].errors, ...bs.flatMap((b) => b.errors)],
      fd0: warm[k].settled.fds,
      fds: bs.map((b) => b.settled.fds),
      sock0: warm[k].settled.sockets,
      socks: bs.map((b) => b.settled.sockets),
      fdGrowth: bs.at(-1).settled.fds - warm[k].settled.fds,
      sockGrowth: bs.at(-1).settled.sockets - warm[k].settled.sockets,
      maxFdGrowth: max(bs.map((b) => b.settled.fds)) - warm[k].settled.fds,
      rss0: warm[k].rss,
      rss: bs.at(-1).rss,
    }
  }
  const n = CFG.t2N
  const rows = ['sdk', 'dockerode'].map((k) => [
    PEER_NAME[k],
    batches[k].length,
    f0(S[k].p50),
    f0(S[k].p90),
    f1((n / S[k].p50) * 1000),
    S[k].failures,
    `${S[k].fd0} → ${S[k].fds.join(',')}`,
    `${S[k].sock0} → ${S[k].socks.join(',')}`,
    `${mib(S[k].rss0)} → ${mib(S[k].rss)}`,
  ])
  const ratio = S.sdk.p50 / S.dockerode.p50
  check('T2', `${n} execs in flight: wall SDK / dockerode`, ratio, '<=', 1.05)
  check('T2', `${n} execs in flight: failures (${batches.sdk.length + 1} batches)`, S.sdk.failures, '<=', 0, String(S.sdk.failures), '')
  check('T2', `fd / socket growth over ${batches.sdk.length} batches`, Math.max(S.sdk.maxFdGrowth, S.sdk.sockGrowth), '<=', 0, `${S.sdk.maxFdGrowth} fds, ${S.sdk.sockGrowth} sockets`, '')
  const errs = [...new Set([...S.sdk.errors, ...S.dockerode.errors])].slice(0, 4)
  return [
    `### T2 — ${n} execs in flight`,
    '',
    `One warm-up batch, then ${batches.sdk.length} measured batches of ${n} concurrent execs per peer, alternating (order rotated). fds/sockets are \`/proc/self/fd\` of the peer's own process, 250 ms after each batch; growth is measured against the warm-up batch.`,
    '',
    table(['peer', 'batches', 'wall p50 ms', 'wall p90 ms', 'execs/s', 'failures', 'fds after warm-up → after each batch', 'sockets', 'RSS MiB warm-up → last'], rows),
    '',
    table(['target', 'measured', 'required', 'result'], [
      ['wall SDK / dockerode', `${x(ratio)} (per batch: ${batches.sdk.map((b, i) => x(b.wall / batches.dockerode[i].wall)).join(', ')})`, '≤ 1.05×', verdict(ratio <= 1.05)],
      ['failures', String(S.sdk.failures), '0', verdict(S.sdk.failures === 0)],
      ['fd / socket growth over the batches', `${S.sdk.maxFdGrowth} fds / ${S.sdk.sockGrowth} sockets`, '0', verdict(S.sdk.maxFdGrowth <= 0 && S.sdk.sockGrowth <= 0)],
    ]),
    ...(errs.length ? ['', 'Errors seen: ' + errs.map((e) => `\`${e.replace(/\n/g, ' ')}\``).join('; ')] : []),
  ].join('\n')
}

function reportT3() {
  const { runs, paused, bytes } = R.T3
  const S = {}
  const inJs = (k) => k !== 'cli' && k !== 'floor'
  const kinds = ['sdk', 'sdk-read', 'dockerode', 'cli', 'floor']
  for (const k of kinds) {
    const rs = runs[k]
    S[k] = {
      p50: median(rs.map((r) => r.mibps)),
      lo: min(rs.map((r) => r.mibps)),
      hi: max(rs.map((r) => r.mibps)),
      growth: inJs(k) ? max(rs.map((r) => r.peakGrowth)) : NaN,
      growthP50: inJs(k) ? median(rs.map((r) => r.peakGrowth)) : NaN,
      ok: rs.every((r) => r.ok),
      cpu: k === 'cli' ? NaN : median(rs.map((r) => r.cpuSecs)),
    }
  }
  const how = {
    sdk: ' (`spawn`, `for await`: a new Buffer per chunk)',
    'sdk-read': ' (`spawn`, `read(buf)`: one reused 256 KiB Buffer)',
    dockerode: ' (`modem.demuxStream`)',
    cli: ' (`docker exec … > /dev/null`)',
    floor: ' (tokio + hyper, 64 KiB raw reads, bytes dropped; `bench/floor`)',
  }
  const rows = kinds.map((k) => [
    PEER_NAME[k] + how[k],
    runs[k].length,
    f0(S[k].p50),
    `${f0(S[k].lo)}–${f0(S[k].hi)}`,
    inJs(k) ? `${mib(S[k].growthP50)} / ${mib(S[k].growth)}` : '(not in JS)',
    k === 'cli' ? '–' : f2(S[k].cpu),
    k === 'sdk' || k === 'dockerode' ? `${mib(paused[k].growth)} over ${CFG.pauseMs / 1000} s` : '–',
    S[k].ok ? 'yes' : '**no**',
  ])
  const ratio = (a, b) => S[a].p50 / S[b].p50
  const perRound = (a, b) => runs[a].map((r, i) => x(r.mibps / runs[b][i].mibps)).join(', ')
  const tgt = []
  for (const [k, label] of [['sdk', '`for await`'], ['sdk-read', '`read(buf)`']]) {
    const vsD = ratio(k, 'dockerode')
    const vsC = ratio(k, 'cli')
    check('T3', `streaming MiB/s SDK ${label} / dockerode`, vsD, '>=', 1.6)
    check('T3', `streaming MiB/s SDK ${label} / CLI \`> /dev/null\``, vsC, '>=', 1.1)
    check('T3', `streaming RSS growth, SDK ${label} (max over rounds)`, S[k].growth / MiB, '<=', 16, `${mib(S[k].growth)} MiB`, ' MiB')
    tgt.push([`MiB/s SDK ${label} / dockerode`, `${x(vsD)} (per round: ${perRound(k, 'dockerode')})`, '≥ 1.6×', verdict(vsD >= 1.6)])
    tgt.push([`MiB/s SDK ${label} / CLI`, `${x(vsC)} (per round: ${perRound(k, 'cli')})`, '≥ 1.1×', verdict(vsC >= 1.1)])
    tgt.push([`RSS growth while streaming, SDK ${label} (max)`, `${mib(S[k].growth)} MiB`, '≤ 16 MiB', verdict(S[k].growth <= 16 * MiB)])
  }
  check('T3', 'RSS growth while the consumer is paused', paused.sdk.growth / MiB, '<=', 2, `${mib(paused.sdk.growth)} MiB`, ' MiB')
  tgt.push(['RSS growth while paused', `${mib(paused.sdk.growth)} MiB`, '≈ 0 (≤ 2 MiB)', verdict(paused.sdk.growth <= 2 * MiB)])
  const ceiling = [
    `Ceiling on this machine (no target): the raw Rust floor runs at **${x(ratio('floor', 'cli'))} the CLI** (per round: ${perRound('floor', 'cli')}) and ${x(ratio('floor', 'dockerode'))} dockerode;`,
    `the SDK reaches ${x(ratio('sdk', 'floor'))} (\`for await\`) and ${x(ratio('sdk-read', 'floor'))} (\`read(buf)\`) of the floor.`,
    ratio('floor', 'cli') < 1.1
      ? 'The floor itself is below 1.1× the CLI here: the engine\'s attach path (runc → containerd-shim → fifo → dockerd → socket) is the bottleneck, and no client reaches that target on this machine.'
      : `The floor clears 1.1× the CLI here. Throughput is set by the engine's attach path, which needs the same 2 cores the client runs on, so a client's CPU is taken from it: for ${bytes / MiB} MiB the SDK used ${f2(S.sdk.cpu)} s (\`for await\`) and ${f2(S['sdk-read'].cpu)} s (\`read(buf)\`) of CPU, the floor ${f2(S.floor.cpu)} s and dockerode ${f2(S.dockerode.cpu)} s. The SDK's extra over the floor is the JS side: one promise round trip between the tokio worker and the JS thread per run of output (${f0(median(runs.sdk.map((r) => r.chunks)))} runs here, each a thread wake-up each way), the copy into the JS buffer, and for \`for await\` a new Buffer per run and the GCs that free them.`,
    ratio('floor', 'dockerode') < 1.6
      ? `The floor reaches only ${x(ratio('floor', 'dockerode'))} dockerode here (dockerode is held back by the same engine), so no client can reach 1.6× dockerode on this machine.`
      : '',  ].join(' ')
  const killMs = paused.sdk.killMs
  return [
    `### T3 — streaming exec output into JS (\`${streamCmd(bytes).join(' ')}\`)`,
    '',
    `${CFG.t3Rounds} round(s), order rotated. SDK and dockerode each stream in a fresh, warm (one exec done) process; MiB/s from the spawn call to the end of the output; RSS growth = peak (VmHWM after resetting it via \`/proc/self/clear_refs\`, and 10 ms samples) minus RSS before. CLI: \`docker exec … dd …\` with stdout on /dev/null, wall from spawn to exit. Paused consumer: read 8 MiB of a ${CFG.pausedBytes / MiB} MiB stream, stop reading for ${CFG.pauseMs / 1000} s, RSS growth meanwhile (≤ 2 MiB counts as "no growth").`,
    '',
    table(['peer', 'rounds', 'MiB/s p50', 'min–max', 'RSS growth p50 / max (MiB)', 'client CPU p50 (s, all threads)', 'RSS growth while paused (MiB)', 'all bytes + exit 0'], rows),
    '',
    table(['target', 'measured', 'required', 'result'], tgt),
    '',
    ceiling,
    '',
    `Also measured (no target): \`proc.kill('SIGKILL')\` on the paused SDK stream, before \`return()\`, took **${f0(killMs)} ms**; on a second stream, calling \`return()\` (discard) first, the kill took ${f0(paused.sdk.killAfterReturnMs)} ms.${killMs > 5000 ? " The slow case looks like the kill helper exec waiting out its 10 s output timeout while the killed exec's output is unread." : ''}`,
  ].join('\n')
}

function reportT4() {
  const { images, runs } = R.T4
  const rows = []
  const tgt = []
  const growths = []
  for (const [i, img] of images.entries()) {
    const sdkW = runs[i].sdk.map((r) => r.wallMs)
    const cliW = runs[i].cli.map((r) => r.wallMs)
    const g = max(runs[i].sdk.map((r) => r.peakGrowth))
    growths.push(g)
    const bytes = median(runs[i].sdk.map((r) => r.report.bytes))
    rows.push([img.label, `\`${img.ref}\``, mib(img.size), mib(bytes), 'SDK `copyTo`', f0(median(sdkW)), f0(p90(sdkW)), f1(bytes / MiB / (median(sdkW) / 1000)), `${mib(median(runs[i].sdk.map((r) => r.peakGrowth)))} / ${mib(g)}`])
    rows.push(['', '', '', '', 'CLI `save \\| load`', f0(median(cliW)), f0(p90(cliW)), f1(bytes / MiB / (median(cliW) / 1000)), runs[i].cli.every((r) => r.ok) ? '–' : '**CLI failed**'])
    const ratio = median(sdkW) / median(cliW)
    check('T4', `copy ${img.label}: wall SDK / CLI pipe`, ratio, '<=', 1.05)
    const perRound = sdkW.map((w, j) => x(w / cliW[j])).join(', ')
    tgt.push([`wall SDK / CLI, ${img.label}`, `${x(ratio)} (per round: ${perRound})`, '≤ 1.05×', verdict(ratio <= 1.05)])
  }
  const worst = max(growths)
  check('T4', 'copy RSS growth, small / big image', worst / MiB, '<=', 16, `${mib(growths[0])} / ${mib(growths[1])} MiB`, ' MiB')
  tgt.push(['RSS growth, small / big image', `${mib(growths[0])} / ${mib(growths[1])} MiB`, '≤ 16 MiB, flat', verdict(worst <= 16 * MiB)])
  return [
    '### T4 — image copy host engine → VM engine',
    '',
    `VM engine: a LocalSandboxd VM (dockerd backend, vfs). ${CFG.t4Rounds} round(s) per image, order rotated; before every copy the image is removed from the VM engine (\`DELETE /images/…?force=1\`), so every copy moves and loads the whole tar. SDK: \`hostEngine.images.copyTo(vmEngine, ref)\` in a fresh process (wall of the call, RSS growth = peak minus before). CLI: \`bash -o pipefail -c 'docker -H unix://HOST save REF | docker -H unix://VM load'\`.`,
    '',
    table(['image', 'ref', 'size MiB', 'tar MiB', 'peer', 'wall p50 ms', 'wall p90 ms', 'MiB/s', 'RSS growth p50 / max (MiB)'], rows),
    '',
    table(['target', 'measured', 'required', 'result'], tgt),
  ].join('\n')
}

function reportT5() {
  const acc = R.T5
  const rows = []
  const P = acc.paired
  for (const [what, label] of [['engine', '`GET /_ping`'], ['sandboxd', 'sandboxd `GET /vm`']]) {
    for (const k of ['sdk', 'native']) {
      const l = P[what][k]
      rows.push([label, k === 'sdk' ? 'SDK, paired: one process, alternating call by call with `native/`' : '`native/`, paired: the same process, alternating with the SDK', l.length, us(median(l)), us(p90(l)), f0(1000 / median(l)), P[what].failures])
    }
    for (const k of Object.keys(acc[what])) {
      const l = acc[what][k].lat
      const name = k === 'sdk' ? (what === 'engine' ? 'SDK `engine.ping()`' : 'SDK `sandboxd.ping()`') : k === 'native' ? 'the same on `native/` (no TypeScript layer)' : k === 'dockerode' ? '`dockerode.ping()`' : "`execSync('curl --unix-socket …')`"
      rows.push([label, name, l.length, us(median(l)), us(p90(l)), f0(1000 / median(l)), acc[what][k].failures])
    }
  }
  const e = acc.engine
  const s = acc.sandboxd
  const pingVsCurl = median(e.cli.lat) / median(e.sdk.lat)
  const pingVsDockerode = median(e.dockerode.lat) / median(e.sdk.lat)
  const vmVsCurl = median(s.cli.lat) / median(s.sdk.lat)
  const tsPing = median(P.engine.sdk) / median(P.engine.native)
  const tsVm = median(P.sandboxd.sdk) / median(P.sandboxd.native)
  const xPing = median(e.sdk.lat) / median(e.native.lat)
  const xVm = median(s.sdk.lat) / median(s.native.lat)
  check('T5', '`GET /_ping` curl glue / SDK', pingVsCurl, '>=', 60)
  check('T5', 'TypeScript layer: ping SDK / native (paired, one process)', tsPing, '<=', 1.05)
  check('T5', 'TypeScript layer: GET /vm SDK / native (paired, one process)', tsVm, '<=', 1.05)
  check('T5', '`GET /_ping` dockerode / SDK', pingVsDockerode, '>=', 2)
  check('T5', 'sandboxd `GET /vm` curl glue / SDK', vmVsCurl, '>=', 60)
  return [
    '### T5 — small JSON calls',
    '',
    `${CFG.t5Rounds} rounds, order rotated; per round ${CFG.t5FastN} sequential calls for the SDK/dockerode and ${CFG.t5CurlN} for curl glue (which also parses the body). Ratios are of per-call p50 latency (= calls/s for sequential calls). sandboxd is the LocalSandboxd in this run.`,
    '',
    table(['call', 'peer', 'n', 'p50 µs', 'p90 µs', 'calls/s', 'failures'], rows),
    '',
    table(['target', 'measured', 'required', 'result'], [
      ['ping: curl glue / SDK', x(pingVsCurl), '≥ 60×', verdict(pingVsCurl >= 60)],
      ['ping: dockerode / SDK', x(pingVsDockerode), '≥ 2×', verdict(pingVsDockerode >= 2)],
      ['GET /vm: curl glue / SDK', x(vmVsCurl), '≥ 60×', verdict(vmVsCurl >= 60)],
      ['TypeScript layer cost, ping (SDK / native p50, paired in one process)', `${x(tsPing)} (separate processes: ${x(xPing)})`, '≤ 1.05×', verdict(tsPing <= 1.05)],
      ['TypeScript layer cost, GET /vm (SDK / native p50, paired in one process)', `${x(tsVm)} (separate processes: ${x(xVm)})`, '≤ 1.05×', verdict(tsVm <= 1.05)],
    ]),
    '',
    `The TypeScript layer's cost is judged on the paired rows: the SDK's call and the same call on \`native/\` in one process, alternating call by call (order flipped every pair), ${CFG.t5FastN} pairs per round. The separate-process rows compare two processes, which on a loaded 2-core machine are scheduled differently (their ratio moved between 0.97× and 1.12× from one run to the next with the same code), so they show each client's speed, not a few microseconds of wrapper.`,
  ].join('\n')
}

function reportT6() {
  const acc = R.T6
  const S = Object.fromEntries(
    Object.entries(acc).map(([w, rs]) => [w, { ms: median(rs.map((r) => r.ms)), msP90: p90(rs.map((r) => r.ms)), rss: median(rs.map((r) => r.rssDelta)), proc: median(rs.map((r) => r.processMs)), procRss: median(rs.map((r) => r.rssAfter)), cp: rs.some((r) => r.childProcessLoaded), builtins: rs[0].builtinsLoaded.length }]),
  )
  const rows = ['sdk', 'native', 'dockerode', 'none'].map((w) => [
    w === 'none' ? 'plain `node`' : w === 'sdk' ? '`require(\'sandboxd\')`' : w === 'native' ? '`native/index.cjs` alone (no TypeScript layer)' : "`require('dockerode')`",
    acc[w].length,
    w === 'none' ? '–' : `${f1(S[w].ms)} / ${f1(S[w].msP90)}`,
    w === 'none' ? '–' : f1(S[w].rss / 1e6),
    f0(S[w].proc),
    f1(S[w].procRss / 1e6),
    w === 'none' ? '–' : S[w].builtins,
    S[w].cp ? 'yes' : 'no',
  ])
  const procDelta = Math.round(S.sdk.proc - S.none.proc)
  check('T6', '`require()` time (p50)', S.sdk.ms, '<=', 50, `${f1(S.sdk.ms)} ms`, ' ms')
  check('T6', '`require()` RSS over plain node (p50)', S.sdk.rss / 1e6, '<=', 15, `${f1(S.sdk.rss / 1e6)} MB`, ' MB')
  const cpOk = !S.sdk.cp
  checks.push({ id: 'T6', what: 'the package does not load `child_process`', measured: S.sdk.cp ? 'loaded' : 'not loaded', target: 'not loaded', ok: cpOk })
  return [
    '### T6 — `require()` of the package',
    '',
    `${CFG.t6Rounds} fresh \`node bench/require-probe.cjs <what>\` processes per variant, order rotated. "require ms" and "RSS added" are measured inside the process around the single \`require()\` (RSS over plain node); the process wall (spawn → exit) and final RSS are shown for context.`,
    '',
    table(['variant', 'n', 'require ms p50 / p90', 'RSS added (MB)', 'process wall p50 ms', 'process RSS at end (MB)', 'builtins loaded', '`child_process` loaded'], rows),
    '',
    table(['target', 'measured', 'required', 'result'], [
      ['`require()` time', `${f1(S.sdk.ms)} ms (process wall ${procDelta >= 0 ? '+' : '−'}${f0(Math.abs(procDelta))} ms vs plain node)`, '≤ 50 ms', verdict(S.sdk.ms <= 50)],
      ['RSS over plain node', `${f1(S.sdk.rss / 1e6)} MB`, '≤ 15 MB', verdict(S.sdk.rss <= 15e6)],
      ['`child_process` not loaded by the package', S.sdk.cp ? 'loaded' : 'not loaded', 'not loaded', verdict(cpOk)],
    ]),
  ].join('\n')
}

function reportT8() {
  const { lat, runs, bytes } = R.T8
  const L = Object.fromEntries(Object.entries(lat).map(([k, a]) => [k, { p50: median(a.lat), p90: p90(a.lat), n: a.lat.length, failures: a.failures }]))
  const name = {
    sbx: 'sbx route: `sandbox.sh()` (`Sandboxes.connect({ backend: \'sbx\' })`)',
    ctr: 'container route: `container.sh()` on the sandbox\'s own engine',
    floor: 'raw Rust floor, sbx route (attach, drain, exit code; `bench/floor/sbx_floor.rs`)',
  }
  const execRows = ['sbx', 'ctr', 'floor'].map((k) => [name[k], L[k].n, f1(L[k].p50), f1(L[k].p90), L[k].failures])
  const execRatio = L.sbx.p50 / L.ctr.p50
  const S = {}
  const skinds = ['sbx', 'sbx-read', 'ctr', 'ctr-read', 'floor-sbx', 'floor-ctr']
  const inJs = (k) => !k.startsWith('floor')
  for (const k of skinds) {
    const rs = runs[k]
    S[k] = {
      p50: median(rs.map((r) => r.mibps)),
      lo: min(rs.map((r) => r.mibps)),
      hi: max(rs.map((r) => r.mibps)),
      growthP50: inJs(k) ? median(rs.map((r) => r.peakGrowth)) : NaN,
      growth: inJs(k) ? max(rs.map((r) => r.peakGrowth)) : NaN,
      chunks: inJs(k) ? median(rs.map((r) => r.chunks)) : NaN,
      cpu: median(rs.map((r) => r.cpuSecs)),
      ok: rs.every((r) => r.ok),
    }
  }
  const sname = {
    sbx: 'sbx route, `spawn` + `for await`',
    'sbx-read': 'sbx route, `spawn` + `read(buf)` (one 256 KiB Buffer)',
    ctr: 'container route, `spawn` + `for await`',
    'ctr-read': 'container route, `spawn` + `read(buf)` (one 256 KiB Buffer)',
    'floor-sbx': 'raw Rust floor, sbx route (`bench/floor/sbx_floor.rs`)',
    'floor-ctr': 'raw Rust floor, container route (`bench/floor/stream_floor.rs`)',
  }
  const streamRows = skinds.map((k) => [
    sname[k],
    runs[k].length,
    f0(S[k].p50),
    `${f0(S[k].lo)}–${f0(S[k].hi)}`,
    inJs(k) ? `${mib(S[k].growthP50)} / ${mib(S[k].growth)}` : '(not in JS)',
    f2(S[k].cpu),
    inJs(k) ? f0(S[k].chunks) : '–',
    S[k].ok ? 'yes' : '**no**',
  ])
  const ratio = (a, b) => S[a].p50 / S[b].p50
  const perRound = (a, b) => runs[a].map((r, i) => x(r.mibps / runs[b][i].mibps)).join(', ')
  const forAwait = ratio('sbx', 'ctr')
  const readBuf = ratio('sbx-read', 'ctr-read')
  check('T8', 'exec p50 sbx route / container route', execRatio, '<=', 1.1)
  check('T8', 'exec failures, sbx route', L.sbx.failures, '<=', 0, String(L.sbx.failures), '')
  check('T8', 'streaming MiB/s sbx / container route, `for await`', forAwait, '>=', 0.9)
  check('T8', 'streaming MiB/s sbx / container route, `read(buf)`', readBuf, '>=', 0.9)
  check('T8', 'streaming: all bytes + exit 0, sbx route', ['sbx', 'sbx-read'].every((k) => S[k].ok) ? 1 : 0, '>=', 1, ['sbx', 'sbx-read'].every((k) => S[k].ok) ? 'yes' : 'no', '')
  return [
    `### T8 — the sbx exec route (LocalSandboxd) beside the container route`,
    '',
    `One sbx sandbox on a LocalSandboxd started by the run (dockerd backend): the busybox template runs as a container in the sandbox's own private dockerd. The **sbx route** reaches it through the sbx API (\`Sandboxes.connect({ socketPath, backend: 'sbx' })\` → \`sandboxes.get(name)\` → \`Sandbox\`: \`POST /sandbox/{name}/exec/attach\` upgraded to a raw stream, which LocalSandboxd relays to an exec it starts in the sandbox's engine). The **container route** is the same container on the same engine reached directly (\`DockerEngine.connect\` on that engine's socket, \`<root>/sbx/<name>/docker.sock\` → \`Container\`). Same container, same dockerd, same command: the difference is only the route (LocalSandboxd's relay and the SDK's sbx client against the SDK's engine client), not the engine or the storage.`,
    '',
    `Exec: ${CFG.t8Rounds} rounds × ${CFG.t8PerRound} sequential \`sh -c '${EXEC_SCRIPT}'\` + 1 env var per route, order rotated each round, one warm process per route (bench/peer.mjs \`execLatency\`); the floor is a fresh process per round, its first exec a warm-up not counted. Streaming: \`${streamCmd(bytes).join(' ')}\`, ${CFG.t8StreamRounds} round(s), order rotated, each SDK stream in a fresh warm process (as T3); MiB/s from the spawn call to the end of the output.`,
    '',
    table(['route', 'n', 'p50 ms', 'p90 ms', 'failures'], execRows),
    '',
    table(['route', 'rounds', 'MiB/s p50', 'min–max', 'RSS growth p50 / max (MiB)', 'client CPU p50 (s, all threads)', 'runs into JS p50', 'all bytes + exit 0'], streamRows),
    '',
    table(['target', 'measured', 'required', 'result'], [
      ['exec p50 sbx route / container route', `${x(execRatio)} (${f1(L.sbx.p50)} vs ${f1(L.ctr.p50)} ms)`, '≤ 1.10×', verdict(execRatio <= 1.1)],
      ['MiB/s sbx / container route, `for await`', `${x(forAwait)} (per round: ${perRound('sbx', 'ctr')})`, '≥ 0.9×', verdict(forAwait >= 0.9)],
      ['MiB/s sbx / container route, `read(buf)`', `${x(readBuf)} (per round: ${perRound('sbx-read', 'ctr-read')})`, '≥ 0.9×', verdict(readBuf >= 0.9)],
    ]),
    '',
    `Floors (no target): the sbx route's raw floor execs at p50 ${f1(L.floor.p50)} ms (the SDK's sbx route is ${x(L.sbx.p50 / L.floor.p50)} of it) and streams ${f0(S['floor-sbx'].p50)} MiB/s, against ${f0(S['floor-ctr'].p50)} MiB/s for the container route's floor (${x(ratio('floor-sbx', 'floor-ctr'))}: what LocalSandboxd's relay costs any client). The SDK reaches ${x(ratio('sbx', 'floor-sbx'))} (\`for await\`) and ${x(ratio('sbx-read', 'floor-sbx'))} (\`read(buf)\`) of the sbx floor; on the container route ${x(ratio('ctr', 'floor-ctr'))} and ${x(ratio('ctr-read', 'floor-ctr'))} of its floor.`,
    ...(lat.sbx.errors.length ? ['', 'Errors seen: ' + lat.sbx.errors.slice(0, 3).map((e) => `\`${e.replace(/\n/g, ' ')}\``).join('; ')] : []),
  ].join('\n')
}

function reportT9() {
  const { rounds, policy } = R.T9
  const lat = (k) => median(rounds.map((r) => r.latency[k]))
  const dm = rounds.flatMap((r) => r.tunnel.directMibps)
  const tm = rounds.flatMap((r) => r.tunnel.tunnelMibps)
  const dc = rounds.flatMap((r) => r.tunnel.directCpuSecs ?? [])
  const tc = rounds.flatMap((r) => r.tunnel.tunnelCpuSecs ?? [])
  const ratio = median(tm) / median(dm)
  const overheadMs = (lat('proxyP50Us') - lat('directP50Us')) / 1000
  const allBytes = rounds.every((r) => r.tunnel.ok)
  const mibs = rounds[0].tunnel.bytes / MiB
  check('T9', 'request overhead p50 through the proxy (keep-alive, loopback)', overheadMs, '<=', 1, `${f2(overheadMs)} ms`, ' ms')
  check('T9', `bypass CONNECT tunnel ${mibs} MiB download / direct`, ratio, '>=', 0.9)
  checks.push({ id: 'T9', what: `bypass tunnel: all ${mibs} MiB arrived, every run`, measured: allBytes ? 'yes' : 'no', target: 'yes', ok: allBytes })
  // Intercepted HTTPS: the same MiB over HTTPS, direct vs through a listener bound to a sandbox with a CA.
  const inter = rounds.map((r) => r.intercepted).filter((v) => v != null)
  const hd = inter.flatMap((v) => v.directMibps)
  const hi = inter.flatMap((v) => v.interceptedMibps)
  const hdc = inter.flatMap((v) => v.directCpuSecs)
  const hic = inter.flatMap((v) => v.interceptedCpuSecs)
  const interRatio = inter.length ? median(hi) / median(hd) : NaN
  check('T9', `intercepted HTTPS ${mibs} MiB download / direct HTTPS`, interRatio, '>=', 0.5, inter.length ? undefined : 'not measured')
  checks.push({ id: 'T9', what: `intercepted HTTPS: all ${mibs} MiB arrived, every run`, measured: inter.length && inter.every((v) => v.ok) ? 'yes' : 'no', target: 'yes', ok: inter.length > 0 && inter.every((v) => v.ok) })
  const rows = [
    ['direct: hyper client → upstream (198.18.0.1:80)', f0(lat('directP50Us')), f0(lat('directP99Us'))],
    ['through the proxy (absolute-form `GET http://web.test/`)', f0(lat('proxyP50Us')), f0(lat('proxyP99Us'))],
  ]
  return [
    '### T9 — the filtering proxy',
    '',
    `\`bench/floor/proxy_floor.rs\` (tokio + hyper 1, no JS) in a network namespace it creates: \`lo\` with 198.18.0.1 (an HTTP upstream answering \`ok\`) and 198.18.0.2 (a TCP upstream that writes ${mibs} MiB and closes), and an HTTPS upstream on 198.18.0.1:443 whose certificate a test root made by the floor signs (\`extra_roots_pem\`); LocalSandboxd's proxy (\`src/core/local/proxy\`, deny-all with three allow rules, fixed resolver) on 127.0.0.1. Client, proxy and upstreams share one process and the machine's ${os.cpus().length} cores. ${CFG.t9Rounds} round(s), each a fresh process: ${CFG.t9Requests} keep-alive requests each way on one connection each, in alternating blocks of 100 after 100 warm-up requests; then ${CFG.t9Runs} download(s) each way, alternating, MiB/s from connect to the last byte. Medians over rounds.`,
    '',
    table(['request route', 'p50 µs', 'p99 µs'], rows),
    '',
    table([`${mibs} MiB download`, 'MiB/s per run', 'median', 'process CPU s per run, median (client + proxy + upstream)'], [
      ['direct', dm.map(f0).join(', '), f0(median(dm)), f2(median(dc))],
      ['through a CONNECT tunnel (bypass: no interception)', tm.map(f0).join(', '), f0(median(tm)), f2(median(tc))],
      ['HTTPS direct (`GET /bulk`, the client trusts the test root)', hd.map(f0).join(', '), f0(median(hd)), f2(median(hdc))],
      ['HTTPS intercepted (a listener bound to a sandbox with a CA: TLS to the client and to the upstream)', hi.map(f0).join(', '), f0(median(hi)), f2(median(hic))],
    ]),
    '',
    `The proxy adds **${f2(overheadMs)} ms** p50 per kept-alive request: it decides, then opens a new upstream connection for every forwarded request (no upstream pool) and relays through hyper on both sides. The tunnel runs at **${x(ratio)}** direct (\`copy_bidirectional\` on the proxy's two sockets) and costs ${x(median(tc) / median(dc))} the CPU of the direct download: every byte crosses loopback twice and the relay in user space, on the same cores as the client and the upstream. Policy: **${f0(policy.perSec)} decisions/s** with ${policy.rules} rules (\`bench/floor/policy_floor.rs\`, one thread, ${f0(policy.nsPerDecision)} ns per decision over a rotating mix of 64 targets). Intercepted HTTPS runs at **${x(interRatio)}** direct HTTPS: the proxy decrypts and re-encrypts every byte (${x(median(hic) / median(hdc))} the CPU of the direct download). 1,000 concurrent connections with flat RSS is the Rust test \`core::local::proxy::load_tests::thousand_connections_held_rss_flat\` (\`cargo test --lib local::proxy\`), not part of this run.`,
  ].join('\n')
}

function reportT10() {
  const { lat, runs, bytes, digests } = R.T10
  const L = Object.fromEntries(Object.entries(lat).map(([k, a]) => [k, { p50: median(a.lat), p90: p90(a.lat), n: a.lat.length, failures: a.failures, errors: a.errors }]))
  const rname = {
    fwd: 'forward: Node `fetch` through `container.forward(2468)` (kept-alive connection: one tunnel for all requests)',
    agent: 'agent tunnel today: `SandboxAgent.health()` (its pooled kept-alive exec tunnel)',
    direct: 'floor, no tunnel: Node `fetch` to the same server on host loopback (host-network container)',
    'fwd-http': 'forward with `node:http` (keep-alive Agent, one socket) instead of `fetch`',
    'direct-http': 'floor, no tunnel, with `node:http` (keep-alive Agent, one socket)',
    'fwd-new': 'forward, a new connection per request (`http.get`, `agent: false`): a new exec tunnel each',
    cli: 'glue: `docker exec CONTAINER wget -qO- http://127.0.0.1:2468/v1/health` per request',
  }
  const reqRows = ['fwd', 'agent', 'direct', 'fwd-http', 'direct-http', 'fwd-new', 'cli'].map((k) => [rname[k], L[k].n, f2(L[k].p50), f2(L[k].p90), f0(1000 / L[k].p50), L[k].failures])
  const S = {}
  const dkinds = ['fwd', 'direct', 'exec', 'readFile', 'floor', 'cli']
  for (const k of dkinds) {
    const rs = runs[k]
    S[k] = {
      p50: median(rs.map((r) => r.mibps)),
      lo: min(rs.map((r) => r.mibps)),
      hi: max(rs.map((r) => r.mibps)),
      secs: median(rs.map((r) => r.secs)),
      cpu: k === 'cli' ? NaN : median(rs.map((r) => r.cpuSecs)),
      ok: rs.every((r) => r.ok),
    }
  }
  const dname = {
    fwd: 'forward: Node `fetch` of busybox httpd through `container.forward(8080)`, body read with `for await`',
    direct: 'floor, no tunnel: the same `fetch` to busybox httpd on host loopback (host-network container)',
    exec: 'exec stdout (what the agent tunnel rides on): `container.spawn([\'cat\', \'/srv/blob\'])` + `for await`',
    readFile: '`container.readFile(\'/srv/blob\')` (the engine\'s archive API, one Buffer)',
    floor: 'raw Rust floor of exec stdout: `cat /srv/blob` (`bench/floor/stream_floor.rs`)',
    cli: '`docker exec CONTAINER cat /srv/blob > /dev/null`',
  }
  const dlRows = dkinds.map((k) => [dname[k], runs[k].length, f0(S[k].p50), `${f0(S[k].lo)}–${f0(S[k].hi)}`, f2(S[k].secs), k === 'cli' ? '–' : f2(S[k].cpu), S[k].ok ? 'yes' : '**no**'])
  const reqRatio = L.fwd.p50 / L.agent.p50
  const dlRatio = S.fwd.p50 / S.exec.p50
  const intact = digests.fwd === digests.inside
  check('T10', 'forwarded requests: failures', L.fwd.failures + L['fwd-new'].failures, '<=', 0, String(L.fwd.failures + L['fwd-new'].failures), '')
  checks.push({ id: 'T10', what: `forwarded ${bytes / MiB} MiB download: all bytes, SHA-256 equal to the file's in the container`, measured: intact && S.fwd.ok ? 'yes' : 'no', target: 'yes', ok: intact && S.fwd.ok })
  const errs = [...new Set(Object.values(L).flatMap((l) => l.errors))].slice(0, 4)
  return [
    '### T10 — forwarded ports beside the agent tunnel',
    '',
    `One container of the sandbox-agent test image on the host engine, no published port and no network but its own loopback: \`sandbox-agent server\` on :2468 (started by \`SandboxAgent.ensureServer()\`) and busybox \`httpd\` on :8080 serving a ${bytes / MiB} MiB file of random bytes. One warm client process (bench/peer.mjs agent \`fwd\`) holds both forwards and the \`SandboxAgent\`; routes run in rounds, order rotated. The tunnel relay inside the container is busybox \`nc\` (one \`docker exec -i\` per TCP connection). The no-tunnel floor runs the same two servers in a host-network container on free loopback ports. Requests: \`GET /v1/health\` (a 15-byte JSON body), ${CFG.t10Rounds} rounds × ${CFG.t10N} sequential requests (new-connection rows: ${CFG.t10NewN}, glue: ${CFG.t10CliN}). Downloads: ${CFG.t10DlRounds} round(s) per route, MiB/s from the call to the last byte.`,
    '',
    table(['request route', 'n', 'p50 ms', 'p90 ms', 'requests/s', 'failures'], reqRows),
    '',
    table([`${bytes / MiB} MiB download route`, 'rounds', 'MiB/s p50', 'min–max', 's p50', 'client CPU p50 (s, all threads)', 'all bytes'], dlRows),
    '',
    table(['check (performance.md sets no ratio for T10: reported, not judged)', 'measured', 'required', 'result'], [
      ['forwarded requests failed', String(L.fwd.failures + L['fwd-new'].failures), '0', verdict(L.fwd.failures + L['fwd-new'].failures === 0)],
      [`forwarded ${bytes / MiB} MiB: SHA-256 through the forward = in the container`, intact ? `yes (\`${digests.fwd.slice(0, 12)}…\`)` : `**no** (${digests.fwd.slice(0, 12)} vs ${digests.inside.slice(0, 12)})`, 'equal', verdict(intact)],
    ]),
    '',
    `Side by side (no target): a kept-alive forwarded request costs **${x(reqRatio)} the agent tunnel's** (p50 ${f2(L.fwd.p50)} vs ${f2(L.agent.p50)} ms) and ${x(L.fwd.p50 / L.direct.p50)} the no-tunnel floor (${f2(L.direct.p50)} ms). Most of a \`fetch\` is the client: with \`node:http\` the forward answers in ${f2(L['fwd-http'].p50)} ms against ${f2(L['direct-http'].p50)} ms without a tunnel, so the tunnel (relay exec, engine attach, the SDK's relay task) adds ${f2(L['fwd-http'].p50 - L['direct-http'].p50)} ms per kept-alive request, while \`SandboxAgent\` pays its hop inside Rust (hyper on the tunnel, one napi promise). A request on a new connection pays a new exec tunnel (${f1(L['fwd-new'].p50)} ms, ${x(L['fwd-new'].p50 / L.fwd.p50)} a kept-alive one) and the \`docker exec wget\` glue ${f1(L.cli.p50)} ms. The ${bytes / MiB} MiB download through the forward runs at **${f0(S.fwd.p50)} MiB/s**: ${x(dlRatio)} the SDK's exec stdout stream of the same file (${f0(S.exec.p50)} MiB/s; the agent tunnel has no route that returns a file, so this is what it rides on), ${x(S.fwd.p50 / S.floor.p50)} the raw Rust floor of that exec stream (${f0(S.floor.p50)} MiB/s), ${x(S.fwd.p50 / S.cli.p50)} \`docker exec cat\`, and ${x(S.fwd.p50 / S.direct.p50)} the no-tunnel loopback floor (${f0(S.direct.p50)} MiB/s).`,
    ...(errs.length ? ['', 'Errors seen: ' + errs.map((e) => `\`${e.replace(/\n/g, ' ')}\``).join('; ')] : []),
  ].join('\n')
}

function limitsNotes(F) {
  const notes = []
  if (F.addon.debugInfo) {
    notes.push(
      `**The addon measured is a ${F.addon.profile} build** (\`${F.addon.file}\`, ${F.addon.sizeMiB.toFixed(0)} MiB, with debug info). The SDK's own CPU-bound costs (HTTP parsing, frame demux, copying chunks into JS) are pessimistic here; re-run after \`npm run build\` for release numbers. Daemon-bound numbers (exec latency, copy) barely move.`,
    )
  }
  if (R.T1) {
    const { acc } = R.T1
    notes.push(
      `**Exec latency is daemon-bound.** Every peer pays dockerd's exec create + start (runc exec) + inspect; SDK p50 ${f1(median(acc.sdk.lat))} ms vs dockerode ${f1(median(acc.dockerode.lat))} ms. The CLI adds process start-up, its own \`/_ping\` version negotiation and, with \`spawnSync\`, blocks the event loop for the whole call (p50 loop delay ${f1(median(acc.cli.delay))} ms per call). The SDK's JS thread spends ${f2(median(acc.sdk.mainCpu))} ms of CPU per exec (dockerode's ${f2(median(acc.dockerode.mainCpu))} ms; the 1 ms loop-delay timer alone accounts for ${f2(median(acc.idle.mainCpu))} ms per 50 ms in the control); the rest of the SDK's client CPU runs on its tokio threads. The SDK additionally wraps every command in \`sh -c 'echo $$ >&2; exec "$@"'\` (for process-group kills) and polls \`GET /exec/{id}/json\` for the exit code.`,
    )
  }
  if (R.T1) {
    const a = R.T1.acc.sdk
    const big = a.delay.map((d, i) => ({ d, cpu: a.mainCpu[i], wait: a.mainWait[i] })).filter((c) => c.d > 2)
    if (big.length && a.mainCpu.length) {
      notes.push(
        `**Event-loop stalls over 2 ms** happened in ${big.length} of ${a.delay.length} SDK execs (control, no call: ${R.T1.acc.idle.delay.filter((d) => d > 2).length} of ${R.T1.acc.idle.delay.length}). In those calls the JS thread used a median ${f2(median(big.map((c) => c.cpu)))} ms of CPU but waited ${f1(median(big.map((c) => c.wait)))} ms for a core: the stalls are the 2-core machine being oversubscribed (dockerd, containerd, runc, the SDK's own tokio threads${F.loadStart[0] > 1 ? ', and other load on the machine' : ''}), not work done on the event loop. This check can only isolate the client's own blocking when cores are spare.`,
      )
    }
  }
  if (R.T2) {
    const s = median(R.T2.batches.sdk.map((b) => b.wall))
    notes.push(`**Concurrency is capped by the daemon**: ${CFG.t2N} execs take ${f0(s)} ms (${f1((CFG.t2N / s) * 1000)} execs/s) whatever the client; on ${F.cores} cores dockerd, containerd and runc share the CPU with the client.`)
  }
  if (R.T3) {
    const { runs } = R.T3
    const sdkChunks = median(runs.sdk.map((r) => r.chunks))
    const dChunks = median(runs.dockerode.map((r) => r.chunks))
    notes.push(
      `**Chunking:** streaming ${R.T3.bytes / MiB} MiB reached JS in ${f0(sdkChunks)} chunks via the SDK (avg ${f1(R.T3.bytes / sdkChunks / 1024)} KiB; each chunk is one napi promise round trip to a tokio thread) and in ${f0(dChunks)} \`data\` events via dockerode (avg ${f1(R.T3.bytes / dChunks / 1024)} KiB). SDK RSS growth while streaming: ${mib(median(runs.sdk.map((r) => r.peakGrowth)))} MiB at peak (p50); after the stream and a forced \`gc()\` ${mib(median(runs.sdk.map((r) => r.afterGcGrowth)))} MiB of RSS is still held while the JS heap + external memory is back where it started (${mib(median(runs.sdk.map((r) => r.jsAfterGcGrowth)))} MiB difference), i.e. the rest is native memory the process keeps (allocator), not live JS objects.`,
    )
    notes.push(
      `**Streaming** is bounded by the engine's attach path (runc → containerd-shim fifo → dockerd → socket): the CLI writing to /dev/null reaches ${f0(median(runs.cli.map((r) => r.mibps)))} MiB/s. The SDK additionally copies each chunk into a V8-owned Buffer and crosses into JS once per chunk (queued chunks are merged up to ~256 KiB); dockerode's \`demuxStream\` re-buffers every frame (\`Buffer.concat\` per chunk) and ignores backpressure (its RSS grew ${mib(R.T3.paused.dockerode.growth)} MiB while its consumer was paused).`,
    )
  }
  if (R.T4) {
    const { images, runs } = R.T4
    const i = images.length - 1
    notes.push(
      `**Image copy** is bounded by the two engines: \`GET /images/{name}/get\` tars the layers, \`POST /images/load\` writes them into the VM's vfs store; both peers move the same bytes through one pipe (${images[i].label}: SDK ${f0(median(runs[i].sdk.map((r) => r.wallMs)))} ms vs CLI ${f0(median(runs[i].cli.map((r) => r.wallMs)))} ms). The SDK adds relaying the stream and a few \`GET /images/{name}/json\` checks; its RSS stays flat because the tar is never buffered. For small images the CLI's two process start-ups dominate.`,
    )
  }
  if (R.conns && R.conns.sdk.ping >= 0.9) {
    notes.push(
      `**The SDK opens a new engine connection for every request** (${f2(R.conns.sdk.ping)} per ping, ${f2(R.conns.sdk.exec)} per exec, vs dockerode ${f2(R.conns.dockerode.ping)} / ${f2(R.conns.dockerode.exec)}; see Diagnostics). That is what bollard's \`Docker::connect_with_unix\` does (it builds its hyper client with \`pool_max_idle_per_host(0)\`); every call pays connect + accept + a fresh dockerd connection goroutine. That is a large share of the gap to dockerode in T5 (the rest: the hop from the JS thread to a tokio thread and back, and the unoptimized build) and part of the client CPU per exec in T1.`,
    )
  }
  if (R.T8) {
    const L = (k) => median(R.T8.lat[k].lat)
    const M = (k) => median(R.T8.runs[k].map((r) => r.mibps))
    const C = (k) => median(R.T8.runs[k].map((r) => r.chunks))
    notes.push(
      `**The sbx route adds one hop**: LocalSandboxd (here inside the bench's own process, on the addon's tokio runtime) creates the exec in the sandbox's engine, starts it attached and relays the raw stream to the client's upgraded connection as the engine sent it (one large read and one write per run of output). An exec costs the same daemon work on both routes (p50 ${f1(L('sbx'))} ms sbx vs ${f1(L('ctr'))} ms container); a stream costs one more copy through a process on the same ${F.cores} cores (the floors: ${f0(M('floor-sbx'))} vs ${f0(M('floor-ctr'))} MiB/s). The SDK reads both routes with the same demuxer and the same coalescing into JS (${f0(C('sbx'))} vs ${f0(C('ctr'))} runs for ${R.T8.bytes / MiB} MiB with \`for await\`).`,
    )
  }
  if (R.T10) {
    const C = (k) => median(R.T10.runs[k].map((r) => r.cpuSecs))
    const M = (k) => median(R.T10.runs[k].map((r) => r.mibps))
    notes.push(
      `**Forwarded downloads are CPU-bound in the relay.** A forwarded byte crosses busybox \`nc\` in the container, the engine's exec attach (stdin and stdout), the SDK's demuxer and relay task, and loopback TCP into \`fetch\`; the client process (fetch and the forward's tokio tasks together) spent ${f2(C('fwd'))} s of CPU on ${R.T10.bytes / MiB} MiB, against ${f2(C('exec'))} s for the SDK's exec stdout stream of the same file and ${f2(C('direct'))} s for \`fetch\` without a tunnel. On ${F.cores} cores shared with dockerd, containerd-shim and the relay that CPU is taken from the producer: ${f0(M('fwd'))} MiB/s forwarded vs ${f0(M('exec'))} MiB/s exec stdout. Where the relay's time goes (its read sizes, \`copy_bidirectional\`'s 8 KiB buffer, a write per frame) is not measured here.`,
    )
  }
  if (R.T5) {
    notes.push(
      `**Small calls** are dominated by per-request client overhead (the engine answers \`/_ping\` in well under a millisecond): curl glue pays a process spawn per call (${us(median(R.T5.engine.cli.lat))} µs), dockerode a Node \`http\` round trip on a kept-alive socket (${us(median(R.T5.engine.dockerode.lat))} µs), the SDK a napi promise + a hyper request on the tokio runtime (${us(median(R.T5.engine.sdk.lat))} µs).`,
    )
  }
  return notes
}

function renderMarkdown(F, runtimeS) {
  const parts = []
  parts.push('# Benchmarks')
  parts.push('')
  parts.push(`Generated by \`npm run bench${QUICK ? ' -- --quick' : ''}\` (bench/run.mjs) on ${F.date.slice(0, 19).replace('T', ' ')} UTC in ${f0(runtimeS)} s.${QUICK ? ' **Quick smoke run: few samples, smaller payloads — not representative.**' : ''}`)
  parts.push('')
  parts.push('## Machine')
  parts.push('')
  parts.push(
    table(['', ''], [
      ['CPU', `${F.cores} cores, ${F.cpuModel}`],
      ['memory', `${F.memGiB.toFixed(1)} GiB`],
      ['OS', `${F.distro}, kernel ${F.kernel}`],
      ['Node', F.node],
      ['load', `load average ${F.loadStart.map((l) => l.toFixed(2)).join(' ')} at start, ${F.loadEnd ? F.loadEnd.map((l) => l.toFixed(2)).join(' ') : '?'} at end; ${F.otherContainers} other container(s) running on the host engine at start (the machine was ${F.loadStart[0] > 1 || F.otherContainers ? '**not idle**' : 'otherwise idle'})`],
      ['host engine', F.engine],
      ['VM engine', F.vmEngine],
      ['peers', `dockerode ${F.dockerode} (docker-modem ${F.dockerModem}), docker CLI ${F.dockerCli}, ${F.curl}`],
      ['addon', `\`${F.addon.file}\` (built ${F.addon.mtime} UTC), ${f0(F.addon.sizeMiB)} MiB, ${F.addon.profile}; every process of the run loaded a copy taken at the start${F.addonChanged ? ' (the package file was rebuilt during the run; only T6 loaded the package file itself)' : ''}`],
      ['exec image', `\`${F.image}\` (busybox)`],
    ]),
  )
  parts.push('')
  parts.push('## Method')
  parts.push('')
  parts.push(
    [
      '- One run, all peers interleaved: each target runs in rounds and the peer order is rotated every round, so drift (page cache, daemon state, thermal) hits every peer alike. Medians are reported (p90 where useful); ratios are of medians.',
      '- Each peer lives in its own process (`bench/peer.mjs agent <peer>`, one warm client per peer, driven over IPC by `bench/run.mjs`), so one client\'s GC, threads and event-loop stalls never show up in another\'s numbers. RSS (T3, T4) and CPU (T1) are measured in fresh processes doing only that measurement; T6 in fresh `node` processes.',
      `- All execs go to one \`sleep\` container on the host engine (T8: to one sbx sandbox of a LocalSandboxd started by the run, by both routes); the VM engine is a LocalSandboxd VM (dockerd backend) started by the run. Everything the run creates is removed at the end.`,
      '- PASS/FAIL is computed from the numbers below, nothing is hidden; a FAIL is a FAIL.',
    ].join('\n'),
  )
  parts.push('')
  parts.push('## Summary')
  parts.push('')
  parts.push(table(['#', 'check', 'measured', 'required', 'result'], checks.map((c) => [c.id, c.what, c.measured, c.target, verdict(c.ok)])))
  parts.push('')
  parts.push(`${checks.filter((c) => c.ok).length}/${checks.length} checks pass.`)
  parts.push('')
  parts.push('## Results')
  parts.push('')
  for (const [t, fn] of [['T1', reportT1Text], ['T2', reportT2Text], ['T3', reportT3Text], ['T4', reportT4Text], ['T5', reportT5Text], ['T6', reportT6Text], ['T8', reportT8Text], ['T9', reportT9Text], ['T10', reportT10Text]]) {
    if (fn.text) {
      parts.push(fn.text)
      parts.push('')
    }
  }
  if (R.conns) {
    parts.push('## Diagnostics: engine connections opened per call')
    parts.push('')
    parts.push(`\`strace -f -e trace=connect\` on a fresh warm client doing 20 pings, 20 sequential execs, then ${CFG.t2N} execs in flight (phases separated by marker connects); counts \`connect()\` to the engine socket. A client that keeps connections alive opens ~0 per ping; an attached exec needs one for \`POST /exec/{id}/start\` (it is hijacked and cannot go back to a pool).`)
    parts.push('')
    parts.push(table(['peer', 'connections per `GET /_ping`', 'per sequential exec', `per exec, ${CFG.t2N} in flight`], Object.entries(R.conns).map(([k, v]) => [PEER_NAME[k], f2(v.ping), f2(v.exec), f2(v.batch)])))
    parts.push('')
  }
  parts.push('## What limits it')
  parts.push('')
  for (const n of limitsNotes(F)) parts.push(`- ${n}`)
  parts.push('')
  return parts.join('\n')
}
// reports are rendered once (they register their checks as a side effect)
const reportT1Text = {}
const reportT2Text = {}
const reportT3Text = {}
const reportT4Text = {}
const reportT5Text = {}
const reportT6Text = {}
const reportT8Text = {}
const reportT9Text = {}
const reportT10Text = {}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

let agentCfg
let exitCode = 0
try {
  log(`${QUICK ? 'quick' : 'full'} run; host engine ${HOST_SOCK}, image ${IMAGE}; targets ${[...ONLY].join(',')}`)
  const hostEngine = await sdk.DockerEngine.connect({ socketPath: HOST_SOCK })
  if (!(await hostEngine.images.exists(IMAGE))) throw new Error(`image ${IMAGE} is not on ${HOST_SOCK}`)
  state.container = await hostEngine.containers.run({
    image: IMAGE,
    name: TAG,
    labels: LABELS,
    cmd: ['sleep', '86400'],
  })
  log(`exec container ${TAG} (${state.container.id.slice(0, 12)})`)

  let vmEngine = null
  let sbxSock = null
  if (ONLY.has('T4') || ONLY.has('T5') || ONLY.has('T8')) {
    const t0 = Date.now()
    state.lsbx = await sdk.LocalSandboxd.start({ backend: 'dockerd' })
    sbxSock = state.lsbx.socketPath
    state.workspace = mkdtempSync(path.join(os.tmpdir(), 'sbx-bench-ws-'))
    log(`LocalSandboxd ${state.lsbx.backend} at ${sbxSock} (${Date.now() - t0} ms)`)
  }
  if (ONLY.has('T4') || ONLY.has('T5')) {
    const t0 = Date.now()
    const client = new sdk.Sandboxd({ socketPath: sbxSock })
    state.vm = await client.create({ agentName: `bench${process.pid}`, workspaceDir: state.workspace })
    vmEngine = await state.vm.engine()
    log(`VM ${state.vm.name} engine ${state.vm.socketPath} (${Date.now() - t0} ms)`)
  }
  const t8 = ONLY.has('T8') ? await setupT8() : null
  if (ONLY.has('T4')) await ensureBigImage(hostEngine, CFG.bigMiB)
  const t10 = ONLY.has('T10') ? await setupT10(hostEngine) : null

  const F = await facts(hostEngine, vmEngine)
  agentCfg = { hostSock: HOST_SOCK, container: state.container.id, sbxSock }
  const agents = {}
  if (['T1', 'T2', 'T5'].some((t) => ONLY.has(t))) {
    for (const k of ONLY.has('T5') ? ['sdk', 'native', 'dockerode', 'cli'] : ['sdk', 'dockerode', 'cli']) {
      agents[k] = await Agent.start(k, agentCfg)
      state.agents.push(agents[k])
    }
  }

  if (ONLY.has('T6')) await runT6()
  if (ONLY.has('T5')) await runT5(agents)
  if (ONLY.has('T1')) await runT1(agents)
  if (ONLY.has('T2')) await runT2(agents)
  if (ONLY.has('T3')) await runT3()
  if (ONLY.has('T4')) await runT4(state.vm.socketPath)
  if (t8) await runT8(t8)
  if (ONLY.has('T9')) await runT9()
  if (t10) await runT10(t10)
  if (!flag('--no-diagnostics')) await runConns()
  F.loadEnd = os.loadavg()
  const addonEnd = addonFacts()
  F.addonChanged = addonEnd.mtime !== F.addon.mtime || addonEnd.sizeMiB !== F.addon.sizeMiB
  if (F.addonChanged) log(`note: the package's addon was rebuilt during the run (${F.addon.mtime} -> ${addonEnd.mtime}); the run used its copy from the start`)

  if (R.T1) reportT1Text.text = reportT1()
  if (R.T2) reportT2Text.text = reportT2()
  if (R.T3) reportT3Text.text = reportT3()
  if (R.T4) reportT4Text.text = reportT4()
  if (R.T5) reportT5Text.text = reportT5()
  if (R.T6) reportT6Text.text = reportT6()
  if (R.T8) reportT8Text.text = reportT8()
  if (R.T9) reportT9Text.text = reportT9()
  if (R.T10) reportT10Text.text = reportT10()

  await cleanup()
  const runtimeS = (Date.now() - T_START) / 1000
  const md = renderMarkdown(F, runtimeS)
  mkdirSync(path.dirname(OUT), { recursive: true })
  writeFileSync(OUT, md)
  mkdirSync(path.join(REPO, '.tmp'), { recursive: true })
  writeFileSync(path.join(REPO, '.tmp', QUICK ? 'bench-results.quick.json' : 'bench-results.json'), JSON.stringify({ facts: F, cfg: CFG, results: R, checks }, null, 1))

  // stdout: the summary
  const failed = checks.filter((c) => !c.ok)
  console.log('')
  console.log(`sandboxd benchmarks (${QUICK ? 'QUICK smoke run' : 'full run'}, ${f0(runtimeS)} s) — ${F.cores} cores, node ${F.node}, engine ${F.engine}`)
  if (F.addon.debugInfo) console.log(`NOTE: the addon is a ${F.addon.profile} build`)
  console.log('')
  const w = Math.max(...checks.map((c) => c.what.length))
  for (const c of checks) console.log(`  ${c.id}  ${c.what.padEnd(w)}  ${c.measured.padStart(22)}  (${c.target})  ${c.ok ? 'PASS' : 'FAIL'}`)
  console.log('')
  console.log(`${checks.length - failed.length}/${checks.length} checks pass; written to ${path.relative(REPO, OUT)}`)
  if (failed.length && STRICT) exitCode = 1
} catch (e) {
  console.error('bench failed:', e?.stack ?? e)
  exitCode = 1
} finally {
  await cleanup()
}
process.exit(exitCode)
