// Entry for bundlers with WebAssembly ESM integration (webpack `asyncWebAssembly`, vite-plugin-wasm).
import * as wasm from "./wasm/bundler/switchyard_client.js";
import { SwitchyardClient, type WasmExports } from "./core.js";
import type { ClientOptions } from "./wasm/web/switchyard_client.js";

export * from "./core.js";

const loaded: Promise<WasmExports> = Promise.resolve(wasm);

/** Creates a client; `mode: "direct"` calls providers from the browser, `"proxy"` goes through
 * Switchyard, `"auto"` calls directly and moves each upstream the page cannot reach to the proxy. */
export function createClient(options: ClientOptions): SwitchyardClient {
  return new SwitchyardClient(() => loaded, options);
}
