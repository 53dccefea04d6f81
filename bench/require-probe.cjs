// T6 probe: `node bench/require-probe.cjs <none|sdk|native|dockerode>` prints one JSON line with the require()
// time and the RSS it added. Nothing else is loaded first, so 'none' is plain node.
'use strict'
const path = require('path')
const what = process.argv[2] || 'none'
const target = { none: null, sdk: path.resolve(__dirname, '..'), native: path.resolve(__dirname, '../native/index.cjs'), dockerode: 'dockerode' }[what]
if (target === undefined) throw new Error(`unknown probe ${what}`)
const loadedBefore = new Set(process.moduleLoadList)
const rss0 = process.memoryUsage.rss()
const t0 = process.hrtime.bigint()
if (target) {
  const m = require(target)
  if ((what === 'sdk' || what === 'native') && typeof m.DockerEngine !== 'function') throw new Error('the package did not load')
}
const ms = Number(process.hrtime.bigint() - t0) / 1e6
const rss1 = process.memoryUsage.rss()
const builtins = process.moduleLoadList.filter((m) => !loadedBefore.has(m) && m.startsWith('NativeModule '))
process.stdout.write(
  JSON.stringify({
    what,
    ms,
    rssBefore: rss0,
    rssAfter: rss1,
    rssDelta: rss1 - rss0,
    childProcessLoaded: process.moduleLoadList.includes('NativeModule child_process'),
    builtinsLoaded: builtins.map((m) => m.slice('NativeModule '.length)),
  }) + '\n',
)
