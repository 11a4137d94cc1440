import { parse } from "@marcbachmann/cel-js";
import { Ajv, type ErrorObject, type FuncKeywordDefinition, type ValidateFunction } from "ajv";
import type { CelRule, KindDefinition } from "./common.js";
import { ALL_KINDS } from "./crd.js";

/** One problem with one field of one resource, e.g. `spec.destinationCIDRs[0]`. */
export interface FieldError {
  field: string;
  message: string;
}

/**
 * Validates specs against the same schemas the CRDs are generated from, and fills defaults. The
 * Kubernetes keywords of those schemas are enforced as the API server does: list types (`set`,
 * `map` with its keys: no repeated item or key) and CEL rules (`x-kubernetes-validations`,
 * evaluated by a CEL implementation with the rule's own message).
 */
export class SpecValidator {
  private readonly ajv: Ajv;
  private readonly kinds: Map<string, KindDefinition>;
  private readonly byKind = new Map<string, ValidateFunction>();

  constructor(kinds: readonly KindDefinition[] = ALL_KINDS) {
    // The schemas are ours (TypeBox, and the CRDs are generated from them): checking them against
    // JSON Schema's meta-schema at every start would only cost time (it compiles the meta-schema).
    this.ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true, validateSchema: false });
    addKubernetesKeywords(this.ajv);
    this.kinds = new Map(kinds.map((k) => [k.kind, k]));
  }

  /**
   * Compiles these kinds' validators now (all when none given); otherwise each is compiled at its
   * first `check`. A node agent does it while its informers list, so the first plan does not wait.
   */
  compile(kinds: readonly string[] = [...this.kinds.keys()]): void {
    for (const kind of kinds) this.validatorFor(kind);
  }

  /** Returns the field errors of `spec` (an empty list when valid); fills schema defaults in place. */
  check(kind: string, spec: unknown): FieldError[] {
    const validate = this.validatorFor(kind);
    if (!validate) return [{ field: "kind", message: `unknown kind ${kind}` }];
    if (validate(spec)) return [];
    return describeErrors(validate.errors ?? [], "spec");
  }

  private validatorFor(kind: string): ValidateFunction | undefined {
    let validate = this.byKind.get(kind);
    const definition = this.kinds.get(kind);
    if (!validate && definition) this.byKind.set(kind, (validate = this.ajv.compile(definition.spec)));
    return validate;
  }
}

/** What a keyword's compile step returns (ajv does not export the name). */
type DataValidateFunction = ReturnType<NonNullable<FuncKeywordDefinition["compile"]>>;

const LIST_TYPE = "x-kubernetes-list-type";
const CEL_RULES = "x-kubernetes-validations";

/** Teaches `ajv` the Kubernetes keywords of a CRD schema (list types and CEL rules), as the API server enforces them. */
export function addKubernetesKeywords(ajv: Ajv): Ajv {
  ajv.addKeyword({
    keyword: LIST_TYPE,
    type: "array",
    schemaType: "string",
    errors: true,
    compile(listType: string, parentSchema: Record<string, unknown>) {
      const keys = (parentSchema["x-kubernetes-list-map-keys"] as string[] | undefined) ?? [];
      const identity = (item: unknown): string =>
        listType === "map"
          ? JSON.stringify(keys.map((k) => (item as Record<string, unknown> | null)?.[k]))
          : JSON.stringify(item);
      const validate: DataValidateFunction = (data: unknown[]) => {
        if (listType !== "set" && listType !== "map") return true;
        const seen = new Set<string>();
        const errors: Partial<ErrorObject>[] = [];
        data.forEach((item, index) => {
          const id = identity(item);
          if (seen.has(id)) {
            const what =
              listType === "map"
                ? keys.map((k) => `${k} ${JSON.stringify((item as Record<string, unknown>)[k])}`).join(", ")
                : `value ${JSON.stringify(item)}`;
            errors.push({ keyword: LIST_TYPE, params: { index }, message: `duplicate ${what}` });
          }
          seen.add(id);
        });
        validate.errors = errors;
        return errors.length === 0;
      };
      return validate;
    },
  });
  ajv.addKeyword({
    keyword: CEL_RULES,
    schemaType: "array",
    errors: true,
    compile(rules: CelRule[]) {
      const compiled = rules.map((r) => ({
        r,
        holds: parse(r.rule),
        message: r.messageExpression ? parse(r.messageExpression) : undefined,
      }));
      const validate: DataValidateFunction = (data: unknown) => {
        const errors: Partial<ErrorObject>[] = [];
        for (const { r, holds, message } of compiled) {
          let ok: unknown;
          try {
            ok = holds({ self: data });
          } catch {
            continue; // a value of the wrong shape: the schema's own keywords say what is wrong
          }
          if (ok === true) continue;
          let text = r.message ?? `failed rule: ${r.rule}`;
          if (message) {
            try {
              text = String(message({ self: data }));
            } catch {
              // keep the static message
            }
          }
          errors.push({ keyword: CEL_RULES, params: { fieldPath: r.fieldPath ?? "" }, message: text });
        }
        validate.errors = errors;
        return errors.length === 0;
      };
      return validate;
    },
  });
  return ajv;
}

export function describeErrors(errors: readonly ErrorObject[], root: string): FieldError[] {
  const seen = new Set<string>();
  const out: FieldError[] = [];
  for (const e of errors) {
    let field = fieldPath(
      root,
      e.instancePath,
      e.keyword === "required" ? (e.params as { missingProperty: string }).missingProperty : undefined,
    );
    if (e.keyword === LIST_TYPE) field += `[${(e.params as { index: number }).index}]`;
    if (e.keyword === CEL_RULES) field += (e.params as { fieldPath: string }).fieldPath;
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
