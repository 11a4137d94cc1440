/**
 * CustomResourceDefinitions: defaulting, validation and status of the CRD objects themselves,
 * and the resource definition a CRD turns into once it is stored.
 */

import { fieldInvalid, fieldRequired, type FieldError } from "./errors.js";
import { JsonPathError, parseJsonPath } from "./jsonpath.js";
import { customResourceTable, type PrinterColumn } from "./printers.js";
import type { ResourceDef, ServedVersion, StrategyContext } from "./resource.js";
import { CrdSchema, SchemaCompileError, type OpenApiSchema } from "./schema.js";
import { deepEqual, getPath, isPlainObject, rfc3339, type JsonObject, type KubeObject } from "./types.js";
import { nameErrors } from "./validation.js";

const CR_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"];

function obj(v: unknown): JsonObject {
  return isPlainObject(v) ? v : {};
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
}

/** Kubernetes version ordering: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else (alphabetical). */
export function compareKubeVersions(a: string, b: string): number {
  const parse = (v: string): [number, number, number, string] => {
    const m = /^v(\d+)(?:(alpha|beta)(\d+))?$/.exec(v);
    if (!m) return [0, 0, 0, v];
    const stage = m[2] === undefined ? 3 : m[2] === "beta" ? 2 : 1;
    return [stage, Number(m[1]), Number(m[3] ?? 0), v];
  };
  const [sa, ma, na, va] = parse(a);
  const [sb, mb, nb, vb] = parse(b);
  if ((sa === 0) !== (sb === 0)) return sa === 0 ? 1 : -1;
  if (sa === 0) return va < vb ? -1 : va > vb ? 1 : 0;
  if (ma !== mb) return mb - ma;
  if (sa !== sb) return sb - sa;
  return nb - na;
}

function crdNames(spec: JsonObject): JsonObject {
  const names = obj(spec.names);
  const kind = typeof names.kind === "string" ? names.kind : "";
  return {
    ...names,
    singular: typeof names.singular === "string" && names.singular ? names.singular : kind.toLowerCase(),
    listKind: typeof names.listKind === "string" && names.listKind ? names.listKind : `${kind}List`,
  };
}

function defaultCrdSpec(crd: KubeObject): void {
  const spec = obj(crd.spec);
  crd.spec = {
    ...spec,
    names: crdNames(spec),
    conversion: spec.conversion ?? { strategy: "None" },
    versions: Array.isArray(spec.versions) ? spec.versions.map((v) => (isPlainObject(v) ? { ...v, served: v.served ?? true, storage: v.storage ?? false } : v)) : spec.versions,
  };
}

function acceptedStatus(crd: KubeObject, old: JsonObject | undefined, now: number): JsonObject {
  const spec = obj(crd.spec);
  const storage = (Array.isArray(spec.versions) ? spec.versions : []).map(obj).find((v) => v.storage === true);
  const stored = strings(old?.storedVersions);
  if (typeof storage?.name === "string" && !stored.includes(storage.name)) stored.push(storage.name);
  const at = rfc3339(now);
  const conditions = Array.isArray(old?.conditions)
    ? old.conditions
    : [
        { type: "NamesAccepted", status: "True", lastTransitionTime: at, reason: "NoConflicts", message: "no conflicts found" },
        { type: "Established", status: "True", lastTransitionTime: at, reason: "InitialNamesAccepted", message: "the initial names have been accepted" },
      ];
  return { ...(old ?? {}), conditions, acceptedNames: crdNames(spec), storedVersions: stored };
}

export type SchemaCompiler = (schema: OpenApiSchema) => CrdSchema;

function validateCrd(crd: KubeObject, old: KubeObject | undefined, compile: SchemaCompiler): FieldError[] {
  const errs: FieldError[] = [];
  const spec = obj(crd.spec);
  const names = obj(spec.names);
  const group = spec.group;
  if (typeof group !== "string" || group === "") errs.push(fieldRequired("spec.group"));
  else if (!group.includes(".")) errs.push(fieldInvalid("spec.group", group, "should be a domain with at least one dot"));
  else for (const why of nameErrors(group, "subdomain")) errs.push(fieldInvalid("spec.group", group, why));
  if (typeof names.plural !== "string" || names.plural === "") errs.push(fieldRequired("spec.names.plural"));
  else for (const why of nameErrors(names.plural, "label")) errs.push(fieldInvalid("spec.names.plural", names.plural, why));
  if (typeof names.kind !== "string" || names.kind === "") errs.push(fieldRequired("spec.names.kind"));
  if (typeof names.plural === "string" && typeof group === "string" && crd.metadata.name !== `${names.plural}.${group}`) {
    errs.push(fieldInvalid("metadata.name", crd.metadata.name, 'must be spec.names.plural+"."+spec.group'));
  }
  if (spec.scope !== "Namespaced" && spec.scope !== "Cluster") {
    errs.push({ field: "spec.scope", reason: "FieldValueNotSupported", detail: `Unsupported value: ${JSON.stringify(spec.scope ?? "")}: supported values: "Cluster", "Namespaced"` });
  }
  if (old && !deepEqual(obj(old.spec).scope, spec.scope)) errs.push(fieldInvalid("spec.scope", spec.scope, "field is immutable"));
  const versions = Array.isArray(spec.versions) ? spec.versions.map(obj) : [];
  if (versions.length === 0) errs.push(fieldRequired("spec.versions", "must have exactly one version marked as storage version"));
  else if (versions.filter((v) => v.storage === true).length !== 1) {
    errs.push(fieldInvalid("spec.versions", versions.map((v) => v.name), "must have exactly one version marked as storage version"));
  }
  versions.forEach((v, i) => {
    const p = `spec.versions[${i}]`;
    if (typeof v.name !== "string" || v.name === "") errs.push(fieldRequired(`${p}.name`));
    const schema = getPath(v, ["schema", "openAPIV3Schema"]);
    if (!isPlainObject(schema)) errs.push(fieldRequired(`${p}.schema.openAPIV3Schema`, "schemas are required"));
    else {
      try {
        compile(schema);
      } catch (e) {
        if (!(e instanceof SchemaCompileError)) throw e;
        errs.push(fieldInvalid(`${p}.schema.openAPIV3Schema`, "object", e.message));
      }
    }
    (Array.isArray(v.additionalPrinterColumns) ? v.additionalPrinterColumns.map(obj) : []).forEach((c, j) => {
      const cp = `${p}.additionalPrinterColumns[${j}]`;
      if (typeof c.name !== "string" || !c.name) errs.push(fieldRequired(`${cp}.name`));
      if (!["integer", "number", "string", "boolean", "date"].includes(String(c.type))) {
        errs.push({ field: `${cp}.type`, reason: "FieldValueNotSupported", detail: `Unsupported value: ${JSON.stringify(c.type ?? "")}: supported values: "boolean", "date", "integer", "number", "string"` });
      }
      if (typeof c.jsonPath !== "string" || !c.jsonPath) errs.push(fieldRequired(`${cp}.jsonPath`));
      else {
        try {
          parseJsonPath(c.jsonPath);
        } catch (e) {
          if (!(e instanceof JsonPathError)) throw e;
          errs.push(fieldInvalid(`${cp}.jsonPath`, c.jsonPath, "must be a simple json path starting with ."));
        }
      }
    });
  });
  return errs;
}

/** The CRD kind's registry strategy; `compile` compiles (and may cache) version schemas. */
export function crdStrategy(compile: SchemaCompiler): Pick<ResourceDef, "prepareForCreate" | "prepareForUpdate" | "validate"> {
  return {
    prepareForCreate(crd: KubeObject, ctx: StrategyContext) {
      defaultCrdSpec(crd);
      crd.status = acceptedStatus(crd, undefined, ctx.now());
    },
    prepareForUpdate(crd: KubeObject, old: KubeObject, ctx: StrategyContext) {
      defaultCrdSpec(crd);
      crd.status = acceptedStatus(crd, isPlainObject(old.status) ? old.status : undefined, ctx.now());
    },
    validate: (crd, old) => validateCrd(crd, old, compile),
  };
}

/** Compiles schemas once per distinct schema (CRD writes validate, then serve, the same schemas). */
export function cachingSchemaCompiler(maxEntries = 64): SchemaCompiler {
  const cache = new Map<string, CrdSchema>();
  return (schema) => {
    const key = JSON.stringify(schema);
    const hit = cache.get(key);
    if (hit) return hit;
    const compiled = new CrdSchema(schema);
    cache.set(key, compiled);
    if (cache.size > maxEntries) cache.delete(cache.keys().next().value as string);
    return compiled;
  };
}

/** The resource a stored (valid) CRD serves. */
export function resourceDefFromCrd(crd: KubeObject, compile: SchemaCompiler = (s) => new CrdSchema(s)): ResourceDef {
  const spec = obj(crd.spec);
  const names = crdNames(spec);
  const all = (Array.isArray(spec.versions) ? spec.versions : []).map(obj);
  const served: ServedVersion[] = all
    .filter((v) => v.served !== false && typeof v.name === "string")
    .sort((a, b) => compareKubeVersions(String(a.name), String(b.name)))
    .map((v) => ({
      name: String(v.name),
      schema: compile(obj(getPath(v, ["schema", "openAPIV3Schema"])) as OpenApiSchema),
      table: customResourceTable(Array.isArray(v.additionalPrinterColumns) ? (v.additionalPrinterColumns as PrinterColumn[]) : undefined),
      statusSubresource: isPlainObject(getPath(v, ["subresources", "status"])),
    }));
  const storage = all.find((v) => v.storage === true);
  const selectable: Record<string, (o: KubeObject) => string> = {};
  for (const v of all) {
    for (const s of Array.isArray(v.selectableFields) ? v.selectableFields.map(obj) : []) {
      if (typeof s.jsonPath !== "string") continue;
      const parts = s.jsonPath.replace(/^\./, "").split(".");
      selectable[parts.join(".")] = (o) => {
        const x = getPath(o, parts);
        return x === undefined || x === null ? "" : String(x);
      };
    }
  }
  return {
    group: String(spec.group),
    versions: served,
    storageVersion: String(storage?.name ?? served[0]?.name ?? ""),
    plural: String(names.plural),
    singular: String(names.singular),
    kind: String(names.kind),
    listKind: String(names.listKind),
    namespaced: spec.scope === "Namespaced",
    shortNames: strings(names.shortNames),
    categories: strings(names.categories),
    verbs: CR_VERBS,
    extraSubresources: [],
    nameRule: "subdomain",
    custom: true,
    hasGeneration: true,
    allowUnconditionalUpdate: false,
    returnDeletedObject: true,
    strategicMergePatch: false,
    selectableFields: selectable,
    indexedFields: [],
  };
}
