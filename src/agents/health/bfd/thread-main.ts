import { parentPort, workerData } from "node:worker_threads";
import { pino } from "pino";
import { performance } from "node:perf_hooks";
import { BfdAgent } from "./agent.js";
import type { BfdThreadMessage, BfdThreadOptions, BfdThreadRequest } from "./thread.js";
import { HealthMonitor } from "../monitor.js";
import { FailoverWriter } from "../../../dataplane/node-health.js";
import { commandKernel } from "../../../dataplane/kernel.js";
import { inNamespace, localRunner } from "../../../util/exec.js";

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

/**
 * The node's health mode: verdicts made here, and failovers written from here, so that neither
 * waits for the node agent's event loop (a reconcile of 10,000 pods, or parsing their source,
 * holds it for seconds); the agent's thread gets each verdict with the whole view.
 */
const health = opts.failover
  ? (() => {
      const monitor = new HealthMonitor(agent, logger);
      const { netns, ...writerOpts } = opts.failover;
      const kernel = commandKernel(
        netns ? inNamespace(netns) : localRunner,
        writerOpts.nft ? { nft: writerOpts.nft } : {},
      );
      const writer = new FailoverWriter(kernel, writerOpts);
      const failOver = (at: number) => {
        writer.setHealth(monitor.view()).then(
          ({ changed, steps }) => {
            if (changed.length > 0)
              logger.info(
                { instances: changed, ...steps, durationMs: Math.round(performance.now() - at) },
                "failover applied ahead of the reconcile",
              );
          },
          (e: unknown) => logger.warn({ err: messageOf(e) }, "failover ahead of the reconcile failed"),
        );
      };
      monitor.onVerdict((change) => {
        send({ kind: "verdict", change, view: [...monitor.view()] });
        failOver(performance.now());
      });
      return { monitor, writer, failOver };
    })()
  : undefined;

function healthRequest(r: Extract<BfdThreadRequest, { op: "setInstances" | "commitApply" }>): Promise<unknown> {
  if (!health) return Promise.reject(new Error(`${r.op}: this BFD thread has no node health (failover option)`));
  if (r.op === "commitApply") return health.writer.commitApply(r.req);
  const before = JSON.stringify([...health.monitor.view()]);
  return health.monitor.setInstances(r.instances).then(() => {
    const view = [...health.monitor.view()];
    // New instances start down, forgotten ones leave the view: the writer's view follows.
    if (JSON.stringify(view) !== before) health.failOver(performance.now());
    return view;
  });
}

port.on("message", (r: BfdThreadRequest) => {
  const work: Promise<unknown> =
    r.op === "addPeer"
      ? agent.addPeer(r.cfg)
      : r.op === "removePeer"
        ? agent.removePeer(r.peer)
        : r.op === "statuses"
          ? Promise.resolve(agent.statuses())
          : r.op === "stop"
            ? (health?.monitor.stop(), agent.stop())
            : healthRequest(r);
  work.then(
    (value) => send({ kind: "reply", id: r.id, value }),
    (e: unknown) => send({ kind: "reply", id: r.id, error: messageOf(e) }),
  );
});
await agent.start();
send({ kind: "started" });
