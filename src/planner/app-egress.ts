import type { KubernetesObject } from "@kubernetes/client-node";
import { API_VERSION } from "../api/v1alpha1/common.js";
import { parseGatewayPool, type GatewayPool, type GatewayPoolHost } from "../api/v1alpha1/gateway-pool.js";
import type { App, DedicatedIP } from "../api/v1alpha1/app.js";
import type { AppsDigitalOcean } from "../api/v1alpha1/apps-digitalocean.js";
import { APP_LABEL, MANAGED_BY, MANAGER, namespaceOf, digest, APPLIED_ANNOTATION } from "./apps.js";

/**
 * Dedicated egress for Apps (docs/apps.md, issue 12 outcome 3): an App with `egress.type:
 * DEDICATED_IP` gets an EgressGateway of its own with two instances and an EgressPolicy selecting
 * every pod of the app. The instances are hosts of a pool the controller is given, or (on
 * DigitalOcean) two droplets with two reserved IPs the fleet plugin creates for the gateway. Two
 * apps never share a host or an IP. Pure: the controller applies the result.
 */

/** Instances per app, as DigitalOcean gives each app a pair of dedicated IPs. */
const INSTANCES_PER_APP = 2;
const APP_GATEWAY_PREFIX = "app-";
export const APP_POLICY_NAME = "dedicated-egress";

export function gatewayNameOf(app: string): string {
  return `${APP_GATEWAY_PREFIX}${app}`;
}

type GatewayObject = KubernetesObject & {
  metadata: { name?: string; labels?: Record<string, string> };
  spec?: { static?: { instances?: { name: string }[] } };
};

export type EgressPlan =
  | { kind: "none" }
  | { kind: "exhausted"; free: number }
  | { kind: "planned"; hosts: GatewayPoolHost[]; gateway: KubernetesObject; policy: KubernetesObject };

/**
 * The app's gateway and policy. Its hosts: those its gateway already has (kept while they are in
 * the pool), then free ones by name. Free: not in any other app's gateway (`gateways`: every
 * gateway Apps made, as the informer has them).
 */
export function planDedicatedEgress(
  app: App,
  pool: GatewayPool | undefined,
  gateways: readonly GatewayObject[],
): EgressPlan {
  if (app.spec.egress?.type !== "DEDICATED_IP") return { kind: "none" };
  const name = app.metadata.name;
  const hostsOf = (g: GatewayObject) => (g.spec?.static?.instances ?? []).map((i) => i.name);
  const own = gateways.find((g) => g.metadata.name === gatewayNameOf(name));
  const taken = new Set(gateways.filter((g) => g !== own).flatMap(hostsOf));
  const byName = new Map((pool?.hosts ?? []).map((h) => [h.name, h]));
  const kept = (own ? hostsOf(own) : [])
    .map((n) => byName.get(n))
    .filter((h): h is GatewayPoolHost => h !== undefined && !taken.has(h.name));
  const free = [...byName.values()]
    .filter((h) => !taken.has(h.name) && !kept.includes(h))
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  const hosts = [...kept, ...free].slice(0, INSTANCES_PER_APP);
  if (hosts.length < INSTANCES_PER_APP) return { kind: "exhausted", free: hosts.length };
  const ips = hosts.map((h) => h.egressIP);
  const gateway = appObject(app, "EgressGateway", {
    static: { instances: hosts.map((h) => ({ name: h.name, address: h.address, egressIPs: [h.egressIP] })) },
    // Only the app's namespace may use it, and only these IPs.
    grants: [{ namespaceSelector: appNamespaceSelector(name), egressIPs: ips }],
  });
  return { kind: "planned", hosts, gateway, policy: appPolicy(app, ips) };
}

function appNamespaceSelector(app: string): { matchLabels: Record<string, string> } {
  return { matchLabels: { "kubernetes.io/metadata.name": namespaceOf(app) } };
}

/** The app's gateway (cluster-scoped) or policy (in its namespace): owned, labelled, with the digest of what is applied. */
function appObject(app: App, kind: "EgressGateway" | "EgressPolicy", spec: object): KubernetesObject {
  const name = app.metadata.name;
  const owner = { apiVersion: API_VERSION, kind: "App", name, uid: app.metadata.uid ?? "", controller: true };
  const labels = { [MANAGED_BY]: MANAGER, [APP_LABEL]: name };
  const metadata =
    kind === "EgressGateway"
      ? { name: gatewayNameOf(name), labels, ownerReferences: [owner] }
      : { name: APP_POLICY_NAME, namespace: namespaceOf(name), labels, ownerReferences: [owner] };
  const o = { apiVersion: API_VERSION, kind, metadata, spec } as KubernetesObject;
  return { ...o, metadata: { ...o.metadata, annotations: { [APPLIED_ANNOTATION]: digest(o) } } };
}

/** Every pod of the app; fail-closed: once it has dedicated IPs it never leaves with a node's. */
function appPolicy(app: App, ips: readonly string[]): KubernetesObject {
  return appObject(app, "EgressPolicy", {
    podSelector: {},
    gatewayName: gatewayNameOf(app.metadata.name),
    egressIPs: [...ips],
    failurePolicy: "Drop",
  });
}

type InstanceEntry = { name: string; id?: string; egressIPs?: string[]; health?: string };

export interface DigitalOceanEgressPlan {
  gateway: KubernetesObject;
  /** Absent until the gateway's status lists an IP on each of its two instances (the fleet allocates them). */
  policy?: KubernetesObject;
  /** Each instance that has its reserved IP, in slot order. */
  instances: { ip: string; instance: InstanceEntry }[];
}

/**
 * On DigitalOcean (docs/apps.md): the app's gateway is two droplets with two reserved IPs the
 * fleet plugin allocates for it (recorded under the gateway's name, so no other app ever gets
 * them); `keep` leaves them allocated for the app's next DEDICATED_IP when the gateway is
 * deleted. The policy names the IPs the gateway's status lists, once each instance has one.
 */
export function planDigitalOceanEgress(
  app: App,
  config: AppsDigitalOcean,
  keep: boolean,
  gatewayStatus: { instances?: InstanceEntry[] } | undefined,
): DigitalOceanEgressPlan {
  const gateway = appObject(app, "EgressGateway", {
    digitalocean: {
      region: config.region,
      size: config.size,
      ...(config.image ? { image: config.image } : {}),
      ...(config.vpcUUID ? { vpcUUID: config.vpcUUID } : {}),
      count: INSTANCES_PER_APP,
      allocateReservedIPs: true,
      keepAllocatedReservedIPs: keep,
      nodeTag: config.nodeTag,
    },
    // Only the app's namespace may use it (every IP of it: they are not known before the fleet allocates them).
    grants: [{ namespaceSelector: appNamespaceSelector(app.metadata.name) }],
  });
  const instances = (gatewayStatus?.instances ?? [])
    .filter((i) => (i.egressIPs?.length ?? 0) > 0)
    .map((i) => ({ ip: i.egressIPs![0]!, instance: i }));
  const complete =
    instances.length >= INSTANCES_PER_APP && new Set(instances.map((i) => i.ip)).size === instances.length;
  return {
    gateway,
    ...(complete
      ? {
          policy: appPolicy(
            app,
            instances.slice(0, INSTANCES_PER_APP).map((i) => i.ip),
          ),
        }
      : {}),
    instances: instances.slice(0, INSTANCES_PER_APP),
  };
}

/**
 * `dedicated_ips` on DigitalOcean: `id` is the reserved IP's id as DigitalOcean gives it (the
 * address itself, which the API uses as its identifier). ASSIGNED when the droplet holding it is
 * Up (active, the IP assigned: the fleet lists it Provisioning otherwise; and the nodes see it
 * through BFD) and the policy naming it is Ready; ASSIGNING before; REMOVED for IPs it no longer has.
 */
export function digitalOceanDedicatedIPs(
  plan: DigitalOceanEgressPlan,
  policy: { ready: boolean; egressIPs: readonly string[] },
  previous: readonly DedicatedIP[] = [],
): DedicatedIP[] {
  const now: DedicatedIP[] = plan.instances.map(({ ip, instance }) => ({
    ip,
    id: ip,
    status: instance.health === "Up" && policy.ready && policy.egressIPs.includes(ip) ? "ASSIGNED" : "ASSIGNING",
  }));
  return [...now, ...removedSince(now, previous)];
}

function removedSince(now: readonly DedicatedIP[], previous: readonly DedicatedIP[]): DedicatedIP[] {
  return previous.filter((p) => !now.some((n) => n.ip === p.ip)).map((p) => ({ ...p, status: "REMOVED" as const }));
}

/**
 * The App whose dedicated egress a policy is, if it is one: `EgressPolicy` `dedicated-egress` in
 * the namespace `app-<name>`, labelled `staticegress.io/app: <name>` (what the App controller
 * makes). A policy elsewhere with that label is not the app's: its traffic is never counted as
 * the app's usage.
 */
export function appOfPolicy(p: {
  kind?: string;
  metadata?: { name?: string; namespace?: string; labels?: Readonly<Record<string, string>> };
}): string | undefined {
  const app = p.metadata?.labels?.[APP_LABEL];
  if (p.kind !== "EgressPolicy" || !app || p.metadata?.name !== APP_POLICY_NAME) return undefined;
  return p.metadata.namespace === namespaceOf(app) ? app : undefined;
}

type InstanceStatus = { name: string; health?: string };

/**
 * `dedicated_ips` from what the gateway and the policy report: ASSIGNED only when the host is Up
 * (nodes see it through BFD) and the policy is Ready (the app's pods are programmed), i.e. the IP
 * carries the app's traffic; ASSIGNING before. IPs the app had and no longer has are REMOVED.
 */
export function dedicatedIPs(
  hosts: readonly GatewayPoolHost[],
  gatewayStatus: { instances?: InstanceStatus[] } | undefined,
  policyReady: boolean,
  previous: readonly DedicatedIP[] = [],
): DedicatedIP[] {
  const now: DedicatedIP[] = hosts.map((h) => {
    const up = gatewayStatus?.instances?.find((i) => i.name === h.name)?.health === "Up";
    return { ip: h.egressIP, id: h.name, status: up && policyReady ? "ASSIGNED" : "ASSIGNING" };
  });
  return [...now, ...removedSince(now, previous)];
}

export { parseGatewayPool, type GatewayPool, type GatewayPoolHost };
