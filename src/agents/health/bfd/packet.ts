import { StaticEgressError } from "../../../util/errors.js";

/**
 * BFD control packet codec: RFC 5880 §4.1 (mandatory section only) plus the packet-level
 * reception checks of §6.8.6 that do not need a session. We never configure authentication,
 * so a packet with the A bit set is rejected (§6.8.6: "If the A bit is set and no
 * authentication is in use ... the packet MUST be discarded").
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
 * |                       My Discriminator                        |
 * |                      Your Discriminator                       |
 * |                    Desired Min TX Interval                    |  (microseconds)
 * |                   Required Min RX Interval                    |  (microseconds)
 * |                 Required Min Echo RX Interval                 |  (microseconds)
 */

const BFD_VERSION = 1;
/** Length of a control packet without the authentication section. */
const BFD_CONTROL_PACKET_LENGTH = 24;
/** RFC 5881 §4: the source port of a session lies in this range. */
export const BFD_SOURCE_PORT_MIN = 49152;
export const BFD_SOURCE_PORT_MAX = 65535;
/** RFC 5881 §5: single-hop packets are sent with TTL / hop limit 255. */
export const BFD_TTL = 255;

/** Session states in wire order (§4.1: 0 AdminDown, 1 Down, 2 Init, 3 Up). */
export const BFD_STATES = ["AdminDown", "Down", "Init", "Up"] as const;
export type BfdState = (typeof BFD_STATES)[number];

/** Diagnostic codes (§4.1). 9–31 are reserved but still representable on the wire. */
export const BfdDiag = {
  None: 0,
  ControlDetectionTimeExpired: 1,
  EchoFunctionFailed: 2,
  NeighborSignaledSessionDown: 3,
  ForwardingPlaneReset: 4,
  PathDown: 5,
  ConcatenatedPathDown: 6,
  AdministrativelyDown: 7,
  ReverseConcatenatedPathDown: 8,
} as const;
export type BfdDiagCode = number;

const DIAG_NAMES: readonly string[] = [
  "none",
  "control-detection-time-expired",
  "echo-function-failed",
  "neighbor-signaled-session-down",
  "forwarding-plane-reset",
  "path-down",
  "concatenated-path-down",
  "administratively-down",
  "reverse-concatenated-path-down",
];

export function diagName(diag: BfdDiagCode): string {
  return DIAG_NAMES[diag] ?? `reserved-${diag}`;
}

export interface BfdControlPacket {
  /** 0–31 (5 bits). */
  diag: BfdDiagCode;
  state: BfdState;
  poll: boolean;
  final: boolean;
  controlPlaneIndependent: boolean;
  /** Always false for packets we accept or send: we configure no authentication. */
  authenticationPresent: boolean;
  demand: boolean;
  multipoint: boolean;
  /** 1–255 on the wire for valid packets. */
  detectMult: number;
  myDiscriminator: number;
  yourDiscriminator: number;
  desiredMinTxUs: number;
  requiredMinRxUs: number;
  requiredMinEchoRxUs: number;
}

export class BfdPacketError extends StaticEgressError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`BFD control packet field ${field}: ${message}`);
    this.name = "BfdPacketError";
  }
}

const UINT32_MAX = 0xffff_ffff;

function checkUint(field: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new BfdPacketError(field, `must be an integer in 0..${max}, got ${value}`);
  }
}

/**
 * Encodes a control packet (24 bytes, Length = 24, version 1). Refuses the A bit: an
 * authentication section is never written, so a packet claiming one would be malformed.
 */
export function encodeControlPacket(p: BfdControlPacket): Buffer {
  checkUint("diag", p.diag, 31);
  checkUint("detectMult", p.detectMult, 255);
  checkUint("myDiscriminator", p.myDiscriminator, UINT32_MAX);
  checkUint("yourDiscriminator", p.yourDiscriminator, UINT32_MAX);
  checkUint("desiredMinTxUs", p.desiredMinTxUs, UINT32_MAX);
  checkUint("requiredMinRxUs", p.requiredMinRxUs, UINT32_MAX);
  checkUint("requiredMinEchoRxUs", p.requiredMinEchoRxUs, UINT32_MAX);
  if (p.authenticationPresent) throw new BfdPacketError("authenticationPresent", "authentication is not supported");
  if (p.poll && p.final) throw new BfdPacketError("poll/final", "P and F must not both be set (RFC 5880 §6.5)");
  const stateCode = BFD_STATES.indexOf(p.state);
  if (stateCode < 0) throw new BfdPacketError("state", `unknown state ${String(p.state)}`);

  const buf = Buffer.alloc(BFD_CONTROL_PACKET_LENGTH);
  buf[0] = (BFD_VERSION << 5) | p.diag;
  buf[1] =
    (stateCode << 6) |
    (p.poll ? 0x20 : 0) |
    (p.final ? 0x10 : 0) |
    (p.controlPlaneIndependent ? 0x08 : 0) |
    (p.demand ? 0x02 : 0) |
    (p.multipoint ? 0x01 : 0);
  buf[2] = p.detectMult;
  buf[3] = BFD_CONTROL_PACKET_LENGTH;
  buf.writeUInt32BE(p.myDiscriminator, 4);
  buf.writeUInt32BE(p.yourDiscriminator, 8);
  buf.writeUInt32BE(p.desiredMinTxUs, 12);
  buf.writeUInt32BE(p.requiredMinRxUs, 16);
  buf.writeUInt32BE(p.requiredMinEchoRxUs, 20);
  return buf;
}

export type BfdDecodeResult = { ok: true; packet: BfdControlPacket } | { ok: false; reason: string };

/**
 * Decodes one UDP payload and applies the session-independent discard rules of RFC 5880
 * §6.8.6, in the RFC's order. Session selection (Your Discriminator lookup, or peer
 * address when it is zero) is the caller's job.
 */
export function decodeControlPacket(datagram: Uint8Array): BfdDecodeResult {
  if (datagram.length < BFD_CONTROL_PACKET_LENGTH) {
    return { ok: false, reason: `datagram of ${datagram.length} bytes is shorter than ${BFD_CONTROL_PACKET_LENGTH}` };
  }
  const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  const b0 = view.getUint8(0);
  const b1 = view.getUint8(1);
  const version = b0 >> 5;
  if (version !== BFD_VERSION) return { ok: false, reason: `version ${version} is not ${BFD_VERSION}` };

  const authenticationPresent = (b1 & 0x04) !== 0;
  const length = view.getUint8(3);
  const minLength = authenticationPresent ? 26 : BFD_CONTROL_PACKET_LENGTH;
  if (length < minLength) return { ok: false, reason: `length field ${length} is below the minimum ${minLength}` };
  if (length > datagram.length) {
    return { ok: false, reason: `length field ${length} exceeds the ${datagram.length}-byte datagram` };
  }
  const detectMult = view.getUint8(2);
  if (detectMult === 0) return { ok: false, reason: "detect multiplier is zero" };
  const multipoint = (b1 & 0x01) !== 0;
  if (multipoint) return { ok: false, reason: "multipoint (M) bit is set" };
  const myDiscriminator = view.getUint32(4);
  if (myDiscriminator === 0) return { ok: false, reason: "my discriminator is zero" };
  const yourDiscriminator = view.getUint32(8);
  const state = BFD_STATES[b1 >> 6] as BfdState;
  if (yourDiscriminator === 0 && state !== "Down" && state !== "AdminDown") {
    return { ok: false, reason: `your discriminator is zero in state ${state}` };
  }
  if (authenticationPresent)
    return { ok: false, reason: "authentication (A) bit is set but no authentication is configured" };

  return {
    ok: true,
    packet: {
      diag: b0 & 0x1f,
      state,
      poll: (b1 & 0x20) !== 0,
      final: (b1 & 0x10) !== 0,
      controlPlaneIndependent: (b1 & 0x08) !== 0,
      authenticationPresent,
      demand: (b1 & 0x02) !== 0,
      multipoint,
      detectMult,
      myDiscriminator,
      yourDiscriminator,
      desiredMinTxUs: view.getUint32(12),
      requiredMinRxUs: view.getUint32(16),
      requiredMinEchoRxUs: view.getUint32(20),
    },
  };
}
