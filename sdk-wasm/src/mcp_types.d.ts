/** Optional metadata on MCP objects (`_meta`). */
export type McpMeta = Record<string, unknown>;

/** Hints about a tool's behaviour, as the server describes it. */
export interface McpToolAnnotations {
    title?: string;
    readOnlyHint?: boolean;
    destructiveHint?: boolean;
    idempotentHint?: boolean;
    openWorldHint?: boolean;
}

/** A tool an MCP server offers. */
export interface McpTool {
    name: string;
    title?: string;
    description?: string;
    /** JSON Schema of the arguments. */
    inputSchema: Record<string, unknown>;
    /** JSON Schema of `structuredContent` in the result, when the tool declares one. */
    outputSchema?: Record<string, unknown>;
    annotations?: McpToolAnnotations;
    _meta?: McpMeta;
}

/** A resource's contents: text or base64 data. */
export type McpResourceContents =
    | { uri: string; mimeType?: string; text: string; _meta?: McpMeta }
    | { uri: string; mimeType?: string; blob: string; _meta?: McpMeta };

/** One block of content in a tool result or a prompt message. */
export type McpContentBlock =
    | { type: "text"; text: string; _meta?: McpMeta }
    | { type: "image"; data: string; mimeType: string; _meta?: McpMeta }
    | { type: "audio"; data: string; mimeType: string; _meta?: McpMeta }
    | { type: "resource"; resource: McpResourceContents; _meta?: McpMeta }
    | ({ type: "resource_link" } & McpResource);

/** The result of a tool call; a failure of the tool itself has `isError: true`. */
export interface CallToolResult {
    content: McpContentBlock[];
    structuredContent?: Record<string, unknown>;
    isError?: boolean;
    _meta?: McpMeta;
}

/** A resource an MCP server offers. */
export interface McpResource {
    uri: string;
    name: string;
    title?: string;
    description?: string;
    mimeType?: string;
    size?: number;
    _meta?: McpMeta;
}

/** The result of reading a resource. */
export interface ReadResourceResult {
    contents: McpResourceContents[];
    _meta?: McpMeta;
}

/** An argument a prompt takes. */
export interface McpPromptArgument {
    name: string;
    title?: string;
    description?: string;
    required?: boolean;
}

/** A prompt an MCP server offers. */
export interface McpPrompt {
    name: string;
    title?: string;
    description?: string;
    arguments?: McpPromptArgument[];
    _meta?: McpMeta;
}

/** One message of a prompt. */
export interface McpPromptMessage {
    role: "user" | "assistant";
    content: McpContentBlock;
}

/** A prompt with its arguments filled in. */
export interface GetPromptResult {
    description?: string;
    messages: McpPromptMessage[];
    _meta?: McpMeta;
}
