// The demo page as a person uses it, in Debian Chromium (playwright-core), against the real proxy
// binary started as `cargo xtask demo` starts it (no configuration: the embedded default with the
// mock model, the demo MCP server and the page), on a free loopback port. Both modes: the same
// question, streamed answer and tool card, then a screenshot of each.
//
// Run by `cargo xtask test`; alone: build the page (`npm run build` here) and the proxy
// (`cargo build -p switchyard-proxy`), then `node --test www-demo/test/`.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const binary = process.env.SWITCHYARD_BIN ?? join(repo, "target/debug/switchyard");
const artifacts = process.env.SWITCHYARD_ARTIFACTS ?? join(repo, "target/test-artifacts");

/** What each mode is asked, and what its answer must contain. */
const QUESTION = "What is 12*(3+4)? calculate it";
const RESULT = "84";

let proxy;
let origin;
let context;
let page;
let profile;
/** Uncaught exceptions and unhandled rejections of the page; there must be none. */
const pageErrors = [];

/** Starts the proxy; resolves with its origin once it printed `listening on http://ADDR`. */
function startProxy() {
  const child = spawn(binary, ["serve", "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  let log = "";
  child.stderr.on("data", (chunk) => (log += chunk));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the proxy did not start in 30 s:\n${log}`)), 30_000);
    child.on("exit", (code) => reject(new Error(`the proxy exited (${code}) before listening:\n${log}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const match = /^listening on (\S+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve({ child, origin: match[1] });
      }
    });
  });
}

before(async () => {
  ({ child: proxy, origin } = await startProxy());
  const health = await fetch(`${origin}/healthz`);
  assert.equal(health.status, 200);
  profile = await mkdtemp(join(tmpdir(), "switchyard-demo-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 860 },
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
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await mkdir(artifacts, { recursive: true });
});

after(async () => {
  await context?.close();
  proxy?.kill();
  if (profile) await rm(profile, { recursive: true, force: true });
});

describe("the proxy serves the page", () => {
  test("index, hashed assets and the wasm with their types and caching", async () => {
    const index = await fetch(`${origin}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get("content-type"), /^text\/html/);
    assert.equal(index.headers.get("cache-control"), "no-cache");
    const html = await index.text();
    const assets = [...html.matchAll(/(?:src|href)="\.\/(assets\/[^"]+)"/g)].map((m) => m[1]);
    assert.ok(assets.some((a) => a.endsWith(".js")) && assets.some((a) => a.endsWith(".css")), html);
    for (const asset of assets) {
      const response = await fetch(`${origin}/${asset}`);
      assert.equal(response.status, 200, asset);
      assert.match(response.headers.get("cache-control"), /immutable/);
    }
    const js = await (await fetch(`${origin}/${assets.find((a) => a.endsWith(".js"))}`)).text();
    // The bundle finds the module next to itself (`new URL("x.wasm", import.meta.url)`).
    const wasm = /"([\w-]+\.wasm)"/.exec(js)?.[1];
    assert.ok(wasm, "the bundle names its .wasm");
    const module = await fetch(`${origin}/assets/${wasm}`);
    assert.equal(module.status, 200);
    assert.equal(module.headers.get("content-type"), "application/wasm");

    // A revalidation of the page costs nothing when it did not change.
    const again = await fetch(`${origin}/`, { headers: { "if-none-match": index.headers.get("etag") } });
    assert.equal(again.status, 304);
  });

  test("the API keeps its JSON answers around the page", async () => {
    const missing = await fetch(`${origin}/api/nope`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, "not_found");
    const asset = await fetch(`${origin}/assets/nope.js`);
    assert.equal(asset.status, 404);
    assert.equal((await asset.json()).error.code, "not_found");
    const post = await fetch(`${origin}/`, { method: "POST" });
    assert.equal(post.status, 405);
    assert.equal((await post.json()).error.code, "method_not_allowed");
  });

  test("/demo/config.json tells the page where the proxy serves its upstreams", async () => {
    const config = await (await fetch(`${origin}/demo/config.json`)).json();
    assert.equal(config.default_model, "mock/demo");
    assert.deepEqual(
      config.providers.map((p) => [p.name, p.base_path]),
      [["mock", "/mock/mock/v1"]],
    );
    assert.ok(config.mcp_servers.some((s) => s.name === "demo" && s.path === "/mcp/demo"));
  });
});

describe("the page", () => {
  test("loads in direct mode with the demo server's tools and the default model", async () => {
    await page.goto(`${origin}/?mode=direct`);
    await page.locator('[data-testid="app"][data-ready="true"]').waitFor();
    assert.equal(await page.locator('[data-testid="mode-direct"]').isChecked(), true);
    assert.equal(await page.locator('[data-testid="model-select"]').inputValue(), "mock/demo");
    for (const tool of ["calculate", "now", "search_notes"]) {
      await page.locator(`[data-testid="tool-demo-${tool}"]`).waitFor();
    }
  });

  for (const mode of ["direct", "proxy"]) {
    test(`${mode} mode: a streamed answer and a tool card with the result`, async () => {
      await page.locator(`[data-testid="mode-${mode}"]`).check();
      await page.locator(`[data-testid="app"][data-mode="${mode}"][data-ready="true"]`).waitFor();
      await page.locator('[data-testid="tool-demo-calculate"]').waitFor();

      // Every distinct state of the answer's text, to see that it arrived in pieces.
      await page.evaluate(() => {
        window.seenTexts = new Set();
        window.textWatcher?.disconnect();
        window.textWatcher = new MutationObserver(() => {
          const texts = document.querySelectorAll('[data-testid="turn"]:last-child [data-testid="assistant-text"]');
          const last = texts[texts.length - 1];
          if (last) window.seenTexts.add(last.textContent);
        });
        window.textWatcher.observe(document.querySelector('[data-testid="transcript"]'), {
          childList: true,
          subtree: true,
          characterData: true,
        });
      });

      await page.locator('[data-testid="prompt-input"]').fill(QUESTION);
      await page.locator('[data-testid="prompt-input"]').press("Enter");
      const turn = page.locator('[data-testid="turn"]').last();
      await turn.locator('xpath=self::*[@data-state="done"]').waitFor();

      assert.equal(await turn.getAttribute("data-mode"), mode);
      const card = turn.locator('[data-testid="tool-card"]');
      assert.equal(await card.count(), 1);
      assert.equal(await card.getAttribute("data-server"), "demo");
      assert.equal(await card.getAttribute("data-tool"), "calculate");
      assert.equal(await card.getAttribute("data-status"), "ok");
      assert.match(await card.locator('[data-testid="tool-card-arguments"]').innerText(), /12\*\(3\+4\)/);
      assert.match(await card.locator('[data-testid="tool-card-result"]').innerText(), new RegExp(RESULT));
      assert.match(await card.locator('[data-testid="tool-card-duration"]').innerText(), /\d+(\.\d+)? m?s/);

      const answer = await turn.locator('[data-testid="assistant-text"]').last().innerText();
      assert.match(answer, new RegExp(`= ${RESULT}`));
      const seen = await page.evaluate(() => [...window.seenTexts].filter((t) => t.length > 0));
      assert.ok(seen.length >= 3, `the answer arrived in pieces: ${JSON.stringify(seen)}`);

      assert.match(await turn.locator('[data-testid="stat-first-token"]').innerText(), /\d/);
      assert.match(await turn.locator('[data-testid="stat-total"]').innerText(), /\d/);
      assert.equal(await turn.locator('[data-testid="step-stats"]').count(), 2);

      await page.screenshot({ path: join(artifacts, `demo-${mode}.png`) });
    });
  }

  test("a denied tool call is shown as denied, and Stop ends a run", async () => {
    await page.locator('[data-testid="approve-toggle"]').check();

    await page.locator('[data-testid="prompt-input"]').fill("Calculate 2+2");
    await page.locator('[data-testid="send-button"]').click();
    let turn = page.locator('[data-testid="turn"]').last();
    await turn.locator('[data-testid="deny-call"]').click();
    await turn.locator('xpath=self::*[@data-state="done"]').waitFor();
    assert.equal(await turn.locator('[data-testid="tool-card"]').getAttribute("data-status"), "denied");

    await page.locator('[data-testid="prompt-input"]').fill("Calculate 3+3");
    await page.locator('[data-testid="send-button"]').click();
    turn = page.locator('[data-testid="turn"]').last();
    await turn.locator('[data-testid="approve-call"]').waitFor();
    await page.locator('[data-testid="stop-button"]').click();
    await turn.locator('xpath=self::*[@data-state="stopped"]').waitFor();
    assert.equal(await page.locator('[data-testid="app"]').getAttribute("data-busy"), "false");
    await page.locator('[data-testid="approve-toggle"]').uncheck();
  });
});

test("the page raised no uncaught errors or unhandled rejections", () => {
  assert.deepEqual(pageErrors, []);
});
