// Files in a container through the archive API: what a missing path, a directory and a symbolic link give;
// writeFile/readFile and archives whole, and archives streamed in both directions.
// Real parts: LocalSandboxd with a private dockerd per VM, the busybox test image copied in, `tar` on the host.
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, createReadStream, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { rejection } from './helpers/local.js'
import { box, useVm, ws } from './helpers/vm.js'

useVm('files')

beforeAll(async () => {
  await box.sh(
    'mkdir -p /tmp/d/sub && printf hi > /tmp/d/f && ln -s /tmp/d/f /tmp/abs && ln -s d/f /tmp/rel && ' +
      'ln -s rel /tmp/twice && ln -s /tmp/d /tmp/dirlink && ln -s /nowhere /tmp/dangling',
  )
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

describe('files', () => {
  it('writeFile/readFile/putArchive/getArchive through the archive API', async () => {
    const data = Buffer.from([0, 1, 2, 255, 254, 10])
    await box.writeFile('/tmp/bin.dat', data, { mode: 0o600 })
    expect((await box.readFile('/tmp/bin.dat')).equals(data)).toBe(true)
    expect((await box.exec(['stat', '-c', '%a', '/tmp/bin.dat'])).text()).toBe('600\n')
    await box.writeFile('/tmp/text.txt', 'héllo')
    expect((await box.readFile('/tmp/text.txt')).toString()).toBe('héllo')
    const tar = await box.getArchive('/tmp/text.txt')
    expect(tar.length % 512).toBe(0)
    await box.exec(['mkdir', '-p', '/tmp/unpacked'])
    await box.putArchive('/tmp/unpacked', tar)
    expect((await box.readFile('/tmp/unpacked/text.txt')).toString()).toBe('héllo')
    expect((await rejection(box.readFile('/no/such/file'))).code).toBe('ERR_PATH_NOT_FOUND')
    expect((await rejection(box.writeFile('relative.txt', 'x'))).code).toBe('ERR_INVALID_ARGUMENT')
  })

  it('container.files is the same files API as sandbox.files (files-api.spec.ts covers it in depth)', async () => {
    expect(box.files).toBe(box.files)
    await box.files.write([{ path: '/tmp/cf/a b/-x', data: 'one' }, { path: '/tmp/cf/ü', data: 'two', mode: 0o600 }], { parents: true })
    expect((await box.files.list('/tmp/cf')).map((e) => [e.name, e.type])).toEqual([
      ['a b', 'directory'],
      ['ü', 'file'],
    ])
    expect(await box.files.read('/tmp/cf/a b/../a b/-x', { encoding: 'utf8' })).toBe('one')
    expect((await box.files.stat('/tmp/cf/ü')).mode).toBe(0o600)
    expect((await rejection(box.files.list('/tmp/cf/ü'))).code).toBe('ERR_NOT_A_DIRECTORY')
    await box.files.remove('/tmp/cf', { recursive: true })
    expect(await box.files.exists('/tmp/cf')).toBe(false)
  })
})

describe('streamed archives', () => {
  const MiB = 1024 * 1024

  it('getArchiveStream: 64 MiB read out in pieces, bytes exact, RSS bounded; break closes it; a bad path rejects next()', async () => {
    await box.sh('mkdir -p /tmp/out && head -c 67108864 /dev/urandom > /tmp/out/big && printf small > /tmp/out/small')
    const want = (await box.exec(['sha256sum', '/tmp/out/big'])).text().split(' ')[0]
    const dir = mkdtempSync(join(ws.dir, 'get-'))
    const tarPath = join(dir, 'out.tar')
    const fd = openSync(tarPath, 'w')
    global.gc?.()
    const rss0 = process.memoryUsage().rss
    let peak = rss0
    let pieces = 0
    for await (const piece of box.getArchiveStream('/tmp/out')) {
      expect(Buffer.isBuffer(piece)).toBe(true)
      writeSync(fd, piece)
      pieces++
      peak = Math.max(peak, process.memoryUsage.rss())
    }
    closeSync(fd)
    expect(pieces).toBeGreaterThan(16) // streamed, not handed over in one buffer
    expect((peak - rss0) / MiB).toBeLessThan(32)
    execFileSync('tar', ['-xf', tarPath, '-C', dir])
    expect(createHash('sha256').update(readFileSync(join(dir, 'out/big'))).digest('hex')).toBe(want)
    expect(readFileSync(join(dir, 'out/small'), 'utf8')).toBe('small')

    // Leaving early closes the engine's connection; the next stream works.
    for await (const piece of box.getArchiveStream('/tmp/out')) {
      expect(piece.length).toBeGreaterThan(0)
      break
    }
    const again = box.getArchiveStream('/tmp/out/small')
    expect((await again.next()).done).toBe(false)
    await again.return()
    expect((await again.next()).done).toBe(true)

    // The engine locks the container while an archive is being read: an exec cannot even be created. Its
    // timeoutMs and signal still bound the call; once the stream is closed, execs work again.
    const held = box.getArchiveStream('/tmp/out')
    expect((await held.next()).done).toBe(false)
    let t0 = Date.now()
    const late = await rejection(box.exec(['true'], { timeoutMs: 1000 }))
    expect(late.code).toBe('ERR_TIMEOUT')
    expect(Date.now() - t0).toBeLessThan(5000)
    t0 = Date.now()
    const stopped = await rejection(box.exec(['true'], { signal: AbortSignal.timeout(500) }))
    expect(stopped.name).toBe('TimeoutError')
    expect(Date.now() - t0).toBeLessThan(5000)
    await held.return()
    expect((await box.exec(['true'], { timeoutMs: 10_000 })).exitCode).toBe(0)

    const missing = await rejection(box.getArchiveStream('/no/such/dir').next())
    expect(missing.code).toBe('ERR_PATH_NOT_FOUND')
    expect(missing.path).toBe('/no/such/dir')
    expect((await rejection(box.getArchiveStream('relative').next())).code).toBe('ERR_INVALID_ARGUMENT')
  })

  it('putArchiveStream: a 32 MiB tar streamed in 64 KiB writes lands byte-exact; end() waits for extraction', async () => {
    const dir = mkdtempSync(join(ws.dir, 'put-'))
    mkdirSync(join(dir, 'src/sub'), { recursive: true })
    const big = randomBytes(32 * MiB)
    writeFileSync(join(dir, 'src/sub/big.bin'), big)
    writeFileSync(join(dir, 'src/note.txt'), 'héllo\n')
    execFileSync('tar', ['-cf', join(dir, 'in.tar'), '-C', dir, 'src'])
    await box.exec(['mkdir', '-p', '/tmp/in'])
    const up = box.putArchiveStream('/tmp/in', { timeoutMs: 60_000 })
    let writes = 0
    for await (const piece of createReadStream(join(dir, 'in.tar'), { highWaterMark: 64 * 1024 })) {
      await up.write(piece as Buffer)
      writes++
    }
    await up.end()
    expect(writes).toBeGreaterThan(500)
    const sum = (await box.exec(['sha256sum', '/tmp/in/src/sub/big.bin'])).text().split(' ')[0]
    expect(sum).toBe(createHash('sha256').update(big).digest('hex'))
    expect((await box.readFile('/tmp/in/src/note.txt')).toString()).toBe('héllo\n')
    const late = await rejection(up.write(Buffer.from('x')))
    expect(late.code).toBe('ERR_INVALID_ARGUMENT')
  })

  it('putArchiveStream errors: missing directory, abort, signal, dispose: typed errors, and the client goes on', async () => {
    const tarOf = (name: string, bytes: number): Buffer => {
      const dir = mkdtempSync(join(ws.dir, 'tar-'))
      writeFileSync(join(dir, name), randomBytes(bytes))
      return execFileSync('tar', ['-cf', '-', '-C', dir, name], { maxBuffer: 64 * MiB })
    }
    // A directory that is not there: write() or end() rejects with the path.
    const lost = box.putArchiveStream('/no/such/dir')
    const e = await rejection(lost.write(tarOf('a', 1024)).then(() => lost.end()))
    expect(e.code).toBe('ERR_PATH_NOT_FOUND')
    expect(e.path).toBe('/no/such/dir')
    expect((await rejection(box.putArchiveStream('relative/dir').end())).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(box.putArchiveStream('/tmp', { timeoutMs: -1 }).end())).code).toBe('ERR_INVALID_ARGUMENT')

    // abort() halfway through a 4 MiB file: ABORT_ERR after, and the file is not there whole.
    await box.exec(['mkdir', '-p', '/tmp/cut'])
    const tar = tarOf('cut.bin', 4 * MiB)
    const up = box.putArchiveStream('/tmp/cut')
    await up.write(tar.subarray(0, 2 * MiB))
    await up.abort()
    expect((await rejection(up.end())).code).toBe('ABORT_ERR')
    expect((await rejection(up.write(tar.subarray(2 * MiB)))).code).toBe('ABORT_ERR')
    const size = (await box.sh('stat -c %s /tmp/cut/cut.bin 2>/dev/null || echo none')).text().trim()
    expect(size).not.toBe(String(4 * MiB))

    // The AbortSignal given at the start aborts the upload: later write() and end() reject.
    const ac = new AbortController()
    const signalled = box.putArchiveStream('/tmp/cut', { signal: ac.signal })
    await signalled.write(tar.subarray(0, 512 * 1024))
    ac.abort()
    expect(await rejection(signalled.write(tar.subarray(512 * 1024)))).toBe(ac.signal.reason)
    expect(await rejection(signalled.end())).toBe(ac.signal.reason)

    // await using without end(): disposed = aborted, never a short archive committed.
    {
      await using partial = box.putArchiveStream('/tmp/cut')
      await partial.write(tar.subarray(0, 1024 * 1024))
    }
    const after = (await box.sh('stat -c %s /tmp/cut/cut.bin 2>/dev/null || echo none')).text().trim()
    expect(after).not.toBe(String(4 * MiB))
    // The client still works.
    const ok = box.putArchiveStream('/tmp/cut')
    await ok.write(tar)
    await ok.end()
    expect((await box.exec(['stat', '-c', '%s', '/tmp/cut/cut.bin'])).text().trim()).toBe(String(4 * MiB))
  })
})
