import { EventEmitter } from "node:events";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { pino } from "pino";
import type { BfdStateChange } from "./bfd/agent.js";
import { HealthMonitor, type ProbedInstance } from "./monitor.js";

/** The part of BfdAgent the monitor uses: peers, and state-change events we fire by hand. */
class SessionsStub extends EventEmitter {
  readonly peers = new Set<string>();
  addPeer(p: { peer: string }): Promise<void> {
    this.peers.add(p.peer);
    return Promise.resolve();
  }
  removePeer(peer: string): Promise<void> {
    this.peers.delete(peer);
    return Promise.resolve();
  }
  session(peer: string, to: "Up" | "Down"): void {
    this.emit("change", {
      peer,
      from: to === "Up" ? "Init" : "Up",
      to,
      diag: 0,
      diagName: "",
      at: Date.now(),
    } as unknown as BfdStateChange);
  }
}

const inst = (key: string, address: string): ProbedInstance => ({
  key,
  address,
  intervalMs: 100,
  multiplier: 3,
  holdDownMs: 5_000,
});

describe("HealthMonitor", () => {
  let bfd: SessionsStub;
  let monitor: HealthMonitor;
  beforeEach(() => {
    vi.useFakeTimers();
    bfd = new SessionsStub();
    monitor = new HealthMonitor(bfd, pino({ level: "silent" }), 5_000);
  });
  afterEach(() => vi.useRealTimers());

  it("the first plan's instances plan as up until the grace period ends without a session", async () => {
    await monitor.setInstances([inst("gw/a", "10.0.0.1"), inst("gw/b", "10.0.0.2")]);
    expect(monitor.view().size).toBe(0); // unknown: a restarted agent keeps forwarding as before
    bfd.session("10.0.0.1", "Up");
    expect(monitor.view().get("gw/a")).toBe("up");
    vi.advanceTimersByTime(5_001);
    expect(monitor.view().get("gw/b")).toBe("down");
    expect(monitor.view().get("gw/a")).toBe("up");
  });

  it("an instance that appears later (a replaced droplet) gets no traffic before its session is up", async () => {
    await monitor.setInstances([inst("gw/a", "10.0.0.1")]);
    bfd.session("10.0.0.1", "Up");
    // The droplet behind gw/b is replaced: same name, new address.
    await monitor.setInstances([inst("gw/a", "10.0.0.1"), inst("gw/b", "10.0.0.9")]);
    expect(bfd.peers.has("10.0.0.9")).toBe(true);
    expect(monitor.view().get("gw/b")).toBe("down");
    vi.advanceTimersByTime(60_000);
    expect(monitor.view().get("gw/b")).toBe("down");
    // Its agent answers: used at once (never up before: no hold-down to sit out).
    bfd.session("10.0.0.9", "Up");
    expect(monitor.view().get("gw/b")).toBe("up");
  });

  it("an instance that went down is used again only after the hold-down", async () => {
    await monitor.setInstances([inst("gw/a", "10.0.0.1")]);
    bfd.session("10.0.0.1", "Up");
    bfd.session("10.0.0.1", "Down");
    expect(monitor.view().get("gw/a")).toBe("down");
    bfd.session("10.0.0.1", "Up");
    vi.advanceTimersByTime(4_999);
    expect(monitor.view().get("gw/a")).toBe("down");
    vi.advanceTimersByTime(2);
    expect(monitor.view().get("gw/a")).toBe("up");
  });

  it("a moved instance drops its old session", async () => {
    await monitor.setInstances([inst("gw/a", "10.0.0.1")]);
    await monitor.setInstances([inst("gw/a", "10.0.0.5")]);
    expect([...bfd.peers]).toEqual(["10.0.0.5"]);
  });
});
