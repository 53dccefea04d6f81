// Node exits promptly once the SDK's handles are closed (or simply dropped): checked in child processes.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { LocalSandboxd } from 'sandboxd'
import { alive } from './helpers/local.js'

const CHILD = fileURLToPath(new URL('./fixtures/exit-child.mjs', import.meta.url))

/** Run the child; resolve with its report and how long it took to exit after reporting. */
function runChild(mode: string, limitMs = 20_000): Promise<{ report: any; exitAfterMs: number; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, mode], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const killer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`child '${mode}' did not exit within ${limitMs} ms; stdout=${out} stderr=${err}`))
    }, limitMs)
    child.on('exit', (code) => {
      clearTimeout(killer)
      const line = out.trim().split('\n').pop() ?? ''
      let report: any
      try {
        report = JSON.parse(line)
      } catch {
        return reject(new Error(`child '${mode}' printed no report (code ${code}); stdout=${out} stderr=${err}`))
      }
      resolve({ report, exitAfterMs: Date.now() - report.done, code })
    })
  })
}

describe('process exit', () => {
  it('exits promptly after Sandboxd and LocalSandboxd handles are closed', async () => {
    const r = await runChild('closed')
    expect(r.code).toBe(0)
    expect(r.exitAfterMs).toBeLessThan(2000)
  })

  it('exits promptly when handles are dropped without stop(), and kills the VM engines on the way out', async () => {
    const r = await runChild('forgotten')
    expect(r.code).toBe(0)
    expect(r.exitAfterMs).toBeLessThan(5000)
    expect(r.report.pids).toHaveLength(1)
    for (const pid of r.report.pids) expect(alive(pid)).toBe(false)
    expect(existsSync(r.report.root)).toBe(false)
  })

  it('a process that dies of an uncaught exception still takes its VM engines down', async () => {
    const r = await runChild('crashed')
    expect(r.code).not.toBe(0)
    expect(r.report.pids).toHaveLength(1)
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline && r.report.pids.some((p: number) => alive(p))) await new Promise((res) => setTimeout(res, 200))
    for (const pid of r.report.pids) expect(alive(pid)).toBe(false)
    // nothing of that engine is left running (containerd included)
    const { readdirSync, readFileSync } = await import('node:fs')
    const stray = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(r.report.root)
        } catch {
          return false
        }
      })
    expect(stray).toEqual([])
    // what a crashed process cannot remove: its LocalSandboxd root's own small files (socket, owner, vm/ and
    // engine dirs); the next LocalSandboxd started with a default root removes them
    const { rmSync } = await import('node:fs')
    expect(existsSync(join(r.report.root, 'owner'))).toBe(true)
    const next = await LocalSandboxd.start({ backend: 'dockerd' })
    try {
      expect(existsSync(r.report.root)).toBe(false)
      expect(existsSync(next.root)).toBe(true)
    } finally {
      await next.stop()
      rmSync(r.report.root, { recursive: true, force: true })
    }
  })

  it('exits promptly after exec processes and iterators are closed or dropped', async () => {
    const r = await runChild('processes', 60_000)
    expect(r.code).toBe(0)
    expect(r.exitAfterMs).toBeLessThan(2000)
  })

  it('exits promptly after v1 sandboxes, their interact sockets and LocalSandboxd are closed or abandoned', async () => {
    const r = await runChild('v1', 90_000)
    expect(r.code).toBe(0)
    expect(r.exitAfterMs).toBeLessThan(2000)
  })

  it('exits promptly after agent sessions are closed or their turn iterators abandoned', async () => {
    const r = await runChild('sessions', 60_000)
    expect(r.code).toBe(0)
    expect(r.exitAfterMs).toBeLessThan(3000)
  })

  it('a worker thread using the SDK can be terminated mid-call; the main thread goes on and exits promptly', async () => {
    const r = await runChild('worker', 30_000)
    expect(r.report.workerExit).toBe(1)
    expect(r.report.listed).toBe('ERR_TIMEOUT')
    expect(r.code).toBe(0)
    expect(r.exitAfterMs).toBeLessThan(2000)
  })

  it('exits promptly after an aborted call', async () => {
    const r = await runChild('aborted')
    expect(r.report.code).toBe('AbortError') // the signal's own reason (a DOMException)
    expect(r.code).toBe(0)
    expect(r.exitAfterMs).toBeLessThan(2000)
  })
})
