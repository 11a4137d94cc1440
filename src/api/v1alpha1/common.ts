import { Type, type Static, type TSchema } from "@sinclair/typebox";

export const GROUP = "staticegress.io";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

const IPV4_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const IPV4 = `${IPV4_OCTET}(\\.${IPV4_OCTET}){3}`;

/** An IPv4 address, checked by the CRD schema itself (the API server rejects a bad one). */
export const IPv4Address = Type.String({
  pattern: `^${IPV4}$`,
  maxLength: 15,
  description: "An IPv4 address, e.g. 192.0.2.10",
});
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
  /** egressIPs of one policy: one or more per instance that may carry it. */
  policyEgressIPs: 32,
  /** egressIPs of one policy on one instance (its SNAT pool there). */
  poolEgressIPs: 8,
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
  /** A policy's verification URL (spec.verification.url). */
  url: 512,
  /** The shortest gateway health interval (spec.health.intervalMs), ms. */
  healthIntervalMs: 10,
} as const;

/** A DNS-1123 label, as Kubernetes names are. */
export const Name = Type.String({ pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength: 63 });

/** A label key: an optional DNS subdomain prefix and "/", then a name of at most 63 characters (no backslash: it goes into CEL too). */
export const LABEL_KEY_PATTERN =
  "^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/** A label value: empty, or at most 63 alphanumerics, '-', '_' and '.', alphanumeric at both ends. */
export const LABEL_VALUE_PATTERN = "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";

/**
 * A CEL rule the API server evaluates (`x-kubernetes-validations` in the CRD) and our validator
 * evaluates too (validate.ts), with the same message, so both refuse the same input naming the
 * same field. Rules must stay within what both CEL implementations share (no `ip()`/`cidr()`:
 * address shape is a `pattern`) and within the API server's cost budget, which counts every list
 * at its `maxItems`.
 */
export interface CelRule {
  rule: string;
  message?: string;
  messageExpression?: string;
  /** Relative to the field that carries the rule, e.g. ".values". */
  fieldPath?: string;
  reason?: "FieldValueInvalid" | "FieldValueForbidden" | "FieldValueRequired" | "FieldValueDuplicate";
}

/** Options that make an array of scalars a set: the API server refuses a repeated item. */
export const SET = { "x-kubernetes-list-type": "set" } as const;

const LabelValue = Type.String({
  maxLength: LIMITS.labelValue,
  pattern: LABEL_VALUE_PATTERN,
  description: "A label value: empty, or at most 63 alphanumerics, '-', '_' and '.', alphanumeric at both ends",
});
const labelKeyMessage =
  "label keys must be an optional DNS subdomain prefix and '/', then at most 63 characters: alphanumerics, '-', '_' and '.', alphanumeric at both ends";

const LabelSelectorRequirement = Type.Object(
  {
    key: Type.String({
      minLength: 1,
      maxLength: LIMITS.labelKey,
      pattern: LABEL_KEY_PATTERN,
      description: "A label key, e.g. app or example.com/tier",
    }),
    operator: Type.Union([
      Type.Literal("In"),
      Type.Literal("NotIn"),
      Type.Literal("Exists"),
      Type.Literal("DoesNotExist"),
    ]),
    values: Type.Optional(Type.Array(LabelValue, { maxItems: LIMITS.selectorValues })),
  },
  {
    additionalProperties: false,
    "x-kubernetes-validations": [
      {
        rule: "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
        messageExpression: "'must be non-empty when operator is ' + self.operator",
        fieldPath: ".values",
        reason: "FieldValueRequired",
      },
      {
        rule: "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
        messageExpression: "'must be empty when operator is ' + self.operator",
        fieldPath: ".values",
        reason: "FieldValueForbidden",
      },
    ] satisfies CelRule[],
  },
);

/** The Kubernetes label selector (matchLabels AND matchExpressions); `{}` selects everything. */
export const LabelSelector = Type.Object(
  {
    matchLabels: Type.Optional(
      Type.Record(Type.String(), LabelValue, {
        maxProperties: LIMITS.selectorLabels,
        "x-kubernetes-validations": [
          { rule: `self.all(k, k.matches('${LABEL_KEY_PATTERN}'))`, message: labelKeyMessage },
        ] satisfies CelRule[],
      }),
    ),
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

/**
 * ObjectMeta as code outside the planner reads it from any object: every field optional, and
 * timestamps as JSON strings (raw objects) or Dates (the client library's typed core kinds).
 */
export type AnyObjectMeta = Partial<Omit<ObjectMeta, "creationTimestamp" | "deletionTimestamp">> & {
  creationTimestamp?: string | Date;
  deletionTimestamp?: string | Date;
};

export interface Resource<K extends string, Spec, Status> {
  apiVersion: typeof API_VERSION;
  kind: K;
  metadata: ObjectMeta;
  spec: Spec;
  status?: Status;
}

/** What the CRD generator needs to know about one kind. */
export interface KindDefinition {
  /** Default: ours (GROUP, VERSION). Another project's kind we serve names its own. */
  group?: string;
  version?: string;
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  scope: "Namespaced" | "Cluster";
  spec: TSchema;
  status: TSchema;
  printerColumns: { name: string; type: string; jsonPath: string; description?: string; priority?: number }[];
  /** CEL rules on the whole object (e.g. metadata.name against the spec). */
  rootValidations?: CelRule[];
}
