// One exchange in the transcript: the question, then the answer as it streams in — text, tool call
// cards in the order the model asked for them — and the run's latency underneath.
import type { CallToolResult } from "switchyard-client";
import { append, formatMs, h, replace } from "./dom";
import type { Mode } from "./demo-config";
import { type AgentEvent, RunTimer } from "./timing";

type ToolResultEvent = Extract<AgentEvent, { type: "tool_result" }>;

/** What `approve` receives: the call the model asked for. */
export interface PendingCall {
  server: string;
  tool: string;
  arguments: Record<string, unknown>;
  call_id: string;
}

interface Card {
  root: HTMLElement;
  status: HTMLElement;
  duration: HTMLElement;
  body: HTMLElement;
  startedAt: number;
}

export class TurnView {
  readonly root: HTMLElement;
  readonly timer = new RunTimer();
  readonly #answer: HTMLElement;
  readonly #stats: HTMLElement;
  readonly #cards = new Map<string, Card>();
  readonly #approving: boolean;
  #text?: { step: number; el: HTMLElement };
  #tokens?: number;

  /** With `approving`, a call waits for the user's decision before it runs. */
  constructor(question: string, mode: Mode, model: string, approving: boolean) {
    this.#approving = approving;
    this.#answer = h("div", { class: "answer", "data-testid": "answer" });
    this.#stats = h("footer", { class: "turn-stats", "data-testid": "turn-stats" });
    this.root = h(
      "article",
      { class: "turn", "data-testid": "turn", "data-mode": mode, "data-state": "running" },
      h(
        "div",
        { class: "bubble user", "data-testid": "message-user" },
        h("span", { class: "visually-hidden" }, "You: "),
        question,
      ),
      h(
        "div",
        { class: "bubble assistant", "data-testid": "message-assistant" },
        h(
          "div",
          { class: "meta" },
          h("span", { class: `mode-chip ${mode}` }, mode),
          h("span", { class: "model" }, model),
        ),
        this.#answer,
        this.#stats,
      ),
    );
    this.#answer.append(h("span", { class: "thinking", "data-testid": "thinking" }, "Thinking…"));
    this.#renderStats();
  }

  apply(event: AgentEvent): void {
    this.timer.observe(event);
    this.#answer.querySelector(".thinking")?.remove();
    switch (event.type) {
      case "text_delta":
        this.#textFor(event.step).append(event.text);
        break;
      case "tool_call_started": {
        const card = this.#card(event);
        if (card.root.dataset.status === "queued") {
          const next = this.#approving ? "waiting" : "running";
          card.root.dataset.status = next;
          card.status.textContent = next;
        }
        break;
      }
      case "tool_result":
        this.#finishCard(event);
        break;
      case "usage":
        this.#tokens = (this.#tokens ?? 0) + event.usage.total_tokens;
        break;
      case "done":
        if (event.usage) this.#tokens = event.usage.total_tokens;
        // An answer that never streamed any text (e.g. only tool calls) still shows its message.
        if (!this.#answer.querySelector('[data-testid="assistant-text"]') && event.message.content) {
          this.#textFor(event.steps).append(event.message.content);
        }
        if (event.reason === "max_steps") {
          this.#notice("The step budget ran out while the model still wanted tools.", "warning");
        }
        this.#settle("done");
        break;
      default:
        break;
    }
    this.#renderStats();
  }

  /** Shows a call waiting for the user's decision; resolves with it (a refusal if the run stops). */
  askApproval(call: PendingCall, signal: AbortSignal): Promise<boolean> {
    const card = this.#card({ ...call, step: 0 });
    card.root.dataset.status = "approval";
    card.status.textContent = "needs approval";
    return new Promise((resolve) => {
      const decide = (allowed: boolean) => () => {
        signal.removeEventListener("abort", stopped);
        buttons.remove();
        card.root.dataset.status = allowed ? "running" : "denied";
        card.status.textContent = allowed ? "running" : "denied";
        resolve(allowed);
      };
      const stopped = () => {
        buttons.remove();
        resolve(false);
      };
      signal.addEventListener("abort", stopped, { once: true });
      const buttons = h(
        "div",
        { class: "approval", role: "group", "aria-label": `Run ${call.server}/${call.tool}?` },
        h("button", { class: "btn primary small", "data-testid": "approve-call", onclick: decide(true) }, "Allow"),
        h("button", { class: "btn small", "data-testid": "deny-call", onclick: decide(false) }, "Deny"),
      );
      card.root.append(buttons);
      buttons.querySelector("button")?.focus();
    });
  }

  stopped(): void {
    this.timer.end();
    this.#notice("Stopped.", "info");
    this.#settle("stopped");
  }

  failed(error: unknown): void {
    this.timer.end();
    const e = error as { code?: string; status?: number; message?: string };
    const text = e.code ? `${e.code}${e.status ? ` (${e.status})` : ""}: ${e.message ?? ""}` : String(error);
    this.#notice(text, "error");
    this.#settle("failed");
  }

  #settle(state: string): void {
    this.root.dataset.state = state;
    this.#answer.querySelector(".thinking")?.remove();
    this.#text?.el.classList.remove("streaming");
    for (const card of this.#cards.values()) {
      if (["queued", "waiting", "running", "approval"].includes(card.root.dataset.status ?? "")) {
        card.root.dataset.status = "cancelled";
        card.status.textContent = "cancelled";
      }
    }
    this.#renderStats();
  }

  #notice(text: string, kind: "info" | "warning" | "error"): void {
    this.#answer.append(
      h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": `turn-${kind}` }, text),
    );
  }

  /** Text of one step goes into its own paragraph, so tool cards sit between the steps. */
  #textFor(step: number): HTMLElement {
    if (this.#text?.step !== step) {
      this.#text?.el.classList.remove("streaming");
      const el = h("p", { class: "text streaming", "data-testid": "assistant-text", "data-step": step });
      this.#answer.append(el);
      this.#text = { step, el };
    }
    return this.#text.el;
  }

  #card(call: PendingCall & { step: number }): Card {
    const existing = this.#cards.get(call.call_id);
    if (existing) return existing;
    this.#text?.el.classList.remove("streaming");
    this.#text = undefined;
    const status = h("span", { class: "status", "data-testid": "tool-card-status" }, "queued");
    const duration = h("span", { class: "duration", "data-testid": "tool-card-duration" });
    const body = h("div", { class: "result", "data-testid": "tool-card-result" });
    const root = h(
      "section",
      {
        class: "tool-card",
        "data-testid": "tool-card",
        "data-status": "queued",
        "data-server": call.server,
        "data-tool": call.tool,
        "aria-label": `Tool call ${call.server}/${call.tool}`,
      },
      h(
        "header",
        {},
        h("span", { class: "tool-icon", "aria-hidden": "true" }, "⚙"),
        h("span", { class: "tool-name" }, h("span", { class: "card-server" }, call.server), " / ", h("strong", {}, call.tool)),
        status,
        duration,
      ),
      h("div", { class: "label" }, "arguments"),
      h("pre", { class: "args", "data-testid": "tool-card-arguments" }, JSON.stringify(call.arguments, null, 2)),
      h("div", { class: "label" }, "result"),
      body,
    );
    body.append(h("span", { class: "pending" }, "…"));
    this.#answer.append(root);
    const card = { root, status, duration, body, startedAt: performance.now() };
    this.#cards.set(call.call_id, card);
    return card;
  }

  #finishCard(event: ToolResultEvent): void {
    const card = this.#card({ ...event, arguments: {} });
    const failed = event.status === "ok" && event.result?.isError === true;
    const status = failed ? "error" : event.status;
    card.root.dataset.status = status;
    card.status.textContent = status;
    card.duration.textContent = formatMs(event.duration_ms);
    if (event.error) {
      replace(card.body, h("p", { class: "error-text" }, `${event.error.code}: ${event.error.message}`));
    } else if (event.result) {
      replace(card.body, ...renderResult(event.result));
    } else {
      replace(card.body, h("p", { class: "muted" }, status === "denied" ? "Not run: denied." : "No result."));
    }
  }

  #renderStats(): void {
    const t = this.timer;
    const steps = t.steps;
    const state = this.root.dataset.state;
    replace(
      this.#stats,
      h(
        "dl",
        { class: "stats" },
        stat("first token", formatMs(t.firstTokenMs), "first-token"),
        stat(state === "running" ? "elapsed" : "total", formatMs(t.totalMs), "total"),
        stat("steps", String(steps.length), "steps"),
        this.#tokens !== undefined && stat("tokens", String(this.#tokens), "tokens"),
      ),
      steps.length > 0 &&
        h(
          "ol",
          { class: "step-list", "aria-label": "Latency per step" },
          ...steps.map((s) =>
            h(
              "li",
              { "data-testid": "step-stats", "data-step": s.step },
              h("span", { class: "step-n" }, `step ${s.step}`),
              ` first token ${formatMs(s.firstTokenMs)} · model ${formatMs(s.modelMs)}`,
              s.toolCalls > 0 && ` · ${s.toolCalls} tool${s.toolCalls > 1 ? "s" : ""} ${formatMs(s.toolMs)}`,
            ),
          ),
        ),
    );
  }
}

function stat(label: string, value: string, id: string): HTMLElement {
  return h("div", { class: "stat" }, h("dt", {}, label), h("dd", { "data-testid": `stat-${id}` }, value));
}

/** MCP content blocks, as people read them; anything unusual as JSON. */
function renderResult(result: CallToolResult): Node[] {
  const nodes: Node[] = [];
  for (const block of result.content) {
    if (block.type === "text") nodes.push(h("pre", { class: "text-block" }, block.text));
    else if (block.type === "image") nodes.push(h("img", { src: `data:${block.mimeType};base64,${block.data}`, alt: "tool image" }));
    else nodes.push(h("pre", { class: "json" }, JSON.stringify(block, null, 2)));
  }
  if (result.structuredContent && nodes.length === 0) {
    nodes.push(h("pre", { class: "json" }, JSON.stringify(result.structuredContent, null, 2)));
  }
  if (nodes.length === 0) nodes.push(h("p", { class: "muted" }, "(empty result)"));
  const wrapper = document.createDocumentFragment();
  append(wrapper, ...nodes);
  return [wrapper];
}
