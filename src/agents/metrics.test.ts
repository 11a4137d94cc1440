import { describe, expect, it } from "vitest";
import { GatewayMetrics, SNAT_TOP_DESTINATIONS } from "./metrics.js";

describe("gateway traffic and capacity metrics", () => {
  it("exports the kernel's counts as they are (a restarted agent reading the same counters exports the same values)", async () => {
    const reading = {
      policy: "EgressPolicy/payments/checkout",
      egressIP: "192.0.2.10",
      direction: "out" as const,
      packets: 1200,
      bytes: 96_000,
    };
    const first = new GatewayMetrics();
    first.onTraffic("shared/gw-a", [reading]);
    first.onTraffic("shared/gw-a", [{ ...reading, packets: 1500, bytes: 120_000 }]);
    const line =
      'static_egress_gateway_egress_packets_total{gateway="shared",instance="shared/gw-a",' +
      'policy="EgressPolicy/payments/checkout",egress_ip="192.0.2.10",direction="out"}';
    expect(await first.registry.metrics()).toContain(`${line} 1500\n`);
    expect(await first.registry.metrics()).toMatch(/# TYPE static_egress_gateway_egress_bytes_total counter/);
    const restarted = new GatewayMetrics();
    restarted.onTraffic("shared/gw-a", [{ ...reading, packets: 1500, bytes: 120_000 }]);
    expect(await restarted.registry.metrics()).toContain(`${line} 1500\n`);
    // A policy that went away leaves no stale series.
    restarted.onTraffic("shared/gw-a", []);
    expect(await restarted.registry.metrics()).not.toContain(line);
  });

  it("an App's usage: what left (direction out) through its dedicated IPs, labelled with the app; other policies are not", async () => {
    const m = new GatewayMetrics();
    const app = { policy: "EgressPolicy/app-web/dedicated-egress", egressIP: "203.0.113.5", app: "web" };
    m.onTraffic("app-web/se-app-web-1", [
      { ...app, direction: "out", packets: 10, bytes: 1_280 },
      { ...app, direction: "in", packets: 7, bytes: 900 },
      { policy: "EgressPolicy/payments/checkout", egressIP: "192.0.2.10", direction: "out", packets: 3, bytes: 300 },
    ]);
    const text = await m.registry.metrics();
    const labels = 'app="web",gateway="app-web",instance="app-web/se-app-web-1",egress_ip="203.0.113.5"';
    expect(text).toContain(`static_egress_app_egress_bytes_total{${labels}} 1280\n`);
    expect(text).toContain(`static_egress_app_egress_packets_total{${labels}} 10\n`);
    expect(text.match(/^static_egress_app_egress_bytes_total\{/gm)).toHaveLength(1);
    m.onTraffic("app-web/se-app-web-1", []);
    expect(await m.registry.metrics()).not.toContain("static_egress_app_egress_bytes_total{");
  });

  it("exports conntrack entries, the limit and the busiest destinations' ports per egress IP", async () => {
    const m = new GatewayMetrics();
    const ports = new Map(
      Array.from({ length: SNAT_TOP_DESTINATIONS + 2 }, (_, i) => [`198.51.100.${i}:443/tcp`, i + 1] as const),
    );
    m.onSnatUsage("shared/gw-a", 16, [{ egressIP: "192.0.2.10", entries: 40, ports }]);
    const text = await m.registry.metrics();
    expect(text).toContain(
      'static_egress_gateway_conntrack_entries{gateway="shared",instance="shared/gw-a",egress_ip="192.0.2.10"} 40',
    );
    expect(text).toContain(
      'static_egress_gateway_snat_ports_limit{gateway="shared",instance="shared/gw-a",egress_ip="192.0.2.10"} 16',
    );
    expect(text).toContain(
      `destination="198.51.100.${SNAT_TOP_DESTINATIONS + 1}:443/tcp"} ${SNAT_TOP_DESTINATIONS + 2}`,
    );
    expect(text.match(/^static_egress_gateway_snat_ports_in_use\{/gm)).toHaveLength(SNAT_TOP_DESTINATIONS);
    expect(text).not.toContain('destination="198.51.100.0:443/tcp"');
  });
});
