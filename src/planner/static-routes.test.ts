import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { StaticRoute } from "../api/digitalocean-v1/static-route.js";
import { intersect, parseCidr } from "../util/ipv4.js";
import type { InstanceHealth } from "./model.js";
import { planStaticRoutes, protectedRanges, staticGatewayKey, type StaticRouteNodeView } from "./static-routes.js";

const view: StaticRouteNodeView = {
  node: {
    name: "n1",
    labels: { egress: "partner" },
    annotations: {},
    internalIP: "10.116.0.2",
    podCIDRs: ["10.244.1.0/24"],
  },
  connected: ["10.116.0.0/20"],
  apiServers: ["10.116.0.100"],
  network: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.116.0.0/20"] },
};

function route(name: string, spec: StaticRoute["spec"], created = "2026-01-01T00:00:00Z"): StaticRoute {
  return {
    apiVersion: "networking.digitalocean.com/v1",
    kind: "StaticRoute",
    metadata: { name, creationTimestamp: created },
    spec,
  };
}
const healthOf = (m: Record<string, InstanceHealth>) => (key: string) => m[key];
const none = healthOf({});

describe("planStaticRoutes", () => {
  it("routes an operator-style object via its gateway, without probing", () => {
    const plan = planStaticRoutes(
      [route("ifconfig", { destinations: ["34.160.111.145"], gateway: "10.116.0.5" })],
      view,
      none,
    );
    expect(plan.routes).toEqual([{ dst: "34.160.111.145/32", via: "10.116.0.5", route: "ifconfig" }]);
    expect(plan.outcomes).toEqual([
      { name: "ifconfig", state: "Routed", gateway: "10.116.0.5", message: "routed via 10.116.0.5", errors: [] },
    ]);
    expect(plan.probes).toEqual([]);
  });

  it("fails over in order, and blackholes when every gateway is down (never the default route)", () => {
    const sr = route("p", { destinations: ["198.51.100.7/24"], gateway: "10.116.0.5", gateways: ["10.116.0.6"] });
    const k5 = staticGatewayKey("10.116.0.5");
    const k6 = staticGatewayKey("10.116.0.6");
    expect(planStaticRoutes([sr], view, none).routes).toEqual([
      { dst: "198.51.100.0/24", via: "10.116.0.5", route: "p" },
    ]);
    const failed = planStaticRoutes([sr], view, healthOf({ [k5]: "down", [k6]: "up" }));
    expect(failed.routes).toEqual([{ dst: "198.51.100.0/24", via: "10.116.0.6", route: "p" }]);
    expect(failed.outcomes[0]).toMatchObject({
      state: "Routed",
      gateway: "10.116.0.6",
      message: "routed via 10.116.0.6 (failover: 10.116.0.5 down)",
    });
    const dead = planStaticRoutes([sr], view, healthOf({ [k5]: "down", [k6]: "down" }));
    expect(dead.routes).toEqual([{ dst: "198.51.100.0/24", route: "p" }]);
    expect(dead.outcomes[0]!.state).toBe("Blackholed");
    expect(dead.probes.map((p) => p.address)).toEqual(["10.116.0.5", "10.116.0.6"]);
  });

  it("refuses, naming the field, what would cut the node off or cannot work here", () => {
    const cases: [StaticRoute["spec"], string, RegExp][] = [
      [{ destinations: ["10.116.0.100"], gateway: "10.116.0.5" }, "spec.destinations[0]", /API server/],
      [{ destinations: ["10.116.0.0/24"], gateway: "10.116.0.5" }, "spec.destinations[0]", /subnet of this node/],
      [{ destinations: ["10.244.3.0/24"], gateway: "10.116.0.5" }, "spec.destinations[0]", /pod CIDR/],
      [{ destinations: ["10.100.0.0/16"], gateway: "10.116.0.5" }, "spec.destinations[0]", /service CIDR/],
      [{ destinations: ["169.254.169.254"], gateway: "10.116.0.5" }, "spec.destinations[0]", /metadata/],
      [{ destinations: ["0.0.0.0/0"], gateway: "10.116.0.5" }, "spec.destinations[0]", /API server/],
      [{ destinations: ["198.51.100.0/24"], gateway: "10.200.0.5" }, "spec.gateway", /not on-link/],
      [
        { destinations: ["198.51.100.0/24"], gateway: "10.116.0.5", gateways: ["192.168.0.1"] },
        "spec.gateways[0]",
        /not on-link/,
      ],
      [{ destinations: ["198.51.100.0/24"], gateway: "10.116.0.2" }, "spec.gateway", /own address/],
    ];
    for (const [spec, field, why] of cases) {
      const plan = planStaticRoutes(
        [route("bad", spec), route("good", { destinations: ["203.0.113.0/24"], gateway: "10.116.0.5" })],
        view,
        none,
      );
      expect(plan.routes, JSON.stringify(spec)).toEqual([{ dst: "203.0.113.0/24", via: "10.116.0.5", route: "good" }]);
      const bad = plan.outcomes.find((o) => o.name === "bad")!;
      expect(bad.state).toBe("Refused");
      expect(bad.errors.map((e) => e.field)).toContain(field);
      expect(bad.message).toMatch(why);
    }
  });

  it("applies only on selected nodes", () => {
    const sr = route("p", {
      destinations: ["198.51.100.0/24"],
      gateway: "10.116.0.5",
      nodeSelector: { matchLabels: { egress: "other" } },
    });
    expect(planStaticRoutes([sr], view, none)).toEqual({ routes: [], outcomes: [], probes: [] });
  });

  it("gives a destination two objects name to the older one, and says so", () => {
    const older = route("b-old", { destinations: ["198.51.100.0/24"], gateway: "10.116.0.5" }, "2026-01-01T00:00:00Z");
    const newer = route(
      "a-new",
      { destinations: ["198.51.100.0/24", "203.0.113.0/24"], gateway: "10.116.0.6" },
      "2026-02-01T00:00:00Z",
    );
    const plan = planStaticRoutes([newer, older], view, none);
    expect(plan.routes).toEqual([
      { dst: "198.51.100.0/24", via: "10.116.0.5", route: "b-old" },
      { dst: "203.0.113.0/24", via: "10.116.0.6", route: "a-new" },
    ]);
    expect(plan.outcomes.find((o) => o.name === "a-new")!.message).toContain("StaticRoute b-old is older");
  });
});

describe("planStaticRoutes (properties)", () => {
  const octet = fc.integer({ min: 0, max: 255 });
  const cidr = fc
    .tuple(octet, octet, octet, octet, fc.integer({ min: 0, max: 32 }))
    .map(([a, b, c, d, l]) => `${a}.${b}.${c}.${d}/${l}`);
  const gw = fc.integer({ min: 3, max: 12 }).map((n) => `10.116.0.${n}`);
  const spec = fc.record({
    destinations: fc.array(cidr, { minLength: 1, maxLength: 4 }),
    gateway: gw,
    gateways: fc.option(fc.uniqueArray(gw, { minLength: 1, maxLength: 3 }), { nil: undefined }),
  });
  const routes = fc
    .array(spec, { maxLength: 5 })
    .map((specs) =>
      specs.map((s, i) => route(`r${i}`, s.gateways ? s : { destinations: s.destinations, gateway: s.gateway })),
    );
  const health = fc.dictionary(gw.map(staticGatewayKey), fc.constantFrom<InstanceHealth>("up", "down"));

  it("never plans a route over a protected range, and never via a gateway judged down", () => {
    fc.assert(
      fc.property(routes, health, (objects, h) => {
        const plan = planStaticRoutes(objects, view, (k) => h[k]);
        const protect = [...protectedRanges(view).map((p) => parseCidr(p.cidr)), parseCidr("169.254.0.0/16")];
        for (const r of plan.routes) {
          expect(intersect([parseCidr(r.dst)], protect)).toEqual([]);
          if (r.via)
            expect(
              objects.find((o) => o.metadata.name === r.route)!.spec.gateways === undefined ||
                h[staticGatewayKey(r.via)] !== "down",
            ).toBe(true);
        }
        // A probed route is blackholed only when every one of its gateways is down.
        for (const o of plan.outcomes.filter((x) => x.state === "Blackholed")) {
          const s = objects.find((x) => x.metadata.name === o.name)!.spec;
          for (const g of [s.gateway!, ...(s.gateways ?? [])]) expect(h[staticGatewayKey(g)]).toBe("down");
        }
        // Each destination is planned once, and the plan does not depend on the input order.
        expect(new Set(plan.routes.map((r) => r.dst)).size).toBe(plan.routes.length);
        expect(planStaticRoutes([...objects].reverse(), view, (k) => h[k])).toEqual(plan);
      }),
    );
  });
});
