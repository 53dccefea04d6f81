// Test-only helpers that talk to a Docker engine directly (Node `http` over a
// unix socket, no dependencies), for tests that need an engine before the SDK
// has its own engine API. Paths are unversioned: the engine answers with its
// own API version.
import { createReadStream } from 'node:fs'
import { request } from 'node:http'
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'

export interface DockerResponse {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  /** The body parsed as JSON (throws when it isn't). */
  json(): any
}

/** Unix socket path of the engine at $DOCKER_HOST (set by scripts/test.sh). */
export function dockerSocketFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  const host = env.DOCKER_HOST ?? 'unix:///var/run/docker.sock'
  if (!host.startsWith('unix://')) {
    throw new Error(`DOCKER_HOST=${host} is not a unix:// address`)
  }
  return host.slice('unix://'.length)
}

function isReadable(x: unknown): x is NodeJS.ReadableStream {
  return typeof x === 'object' && x !== null && typeof (x as NodeJS.ReadableStream).pipe === 'function'
}

/**
 * One HTTP request to the engine. `body` is sent as-is when a Buffer, piped
 * (chunked) when a stream, and as JSON otherwise. Never throws on HTTP status.
 */
export function dockerRequest(
  socketPath: string,
  method: string,
  path: string,
  body?: Buffer | object | NodeJS.ReadableStream,
  headers: OutgoingHttpHeaders = {},
): Promise<DockerResponse> {
  const hdrs: OutgoingHttpHeaders = { Host: 'docker', ...headers }
  const hasType = Object.keys(hdrs).some((k) => k.toLowerCase() === 'content-type')
  const setType = (t: string) => {
    if (!hasType) hdrs['Content-Type'] = t
  }
  let payload: Buffer | undefined
  let stream: NodeJS.ReadableStream | undefined
  if (Buffer.isBuffer(body)) {
    payload = body
    setType('application/octet-stream')
  } else if (isReadable(body)) {
    stream = body
    setType('application/octet-stream')
  } else if (body !== undefined) {
    payload = Buffer.from(JSON.stringify(body))
    setType('application/json')
  }
  if (payload) hdrs['Content-Length'] = payload.length

  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: hdrs }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const buf = Buffer.concat(chunks)
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: buf,
          json: () => JSON.parse(buf.toString('utf8')),
        })
      })
    })
    req.on('error', reject)
    if (stream) {
      stream.on('error', (err) => {
        req.destroy(err)
        reject(err)
      })
      stream.pipe(req)
    } else {
      req.end(payload)
    }
  })
}

function fail(what: string, res: DockerResponse): never {
  throw new Error(`${what}: HTTP ${res.status}: ${res.body.toString('utf8').trim()}`)
}

/**
 * `docker import`: create image `repoTag` ("repo[:tag]") from a root
 * filesystem tarball. Returns the image id the engine reports.
 */
export async function importRootfs(socketPath: string, tarPath: string, repoTag: string): Promise<string> {
  // the tag is after the last ':' that comes after the last '/' (registry ports)
  const slash = repoTag.lastIndexOf('/')
  const colon = repoTag.lastIndexOf(':')
  const [repo, tag] = colon > slash ? [repoTag.slice(0, colon), repoTag.slice(colon + 1)] : [repoTag, 'latest']
  const qs = new URLSearchParams({ fromSrc: '-', repo, tag })
  const res = await dockerRequest(socketPath, 'POST', `/images/create?${qs}`, createReadStream(tarPath), {
    'Content-Type': 'application/x-tar',
  })
  if (res.status !== 200) fail(`import ${tarPath} as ${repoTag}`, res)
  // The body is a stream of JSON messages; errors arrive in it with status 200.
  let id = ''
  for (const line of res.body.toString('utf8').split(/\r?\n/)) {
    if (!line.trim()) continue
    const msg = JSON.parse(line) as { status?: string; error?: string; errorDetail?: { message?: string } }
    if (msg.error || msg.errorDetail) {
      throw new Error(`import ${tarPath} as ${repoTag}: ${msg.errorDetail?.message ?? msg.error}`)
    }
    if (msg.status?.startsWith('sha256:')) id = msg.status.trim()
  }
  return id
}

/** Create (with `HostConfig.Init`) and start a container; returns its id. */
export async function runContainer(socketPath: string, image: string, cmd: string[], name?: string): Promise<string> {
  const qs = name ? `?${new URLSearchParams({ name })}` : ''
  const created = await dockerRequest(socketPath, 'POST', `/containers/create${qs}`, {
    Image: image,
    Cmd: cmd,
    HostConfig: { Init: true },
  })
  if (created.status !== 201) fail(`create container from ${image}`, created)
  const id = (created.json() as { Id: string }).Id
  const started = await dockerRequest(socketPath, 'POST', `/containers/${id}/start`)
  if (started.status !== 204 && started.status !== 304) fail(`start container ${id}`, started)
  return id
}

/** Summary of a container, as returned by GET /containers/json. */
export interface ContainerSummary {
  Id: string
  Names: string[]
  Image: string
  Command: string
  State: string
  Status: string
  Labels: Record<string, string> | null
  [key: string]: unknown
}

export async function listContainers(socketPath: string, all = true): Promise<ContainerSummary[]> {
  const res = await dockerRequest(socketPath, 'GET', `/containers/json?all=${all ? 1 : 0}`)
  if (res.status !== 200) fail('list containers', res)
  return res.json() as ContainerSummary[]
}

/** Force-remove a container and its anonymous volumes; a missing one is fine. */
export async function removeContainer(socketPath: string, id: string): Promise<void> {
  const res = await dockerRequest(socketPath, 'DELETE', `/containers/${encodeURIComponent(id)}?force=1&v=1`)
  if (res.status !== 204 && res.status !== 404) fail(`remove container ${id}`, res)
}
