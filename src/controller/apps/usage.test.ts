import { describe, expect, it } from "vitest";
import { nextUsage, type InstanceCounters } from "./usage.js";

const T0 = "2026-12-04T21:00:00.000Z";
/** Every IP the tests use counts as the app's. */
const ANY = [
  "203.0.113.5",
  "203.0.113.9",
  "203.0.113.10",
  "192.0.2.10",
  ...Array.from({ length: 40 }, (_, i) => `10.0.0.${i}`),
];
const entry = (
  instance: string,
  egressIP: string,
  bytes: number,
  packets: number,
  since?: string,
): InstanceCounters => ({
  instance,
  counters: [{ egressIP, bytes, packets, ...(since ? { since } : {}) }],
});

describe("an App's usage from its gateways' counters", () => {
  it("nothing before any counter; then what the counters say, per IP and in all", () => {
    expect(nextUsage(undefined, [], ANY, "t1")).toBeUndefined();
    const u = nextUsage(
      undefined,
      [entry("app-web/d-0", "203.0.113.5", 1_000, 10, T0), entry("app-web/d-1", "203.0.113.9", 500, 5, T0)],
      ANY,
      "t1",
    )!;
    expect(u).toMatchObject({ bytes: 1_500, packets: 15, since: "t1", updated_at: "t1" });
    expect(u.ips.map((i) => [i.ip, i.bytes, i.packets, i.since])).toEqual([
      ["203.0.113.5", 1_000, 10, T0],
      ["203.0.113.9", 500, 5, T0],
    ]);
  });

  it("reading the same counters again adds nothing (an agent restart writes the kernel's same values)", () => {
    const first = nextUsage(undefined, [entry("app-web/d-0", "203.0.113.5", 1_000, 10, T0)], ANY, "t1")!;
    const again = nextUsage(first, [entry("app-web/d-0", "203.0.113.5", 1_000, 10, T0)], ANY, "t2")!;
    expect(again).toEqual(first);
    const grown = nextUsage(again, [entry("app-web/d-0", "203.0.113.5", 1_600, 16, T0)], ANY, "t3")!;
    expect(grown).toMatchObject({ bytes: 1_600, packets: 16, updated_at: "t3", since: "t1" });
  });

  it("a new counter (another since: reboot, replaced droplet) counts from 0, on top of what was counted", () => {
    let u = nextUsage(undefined, [entry("app-web/d-0", "203.0.113.5", 1_000, 10, T0)], ANY, "t1")!;
    u = nextUsage(u, [entry("app-web/d-0", "203.0.113.5", 300, 3, "2026-12-04T22:00:00.000Z")], ANY, "t2")!;
    expect(u).toMatchObject({ bytes: 1_300, packets: 13 });
    // A counter that went down without a since (made before counters said when) is a new one too.
    let v = nextUsage(undefined, [entry("gw/a", "192.0.2.10", 1_000, 10)], ANY, "t1")!;
    v = nextUsage(v, [entry("gw/a", "192.0.2.10", 200, 2)], ANY, "t2")!;
    expect(v).toMatchObject({ bytes: 1_200, packets: 12 });
  });

  it("the IP moved to another instance: both instances' counters count, neither twice", () => {
    let u = nextUsage(undefined, [entry("pool/gw-a", "203.0.113.10", 1_000, 10, T0)], ANY, "t1")!;
    u = nextUsage(
      u,
      [entry("pool/gw-a", "203.0.113.10", 1_000, 10, T0), entry("pool/gw-c", "203.0.113.10", 400, 4, T0)],
      ANY,
      "t2",
    )!;
    expect(u.ips).toHaveLength(1);
    expect(u.ips[0]).toMatchObject({ bytes: 1_400, packets: 14 });
    expect(u.ips[0]!.counters!.map((c) => c.instance).sort()).toEqual(["pool/gw-a", "pool/gw-c"]);
  });

  it("an IP no longer reported keeps what it counted (REMOVED IPs stay on the bill)", () => {
    let u = nextUsage(undefined, [entry("app-web/d-0", "203.0.113.5", 1_000, 10, T0)], ANY, "t1")!;
    u = nextUsage(u, [], ANY, "t2")!;
    expect(u).toMatchObject({ bytes: 1_000, packets: 10, updated_at: "t1" });
    expect(u.ips[0]).toMatchObject({ ip: "203.0.113.5", bytes: 1_000 });
  });

  it("keeps at most 32 IPs apart, and every IP in the totals", () => {
    let u = nextUsage(undefined, [entry("i/0", "10.0.0.0", 1, 1, T0)], ANY, "t")!;
    for (let i = 1; i < 40; i++)
      u = nextUsage(
        u,
        [entry("i/0", `10.0.0.${i}`, 1, 1, `2026-12-04T21:00:${String(i).padStart(2, "0")}.000Z`)],
        ANY,
        "t",
      )!;
    expect(u.ips).toHaveLength(32);
    expect(u.bytes).toBe(40);
    expect(u.ips.map((i) => i.ip)).toContain("10.0.0.39");
    expect(u.ips.map((i) => i.ip)).not.toContain("10.0.0.0");
  });

  it("ignores counters of IPs that are not the app's (an old entry of an IP whose usage was let go)", () => {
    const u = nextUsage(undefined, [entry("i/0", "198.51.100.7", 1_000, 10, T0)], ["203.0.113.5"], "t");
    expect(u).toBeUndefined();
  });
});
