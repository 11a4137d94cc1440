/**
 * The node agent's fast path for pod events (one pod's entries planned alone and written as an
 * element delta) against the truth, the full plan: random sequences of pod events (added,
 * relabelled, readdressed, also onto another pod's address, finished, moved to another node,
 * deleted) through a NodeAgent on the stateful fake kernel. After every event the agent's plan is
 * the full plan of the same objects and the kernel holds what a fresh node programmed with that
 * plan holds; after the sequence a full reconcile finds nothing to write. CNI admissions (an
 * address before the API shows one) and releases go through the same path.
 */
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { NodeAgent } from "./node-agent.js";
import type { KubeObject } from "../../api/objects.js";
import { snapshotFromObjects } from "../../api/objects.js";
import type { ClusterSource, SourceChange } from "../../api/source.js";
import { SpecValidator } from "../../api/v1alpha1/validate.js";
import { BIND_TABLE, NodeDataplane } from "../../dataplane/node.js";
import type { NodePlan } from "../../planner/model.js";
import { Planner } from "../../planner/plan.js";
import { egressGateway, egressPolicy } from "../../planner/testing/arbitraries.js";
import { silentLogger } from "../../util/log.js";
import { FakeKernel } from "../../../test/support/fake-kernel.js";
import { nodeTopology, podIP, readBack } from "../../../test/support/dataplane-scenario.js";

const NODE = "node-a";
const NETWORK = { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] };
const ADDRESSES = [1, 2, 3, 4, 5, 6, 7, 8];
const TABLES = ["ip static_egress", `bridge ${BIND_TABLE}`];
const validator = new SpecValidator();

/** Three policies whose selectors read two labels and whose destinations overlap (precedence, conflicts). */
const CLUSTER: KubeObject[] = [
  egressGateway("shared", {
    grants: [{ namespaceSelector: {} }],
    static: {
      instances: [
        { name: "a", address: "10.0.0.101", egressIPs: ["203.0.113.1", "203.0.113.11"] },
        { name: "b", address: "10.0.0.102", egressIPs: ["203.0.113.2", "203.0.113.12"] },
        { name: "c", address: "10.0.0.103", egressIPs: ["203.0.113.3"] },
      ],
    },
  }),
  egressPolicy(
    "shop",
    "web",
    { podSelector: { matchLabels: { app: "web" } }, gatewayName: "shared", egressIPs: ["203.0.113.1", "203.0.113.2"] },
    "2024-01-01T00:00:00Z",
  ),
  egressPolicy(
    "shop",
    "db",
    {
      podSelector: { matchExpressions: [{ key: "tier", operator: "In", values: ["db"] }] },
      gatewayName: "shared",
      egressIPs: ["203.0.113.11", "203.0.113.12"],
      destinationCIDRs: ["198.51.100.0/24", "192.0.2.0/25"],
      priority: 10,
    },
    "2024-01-02T00:00:00Z",
  ),
  egressPolicy(
    "shop",
    "api",
    {
      podSelector: { matchLabels: { app: "api" } },
      gatewayName: "shared",
      egressIPs: ["203.0.113.3"],
      destinationCIDRs: ["192.0.2.0/24"],
    },
    "2024-01-03T00:00:00Z",
  ),
  ...[
    ["node-a", "10.0.0.11", "10.244.1.0/24"],
    ["node-b", "10.0.0.12", "10.244.2.0/24"],
  ].map(([name, address, cidr]) => ({
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: name! },
    spec: { podCIDRs: [cidr!] },
    status: { addresses: [{ type: "InternalIP", address: address! }] },
  })),
  { apiVersion: "v1", kind: "Namespace", metadata: { name: "shop", labels: {} } },
];

interface PodState {
  app?: "web" | "api";
  tier?: "db";
  address?: number;
  phase: "Running" | "Succeeded" | "Pending";
  node: string;
}

function podObject(name: string, p: PodState): KubeObject {
  const labels: Record<string, string> = {};
  if (p.app) labels.app = p.app;
  if (p.tier) labels.tier = p.tier;
  const ip = p.address === undefined ? undefined : podIP(p.address);
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: "shop", labels },
    spec: { nodeName: p.node },
    status: { phase: p.phase, ...(ip ? { podIP: ip, podIPs: [{ ip }] } : {}) },
  };
}

/** A source the test feeds as an informer would: each change names its object. */
class Source implements ClusterSource {
  private notify: (change?: SourceChange) => void = () => undefined;
  constructor(private current: KubeObject[]) {}
  start(onChange: (change?: SourceChange) => void): Promise<void> {
    this.notify = onChange;
    return Promise.resolve();
  }
  objects(): readonly KubeObject[] {
    return this.current;
  }
  pod(namespace: string, name: string): KubeObject | undefined {
    return this.current.find(
      (o) => o.kind === "Pod" && o.metadata?.name === name && o.metadata.namespace === namespace,
    );
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  set(objects: KubeObject[], change?: SourceChange): void {
    this.current = objects;
    this.notify(change);
  }
}

const podArb: fc.Arbitrary<PodState> = fc
  .record({
    app: fc.option(fc.constantFrom("web" as const, "api" as const), { freq: 3 }),
    tier: fc.option(fc.constant("db" as const)),
    // Often none yet: the CNI plugin's admission then gives the pod its address first.
    address: fc.option(fc.constantFrom(...ADDRESSES), { freq: 2 }),
    phase: fc.constantFrom("Running" as const, "Running" as const, "Succeeded" as const, "Pending" as const),
    node: fc.constantFrom(NODE, NODE, NODE, NODE, "node-b"),
  })
  .map((p) => {
    const out: PodState = { phase: p.phase, node: p.node };
    if (p.app !== null) out.app = p.app;
    if (p.tier !== null) out.tier = p.tier;
    if (p.address !== null) out.address = p.address;
    return out;
  });

const NAMES = ["p0", "p1", "p2", "p3", "p4", "p5"];
type Event =
  | { pod: string; next: PodState | null } // null: deleted
  | { pod: string; admit: number } // CNI ADD with this address
  | { pod: string; release: true }; // CNI DEL
const eventArb: fc.Arbitrary<Event> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ pod: fc.constantFrom(...NAMES), next: fc.option(podArb, { freq: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ pod: fc.constantFrom(...NAMES), admit: fc.constantFrom(...ADDRESSES) }) },
  { weight: 1, arbitrary: fc.record({ pod: fc.constantFrom(...NAMES), release: fc.constant(true as const) }) },
);

/**
 * Whether no two of the node's eligible pods share an address (the kernel gives each one to one
 * pod; a pod that finished may still show the address its successor now has).
 */
function addressesUnique(pods: ReadonlyMap<string, PodState>, admitted: ReadonlyMap<string, number>): boolean {
  const held = [...effective(pods, admitted).values()]
    .filter((p) => p.node === NODE && p.address !== undefined && p.phase !== "Succeeded")
    .map((p) => p.address);
  return new Set(held).size === held.length;
}

/** The pods as the agent plans them: an admitted address stands in until the API shows one. */
function effective(pods: ReadonlyMap<string, PodState>, admitted: ReadonlyMap<string, number>): Map<string, PodState> {
  return new Map(
    [...pods].map(([name, p]) => {
      const address = p.address ?? admitted.get(name);
      return [name, address === undefined ? p : { ...p, address }];
    }),
  );
}

async function nodeKernel(): Promise<FakeKernel> {
  const k = new FakeKernel();
  await k.ip(nodeTopology(ADDRESSES));
  return k;
}

/** The full plan of these objects and what a fresh node holds once it is applied. */
async function truth(objects: readonly KubeObject[]): Promise<{ plan: NodePlan; kernel: unknown }> {
  const plan = new Planner(snapshotFromObjects(objects, NETWORK), { validator }).planNode(NODE, new Map());
  const k = await nodeKernel();
  await new NodeDataplane(k).apply(plan);
  return { plan, kernel: await readBack(k, TABLES) };
}

/**
 * The kernel without the classes no pod is in: a class whose last pod left stays, empty, until the
 * next verify (its next pod joins it with one element); a fresh apply has none.
 */
function withoutEmptyClasses(kernel: unknown): unknown {
  const k = structuredClone(kernel) as {
    nft: Record<string, { chains: Record<string, unknown>; sets: Record<string, { elem?: string[] }> }>;
  };
  const table = k.nft["ip static_egress"];
  if (!table) return k;
  const used = new Set((table.sets["pod_class"]?.elem ?? []).flatMap((e) => e.match(/class_[0-9a-f]{8}/g) ?? []));
  for (const group of [table.chains, table.sets])
    for (const name of Object.keys(group)) if (/^class_[0-9a-f]{8}$/.test(name) && !used.has(name)) delete group[name];
  return k;
}

describe("the node agent's fast path for pod events", () => {
  it("leaves the plan and the kernel exactly as the full plan of the same objects", async () => {
    let fastApplies = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(fc.constantFrom(...NAMES), podArb, { maxKeys: 4 }),
        fc.array(eventArb, { minLength: 1, maxLength: 10 }),
        async (initial, events) => {
          const pods = new Map(Object.entries(initial));
          const admitted = new Map<string, number>();
          fc.pre(addressesUnique(pods, admitted));
          const asObjects = (of: ReadonlyMap<string, PodState>) => [
            ...CLUSTER,
            ...[...of].map(([name, p]) => podObject(name, p)),
          ];
          const objects = () => asObjects(pods);
          const source = new Source(objects());
          const k = await nodeKernel();
          const dataplane = new NodeDataplane(k);
          const applyPods = vi.spyOn(dataplane, "applyPods");
          let applied: NodePlan | undefined;
          const agent = new NodeAgent({
            nodeName: NODE,
            config: { clusterNetwork: NETWORK, resyncSeconds: 3600 },
            source,
            dataplane,
            logger: silentLogger,
            onApplied: (plan) => (applied = plan),
          });
          try {
            await agent.start();
            await agent.idle();
            for (const e of events) {
              const before = new Map(pods);
              const admittedBefore = new Map(admitted);
              if ("admit" in e) admitted.set(e.pod, e.admit);
              else if ("release" in e) admitted.delete(e.pod);
              else if (e.next) pods.set(e.pod, e.next);
              else pods.delete(e.pod);
              if (!addressesUnique(pods, admitted)) {
                pods.clear();
                for (const [k, v] of before) pods.set(k, v);
                admitted.clear();
                for (const [k, v] of admittedBefore) admitted.set(k, v);
                continue;
              }
              if ("admit" in e) await agent.admitPod({ namespace: "shop", name: e.pod, ips: [podIP(e.admit)] }, 0);
              else if ("release" in e) await agent.releasePod({ namespace: "shop", name: e.pod });
              else source.set(objects(), { kind: "Pod", name: e.pod, namespace: "shop" });
              await agent.idle();
              // The API's address wins, and the admitted one is forgotten.
              if (pods.get(e.pod)?.address !== undefined) admitted.delete(e.pod);
              const want = await truth(asObjects(effective(pods, admitted)));
              expect(applied).toEqual(want.plan);
              expect(withoutEmptyClasses(await readBack(k, TABLES))).toEqual(want.kernel);
            }
            for (const r of applyPods.mock.results) if (r.type === "return" && (await r.value)) fastApplies++;
            // Anything else changed: the full reconcile finds nothing left to write.
            const writes = k.log.filter((c) => c.op === "nft").length;
            source.set(objects(), { kind: "Namespace", name: "shop" });
            await agent.idle();
            expect(k.log.filter((c) => c.op === "nft").length).toBe(writes);
          } finally {
            await agent.stop();
          }
        },
      ),
      { numRuns: 100 },
    );
    // The property is about the fast path: most events took it.
    expect(fastApplies).toBeGreaterThan(100);
  });
});
