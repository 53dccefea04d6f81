// Images: copyTo from the host engine into a VM's engine (progress, a skipped second copy, a missing image).
// Real parts: LocalSandboxd with a private dockerd per VM, the busybox test image built on the host engine.
import { describe, expect, it } from 'vitest'
import { rejection } from './helpers/local.js'
import { engine as target, host, useVm, vm } from './helpers/vm.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')

// The VM starts without the test image: the first copy must not be skipped.
useVm('images', { image: false })

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

describe('images', () => {
  it('copies an image built on the host into the VM, runs it there, and skips a second copy', async () => {
    const tag = 'sbx-test/copied:1'
    // Build a new image on the host engine (a commit of a container with a marker file).
    const builder = await host.containers.run({ image: IMAGE!, cmd: ['sh', '-c', 'echo built-on-host > /marker; sleep 100000'] })
    await new Promise((r) => setTimeout(r, 300))
    const commit = await fetchCommit(host.socketPath, builder.id, 'sbx-test/copied', '1')
    expect(commit).toMatch(/^sha256:/)
    await builder.remove({ force: true })

    const target = await vm.engine()
    expect(await target.images.exists(tag)).toBe(false)
    const progress: number[] = []
    const first = await host.images.copyTo(target, tag, { onProgress: (n) => progress.push(n) })
    expect(first.skipped).toBe(false)
    expect(first.bytes).toBeGreaterThan(1_000_000)
    expect(first.imageId).toBe(commit)
    expect((await target.images.inspect(tag))?.id).toBe(commit)
    await new Promise((r) => setImmediate(r))
    expect(progress.length).toBeGreaterThan(0)
    expect(progress.every((n, i) => i === 0 || n >= progress[i - 1]!)).toBe(true)

    const second = await host.images.copyTo(target, tag)
    expect(second).toMatchObject({ skipped: true, bytes: 0, imageId: commit })

    const c = await target.containers.run({ image: tag, cmd: ['sleep', '100000'] })
    try {
      expect((await c.exec(['cat', '/marker'])).text()).toBe('built-on-host\n')
    } finally {
      await c.remove({ force: true })
    }
    expect((await rejection(host.images.copyTo(target, 'sbx-test/nope:0'))).code).toBe('ERR_IMAGE_NOT_FOUND')
    const missing = await rejection(target.containers.run({ image: 'sbx-test/nope:0' }))
    expect(missing.code).toBe('ERR_IMAGE_NOT_FOUND')
    expect(missing.message).toContain('copyTo')
  })
})

/** POST /commit on an engine (test-only: the SDK has no commit API yet). */
async function fetchCommit(socketPath: string, id: string, repo: string, tag: string): Promise<string> {
  const { request } = await import('node:http')
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, method: 'POST', path: `/commit?container=${id}&repo=${repo}&tag=${tag}`, headers: { Host: 'docker' } },
      (res) => {
        let body = ''
        res.on('data', (d) => (body += d))
        res.on('end', () => (res.statusCode === 201 ? resolve(JSON.parse(body).Id) : reject(new Error(body))))
      },
    )
    req.on('error', reject)
    req.end()
  })
}
