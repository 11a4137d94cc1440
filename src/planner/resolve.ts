import { SpecValidator, type FieldError } from "../api/v1alpha1/validate.js";
import type { EgressGateway } from "../api/v1alpha1/egress-gateway.js";
import { AddressError, normalize, parseCidr, parseIPv4, subtract, type Range } from "./ipv4.js";
import { assignIds } from "./ids.js";
import { checkSelector, matches } from "./selector.js";
import type { ClusterSnapshot, NodeInfo, PolicyObject, ResolvedInstance, ValidPolicy, Verdict } from "./model.js";

/** Node annotation listing the egress IPs a `nodes`-source gateway instance owns. */
export const NODE_EGRESS_IPS_ANNOTATION = "staticegress.io/egress-ips";

export function policyResource(p: PolicyObject): string {
  return p.kind === "EgressPolicy" ? `EgressPolicy/${p.metadata.namespace ?? "default"}/${p.metadata.name}` : `ClusterEgressPolicy/${p.metadata.name}`;
}

export function gatewayResource(g: EgressGateway): string {
  return `EgressGateway/${g.metadata.name}`;
}

/**
 * Precedence when policies overlap on a pod and destination (documented in docs/policies.md):
 * lower `priority` first, then namespaced EgressPolicy before ClusterEgressPolicy, then the
 * older object, then the name. Every node computes the same order.
 */
export function comparePrecedence(a: PolicyObject, b: PolicyObject): number {
  const pa = a.spec.priority ?? 100;
  const pb = b.spec.priority ?? 100;
  if (pa !== pb) return pa - pb;
  if (a.kind !== b.kind) return a.kind === "EgressPolicy" ? -1 : 1;
  return compareAge(a, b);
}

/** Older first (creationTimestamp), then by resource name: who keeps a contested egress IP. */
export function compareAge(a: PolicyObject, b: PolicyObject): number {
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
  verdicts: Verdict[];
  /** The cluster's own ranges and the gateways' addresses: never diverted, whatever a policy says. */
  neverDivert: Range[];
}

/**
 * Validates gateways and policies against each other and resolves what planning needs. An
 * invalid object gets its own verdict and is left out; it never disturbs the others.
 */
export function resolve(snapshot: ClusterSnapshot, validator = new SpecValidator()): Resolution {
  const verdicts: Verdict[] = [];
  const gatewayInstances = new Map<string, string[]>();
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
    if (errors.length === 0) instances = instancesOf(gw, spec, snapshot.nodes, errors);
    const ownerHere = new Map<string, string>(); // egress IP -> instance key, within this gateway
    for (const inst of instances) {
      inst.egressIPs.forEach((ip) => {
        const owner = ipOwner.get(ip);
        const sibling = ownerHere.get(ip);
        if (owner) {
          errors.push({ field: `spec`, message: `egress IP ${ip} of instance ${inst.name} is already owned by instance ${owner}` });
        } else if (sibling && sibling !== inst.key) {
          errors.push({ field: `spec`, message: `egress IP ${ip} is listed on two instances (${sibling}, ${inst.key})` });
        }
        if (!sibling) ownerHere.set(ip, inst.key);
      });
    }
    if (errors.length > 0) {
      verdicts.push({ resource, valid: false, errors });
      continue;
    }
    for (const inst of instances) for (const ip of inst.egressIPs) ipOwner.set(ip, inst.key);
    for (const ip of spec.digitalocean?.reservedIPs ?? []) if (!ownerHere.has(ip) && !pendingIPs.has(ip)) pendingIPs.set(ip, gw.metadata.name);
    verdicts.push({ resource, valid: true, errors: [] });
    gatewayInstances.set(gw.metadata.name, instances.map((i) => i.key));
    rawInstances.push(...instances);
  }

  const ids = assignIds(rawInstances.map((i) => i.key));
  const instances = new Map<string, ResolvedInstance>();
  for (const raw of rawInstances) instances.set(raw.key, { ...raw, id: ids.get(raw.key) as number });

  const neverDivert = neverDivertedRanges(snapshot, instances);

  const policies: ValidPolicy[] = [];
  const claimedIPs = new Map<string, string>(); // egress IP -> policy resource
  for (const policy of [...snapshot.policies].sort(compareAge)) {
    const resource = policyResource(policy);
    const spec = structuredClone(policy.spec);
    const errors = validator.check(policy.kind, spec);
    if (errors.length > 0) {
      verdicts.push({ resource, valid: false, errors });
      continue;
    }
    errors.push(...checkSelector(spec.podSelector, "spec.podSelector"));
    if (policy.kind === "ClusterEgressPolicy") {
      errors.push(...checkSelector((spec as typeof policy.spec).namespaceSelector, "spec.namespaceSelector"));
    }
    const gatewayKeys = gatewayInstances.get(spec.gatewayName);
    if (!gatewayKeys) {
      const exists = snapshot.gateways.some((g) => g.metadata.name === spec.gatewayName);
      errors.push({
        field: "spec.gatewayName",
        message: exists ? `EgressGateway ${spec.gatewayName} is invalid` : `EgressGateway ${spec.gatewayName} not found`,
      });
    }
    const egressIPByInstance = new Map<string, string>();
    spec.egressIPs.forEach((ip, i) => {
      const field = `spec.egressIPs[${i}]`;
      const owner = ipOwner.get(ip);
      const claimant = claimedIPs.get(ip);
      if (claimant) errors.push({ field, message: `${ip} is already used by ${claimant}` });
      else if (gatewayKeys && !owner && pendingIPs.get(ip) === spec.gatewayName) {
        // Declared by the gateway, no instance yet: valid, and carried by none for now.
      } else if (gatewayKeys && (!owner || !gatewayKeys.includes(owner))) {
        errors.push({ field, message: `${ip} is not an egress IP of any instance of EgressGateway ${spec.gatewayName}` });
      } else if (owner && egressIPByInstance.has(owner)) {
        errors.push({ field, message: `instance ${owner} already carries ${egressIPByInstance.get(owner)} for this policy` });
      } else if (owner) egressIPByInstance.set(owner, ip);
    });
    const destinations = planDestinations(spec.destinationCIDRs ?? ["0.0.0.0/0"], spec.excludedCIDRs ?? [], errors);
    if (errors.length > 0) {
      verdicts.push({ resource, valid: false, errors });
      continue;
    }
    for (const ip of spec.egressIPs) claimedIPs.set(ip, resource);
    verdicts.push({ resource, valid: true, errors: [] });
    policies.push({
      resource,
      object: policy,
      gateway: spec.gatewayName,
      destinations,
      egressIPByInstance,
      failurePolicy: spec.failurePolicy ?? "Drop",
      priority: spec.priority ?? 100,
    });
  }
  policies.sort((a, b) => comparePrecedence(a.object, b.object));
  verdicts.sort((a, b) => a.resource.localeCompare(b.resource));
  return { instances, gatewayInstances, policies, verdicts, neverDivert };
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

function instancesOf(gw: EgressGateway, spec: EgressGateway["spec"], nodes: readonly NodeInfo[], errors: FieldError[]): Omit<ResolvedInstance, "id">[] {
  const gateway = gw.metadata.name;
  const health = { intervalMs: spec.health?.intervalMs ?? 100, multiplier: spec.health?.multiplier ?? 3, holdDownMs: spec.health?.holdDownMs ?? 5_000 };
  if (spec.static) {
    const seen = new Set<string>();
    return spec.static.instances.flatMap((inst, i) => {
      if (seen.has(inst.name)) {
        errors.push({ field: `spec.static.instances[${i}].name`, message: `duplicate instance name ${inst.name}` });
        return [];
      }
      seen.add(inst.name);
      return [{ key: `${gateway}/${inst.name}`, gateway, name: inst.name, address: inst.address, egressIPs: inst.egressIPs, drain: inst.drain ?? false, health }];
    });
  }
  if (spec.digitalocean) {
    // Provisioned by the controller: the instances are the droplets it lists in status.
    return (gw.status?.instances ?? [])
      .filter((i) => i.address && i.egressIPs.length > 0)
      // A droplet still booting, or about to be replaced, takes no new flows while another can.
      .map((i) => ({ key: `${gateway}/${i.name}`, gateway, name: i.name, address: i.address, egressIPs: i.egressIPs, drain: i.health === "Provisioning" || i.health === "Draining", health }));
  }
  if (spec.nodes) {
    errors.push(...checkSelector(spec.nodes.nodeSelector, "spec.nodes.nodeSelector"));
    const picked = nodes
      .filter((n) => matches(spec.nodes!.nodeSelector, n.labels) && n.internalIP)
      .sort((a, b) => a.name.localeCompare(b.name))
      .slice(0, spec.nodes.count ?? 2);
    return picked.map((n) => {
      const egressIPs = (n.annotations[NODE_EGRESS_IPS_ANNOTATION] ?? "").split(",").map((s) => s.trim()).filter(Boolean);
      // The schema checks static egress IPs; an annotation gets the same check here.
      for (const ip of egressIPs) {
        if (!isIPv4(ip)) {
          errors.push({ field: "spec.nodes", message: `node ${n.name}: annotation ${NODE_EGRESS_IPS_ANNOTATION}: ${JSON.stringify(ip)} is not an IPv4 address` });
        }
      }
      return { key: `${gateway}/${n.name}`, gateway, name: n.name, address: n.internalIP as string, egressIPs, drain: false, health };
    });
  }
  return [];
}
