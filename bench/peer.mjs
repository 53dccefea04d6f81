// One benchmark peer in its own process, so that one client's CPU, RSS, GC and event-loop stalls never
// pollute another's numbers.
//
//   node bench/peer.mjs agent <kind> <configJSON>   long-lived, warm client, driven over IPC by run.mjs
//   node bench/peer.mjs once  <op>   <argsJSON>     fresh process for one RSS/CPU measurement, result over IPC
//   node bench/peer.mjs conns <argsJSON>            run under strace by run.mjs: engine connections per call
//
// kind: 'sdk' (this package), 'dockerode', 'cli' (docker CLI / curl through child_process, i.e. "glue"),
// 'sbx' (this package, a sandbox through the sbx API: T8).
import { execFile, execSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { Agent as HttpAgent, get as httpGet } from 'node:http'
import { connect } from 'node:net'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { PassThrough } from 'node:stream'
import {
  EXEC_ENV,
  EXEC_EXPECT,
  EXEC_SCRIPT,
  REPO,
  childrenCpuMs,
  dockerCli,
  dockerodeExec,
  fdCounts,
  mainThreadSched,
  require,
  resetPeakRss,
  rssNow,
  rssPeak,
  sleep,
  streamCmd,
} from './lib.mjs'

const gc = globalThis.gc ?? (() => {})

// ---------------------------------------------------------------------------
// clients
// ---------------------------------------------------------------------------

/** A warm client of `kind`: exec(), ping(), sandboxdPing() and the handles behind them. */
async function makeClient(kind, cfg) {
  if (kind === 'sdk' || kind === 'native') {
    // 'native': the same calls on the private native module, without the TypeScript layer (T5 measures its cost)
    const sdk = require(kind === 'sdk' ? REPO : `${REPO}/native/index.cjs`)
    const engine = await sdk.DockerEngine.connect({ socketPath: cfg.hostSock })
    const container = await engine.containers.get(cfg.container)
    if (!container) throw new Error(`container ${cfg.container} not found`)
    const sbx = cfg.sbxSock ? new sdk.Sandboxd({ socketPath: cfg.sbxSock }) : null
    return {
      sdk,
      engine,
      container,
      cfg,
      async exec() {
        const r = await container.sh(EXEC_SCRIPT, { env: EXEC_ENV })
        return r.exitCode === 0 && r.text() === EXEC_EXPECT
      },
      ping: () => engine.ping(),
      sandboxdPing: () => sbx.ping(),
    }
  }
  if (kind === 'sbx') {
    // T8: a sandbox reached through the sbx API (LocalSandboxd), with the same calls as a container
    const sdk = require(REPO)
    const sandboxes = await sdk.Sandboxes.connect({ socketPath: cfg.sbxApiSock, backend: 'sbx' })
    const box = await sandboxes.get(cfg.sandbox)
    if (!box) throw new Error(`sandbox ${cfg.sandbox} not found`)
    return {
      sdk,
      container: box,
      async exec() {
        const r = await box.sh(EXEC_SCRIPT, { env: EXEC_ENV })
        return r.exitCode === 0 && r.text() === EXEC_EXPECT
      },
      ping: null,
      sandboxdPing: null,
    }
  }
  if (kind === 'fwd') {
    // T10: one container with sandbox-agent (cfg.agentPort) and busybox httpd (cfg.httpPort) inside, reached by
    // forward(port), by SandboxAgent's exec tunnel, by exec, and (cfg.direct*) the same servers on host loopback
    const sdk = require(REPO)
    const engine = await sdk.DockerEngine.connect({ socketPath: cfg.hostSock })
    const container = await engine.containers.get(cfg.container)
    if (!container) throw new Error(`container ${cfg.container} not found`)
    const agent = new sdk.SandboxAgent(container, { port: cfg.agentPort })
    const fwdAgent = await container.forward(cfg.agentPort)
    const fwdHttp = await container.forward(cfg.httpPort)
    return {
      sdk,
      engine,
      container,
      agent,
      cfg,
      keepAlive: new HttpAgent({ keepAlive: true, maxSockets: 1 }),
      urls: {
        fwd: { health: `${fwdAgent.url}/v1/health`, blob: `${fwdHttp.url}/blob` },
        direct: { health: `${cfg.directAgentUrl}/v1/health`, blob: `${cfg.directHttpUrl}/blob` },
      },
      async exec() {
        const r = await container.sh(EXEC_SCRIPT, { env: EXEC_ENV })
        return r.exitCode === 0 && r.text() === EXEC_EXPECT
      },
      ping: null,
      sandboxdPing: null,
    }
  }
  if (kind === 'dockerode') {
    const Docker = require('dockerode')
    const docker = new Docker({ socketPath: cfg.hostSock })
    const container = docker.getContainer(cfg.container)
    return {
      docker,
      container,
      async exec() {
        const r = await dockerodeExec(docker, container, ['sh', '-c', EXEC_SCRIPT], EXEC_ENV)
        return r.exitCode === 0 && r.stdout.toString() === EXEC_EXPECT
      },
      ping: async () => {
        const r = await docker.ping()
        if (String(r) !== 'OK') throw new Error(`ping answered ${r}`)
      },
      sandboxdPing: null,
    }
  }
  if (kind === 'cli') {
    const envArgs = Object.entries(EXEC_ENV).flatMap(([k, v]) => ['-e', `${k}=${v}`])
    const argv = [...dockerCli(cfg.hostSock), 'exec', ...envArgs, cfg.container, 'sh', '-c', EXEC_SCRIPT]
    return {
      async exec() {
        const r = spawnSync('docker', argv, { encoding: 'utf8' })
        return r.status === 0 && r.stdout === EXEC_EXPECT
      },
      // the "glue" a script would write: shell out to curl, parse what comes back
      ping: async () => {
        const out = execSync(`curl -sSf --unix-socket ${cfg.hostSock} http://localhost/_ping`, { encoding: 'utf8' })
        if (out !== 'OK') throw new Error(`ping answered ${out}`)
      },
      sandboxdPing: cfg.sbxSock
        ? async () => {
            const out = execSync(`curl -sSf --unix-socket ${cfg.sbxSock} http://localhost/vm`, { encoding: 'utf8' })
            if (!Array.isArray(JSON.parse(out))) throw new Error('GET /vm did not answer an array')
          }
        : null,
    }
  }
  throw new Error(`unknown peer kind ${kind}`)
}

// ---------------------------------------------------------------------------
// agent ops (warm client, many calls)
// ---------------------------------------------------------------------------

/**
 * n sequential execs; per call: latency, the worst event-loop stall seen while it ran, and the main thread's
 * own CPU time and run-queue wait. `idle: true` is the control: the "call" is a 50 ms sleep, so its stalls are
 * what this machine does to an idle event loop (scheduling noise), not what a call causes.
 */
async function execLatency(client, { n, idle = false }) {
  const call = idle ? () => sleep(50).then(() => true) : () => client.exec()
  const h = monitorEventLoopDelay({ resolution: 1 })
  h.enable()
  const lat = []
  const delay = []
  const mainCpu = []
  const mainWait = []
  let failures = 0
  const errors = []
  for (let i = 0; i < n; i++) {
    h.reset()
    // the first timer tick after reset() only re-arms the histogram (it records nothing): let it pass
    // before the call, or a loop blocked right away (spawnSync) would go unrecorded
    await sleep(2)
    const s0 = mainThreadSched()
    const t0 = performance.now()
    let ok = false
    try {
      ok = await call()
    } catch (e) {
      errors.push(String(e?.message ?? e).slice(0, 200))
    }
    lat.push(performance.now() - t0)
    const s1 = mainThreadSched()
    if (s0 && s1) {
      mainCpu.push(s1.cpu - s0.cpu)
      mainWait.push(s1.wait - s0.wait)
    }
    // a blocked loop is recorded when the timer next fires: give it the chance before reading
    await sleep(3)
    // the histogram records tick intervals: the stall is the longest interval minus the 1 ms resolution
    delay.push(Math.max(0, h.max / 1e6 - 1))
    if (!ok) failures++
  }
  h.disable()
  return { lat, delay, mainCpu, mainWait, failures, errors: errors.slice(0, 3) }
}

/** n execs in flight at once; wall time, failures, fds/sockets held afterwards. */
async function execBatch(client, { n }) {
  const t0 = performance.now()
  const rs = await Promise.allSettled(Array.from({ length: n }, () => client.exec()))
  const wall = performance.now() - t0
  const failures = rs.filter((r) => r.status === 'rejected' || r.value !== true).length
  const errors = rs.filter((r) => r.status === 'rejected').map((r) => String(r.reason?.message ?? r.reason).slice(0, 200))
  const after = fdCounts()
  await sleep(250)
  const settled = fdCounts()
  return { wall, failures, errors: errors.slice(0, 3), after, settled, rss: rssNow() }
}

/** n sequential small calls; per-call latency in ms. */
async function callLatency(client, { n, what }) {
  const fn = what === 'sandboxd' ? client.sandboxdPing : client.ping
  if (!fn) throw new Error(`this peer has no ${what} ping`)
  const lat = []
  let failures = 0
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    try {
      await fn()
    } catch {
      failures++
    }
    lat.push(performance.now() - t0)
  }
  return { lat, failures }
}

/**
 * T10: n sequential small HTTP requests (sandbox-agent's `GET /v1/health`) by `via`: 'fwd' Node `fetch` through
 * `container.forward()` (undici keeps the connection, so one tunnel serves them all), 'fwd-http' / 'direct-http'
 * the same with `node:http` and a keep-alive Agent (a lighter client than fetch), 'fwd-new' a new connection
 * (`http.get`, `agent: false`) per request, i.e. a new exec tunnel each, 'agent' `SandboxAgent.health()` (its pooled
 * keep-alive tunnel), 'direct' `fetch` to the same server on host loopback (no tunnel), 'cli' the glue a script
 * writes today: `docker exec CONTAINER wget -qO- …` per request.
 */
async function httpLatency(client, { n, via }) {
  const lat = []
  let failures = 0
  const errors = []
  const getJson = (url, agent) =>
    new Promise((resolve, reject) => {
      const req = httpGet(url, agent ? { agent } : { agent: false, headers: { Connection: 'close' } }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d) => (body += d))
        res.on('end', () => resolve(res.statusCode === 200 && JSON.parse(body).status === 'ok'))
        res.on('error', reject)
      })
      req.on('error', reject)
    })
  const once = {
    fwd: async () => (await (await fetch(client.urls.fwd.health)).json()).status === 'ok',
    'fwd-http': () => getJson(client.urls.fwd.health, client.keepAlive),
    'direct-http': () => getJson(client.urls.direct.health, client.keepAlive),
    direct: async () => (await (await fetch(client.urls.direct.health)).json()).status === 'ok',
    agent: async () => (await client.agent.health()).status === 'ok',
    'fwd-new': () => getJson(client.urls.fwd.health, null),
    cli: () =>
      new Promise((resolve, reject) => {
        const { hostSock, container, agentPort } = client.cfg
        execFile('docker', [...dockerCli(hostSock), 'exec', container, 'wget', '-qO-', `http://127.0.0.1:${agentPort}/v1/health`], (err, stdout) => {
          if (err) reject(err)
          else resolve(JSON.parse(stdout).status === 'ok')
        })
      }),
  }[via]
  if (!once) throw new Error(`httpLatency: unknown via ${via}`)
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    let ok = false
    try {
      ok = await once()
    } catch (e) {
      errors.push(String(e?.message ?? e).slice(0, 200))
    }
    lat.push(performance.now() - t0)
    if (!ok) failures++
  }
  return { lat, failures, errors: errors.slice(0, 3) }
}

/**
 * T10: download the container's /srv/blob (`bytes` long) by `via`: 'fwd' / 'direct' Node `fetch` of busybox httpd
 * through the forward / on host loopback (body read with `for await`), 'exec' `container.spawn(['cat', …])` with
 * `for await` (the exec stdout stream every tunnel rides on), 'readFile' `container.readFile()` (the archive API, one
 * Buffer). MiB/s from the call to the last byte; bytes counted, not kept (except readFile's one Buffer).
 */
async function download(client, { via, bytes }) {
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  let got = 0
  let chunks = 0
  let status = 0
  if (via === 'fwd' || via === 'direct') {
    const res = await fetch(client.urls[via].blob)
    status = res.status
    for await (const c of res.body) {
      chunks++
      got += c.length
    }
  } else if (via === 'exec') {
    const p = await client.container.spawn(['cat', '/srv/blob'])
    for await (const { stream, data } of p) {
      chunks++
      if (stream === 'stdout') got += data.length
    }
    status = (await p.wait()).exitCode === 0 ? 200 : 500
  } else if (via === 'readFile') {
    const b = await client.container.readFile('/srv/blob')
    got = b.length
    chunks = 1
    status = 200
  } else {
    throw new Error(`download: unknown via ${via}`)
  }
  const secs = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  return { got, chunks, secs, mibps: bytes / 1048576 / secs, cpuSecs: (cpu.user + cpu.system) / 1e6, ok: got === bytes && status === 200 }
}

/** T10, untimed: SHA-256 of the blob as each route delivers it (the forward must not alter a byte). */
async function blobDigests(client) {
  const digest = async (it) => {
    const h = createHash('sha256')
    for await (const c of it) h.update(c)
    return h.digest('hex')
  }
  const fwd = await digest((await fetch(client.urls.fwd.blob)).body)
  const inside = (await client.container.exec(['sha256sum', '/srv/blob'])).text().split(' ')[0]
  return { fwd, inside }
}

/**
 * T5's TypeScript-layer cost, paired: in this one process (kind 'sdk'), the SDK's call and the same call on the
 * private native module (which the SDK itself wraps: one addon instance), alternating call by call with the order
 * flipped every pair, so scheduling noise and machine load hit both alike. Per-call latency in ms.
 */
async function tsLayer(client, { n, what }) {
  if (!client.native) {
    const nat = require(`${REPO}/native/index.cjs`)
    const engine = await nat.DockerEngine.connect({ socketPath: client.cfg.hostSock })
    const sbx = client.cfg.sbxSock ? new nat.Sandboxd({ socketPath: client.cfg.sbxSock }) : null
    const sdkSbx = client.cfg.sbxSock ? new client.sdk.Sandboxd({ socketPath: client.cfg.sbxSock }) : null
    client.native = {
      engine: { sdk: () => client.engine.ping(), native: () => engine.ping() },
      sandboxd: { sdk: () => sdkSbx.ping(), native: () => sbx.ping() },
    }
  }
  const fns = client.native[what]
  const lat = { sdk: [], native: [] }
  let failures = 0
  for (let i = 0; i < n; i++) {
    for (const k of i % 2 ? ['sdk', 'native'] : ['native', 'sdk']) {
      const t0 = performance.now()
      try {
        await fns[k]()
      } catch {
        failures++
      }
      lat[k].push(performance.now() - t0)
    }
  }
  return { ...lat, failures }
}

async function agent(kind, cfg) {
  const client = await makeClient(kind, cfg)
  // warm: connections, JIT, the engine's exec path
  for (let i = 0; i < 3; i++) await client.exec()
  const ops = { execLatency, execBatch, callLatency, tsLayer, httpLatency, download, blobDigests }
  process.on('message', async (msg) => {
    try {
      const result = await ops[msg.op](client, msg.args ?? {})
      process.send({ id: msg.id, ok: true, result })
    } catch (e) {
      process.send({ id: msg.id, ok: false, error: String(e?.stack ?? e) })
    }
  })
  process.on('disconnect', () => process.exit(0))
  process.send({ ready: true, pid: process.pid })
}

// ---------------------------------------------------------------------------
// one-shot ops (fresh process each)
// ---------------------------------------------------------------------------

/** Client CPU per exec: this process does nothing but n sequential execs. */
async function onceCpu({ kind, cfg, n, warm }) {
  const client = await makeClient(kind, cfg)
  for (let i = 0; i < warm; i++) await client.exec()
  gc()
  const c0 = process.cpuUsage()
  const ch0 = childrenCpuMs()
  const t0 = performance.now()
  let failures = 0
  for (let i = 0; i < n; i++) if (!(await client.exec())) failures++
  const wall = performance.now() - t0
  const c = process.cpuUsage(c0)
  const ownMs = (c.user + c.system) / 1000
  const childMs = childrenCpuMs() - ch0
  return { n, failures, ownMsPerExec: ownMs / n, childMsPerExec: childMs / n, cpuMsPerExec: (ownMs + childMs) / n, wallMsPerExec: wall / n }
}

/** Sample RSS every few ms while `fn` runs; returns fn's result and the peak growth over `base`. */
async function withRssWatch(fn) {
  gc()
  await sleep(50)
  gc()
  const base = rssNow()
  const hwmReset = resetPeakRss()
  let sampled = base
  const timer = setInterval(() => {
    const r = rssNow()
    if (r > sampled) sampled = r
  }, 10)
  try {
    const result = await fn()
    const peak = Math.max(sampled, hwmReset ? rssPeak() : 0, rssNow())
    return { result, base, peakGrowth: peak - base, endGrowth: rssNow() - base, hwm: hwmReset }
  } finally {
    clearInterval(timer)
  }
}

/**
 * Stream `bytes` of zeros (`streamCmd`) into JS; MiB/s and RSS growth. kind: 'sdk' / 'sbx' (`for await`),
 * 'sdk-read' / 'sbx-read' (`read(buf)`), 'dockerode'.
 */
async function onceStream({ kind, cfg, bytes }) {
  const base = kind.replace(/-read$/, '')
  const client = await makeClient(base, cfg)
  await client.exec() // connected and warm, as a real client would be
  const cmd = streamCmd(bytes)
  const run = async () => {
    const t0 = performance.now()
    const cpu0 = process.cpuUsage()
    let got = 0
    let chunks = 0
    let exitCode
    if (kind === 'sdk' || kind === 'sbx') {
      const p = await client.container.spawn(cmd)
      for await (const { stream, data } of p) {
        chunks++
        if (stream === 'stdout') got += data.length
      }
      exitCode = (await p.wait()).exitCode
    } else if (kind === 'sdk-read' || kind === 'sbx-read') {
      // bring your own buffer: one 256 KiB Buffer reused for the whole stream
      const p = await client.container.spawn(cmd)
      const buf = Buffer.allocUnsafe(256 * 1024)
      for (let r = await p.read(buf); r !== null; r = await p.read(buf)) {
        chunks++
        if (r.stream === 'stdout') got += r.bytesRead
      }
      exitCode = (await p.wait()).exitCode
    } else if (kind === 'dockerode') {
      const exec = await client.container.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true })
      const s = await exec.start({})
      const out = new PassThrough()
      const err = new PassThrough()
      out.on('data', (b) => {
        chunks++
        got += b.length
      })
      err.resume()
      client.docker.modem.demuxStream(s, out, err)
      await new Promise((resolve, reject) => {
        s.on('end', resolve)
        s.on('error', reject)
      })
      exitCode = (await exec.inspect()).ExitCode
    } else {
      throw new Error('stream: sdk, sbx or dockerode')
    }
    const secs = (performance.now() - t0) / 1000
    const cpu = process.cpuUsage(cpu0)
    return { got, chunks, exitCode, secs, mibps: bytes / 1048576 / secs, cpuSecs: (cpu.user + cpu.system) / 1e6 }
  }
  const m0 = process.memoryUsage()
  const w = await withRssWatch(run)
  // what is left once V8 has collected the chunks: native memory the process kept
  gc()
  await sleep(200)
  gc()
  const m1 = process.memoryUsage()
  return {
    ...w.result,
    ok: w.result.got === bytes && w.result.exitCode === 0,
    peakGrowth: w.peakGrowth,
    endGrowth: w.endGrowth,
    afterGcGrowth: m1.rss - w.base,
    jsAfterGcGrowth: m1.heapUsed + m1.external - (m0.heapUsed + m0.external),
    hwm: w.hwm,
  }
}

/** Start a large stream, read a little, then stop reading for pauseMs: RSS must not grow meanwhile. */
async function oncePaused({ kind, cfg, bytes, pauseMs }) {
  const client = await makeClient(kind, cfg)
  await client.exec()
  const cmd = streamCmd(bytes)
  const firstBytes = 8 * 1024 * 1024
  let got = 0
  let stop
  if (kind === 'sdk') {
    const p = await client.container.spawn(cmd)
    while (got < firstBytes) {
      const step = await p.next()
      if (step.done) break
      got += step.value.data.length
    }
    stop = async () => {
      // kill while the consumer is still paused (not discarding first): how long does kill() take then?
      const t0 = performance.now()
      await p.kill('SIGKILL')
      const killMs = performance.now() - t0
      await p.return()
      await p.wait({ timeoutMs: 15000 })
      // the same, but discarding the output (return()) before the kill
      const q = await client.container.spawn(cmd)
      for (let n = 0; n < firstBytes; ) {
        const step = await q.next()
        if (step.done) break
        n += step.value.data.length
      }
      await q.return()
      const t1 = performance.now()
      await q.kill('SIGKILL')
      const killAfterReturnMs = performance.now() - t1
      await q.wait({ timeoutMs: 15000 })
      return { killMs, killAfterReturnMs }
    }
  } else {
    const exec = await client.container.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true })
    const s = await exec.start({})
    const out = new PassThrough()
    const err = new PassThrough()
    err.resume()
    client.docker.modem.demuxStream(s, out, err)
    await new Promise((resolve) => {
      const onData = (b) => {
        got += b.length
        if (got >= firstBytes) {
          out.off('data', onData)
          out.pause() // the consumer stops reading, as a slow consumer would
          resolve()
        }
      }
      out.on('data', onData)
    })
    stop = async () => {
      s.destroy()
      out.destroy()
    }
  }
  gc()
  await sleep(20)
  const base = rssNow()
  let peak = base
  const samples = []
  const t0 = performance.now()
  while (performance.now() - t0 < pauseMs) {
    await sleep(100)
    const r = rssNow()
    samples.push(r - base)
    if (r > peak) peak = r
  }
  const growth = peak - base
  const stopped = await stop()
  return { readBeforePause: got, growth, samples, ...stopped }
}

/** images.copyTo host → VM in a fresh process: wall and RSS growth. */
async function onceCopy({ hostSock, vmSock, ref }) {
  const sdk = require(REPO)
  const host = await sdk.DockerEngine.connect({ socketPath: hostSock })
  const vm = await sdk.DockerEngine.connect({ socketPath: vmSock })
  await host.ping()
  await vm.ping()
  const w = await withRssWatch(async () => {
    const t0 = performance.now()
    const report = await host.images.copyTo(vm, ref)
    return { wallMs: performance.now() - t0, report }
  })
  return { ...w.result, peakGrowth: w.peakGrowth, endGrowth: w.endGrowth, hwm: w.hwm }
}

const ONCE = { cpu: onceCpu, stream: onceStream, paused: oncePaused, copy: onceCopy }

/**
 * Run under `strace -f -e trace=connect` by run.mjs: n pings, n sequential execs, then `batch` execs in flight,
 * each phase between two marker connect()s to a path that does not exist, so the trace shows how many engine
 * connections each phase opened.
 */
async function connsProbe({ kind, cfg, n, batch }) {
  const client = await makeClient(kind, cfg)
  await client.exec()
  await client.ping()
  const mark = (name) =>
    new Promise((resolve) => {
      const s = connect(`/nonexistent/sbx-bench-marker-${name}`)
      s.on('error', () => resolve())
      s.on('connect', () => {
        s.destroy()
        resolve()
      })
    })
  await mark('ping-start')
  for (let i = 0; i < n; i++) await client.ping()
  await mark('ping-end')
  await mark('exec-start')
  for (let i = 0; i < n; i++) await client.exec()
  await mark('exec-end')
  await mark('batch-start')
  const ok = await Promise.all(Array.from({ length: batch }, () => client.exec()))
  await mark('batch-end')
  return { n, batch, failures: ok.filter((x) => !x).length }
}

// ---------------------------------------------------------------------------

const [mode, what, json] = process.argv.slice(2)
try {
  if (mode === 'agent') {
    await agent(what, JSON.parse(json))
  } else if (mode === 'conns') {
    process.stdout.write(JSON.stringify(await connsProbe(JSON.parse(what))) + '\n')
    process.exit(0)
  } else if (mode === 'once') {
    const result = await ONCE[what](JSON.parse(json))
    process.send({ ok: true, result }, () => process.exit(0))
  } else {
    throw new Error('usage: peer.mjs agent <kind> <cfg> | once <op> <args> | conns <args>')
  }
} catch (e) {
  if (process.send) process.send({ ok: false, error: String(e?.stack ?? e) }, () => process.exit(1))
  else {
    console.error(e)
    process.exit(1)
  }
}
