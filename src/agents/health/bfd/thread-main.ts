import { parentPort, workerData } from "node:worker_threads";
import { pino } from "pino";
import { BfdAgent } from "./agent.js";
import type { BfdThreadMessage, BfdThreadOptions, BfdThreadRequest } from "./thread.js";

/** An error's message with its causes: only plain data crosses the thread boundary. */
function messageOf(e: unknown): string {
  const parts: string[] = [];
  for (let c: unknown = e; c !== undefined && parts.length < 5; c = (c as { cause?: unknown }).cause)
    parts.push(c instanceof Error ? c.message : String(c));
  return parts.join(": ");
}

/** The BFD thread (thread.ts): one BfdAgent, driven by the parent's requests. */
const opts = workerData as BfdThreadOptions;
const port = parentPort!;
const send = (m: BfdThreadMessage) => port.postMessage(m);
const logger = opts.log
  ? pino({ name: opts.log.name, level: opts.log.level }, pino.destination(2)).child({
      ...opts.log.bindings,
      thread: "bfd",
    })
  : pino({ level: "silent" });
const agent = new BfdAgent({ localAddress: opts.localAddress, ...(opts.port ? { port: opts.port } : {}), logger });
agent.on("change", (change) => send({ kind: "change", change }));
port.on("message", (r: BfdThreadRequest) => {
  const work: Promise<unknown> =
    r.op === "addPeer"
      ? agent.addPeer(r.cfg)
      : r.op === "removePeer"
        ? agent.removePeer(r.peer)
        : r.op === "statuses"
          ? Promise.resolve(agent.statuses())
          : agent.stop();
  work.then(
    (value) => send({ kind: "reply", id: r.id, value }),
    (e: unknown) => send({ kind: "reply", id: r.id, error: messageOf(e) }),
  );
});
await agent.start();
send({ kind: "started" });
