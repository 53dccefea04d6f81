// Shared set-up for specs that work in a LocalSandboxd VM: LocalSandboxd with a private dockerd per VM, one VM,
// and (unless a spec asks for less) the busybox test image copied in from the host engine and a running `box`.
// A spec calls useVm() once at its top level; the bindings below are set by its beforeAll and read by the tests
// as live imports. Vitest runs each spec file in its own process, so each file gets its own LocalSandboxd.
import { afterAll, beforeAll } from 'vitest'
import { DockerEngine, Sandboxd, type Container, type LocalSandboxd, type Vm } from 'sandboxd'
import { startLocal, workspace } from './local.js'

/** The LocalSandboxd this spec file started. */
export let sbx: LocalSandboxd
/** The VM created in it. */
export let vm: Vm
/** The host engine (DOCKER_HOST), where the test images are built. */
export let host: DockerEngine
/** The VM's Docker engine. */
export let engine: DockerEngine
/** A container from the test image running `sleep 100000` in the VM, named `box` (only with `box: true`). */
export let box: Container
/** The VM's workspace directory, removed after the file. */
export let ws: { dir: string; cleanup: () => void }

/** What useVm() puts in the VM besides the VM itself. */
export interface VmContents {
  /** Copy SANDBOXD_TEST_IMAGE from the host engine into the VM's engine (default true). */
  image?: boolean
  /** Run `box` from that image (default: the value of `image`). */
  box?: boolean
}

/**
 * Register the beforeAll/afterAll that start LocalSandboxd, create a VM named after `agentName` and fill it as
 * `contents` says, then stop it all after the file. Call it at a spec's top level, before the spec's own hooks:
 * Vitest runs beforeAll hooks in order and afterAll hooks in reverse, so the spec's own hooks see a running VM.
 */
export function useVm(agentName: string, contents: VmContents = {}): void {
  const { image = true, box: withBox = image } = contents
  const testImage = process.env.SANDBOXD_TEST_IMAGE
  if (image && !testImage) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')
  if (withBox && !image) throw new Error('useVm: a box needs the test image (image: true)')
  ws = workspace()

  beforeAll(async () => {
    sbx = await startLocal()
    vm = await new Sandboxd({ socketPath: sbx.socketPath }).create({ agentName, workspaceDir: ws.dir })
    host = await DockerEngine.local()
    engine = await vm.engine()
    if (image) await host.images.copyTo(engine, testImage!)
    if (withBox) box = await engine.containers.run({ image: testImage!, name: 'box', cmd: ['sleep', '100000'] })
  })

  afterAll(async () => {
    await sbx?.stop()
    ws.cleanup()
  })
}

/** Processes in the container other than PID 1 (docker-init), its main command and the `ps` itself. */
export async function strayProcesses(c: Container): Promise<string[]> {
  const ps = await c.exec(['ps', '-o', 'pid,args'])
  return ps
    .text()
    .split('\n')
    .slice(1)
    .map((l) => l.trim())
    .filter((l) => l && !/^1 /.test(l) && !l.includes('ps -o pid,args') && !/^\d+ sleep 100000$/.test(l))
}
