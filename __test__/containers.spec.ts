// Containers on an engine: what creating one under a name already taken gives.
// Real parts: the test engine at DOCKER_HOST and the busybox test image.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DockerEngine } from 'sandboxd'
import { rejection } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')

let host: DockerEngine
const name = `sbx-conflict-${process.pid}`

beforeAll(async () => {
  host = await DockerEngine.local()
})

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
