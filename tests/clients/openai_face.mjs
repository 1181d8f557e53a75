// Drives the proxy's OpenAI-compatible face with OpenAI's official client (npm `openai`) and
// prints one JSON object of what the client saw, for tests/tests/openai_face.rs to check.
//
// Environment: SWITCHYARD_V1 (the proxy's `/v1` address), SWITCHYARD_KEY (a key of the proxy),
// SWITCHYARD_LIMITED_KEY (a key allowed one request per minute), SWITCHYARD_NARROW_KEY (a key
// allowed only `fake/tools`).
import OpenAI from "openai";

const baseURL = process.env.SWITCHYARD_V1;
// Retries would hide the proxy's first answer; every call is bounded.
const client = (apiKey) => new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 10_000 });
const main = client(process.env.SWITCHYARD_KEY);
const hello = [{ role: "user", content: "hello there" }];

async function failure(call) {
  try {
    await call();
    return null;
  } catch (e) {
    return {
      class: e.constructor.name,
      status: e.status ?? null,
      type: e.type ?? null,
      code: e.code ?? null,
      param: e.param ?? null,
      message: e.message,
      retryAfter: e.headers?.get?.("retry-after") ?? null,
    };
  }
}

const out = {};

const completion = await main.chat.completions.create({ model: "fake/echo", messages: hello });
out.completion = {
  id: completion.id,
  object: completion.object,
  model: completion.model,
  content: completion.choices[0].message.content,
  role: completion.choices[0].message.role,
  finishReason: completion.choices[0].finish_reason,
  usage: completion.usage ?? null,
};

const stream = await main.chat.completions.create({
  model: "fake/echo",
  messages: hello,
  stream: true,
  stream_options: { include_usage: true },
});
out.stream = { text: "", chunks: 0, finishReason: null, usage: null, ids: [] };
for await (const chunk of stream) {
  out.stream.chunks += 1;
  if (!out.stream.ids.includes(chunk.id)) out.stream.ids.push(chunk.id);
  if (chunk.usage) out.stream.usage = chunk.usage;
  const choice = chunk.choices[0];
  if (choice) {
    out.stream.text += choice.delta.content ?? "";
    if (choice.finish_reason) out.stream.finishReason = choice.finish_reason;
  }
}

// The client's own stream helper assembles tool calls from the deltas.
const runner = main.chat.completions.stream({
  model: "fake/tools",
  messages: [{ role: "user", content: "weather in Paris?" }],
  tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
});
const assembled = await runner.finalChatCompletion();
out.toolStream = {
  finishReason: assembled.choices[0].finish_reason,
  toolCalls: (assembled.choices[0].message.tool_calls ?? []).map((c) => ({
    id: c.id,
    type: c.type,
    name: c.function.name,
    arguments: c.function.arguments,
  })),
};

out.models = [];
for await (const model of main.models.list()) out.models.push({ id: model.id, owned_by: model.owned_by });
out.narrowModels = [];
for await (const model of client(process.env.SWITCHYARD_NARROW_KEY).models.list()) {
  out.narrowModels.push(model.id);
}

out.unsupportedParameter = await failure(() =>
  main.chat.completions.create({ model: "fake/echo", messages: hello, logit_bias: { 1: 1 } }),
);
out.wrongKey = await failure(() => client("sk-not-a-key").chat.completions.create({ model: "fake/echo", messages: hello }));
out.outOfScope = await failure(() =>
  client(process.env.SWITCHYARD_NARROW_KEY).chat.completions.create({ model: "fake/echo", messages: hello }),
);
out.unknownProvider = await failure(() => main.chat.completions.create({ model: "nowhere/echo", messages: hello }));
out.upstreamRefused = await failure(() => main.chat.completions.create({ model: "fake/fail-429", messages: hello }));
const limited = client(process.env.SWITCHYARD_LIMITED_KEY);
out.firstLimited = await failure(() => limited.chat.completions.create({ model: "fake/echo", messages: hello }));
out.secondLimited = await failure(() => limited.chat.completions.create({ model: "fake/echo", messages: hello }));

// A stream that breaks off after it began: the client sees the error event as an APIError.
out.brokenStream = await failure(async () => {
  const broken = await main.chat.completions.create({ model: "fake/drop-stream", messages: hello, stream: true });
  for await (const _ of broken) {
    // Read to the end.
  }
});

console.log(JSON.stringify(out));
