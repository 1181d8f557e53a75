// What the page needs to know about the proxy that serves it, and the two ways to build a client.
import { createClient, type ClientOptions, type SwitchyardClient } from "switchyard-client";

export type Mode = "direct" | "proxy";

/** The body of the proxy's `GET /demo/config.json`: the upstreams it serves on its own paths. */
export interface DemoConfig {
  /** The model the page starts with, `"<provider>/<model>"`. */
  default_model: string;
  /** OpenAI-compatible providers the browser may call directly, at `origin + base_path`. */
  providers: { name: string; kind: "openai"; base_path: string; models: string[] }[];
  /** MCP servers speaking Streamable HTTP, at `origin + path`. */
  mcp_servers: { name: string; path: string }[];
}

/** The proxy's embedded default set-up, for when it does not say (e.g. an older proxy). */
const FALLBACK: DemoConfig = {
  default_model: "mock/demo",
  providers: [{ name: "mock", kind: "openai", base_path: "/mock/mock/v1", models: ["mock/demo"] }],
  mcp_servers: [{ name: "demo", path: "/mcp/demo" }],
};

export async function loadDemoConfig(origin: string): Promise<DemoConfig> {
  try {
    const response = await fetch(`${origin}/demo/config.json`, { headers: { accept: "application/json" } });
    if (!response.ok) return FALLBACK;
    const body = (await response.json()) as Partial<DemoConfig>;
    return {
      default_model: body.default_model ?? FALLBACK.default_model,
      providers: body.providers ?? FALLBACK.providers,
      mcp_servers: body.mcp_servers ?? FALLBACK.mcp_servers,
    };
  } catch {
    return FALLBACK;
  }
}

/** The same page, two clients: only these options differ between the modes. */
export function clientOptions(mode: Mode, origin: string, config: DemoConfig): ClientOptions {
  if (mode === "proxy") return { mode: "proxy", baseUrl: origin };
  return {
    mode: "direct",
    providers: config.providers.map((p) => ({ name: p.name, kind: p.kind, baseUrl: origin + p.base_path })),
    mcpServers: config.mcp_servers.map((s) => ({ name: s.name, url: origin + s.path })),
  };
}

/** One client per mode, made on first use. */
export class Clients {
  readonly #made = new Map<Mode, SwitchyardClient>();

  constructor(
    readonly origin: string,
    readonly config: DemoConfig,
  ) {}

  get(mode: Mode): SwitchyardClient {
    let client = this.#made.get(mode);
    if (!client) {
      client = createClient(clientOptions(mode, this.origin, this.config));
      this.#made.set(mode, client);
    }
    return client;
  }

  /** The models a mode offers: the page's own providers directly, everything the proxy lists. */
  async models(mode: Mode): Promise<string[]> {
    const direct = this.config.providers.flatMap((p) => p.models);
    if (mode === "direct") return withDefault(direct, this.config.default_model);
    const response = await fetch(`${this.origin}/api/llm/models`);
    if (!response.ok) throw new Error(`GET /api/llm/models answered ${response.status}`);
    const list = (await response.json()) as { providers: { models: string[] }[] };
    return withDefault(
      list.providers.flatMap((p) => p.models),
      this.config.default_model,
    );
  }
}

function withDefault(models: string[], first: string): string[] {
  return [first, ...models.filter((m) => m !== first)];
}

/** What each mode's requests look like on the wire, for the page's "how it travels" panel. */
export function routesOf(mode: Mode, config: DemoConfig): { what: string; request: string }[] {
  if (mode === "proxy") {
    return [
      { what: "model", request: "POST /api/llm/stream" },
      { what: "tools", request: "POST /api/mcp/tool" },
    ];
  }
  return [
    ...config.providers.map((p) => ({ what: p.name, request: `POST ${p.base_path}/chat/completions` })),
    ...config.mcp_servers.map((s) => ({ what: s.name, request: `POST ${s.path}` })),
  ];
}
