#!/usr/bin/env node
// `npx sandboxd emulator [--root DIR] [--backend dockerd|relay] [--docker-host unix:///…]`
// Serves the sandboxd API with LocalSandboxd until SIGINT/SIGTERM, then stops every VM it started.
'use strict'

const { LocalSandboxd } = require('../dist/index.js')

const USAGE = `usage: sandboxd emulator [--root DIR] [--backend dockerd|relay] [--docker-host unix:///path]

Starts LocalSandboxd: the sandboxd API (GET/POST /vm, DELETE /vm/{name}) on a Unix socket, each VM backed by
a real Docker engine. Prints the socket path; point the SDK at it with SANDBOXD_SOCKET=<path>.
Stops on Ctrl-C / SIGTERM and removes every VM engine it started.`

function parse(argv) {
  const [cmd, ...rest] = argv
  if (cmd === '-h' || cmd === '--help' || cmd === undefined) return { help: true }
  if (cmd !== 'emulator') throw new Error(`unknown command ${JSON.stringify(cmd)}`)
  const opts = {}
  const flags = { '--root': 'root', '--backend': 'backend', '--docker-host': 'dockerHost' }
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]
    if (a === '-h' || a === '--help') return { help: true }
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
    const key = flags[flag]
    if (!key) throw new Error(`unknown option ${JSON.stringify(a)}`)
    const value = inline ?? rest[++i]
    if (value === undefined) throw new Error(`${flag} needs a value`)
    opts[key] = value
  }
  return { opts }
}

async function main() {
  let parsed
  try {
    parsed = parse(process.argv.slice(2))
  } catch (e) {
    console.error(`sandboxd: ${e.message}\n\n${USAGE}`)
    process.exit(2)
  }
  if (parsed.help) {
    console.log(USAGE)
    return
  }
  const sbx = await LocalSandboxd.start(parsed.opts)
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

main().catch((e) => {
  console.error(`sandboxd: ${e.code ? `${e.code}: ` : ''}${e.message}`)
  process.exit(1)
})
