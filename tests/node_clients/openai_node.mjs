// openai-node against the proxy: node openai_node.mjs <base_url> <api_key> <case>
// Prints one JSON object on stdout; the pytest module tests/loopback_tests/test_node_clients.py
// asserts on it. Cases: plain, stream, tools, down.
import OpenAI, { APIError } from "openai";

const [baseURL, apiKey, kase] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20_000 });
const model = "glimprouter";
const question = [{ role: "user", content: "What is 6 times 7?" }];
const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city.",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    },
  },
};

async function plain() {
  const reply = await client.chat.completions.create({ model, messages: question });
  const message = reply.choices[0].message;
  return {
    content: message.content,
    reasoning: message.reasoning_content,
    finish_reason: reply.choices[0].finish_reason,
    reasoning_tokens: reply.usage.completion_tokens_details.reasoning_tokens,
    n_steps: reply.glimprouter.n_steps,
  };
}

async function stream() {
  const chunks = await client.chat.completions.create({
    model,
    messages: question,
    stream: true,
    stream_options: { include_usage: true },
  });
  let reasoning = "", content = "", finish = null, steps = 0, usage = null;
  for await (const chunk of chunks) {
    if (chunk.glimprouter?.step) steps += 1;
    for (const choice of chunk.choices) {
      reasoning += choice.delta.reasoning_content ?? "";
      content += choice.delta.content ?? "";
      finish = choice.finish_reason ?? finish;
    }
    usage = chunk.usage ?? usage;
  }
  return { reasoning, content, finish_reason: finish, steps, total_tokens: usage?.total_tokens };
}

async function tools() {
  const messages = [{ role: "user", content: "Weather in Paris?" }];
  const first = await client.chat.completions.create({ model, messages, tools: [weather] });
  const called = first.choices[0].message;
  messages.push(called); // the assistant message exactly as it came back
  for (const call of called.tool_calls ?? []) {
    messages.push({ role: "tool", tool_call_id: call.id, content: "Sunny, 24 C" });
  }
  const second = await client.chat.completions.create({ model, messages, tools: [weather] });
  return {
    first_finish: first.choices[0].finish_reason,
    calls: (called.tool_calls ?? []).map((c) => [c.function.name, JSON.parse(c.function.arguments)]),
    ids: (called.tool_calls ?? []).map((c) => typeof c.id === "string" && c.id.length > 0),
    answer: second.choices[0].message.content,
    second_finish: second.choices[0].finish_reason,
  };
}

async function down() {
  try {
    await client.chat.completions.create({ model, messages: question });
    return { thrown: null };
  } catch (error) {
    if (!(error instanceof APIError)) throw error;
    return {
      thrown: error.constructor.name,
      status: error.status,
      code: error.code,
      type: error.type,
      message: error.error?.message,
      request_id: error.headers?.get("x-request-id") ?? null,
    };
  }
}

const cases = { plain, stream, tools, down };
console.log(JSON.stringify(await cases[kase]()));
