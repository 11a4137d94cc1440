import type { BfdControlPacket } from "../packet.js";

/** A control packet for tests: a Down packet at the slow (1 s) rate, with `patch` applied. */
export function controlPacket(patch: Partial<BfdControlPacket> = {}): BfdControlPacket {
  return {
    diag: 0,
    state: "Down",
    poll: false,
    final: false,
    controlPlaneIndependent: false,
    authenticationPresent: false,
    demand: false,
    multipoint: false,
    detectMult: 3,
    myDiscriminator: 1,
    yourDiscriminator: 0,
    desiredMinTxUs: 1_000_000,
    requiredMinRxUs: 1_000_000,
    requiredMinEchoRxUs: 0,
    ...patch,
  };
}
