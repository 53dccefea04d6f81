#!/usr/bin/env node
// `npx sandboxd emulator [--root DIR] [--backend dockerd|relay] [--docker-host unix:///…]`
//   Serves the sandboxd API with LocalSandboxd until SIGINT/SIGTERM, then stops every VM it started.
// `npx sandboxd doctor [--json] [--socket PATH] [--app-name NAME]`
//   Reports what the SDK finds on this machine; exits 0 when it would find a usable daemon, 1 otherwise.
'use strict'

const USAGE = `usage: sandboxd <command> [options]

commands:
  emulator   run LocalSandboxd (see: sandboxd emulator --help)
  doctor     report which daemon the SDK finds and what it serves (see: sandboxd doctor --help)`

const EMULATOR_USAGE = `usage: sandboxd emulator [--root DIR] [--backend dockerd|relay] [--docker-host unix:///path]

Starts LocalSandboxd: the sandboxd API (GET/POST /vm, DELETE /vm/{name}) on a Unix socket, each VM backed by
a real Docker engine. Prints the socket path; point the SDK at it with SANDBOXD_SOCKET=<path>.
Stops on Ctrl-C / SIGTERM and removes every VM engine it started.`

const DOCTOR_USAGE = `usage: sandboxd doctor [--json] [--socket PATH] [--app-name NAME]

Finds the sbx daemon the way the SDK does and reports every socket tried, the daemon's version and api_version,
the version gate in strict and lenient mode, /daemon/info, which routes answer OPTIONS, whether the legacy /vm
API answers, and the backend the SDK would use. Attach its output (--json for machines) to bug reports.

  --json            print the report as JSON
  --socket PATH     probe only this socket (as the SDK's socketPath option; default: discovery)
  --app-name NAME   the sbx app name (sbx --app-name; default: DOCKER_SANDBOXES_APP_NAME)

The last line is what Sandboxes.connect() with default options returns here (it is run, not guessed).

Exit status: 0 when that connect succeeds (an sbx daemon that passes the version gate, or the legacy /vm
API), 1 otherwise, 2 for bad arguments.`

/** Parse `--flag value` / `--flag=value` options; `booleans` take no value. */
function parseFlags(rest, flags, booleans = {}) {
  const opts = {}
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]
    if (a === '-h' || a === '--help') return { help: true }
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
    if (booleans[flag]) {
      if (inline !== undefined) throw new Error(`${flag} takes no value`)
      opts[booleans[flag]] = true
      continue
    }
    const key = flags[flag]
    if (!key) throw new Error(`unknown option ${JSON.stringify(a)}`)
    const value = inline ?? rest[++i]
    if (value === undefined) throw new Error(`${flag} needs a value`)
    opts[key] = value
  }
  return { opts }
}

function parse(argv) {
  const [cmd, ...rest] = argv
  if (cmd === '-h' || cmd === '--help' || cmd === undefined) return { cmd: 'help', usage: USAGE }
  const commands = {
    emulator: [EMULATOR_USAGE, { '--root': 'root', '--backend': 'backend', '--docker-host': 'dockerHost' }, {}],
    doctor: [DOCTOR_USAGE, { '--socket': 'socketPath', '--app-name': 'appName' }, { '--json': 'json' }],
  }
  if (!Object.hasOwn(commands, cmd)) throw new Error(`unknown command ${JSON.stringify(cmd)}`)
  const [usage, flags, booleans] = commands[cmd]
  try {
    const p = parseFlags(rest, flags, booleans)
    return p.help ? { cmd: 'help', usage } : { cmd, opts: p.opts }
  } catch (e) {
    e.usage = usage
    throw e
  }
}

async function emulator(opts) {
  const { LocalSandboxd } = require('../dist/index.js')
  const sbx = await LocalSandboxd.start(opts)
  console.log(JSON.stringify({ socketPath: sbx.socketPath, root: sbx.root, backend: sbx.backend }))
  console.error(`LocalSandboxd (${sbx.backend}) listening on ${sbx.socketPath}; Ctrl-C to stop`)
  const keepAlive = setInterval(() => {}, 1 << 30)
  let stopping = false
  const stop = async (signal) => {
    if (stopping) return
    stopping = true
    console.error(`${signal}: stopping LocalSandboxd`)
    try {
      await sbx.stop()
    } finally {
      clearInterval(keepAlive)
    }
  }
  process.on('SIGINT', () => void stop('SIGINT'))
  process.on('SIGTERM', () => void stop('SIGTERM'))
}

/** Rows of cells as lines with every column but the last padded to its widest cell. */
function table(rows, indent = '  ') {
  const widths = []
  for (const r of rows) r.slice(0, -1).forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)))
  return rows.map((r) => indent + r.map((c, i) => (i < r.length - 1 ? c.padEnd(widths[i]) : c)).join('  ').trimEnd())
}

const OUTCOME = {
  missing: 'missing',
  notSocket: 'not a socket',
  refused: 'refused',
  permissionDenied: 'permission denied',
  timeout: 'timeout',
  brokenExchange: 'broken exchange',
  connectError: 'connect error',
  answered: 'answered',
  skipped: 'skipped',
}

const VERDICT = {
  served: 'served',
  notServed: 'not served',
  noOptionsAnswer: 'no OPTIONS answer',
  failed: 'failed',
  skipped: 'skipped',
}

/** The report as short, aligned lines for a human. */
function human(r) {
  const out = [`sandboxd doctor: SDK ${r.sdkVersion} on ${r.platform}/${r.arch}`, '']
  out.push(`sbx daemon candidates (${r.discovery}, in discovery order):`)
  out.push(
    ...table(
      r.candidates.map((c) => [
        c.outcome === 'answered' ? `answered HTTP ${c.httpStatus}` : OUTCOME[c.outcome] ?? c.outcome,
        c.endpoint + (c.selected ? '  <- discovery stops here' : '') + (c.detail && c.outcome !== 'missing' ? `  (${c.detail})` : ''),
      ]),
    ),
  )
  const d = r.daemon
  if (d) {
    out.push('', `sbx daemon at ${d.endpoint}:`)
    const gate = (g) => `${g.mode} ${g.ok ? 'ok' : 'FAILS'} (${g.range})`
    const info = d.info.error
      ? d.info.error
      : Object.entries(d.info.body ?? {})
          .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
          .join(', ')
    const facts = [
      ['version', d.version ?? '(not reported)'],
      ['api_version', d.apiVersion ?? '(not reported)'],
      ['gate', `${gate(d.strict)}, ${gate(d.lenient)}`],
      ['info', info],
    ]
    if (d.health.error) facts.splice(0, 0, ['health', d.health.error])
    out.push(...table(facts))
    out.push(`  routes (OPTIONS; per-sandbox routes with the name ${JSON.stringify(d.placeholderSandbox)}, which cannot exist):`)
    out.push(
      ...table(
        d.routes.map((p) => [
          VERDICT[p.verdict] ?? p.verdict,
          p.httpStatus === undefined ? '-' : String(p.httpStatus),
          p.methods.join(','),
          p.route +
            (p.missingMethods?.length ? `  (Allow lacks ${p.missingMethods.join(',')})` : '') +
            (p.verdict === 'failed' && p.detail ? `  (${p.detail})` : ''),
        ]),
        '    ',
      ),
    )
  }
  out.push('', 'legacy /vm API:')
  out.push(
    ...table(
      r.legacy.map((l) => [
        l.answers ? `answers (${l.vmCount} VM${l.vmCount === 1 ? '' : 's'})` : `no (${l.errorCode ?? 'error'})`,
        `${l.endpoint}  (${l.role === 'sbx' ? 'the sbx socket' : "the desktop backend's socket"})`,
      ]),
    ),
  )
  if (r.notes.length) out.push('', 'notes:', ...r.notes.map((n) => `  ${n}`))
  const u = r.sdkWouldUse
  if (u.backend === 'none') out.push('', u.reason, `SDK would use: none (${u.errorCode ?? 'no backend'})`)
  else out.push('', `SDK would use: ${u.backend} at ${u.socketPath}`)
  return out.join('\n')
}

async function doctorCmd(opts) {
  const { doctor } = require('../dist/index.js')
  const { json, ...options } = opts
  const report = await doctor(options)
  console.log(json ? JSON.stringify(report, null, 2) : human(report))
  process.exitCode = report.ok ? 0 : 1
}

async function main() {
  let parsed
  try {
    parsed = parse(process.argv.slice(2))
  } catch (e) {
    console.error(`sandboxd: ${e.message}\n\n${e.usage ?? USAGE}`)
    process.exit(2)
  }
  if (parsed.cmd === 'help') {
    console.log(parsed.usage)
    return
  }
  if (parsed.cmd === 'emulator') return emulator(parsed.opts)
  return doctorCmd(parsed.opts)
}

main().catch((e) => {
  console.error(`sandboxd: ${e.code ? `${e.code}: ` : ''}${e.message}`)
  process.exit(1)
})
