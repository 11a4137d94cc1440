import { dirname, join } from "node:path";
import type { CommandRunner } from "../../src/util/exec.js";
import { countDivert } from "../lib/netns.js";
import { round } from "../lib/stats.js";
import { bundledEntry } from "./bundled-entry.js";
import { BenchChild } from "./child.js";
import { wallClockMs, type ChildEvent } from "./child-io.js";

const TABLE = "static_egress";

class FirstDatapathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FirstDatapathError";
  }
}

/** A node agent child from process start to its first complete datapath, checked in the kernel. */
export interface AgentStart {
  agent: BenchChild;
  spawnedAt: number;
  loaded: ChildEvent;
  /** Informers synced (`agent.start()` returned). */
  started: ChildEvent;
  /** The first apply holding exactly the expected pod addresses. */
  firstApplied: ChildEvent;
  /** Applies of plans made from a partly listed cache, before the complete one. */
  premature: { msAfterStart: number; entries: unknown; instances: unknown; pods: number }[];
  /** Positive: the agent's first reconcile began while its informers were still listing. */
  firstReconcileStartedMsBeforeSynced: number | null;
  /** Elements in the kernel's divert map after the first complete apply (equal to the plan's). */
  kernelElements: number;
}

/**
 * Starts `bench/scale/node-agent-main.ts` (bundled as the CLI is) for one node (its datapath in `netns`) and waits for
 * the first apply that holds exactly `expectedIPs`; the kernel's divert map must then hold the
 * plan's elements, or this fails.
 */
export async function startNodeAgent(o: {
  root: string;
  name?: string;
  kubeconfig: string;
  node: string;
  netns: string;
  runner: CommandRunner;
  expectedIPs: readonly string[];
  logPath: string;
  nodeArgs?: readonly string[];
  env?: Record<string, string>;
  /** Registered as soon as it is spawned (cleanup kills it on failure). */
  onSpawn?: (child: BenchChild) => void;
}): Promise<AgentStart> {
  // Loaded as the CLI is (one bundled file, scripts/bundle.ts), not as ~1,500 modules.
  const entry = await bundledEntry(join(o.root, "bench", "scale", "node-agent-main.ts"), dirname(o.logPath));
  const spawnedAt = wallClockMs();
  const agent = new BenchChild(
    o.name ?? "node-agent",
    entry,
    ["--kubeconfig", o.kubeconfig, "--node", o.node, "--netns", o.netns],
    {
      cwd: o.root,
      logPath: o.logPath,
      bundled: true,
      ...(o.nodeArgs ? { nodeArgs: o.nodeArgs } : {}),
      ...(o.env ? { env: o.env } : {}),
    },
  );
  o.onSpawn?.(agent);
  const loaded = await agent.waitForEvent((e) => e.ev === "loaded", 120_000, "loaded");
  const started = await agent.waitForEvent((e) => e.ev === "started", 300_000, "informers synced");
  // The first apply that holds exactly the pods the fixture selects on this node (an agent
  // may apply earlier, with what it had listed so far: recorded as premature applies).
  const expected = JSON.stringify(o.expectedIPs);
  const sameIPs = (e: ChildEvent) => JSON.stringify(e.podIPs) === expected;
  // A reconcile that fails (and would retry for ever) ends the run with its error.
  const deadline = Date.now() + 120_000;
  let firstApplied: ChildEvent | undefined;
  while (!firstApplied) {
    const failure = agent.logs.find((l) => l.msg === "reconcile failed");
    if (failure) throw new FirstDatapathError(`${agent.name}: reconcile failed: ${String(failure.err)}`);
    firstApplied = await agent
      .waitForEvent((e) => e.ev === "applied" && sameIPs(e), Math.min(1_000, deadline - Date.now()), "first apply")
      .catch((e: unknown) => {
        if (Date.now() >= deadline) throw e;
        return undefined;
      });
  }
  const premature = agent.events
    .filter((e) => e.ev === "applied" && e.t < firstApplied.t && !sameIPs(e))
    .map((e) => ({
      msAfterStart: round(e.t - spawnedAt),
      entries: e.entries,
      instances: e.instances,
      pods: (e.podIPs as string[]).length,
    }));
  // When did that first reconcile start? Its log line says how long it took (pino time ~ its end).
  const firstLog = agent.logs.find((l) => l.msg === "datapath programmed" && typeof l.durationMs === "number");
  const firstReconcileStartedMsBeforeSynced = firstLog
    ? round(started.t - (Number(firstLog.time) - Number(firstLog.durationMs)))
    : null;
  const kernelElements = await countDivert(o.runner, TABLE);
  if (kernelElements !== firstApplied.entries)
    throw new FirstDatapathError(
      `kernel divert map holds ${kernelElements} elements, the plan ${String(firstApplied.entries)}`,
    );
  return {
    agent,
    spawnedAt,
    loaded,
    started,
    firstApplied,
    premature,
    firstReconcileStartedMsBeforeSynced,
    kernelElements,
  };
}
