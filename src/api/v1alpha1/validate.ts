import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import type { KindDefinition } from "./common.js";
import { ALL_KINDS } from "./crd.js";

/** One problem with one field of one resource, e.g. `spec.destinationCIDRs[0]`. */
export interface FieldError {
  field: string;
  message: string;
}

export class ValidationError extends Error {
  constructor(
    readonly resource: string,
    readonly errors: FieldError[],
  ) {
    super(`${resource} is invalid: ${errors.map((e) => `${e.field}: ${e.message}`).join("; ")}`);
    this.name = "ValidationError";
  }
}

/** Validates specs against the same schemas the CRDs are generated from, and fills defaults. */
export class SpecValidator {
  private readonly byKind = new Map<string, ValidateFunction>();

  constructor(kinds: readonly KindDefinition[] = ALL_KINDS) {
    const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true });
    for (const k of kinds) this.byKind.set(k.kind, ajv.compile(k.spec));
  }

  /** Returns the field errors of `spec` (an empty list when valid); fills schema defaults in place. */
  check(kind: string, spec: unknown): FieldError[] {
    const validate = this.byKind.get(kind);
    if (!validate) return [{ field: "kind", message: `unknown kind ${kind}` }];
    if (validate(spec)) return [];
    return describeErrors(validate.errors ?? [], "spec");
  }
}

export function describeErrors(errors: readonly ErrorObject[], root: string): FieldError[] {
  const seen = new Set<string>();
  const out: FieldError[] = [];
  for (const e of errors) {
    // The oneOf wrapper repeats its branches' errors; say it once, plainly.
    if (e.keyword === "oneOf" || (e.keyword === "required" && errors.some((o) => o.keyword === "oneOf"))) {
      const line = { field: root, message: "exactly one instance source must be set (static, nodes or digitalocean)" };
      if (!seen.has(line.field + line.message)) out.push(line);
      seen.add(line.field + line.message);
      continue;
    }
    const field = fieldPath(root, e.instancePath, e.keyword === "required" ? (e.params as { missingProperty: string }).missingProperty : undefined);
    const message = explain(e);
    const key = `${field}\u0000${message}`;
    if (!seen.has(key)) out.push({ field, message });
    seen.add(key);
  }
  return out;
}

function fieldPath(root: string, pointer: string, child?: string): string {
  let path = root;
  for (const part of pointer.split("/").slice(1)) {
    const p = part.replace(/~1/g, "/").replace(/~0/g, "~");
    path += /^\d+$/.test(p) ? `[${p}]` : `.${p}`;
  }
  return child ? `${path}.${child}` : path;
}

function explain(e: ErrorObject): string {
  const schema = e.parentSchema as { description?: string } | undefined;
  switch (e.keyword) {
    case "pattern":
      return `invalid value ${JSON.stringify(e.data)}${schema?.description ? `: must be ${lowerFirst(schema.description)}` : ""}`;
    case "additionalProperties":
      return `unknown field "${(e.params as { additionalProperty: string }).additionalProperty}"`;
    case "required":
      return "required field is missing";
    case "const":
    case "anyOf":
      return `invalid value ${JSON.stringify(e.data)}`;
    default:
      return e.message ?? e.keyword;
  }
}

function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}
