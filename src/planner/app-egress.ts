import type { KubernetesObject } from "@kubernetes/client-node";
import { API_VERSION } from "../api/v1alpha1/common.js";
import { parseGatewayPool, type GatewayPool, type GatewayPoolHost } from "../api/v1alpha1/gateway-pool.js";
import type { App, DedicatedIP } from "../api/v1alpha1/app.js";
import { APP_LABEL, MANAGED_BY, MANAGER, namespaceOf, digest, APPLIED_ANNOTATION } from "./apps.js";

/**
 * Dedicated egress for Apps (docs/apps.md, issue 12 outcome 3, first step): an App with
 * `egress.type: DEDICATED_IP` gets an EgressGateway of its own with two instances, taken from a
 * pool of gateway hosts the controller is given, and an EgressPolicy selecting every pod of the
 * app. Two apps never share a host (and so never an IP). Pure: the controller applies the result.
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
  const ns = namespaceOf(name);
  const owner = { apiVersion: API_VERSION, kind: "App", name, uid: app.metadata.uid ?? "", controller: true };
  const labels = { [MANAGED_BY]: MANAGER, [APP_LABEL]: name };
  const ips = hosts.map((h) => h.egressIP);
  const stamp = <T extends KubernetesObject>(o: T): T => ({
    ...o,
    metadata: { ...o.metadata, annotations: { [APPLIED_ANNOTATION]: digest(o) } },
  });
  const gateway = stamp({
    apiVersion: API_VERSION,
    kind: "EgressGateway",
    metadata: { name: gatewayNameOf(name), labels, ownerReferences: [owner] },
    spec: {
      static: { instances: hosts.map((h) => ({ name: h.name, address: h.address, egressIPs: [h.egressIP] })) },
      // Only the app's namespace may use it, and only these IPs.
      grants: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": ns } }, egressIPs: ips }],
    },
  } as KubernetesObject);
  const policy = stamp({
    apiVersion: API_VERSION,
    kind: "EgressPolicy",
    metadata: { name: APP_POLICY_NAME, namespace: ns, labels, ownerReferences: [owner] },
    // Every pod of the app; fail-closed: once it has dedicated IPs it never leaves with a node's.
    spec: { podSelector: {}, gatewayName: gatewayNameOf(name), egressIPs: ips, failurePolicy: "Drop" },
  } as KubernetesObject);
  return { kind: "planned", hosts, gateway, policy };
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
  const removed = previous
    .filter((p) => !now.some((n) => n.ip === p.ip))
    .map((p) => ({ ...p, status: "REMOVED" as const }));
  return [...now, ...removed];
}

export { parseGatewayPool, type GatewayPool, type GatewayPoolHost };
