// The demo page: one chat whose agent calls MCP tools, through the proxy or straight from the
// browser. Flipping the switch swaps the client; everything else on the page stays the same.
import "./style.css";
import type { McpTool, Message } from "switchyard-client";
import { byTestId, formatMs, h, replace } from "./dom";
import { Clients, type Mode, loadDemoConfig, routesOf } from "./demo-config";
import { TurnView } from "./turn";

/** Questions the demo's scripted model knows how to answer with the demo server's tools. */
const SUGGESTIONS = [
  "What time is it?",
  "Calculate 12*(3+4)",
  "Search my notes for rust",
  "What time is it, and what is 2+2?",
];

/** Steps (model answers) one question may take. */
const MAX_STEPS = 6;

const app = byTestId("app");
const transcript = byTestId("transcript");
const form = byTestId<HTMLFormElement>("composer");
const input = byTestId<HTMLTextAreaElement>("prompt-input");
const send = byTestId<HTMLButtonElement>("send-button");
const stop = byTestId<HTMLButtonElement>("stop-button");
const modelSelect = byTestId<HTMLSelectElement>("model-select");
const serverList = byTestId("server-list");
const routeList = byTestId("route-list");
const askFirst = byTestId<HTMLInputElement>("approve-toggle");
const newChat = byTestId<HTMLButtonElement>("new-chat");
const modeInputs = [...document.querySelectorAll<HTMLInputElement>('input[name="mode"]')];

const origin = location.origin;
const clients = new Clients(origin, await loadDemoConfig(origin));

let mode: Mode = initialMode();
/** The conversation so far, as the model sees it (only completed runs join it). */
let conversation: Message[] = [];
/** The servers whose tools the agent may use, per mode. */
const enabled: Record<Mode, Set<string>> = { direct: new Set(), proxy: new Set() };
/** Modes whose servers were listed once: every server starts on, later choices are kept. */
const seeded = new Set<Mode>();
let running: AbortController | undefined;
/** Bumped on every mode switch, so a slow listing from the previous mode is ignored. */
let generation = 0;

function initialMode(): Mode {
  return new URLSearchParams(location.search).get("mode") === "proxy" ? "proxy" : "direct";
}

async function setMode(next: Mode): Promise<void> {
  mode = next;
  const mine = ++generation;
  app.dataset.mode = mode;
  for (const radio of modeInputs) radio.checked = radio.value === mode;
  const url = new URL(location.href);
  url.searchParams.set("mode", mode);
  history.replaceState(null, "", url);
  replace(
    routeList,
    ...routesOf(mode, clients.config).map((r) => h("li", {}, h("span", { class: "muted" }, r.what), " ", h("code", {}, r.request))),
  );
  app.dataset.ready = "false";
  await Promise.all([loadModels(mine), loadServers(mine)]);
  if (mine === generation) app.dataset.ready = "true";
}

async function loadModels(mine: number): Promise<void> {
  const current = modelSelect.value;
  let models: string[];
  try {
    models = await clients.models(mode);
  } catch {
    models = [clients.config.default_model];
  }
  if (mine !== generation) return;
  replace(modelSelect, ...models.map((m) => h("option", { value: m }, m)));
  modelSelect.value = models.includes(current) ? current : (models[0] ?? "");
}

async function loadServers(mine: number): Promise<void> {
  const client = clients.get(mode);
  replace(serverList, h("li", { class: "muted" }, "Loading…"));
  try {
    const servers = await client.mcp.listServers();
    const listed = await Promise.all(
      servers.map(async (s) => {
        const started = performance.now();
        try {
          return { ...s, tools: await client.mcp.listTools(s.name), ms: performance.now() - started };
        } catch (error) {
          return { ...s, error: describe(error), ms: performance.now() - started };
        }
      }),
    );
    if (mine !== generation) return;
    const on = enabled[mode];
    if (!seeded.has(mode)) for (const s of listed) if ("tools" in s) on.add(s.name);
    seeded.add(mode);
    replace(
      serverList,
      ...(listed.length === 0 ? [h("li", { class: "muted" }, "No MCP servers.")] : []),
      ...listed.map((s) =>
        h(
          "li",
          { class: "server", "data-testid": `server-${s.name}` },
          h(
            "label",
            { class: "server-head" },
            h("input", {
              type: "checkbox",
              checked: on.has(s.name),
              disabled: !("tools" in s),
              "data-testid": `server-toggle-${s.name}`,
              onchange: (e: Event) => {
                if ((e.target as HTMLInputElement).checked) on.add(s.name);
                else on.delete(s.name);
              },
            }),
            h("strong", {}, s.name),
            h("span", { class: "badge" }, s.transport.replace("_", " ")),
            h("span", { class: "muted small" }, formatMs(s.ms)),
          ),
          "tools" in s
            ? h("ul", { class: "tools" }, ...s.tools.map((t) => toolItem(s.name, t)))
            : h("p", { class: "error-text small", role: "alert" }, s.error),
        ),
      ),
    );
  } catch (error) {
    if (mine !== generation) return;
    replace(serverList, h("li", { class: "error-text", role: "alert" }, describe(error)));
  }
}

function toolItem(server: string, tool: McpTool): HTMLElement {
  return h(
    "li",
    { "data-testid": `tool-${server}-${tool.name}`, title: tool.description ?? "" },
    h("code", {}, tool.name),
    tool.description && h("span", { class: "muted small description" }, tool.description),
  );
}

function describe(error: unknown): string {
  const e = error as { code?: string; message?: string };
  return e.code ? `${e.code}: ${e.message ?? ""}` : String(error);
}

async function ask(question: string): Promise<void> {
  if (running || !question.trim()) return;
  const model = modelSelect.value;
  const approving = askFirst.checked;
  const turn = new TurnView(question, mode, model, approving);
  transcript.querySelector(".empty")?.remove();
  transcript.append(turn.root);
  following = true;
  keepScrolled();
  const controller = new AbortController();
  running = controller;
  setBusy(true);
  const messages: Message[] = [...conversation, { role: "user", content: question }];
  try {
    const run = clients.get(mode).runAgent({
      model,
      messages,
      mcpServers: [...enabled[mode]],
      maxSteps: MAX_STEPS,
      signal: controller.signal,
      ...(approving ? { approve: (call) => turn.askApproval(call, controller.signal) } : {}),
    });
    for await (const event of run) {
      turn.apply(event);
      if (event.type === "done") conversation = event.messages;
      keepScrolled();
    }
  } catch (error) {
    if (controller.signal.aborted) turn.stopped();
    else turn.failed(error);
  } finally {
    running = undefined;
    setBusy(false);
    keepScrolled();
  }
}

/** Wide screens scroll the transcript, narrow ones the whole page. */
const scrollers = [transcript, document.scrollingElement ?? document.documentElement];
/** Whether to follow the stream: until the reader scrolls up, and again once they come back down. */
let following = true;

function keepScrolled(): void {
  if (!following) return;
  for (const scroller of scrollers) scroller.scrollTop = scroller.scrollHeight;
}

const lastTop = new Map<Element, number>();

function onScroll(scroller: Element): void {
  // Growing content never moves the view up, so moving up is the reader's doing; reaching the
  // bottom again resumes following.
  const top = scroller.scrollTop;
  if (top < (lastTop.get(scroller) ?? 0) - 4) following = false;
  else if (scroller.scrollHeight - top - scroller.clientHeight < 48) following = true;
  lastTop.set(scroller, top);
}
transcript.addEventListener("scroll", () => onScroll(transcript), { passive: true });
window.addEventListener("scroll", () => onScroll(scrollers[1] ?? transcript), { passive: true });

function setBusy(busy: boolean): void {
  app.dataset.busy = String(busy);
  transcript.setAttribute("aria-busy", String(busy));
  send.disabled = busy;
  stop.disabled = !busy;
  for (const radio of modeInputs) radio.disabled = busy;
  modelSelect.disabled = busy;
  if (!busy) input.focus();
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  if (running) return;
  const question = input.value;
  input.value = "";
  void ask(question);
});
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    form.requestSubmit();
  }
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") running?.abort();
});
stop.addEventListener("click", () => running?.abort());
for (const radio of modeInputs) radio.addEventListener("change", () => void setMode(radio.value as Mode));
newChat.addEventListener("click", () => {
  running?.abort();
  conversation = [];
  replace(transcript, emptyState());
});

function emptyState(): HTMLElement {
  return h(
    "div",
    { class: "empty" },
    h("p", {}, "Ask something that needs a tool. The model decides which MCP tool to call; each call shows up as a card."),
    h(
      "div",
      { class: "suggestions" },
      ...SUGGESTIONS.map((s) =>
        h("button", { type: "button", class: "chip", "data-testid": "suggestion", onclick: () => void ask(s) }, s),
      ),
    ),
  );
}

replace(transcript, emptyState());
setBusy(false);
await setMode(mode);
