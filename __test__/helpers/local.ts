// Shared set-up for specs that need LocalSandboxd with one private dockerd per VM.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalSandboxd } from 'sandboxd'

/** Start LocalSandboxd on the dockerd backend, or fail loudly: these tests need root and dockerd. */
export async function startLocal(): Promise<LocalSandboxd> {
  if (process.getuid?.() !== 0) {
    throw new Error('these tests need root: LocalSandboxd starts one private dockerd per VM (run `npm test` as root)')
  }
  const sbx = await LocalSandboxd.start({ backend: 'dockerd' })
  if (sbx.backend !== 'dockerd') throw new Error(`expected the dockerd backend, got ${sbx.backend}`)
  return sbx
}

/** A fresh workspace directory, removed by the returned cleanup. */
export function workspace(prefix = 'sbx-ws-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Whether a process with this PID still exists (zombies count as gone). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.split(') ')[1]?.[0] !== 'Z'
  } catch {
    return false
  }
}

/** A LocalSandboxd VM's engine directories (`<root>/engines/<vm>.<random>`: one per start of its dockerd). */
export function engineDirs(root: string, vmName: string): string[] {
  const engines = join(root, 'engines')
  if (!existsSync(engines)) return []
  return readdirSync(engines)
    .filter((d) => d.startsWith(`${vmName}.`))
    .map((d) => join(engines, d))
}

/** Mount points at or below `dir`. */
export function mountsUnder(dir: string): string[] {
  const info = readFileSync('/proc/self/mountinfo', 'utf8')
  return info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p && (p === dir || p.startsWith(dir + '/')))
}

/** The exact error a promise rejects with (fails the test if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<Error & Record<string, any>> {
  try {
    await p
  } catch (e) {
    return e as Error & Record<string, any>
  }
  throw new Error('expected the promise to reject, but it resolved')
}
