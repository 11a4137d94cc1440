import { Type, type Static } from "@sinclair/typebox";
import {
  Condition,
  IPv4Address,
  IPv4Cidr,
  LabelSelector,
  LIMITS,
  Name,
  SET,
  type CelRule,
  type KindDefinition,
  type Resource,
} from "./common.js";
import { Verification } from "./verification.js";

const policyFields = {
  podSelector: { ...LabelSelector, description: "Pods whose egress goes through the gateway; {} selects all" },
  destinationCIDRs: Type.Optional(
    Type.Array(IPv4Cidr, {
      maxItems: LIMITS.cidrs,
      description: "Destinations diverted to the gateway (default: 0.0.0.0/0)",
    }),
  ),
  excludedCIDRs: Type.Optional(
    Type.Array(IPv4Cidr, {
      maxItems: LIMITS.cidrs,
      description: "Destinations never diverted (the cluster's pod, service and node CIDRs always are)",
    }),
  ),
  gatewayName: { ...Name, description: "The EgressGateway whose instances SNAT this traffic" },
  egressIPs: Type.Array(IPv4Address, {
    minItems: 1,
    maxItems: LIMITS.policyEgressIPs,
    ...SET, // a repeated egress IP is refused at once
    description:
      "This application's own egress IPs: one per gateway instance that may carry " +
      "it, or several on one instance (at most 8) so that its SNAT pool grows: " +
      "new connections spread over them, a connection keeps its IP",
  }),
  failurePolicy: Type.Optional(
    Type.Union([Type.Literal("Drop"), Type.Literal("FallbackToNodeIP")], {
      default: "Drop",
      description: "With no healthy instance: Drop (fail-closed) or leave with the node's IP",
    }),
  ),
  priority: Type.Optional(
    Type.Integer({
      minimum: 0,
      maximum: 1000,
      default: 100,
      description: "Lower wins when policies overlap on a pod and destination",
    }),
  ),
  verification: Type.Optional({
    ...Verification,
    description:
      "Continuous verification: nodes that run the policy's pods (or that it selects) send an HTTP request " +
      "through its gateway to this echo service and compare the source it saw with the policy's egress IP " +
      "(status condition Verified)",
  }),
  publishEgressIPs: Type.Optional(
    Type.Boolean({
      description:
        "Publish this policy's egress IPs (status.egressIPs) in the controller's egress-IP feed, " +
        "GET /egress-ips, for partners' allowlist automation (docs/explain.md); absent: not published",
    }),
  ),
};

export const EgressPolicySpec = Type.Object(policyFields, { additionalProperties: false });
export type EgressPolicySpec = Static<typeof EgressPolicySpec>;

// A ClusterEgressPolicy selects pods (podSelector and namespaceSelector) or, instead, nodes
// (nodeSelector: the nodes' own traffic and their hostNetwork pods', docs/static-routes.md).
export const ClusterEgressPolicySpec = Type.Object(
  {
    ...policyFields,
    podSelector: Type.Optional({
      ...LabelSelector,
      description: "Pods whose egress goes through the gateway; {} selects all. Required unless nodeSelector is set",
    }),
    namespaceSelector: Type.Optional({
      ...LabelSelector,
      description: "Namespaces whose pods are considered. Required unless nodeSelector is set",
    }),
    nodeSelector: Type.Optional({
      ...LabelSelector,
      description:
        "Instead of pods: nodes whose own traffic (and their hostNetwork pods') goes through the gateway; {} selects all",
    }),
  },
  {
    additionalProperties: false,
    // Pods (podSelector and namespaceSelector) or nodes (nodeSelector alone), never both.
    "x-kubernetes-validations": (["podSelector", "namespaceSelector"] as const).flatMap((f) => [
      {
        rule: `has(self.nodeSelector) || has(self.${f})`,
        fieldPath: `.${f}`,
        message: "required field is missing (or set nodeSelector to select nodes instead)",
      },
      {
        rule: `!has(self.nodeSelector) || !has(self.${f})`,
        fieldPath: `.${f}`,
        message: "must be absent when nodeSelector is set: a policy selects either pods or nodes",
      },
    ]) satisfies CelRule[],
  },
);
export type ClusterEgressPolicySpec = Static<typeof ClusterEgressPolicySpec>;

/** Rates over the last report interval (about a minute), from the gateways' kernel counters. */
const PolicyTraffic = Type.Object({
  bytesPerSecond: Type.Optional(
    Type.Integer({ description: "Every instance's, both directions (written by the controller)" }),
  ),
  packetsPerSecond: Type.Optional(Type.Integer()),
  instances: Type.Optional(
    Type.Array(
      Type.Object({
        instance: Type.String({
          description: "<gateway>/<instance>; each gateway agent writes its own entry (server-side apply)",
        }),
        bytesPerSecond: Type.Integer(),
        packetsPerSecond: Type.Integer(),
        at: Type.String({ description: "When the agent measured it (RFC 3339)" }),
        counters: Type.Optional(
          Type.Array(
            Type.Object({
              egressIP: Type.String(),
              bytes: Type.Integer({ minimum: 0 }),
              packets: Type.Integer({ minimum: 0 }),
              since: Type.Optional(Type.String({ description: "When the kernel counter was created (RFC 3339)" })),
            }),
            {
              maxItems: LIMITS.policyEgressIPs,
              description:
                "What left (direction out) through each egress IP on this instance since its kernel counter was " +
                "created (`since`): absolute counts, an App's usage is read from them (docs/apps.md#usage)",
            },
          ),
        ),
      }),
      { "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["instance"] },
    ),
  ),
});
export type PolicyTraffic = Static<typeof PolicyTraffic>;

export const EgressPolicyStatus = Type.Object({
  egressIPs: Type.Optional(Type.Array(Type.String())),
  egressIPsChangedAt: Type.Optional(
    Type.String({
      description: "When status.egressIPs last changed (RFC 3339): the egress-IP feed's lastChange",
    }),
  ),
  traffic: Type.Optional(PolicyTraffic),
  selectedPods: Type.Optional(Type.Integer()),
  programmedPods: Type.Optional(Type.Integer()),
  observedGeneration: Type.Optional(Type.Integer()),
  conditions: Type.Optional(Type.Array(Condition)),
});
export type EgressPolicyStatus = Static<typeof EgressPolicyStatus>;

export type EgressPolicy = Resource<"EgressPolicy", EgressPolicySpec, EgressPolicyStatus>;
export type ClusterEgressPolicy = Resource<"ClusterEgressPolicy", ClusterEgressPolicySpec, EgressPolicyStatus>;

const policyColumns: KindDefinition["printerColumns"] = [
  { name: "Gateway", type: "string", jsonPath: ".spec.gatewayName" },
  { name: "Egress-IPs", type: "string", jsonPath: ".spec.egressIPs" },
  { name: "Ready", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
  { name: "Reason", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].reason', priority: 1 },
  { name: "Verified", type: "string", jsonPath: '.status.conditions[?(@.type=="Verified")].status', priority: 1 },
  { name: "Pods", type: "integer", jsonPath: ".status.selectedPods" },
  { name: "Bytes/s", type: "integer", jsonPath: ".status.traffic.bytesPerSecond" },
  { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
];

export const EgressPolicyKind: KindDefinition = {
  kind: "EgressPolicy",
  plural: "egresspolicies",
  singular: "egresspolicy",
  shortNames: ["egp"],
  scope: "Namespaced",
  spec: EgressPolicySpec,
  status: EgressPolicyStatus,
  printerColumns: policyColumns,
};

export const ClusterEgressPolicyKind: KindDefinition = {
  kind: "ClusterEgressPolicy",
  plural: "clusteregresspolicies",
  singular: "clusteregresspolicy",
  shortNames: ["cegp"],
  scope: "Cluster",
  spec: ClusterEgressPolicySpec,
  status: EgressPolicyStatus,
  printerColumns: policyColumns,
};
