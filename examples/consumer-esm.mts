// A user's ESM module: `import { … } from 'sandboxd'`, typechecked by `npm test` and run by demo.spec.ts.
import { DockerEngine, LocalSandboxd, SandboxAgent, Sandboxd, type ExecResult } from 'sandboxd'

const classes = [DockerEngine, LocalSandboxd, SandboxAgent, Sandboxd].map((c) => c.name)
const sandboxd = new Sandboxd({ socketPath: '/nonexistent/sandboxd.sock' })
const code = await sandboxd.ping().then(
  () => 'ok',
  (e: { code?: string }) => e.code,
)
const shape: Pick<ExecResult, 'exitCode' | 'timedOut'> = { exitCode: 0, timedOut: false }
console.log(JSON.stringify({ module: 'esm', classes, code, shape }))
