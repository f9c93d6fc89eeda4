/**
 * What the OpenClaw agent can ask of the mesh (registered as agent tools in ``index.ts``):
 *
 * - ``nxs_delegate``: a COMMAND to another mesh agent (``nxs.command.<instance>.<agent>.p<prio>``)
 *   and its RESULT, awaited (``Mesh.request`` in Python does the same);
 * - ``nxs_task``: a TASK for any node with a capability (``nxs.task.<capability>.p<prio>``), and its RESULT;
 * - ``nxs_handoff``: the ``handoff`` COMMAND (Python ``node/handoff_command.py``) to the agent's owner, read
 *   from the NXS_AGENTS registry like ``mesh.agents.get`` (or to ``via``): that node runs ``mesh.handoff``.
 *
 * Both publish with ``reply_to`` = ``nxs.result.<correlation_id>`` and wait there (subscribed first).
 */
import { randomUUID } from "node:crypto";
import type { Link } from "./link.js";
import { checkId, newEnvelope, subjects, type Envelope } from "./wire.js";

export interface DelegateArgs { instance: string; agent?: string; command: string; args?: unknown; timeoutSeconds?: number; priority?: number }
export interface TaskArgs { capability: string; payload?: unknown; timeoutSeconds?: number; priority?: number }
export interface HandoffArgs { agent: string; to: string; context?: unknown; via?: string; timeoutSeconds?: number }
export interface ToolAnswer { from: string; content: unknown; metadata: Record<string, unknown> }

const DEFAULT_TIMEOUT = 60;
/** Requests go at priority 5 (the library's REQUEST_PRIORITY): an agent waiting comes before background work. */
const REQUEST_PRIORITY = 5;

function answer(env: Envelope): ToolAnswer {
  return { from: `${env.source.instance_id}/${env.source.agent_id}`, content: env.payload.content, metadata: env.payload.metadata ?? {} };
}

function timing(t: number | undefined): { ms: number; ttl: number } {
  const seconds = t ?? DEFAULT_TIMEOUT;
  if (!(seconds > 0)) throw new Error(`timeoutSeconds must be positive, got ${t}`);
  return { ms: seconds * 1000, ttl: Math.max(1, Math.ceil(seconds)) };
}

export async function delegate(link: Link, a: DelegateArgs): Promise<ToolAnswer> {
  const instance = checkId(a.instance, "instance");
  const agent = a.agent === undefined || a.agent === "*" ? "*" : checkId(a.agent, "agent");
  if (typeof a.command !== "string" || a.command.length === 0) throw new Error("command is required");
  const { ms, ttl } = timing(a.timeoutSeconds);
  const priority = a.priority ?? REQUEST_PRIORITY;
  const corr = randomUUID();
  const env = newEnvelope({
    type: "COMMAND", content: { command: a.command, args: a.args ?? null }, source: link.source, to: instance, agent,
    priority, ttl, correlationId: corr, replyTo: subjects.result(corr),
  });
  return answer(await link.call(env, subjects.command(instance, agent, priority), ms));
}

export async function submitTask(link: Link, a: TaskArgs): Promise<ToolAnswer> {
  const capability = checkId(a.capability, "capability");
  const { ms, ttl } = timing(a.timeoutSeconds);
  const priority = a.priority ?? REQUEST_PRIORITY;
  const corr = randomUUID();
  const env = newEnvelope({
    type: "TASK", content: a.payload ?? "", source: link.source, metadata: { capability }, priority, ttl,
    correlationId: corr, replyTo: subjects.result(corr),
  });
  return answer(await link.call(env, subjects.task(capability, priority), ms));
}

/** The registry's owner of ``agent`` (KV key: the id with ':' as '='), or undefined when it is not registered.
 *  Only where the command is sent: the node that runs it reads (and in secure mode checks) the record itself. */
export async function agentOwner(link: Link, agent: string): Promise<string | undefined> {
  const data = await link.kvGet("NXS_AGENTS", checkId(agent, "agent").replaceAll(":", "="));
  if (data === undefined) return undefined;
  try {
    const owner = (JSON.parse(new TextDecoder().decode(data)) as { owner?: unknown }).owner;
    return typeof owner === "string" ? owner : undefined;
  } catch {
    return undefined; // not a record: treated as absent, like the Python reader
  }
}

export async function handoff(link: Link, a: HandoffArgs): Promise<ToolAnswer> {
  const agent = checkId(a.agent, "agent");
  const to = checkId(a.to, "to");
  const { ms } = timing(a.timeoutSeconds);
  const via = a.via === undefined ? await agentOwner(link, agent) : checkId(a.via, "via");
  if (via === undefined) throw new Error(`agent ${agent} is not in the mesh's registry (NXS_AGENTS); give "via": a node to ask`);
  // The node's handoff has four steps, each with its own timeout: a fifth of ours each, so it ends first.
  const args = { agent, to, timeout: ms / 5000, ...(a.context === undefined ? {} : { context: a.context }) };
  return delegate(link, { instance: via, command: "handoff", args, timeoutSeconds: ms / 1000 });
}
