// The built npm package in a real page (Debian Chromium via playwright-core): what a frontend
// developer touches — `createClient`, `for await`, `AbortSignal`, `instanceof` on errors — in both
// modes. `cargo xtask test` builds the package and starts the upstream and the proxy first.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { tmpdir } from "node:os";
import { chromium } from "playwright-core";

function setting(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run these tests with \`cargo xtask test\``);
  return value;
}

const upstream = setting("SWITCHYARD_TEST_UPSTREAM");
const upstreamKey = setting("SWITCHYARD_TEST_UPSTREAM_KEY");
const proxy = setting("SWITCHYARD_TEST_PROXY");
const pagePort = Number(setting("SWITCHYARD_TEST_PAGE_PORT"));
const pkgDir = setting("SWITCHYARD_TEST_PKG");
const mcpEverything = setting("SWITCHYARD_TEST_MCP_EVERYTHING");
const mcpStateless = setting("SWITCHYARD_TEST_MCP_STATELESS");
const nocorsUpstream = setting("SWITCHYARD_TEST_NOCORS_UPSTREAM");

const types = { ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html", ".json": "application/json" };

// Serves the package under /pkg/ and an empty page at /, as an app's dev server would.
function servePackage() {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>switchyard-client test</title>");
      return;
    }
    const rel = normalize(path.replace(/^\/pkg\//, "")).replace(/^(\.\.[/\\])+/, "");
    try {
      const body = await readFile(join(pkgDir, rel));
      res.writeHead(200, { "content-type": types[extname(rel)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(pagePort, "127.0.0.1", () => resolve(server)));
}

let server;
let context;
let page;
let profile;
/** Uncaught exceptions and unhandled rejections of the page; there must be none. */
const pageErrors = [];

before(async () => {
  server = await servePackage();
  profile = await mkdtemp(join(tmpdir(), "switchyard-chromium-"));
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
  page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`http://127.0.0.1:${pagePort}/`);
  // One client per mode, shared by the cases; the helpers turn errors into plain data.
  await page.evaluate(
    async ({ upstream, upstreamKey, proxy, mcpEverything, mcpStateless }) => {
      const sdk = await import("/pkg/index.js");
      const options = {
        direct: {
          mode: "direct",
          providers: [{ name: "fake", kind: "openai", baseUrl: upstream, apiKey: upstreamKey }],
          allowBrowserSecrets: true,
          mcpServers: [
            { name: "everything", url: mcpEverything },
            { name: "stateless", url: mcpStateless },
          ],
        },
        proxy: { mode: "proxy", baseUrl: proxy },
        proxyWs: { mode: "proxy", baseUrl: proxy, transport: "websocket" },
      };
      window.sdk = sdk;
      window.clients = {
        direct: sdk.createClient(options.direct),
        proxy: sdk.createClient(options.proxy),
        proxyWs: sdk.createClient(options.proxyWs),
      };
      window.describeError = (e) => ({
        name: e.name,
        code: e.code,
        status: e.status,
        retryable: e.retryable,
        retryAfter: e.retryAfter,
        message: e.message,
        classes: ["Error", "SwitchyardError", "AbortError", "RateLimitError", "AuthenticationError", "InvalidRequestError", "TimeoutError", "NetworkError", "CorsError", "StreamInterruptedError", "UpstreamError"].filter(
          (c) => e instanceof (c === "Error" ? Error : sdk[c]),
        ),
      });
      window.observed = async () => (await fetch(upstream.replace(/\/v1$/, "/_observed"))).json();
    },
    { upstream, upstreamKey, proxy, mcpEverything, mcpStateless },
  );
});

after(async () => {
  await context?.close();
  await new Promise((resolve) => server?.close(resolve));
  if (profile) await rm(profile, { recursive: true, force: true });
});

const ask = (model, text = "hello") => ({ model, messages: [{ role: "user", content: text }] });

// `proxyWs`: proxy mode over the proxy's WebSocket.
for (const mode of ["direct", "proxy", "proxyWs"]) {
  describe(`${mode} mode`, () => {
    test("chat resolves with the whole answer", async () => {
      const r = await page.evaluate(({ mode, req }) => clients[mode].chat(req), { mode, req: ask("fake/echo", "hi there") });
      assert.equal(r.message.content, "echo: hi there");
      assert.equal(r.model, "fake/echo");
      assert.equal(r.finish_reason, "stop");
      assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    });

    test("chatStream is an async iterable of typed events, with finalMessage()", async () => {
      const { events, final } = await page.evaluate(
        async ({ mode, req }) => {
          const stream = clients[mode].chatStream(req);
          const events = [];
          for await (const e of stream) events.push(e);
          return { events, final: await stream.finalMessage() };
        },
        { mode, req: ask("fake/echo", "a b c") },
      );
      assert.equal(events[0].type, "start");
      assert.equal(events.at(-1).type, "finish");
      const text = events.filter((e) => e.type === "text_delta").map((e) => e.text).join("");
      assert.equal(text, "echo: a b c");
      assert.equal(final.message.content, text);
    });

    test("finalMessage() alone reads the whole stream, tool calls included", async () => {
      const r = await page.evaluate(
        ({ mode, req }) => clients[mode].chatStream(req).finalMessage(),
        {
          mode,
          req: {
            ...ask("fake/tools", "weather?"),
            tools: [{ name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } }],
          },
        },
      );
      assert.equal(r.finish_reason, "tool_calls");
      assert.deepEqual(r.message.tool_calls, [{ id: "call_1", name: "get_weather", arguments: '{"query":"weather in Paris"}' }]);
    });

    test("failures are Error subclasses with code, status and retryable", async () => {
      const e = await page.evaluate(
        ({ mode, req }) => clients[mode].chat(req).then(() => null, describeError),
        { mode, req: ask("fake/fail-429") },
      );
      assert.deepEqual(e.classes, ["Error", "SwitchyardError", "RateLimitError"]);
      assert.equal(e.name, "RateLimitError");
      assert.equal(e.code, "rate_limited");
      assert.equal(e.status, 429);
      assert.equal(e.retryable, true);
      assert.equal(e.retryAfter, 7);

      const auth = await page.evaluate(
        ({ mode, req }) => clients[mode].chat(req).then(() => null, describeError),
        { mode, req: ask("fake/fail-401") },
      );
      assert.equal(auth.code, "upstream_unauthorized");
      assert.ok(auth.classes.includes("AuthenticationError"));
      assert.ok(!auth.message.includes("sk-"), auth.message);
    });

    test("a stream that is cut throws StreamInterruptedError from for await", async () => {
      const r = await page.evaluate(
        async ({ mode, req }) => {
          const seen = [];
          try {
            for await (const e of clients[mode].chatStream(req)) seen.push(e.type);
            return { seen, error: null };
          } catch (e) {
            return { seen, error: describeError(e) };
          }
        },
        { mode, req: ask("fake/drop-stream") },
      );
      assert.ok(r.seen.includes("text_delta"));
      assert.equal(r.error.code, "stream_interrupted");
      assert.ok(r.error.classes.includes("StreamInterruptedError"));
    });

    test("aborting the signal rejects with AbortError and cancels the upstream", async () => {
      const before = (await page.evaluate(() => observed())).streams_cancelled;
      const r = await page.evaluate(
        async ({ mode, req }) => {
          const controller = new AbortController();
          let n = 0;
          try {
            for await (const _ of clients[mode].chatStream(req, { signal: controller.signal })) {
              if (++n === 3) controller.abort();
            }
            return null;
          } catch (e) {
            return describeError(e);
          }
        },
        { mode, req: ask("fake/long") },
      );
      assert.equal(r.name, "AbortError");
      assert.equal(r.code, "aborted");
      assert.ok(r.classes.includes("AbortError") && r.classes.includes("SwitchyardError"));
      await waitFor(async () => (await page.evaluate(() => observed())).streams_cancelled > before);
    });

    test("breaking out of for await closes the stream", async () => {
      const before = (await page.evaluate(() => observed())).streams_cancelled;
      const first = await page.evaluate(
        async ({ mode, req }) => {
          for await (const e of clients[mode].chatStream(req)) return e.type;
        },
        { mode, req: ask("fake/long") },
      );
      assert.equal(first, "start");
      await waitFor(async () => (await page.evaluate(() => observed())).streams_cancelled > before);
    });

    test("client.mcp lists and calls tools, with progress", async () => {
      const r = await page.evaluate(
        async ({ mode }) => {
          const mcp = clients[mode].mcp;
          const servers = (await mcp.listServers()).map((s) => s.name);
          const tools = (await mcp.listTools("everything")).map((t) => t.name);
          const echo = await mcp.callTool("everything", "echo", { message: "from the page" });
          const progress = [];
          const long = await mcp.callTool(
            "everything",
            "trigger-long-running-operation",
            { duration: 1, steps: 3 },
            { onProgress: (p) => progress.push(p.progress) },
          );
          const stateless = await mcp.callTool("stateless", "echo", { message: "2026" });
          return { servers, tools, echo, progress, long, stateless };
        },
        { mode },
      );
      assert.ok(r.servers.includes("everything") && r.servers.includes("stateless"));
      assert.ok(r.tools.includes("echo") && r.tools.includes("get-sum"));
      assert.deepEqual(r.echo.content, [{ type: "text", text: "Echo: from the page" }]);
      assert.ok(r.progress.length >= 2, `progress: ${r.progress}`);
      assert.notEqual(r.long.isError, true);
      assert.equal(r.stateless.content[0].text, "Echo: 2026");
    });

    test("client.mcp reads resources and prompts", async () => {
      const r = await page.evaluate(
        async ({ mode }) => {
          const mcp = clients[mode].mcp;
          const resources = await mcp.listResources("everything");
          const read = await mcp.readResource("everything", resources[0].uri);
          const prompts = (await mcp.listPrompts("everything")).map((p) => p.name);
          const prompt = await mcp.getPrompt("everything", "args-prompt", { city: "Lyon" });
          return { count: resources.length, read, prompts, prompt };
        },
        { mode },
      );
      assert.ok(r.count >= 7);
      assert.ok(r.read.contents[0].text.length > 0);
      assert.ok(r.prompts.includes("simple-prompt"));
      assert.match(JSON.stringify(r.prompt.messages), /Lyon/);
    });

    test("MCP failures are SwitchyardErrors; aborting a tool call rejects with AbortError", async () => {
      const r = await page.evaluate(
        async ({ mode }) => {
          const mcp = clients[mode].mcp;
          const unknownServer = await mcp.listTools("nope").then(() => null, describeError);
          const unknownTool = await mcp.callTool("everything", "no-such-tool", {}).then(() => null, describeError);
          const controller = new AbortController();
          setTimeout(() => controller.abort(), 200);
          const aborted = await mcp
            .callTool("everything", "trigger-long-running-operation", { duration: 5, steps: 5 }, { signal: controller.signal })
            .then(() => null, describeError);
          return { unknownServer, unknownTool, aborted };
        },
        { mode },
      );
      assert.equal(r.unknownServer.code, "not_found");
      assert.ok(r.unknownServer.classes.includes("InvalidRequestError"));
      assert.equal(r.unknownTool.code, "not_found");
      assert.equal(r.aborted.name, "AbortError");
    });

    test("runAgent streams typed events through a tool round trip; approve may be async", async () => {
      const r = await page.evaluate(
        async ({ mode }) => {
          const asked = [];
          const run = clients[mode].runAgent({
            model: "fake/agent",
            messages: [{ role: "user", content: 'call stateless__echo {"message":"page"}' }],
            mcpServers: ["stateless"],
            approve: async (call) => {
              asked.push(call);
              await new Promise((resolve) => setTimeout(resolve, 10));
              return true;
            },
          });
          const types = [];
          let text = "";
          let result;
          let done;
          for await (const event of run) {
            types.push(event.type);
            if (event.type === "text_delta") text += event.text;
            if (event.type === "tool_result") result = event;
            if (event.type === "done") done = event;
          }
          const again = await (async () => {
            for await (const _ of run) return "iterated twice";
          })().then(() => null, describeError);
          return { asked, types, text, result, done, again };
        },
        { mode },
      );
      assert.deepEqual(r.asked, [{ call_id: "call_1_1", server: "stateless", tool: "echo", arguments: { message: "page" } }]);
      assert.deepEqual(
        r.types.filter((t) => t !== "text_delta" && t !== "usage"),
        ["step_finished", "tool_call_started", "tool_result", "step_finished", "done"],
      );
      assert.equal(r.text, "tool said: Echo: page");
      assert.equal(r.result.status, "ok");
      assert.equal(r.result.result.content[0].text, "Echo: page");
      assert.equal(typeof r.result.duration_ms, "number");
      assert.equal(r.done.reason, "answered");
      assert.equal(r.done.steps, 2);
      assert.equal(r.done.messages.length, 4);
      assert.equal(r.again.code, "bad_request");
    });

    test("runAgent: a falsy approve refuses, result() resolves with done, a throwing approve fails the run", async () => {
      const r = await page.evaluate(
        async ({ mode }) => {
          const base = {
            model: "fake/agent",
            messages: [{ role: "user", content: 'call stateless__add {"a":1,"b":2}' }],
            mcpServers: ["stateless"],
          };
          const refused = await clients[mode].runAgent({ ...base, approve: () => undefined }).result();
          const thrown = await clients[mode]
            .runAgent({
              ...base,
              approve: () => {
                throw new Error("no dialogs here");
              },
            })
            .result()
            .then(() => null, describeError);
          return { refused, thrown };
        },
        { mode },
      );
      assert.equal(r.refused.message.content, "tool said: error: the user did not allow this call");
      assert.match(r.thrown.message, /no dialogs here/);
      assert.ok(r.thrown.classes.includes("SwitchyardError"));
    });

    test("runAgent: aborting mid-tool rejects with AbortError; leaving the loop early stops the run", async () => {
      const r = await page.evaluate(
        async ({ mode }) => {
          const slow = { role: "user", content: 'call stateless__slow {"steps":50,"delay_ms":100}' };
          const controller = new AbortController();
          const seen = [];
          const aborted = await (async () => {
            for await (const event of clients[mode].runAgent({
              model: "fake/agent",
              messages: [slow],
              mcpServers: ["stateless"],
              signal: controller.signal,
            })) {
              seen.push(event.type);
              if (event.type === "tool_call_started") setTimeout(() => controller.abort(), 200);
            }
          })().then(() => null, describeError);
          const cancelled = async () => JSON.parse((await clients[mode].mcp.callTool("stateless", "stats")).content[0].text).cancelled;
          const before = await cancelled();
          for await (const event of clients[mode].runAgent({ model: "fake/agent", messages: [slow], mcpServers: ["stateless"] })) {
            if (event.type !== "tool_call_started") continue;
            // The call runs while the page is busy elsewhere; then the page loses interest.
            await new Promise((resolve) => setTimeout(resolve, 300));
            break;
          }
          // The server counts the cancelled call; bounded wait for the notification to land.
          let after = before;
          for (let i = 0; i < 30 && after === before; i++) {
            await new Promise((resolve) => setTimeout(resolve, 100));
            after = await cancelled();
          }
          return { aborted, seen, brokeOut: after > before };
        },
        { mode },
      );
      assert.equal(r.aborted.name, "AbortError");
      assert.ok(r.seen.includes("tool_call_started"));
      assert.ok(!r.seen.includes("tool_result"), "no result after the abort");
      assert.ok(r.brokeOut, "breaking out of the loop cancels the running call on the server");
    });

    test("fields a client must not set are refused with InvalidRequestError", async () => {
      const e = await page.evaluate(
        ({ mode, req }) => clients[mode].chat(req).then(() => null, describeError),
        { mode, req: { ...ask("fake/echo"), base_url: "http://169.254.169.254/" } },
      );
      assert.equal(e.code, "bad_request");
      assert.ok(e.classes.includes("InvalidRequestError"));
      assert.match(e.message, /base_url/);
      const nested = await page.evaluate(
        ({ mode, req }) => clients[mode].chat(req).then(() => null, describeError),
        {
          mode,
          req: {
            ...ask("fake/echo"),
            messages: [{ role: "user", content: "hi", nickname: "alice" }],
          },
        },
      );
      assert.equal(nested?.code, "bad_request", "a field inside a message is refused too");
      assert.match(nested.message, /unknown field `nickname`/);
    });
  });
}

test("a server that answers without CORS headers rejects with CorsError, a NetworkError", async () => {
  const e = await page.evaluate(async (port) => {
    // The page's own server under another name: another origin, and no CORS headers.
    const client = sdk.createClient({
      mode: "direct",
      providers: [{ name: "nocors", kind: "openai", baseUrl: `http://localhost:${port}/v1` }],
    });
    return client.chat({ model: "nocors/m", messages: [{ role: "user", content: "x" }] }).then(() => null, describeError);
  }, pagePort);
  assert.equal(e.code, "cors_blocked");
  assert.ok(e.classes.includes("NetworkError") && e.classes.includes("SwitchyardError"));
  assert.equal(e.name, "CorsError");
});

test("invalid options reject every call, and ready(), with InvalidRequestError", async () => {
  const r = await page.evaluate(async () => {
    const client = sdk.createClient({ mode: "proxy", baseUrl: "localhost:3001" });
    return {
      ready: await client.ready().then(() => null, describeError),
      chat: await client.chat({ model: "a/b", messages: [] }).then(() => null, describeError),
    };
  });
  assert.equal(r.ready.code, "bad_request");
  assert.match(r.ready.message, /baseUrl/);
  assert.equal(r.chat.code, "bad_request");
  const mode = await page.evaluate(async () => {
    const client = sdk.createClient({ mode: "sideways" });
    return client.ready().then(() => null, describeError);
  });
  assert.equal(mode.code, "bad_request");
});

test("a provider apiKey in direct mode needs allowBrowserSecrets, a keyless provider does not", async () => {
  const r = await page.evaluate(async () => {
    const provider = { name: "hosted", kind: "openai", baseUrl: "https://api.example.com/v1" };
    const ready = (options) => sdk.createClient(options).ready().then(() => null, describeError);
    return {
      refused: await ready({ mode: "direct", providers: [{ ...provider, apiKey: "sk-page-secret" }] }),
      allowed: await ready({ mode: "direct", providers: [{ ...provider, apiKey: "sk-page-secret" }], allowBrowserSecrets: true }),
      keyless: await ready({ mode: "direct", providers: [provider] }),
    };
  });
  assert.equal(r.refused.code, "bad_request");
  assert.equal(r.refused.status, 400);
  assert.ok(r.refused.classes.includes("InvalidRequestError"), r.refused.classes.join());
  assert.match(r.refused.message, /anyone using this page/);
  assert.match(r.refused.message, /allowBrowserSecrets/);
  assert.doesNotMatch(r.refused.message, /sk-page-secret/);
  assert.equal(r.allowed, null);
  assert.equal(r.keyless, null);
});

test("auto mode moves an upstream without CORS to the proxy once, and says so", async () => {
  const r = await page.evaluate(
    async ({ upstream, upstreamKey, nocorsUpstream, proxy }) => {
      const client = sdk.createClient({
        mode: "auto",
        providers: [
          { name: "fake", kind: "openai", baseUrl: upstream, apiKey: upstreamKey },
          { name: "nocors", kind: "openai", baseUrl: nocorsUpstream },
        ],
        allowBrowserSecrets: true,
        proxy: { baseUrl: proxy },
      });
      const events = [];
      const seen = [];
      client.on("route", (e) => events.push(e));
      const stop = client.on("route", (e) => seen.push(e));
      const ask = (model, content) => ({ model, messages: [{ role: "user", content }] });
      const initially = client.routeOf("nocors");
      const direct = (await client.chat(ask("fake/echo", "direct"))).message.content;
      const first = (await client.chat(ask("nocors/echo", "first"))).message.content;
      const then = client.routeOf("nocors");
      stop();
      const second = (await client.chatStream(ask("nocors/echo", "second")).finalMessage()).message.content;
      return { initially, direct, first, then, second, fake: client.routeOf("fake"), events, seen };
    },
    { upstream, upstreamKey, nocorsUpstream, proxy },
  );
  assert.deepEqual(r, {
    initially: "direct",
    direct: "echo: direct",
    first: "echo: first",
    then: "proxy",
    second: "echo: second",
    fake: "direct",
    events: [{ upstream: "nocors", route: "proxy", reason: "cors_blocked" }],
    seen: [{ upstream: "nocors", route: "proxy", reason: "cors_blocked" }],
  });
});

async function waitFor(check, ms = 3000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail("condition not met in time");
}

test("the page raised no uncaught errors or unhandled rejections", () => {
  assert.deepEqual(pageErrors, []);
});
