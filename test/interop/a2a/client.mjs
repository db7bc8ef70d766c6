// An A2A client built on the official @a2a-js/sdk (v1.0), driving a hosted
// agent of corral's through its card and JSON-RPC interface: it sends
// (blocking), streams, answers a question, gets, lists and cancels tasks.
// a2a_test.go runs it; any failed check exits non-zero.
import { ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory } from "@a2a-js/sdk/client";
import { Role, TaskState } from "@a2a-js/sdk";

const base = process.env.CORRAL_URL;
const key = process.env.CORRAL_KEY;
const agent = process.env.CORRAL_AGENT;
const asker = process.env.CORRAL_ASKER;
const askerKey = process.env.CORRAL_ASKER_KEY;

function check(ok, what) {
  if (!ok) {
    console.error("FAIL: " + what);
    process.exit(1);
  }
  console.log("ok: " + what);
}

// authed adds corral's credential to every request the SDK makes, the
// card's included (with it, corral serves the extended card).
function authed(token) {
  return (url, init = {}) => {
    const headers = new Headers(init.headers ?? {});
    headers.set("Authorization", "Bearer " + token);
    return fetch(url, { ...init, headers });
  };
}

async function client(name, token) {
  const fetchImpl = authed(token);
  const factory = new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
    transports: [new JsonRpcTransportFactory({ fetchImpl })],
    cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
  }));
  return factory.createFromUrl(`${base}/a2a/${name}/`);
}

let n = 0;
function userMessage(text, extra = {}) {
  n++;
  return { messageId: `js-${process.pid}-${n}`, role: Role.ROLE_USER, parts: [{ content: { $case: "text", value: text } }], ...extra };
}
const textOf = (parts) => parts.map((p) => (p.content?.$case === "text" ? p.content.value : JSON.stringify(p.content?.value))).join("");

const c = await client(agent, key);
const card = await c.getAgentCard();
check(card.name === agent && card.supportedInterfaces[0].protocolVersion === "1.0", `card of ${agent} with a JSON-RPC 1.0 interface`);
check(card.capabilities.streaming && card.capabilities.extensions.some((e) => e.uri.includes("chain")), "card declares streaming and the chain extension");

// Blocking send: the task comes back completed, its answer an artifact.
const sent = await c.sendMessage({ message: userMessage("Which orders ship through Rotterdam this week?") });
check(sent.status?.state === TaskState.TASK_STATE_COMPLETED, `sendMessage: task ${sent.id} completed (state ${sent.status?.state})`);
check(textOf(sent.artifacts[0].parts) === process.env.CORRAL_ANSWER, `sendMessage: artifact is the agent's answer (${textOf(sent.artifacts[0].parts)})`);

// getTask reads it back, history included.
const got = await c.getTask({ id: sent.id, historyLength: 10 });
check(got.id === sent.id && got.history.length >= 2 && got.history[0].role === Role.ROLE_USER, "getTask: the task with its history");

// Streaming: the task first, then updates, ending in completed.
const kinds = [];
let last;
for await (const ev of c.sendMessageStream({ message: userMessage("Stream the Rotterdam orders.") })) {
  kinds.push(ev.payload?.$case ?? Object.keys(ev)[0]);
  last = ev;
}
check(kinds[0] === "task", `stream starts with the task (${kinds.join(",")})`);
check(last.payload?.$case === "statusUpdate" && last.payload.value.status.state === TaskState.TASK_STATE_COMPLETED, "stream ends with status completed");
check(kinds.includes("artifactUpdate"), "stream carries the artifact");

// listTasks finds them.
const list = await c.listTasks({ pageSize: 10, includeArtifacts: true });
check(list.tasks.length >= 2 && list.tasks.some((t) => t.id === sent.id), `listTasks: ${list.tasks.length} tasks, the first among them`);

// A task that asks: input-required with the question; the answer
// completes it; another one is canceled.
const a = await client(asker, askerKey);
const asked = await a.sendMessage({ message: userMessage("Refund order 42.") });
check(asked.status.state === TaskState.TASK_STATE_INPUT_REQUIRED && textOf(asked.status.message.parts).includes("?"), `a question: input-required (${textOf(asked.status.message.parts)})`);
const answered = await a.sendMessage({ message: userMessage("Yes, refund it.", { taskId: asked.id, contextId: asked.contextId }) });
check(answered.id === asked.id && answered.status.state === TaskState.TASK_STATE_COMPLETED, "the answer completes the task");

const waiting = await a.sendMessage({ message: userMessage("Refund order 43.") });
const canceled = await a.cancelTask({ id: waiting.id });
check(canceled.status.state === TaskState.TASK_STATE_CANCELED, "cancelTask: canceled");

// Push notification configs: made, read back without the token, listed,
// deleted; a loopback webhook is refused (SSRF).
const pc = await c.createTaskPushNotificationConfig({ taskId: sent.id, id: "ops", url: "https://93.184.216.34/a2a-hook", token: "tok-1" });
check(pc.id === "ops" && pc.taskId === sent.id, "createTaskPushNotificationConfig");
const readBack = await c.getTaskPushNotificationConfig({ taskId: sent.id, id: "ops" });
check(readBack.url === "https://93.184.216.34/a2a-hook" && readBack.token !== "tok-1", "getTaskPushNotificationConfig: the config, its token hidden");
const configs = await c.listTaskPushNotificationConfig({ taskId: sent.id });
check(configs.configs.length === 1, "listTaskPushNotificationConfig: one");
await c.deleteTaskPushNotificationConfig({ taskId: sent.id, id: "ops" });
check((await c.listTaskPushNotificationConfig({ taskId: sent.id })).configs.length === 0, "deleteTaskPushNotificationConfig");
try {
  await c.createTaskPushNotificationConfig({ taskId: sent.id, url: "http://[::ffff:127.0.0.1]:9/hook" });
  check(false, "a loopback webhook is refused");
} catch (e) {
  check(/not a public address/.test(e.message), `a loopback webhook is refused (${e.message})`);
}

// Refusals arrive as the SDK's errors with A2A's codes.
try {
  await c.getTask({ id: waiting.id });
  check(false, "another agent's task is not found");
} catch (e) {
  check(String(e.code ?? e.message).includes("32001") || /not found/i.test(e.message), `another agent's task is not found (${e.constructor.name}: ${e.message})`);
}
console.log("all checks passed");
