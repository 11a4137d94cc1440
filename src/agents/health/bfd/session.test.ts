import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BfdDiag, type BfdControlPacket, type BfdState } from "./packet.js";
import { controlPacket } from "./testing/packets.js";
import {
  BfdConfigError,
  BfdSession,
  type BfdSessionAction,
  type BfdSessionConfig,
  type BfdSessionInput,
} from "./session.js";

const LOCAL = 0x1111;
const REMOTE = 0x2222;

function session(overrides: Partial<BfdSessionConfig> = {}, at = 0): BfdSession {
  return new BfdSession(
    {
      localDiscriminator: LOCAL,
      desiredMinTxMs: 100,
      requiredMinRxMs: 100,
      detectMultiplier: 3,
      random: () => 0,
      ...overrides,
    },
    at,
  );
}

/** A packet as the peer (discriminator REMOTE) would send it. */
function fromPeer(state: BfdState, patch: Partial<BfdControlPacket> = {}): BfdControlPacket {
  return controlPacket({
    state,
    myDiscriminator: REMOTE,
    yourDiscriminator: state === "Down" || state === "AdminDown" ? 0 : LOCAL,
    desiredMinTxUs: 100_000,
    requiredMinRxUs: 100_000,
    ...patch,
  });
}

const sends = (actions: BfdSessionAction[]): BfdControlPacket[] =>
  actions.flatMap((a) => (a.type === "send" ? [a.packet] : []));
const changes = (actions: BfdSessionAction[]) => actions.flatMap((a) => (a.type === "stateChange" ? [a] : []));

/** Brings a fresh session to `state` by feeding the packets the RFC requires. */
function sessionIn(state: BfdState): BfdSession {
  const s = session();
  if (state === "AdminDown") s.handle({ type: "adminDown", at: 1 });
  if (state === "Init" || state === "Up") s.handle({ type: "packet", at: 1, packet: fromPeer("Down") });
  if (state === "Up") s.handle({ type: "packet", at: 2, packet: fromPeer("Up") });
  expect(s.state).toBe(state);
  return s;
}

describe("BfdSession: state transitions (RFC 5880 §6.2, §6.8.6)", () => {
  const N = BfdDiag.None;
  const NSD = BfdDiag.NeighborSignaledSessionDown;
  const table: Array<[BfdState, BfdState, BfdState, number | null]> = [
    // local,      received,    next,        diag of the change (null: no change)
    ["Down", "AdminDown", "Down", null],
    ["Down", "Down", "Init", N],
    ["Down", "Init", "Up", N],
    ["Down", "Up", "Down", null],
    ["Init", "AdminDown", "Down", NSD],
    ["Init", "Down", "Init", null],
    ["Init", "Init", "Up", N],
    ["Init", "Up", "Up", N],
    ["Up", "AdminDown", "Down", NSD],
    ["Up", "Down", "Down", NSD],
    ["Up", "Init", "Up", null],
    ["Up", "Up", "Up", null],
    ["AdminDown", "AdminDown", "AdminDown", null],
    ["AdminDown", "Down", "AdminDown", null],
    ["AdminDown", "Init", "AdminDown", null],
    ["AdminDown", "Up", "AdminDown", null],
  ];

  it.each(table)("%s + received %s -> %s", (local, received, next, diag) => {
    const s = sessionIn(local);
    const step = s.handle({ type: "packet", at: 10, packet: fromPeer(received) });
    expect(s.state).toBe(next);
    const c = changes(step.actions);
    if (diag === null) expect(c).toEqual([]);
    else expect(c).toEqual([{ type: "stateChange", from: local, to: next, diag, at: 10 }]);
  });

  it("discards a packet addressed to another discriminator", () => {
    const s = sessionIn("Init");
    const step = s.handle({ type: "packet", at: 5, packet: fromPeer("Up", { yourDiscriminator: 999 }) });
    expect(s.state).toBe("Init");
    expect(step.actions).toEqual([{ type: "discard", reason: expect.stringMatching(/not ours/) }]);
    expect(s.snapshot().packetsDiscarded).toBe(1);
  });

  it("rejects invalid configuration with the field name", () => {
    expect(() => session({ localDiscriminator: 0 })).toThrow(/localDiscriminator/);
    expect(() => session({ detectMultiplier: 0 })).toThrow(BfdConfigError);
    expect(() => session({ desiredMinTxMs: 0 })).toThrow(/desiredMinTxMs/);
    expect(() => sessionIn("Up").handle({ type: "setTimers", at: 3, timers: { requiredMinRxMs: -1 } })).toThrow(
      /requiredMinRxMs/,
    );
  });
});

describe("BfdSession: timers (§6.8.3, §6.8.4, §6.8.7)", () => {
  it("advertises at least 1 s DesiredMinTx while not Up and sends at that pace", () => {
    const s = session({ desiredMinTxMs: 50 });
    const first = s.handle({ type: "tick", at: 0 });
    expect(sends(first.actions)).toHaveLength(1);
    expect(sends(first.actions)[0]!.desiredMinTxUs).toBe(1_000_000);
    expect(first.nextTxAt).toBe(1000);
  });

  it("sends at max(local desired TX, remote required RX), reduced by 0–25 % jitter", () => {
    for (const [random, expected] of [
      [0, 400],
      [0.5, 350],
      [0.999_999_9, 300.0001],
    ] as const) {
      const s = session({ random: () => random });
      // The peer's slow desired TX keeps the detection time (3 s) out of the way.
      const peer = { requiredMinRxUs: 400_000, desiredMinTxUs: 1_000_000 };
      s.handle({ type: "packet", at: 0, packet: fromPeer("Down", peer) });
      s.handle({ type: "packet", at: 1, packet: fromPeer("Init", peer) });
      expect(s.state).toBe("Up");
      const step = s.handle({ type: "tick", at: 1000 });
      expect(sends(step.actions)).toHaveLength(1);
      expect(step.nextTxAt! - 1000).toBeCloseTo(expected, 3);
    }
  });

  it("keeps the jitter between 75 % and 90 % when DetectMult is 1", () => {
    for (const [random, expected] of [
      [0, 90],
      [0.999_999_9, 75],
    ] as const) {
      const s = session({ detectMultiplier: 1, random: () => random });
      s.handle({ type: "packet", at: 0, packet: fromPeer("Down", { desiredMinTxUs: 1_000_000 }) });
      s.handle({ type: "packet", at: 1, packet: fromPeer("Init", { desiredMinTxUs: 1_000_000 }) });
      const step = s.handle({ type: "tick", at: 1000 });
      expect(s.state).toBe("Up");
      expect(step.nextTxAt! - 1000).toBeCloseTo(expected, 3);
    }
  });

  it("arms the detection time at remote mult x max(local required RX, remote desired TX)", () => {
    const s = session({ requiredMinRxMs: 100 });
    const step = s.handle({
      type: "packet",
      at: 10,
      packet: fromPeer("Down", { detectMult: 5, desiredMinTxUs: 200_000 }),
    });
    expect(step.detectionAt).toBe(10 + 5 * 200);
    const s2 = session({ requiredMinRxMs: 300 });
    const step2 = s2.handle({
      type: "packet",
      at: 10,
      packet: fromPeer("Down", { detectMult: 2, desiredMinTxUs: 100_000 }),
    });
    expect(step2.detectionAt).toBe(10 + 2 * 300);
  });

  it("goes Down with diag 1 when the detection time passes, and forgets the remote discriminator", () => {
    const s = sessionIn("Up");
    const armed = s.handle({ type: "packet", at: 100, packet: fromPeer("Up") });
    expect(armed.detectionAt).toBe(400);
    expect(changes(s.handle({ type: "tick", at: 399.9 }).actions)).toEqual([]);
    const step = s.handle({ type: "tick", at: 400 });
    expect(changes(step.actions)).toEqual([
      { type: "stateChange", from: "Up", to: "Down", diag: BfdDiag.ControlDetectionTimeExpired, at: 400 },
    ]);
    expect(s.snapshot().remoteDiscriminator).toBe(0);
    expect(s.snapshot().downTransitions).toBe(1);
    expect(step.detectionAt).toBeNull();
    // Back to the slow pace and the 1 s advertisement.
    const next = s.handle({ type: "tick", at: step.nextTxAt! });
    expect(sends(next.actions)[0]).toMatchObject({
      state: "Down",
      diag: 1,
      yourDiscriminator: 0,
      desiredMinTxUs: 1_000_000,
    });
  });

  it("answers a Poll at once with F set and P clear, outside the transmit schedule", () => {
    const s = sessionIn("Up");
    const before = s.handle({ type: "tick", at: 3 });
    const step = s.handle({ type: "packet", at: 4, packet: fromPeer("Up", { poll: true }) });
    expect(sends(step.actions)).toEqual([expect.objectContaining({ final: true, poll: false, state: "Up" })]);
    expect(step.actions.find((a) => a.type === "send")).toMatchObject({ reason: "final" });
    expect(step.nextTxAt).toBe(before.nextTxAt); // the periodic schedule is untouched
  });
});

/**
 * Two sessions wired back to back through a network with a fixed one-way delay, on a
 * discrete-event fake clock.
 */
class Pair {
  now = 0;
  private readonly inflight: Array<{ at: number; to: "a" | "b"; packet: BfdControlPacket }> = [];
  private readonly wake: Record<"a" | "b", number | null>;
  readonly log: Array<{ node: "a" | "b"; action: BfdSessionAction; at: number }> = [];
  /** Return true to lose a packet sent by `from`. */
  drop: (from: "a" | "b", packet: BfdControlPacket, at: number) => boolean = () => false;

  constructor(
    readonly a: BfdSession,
    readonly b: BfdSession,
    readonly delayMs = 1,
  ) {
    this.wake = { a: a.deadlines().wakeAt, b: b.deadlines().wakeAt };
  }

  node(name: "a" | "b"): BfdSession {
    return name === "a" ? this.a : this.b;
  }

  input(name: "a" | "b", input: BfdSessionInput): void {
    this.apply(name, input);
  }

  private apply(name: "a" | "b", input: BfdSessionInput): void {
    const step = this.node(name).handle(input);
    for (const action of step.actions) {
      this.log.push({ node: name, action, at: input.at });
      if (action.type === "send" && !this.drop(name, action.packet, input.at)) {
        this.inflight.push({ at: input.at + this.delayMs, to: name === "a" ? "b" : "a", packet: action.packet });
      }
    }
    this.wake[name] = step.wakeAt;
  }

  runUntil(t: number): void {
    for (let guard = 0; guard < 1_000_000; guard++) {
      this.inflight.sort((x, y) => x.at - y.at);
      const packet = this.inflight[0];
      const candidates: Array<[number, () => void]> = [];
      if (packet)
        candidates.push([
          packet.at,
          () => (
            this.inflight.shift(),
            this.apply(packet.to, { type: "packet", at: packet.at, packet: packet.packet })
          ),
        ]);
      for (const name of ["a", "b"] as const) {
        const w = this.wake[name];
        if (w !== null) candidates.push([w, () => this.apply(name, { type: "tick", at: w })]);
      }
      candidates.sort((x, y) => x[0] - y[0]);
      const next = candidates[0];
      if (!next || next[0] > t) {
        this.now = t;
        return;
      }
      this.now = next[0];
      next[1]();
    }
    throw new Error("simulation did not settle");
  }

  changesOf(name: "a" | "b") {
    return this.log.filter((l) => l.node === name && l.action.type === "stateChange").map((l) => l.action);
  }

  sentBy(name: "a" | "b") {
    return this.log.flatMap((l) =>
      l.node === name && l.action.type === "send"
        ? [{ at: l.at, packet: l.action.packet, reason: l.action.reason }]
        : [],
    );
  }
}

function pair(a: Partial<BfdSessionConfig> = {}, b: Partial<BfdSessionConfig> = {}, delayMs = 1): Pair {
  return new Pair(session({ localDiscriminator: 0xa, ...a }), session({ localDiscriminator: 0xb, ...b }), delayMs);
}

describe("BfdSession: two machines back to back", () => {
  it("come Up, then negotiate the fast rate with a Poll/Final", () => {
    const p = pair();
    p.runUntil(3000);
    expect(p.a.state).toBe("Up");
    expect(p.b.state).toBe("Up");
    expect(p.changesOf("a").map((c) => (c.type === "stateChange" ? c.to : ""))).toEqual(expect.arrayContaining(["Up"]));
    // Each side polled once on going Up (1 s -> 100 ms) and the other answered with F.
    for (const name of ["a", "b"] as const) {
      const polls = p.sentBy(name).filter((s) => s.packet.poll);
      expect(polls.length).toBeGreaterThanOrEqual(1);
      expect(p.node(name).snapshot()).toMatchObject({
        pollInProgress: false,
        desiredMinTxUs: 100_000,
        txIntervalMs: 100,
      });
    }
    expect(p.sentBy("a").some((s) => s.packet.final)).toBe(true);
    expect(p.sentBy("b").some((s) => s.packet.final)).toBe(true);
  });

  it("measures the Poll->Final round trip (2 x one-way delay)", () => {
    const p = pair({}, {}, 2);
    p.runUntil(3000);
    expect(p.a.snapshot().lastRttMs).toBe(4);
    expect(p.b.snapshot().lastRttMs).toBe(4);
  });

  it("detects a silent peer after remote mult x interval, with diag 1", () => {
    const p = pair();
    p.runUntil(3000);
    expect(p.a.state).toBe("Up");
    const lastHeardFromB = p.sentBy("b").at(-1)!.at + p.delayMs;
    p.drop = (from) => from === "b";
    p.runUntil(5000);
    const downs = p.changesOf("a").filter((c) => c.type === "stateChange" && c.to === "Down");
    expect(downs).toEqual([
      {
        type: "stateChange",
        from: "Up",
        to: "Down",
        diag: BfdDiag.ControlDetectionTimeExpired,
        at: lastHeardFromB + 300,
      },
    ]);
    // a drops to the 1 s pace while Down, so b (which still hears a) times out too: within its
    // own detection time of a's last fast packet, without waiting for a's next slow one.
    const bDown = p.changesOf("b").find((c) => c.type === "stateChange" && c.from === "Up");
    expect(bDown).toMatchObject({ to: "Down", diag: BfdDiag.ControlDetectionTimeExpired });
    expect(bDown?.type === "stateChange" && bDown.at).toBeLessThanOrEqual(lastHeardFromB + 300 + 300 + p.delayMs);
  });

  it("comes back Up after a partition heals", () => {
    const p = pair();
    p.runUntil(3000);
    p.drop = (_from, _packet, at) => at >= 3000 && at < 5000;
    p.runUntil(5000);
    expect(p.a.state).toBe("Down");
    expect(p.b.state).toBe("Down");
    p.runUntil(9000);
    expect(p.a.state).toBe("Up");
    expect(p.b.state).toBe("Up");
    expect(p.a.snapshot().upTransitions).toBe(2);
  });

  it("Poll/Final on a timer change: the slower TX rate waits for the Final", () => {
    const p = pair();
    p.runUntil(3000);
    p.input("a", { type: "setTimers", at: 3000, timers: { desiredMinTxMs: 300 } });
    const snapshot = p.a.snapshot();
    expect(snapshot.pollInProgress).toBe(true);
    expect(snapshot.desiredMinTxUs).toBe(300_000); // advertised at once
    expect(snapshot.txIntervalMs).toBe(100); // but not used before the Final
    p.runUntil(3200);
    expect(p.a.snapshot()).toMatchObject({ pollInProgress: false, txIntervalMs: 300 });
    // b's detection time follows a's advertisement: 3 x 300 ms.
    expect(p.b.snapshot().detectionTimeMs).toBe(900);
    const pollSends = p.sentBy("a").filter((s) => s.at >= 3000 && s.packet.poll);
    expect(pollSends).toHaveLength(1);
    const final = p.sentBy("b").find((s) => s.at > pollSends[0]!.at && s.packet.final);
    expect(final?.at).toBe(pollSends[0]!.at + 1); // answered on arrival
    // No false detection after the slowdown.
    p.runUntil(8000);
    expect(p.a.state).toBe("Up");
    expect(p.b.state).toBe("Up");
  });

  it("a faster accepted RX rate is used for detection only after the Final", () => {
    const p = pair({ requiredMinRxMs: 300 }, { desiredMinTxMs: 50 });
    p.runUntil(3000);
    expect(p.a.snapshot().detectionTimeMs).toBe(900);
    p.input("a", { type: "setTimers", at: 3000, timers: { requiredMinRxMs: 50 } });
    expect(p.a.snapshot().detectionTimeMs).toBe(900); // old value until the Poll ends
    p.runUntil(3500);
    expect(p.a.snapshot().detectionTimeMs).toBe(150);
    expect(p.b.snapshot().txIntervalMs).toBe(50);
    p.runUntil(6000);
    expect(p.a.state).toBe("Up");
  });

  it("a passive session never sends first", () => {
    const p = pair({ passive: true }, { passive: true });
    p.runUntil(10_000);
    expect(p.sentBy("a")).toEqual([]);
    expect(p.sentBy("b")).toEqual([]);
    expect(p.a.deadlines().wakeAt).toBeNull();
  });

  it("a passive session answers an active one and comes Up", () => {
    const p = pair({ passive: true }, {});
    p.runUntil(4000);
    const firstA = p.sentBy("a")[0];
    const firstB = p.sentBy("b")[0];
    expect(firstB!.at).toBeLessThan(firstA!.at);
    expect(firstA!.packet.yourDiscriminator).toBe(0xb);
    expect(p.a.state).toBe("Up");
    expect(p.b.state).toBe("Up");
  });

  it("a passive session falls silent again once the peer is gone", () => {
    const p = pair({ passive: true }, {});
    p.runUntil(4000);
    p.drop = (from, _packet, at) => from === "b" && at >= 4000;
    p.runUntil(6000);
    expect(p.a.state).toBe("Down");
    const count = p.sentBy("a").length;
    p.runUntil(20_000);
    expect(p.sentBy("a").length).toBe(count);
  });

  it("AdminDown: tells the peer, ignores its packets, and comes back after admin up", () => {
    const p = pair();
    p.runUntil(3000);
    p.input("a", { type: "adminDown", at: 3000 });
    expect(p.a.state).toBe("AdminDown");
    expect(p.sentBy("a").at(-1)).toMatchObject({
      at: 3000,
      reason: "adminDown",
      packet: { state: "AdminDown", diag: 7 },
    });
    p.runUntil(10_000);
    expect(p.a.state).toBe("AdminDown");
    expect(p.b.state).toBe("Down");
    expect(p.changesOf("b")).toContainEqual(
      expect.objectContaining({ from: "Up", to: "Down", diag: BfdDiag.NeighborSignaledSessionDown }),
    );
    expect(p.changesOf("b").filter((c) => c.type === "stateChange" && c.at > 3001)).toEqual([]); // b does not flap to Init
    expect(p.a.deadlines().detectionAt).toBeNull();
    p.input("a", { type: "adminUp", at: 10_000 });
    expect(p.a.state).toBe("Down");
    p.runUntil(14_000);
    expect(p.a.state).toBe("Up");
    expect(p.b.state).toBe("Up");
  });
});

describe("BfdSession: properties", () => {
  const inputArb = fc.oneof(
    fc.record({ type: fc.constant("tick" as const), dt: fc.integer({ min: 0, max: 5000 }) }),
    fc.record({ type: fc.constant("adminDown" as const), dt: fc.integer({ min: 0, max: 5000 }) }),
    fc.record({ type: fc.constant("adminUp" as const), dt: fc.integer({ min: 0, max: 5000 }) }),
    fc.record({
      type: fc.constant("setTimers" as const),
      dt: fc.integer({ min: 0, max: 5000 }),
      tx: fc.integer({ min: 1, max: 2000 }),
      rx: fc.integer({ min: 1, max: 2000 }),
    }),
  );

  it("never declares Up without receiving packets", () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.array(inputArb, { maxLength: 60 }),
        (passive, r, inputs) => {
          const s = session({ passive, random: () => r });
          let at = 0;
          for (const i of inputs) {
            at += i.dt;
            const input: BfdSessionInput =
              i.type === "setTimers"
                ? { type: "setTimers", at, timers: { desiredMinTxMs: i.tx, requiredMinRxMs: i.rx } }
                : { type: i.type, at };
            const step = s.handle(input);
            expect(changes(step.actions).some((c) => c.to === "Up" || c.to === "Init")).toBe(false);
            expect(s.state).not.toBe("Up");
            if (passive) expect(sends(step.actions)).toEqual([]);
          }
        },
      ),
    );
  });

  it("never sends periodic packets faster than 75 % of the negotiated interval, and comes Up despite jitter and delay", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.integer({ min: 0, max: 30 }),
        fc.integer({ min: 10, max: 500 }),
        fc.integer({ min: 10, max: 500 }),
        (r, delay, txA, rxB) => {
          let seed = r;
          const random = (): number => (seed = (seed * 9301 + 0.49297) % 1);
          const p = pair({ random, desiredMinTxMs: txA }, { random, requiredMinRxMs: rxB }, delay);
          p.runUntil(6000);
          expect(p.a.state).toBe("Up");
          expect(p.b.state).toBe("Up");
          const periodic = p.sentBy("a").filter((s) => s.reason === "periodic");
          for (let i = 1; i < periodic.length; i++) {
            const gap = periodic[i]!.at - periodic[i - 1]!.at;
            const advertisedTx = periodic[i - 1]!.packet.desiredMinTxUs / 1000;
            // The interval may only have shrunk through the Up transition (1 s -> configured).
            const floor = Math.min(advertisedTx, Math.max(txA, rxB));
            expect(gap).toBeGreaterThanOrEqual(0.75 * floor - 1e-9);
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
