// Shared helpers for the benchmark (bench/run.mjs orchestrates, bench/peer.mjs measures).
// Bench code only: it may use child_process freely; the package itself never does.
import { createRequire } from 'node:module'
import { readdirSync, readlinkSync, readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { PassThrough } from 'node:stream'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const require = createRequire(path.join(REPO, 'package.json'))

export const MiB = 1024 * 1024
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** The command every exec-latency peer runs: `sh -c 'echo hi'` with one env var. */
export const EXEC_SCRIPT = 'echo hi'
export const EXEC_ENV = { BENCH_VAR: 'bench-value' }
export const EXEC_EXPECT = 'hi\n'

/**
 * T3's producer: `bytes` (a whole number of MiB) of zeros in 1 MiB writes. Not busybox `head -c`: it copies
 * through stdio a byte at a time and tops out near 100 MiB/s on this machine, so every client measured the
 * producer; `dd` feeds the engine at ~250–300 MiB/s.
 */
export function streamCmd(bytes) {
  if (bytes % MiB) throw new Error(`streamCmd: ${bytes} is not a whole number of MiB`)
  return ['dd', 'if=/dev/zero', `bs=${MiB}`, `count=${bytes / MiB}`, 'status=none']
}

// ---------------------------------------------------------------------------
// statistics
// ---------------------------------------------------------------------------

export function quantile(xs, q) {
  if (!xs.length) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const pos = (s.length - 1) * q
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  return s[lo] + (s[hi] - s[lo]) * (pos - lo)
}
export const median = (xs) => quantile(xs, 0.5)
export const p90 = (xs) => quantile(xs, 0.9)
export const max = (xs) => (xs.length ? Math.max(...xs) : NaN)
export const min = (xs) => (xs.length ? Math.min(...xs) : NaN)
export const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN)

// ---------------------------------------------------------------------------
// process facts (Linux /proc)
// ---------------------------------------------------------------------------

/** Open fds of this process, and how many of them are sockets. */
export function fdCounts() {
  let fds = 0
  let sockets = 0
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const l = readlinkSync(`/proc/self/fd/${fd}`)
      fds++
      if (l.startsWith('socket:')) sockets++
    } catch {
      // the fd readdir itself used is gone already
    }
  }
  return { fds, sockets }
}

function statusKiB(field) {
  const m = readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))
  return m ? Number(m[1]) : NaN
}
/** Current RSS in bytes. */
export const rssNow = () => statusKiB('VmRSS') * 1024
/** Peak RSS since start (or since resetPeakRss) in bytes. */
export const rssPeak = () => statusKiB('VmHWM') * 1024
/** Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). Returns false when not allowed. */
export function resetPeakRss() {
  try {
    writeFileSync('/proc/self/clear_refs', '5')
    return true
  } catch {
    return false
  }
}
/**
 * The main (JS) thread's scheduler stats in ms: time on a CPU and time waiting for one
 * (/proc/self/task/<pid>/schedstat; null when the kernel has no schedstats).
 */
export function mainThreadSched() {
  try {
    const [run, wait] = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ').map(Number)
    return { cpu: run / 1e6, wait: wait / 1e6 }
  } catch {
    return null
  }
}

/** CPU time (ms) of this process's reaped children (utime + stime from /proc/self/stat). */
export function childrenCpuMs() {
  const stat = readFileSync('/proc/self/stat', 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // after "pid (comm) ": f[0] = state (field 3) ... cutime = field 16, cstime = field 17
  const ticks = Number(f[13]) + Number(f[14])
  return (ticks * 1000) / 100 // CLK_TCK is 100 on Linux
}

// ---------------------------------------------------------------------------
// raw engine HTTP (setup/cleanup only, never measured)
// ---------------------------------------------------------------------------

export function engineRequest(socketPath, method, p, body) {
  return new Promise((resolve, reject) => {
    const headers = { Host: 'docker' }
    let payload
    if (body !== undefined) {
      payload = Buffer.from(JSON.stringify(body))
      headers['Content-Type'] = 'application/json'
      headers['Content-Length'] = payload.length
    }
    const req = request({ socketPath, method, path: p, headers, agent: false }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let json
        try {
          json = JSON.parse(text)
        } catch {
          json = undefined
        }
        resolve({ status: res.statusCode, text, json })
      })
    })
    req.on('error', reject)
    req.end(payload)
  })
}

// ---------------------------------------------------------------------------
// dockerode peer: the idiomatic exec (create, start, demux, inspect for the exit code)
// ---------------------------------------------------------------------------

/**
 * Run `cmd` in `container` (a dockerode Container) and collect stdout/stderr and the exit code, the way a
 * dockerode user does it: exec.create, exec.start, modem.demuxStream, exec.inspect after the stream ends.
 */
export async function dockerodeExec(docker, container, cmd, env) {
  const exec = await container.exec({
    Cmd: cmd,
    Env: env ? Object.entries(env).map(([k, v]) => `${k}=${v}`) : undefined,
    AttachStdout: true,
    AttachStderr: true,
  })
  const stream = await exec.start({})
  const out = []
  const err = []
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  stdout.on('data', (b) => out.push(b))
  stderr.on('data', (b) => err.push(b))
  docker.modem.demuxStream(stream, stdout, stderr)
  await new Promise((resolve, reject) => {
    stream.on('end', resolve)
    stream.on('close', resolve)
    stream.on('error', reject)
  })
  let info = await exec.inspect()
  // the engine may report the exec running for a moment after the stream ended (the SDK polls the same way)
  for (let i = 0; info.Running && i < 150; i++) {
    await sleep(20)
    info = await exec.inspect()
  }
  return { exitCode: info.ExitCode, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }
}

/** The docker CLI argv prefix for an engine socket. */
export const dockerCli = (socketPath) => ['-H', `unix://${socketPath}`]
