// The Vercel AI SDK (@ai-sdk/openai-compatible) against the proxy:
// node ai_sdk.mjs <base_url> <api_key> <case>. Prints one JSON object on stdout; the pytest
// module tests/loopback_tests/test_node_clients.py asserts on it. Cases: loop (streamText with a
// multi-step tool loop), malformed (streamText when the answer's tool call does not parse),
// object (generateObject with a zod schema), down (a backend down: the SDK's APICallError).
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { APICallError, generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const [baseURL, apiKey, kase] = process.argv.slice(2);
const provider = createOpenAICompatible({
  name: "glimprouter",
  baseURL,
  apiKey,
  includeUsage: true,
  supportsStructuredOutputs: true,
});
const model = provider.chatModel("glimprouter");
const calls = [];
const tools = {
  get_weather: tool({
    description: "The weather in a city.",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      calls.push(city);
      return "Sunny, 24 C";
    },
  }),
};

async function streamed(options) {
  const errors = [];
  const result = streamText({
    model,
    maxRetries: 0,
    tools,
    prompt: "Weather in Paris?",
    onError: ({ error }) => errors.push(String(error)),
    ...options,
  });
  const parts = {};
  let reasoning = "", text = "";
  for await (const part of result.fullStream) {
    parts[part.type] = (parts[part.type] ?? 0) + 1;
    if (part.type === "reasoning-delta") reasoning += part.text;
    if (part.type === "text-delta") text += part.text;
  }
  const steps = await result.steps;
  return {
    reasoning,
    text,
    finish_reason: await result.finishReason,
    steps: steps.length,
    step_finish_reasons: steps.map((s) => s.finishReason),
    step_reasoning: steps.map((s) => s.reasoningText ?? ""),
    tool_calls: calls,
    parts,
    errors,
  };
}

async function object() {
  const { object: value, finishReason, reasoning } = await generateObject({
    model,
    maxRetries: 0,
    schema: z.object({ value: z.number().int(), unit: z.string() }),
    prompt: "How many legs do 6 spiders have?",
  });
  return { object: value, finish_reason: finishReason, reasoning: reasoning ?? null };
}

async function down() {
  try {
    await generateText({ model, maxRetries: 0, prompt: "What is 6 times 7?" });
    return { thrown: null };
  } catch (error) {
    if (!APICallError.isInstance(error)) throw error;
    return {
      thrown: error.name,
      status: error.statusCode,
      message: error.message,
      retryable: error.isRetryable,
      request_id: error.responseHeaders?.["x-request-id"] ?? null,
    };
  }
}

const cases = {
  loop: () => streamed({ stopWhen: stepCountIs(5) }),
  malformed: () => streamed({ stopWhen: stepCountIs(5) }),
  object,
  down,
};
console.log(JSON.stringify(await cases[kase]()));
