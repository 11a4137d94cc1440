import { SpecValidator, type FieldError } from "../api/v1alpha1/validate.js";
import type { EgressGateway } from "../api/v1alpha1/egress-gateway.js";
import type { ClusterEgressPolicy } from "../api/v1alpha1/egress-policy.js";
import { LIMITS, type LabelSelector } from "../api/v1alpha1/common.js";
import { AddressError, contains, normalize, parseCidr, parseIPv4, subtract, type Range } from "../util/ipv4.js";
import { assignIds, MAX_INSTANCE_ID } from "./ids.js";
import { PROBE_PORT_BASE } from "../api/datapath.js";
import { probeTarget, type Verification } from "../api/v1alpha1/verification.js";
import { checkSelector, labelProjection, matches, selectorKeys } from "./selector.js";
import type {
  ClusterSnapshot,
  FailClosedPolicy,
  PlannedVerification,
  NodeInfo,
  PodInfo,
  PolicyObject,
  ResolvedInstance,
  ValidPolicy,
  Verdict,
} from "./model.js";
import { NODE_EGRESS_IPS_ANNOTATION } from "../api/keys.js";

/**
 * Datapath cost bound of one policy: pod addresses it selects × its destination ranges after
 * exclusions, i.e. the elements it adds to a node's `divert` map and a gateway's `egress_snat`
 * map. Over it the policy is Invalid (status gives the cost and the limit), so that one tenant's
 * huge policy cannot make every map update slow for the others. Counted over the pods the
 * planner is given: all pods for the controller and gateways, a node's own pods on a node.
 */
const MAX_MAP_ELEMENTS_PER_POLICY = 32_768;

export interface ResolveOptions {
  /** Default MAX_MAP_ELEMENTS_PER_POLICY. */
  maxMapElementsPerPolicy?: number;
}

/** Pods whose traffic may be diverted: running with an address of their own. */
export function isEligiblePod(pod: PodInfo): boolean {
  return !pod.hostNetwork && pod.ips.length > 0 && pod.phase !== "Succeeded" && pod.phase !== "Failed";
}

export { NODE_EGRESS_IPS_ANNOTATION };

export function policyResource(p: PolicyObject): string {
  return p.kind === "EgressPolicy"
    ? `EgressPolicy/${p.metadata.namespace ?? "default"}/${p.metadata.name}`
    : `ClusterEgressPolicy/${p.metadata.name}`;
}

function gatewayResource(g: EgressGateway): string {
  return `EgressGateway/${g.metadata.name}`;
}

/**
 * Precedence when policies overlap on a pod and destination (documented in docs/policies.md):
 * lower `priority` first, then namespaced EgressPolicy before ClusterEgressPolicy, then the
 * older object, then the name. Every node computes the same order. Tenancy comes first, in
 * `comparePolicies`: a namespaced policy whose grant does not let it outrank ClusterEgressPolicies
 * comes after all of them.
 */
export function comparePrecedence(a: PolicyObject, b: PolicyObject): number {
  const pa = a.spec.priority ?? 100;
  const pb = b.spec.priority ?? 100;
  if (pa !== pb) return pa - pb;
  if (a.kind !== b.kind) return a.kind === "EgressPolicy" ? -1 : 1;
  return compareAge(a, b);
}

/** Full precedence of resolved policies: the tenancy tier, then `comparePrecedence`. */
function comparePolicies(a: ValidPolicy, b: ValidPolicy): number {
  const ta = a.outranksClusterPolicies ? 0 : 1;
  const tb = b.outranksClusterPolicies ? 0 : 1;
  return ta !== tb ? ta - tb : comparePrecedence(a.object, b.object);
}

/** Older first (creationTimestamp), then by resource name: who keeps a contested egress IP. */
function compareAge(a: PolicyObject, b: PolicyObject): number {
  const ta = a.metadata.creationTimestamp ?? "";
  const tb = b.metadata.creationTimestamp ?? "";
  if (ta !== tb) return ta < tb ? -1 : 1;
  const ra = policyResource(a);
  const rb = policyResource(b);
  return ra < rb ? -1 : ra > rb ? 1 : 0;
}

function compareGatewayAge(a: EgressGateway, b: EgressGateway): number {
  const ta = a.metadata.creationTimestamp ?? "";
  const tb = b.metadata.creationTimestamp ?? "";
  if (ta !== tb) return ta < tb ? -1 : 1;
  return a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;
}

export interface Resolution {
  instances: Map<string, ResolvedInstance>;
  /** gateway name -> its instance keys (valid gateways only). */
  gatewayInstances: Map<string, string[]>;
  policies: ValidPolicy[];
  /**
   * Invalid policies whose selectors still parse and that did not opt for the node IP: their
   * pods are dropped for the destinations no valid policy takes (fail-closed, lowest precedence).
   */
  failClosed: FailClosedPolicy[];
  verdicts: Verdict[];
  /** The cluster's own ranges and the gateways' addresses: never diverted, whatever a policy says. */
  neverDivert: Range[];
  /**
   * Each valid policy's counted pod addresses (its datapath cost is this × its destination
   * ranges), and the limit it was held to: a node's fast path for one pod checks the pod does
   * not carry a policy over (or back under) the limit.
   */
  selectedAddresses: Map<string, number>;
  maxMapElementsPerPolicy: number;
}

/**
 * Validates gateways and policies against each other and resolves what planning needs. An
 * invalid object gets its own verdict and is left out; it never disturbs the others.
 */
export function resolve(
  snapshot: ClusterSnapshot,
  validator = new SpecValidator(),
  options: ResolveOptions = {},
): Resolution {
  const maxCost = options.maxMapElementsPerPolicy ?? MAX_MAP_ELEMENTS_PER_POLICY;
  const verdicts: Verdict[] = [];
  const gatewayInstances = new Map<string, string[]>();
  const gatewayGrants = new Map<string, ParsedGrant[]>(); // valid gateways only
  const rawInstances: Omit<ResolvedInstance, "id">[] = [];
  const ipOwner = new Map<string, string>(); // egress IP -> instance key
  // Reserved IPs a digitalocean gateway declares but no instance carries yet (droplets booting):
  // a policy may name them; until an instance carries them its pods are fail-closed, not left out.
  const pendingIPs = new Map<string, string>(); // egress IP -> gateway name

  // Older first, like policies: a new gateway cannot take an egress IP from an existing one.
  for (const gw of [...snapshot.gateways].sort(compareGatewayAge)) {
    const resource = gatewayResource(gw);
    const spec = structuredClone(gw.spec);
    const errors = validator.check("EgressGateway", spec);
    let instances: Omit<ResolvedInstance, "id">[] = [];
    let grants: ParsedGrant[] = [];
    if (errors.length === 0) {
      instances = instancesOf(gw, spec, snapshot.nodes, errors);
      grants = parseGrants(spec.grants ?? [], errors);
    }
    const ownerHere = new Map<string, string>(); // egress IP -> instance key, within this gateway
    for (const inst of instances) {
      inst.egressIPs.forEach((ip) => {
        const owner = ipOwner.get(ip);
        const sibling = ownerHere.get(ip);
        if (owner) {
          errors.push({
            field: `spec`,
            message: `egress IP ${ip} of instance ${inst.name} is already owned by instance ${owner}`,
          });
        } else if (sibling && sibling !== inst.key) {
          errors.push({
            field: `spec`,
            message: `egress IP ${ip} is listed on two instances (${sibling}, ${inst.key})`,
          });
        }
        if (!sibling) ownerHere.set(ip, inst.key);
      });
    }
    if (errors.length > 0) {
      verdicts.push({ resource, valid: false, errors });
      continue;
    }
    for (const inst of instances) for (const ip of inst.egressIPs) ipOwner.set(ip, inst.key);
    for (const ip of spec.digitalocean?.reservedIPs ?? [])
      if (!ownerHere.has(ip) && !pendingIPs.has(ip)) pendingIPs.set(ip, gw.metadata.name);
    verdicts.push({ resource, valid: true, errors: [] });
    gatewayInstances.set(
      gw.metadata.name,
      instances.map((i) => i.key),
    );
    gatewayGrants.set(gw.metadata.name, grants);
    rawInstances.push(...instances);
  }

  const ids = assignIds(rawInstances.map((i) => i.key));
  const instances = new Map<string, ResolvedInstance>();
  for (const raw of rawInstances) instances.set(raw.key, { ...raw, id: ids.get(raw.key) as number });

  const neverDivert = neverDivertedRanges(snapshot, instances);

  const policies: ValidPolicy[] = [];
  const failClosed: FailClosedPolicy[] = [];
  const nsLabels = new Map(snapshot.namespaces.map((n) => [n.name, n.labels]));
  const selectedAddresses = selectedAddressCounter(snapshot, nsLabels);
  const claimedIPs = new Map<string, string>(); // egress IP -> policy resource
  const counted = new Map<string, number>();
  const refuse = (policy: PolicyObject, resource: string, errors: FieldError[]) => {
    verdicts.push({ resource, valid: false, errors });
    const fc = failClosedOf(policy, resource, selectedAddresses, maxCost);
    if (fc) failClosed.push(fc);
  };
  for (const policy of [...snapshot.policies].sort(compareAge)) {
    const resource = policyResource(policy);
    const spec = structuredClone(policy.spec);
    const errors = validator.check(policy.kind, spec);
    if (errors.length > 0) {
      refuse(policy, resource, errors);
      continue;
    }
    errors.push(...selectorErrors(policy, spec));
    const gatewayKeys = gatewayInstances.get(spec.gatewayName);
    if (!gatewayKeys) {
      const exists = snapshot.gateways.some((g) => g.metadata.name === spec.gatewayName);
      errors.push({
        field: "spec.gatewayName",
        message: exists
          ? `EgressGateway ${spec.gatewayName} is invalid`
          : `EgressGateway ${spec.gatewayName} not found`,
      });
    }
    // Tenancy: a namespaced policy may use only a gateway, and egress IPs, granted to its namespace.
    let grant: NamespaceGrant | undefined;
    if (policy.kind === "EgressPolicy" && gatewayKeys) {
      const ns = policy.metadata.namespace ?? "default";
      // The API server gives every Namespace this label (immutable): grants may name namespaces by it.
      grant = grantFor(gatewayGrants.get(spec.gatewayName) ?? [], {
        ...nsLabels.get(ns),
        "kubernetes.io/metadata.name": ns,
      });
      if (!grant) {
        errors.push({
          field: "spec.gatewayName",
          message:
            `EgressGateway ${spec.gatewayName} is not granted to ` +
            `namespace ${JSON.stringify(ns)} (a cluster admin grants it in the gateway's spec.grants)`,
        });
      }
    }
    const egressIPsByInstance = new Map<string, string[]>();
    spec.egressIPs.forEach((ip, i) => {
      const field = `spec.egressIPs[${i}]`;
      const owner = ipOwner.get(ip);
      const claimant = claimedIPs.get(ip);
      if (grant && !grant.allows(ip))
        errors.push({
          field,
          message: `${ip} is not granted to namespace ${JSON.stringify(policy.metadata.namespace ?? "default")}`,
        });
      else if (claimant) errors.push({ field, message: `${ip} is already used by ${claimant}` });
      else if (gatewayKeys && !owner && pendingIPs.get(ip) === spec.gatewayName) {
        // Declared by the gateway, no instance yet: valid, and carried by none for now.
      } else if (gatewayKeys && (!owner || !gatewayKeys.includes(owner))) {
        errors.push({
          field,
          message: `${ip} is not an egress IP of any instance of EgressGateway ${spec.gatewayName}`,
        });
      } else if (owner && (egressIPsByInstance.get(owner)?.length ?? 0) >= LIMITS.poolEgressIPs) {
        errors.push({
          field,
          message: `instance ${owner} already carries ${LIMITS.poolEgressIPs} of this policy's egress IPs (at most ${LIMITS.poolEgressIPs} per instance)`,
        });
      } else if (owner) egressIPsByInstance.set(owner, [...(egressIPsByInstance.get(owner) ?? []), ip]);
    });
    const destinations = planDestinations(spec.destinationCIDRs ?? ["0.0.0.0/0"], spec.excludedCIDRs ?? [], errors);
    const verification = spec.verification
      ? planVerification(spec.verification, destinations, neverDivert, errors)
      : undefined;
    if (errors.length === 0) {
      const addresses = selectedAddresses(policy);
      counted.set(resource, addresses);
      const cost = addresses * destinations.length;
      if (cost > maxCost) {
        errors.push({
          field: "spec",
          message:
            `datapath cost ${cost} map elements (${addresses} pod addresses ` +
            `× ${destinations.length} destination ranges after exclusions) is over the limit of ${maxCost} ` +
            `per policy: select fewer pods, or list fewer, wider destinations`,
        });
      }
    }
    if (errors.length > 0) {
      refuse(policy, resource, errors);
      continue;
    }
    for (const ip of spec.egressIPs) claimedIPs.set(ip, resource);
    verdicts.push({ resource, valid: true, errors: [] });
    policies.push({
      resource,
      object: policy,
      gateway: spec.gatewayName,
      destinations,
      egressIPsByInstance,
      failurePolicy: spec.failurePolicy ?? "Drop",
      priority: spec.priority ?? 100,
      outranksClusterPolicies: policy.kind === "ClusterEgressPolicy" || grant?.outrankClusterPolicies === true,
      ...(verification ? { verification } : {}),
    });
  }
  assignProbePorts(policies);
  policies.sort(comparePolicies);
  failClosed.sort((a, b) => compareAge(a.object, b.object));
  verdicts.sort((a, b) => a.resource.localeCompare(b.resource));
  return {
    instances,
    gatewayInstances,
    policies,
    failClosed,
    verdicts,
    neverDivert,
    selectedAddresses: counted,
    maxMapElementsPerPolicy: maxCost,
  };
}

/** Whether a ClusterEgressPolicy selects nodes (their own traffic) instead of pods. */
export function selectsNodes(
  policy: PolicyObject,
): policy is ClusterEgressPolicy & { spec: { nodeSelector: LabelSelector } } {
  return policy.kind === "ClusterEgressPolicy" && policy.spec.nodeSelector !== undefined;
}

/** Selector syntax (which selectors a ClusterEgressPolicy has, pods' or nodes', is its CRD's CEL rule). */
function selectorErrors(policy: PolicyObject, spec: PolicyObject["spec"]): FieldError[] {
  if (policy.kind === "EgressPolicy") return checkSelector(spec.podSelector as LabelSelector, "spec.podSelector");
  const s = spec as ClusterEgressPolicy["spec"];
  return (["podSelector", "namespaceSelector", "nodeSelector"] as const).flatMap((f) =>
    s[f] ? checkSelector(s[f], `spec.${f}`) : [],
  );
}

/** Whether `policy` selects `pod` (namespace, then namespaceSelector, then podSelector). */
export function policySelects(
  policy: PolicyObject,
  pod: PodInfo,
  nsLabels: ReadonlyMap<string, Readonly<Record<string, string>>>,
): boolean {
  if (policy.kind === "EgressPolicy") {
    if ((policy.metadata.namespace ?? "default") !== pod.namespace) return false;
  } else if (!matches(policy.spec.namespaceSelector, nsLabels.get(pod.namespace) ?? {})) return false;
  return matches(policy.spec.podSelector, pod.labels);
}

/**
 * Counts the IPv4 addresses of eligible pods a policy selects (its selectors must parse). Pods
 * are indexed by namespace, so a policy looks only at the namespaces it can select (its own, or
 * those its namespace selector matches): one pass over every pod per policy cost 5.8 s per
 * resolve at 100,000 pods and 1,000 policies (bench/README.md).
 */
function selectedAddressCounter(
  snapshot: ClusterSnapshot,
  nsLabels: ReadonlyMap<string, Readonly<Record<string, string>>>,
): (p: PolicyObject) => number {
  // Pods that agree on every label a policy reads are counted as one group (their addresses summed).
  const keys = selectorKeys(snapshot.policies.map((p) => p.spec?.podSelector));
  const byNamespace = new Map<string, Map<string, { labels: Readonly<Record<string, string>>; addresses: number }>>();
  for (const pod of snapshot.pods) {
    if (!isEligiblePod(pod)) continue;
    let groups = byNamespace.get(pod.namespace);
    if (!groups) byNamespace.set(pod.namespace, (groups = new Map()));
    const projection = labelProjection(pod.labels, keys);
    const group = groups.get(projection) ?? { labels: pod.labels, addresses: 0 };
    group.addresses += pod.ips.filter((ip) => !ip.includes(":")).length;
    groups.set(projection, group);
  }
  return (policy) => {
    const namespaces =
      policy.kind === "EgressPolicy"
        ? [policy.metadata.namespace ?? "default"]
        : [...byNamespace.keys()].filter((ns) => matches(policy.spec.namespaceSelector, nsLabels.get(ns) ?? {}));
    let n = 0;
    for (const ns of namespaces)
      for (const { labels, addresses } of byNamespace.get(ns)?.values() ?? [])
        if (matches(policy.spec.podSelector, labels)) n += addresses;
    return n;
  };
}

/**
 * What an invalid policy still does (docs/policies.md, "Bad input"): when its selectors parse and
 * it did not ask for FallbackToNodeIP, its pods are dropped for its destinations (all of them
 * when they do not parse), at the lowest precedence. Over the cost limit, the destinations
 * shrink to one covering range per pod, so the drop costs no more than one element per address.
 */
function failClosedOf(
  policy: PolicyObject,
  resource: string,
  selectedAddresses: (p: PolicyObject) => number,
  maxCost: number,
): FailClosedPolicy | undefined {
  const spec = policy.spec as Partial<PolicyObject["spec"]> & { namespaceSelector?: unknown };
  if (spec.failurePolicy === "FallbackToNodeIP") return undefined;
  const nodeSelector = (spec as { nodeSelector?: unknown }).nodeSelector;
  if (nodeSelector !== undefined) {
    // A node policy that cannot be read drops its nodes' traffic to its destinations (never the protected ranges).
    if (!parsableSelector(nodeSelector)) return undefined;
  } else {
    if (!parsableSelector(spec.podSelector)) return undefined;
    if (policy.kind === "ClusterEgressPolicy" && !parsableSelector(spec.namespaceSelector)) return undefined;
  }
  const problems: FieldError[] = [];
  const strings = (v: unknown, fallback: string[]): string[] =>
    v === undefined ? fallback : Array.isArray(v) && v.every((x) => typeof x === "string") ? v : ["not a list"];
  let destinations = planDestinations(
    strings(spec.destinationCIDRs, ["0.0.0.0/0"]),
    strings(spec.excludedCIDRs, []),
    problems,
  );
  if (problems.length > 0) destinations = [{ from: 0, to: 0xffff_ffff }];
  if (destinations.length === 0) return undefined;
  if (selectedAddresses(policy) * destinations.length > maxCost) {
    destinations = [{ from: destinations[0]!.from, to: destinations[destinations.length - 1]!.to }];
  }
  return { resource, object: policy, destinations };
}

/** A selector the planner can evaluate exactly as Kubernetes would. */
function parsableSelector(selector: unknown): selector is LabelSelector {
  if (typeof selector !== "object" || selector === null || Array.isArray(selector)) return false;
  const s = selector as { matchLabels?: unknown; matchExpressions?: unknown };
  if (
    s.matchLabels !== undefined &&
    (typeof s.matchLabels !== "object" ||
      s.matchLabels === null ||
      Object.values(s.matchLabels).some((v) => typeof v !== "string"))
  )
    return false;
  if (s.matchExpressions !== undefined) {
    if (!Array.isArray(s.matchExpressions)) return false;
    for (const r of s.matchExpressions as unknown[]) {
      const req = r as { key?: unknown; operator?: unknown; values?: unknown };
      if (typeof req !== "object" || req === null || typeof req.key !== "string") return false;
      if (!["In", "NotIn", "Exists", "DoesNotExist"].includes(req.operator as string)) return false;
      if (req.values !== undefined && (!Array.isArray(req.values) || req.values.some((v) => typeof v !== "string")))
        return false;
    }
  }
  return checkSelector(s as LabelSelector, "").length === 0;
}

interface ParsedGrant {
  namespaceSelector: LabelSelector;
  /** undefined: every egress IP of the gateway. */
  egressIPs: Range[] | undefined;
  outrankClusterPolicies: boolean;
}

/** What a namespace was granted on one gateway: the union of the grants that match it. */
interface NamespaceGrant {
  allows(ip: string): boolean;
  outrankClusterPolicies: boolean;
}

function parseGrants(grants: NonNullable<EgressGateway["spec"]["grants"]>, errors: FieldError[]): ParsedGrant[] {
  return grants.map((g, i) => {
    errors.push(...checkSelector(g.namespaceSelector, `spec.grants[${i}].namespaceSelector`));
    const egressIPs = g.egressIPs?.flatMap((text, j) => {
      try {
        return [parseCidr(text.includes("/") ? text : `${text}/32`)];
      } catch (e) {
        errors.push({ field: `spec.grants[${i}].egressIPs[${j}]`, message: (e as AddressError).message });
        return [];
      }
    });
    return {
      namespaceSelector: g.namespaceSelector,
      egressIPs: egressIPs && normalize(egressIPs),
      outrankClusterPolicies: g.outrankClusterPolicies === true,
    };
  });
}

function grantFor(
  grants: readonly ParsedGrant[],
  labels: Readonly<Record<string, string>>,
): NamespaceGrant | undefined {
  const mine = grants.filter((g) => matches(g.namespaceSelector, labels));
  if (mine.length === 0) return undefined;
  return {
    allows: (ip) => mine.some((g) => g.egressIPs === undefined || contains(g.egressIPs, parseIPv4(ip))),
    outrankClusterPolicies: mine.some((g) => g.outrankClusterPolicies),
  };
}

/**
 * Kept apart from each policy's destinations (one early `return` in the datapath), so that a
 * policy for 0.0.0.0/0 stays one range per pod instead of one per hole.
 */
function neverDivertedRanges(snapshot: ClusterSnapshot, instances: Map<string, ResolvedInstance>): Range[] {
  const { podCIDRs, serviceCIDRs, nodeCIDRs } = snapshot.network;
  // IPv4 only for now: a dual-stack cluster's IPv6 ranges are skipped, as IPv6 pod addresses are.
  const ranges = [...podCIDRs, ...serviceCIDRs, ...nodeCIDRs].filter((c) => !c.includes(":")).map(parseCidr);
  // Gateway addresses too: probes and forwarded packets must reach them directly.
  for (const inst of instances.values()) ranges.push({ from: parseIPv4(inst.address), to: parseIPv4(inst.address) });
  return normalize(ranges);
}

/**
 * Addresses a probe can never reach through a gateway (as the node's datapath never diverts them:
 * ALWAYS_LOCAL in src/dataplane/node.ts), plus loopback, "this network" and the reserved block.
 */
const NEVER_PROBED: readonly { cidr: string; what: string }[] = [
  { cidr: "0.0.0.0/8", what: '"this network"' },
  { cidr: "127.0.0.0/8", what: "loopback" },
  { cidr: "169.254.0.0/16", what: "link-local" },
  { cidr: "224.0.0.0/4", what: "multicast" },
  { cidr: "240.0.0.0/4", what: "reserved" },
];

/**
 * spec.verification, checked against what the policy diverts: its echo address must be one of
 * the policy's destinations (else the probe would not take the policy's path) and never a
 * link-local, loopback or cluster address (never diverted). Errors name the field that gave the
 * address. The source port is assigned once every policy is known (assignProbePorts).
 */
function planVerification(
  v: Verification,
  destinations: readonly Range[],
  neverDivert: readonly Range[],
  errors: FieldError[],
): PlannedVerification | undefined {
  const target = probeTarget(v);
  if (typeof target === "string") {
    errors.push({ field: "spec.verification.url", message: target });
    return undefined;
  }
  const field = v.address !== undefined ? "spec.verification.address" : "spec.verification.url";
  const ip = parseIPv4(target.address);
  const special = NEVER_PROBED.find((r) => contains([parseCidr(r.cidr)], ip));
  const problem = special
    ? `${target.address} is a ${special.what} address: a probe to it never leaves through a gateway`
    : contains(neverDivert, ip)
      ? `${target.address} is one of the cluster's own addresses (pod, service or node CIDR, or a gateway), never diverted`
      : !contains(destinations, ip)
        ? `${target.address} is not among the policy's destinations (destinationCIDRs minus excludedCIDRs): ` +
          "the probe would not take the policy's path"
        : undefined;
  if (problem) {
    errors.push({ field, message: problem });
    return undefined;
  }
  return {
    url: v.url,
    ...target,
    intervalSeconds: v.intervalSeconds ?? 60,
    timeoutSeconds: v.timeoutSeconds ?? 5,
    sourcePort: 0,
  };
}

/**
 * Each verifying policy's probe source port, from a stable id over the verifying policies (as
 * instance ids are), so that nodes and gateways computing it from the same policies agree and a
 * policy keeps its port when others come and go. Past 4095 verifying policies the rest (by
 * resource name) are not probed.
 */
function assignProbePorts(policies: readonly ValidPolicy[]): void {
  const verifying = policies
    .filter((p) => p.verification)
    .map((p) => p.resource)
    .sort()
    .slice(0, MAX_INSTANCE_ID);
  const ids = assignIds(verifying);
  for (const p of policies) {
    if (!p.verification) continue;
    const id = ids.get(p.resource);
    if (id === undefined) delete p.verification;
    else p.verification.sourcePort = PROBE_PORT_BASE + id;
  }
}

function planDestinations(included: readonly string[], excluded: readonly string[], errors: FieldError[]): Range[] {
  const parse = (list: readonly string[], field: string): Range[] =>
    list.flatMap((cidr, i) => {
      try {
        return [parseCidr(cidr)];
      } catch (e) {
        errors.push({ field: `${field}[${i}]`, message: (e as AddressError).message });
        return [];
      }
    });
  const inc = parse(included, "spec.destinationCIDRs");
  const exc = parse(excluded, "spec.excludedCIDRs");
  return normalize(subtract(inc, exc));
}

function isIPv4(text: string): boolean {
  try {
    parseIPv4(text);
    return true;
  } catch {
    return false;
  }
}

function instancesOf(
  gw: EgressGateway,
  spec: EgressGateway["spec"],
  nodes: readonly NodeInfo[],
  errors: FieldError[],
): Omit<ResolvedInstance, "id">[] {
  const gateway = gw.metadata.name;
  const health = {
    intervalMs: spec.health?.intervalMs ?? 100,
    multiplier: spec.health?.multiplier ?? 3,
    holdDownMs: spec.health?.holdDownMs ?? 5_000,
  };
  if (spec.static) {
    const seen = new Set<string>();
    return spec.static.instances.flatMap((inst, i) => {
      if (seen.has(inst.name)) {
        errors.push({ field: `spec.static.instances[${i}].name`, message: `duplicate instance name ${inst.name}` });
        return [];
      }
      seen.add(inst.name);
      return [
        {
          key: `${gateway}/${inst.name}`,
          gateway,
          name: inst.name,
          address: inst.address,
          egressIPs: inst.egressIPs,
          drain: inst.drain ?? false,
          health,
        },
      ];
    });
  }
  if (spec.digitalocean) {
    // Provisioned by the controller: the instances are the droplets it lists in status.
    return (
      (gw.status?.instances ?? [])
        .filter((i) => i.address && i.egressIPs.length > 0)
        // A droplet still booting, or about to be replaced, takes no new flows while another can.
        .map((i) => ({
          key: `${gateway}/${i.name}`,
          gateway,
          name: i.name,
          address: i.address,
          egressIPs: i.egressIPs,
          drain: i.health === "Provisioning" || i.health === "Draining",
          health,
        }))
    );
  }
  if (spec.nodes) {
    errors.push(...checkSelector(spec.nodes.nodeSelector, "spec.nodes.nodeSelector"));
    const picked = nodes
      .filter((n) => matches(spec.nodes!.nodeSelector, n.labels) && n.internalIP)
      .sort((a, b) => a.name.localeCompare(b.name))
      .slice(0, spec.nodes.count ?? 2);
    return picked.map((n) => {
      const egressIPs = (n.annotations[NODE_EGRESS_IPS_ANNOTATION] ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      // The schema checks static egress IPs; an annotation gets the same check here.
      for (const ip of egressIPs) {
        if (!isIPv4(ip)) {
          errors.push({
            field: "spec.nodes",
            message: `node ${n.name}: annotation ${NODE_EGRESS_IPS_ANNOTATION}: ${JSON.stringify(ip)} is not an IPv4 address`,
          });
        }
      }
      return {
        key: `${gateway}/${n.name}`,
        gateway,
        name: n.name,
        address: n.internalIP as string,
        egressIPs,
        drain: false,
        health,
      };
    });
  }
  return [];
}
