import { describe, expect, it } from "vitest";
import { BfdAgent, BfdAgentError, type BfdClock, type BfdStateChange } from "./agent.js";
import { BfdDiag, encodeControlPacket } from "./packet.js";
import { controlPacket } from "./testing/packets.js";
import type { BfdDatagram, BfdSessionSocket, BfdTransport } from "./transport.js";

class FakeClock implements BfdClock {
  t = 1_000_000;
  private nextId = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.t;
  }
  setTimer(fn: () => void, delayMs: number): unknown {
    const id = ++this.nextId;
    this.timers.set(id, { at: this.t + delayMs, fn });
    return id;
  }
  clearTimer(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let first: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.timers) if (entry[1].at <= end && (!first || entry[1].at < first[1].at)) first = entry;
      if (!first) break;
      this.timers.delete(first[0]);
      this.t = first[1].at;
      first[1].fn();
    }
    this.t = end;
  }
}

/** Delivers datagrams between in-memory transports after `delayMs`, unless the link is cut. */
class FakeNetwork {
  cut = false;
  private readonly listeners = new Map<string, (d: BfdDatagram) => void>();
  private nextPort = 49152;
  constructor(
    private readonly clock: FakeClock,
    private readonly delayMs = 1,
  ) {}

  /** Sends a raw datagram to `to` as if it came from `from`. */
  inject(to: string, from: string, data: Buffer): void {
    this.listeners.get(to)?.({ data, address: from, port: 50000 });
  }

  transport(address: string): BfdTransport {
    return {
      listen: async (onDatagram) => {
        this.listeners.set(address, onDatagram);
      },
      openSessionSocket: async (local): Promise<BfdSessionSocket> => {
        const port = this.nextPort++;
        return {
          localAddress: local,
          localPort: port,
          send: async (data, peer) => {
            if (this.cut) return;
            const copy = Buffer.from(data);
            this.clock.setTimer(() => this.listeners.get(peer)?.({ data: copy, address: local, port }), this.delayMs);
          },
          close: async () => undefined,
        };
      },
      close: async () => {
        this.listeners.delete(address);
      },
    };
  }
}

const A = "10.0.0.1";
const B = "10.0.0.2";

async function twoAgents(opts: { passiveB?: boolean; rttProbeIntervalMs?: number } = {}) {
  const clock = new FakeClock();
  const net = new FakeNetwork(clock);
  let discr = 100;
  const make = (address: string) =>
    new BfdAgent({
      localAddress: address,
      clock,
      transport: net.transport(address),
      random: () => 0.5,
      newDiscriminator: () => ++discr,
    });
  const a = make(A);
  const b = make(B);
  const changes: Record<"a" | "b", BfdStateChange[]> = { a: [], b: [] };
  a.on("change", (c) => changes.a.push(c));
  b.on("change", (c) => changes.b.push(c));
  await a.start();
  await b.start();
  await a.addPeer({ peer: B, ...(opts.rttProbeIntervalMs ? { rttProbeIntervalMs: opts.rttProbeIntervalMs } : {}) });
  await b.addPeer({ peer: A, passive: opts.passiveB ?? false });
  return { clock, net, a, b, changes };
}

describe("BfdAgent over an in-memory network", () => {
  it("brings an active and a passive side Up and reports it", async () => {
    const { clock, a, b, changes } = await twoAgents({ passiveB: true });
    clock.advance(3000);
    expect(a.state(B)).toBe("Up");
    expect(b.state(A)).toBe("Up");
    expect(changes.a.at(-1)).toMatchObject({ peer: B, to: "Up", diag: 0, diagName: "none" });
    expect(changes.b.at(-1)).toMatchObject({ peer: A, to: "Up" });
    const status = a.status(B);
    expect(status).toMatchObject({
      peer: B,
      local: A,
      state: "Up",
      remoteState: "Up",
      upTransitions: 1,
      downTransitions: 0,
      txIntervalMs: 100,
      detectionTimeMs: 300,
      lastRttMs: 2, // one Poll (on going Up), 1 ms each way
      passive: false,
    });
    expect(status.localPort).toBeGreaterThanOrEqual(49152);
    expect(status.lastChangeAt).toBe(changes.a.at(-1)!.at);
    expect(a.statuses()).toHaveLength(1);
  });

  it("detects a cut link on both sides with diag control-detection-time-expired", async () => {
    const { clock, net, a, b, changes } = await twoAgents();
    clock.advance(3000);
    net.cut = true;
    const cutAt = clock.now();
    clock.advance(1000);
    for (const [agent, peer, log] of [
      [a, B, changes.a],
      [b, A, changes.b],
    ] as const) {
      expect(agent.state(peer)).toBe("Down");
      const down = log.find((c) => c.from === "Up" && c.to === "Down");
      expect(down).toMatchObject({
        diag: BfdDiag.ControlDetectionTimeExpired,
        diagName: "control-detection-time-expired",
      });
      expect(down!.at - cutAt).toBeLessThanOrEqual(300);
      expect(agent.status(peer).downTransitions).toBe(1);
    }
    net.cut = false;
    clock.advance(4000);
    expect(a.state(B)).toBe("Up");
    expect(b.state(A)).toBe("Up");
  });

  it("a graceful stop tells the peer (AdminDown -> neighbor signaled down)", async () => {
    const { clock, a, b, changes } = await twoAgents();
    clock.advance(3000);
    const stopping = b.stop();
    clock.advance(10);
    await stopping;
    expect(changes.b.at(-1)).toMatchObject({ from: "Up", to: "AdminDown", diag: BfdDiag.AdministrativelyDown });
    expect(a.state(B)).toBe("Down");
    expect(changes.a.at(-1)).toMatchObject({ from: "Up", to: "Down", diag: BfdDiag.NeighborSignaledSessionDown });
  });

  it("removePeer signals AdminDown and forgets the session", async () => {
    const { clock, a, b } = await twoAgents();
    clock.advance(3000);
    await a.removePeer(B);
    clock.advance(10);
    expect(b.state(A)).toBe("Down");
    expect(() => a.state(B)).toThrow(BfdAgentError);
    expect(a.statuses()).toEqual([]);
    clock.advance(5000);
    expect(b.state(A)).toBe("Down"); // nothing answers any more
  });

  it("admin down / up of one peer", async () => {
    const { clock, a, b } = await twoAgents();
    clock.advance(3000);
    a.adminDown(B);
    clock.advance(2000);
    expect(a.state(B)).toBe("AdminDown");
    expect(b.state(A)).toBe("Down");
    a.adminUp(B);
    clock.advance(4000);
    expect(a.state(B)).toBe("Up");
    expect(b.state(A)).toBe("Up");
  });

  it("changes timers with a Poll Sequence and keeps the session Up", async () => {
    const { clock, a, b } = await twoAgents();
    clock.advance(3000);
    a.setPeerTimers(B, { desiredMinTxMs: 250, requiredMinRxMs: 250 });
    clock.advance(1000);
    expect(a.status(B)).toMatchObject({ state: "Up", pollInProgress: false, txIntervalMs: 250 });
    expect(b.status(A)).toMatchObject({ state: "Up", txIntervalMs: 250, detectionTimeMs: 750 });
  });

  it("samples the RTT again with periodic probes when asked to", async () => {
    const { clock, a } = await twoAgents({ rttProbeIntervalMs: 500 });
    clock.advance(3000);
    const first = a.status(B).packetsSent;
    clock.advance(2000);
    expect(a.status(B).lastRttMs).toBe(2);
    expect(a.status(B).packetsSent).toBeGreaterThan(first);
  });

  it("demultiplexes: garbage, unknown peers and a foreign discriminator are dropped", async () => {
    const { clock, net, a } = await twoAgents();
    clock.advance(3000);
    const before = a.status(B).packetsReceived;
    net.inject(A, B, Buffer.from("not bfd"));
    const stranger = encodeControlPacket(controlPacket({ myDiscriminator: 5 }));
    net.inject(A, "10.0.0.99", stranger);
    // Right discriminator, wrong source address: must not touch the session (it would go Down).
    const spoofed = Buffer.from(stranger);
    spoofed.writeUInt32BE(a.status(B).localDiscriminator, 8);
    net.inject(A, "10.0.0.99", spoofed);
    expect(a.counters()).toEqual({ invalidPackets: 1, unmatchedPackets: 2 });
    expect(a.state(B)).toBe("Up");
    expect(a.status(B).packetsReceived).toBe(before);
  });

  it("refuses bad peers", async () => {
    const { a } = await twoAgents();
    await expect(a.addPeer({ peer: B })).rejects.toThrow(/already has a BFD session/);
    await expect(a.addPeer({ peer: "gateway-1" })).rejects.toThrow(BfdAgentError);
    await expect(a.addPeer({ peer: "10.0.0.3", detectMultiplier: 0 })).rejects.toThrow(/detectMultiplier/);
    expect(() => new BfdAgent({ localAddress: "nope" })).toThrow(/localAddress/);
  });

  it("sessions added before start() begin when it starts", async () => {
    const clock = new FakeClock();
    const net = new FakeNetwork(clock);
    const a = new BfdAgent({ localAddress: A, clock, transport: net.transport(A) });
    const b = new BfdAgent({ localAddress: B, clock, transport: net.transport(B) });
    await a.addPeer({ peer: B });
    await b.addPeer({ peer: A });
    clock.advance(5000);
    expect(a.status(B)).toMatchObject({ state: "Down", packetsSent: 0, localPort: null });
    await a.start();
    await b.start();
    clock.advance(3000);
    expect(a.state(B)).toBe("Up");
    await a.stop();
    await b.stop();
  });
});
