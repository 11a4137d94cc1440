import type { KubeObject } from "../../../api/objects.js";
import { API_VERSION } from "../../../api/v1alpha1/common.js";
import { REPORT_ANNOTATION } from "../../../api/keys.js";
import type { ClusterNetwork } from "../../../planner/model.js";

/*
 * A small cluster as the controller's informers hold it, for the live view's tests: gateway
 * `shared` (gw-a: 192.0.2.10/.11, gw-b: 192.0.2.20/.21), checkout (payments, Drop) on .10/.20,
 * exporter (reporting, FallbackToNodeIP) on .11/.21, pods on node1 and node2, an unselected web pod.
 */

export const NETWORK: ClusterNetwork = {
  podCIDRs: ["10.244.0.0/16"],
  serviceCIDRs: ["10.96.0.0/12"],
  nodeCIDRs: ["10.0.0.0/24"],
};

export const NOW = Date.parse("2026-11-22T12:00:00Z");

export type Health = Record<string, "up" | "down">;

export interface ClusterOptions {
  /** Each node's report of instance health (absent: that node does not report). */
  reports?: Record<string, Health>;
  /** The controller's written instance health (default Up for both). */
  instanceHealth?: Record<string, string>;
  /** checkout's status.traffic.instances. */
  traffic?: { instance: string; bytesPerSecond: number; at: string }[];
  /** Makes checkout Invalid (an egress IP no instance has). */
  invalidCheckout?: boolean;
}

const ns = (name: string): KubeObject => ({
  apiVersion: "v1",
  kind: "Namespace",
  metadata: { name, labels: { "kubernetes.io/metadata.name": name } },
});

const pod = (namespace: string, name: string, node: string, ip: string, app: string): KubeObject => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, namespace, labels: { app } },
  spec: { nodeName: node },
  status: { phase: "Running", podIP: ip, podIPs: [{ ip }] },
});

export function clusterObjects(opts: ClusterOptions = {}): KubeObject[] {
  const at = new Date(NOW).toISOString();
  const node = (name: string, ip: string, cidr: string): KubeObject => {
    const health = opts.reports?.[name];
    return {
      apiVersion: "v1",
      kind: "Node",
      metadata: {
        name,
        annotations: {
          ...(health ? { [REPORT_ANNOTATION]: JSON.stringify({ programmed: {}, health, unavailable: {}, at }) } : {}),
          "example.com/deploy-token": "s3cr3t-do-not-show",
        },
      },
      spec: { podCIDR: cidr },
      status: { addresses: [{ type: "InternalIP", address: ip }] },
    };
  };
  const instances = [
    { name: "gw-a", address: "10.0.0.101", egressIPs: ["192.0.2.10", "192.0.2.11"] },
    { name: "gw-b", address: "10.0.0.102", egressIPs: ["192.0.2.20", "192.0.2.21"] },
  ];
  const policy = (
    namespace: string,
    name: string,
    spec: Record<string, unknown>,
    status?: Record<string, unknown>,
  ) => ({
    apiVersion: API_VERSION,
    kind: "EgressPolicy",
    metadata: { name, namespace },
    spec: { gatewayName: "shared", ...spec },
    ...(status ? { status } : {}),
  });
  return [
    ns("payments"),
    ns("reporting"),
    ns("web"),
    node("node1", "10.0.0.11", "10.244.1.0/24"),
    node("node2", "10.0.0.12", "10.244.2.0/24"),
    {
      apiVersion: API_VERSION,
      kind: "EgressGateway",
      metadata: { name: "shared" },
      spec: {
        static: { instances },
        grants: [
          {
            namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "payments" } },
            egressIPs: ["192.0.2.10", "192.0.2.20"],
          },
          {
            namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "reporting" } },
            egressIPs: ["192.0.2.11", "192.0.2.21"],
          },
        ],
      },
      status: {
        instances: instances.map((i) => ({
          ...i,
          health: opts.instanceHealth?.[i.name] ?? "Up",
          since: "2026-11-22T11:00:00.000Z",
        })),
        readyInstances: 2,
        conditions: [
          {
            type: "Ready",
            status: "True",
            reason: "InstancesUp",
            message: "2 of 2 instances up",
            lastTransitionTime: at,
          },
        ],
      },
    },
    policy(
      "payments",
      "checkout",
      {
        podSelector: { matchLabels: { app: "checkout" } },
        egressIPs: opts.invalidCheckout ? ["192.0.2.99"] : ["192.0.2.10", "192.0.2.20"],
        destinationCIDRs: ["198.51.100.0/24"],
      },
      {
        selectedPods: 2,
        programmedPods: 2,
        conditions: [{ type: "Ready", status: "True", reason: "Programmed", message: "", lastTransitionTime: at }],
        ...(opts.traffic
          ? {
              traffic: {
                bytesPerSecond: 1234,
                packetsPerSecond: 10,
                instances: opts.traffic.map((t) => ({ ...t, packetsPerSecond: 1 })),
              },
            }
          : {}),
      },
    ),
    policy("reporting", "exporter", {
      podSelector: { matchLabels: { app: "exporter" } },
      egressIPs: ["192.0.2.11", "192.0.2.21"],
      failurePolicy: "FallbackToNodeIP",
    }),
    pod("payments", "pay-1", "node1", "10.244.1.2", "checkout"),
    pod("payments", "pay-2", "node2", "10.244.2.2", "checkout"),
    pod("reporting", "rep-1", "node2", "10.244.2.3", "exporter"),
    pod("web", "web-1", "node1", "10.244.1.3", "frontend"),
  ];
}
