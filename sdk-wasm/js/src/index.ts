// Entry for browsers and bundlers that load `.wasm` by URL (Vite, webpack 5, plain <script type=module>).
import init, * as wasm from "./wasm/web/switchyard_client.js";
import { SwitchyardClient, type WasmExports } from "./core.js";
import type { ClientOptions } from "./wasm/web/switchyard_client.js";

export * from "./core.js";

let loading: Promise<WasmExports> | undefined;

// The module is fetched and compiled on first use, once, whatever the number of clients.
function load(): Promise<WasmExports> {
  loading ??= init().then(() => wasm);
  return loading;
}

/** Creates a client; `mode: "direct"` calls providers from the browser, `"proxy"` goes through
 * Switchyard, `"auto"` calls directly and moves each upstream the page cannot reach to the proxy. */
export function createClient(options: ClientOptions): SwitchyardClient {
  return new SwitchyardClient(load, options);
}
