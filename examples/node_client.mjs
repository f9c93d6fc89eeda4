// examples/node_client.mjs: a Node.js client on the mesh through nats-server's WebSocket listener.
// npm install @nats-io/nats-core; node examples/node_client.mjs ws://127.0.0.1:8080 nxs-node-001
// (Node.js 22+; on Node.js 20 add --experimental-websocket before the file name)
import { headers, wsconnect } from "@nats-io/nats-core";

const [url = "ws://127.0.0.1:8080", to = "nxs-node-001"] = process.argv.slice(2);
const nc = await wsconnect({ servers: url, name: "node-client" });

// A CHAT envelope as the wire contract has it (DESIGN.md section 3): plain JSON.
const envelope = {
  message_id: crypto.randomUUID(),
  timestamp: new Date().toISOString(),
  source: { instance_id: "node-client", agent_id: "main", location: "nodejs" },
  target: { instance_id: to, agent_id: "*", broadcast: false },
  message_type: "CHAT",
  payload: { content: "hello from Node.js", metadata: {} },
  priority: 1,
  ttl: 300,
  v: 1,
};
const h = headers();
h.set("Nats-Msg-Id", envelope.message_id); // JetStream's dedup key: a retried send is stored once

// A request to a stream's subject is answered by JetStream with its acknowledgement.
const ack = (await nc.request(`nxs.chat.${to}._all`, JSON.stringify(envelope), { headers: h, timeout: 5000 })).json();
console.log(`stored in ${ack.stream} as #${ack.seq}${ack.duplicate ? " (duplicate)" : ""}`);
await nc.close();
