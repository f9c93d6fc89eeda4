// The channel against a real nats-server and the Python mesh (test/peer.py): hand-over, ack, replies,
// one conversation per peer, the allowlist, redelivery after a crash, secure mode, the agent tools.
// The only stand-in is ``dispatch``: the function OpenClaw's SDK would run for each inbound message.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { rmSync } from "node:fs";
import { jetstreamManager } from "@nats-io/jetstream";
import { NxsChannel } from "../dist/channel.js";
import { resolveAccountConfig, ConfigError } from "../dist/config.js";
import { agentOwner, delegate, handoff, submitTask } from "../dist/tools.js";
import { RemoteError } from "../dist/link.js";
import { eventually, peer, servePeer, startNats, tempDir, unique } from "./support.mjs";

let nats;
const quiet = { info() {}, warn() {} };
before(async () => {
  nats = await startNats();
  await peer("init", nats.url);
});
after(async () => nats?.stop());

function account(extra = {}) {
  const instanceId = unique("claw");
  return resolveAccountConfig("default", { instanceId, agentId: "main", servers: [nats.url], allowFrom: ["*"], ...extra });
}

/** A stand-in for OpenClaw: one conversation (its message history) per peer, the reply names it. */
function fakeOpenClaw() {
  const sessions = new Map();
  const dispatch = async (msg, deliver) => {
    const history = sessions.get(msg.peer) ?? [];
    history.push(msg.text);
    sessions.set(msg.peer, history);
    await deliver(`${msg.peer} #${history.length}: ${msg.text}`);
  };
  return { sessions, dispatch };
}

/** The test's own connection (for looking at consumers and streams), opened once. */
async function natsConn() {
  return nats.nc ?? (nats.nc = await (await import("@nats-io/transport-node")).connect({ servers: nats.url }));
}

async function consumerState(cfg) {
  const jsm = await jetstreamManager(await natsConn());
  const info = await jsm.consumers.info("NXS_CHAT", cfg.durable);
  return { pending: info.num_pending, unacked: info.num_ack_pending, delivered: info.delivered.consumer_seq };
}
after(async () => nats?.nc?.close());

test("a CHAT from the Python mesh is handed over, acked after, and answered as a RESULT with its correlation id", async () => {
  const cfg = account();
  const oc = fakeOpenClaw();
  const ch = await NxsChannel.start(cfg, oc.dispatch, quiet);
  try {
    const reply = await peer("ask", nats.url, "alice", cfg.instanceId, "main", "hello claw");
    assert.equal(reply.type, "RESULT");
    assert.equal(reply.content, "alice/main #1: hello claw");
    assert.equal(reply.correlation_id, reply.sent_correlation_id);
    assert.equal(reply.from, `${cfg.instanceId}/main`);
    assert.equal(reply.metadata.ok, true);
    const state = await eventually(async () => {
      const s = await consumerState(cfg);
      return s.unacked === 0 && s.delivered === 1 ? s : null;
    }, "the message acked");
    assert.equal(state.pending, 0);
    assert.deepEqual(ch.counts, { handled: 1, refused: 0, failed: 0 });
  } finally {
    await ch.stop();
  }
});

test("while OpenClaw holds the turn the message stays unacked (in progress), and is acked once it returns", async () => {
  const cfg = account({ ackWaitSeconds: 1 });
  let release;
  const held = new Promise((ok) => (release = ok));
  let entered = 0;
  const ch = await NxsChannel.start(cfg, async (msg, deliver) => {
    entered += 1;
    await held;
    await deliver("done");
  }, quiet);
  try {
    const answer = peer("ask", nats.url, "alice", cfg.instanceId, "main", "slow one");
    await eventually(() => entered === 1, "the hand-over started");
    // Three ack_waits later it is still the first delivery: in-progress acks hold it; and still unacked.
    await eventually(async () => (await consumerState(cfg)).unacked === 1, "unacked while in the turn");
    const start = Date.now();
    await eventually(() => Date.now() - start > 3000, "three ack_waits"); // sleep-ok: lets ack_wait pass 3 times
    assert.equal(entered, 1);
    assert.equal((await consumerState(cfg)).unacked, 1);
    release();
    assert.equal((await answer).content, "done");
    await eventually(async () => (await consumerState(cfg)).unacked === 0, "acked after the turn");
  } finally {
    await ch.stop();
  }
});

test("two peers get two conversations, each in its own order", async () => {
  const cfg = account();
  const oc = fakeOpenClaw();
  const ch = await NxsChannel.start(cfg, oc.dispatch, quiet);
  try {
    const [a1, b1] = await Promise.all([
      peer("ask", nats.url, "phone", cfg.instanceId, "main", "one"),
      peer("ask", nats.url, "laptop", cfg.instanceId, "main", "uno"),
    ]);
    const a2 = await peer("ask", nats.url, "phone", cfg.instanceId, "main", "two");
    assert.equal(a1.content, "phone/main #1: one");
    assert.equal(b1.content, "laptop/main #1: uno");
    assert.equal(a2.content, "phone/main #2: two");
    assert.deepEqual(Object.fromEntries(oc.sessions), { "phone/main": ["one", "two"], "laptop/main": ["uno"] });
  } finally {
    await ch.stop();
  }
});

test("an unlisted sender is refused: never handed over, terminated, and told why", async () => {
  const cfg = account({ allowFrom: ["phone/main", "laptop/*"] });
  const oc = fakeOpenClaw();
  const ch = await NxsChannel.start(cfg, oc.dispatch, quiet);
  try {
    const refused = await peer("ask", nats.url, "stranger", cfg.instanceId, "main", "let me in");
    assert.equal(refused.kind, "RemoteError");
    assert.match(refused.error, /sender stranger\/main is not allowed/);
    const ok = await peer("ask", nats.url, "laptop", cfg.instanceId, "main", "hi");
    assert.equal(ok.content, "laptop/main #1: hi");
    assert.deepEqual([...oc.sessions.keys()], ["laptop/main"]);
    await eventually(async () => (await consumerState(cfg)).unacked === 0, "both settled");
    assert.deepEqual(ch.counts, { handled: 1, refused: 1, failed: 0 });
  } finally {
    await ch.stop();
  }
});

test("a gateway that dies before the hand-over loses nothing: JetStream redelivers to the restarted one", async () => {
  const cfg = account({ ackWaitSeconds: 1 });
  // The first gateway, in its own process, is killed (SIGKILL) the moment a message reaches its dispatch.
  const crashing = spawn(process.execPath, [join(import.meta.dirname, "crashing-gateway.mjs"), JSON.stringify(cfg)],
                         { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise((ok) => crashing.stdout.once("data", ok)); // "consuming"
  const died = new Promise((ok) => crashing.on("exit", (code, signal) => ok(signal)));
  const answer = peer("ask", nats.url, "phone", cfg.instanceId, "main", "still there?", "--timeout", "40");
  assert.equal(await died, "SIGKILL");
  const deliveries = [];
  const oc = fakeOpenClaw();
  const ch = await NxsChannel.start(cfg, async (msg, deliver) => {
    deliveries.push(msg.delivery);
    await oc.dispatch(msg, deliver);
  }, quiet);
  try {
    const reply = await answer;
    assert.equal(reply.content, "phone/main #1: still there?");
    assert.deepEqual(deliveries, [2]);
  } finally {
    await ch.stop();
  }
});

test("a dispatch that fails is retried (nak), then handed over", async () => {
  const cfg = account();
  let calls = 0;
  const ch = await NxsChannel.start(cfg, async (msg, deliver) => {
    calls += 1;
    if (msg.delivery === 1) throw new Error("the session store was busy");
    await deliver(`ok on delivery ${msg.delivery}`);
  }, quiet);
  try {
    const reply = await peer("ask", nats.url, "phone", cfg.instanceId, "main", "retry me");
    assert.equal(reply.content, "ok on delivery 2");
    assert.equal(calls, 2);
    assert.equal(ch.counts.failed, 1);
  } finally {
    await ch.stop();
  }
});

test("secure mode: a signed CHAT is believed and the signed RESULT is believed by the Python mesh; unsigned is refused", async () => {
  const dir = tempDir("nxs-openclaw-keys-");
  try {
    const claw = unique("claw");
    const keys = await peer("keys", dir, claw, "caller");
    const cfg = resolveAccountConfig("secure", {
      instanceId: claw, servers: [nats.url], allowFrom: ["caller/*"], trustFile: keys.trust, nkeySeedFile: keys.seeds[claw],
    });
    const oc = fakeOpenClaw();
    const ch = await NxsChannel.start(cfg, oc.dispatch, quiet);
    try {
      const reply = await peer("ask", nats.url, "caller", claw, "main", "signed hello", "--keys", dir);
      assert.equal(reply.content, "caller/main #1: signed hello"); // the Python mesh checked our signature
      await peer("chat", nats.url, "caller", claw, "main", "unsigned, claiming to be caller");
      await eventually(() => ch.counts.refused === 1, "the unsigned one refused");
      assert.deepEqual(oc.sessions.get("caller/main"), ["signed hello"]);
    } finally {
      await ch.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("agent tools: delegate a COMMAND to a Python node and a TASK to a capability, and wait for the RESULTs", async () => {
  const worker = unique("worker");
  const node = await servePeer(nats.url, worker);
  const cfg = account();
  const ch = await NxsChannel.start(cfg, fakeOpenClaw().dispatch, quiet);
  try {
    const echoed = await delegate(ch.link, { instance: worker, command: "echo", args: { x: [1, 2] }, timeoutSeconds: 20 });
    assert.deepEqual(echoed.content, { echo: { x: [1, 2] } });
    assert.equal(echoed.from.split("/")[0], worker);
    const upper = await submitTask(ch.link, { capability: "upper", payload: "shout", timeoutSeconds: 20 });
    assert.equal(upper.content, "SHOUT");
    await assert.rejects(delegate(ch.link, { instance: worker, command: "nope", timeoutSeconds: 20 }), RemoteError);
    await assert.rejects(delegate(ch.link, { instance: "bad id", command: "echo" }), /instance: must match/);
  } finally {
    await ch.stop();
    await node.stop();
  }
});

test("agent tool nxs_handoff: the agent's owner (from the registry) hands it to another Python node", async () => {
  const [a, b, agent] = [unique("node-a"), unique("node-b"), `agent:${unique("talk")}`];
  const nodeA = await servePeer(nats.url, a, "--handoff", "--agent", agent);
  const nodeB = await servePeer(nats.url, b, "--handoff");
  const ch = await NxsChannel.start(account(), fakeOpenClaw().dispatch, quiet);
  try {
    assert.equal(await agentOwner(ch.link, agent), a);
    const moved = await handoff(ch.link, { agent, to: b, context: { history: ["hi"] }, timeoutSeconds: 60 });
    assert.equal(moved.from.split("/")[0], a); // the owner ran it: resolved from NXS_AGENTS
    assert.deepEqual([moved.content.from, moved.content.to, moved.content.epoch, moved.content.released], [a, b, 2, true]);
    assert.match(moved.content.ready, /^I'm ready\./);
    assert.deepEqual(await peer("agent", nats.url, agent), { owner: b, state: "active", epoch: 2 }); // the Python mesh agrees
    assert.equal(await agentOwner(ch.link, agent), b);
    // back again, asked of the new owner, which the tool finds by itself now
    const back = await handoff(ch.link, { agent, to: a, timeoutSeconds: 60 });
    assert.deepEqual([back.from.split("/")[0], back.content.to, back.content.epoch], [b, a, 3]);
    await assert.rejects(handoff(ch.link, { agent, to: a, timeoutSeconds: 20 }), (e) => e instanceof RemoteError && /already lives on/.test(e.message));
    await assert.rejects(handoff(ch.link, { agent: "agent:nobody", to: b }), /not in the mesh's registry/);
    await assert.rejects(handoff(ch.link, { agent: "agent:nobody", to: b, via: a, timeoutSeconds: 20 }), /AgentNotFound/);
    await assert.rejects(handoff(ch.link, { agent, to: "bad id" }), /to: must match/);
  } finally {
    await ch.stop();
    await nodeA.stop();
    await nodeB.stop();
  }
});

test("a CHAT without reply_to is answered with a CHAT to the sender; an answer is handed over but not answered back", async () => {
  const a = account();
  const b = account();
  const seen = [];
  const dispatch = async (msg, deliver) => {
    seen.push(`${msg.peer}: ${msg.text}`);
    await deliver(`re: ${msg.text}`);
  };
  const chA = await NxsChannel.start(a, dispatch, quiet);
  const chB = await NxsChannel.start(b, dispatch, quiet);
  try {
    await chA.sendText(`${b.instanceId}/main`, "ping"); // A's agent starts a conversation with B
    await eventually(() => seen.length === 2, "B's answer handed to A");
    assert.deepEqual(seen, [`${a.instanceId}/main: ping`, `${b.instanceId}/main: re: ping`]);
    await eventually(() => chA.counts.handled === 1 && chB.counts.handled === 1, "both acked");
    // No ping-pong: A did not answer B's answer (nothing more arrives at B).
    const stateB = await consumerState(b);
    assert.deepEqual([stateB.delivered, stateB.pending], [1, 0]); // A published before it acked: it would show
  } finally {
    await chA.stop();
    await chB.stop();
  }
});

test("a request OpenClaw answers after its turn (restart recovery) gets its RESULT, then correlated CHATs", async () => {
  // What a gateway restarted mid-turn does: the redelivered message is a duplicate to OpenClaw (no reply in
  // that dispatch); its restart recovery sends a notice, then the rerun turn's answer, through sendText.
  const cfg = account();
  const sender = unique("alice");
  let ch;
  ch = await NxsChannel.start(cfg, async (msg) => {
    setImmediate(async () => {
      await ch.sendText(msg.peer, "continuing your interrupted request");
      await ch.sendText(msg.peer, `answer: ${msg.text}`);
    });
  }, quiet);
  try {
    const reply = await peer("ask", nats.url, sender, cfg.instanceId, "main", "answer me eventually");
    assert.equal(reply.type, "RESULT");
    assert.equal(reply.content, "continuing your interrupted request");
    const jsm = await jetstreamManager(await natsConn());
    const follow = await eventually(async () => {
      try {
        return await jsm.streams.getMessage("NXS_CHAT", { last_by_subj: `nxs.chat.${sender}.main` });
      } catch {
        return null;
      }
    }, "the follow-up CHAT");
    const env = follow.json();
    assert.equal(env.payload.content, "answer: answer me eventually");
    assert.equal(env.correlation_id, reply.sent_correlation_id);
    assert.equal(typeof env.payload.metadata.in_reply_to, "string");
  } finally {
    await ch.stop();
  }
});

test("account config errors name the field", () => {
  const where = "channels.nxs.accounts.a";
  assert.throws(() => resolveAccountConfig("a", { servers: ["nats://x"] }), new ConfigError(`${where}.instanceId`, "is required"));
  assert.throws(() => resolveAccountConfig("a", { instanceId: "gw 1", servers: ["nats://x"] }), /accounts\.a\.instanceId: must match/);
  assert.throws(() => resolveAccountConfig("a", { instanceId: "gw", servers: [] }), /accounts\.a\.servers: needs at least one/);
  assert.throws(() => resolveAccountConfig("a", { instanceId: "gw", servers: ["nats://x"], allowFrom: ["a/b/c"] }), /allowFrom: "a\/b\/c" is not/);
  assert.throws(() => resolveAccountConfig("a", { instanceId: "gw", servers: ["nats://x"], trustFile: "/t.json" }), /nkeySeedFile: is required with trustFile/);
  const cfg = resolveAccountConfig("a", { instanceId: "gw", servers: "nats://x,nats://y" });
  assert.deepEqual([cfg.agentId, cfg.servers, cfg.allowFrom, cfg.durable], ["main", ["nats://x", "nats://y"], [], "openclaw-gw-main"]);
});
