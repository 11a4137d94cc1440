import { EventEmitter } from "node:events";
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import type { BfdAgentEvents, BfdPeerConfig, BfdPeerStatus, BfdSessions, BfdStateChange } from "./agent.js";
import { BfdAgentError } from "./agent.js";
import type { ApplyCommit, FailoverWriterOptions } from "../../../dataplane/node-health.js";
import type { InstanceHealth } from "../../../planner/model.js";
import type { ProbedInstance, VerdictChange } from "../monitor.js";

/** The worker's options: plain data, it crosses the thread boundary. */
export interface BfdThreadOptions {
  localAddress: string;
  port?: number;
  /** The parent's logger bindings and level; the worker logs to stderr as the parent does. */
  log?: { name?: string; level: string; bindings: Record<string, unknown> };
  /**
   * The node's health on this thread too (`src/agents/health/thread.ts`): verdicts (HealthMonitor)
   * and failovers written to the node's table from here (FailoverWriter).
   */
  failover?: FailoverWriterOptions & {
    /** Run the failover's commands in this named network namespace (lab tests; the agent: its own). */
    netns?: string;
  };
}

/** Parent -> worker. */
export type BfdThreadRequest =
  | { id: number; op: "addPeer"; cfg: BfdPeerConfig }
  | { id: number; op: "removePeer"; peer: string }
  | { id: number; op: "statuses" }
  | { id: number; op: "stop" }
  | { id: number; op: "setInstances"; instances: readonly ProbedInstance[] }
  | { id: number; op: "commitApply"; req: ApplyCommit };

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** Worker -> parent. */
export type BfdThreadMessage =
  | { kind: "started" }
  | { kind: "change"; change: BfdStateChange }
  | { kind: "verdict"; change: VerdictChange; view: [string, InstanceHealth][] }
  | { kind: "reply"; id: number; error?: string; value?: unknown };

/**
 * A BFD agent on a thread of its own (`thread-main.ts`). BFD's 100 ms timers must not wait for
 * the node agent's event loop: a relist after an API server restart, or planning 10,000 pods,
 * can hold that loop for longer than a detection time. Then the node stops sending, every
 * gateway times it out and answers Down, and the node fails every instance at once (seen in
 * the lab: a 5 s fail-closed outage after an API server restart). On its own thread the
 * sessions keep their timing whatever the reconcile does.
 */
export class BfdThread extends EventEmitter<BfdAgentEvents> implements BfdSessions {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private exited = false;
  private readonly ready: Promise<void>;

  constructor(opts: BfdThreadOptions, logger?: Logger) {
    super();
    // From source (tests, tsx) the worker's entry is TypeScript and needs tsx's loader.
    const fromSource = import.meta.url.endsWith(".ts");
    this.worker = new Worker(new URL(fromSource ? "./thread-main.ts" : "./thread-main.js", import.meta.url), {
      workerData: opts,
      execArgv: fromSource ? ["--import", "tsx"] : [],
    });
    this.ready = new Promise((resolve, reject) => {
      this.worker.on("message", (m: BfdThreadMessage) => {
        if (m.kind === "started") resolve();
        else if (m.kind === "change") this.emit("change", m.change);
        else if (m.kind === "reply") this.settle(m.id, m.error, m.value);
        else this.received(m);
      });
      this.worker.once("error", (e) => {
        logger?.error({ err: e.message }, "BFD thread failed");
        reject(new BfdAgentError("the BFD thread failed", { cause: e }));
      });
    });
    this.ready.catch(() => undefined);
    this.worker.once("exit", (code) => {
      this.exited = true;
      for (const id of [...this.pending.keys()]) this.settle(id, `the BFD thread exited (${code})`);
    });
  }

  /** Resolves once the worker's receive socket listens. */
  start(): Promise<void> {
    return this.ready;
  }

  async addPeer(cfg: BfdPeerConfig): Promise<void> {
    await this.request({ op: "addPeer", cfg });
  }

  async removePeer(peer: string): Promise<void> {
    await this.request({ op: "removePeer", peer });
  }

  /** Every session's state and timers (for metrics). */
  async statuses(): Promise<BfdPeerStatus[]> {
    return (await this.request({ op: "statuses" })) as BfdPeerStatus[];
  }

  /** AdminDown to every peer, then the thread ends. */
  async stop(): Promise<void> {
    if (this.exited) return;
    await this.request({ op: "stop" }).catch(() => undefined);
    await this.worker.terminate();
  }

  /** Messages of the health mode (`failover`): for the subclass. */
  protected received(_m: Extract<BfdThreadMessage, { kind: "verdict" }>): void {}

  protected request(r: DistributiveOmit<BfdThreadRequest, "id">): Promise<unknown> {
    if (this.exited) return Promise.reject(new BfdAgentError("the BFD thread has exited"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...r, id } as BfdThreadRequest);
    });
  }

  private settle(id: number, error: string | undefined, value?: unknown): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (error === undefined) p.resolve(value);
    else p.reject(new BfdAgentError(error));
  }
}
