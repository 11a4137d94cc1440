import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { BfdAgent, type BfdPeerConfig } from "./agent.js";

/**
 * A one-peer BFD agent as a process, for the lab (run it inside a namespace with
 * `ip netns exec <ns> tsx src/agents/health/bfd/standalone.ts --local A --peer B`).
 *
 * stdout: one JSON object per line: `ready`, `change`, `status`, `stopped`.
 * stdin lines: `status` (print the session status), `admin-down`, `admin-up`, `stop`.
 * SIGTERM / SIGINT / end of stdin: graceful stop (AdminDown to the peer), then exit 0.
 */

export interface StandaloneIo {
  write(line: string): void;
  input: NodeJS.ReadableStream;
}

export function parseStandaloneArgs(argv: readonly string[]): {
  localAddress: string;
  peer: BfdPeerConfig;
  logLevel: string;
} {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      local: { type: "string" },
      peer: { type: "string" },
      interval: { type: "string", default: "100" },
      mult: { type: "string", default: "3" },
      passive: { type: "boolean", default: false },
      "rtt-probe": { type: "string", default: "0" },
      "log-level": { type: "string", default: "silent" },
    },
    strict: true,
  });
  if (!values.local || !values.peer) throw new Error("--local and --peer are required");
  const interval = Number(values.interval);
  return {
    logLevel: values["log-level"],
    localAddress: values.local,
    peer: {
      peer: values.peer,
      local: values.local,
      desiredMinTxMs: interval,
      requiredMinRxMs: interval,
      detectMultiplier: Number(values.mult),
      passive: values.passive,
      rttProbeIntervalMs: Number(values["rtt-probe"]),
    },
  };
}

/** Runs until `stop` / a signal; resolves after the agent stopped. */
export async function runStandaloneBfd(argv: readonly string[], io: StandaloneIo): Promise<void> {
  const { localAddress, peer, logLevel } = parseStandaloneArgs(argv);
  const print = (event: string, body: object): void => io.write(JSON.stringify({ event, ...body }));
  // Logs go to stderr: stdout carries the JSON event lines.
  const logger = pino({ level: logLevel }, pino.destination(2));
  const agent = new BfdAgent({ localAddress, logger });
  agent.on("change", (change) => print("change", change));
  await agent.start();
  await agent.addPeer(peer);
  print("ready", { pid: process.pid, localPort: agent.status(peer.peer).localPort });

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      rl.close();
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
      agent
        .stop()
        .catch((err: unknown) => print("error", { message: String(err) }))
        .finally(() => {
          print("stopped", {});
          resolve();
        });
    };
    const rl = createInterface({ input: io.input });
    rl.on("line", (line) => {
      const command = line.trim();
      if (command === "status") print("status", agent.status(peer.peer));
      else if (command === "admin-down") agent.adminDown(peer.peer);
      else if (command === "admin-up") agent.adminUp(peer.peer);
      else if (command === "stop") stop();
    });
    // The parent went away: do not linger in the namespace.
    rl.on("close", stop);
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  runStandaloneBfd(process.argv.slice(2), {
    write: (line) => process.stdout.write(`${line}\n`),
    input: process.stdin,
  }).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
