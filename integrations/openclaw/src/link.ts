/**
 * The NATS side of one account: connection, the agent's durable CHAT consumer, signed publishes and
 * request/reply (a RESULT awaited on ``nxs.result.<correlation_id>``). The only module that imports
 * the @nats-io packages.
 */
import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, headers as newHeaders, type NatsConnection, type MsgHdrs } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages, type JetStreamClient, type JsMsg } from "@nats-io/jetstream";
import type { AccountConfig } from "./config.js";
import { MSG_ID_HEADER, Signer, Trust, checkSigned } from "./signing.js";
import { decode, encode, subjects, type Envelope } from "./wire.js";

export const CHAT_STREAM = "NXS_CHAT";
const nanos = (seconds: number): number => Math.round(seconds * 1e9);

export function headerMap(h: MsgHdrs | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (h) for (const k of h.keys()) out.set(k, h.get(k));
  return out;
}

export class MeshTimeout extends Error {
  override name = "MeshTimeout";
}
export class RemoteError extends Error {
  override name = "RemoteError";
}

export class Link {
  readonly signer?: Signer;
  readonly trust?: Trust;
  private constructor(readonly cfg: AccountConfig, readonly nc: NatsConnection, readonly js: JetStreamClient) {
    if (cfg.nkeySeedFile) this.signer = Signer.fromFile(cfg.nkeySeedFile);
    if (cfg.trustFile) this.trust = Trust.fromFile(cfg.trustFile);
  }

  static async open(cfg: AccountConfig): Promise<Link> {
    const authenticator = cfg.credentials ? credsAuthenticator(readFileSync(cfg.credentials)) : undefined;
    const nc = await connect({ servers: cfg.servers, authenticator, name: `openclaw-${cfg.instanceId}`, maxReconnectAttempts: -1 });
    return new Link(cfg, nc, jetstream(nc));
  }

  get source() {
    return { instance_id: this.cfg.instanceId, agent_id: this.cfg.agentId, location: "openclaw" };
  }

  /** The agent's CHAT subjects: its own, and the broadcasts when configured. */
  filters(): string[] {
    const own = [subjects.chat(this.cfg.instanceId, this.cfg.agentId)];
    return this.cfg.broadcasts ? [...own, subjects.chat(this.cfg.instanceId), subjects.chat("*")] : own;
  }

  /** Create (or update) the durable consumer and start pulling from it. */
  async consume(): Promise<ConsumerMessages> {
    const jsm = await jetstreamManager(this.nc);
    const config = {
      durable_name: this.cfg.durable, filter_subjects: this.filters(), ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(this.cfg.ackWaitSeconds), max_deliver: this.cfg.maxDeliver, max_ack_pending: 64,
      deliver_policy: DeliverPolicy.All,
    };
    try {
      await jsm.consumers.info(CHAT_STREAM, this.cfg.durable);
      await jsm.consumers.update(CHAT_STREAM, this.cfg.durable, config);
    } catch {
      await jsm.consumers.add(CHAT_STREAM, config);
    }
    const consumer = await this.js.consumers.get(CHAT_STREAM, this.cfg.durable);
    return consumer.consume({ max_messages: 16 });
  }

  /** Store ``env`` on ``subject`` (signed in secure mode; Nats-Msg-Id = message_id, so a retry is harmless). */
  async send(env: Envelope, subject: string): Promise<void> {
    const data = encode(env);
    const h = newHeaders();
    h.set(MSG_ID_HEADER, env.message_id);
    for (const [k, v] of Object.entries(this.signer?.headers(subject, env.message_id, data) ?? {})) h.set(k, v);
    await this.js.publish(subject, data, { msgID: env.message_id, headers: h });
  }

  /** Why a received envelope is not believed (secure mode), or undefined. */
  refuse(env: Envelope, subject: string, data: Uint8Array, headers: Map<string, string>): string | undefined {
    return this.trust ? checkSigned(this.trust, env, subject, data, headers) : undefined;
  }

  /** Publish ``env`` (a COMMAND or TASK with reply_to) and wait for its RESULT. */
  async call(env: Envelope, subject: string, timeoutMs: number): Promise<Envelope> {
    const replySubject = env.reply_to ?? subjects.result(env.correlation_id ?? env.message_id);
    const sub = this.nc.subscribe(replySubject);
    const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
    try {
      await this.send(env, subject);
      for await (const m of sub) {
        let reply: Envelope;
        try {
          reply = decode(m.data);
        } catch {
          continue; // garbage on our reply subject is not the answer
        }
        if (reply.message_type !== "RESULT" || this.refuse(reply, m.subject, m.data, headerMap(m.headers))) continue;
        const error = reply.payload.metadata?.error;
        if (error) throw new RemoteError(`${reply.source.instance_id}: ${String(error)}`);
        return reply;
      }
      throw new MeshTimeout(`no RESULT on ${replySubject} within ${timeoutMs / 1000}s`);
    } finally {
      clearTimeout(timer);
      sub.unsubscribe();
    }
  }

  /** The current value of ``key`` in KV bucket ``bucket`` (read as its stream's last message), or undefined
   *  when absent or deleted. A read, not a watch: no @nats-io/kv dependency for one lookup. */
  async kvGet(bucket: string, key: string): Promise<Uint8Array | undefined> {
    const jsm = await jetstreamManager(this.nc);
    let stored;
    try {
      stored = await jsm.streams.getMessage(`KV_${bucket}`, { last_by_subj: `$KV.${bucket}.${key}` });
    } catch {
      return undefined; // no such bucket or key
    }
    const op = stored?.header?.get("KV-Operation");
    return !stored || op === "DEL" || op === "PURGE" ? undefined : stored.data;
  }

  async close(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.drain();
  }
}

export type { JsMsg };
