import { defineConfig } from 'vite'

// The dashboard is served by the binary under /dashboard/ (see
// crates/server/src/routes/dashboard.rs) with a CSP that allows no inline
// script or style: everything here builds to files under dist/assets.
export default defineConfig({
  base: '/dashboard/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    // The polyfill is for browsers without modulepreload; every browser we
    // support has it, and it would only be dead code in the entry chunk.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 600
  }
})
