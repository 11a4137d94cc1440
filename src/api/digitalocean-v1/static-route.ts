import { Type, type Static } from "@sinclair/typebox";
import { Ajv } from "ajv";
import {
  Condition,
  IPv4Address,
  LabelSelector,
  SET,
  type CelRule,
  type KindDefinition,
  type ObjectMeta,
} from "../v1alpha1/common.js";
import { HealthTiming } from "../v1alpha1/egress-gateway.js";
import { addKubernetesKeywords, describeErrors, type FieldError } from "../v1alpha1/validate.js";
import { AddressError, intersect, parseCidr, parseIPv4, type Range } from "../../util/ipv4.js";

/**
 * DigitalOcean's `StaticRoute` (github.com/digitalocean/k8s-staticroute-operator), served as that
 * operator defines it: same group, version, kind, plural, short name, scope, fields and patterns,
 * so a user's existing objects stay valid. Our additions are optional fields (docs/static-routes.md).
 */
export const STATIC_ROUTE_GROUP = "networking.digitalocean.com";
export const STATIC_ROUTE_VERSION = "v1";
export const STATIC_ROUTE_API_VERSION = `${STATIC_ROUTE_GROUP}/${STATIC_ROUTE_VERSION}`;

/** The operator's own patterns, kept byte for byte: octets over 255 are refused by validateStaticRoute. */
const DESTINATION_PATTERN =
  "^([0-9]{1,3}\\.){3}[0-9]{1,3}$|^([0-9]{1,3}\\.){3}[0-9]{1,3}(\\/([0-9]|[1-2][0-9]|3[0-2]))?$";
const GATEWAY_PATTERN = "^([0-9]{1,3}\\.){3}[0-9]{1,3}$";

/** More gateways than this would make every node probe a long list for one route. */
const MAX_STATIC_ROUTE_GATEWAYS = 8;

export const StaticRouteSpec = Type.Object(
  {
    destinations: Type.Array(
      Type.String({
        pattern: DESTINATION_PATTERN,
        description: "An IPv4 address or CIDR, e.g. 34.160.111.145 or 198.51.100.0/24",
      }),
      {
        description: "Destination host(s)/subnet(s) to route through the gateway (required)",
      },
    ),
    gateway: Type.Optional(
      Type.String({
        pattern: GATEWAY_PATTERN,
        description: "Gateway to route through (required unless gateways is set)",
      }),
    ),
    gateways: Type.Optional(
      Type.Array(IPv4Address, {
        minItems: 1,
        maxItems: MAX_STATIC_ROUTE_GATEWAYS,
        ...SET,
        description:
          "static-egress: further gateways, in order of preference after gateway. When set, every node probes all of them (BFD) " +
          "and routes through the first healthy one; with none healthy the destinations are blackholed",
      }),
    ),
    nodeSelector: Type.Optional({
      ...LabelSelector,
      description: "static-egress: nodes that get the route (matched on their labels); absent: every node",
    }),
    health: Type.Optional({
      ...HealthTiming,
      description: "static-egress: probe timing for gateways (defaults 100 ms x 3, hold-down 5 s)",
    }),
  },
  {
    additionalProperties: false,
    "x-kubernetes-validations": [
      {
        rule: "has(self.gateway) || has(self.gateways)",
        message: "gateway (or gateways) must be set",
        fieldPath: ".gateway",
        reason: "FieldValueRequired",
      },
    ] satisfies CelRule[],
  },
);
export type StaticRouteSpec = Static<typeof StaticRouteSpec>;

/** Where one node stands with one StaticRoute; each node agent writes its own entry. */
export const StaticRouteNodeStatus = Type.Object({
  name: Type.String({ description: "Node name" }),
  state: Type.Union([Type.Literal("Routed"), Type.Literal("Blackholed"), Type.Literal("Refused")], {
    description:
      "Routed: in place via gateway; Blackholed: no healthy gateway (fail-closed); Refused: invalid on this node (message says which field)",
  }),
  gateway: Type.Optional(Type.String({ description: "The gateway in use" })),
  message: Type.Optional(Type.String()),
  lastTransitionTime: Type.String(),
});
export type StaticRouteNodeStatus = Static<typeof StaticRouteNodeStatus>;

export const StaticRouteStatus = Type.Object(
  {
    nodes: Type.Optional(
      Type.Array(StaticRouteNodeStatus, {
        // One entry per node, merged by name: every node agent applies only its own (server-side apply).
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
      }),
    ),
    conditions: Type.Optional(Type.Array(Condition)),
  },
  // The operator (kopf) kept its own bookkeeping here: left as it is.
  { "x-kubernetes-preserve-unknown-fields": true },
);
export type StaticRouteStatus = Static<typeof StaticRouteStatus>;

export interface StaticRoute {
  apiVersion: typeof STATIC_ROUTE_API_VERSION;
  kind: "StaticRoute";
  metadata: ObjectMeta;
  spec: StaticRouteSpec;
  status?: StaticRouteStatus;
}

export const StaticRouteKind: KindDefinition = {
  group: STATIC_ROUTE_GROUP,
  version: STATIC_ROUTE_VERSION,
  kind: "StaticRoute",
  plural: "staticroutes",
  singular: "staticroute",
  shortNames: ["sr"],
  scope: "Cluster",
  spec: StaticRouteSpec,
  status: StaticRouteStatus,
  // The operator's columns (Destinations and Gateway with -o wide), then ours.
  printerColumns: [
    { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp", priority: 0 },
    {
      name: "Destinations",
      type: "string",
      jsonPath: ".spec.destinations",
      description: "Destination host(s)/subnet(s)",
      priority: 1,
    },
    {
      name: "Gateway",
      type: "string",
      jsonPath: ".spec.gateway",
      description: "Gateway to route through",
      priority: 1,
    },
    {
      name: "Gateways",
      type: "string",
      jsonPath: ".spec.gateways",
      description: "Further gateways (probed, failover)",
      priority: 1,
    },
  ],
};

/** An address range a destination must never overlap, and what it is (for the message). */
export interface ProtectedRange {
  cidr: string;
  what: string;
}

/**
 * Always protected: link-local, where the cloud's metadata service (169.254.169.254) answers each
 * host itself and where our tunnels' inner next hops live. Routing it away cuts a node off from
 * its own identity (DigitalOcean's droplet agent, cloud-init).
 */
const ALWAYS_PROTECTED: readonly ProtectedRange[] = [
  { cidr: "169.254.0.0/16", what: "the link-local range (metadata service 169.254.169.254)" },
];

/** An IPv4 address or CIDR (a bare address is a /32), or an AddressError. */
export function parseDestination(text: string): Range {
  return parseCidr(text.includes("/") ? text : `${text}/32`);
}

let compiled: ReturnType<Ajv["compile"]> | undefined;
function specValidator() {
  compiled ??= addKubernetesKeywords(new Ajv({ allErrors: true, strict: false, verbose: true })).compile(
    StaticRouteSpec,
  );
  return compiled;
}

/**
 * Checks one StaticRoute (as parsed from YAML or the API) and returns its field errors, empty when
 * valid. Pure: what it knows of the cluster comes in `protect` (API server, cluster CIDRs, the
 * node's subnet); whether a gateway is on-link is a per-node fact the planner checks.
 */
export function validateStaticRoute(obj: unknown, protect: readonly ProtectedRange[] = []): FieldError[] {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) return [{ field: "", message: "not an object" }];
  const o = obj as { apiVersion?: unknown; kind?: unknown; metadata?: { name?: unknown }; spec?: unknown };
  const errors: FieldError[] = [];
  if (o.apiVersion !== STATIC_ROUTE_API_VERSION)
    errors.push({ field: "apiVersion", message: `must be ${STATIC_ROUTE_API_VERSION}` });
  if (o.kind !== "StaticRoute") errors.push({ field: "kind", message: "must be StaticRoute" });
  if (typeof o.metadata?.name !== "string" || o.metadata.name === "")
    errors.push({ field: "metadata.name", message: "required field is missing" });
  if (typeof o.spec !== "object" || o.spec === null)
    return [...errors, { field: "spec", message: "required field is missing" }];
  const spec = structuredClone(o.spec) as StaticRouteSpec;
  const validate = specValidator();
  if (!validate(spec)) return [...errors, ...describeErrors(validate.errors ?? [], "spec")];
  return [...errors, ...checkSpec(spec, [...ALWAYS_PROTECTED, ...protect])];
}

function checkSpec(spec: StaticRouteSpec, protect: readonly ProtectedRange[]): FieldError[] {
  const errors: FieldError[] = [];
  const gateways: { field: string; address: string; n: number }[] = [];
  if (spec.gateway !== undefined) {
    try {
      gateways.push({ field: "spec.gateway", address: spec.gateway, n: parseIPv4(spec.gateway) });
    } catch {
      errors.push({
        field: "spec.gateway",
        message: `invalid value ${JSON.stringify(spec.gateway)}: not an IPv4 address`,
      });
    }
  }
  (spec.gateways ?? []).forEach((g, i) => gateways.push({ field: `spec.gateways[${i}]`, address: g, n: parseIPv4(g) }));
  const protectedRanges = protect.map((p) => ({ ...p, range: parseCidr(p.cidr) }));
  if (spec.destinations.length === 0)
    errors.push({ field: "spec.destinations", message: "must list at least one destination" });
  const seen = new Map<string, number>();
  spec.destinations.forEach((text, i) => {
    const field = `spec.destinations[${i}]`;
    let range: Range;
    try {
      range = parseDestination(text);
    } catch (e) {
      if (!(e instanceof AddressError)) throw e;
      errors.push({ field, message: `invalid value ${JSON.stringify(text)}: not an IPv4 address or CIDR` });
      return;
    }
    const key = `${range.from}-${range.to}`;
    if (seen.has(key)) errors.push({ field, message: `the same destination as spec.destinations[${seen.get(key)}]` });
    seen.set(key, i);
    for (const p of protectedRanges) {
      if (intersect([range], [p.range]).length > 0) {
        errors.push({ field, message: `${text} overlaps ${p.what} (${p.cidr}): refused, it would cut nodes off` });
      }
    }
    for (const g of gateways) {
      if (range.from <= g.n && g.n <= range.to)
        errors.push({
          field,
          message: `${text} contains the gateway ${g.address} (${g.field}): it could never be reached`,
        });
    }
  });
  return errors;
}
