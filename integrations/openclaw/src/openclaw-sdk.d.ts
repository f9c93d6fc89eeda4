// The few OpenClaw plugin-SDK entry points this plugin calls, declared loosely so the package builds
// without installing openclaw (~650 MB); the gateway supplies the real modules at load time, and
// tests/test_openclaw_gateway.py type-checks src/ against the real SDK types (tsconfig.openclaw.json).
declare module "openclaw/plugin-sdk/channel-core" {
  export function defineChannelPluginEntry(options: Record<string, unknown>): unknown;
  export function createChatChannelPlugin<T>(params: Record<string, unknown>): unknown;
  export function createChannelPluginBase<T>(params: Record<string, unknown>): Record<string, unknown>;
}
declare module "openclaw/plugin-sdk/channel-inbound" {
  export function dispatchInboundDirectDmWithRuntime(params: Record<string, unknown>): Promise<unknown>;
}
