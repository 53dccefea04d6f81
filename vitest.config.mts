import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  resolve: {
    // specs import the package by its name, as users do (Node resolves that self-reference by itself; Vite does not)
    alias: [{ find: /^sandboxd$/, replacement: fileURLToPath(new URL('./dist/index.js', import.meta.url)) }],
  },
  test: {
    include: ['__test__/**/*.spec.ts'],
    // child processes, not worker threads: the addon and the daemons it
    // starts are native and hold signals/fds that threads would share
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // files start engines/daemons; on a 2-core machine run them one at a time
    fileParallelism: false,
  },
})
