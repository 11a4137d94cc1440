import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { packageRoot } from "../lab/paths.js";
import type { App } from "../api/v1alpha1/app.js";
import {
  appOfPolicy,
  dedicatedIPs,
  digitalOceanDedicatedIPs,
  parseGatewayPool,
  planDedicatedEgress,
  planDigitalOceanEgress,
  type GatewayPool,
} from "./app-egress.js";

const pool: GatewayPool = {
  hosts: [
    { name: "gw-c", address: "10.0.0.103", egressIP: "203.0.113.30" },
    { name: "gw-a", address: "10.0.0.101", egressIP: "203.0.113.10" },
    { name: "gw-b", address: "10.0.0.102", egressIP: "203.0.113.20" },
  ],
};

function app(name: string, type: "AUTOASSIGN" | "DEDICATED_IP" = "DEDICATED_IP"): App {
  return {
    apiVersion: "staticegress.io/v1alpha1",
    kind: "App",
    metadata: { name, uid: `uid-${name}` },
    spec: { name, workers: [], egress: { type } },
  };
}

const gatewayWith = (name: string, hosts: string[]) => ({
  apiVersion: "staticegress.io/v1alpha1",
  kind: "EgressGateway",
  metadata: { name },
  spec: { static: { instances: hosts.map((h) => ({ name: h })) } },
});

describe("planDedicatedEgress", () => {
  it("nothing for AUTOASSIGN", () => {
    expect(planDedicatedEgress(app("web", "AUTOASSIGN"), pool, [])).toEqual({ kind: "none" });
  });

  it("two free hosts by name, a gateway granted to the app's namespace only, a fail-closed policy on every pod", () => {
    const p = planDedicatedEgress(app("web"), pool, []);
    if (p.kind !== "planned") throw new Error(p.kind);
    expect(p.hosts.map((h) => h.name)).toEqual(["gw-a", "gw-b"]);
    expect(p.gateway).toMatchObject({
      metadata: { name: "app-web", ownerReferences: [{ kind: "App", name: "web", uid: "uid-web" }] },
      spec: {
        grants: [
          {
            namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "app-web" } },
            egressIPs: ["203.0.113.10", "203.0.113.20"],
          },
        ],
      },
    });
    expect(p.policy).toMatchObject({
      metadata: { name: "dedicated-egress", namespace: "app-web" },
      spec: { podSelector: {}, gatewayName: "app-web", failurePolicy: "Drop" },
    });
  });

  it("never a host of another app's gateway; keeps its own hosts", () => {
    const taken = [gatewayWith("app-shop", ["gw-a"]), gatewayWith("app-web", ["gw-c", "gw-b"])];
    const p = planDedicatedEgress(app("web"), pool, taken);
    expect(p.kind === "planned" && p.hosts.map((h) => h.name)).toEqual(["gw-c", "gw-b"]);
    expect(planDedicatedEgress(app("new"), pool, taken)).toEqual({ kind: "exhausted", free: 0 });
    expect(planDedicatedEgress(app("web"), undefined, [])).toEqual({ kind: "exhausted", free: 0 });
  });
});

describe("dedicatedIPs", () => {
  const hosts = pool.hosts.slice(1);
  it("ASSIGNED only with the instance Up and the policy Ready; an IP no longer used is REMOVED", () => {
    expect(dedicatedIPs(hosts, { instances: [{ name: "gw-a", health: "Up" }] }, false).map((d) => d.status)).toEqual([
      "ASSIGNING",
      "ASSIGNING",
    ]);
    expect(
      dedicatedIPs(
        hosts,
        {
          instances: [
            { name: "gw-a", health: "Up" },
            { name: "gw-b", health: "Unknown" },
          ],
        },
        true,
      ).map((d) => d.status),
    ).toEqual(["ASSIGNED", "ASSIGNING"]);
    expect(
      dedicatedIPs(hosts.slice(0, 1), undefined, true, [{ ip: "203.0.113.99", id: "old", status: "ASSIGNED" }]),
    ).toEqual([
      { ip: "203.0.113.10", id: "gw-a", status: "ASSIGNING" },
      { ip: "203.0.113.99", id: "old", status: "REMOVED" },
    ]);
  });
});

describe("parseGatewayPool", () => {
  it("examples/apps/gateway-pool.yaml is a pool of four hosts", () => {
    const { pool, errors } = parseGatewayPool(
      parse(readFileSync(join(packageRoot(), "examples", "apps", "gateway-pool.yaml"), "utf8")),
    );
    expect(errors).toEqual([]);
    expect(pool?.hosts).toHaveLength(4);
  });

  it("names the bad field; refuses a repeated host or IP", () => {
    expect(parseGatewayPool(pool).errors).toEqual([]);
    expect(
      parseGatewayPool({ hosts: [{ name: "a", address: "10.0.0.1", egressIP: "203.0.113.300" }] }).errors.map(
        (e) => e.field,
      ),
    ).toEqual(["pool.hosts[0].egressIP"]);
    expect(
      parseGatewayPool({ hosts: [...pool.hosts, { ...pool.hosts[0]!, name: "gw-d", address: "10.0.0.104" }] }).errors,
    ).toEqual([{ field: "pool.hosts[3].egressIP", message: "repeats 203.0.113.30" }]);
  });
});

describe("on DigitalOcean", () => {
  const config = { region: "ams3", size: "s-1vcpu-1gb", nodeTag: "k8s:c1", vpcUUID: "vpc-1" };
  const up = (name: string, ip: string, health = "Up") => ({ name, egressIPs: [ip], health });

  it("a gateway of two droplets with allocated reserved IPs, granted to the app's namespace; keep as the app chose", () => {
    const p = planDigitalOceanEgress(app("web"), config, true, undefined);
    expect((p.gateway as { spec: unknown }).spec).toEqual({
      digitalocean: {
        region: "ams3",
        size: "s-1vcpu-1gb",
        vpcUUID: "vpc-1",
        count: 2,
        allocateReservedIPs: true,
        keepAllocatedReservedIPs: true,
        nodeTag: "k8s:c1",
      },
      grants: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "app-web" } } }],
    });
    expect(p.gateway.metadata).toMatchObject({ name: "app-web", labels: { "staticegress.io/app": "web" } });
    // Another choice is another spec: the applied digest differs, so the gateway is written again.
    const release = planDigitalOceanEgress(app("web"), config, false, undefined);
    expect(release.gateway.metadata?.annotations).not.toEqual(p.gateway.metadata?.annotations);
    // No IP known yet: no policy (a policy needs its IPs).
    expect(p.policy).toBeUndefined();
    expect(p.instances).toEqual([]);
  });

  it("the policy once each of the two instances has its reserved IP, in slot order", () => {
    const one = planDigitalOceanEgress(app("web"), config, false, {
      instances: [up("d-0", "203.0.113.5"), { name: "d-1", egressIPs: [], health: "Provisioning" }],
    });
    expect(one.policy).toBeUndefined();
    expect(one.instances.map((i) => i.ip)).toEqual(["203.0.113.5"]);
    const both = planDigitalOceanEgress(app("web"), config, false, {
      instances: [up("d-0", "203.0.113.5"), up("d-1", "203.0.113.9", "Unknown")],
    });
    expect((both.policy as { spec: unknown }).spec).toEqual({
      podSelector: {},
      gatewayName: "app-web",
      egressIPs: ["203.0.113.5", "203.0.113.9"],
      failurePolicy: "Drop",
    });
  });

  it("dedicated_ips: the id is the reserved IP; ASSIGNED only when its droplet is Up and the Ready policy names it", () => {
    const plan = planDigitalOceanEgress(app("web"), config, false, {
      instances: [up("d-0", "203.0.113.5"), up("d-1", "203.0.113.9", "Provisioning")],
    });
    const ips = ["203.0.113.5", "203.0.113.9"];
    expect(digitalOceanDedicatedIPs(plan, { ready: true, egressIPs: ips })).toEqual([
      { ip: "203.0.113.5", id: "203.0.113.5", status: "ASSIGNED" },
      { ip: "203.0.113.9", id: "203.0.113.9", status: "ASSIGNING" },
    ]);
    expect(digitalOceanDedicatedIPs(plan, { ready: false, egressIPs: ips }).map((d) => d.status)).toEqual([
      "ASSIGNING",
      "ASSIGNING",
    ]);
    // A Ready policy that does not name the IP (yet) does not carry it.
    expect(digitalOceanDedicatedIPs(plan, { ready: true, egressIPs: [] })[0]!.status).toBe("ASSIGNING");
    // An IP the app had before and no longer has: REMOVED.
    const previous = [{ ip: "203.0.113.7", id: "203.0.113.7", status: "ASSIGNED" as const }];
    expect(digitalOceanDedicatedIPs(plan, { ready: true, egressIPs: ips }, previous)[2]).toEqual({
      ip: "203.0.113.7",
      id: "203.0.113.7",
      status: "REMOVED",
    });
  });
});

describe("appOfPolicy", () => {
  const policy = (namespace: string, name: string, app?: string) => ({
    kind: "EgressPolicy",
    metadata: { name, namespace, labels: (app ? { "staticegress.io/app": app } : {}) as Record<string, string> },
  });
  it("only the App's own policy: dedicated-egress in app-<name>, labelled with that name", () => {
    expect(appOfPolicy(policy("app-web", "dedicated-egress", "web"))).toBe("web");
    expect(appOfPolicy(policy("app-web", "dedicated-egress"))).toBeUndefined();
    // The label elsewhere (a tenant labelling its own policy as another app's) is not the app's.
    expect(appOfPolicy(policy("payments", "dedicated-egress", "web"))).toBeUndefined();
    expect(appOfPolicy(policy("app-shop", "dedicated-egress", "web"))).toBeUndefined();
    expect(appOfPolicy(policy("app-web", "checkout", "web"))).toBeUndefined();
    expect(appOfPolicy({ ...policy("app-web", "dedicated-egress", "web"), kind: "ClusterEgressPolicy" })).toBe(
      undefined,
    );
  });
});
