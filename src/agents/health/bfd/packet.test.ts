import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BFD_STATES,
  BfdDiag,
  BfdPacketError,
  decodeControlPacket,
  diagName,
  encodeControlPacket,
  type BfdControlPacket,
} from "./packet.js";
import { controlPacket } from "./testing/packets.js";

const base: BfdControlPacket = controlPacket();

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");

function mustDecode(bytes: Uint8Array): BfdControlPacket {
  const r = decodeControlPacket(bytes);
  if (!r.ok) throw new Error(`unexpected reject: ${r.reason}`);
  return r.packet;
}

function rejectReason(bytes: Uint8Array): string {
  const r = decodeControlPacket(bytes);
  if (r.ok) throw new Error("packet was accepted");
  return r.reason;
}

describe("BFD control packet: RFC 5880 §4.1 byte layout", () => {
  it("decodes a packet captured from FRR bfdd 8.4 (Down, slow timers, echo RX 50 ms)", () => {
    // UDP payload of 10.77.0.1.49152 > 10.77.0.2.3784 as printed by tcpdump -X.
    const p = mustDecode(hex("2040 0318 c5a2 e879 0000 0000 000f 4240 000f 4240 0000 c350"));
    expect(p).toEqual({
      ...base,
      state: "Down",
      detectMult: 3,
      myDiscriminator: 0xc5a2e879,
      yourDiscriminator: 0,
      desiredMinTxUs: 1_000_000,
      requiredMinRxUs: 1_000_000,
      requiredMinEchoRxUs: 50_000,
    });
  });

  it("encodes version, diag, state and every flag bit where the RFC puts them", () => {
    const bytes = encodeControlPacket({
      ...base,
      diag: BfdDiag.AdministrativelyDown,
      state: "Up",
      poll: true,
      controlPlaneIndependent: true,
      demand: true,
      detectMult: 5,
      myDiscriminator: 0x01020304,
      yourDiscriminator: 0xa0b0c0d0,
      desiredMinTxUs: 100_000,
      requiredMinRxUs: 300_000,
      requiredMinEchoRxUs: 0,
    });
    // 001 00111 | 11 1 0 1 0 1 0 | 5 | 24
    expect(bytes.toString("hex")).toBe("27ea0518" + "01020304" + "a0b0c0d0" + "000186a0" + "000493e0" + "00000000");
  });

  it("puts F at 0x10 and the states at the two top bits of byte 1", () => {
    expect(encodeControlPacket({ ...base, state: "AdminDown" })[1]).toBe(0x00);
    expect(encodeControlPacket({ ...base, state: "Down" })[1]).toBe(0x40);
    expect(encodeControlPacket({ ...base, state: "Init" })[1]).toBe(0x80);
    expect(encodeControlPacket({ ...base, state: "Up", final: true })[1]).toBe(0xd0);
    expect(encodeControlPacket(base)[3]).toBe(24);
  });

  it("names diagnostic codes, reserved ones too", () => {
    expect(diagName(BfdDiag.ControlDetectionTimeExpired)).toBe("control-detection-time-expired");
    expect(diagName(BfdDiag.NeighborSignaledSessionDown)).toBe("neighbor-signaled-session-down");
    expect(diagName(20)).toBe("reserved-20");
  });
});

const packetArb: fc.Arbitrary<BfdControlPacket> = fc
  .record({
    diag: fc.integer({ min: 0, max: 31 }),
    state: fc.constantFrom(...BFD_STATES),
    pollOrFinal: fc.constantFrom("none", "poll", "final"),
    controlPlaneIndependent: fc.boolean(),
    demand: fc.boolean(),
    detectMult: fc.integer({ min: 1, max: 255 }),
    myDiscriminator: fc.integer({ min: 1, max: 0xffff_ffff }),
    yourDiscriminator: fc.integer({ min: 0, max: 0xffff_ffff }),
    desiredMinTxUs: fc.integer({ min: 0, max: 0xffff_ffff }),
    requiredMinRxUs: fc.integer({ min: 0, max: 0xffff_ffff }),
    requiredMinEchoRxUs: fc.integer({ min: 0, max: 0xffff_ffff }),
  })
  .map(({ pollOrFinal, ...r }) => ({
    ...r,
    poll: pollOrFinal === "poll",
    final: pollOrFinal === "final",
    authenticationPresent: false,
    multipoint: false,
    // §6.8.6: Your Discriminator 0 is only valid in Down/AdminDown; keep generated packets valid.
    yourDiscriminator:
      r.state === "Down" || r.state === "AdminDown" ? r.yourDiscriminator : Math.max(1, r.yourDiscriminator),
  }));

describe("BFD control packet: round trip", () => {
  it("decode(encode(p)) == p for every valid packet", () => {
    fc.assert(
      fc.property(packetArb, (p) => {
        const bytes = encodeControlPacket(p);
        expect(bytes.length).toBe(24);
        expect(mustDecode(bytes)).toEqual(p);
      }),
    );
  });

  it("decodes from a view into a larger buffer (as dgram may hand over)", () => {
    const bytes = encodeControlPacket({ ...base, myDiscriminator: 77 });
    const big = Buffer.concat([Buffer.alloc(10, 0xff), bytes]);
    expect(mustDecode(big.subarray(10)).myDiscriminator).toBe(77);
  });
});

describe("BFD control packet: §6.8.6 reception checks", () => {
  const good = (): Buffer => encodeControlPacket({ ...base, myDiscriminator: 42 });

  it("accepts a length field shorter than the datagram (trailing bytes ignored)", () => {
    const bytes = Buffer.concat([good(), Buffer.alloc(6)]);
    expect(mustDecode(bytes).myDiscriminator).toBe(42);
  });

  const cases: Array<[string, (b: Buffer) => Buffer, RegExp]> = [
    ["a datagram shorter than 24 bytes", (b) => b.subarray(0, 23), /shorter than 24/],
    ["version 0", (b) => ((b[0] = b[0]! & 0x1f), b), /version 0/],
    ["version 2", (b) => ((b[0] = (2 << 5) | (b[0]! & 0x1f)), b), /version 2/],
    ["a length field below 24", (b) => ((b[3] = 23), b), /below the minimum 24/],
    ["a length field beyond the datagram", (b) => ((b[3] = 28), b), /exceeds the 24-byte datagram/],
    ["detect multiplier 0", (b) => ((b[2] = 0), b), /detect multiplier is zero/],
    ["the multipoint bit", (b) => ((b[1] = b[1]! | 0x01), b), /multipoint/],
    ["my discriminator 0", (b) => (b.writeUInt32BE(0, 4), b), /my discriminator is zero/],
    ["your discriminator 0 in Up", (b) => ((b[1] = 0xc0), b), /your discriminator is zero in state Up/],
    ["your discriminator 0 in Init", (b) => ((b[1] = 0x80), b), /your discriminator is zero in state Init/],
    [
      "the A bit (no authentication configured)",
      (b) => {
        const withAuth = Buffer.concat([b, hex("0103 0000")]); // simple password section header
        withAuth[1] = withAuth[1]! | 0x04;
        withAuth[3] = 28;
        return withAuth;
      },
      /authentication \(A\) bit/,
    ],
    ["the A bit with a length below 26", (b) => ((b[1] = b[1]! | 0x04), b), /below the minimum 26/],
  ];

  it.each(cases)("rejects %s", (_name, corrupt, reason) => {
    expect(rejectReason(corrupt(good()))).toMatch(reason);
  });

  it("accepts your discriminator 0 in Down and AdminDown", () => {
    expect(mustDecode(encodeControlPacket({ ...base, state: "AdminDown" })).state).toBe("AdminDown");
    expect(mustDecode(encodeControlPacket({ ...base, state: "Down" })).state).toBe("Down");
  });
});

describe("BFD control packet: encoder refuses what it cannot represent", () => {
  it.each<[string, Partial<BfdControlPacket>]>([
    ["diag above 31", { diag: 32 }],
    ["detectMult above 255", { detectMult: 256 }],
    ["a negative discriminator", { myDiscriminator: -1 }],
    ["an interval above 2^32-1 µs", { desiredMinTxUs: 2 ** 32 }],
    ["a fractional interval", { requiredMinRxUs: 1.5 }],
    ["the A bit", { authenticationPresent: true }],
    ["P and F together", { poll: true, final: true }],
  ])("%s", (_name, patch) => {
    expect(() => encodeControlPacket({ ...base, ...patch })).toThrow(BfdPacketError);
  });
});
