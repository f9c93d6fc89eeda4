/**
 * The nxs-mesh wire contract (DESIGN.md sections 3 and 4, nxs_mesh/wire/schemas/), written from the
 * schema files: envelopes in JSON, subjects, derived ids. Nothing here talks to NATS.
 */
import { createHash, randomUUID } from "node:crypto";

export type MessageType = "CHAT" | "COMMAND" | "STATUS" | "HEARTBEAT" | "SYNC" | "TASK" | "RESULT" | "ALERT";
const MESSAGE_TYPES: ReadonlySet<string> = new Set(["CHAT", "COMMAND", "STATUS", "HEARTBEAT", "SYNC", "TASK", "RESULT", "ALERT"]);

export interface Source { instance_id: string; agent_id: string; location?: string | null }
export interface Target { instance_id: string; agent_id: string; broadcast?: boolean | null }
export interface Envelope {
  message_id: string;
  timestamp: string;
  source: Source;
  target: Target;
  message_type: MessageType;
  payload: { content: unknown; metadata?: Record<string, unknown> | null };
  priority?: number | null;
  ttl?: number | null;
  correlation_id?: string | null;
  reply_to?: string | null;
  v?: number | null;
}

/** A message that breaks the contract; ``field`` names what is wrong (as the Python EnvelopeError does). */
export class EnvelopeError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "EnvelopeError";
  }
}

export const ID_RE = /^[A-Za-z0-9_:-]{1,64}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const REPLY_RE = /^nxs\.result\.[A-Za-z0-9_:-]{1,64}$/;
export const BROADCAST = "*";
export const DEFAULT_TTL = 300;
/** result.schema.json x-nxs-message-id: uuid5(namespace, "result:{request_id}"). */
const RESULT_NAMESPACE = "6c1f9a52-7d0e-4b8e-9a55-6e1c3c2f6a01";

export function checkId(value: unknown, field: string): string {
  if (typeof value !== "string" || !ID_RE.test(value)) {
    throw new EnvelopeError(field, `must match [A-Za-z0-9_:-]{1,64}, got ${JSON.stringify(value)}`);
  }
  return value;
}

// -- subjects (DESIGN.md section 4) ------------------------------------------------------------------
const seg = (id: string): string => (id === BROADCAST ? "_all" : id);
export const subjects = {
  chat: (to: string, agent: string = BROADCAST) => `nxs.chat.${seg(to)}.${seg(agent)}`,
  command: (to: string, agent: string = BROADCAST, priority = 1) => `nxs.command.${seg(to)}.${seg(agent)}.p${priority}`,
  task: (capability: string, priority = 1) => `nxs.task.${checkId(capability, "capability")}.p${priority}`,
  result: (correlationId: string) => `nxs.result.${correlationId}`,
  sync: (to: string, agent: string = BROADCAST) => `nxs.sync.${seg(to)}.${seg(agent)}`,
};

/** Like JavaScript's Date.toISOString(): RFC 3339 UTC with milliseconds and Z. */
export const now = (): string => new Date().toISOString();

/** RFC 4122 version 5 (SHA-1) uuid of ``name`` in ``namespace``. */
export function uuid5(namespace: string, name: string): string {
  const ns = Buffer.from(namespace.replace(/-/g, ""), "hex");
  const hash = createHash("sha1").update(ns).update(name, "utf8").digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The message id of the RESULT answering ``requestId`` (so a retried answer is a duplicate). */
export const resultId = (requestId: string): string => uuid5(RESULT_NAMESPACE, `result:${requestId.toLowerCase()}`);

export interface NewEnvelope {
  type: MessageType;
  content: unknown;
  source: Source;
  to?: string;
  agent?: string;
  metadata?: Record<string, unknown>;
  priority?: number;
  ttl?: number;
  correlationId?: string;
  replyTo?: string;
  messageId?: string;
}

export function newEnvelope(o: NewEnvelope): Envelope {
  const to = o.to ?? BROADCAST;
  const agent = o.agent ?? BROADCAST;
  return {
    message_id: o.messageId ?? randomUUID(),
    timestamp: now(),
    source: o.source,
    target: { instance_id: to, agent_id: agent, broadcast: to === BROADCAST },
    message_type: o.type,
    payload: { content: o.content, metadata: o.metadata ?? {} },
    priority: o.priority ?? 1,
    ttl: o.ttl ?? DEFAULT_TTL,
    correlation_id: o.correlationId ?? null,
    reply_to: o.replyTo ?? null,
    v: 1,
  };
}

export const encode = (env: Envelope): Uint8Array => new TextEncoder().encode(JSON.stringify(env));

function object(value: unknown, field: string): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new EnvelopeError(field, "must be an object");
  return value as Record<string, unknown>;
}

function optionalInt(doc: Record<string, unknown>, key: string, min: number, max: number): void {
  const v = doc[key];
  if (v !== undefined && v !== null && (!Number.isInteger(v) || (v as number) < min || (v as number) > max)) {
    throw new EnvelopeError(key, `must be an integer ${min}..${max === Infinity ? "" : max}, got ${JSON.stringify(v)}`);
  }
}

/** Parse and check an envelope (the fields every receiver relies on); throws ``EnvelopeError``. */
export function decode(data: Uint8Array): Envelope {
  let doc: Record<string, unknown>;
  try {
    doc = object(JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data)), "envelope");
  } catch (err) {
    if (err instanceof EnvelopeError) throw err;
    throw new EnvelopeError("envelope", `not UTF-8 JSON (${(err as Error).message})`);
  }
  if (typeof doc.message_id !== "string" || !UUID_RE.test(doc.message_id)) throw new EnvelopeError("message_id", "must be a UUID");
  if (typeof doc.timestamp !== "string" || Number.isNaN(Date.parse(doc.timestamp))) throw new EnvelopeError("timestamp", "must be RFC 3339");
  const source = object(doc.source, "source");
  checkId(source.instance_id, "source.instance_id");
  checkId(source.agent_id, "source.agent_id");
  const target = object(doc.target, "target");
  if (target.instance_id !== BROADCAST) checkId(target.instance_id, "target.instance_id");
  if (target.agent_id !== BROADCAST) checkId(target.agent_id, "target.agent_id");
  if (typeof doc.message_type !== "string" || !MESSAGE_TYPES.has(doc.message_type)) {
    throw new EnvelopeError("message_type", `unknown message type ${JSON.stringify(doc.message_type)}`);
  }
  const payload = object(doc.payload, "payload");
  if (payload.metadata !== undefined && payload.metadata !== null) object(payload.metadata, "payload.metadata");
  optionalInt(doc, "priority", 0, 9);
  optionalInt(doc, "ttl", 0, Infinity);
  if (doc.correlation_id !== undefined && doc.correlation_id !== null) checkId(doc.correlation_id, "correlation_id");
  if (doc.reply_to !== undefined && doc.reply_to !== null && (typeof doc.reply_to !== "string" || !REPLY_RE.test(doc.reply_to))) {
    throw new EnvelopeError("reply_to", "must be nxs.result.<token>");
  }
  return doc as unknown as Envelope;
}

/** The token a request's RESULT is correlated by (its correlation id, else its message id). */
export const correlationOf = (req: Envelope): string => req.correlation_id ?? req.message_id;

/** Seconds left before ``env`` expires (Infinity with ttl 0). */
export function secondsLeft(env: Envelope, nowMs = Date.now()): number {
  const ttl = env.ttl ?? DEFAULT_TTL;
  if (ttl === 0) return Infinity;
  return (Date.parse(env.timestamp) + ttl * 1000 - nowMs) / 1000;
}

/** The RESULT answering ``req`` (metadata.ok/error say how it went; see result.schema.json). */
export function resultFor(req: Envelope, content: unknown, source: Source, error?: string): Envelope {
  const metadata: Record<string, unknown> = { ok: error === undefined };
  if (error !== undefined) metadata.error = error;
  return newEnvelope({
    type: "RESULT", content, source, to: req.source.instance_id, agent: req.source.agent_id, metadata,
    correlationId: correlationOf(req), messageId: resultId(req.message_id), ttl: req.ttl ?? DEFAULT_TTL,
  });
}
