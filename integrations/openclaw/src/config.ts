/**
 * One account of the channel: ``channels.nxs.accounts.<id>`` in the OpenClaw config, checked here with
 * errors that name the field (the gateway shows them; nothing is guessed or escaped silently).
 */
import { ID_RE } from "./wire.js";

export interface AccountConfig {
  /** The account's key under channels.nxs.accounts (also part of the consumer's durable name). */
  accountId: string;
  /** The mesh instance this gateway is (``nxs.chat.<instanceId>.<agentId>`` is its inbox). */
  instanceId: string;
  agentId: string;
  servers: string[];
  /** A NATS creds file (JWT + nkey seed), as ``nxs deploy`` writes for a node. */
  credentials?: string;
  /** Mesh identities allowed to talk to the agent: "instance/agent", "instance/*" (or "instance"), "*". */
  allowFrom: string[];
  /** Secure mode: trust.json of the mesh; every inbound envelope must be signed by its source's key. */
  trustFile?: string;
  /** The nkeys seed file this gateway signs with (required with trustFile). */
  nkeySeedFile?: string;
  /** Seconds JetStream waits for an ack before it redelivers (a turn in progress sends in-progress acks). */
  ackWaitSeconds: number;
  /** Deliveries before a message that keeps failing is given up (terminated). */
  maxDeliver: number;
  /** Also take broadcasts (``nxs.chat.<instanceId>._all`` and ``nxs.chat._all._all``). */
  broadcasts: boolean;
  /** The JetStream durable consumer's name (default ``openclaw-<instanceId>-<agentId>`` made safe). */
  durable: string;
}

export class ConfigError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "ConfigError";
  }
}

const DURABLE_UNSAFE = /[^A-Za-z0-9_-]/g;

function str(raw: Record<string, unknown>, key: string, where: string, required: boolean): string | undefined {
  const v = raw[key];
  if (v === undefined || v === null || v === "") {
    if (required) throw new ConfigError(`${where}.${key}`, "is required");
    return undefined;
  }
  if (typeof v !== "string") throw new ConfigError(`${where}.${key}`, `must be a string, got ${typeof v}`);
  return v;
}

function positive(raw: Record<string, unknown>, key: string, where: string, fallback: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw new ConfigError(`${where}.${key}`, `must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

function list(raw: Record<string, unknown>, key: string, where: string): string[] {
  const v = raw[key] ?? [];
  const items = typeof v === "string" ? v.split(",").map((s) => s.trim()).filter(Boolean) : v;
  if (!Array.isArray(items) || items.some((s) => typeof s !== "string")) throw new ConfigError(`${where}.${key}`, "must be a list of strings");
  return items as string[];
}

function checkAllowEntry(entry: string, where: string): void {
  if (entry === "*") return;
  const [instance, agent, extra] = entry.split("/");
  const ok = extra === undefined && instance !== undefined && (instance === "*" || ID_RE.test(instance))
    && (agent === undefined || agent === "*" || ID_RE.test(agent));
  if (!ok) throw new ConfigError(`${where}.allowFrom`, `${JSON.stringify(entry)} is not "instance/agent", "instance/*" or "*"`);
}

/** The checked account ``accountId`` from its raw config object. */
export function resolveAccountConfig(accountId: string, raw: unknown): AccountConfig {
  const where = `channels.nxs.accounts.${accountId}`;
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(where, "must be an object");
  const r = raw as Record<string, unknown>;
  const instanceId = str(r, "instanceId", where, true)!;
  const agentId = str(r, "agentId", where, false) ?? "main";
  for (const [key, value] of [["instanceId", instanceId], ["agentId", agentId]] as const) {
    if (!ID_RE.test(value)) throw new ConfigError(`${where}.${key}`, `must match [A-Za-z0-9_:-]{1,64}, got ${JSON.stringify(value)}`);
  }
  const servers = list(r, "servers", where);
  if (servers.length === 0) throw new ConfigError(`${where}.servers`, "needs at least one NATS URL (nats://host:4222)");
  const allowFrom = list(r, "allowFrom", where);
  allowFrom.forEach((e) => checkAllowEntry(e, where));
  const trustFile = str(r, "trustFile", where, false);
  const nkeySeedFile = str(r, "nkeySeedFile", where, false);
  if (trustFile !== undefined && nkeySeedFile === undefined) throw new ConfigError(`${where}.nkeySeedFile`, "is required with trustFile (replies must be signed in a secure mesh)");
  return {
    accountId, instanceId, agentId, servers, allowFrom, trustFile, nkeySeedFile,
    credentials: str(r, "credentials", where, false),
    ackWaitSeconds: positive(r, "ackWaitSeconds", where, 30),
    maxDeliver: Math.floor(positive(r, "maxDeliver", where, 5)),
    broadcasts: r.broadcasts === true,
    durable: str(r, "durable", where, false) ?? `openclaw-${instanceId}-${agentId}`.replace(DURABLE_UNSAFE, "_"),
  };
}

/** True when ``allowFrom`` lets ``instance``/``agent`` talk to the agent. */
export function allowed(allowFrom: readonly string[], instance: string, agent: string): boolean {
  return allowFrom.some((entry) => {
    if (entry === "*") return true;
    const [i, a = "*"] = entry.split("/");
    return (i === "*" || i === instance) && (a === "*" || a === agent);
  });
}
