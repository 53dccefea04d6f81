// Files in a container through the archive API: what a missing path, a directory and a symbolic link give.
// Real parts: the test engine at DOCKER_HOST and the busybox test image.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DockerEngine, type Container } from 'sandboxd'
import { rejection } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')

let box: Container

beforeAll(async () => {
  const host = await DockerEngine.local()
  box = await host.containers.run({ image: IMAGE!, cmd: ['sleep', '100000'] })
  await box.sh(
    'mkdir -p /tmp/d/sub && printf hi > /tmp/d/f && ln -s /tmp/d/f /tmp/abs && ln -s d/f /tmp/rel && ' +
      'ln -s rel /tmp/twice && ln -s /tmp/d /tmp/dirlink && ln -s /nowhere /tmp/dangling',
  )
})

afterAll(async () => {
  await box?.remove({ force: true })
})

describe('a missing path is ERR_PATH_NOT_FOUND, with the path', () => {
  it.each([
    ['readFile', () => box.readFile('/no/such/file')],
    ['getArchive', () => box.getArchive('/no/such/file')],
    ['getArchiveStream', () => box.getArchiveStream('/no/such/file').next()],
  ])('%s', async (_label, call) => {
    const e = await rejection(call())
    expect(e.code).toBe('ERR_PATH_NOT_FOUND')
    expect(e.path).toBe('/no/such/file')
    expect(e.statusCode).toBe(404)
    expect(e.message).toContain('/no/such/file')
  })

  it.each([
    ['writeFile', () => box.writeFile('/no/such/dir/f', 'x')],
    ['putArchive', () => box.putArchive('/no/such/dir', Buffer.alloc(1024))],
    ['putArchiveStream', () => box.putArchiveStream('/no/such/dir').end()],
  ])('%s into a missing directory', async (_label, call) => {
    const e = await rejection(call())
    expect(e.code).toBe('ERR_PATH_NOT_FOUND')
    expect(e.path).toBe('/no/such/dir')
  })

  it('a bad path is still ERR_INVALID_ARGUMENT', async () => {
    expect((await rejection(box.readFile('relative'))).code).toBe('ERR_INVALID_ARGUMENT')
  })
})

describe('readFile of something that is not a regular file', () => {
  it('a directory is ERR_NOT_A_FILE, found before its contents are read: the container is not left locked', async () => {
    // 64 MiB inside: reading it whole would take a while and hold the engine's lock on the container meanwhile
    await box.sh('head -c 67108864 /dev/zero > /tmp/d/sub/big')
    const e = await rejection(box.readFile('/tmp/d'))
    expect(e.code).toBe('ERR_NOT_A_FILE')
    expect(e.path).toBe('/tmp/d')
    expect(e.fileType).toBe('directory')
    expect(e.message).toContain('getArchive')
    expect((await box.exec(['true'], { timeoutMs: 5000 })).exitCode).toBe(0)
    await box.sh('rm /tmp/d/sub/big')
  })

  it('symbolic links are followed, absolute and relative, as fs.readFile does', async () => {
    for (const p of ['/tmp/abs', '/tmp/rel', '/tmp/twice']) expect((await box.readFile(p)).toString()).toBe('hi')
    expect((await box.readFile('/bin/sh')).length).toBeGreaterThan(100_000) // busybox itself
  })

  it('a link to a directory and a dangling link name the path asked for and where it led', async () => {
    const dir = await rejection(box.readFile('/tmp/dirlink'))
    expect(dir).toMatchObject({ code: 'ERR_NOT_A_FILE', fileType: 'directory', path: '/tmp/dirlink', resolvedPath: '/tmp/d' })
    const dangling = await rejection(box.readFile('/tmp/dangling'))
    expect(dangling).toMatchObject({ code: 'ERR_PATH_NOT_FOUND', path: '/tmp/dangling', resolvedPath: '/nowhere' })
  })
})
