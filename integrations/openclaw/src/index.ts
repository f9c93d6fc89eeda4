/**
 * The OpenClaw entry: channel ``nxs`` (accounts under ``channels.nxs.accounts.<id>``) and the agent
 * tools ``nxs_delegate`` / ``nxs_task`` / ``nxs_handoff``. Everything mesh-side lives in ``channel.ts``; this file only
 * maps it onto the plugin SDK:
 *
 * - ``gateway.startAccount`` starts an ``NxsChannel`` per account and runs until the gateway aborts it;
 * - each inbound CHAT goes through ``dispatchInboundDirectDmWithRuntime`` with the sender's
 *   ``instance/agent`` as the DM peer, so with ``session.dmScope: "per-channel-peer"`` every mesh peer
 *   is its own OpenClaw session; the SDK's ``deliver`` callback collects the turn's replies;
 * - ``outbound.attachedResults.sendText`` is what the agent's ``message`` tool uses to start a
 *   conversation with a peer (a CHAT to ``nxs.chat.<instance>.<agent>``).
 */
import { createChannelPluginBase, createChatChannelPlugin, defineChannelPluginEntry } from "openclaw/plugin-sdk/channel-core";
import { dispatchInboundDirectDmWithRuntime } from "openclaw/plugin-sdk/channel-inbound";
import { NxsChannel, type Inbound } from "./channel.js";
import { resolveAccountConfig, type AccountConfig } from "./config.js";
import { registerTools } from "./agent-tools.js";

export const CHANNEL_ID = "nxs";

type Cfg = { channels?: Record<string, unknown> } & Record<string, unknown>;
interface ResolvedAccount { accountId: string; config?: AccountConfig; error?: string; allowFrom: string[] }

// OpenClaw may evaluate this module more than once in one gateway (the channel runtime and the tool
// catalog are separate registrations), so the running accounts live in one process-wide map.
const RUNNING = Symbol.for("nxs-mesh.openclaw.running");
const running: Map<string, NxsChannel> = ((globalThis as Record<symbol, unknown>)[RUNNING] ??= new Map()) as Map<string, NxsChannel>;
let runtime: unknown;

function accounts(cfg: Cfg): Record<string, unknown> {
  const section = cfg.channels?.[CHANNEL_ID] as { accounts?: Record<string, unknown> } | undefined;
  return section?.accounts ?? {};
}

function resolveAccount(cfg: Cfg, accountId?: string | null): ResolvedAccount {
  const id = accountId ?? Object.keys(accounts(cfg))[0] ?? "default";
  try {
    const config = resolveAccountConfig(id, accounts(cfg)[id]);
    return { accountId: id, config, allowFrom: config.allowFrom };
  } catch (err) {
    return { accountId: id, error: (err as Error).message, allowFrom: [] };
  }
}

interface GatewayCtx {
  cfg: Cfg; accountId: string; account: ResolvedAccount; abortSignal: AbortSignal;
  log?: { info?: (m: string) => void; warn?: (m: string) => void; error?: (m: string) => void };
}

/** One inbound CHAT handed to OpenClaw: a DM from peer ``instance/agent``; resolves when the turn is done. */
function dispatcher(ctx: GatewayCtx, cfg: AccountConfig) {
  return async (msg: Inbound, deliver: (text: string) => Promise<void>): Promise<void> => {
    let failure: unknown;
    await dispatchInboundDirectDmWithRuntime({
      cfg: ctx.cfg as never, runtime: runtime as never, channel: CHANNEL_ID, channelLabel: "nxs mesh", accountId: ctx.accountId,
      peer: { kind: "direct", id: msg.peer }, senderId: msg.peer, senderAddress: `nxs:${msg.peer}`,
      recipientAddress: `nxs:${cfg.instanceId}/${cfg.agentId}`, conversationLabel: `mesh agent ${msg.peer}`,
      rawBody: msg.text, messageId: msg.messageId, timestamp: msg.timestamp,
      commandAuthorized: false, inboundAccessAuthorized: true, // the sender passed the channel's allowlist
      deliver: async (payload: { text?: string }) => { if (payload.text?.trim()) await deliver(payload.text); },
      onRecordError: (err: unknown) => ctx.log?.error?.(`nxs: recording ${msg.messageId} failed: ${String(err)}`),
      onDispatchError: (err: unknown) => { failure ??= err; },
    });
    if (failure !== undefined) throw failure; // not acked: redelivered
  };
}

async function startAccount(ctx: GatewayCtx): Promise<void> {
  const { config, error } = ctx.account;
  if (!config) throw new Error(error ?? `channels.nxs.accounts.${ctx.accountId} is not configured`);
  const log = { info: (m: string) => ctx.log?.info?.(m), warn: (m: string) => ctx.log?.warn?.(m) };
  const channel = await NxsChannel.start(config, dispatcher(ctx, config), log);
  running.set(ctx.accountId, channel);
  log.info(`nxs: ${config.instanceId}/${config.agentId} consuming ${channel.link.filters().join(", ")}`);
  const aborted = new Promise<void>((done) => {
    if (ctx.abortSignal.aborted) done();
    ctx.abortSignal.addEventListener("abort", () => done(), { once: true });
  });
  const ended = channel.done.then(() => "ended", (err: unknown) => `failed: ${String(err)}`);
  const outcome = await Promise.race([aborted.then(() => "aborted"), ended]);
  running.delete(ctx.accountId);
  await channel.stop(); // drain: turns in flight finish and are acked
  // A consumer that ended by itself fails the account, so the gateway reports (and restarts) it.
  if (outcome !== "aborted") throw new Error(`nxs: ${config.instanceId}/${config.agentId} consumer ${outcome}`);
}

function channelFor(accountId?: string | null): NxsChannel {
  const ch = accountId ? running.get(accountId) : running.values().next().value;
  if (!ch) throw new Error(`nxs: account ${accountId ?? "(any)"} is not running`);
  return ch;
}

const configAdapter = {
  listAccountIds: (cfg: Cfg) => Object.keys(accounts(cfg)),
  resolveAccount,
  inspectAccount: (cfg: Cfg, accountId?: string | null) => {
    const a = resolveAccount(cfg, accountId);
    return { enabled: a.config !== undefined, configured: a.config !== undefined, ...(a.error ? { error: a.error } : {}) };
  },
  isConfigured: (account: ResolvedAccount) => account.config !== undefined,
  unconfiguredReason: (account: ResolvedAccount) => account.error ?? "not configured",
};

export const nxsChannelPlugin = createChatChannelPlugin<ResolvedAccount>({
  base: {
    ...createChannelPluginBase<ResolvedAccount>({
      id: CHANNEL_ID,
      meta: { label: "nxs mesh", selectionLabel: "nxs mesh (NATS JetStream)", blurb: "Talk to agents on an nxs-mesh over NATS JetStream.", docsPath: "/channels/nxs" },
      config: configAdapter,
    }),
    config: configAdapter,
    gateway: { startAccount },
  },
  outbound: {
    base: { deliveryMode: "direct" },
    attachedResults: {
      channel: CHANNEL_ID,
      sendText: async (params: { to: string; text: string; accountId?: string | null }) => {
        const to = params.to.replace(/^nxs:/, "");
        return { messageId: await channelFor(params.accountId).sendText(to, params.text) };
      },
    },
  },
});

export default defineChannelPluginEntry({
  id: CHANNEL_ID,
  name: "nxs mesh",
  description: "nxs-mesh channel: mesh CHAT in, RESULT/CHAT out over NATS JetStream, and tools to delegate to mesh agents",
  plugin: nxsChannelPlugin,
  setRuntime: (r: unknown) => { runtime = r; },
  registerFull: (api: unknown) => registerTools(api as never, channelFor),
});
