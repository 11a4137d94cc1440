import { Type, type Static, type TSchema } from "@sinclair/typebox";

export const GROUP = "staticegress.io";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

const IPV4_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const IPV4 = `${IPV4_OCTET}(\\.${IPV4_OCTET}){3}`;

/** An IPv4 address, checked by the CRD schema itself (the API server rejects a bad one). */
export const IPv4Address = Type.String({ pattern: `^${IPV4}$`, maxLength: 15, description: "An IPv4 address, e.g. 192.0.2.10" });
/** An IPv4 CIDR; host bits may be set (they are masked off when planning). */
export const IPv4Cidr = Type.String({
  pattern: `^${IPV4}/(3[0-2]|[12]?[0-9])$`,
  maxLength: 18,
  description: "An IPv4 CIDR, e.g. 198.51.100.0/24",
});

/** An IPv4 address or CIDR (a grant of one address or of a block). */
export const IPv4AddressOrCidr = Type.String({
  pattern: `^${IPV4}(/(3[0-2]|[12]?[0-9]))?$`,
  maxLength: 18,
  description: "An IPv4 address or CIDR, e.g. 192.0.2.10 or 192.0.2.0/28",
});

/**
 * Upper bounds of lists and strings in the CRDs (`maxItems`, `maxLength`): the API server
 * refuses longer ones, so one object cannot make every agent and the controller parse and plan
 * an unbounded list. The planner bounds the datapath cost of a policy separately
 * (MAX_MAP_ELEMENTS_PER_POLICY in src/planner/resolve.ts).
 */
export const LIMITS = {
  /** destinationCIDRs and excludedCIDRs of one policy (each). */
  cidrs: 64,
  /** egressIPs of one policy: one per instance that may carry it. */
  policyEgressIPs: 32,
  /** Instances of a static gateway, and egress IPs of one instance. */
  instances: 64,
  instanceEgressIPs: 64,
  /** grants of one gateway, and the egress IPs/CIDRs of one grant. */
  grants: 64,
  grantEgressIPs: 256,
  /** matchExpressions of one selector, values of one expression, matchLabels of one selector. */
  selectorExpressions: 32,
  selectorValues: 64,
  selectorLabels: 64,
  /** A qualified label key (prefix 253 + "/" + name 63) and a label value. */
  labelKey: 317,
  labelValue: 63,
  /** Free-form strings (cloud slugs, ids, tags). */
  text: 255,
} as const;

/** A DNS-1123 label, as Kubernetes names are. */
export const Name = Type.String({ pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength: 63 });

export const LabelSelectorRequirement = Type.Object(
  {
    key: Type.String({ minLength: 1, maxLength: LIMITS.labelKey }),
    operator: Type.Union([Type.Literal("In"), Type.Literal("NotIn"), Type.Literal("Exists"), Type.Literal("DoesNotExist")]),
    values: Type.Optional(Type.Array(Type.String({ maxLength: LIMITS.labelValue }), { maxItems: LIMITS.selectorValues })),
  },
  { additionalProperties: false },
);

/** The Kubernetes label selector (matchLabels AND matchExpressions); `{}` selects everything. */
export const LabelSelector = Type.Object(
  {
    matchLabels: Type.Optional(Type.Record(Type.String(), Type.String({ maxLength: LIMITS.labelValue }), { maxProperties: LIMITS.selectorLabels })),
    matchExpressions: Type.Optional(Type.Array(LabelSelectorRequirement, { maxItems: LIMITS.selectorExpressions })),
  },
  { additionalProperties: false },
);
export type LabelSelector = Static<typeof LabelSelector>;

export const Condition = Type.Object({
  type: Type.String(),
  status: Type.Union([Type.Literal("True"), Type.Literal("False"), Type.Literal("Unknown")]),
  reason: Type.String(),
  message: Type.String(),
  lastTransitionTime: Type.String(),
  observedGeneration: Type.Optional(Type.Integer()),
});
export type Condition = Static<typeof Condition>;

/** The part of ObjectMeta the planner reads. */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
}

export interface Resource<K extends string, Spec, Status> {
  apiVersion: typeof API_VERSION;
  kind: K;
  metadata: ObjectMeta;
  spec: Spec;
  status?: Status;
}

/** What the CRD generator needs to know about one kind. */
export interface KindDefinition {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  scope: "Namespaced" | "Cluster";
  spec: TSchema;
  status: TSchema;
  printerColumns: { name: string; type: string; jsonPath: string; description?: string; priority?: number }[];
}
