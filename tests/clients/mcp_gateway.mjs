// Drives the proxy's MCP gateway (`/mcp`) with the MCP TypeScript SDK's own client
// (npm `@modelcontextprotocol/sdk`) and prints one JSON object of what the client saw, for
// tests/tests/mcp_gateway.rs to check.
//
// Environment: SWITCHYARD_MCP (the gateway's address), SWITCHYARD_KEY (a key of the proxy that
// may use every server), SWITCHYARD_NARROW_KEY (a key allowed only `local/echo` and `local/slow`).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const url = new URL(process.env.SWITCHYARD_MCP);

async function connect(key) {
  const client = new Client({ name: "gateway-ts-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(url, {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  await client.connect(transport);
  return { client, transport };
}

async function failure(call) {
  try {
    await call();
    return null;
  } catch (e) {
    return { class: e.constructor.name, code: e.code ?? null, message: e.message, data: e.data ?? null };
  }
}

const text = (result) => result.content?.[0]?.text ?? null;
const out = {};

const { client, transport } = await connect(process.env.SWITCHYARD_KEY);
out.protocolVersion = transport.protocolVersion ?? null;
out.sessionId = Boolean(transport.sessionId);
out.server = client.getServerVersion()?.name ?? null;
out.capabilities = client.getServerCapabilities();

out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
out.echo = text(await client.callTool({ name: "local__echo", arguments: { message: "from ts" } }));
out.everythingEcho = text(
  await client.callTool({ name: "everything__echo", arguments: { message: "reference" } }),
);

const progress = [];
out.slow = text(
  await client.callTool({ name: "local__slow", arguments: { steps: 3, delay_ms: 20 } }, undefined, {
    onprogress: (p) => progress.push({ progress: p.progress, total: p.total ?? null }),
  }),
);
out.progress = progress;

// Aborting a request: the SDK sends notifications/cancelled, which must reach the server.
const controller = new AbortController();
const abandoned = client.callTool(
  { name: "local__slow", arguments: { steps: 100, delay_ms: 100 } },
  undefined,
  { signal: controller.signal },
);
setTimeout(() => controller.abort("enough"), 300);
out.aborted = await failure(() => abandoned);
let stats = null;
for (let i = 0; i < 50; i++) {
  stats = JSON.parse(text(await client.callTool({ name: "local__stats", arguments: {} })));
  if (stats.cancelled > 0) break;
  await new Promise((r) => setTimeout(r, 100));
}
out.cancelledUpstream = stats.cancelled;

out.prompts = (await client.listPrompts()).prompts.map((p) => p.name).sort();
const prompt = await client.getPrompt({ name: "local__greeting", arguments: { name: "Ada" } });
out.prompt = prompt.messages[0].content.text;

const resources = (await client.listResources()).resources;
out.resources = resources.map((r) => r.uri).sort();
const local = resources.find((r) => r.uri.startsWith("switchyard://local/"));
const read = await client.readResource({ uri: local.uri });
out.read = { asked: local.uri, contents: read.contents.map((c) => c.uri) };

out.unknownTool = await failure(() => client.callTool({ name: "local__nope", arguments: {} }));
out.notNamespaced = await failure(() => client.callTool({ name: "echo", arguments: {} }));

// A changed tool list reaches the client on its session's event stream.
let changes = 0;
client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
  changes += 1;
});
await client.callTool({ name: "local__announce", arguments: {} });
for (let i = 0; i < 100 && changes === 0; i++) await new Promise((r) => setTimeout(r, 50));
out.toolListChanges = changes;
out.revealed = (await client.listTools()).tools.some((t) => t.name === "local__revealed");
await client.close();

// The narrow key sees and calls only what its scopes allow.
const narrow = await connect(process.env.SWITCHYARD_NARROW_KEY);
out.narrowTools = (await narrow.client.listTools()).tools.map((t) => t.name).sort();
out.narrowForbidden = await failure(() =>
  narrow.client.callTool({ name: "local__add", arguments: { a: 1, b: 2 } }),
);
await narrow.client.close();

out.wrongKey = await failure(() => connect("not-a-key"));

console.log(JSON.stringify(out));
