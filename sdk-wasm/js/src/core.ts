// The idiomatic face over the wasm exports: `Error` subclasses, async iteration and lazy start-up.
// All request logic lives in Rust; this file only adapts shapes.
import type {
  AgentEvent,
  AgentRun as WasmAgentRun,
  AgentToolCall,
  CallToolResult,
  ChatRequest,
  ChatResponse,
  ChatStream as WasmChatStream,
  Client as WasmClient,
  ClientOptions,
  ErrorCode,
  GetPromptResult,
  McpProgress,
  McpPrompt,
  McpResource,
  McpServerInfo,
  McpTool,
  ReadResourceResult,
  Route,
  RouteChange,
  StreamEvent,
} from "./wasm/web/switchyard_client.js";

/** The events a client reports, by type. */
export interface ClientEvents {
  /** Auto mode moved an upstream to the proxy, for the rest of the client's life. */
  route: RouteChange;
}

/** What the loader of a wasm build provides. */
export interface WasmExports {
  Client: new (options: ClientOptions) => WasmClient;
}

/** Per-request options. */
export interface RequestOptions {
  /** Aborting it rejects the call with an {@link AbortError} and closes the connection. */
  signal?: AbortSignal;
}

/** Every failure the client reports; `code` is stable, `message` is for people. */
export class SwitchyardError extends Error {
  /** Stable machine-readable code. */
  readonly code: ErrorCode;
  /** The HTTP status that goes with the code (the same in both modes). */
  readonly status: number;
  /** Whether repeating the same request may succeed. */
  readonly retryable: boolean;
  /** Seconds to wait before retrying, when known. */
  readonly retryAfter?: number;

  constructor(code: ErrorCode, message: string, status: number, retryable: boolean, retryAfter?: number) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.retryable = retryable;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

/** The caller aborted the request (its `AbortSignal` fired). */
export class AbortError extends SwitchyardError {}
/** A rate limit was hit; see `retryAfter`. */
export class RateLimitError extends SwitchyardError {}
/** Credentials were missing or rejected (by the proxy or by the upstream). */
export class AuthenticationError extends SwitchyardError {}
/** The request itself is wrong: bad fields, unknown model or provider, too large. */
export class InvalidRequestError extends SwitchyardError {}
/** The upstream did not answer in time. */
export class TimeoutError extends SwitchyardError {}
/** The server could not be reached (down, unreachable, or mixed content). */
export class NetworkError extends SwitchyardError {}
/** The server answered, but does not allow this page's origin (CORS); see the README. */
export class CorsError extends NetworkError {}
/** A stream ended before its answer was complete. */
export class StreamInterruptedError extends SwitchyardError {}
/** The upstream failed (or the proxy could not reach the store its limits are shared in: `unavailable`). */
export class UpstreamError extends SwitchyardError {}

const classes: Partial<Record<ErrorCode, typeof SwitchyardError>> = {
  aborted: AbortError,
  rate_limited: RateLimitError,
  unauthorized: AuthenticationError,
  forbidden: AuthenticationError,
  upstream_unauthorized: AuthenticationError,
  bad_request: InvalidRequestError,
  not_found: InvalidRequestError,
  method_not_allowed: InvalidRequestError,
  payload_too_large: InvalidRequestError,
  upstream_timeout: TimeoutError,
  network_error: NetworkError,
  cors_blocked: CorsError,
  stream_interrupted: StreamInterruptedError,
  upstream_error: UpstreamError,
  // The proxy's shared-limit store is down: like an upstream failure, worth retrying later.
  unavailable: UpstreamError,
};

interface WireError {
  code: ErrorCode;
  message: string;
  status: number;
  retryable: boolean;
  retryAfter?: number;
}

function isWireError(e: unknown): e is WireError {
  return e instanceof Error && typeof (e as Partial<WireError>).code === "string";
}

/** Turns whatever a wasm call threw into the matching `SwitchyardError` subclass. */
function toSwitchyardError(e: unknown): SwitchyardError {
  if (e instanceof SwitchyardError) return e;
  if (isWireError(e)) {
    const Class = classes[e.code] ?? SwitchyardError;
    return new Class(e.code, e.message, e.status, e.retryable, e.retryAfter);
  }
  // A wasm trap or a bug: report it in the same shape rather than as a bare exception.
  const message = e instanceof Error ? e.message : String(e);
  return new SwitchyardError("internal", `internal error: ${message}`, 500, false);
}

async function guarded<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw toSwitchyardError(e);
  }
}

/** A streamed chat answer: iterate it with `for await`, or await `finalMessage()`. */
export class ChatStream implements AsyncIterable<StreamEvent> {
  readonly #opened: Promise<WasmChatStream>;

  /** @internal */
  constructor(opened: Promise<WasmChatStream>) {
    this.#opened = opened;
    // Failures surface when the stream is consumed, not as an unhandled rejection.
    opened.catch(() => undefined);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamEvent> {
    const stream = await guarded(() => this.#opened);
    try {
      for (;;) {
        const event = await guarded(() => stream.next());
        if (event === undefined) return;
        yield event;
      }
    } finally {
      // A no-op once the stream ended; after an early `break` it closes the connection.
      stream.cancel();
    }
  }

  /** Reads the rest of the stream and resolves with the whole answer. */
  finalMessage(): Promise<ChatResponse> {
    return guarded(async () => (await this.#opened).finalMessage());
  }
}

/** Options of {@link SwitchyardClient.runAgent}: a chat request without `tools` (the MCP
 * servers' tools are offered instead), and how the loop runs. */
export interface AgentOptions extends Omit<ChatRequest, "tools" | "tool_choice"> {
  /** The MCP servers whose tools the model is offered (as `<server>__<tool>` functions). */
  mcpServers?: string[];
  /** Model answers allowed before the run stops with reason `max_steps` (default 10). */
  maxSteps?: number;
  /** Aborting it stops the run, the current request and the running tool calls. */
  signal?: AbortSignal;
  /** Asked before each tool call runs; only `true` lets it run (a refusal is told to the model). */
  approve?: (call: AgentToolCall) => boolean | Promise<boolean>;
}

/** The `done` event: the last event of a run. */
export type AgentDone = Extract<AgentEvent, { type: "done" }>;

/** A running agent: iterate its events with `for await`, or await `result()`. Leaving the loop
 * early stops the run. */
export class AgentRun implements AsyncIterable<AgentEvent> {
  readonly #started: Promise<WasmAgentRun>;
  #consumed = false;

  /** @internal */
  constructor(started: Promise<WasmAgentRun>) {
    this.#started = started;
    // Failures surface when the run is consumed, not as an unhandled rejection.
    started.catch(() => undefined);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<AgentEvent> {
    if (this.#consumed) {
      throw new SwitchyardError("bad_request", "an agent run can be iterated only once", 400, false);
    }
    this.#consumed = true;
    const run = await guarded(() => this.#started);
    try {
      for (;;) {
        const event = await guarded(() => run.next());
        if (event === undefined) return;
        yield event;
      }
    } finally {
      // A no-op once the run ended; after an early `break` it aborts what is in flight.
      run.cancel();
    }
  }

  /** Runs to the end and resolves with the `done` event. */
  async result(): Promise<AgentDone> {
    let last: AgentEvent | undefined;
    for await (const event of this) last = event;
    if (last?.type !== "done") {
      throw new SwitchyardError("internal", "the run ended without a result", 500, false);
    }
    return last;
  }
}

/** Options of a tool call. */
export interface CallToolOptions extends RequestOptions {
  /** Called with each progress report of a long-running tool. */
  onProgress?: (progress: McpProgress) => void;
}

/** MCP servers: tools, resources and prompts, the same calls in both modes. */
export class McpApi {
  readonly #client: Promise<WasmClient>;

  /** @internal */
  constructor(client: Promise<WasmClient>) {
    this.#client = client;
  }

  /** The servers this client can use. */
  listServers(): Promise<McpServerInfo[]> {
    return guarded(async () => (await this.#client).mcpListServers());
  }

  /** Every tool of `server` (all pages). */
  listTools(server: string): Promise<McpTool[]> {
    return guarded(async () => (await this.#client).mcpListTools(server));
  }

  /** Calls a tool. Aborting `signal` cancels the call on the server too. */
  callTool(
    server: string,
    name: string,
    args?: Record<string, unknown>,
    options: CallToolOptions = {},
  ): Promise<CallToolResult> {
    return guarded(async () =>
      (await this.#client).mcpCallTool(server, name, args, options.signal, options.onProgress),
    );
  }

  /** Every resource of `server` (all pages). */
  listResources(server: string): Promise<McpResource[]> {
    return guarded(async () => (await this.#client).mcpListResources(server));
  }

  /** Reads a resource. */
  readResource(server: string, uri: string): Promise<ReadResourceResult> {
    return guarded(async () => (await this.#client).mcpReadResource(server, uri));
  }

  /** Every prompt of `server` (all pages). */
  listPrompts(server: string): Promise<McpPrompt[]> {
    return guarded(async () => (await this.#client).mcpListPrompts(server));
  }

  /** Gets a prompt with its arguments filled in. */
  getPrompt(server: string, name: string, args?: Record<string, string>): Promise<GetPromptResult> {
    return guarded(async () => (await this.#client).mcpGetPrompt(server, name, args));
  }
}

/** A client: the same interface in `"direct"`, `"proxy"` and `"auto"` mode. */
export class SwitchyardClient {
  /** The mode this client was created with. */
  readonly mode: ClientOptions["mode"];
  /** MCP servers: tools, resources and prompts. */
  readonly mcp: McpApi;
  readonly #client: Promise<WasmClient>;
  /** Upstreams auto mode moved to the proxy. */
  readonly #proxied = new Set<string>();
  readonly #listeners: { [K in keyof ClientEvents]: Set<(event: ClientEvents[K]) => void> } = {
    route: new Set(),
  };

  /** @internal */
  constructor(load: () => Promise<WasmExports>, options: ClientOptions) {
    this.mode = options.mode;
    this.#client = load().then((wasm) => {
      const client = new wasm.Client(options);
      client.onRouteChange((change) => this.#routeChanged(change));
      return client;
    });
    // Invalid options reject every call with the same error; never an unhandled rejection.
    this.#client.catch(() => undefined);
    this.mcp = new McpApi(this.#client);
  }

  /** How `upstream` (a provider or MCP server, by name) is reached now. In auto mode every
   * upstream starts `"direct"` and may move to `"proxy"` once, for good. */
  routeOf(upstream: string): Route {
    if (this.mode === "auto") return this.#proxied.has(upstream) ? "proxy" : "direct";
    return this.mode;
  }

  /** Calls `listener` on each event of `type`; returns a function that removes it. */
  on<K extends keyof ClientEvents>(type: K, listener: (event: ClientEvents[K]) => void): () => void {
    const listeners = this.#listeners[type];
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
    };
  }

  #routeChanged(change: RouteChange): void {
    this.#proxied.add(change.upstream);
    for (const listener of this.#listeners.route) {
      try {
        listener(change);
      } catch (e) {
        // A failing listener is the caller's bug: reported, but the call it came from goes on.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /** Resolves once the wasm module is loaded and the options are checked. */
  ready(): Promise<void> {
    return guarded(async () => {
      await this.#client;
    });
  }

  /** A complete chat answer. */
  chat(request: ChatRequest, options: RequestOptions = {}): Promise<ChatResponse> {
    return guarded(async () => (await this.#client).chat(request, options.signal));
  }

  /** Runs the agent loop: the model is offered the tools of `mcpServers`, its tool calls run
   * (a step's calls together) and their results go back to it until it answers or `maxSteps` is
   * reached. Nothing is sent until the run is iterated. */
  runAgent(options: AgentOptions): AgentRun {
    const { mcpServers = [], maxSteps, signal, approve, ...request } = options;
    return new AgentRun(
      this.#client.then((c) => c.runAgent(request, mcpServers, maxSteps, signal, approve)),
    );
  }

  /** A streamed chat answer. The request starts at once; errors surface when it is consumed. */
  chatStream(request: ChatRequest, options: RequestOptions = {}): ChatStream {
    return new ChatStream(this.#client.then((c) => c.chatStream(request, options.signal)));
  }
}

export type {
  AgentEvent,
  AgentStopReason,
  AgentToolCall,
  ApiError,
  AssistantMessage,
  AutoOptions,
  CallToolResult,
  ChatRequest,
  ChatResponse,
  ClientOptions,
  Content,
  ContentPart,
  DirectOptions,
  ErrorCode,
  FallbackProxy,
  FinishReason,
  GetPromptResult,
  McpContentBlock,
  McpMeta,
  McpProgress,
  McpPrompt,
  McpPromptArgument,
  McpPromptMessage,
  McpResource,
  McpResourceContents,
  McpServerEndpoint,
  McpServerInfo,
  McpTool,
  McpToolAnnotations,
  McpTransport,
  Message,
  ProviderEndpoint,
  ProviderKind,
  ProxyOptions,
  RetryOptions,
  ReadResourceResult,
  Route,
  RouteChange,
  RouteReason,
  StreamEvent,
  ToolCall,
  ToolCallStatus,
  ToolChoice,
  ToolDefinition,
  Transport,
  Usage,
} from "./wasm/web/switchyard_client.js";
