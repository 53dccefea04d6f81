// Images: copyTo's progress from the host engine into a VM's engine.
// Real parts: LocalSandboxd with a private dockerd per VM, the busybox test image built on the host engine.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DockerEngine, Sandboxd, type LocalSandboxd } from 'sandboxd'
import { startLocal, workspace } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')

let sbx: LocalSandboxd
let host: DockerEngine
let target: DockerEngine
const ws = workspace()

beforeAll(async () => {
  sbx = await startLocal()
  const vm = await new Sandboxd({ socketPath: sbx.socketPath }).create({ agentName: 'images', workspaceDir: ws.dir })
  host = await DockerEngine.local()
  target = await vm.engine()
})

afterAll(async () => {
  await sbx?.stop()
  ws.cleanup()
})

describe('images.copyTo onProgress', () => {
  it('reports (bytesMoved, totalBytes), ends with bytesMoved === totalBytes before the promise resolves; not for a skip', async () => {
    const calls: Array<[number, number]> = []
    // The first call blocks the JS thread for a while, so the last progress call and the promise's settlement are
    // both waiting when it is free again: the last call must still come first.
    const onProgress = (n: number, total: number): void => {
      if (calls.push([n, total]) === 1) for (const until = Date.now() + 2000; Date.now() < until; );
    }
    const report = await host.images.copyTo(target, IMAGE!, { onProgress })
    // no tick awaited: the last call has already run
    expect(report.skipped).toBe(false)
    expect(calls.length).toBeGreaterThan(1)
    expect(calls.at(-1)).toEqual([report.bytes, report.bytes])
    for (const [i, [n, total]] of calls.entries()) {
      expect(n).toBeLessThanOrEqual(total)
      if (i > 0) {
        expect(n).toBeGreaterThanOrEqual(calls[i - 1]![0])
        expect(total).toBeGreaterThanOrEqual(calls[i - 1]![1])
      }
    }
    // before the tar passes it, the total is the image's size from inspect: an estimate a little below the tar
    const size = (await host.images.inspect(IMAGE!))!.size
    expect(calls[0]![1]).toBe(Math.max(size, calls[0]![0]))
    expect(report.bytes).toBeGreaterThanOrEqual(size)
    console.log(`copyTo ${IMAGE}: inspect size ${size} B, tar ${report.bytes} B (+${((100 * (report.bytes - size)) / size).toFixed(2)} %), ${calls.length} calls`)

    const skipped: Array<[number, number]> = []
    const again = await host.images.copyTo(target, IMAGE!, { onProgress: (n, total) => skipped.push([n, total]) })
    expect(again.skipped).toBe(true)
    await new Promise((r) => setTimeout(r, 100))
    expect(skipped).toEqual([])
  })
})
