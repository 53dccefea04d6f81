// A VM's Docker engine: API version negotiation, ping and version, and connecting to a socket that is not there.
// Real parts: LocalSandboxd with a private dockerd per VM.
// (Kept apart from connection.spec.ts: its relay tests assume a process without LocalSandboxd running in it.)
import { describe, expect, it } from 'vitest'
import { DockerEngine } from 'sandboxd'
import { rejection } from './helpers/local.js'
import { engine, useVm, vm } from './helpers/vm.js'

useVm('engine', { image: false })

describe('engine', () => {
  it('negotiates a version per socket and answers ping/version', async () => {
    await engine.ping()
    const v = await engine.version()
    expect(v.apiVersion).toMatch(/^1\.\d+$/)
    expect(engine.apiVersion).toBe(v.negotiatedApiVersion)
    expect(engine.socketPath).toBe(vm.socketPath)
    const e = await rejection(DockerEngine.connect({ socketPath: '/nonexistent/docker.sock' }))
    expect(e.code).toBe('ERR_ENGINE_UNAVAILABLE')
  })
})
