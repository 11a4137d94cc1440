import { describe, expect, it } from "vitest";
import { busiest, parseConntrackLine, sourceBlocks, summarize } from "./conntrack.js";
import { formatIPv4, parseIPv4 } from "../util/ipv4.js";

// `conntrack -L --src-nat` lines as conntrack-tools 1.4.7 prints them.
const lines = [
  "udp      17 29 src=10.244.1.3 dst=198.51.100.10 sport=40000 dport=5000 [UNREPLIED] src=198.51.100.10 dst=192.0.2.10 sport=5000 dport=20001 mark=0 use=1",
  "udp      17 29 src=10.244.1.3 dst=198.51.100.10 sport=40001 dport=5000 [UNREPLIED] src=198.51.100.10 dst=192.0.2.10 sport=5000 dport=20002 mark=0 use=1",
  "tcp      6 431999 ESTABLISHED src=10.244.2.2 dst=198.51.100.10 sport=51000 dport=80 " +
    "src=198.51.100.10 dst=192.0.2.10 sport=80 dport=51000 [ASSURED] mark=0 use=1",
  "icmp     1 29 src=10.244.1.3 dst=198.51.100.10 type=8 code=0 id=7 src=198.51.100.10 dst=192.0.2.10 type=0 code=0 id=7 mark=0 use=1",
  "tcp      6 100 ESTABLISHED src=10.0.0.5 dst=203.0.113.9 sport=1 dport=2 src=203.0.113.9 dst=203.0.113.200 sport=2 dport=1 mark=0 use=1",
];

describe("SNAT usage from conntrack", () => {
  it("reads the reply tuple: the destination and the SNAT address and port", () => {
    expect(parseConntrackLine(lines[0]!)).toEqual({
      proto: "udp",
      destination: "198.51.100.10",
      destinationPort: 5000,
      snatAddress: "192.0.2.10",
      snatPort: 20001,
    });
    expect(parseConntrackLine(lines[3]!)).toMatchObject({
      proto: "icmp",
      snatAddress: "192.0.2.10",
      destinationPort: undefined,
    });
    expect(parseConntrackLine("")).toBeUndefined();
  });

  it("counts entries per SNAT address and ports per destination, only for our addresses", () => {
    const usage = summarize(
      lines.flatMap((l) => parseConntrackLine(l) ?? []),
      new Set(["192.0.2.10", "192.0.2.11"]),
    );
    expect([...usage.entries]).toEqual([["192.0.2.10", 4]]);
    expect([...usage.ports.get("192.0.2.10")!]).toEqual([
      ["198.51.100.10:5000/udp", 2],
      ["198.51.100.10:80/tcp", 1],
    ]);
  });

  it("exports only the busiest destinations", () => {
    expect(
      busiest(
        new Map([
          ["a:1/tcp", 1],
          ["b:1/tcp", 5],
          ["c:1/udp", 3],
        ]),
        2,
      ),
    ).toEqual([
      ["b:1/tcp", 5],
      ["c:1/udp", 3],
    ]);
  });
});

describe("sourceBlocks: address blocks for deleting many sources' flows", () => {
  const addresses = (from: string, n: number) => Array.from({ length: n }, (_, i) => formatIPv4(parseIPv4(from) + i));
  const covered = (blocks: { address: string; prefix: number }[], ip: string) =>
    blocks.some((b) => {
      const size = 2 ** (32 - b.prefix);
      return parseIPv4(ip) >= parseIPv4(b.address) && parseIPv4(ip) < parseIPv4(b.address) + size;
    });

  it("covers 1,000 contiguous removed pods with a handful of blocks, none holding a kept pod", () => {
    const removed = addresses("10.244.128.0", 1000);
    const kept = addresses("10.244.131.232", 9000);
    const blocks = sourceBlocks(removed, kept);
    expect(blocks).toEqual([
      { address: "10.244.128.0", prefix: 23 },
      { address: "10.244.130.0", prefix: 24 },
      { address: "10.244.131.0", prefix: 25 },
      { address: "10.244.131.128", prefix: 26 },
      { address: "10.244.131.192", prefix: 27 },
      { address: "10.244.131.224", prefix: 29 },
    ]);
    for (const ip of removed) expect(covered(blocks, ip)).toBe(true);
    for (const ip of kept) expect(covered(blocks, ip)).toBe(false);
  });

  it("interleaved kept pods split the blocks; an address both forgotten and kept (re-routed) is forgotten; nothing wider than a /16", () => {
    const removed = ["10.244.1.2", "10.244.1.4", "10.244.1.6", "10.244.1.9"];
    const kept = ["10.244.1.3", "10.244.1.5", "10.244.1.8", "10.244.1.9"];
    const blocks = sourceBlocks(removed, kept);
    for (const ip of removed) expect(covered(blocks, ip)).toBe(true);
    for (const ip of ["10.244.1.3", "10.244.1.5", "10.244.1.8"]) expect(covered(blocks, ip)).toBe(false);
    expect(blocks).toContainEqual({ address: "10.244.1.9", prefix: 32 });
    expect(sourceBlocks(["10.1.2.3"], [])).toEqual([{ address: "10.1.0.0", prefix: 16 }]);
    expect(sourceBlocks([], ["10.1.2.3"])).toEqual([]);
  });
});
