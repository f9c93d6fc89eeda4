/**
 * The agent tools (see ``tools.ts`` for what they send): registered with ``api.registerTool`` and
 * declared in openclaw.plugin.json ``contracts.tools``. Parameters are plain JSON Schema.
 */
import type { NxsChannel } from "./channel.js";
import { delegate, handoff, submitTask, type DelegateArgs, type HandoffArgs, type TaskArgs } from "./tools.js";

interface ToolApi {
  registerTool(tool: {
    name: string; description: string; parameters: Record<string, unknown>;
    execute(id: string, params: Record<string, unknown>): Promise<{ content: { type: "text"; text: string }[]; details: unknown }>;
  }): void;
}

const text = (value: unknown) => ({ content: [{ type: "text" as const, text: typeof value === "string" ? value : JSON.stringify(value) }], details: value });
const common = {
  timeoutSeconds: { type: "number", description: "how long to wait for the RESULT (default 60)" },
  account: { type: "string", description: "which channels.nxs account to send from (default: the first running)" },
};

type Run = (ch: NxsChannel, params: Record<string, unknown>) => Promise<unknown>;

export function registerTools(api: ToolApi, channelFor: (account?: string | null) => NxsChannel): void {
  /** One tool: JSON Schema parameters (plus timeoutSeconds and account), run against the chosen account. */
  const meshTool = (name: string, description: string, required: string[], properties: Record<string, unknown>, run: Run) =>
    api.registerTool({
      name, description,
      parameters: { type: "object", additionalProperties: false, required, properties: { ...properties, ...common } },
      execute: async (_id, p) => text(await run(channelFor(p.account as string | undefined), p)),
    });
  meshTool("nxs_delegate", "Ask another agent on the nxs mesh to run a command and wait for its answer (a COMMAND and its RESULT).",
    ["instance", "command"], {
      instance: { type: "string", description: "the mesh node (instance id) that runs the agent" },
      agent: { type: "string", description: "the agent id on that node (default: any)" },
      command: { type: "string", description: "the command name the node registered" },
      args: { description: "the command's arguments (any JSON)" },
    }, (ch, p) => delegate(ch.link, p as unknown as DelegateArgs));
  meshTool("nxs_task", "Give a task to whichever mesh node has a capability, and wait for its result (a TASK and its RESULT).",
    ["capability"], {
      capability: { type: "string", description: "the capability a node must have (e.g. resize)" },
      payload: { description: "the task's input (any JSON)" },
    }, (ch, p) => submitTask(ch.link, p as unknown as TaskArgs));
  meshTool("nxs_handoff", "Hand a conversation (a mesh agent, with its context) off to another node, and wait until the new owner says it is ready.",
    ["agent", "to"], {
      agent: { type: "string", description: "the agent id to move (e.g. agent:research)" },
      to: { type: "string", description: "the node (instance id) that takes it over" },
      context: { description: "the context to hand over (any JSON; default: what the current owner packages)" },
      via: { type: "string", description: "the node that runs the handoff (default: the agent's current owner, from the registry)" },
    }, (ch, p) => handoff(ch.link, p as unknown as HandoffArgs));
}
