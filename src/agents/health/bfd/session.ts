import { BfdDiag, type BfdControlPacket, type BfdDiagCode, type BfdState } from "./packet.js";
import { StaticEgressError } from "../../../util/errors.js";

/**
 * One BFD session as a pure state machine (RFC 5880 asynchronous mode, no Demand mode, no
 * Echo function, no authentication). No sockets, no timers: the driver feeds it events with
 * the current time in milliseconds and carries out the actions it returns, then wakes it up
 * again at `wakeAt`. Times are the driver's clock (any monotonic ms origin); intervals on the
 * wire are microseconds, as in the packet.
 *
 * Variable names follow RFC 5880 §6.8.1 (bfd.SessionState, bfd.RemoteDiscr, ...).
 */

export interface BfdTimers {
  /** Interval at which we would like to send once Up (bfd.DesiredMinTxInterval when Up). */
  desiredMinTxMs: number;
  /** Fastest rate at which we accept packets (bfd.RequiredMinRxInterval). */
  requiredMinRxMs: number;
  /** bfd.DetectMult. */
  detectMultiplier: number;
}

export interface BfdSessionConfig extends BfdTimers {
  /** bfd.LocalDiscr: non-zero, unique among the sessions of this system. */
  localDiscriminator: number;
  /** Passive role (§6.1): send nothing until a packet from the peer told us its discriminator. */
  passive?: boolean;
  /**
   * bfd.DesiredMinTxInterval while the session is not Up. §6.8.3 requires at least one second,
   * so smaller values are raised to 1000.
   */
  slowTxMs?: number;
  /**
   * When > 0, start a Poll Sequence this often while Up (with no parameter change) so the
   * round-trip time keeps being sampled. 0 (default): only timer changes poll.
   */
  rttProbeIntervalMs?: number;
  /** Jitter source, uniform in [0, 1). Defaults to Math.random. */
  random?: () => number;
}

export type BfdSessionInput =
  | { type: "packet"; at: number; packet: BfdControlPacket }
  | { type: "tick"; at: number }
  | { type: "adminDown"; at: number; diag?: BfdDiagCode }
  | { type: "adminUp"; at: number }
  | { type: "setTimers"; at: number; timers: Partial<BfdTimers> };

export type BfdSendReason = "periodic" | "final" | "adminDown";

export type BfdSessionAction =
  | { type: "send"; packet: BfdControlPacket; reason: BfdSendReason }
  | { type: "stateChange"; from: BfdState; to: BfdState; diag: BfdDiagCode; at: number }
  | { type: "pollComplete"; at: number; rttMs: number | null }
  | { type: "discard"; reason: string };

export interface BfdStep {
  actions: BfdSessionAction[];
  /** Next periodic transmission, or null when the session must stay silent. */
  nextTxAt: number | null;
  /** When the Detection Time runs out without a packet, or null when not armed. */
  detectionAt: number | null;
  /** The earliest of the two: call `handle({ type: "tick" })` then. */
  wakeAt: number | null;
}

export interface BfdSessionSnapshot {
  state: BfdState;
  remoteState: BfdState;
  localDiag: BfdDiagCode;
  localDiscriminator: number;
  remoteDiscriminator: number;
  /** Advertised bfd.DesiredMinTxInterval / bfd.RequiredMinRxInterval, microseconds. */
  desiredMinTxUs: number;
  requiredMinRxUs: number;
  remoteDesiredMinTxUs: number;
  remoteMinRxUs: number;
  remoteDetectMult: number;
  /** Interval used for the next periodic packet before jitter, ms (0 when not sending). */
  txIntervalMs: number;
  /** Current Detection Time, ms (0 before any packet was received). */
  detectionTimeMs: number;
  pollInProgress: boolean;
  lastChangeAt: number;
  downTransitions: number;
  upTransitions: number;
  packetsSent: number;
  packetsReceived: number;
  packetsDiscarded: number;
  lastPacketReceivedAt: number | null;
  /** Last unambiguous Poll→Final round trip, ms; null if none measured yet. */
  lastRttMs: number | null;
}

export class BfdConfigError extends StaticEgressError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`BFD session config ${field}: ${message}`);
    this.name = "BfdConfigError";
  }
}

const MIN_SLOW_TX_MS = 1000;
const MAX_INTERVAL_MS = 0xffff_ffff / 1000;

function validateTimers(t: BfdTimers): void {
  for (const field of ["desiredMinTxMs", "requiredMinRxMs"] as const) {
    const v = t[field];
    if (!Number.isFinite(v) || v <= 0 || v > MAX_INTERVAL_MS) {
      throw new BfdConfigError(field, `must be > 0 and <= ${Math.floor(MAX_INTERVAL_MS)} ms, got ${v}`);
    }
  }
  if (!Number.isInteger(t.detectMultiplier) || t.detectMultiplier < 1 || t.detectMultiplier > 255) {
    throw new BfdConfigError("detectMultiplier", `must be an integer in 1..255, got ${t.detectMultiplier}`);
  }
}

const msToUs = (ms: number): number => Math.round(ms * 1000);

export class BfdSession {
  private readonly localDiscr: number;
  private readonly passive: boolean;
  private readonly slowTxUs: number;
  private readonly rttProbeIntervalMs: number;
  private readonly random: () => number;

  private timers: BfdTimers;
  private sessionState: BfdState = "Down";
  private remoteSessionState: BfdState = "Down";
  private remoteDiscr = 0;
  private localDiag: BfdDiagCode = BfdDiag.None;
  /** Advertised values (bfd.DesiredMinTxInterval, bfd.RequiredMinRxInterval). */
  private desiredMinTxUs: number;
  private requiredMinRxUs: number;
  /**
   * Values actually in force for our own timing. They lag the advertised ones while a Poll
   * Sequence confirms a change that would otherwise break the peer's detection (§6.8.3).
   */
  private txInUseUs: number;
  private rxInUseUs: number;
  /** bfd.RemoteMinRxInterval starts at 1 µs (§6.8.1) so an active session may transmit. */
  private remoteMinRxUs = 1;
  private remoteDesiredMinTxUs = 0;
  private remoteDetectMult = 0;

  private pollActive = false;
  private pollAgain = false;
  private pollPacketsSent = 0;
  private lastPollSentAt = 0;
  private nextProbeAt: number | null = null;

  private lastTxAt: number | null = null;
  /** Jitter factor drawn for the gap after the last periodic packet. */
  private jitterFactor = 1;
  private txAt: number | null = null;
  private detectAt: number | null = null;
  private lastRxAt: number | null = null;

  private lastChangeAt: number;
  private downTransitions = 0;
  private upTransitions = 0;
  private packetsSent = 0;
  private packetsReceived = 0;
  private packetsDiscarded = 0;
  private lastRttMs: number | null = null;

  constructor(config: BfdSessionConfig, at: number) {
    if (
      !Number.isInteger(config.localDiscriminator) ||
      config.localDiscriminator < 1 ||
      config.localDiscriminator > 0xffff_ffff
    ) {
      throw new BfdConfigError("localDiscriminator", `must be a non-zero uint32, got ${config.localDiscriminator}`);
    }
    validateTimers(config);
    this.localDiscr = config.localDiscriminator;
    this.passive = config.passive ?? false;
    this.slowTxUs = msToUs(Math.max(MIN_SLOW_TX_MS, config.slowTxMs ?? MIN_SLOW_TX_MS));
    this.rttProbeIntervalMs = Math.max(0, config.rttProbeIntervalMs ?? 0);
    this.random = config.random ?? Math.random;
    this.timers = {
      desiredMinTxMs: config.desiredMinTxMs,
      requiredMinRxMs: config.requiredMinRxMs,
      detectMultiplier: config.detectMultiplier,
    };
    this.desiredMinTxUs = this.advertisedDesiredMinTxUs();
    this.requiredMinRxUs = msToUs(config.requiredMinRxMs);
    this.txInUseUs = this.desiredMinTxUs;
    this.rxInUseUs = this.requiredMinRxUs;
    this.lastChangeAt = at;
    this.refreshTxSchedule(at);
  }

  get state(): BfdState {
    return this.sessionState;
  }

  get localDiscriminator(): number {
    return this.localDiscr;
  }

  /** The deadlines without feeding an event (for a driver that just created the session). */
  deadlines(): BfdStep {
    return this.step([]);
  }

  snapshot(): BfdSessionSnapshot {
    return {
      state: this.sessionState,
      remoteState: this.remoteSessionState,
      localDiag: this.localDiag,
      localDiscriminator: this.localDiscr,
      remoteDiscriminator: this.remoteDiscr,
      desiredMinTxUs: this.desiredMinTxUs,
      requiredMinRxUs: this.requiredMinRxUs,
      remoteDesiredMinTxUs: this.remoteDesiredMinTxUs,
      remoteMinRxUs: this.remoteMinRxUs,
      remoteDetectMult: this.remoteDetectMult,
      txIntervalMs: this.mayTransmitPeriodically() ? this.txIntervalUs() / 1000 : 0,
      detectionTimeMs: this.detectionTimeMs(),
      pollInProgress: this.pollActive,
      lastChangeAt: this.lastChangeAt,
      downTransitions: this.downTransitions,
      upTransitions: this.upTransitions,
      packetsSent: this.packetsSent,
      packetsReceived: this.packetsReceived,
      packetsDiscarded: this.packetsDiscarded,
      lastPacketReceivedAt: this.lastRxAt,
      lastRttMs: this.lastRttMs,
    };
  }

  handle(input: BfdSessionInput): BfdStep {
    const actions: BfdSessionAction[] = [];
    switch (input.type) {
      case "packet":
        this.receive(input.at, input.packet, actions);
        break;
      case "tick":
        break;
      case "adminDown":
        this.adminDown(input.at, input.diag ?? BfdDiag.AdministrativelyDown, actions);
        break;
      case "adminUp":
        this.adminUp(input.at, actions);
        break;
      case "setTimers":
        this.setTimers(input.at, input.timers);
        break;
    }
    this.runDue(input.at, actions);
    return this.step(actions);
  }

  // --- reception (§6.8.6) ---------------------------------------------------------------

  private receive(at: number, p: BfdControlPacket, actions: BfdSessionAction[]): void {
    // The packet-level checks live in decodeControlPacket; these need the session.
    const reject =
      p.yourDiscriminator !== 0 && p.yourDiscriminator !== this.localDiscr
        ? `your discriminator ${p.yourDiscriminator} is not ours (${this.localDiscr})`
        : p.yourDiscriminator === 0 && p.state !== "Down" && p.state !== "AdminDown"
          ? `your discriminator is zero in state ${p.state}`
          : p.authenticationPresent
            ? "authentication is not configured"
            : p.detectMult === 0 || p.myDiscriminator === 0 || p.multipoint
              ? "invalid packet"
              : null;
    if (reject) {
      this.packetsDiscarded++;
      actions.push({ type: "discard", reason: reject });
      return;
    }
    this.packetsReceived++;
    this.lastRxAt = at;
    this.remoteDiscr = p.myDiscriminator;
    this.remoteSessionState = p.state;
    this.remoteMinRxUs = p.requiredMinRxUs;
    this.remoteDesiredMinTxUs = p.desiredMinTxUs;
    this.remoteDetectMult = p.detectMult;
    // Demand mode is not supported: we never set D, and ignore the peer's D bit (our own
    // gateway agent and FRR's bfdd do not use it).

    if (p.final && this.pollActive) this.finishPoll(at, actions);

    if (this.sessionState === "AdminDown") {
      this.refreshTxSchedule(at);
      return;
    }

    if (p.state === "AdminDown") {
      if (this.sessionState !== "Down") this.changeState(at, "Down", BfdDiag.NeighborSignaledSessionDown, actions);
    } else if (this.sessionState === "Down") {
      if (p.state === "Down") this.changeState(at, "Init", BfdDiag.None, actions);
      else if (p.state === "Init") this.changeState(at, "Up", BfdDiag.None, actions);
    } else if (this.sessionState === "Init") {
      if (p.state === "Init" || p.state === "Up") this.changeState(at, "Up", BfdDiag.None, actions);
    } else if (p.state === "Down") {
      this.changeState(at, "Down", BfdDiag.NeighborSignaledSessionDown, actions);
    }

    // §6.5 / §6.8.7: answer a Poll at once, regardless of the transmit timer.
    if (p.poll) this.send(this.buildPacket({ final: true }), "final", actions);

    this.detectAt = at + this.detectionTimeMs();
    this.refreshTxSchedule(at);
  }

  // --- timers ------------------------------------------------------------------------------

  private runDue(at: number, actions: BfdSessionAction[]): void {
    if (this.detectAt !== null && at >= this.detectAt) this.detectionExpired(at, actions);
    if (this.txAt !== null && at >= this.txAt) {
      if (this.sessionState === "Up" && this.rttProbeIntervalMs > 0 && !this.pollActive) {
        this.nextProbeAt ??= at + this.rttProbeIntervalMs;
        if (at >= this.nextProbeAt) this.startPoll();
      }
      const packet = this.buildPacket({ final: false });
      if (packet.poll) {
        this.pollPacketsSent++;
        this.lastPollSentAt = at;
      }
      this.send(packet, "periodic", actions);
      this.lastTxAt = at;
      this.jitterFactor = this.drawJitterFactor();
      this.refreshTxSchedule(at);
    }
  }

  /** §6.8.4: no valid packet within the Detection Time. */
  private detectionExpired(at: number, actions: BfdSessionAction[]): void {
    this.detectAt = null;
    // §6.8.1: bfd.RemoteDiscr is reset when the Detection Time passes without a packet.
    this.remoteDiscr = 0;
    this.remoteSessionState = "Down";
    if (this.sessionState === "Init" || this.sessionState === "Up") {
      this.changeState(at, "Down", BfdDiag.ControlDetectionTimeExpired, actions);
    }
    this.refreshTxSchedule(at);
  }

  private detectionTimeMs(): number {
    if (this.remoteDetectMult === 0) return 0;
    return (this.remoteDetectMult * Math.max(this.rxInUseUs, this.remoteDesiredMinTxUs)) / 1000;
  }

  /** §6.8.7: the slower of what we want to send and what the peer accepts. */
  private txIntervalUs(): number {
    return Math.max(this.txInUseUs, this.remoteMinRxUs);
  }

  /** §6.8.7: 0–25 % shorter, or 10–25 % shorter when bfd.DetectMult is 1. */
  private drawJitterFactor(): number {
    const r = Math.min(Math.max(this.random(), 0), 0.999_999);
    return this.timers.detectMultiplier === 1 ? 0.9 - 0.15 * r : 1 - 0.25 * r;
  }

  private mayTransmitPeriodically(): boolean {
    if (this.passive && this.remoteDiscr === 0) return false; // §6.8.7 passive role
    if (this.remoteMinRxUs === 0) return false; // the peer asked for no packets
    return true;
  }

  private refreshTxSchedule(at: number): void {
    if (!this.mayTransmitPeriodically()) {
      this.txAt = null;
      return;
    }
    if (this.lastTxAt === null) {
      this.txAt = at; // nothing sent yet: no interval to respect
      return;
    }
    this.txAt = this.lastTxAt + (this.txIntervalUs() / 1000) * this.jitterFactor;
  }

  // --- state and parameter changes ----------------------------------------------------------

  private advertisedDesiredMinTxUs(): number {
    const configured = msToUs(this.timers.desiredMinTxMs);
    return this.sessionState === "Up" ? configured : Math.max(configured, this.slowTxUs);
  }

  private changeState(at: number, to: BfdState, diag: BfdDiagCode, actions: BfdSessionAction[]): void {
    const from = this.sessionState;
    if (from === to) return;
    this.sessionState = to;
    this.localDiag = to === "Up" ? BfdDiag.None : diag;
    this.lastChangeAt = at;
    if (to === "Down") this.downTransitions++;
    if (to === "Up") {
      this.upTransitions++;
      this.nextProbeAt = null;
    }
    if (from === "Up") {
      // Nobody to confirm a Poll with any more; slow timers apply at once.
      this.pollActive = false;
      this.pollAgain = false;
    }
    // §6.8.3: at least 1 s while not Up; the configured rate once Up (confirmed by a Poll).
    this.applyLocalTimers(this.advertisedDesiredMinTxUs(), this.requiredMinRxUs);
    actions.push({ type: "stateChange", from, to, diag: this.localDiag, at });
  }

  /**
   * §6.8.3: a changed DesiredMinTx or RequiredMinRx starts a Poll Sequence while Up. A faster
   * transmit rate and a slower accepted receive rate apply at once (they only make the
   * peer's and our detection more tolerant); a slower transmit rate and a faster accepted
   * receive rate wait for the Final.
   */
  private applyLocalTimers(desiredUs: number, requiredUs: number): void {
    const changed = desiredUs !== this.desiredMinTxUs || requiredUs !== this.requiredMinRxUs;
    this.desiredMinTxUs = desiredUs;
    this.requiredMinRxUs = requiredUs;
    if (this.sessionState === "Up") {
      this.txInUseUs = Math.min(this.txInUseUs, desiredUs);
      this.rxInUseUs = Math.max(this.rxInUseUs, requiredUs);
      if (changed) this.startPoll();
    } else {
      this.txInUseUs = desiredUs;
      this.rxInUseUs = requiredUs;
    }
  }

  private setTimers(at: number, timers: Partial<BfdTimers>): void {
    const next = { ...this.timers, ...timers };
    validateTimers(next);
    this.timers = next;
    // §6.8.12: a new Detect Mult simply goes out with the next packet.
    this.applyLocalTimers(this.advertisedDesiredMinTxUs(), msToUs(next.requiredMinRxMs));
    if (this.detectAt !== null && this.lastRxAt !== null) this.detectAt = this.lastRxAt + this.detectionTimeMs();
    this.refreshTxSchedule(at);
  }

  private startPoll(): void {
    if (this.pollActive) {
      // The running sequence may already have been answered for older values.
      this.pollAgain = true;
      return;
    }
    this.pollActive = true;
    this.pollPacketsSent = 0;
  }

  private finishPoll(at: number, actions: BfdSessionAction[]): void {
    this.pollActive = false;
    this.txInUseUs = this.desiredMinTxUs;
    this.rxInUseUs = this.requiredMinRxUs;
    // With one Poll on the wire the Final answers exactly it; with several we cannot tell
    // which one it answers, so no sample rather than a wrong one.
    const rttMs = this.pollPacketsSent === 1 ? at - this.lastPollSentAt : null;
    if (rttMs !== null) this.lastRttMs = rttMs;
    if (this.rttProbeIntervalMs > 0) this.nextProbeAt = at + this.rttProbeIntervalMs;
    actions.push({ type: "pollComplete", at, rttMs });
    if (this.pollAgain) {
      this.pollAgain = false;
      this.startPoll();
    }
  }

  // --- administrative control (§6.8.16) ------------------------------------------------------

  private adminDown(at: number, diag: BfdDiagCode, actions: BfdSessionAction[]): void {
    if (this.sessionState === "AdminDown") return;
    this.changeState(at, "AdminDown", diag, actions);
    this.detectAt = null;
    // Tell the peer now rather than up to a slow interval later (FRR does the same when a
    // session goes down); periodic AdminDown packets continue afterwards.
    if (this.mayTransmitPeriodically()) {
      this.send(this.buildPacket({ final: false }), "adminDown", actions);
      this.lastTxAt = at;
      this.jitterFactor = this.drawJitterFactor();
    }
    this.refreshTxSchedule(at);
  }

  private adminUp(at: number, actions: BfdSessionAction[]): void {
    if (this.sessionState !== "AdminDown") return;
    this.changeState(at, "Down", BfdDiag.None, actions);
    this.refreshTxSchedule(at);
  }

  // --- transmission ----------------------------------------------------------------------------

  private buildPacket(opts: { final: boolean }): BfdControlPacket {
    return {
      diag: this.localDiag,
      state: this.sessionState,
      poll: !opts.final && this.pollActive,
      final: opts.final,
      controlPlaneIndependent: false,
      authenticationPresent: false,
      demand: false,
      multipoint: false,
      detectMult: this.timers.detectMultiplier,
      myDiscriminator: this.localDiscr,
      yourDiscriminator: this.remoteDiscr,
      desiredMinTxUs: this.desiredMinTxUs,
      requiredMinRxUs: this.requiredMinRxUs,
      requiredMinEchoRxUs: 0, // no Echo function
    };
  }

  private send(packet: BfdControlPacket, reason: BfdSendReason, actions: BfdSessionAction[]): void {
    this.packetsSent++;
    actions.push({ type: "send", packet, reason });
  }

  private step(actions: BfdSessionAction[]): BfdStep {
    const candidates = [this.txAt, this.detectAt].filter((t): t is number => t !== null);
    return {
      actions,
      nextTxAt: this.txAt,
      detectionAt: this.detectAt,
      wakeAt: candidates.length ? Math.min(...candidates) : null,
    };
  }
}
