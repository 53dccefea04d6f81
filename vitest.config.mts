import { defineConfig } from 'vitest/config'

export default defineConfig({
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
