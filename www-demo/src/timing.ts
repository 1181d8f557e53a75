// Latency of one agent run, from its events: per step, the time to the model's first token and
// to the end of its answer, and the time its tool calls took; for the run, the same end to end.
import type { SwitchyardClient } from "switchyard-client";

/** The events `client.runAgent()` yields (named through the SDK's own types). */
export type AgentEvent = ReturnType<SwitchyardClient["runAgent"]> extends AsyncIterable<infer E> ? E : never;

export interface StepTiming {
  step: number;
  /** From the request of this step to its first text, when it wrote any. */
  firstTokenMs?: number;
  /** From the request of this step to the end of the model's answer. */
  modelMs?: number;
  /** Summed durations of this step's tool calls, as the SDK measured them. */
  toolMs: number;
  toolCalls: number;
}

export class RunTimer {
  readonly #now: () => number;
  readonly #started: number;
  readonly #steps = new Map<number, StepTiming & { startedAt: number }>();
  #lastEventAt: number;
  #firstTokenAt?: number;
  #endedAt?: number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
    this.#started = now();
    this.#lastEventAt = this.#started;
  }

  observe(event: AgentEvent): void {
    const at = this.#now();
    if (event.type === "done") {
      this.#endedAt = at;
      return;
    }
    const step = this.#step(event.step);
    switch (event.type) {
      case "text_delta":
        if (step.firstTokenMs === undefined) step.firstTokenMs = at - step.startedAt;
        this.#firstTokenAt ??= at;
        break;
      case "step_finished":
        step.modelMs = at - step.startedAt;
        break;
      case "tool_result":
        step.toolMs += event.duration_ms;
        step.toolCalls += 1;
        break;
      default:
        break;
    }
    this.#lastEventAt = at;
  }

  /** The run ended without `done` (stopped or failed). */
  end(): void {
    this.#endedAt ??= this.#now();
  }

  /** A step's request goes out when the previous step's last tool result is in. */
  #step(n: number): StepTiming & { startedAt: number } {
    let step = this.#steps.get(n);
    if (!step) {
      step = { step: n, startedAt: this.#lastEventAt, toolMs: 0, toolCalls: 0 };
      this.#steps.set(n, step);
    }
    return step;
  }

  get steps(): StepTiming[] {
    return [...this.#steps.values()]
      .sort((a, b) => a.step - b.step)
      .map(({ startedAt: _, ...timing }) => timing);
  }

  /** From sending the question to the first token of the answer (any step). */
  get firstTokenMs(): number | undefined {
    return this.#firstTokenAt === undefined ? undefined : this.#firstTokenAt - this.#started;
  }

  /** From sending the question to the end of the run (or now, while it runs). */
  get totalMs(): number {
    return (this.#endedAt ?? this.#now()) - this.#started;
  }
}
