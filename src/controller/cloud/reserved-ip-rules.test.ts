import type { KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import {
  decideReservedIPs,
  dropletIdOf,
  namespaceGrants,
  parsePorts,
  portsOfIP,
  readClaims,
  requestedIP,
  type Decision,
} from "./reserved-ip-rules.js";

const IP = "203.0.113.5";
const IP2 = "203.0.113.6";

interface PodSpec {
  name: string;
  node?: string;
  ip?: string;
  phase?: string;
  ready?: boolean;
  readySince?: string;
  deleting?: boolean;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function pod(p: PodSpec): KubernetesObject {
  const labels = p.labels ?? { "staticegress.io/reserved-ip": "" };
  const annotations = p.annotations ?? (p.ip ? { "staticegress.io/reserved-ip": p.ip } : {});
  return {
    metadata: {
      name: p.name,
      namespace: "web",
      labels,
      annotations,
      creationTimestamp: new Date("2026-01-01T00:00:00Z"),
      ...(p.deleting ? { deletionTimestamp: new Date() } : {}),
    },
    spec: { nodeName: p.node ?? "n1" },
    status: {
      phase: p.phase ?? "Running",
      conditions: [
        {
          type: "Ready",
          status: p.ready === false ? "False" : "True",
          lastTransitionTime: new Date(p.readySince ?? "2026-01-01T00:01:00Z"),
        },
      ],
    },
  } as KubernetesObject;
}

function node(name: string, droplet: number | undefined, ready: boolean | undefined = true): KubernetesObject {
  return {
    metadata: { name },
    spec: droplet === undefined ? {} : { providerID: `digitalocean://${droplet}` },
    status: ready === undefined ? {} : { conditions: [{ type: "Ready", status: ready ? "True" : "Unknown" }] },
  } as KubernetesObject;
}

const NODES = [node("n1", 101), node("n2", 102), node("n3", 103)];

/** Decision for IP in a compact form: keep:101, assign:102<-101, hold, blocked. */
function decide(
  pods: PodSpec[],
  holder: string | undefined,
  nodes = NODES,
  otherHolders: [string, string][] = [],
): string {
  const { claims } = readClaims(
    pods.map((p) => pod({ ip: IP, ...p })),
    nodes,
  );
  const d = decideReservedIPs(claims, new Map<string, string | undefined>([[IP, holder], ...otherHolders])).find(
    (x) => x.ip === IP,
  );
  return short(d);
}

function short(d: Decision | undefined): string {
  if (!d) return "none";
  if (d.kind === "keep") return `keep:${d.host}`;
  if (d.kind === "assign") return `assign:${d.host}<-${d.from ?? "-"}`;
  return d.kind;
}

describe("who holds the reserved IP", () => {
  it.each<[string, PodSpec[], string | undefined, string]>([
    ["first assignment goes to the ready pod's node", [{ name: "a", node: "n1" }], undefined, "assign:101<--"],
    ["a ready holder keeps it", [{ name: "a", node: "n1" }], "101", "keep:101"],
    [
      "a ready holder keeps it even when another ready pod appears, older or not",
      [
        { name: "a", node: "n1", readySince: "2026-01-01T00:09:00Z" },
        { name: "b", node: "n2", readySince: "2026-01-01T00:00:30Z" },
      ],
      "101",
      "keep:101",
    ],
    [
      "holder's pod not ready: moves to the ready one",
      [
        { name: "a", node: "n1", ready: false },
        { name: "b", node: "n2" },
      ],
      "101",
      "assign:102<-101",
    ],
    [
      "holder's pod not Running: moves",
      [
        { name: "a", node: "n1", phase: "Failed" },
        { name: "b", node: "n2" },
      ],
      "101",
      "assign:102<-101",
    ],
    [
      "holder's pod being deleted: moves",
      [
        { name: "a", node: "n1", deleting: true },
        { name: "b", node: "n2" },
      ],
      "101",
      "assign:102<-101",
    ],
    ["holder's pod gone (no claim on it): moves", [{ name: "b", node: "n2" }], "101", "assign:102<-101"],
    ["held by a droplet that is no node: moves", [{ name: "a", node: "n1" }], "999", "assign:101<-999"],
    [
      "several candidates: the one ready longest wins",
      [
        { name: "late", node: "n2", readySince: "2026-01-01T00:05:00Z" },
        { name: "early", node: "n3", readySince: "2026-01-01T00:02:00Z" },
      ],
      undefined,
      "assign:103<--",
    ],
    [
      "same ready time: by pod name",
      [
        { name: "zz", node: "n2" },
        { name: "aa", node: "n3" },
      ],
      undefined,
      "assign:103<--",
    ],
    ["no ready pod: it stays where it is", [{ name: "a", node: "n1", ready: false }], "101", "hold"],
    ["no ready pod and unassigned: nothing to do", [{ name: "a", node: "n1", ready: false }], undefined, "hold"],
  ])("%s", (_name, pods, holder, want) => {
    expect(decide(pods, holder)).toBe(want);
  });

  it.each<[string, KubernetesObject[], string]>([
    ["holder's node deleted: moves", [node("n2", 102)], "assign:102<-101"],
    ["holder's node NotReady (Unknown): moves", [node("n1", 101, false), node("n2", 102)], "assign:102<-101"],
    ["a node without conditions counts as ready", [node("n1", 101, undefined), node("n2", 102)], "keep:101"],
    [
      "a node without a DigitalOcean providerID is not usable",
      [node("n1", undefined), node("n2", 102)],
      "assign:102<-101",
    ],
  ])("%s", (_name, nodes, want) => {
    expect(
      decide(
        [
          { name: "a", node: "n1" },
          { name: "b", node: "n2" },
        ],
        "101",
        nodes,
      ),
    ).toBe(want);
  });

  it("never aims at a droplet that holds another reserved IP (a droplet holds one)", () => {
    const pods = [
      { name: "a", node: "n1" },
      { name: "b", node: "n2" },
    ];
    expect(decide(pods, undefined, NODES, [[IP2, "101"]])).toBe("assign:102<--");
    expect(decide([{ name: "a", node: "n1" }], undefined, NODES, [[IP2, "101"]])).toBe("blocked");
  });

  it("decides several IPs together: kept holders first, then one droplet per IP", () => {
    const pods = [
      pod({ name: "a", node: "n1", ip: IP }),
      pod({ name: "b", node: "n2", ip: IP }),
      pod({ name: "c", node: "n1", ip: IP2 }),
      pod({ name: "d", node: "n2", ip: IP2 }),
    ];
    // IP2 stays on n2 (kept); IP goes to n1 although pod b on n2 became ready first.
    const ds = decideReservedIPs(readClaims(pods, NODES).claims, new Map([[IP2, "102"]]));
    expect(ds.map(short)).toEqual(["assign:101<--", "keep:102"]);
    // Both unassigned: IP (sorted first) takes n1, IP2 the next free droplet.
    expect(decideReservedIPs(readClaims(pods, NODES).claims, new Map()).map(short)).toEqual([
      "assign:101<--",
      "assign:102<--",
    ]);
  });
});

describe("what a pod asks for", () => {
  it.each<[string, Record<string, string>, Record<string, string>, unknown]>([
    [
      "ours: label + annotation",
      { "staticegress.io/reserved-ip": "" },
      { "staticegress.io/reserved-ip": IP },
      { ip: IP, key: "staticegress.io/reserved-ip" },
    ],
    [
      "ours: the label value is the IP without annotation",
      { "staticegress.io/reserved-ip": IP },
      {},
      { ip: IP, key: "staticegress.io/reserved-ip" },
    ],
    [
      "haimgel: label true + annotation",
      { "k8s.haim.dev/floating-ip": "true" },
      { "k8s.haim.dev/floating-ip": IP },
      { ip: IP, key: "k8s.haim.dev/floating-ip" },
    ],
    [
      "haimgel: annotation read first",
      { "k8s.haim.dev/floating-ip": IP2 },
      { "k8s.haim.dev/floating-ip": IP },
      { ip: IP, key: "k8s.haim.dev/floating-ip" },
    ],
    [
      "haimgel: label value without annotation",
      { "k8s.haim.dev/floating-ip": IP },
      {},
      { ip: IP, key: "k8s.haim.dev/floating-ip" },
    ],
    [
      "both keys: ours first",
      { "staticegress.io/reserved-ip": "", "k8s.haim.dev/floating-ip": "" },
      { "staticegress.io/reserved-ip": IP, "k8s.haim.dev/floating-ip": IP2 },
      { ip: IP, key: "staticegress.io/reserved-ip" },
    ],
    ["annotation without the label: not asked", {}, { "staticegress.io/reserved-ip": IP }, undefined],
  ])("%s", (_name, labels, annotations, want) => {
    expect(requestedIP(labels, annotations)).toEqual(want);
  });

  it.each<[Record<string, string>, Record<string, string>, string]>([
    [
      { "k8s.haim.dev/floating-ip": "true" },
      {},
      'label k8s.haim.dev/floating-ip (no annotation k8s.haim.dev/floating-ip): "true" is not an IPv4 address',
    ],
    [
      { "staticegress.io/reserved-ip": "" },
      { "staticegress.io/reserved-ip": "203.0.113.300" },
      'annotation staticegress.io/reserved-ip: "203.0.113.300" is not an IPv4 address',
    ],
    [
      { "staticegress.io/reserved-ip": "" },
      { "staticegress.io/reserved-ip": "2001:db8::1" },
      'annotation staticegress.io/reserved-ip: "2001:db8::1" is IPv6; only IPv4 reserved IPs are supported',
    ],
  ])("reports %j %j as a problem naming the field", (labels, annotations, message) => {
    expect(requestedIP(labels, annotations)).toEqual({ error: message });
    const { claims, problems } = readClaims([pod({ name: "x", labels, annotations })], NODES);
    expect(claims).toEqual([]);
    expect(problems).toEqual([{ pod: { namespace: "web", name: "x" }, message }]);
  });

  it("reads droplet ids only from digitalocean:// provider ids", () => {
    expect(dropletIdOf("digitalocean://3164444")).toBe("3164444");
    expect(dropletIdOf("aws:///us-east-1a/i-0abc")).toBeUndefined();
    expect(dropletIdOf("digitalocean://")).toBeUndefined();
    expect(dropletIdOf(undefined)).toBeUndefined();
  });

  it("says why a pod is not eligible", () => {
    const { claims } = readClaims(
      [pod({ name: "a", node: "gone", ip: IP }), pod({ name: "b", ready: false, ip: IP })],
      NODES,
    );
    expect(claims.map((c) => [c.pod.name, c.eligible, c.reason])).toEqual([
      ["a", false, "node gone is gone"],
      ["b", false, "pod is not Ready"],
    ]);
  });
});

describe("ports to open on the holder", () => {
  it("parses tcp/udp ports, ranges and icmp", () => {
    expect(parsePorts("tcp/443, UDP/51820,tcp/8000-8100 , icmp")).toEqual([
      { protocol: "tcp", ports: "443" },
      { protocol: "udp", ports: "51820" },
      { protocol: "tcp", ports: "8000-8100" },
      { protocol: "icmp" },
    ]);
  });

  it.each(["tcp", "tcp/0", "tcp/70000", "tcp/90-80", "sctp/5", "tcp/443/x", "icmp/8"])(
    "rejects %j, naming the item",
    (item) => {
      expect(parsePorts(`udp/53, ${item}`)).toEqual({
        error: `annotation staticegress.io/reserved-ip-ports: ${JSON.stringify(item)} is not tcp/<port>, udp/<port>, <proto>/<from>-<to> or icmp`,
      });
    },
  );

  it("an IP's ports are the union over its pods; a bad annotation is a problem and opens nothing", () => {
    const pods = [
      pod({
        name: "a",
        ip: IP,
        annotations: { "staticegress.io/reserved-ip": IP, "staticegress.io/reserved-ip-ports": "tcp/443" },
      }),
      pod({
        name: "b",
        ip: IP,
        annotations: { "staticegress.io/reserved-ip": IP, "staticegress.io/reserved-ip-ports": "udp/53, tcp/443" },
      }),
      pod({
        name: "c",
        ip: IP,
        annotations: { "staticegress.io/reserved-ip": IP, "staticegress.io/reserved-ip-ports": "tcp/x" },
      }),
    ];
    const { claims, problems } = readClaims(pods, NODES);
    expect(claims).toHaveLength(3);
    expect(portsOfIP(claims)).toEqual([
      { protocol: "tcp", ports: "443" },
      { protocol: "udp", ports: "53" },
    ]);
    expect(problems.map((p) => p.pod.name)).toEqual(["c"]);
  });
});

describe("namespace grants", () => {
  const ns = (name: string, grant?: string) =>
    ({
      metadata: { name, ...(grant !== undefined ? { annotations: { "staticegress.io/reserved-ips": grant } } : {}) },
    }) as KubernetesObject;

  it("reads the grant annotation: comma- or space-separated IPv4 addresses, nothing else", () => {
    const grants = namespaceGrants([
      ns("web", `${IP}, ${IP2}`),
      ns("api", `  ${IP2}\n10.0.0.0/8 nonsense`),
      ns("none"),
    ]);
    expect(grants("web", IP)).toBe(true);
    expect(grants("web", IP2)).toBe(true);
    expect(grants("api", IP2)).toBe(true);
    expect(grants("api", IP)).toBe(false);
    expect(grants("none", IP)).toBe(false);
    expect(grants("missing", IP)).toBe(false);
  });

  it("a pod whose namespace lacks the grant is a problem, not a claim (it cannot attract or keep the IP)", () => {
    const grants = namespaceGrants([ns("web", IP2)]);
    const { claims, problems } = readClaims([pod({ name: "a", ip: IP }), pod({ name: "b", ip: IP2 })], NODES, grants);
    expect(claims.map((c) => c.pod.name)).toEqual(["b"]);
    expect(problems).toEqual([
      {
        pod: { namespace: "web", name: "a" },
        reason: "ReservedIPNotGranted",
        message: `namespace web may not use reserved IP ${IP}: a cluster admin grants it with the annotation staticegress.io/reserved-ips on the Namespace`,
      },
    ]);
    // Its ports open nothing either: only claims count for the IP's service firewall.
    const intruder = {
      ...pod({
        name: "x",
        ip: IP2,
        annotations: { "staticegress.io/reserved-ip": IP2, "staticegress.io/reserved-ip-ports": "tcp/22" },
      }),
    };
    intruder.metadata = { ...intruder.metadata, namespace: "other" };
    const owner = pod({
      name: "o",
      ip: IP2,
      annotations: { "staticegress.io/reserved-ip": IP2, "staticegress.io/reserved-ip-ports": "tcp/443" },
    });
    expect(portsOfIP(readClaims([intruder, owner], NODES, grants).claims)).toEqual([{ protocol: "tcp", ports: "443" }]);
    // Without grants (the check turned off) both are claims.
    expect(readClaims([pod({ name: "a", ip: IP }), pod({ name: "b", ip: IP2 })], NODES).claims).toHaveLength(2);
  });
});
