// openai.mjs drives corral's model gateway with the official openai npm
// package, as an agent built on it would: only the base URL and the key
// change. openai_test.go runs it against a corral it started; run it by hand
// against any corral with:
//
//   CORRAL_URL=http://127.0.0.1:8080 CORRAL_KEY=<agent key> \
//   CORRAL_MODEL=gpt-eu CORRAL_DENIED_MODEL=gpt-other CORRAL_EMAIL=alice@example.com \
//   node openai.mjs
//
// CORRAL_MODEL must be one of the agent's models, with reversible redaction,
// in front of an upstream that answers every chat completion with the text
// "I will refund <EMAIL_1> now." and a call of the function refund with the
// arguments {"email": "<EMAIL_1>", "amount_cents": 4200}, streamed: the
// placeholder corral put in the prompt for CORRAL_EMAIL, which corral must
// turn back into the address. CORRAL_DENIED_MODEL must exist but lie outside
// the agent's spec.models. Any mismatch exits 1 with a message saying what.

import OpenAI from "openai";
import { VERSION } from "openai/version";
import { isDeepStrictEqual } from "node:util";

const env = (name) => {
  const v = process.env[name];
  if (!v) fail(`${name} is not set`);
  return v;
};

function fail(msg) {
  console.error(`openai interop: FAIL: ${msg}`);
  process.exit(1);
}

function check(ok, msg) {
  if (!ok) fail(msg);
}

const base = env("CORRAL_URL").replace(/\/$/, "");
const key = env("CORRAL_KEY");
const model = env("CORRAL_MODEL");
const denied = env("CORRAL_DENIED_MODEL");
const email = env("CORRAL_EMAIL");

// No retries: a refusal must surface at once, and a retried call would
// reach the upstream twice and confuse the Go test's count.
const client = new OpenAI({ baseURL: `${base}/openai/v1`, apiKey: key, maxRetries: 0 });

const messages = [
  { role: "system", content: "You are a support agent. Use the refund tool when a refund is due." },
  { role: "user", content: `Please refund my order 1042 to ${email}; the parcel never arrived.` },
];

// strict: true makes the SDK parse the arguments itself (parsed_arguments).
const tools = [
  {
    type: "function",
    function: {
      name: "refund",
      description: "Refunds an order to the customer's account.",
      strict: true,
      parameters: {
        type: "object",
        properties: { email: { type: "string" }, amount_cents: { type: "integer" } },
        required: ["email", "amount_cents"],
        additionalProperties: false,
      },
    },
  },
];

const wantArguments = { email, amount_cents: 4200 };
const wantContent = `I will refund ${email} now.`;

async function checkModels() {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  check(ids.includes(model), `models.list() lacks ${model}: ${ids}`);
  check(!ids.includes(denied), `models.list() shows ${denied}, which the agent may not use: ${ids}`);
  const one = await client.models.retrieve(model);
  check(one.id === model && one.object === "model", `models.retrieve(${model}) = ${JSON.stringify(one)}`);
}

// checkHelper streams with the SDK's helper, which assembles the chunks
// into a whole completion and parses a strict tool's arguments.
async function checkHelper() {
  const stream = client.chat.completions.stream({
    model,
    messages,
    tools,
    stream_options: { include_usage: true },
  });
  let done;
  stream.on("tool_calls.function.arguments.done", (e) => {
    done = e;
  });
  const final = await stream.finalChatCompletion();
  const text = JSON.stringify(final);
  const choice = final.choices[0];
  check(final.model === model, `stream helper: model ${final.model}, want ${model}: ${text}`);
  check(choice?.finish_reason === "tool_calls", `stream helper: finish_reason ${choice?.finish_reason}, want tool_calls: ${text}`);
  check(choice.message.content === wantContent, `stream helper: content ${JSON.stringify(choice.message.content)}, want ${JSON.stringify(wantContent)}`);
  const call = choice.message.tool_calls?.[0];
  check(choice.message.tool_calls?.length === 1, `stream helper: want one tool call: ${text}`);
  check(call.type === "function" && call.function.name === "refund", `stream helper: tool call ${JSON.stringify(call)}, want a call of refund`);
  check(typeof call.id === "string" && call.id !== "", `stream helper: the tool call has no id: ${JSON.stringify(call)}`);
  check(isDeepStrictEqual(call.function.parsed_arguments, wantArguments),
    `stream helper: parsed_arguments ${JSON.stringify(call.function.parsed_arguments)}, want ${JSON.stringify(wantArguments)} (the placeholder restored)`);
  check(isDeepStrictEqual(JSON.parse(call.function.arguments), wantArguments), `stream helper: arguments ${call.function.arguments}`);
  check(done?.name === "refund" && isDeepStrictEqual(done.parsed_arguments, wantArguments),
    `stream helper: the tool_calls.function.arguments.done event was ${JSON.stringify(done)}`);
  check(final.usage?.prompt_tokens > 0 && final.usage?.completion_tokens > 0, `stream helper: no usage though include_usage was asked: ${text}`);
  check(!text.includes("<EMAIL_"), `stream helper: a placeholder reached the agent: ${text}`);
}

// checkIteration streams with create({stream: true}) and assembles the
// chunks by hand, as agents that do not use the helper do.
async function checkIteration() {
  const stream = await client.chat.completions.create({ model, messages, tools, stream: true });
  let content = "";
  let finish;
  let chunks = 0;
  const calls = [];
  for await (const chunk of stream) {
    chunks++;
    const raw = JSON.stringify(chunk);
    check(!raw.includes("<EMAIL_"), `create({stream: true}): a placeholder reached the agent: ${raw}`);
    check(chunk.object === "chat.completion.chunk" && chunk.model === model, `create({stream: true}): chunk ${raw}`);
    check(chunk.usage == null, `create({stream: true}): a usage chunk the agent did not ask for: ${raw}`);
    for (const choice of chunk.choices) {
      content += choice.delta?.content ?? "";
      finish = choice.finish_reason ?? finish;
      for (const d of choice.delta?.tool_calls ?? []) {
        const c = (calls[d.index] ??= { id: "", name: "", arguments: "" });
        c.id += d.id ?? "";
        c.name += d.function?.name ?? "";
        c.arguments += d.function?.arguments ?? "";
      }
    }
  }
  check(chunks > 2, `create({stream: true}): ${chunks} chunks, want a stream of several`);
  check(content === wantContent, `create({stream: true}): content ${JSON.stringify(content)}, want ${JSON.stringify(wantContent)}`);
  check(finish === "tool_calls", `create({stream: true}): finish_reason ${finish}, want tool_calls`);
  check(calls.length === 1 && calls[0].name === "refund" && calls[0].id !== "", `create({stream: true}): tool calls ${JSON.stringify(calls)}`);
  let args;
  try {
    args = JSON.parse(calls[0].arguments);
  } catch (err) {
    fail(`create({stream: true}): the arguments ${calls[0].arguments} are not JSON: ${err}`);
  }
  check(isDeepStrictEqual(args, wantArguments), `create({stream: true}): arguments ${calls[0].arguments}, want ${JSON.stringify(wantArguments)}`);
}

// refused runs call, which must fail with the SDK's APIError of status,
// and returns the error.
async function refused(what, status, call) {
  try {
    await call();
  } catch (err) {
    check(err instanceof OpenAI.APIError, `${what}: threw ${err?.constructor?.name}, want OpenAI.APIError: ${err}`);
    check(err.status === status, `${what}: status ${err.status}, want ${status}: ${err.message}`);
    check(typeof err.message === "string" && err.message.length > String(status).length + 1, `${what}: the error has no message: ${JSON.stringify(err.error)}`);
    return err;
  }
  fail(`${what}: succeeded, want HTTP ${status}`);
}

async function checkRefusals() {
  const plain = await refused(`create({model: ${denied}})`, 403, () =>
    client.chat.completions.create({ model: denied, messages }));
  check(plain instanceof OpenAI.PermissionDeniedError, `create({model: ${denied}}): ${plain.constructor.name}, want PermissionDeniedError`);
  check(plain.code === "policy_denied", `create({model: ${denied}}): code ${plain.code}, want policy_denied: ${JSON.stringify(plain.error)}`);

  // A refused stream fails before its first event: the same error.
  const streamed = await refused(`create({model: ${denied}, stream: true})`, 403, async () => {
    const s = await client.chat.completions.create({ model: denied, messages, stream: true });
    for await (const _ of s) {
      // unreachable: the call is refused before the stream starts
    }
  });
  check(streamed.code === "policy_denied", `create({model: ${denied}, stream: true}): code ${streamed.code}, want policy_denied`);

  const stranger = new OpenAI({ baseURL: `${base}/openai/v1`, apiKey: "not-a-key", maxRetries: 0 });
  const unknown = await refused("a call with a wrong key", 401, () => stranger.chat.completions.create({ model, messages }));
  check(unknown instanceof OpenAI.AuthenticationError, `a call with a wrong key: ${unknown.constructor.name}, want AuthenticationError`);
}

async function main() {
  await checkModels();
  await checkHelper();
  await checkIteration();
  await checkRefusals();
  console.log(`openai interop: ok: openai ${VERSION} listed models, streamed a tool call twice (helper and iteration) with ${email} restored, refusals surfaced as APIError`);
}

// An exception (a refused connection, a parse error) fails as clearly as a
// mismatch does.
main().catch((err) => fail(err?.stack ?? String(err)));
