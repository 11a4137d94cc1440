import type { BfdStateChange } from "./bfd/agent.js";
import type { BfdSessions } from "./bfd/agent.js";
import type { HealthView, InstanceHealth } from "../../planner/model.js";
import type { Logger } from "../../util/log.js";
import type { Clock } from "../../util/clock.js";

/** A gateway instance this node probes, with its gateway's health timing. */
export interface ProbedInstance {
  key: string;
  address: string;
  intervalMs: number;
  multiplier: number;
  holdDownMs: number;
}

/** What happened to an instance's verdict, for metrics and logs. */
export interface VerdictChange {
  key: string;
  from: InstanceHealth | "unknown";
  to: InstanceHealth;
  at: number;
}

interface Tracked {
  instance: ProbedInstance;
  verdict: InstanceHealth | "unknown";
  bfdUp: boolean;
  /** Hold-down damps flapping; an instance that was never up has nothing to damp. */
  everUp: boolean;
  holdTimer: NodeJS.Timeout | undefined;
  graceTimer: NodeJS.Timeout | undefined;
}

/**
 * Turns BFD session states into the node's view of instance health, with two rules that the
 * raw session does not have:
 * - an instance that went down is trusted again only after it stayed up for `holdDownMs`
 *   (a flapping gateway cannot make traffic oscillate faster than that);
 * - a session of the first plan that never came up is judged down after a grace period, but
 *   until then the instance is "unknown", which plans like "up": a restarting agent keeps
 *   forwarding as before;
 * - an instance that appears later (a new or replaced gateway host) is "down" until its session
 *   comes up: a droplet that is running but still installing its agent gets no traffic.
 */
export class HealthMonitor {
  private readonly tracked = new Map<string, Tracked>();
  private readonly byAddress = new Map<string, string>();
  private readonly listeners: (() => void)[] = [];
  private readonly verdictListeners: ((c: VerdictChange) => void)[] = [];
  /** The first plan's instances have been set up (later ones start "down"). */
  private started = false;

  constructor(
    private readonly bfd: BfdSessions,
    private readonly logger: Logger,
    /** BFD must send at 1/s until a session is Up (RFC 5880 §6.8.3): set-up takes 1-3 s. */
    private readonly graceMs = 5_000,
    private readonly now: Clock["now"] = Date.now,
  ) {
    bfd.on("change", (c) => this.onBfd(c));
  }

  /** Keeps one BFD session per instance address; called with every new plan's instances. */
  async setInstances(instances: readonly ProbedInstance[]): Promise<void> {
    const wanted = new Map(instances.map((i) => [i.key, i]));
    for (const [key, t] of this.tracked) {
      const next = wanted.get(key);
      if (
        next &&
        next.address === t.instance.address &&
        next.intervalMs === t.instance.intervalMs &&
        next.multiplier === t.instance.multiplier
      ) {
        t.instance = next;
        continue;
      }
      this.forget(key);
      await this.bfd.removePeer(t.instance.address);
    }
    for (const inst of instances) {
      if (this.tracked.has(inst.key)) continue;
      if (this.byAddress.has(inst.address)) continue; // two instances on one host share a session
      const t: Tracked = {
        instance: inst,
        verdict: this.started ? "down" : "unknown",
        bfdUp: false,
        everUp: false,
        holdTimer: undefined,
        graceTimer: undefined,
      };
      this.tracked.set(inst.key, t);
      this.byAddress.set(inst.address, inst.key);
      if (!this.started) {
        t.graceTimer = setTimeout(() => {
          if (!t.bfdUp && t.verdict === "unknown") this.setVerdict(t, "down");
        }, this.graceMs);
      }
      await this.bfd.addPeer({
        peer: inst.address,
        desiredMinTxMs: inst.intervalMs,
        requiredMinRxMs: inst.intervalMs,
        detectMultiplier: inst.multiplier,
      });
    }
    this.started = true;
  }

  private forget(key: string): void {
    const t = this.tracked.get(key);
    if (!t) return;
    clearTimeout(t.holdTimer);
    clearTimeout(t.graceTimer);
    this.tracked.delete(key);
    this.byAddress.delete(t.instance.address);
  }

  private onBfd(c: BfdStateChange): void {
    const key = this.byAddress.get(c.peer);
    const t = key ? this.tracked.get(key) : undefined;
    if (!t) return;
    const up = c.to === "Up";
    if (up === t.bfdUp) return;
    t.bfdUp = up;
    clearTimeout(t.holdTimer);
    t.holdTimer = undefined;
    if (!up) {
      this.setVerdict(t, "down");
      return;
    }
    if (t.verdict === "down" && t.everUp && t.instance.holdDownMs > 0) {
      t.holdTimer = setTimeout(() => {
        if (t.bfdUp) this.setVerdict(t, "up");
      }, t.instance.holdDownMs);
      this.logger.info(
        { instance: t.instance.key, holdDownMs: t.instance.holdDownMs },
        "instance is back; holding it down before use",
      );
      return;
    }
    this.setVerdict(t, "up");
  }

  private setVerdict(t: Tracked, to: InstanceHealth): void {
    if (t.verdict === to) return;
    const change: VerdictChange = { key: t.instance.key, from: t.verdict, to, at: this.now() };
    t.verdict = to;
    if (to === "up") t.everUp = true;
    this.logger.info(change, to === "down" ? "gateway instance down" : "gateway instance up");
    for (const l of this.verdictListeners) l(change);
    for (const l of this.listeners) l();
  }

  view(): HealthView {
    const out = new Map<string, InstanceHealth>();
    for (const [key, t] of this.tracked) if (t.verdict !== "unknown") out.set(key, t.verdict);
    return out;
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  onVerdict(listener: (c: VerdictChange) => void): void {
    this.verdictListeners.push(listener);
  }

  stop(): void {
    for (const key of [...this.tracked.keys()]) this.forget(key);
  }
}
