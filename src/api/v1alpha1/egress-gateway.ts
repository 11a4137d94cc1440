import { Type, type Static } from "@sinclair/typebox";
import { Condition, IPv4Address, LabelSelector, Name, type KindDefinition, type Resource } from "./common.js";

export const StaticInstance = Type.Object(
  {
    name: Name,
    address: { ...IPv4Address, description: "Address of the gateway host on the network the nodes share (VPC)" },
    egressIPs: Type.Array(IPv4Address, {
      minItems: 1,
      description: "Public IPs routed to this host; each policy owns some of them",
    }),
    drain: Type.Optional(Type.Boolean({ description: "Move new connections off this instance (maintenance)" })),
  },
  { additionalProperties: false },
);
export type StaticInstance = Static<typeof StaticInstance>;

export const NodesSource = Type.Object(
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

export const HealthTiming = Type.Object(
  {
    intervalMs: Type.Optional(Type.Integer({ minimum: 10, maximum: 10_000, default: 100 })),
    multiplier: Type.Optional(Type.Integer({ minimum: 1, maximum: 50, default: 3 })),
    holdDownMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000, default: 5_000 })),
  },
  { additionalProperties: false },
);

export const EgressGatewaySpec = Type.Object(
  {
    static: Type.Optional(
      Type.Object({ instances: Type.Array(StaticInstance, { minItems: 1 }) }, { additionalProperties: false }),
    ),
    nodes: Type.Optional(NodesSource),
    health: Type.Optional(HealthTiming),
  },
  {
    additionalProperties: false,
    // Exactly one source of instances. Structural schemas allow oneOf of `required` only.
    oneOf: [{ required: ["static"] }, { required: ["nodes"] }],
  },
);
export type EgressGatewaySpec = Static<typeof EgressGatewaySpec>;

export const InstanceStatus = Type.Object({
  name: Type.String(),
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
