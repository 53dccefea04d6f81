// The files API (`sandbox.files`), written once in the Rust core over every exec target, run against a sandbox on
// the sbx backend, one on the desktop backend (whose sandbox is a container) and one on the v1 backend (the files
// endpoint: content, directories, multipart upload), all served by one LocalSandboxd
// with the busybox template. A table of path cases (spaces, unicode, leading dashes, `..`, symbolic links in and
// out, missing parents, a directory read as a file, a file listed as a directory) each asserts a result or a
// typed error; then list/stat/exists/mkdir/remove/rename, many files in one write, and 0-byte and 64 MiB files.
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Sandboxes, type BackendKind, type Files, type LocalSandboxd, type Sandbox } from 'sandboxd'
import { rejection, startLocal, workspace } from './helpers/local.js'

const IMAGE = process.env.SANDBOXD_TEST_IMAGE
if (!IMAGE) throw new Error('SANDBOXD_TEST_IMAGE is not set: run the suite with `npm test`, which builds it')

let local: LocalSandboxd
const ws = workspace('files-api-')
const host = workspace('files-host-')

beforeAll(async () => {
  local = await startLocal()
}, 120_000)

afterAll(async () => {
  await local?.stop()
  ws.cleanup()
  host.cleanup()
}, 60_000)

const B = '/tmp/ft'
const UNI = `${B}/ünï cödé-日本.txt`

/** A case: what to do, and the value it resolves with or the error code (and `path`) it rejects with. */
type Case = [label: string, run: (f: Files) => Promise<unknown>, expected: { value: unknown } | { code: string; path?: string }]

const text = (b: unknown) => (b as Buffer).toString('utf8')

const CASES: Case[] = [
  ['a name with spaces', async (f) => text(await f.read(`${B}/with space.txt`)), { value: 'spaced' }],
  ['a unicode name', async (f) => f.read(UNI, { encoding: 'utf8' }), { value: 'unicode' }],
  ['a name starting with -rf is a name, not an option', async (f) => text(await f.read(`${B}/-rf`)), { value: 'dash' }],
  [
    'removing a file named -rf removes only it',
    async (f) => {
      await f.write(`${B}/-rf-victim`, 'x')
      await f.remove(`${B}/-rf-victim`)
      return [await f.exists(`${B}/-rf-victim`), await f.exists(`${B}/dir/file`)]
    },
    { value: [false, true] },
  ],
  ['`..` segments are resolved lexically', async (f) => text(await f.read(`${B}/dir/sub/../../with space.txt`)), { value: 'spaced' }],
  ['`..` above / stays at /', async (f) => text(await f.read(`/../../..${B}/-rf`)), { value: 'dash' }],
  [
    '`..` after a link is lexical, not through the link (documented)',
    (f) => f.read(`${B}/link-in/../file`),
    { code: 'ERR_PATH_NOT_FOUND', path: `${B}/file` },
  ],
  ['a relative path is ERR_INVALID_ARGUMENT', (f) => f.read('tmp/ft/-rf'), { code: 'ERR_INVALID_ARGUMENT' }],
  ['a path with NUL is ERR_INVALID_ARGUMENT', (f) => f.stat(`${B}/a\0b`), { code: 'ERR_INVALID_ARGUMENT' }],
  ['a link inside the tree is read through', async (f) => text(await f.read(`${B}/link-file`)), { value: 'in dir' }],
  ['a link to a directory is listed through', async (f) => (await f.list(`${B}/link-in`)).map((e) => e.name), { value: ['deep'] }],
  ['a link out of the tree is followed (no root applies)', async (f) => text(await f.read(`${B}/link-out/passwd`)).startsWith('root:'), { value: true }],
  ['stat follows a link, lstat does not', async (f) => [(await f.stat(`${B}/link-out`)).type, (await f.lstat(`${B}/link-out`)).type, (await f.lstat(`${B}/link-out`)).linkTarget], { value: ['directory', 'symlink', '/etc'] }],
  ['a dangling link: read is ERR_PATH_NOT_FOUND', (f) => f.read(`${B}/dangling`), { code: 'ERR_PATH_NOT_FOUND', path: `${B}/dangling` }],
  ['a dangling link: exists is false, lstat sees the link', async (f) => [await f.exists(`${B}/dangling`), (await f.lstat(`${B}/dangling`)).linkTarget], { value: [false, '/nowhere'] }],
  ['a missing file is ERR_PATH_NOT_FOUND', (f) => f.stat(`${B}/nope`), { code: 'ERR_PATH_NOT_FOUND', path: `${B}/nope` }],
  ['write under missing parents without `parents` is ERR_PATH_NOT_FOUND naming the directory', (f) => f.write(`${B}/new/a/b.txt`, 'x'), { code: 'ERR_PATH_NOT_FOUND', path: `${B}/new/a` }],
  [
    'write under missing parents with `parents` makes them',
    async (f) => {
      await f.write(`${B}/made/a/b c.txt`, 'deep', { parents: true })
      return [text(await f.read(`${B}/made/a/b c.txt`)), (await f.stat(`${B}/made/a`)).type]
    },
    { value: ['deep', 'directory'] },
  ],
  ['a directory read as a file is ERR_NOT_A_FILE', (f) => f.read(`${B}/dir`), { code: 'ERR_NOT_A_FILE', path: `${B}/dir` }],
  ['a link to a directory read as a file is ERR_NOT_A_FILE', (f) => f.read(`${B}/link-in`), { code: 'ERR_NOT_A_FILE', path: `${B}/link-in` }],
  ['a file listed as a directory is ERR_NOT_A_DIRECTORY', (f) => f.list(`${B}/dir/file`), { code: 'ERR_NOT_A_DIRECTORY', path: `${B}/dir/file` }],
  ['a file used as a parent is ERR_NOT_A_DIRECTORY', (f) => f.stat(`${B}/dir/file/x`), { code: 'ERR_NOT_A_DIRECTORY', path: `${B}/dir/file/x` }],
  ['a missing directory listed is ERR_PATH_NOT_FOUND', (f) => f.list(`${B}/nope`), { code: 'ERR_PATH_NOT_FOUND', path: `${B}/nope` }],
  ['writing a file where a directory is is ERR_NOT_A_FILE', (f) => f.write(`${B}/dir/sub`, 'x'), { code: 'ERR_NOT_A_FILE', path: `${B}/dir/sub` }],
  ['mkdir of an existing path is ERR_PATH_EXISTS', (f) => f.mkdir(`${B}/dir`), { code: 'ERR_PATH_EXISTS', path: `${B}/dir` }],
  ['mkdir under a missing parent is ERR_PATH_NOT_FOUND', (f) => f.mkdir(`${B}/no/such`), { code: 'ERR_PATH_NOT_FOUND', path: `${B}/no/such` }],
  ['mkdir recursive makes parents and accepts an existing one', async (f) => { await f.mkdir(`${B}/r/s/t`, { recursive: true }); await f.mkdir(`${B}/r/s/t`, { recursive: true }); return (await f.stat(`${B}/r/s/t`)).type }, { value: 'directory' }],
  ['remove of a directory without recursive is ERR_NOT_A_FILE', (f) => f.remove(`${B}/dir`), { code: 'ERR_NOT_A_FILE', path: `${B}/dir` }],
  ['remove of a missing path is ERR_PATH_NOT_FOUND, with force success', async (f) => [(await rejection(f.remove(`${B}/nope`))).code, await f.remove(`${B}/nope`, { force: true })], { value: ['ERR_PATH_NOT_FOUND', undefined] }],
  ['remove of / is refused', (f) => f.remove('/', { recursive: true, force: true }), { code: 'ERR_INVALID_ARGUMENT' }],
  ['remove of a link removes the link, not its target', async (f) => { await f.remove(`${B}/link-gone`); return [await f.exists(`${B}/link-gone`), await f.exists(`${B}/dir/sub/deep`)] }, { value: [false, true] }],
  ['rename onto an existing path is ERR_PATH_EXISTS', (f) => f.rename(`${B}/-rf`, `${B}/with space.txt`), { code: 'ERR_PATH_EXISTS', path: `${B}/with space.txt` }],
  ['rename of a missing path is ERR_PATH_NOT_FOUND', (f) => f.rename(`${B}/nope`, `${B}/nope2`), { code: 'ERR_PATH_NOT_FOUND', path: `${B}/nope` }],
  ['rename into a missing directory is ERR_PATH_NOT_FOUND naming the destination', (f) => f.rename(`${B}/dir/file`, `${B}/no/dir/f`), { code: 'ERR_PATH_NOT_FOUND', path: `${B}/no/dir/f` }],
  ['a name with a newline round-trips through write, list and read', async (f) => { await f.write(`${B}/nl/a\nb`, 'n', { parents: true }); const l = await f.list(`${B}/nl`); return [l.map((e) => e.name), text(await f.read(l[0]!.path))] }, { value: [['a\nb'], 'n'] }],
  ['a 0-byte file', async (f) => { await f.write(`${B}/zero`, new Uint8Array(0)); return [(await f.read(`${B}/zero`)).length, (await f.stat(`${B}/zero`)).size] }, { value: [0, 0] }],
]

describe.each<BackendKind>(['sbx', 'desktop', 'v1'])('files on the %s backend', (backend) => {
  let box: Sandbox
  let files: Files

  beforeAll(async () => {
    const sandboxes = await Sandboxes.connect({ socketPath: local.socketPath, backend })
    box = await sandboxes.create({ name: `files-${backend}`, agent: 'shell', workspace: ws.dir, template: IMAGE })
    files = box.files
    // The fixture is made with the sandbox's own tools (a fixed script: no path of the tests goes through it).
    const made = await box.sh(
      `mkdir -p ${B}/dir/sub/deep && printf spaced > '${B}/with space.txt' && printf unicode > '${UNI}' && ` +
        `printf dash > ${B}/-rf && printf 'in dir' > ${B}/dir/file && ln -s dir/sub ${B}/link-in && ` +
        `ln -s dir/file ${B}/link-file && ln -s /etc ${B}/link-out && ln -s /nowhere ${B}/dangling && ` +
        `ln -s dir/sub ${B}/link-gone`,
    )
    expect(made.stderrText()).toBe('')
    expect(made.exitCode).toBe(0)
  }, 180_000)

  afterAll(async () => {
    await box?.remove({ force: true })
  }, 60_000)

  it('has at least 20 path cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(20)
  })

  it.each(CASES)('%s', async (_label, run, expected) => {
    if ('value' in expected) {
      expect(await run(files)).toEqual(expected.value)
    } else {
      const e = await rejection(run(files))
      expect(e.code, e.message).toBe(expected.code)
      expect(e.name).toBe('SandboxdError')
      if (expected.path !== undefined) expect(e.path).toBe(expected.path)
    }
  })

  it('list describes every entry, sorted, links as links', async () => {
    await files.mkdir(`${B}/ls`)
    await files.write(`${B}/ls/f`, 'abc', { mode: 0o600 })
    await files.mkdir(`${B}/ls/-d ü`)
    await box.exec(['ln', '-s', 'f', `${B}/ls/l`])
    const before = Date.now()
    const l = await files.list(`${B}/ls`)
    expect(l.map((e) => [e.name, e.type])).toEqual([
      ['-d ü', 'directory'],
      ['f', 'file'],
      ['l', 'symlink'],
    ])
    const [d, f, link] = l as [(typeof l)[0], (typeof l)[0], (typeof l)[0]]
    expect(f).toMatchObject({ path: `${B}/ls/f`, size: 3, mode: 0o600 })
    expect(f.linkTarget).toBeUndefined()
    expect(Math.abs(f.mtimeMs - before)).toBeLessThan(120_000)
    expect(d.path).toBe(`${B}/ls/-d ü`)
    expect(link).toMatchObject({ linkTarget: 'f', size: 1 })
    expect(await files.list(`${B}/ls/-d ü`)).toEqual([])
    const root = await files.list('/')
    expect(root.find((e) => e.name === 'tmp')).toMatchObject({ path: '/tmp', type: 'directory' })
    expect(await files.stat('/')).toMatchObject({ name: '/', path: '/', type: 'directory' })
  })

  it('write many files in one call, each with its mode, parents made on request', async () => {
    const many = Array.from({ length: 50 }, (_, i) => ({
      path: `${B}/many/${i % 5}/file ${i}.txt`,
      data: i % 2 ? `text ${i}` : Buffer.from([i, 0, 255]),
      mode: i === 7 ? 0o755 : undefined,
    }))
    const e = await rejection(files.write(many))
    expect(e.code).toBe('ERR_PATH_NOT_FOUND')
    await files.write(many, { parents: true })
    expect((await files.list(`${B}/many`)).map((x) => x.name)).toEqual(['0', '1', '2', '3', '4'])
    expect(await files.read(`${B}/many/2/file 7.txt`, { encoding: 'utf8' })).toBe('text 7')
    expect([...(await files.read(`${B}/many/0/file 10.txt`))]).toEqual([10, 0, 255])
    expect((await files.stat(`${B}/many/2/file 7.txt`)).mode).toBe(0o755)
    expect((await files.stat(`${B}/many/3/file 8.txt`)).mode).toBe(0o644)
    // Into existing directories without `parents`: fine.
    await files.write([
      { path: `${B}/many/0/again`, data: 'a' },
      { path: `${B}/many/1/again`, data: 'b' },
    ])
    expect(await files.read(`${B}/many/1/again`, { encoding: 'utf8' })).toBe('b')
    const mode = await rejection(files.write([{ path: `${B}/x`, data: 'x' }], { mode: 0o600 } as never))
    expect(mode).toMatchObject({ code: 'ERR_INVALID_ARGUMENT', argument: 'mode' })
  })

  it('read many files in one call, in order; the first that cannot be read names its path', async () => {
    const bin = Buffer.from([0, 255, 13, 10, 45, 45])
    await files.write([{ path: `${B}/rmany/a`, data: 'alpha' }, { path: `${B}/rmany/b b`, data: bin }], { parents: true })
    const [a, b, again, linked] = await files.read([`${B}/rmany/a`, `${B}/rmany/b b`, `${B}/rmany/./x/../a`, `${B}/link-file`])
    expect([a!.toString(), [...b!], again!.toString(), linked!.toString()]).toEqual(['alpha', [...bin], 'alpha', 'in dir'])
    expect(await files.read([`${B}/rmany/a`, `${B}/rmany/a`], { encoding: 'utf8' })).toEqual(['alpha', 'alpha'])
    expect(await files.read([])).toEqual([])
    const many = Array.from({ length: 120 }, (_, i) => `${B}/rmany/${i % 2 ? 'a' : 'b b'}`)
    const all = await files.read(many)
    expect(all.map((x) => x.length)).toEqual(many.map((p) => (p.endsWith('a') ? 5 : bin.length)))
    expect(await rejection(files.read([`${B}/rmany/a`, `${B}/rmany/none`]))).toMatchObject({
      code: 'ERR_PATH_NOT_FOUND',
      path: `${B}/rmany/none`,
    })
    expect(await rejection(files.read([`${B}/rmany`]))).toMatchObject({ code: 'ERR_NOT_A_FILE', path: `${B}/rmany` })
    expect(await rejection(files.read([`${B}/rmany/a`, 7 as never]))).toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
      argument: 'paths[1]',
    })
    expect(await rejection(files.read([`${B}/rmany/a`, 'rel']))).toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
      argument: 'paths[1]',
    })
  })

  it('rename moves files and directories, overwrite replaces a file but never a directory', async () => {
    await files.write(`${B}/mv/a`, 'A', { parents: true })
    await files.write(`${B}/mv/b`, 'B')
    await files.rename(`${B}/mv/a`, `${B}/mv/-c d`)
    expect(await files.exists(`${B}/mv/a`)).toBe(false)
    expect(await files.read(`${B}/mv/-c d`, { encoding: 'utf8' })).toBe('A')
    await files.rename(`${B}/mv/-c d`, `${B}/mv/b`, { overwrite: true })
    expect(await files.read(`${B}/mv/b`, { encoding: 'utf8' })).toBe('A')
    await files.mkdir(`${B}/mv/dir`)
    expect((await rejection(files.rename(`${B}/mv/b`, `${B}/mv/dir`, { overwrite: true }))).code).toBe('ERR_PATH_EXISTS')
    await files.rename(`${B}/mv/dir`, `${B}/mv/dir2`)
    expect((await files.stat(`${B}/mv/dir2`)).type).toBe('directory')
  })

  it('remove recursive removes a tree; exists reports it', async () => {
    await files.write(`${B}/rm/a/b/c`, 'x', { parents: true })
    expect(await files.exists(`${B}/rm/a/b/c`)).toBe(true)
    await files.remove(`${B}/rm`, { recursive: true })
    expect(await files.exists(`${B}/rm`)).toBe(false)
    expect(await files.exists(`${B}/dir/file/x`)).toBe(false)
  })

  it('a 64 MiB file is written and read byte-exact', async () => {
    const data = randomBytes(64 * 1024 * 1024)
    await files.write(`${B}/big.bin`, data, { timeoutMs: 120_000 })
    expect((await files.stat(`${B}/big.bin`)).size).toBe(data.length)
    const sum = (await box.exec(['sha256sum', `${B}/big.bin`])).text().split(' ')[0]
    expect(sum).toBe(createHash('sha256').update(data).digest('hex'))
    const back = await files.read(`${B}/big.bin`, { timeoutMs: 120_000 })
    expect(back.length).toBe(data.length)
    expect(back.equals(data)).toBe(true)
    await files.remove(`${B}/big.bin`)
  }, 180_000)

  it('every call takes signal and timeoutMs; bad options are ERR_INVALID_ARGUMENT', async () => {
    const ac = new AbortController()
    ac.abort(new Error('stop'))
    expect(((await rejection(files.list(B, { signal: ac.signal }))) as Error).message).toBe('stop')
    expect((await rejection(files.stat(B, { timeoutMs: -1 }))).code).toBe('ERR_INVALID_ARGUMENT')
    expect((await rejection(files.mkdir(B, { recursive: 'yes' as never }))).argument).toBe('recursive')
    expect((await rejection(files.read(`${B}/-rf`, { encoding: 'latin1' as never }))).argument).toBe('encoding')
    expect(await files.exists(B, { timeoutMs: 30_000 })).toBe(true)
  })

  it('uploadDir and downloadDir stream a tree both ways, byte-exact, links kept as links', async () => {
    const src = join(host.dir, `src-${backend}`)
    mkdirSync(join(src, 'sub dir/ü'), { recursive: true })
    const big = randomBytes(8 * 1024 * 1024)
    writeFileSync(join(src, 'big.bin'), big)
    writeFileSync(join(src, 'sub dir/ü/-rf'), 'leaf')
    writeFileSync(join(src, 'empty'), '')
    symlinkSync('sub dir/ü/-rf', join(src, 'link'))
    const up = await files.uploadDir(src, `${B}/up/tree`)
    expect(up).toEqual({ entries: 6, bytes: big.length + 4 })
    expect((await files.list(`${B}/up/tree`)).map((e) => [e.name, e.type])).toEqual([
      ['big.bin', 'file'],
      ['empty', 'file'],
      ['link', 'symlink'],
      ['sub dir', 'directory'],
    ])
    expect(await files.read(`${B}/up/tree/link`, { encoding: 'utf8' })).toBe('leaf')
    const sum = (await box.exec(['sha256sum', `${B}/up/tree/big.bin`])).text().split(' ')[0]
    expect(sum).toBe(createHash('sha256').update(big).digest('hex'))

    const back = join(host.dir, `back-${backend}`)
    const down = await files.downloadDir(`${B}/up/tree`, back)
    expect(down).toEqual({ entries: 6, bytes: big.length + 4 })
    expect(readFileSync(join(back, 'big.bin')).equals(big)).toBe(true)
    expect(readFileSync(join(back, 'sub dir/ü/-rf'), 'utf8')).toBe('leaf')
    expect(readFileSync(join(back, 'empty')).length).toBe(0)
    expect(lstatSync(join(back, 'link')).isSymbolicLink()).toBe(true)
    expect(readlinkSync(join(back, 'link'))).toBe('sub dir/ü/-rf')
  }, 120_000)

  it('a link leading out of the copied tree is ERR_PATH_ESCAPES both ways; bad directories are typed', async () => {
    const src = join(host.dir, `escape-${backend}`)
    mkdirSync(src, { recursive: true })
    writeFileSync(join(src, 'f'), 'x')
    symlinkSync('/etc/passwd', join(src, 'abs'))
    const up = await rejection(files.uploadDir(src, `${B}/esc-up`))
    expect(up).toMatchObject({ code: 'ERR_PATH_ESCAPES', path: 'abs', linkTarget: '/etc/passwd', root: src })
    expect(await files.exists(`${B}/esc-up`)).toBe(false) // refused before anything was sent
    await box.exec(['mkdir', '-p', `${B}/esc-down/in`])
    await box.exec(['ln', '-s', '../../..', `${B}/esc-down/in/up`])
    const down = await rejection(files.downloadDir(`${B}/esc-down`, join(host.dir, `esc-${backend}`)))
    expect(down).toMatchObject({ code: 'ERR_PATH_ESCAPES', linkTarget: '../../..', root: `${B}/esc-down` })
    expect(existsSync(join(host.dir, `esc-${backend}`, 'in/up'))).toBe(false)
    expect((await rejection(files.downloadDir(`${B}/nope`, join(host.dir, 'x')))).code).toBe('ERR_PATH_NOT_FOUND')
    expect((await rejection(files.downloadDir(`${B}/-rf`, join(host.dir, 'x')))).code).toBe('ERR_NOT_A_DIRECTORY')
    expect((await rejection(files.uploadDir(join(host.dir, 'nope'), `${B}/x`))).code).toBe('ERR_PATH_NOT_FOUND')
    expect((await rejection(files.uploadDir('relative', `${B}/x`))).argument).toBe('hostDir')
  })
})
