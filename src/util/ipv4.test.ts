import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { IPv4Address, IPv4Cidr } from "../api/v1alpha1/common.js";
import {
  AddressError,
  cidrsOf,
  formatCidrOrRange,
  parseCidrOrRange,
  contains,
  formatIPv4,
  formatRange,
  intersect,
  normalize,
  parseCidr,
  parseIPv4,
  subtract,
  type Range,
} from "./ipv4.js";
import { ipv4NumberArb } from "../planner/testing/arbitraries.js";

const MAX = 0xffff_ffff;

describe("parseIPv4 / formatIPv4", () => {
  it("round-trips every 32-bit number", () => {
    fc.assert(
      fc.property(ipv4NumberArb(), (n) => {
        expect(parseIPv4(formatIPv4(n))).toBe(n);
      }),
      { numRuns: 2000 },
    );
  });

  it("round-trips dotted quads written without leading zeros", () => {
    fc.assert(
      fc.property(fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)), (octets) => {
        const text = octets.join(".");
        expect(formatIPv4(parseIPv4(text))).toBe(text);
      }),
    );
  });

  it.each([
    ["0.0.0.0", 0],
    ["255.255.255.255", MAX],
    ["10.0.0.1", 0x0a00_0001],
    ["192.0.2.255", 0xc000_02ff],
    ["128.0.0.0", 0x8000_0000],
  ])("parses %s", (text, n) => {
    expect(parseIPv4(text)).toBe(n);
    expect(formatIPv4(n)).toBe(text);
  });

  it.each([
    "",
    "1.2.3",
    "1.2.3.4.5",
    "256.0.0.1",
    "1.2.3.256",
    "1.2.3.-1",
    "a.b.c.d",
    "1..2.3",
    "1.2.3.",
    " 1.2.3.4",
    "1.2.3.4 ",
    "1.2.3.4\n",
    "0x1.2.3.4",
    "1e2.0.0.1",
    "1.2.3.4/32",
    "::1",
    // Leading zeros: the API schema rejects them, and some tools read them as octal.
    "01.2.3.4",
    "10.0.0.010",
    "1.2.3.0000",
  ])("rejects %j with AddressError", (text) => {
    expect(() => parseIPv4(text)).toThrow(AddressError);
  });
});

describe("parseCidr", () => {
  it.each([
    ["0.0.0.0/0", 0, MAX],
    ["10.0.0.0/8", 0x0a00_0000, 0x0aff_ffff],
    ["198.51.100.7/24", 0xc633_6400, 0xc633_64ff],
    ["203.0.113.9/32", 0xcb00_7109, 0xcb00_7109],
    ["203.0.113.9/31", 0xcb00_7108, 0xcb00_7109],
    ["255.255.255.255/1", 0x8000_0000, MAX],
    ["255.255.255.255/0", 0, MAX],
  ])("%s covers its whole block with host bits masked off", (text, from, to) => {
    expect(parseCidr(text)).toEqual({ from, to });
  });

  it("masks host bits: the block is aligned, has 2^(32-len) addresses and holds the written address", () => {
    fc.assert(
      fc.property(ipv4NumberArb(), fc.integer({ min: 0, max: 32 }), (address, len) => {
        const r = parseCidr(`${formatIPv4(address)}/${len}`);
        const size = 2 ** (32 - len);
        expect(r.to - r.from + 1).toBe(size);
        expect(r.from % size).toBe(0);
        expect(r.from <= address && address <= r.to).toBe(true);
        // Same as the bitwise mask, computed independently.
        const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
        expect(r.from).toBe((address & mask) >>> 0);
      }),
      { numRuns: 1000 },
    );
  });

  it.each([
    "1.2.3.4",
    "1.2.3.4/",
    "/8",
    "1.2.3.4/33",
    "1.2.3.4/-1",
    "1.2.3.4/1/2",
    "1.2.3.4/ 8",
    "1.2.3.4/08",
    "1.2.3.4/008",
    "1.2.3/8",
    "300.1.1.1/8",
    "1.2.3.4/a",
  ])("rejects %j with AddressError", (text) => {
    expect(() => parseCidr(text)).toThrow(AddressError);
  });

  it("names the bad input in the message", () => {
    expect(() => parseCidr("10.0.0.0/40")).toThrow(/10\.0\.0\.0\/40/);
    expect(() => parseIPv4("10.0.0")).toThrow(/10\.0\.0/);
  });
});

describe("agreement with the API schema", () => {
  // The API server validates with these patterns; the planner must accept exactly the same text.
  const addressPattern = new RegExp(IPv4Address.pattern as string);
  const cidrPattern = new RegExp(IPv4Cidr.pattern as string);
  const accepts = (parse: (t: string) => unknown, text: string) => {
    try {
      parse(text);
      return true;
    } catch (e) {
      expect(e).toBeInstanceOf(AddressError);
      return false;
    }
  };
  const octet = fc.oneof(fc.stringMatching(/^[0-9]{1,4}$/), fc.nat(255).map(String));
  const address = fc.array(octet, { minLength: 3, maxLength: 5 }).map((parts) => parts.join("."));

  it("parseIPv4 accepts exactly what the schema accepts", () => {
    fc.assert(
      fc.property(address, (text) => {
        expect(accepts(parseIPv4, text), text).toBe(addressPattern.test(text));
      }),
      { numRuns: 2000 },
    );
  });

  it("parseCidr accepts exactly what the schema accepts", () => {
    const len = fc.oneof(fc.stringMatching(/^[0-9]{1,3}$/), fc.nat(32).map(String));
    fc.assert(
      fc.property(address, len, (addr, l) => {
        const text = `${addr}/${l}`;
        expect(accepts(parseCidr, text), text).toBe(cidrPattern.test(text));
      }),
      { numRuns: 2000 },
    );
  });
});

describe("formatRange and contains", () => {
  it("formats a single address and a span", () => {
    expect(formatRange({ from: 5, to: 5 })).toBe("0.0.0.5");
    expect(formatRange(parseCidr("198.51.100.0/24"))).toBe("198.51.100.0-198.51.100.255");
  });

  it("contains is inclusive at both ends", () => {
    const ranges = [parseCidr("192.0.2.0/30"), parseCidr("203.0.113.255/32")];
    for (const [addr, inside] of [
      ["192.0.1.255", false],
      ["192.0.2.0", true],
      ["192.0.2.3", true],
      ["192.0.2.4", false],
      ["203.0.113.255", true],
      ["203.0.114.0", false],
    ] as const) {
      expect(contains(ranges, parseIPv4(addr)), addr).toBe(inside);
    }
    expect(contains([], 0)).toBe(false);
  });
});

/**
 * Range sets against a brute-force model: small address spaces placed at the bottom, the middle
 * and the very top of the 32-bit space (where an off-by-one or a signed shift would show).
 */
describe("range sets against a brute-force model", () => {
  const SPACE = 48;
  const bases = [0, 0x7fff_fff0, MAX - SPACE + 1];

  const rangesArb = (base: number) =>
    fc.array(
      fc
        .tuple(fc.nat(SPACE - 1), fc.nat(SPACE - 1))
        .map(([a, b]): Range => ({ from: base + Math.min(a, b), to: base + Math.max(a, b) })),
      { maxLength: 6 },
    );
  const caseArb = fc
    .constantFrom(...bases)
    .chain((base) => fc.tuple(fc.constant(base), rangesArb(base), rangesArb(base)));

  const members = (base: number, ranges: readonly Range[]): Set<number> => {
    const out = new Set<number>();
    for (let a = base; a < base + SPACE; a++) if (ranges.some((r) => r.from <= a && a <= r.to)) out.add(a);
    return out;
  };
  const sorted = (s: Set<number>) => [...s].sort((x, y) => x - y);

  /** Sorted, non-overlapping, non-adjacent, non-empty ranges. */
  const expectNormal = (ranges: readonly Range[]) => {
    ranges.forEach((r, i) => {
      expect(r.from).toBeLessThanOrEqual(r.to);
      const prev = ranges[i - 1];
      if (prev) expect(r.from).toBeGreaterThan(prev.to + 1);
    });
  };

  it("normalize keeps exactly the same addresses, in normal form", () => {
    fc.assert(
      fc.property(caseArb, ([base, a]) => {
        const out = normalize(a);
        expectNormal(out);
        expect(sorted(members(base, out))).toEqual(sorted(members(base, a)));
      }),
      { numRuns: 500 },
    );
  });

  it("subtract is set difference, in normal form", () => {
    fc.assert(
      fc.property(caseArb, ([base, a, b]) => {
        const out = subtract(a, b);
        expectNormal(out);
        const mb = members(base, b);
        expect(sorted(members(base, out))).toEqual(sorted(members(base, a)).filter((x) => !mb.has(x)));
      }),
      { numRuns: 500 },
    );
  });

  it("intersect is set intersection, in normal form", () => {
    fc.assert(
      fc.property(caseArb, ([base, a, b]) => {
        const out = intersect(a, b);
        expectNormal(out);
        const mb = members(base, b);
        expect(sorted(members(base, out))).toEqual(sorted(members(base, a)).filter((x) => mb.has(x)));
      }),
      { numRuns: 500 },
    );
  });

  it("does not modify its inputs", () => {
    fc.assert(
      fc.property(caseArb, ([, a, b]) => {
        const before = JSON.stringify([a, b]);
        normalize(a);
        subtract(a, b);
        intersect(a, b);
        expect(JSON.stringify([a, b])).toBe(before);
      }),
    );
  });

  it("handles the whole address space and its edges", () => {
    const all = [parseCidr("0.0.0.0/0")];
    expect(
      subtract(all, [
        { from: 0, to: 0 },
        { from: MAX, to: MAX },
      ]),
    ).toEqual([{ from: 1, to: MAX - 1 }]);
    expect(subtract(all, all)).toEqual([]);
    expect(subtract(all, [parseCidr("128.0.0.0/1")])).toEqual([parseCidr("0.0.0.0/1")]);
    expect(intersect(all, [parseCidr("10.0.0.0/8")])).toEqual([parseCidr("10.0.0.0/8")]);
    expect(normalize([parseCidr("0.0.0.0/1"), parseCidr("128.0.0.0/1")])).toEqual(all);
    expect(normalize([])).toEqual([]);
  });
});

describe("cidrsOf", () => {
  it("writes a range as the fewest CIDRs", () => {
    expect(cidrsOf(parseCidr("0.0.0.0/0"))).toEqual(["0.0.0.0/0"]);
    expect(cidrsOf({ from: parseIPv4("198.51.100.0"), to: parseIPv4("198.51.100.199") })).toEqual([
      "198.51.100.0/25",
      "198.51.100.128/26",
      "198.51.100.192/29",
    ]);
    expect(cidrsOf({ from: MAX, to: MAX })).toEqual(["255.255.255.255/32"]);
  });

  it("covers exactly the range it is given", () => {
    fc.assert(
      fc.property(ipv4NumberArb(), ipv4NumberArb(), (a, b) => {
        const r = { from: Math.min(a, b), to: Math.max(a, b) };
        const cidrs = cidrsOf(r);
        expect(normalize(cidrs.map(parseCidr))).toEqual([r]);
        expect(cidrs.length).toBeLessThanOrEqual(62);
      }),
    );
  });
});

describe("formatCidrOrRange / parseCidrOrRange", () => {
  it("writes one CIDR when the range is one, else from-to, and reads both back", () => {
    expect(formatCidrOrRange(parseCidr("198.51.100.0/24"))).toBe("198.51.100.0/24");
    expect(formatCidrOrRange({ from: 5, to: 5 })).toBe("0.0.0.5/32");
    expect(formatCidrOrRange({ from: 5, to: 6 })).toBe("0.0.0.5-0.0.0.6");
    expect(parseCidrOrRange("192.0.2.1")).toEqual({ from: parseIPv4("192.0.2.1"), to: parseIPv4("192.0.2.1") });
    expect(() => parseCidrOrRange("192.0.2.9-192.0.2.1")).toThrow(AddressError);
    fc.assert(
      fc.property(ipv4NumberArb(), ipv4NumberArb(), (a, b) => {
        const r = { from: Math.min(a, b), to: Math.max(a, b) };
        expect(parseCidrOrRange(formatCidrOrRange(r))).toEqual(r);
      }),
    );
  });
});
