// Runs after every `napi build`: the generated loader (index.js) falls back to `execSync('ldd --version')` to
// detect musl when neither /usr/bin/ldd nor `process.report` can tell. On Node >= 20 `process.report` always
// exists, so the fallback is dead code; it is replaced so that the package's JS never loads child_process.
// It also appends the hook that gives arguments of the wrong type the SDK's ERR_INVALID_ARGUMENT (args.cjs).
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const file = path.join(__dirname, '..', 'index.js')
const src = fs.readFileSync(file, 'utf8')
const start = src.indexOf('const isMuslFromChildProcess = () => {')
// Second step: arguments of the wrong type get the SDK's ERR_INVALID_ARGUMENT (args.cjs).
const ARGS_HOOK = "\n// sandboxd: wrong argument types -> ERR_INVALID_ARGUMENT (see args.cjs)\nrequire('./args.cjs')(module.exports)\n"
function withArgs(text) {
  return text.includes("require('./args.cjs')") ? text : text.trimEnd() + '\n' + ARGS_HOOK
}
if (start < 0) {
  if (!src.includes('child_process')) {
    fs.writeFileSync(file, withArgs(src)) // already clean
    process.exit(0)
  }
  throw new Error('postbuild: the napi loader changed shape; update scripts/postbuild.cjs')
}
const end = src.indexOf('\n}\n', start)
const replacement = `const isMuslFromChildProcess = () => {
  // sandboxd: no child processes from JS. Node >= 20 always has process.report, so this is never reached.
  return false
}`
let out = src.slice(0, start) + replacement + src.slice(end + 2)
if (out.includes('child_process')) throw new Error('postbuild: child_process is still referenced in index.js')
out = withArgs(out)
fs.writeFileSync(file, out)
