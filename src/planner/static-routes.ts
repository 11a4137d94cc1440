import {
  parseDestination,
  validateStaticRoute,
  type ProtectedRange,
  type StaticRoute,
} from "../api/digitalocean-v1/static-route.js";
import type { FieldError } from "../api/v1alpha1/validate.js";
import { contains, formatIPv4, parseCidr, parseIPv4, type Range } from "../util/ipv4.js";
import type { ClusterNetwork, InstanceHealth, NodeInfo } from "./model.js";
import { matches } from "./selector.js";

/**
 * Node-wide static routes (DigitalOcean's StaticRoute, docs/static-routes.md): which routes one
 * node should have, through which gateway, given what this node knows of itself and how it sees
 * the gateways' health. Pure: data in, data out, with a reason for every refusal.
 */

/** What one node knows that decides whether a StaticRoute is safe there. */
export interface StaticRouteNodeView {
  node: NodeInfo;
  /** The node's on-link IPv4 prefixes (its own subnets, e.g. the VPC's), from its main table. */
  connected: readonly string[];
  /** Addresses of the Kubernetes API server this node talks to. */
  apiServers: readonly string[];
  network: ClusterNetwork;
}

/** Probe defaults: the same as an EgressGateway's (spec.health). */
const STATIC_ROUTE_HEALTH_DEFAULTS = { intervalMs: 100, multiplier: 3, holdDownMs: 5_000 } as const;

/** Health key of a probed StaticRoute gateway (one BFD session per address, whatever routes use it). */
export function staticGatewayKey(address: string): string {
  return `StaticRoute/${address}`;
}

export interface PlannedStaticRoute {
  /** Normalized CIDR, e.g. 198.51.100.0/24. */
  dst: string;
  /** The gateway, or undefined: blackhole (no healthy gateway: fail-closed). */
  via?: string;
  /** The StaticRoute it comes from. */
  route: string;
}

export type StaticRouteState = "Routed" | "Blackholed" | "Refused";

/** What one node does with one StaticRoute that selects it (status.nodes[] and Events). */
export interface StaticRouteOutcome {
  name: string;
  uid?: string;
  state: StaticRouteState;
  gateway?: string;
  message: string;
  errors: FieldError[];
}

export interface ProbedGateway {
  key: string;
  address: string;
  intervalMs: number;
  multiplier: number;
  holdDownMs: number;
}

export interface StaticRoutePlan {
  /** Sorted by destination. */
  routes: PlannedStaticRoute[];
  /** One per StaticRoute selecting this node, sorted by name. */
  outcomes: StaticRouteOutcome[];
  /** Gateways this node must probe (routes with `gateways`). */
  probes: ProbedGateway[];
}

/** Ranges a StaticRoute may never take from a node: its way to the cluster, its own subnets, the cluster's ranges. */
export function protectedRanges(view: StaticRouteNodeView): ProtectedRange[] {
  const out: ProtectedRange[] = [];
  for (const a of view.apiServers) out.push({ cidr: `${a}/32`, what: "the API server" });
  for (const c of view.connected) out.push({ cidr: c, what: "a subnet of this node (VPC)" });
  if (view.node.internalIP) out.push({ cidr: `${view.node.internalIP}/32`, what: "this node's InternalIP" });
  for (const c of view.network.nodeCIDRs) out.push({ cidr: c, what: "the cluster's node CIDR" });
  for (const c of view.network.podCIDRs) out.push({ cidr: c, what: "the cluster's pod CIDR" });
  for (const c of view.network.serviceCIDRs) out.push({ cidr: c, what: "the cluster's service CIDR" });
  return out;
}

function cidrOf(r: Range): string {
  const size = r.to - r.from + 1;
  return `${formatIPv4(r.from)}/${32 - Math.log2(size)}`;
}

/** Older first, then by name: who keeps a destination two StaticRoutes both name. */
function compareAge(a: StaticRoute, b: StaticRoute): number {
  const ta = a.metadata.creationTimestamp ?? "";
  const tb = b.metadata.creationTimestamp ?? "";
  if (ta !== tb) return ta < tb ? -1 : 1;
  return a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;
}

/** The gateways of a route in order of preference: `gateway` first, then `gateways`. */
function gatewayCandidates(spec: StaticRoute["spec"]): string[] {
  return [...new Set([...(spec.gateway !== undefined ? [spec.gateway] : []), ...(spec.gateways ?? [])])];
}

/**
 * The routes of one node. A StaticRoute is Refused here (field named, nothing written) when it
 * is invalid, covers something the node needs (API server, its subnets, cluster ranges,
 * link-local) or names a gateway that is not on-link. A route with `gateways` uses the first
 * gateway not judged down (unknown counts as up, as for policies); with all down its
 * destinations are blackholed (fail-closed), never left to the node's default route.
 */
export function planStaticRoutes(
  objects: readonly StaticRoute[],
  view: StaticRouteNodeView,
  health: (key: string) => InstanceHealth | undefined,
): StaticRoutePlan {
  const protect = protectedRanges(view);
  const connected = view.connected.flatMap((c) => {
    try {
      return [parseCidr(c)];
    } catch {
      return [];
    }
  });
  const own = view.node.internalIP;
  const routes = new Map<string, PlannedStaticRoute>();
  const outcomes: StaticRouteOutcome[] = [];
  const probes = new Map<string, ProbedGateway>();
  for (const sr of [...objects].sort(compareAge)) {
    if (sr.spec?.nodeSelector && !matches(sr.spec.nodeSelector, view.node.labels)) continue;
    const name = sr.metadata.name;
    const base = { name, ...(sr.metadata.uid ? { uid: sr.metadata.uid } : {}) };
    const errors = validateStaticRoute(sr, protect);
    const candidates = errors.length === 0 ? gatewayCandidates(sr.spec) : [];
    candidates.forEach((g) => {
      const field = g === sr.spec.gateway ? "spec.gateway" : `spec.gateways[${(sr.spec.gateways ?? []).indexOf(g)}]`;
      if (g === own) errors.push({ field, message: `${g} is this node's own address` });
      else if (!contains(connected, parseIPv4(g)))
        errors.push({
          field,
          message: `${g} is not on-link on this node (not in ${view.connected.join(", ") || "any connected subnet"})`,
        });
    });
    if (errors.length > 0) {
      outcomes.push({
        ...base,
        state: "Refused",
        message: errors.map((e) => `${e.field}: ${e.message}`).join("; "),
        errors,
      });
      continue;
    }
    const probed = sr.spec.gateways !== undefined;
    if (probed) {
      for (const address of candidates) {
        const key = staticGatewayKey(address);
        if (!probes.has(key)) probes.set(key, { key, address, ...STATIC_ROUTE_HEALTH_DEFAULTS, ...sr.spec.health });
      }
    }
    const via = probed ? candidates.find((g) => health(staticGatewayKey(g)) !== "down") : candidates[0];
    const taken: string[] = [];
    for (const text of sr.spec.destinations) {
      const dst = cidrOf(parseDestination(text));
      const other = routes.get(dst);
      if (other) {
        if (other.route !== name) taken.push(`${dst} (StaticRoute ${other.route} is older and routes it)`);
        continue;
      }
      routes.set(dst, { dst, ...(via ? { via } : {}), route: name });
    }
    const note = taken.length > 0 ? `; not here: ${taken.join(", ")}` : "";
    outcomes.push(
      via
        ? {
            ...base,
            state: "Routed",
            gateway: via,
            message:
              `routed via ${via}` +
              (probed && via !== candidates[0]
                ? ` (failover: ${candidates.filter((g) => g !== via && health(staticGatewayKey(g)) === "down").join(", ")} down)`
                : "") +
              note,
            errors: [],
          }
        : {
            ...base,
            state: "Blackholed",
            message: `no healthy gateway (${candidates.join(", ")} down): destinations blackholed (fail-closed)${note}`,
            errors: [],
          },
    );
  }
  return {
    routes: [...routes.values()].sort(
      (a, b) => parseCidr(a.dst).from - parseCidr(b.dst).from || a.dst.localeCompare(b.dst),
    ),
    outcomes: outcomes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    probes: [...probes.values()].sort((a, b) => a.key.localeCompare(b.key)),
  };
}
