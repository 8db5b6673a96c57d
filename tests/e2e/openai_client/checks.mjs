// The official OpenAI client (npm openai) against `strata serve`: runs each
// kind of call and prints one JSON object of what it got, which
// tests/e2e/test_openai_client.py checks (the answers themselves are checked
// there, against the server's own http.client answers and the reference).
//
//   node checks.mjs BASE_URL SPEC_JSON   (SPEC: prompt, question, tool, brace_id)
import OpenAI from "openai";

const [baseURL, specText] = process.argv.slice(2);
const spec = JSON.parse(specText);
const client = new OpenAI({ apiKey: "unused", baseURL, maxRetries: 0, timeout: 120000 });
const out = {};

async function record(name, fn) {
  try {
    out[name] = await fn();
  } catch (e) {
    out[name] = { threw: e?.constructor?.name ?? String(e), status: e?.status ?? null, message: String(e?.message ?? e),
                  param: e?.param ?? e?.error?.param ?? null };
  }
}

const chatBody = { model: spec.model, messages: [{ role: "user", content: spec.question }], temperature: 0, max_tokens: 12 };
const toolBody = {
  model: spec.model,
  messages: [{ role: "user", content: "What time is it?" }],
  tools: [spec.tool],
  tool_choice: { type: "function", function: { name: spec.tool.function.name } },
  logit_bias: { [String(spec.brace_id)]: 100 },
  temperature: 0,
  max_tokens: 2,
};

await record("chat", async () => {
  const r = await client.chat.completions.create({ ...chatBody, logprobs: true, top_logprobs: 2 });
  return { content: r.choices[0].message.content, finish: r.choices[0].finish_reason, logprobs: r.choices[0].logprobs, usage: r.usage };
});
await record("chat_stream", async () => {
  const s = await client.chat.completions.create({ ...chatBody, logprobs: true, top_logprobs: 2, stream: true });
  let content = "", finish = null;
  const logprobs = [];
  for await (const chunk of s) {
    const c = chunk.choices[0];
    if (!c) continue;
    content += c.delta?.content ?? "";
    if (c.logprobs?.content) logprobs.push(...c.logprobs.content);
    if (c.finish_reason) finish = c.finish_reason;
  }
  return { content, finish, logprobs };
});
await record("completion", async () => {
  const r = await client.completions.create({ model: spec.model, prompt: spec.prompt, temperature: 0, max_tokens: 6, logprobs: 3 });
  return { text: r.choices[0].text, finish: r.choices[0].finish_reason, logprobs: r.choices[0].logprobs };
});
await record("completion_stream", async () => {
  const s = await client.completions.create({ model: spec.model, prompt: spec.prompt, temperature: 0, max_tokens: 6, stream: true });
  let text = "", finish = null;
  for await (const chunk of s) {
    text += chunk.choices[0]?.text ?? "";
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
  }
  return { text, finish };
});
await record("tool_call", async () => {
  const r = await client.chat.completions.create(toolBody);
  return { message: r.choices[0].message, finish: r.choices[0].finish_reason };
});
await record("tool_call_stream", async () => {
  // The SDK's own accumulation of streamed tool calls (its chat-completion stream helper).
  const runner = client.chat.completions.stream(toolBody);
  const final = await runner.finalChatCompletion();
  return { message: final.choices[0].message, finish: final.choices[0].finish_reason };
});
await record("bad_request", async () => {
  await client.chat.completions.create({ ...chatBody, top_logprobs: 3 });  // top_logprobs without logprobs
  return { threw: null };
});
console.log(JSON.stringify(out));
