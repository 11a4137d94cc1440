/**
 * Properties of whole plans on generated clusters. Plans are checked the way the datapath uses
 * them (look up (pod address, destination) in the node's map, after the never-divert set) and
 * against an oracle written straight from the documented rules: CIDR membership per address,
 * selectors, and precedence (priority, EgressPolicy before ClusterEgressPolicy, older, name).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { NO_INSTANCE_MARK } from "./ids.js";
import { contains, formatIPv4, parseCidr, parseIPv4 } from "../util/ipv4.js";
import type {
  ClusterSnapshot,
  GatewayPlan,
  HealthView,
  InstanceHealth,
  NodePlan,
  PodInfo,
  PolicyObject,
} from "./model.js";
import { Planner, selectPods } from "./plan.js";
import { matches } from "./selector.js";
import { clusterArb, shuffledSnapshot, type ClusterScenario } from "./testing/arbitraries.js";

const validator = new SpecValidator();
const RUNS = 200;

// ---- The oracle: the documented rules, address by address. ----

function resourceOf(p: PolicyObject): string {
  return p.kind === "EgressPolicy"
    ? `EgressPolicy/${p.metadata.namespace}/${p.metadata.name}`
    : `ClusterEgressPolicy/${p.metadata.name}`;
}

/** A CIDR as (network bits, shift): membership is a comparison of the top bits. */
const compiledCidrs = new Map<string, { net: number; shift: number }>();

function cidrHas(cidr: string, address: number): boolean {
  let c = compiledCidrs.get(cidr);
  if (!c) {
    const [net, len] = cidr.split("/");
    const shift = 32 - Number(len);
    c = { net: shift === 32 ? 0 : parseIPv4(net as string) >>> shift, shift };
    compiledCidrs.set(cidr, c);
  }
  return c.shift === 32 || address >>> c.shift === c.net;
}

/** The policy's own say on this destination: included and not excluded. */
function covers(p: PolicyObject, address: number): boolean {
  return (
    (p.spec.destinationCIDRs ?? ["0.0.0.0/0"]).some((c) => cidrHas(c, address)) &&
    !(p.spec.excludedCIDRs ?? []).some((c) => cidrHas(c, address))
  );
}

const ipv4Of = (pod: PodInfo) => pod.ips.find((ip) => !ip.includes(":"));
const podKey = (pod: PodInfo) => `${pod.namespace}/${pod.name}`;

function isRunningWithOwnAddress(pod: PodInfo): boolean {
  return !pod.hostNetwork && ipv4Of(pod) !== undefined && pod.phase !== "Succeeded" && pod.phase !== "Failed";
}

/**
 * Tenancy tier: 0 for ClusterEgressPolicies and EgressPolicies whose namespace's grant on their
 * gateway says outrankClusterPolicies, 1 for the other EgressPolicies (after every cluster policy).
 */
function tier(p: PolicyObject, snapshot: ClusterSnapshot): number {
  if (p.kind === "ClusterEgressPolicy") return 0;
  const labels = snapshot.namespaces.find((n) => n.name === p.metadata.namespace)?.labels ?? {};
  const grants = snapshot.gateways.find((g) => g.metadata.name === p.spec.gatewayName)?.spec.grants ?? [];
  return grants.some((g) => g.outrankClusterPolicies === true && matches(g.namespaceSelector, labels)) ? 0 : 1;
}

function precedenceKey(p: PolicyObject, snapshot: ClusterSnapshot): [number, number, number, string, string] {
  return [
    tier(p, snapshot),
    p.spec.priority ?? 100,
    p.kind === "EgressPolicy" ? 0 : 1,
    p.metadata.creationTimestamp ?? "",
    resourceOf(p),
  ];
}

function byPrecedence(a: PolicyObject, b: PolicyObject, snapshot: ClusterSnapshot): number {
  const ka = precedenceKey(a, snapshot);
  const kb = precedenceKey(b, snapshot);
  for (let i = 0; i < ka.length; i++)
    if (ka[i] !== kb[i]) return (ka[i] as number | string) < (kb[i] as number | string) ? -1 : 1;
  return 0;
}

class Oracle {
  private readonly nsLabels: Map<string, Readonly<Record<string, string>>>;
  private readonly candidatesByPod = new Map<PodInfo, PolicyObject[]>();
  private readonly deciders = new Map<string, PolicyObject | undefined>();
  private readonly instancesByPolicy = new Map<PolicyObject, Map<string, string>>();

  constructor(readonly snapshot: ClusterSnapshot) {
    this.nsLabels = new Map(snapshot.namespaces.map((n) => [n.name, n.labels]));
  }

  selects(p: PolicyObject, pod: PodInfo): boolean {
    if (!isRunningWithOwnAddress(pod)) return false;
    if (p.kind === "EgressPolicy") {
      if (p.metadata.namespace !== pod.namespace) return false;
    } else if (!matches(p.spec.namespaceSelector, this.nsLabels.get(pod.namespace) ?? {})) return false;
    return matches(p.spec.podSelector, pod.labels);
  }

  /** Policies that select the pod, best first. */
  candidates(pod: PodInfo): PolicyObject[] {
    let out = this.candidatesByPod.get(pod);
    if (!out) {
      out = this.snapshot.policies
        .filter((p) => this.selects(p, pod))
        .sort((a, b) => byPrecedence(a, b, this.snapshot));
      this.candidatesByPod.set(pod, out);
    }
    return out;
  }

  /** The one policy that decides this pod's traffic to this address, if any. */
  decider(pod: PodInfo, address: number): PolicyObject | undefined {
    const key = `${podKey(pod)}|${address}`;
    if (!this.deciders.has(key))
      this.deciders.set(
        key,
        this.candidates(pod).find((p) => covers(p, address)),
      );
    return this.deciders.get(key);
  }

  policy(resource: string): PolicyObject {
    const p = this.snapshot.policies.find((x) => resourceOf(x) === resource);
    if (!p) throw new Error(`no policy ${resource}`);
    return p;
  }

  /** instance key -> this policy's egress IP there, read from the gateway's spec. */
  instancesOf(p: PolicyObject): Map<string, string> {
    let out = this.instancesByPolicy.get(p);
    if (!out) {
      out = this.readInstancesOf(p);
      this.instancesByPolicy.set(p, out);
    }
    return out;
  }

  private readInstancesOf(p: PolicyObject): Map<string, string> {
    const gateway = this.snapshot.gateways.find((g) => g.metadata.name === p.spec.gatewayName);
    const out = new Map<string, string>();
    for (const inst of gateway?.spec.static?.instances ?? []) {
      const ip = inst.egressIPs.find((e) => p.spec.egressIPs.includes(e));
      if (ip) out.set(`${p.spec.gatewayName}/${inst.name}`, ip);
    }
    return out;
  }

  draining(instanceKey: string): boolean {
    const [gw, name] = instanceKey.split("/");
    const gateway = this.snapshot.gateways.find((g) => g.metadata.name === gw);
    return gateway?.spec.static?.instances.find((i) => i.name === name)?.drain === true;
  }

  /** Addresses never diverted: the cluster's pod, service and node CIDRs and the gateways' addresses. */
  clusterOwn(address: number): boolean {
    const { podCIDRs, serviceCIDRs, nodeCIDRs } = this.snapshot.network;
    const gatewayAddresses = this.snapshot.gateways.flatMap(
      (g) => g.spec.static?.instances.map((i) => i.address) ?? [],
    );
    return (
      [...podCIDRs, ...serviceCIDRs, ...nodeCIDRs].some((c) => cidrHas(c, address)) ||
      gatewayAddresses.some((a) => parseIPv4(a) === address)
    );
  }

  /** Destinations worth probing: every edge of every range in the cluster, and a few others. */
  sampleAddresses(): number[] {
    const out = new Set<number>([
      0,
      0xffff_ffff,
      parseIPv4("192.0.2.1"),
      parseIPv4("198.51.100.200"),
      parseIPv4("203.0.113.99"),
    ]);
    const cidrs = [
      ...this.snapshot.policies.flatMap((p) => [...(p.spec.destinationCIDRs ?? []), ...(p.spec.excludedCIDRs ?? [])]),
      ...this.snapshot.network.podCIDRs,
      ...this.snapshot.network.serviceCIDRs,
      ...this.snapshot.network.nodeCIDRs,
      ...this.snapshot.gateways.flatMap((g) => g.spec.static?.instances.map((i) => `${i.address}/32`) ?? []),
    ];
    for (const c of cidrs) {
      const r = parseCidr(c);
      for (const a of [r.from - 1, r.from, r.from + Math.floor((r.to - r.from) / 2), r.to, r.to + 1])
        if (a >= 0 && a <= 0xffff_ffff) out.add(a);
    }
    return [...out];
  }
}

// ---- The datapath's view of a plan. ----

type Keyed = { podIP: string; dst: { from: number; to: number } };
const byPodIP = new WeakMap<readonly Keyed[], Map<string, Keyed[]>>();

/** Entries of a node or gateway plan that match (pod address, destination). */
function lookup<E extends Keyed>(entries: readonly E[], podIP: string, address: number): E[] {
  let index = byPodIP.get(entries);
  if (!index) {
    index = new Map();
    for (const e of entries) index.set(e.podIP, [...(index.get(e.podIP) ?? []), e]);
    byPodIP.set(entries, index);
  }
  return ((index.get(podIP) ?? []) as E[]).filter((e) => e.dst.from <= address && address <= e.dst.to);
}

interface Planned {
  scenario: ClusterScenario;
  oracle: Oracle;
  planner: Planner;
  samples: number[];
  nodePlan(node: string, health?: HealthView): NodePlan;
  gatewayPlan(instance: string): GatewayPlan;
  podsOn(node: string): PodInfo[];
}

function plan(scenario: ClusterScenario): Planned {
  const planner = new Planner(scenario.snapshot, { validator });
  // Generated clusters are valid by construction; the properties below assume it.
  expect(planner.resolution.verdicts.filter((v) => !v.valid)).toEqual([]);
  const gatewayPlans = new Map<string, GatewayPlan>();
  return {
    scenario,
    oracle: new Oracle(scenario.snapshot),
    planner,
    samples: new Oracle(scenario.snapshot).sampleAddresses(),
    nodePlan: (node, health) => planner.planNode(node, health ?? scenario.health.get(node) ?? new Map()),
    gatewayPlan: (instance) => {
      let gp = gatewayPlans.get(instance);
      if (!gp) {
        gp = planner.planGateway(instance);
        if (!gp) throw new Error(`no gateway plan for ${instance}`);
        gatewayPlans.set(instance, gp);
      }
      return gp;
    },
    podsOn: (node) => scenario.snapshot.pods.filter((p) => p.nodeName === node),
  };
}

/**
 * What the datapath does with this pod's packet to this address, against what it should do.
 * Returns what is wrong, or undefined.
 */
function checkRoute(p: Planned, np: NodePlan, health: HealthView, pod: PodInfo, address: number): string | undefined {
  const found = lookup(np.entries, ipv4Of(pod) as string, address);
  if (found.length > 1) return `${found.length} entries match`;
  const decider = p.oracle.decider(pod, address);
  if (!decider) return found.length === 0 ? undefined : `no policy covers it, yet ${found[0]?.policy} diverts it`;
  const eligible = p.oracle.instancesOf(decider);
  const usable = [...eligible.keys()].filter((k) => health.get(k) !== "down");
  if (usable.length === 0 && decider.spec.failurePolicy === "FallbackToNodeIP") {
    return found.length === 0 ? undefined : "no usable instance and FallbackToNodeIP, yet diverted";
  }
  const entry = found[0];
  if (!entry) return `not diverted, but ${resourceOf(decider)} decides it`;
  if (entry.policy !== resourceOf(decider)) return `diverted by ${entry.policy}, but ${resourceOf(decider)} decides it`;
  if (!eligible.has(entry.instance) || !entry.instance.startsWith(`${decider.spec.gatewayName}/`)) {
    return `sent to ${entry.instance}, which carries no egress IP of ${entry.policy}`;
  }
  const planned = np.instances.find((i) => i.key === entry.instance);
  if (entry.mark !== planned?.mark) return `mark ${entry.mark} is not ${entry.instance}'s (${planned?.mark})`;
  if (usable.length > 0) {
    if (health.get(entry.instance) === "down")
      return `sent to ${entry.instance}, which is down, while ${usable.join(", ")} are not`;
    if (planned.route !== "via") return `${entry.instance} is routed ${planned.route}`;
    // Draining instances only carry traffic when nothing else can.
    if (p.oracle.draining(entry.instance) && usable.some((k) => !p.oracle.draining(k)))
      return `sent to draining ${entry.instance}`;
  } else if (planned.route !== "blackhole") {
    return `every instance is down and the policy drops, yet ${entry.instance} is routed ${planned.route}`;
  }
  return undefined;
}

const allAs = (keys: readonly string[], value: InstanceHealth): HealthView => new Map(keys.map((k) => [k, value]));

describe("node plans, evaluated like the datapath", () => {
  it("map each selected pod's traffic to exactly one instance of its own policy, healthy whenever one can be", () => {
    fc.assert(
      fc.property(clusterArb(), (scenario) => {
        const p = plan(scenario);
        for (const node of scenario.snapshot.nodes) {
          const health = scenario.health.get(node.name) ?? new Map<string, InstanceHealth>();
          const np = p.nodePlan(node.name);
          const ownPodIPs = new Set(
            p
              .podsOn(node.name)
              .filter(isRunningWithOwnAddress)
              .map((pod) => ipv4Of(pod)),
          );
          // Only this node's own running pods are in its map.
          for (const e of np.entries) expect(ownPodIPs.has(e.podIP), `${e.podIP} on ${node.name}`).toBe(true);
          const problems: string[] = [];
          for (const pod of p.podsOn(node.name).filter(isRunningWithOwnAddress)) {
            for (const address of p.samples) {
              const problem = checkRoute(p, np, health, pod, address);
              if (problem) problems.push(`${podKey(pod)} -> ${formatIPv4(address)} on ${node.name}: ${problem}`);
            }
          }
          expect(problems).toEqual([]);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("never divert excluded destinations, and leave the cluster's own ranges to neverDivert", () => {
    fc.assert(
      fc.property(clusterArb(), (scenario) => {
        const p = plan(scenario);
        for (const node of scenario.snapshot.nodes) {
          const np = p.nodePlan(node.name);
          // neverDivert is exactly the cluster's own ranges plus the gateways: no more (that would
          // silently skip a policy's destinations), no less (that would divert cluster traffic).
          const problems: string[] = [];
          for (const address of p.samples) {
            if (contains(np.neverDivert, address) !== p.oracle.clusterOwn(address))
              problems.push(`neverDivert is wrong about ${formatIPv4(address)}`);
          }
          for (const pod of p.podsOn(node.name).filter(isRunningWithOwnAddress)) {
            const podIP = ipv4Of(pod) as string;
            for (const policy of p.oracle.candidates(pod)) {
              for (const address of p.samples.filter((a) =>
                (policy.spec.excludedCIDRs ?? []).some((c) => cidrHas(c, a)),
              )) {
                // Not by this policy; a lower one may decide what this one left out, but only
                // for destinations it covers itself.
                for (const e of lookup(np.entries, podIP, address)) {
                  const where = `${podKey(pod)} -> ${formatIPv4(address)}, excluded by ${resourceOf(policy)}`;
                  if (e.policy === resourceOf(policy)) problems.push(`${where}: diverted by that very policy`);
                  else if (!covers(p.oracle.policy(e.policy), address))
                    problems.push(`${where}: diverted by ${e.policy}, which does not cover it`);
                }
              }
            }
            // The cluster's own destinations may sit inside a 0.0.0.0/0 entry; the datapath
            // checks neverDivert first, so they must all be in it.
            for (const address of p.samples.filter((a) => p.oracle.clusterOwn(a))) {
              if (!contains(np.neverDivert, address))
                problems.push(`${podKey(pod)} -> ${formatIPv4(address)}: cluster address not in neverDivert`);
            }
          }
          expect(problems).toEqual([]);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("never contain unselected, hostNetwork, address-less or finished pods", () => {
    fc.assert(
      fc.property(clusterArb(), (scenario) => {
        const p = plan(scenario);
        const selectedIPs = new Set(
          scenario.snapshot.pods
            .filter((pod) => p.oracle.candidates(pod).length > 0)
            .map((pod) => ipv4Of(pod) as string),
        );
        const excluded = scenario.snapshot.pods.filter((pod) => !selectedIPs.has(ipv4Of(pod) ?? ""));
        const allDown = allAs(scenario.instanceKeys, "down");
        for (const node of scenario.snapshot.nodes) {
          for (const np of [p.nodePlan(node.name), p.nodePlan(node.name, allDown)]) {
            for (const e of np.entries) expect(selectedIPs.has(e.podIP), e.podIP).toBe(true);
          }
        }
        for (const key of scenario.instanceKeys)
          for (const s of p.gatewayPlan(key).snat) expect(selectedIPs.has(s.podIP), s.podIP).toBe(true);
        // The hostNetwork pods' address is their node's: it must never be a pod key either way.
        for (const pod of excluded) {
          for (const ip of pod.ips) {
            for (const node of scenario.snapshot.nodes)
              expect(p.nodePlan(node.name).entries.some((e) => e.podIP === ip)).toBe(false);
          }
        }
        const { podsByPolicy } = selectPods(scenario.snapshot, p.planner.resolution);
        for (const [resource, count] of podsByPolicy) {
          const policy = p.oracle.policy(resource);
          expect(count, resource).toBe(scenario.snapshot.pods.filter((pod) => p.oracle.selects(policy, pod)).length);
        }
      }),
      { numRuns: RUNS },
    );
  });
});

describe("overlapping policies", () => {
  it("give the same plans whatever the order of policies, gateways, pods, namespaces and nodes", () => {
    fc.assert(
      fc.property(clusterArb(), fc.integer(), (scenario, seed) => {
        const render = (s: ClusterSnapshot) => {
          const planner = new Planner(s, { validator });
          return JSON.stringify({
            verdicts: planner.resolution.verdicts,
            nodes: scenario.snapshot.nodes.map((n) =>
              planner.planNode(n.name, scenario.health.get(n.name) ?? new Map()),
            ),
            gateways: scenario.instanceKeys.map((k) => planner.planGateway(k)),
          });
        };
        expect(render(shuffledSnapshot(scenario.snapshot, seed))).toBe(render(scenario.snapshot));
      }),
      { numRuns: RUNS },
    );
  });

  it("are decided by precedence, and every overlap is a conflict naming the winner", () => {
    fc.assert(
      fc.property(clusterArb(), (scenario) => {
        const p = plan(scenario);
        const { conflicts } = selectPods(scenario.snapshot, p.planner.resolution);
        const problems: string[] = [];
        for (const pod of scenario.snapshot.pods.filter(isRunningWithOwnAddress)) {
          const mine = conflicts.filter((c) => c.pod === podKey(pod));
          const candidates = p.oracle.candidates(pod);
          for (const address of p.samples) {
            const [winner, ...losers] = candidates.filter((c) => covers(c, address));
            // One conflict per losing policy, each naming the policy that decides.
            const want = losers.map((l) => `${resourceOf(winner as PolicyObject)} over ${resourceOf(l)}`).sort();
            const got = mine
              .filter((c) => contains(c.destinations, address))
              .map((c) => `${c.winner} over ${c.loser}`)
              .sort();
            if (got.join() !== want.join())
              problems.push(
                `${podKey(pod)} -> ${formatIPv4(address)}: reported [${got.join(", ")}], expected [${want.join(", ")}]`,
              );
          }
        }
        expect(problems).toEqual([]);
        // And nothing else: every reported destination is really contested, as reported.
        for (const c of conflicts) {
          const pod = scenario.snapshot.pods.find((x) => podKey(x) === c.pod) as PodInfo;
          const winner = p.oracle.policy(c.winner);
          const loser = p.oracle.policy(c.loser);
          expect(byPrecedence(winner, loser, scenario.snapshot)).toBeLessThan(0);
          expect(p.oracle.selects(loser, pod)).toBe(true);
          for (const r of c.destinations) {
            for (const address of [r.from, r.to]) {
              expect(p.oracle.decider(pod, address)).toBe(winner);
              expect(covers(loser, address)).toBe(true);
            }
          }
        }
      }),
      { numRuns: RUNS },
    );
  });
});

describe("gateway plans", () => {
  it("SNAT each pod only to an egress IP of the policy that decides its traffic (tenant isolation)", () => {
    fc.assert(
      fc.property(clusterArb(), (scenario) => {
        const p = plan(scenario);
        const running = scenario.snapshot.pods.filter(isRunningWithOwnAddress);
        for (const key of scenario.instanceKeys) {
          const gp = p.gatewayPlan(key);
          for (const s of gp.snat) {
            const policy = p.oracle.policy(s.policy);
            expect(policy.spec.egressIPs).toContain(s.egressIP);
            expect(p.oracle.instancesOf(policy).get(key)).toBe(s.egressIP);
            expect(gp.egressIPs).toContain(s.egressIP);
          }
          for (const pod of running) {
            const podIP = ipv4Of(pod) as string;
            for (const address of p.samples) {
              const decider = p.oracle.decider(pod, address);
              const egressIP = decider ? p.oracle.instancesOf(decider).get(key) : undefined;
              // Whichever instance a node picks, the gateway must SNAT the pod to its own policy's IP.
              const want = egressIP === undefined ? [] : [`${resourceOf(decider as PolicyObject)} ${egressIP}`];
              const got = lookup(gp.snat, podIP, address).map((s) => `${s.policy} ${s.egressIP}`);
              if (got.join() !== want.join())
                expect(got, `${podKey(pod)} -> ${formatIPv4(address)} at ${key}`).toEqual(want);
            }
          }
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("agree with node plans: every diverted (pod, destination) is SNATed by the instance it goes to", () => {
    fc.assert(
      fc.property(clusterArb(), (scenario) => {
        const p = plan(scenario);
        const allDown = allAs(scenario.instanceKeys, "down");
        for (const node of scenario.snapshot.nodes) {
          for (const np of [p.nodePlan(node.name), p.nodePlan(node.name, allDown)]) {
            for (const e of np.entries) {
              const gp = p.gatewayPlan(e.instance);
              const snat = gp.snat.filter(
                (s) => s.podIP === e.podIP && s.dst.from <= e.dst.from && e.dst.to <= s.dst.to,
              );
              expect(
                snat.map((s) => s.policy),
                `${e.podIP} ${e.instance}`,
              ).toEqual([e.policy]);
            }
          }
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("route replies to every node's pod CIDRs and accept only cluster nodes", () => {
    fc.assert(
      fc.property(clusterArb(), (scenario) => {
        const p = plan(scenario);
        const nodes = [...scenario.snapshot.nodes].sort((a, b) => (a.name < b.name ? -1 : 1));
        for (const key of scenario.instanceKeys) {
          const gp = p.gatewayPlan(key);
          const portOf = new Map(gp.tunnels.map((t) => [t.node, t.port]));
          expect(gp.returnRoutes).toEqual(
            nodes.flatMap((n) =>
              n.podCIDRs
                .filter((c) => !c.includes(":"))
                .map((cidr) => ({ cidr, via: n.internalIP, port: portOf.get(n.name) })),
            ),
          );
          expect(gp.nodeAddresses).toEqual(nodes.map((n) => n.internalIP));
          // Every node has a tunnel of its own port, from its own address.
          expect(gp.tunnels.map((t) => [t.node, t.address])).toEqual(nodes.map((n) => [n.name, n.internalIP]));
          expect(new Set(gp.tunnels.map((t) => t.port)).size).toBe(nodes.length);
          // A pod is admitted through its own node's tunnel only, and every SNAT'ed pod is admitted.
          const nodeOf = new Map(scenario.snapshot.pods.flatMap((pod) => pod.ips.map((ip) => [ip, pod.nodeName])));
          for (const e of gp.podsByTunnel) expect(e.port).toBe(portOf.get(nodeOf.get(e.podIP)!));
          expect(new Set(gp.podsByTunnel.map((e) => e.podIP))).toEqual(new Set(gp.snat.map((e) => e.podIP)));
        }
      }),
      { numRuns: 30 },
    );
  });
});

describe("health changes", () => {
  it("marking one instance down moves only the pods that were on it", () => {
    fc.assert(
      fc.property(clusterArb(), fc.nat(), (scenario, pick) => {
        const p = plan(scenario);
        for (const node of scenario.snapshot.nodes) {
          const before = p.nodePlan(node.name);
          // Take down an instance that carries pods here, when there is one: that is what can go wrong.
          const carrying = [...new Set(before.entries.map((e) => e.instance))].sort();
          const victims = carrying.length > 0 ? carrying : scenario.instanceKeys;
          const victim = victims[pick % victims.length] as string;
          const health = new Map(scenario.health.get(node.name));
          const after = p.nodePlan(node.name, health.set(victim, "down"));
          const afterByKey = new Map(after.entries.map((e) => [`${e.podIP} ${e.dst.from}`, e]));
          for (const e of before.entries) {
            const moved = afterByKey.get(`${e.podIP} ${e.dst.from}`);
            if (e.instance !== victim) {
              expect(moved?.instance, `${e.podIP} was on ${e.instance}`).toBe(e.instance);
            } else if (moved && moved.instance === victim) {
              // Only when nothing of its policy is left: pinned to a blackhole (fail-closed).
              expect(after.instances.find((i) => i.key === victim)?.route).toBe("blackhole");
              expect(
                [...p.oracle.instancesOf(p.oracle.policy(e.policy)).keys()].every((k) => health.get(k) === "down"),
              ).toBe(true);
            }
          }
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("fail closed: with no usable instance, Drop pods are blackholed, FallbackToNodeIP pods leave directly, both are reported", () => {
    fc.assert(
      fc.property(clusterArb(), (scenario) => {
        const p = plan(scenario);
        const allUp = allAs(scenario.instanceKeys, "up");
        for (const node of scenario.snapshot.nodes) {
          const up = p.nodePlan(node.name, allUp);
          expect(up.unavailable).toEqual([]);
          expect(up.instances.every((i) => i.route === "via")).toBe(true);
          // With every instance up, each selection on this node has entries: pods per policy.
          const podsPerPolicy = new Map<string, Set<string>>();
          for (const e of up.entries)
            podsPerPolicy.set(e.policy, (podsPerPolicy.get(e.policy) ?? new Set()).add(e.podIP));

          for (const health of [
            allAs(scenario.instanceKeys, "down"),
            scenario.health.get(node.name) ?? new Map<string, InstanceHealth>(),
          ]) {
            const np = p.nodePlan(node.name, health);
            const unusable = (resource: string) =>
              [...p.oracle.instancesOf(p.oracle.policy(resource)).keys()].every((k) => health.get(k) === "down");
            const expected = [...podsPerPolicy]
              .filter(([resource]) => unusable(resource))
              .map(([resource, pods]) => ({
                policy: resource,
                failurePolicy: p.oracle.policy(resource).spec.failurePolicy ?? "Drop",
                pods: pods.size,
              }))
              .sort((a, b) => (a.policy < b.policy ? -1 : 1));
            expect(np.unavailable).toEqual(expected);
            for (const { policy, failurePolicy } of expected) {
              const mine = np.entries.filter((e) => e.policy === policy);
              const upEntries = up.entries.filter((e) => e.policy === policy);
              if (failurePolicy === "FallbackToNodeIP") {
                expect(mine).toEqual([]);
              } else {
                // Same pods and destinations as when healthy, every one into a blackhole.
                expect(mine.map((e) => [e.podIP, e.dst])).toEqual(upEntries.map((e) => [e.podIP, e.dst]));
                for (const e of mine) expect(np.instances.find((i) => i.key === e.instance)?.route).toBe("blackhole");
              }
            }
          }
        }
      }),
      { numRuns: RUNS },
    );
  });
});

describe("invalid policies fail closed", () => {
  /** Ways a valid policy becomes invalid while its selectors still parse. */
  const breakages: { name: string; apply: (spec: PolicyObject["spec"]) => PolicyObject["spec"] }[] = [
    { name: "unknown gateway", apply: (s) => ({ ...s, gatewayName: "gone" }) },
    { name: "egress IP not granted / not on the gateway", apply: (s) => ({ ...s, egressIPs: ["192.0.2.250"] }) },
    {
      name: "destination that does not parse",
      apply: (s) => ({ ...s, destinationCIDRs: [...(s.destinationCIDRs ?? ["0.0.0.0/0"]), "198.51.100.0/40"] }),
    },
    { name: "exclusion that does not parse", apply: (s) => ({ ...s, excludedCIDRs: ["nope"] }) },
  ];

  it("a policy made invalid leaves nothing it decided on the node IP (unless FallbackToNodeIP), touches no other policy, and reaches no gateway", () => {
    fc.assert(
      fc.property(clusterArb(), fc.nat(), fc.nat(breakages.length - 1), (scenario, pick, which) => {
        const { policies } = scenario.snapshot;
        fc.pre(policies.length > 0);
        const p = plan(scenario);
        const victim = policies[pick % policies.length] as PolicyObject;
        const resource = resourceOf(victim);
        const broken = { ...victim, spec: breakages[which]!.apply(victim.spec) } as PolicyObject;
        const after = new Planner(
          { ...scenario.snapshot, policies: policies.map((x) => (x === victim ? broken : x)) },
          { validator },
        );
        expect(after.resolution.verdicts.find((v) => v.resource === resource)?.valid).toBe(false);
        const fallback = victim.spec.failurePolicy === "FallbackToNodeIP";
        const problems: string[] = [];
        for (const node of scenario.snapshot.nodes) {
          const health = scenario.health.get(node.name) ?? new Map<string, InstanceHealth>();
          const before = p.nodePlan(node.name, health);
          const now = after.planNode(node.name, health);
          for (const pod of p.podsOn(node.name).filter(isRunningWithOwnAddress)) {
            const podIP = ipv4Of(pod) as string;
            for (const address of p.samples) {
              const was = lookup(before.entries, podIP, address);
              const is = lookup(now.entries, podIP, address);
              const where = `${podKey(pod)} -> ${formatIPv4(address)} on ${node.name}`;
              if (is.length > 1) problems.push(`${where}: ${is.length} entries`);
              const e = is[0];
              const isDrop =
                e !== undefined && e.policy === resource && e.instance === "" && e.mark === NO_INSTANCE_MARK;
              if (e && e.policy === resource && !isDrop) problems.push(`${where}: the invalid policy still diverts`);
              const decider = p.oracle.decider(pod, address);
              if (decider === victim) {
                // Decided by the victim before: now dropped, or taken by another valid policy; the node
                // IP only by choice: the victim's, or that of the valid policy that decides now (its
                // own FallbackToNodeIP when its instances are down).
                const successor = p.oracle
                  .candidates(pod)
                  .find(
                    (c) =>
                      c !== victim &&
                      covers(c, address) &&
                      after.resolution.verdicts.find((v) => v.resource === resourceOf(c))?.valid,
                  );
                const chosen = fallback || successor?.spec.failurePolicy === "FallbackToNodeIP";
                if (!e && !chosen) problems.push(`${where}: left with the node IP after ${resource} became invalid`);
                if (isDrop && fallback)
                  problems.push(`${where}: dropped although ${resource} asked for FallbackToNodeIP`);
              } else if (decider) {
                // Another policy's decision stands.
                const same = (x: typeof e) => (x ? `${x.policy} ${x.instance} ${x.mark}` : "node IP");
                if (same(e) !== same(was[0])) problems.push(`${where}: ${same(was[0])} became ${same(e)}`);
              } else if (e && !isDrop) {
                problems.push(`${where}: newly diverted by ${e.policy}`);
              }
            }
          }
        }
        expect(problems).toEqual([]);
        for (const key of scenario.instanceKeys)
          expect(after.planGateway(key)?.snat.filter((s) => s.policy === resource)).toEqual([]);
      }),
      { numRuns: RUNS },
    );
  });
});
