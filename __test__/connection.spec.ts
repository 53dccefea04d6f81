// An engine connection whose socket goes away: typed errors that name the socket, in plain words.
// Real parts: the test engine at DOCKER_HOST, reached through a relay socket the test can take away.
import { mkdtempSync, rmSync } from 'node:fs'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { DockerEngine } from 'sandboxd'
import { dockerSocketFromEnv } from './helpers/engine.js'
import { rejection } from './helpers/local.js'

const dir = mkdtempSync(join(tmpdir(), 'sbx-conn-'))

afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** A Unix socket at `path` that relays every connection to the real engine; `close()` removes it. */
async function relay(path: string, mode: 'relay' | 'hang-up' = 'relay'): Promise<{ close(): Promise<void> }> {
  const open = new Set<Socket>()
  const server: Server = createServer((client) => {
    open.add(client)
    client.on('close', () => open.delete(client))
    client.on('error', () => {})
    if (mode === 'hang-up') {
      client.once('data', () => client.destroy())
      return
    }
    const engine = createConnection(dockerSocketFromEnv())
    engine.on('error', () => client.destroy())
    client.on('close', () => engine.destroy())
    engine.on('close', () => client.destroy())
    client.pipe(engine).pipe(client)
  })
  await new Promise<void>((r) => server.listen(path, r))
  return {
    close: () =>
      new Promise<void>((r) => {
        for (const s of open) s.destroy()
        server.close(() => r()) // Node removes the socket file
      }),
  }
}

/** No internal crate or layer names in what a user reads. */
function expectPlainWords(message: string): void {
  expect(message).not.toMatch(/hyper|legacy|client error|\(Connect\)|\(SendRequest\)/)
}

describe('an engine socket that vanished', () => {
  it('a call after the socket is gone is ERR_ENGINE_UNAVAILABLE naming the socket; a connect too', async () => {
    const path = join(dir, 'gone.sock')
    const r = await relay(path)
    const engine = await DockerEngine.connect({ socketPath: path })
    await engine.ping() // leaves a pooled keep-alive connection, which close() cuts
    await r.close()
    const e = await rejection(engine.ping())
    expect(e.code).toBe('ERR_ENGINE_UNAVAILABLE')
    expect(e.socketPath).toBe(path)
    expect(e.message).toContain(path)
    expect(e.message).toContain('no such socket')
    expectPlainWords(e.message)
    for (const call of [() => engine.version(), () => engine.containers.list(), () => engine.images.list()]) {
      const again = await rejection(call())
      expect(again.code).toBe('ERR_ENGINE_UNAVAILABLE')
      expectPlainWords(again.message)
    }
    const connect = await rejection(DockerEngine.connect({ socketPath: path }))
    expect(connect.code).toBe('ERR_ENGINE_UNAVAILABLE')
    expect(connect.message).toContain(path)
  })

  it('an engine that hangs up before answering is ERR_ENGINE_UNAVAILABLE, in plain words', async () => {
    const path = join(dir, 'hangup.sock')
    const live = await relay(path)
    const engine = await DockerEngine.connect({ socketPath: path })
    await live.close()
    const r = await relay(path, 'hang-up')
    try {
      const e = await rejection(engine.ping())
      expect(e.code).toBe('ERR_ENGINE_UNAVAILABLE')
      expect(e.socketPath).toBe(path)
      expect(e.message).toContain('closed the connection')
      expectPlainWords(e.message)
    } finally {
      await r.close()
    }
  })
})
