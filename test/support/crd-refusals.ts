// Bad specs the API server refuses at once (schema, list types, CEL rules in deploy/crds), each
// with the fields it must name. src/api/v1alpha1/crd.test.ts runs them through our validator and
// the committed CRD schema; test/integration/crds-real-server.test.ts through a real
// kube-apiserver (`kubectl create`), and compares the fields both name.
type Spec = Record<string, unknown>;

export interface Refusal {
  name: string;
  kind: "EgressPolicy" | "ClusterEgressPolicy" | "EgressGateway";
  spec: Spec;
  /** Every field named, by our validator and by the API server alike. */
  fields: string[];
}

const policy: Spec = {
  podSelector: { matchLabels: { app: "checkout" } },
  gatewayName: "shared",
  egressIPs: ["192.0.2.10", "192.0.2.20"],
};
const clusterPolicy: Spec = { ...policy, namespaceSelector: {} };
const instance = (name: string, address: string, egressIPs: string[]) => ({ name, address, egressIPs });
const staticGateway: Spec = {
  static: {
    instances: [instance("gw-a", "10.0.0.101", ["192.0.2.10"]), instance("gw-b", "10.0.0.102", ["192.0.2.20"])],
  },
};
const digitalocean = { region: "ams3", size: "s-1vcpu-1gb", nodeTag: "k8s-worker" };

export const REFUSALS: Refusal[] = [
  {
    name: "a repeated egress IP",
    kind: "EgressPolicy",
    spec: { ...policy, egressIPs: ["192.0.2.10", "192.0.2.20", "192.0.2.10"] },
    fields: ["spec.egressIPs[2]"],
  },
  {
    name: "a repeated egress IP (cluster policy)",
    kind: "ClusterEgressPolicy",
    spec: { ...clusterPolicy, egressIPs: ["192.0.2.11", "192.0.2.11"] },
    fields: ["spec.egressIPs[1]"],
  },
  {
    name: "an egress IP out of range",
    kind: "EgressPolicy",
    spec: { ...policy, egressIPs: ["192.0.2.300"] },
    fields: ["spec.egressIPs[0]"],
  },
  {
    name: "an egress IP with a prefix",
    kind: "EgressPolicy",
    spec: { ...policy, egressIPs: ["192.0.2.10/32"] },
    fields: ["spec.egressIPs[0]"],
  },
  {
    name: "a destination CIDR with a /33 prefix",
    kind: "EgressPolicy",
    spec: { ...policy, destinationCIDRs: ["198.51.100.0/24", "198.51.100.0/33"] },
    fields: ["spec.destinationCIDRs[1]"],
  },
  {
    name: "a destination without a prefix",
    kind: "EgressPolicy",
    spec: { ...policy, destinationCIDRs: ["198.51.100.7"] },
    fields: ["spec.destinationCIDRs[0]"],
  },
  {
    name: "an excluded CIDR that is not an address",
    kind: "EgressPolicy",
    spec: { ...policy, excludedCIDRs: ["example.com/24"] },
    fields: ["spec.excludedCIDRs[0]"],
  },
  {
    name: "an IPv6 destination",
    kind: "EgressPolicy",
    spec: { ...policy, destinationCIDRs: ["2001:db8::/32"] },
    fields: ["spec.destinationCIDRs[0]"],
  },
  {
    name: "a priority over 1000",
    kind: "EgressPolicy",
    spec: { ...policy, priority: 5000 },
    fields: ["spec.priority"],
  },
  { name: "a negative priority", kind: "EgressPolicy", spec: { ...policy, priority: -1 }, fields: ["spec.priority"] },
  {
    name: "an unknown failure policy",
    kind: "EgressPolicy",
    spec: { ...policy, failurePolicy: "Leak" },
    fields: ["spec.failurePolicy"],
  },
  {
    name: "no gatewayName",
    kind: "EgressPolicy",
    spec: { podSelector: {}, egressIPs: ["192.0.2.10"] },
    fields: ["spec.gatewayName"],
  },
  {
    name: "a gatewayName that is no object name",
    kind: "EgressPolicy",
    spec: { ...policy, gatewayName: "Shared_GW" },
    fields: ["spec.gatewayName"],
  },
  {
    name: "operator In without values",
    kind: "EgressPolicy",
    spec: {
      ...policy,
      podSelector: {
        matchExpressions: [
          { key: "app", operator: "In", values: ["a"] },
          { key: "tier", operator: "In" },
        ],
      },
    },
    fields: ["spec.podSelector.matchExpressions[1].values"],
  },
  {
    name: "operator Exists with values",
    kind: "EgressPolicy",
    spec: { ...policy, podSelector: { matchExpressions: [{ key: "app", operator: "Exists", values: ["a"] }] } },
    fields: ["spec.podSelector.matchExpressions[0].values"],
  },
  {
    name: "a label key with a space",
    kind: "EgressPolicy",
    spec: { ...policy, podSelector: { matchLabels: { "my app": "checkout" } } },
    fields: ["spec.podSelector.matchLabels"],
  },
  {
    name: "a label value with a slash",
    kind: "EgressPolicy",
    spec: { ...policy, podSelector: { matchLabels: { app: "check/out" } } },
    fields: ["spec.podSelector.matchLabels.app"],
  },
  {
    name: "an expression key with a trailing dash",
    kind: "EgressPolicy",
    spec: { ...policy, podSelector: { matchExpressions: [{ key: "app-", operator: "Exists" }] } },
    fields: ["spec.podSelector.matchExpressions[0].key"],
  },
  {
    name: "a namespace expression NotIn without values",
    kind: "ClusterEgressPolicy",
    spec: {
      ...clusterPolicy,
      namespaceSelector: { matchExpressions: [{ key: "team", operator: "NotIn", values: [] }] },
    },
    fields: ["spec.namespaceSelector.matchExpressions[0].values"],
  },
  { name: "no instance source", kind: "EgressGateway", spec: { health: { intervalMs: 100 } }, fields: ["spec"] },
  {
    name: "two instance sources",
    kind: "EgressGateway",
    spec: { ...staticGateway, nodes: { nodeSelector: {} } },
    fields: ["spec"],
  },
  {
    name: "a repeated instance name",
    kind: "EgressGateway",
    spec: {
      static: {
        instances: [instance("gw-a", "10.0.0.101", ["192.0.2.10"]), instance("gw-a", "10.0.0.102", ["192.0.2.20"])],
      },
    },
    fields: ["spec.static.instances[1]"],
  },
  {
    name: "an egress IP repeated on one instance",
    kind: "EgressGateway",
    spec: { static: { instances: [instance("gw-a", "10.0.0.101", ["192.0.2.10", "192.0.2.11", "192.0.2.10"])] } },
    fields: ["spec.static.instances[0].egressIPs[2]"],
  },
  {
    name: "an instance address out of range",
    kind: "EgressGateway",
    spec: { static: { instances: [instance("gw-a", "10.0.0.256", ["192.0.2.10"])] } },
    fields: ["spec.static.instances[0].address"],
  },
  {
    name: "a repeated reserved IP",
    kind: "EgressGateway",
    spec: { digitalocean: { ...digitalocean, reservedIPs: ["203.0.113.5", "203.0.113.5"] } },
    fields: ["spec.digitalocean.reservedIPs[1]"],
  },
  {
    name: "a granted egress CIDR with a /40 prefix",
    kind: "EgressGateway",
    spec: { ...staticGateway, grants: [{ namespaceSelector: {}, egressIPs: ["192.0.2.0/40"] }] },
    fields: ["spec.grants[0].egressIPs[0]"],
  },
  {
    name: "a probe interval under 10 ms",
    kind: "EgressGateway",
    spec: { ...staticGateway, health: { intervalMs: 1 } },
    fields: ["spec.health.intervalMs"],
  },
  {
    name: "a cluster policy selecting both nodes and pods",
    kind: "ClusterEgressPolicy",
    spec: { ...clusterPolicy, nodeSelector: {} },
    fields: ["spec.podSelector", "spec.namespaceSelector"],
  },
  {
    name: "a cluster policy selecting neither nodes nor pods",
    kind: "ClusterEgressPolicy",
    spec: { gatewayName: "shared", egressIPs: ["192.0.2.10"] },
    fields: ["spec.podSelector", "spec.namespaceSelector"],
  },
  {
    name: "a verification url that is not http://",
    kind: "EgressPolicy",
    spec: { ...policy, verification: { url: "https://198.51.100.10/" } },
    fields: ["spec.verification.url"],
  },
  {
    name: "a verification url naming a host without its address",
    kind: "ClusterEgressPolicy",
    spec: { ...clusterPolicy, verification: { url: "http://echo.example.com/ip" } },
    fields: ["spec.verification.address"],
  },
  {
    name: "a verification address beside an IPv4 host",
    kind: "EgressPolicy",
    spec: { ...policy, verification: { url: "http://198.51.100.10/", address: "198.51.100.11" } },
    fields: ["spec.verification.address"],
  },
  {
    name: "a verification interval under 10 s",
    kind: "EgressPolicy",
    spec: { ...policy, verification: { url: "http://198.51.100.10/", intervalSeconds: 5 } },
    fields: ["spec.verification.intervalSeconds"],
  },
  {
    name: "publishEgressIPs that is not a boolean",
    kind: "EgressPolicy",
    spec: { ...policy, publishEgressIPs: "yes" },
    fields: ["spec.publishEgressIPs"],
  },
];
