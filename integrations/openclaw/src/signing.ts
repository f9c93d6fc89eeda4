/**
 * Envelope signatures and the trust file, as the mesh defines them (nxs_mesh/wire/signing.py and
 * wire/trust.py, docs/security-wire.md): ed25519 with nkeys, headers Nxs-Signer / Nxs-Sig over
 *
 *     "nxs-sig-v1\n" + subject + "\n" + message_id + "\n" + body
 *
 * What ``checkSigned`` verifies, in the library's order: signed at all; Nats-Msg-Id (when present) is
 * the envelope's message_id (or a DLQ replay's "replay:..."); the signer is the key trust.json lists
 * for source.instance_id (or the admin key); the signature verifies over subject, id and the exact
 * bytes; the timestamp is fresh (at most MAX_SKEW ahead, not older than ttl + MAX_SKEW).
 */
import { readFileSync } from "node:fs";
import { fromPublic, fromSeed, type KeyPair } from "@nats-io/nkeys";
import type { Envelope } from "./wire.js";

export const SIGNER_HEADER = "Nxs-Signer";
export const SIG_HEADER = "Nxs-Sig";
export const SEALED_HEADER = "Nxs-Sealed";
export const MSG_ID_HEADER = "Nats-Msg-Id";
const REPLAY_PREFIX = "replay:";
/** Seconds a sender's clock may be ahead of ours (trust.py MAX_SKEW). */
export const MAX_SKEW = 60;

export function signingInput(subject: string, messageId: string, body: Uint8Array): Uint8Array {
  const head = new TextEncoder().encode(`nxs-sig-v1\n${subject}\n${messageId}\n`);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

const b64url = (raw: Uint8Array): string => Buffer.from(raw).toString("base64url");

/** Signs with one nkeys user seed (the SU... line of a node.nk or creds file). */
export class Signer {
  private readonly kp: KeyPair;
  readonly publicKey: string;

  constructor(seed: string) {
    this.kp = fromSeed(new TextEncoder().encode(seed.trim()));
    this.publicKey = this.kp.getPublicKey();
  }

  static fromFile(path: string): Signer {
    const line = readFileSync(path, "utf8").split(/\r?\n/).map((l) => l.trim()).find((l) => l.startsWith("SU"));
    if (line === undefined) throw new Error(`${path} holds no nkeys user seed (a line starting with SU)`);
    return new Signer(line);
  }

  headers(subject: string, messageId: string, body: Uint8Array): Record<string, string> {
    return { [SIGNER_HEADER]: this.publicKey, [SIG_HEADER]: b64url(this.kp.sign(signingInput(subject, messageId, body))) };
  }
}

export function verify(publicKey: string, subject: string, messageId: string, body: Uint8Array, sig: string): boolean {
  try {
    const raw = Buffer.from(sig, "base64url");
    return raw.length === 64 && fromPublic(publicKey).verify(signingInput(subject, messageId, body), raw);
  } catch {
    return false; // not an nkeys public key, not base64url
  }
}

/** trust.json (written by ``nxs deploy secure init``): which node signs with which key. */
export class Trust {
  constructor(readonly nodes: ReadonlyMap<string, string>, readonly admin: string | undefined) {}

  static fromFile(path: string): Trust {
    let doc: { version?: unknown; nodes?: Record<string, { sign?: unknown }>; admin?: { sign?: unknown } };
    try {
      doc = JSON.parse(readFileSync(path, "utf8"));
    } catch (err) {
      throw new Error(`cannot read trust file ${path}: ${(err as Error).message}`);
    }
    if (doc === null || typeof doc !== "object" || doc.version !== 1) throw new Error(`${path} is not an nxs trust file (an object with "version": 1)`);
    const nodes = new Map<string, string>();
    for (const [node, keys] of Object.entries(doc.nodes ?? {})) {
      if (typeof keys?.sign !== "string") throw new Error(`${path}: nodes.${node} needs a "sign" key (U...)`);
      nodes.set(node, keys.sign);
    }
    return new Trust(nodes, typeof doc.admin?.sign === "string" ? doc.admin.sign : undefined);
  }

  nodeOf(key: string): string | undefined {
    for (const [node, sign] of this.nodes) if (sign === key) return node;
    return undefined;
  }
}

/** Why ``env`` (received on ``subject`` as ``body`` with ``headers``) is not what it says it is, or
 * undefined when it is. */
export function checkSigned(trust: Trust, env: Envelope, subject: string, body: Uint8Array,
                            headers: ReadonlyMap<string, string>, nowMs = Date.now()): string | undefined {
  const signer = headers.get(SIGNER_HEADER);
  const sig = headers.get(SIG_HEADER);
  if (!signer || !sig) return "unsigned envelope (no Nxs-Signer/Nxs-Sig)";
  const natsId = headers.get(MSG_ID_HEADER);
  if (natsId !== undefined && natsId !== env.message_id && !natsId.startsWith(REPLAY_PREFIX)) {
    return `Nats-Msg-Id ${JSON.stringify(natsId.slice(0, 40))} is not the envelope's message_id`;
  }
  const source = env.source.instance_id;
  if (signer !== trust.nodes.get(source) && signer !== trust.admin) {
    const known = trust.nodeOf(signer);
    return `source ${JSON.stringify(source)} is not its signer (${known ? `node ${JSON.stringify(known)}'s key` : "a key the trust file does not know"})`;
  }
  if (!verify(signer, subject, env.message_id.toLowerCase(), body, sig)) return `bad signature (signer ${signer.slice(0, 12)}…)`;
  const sent = Date.parse(env.timestamp) / 1000;
  const now = nowMs / 1000;
  if (sent > now + MAX_SKEW) return `timestamp ${Math.round(sent - now)}s in the future (allowed skew ${MAX_SKEW}s)`;
  if (env.ttl && now > sent + env.ttl + MAX_SKEW) return `stale or replayed: sent ${Math.round(now - sent)}s ago, ttl ${env.ttl}s`;
  return undefined;
}
