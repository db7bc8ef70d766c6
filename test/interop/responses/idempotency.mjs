// idempotency.mjs makes one call of each of corral's model endpoints with
// the openai package, each with an Idempotency-Key of its own, through a
// proxy that cuts the connection before the first answer reaches the SDK:
// the SDK retries by itself (its automatic retries resend the request's
// headers, the key among them) and must get the answer corral recorded,
// marked replayed. idempotency_test.go runs it and counts, at the provider
// and in the budget, that each call was made and charged once.
//
// The openai package (7.55.0) sends no Idempotency-Key of its own: an
// agent passes one per request, { headers: { "Idempotency-Key": ... } },
// and the SDK keeps it on every retry of that request.
//
//   CORRAL_URL=<proxy> CORRAL_KEY=<agent key> CORRAL_MODEL=gpt \
//   CORRAL_CONTENT=<what the model answers> node idempotency.mjs

import OpenAI from "openai";

const env = (name) => {
  const v = process.env[name];
  if (!v) fail(`${name} is not set`);
  return v;
};

function fail(msg) {
  console.error(`idempotency interop: FAIL: ${msg}`);
  process.exit(1);
}

function check(ok, msg) {
  if (!ok) fail(msg);
}

const base = env("CORRAL_URL").replace(/\/$/, "");
const model = env("CORRAL_MODEL");
const want = env("CORRAL_CONTENT");
const client = new OpenAI({ baseURL: `${base}/openai/v1`, apiKey: env("CORRAL_KEY"), maxRetries: 3 });
const withKey = (key) => ({ headers: { "Idempotency-Key": key } });
const replayed = (response, what) =>
  check(response.headers.get("idempotent-replayed") === "true", `${what}: the answer is not marked Idempotent-Replayed`);
const messages = [{ role: "user", content: "Where is my refund for order 1042?" }];

{
  const { data, response } = await client.chat.completions
    .create({ model, messages }, withKey("sdk-chat"))
    .withResponse();
  replayed(response, "chat");
  check(data.choices[0].message.content === want, `chat: got ${JSON.stringify(data.choices[0].message)}`);
}

{
  const { data: stream, response } = await client.chat.completions
    .create({ model, messages, stream: true, stream_options: { include_usage: true } }, withKey("sdk-chat-stream"))
    .withResponse();
  replayed(response, "chat stream");
  let text = "";
  let usage = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    usage = chunk.usage ?? usage;
  }
  check(text === want, `chat stream: got ${JSON.stringify(text)}`);
  check(usage && usage.total_tokens > 0, `chat stream: no usage chunk`);
}

{
  const { data, response } = await client.responses
    .create({ model, input: "Where is my refund for order 1042?" }, withKey("sdk-responses"))
    .withResponse();
  replayed(response, "responses");
  check(data.output_text === want && data.status === "completed", `responses: got ${JSON.stringify(data)}`);
}

{
  const { data: stream, response } = await client.responses
    .create({ model, input: "Where is my refund for order 1042?", stream: true }, withKey("sdk-responses-stream"))
    .withResponse();
  replayed(response, "responses stream");
  let text = "";
  let completed = null;
  for await (const ev of stream) {
    if (ev.type === "response.output_text.delta") text += ev.delta;
    if (ev.type === "response.completed") completed = ev.response;
  }
  check(text === want, `responses stream: got ${JSON.stringify(text)}`);
  check(completed?.status === "completed" && completed.output.some((it) => it.content?.some((c) => c.text === want)),
    `responses stream: completed with ${JSON.stringify(completed)}`);
}

{
  const { data, response } = await client.embeddings
    .create({ model, input: ["order 1042", "refund"] }, withKey("sdk-embeddings"))
    .withResponse();
  replayed(response, "embeddings");
  check(data.data.length === 2 && data.data[0].embedding.length > 0, `embeddings: got ${JSON.stringify(data).slice(0, 200)}`);
}

console.log("idempotency interop: chat, chat stream, responses, responses stream and embeddings each replayed after a lost answer");
