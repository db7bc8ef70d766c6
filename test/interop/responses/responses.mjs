// responses.mjs drives corral's Responses API (/openai/v1/responses) with
// the official packages an agent is built on, changing only the base URL and
// the key: the openai package calls responses whole and streamed, and an
// @openai/agents Agent with a function tool of its own and corral's /mcp as
// its MCP server runs its loop (model, tools, model, final output) twice,
// once streamed. responses_test.go runs it against a corral it started; run
// it by hand against any corral set up the same way with:
//
//   CORRAL_URL=http://127.0.0.1:8080 CORRAL_KEY=<agent key> \
//   CORRAL_PII_MODEL=gpt-eu CORRAL_AGENT_MODEL=bot CORRAL_EMAIL=alice@example.com \
//   CORRAL_MCP_TOOL=orders.lookup_order OPENAI_AGENTS_DISABLE_TRACING=1 node responses.mjs
//
// CORRAL_PII_MODEL answers every call with "I will refund <EMAIL_1> now."
// (the placeholder corral put in the prompt for CORRAL_EMAIL, which corral
// must turn back into the address); CORRAL_AGENT_MODEL is scripted: first
// the calls of CORRAL_MCP_TOOL (with "_" for ".", as the SDK names it for
// the model) {"id": "1042"} and refund_amount {"order":
// "1042"}, then the final answer in wantFinal. Any mismatch exits 1 saying
// what.

import OpenAI from "openai";
import {
  Agent,
  MCPServerStreamableHttp,
  run,
  setDefaultOpenAIClient,
  setOpenAIAPI,
  setTracingDisabled,
  tool,
} from "@openai/agents";
import { z } from "zod";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool as aiTool } from "ai";

const env = (name) => {
  const v = process.env[name];
  if (!v) fail(`${name} is not set`);
  return v;
};

function fail(msg) {
  console.error(`responses interop: FAIL: ${msg}`);
  process.exit(1);
}

function check(ok, msg) {
  if (!ok) fail(msg);
}

const base = env("CORRAL_URL").replace(/\/$/, "");
const key = env("CORRAL_KEY");
const piiModel = env("CORRAL_PII_MODEL");
const agentModel = env("CORRAL_AGENT_MODEL");
const email = env("CORRAL_EMAIL");
const mcpTool = env("CORRAL_MCP_TOOL");
// The SDK offers an MCP tool to the model under a name OpenAI's function
// names allow: corral's "orders.lookup_order" becomes "orders_lookup_order".
const mcpFunction = mcpTool.replace(/[^A-Za-z0-9_-]/g, "_");

const wantContent = `I will refund ${email} now.`;
const wantFinal = "Order 1042 has shipped; its refund is 42.00 EUR.";
const prompt = `Please refund my order 1042 to ${email}; the parcel never arrived.`;

// No retries: a refusal must surface at once, and the Go test counts what
// reached the upstream.
const client = new OpenAI({ baseURL: `${base}/openai/v1`, apiKey: key, maxRetries: 0 });

async function whole() {
  const r = await client.responses.create({
    model: piiModel,
    instructions: "You are a support agent.",
    input: [{ role: "user", content: [{ type: "input_text", text: prompt }] }],
    metadata: { ticket: "T-1042" },
    store: false,
  });
  check(r.object === "response" && r.id.startsWith("resp_"), `create: ${JSON.stringify(r)}`);
  check(r.status === "completed", `create: status ${r.status}`);
  check(r.output_text === wantContent, `create: output_text ${JSON.stringify(r.output_text)}, want ${JSON.stringify(wantContent)}`);
  check(r.usage && r.usage.total_tokens > 0 && r.usage.input_tokens_details && r.usage.output_tokens_details,
    `create: usage ${JSON.stringify(r.usage)}`);
  check(r.metadata.ticket === "T-1042", `create: metadata ${JSON.stringify(r.metadata)}`);
}

async function streamed() {
  const stream = await client.responses.create({ model: piiModel, input: prompt, stream: true });
  let text = "";
  let last = -1;
  const types = new Set();
  let final;
  for await (const ev of stream) {
    check(ev.sequence_number === last + 1, `stream: sequence_number ${ev.sequence_number} after ${last}`);
    last = ev.sequence_number;
    types.add(ev.type);
    if (ev.type === "response.output_text.delta") text += ev.delta;
    if (ev.type === "response.completed") final = ev.response;
  }
  for (const t of ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]) {
    check(types.has(t), `stream: no ${t} event (got ${[...types]})`);
  }
  check(text === wantContent, `stream: deltas ${JSON.stringify(text)}, want ${JSON.stringify(wantContent)}`);
  check(final && final.output[0].content[0].text === wantContent && final.usage.total_tokens > 0,
    `stream: final response ${JSON.stringify(final)}`);
}

async function helper() {
  const stream = client.responses.stream({ model: piiModel, input: prompt });
  let text = "";
  stream.on("response.output_text.delta", (ev) => { text += ev.delta; });
  const final = await stream.finalResponse();
  check(final.output_text === wantContent && text === wantContent,
    `responses.stream(): output_text ${JSON.stringify(final.output_text)}, deltas ${JSON.stringify(text)}`);
}

async function refusals() {
  try {
    await client.responses.create({ model: piiModel, input: "hi", tools: [{ type: "web_search" }] });
    fail("a web_search tool was not refused");
  } catch (e) {
    check(e instanceof OpenAI.APIError && e.status === 400 && e.message.includes("tools[0].type"),
      `web_search: ${e}, want a 400 APIError naming tools[0].type`);
  }
  try {
    await client.responses.create({ model: piiModel, input: "hi", previous_response_id: "resp_123" });
    fail("previous_response_id was not refused");
  } catch (e) {
    check(e instanceof OpenAI.APIError && e.status === 400 && e.message.includes("previous_response_id"),
      `previous_response_id: ${e}, want a 400 APIError naming it`);
  }
}

// agent runs the Agents SDK's loop: the scripted model calls corral's MCP
// tool and the agent's own function tool, then answers.
async function agent() {
  // The SDK would send its traces to OpenAI with corral's key: off.
  setTracingDisabled(true);
  setDefaultOpenAIClient(client);
  setOpenAIAPI("responses");
  const refunds = [];
  const refund = tool({
    name: "refund_amount",
    description: "Says how much an order's refund is.",
    parameters: z.object({ order: z.string() }),
    execute: async ({ order }) => {
      refunds.push(order);
      return "42.00 EUR";
    },
  });
  const mcp = new MCPServerStreamableHttp({
    url: `${base}/mcp`,
    name: "corral",
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  await mcp.connect();
  try {
    const tools = await mcp.listTools();
    check(tools.some((t) => t.name === mcpTool), `corral's MCP tools ${tools.map((t) => t.name)} lack ${mcpTool}`);
    const support = new Agent({
      name: "support",
      instructions: "You are a support agent. Look orders up and say what their refund is.",
      model: agentModel,
      tools: [refund],
      mcpServers: [mcp],
    });
    const result = await run(support, "Where is order 1042, and what is its refund?");
    check(result.finalOutput === wantFinal, `run: final output ${JSON.stringify(result.finalOutput)}, want ${JSON.stringify(wantFinal)}`);
    const calls = result.newItems.filter((i) => i.type === "tool_call_item").map((i) => i.rawItem.name).sort();
    check(JSON.stringify(calls) === JSON.stringify([mcpFunction, "refund_amount"].sort()), `run: tool calls ${calls}`);
    const outputs = result.newItems.filter((i) => i.type === "tool_call_output_item").map((i) => JSON.stringify(i.output));
    check(outputs.some((o) => o.includes("shipped")), `run: the MCP tool's output ${outputs} lacks the upstream's "shipped"`);

    const streamedRun = await run(support, "Where is order 1042, and what is its refund?", { stream: true });
    let text = "";
    for await (const ev of streamedRun) {
      if (ev.type === "raw_model_stream_event" && ev.data.type === "output_text_delta") text += ev.data.delta;
    }
    await streamedRun.completed;
    check(streamedRun.finalOutput === wantFinal, `run (streamed): final output ${JSON.stringify(streamedRun.finalOutput)}`);
    check(text === wantFinal, `run (streamed): text deltas ${JSON.stringify(text)}`);
    check(refunds.length === 2 && refunds.every((o) => o === "1042"), `refund_amount ran with ${refunds}, want 1042 twice`);
  } finally {
    await mcp.close();
  }
}

// vercel calls the same models with the Vercel AI SDK, whose openai(model)
// speaks the Responses API: text whole and streamed, and a tool loop on the
// scripted model (its MCP tool answered here by a stub, its own tool run).
async function vercel() {
  const openai = createOpenAI({ baseURL: `${base}/openai/v1`, apiKey: key });
  const whole = await generateText({ model: openai(piiModel), prompt, maxRetries: 0 });
  check(whole.text === wantContent, `generateText: ${JSON.stringify(whole.text)}, want ${JSON.stringify(wantContent)}`);
  check(whole.usage.totalTokens > 0, `generateText: usage ${JSON.stringify(whole.usage)}`);
  const streamed = streamText({ model: openai(piiModel), prompt, maxRetries: 0 });
  let text = "";
  for await (const delta of streamed.textStream) text += delta;
  check(text === wantContent, `streamText: ${JSON.stringify(text)}, want ${JSON.stringify(wantContent)}`);
  const refunds = [];
  const loop = await generateText({
    model: openai(agentModel),
    prompt: "Where is order 1042, and what is its refund?",
    tools: {
      [mcpFunction]: aiTool({ inputSchema: z.object({ id: z.string() }), execute: async () => ({ status: "shipped" }) }),
      refund_amount: aiTool({ inputSchema: z.object({ order: z.string() }), execute: async ({ order }) => { refunds.push(order); return "42.00 EUR"; } }),
    },
    stopWhen: stepCountIs(3),
    maxRetries: 0,
  });
  check(loop.text === wantFinal && loop.steps.length === 2 && refunds.join() === "1042",
    `generateText with tools: ${JSON.stringify(loop.text)} in ${loop.steps.length} steps, refunds ${refunds}`);
}

await whole();
await streamed();
await helper();
await refusals();
await vercel();
await agent();
console.log("responses interop: ok");
