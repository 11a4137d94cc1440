import { GROUP, VERSION, type KindDefinition } from "./common.js";
import { EgressGatewayKind } from "./egress-gateway.js";
import { ClusterEgressPolicyKind, EgressPolicyKind } from "./egress-policy.js";
import { AppKind } from "./app.js";

export const ALL_KINDS: readonly KindDefinition[] = [
  EgressGatewayKind,
  EgressPolicyKind,
  ClusterEgressPolicyKind,
  AppKind,
];

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/**
 * Turns one of our (TypeBox, JSON Schema draft 7) schemas into a Kubernetes *structural*
 * schema: no `additionalProperties: false` (the API server prunes instead), maps as
 * `additionalProperties`, unions of literals as `enum`, and no `const`.
 *
 * Every other keyword of a field is copied as it is: bounds (`maxItems`, `maxLength`, in the
 * TypeBox options where the field is defined, from LIMITS in common.ts) and, later, per-field
 * CEL rules (`"x-kubernetes-validations": [{ rule, message }]` in the same options; ajv ignores
 * the keyword, the API server enforces it).
 */
export function toStructuralSchema(schema: unknown): Json {
  const plain = JSON.parse(JSON.stringify(schema)) as Json; // drops TypeBox's symbol keys
  return convert(plain);
}

function convert(node: Json): Json {
  if (Array.isArray(node)) return node.map(convert);
  if (node === null || typeof node !== "object") return node;
  const out: { [k: string]: Json } = {};
  const anyOf = node.anyOf;
  if (Array.isArray(anyOf) && anyOf.every((s) => isObject(s) && "const" in s)) {
    const { anyOf: _drop, ...rest } = node;
    return { ...convertObject(rest), type: "string", enum: anyOf.map((s) => (s as { const: Json }).const) };
  }
  Object.assign(out, convertObject(node));
  return out;
}

function convertObject(node: { [k: string]: Json }): { [k: string]: Json } {
  const out: { [k: string]: Json } = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === "additionalProperties" && value === false) continue;
    if (key === "const" || key === "$id") continue;
    if (key === "patternProperties" && isObject(value)) {
      const [only] = Object.values(value);
      if (only !== undefined) out.additionalProperties = convert(only);
      continue;
    }
    out[key] = convert(value);
  }
  return out;
}

function isObject(v: Json | undefined): v is { [k: string]: Json } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The CustomResourceDefinition's name for one kind, e.g. `egresspolicies.staticegress.io`. */
export function crdName(def: KindDefinition): string {
  return `${def.plural}.${def.group ?? GROUP}`;
}

/** The CustomResourceDefinition object for one kind. */
export function crdFor(def: KindDefinition): Record<string, unknown> {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: crdName(def) },
    spec: {
      group: def.group ?? GROUP,
      scope: def.scope,
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular: def.singular,
        shortNames: def.shortNames,
        categories: ["static-egress"],
      },
      versions: [
        {
          name: def.version ?? VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: def.printerColumns,
          schema: {
            openAPIV3Schema: {
              type: "object",
              description: `${def.kind} (static-egress). Generated from src/api/v1alpha1; do not edit.`,
              required: ["spec"],
              ...(def.rootValidations ? { "x-kubernetes-validations": def.rootValidations } : {}),
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec: toStructuralSchema(def.spec),
                status: toStructuralSchema(def.status),
              },
            },
          },
        },
      ],
    },
  };
}
