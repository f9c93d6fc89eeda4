// A gateway that dies (SIGKILL, no cleanup) the moment a message reaches its dispatch: the message was
// delivered but never handed over nor acked. Prints "consuming" once its consumer is bound.
import { NxsChannel } from "../dist/channel.js";

const cfg = JSON.parse(process.argv[2]);
await NxsChannel.start(cfg, async () => {
  process.kill(process.pid, "SIGKILL");
  await new Promise(() => {}); // never resolves: the process is gone
}, { info() {}, warn() {} });
process.stdout.write("consuming\n");
