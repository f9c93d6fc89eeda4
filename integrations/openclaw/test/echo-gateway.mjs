// A gateway whose agent echoes (the dispatch stand-in), for running the README example against the real
// channel: `node echo-gateway.mjs '<account config JSON>'`; prints "consuming" once bound, stops on SIGTERM.
import { NxsChannel } from "../dist/channel.js";
import { resolveAccountConfig } from "../dist/config.js";

const cfg = resolveAccountConfig("example", JSON.parse(process.argv[2]));
const ch = await NxsChannel.start(cfg, async (msg, deliver) => deliver(`echo from ${cfg.instanceId}: ${msg.text}`),
                                  { info() {}, warn() {} });
process.stdout.write("consuming\n");
process.on("SIGTERM", () => void ch.stop().then(() => process.exit(0)));
