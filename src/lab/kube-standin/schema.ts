/**
 * Custom resources checked against their CRD's structural `openAPIV3Schema`, in the order the
 * real server uses: prune unknown fields, apply `default`s, then validate. Validation runs on
 * ajv; its errors are reworded into field errors like kube-openapi's
 * (`spec.port in body must be of type integer: "string"`).
 *
 * Not evaluated: `x-kubernetes-validations` (CEL rules) and `x-kubernetes-list-type: map` keys.
 */

import AjvModule from "ajv";
import type { ErrorObject, ValidateFunction } from "ajv";
import addFormatsModule from "ajv-formats";
import { isPlainObject, deepClone, type JsonObject } from "./types.js";
import { formatValue, type FieldError } from "./errors.js";

const Ajv = AjvModule.default;
const addFormats = addFormatsModule.default;

export type OpenApiSchema = JsonObject;

export class SchemaCompileError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SchemaCompileError";
  }
}

const AJV_FORMATS = ["ipv4", "ipv6", "uuid", "hostname", "date-time", "date", "uri", "email", "byte"] as const;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function isCidr(s: string): boolean {
  const m = /^(.+)\/(\d{1,3})$/.exec(s);
  if (!m) return false;
  const ip = m[1] as string;
  const bits = Number(m[2]);
  if (IPV4.test(ip)) return bits <= 32;
  return ip.includes(":") && /^[0-9a-fA-F:.]+$/.test(ip) && bits <= 128 && isIpv6(ip);
}

function isIpv6(s: string): boolean {
  const parts = s.split("::");
  if (parts.length > 2) return false;
  const groups = parts.flatMap((p) => (p === "" ? [] : p.split(":")));
  const ok = groups.every((g, i) => /^[0-9a-fA-F]{1,4}$/.test(g) || (i === groups.length - 1 && IPV4.test(g)));
  return ok && (parts.length === 2 ? groups.length < 8 : groups.length === 8 || (groups.length === 7 && IPV4.test(groups[6] ?? "")));
}

const EXTRA_FORMATS: Record<string, (s: string) => boolean> = {
  cidr: isCidr,
  mac: (s) => /^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$/.test(s),
  // Go's time.ParseDuration syntax, which is what Kubernetes means by "duration".
  duration: (s) => /^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$|^0$/.test(s),
};

const KNOWN_FORMATS = new Set<string>([...AJV_FORMATS, ...Object.keys(EXTRA_FORMATS)]);

/** Turns a structural OpenAPI v3 schema into a JSON Schema ajv understands. */
export function toJsonSchema(s: OpenApiSchema): JsonObject {
  const out: JsonObject = {};
  const nullable = s.nullable === true;
  const type = s.type as string | undefined;
  if (!type && s["x-kubernetes-int-or-string"] === true) out.type = ["integer", "string"];
  else if (type) out.type = nullable ? [type, "null"] : type;
  for (const k of ["required", "pattern", "maximum", "minimum", "maxLength", "minLength", "maxItems", "minItems", "uniqueItems", "multipleOf", "maxProperties", "minProperties"]) {
    if (s[k] !== undefined) out[k] = s[k];
  }
  if (Array.isArray(s.enum)) out.enum = nullable ? [...s.enum, null] : s.enum;
  if (s.exclusiveMinimum === true && typeof s.minimum === "number") {
    out.exclusiveMinimum = s.minimum;
    delete out.minimum;
  }
  if (s.exclusiveMaximum === true && typeof s.maximum === "number") {
    out.exclusiveMaximum = s.maximum;
    delete out.maximum;
  }
  if (typeof s.format === "string" && KNOWN_FORMATS.has(s.format) && (type === undefined || type === "string")) out.format = s.format;
  if (s["x-kubernetes-list-type"] === "set") out.uniqueItems = true;
  if (isPlainObject(s.properties)) {
    const props: JsonObject = {};
    for (const [k, v] of Object.entries(s.properties)) if (isPlainObject(v)) props[k] = toJsonSchema(v);
    out.properties = props;
  }
  if (isPlainObject(s.items)) out.items = toJsonSchema(s.items);
  if (isPlainObject(s.additionalProperties)) out.additionalProperties = toJsonSchema(s.additionalProperties);
  for (const k of ["allOf", "anyOf", "oneOf"]) {
    const arr = s[k];
    if (Array.isArray(arr)) out[k] = arr.filter(isPlainObject).map(toJsonSchema);
  }
  if (isPlainObject(s.not)) out.not = toJsonSchema(s.not);
  return out;
}

/** Removes fields the schema does not declare; returns their paths (for strict field validation). */
export function prune(value: unknown, schema: OpenApiSchema | undefined, path: string, unknown: string[], isRoot = false): unknown {
  if (!schema) return value;
  if (Array.isArray(value)) {
    const items = isPlainObject(schema.items) ? schema.items : undefined;
    return value.map((v, i) => prune(v, items, `${path}[${i}]`, unknown));
  }
  if (!isPlainObject(value)) return value;
  const props = isPlainObject(schema.properties) ? schema.properties : undefined;
  const additional = isPlainObject(schema.additionalProperties) ? schema.additionalProperties : undefined;
  const preserve = schema["x-kubernetes-preserve-unknown-fields"] === true || schema.additionalProperties === true;
  const embedded = schema["x-kubernetes-embedded-resource"] === true;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(value)) {
    const childPath = path ? `${path}.${k}` : k;
    const childSchema = props && isPlainObject(props[k]) ? (props[k] as OpenApiSchema) : undefined;
    if ((isRoot || embedded) && (k === "apiVersion" || k === "kind" || k === "metadata")) {
      out[k] = childSchema && k !== "metadata" ? prune(v, childSchema, childPath, unknown) : v;
    } else if (childSchema) {
      out[k] = prune(v, childSchema, childPath, unknown);
    } else if (additional) {
      out[k] = prune(v, additional, childPath, unknown);
    } else if (preserve || (!props && !additional && schema.type === undefined)) {
      out[k] = v;
    } else {
      unknown.push(childPath);
    }
  }
  return out;
}

/** Fills in `default`s for missing (or null, when not nullable) properties, top-down. */
export function applyDefaults(value: unknown, schema: OpenApiSchema | undefined): unknown {
  if (!schema) return value;
  if (Array.isArray(value)) {
    const items = isPlainObject(schema.items) ? schema.items : undefined;
    return items ? value.map((v) => applyDefaults(v, items)) : value;
  }
  if (!isPlainObject(value)) return value;
  const out: JsonObject = { ...value };
  if (isPlainObject(schema.properties)) {
    for (const [k, raw] of Object.entries(schema.properties)) {
      if (!isPlainObject(raw)) continue;
      const missing = out[k] === undefined || (out[k] === null && raw.nullable !== true);
      if (missing && raw.default !== undefined) out[k] = deepClone(raw.default);
      if (out[k] !== undefined) out[k] = applyDefaults(out[k], raw);
    }
  }
  if (isPlainObject(schema.additionalProperties)) {
    const add = schema.additionalProperties;
    const known = isPlainObject(schema.properties) ? schema.properties : {};
    for (const k of Object.keys(out)) if (!(k in known)) out[k] = applyDefaults(out[k], add);
  }
  return out;
}

function goType(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

/** `/spec/destinations/0` against the data → `spec.destinations[0]`. */
export function fieldPathOf(instancePath: string, root: unknown): string {
  if (!instancePath) return "";
  let out = "";
  let cur: unknown = root;
  for (const raw of instancePath.slice(1).split("/")) {
    const seg = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (Array.isArray(cur)) {
      out += `[${seg}]`;
      cur = cur[Number(seg)];
    } else {
      out += out ? `.${seg}` : seg;
      cur = isPlainObject(cur) ? cur[seg] : undefined;
    }
  }
  return out;
}

function join(base: string, child: string): string {
  return base ? `${base}.${child}` : child;
}

/** Rewords one ajv error as kube-openapi would. */
export function toFieldError(e: ErrorObject, root: unknown): FieldError {
  const field = fieldPathOf(e.instancePath, root);
  const data: unknown = e.data;
  const p = e.params as Record<string, unknown>;
  const inBody = `${field} in body`;
  const invalid = (why: string, shown: unknown = data): FieldError => ({
    field,
    reason: "FieldValueInvalid",
    detail: `Invalid value: ${formatValue(shown)}: ${why}`,
  });
  switch (e.keyword) {
    case "required":
      return { field: join(field, String(p.missingProperty)), reason: "FieldValueRequired", detail: "Required value" };
    case "type": {
      const want = Array.isArray(p.type) ? (p.type as string[]).filter((t) => t !== "null").join(",") : String(p.type);
      return {
        field,
        reason: "FieldValueTypeInvalid",
        detail: `Invalid value: ${JSON.stringify(goType(data))}: ${inBody} must be of type ${want}: ${JSON.stringify(goType(data))}`,
      };
    }
    case "enum": {
      const allowed = (Array.isArray(e.schema) ? e.schema : []).filter((x) => x !== null);
      return { field, reason: "FieldValueNotSupported", detail: `Unsupported value: ${formatValue(data)}: supported values: ${allowed.map(formatValue).join(", ")}` };
    }
    case "pattern":
      return invalid(`${inBody} should match '${String(p.pattern)}'`);
    case "format":
      return invalid(`${inBody} must be of type ${String(p.format)}: ${formatValue(data)}`);
    case "minimum":
      return invalid(`${inBody} should be greater than or equal to ${String(p.limit)}`);
    case "exclusiveMinimum":
      return invalid(`${inBody} should be greater than ${String(p.limit)}`);
    case "maximum":
      return invalid(`${inBody} should be less than or equal to ${String(p.limit)}`);
    case "exclusiveMaximum":
      return invalid(`${inBody} should be less than ${String(p.limit)}`);
    case "multipleOf":
      return invalid(`${inBody} should be a multiple of ${String(p.multipleOf)}`);
    case "minLength":
      return invalid(`${inBody} should be at least ${String(p.limit)} chars long`);
    case "maxLength":
      return { field, reason: "FieldValueTooLong", detail: `Too long: may not be longer than ${String(p.limit)}` };
    case "minItems":
      return invalid(`${inBody} should have at least ${String(p.limit)} items`, Array.isArray(data) ? data.length : data);
    case "maxItems":
      return { field, reason: "FieldValueTooMany", detail: `Too many: ${Array.isArray(data) ? data.length : "?"}: must have at most ${String(p.limit)} items` };
    case "uniqueItems": {
      // The later of the two equal items is the duplicate.
      const at = Math.max(Number(p.i), Number(p.j));
      return { field: `${field}[${at}]`, reason: "FieldValueDuplicate", detail: `Duplicate value: ${formatValue(Array.isArray(data) ? data[at] : data)}` };
    }
    case "minProperties":
      return invalid(`${inBody} should have at least ${String(p.limit)} properties`, "object");
    case "maxProperties":
      return { field, reason: "FieldValueTooMany", detail: `Too many: must have at most ${String(p.limit)} properties` };
    case "oneOf":
      return invalid(`${inBody} must validate one and only one schema (oneOf)`, "object");
    case "anyOf":
      return invalid(`${inBody} must validate at least one schema (anyOf)`, "object");
    case "not":
      return invalid(`${inBody} must not validate the schema (not)`, "object");
    default:
      return invalid(`${inBody} ${e.message ?? "is invalid"}`);
  }
}

/** Drops errors reported inside anyOf/oneOf/not branches: the branch's own error says enough. */
function topLevelErrors(errors: ErrorObject[]): ErrorObject[] {
  const combinators = errors.filter((e) => e.keyword === "anyOf" || e.keyword === "oneOf" || e.keyword === "not").map((e) => e.schemaPath);
  return errors.filter((e) => !combinators.some((c) => e.schemaPath !== c && e.schemaPath.startsWith(`${c}/`)));
}

export interface ProcessedObject {
  object: JsonObject;
  /** Paths of fields that were pruned because the schema does not declare them. */
  unknownFields: string[];
  errors: FieldError[];
}

/** One CRD version's schema, compiled once. */
export class CrdSchema {
  private readonly validate: ValidateFunction;
  private readonly bodySchema: OpenApiSchema;

  constructor(readonly openApiSchema: OpenApiSchema) {
    // metadata is checked by the generic object-meta validation, as on the real server.
    const properties = isPlainObject(openApiSchema.properties) ? { ...openApiSchema.properties } : undefined;
    if (properties) delete properties.metadata;
    this.bodySchema = properties ? { ...openApiSchema, properties } : openApiSchema;
    const ajv = new Ajv({ allErrors: true, verbose: true, strict: false, logger: false, validateFormats: true });
    addFormats(ajv, [...AJV_FORMATS]);
    for (const [name, fn] of Object.entries(EXTRA_FORMATS)) ajv.addFormat(name, { type: "string", validate: fn });
    try {
      this.validate = ajv.compile(toJsonSchema(this.bodySchema));
    } catch (e) {
      throw new SchemaCompileError(`openAPIV3Schema cannot be compiled: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Prunes, defaults and validates a whole object (metadata is left alone). */
  process(obj: JsonObject): ProcessedObject {
    const unknownFields: string[] = [];
    const pruned = prune(obj, this.openApiSchema, "", unknownFields, true) as JsonObject;
    const defaulted = applyDefaults(pruned, this.bodySchema) as JsonObject;
    const { metadata, ...body } = defaulted;
    const ok = this.validate(body);
    const errors = ok ? [] : topLevelErrors(this.validate.errors ?? []).map((e) => toFieldError(e, body));
    const object: JsonObject = { ...defaulted };
    if (metadata !== undefined) object.metadata = metadata;
    return { object, unknownFields, errors: dedupe(errors) };
  }
}

function dedupe(errors: FieldError[]): FieldError[] {
  const seen = new Set<string>();
  return errors.filter((e) => {
    const k = `${e.field}\u0000${e.detail}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
