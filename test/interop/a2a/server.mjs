// An A2A agent served by the official @a2a-js/sdk (v1.0, JSON-RPC over
// express) that corral calls as a remote agent (a2a_test.go). It answers a
// message at once, or, asked to "call back:", calls an agent of corral's
// over A2A with the chain metadata it was given, and reports what corral
// said. It prints "listening PORT" once it serves on 127.0.0.1.
import express from "express";
import { AgentEvent, DefaultRequestHandler, InMemoryTaskStore } from "@a2a-js/sdk/server";
import { agentCardHandler, jsonRpcHandler, UserBuilder } from "@a2a-js/sdk/server/express";
import { ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory } from "@a2a-js/sdk/client";
import { Role, TaskState } from "@a2a-js/sdk";

const token = process.env.REMOTE_TOKEN; // what corral must send
const corral = process.env.CORRAL_URL;
const corralKey = process.env.CORRAL_KEY;
const chainKey = "corral.dev/chain";

const text = (parts) => parts.map((p) => (p.content?.$case === "text" ? p.content.value : JSON.stringify(p.content?.value))).join("");
const part = (value) => ({ content: { $case: "text", value }, metadata: undefined, filename: "", mediaType: "" });

async function callBack(agent, input, chain) {
  const fetchImpl = (url, init = {}) => {
    const headers = new Headers(init.headers ?? {});
    headers.set("Authorization", "Bearer " + corralKey);
    return fetch(url, { ...init, headers });
  };
  const factory = new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
    transports: [new JsonRpcTransportFactory({ fetchImpl })],
    cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
  }));
  const client = await factory.createFromUrl(`${corral}/a2a/${agent}/`);
  const task = await client.sendMessage({
    message: { messageId: `cb-${Date.now()}`, role: Role.ROLE_USER, parts: [part(input)], metadata: { [chainKey]: chain } },
  });
  return text(task.artifacts?.[0]?.parts ?? []);
}

class Executor {
  async execute(ctx, bus) {
    const { taskId, contextId, userMessage } = ctx;
    const input = text(userMessage.parts);
    const chain = userMessage.metadata?.[chainKey] ?? [];
    console.log(`received ${JSON.stringify({ input, chain, messageId: userMessage.messageId })}`);
    const status = (state, message) => ({ state, message, timestamp: new Date().toISOString() });
    const agentMessage = (value) => ({ messageId: `${taskId}-status`, contextId, taskId, role: Role.ROLE_AGENT, parts: [part(value)], metadata: undefined, extensions: [], referenceTaskIds: [] });
    bus.publish(AgentEvent.task({ id: taskId, contextId, status: status(TaskState.TASK_STATE_WORKING), artifacts: [], history: [userMessage], metadata: undefined }));
    let answer;
    try {
      const m = /^call back (\S+): (.*)$/s.exec(input);
      answer = m ? `corral answered: ${await callBack(m[1], m[2], chain)}` : `remote says: ${input.toUpperCase()}`;
    } catch (e) {
      const reason = e.data?.[0]?.reason ?? e.reason ?? "error";
      console.log(`call back refused: ${reason}: ${e.message}`);
      bus.publish(AgentEvent.statusUpdate({ taskId, contextId, status: status(TaskState.TASK_STATE_FAILED, agentMessage(`corral refused the call back (${reason}): ${e.message}`)), metadata: undefined }));
      bus.finished();
      return;
    }
    bus.publish(AgentEvent.artifactUpdate({
      taskId, contextId, append: false, lastChunk: true, metadata: undefined,
      artifact: { artifactId: `${taskId}-answer`, name: "answer", description: "", parts: [part(answer)], metadata: undefined, extensions: [] },
    }));
    bus.publish(AgentEvent.statusUpdate({ taskId, contextId, status: status(TaskState.TASK_STATE_COMPLETED), metadata: undefined }));
    bus.finished();
  }

  async cancelTask(taskId, bus) {
    bus.publish(AgentEvent.statusUpdate({ taskId, contextId: "", status: { state: TaskState.TASK_STATE_CANCELED }, metadata: undefined }));
    bus.finished();
  }
}

const app = express();
app.use((req, res, next) => {
  if (req.path.startsWith("/a2a") && req.method === "POST" && req.get("Authorization") !== `Bearer ${token}`) {
    console.log(`refused a request without the token (${req.get("Authorization") ?? "none"})`);
    res.status(401).json({ jsonrpc: "2.0", id: null, error: { code: -32600, message: "unauthenticated" } });
    return;
  }
  next();
});
const server = app.listen(0, "127.0.0.1", () => {
  const port = server.address().port;
  const card = {
    name: "shipping-oracle", description: "Answers about shipping, an agent outside corral.", version: "1.0.0",
    supportedInterfaces: [{ url: `http://127.0.0.1:${port}/a2a`, protocolBinding: "JSONRPC", tenant: "", protocolVersion: "1.0" }],
    provider: undefined, documentationUrl: undefined, iconUrl: undefined,
    capabilities: { streaming: true, pushNotifications: false, extensions: [], extendedAgentCard: false },
    securitySchemes: {}, securityRequirements: [], defaultInputModes: ["text/plain"], defaultOutputModes: ["text/plain"],
    skills: [{ id: "ship", name: "ship", description: "shipping answers", tags: ["shipping"], examples: [], inputModes: [], outputModes: [], securityRequirements: [] }],
    signatures: [],
  };
  const handler = new DefaultRequestHandler(card, new InMemoryTaskStore(), new Executor());
  app.use("/.well-known/agent-card.json", agentCardHandler({ agentCardProvider: handler }));
  app.use("/a2a", jsonRpcHandler({ requestHandler: handler, userBuilder: UserBuilder.noAuthentication }));
  console.log(`listening ${port}`);
});
