import { describe, expect, it } from "vitest";
import { poolAssignments } from "./gateway-pool.js";

const hosts = [
  { name: "pool-a", vpcIP: "10.0.0.131" },
  { name: "pool-b", vpcIP: "10.0.0.132" },
  { name: "pool-c", vpcIP: "10.0.0.133" },
];
const gateway = (name: string, instances: [string, string][], opts: { app?: string; created?: string } = {}) => ({
  apiVersion: "staticegress.io/v1alpha1",
  kind: "EgressGateway",
  metadata: {
    name,
    ...(opts.app ? { labels: { "staticegress.io/app": opts.app } } : {}),
    creationTimestamp: (opts.created ?? "2026-12-01T00:00:00Z") as unknown as Date,
  },
  spec: { static: { instances: instances.map(([n, address]) => ({ name: n, address })) } },
});

describe("the lab's gateway pool: which app gateway each host serves", () => {
  it("a host serves the app gateway that names it with its VPC address", () => {
    const got = poolAssignments(hosts, [
      gateway(
        "app-web",
        [
          ["pool-a", "10.0.0.131"],
          ["pool-b", "10.0.0.132"],
        ],
        { app: "web" },
      ),
    ]);
    expect(Object.fromEntries(got)).toEqual({ "pool-a": "app-web", "pool-b": "app-web" });
  });

  it("ignores gateways the App controller did not make, and a name at another address", () => {
    const got = poolAssignments(hosts, [
      gateway("shared", [["pool-a", "10.0.0.131"]]),
      gateway("app-web", [["pool-b", "10.0.0.200"]], { app: "web" }),
    ]);
    expect(got.size).toBe(0);
  });

  it("a host two gateways name serves the older one, whatever the list order", () => {
    const older = gateway("app-b", [["pool-c", "10.0.0.133"]], { app: "b", created: "2026-12-01T00:00:00Z" });
    const newer = gateway("app-a", [["pool-c", "10.0.0.133"]], { app: "a", created: "2026-12-02T00:00:00Z" });
    expect(poolAssignments(hosts, [newer, older]).get("pool-c")).toBe("app-b");
    expect(poolAssignments(hosts, [older, newer]).get("pool-c")).toBe("app-b");
  });
});
