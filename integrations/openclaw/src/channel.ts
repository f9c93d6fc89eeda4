/**
 * The channel of one account, without OpenClaw: inbound CHAT for the agent -> ``dispatch`` (which
 * hands it to OpenClaw; ``index.ts`` wires the SDK) -> ack; replies -> one RESULT (or CHAT) with the
 * correlation id. Independent of the SDK so tests can drive it with a stand-in dispatch.
 *
 *     const ch = await NxsChannel.start(cfg, async (msg, deliver) => { await deliver(`echo ${msg.text}`); });
 *     ...
 *     await ch.stop();
 *
 * Delivery: the message is acked only after ``dispatch`` resolved (OpenClaw took the turn and its
 * replies were published); while it runs, in-progress acks keep JetStream from redelivering it. A
 * gateway that dies before that leaves the message unacked: JetStream redelivers it after ack_wait,
 * to the restarted gateway. Each peer (``instance/agent`` of the sender) is its own conversation,
 * and one peer's messages are handed over in order, one at a time.
 */
import { allowed, type AccountConfig } from "./config.js";
import { Link, headerMap, type JsMsg } from "./link.js";
import { SEALED_HEADER } from "./signing.js";
import { EnvelopeError, correlationOf, decode, newEnvelope, resultFor, secondsLeft, subjects, type Envelope, type Source } from "./wire.js";

export interface Inbound {
  /** The conversation: the sender's ``instance_id/agent_id``. */
  peer: string;
  sender: Source;
  text: string;
  messageId: string;
  timestamp: number;
  /** 1 on the first delivery; more after a crash or a failed hand-over. */
  delivery: number;
  envelope: Envelope;
}
/** Hand one message to the agent; call ``deliver`` with each reply text; resolve when the turn is done. */
export type Dispatch = (msg: Inbound, deliver: (text: string) => Promise<void>) => Promise<void>;
export interface Logger { info(msg: string): void; warn(msg: string): void }

export const peerOf = (s: Source): string => `${s.instance_id}/${s.agent_id}`;

/** The text an agent sees for a CHAT's content (a string as is, anything else as JSON). */
export const textOf = (content: unknown): string => (typeof content === "string" ? content : JSON.stringify(content));

/** A CHAT that answers one of ours (see ``replyTo``): handed over, never answered back. */
const isAnswer = (env: Envelope): boolean => typeof env.payload.metadata?.in_reply_to === "string";

export class NxsChannel {
  /** What happened to each message, for status and tests: handled, refused (with why), failed. */
  readonly counts = { handled: 0, refused: 0, failed: 0 };
  private readonly peers = new Map<string, Promise<void>>();
  /** Requests OpenClaw took without answering within the turn, per peer, oldest first (see ``sendText``). */
  private readonly awaiting = new Map<string, { env: Envelope; answered: boolean }[]>();
  private loop?: Promise<void>;
  private messages?: Awaited<ReturnType<Link["consume"]>>;

  private constructor(readonly cfg: AccountConfig, readonly link: Link, private readonly dispatch: Dispatch,
                      private readonly log: Logger) {}

  /** Connect, bind the durable consumer, and start handing messages over; returns once consuming. */
  static async start(cfg: AccountConfig, dispatch: Dispatch, log: Logger = console): Promise<NxsChannel> {
    const link = await Link.open(cfg);
    const ch = new NxsChannel(cfg, link, dispatch, log);
    try {
      ch.messages = await link.consume();
    } catch (err) {
      await link.close();
      throw err;
    }
    ch.loop = ch.run(ch.messages);
    return ch;
  }

  /** Settles when the pull loop ends: after ``stop()``, or when the connection closed for good (the
   * gateway then fails the account). A deleted durable does not end it: nats.js keeps waiting for it. */
  get done(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  private async run(messages: AsyncIterable<JsMsg>): Promise<void> {
    for await (const m of messages) {
      let env: Envelope;
      try {
        env = decode(m.data);
      } catch (err) {
        this.refuse(m, undefined, err instanceof EnvelopeError ? err.message : String(err));
        continue;
      }
      const peer = peerOf(env.source);
      const previous = this.peers.get(peer) ?? Promise.resolve();
      const next = previous.then(() => this.handle(m, env));
      this.peers.set(peer, next);
      void next.finally(() => { if (this.peers.get(peer) === next) this.peers.delete(peer); });
    }
  }

  /** Why ``env`` is not handed over, or undefined. */
  private screen(m: JsMsg, env: Envelope): string | undefined {
    if (env.message_type !== "CHAT") return `not a CHAT (${env.message_type})`;
    if (!allowed(this.cfg.allowFrom, env.source.instance_id, env.source.agent_id)) {
      return `sender ${peerOf(env.source)} is not allowed on this channel`;
    }
    const headers = headerMap(m.headers);
    const forged = this.link.refuse(env, m.subject, m.data, headers);
    if (forged) return `not verified: ${forged}`;
    if (headers.has(SEALED_HEADER)) return "sealed content is not supported by the OpenClaw channel";
    if (secondsLeft(env) <= 0) return "expired before it was handed over";
    return undefined;
  }

  private async handle(m: JsMsg, env: Envelope): Promise<void> {
    const why = this.screen(m, env);
    if (why) return this.refuse(m, env, why);
    const texts: string[] = [];
    const msg: Inbound = {
      peer: peerOf(env.source), sender: env.source, text: textOf(env.payload.content), messageId: env.message_id,
      timestamp: Date.parse(env.timestamp), delivery: m.info.deliveryCount, envelope: env,
    };
    const working = setInterval(() => m.working(), (this.cfg.ackWaitSeconds * 1000) / 3);
    try {
      await this.dispatch(msg, async (text) => { if (text) texts.push(text); });
      if (texts.length > 0 && !isAnswer(env)) await this.replyTo(env, texts.join("\n\n"));
      else if (texts.length === 0 && !isAnswer(env)) this.await(msg.peer, env);
      m.ack();
      this.counts.handled += 1;
    } catch (err) {
      this.counts.failed += 1;
      this.log.warn(`nxs: hand-over of ${env.message_id} from ${msg.peer} failed (delivery ${msg.delivery}): ${String(err)}`);
      m.nak(1000); // redelivered, up to maxDeliver
    } finally {
      clearInterval(working);
    }
  }

  /** Terminate a message that will never be handed over; a sender waiting on reply_to is told why. */
  private refuse(m: JsMsg, env: Envelope | undefined, why: string): void {
    this.counts.refused += 1;
    this.log.warn(`nxs: refused ${env?.message_id ?? `message ${m.seq}`} on ${m.subject}: ${why}`);
    m.term(why);
    if (env?.reply_to && !why.startsWith("not verified")) {
      void this.link.send(resultFor(env, null, this.link.source, why), env.reply_to).catch(() => undefined);
    }
  }

  /** The answer to ``req``: a RESULT on its reply_to, else a CHAT back to the sender; both correlated. */
  async replyTo(req: Envelope, text: string): Promise<void> {
    if (req.reply_to) return this.link.send(resultFor(req, text, this.link.source), req.reply_to);
    const base = resultFor(req, text, this.link.source);
    // Marked as an answer: a gateway receiving it hands it to its agent but does not answer it back,
    // so two agents with this channel cannot loop on each other's replies.
    const env = { ...base, message_type: "CHAT" as const, payload: { ...base.payload, metadata: { in_reply_to: req.message_id } } };
    await this.link.send(env, subjects.chat(req.source.instance_id, req.source.agent_id));
  }

  /** Keep ``env`` as answered later: OpenClaw may finish a turn outside the dispatch that handed it
   * over. A gateway restarted mid-turn skips the redelivered message as a duplicate (it recorded it
   * before dying), and its own restart recovery reruns the turn: a notice ("continuing your interrupted
   * request"), then the answer, both through ``sendText``. */
  private await(peer: string, env: Envelope): void {
    const queue = (this.awaiting.get(peer) ?? []).filter((w) => secondsLeft(w.env) > 0);
    queue.push({ env, answered: false });
    this.awaiting.set(peer, queue);
  }

  /** What the agent sends to ``peer`` ("instance/agent") on its own. While a request of that peer waits
   * (within its ttl): the first message is its RESULT (on its reply_to), the next ones CHATs correlated
   * to it (correlation_id, metadata.in_reply_to). Otherwise a new CHAT. */
  async sendText(peer: string, text: string): Promise<string> {
    const waiting = (this.awaiting.get(peer) ?? []).filter((w) => secondsLeft(w.env) > 0);
    this.awaiting.set(peer, waiting);
    const open = waiting.find((w) => !w.answered) ?? waiting.at(-1);
    if (open !== undefined && !open.answered) {
      open.answered = true;
      await this.replyTo(open.env, text);
      return resultFor(open.env, text, this.link.source).message_id;
    }
    if (open !== undefined) {
      const env = newEnvelope({
        type: "CHAT", content: text, source: this.link.source, to: open.env.source.instance_id, agent: open.env.source.agent_id,
        correlationId: correlationOf(open.env), metadata: { in_reply_to: open.env.message_id },
      });
      await this.link.send(env, subjects.chat(open.env.source.instance_id, open.env.source.agent_id));
      return env.message_id;
    }
    const [instance = "", agent = "main"] = peer.split("/");
    const env = newEnvelope({ type: "CHAT", content: text, source: this.link.source, to: instance, agent });
    await this.link.send(env, subjects.chat(instance, agent));
    return env.message_id;
  }

  /** Stop taking messages, let the ones in flight finish, then close the connection. */
  async stop(): Promise<void> {
    this.messages?.stop();
    await this.loop?.catch(() => undefined);
    await Promise.allSettled([...this.peers.values()]);
    await this.link.close();
  }
}
