// A user's CommonJS module: `require('sandboxd')`, typechecked by `npm test` and run by demo.spec.ts.
import sandboxdPkg = require('sandboxd')

const { Sandboxd } = sandboxdPkg
const client: InstanceType<typeof Sandboxd> = new Sandboxd({ socketPath: '/nonexistent/sandboxd.sock' })
client.list().then(
  () => console.log(JSON.stringify({ module: 'cjs', code: 'ok' })),
  (e: { code?: string }) => console.log(JSON.stringify({ module: 'cjs', code: e.code })),
)
