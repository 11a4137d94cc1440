/** Continuous verification (spec.verification): what the planner makes of it, on nodes and gateways. */
import { describe, expect, it } from "vitest";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { PROBE_PORT_BASE, PROBE_PORT_MAX } from "../api/datapath.js";
import { markFor } from "./ids.js";
import type { ClusterSnapshot, HealthView, PolicyObject } from "./model.js";
import { Planner } from "./plan.js";
import { clusterEgressPolicy, egressGateway, egressPolicy } from "./testing/arbitraries.js";

const validator = new SpecValidator();
const ECHO = "198.51.100.10";

const gateway = egressGateway("shared", {
  grants: [{ namespaceSelector: {}, outrankClusterPolicies: true }],
  static: {
    instances: [
      { name: "a", address: "10.0.1.1", egressIPs: ["203.0.113.1", "203.0.113.11", "203.0.113.21"] },
      { name: "b", address: "10.0.1.2", egressIPs: ["203.0.113.2", "203.0.113.12", "203.0.113.22"] },
    ],
  },
});

const nodes: ClusterSnapshot["nodes"] = [
  { name: "node-a", labels: { egress: "yes" }, annotations: {}, internalIP: "10.0.0.11", podCIDRs: ["10.244.1.0/24"] },
  { name: "node-b", labels: {}, annotations: {}, internalIP: "10.0.0.12", podCIDRs: ["10.244.2.0/24"] },
  { name: "node-c", labels: {}, annotations: {}, internalIP: "10.0.0.13", podCIDRs: ["10.244.3.0/24"] },
];

const snapshot = (policies: PolicyObject[]): ClusterSnapshot => ({
  policies,
  gateways: [gateway],
  pods: [
    {
      namespace: "shop",
      name: "web",
      labels: { app: "web" },
      nodeName: "node-a",
      ips: ["10.244.1.10"],
      phase: "Running",
    },
    {
      namespace: "shop",
      name: "api",
      labels: { app: "api" },
      nodeName: "node-b",
      ips: ["10.244.2.10"],
      phase: "Running",
    },
  ],
  namespaces: [{ name: "shop", labels: {} }],
  nodes,
  network: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] },
});

const verifying = (
  name: string,
  app: string,
  egressIPs: string[],
  verification: Record<string, unknown> | null = { url: `http://${ECHO}/` },
  extra: Record<string, unknown> = {},
) =>
  egressPolicy("shop", name, {
    podSelector: { matchLabels: { app } },
    gatewayName: "shared",
    egressIPs,
    destinationCIDRs: ["198.51.100.0/24"],
    ...(verification ? { verification } : {}),
    ...extra,
  } as never);

const down = (...keys: string[]): HealthView => new Map(keys.map((k) => [k, "down" as const]));

function verdict(planner: Planner, resource: string) {
  return planner.resolution.verdicts.find((v) => v.resource === resource)!;
}

describe("spec.verification, resolved", () => {
  it("gives each verifying policy a source port of its own in the probe range, kept when another comes", () => {
    const web = verifying("web", "web", ["203.0.113.1", "203.0.113.2"]);
    const api = verifying("api", "api", ["203.0.113.11", "203.0.113.12"]);
    const alone = new Planner(snapshot([web]), { validator });
    const both = new Planner(snapshot([web, api]), { validator });
    const port = (p: Planner, r: string) =>
      p.resolution.policies.find((x) => x.resource === r)!.verification!.sourcePort;
    const webPort = port(alone, "EgressPolicy/shop/web");
    expect(webPort).toBeGreaterThan(PROBE_PORT_BASE);
    expect(webPort).toBeLessThanOrEqual(PROBE_PORT_MAX);
    expect(port(both, "EgressPolicy/shop/web")).toBe(webPort);
    expect(port(both, "EgressPolicy/shop/api")).not.toBe(webPort);
    expect(both.resolution.policies.find((x) => x.resource === "EgressPolicy/shop/web")!.verification).toMatchObject({
      host: ECHO,
      address: ECHO,
      port: 80,
      path: "/",
      intervalSeconds: 60,
      timeoutSeconds: 5,
    });
  });

  it("takes a name with its address, a port and a path apart", () => {
    const p = verifying("web", "web", ["203.0.113.1"], {
      url: "http://echo.example.com:8080/ip?format=json",
      address: "198.51.100.77",
      intervalSeconds: 10,
      timeoutSeconds: 2,
    });
    const planner = new Planner(snapshot([p]), { validator });
    expect(verdict(planner, "EgressPolicy/shop/web")).toMatchObject({ valid: true });
    expect(planner.resolution.policies[0]!.verification).toMatchObject({
      host: "echo.example.com",
      address: "198.51.100.77",
      port: 8080,
      path: "/ip?format=json",
      intervalSeconds: 10,
      timeoutSeconds: 2,
    });
  });

  it.each([
    [{ url: "http://203.0.113.99/" }, "spec.verification.url", /203.0.113.99 is not among the policy's destinations/],
    [{ url: "http://169.254.169.254/" }, "spec.verification.url", /is a link-local address/],
    [{ url: "http://127.0.0.1:8080/" }, "spec.verification.url", /is a loopback address/],
    [
      { url: "http://echo.example.com/", address: "10.96.0.10" },
      "spec.verification.address",
      /cluster's own addresses/,
    ],
    [{ url: "http://10.0.1.1/" }, "spec.verification.url", /cluster's own addresses/],
    [{ url: "http://echo.example.com/" }, "spec.verification.address", /required when the url's host is a name/],
    [{ url: `http://${ECHO}/`, address: ECHO }, "spec.verification.address", /must be absent/],
    [{ url: `https://${ECHO}/` }, "spec.verification.url", /must be an echo service's URL/],
    [{ url: `http://${ECHO}:70000/` }, "spec.verification.url", /must be an echo service's URL/],
    [{ url: `http://${ECHO}/`, intervalSeconds: 5 }, "spec.verification.intervalSeconds", /must be >= 10/],
    [{ url: `http://${ECHO}/`, timeoutSeconds: 11 }, "spec.verification.timeoutSeconds", /must be <= 10/],
  ])("refuses %j on %s", (verification, field, message) => {
    const planner = new Planner(snapshot([verifying("web", "web", ["203.0.113.1"], verification)]), { validator });
    const v = verdict(planner, "EgressPolicy/shop/web");
    expect(v.valid).toBe(false);
    expect(v.errors.map((e) => e.field)).toContain(field);
    expect(v.errors.find((e) => e.field === field)!.message).toMatch(message);
  });

  it("refuses an echo address the policy excludes", () => {
    const p = verifying("web", "web", ["203.0.113.1"], null, { excludedCIDRs: [`${ECHO}/32`] });
    const planner = new Planner(snapshot([{ ...p, spec: { ...p.spec, verification: { url: `http://${ECHO}/` } } }]), {
      validator,
    });
    expect(verdict(planner, "EgressPolicy/shop/web").errors).toEqual([
      {
        field: "spec.verification.url",
        message: `${ECHO} is not among the policy's destinations (destinationCIDRs minus excludedCIDRs): the probe would not take the policy's path`,
      },
    ]);
  });
});

describe("probes on nodes", () => {
  it("are planned only for verifying policies, only on nodes that divert their traffic", () => {
    const planner = new Planner(
      snapshot([
        verifying("web", "web", ["203.0.113.1", "203.0.113.2"]),
        verifying("api", "api", ["203.0.113.11", "203.0.113.12"], null),
      ]),
      { validator },
    );
    const a = planner.planNode("node-a", new Map());
    expect(a.probes?.map((p) => p.policy)).toEqual(["EgressPolicy/shop/web"]);
    // node-b runs only api's pod (no verification), node-c no selected pod at all.
    expect(planner.planNode("node-b", new Map()).probes).toBeUndefined();
    expect(planner.planNode("node-c", new Map()).probes).toBeUndefined();
    const probe = a.probes![0]!;
    expect(probe).toMatchObject({ address: ECHO, port: 80, path: "/", host: ECHO });
  });

  it("go through the instance the node's pods use and expect that instance's IP; with it down, the other's", () => {
    const planner = new Planner(snapshot([verifying("web", "web", ["203.0.113.1", "203.0.113.2"])]), { validator });
    const ipOf: Record<string, string> = { "shared/a": "203.0.113.1", "shared/b": "203.0.113.2" };
    const np = planner.planNode("node-a", new Map());
    const used = np.entries.find((e) => e.policy === "EgressPolicy/shop/web")!.instance;
    const probe = np.probes![0]!;
    expect(probe.instance).toBe(used);
    expect(probe.mark).toBe(markFor(planner.resolution.instances.get(used)!.id));
    expect(probe.expected).toEqual([ipOf[used]]);
    const other = used === "shared/a" ? "shared/b" : "shared/a";
    const failedOver = planner.planNode("node-a", down(used)).probes![0]!;
    expect(failedOver.instance).toBe(other);
    expect(failedOver.expected).toEqual([ipOf[other]]);
    expect(failedOver.mark).toBe(markFor(planner.resolution.instances.get(other)!.id));
    // Every instance down: no probe (Ready says NoHealthyInstance), never one toward a blackhole.
    expect(planner.planNode("node-a", down("shared/a", "shared/b")).probes).toBeUndefined();
  });

  it("expect every IP of the instance's pool", () => {
    const planner = new Planner(snapshot([verifying("web", "web", ["203.0.113.1", "203.0.113.11"])]), { validator });
    expect(planner.planNode("node-a", new Map()).probes![0]!).toMatchObject({
      instance: "shared/a",
      expected: ["203.0.113.1", "203.0.113.11"],
    });
  });

  it("are planned on the nodes a nodeSelector policy selects, through the node's instance", () => {
    const hosts = clusterEgressPolicy("hosts", {
      nodeSelector: { matchLabels: { egress: "yes" } },
      gatewayName: "shared",
      egressIPs: ["203.0.113.21", "203.0.113.22"],
      destinationCIDRs: ["198.51.100.0/24"],
      verification: { url: `http://${ECHO}:8080/ip` },
    } as never);
    const planner = new Planner(snapshot([hosts]), { validator });
    const a = planner.planNode("node-a", new Map());
    const instance = a.nodeEntries![0]!.instance;
    expect(a.probes).toEqual([
      expect.objectContaining({
        policy: "ClusterEgressPolicy/hosts",
        instance,
        expected: [instance === "shared/a" ? "203.0.113.21" : "203.0.113.22"],
        port: 8080,
        path: "/ip",
      }),
    ]);
    expect(planner.planNode("node-b", new Map()).probes).toBeUndefined();
  });

  it("leave plans without verification exactly as they were", () => {
    const plain = verifying("web", "web", ["203.0.113.1", "203.0.113.2"], null);
    const planner = new Planner(snapshot([plain]), { validator });
    for (const n of nodes) expect(planner.planNode(n.name, new Map())).not.toHaveProperty("probes");
    for (const key of ["shared/a", "shared/b"]) {
      const gp = planner.planGateway(key)!;
      expect(gp).not.toHaveProperty("probes");
      expect(gp).not.toHaveProperty("nodeReturns");
      expect(gp.podsByTunnel.map((b) => b.podIP)).toEqual(["10.244.1.10"]);
    }
  });
});

describe("probes on gateways", () => {
  it("admit every node's probe on the policy's source port only, SNATed to this instance's IP of the policy", () => {
    const planner = new Planner(
      snapshot([
        verifying("web", "web", ["203.0.113.1", "203.0.113.2"]),
        verifying("api", "api", ["203.0.113.12"], { url: `http://${ECHO}:8080/` }),
      ]),
      { validator },
    );
    const port = (r: string) => planner.resolution.policies.find((x) => x.resource === r)!.verification!.sourcePort;
    const ends = planner.tunnelEnds();
    const a = planner.planGateway("shared/a")!;
    // api has no IP on a: only web's probes, from each of the three nodes.
    expect(a.probes).toEqual(
      nodes.map((n) => ({
        node: n.internalIP,
        dst: ECHO,
        dport: 80,
        sport: port("EgressPolicy/shop/web"),
        egressIP: "203.0.113.1",
        policy: "EgressPolicy/shop/web",
      })),
    );
    // Accepted only from the node's own tunnel; replies routed back through it.
    for (const n of nodes) {
      const end = ends.get(n.name)!;
      expect(a.podsByTunnel).toContainEqual({ port: end.port, podIP: n.internalIP });
      expect(a.nodeReturns).toContainEqual({ address: n.internalIP, port: end.port });
    }
    const b = planner.planGateway("shared/b")!;
    expect(new Set(b.probes!.map((p) => `${p.policy} ${p.egressIP} ${p.dport}`))).toEqual(
      new Set(["EgressPolicy/shop/web 203.0.113.2 80", "EgressPolicy/shop/api 203.0.113.12 8080"]),
    );
    // The snat map is untouched: nodes' own traffic is not admitted by verification.
    expect(b.snat.map((s) => s.podIP).sort()).toEqual(["10.244.1.10", "10.244.2.10"]);
  });
});
