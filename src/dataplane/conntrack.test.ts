import { describe, expect, it } from "vitest";
import { busiest, parseConntrackLine, summarize } from "./conntrack.js";

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
