// The SDK's own cost in a real browser: `client.chat` against a plain `fetch` of the same request
// to the same endpoint, in direct mode (the fake LLM's /v1/chat/completions) and in proxy mode
// (the proxy's /api/llm/chat), in headless Debian Chromium driven by playwright-core. The four
// ways are interleaved call by call so drift hits them alike; timings are taken in the page with
// performance.now() (the page is cross-origin isolated, which gives it 5 µs resolution).
//
// Environment: BENCH_UPSTREAM (…/v1), BENCH_UPSTREAM_KEY, BENCH_PROXY (origin), BENCH_PKG (the
// built package), BENCH_CALLS (default 500), BENCH_OUT (JSON file), CHROMIUM.
import { createServer } from "node:http";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { tmpdir } from "node:os";
import { chromium } from "playwright-core";

function setting(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run this with bench/sdk.sh`);
  return value;
}

const upstream = setting("BENCH_UPSTREAM");
const upstreamKey = setting("BENCH_UPSTREAM_KEY");
const proxy = setting("BENCH_PROXY");
const pkgDir = setting("BENCH_PKG");
const calls = Number(process.env.BENCH_CALLS ?? 500);
const warmup = Math.max(20, Math.floor(calls / 10));

const types = { ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html", ".json": "application/json" };
// Cross-origin isolation: performance.now() is coarsened to 100 µs without it.
const isolation = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };

function servePackage() {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path === "/") {
      res.writeHead(200, { "content-type": "text/html", ...isolation }).end("<!doctype html><title>switchyard-client bench</title>");
      return;
    }
    const rel = normalize(path.replace(/^\/pkg\//, "")).replace(/^(\.\.[/\\])+/, "");
    try {
      const body = await readFile(join(pkgDir, rel));
      res.writeHead(200, { "content-type": types[extname(rel)] ?? "application/octet-stream", ...isolation }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

const server = await servePackage();
const profile = await mkdtemp(join(tmpdir(), "switchyard-bench-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  const result = await page.evaluate(
    async ({ upstream, upstreamKey, proxy, calls, warmup }) => {
      const sdk = await import("/pkg/index.js");
      const direct = sdk.createClient({
        mode: "direct",
        providers: [{ name: "fake", kind: "openai", baseUrl: upstream, apiKey: upstreamKey }],
        allowBrowserSecrets: true,
      });
      const proxied = sdk.createClient({ mode: "proxy", baseUrl: proxy });
      await direct.ready();
      await proxied.ready();
      const messages = [{ role: "user", content: "hello from the browser benchmark" }];
      const post = (url, body, headers) =>
        fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) }).then(
          async (r) => {
            if (!r.ok) throw new Error(`${url} answered ${r.status}`);
            return r.json();
          },
        );
      const ways = {
        "fetch, direct": () => post(`${upstream}/chat/completions`, { model: "echo", messages }, { authorization: `Bearer ${upstreamKey}` }),
        "sdk, direct": () => direct.chat({ model: "fake/echo", messages }),
        "fetch, proxy": () => post(`${proxy}/api/llm/chat`, { model: "fake/echo", messages }, {}),
        "sdk, proxy": () => proxied.chat({ model: "fake/echo", messages }),
      };
      const samples = Object.fromEntries(Object.keys(ways).map((k) => [k, []]));
      for (let i = 0; i < warmup + calls; i++) {
        for (const [name, call] of Object.entries(ways)) {
          const t = performance.now();
          const answer = await call();
          const took = performance.now() - t;
          const text = answer.message?.content ?? answer.choices?.[0]?.message?.content;
          if (text !== "echo: hello from the browser benchmark") throw new Error(`${name}: unexpected answer ${JSON.stringify(answer)}`);
          if (i >= warmup) samples[name].push(took * 1000);
        }
      }
      const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * p))];
      const summary = {};
      for (const [name, s] of Object.entries(samples)) {
        s.sort((a, b) => a - b);
        summary[name] = { n: s.length, p50_us: pct(s, 0.5), p90_us: pct(s, 0.9), p99_us: pct(s, 0.99), mean_us: s.reduce((a, b) => a + b, 0) / s.length };
      }
      return { crossOriginIsolated: self.crossOriginIsolated, userAgent: navigator.userAgent, ways: summary };
    },
    { upstream, upstreamKey, proxy, calls, warmup },
  );
  if (pageErrors.length) throw new Error(`errors in the page: ${pageErrors.join("; ")}`);
  const w = result.ways;
  const added = (mode, k) => w[`sdk, ${mode}`][k] - w[`fetch, ${mode}`][k];
  const out = {
    benchmark: "sdk_browser",
    calls_per_way: calls,
    browser: context.browser() ? `Chromium ${context.browser().version()}` : result.userAgent,
    cross_origin_isolated: result.crossOriginIsolated,
    ways: w,
    sdk_added_direct_p50_us: added("direct", "p50_us"),
    sdk_added_direct_p99_us: added("direct", "p99_us"),
    sdk_added_proxy_p50_us: added("proxy", "p50_us"),
    sdk_added_proxy_p99_us: added("proxy", "p99_us"),
  };
  console.log(`client.chat in Chromium, ${calls} calls per way (interleaved):`);
  for (const [name, s] of Object.entries(w)) {
    console.log(`  ${name.padEnd(14)} p50 ${s.p50_us.toFixed(0).padStart(6)} µs   p99 ${s.p99_us.toFixed(0).padStart(6)} µs`);
  }
  console.log(
    `  the SDK adds: direct p50 ${out.sdk_added_direct_p50_us.toFixed(0)} µs, p99 ${out.sdk_added_direct_p99_us.toFixed(0)} µs; ` +
      `proxy p50 ${out.sdk_added_proxy_p50_us.toFixed(0)} µs, p99 ${out.sdk_added_proxy_p99_us.toFixed(0)} µs`,
  );
  if (process.env.BENCH_OUT) await writeFile(process.env.BENCH_OUT, JSON.stringify(out, null, 2));
} finally {
  await context?.close();
  await new Promise((resolve) => server.close(resolve));
  await rm(profile, { recursive: true, force: true });
}
