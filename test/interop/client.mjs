// client.mjs drives corral's MCP edge with the official TypeScript MCP SDK,
// as an agent built on it would. interop_test.go runs it against a corral
// it started; run it by hand against any corral with:
//
//   CORRAL_URL=http://127.0.0.1:8080 CORRAL_KEY=<agent key> \
//   CORRAL_ALLOWED=greeter.greet CORRAL_DENIED=greeter.delete_item node client.mjs
//
// The allowed tool must be an operation GET /greet?name= answering
// {"greeting": "hello, <name>"}; the denied tool must exist but lie outside
// the agent's spec.tools. Any mismatch exits 1 with a message saying what.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const env = (name) => {
  const v = process.env[name];
  if (!v) fail(`${name} is not set`);
  return v;
};

function fail(msg) {
  console.error(`interop: FAIL: ${msg}`);
  process.exit(1);
}

function check(ok, msg) {
  if (!ok) fail(msg);
}

const base = env("CORRAL_URL").replace(/\/$/, "");
const key = env("CORRAL_KEY");
const allowed = env("CORRAL_ALLOWED");
const denied = env("CORRAL_DENIED");
const source = allowed.split(".")[0];
const problemKey = "dev.corral/problem";

async function connect(path, withKey = true) {
  const headers = withKey ? { Authorization: `Bearer ${key}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(base + path), { requestInit: { headers } });
  const client = new Client({ name: "corral-interop", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

async function checkGreeting(client, name) {
  const res = await client.callTool({ name, arguments: { name: "interop" } });
  const text = JSON.stringify(res);
  check(!res.isError, `${name}: isError is set: ${text}`);
  check(res.structuredContent?.greeting === "hello, interop", `${name}: structuredContent.greeting is not "hello, interop": ${text}`);
  const block = res.content?.[0];
  check(block?.type === "text", `${name}: the first content block is not text: ${text}`);
  check(JSON.parse(block.text).greeting === "hello, interop", `${name}: the text block does not hold the JSON answer: ${text}`);
  check(typeof res._meta?.["dev.corral/audit-id"] === "string", `${name}: _meta has no dev.corral/audit-id: ${text}`);
}

async function main() {
  // 1. All the agent's tools at /mcp, named <source>.<tool>.
  const client = await connect("/mcp");
  const info = client.getServerVersion();
  check(info?.name === "corral", `serverInfo.name is ${info?.name}, want corral`);
  check(client.getServerCapabilities()?.tools, "the server does not advertise tools");

  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  check(names.includes(allowed), `tools/list lacks ${allowed}: ${names}`);
  check(!names.includes(denied), `tools/list shows ${denied}, which the agent may not call: ${names}`);
  const tool = tools.find((t) => t.name === allowed);
  check(tool.inputSchema?.type === "object", `${allowed}: inputSchema is not an object schema: ${JSON.stringify(tool.inputSchema)}`);
  check(tool.annotations?.readOnlyHint === true, `${allowed}: a GET operation is not readOnlyHint: ${JSON.stringify(tool.annotations)}`);

  await checkGreeting(client, allowed);

  // 2. A tool outside the agent's list: a tool error carrying the code,
  // the same as for a tool that does not exist (the audit says policy_denied).
  const res = await client.callTool({ name: denied, arguments: { id: "7" } });
  const text = JSON.stringify(res);
  check(res.isError === true, `${denied}: isError is not true: ${text}`);
  check(res._meta?.[problemKey]?.code === "tool_not_found", `${denied}: _meta["${problemKey}"].code is not tool_not_found: ${text}`);
  check(typeof res._meta?.[problemKey]?.audit_id === "string", `${denied}: the refusal names no audit record: ${text}`);
  check(res.content?.[0]?.text?.startsWith("tool_not_found: "), `${denied}: the text block does not start with the code: ${text}`);
  await client.close();

  // 3. One source's tools under their upstream names at /mcp/<source>.
  const perSource = await connect(`/mcp/${source}`);
  const upstreamName = allowed.slice(source.length + 1);
  const listed = (await perSource.listTools()).tools.map((t) => t.name);
  check(listed.includes(upstreamName), `/mcp/${source} tools/list lacks ${upstreamName}: ${listed}`);
  await checkGreeting(perSource, upstreamName);
  await perSource.close();

  // 4. No key, no session.
  let refused = false;
  try {
    await connect("/mcp", false);
  } catch {
    refused = true;
  }
  check(refused, "connecting without an agent key succeeded");

  console.log(`interop: ok: @modelcontextprotocol/sdk client, ${names.length} tools listed, ${allowed} called, ${denied} refused`);
}

// An exception (a refused connection, a protocol error) fails as clearly as a
// mismatch does.
main().catch((err) => fail(err?.stack ?? String(err)));
