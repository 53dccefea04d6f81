// The files API on the v1 backend answers exists, mkdir, remove, rename (and write's checks) with the sandbox
// endpoint's own file operations: no process is started in the sandbox. Proved by the endpoint's process table
// (`GET /v1/processes` on the sandbox's endpoint socket, which keeps exited processes), read before and after,
// with an exec as the control that the count sees processes. (The shell-less image cannot prove it here:
// LocalSandboxd's endpoint implements its file operations with `/bin/sh` scripts inside the container.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Sandboxes, type LocalSandboxd, type Sandbox } from 'sandboxd'
import { dockerRequest } from './helpers/engine.js'
import { rejection, startLocal, workspace } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')

let local: LocalSandboxd
let box: Sandbox
let endpoint: string
const ws = workspace('files-v1-')
const B = '/tmp/native'

/** Every process the sandbox endpoint knows (running and exited), by uid. */
async function processes(): Promise<string[]> {
  const uids: string[] = []
  let token = ''
  for (let page = 0; page < 100; page++) {
    const q = `/v1/processes?pageSize=100${token ? `&pageToken=${encodeURIComponent(token)}` : ''}`
    const res = await dockerRequest(endpoint, 'GET', q)
    expect(res.status).toBe(200)
    const body = res.json() as { processes?: { uid: string }[]; nextPageToken?: string }
    uids.push(...(body.processes ?? []).map((p) => p.uid))
    token = body.nextPageToken ?? ''
    if (!token) return uids
  }
  throw new Error('the process pages never end')
}

beforeAll(async () => {
  local = await startLocal()
  const sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend: 'v1' })
  box = await sandboxes.create({ name: 'files-native', agent: 'shell', workspace: ws.dir, template: IMAGE })
  const res = await dockerRequest(local.socketPath, 'GET', `/v1/sandboxes/${encodeURIComponent(box.info.id)}`)
  expect(res.status).toBe(200)
  const uri = res.json().core.endpoint.uri as string
  expect(uri).toMatch(/^unix:\/\//)
  endpoint = uri.slice('unix://'.length)
}, 180_000)

afterAll(async () => {
  await box?.remove({ force: true })
  await local?.stop()
  ws.cleanup()
}, 60_000)

describe('files on the v1 backend use the endpoint, not exec', () => {
  it('exists, mkdir, write, read, rename and remove start no process; an exec, stat and list do', async () => {
    const f = box.files
    const before = await processes()

    await f.mkdir(`${B}/a/b`, { recursive: true })
    await f.mkdir(`${B}/a/b`, { recursive: true })
    await f.mkdir(`${B}/a/c`)
    await f.write(`${B}/a/f.txt`, 'hello', { mode: 0o600 })
    await f.write([{ path: `${B}/a/b/g`, data: 'g' }, { path: `${B}/a/c/h`, data: 'h' }])
    expect([await f.exists(`${B}/a/f.txt`), await f.exists(`${B}/nope`), await f.exists(`${B}/a/f.txt/x`)]).toEqual([
      true,
      false,
      false,
    ])
    // typed errors, as the tools give them
    expect(await rejection(f.mkdir(`${B}/a`))).toMatchObject({ code: 'ERR_PATH_EXISTS', path: `${B}/a` })
    expect(await rejection(f.mkdir(`${B}/x/y`))).toMatchObject({ code: 'ERR_PATH_NOT_FOUND', path: `${B}/x/y` })
    expect(await rejection(f.write(`${B}/a/b`, 'x'))).toMatchObject({ code: 'ERR_NOT_A_FILE', path: `${B}/a/b` })
    expect(await rejection(f.remove(`${B}/a/b`))).toMatchObject({ code: 'ERR_NOT_A_FILE', path: `${B}/a/b` })
    expect(await rejection(f.remove(`${B}/nope`))).toMatchObject({ code: 'ERR_PATH_NOT_FOUND', path: `${B}/nope` })
    await f.remove(`${B}/nope`, { force: true })
    expect(await rejection(f.rename(`${B}/a/f.txt`, `${B}/a/c`, { overwrite: true }))).toMatchObject({
      code: 'ERR_PATH_EXISTS',
      path: `${B}/a/c`,
      fileType: 'directory',
    })
    expect(await rejection(f.rename(`${B}/nope`, `${B}/x`))).toMatchObject({ code: 'ERR_PATH_NOT_FOUND', path: `${B}/nope` })
    // the changes themselves
    await f.rename(`${B}/a/f.txt`, `${B}/a/moved.txt`)
    await f.rename(`${B}/a/c`, `${B}/c2`)
    expect(await f.read(`${B}/a/moved.txt`, { encoding: 'utf8' })).toBe('hello')
    expect(await f.read(`${B}/c2/h`, { encoding: 'utf8' })).toBe('h')
    expect(await f.read([`${B}/a/moved.txt`, `${B}/c2/h`], { encoding: 'utf8' })).toEqual(['hello', 'h'])
    await f.remove(`${B}/a/moved.txt`)
    await f.remove(`${B}/a`, { recursive: true })
    expect([await f.exists(`${B}/a`), await f.exists(`${B}/c2`)]).toEqual([false, true])

    const after = await processes()
    expect(after).toEqual(before)

    // The control: the count sees an exec, and `list` (which describes links as links, with their times: facts the
    // contract's List cannot give) runs the tools.
    const ran = await box.exec(['true'])
    expect(ran.exitCode).toBe(0)
    expect((await processes()).length).toBe(after.length + 1)
    expect((await f.list(`${B}/c2`)).map((e) => e.name)).toEqual(['h'])
    const listed = (await processes()).length
    expect(listed).toBeGreaterThan(after.length + 1)
    // stat runs the tools too, so it answers as on every backend: a real modification time, special bits
    await f.write(`${B}/c2/m.txt`, 'hello', { mode: 0o600 })
    const s = await f.stat(`${B}/c2/m.txt`)
    expect(s).toMatchObject({ name: 'm.txt', path: `${B}/c2/m.txt`, type: 'file', size: 5, mode: 0o600 })
    expect(Math.abs(Date.now() - s.mtimeMs)).toBeLessThan(10 * 60_000)
    expect((await f.stat(`${B}/c2`)).type).toBe('directory')
    expect(await rejection(f.stat(`${B}/nope`))).toMatchObject({ code: 'ERR_PATH_NOT_FOUND', path: `${B}/nope` })
    expect(await rejection(f.stat(`${B}/c2/h/x`))).toMatchObject({ code: 'ERR_NOT_A_DIRECTORY', path: `${B}/c2/h/x` })
    expect((await processes()).length).toBeGreaterThan(listed)
  }, 120_000)
})
