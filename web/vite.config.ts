import { defineConfig } from "vite";

// The console is built into dist/console, which the Go package web embeds
// (web.go); dist/README.md stays, so the embed never finds the folder empty.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist/console",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    // One small app: keep its CSS in a file (the CSP allows no inline style).
    cssCodeSplit: false,
    assetsInlineLimit: 0,
  },
});
