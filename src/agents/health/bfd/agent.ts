import { randomInt } from "node:crypto";
import { EventEmitter } from "node:events";
import { isIP } from "node:net";
import { performance } from "node:perf_hooks";
import { pino, type Logger } from "pino";
import { decodeControlPacket, diagName, encodeControlPacket, type BfdDiagCode, type BfdState } from "./packet.js";
import { BfdSession, type BfdSessionAction, type BfdSessionSnapshot, type BfdStep, type BfdTimers } from "./session.js";
import { UdpBfdTransport, type BfdDatagram, type BfdSessionSocket, type BfdTransport } from "./transport.js";
import { systemClock, type Clock } from "../../../util/clock.js";
import { StaticEgressError } from "../../../util/errors.js";

/**
 * Runs BFD sessions to a set of peers: owns the sockets (through a `BfdTransport`) and the
 * timers (through a `BfdClock`), and drives one pure `BfdSession` per peer. Received packets
 * are demultiplexed by Your Discriminator, or by the peer address while it is zero
 * (RFC 5880 §6.8.6, RFC 5881 §3).
 */

export interface BfdPeerConfig {
  /** Peer address; one session per peer address. */
  peer: string;
  /** Local address the session's send socket binds to; defaults to the agent's localAddress. */
  local?: string;
  /** Default 100. */
  desiredMinTxMs?: number;
  /** Default 100. */
  requiredMinRxMs?: number;
  /** Default 3. */
  detectMultiplier?: number;
  /** Wait for the peer's first packet before sending (RFC 5880 §6.1). Default false. */
  passive?: boolean;
  /** > 0: run a parameter-less Poll Sequence this often while Up to sample the RTT. Default 0. */
  rttProbeIntervalMs?: number;
}

export interface BfdStateChange {
  peer: string;
  from: BfdState;
  to: BfdState;
  diag: BfdDiagCode;
  diagName: string;
  at: number;
}

/**
 * What a health monitor needs of BFD: sessions to add and remove, and their state changes.
 * `BfdAgent` (same thread) and `BfdThread` (thread.ts, its own thread) both provide it.
 */
export interface BfdSessions {
  on(event: "change", listener: (c: BfdStateChange) => void): unknown;
  addPeer(cfg: BfdPeerConfig): Promise<void>;
  removePeer(peer: string): Promise<void>;
}

export interface BfdPeerStatus extends BfdSessionSnapshot {
  peer: string;
  local: string;
  /** UDP source port of the session; null until its socket is bound. */
  localPort: number | null;
  passive: boolean;
}

export interface BfdAgentEvents {
  change: [BfdStateChange];
}

/**
 * The agent's clock (util/clock.ts). Its `defer` matters here: after an event-loop stall, timers
 * fire before the datagrams that queued up meanwhile are read; deferring the timer's work past
 * them keeps a busy agent from declaring a live peer dead.
 */
export type BfdClock = Clock;

/**
 * Monotonic (never jumps with NTP) but still on the Unix epoch scale, so `at` values can be
 * shown as times of day.
 */
const monotonicClock: Clock = { ...systemClock, now: () => performance.timeOrigin + performance.now() };

export interface BfdAgentOptions {
  /** Address the receive socket binds to, and the default local address of sessions. */
  localAddress: string;
  /** Receive port and the peers' destination port. Default 3784 (RFC 5881). */
  port?: number;
  logger?: Logger;
  clock?: BfdClock;
  /** Defaults to UDP sockets (`UdpBfdTransport`). */
  transport?: BfdTransport;
  /** Jitter source, uniform in [0, 1). */
  random?: () => number;
  /** Source of local discriminators (non-zero uint32); default crypto random. */
  newDiscriminator?: () => number;
  /**
   * A responder that needs no peer list: a first packet (Your Discriminator 0) from an unknown
   * address creates a session with the config this returns (undefined: ignore the packet). The
   * gateway's firewall admits BFD from cluster nodes only.
   */
  acceptPeer?: (address: string) => BfdPeerConfig | undefined;
}

export class BfdAgentError extends StaticEgressError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BfdAgentError";
  }
}

const DEFAULT_INTERVAL_MS = 100;
const DEFAULT_DETECT_MULTIPLIER = 3;

interface PeerEntry {
  config: Required<BfdPeerConfig>;
  session: BfdSession;
  socket: BfdSessionSocket | undefined;
  timer: unknown;
  sendFailing: boolean;
  /** Pending sends, so stop() can wait for the AdminDown packet to leave. */
  inflight: Set<Promise<void>>;
}

export class BfdAgent extends EventEmitter<BfdAgentEvents> {
  private readonly log: Logger;
  private readonly clock: BfdClock;
  private readonly transport: BfdTransport;
  private readonly random: () => number;
  private readonly newDiscriminator: () => number;
  private readonly peers = new Map<string, PeerEntry>();
  private readonly byDiscriminator = new Map<number, PeerEntry>();
  private started = false;
  private invalidPackets = 0;
  private unmatchedPackets = 0;

  constructor(private readonly opts: BfdAgentOptions) {
    super();
    if (!isIP(opts.localAddress)) throw new BfdAgentError(`localAddress ${opts.localAddress} is not an IP address`);
    this.log = (opts.logger ?? pino({ level: "silent" })).child({ component: "bfd" });
    this.clock = opts.clock ?? monotonicClock;
    this.random = opts.random ?? Math.random;
    this.newDiscriminator = opts.newDiscriminator ?? (() => randomInt(1, 0x1_0000_0000));
    this.transport =
      opts.transport ??
      new UdpBfdTransport({
        listenAddress: opts.localAddress,
        ...(opts.port === undefined ? {} : { port: opts.port }),
        onError: (err) => this.log.warn({ err }, "BFD socket error"),
      });
  }

  async start(): Promise<void> {
    if (this.started) return;
    await this.transport.listen((d) => this.onDatagram(d));
    this.started = true;
    await Promise.all([...this.peers.values()].map((e) => this.open(e)));
    this.log.info({ localAddress: this.opts.localAddress, peers: this.peers.size }, "BFD agent started");
  }

  /**
   * Sends AdminDown to every peer (so they see a deliberate shutdown, not a loss), then closes
   * the sockets. Sessions are kept out of the maps afterwards.
   */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await Promise.all([...this.peers.values()].map((e) => this.shutdownPeer(e)));
    this.peers.clear();
    this.byDiscriminator.clear();
    await this.transport.close();
    this.log.info("BFD agent stopped");
  }

  /** Adds a session. Resolves once its send socket is bound (at once if not started yet). */
  async addPeer(cfg: BfdPeerConfig): Promise<void> {
    if (!isIP(cfg.peer)) throw new BfdAgentError(`peer ${cfg.peer} is not an IP address`);
    if (this.peers.has(cfg.peer)) throw new BfdAgentError(`peer ${cfg.peer} already has a BFD session`);
    const local = cfg.local ?? this.opts.localAddress;
    if (!isIP(local)) throw new BfdAgentError(`local ${local} of peer ${cfg.peer} is not an IP address`);
    const config: Required<BfdPeerConfig> = {
      peer: cfg.peer,
      local,
      desiredMinTxMs: cfg.desiredMinTxMs ?? DEFAULT_INTERVAL_MS,
      requiredMinRxMs: cfg.requiredMinRxMs ?? DEFAULT_INTERVAL_MS,
      detectMultiplier: cfg.detectMultiplier ?? DEFAULT_DETECT_MULTIPLIER,
      passive: cfg.passive ?? false,
      rttProbeIntervalMs: cfg.rttProbeIntervalMs ?? 0,
    };
    let discriminator = this.newDiscriminator();
    for (let i = 0; this.byDiscriminator.has(discriminator) && i < 100; i++) discriminator = this.newDiscriminator();
    if (this.byDiscriminator.has(discriminator)) throw new BfdAgentError("cannot find a free local discriminator");
    const session = new BfdSession(
      {
        localDiscriminator: discriminator,
        desiredMinTxMs: config.desiredMinTxMs,
        requiredMinRxMs: config.requiredMinRxMs,
        detectMultiplier: config.detectMultiplier,
        passive: config.passive,
        rttProbeIntervalMs: config.rttProbeIntervalMs,
        random: this.random,
      },
      this.clock.now(),
    );
    const entry: PeerEntry = {
      config,
      session,
      socket: undefined,
      timer: undefined,
      sendFailing: false,
      inflight: new Set(),
    };
    this.peers.set(config.peer, entry);
    this.byDiscriminator.set(discriminator, entry);
    if (this.started) await this.open(entry);
  }

  /** Tells the peer (AdminDown) and forgets the session. */
  async removePeer(peer: string): Promise<void> {
    const entry = this.peers.get(peer);
    if (!entry) return;
    this.peers.delete(peer);
    this.byDiscriminator.delete(entry.session.localDiscriminator);
    await this.shutdownPeer(entry);
  }

  /** Changes a session's timers; while Up this runs a Poll Sequence (RFC 5880 §6.8.3). */
  setPeerTimers(peer: string, timers: Partial<BfdTimers>): void {
    const entry = this.entry(peer);
    this.apply(entry, entry.session.handle({ type: "setTimers", at: this.clock.now(), timers }));
  }

  adminDown(peer: string): void {
    const entry = this.entry(peer);
    this.apply(entry, entry.session.handle({ type: "adminDown", at: this.clock.now() }));
  }

  adminUp(peer: string): void {
    const entry = this.entry(peer);
    this.apply(entry, entry.session.handle({ type: "adminUp", at: this.clock.now() }));
  }

  state(peer: string): BfdState {
    return this.entry(peer).session.state;
  }

  status(peer: string): BfdPeerStatus {
    return this.statusOf(this.entry(peer));
  }

  /** Everything metrics need, per peer. */
  statuses(): BfdPeerStatus[] {
    return [...this.peers.values()].map((e) => this.statusOf(e));
  }

  /** Packets that failed the RFC 5880 §6.8.6 packet checks / matched no session. */
  counters(): { invalidPackets: number; unmatchedPackets: number } {
    return { invalidPackets: this.invalidPackets, unmatchedPackets: this.unmatchedPackets };
  }

  // --- internals ---------------------------------------------------------------------------

  private entry(peer: string): PeerEntry {
    const entry = this.peers.get(peer);
    if (!entry) throw new BfdAgentError(`no BFD session for peer ${peer}`);
    return entry;
  }

  private statusOf(e: PeerEntry): BfdPeerStatus {
    return {
      ...e.session.snapshot(),
      peer: e.config.peer,
      local: e.config.local,
      localPort: e.socket?.localPort ?? null,
      passive: e.config.passive,
    };
  }

  private async open(entry: PeerEntry): Promise<void> {
    try {
      entry.socket = await this.transport.openSessionSocket(entry.config.local);
    } catch (err) {
      this.peers.delete(entry.config.peer);
      this.byDiscriminator.delete(entry.session.localDiscriminator);
      throw new BfdAgentError(`cannot open the BFD session to ${entry.config.peer}`, { cause: err });
    }
    if (this.peers.get(entry.config.peer) !== entry) {
      // Removed while the socket was being bound.
      await entry.socket.close();
      return;
    }
    this.log.debug({ peer: entry.config.peer, localPort: entry.socket.localPort }, "BFD session opened");
    // The session may have been created long before start(): begin from now.
    this.apply(entry, entry.session.handle({ type: "tick", at: this.clock.now() }));
  }

  private async shutdownPeer(entry: PeerEntry): Promise<void> {
    if (entry.socket) this.apply(entry, entry.session.handle({ type: "adminDown", at: this.clock.now() }));
    this.clock.clearTimer(entry.timer);
    entry.timer = undefined;
    await Promise.allSettled([...entry.inflight]);
    const socket = entry.socket;
    entry.socket = undefined;
    await socket?.close();
  }

  private onDatagram(d: BfdDatagram): void {
    const decoded = decodeControlPacket(d.data);
    if (!decoded.ok) {
      this.invalidPackets++;
      this.log.debug({ from: d.address, reason: decoded.reason }, "BFD packet discarded");
      return;
    }
    const packet = decoded.packet;
    const entry =
      packet.yourDiscriminator !== 0 ? this.byDiscriminator.get(packet.yourDiscriminator) : this.peers.get(d.address);
    if (!entry && packet.yourDiscriminator === 0 && this.opts.acceptPeer && this.started) {
      const cfg = this.opts.acceptPeer(d.address);
      if (cfg) {
        this.addPeer({ ...cfg, peer: d.address })
          .then(() => this.onDatagram(d))
          .catch((err: unknown) => this.log.warn({ peer: d.address, err }, "cannot accept BFD peer"));
        return;
      }
    }
    // A discriminator must also come from the address its session talks to.
    if (!entry || !entry.socket || entry.config.peer !== d.address) {
      this.unmatchedPackets++;
      this.log.debug({ from: d.address, yourDiscriminator: packet.yourDiscriminator }, "BFD packet for no session");
      return;
    }
    this.apply(entry, entry.session.handle({ type: "packet", at: this.clock.now(), packet }));
  }

  private apply(entry: PeerEntry, step: BfdStep): void {
    for (const action of step.actions) this.act(entry, action);
    this.clock.clearTimer(entry.timer);
    entry.timer = undefined;
    if (step.wakeAt !== null && entry.socket && this.peers.get(entry.config.peer) === entry) {
      const delay = Math.max(0, step.wakeAt - this.clock.now());
      entry.timer = this.clock.setTimer(() => {
        const tick = () => {
          if (this.peers.get(entry.config.peer) !== entry) return;
          entry.timer = undefined;
          this.apply(entry, entry.session.handle({ type: "tick", at: this.clock.now() }));
        };
        if (this.clock.defer) this.clock.defer(tick);
        else tick();
      }, delay);
    }
  }

  private act(entry: PeerEntry, action: BfdSessionAction): void {
    switch (action.type) {
      case "send":
        this.send(entry, encodeControlPacket(action.packet));
        break;
      case "stateChange": {
        const change: BfdStateChange = {
          peer: entry.config.peer,
          from: action.from,
          to: action.to,
          diag: action.diag,
          diagName: diagName(action.diag),
          at: action.at,
        };
        this.log.info(change, "BFD session state changed");
        this.emit("change", change);
        break;
      }
      case "pollComplete":
        this.log.debug({ peer: entry.config.peer, rttMs: action.rttMs }, "BFD poll sequence complete");
        break;
      case "discard":
        this.log.debug({ peer: entry.config.peer, reason: action.reason }, "BFD packet discarded by session");
        break;
    }
  }

  private send(entry: PeerEntry, data: Buffer): void {
    const socket = entry.socket;
    if (!socket) return;
    const sending = socket
      .send(data, entry.config.peer)
      .then(() => {
        if (entry.sendFailing) this.log.info({ peer: entry.config.peer }, "BFD sends work again");
        entry.sendFailing = false;
      })
      .catch((err: unknown) => {
        // Log the first failure of a run only: a dead link would otherwise log 10 lines a second.
        if (!entry.sendFailing) this.log.warn({ peer: entry.config.peer, err }, "BFD send failed");
        entry.sendFailing = true;
      })
      .finally(() => entry.inflight.delete(sending));
    entry.inflight.add(sending);
  }
}
