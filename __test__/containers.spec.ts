// Containers on an engine: their life cycle in a VM, and what creating one under a name already taken gives.
// Real parts: LocalSandboxd with a private dockerd per VM, the test engine at DOCKER_HOST and the busybox test image.
import { afterAll, describe, expect, it } from 'vitest'
import { rejection } from './helpers/local.js'
import { engine, host, useVm } from './helpers/vm.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')

const name = `sbx-conflict-${process.pid}`

useVm('containers', { box: false })

afterAll(async () => {
  await (await host?.containers.get(name))?.remove({ force: true })
})

describe('containers.run({ name })', () => {
  it('a name in use is ERR_CONTAINER_CONFLICT with the name and the existing id; nothing else is created', async () => {
    const first = await host.containers.run({ image: IMAGE!, name, cmd: ['sleep', '100000'] })
    const before = (await host.containers.list({ all: true })).length
    const e = await rejection(host.containers.run({ image: IMAGE!, name, cmd: ['sleep', '100000'] }))
    expect(e.code).toBe('ERR_CONTAINER_CONFLICT')
    expect(e.containerName).toBe(name)
    expect(e.existingContainerId).toBe(first.id)
    expect(e.statusCode).toBe(409)
    expect(e.engineMessage).toContain('already in use')
    expect(e.message).toContain(name)
    expect((await host.containers.list({ all: true })).length).toBe(before)
    // the name is free again once the first container is gone
    await first.remove({ force: true })
    const again = await host.containers.run({ image: IMAGE!, name, cmd: ['sleep', '100000'] })
    expect(again.name).toBe(name)
  })
})

describe('containers', () => {
  it('run/get/list/inspect/stop/start/ensureRunning/wait/logs/remove', async () => {
    const c = await engine.containers.run({
      image: IMAGE!,
      name: 'life',
      cmd: ['sh', '-c', 'echo out-line; echo err-line >&2; sleep 100000'],
      env: { API_KEY: 'sk-secret-123', PLAIN: 'x' },
      labels: { 'sandboxd.test': 'life' },
    })
    expect(c.name).toBe('life')
    expect((await engine.containers.get('life'))?.id).toBe(c.id)
    expect(await engine.containers.get('nobody')).toBeNull()
    const listed = await engine.containers.list({ labels: ['sandboxd.test=life'] })
    expect(listed.map((r) => r.id)).toEqual([c.id])
    const info = await c.inspect()
    expect(info).toMatchObject({ running: true, name: 'life', init: true, labels: { 'sandboxd.test': 'life' } })
    expect(info.envKeys).toEqual(expect.arrayContaining(['API_KEY', 'PLAIN']))
    expect(JSON.stringify(info)).not.toContain('sk-secret-123')

    await new Promise((r) => setTimeout(r, 200))
    const logs: string[] = []
    for await (const chunk of c.logs()) logs.push(`${chunk.stream}:${chunk.data.toString().trim()}`)
    expect(logs.sort()).toEqual(['stderr:err-line', 'stdout:out-line'])

    await c.stop({ timeoutSec: 1 })
    expect((await c.inspect()).running).toBe(false)
    expect((await rejection(c.exec(['true']))).code).toBe('ERR_CONTAINER_NOT_RUNNING')
    await c.ensureRunning()
    expect((await c.inspect()).running).toBe(true)
    await c.ensureRunning()

    const quick = await engine.containers.run({ image: IMAGE!, cmd: ['sh', '-c', 'exit 7'] })
    expect(await quick.wait()).toBe(7)
    await quick.remove()

    await c.remove({ force: true })
    expect(await engine.containers.get('life')).toBeNull()
    expect((await rejection(c.inspect())).code).toBe('ERR_CONTAINER_NOT_FOUND')
  })
})
