import { Type, type Static } from "@sinclair/typebox";
import {
  Condition,
  IPv4Address,
  IPv4AddressOrCidr,
  LabelSelector,
  LIMITS,
  Name,
  SET,
  type CelRule,
  type KindDefinition,
  type Resource,
} from "./common.js";

const StaticInstance = Type.Object(
  {
    name: Name,
    address: { ...IPv4Address, description: "Address of the gateway host on the network the nodes share (VPC)" },
    egressIPs: Type.Array(IPv4Address, {
      minItems: 1,
      maxItems: LIMITS.instanceEgressIPs,
      ...SET,
      description: "Public IPs routed to this host; each policy owns some of them",
    }),
    drain: Type.Optional(Type.Boolean({ description: "Move new connections off this instance (maintenance)" })),
  },
  { additionalProperties: false },
);
export type StaticInstance = Static<typeof StaticInstance>;

const NodesSource = Type.Object(
  {
    nodeSelector: LabelSelector,
    count: Type.Optional(Type.Integer({ minimum: 1, maximum: 16, default: 2 })),
  },
  {
    additionalProperties: false,
    description:
      "Cluster nodes act as gateway instances. Each node lists its egress IPs in the annotation staticegress.io/egress-ips.",
  },
);

const DigitalOceanSource = Type.Object(
  {
    region: Type.String({ minLength: 1, maxLength: LIMITS.text, description: "Region slug, e.g. ams3" }),
    size: Type.String({ minLength: 1, maxLength: LIMITS.text, description: "Droplet size slug, e.g. s-1vcpu-1gb" }),
    image: Type.Optional(
      Type.String({ minLength: 1, maxLength: LIMITS.text, default: "debian-12-x64", description: "Image slug or id" }),
    ),
    vpcUUID: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: LIMITS.text,
        description: "The cluster's VPC (default: the region's default VPC)",
      }),
    ),
    count: Type.Optional(Type.Integer({ minimum: 1, maximum: 10, default: 2, description: "Gateway droplets" })),
    reservedIPs: Type.Optional(
      Type.Array(IPv4Address, {
        maxItems: 10,
        ...SET,
        description: "Existing reserved IPs, one per droplet (slot i gets reservedIPs[i]); they become the egress IPs",
      }),
    ),
    allocateReservedIPs: Type.Optional(
      Type.Boolean({
        default: true,
        description: "Create reserved IPs for droplets without one (deleted with the gateway)",
      }),
    ),
    keepAllocatedReservedIPs: Type.Optional(
      Type.Boolean({
        default: false,
        description:
          "When the gateway is deleted, leave the reserved IPs it allocated in the account (unassigned), " +
          "recorded for the next gateway of this name, which takes them again (default: deleted with the gateway)",
      }),
    ),
    nodeTag: Type.String({
      minLength: 1,
      maxLength: LIMITS.text,
      description: "Tag carried by the cluster's node droplets; the gateway firewall admits only these",
    }),
  },
  {
    additionalProperties: false,
    description:
      "The controller creates and owns the gateway droplets, their reserved IPs and a firewall. Instances are listed in status.",
  },
);

export const HealthTiming = Type.Object(
  {
    intervalMs: Type.Optional(Type.Integer({ minimum: LIMITS.healthIntervalMs, maximum: 10_000, default: 100 })),
    multiplier: Type.Optional(Type.Integer({ minimum: 1, maximum: 50, default: 3 })),
    holdDownMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000, default: 5_000 })),
  },
  { additionalProperties: false },
);

/**
 * Tenancy (docs/policies.md): which namespaces' EgressPolicies may use this gateway, with which
 * of its egress IPs, and whether they may outrank ClusterEgressPolicies. ClusterEgressPolicies
 * (cluster admins) need no grant.
 */
export const GatewayGrant = Type.Object(
  {
    namespaceSelector: {
      ...LabelSelector,
      description:
        "Namespaces granted (matched on their labels, e.g. kubernetes.io/metadata.name); {} grants every namespace",
    },
    egressIPs: Type.Optional(
      Type.Array(IPv4AddressOrCidr, {
        maxItems: LIMITS.grantEgressIPs,
        description:
          "Egress IPs (addresses or CIDRs) of this gateway those namespaces may claim; absent: all of the gateway's egress IPs",
      }),
    ),
    outrankClusterPolicies: Type.Optional(
      Type.Boolean({
        default: false,
        description:
          "Whether those namespaces' EgressPolicies may take precedence over ClusterEgressPolicies (by priority); otherwise they always come after them",
      }),
    ),
  },
  { additionalProperties: false },
);
export type GatewayGrant = Static<typeof GatewayGrant>;

export const EgressGatewaySpec = Type.Object(
  {
    static: Type.Optional(
      Type.Object(
        {
          instances: Type.Array(StaticInstance, {
            minItems: 1,
            maxItems: LIMITS.instances,
            // Keyed by name: a repeated name is refused at once, and server-side apply merges by it.
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
          }),
        },
        { additionalProperties: false },
      ),
    ),
    nodes: Type.Optional(NodesSource),
    digitalocean: Type.Optional(DigitalOceanSource),
    health: Type.Optional(HealthTiming),
    grants: Type.Optional(
      Type.Array(GatewayGrant, {
        maxItems: LIMITS.grants,
        description:
          "Namespaces whose EgressPolicies may use this gateway (absent or empty: none; " +
          "ClusterEgressPolicies always may). A namespace matched by several grants gets their union",
      }),
    ),
  },
  {
    additionalProperties: false,
    "x-kubernetes-validations": [
      {
        rule: "(has(self.static) ? 1 : 0) + (has(self.nodes) ? 1 : 0) + (has(self.digitalocean) ? 1 : 0) == 1",
        message: "exactly one instance source must be set (static, nodes or digitalocean)",
      },
    ] satisfies CelRule[],
  },
);
export type EgressGatewaySpec = Static<typeof EgressGatewaySpec>;

const InstanceStatus = Type.Object({
  name: Type.String(),
  /** Cloud resource id (droplet id) for provisioned instances. */
  id: Type.Optional(Type.String()),
  address: Type.String(),
  egressIPs: Type.Array(Type.String()),
  health: Type.String(),
  since: Type.Optional(Type.String()),
});

export const EgressGatewayStatus = Type.Object({
  instances: Type.Optional(Type.Array(InstanceStatus)),
  readyInstances: Type.Optional(Type.Integer()),
  conditions: Type.Optional(Type.Array(Condition)),
});
export type EgressGatewayStatus = Static<typeof EgressGatewayStatus>;

export type EgressGateway = Resource<"EgressGateway", EgressGatewaySpec, EgressGatewayStatus>;

export const EgressGatewayKind: KindDefinition = {
  kind: "EgressGateway",
  plural: "egressgateways",
  singular: "egressgateway",
  shortNames: ["egw"],
  scope: "Cluster",
  spec: EgressGatewaySpec,
  status: EgressGatewayStatus,
  printerColumns: [
    { name: "Ready", type: "integer", jsonPath: ".status.readyInstances", description: "Healthy instances" },
    { name: "Status", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].reason' },
    { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
  ],
};
