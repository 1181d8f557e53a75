import { defineConfig } from "vite";

// Where `npm run dev` sends the proxy's routes: a proxy started by `cargo xtask demo`.
const proxy = process.env.SWITCHYARD_PROXY ?? "http://127.0.0.1:3001";

export default defineConfig({
  // Relative asset URLs: the proxy serves the page at `/`, but nothing here depends on it.
  base: "./",
  build: {
    target: "es2022",
    // The SDK's `.wasm` is fetched by URL; keep it a separate, cacheable file.
    assetsInlineLimit: 0,
  },
  // The SDK finds its `.wasm` through `import.meta.url`, which pre-bundling would break.
  optimizeDeps: { exclude: ["switchyard-client"] },
  server: {
    // The SDK is linked from ../sdk-wasm/pkg, outside this folder.
    fs: { allow: [".."] },
    proxy: Object.fromEntries(["/api", "/mock", "/mcp", "/demo", "/healthz"].map((p) => [p, proxy])),
  },
});
