// Runs after every `napi build`: the generated loader (index.js) falls back to `execSync('ldd --version')` to
// detect musl when neither /usr/bin/ldd nor `process.report` can tell. On Node >= 20 `process.report` always
// exists, so the fallback is dead code; it is replaced so that the package's JS never loads child_process.
// It also appends the hook that gives arguments of the wrong type the SDK's ERR_INVALID_ARGUMENT (args.cjs).
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const file = path.join(__dirname, '..', 'index.js')
let out = fs.readFileSync(file, 'utf8')

// Step 1: the child_process fallback (absent already when index.js was processed before).
const start = out.indexOf('const isMuslFromChildProcess = () => {')
if (start >= 0) {
  const end = out.indexOf('\n}\n', start)
  const replacement = `const isMuslFromChildProcess = () => {
  // sandboxd: no child processes from JS. Node >= 20 always has process.report, so this is never reached.
  return false
}`
  out = out.slice(0, start) + replacement + out.slice(end + 2)
}
if (out.includes('child_process')) {
  throw new Error(
    start >= 0
      ? 'postbuild: child_process is still referenced in index.js'
      : 'postbuild: the napi loader changed shape; update scripts/postbuild.cjs',
  )
}

// Step 2: arguments of the wrong type get the SDK's ERR_INVALID_ARGUMENT (args.cjs), hooked in once.
if (!out.includes("require('./args.cjs')")) {
  out = out.trimEnd() + "\n\n// sandboxd: wrong argument types -> ERR_INVALID_ARGUMENT (see args.cjs)\nrequire('./args.cjs')(module.exports)\n"
}
fs.writeFileSync(file, out)
