import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import addFormats from "ajv-formats";
import { parse as parseYaml } from "yaml";

/**
 * Loads the DigitalOcean OpenAPI subset and compiles, per operation, validators for path/query
 * parameters, the request body, and every declared response (body and headers). The stand-in
 * runs every request and every response through these.
 *
 * OpenAPI 3.0 specifics handled here: `$ref` into `#/components/{schemas,parameters,responses,
 * headers}`, `nullable` (native in Ajv), `discriminator` (annotation only: the document uses it
 * on `anyOf`, which Ajv's discriminator support does not accept), `readOnly`/`writeOnly`,
 * `deprecated`, `example`, and the numeric formats `float`/`double`/`int32`/`int64`.
 */

const DO_OPENAPI_FILE = "digitalocean-openapi-subset.yaml";

const SCHEMA_ID = "https://static-egress.invalid/do-openapi.json";
const HTTP_METHODS = ["get", "put", "post", "delete", "patch", "head", "options"] as const;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

export interface ParameterSpec {
  name: string;
  in: "path" | "query" | "header" | "cookie";
  required: boolean;
  /** The parameter's schema type, used to coerce the raw string before validation. */
  type: string | undefined;
  validate: ValidateFunction;
}

export interface ResponseSpec {
  /** Validator of the JSON body; undefined when the response declares no content. */
  body?: ValidateFunction;
  headers: Map<string, { type: string | undefined; validate: ValidateFunction }>;
}

export interface OperationSpec {
  operationId: string;
  method: string;
  pathTemplate: string;
  pattern: RegExp;
  pathParamNames: string[];
  parameters: ParameterSpec[];
  requestBody?: { required: boolean; validate: ValidateFunction };
  /** Keyed by status code string ("200", "404") or "default". */
  responses: Map<string, ResponseSpec>;
}

export interface RequestInput {
  pathParams: Record<string, string>;
  query: URLSearchParams;
  /** Parsed JSON body, or undefined when the request has no body. */
  body: unknown;
}

export interface RequestCheck {
  errors: string[];
  /** Path and query parameters after coercion to their schema types. */
  params: Record<string, unknown>;
}

/** Finds the OpenAPI file: explicit path, then $DO_OPENAPI_SUBSET, then `reference/` (vendored in the repository) or `shared/reference/` above this module. */
export function locateOpenApiDocument(explicitPath?: string): string {
  if (explicitPath) return explicitPath;
  const fromEnv = process.env["DO_OPENAPI_SUBSET"];
  if (fromEnv) return fromEnv;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    for (const candidate of [
      join(dir, "reference", DO_OPENAPI_FILE),
      join(dir, "shared", "reference", DO_OPENAPI_FILE),
    ]) {
      if (existsSync(candidate)) return candidate;
    }
    const parent = resolve(dir, "..");
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(
    `cannot find ${DO_OPENAPI_FILE}: pass openapiPath or set DO_OPENAPI_SUBSET (looked in ` +
      `reference/ and shared/reference/ above ${fileURLToPath(import.meta.url)})`,
  );
}

export class OpenApiDocument {
  readonly operations: OperationSpec[] = [];
  private readonly ajv: Ajv;
  private readonly doc: JsonObject;
  /** Many responses share a schema (errors, lists): compile each distinct one once. */
  private readonly compiled = new Map<string, ValidateFunction>();

  private constructor(doc: JsonObject) {
    this.doc = doc;
    this.ajv = new Ajv({
      allErrors: true,
      strict: false,
      validateFormats: true,
      logger: false,
      // The document's patterns escape characters such as `\:`, which the `u` flag rejects.
      unicodeRegExp: false,
    });
    addFormats.default(this.ajv);
    for (const name of ["float", "double"]) this.ajv.addFormat(name, { type: "number", validate: () => true });
    for (const name of ["int32", "int64"]) this.ajv.addFormat(name, { type: "number", validate: Number.isInteger });
    this.ajv.addKeyword({ keyword: "discriminator" });
    this.ajv.addKeyword({ keyword: "example" });
    this.ajv.addKeyword({ keyword: "xml" });
    this.ajv.addKeyword({ keyword: "externalDocs" });

    const components = asObject(doc["components"], "components");
    const schemas = asObject(components["schemas"], "components.schemas");
    this.ajv.addSchema({ $id: SCHEMA_ID, definitions: rewriteRefs(schemas) as JsonObject });
    this.compileOperations();
  }

  static load(path?: string): OpenApiDocument {
    const file = locateOpenApiDocument(path);
    const doc = parseYaml(readFileSync(file, "utf8")) as unknown;
    if (!doc || typeof doc !== "object") throw new Error(`${file}: not an OpenAPI document`);
    return new OpenApiDocument(doc as JsonObject);
  }

  operation(operationId: string): OperationSpec {
    const op = this.operations.find((o) => o.operationId === operationId);
    if (!op) throw new Error(`unknown operationId ${operationId}`);
    return op;
  }

  /** Matches a concrete request path to an operation; literal segments win over templated ones. */
  match(method: string, pathname: string): { op: OperationSpec; pathParams: Record<string, string> } | undefined {
    const lower = method.toLowerCase();
    const candidates = this.operations
      .filter((o) => o.method === lower)
      .map((op) => ({ op, m: op.pattern.exec(pathname) }))
      .filter((c): c is { op: OperationSpec; m: RegExpExecArray } => c.m !== null)
      .sort((a, b) => a.op.pathParamNames.length - b.op.pathParamNames.length);
    const first = candidates[0];
    if (!first) return undefined;
    const pathParams: Record<string, string> = {};
    first.op.pathParamNames.forEach((name, i) => {
      pathParams[name] = decodeURIComponent(first.m[i + 1] ?? "");
    });
    return { op: first.op, pathParams };
  }

  /** True when some operation exists for the path with another method (answer 405, not 404). */
  pathExists(pathname: string): boolean {
    return this.operations.some((o) => o.pattern.test(pathname));
  }

  validateRequest(op: OperationSpec, input: RequestInput): RequestCheck {
    const errors: string[] = [];
    const params: Record<string, unknown> = {};
    for (const p of op.parameters) {
      let raw: string | undefined;
      if (p.in === "path") raw = input.pathParams[p.name];
      else if (p.in === "query") raw = input.query.get(p.name) ?? undefined;
      else continue; // the subset declares no header or cookie parameters
      if (raw === undefined) {
        if (p.required) errors.push(`${p.in} parameter "${p.name}" is required`);
        continue;
      }
      const value = coerce(raw, p.type);
      if (!p.validate(value)) errors.push(...formatErrors(`${p.in} parameter "${p.name}"`, p.validate.errors));
      params[p.name] = value;
    }
    if (op.requestBody) {
      if (input.body === undefined) {
        if (op.requestBody.required) errors.push("request body is required");
      } else if (!op.requestBody.validate(input.body)) {
        errors.push(...formatErrors("request body", op.requestBody.validate.errors));
      }
    } else if (input.body !== undefined) {
      errors.push("operation takes no request body");
    }
    return { errors, params };
  }

  /** Returns the problems of a response the stand-in is about to send; empty means valid. */
  validateResponse(op: OperationSpec, status: number, headers: Record<string, string>, body: unknown): string[] {
    const spec = op.responses.get(String(status)) ?? op.responses.get("default");
    if (!spec) return [`status ${status} is not declared for ${op.operationId}`];
    const errors: string[] = [];
    for (const [name, h] of spec.headers) {
      const raw = headers[name];
      if (raw === undefined) continue; // the document declares no required headers
      if (!h.validate(coerce(raw, h.type))) errors.push(...formatErrors(`header ${name}`, h.validate.errors));
    }
    if (spec.body) {
      if (body === undefined) errors.push(`status ${status} requires a JSON body`);
      else if (!spec.body(body)) errors.push(...formatErrors("response body", spec.body.errors));
    } else if (body !== undefined) {
      errors.push(`status ${status} declares no body`);
    }
    return errors;
  }

  private compileOperations(): void {
    const paths = asObject(this.doc["paths"], "paths");
    for (const [template, pathItemRaw] of Object.entries(paths)) {
      const pathItem = asObject(pathItemRaw, template);
      for (const method of HTTP_METHODS) {
        const opRaw = pathItem[method];
        if (!opRaw) continue;
        const op = asObject(opRaw, `${method} ${template}`);
        const operationId = String(op["operationId"]);
        const pathParamNames: string[] = [];
        const pattern = new RegExp(
          "^" +
            template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{([^}]+)\}/g, (_m, name: string) => {
              pathParamNames.push(name);
              return "([^/]+)";
            }) +
            "/?$",
        );
        const parameters = [...asArray(pathItem["parameters"] ?? []), ...asArray(op["parameters"] ?? [])].map((p) =>
          this.compileParameter(this.deref(p), operationId),
        );
        let requestBody: OperationSpec["requestBody"];
        if (op["requestBody"]) {
          const rb = this.deref(op["requestBody"]);
          const content = asObject(rb["content"], `${operationId} requestBody.content`);
          const media = asObject(content["application/json"], `${operationId} application/json`);
          requestBody = {
            required: rb["required"] === true,
            validate: this.compile(media["schema"] ?? {}, `${operationId} request body`),
          };
        }
        const responses = new Map<string, ResponseSpec>();
        for (const [code, respRaw] of Object.entries(asObject(op["responses"], `${operationId} responses`))) {
          responses.set(code, this.compileResponse(this.deref(respRaw), `${operationId} ${code}`));
        }
        this.operations.push({
          operationId,
          method,
          pathTemplate: template,
          pattern,
          pathParamNames,
          parameters,
          requestBody,
          responses,
        });
      }
    }
  }

  private compileParameter(p: JsonObject, where: string): ParameterSpec {
    const schema = (p["schema"] ?? {}) as JsonObject;
    return {
      name: String(p["name"]),
      in: String(p["in"]) as ParameterSpec["in"],
      required: p["required"] === true,
      type: typeof schema["type"] === "string" ? schema["type"] : undefined,
      validate: this.compile(schema, `${where} parameter ${String(p["name"])}`),
    };
  }

  private compileResponse(resp: JsonObject, where: string): ResponseSpec {
    const headers = new Map<string, { type: string | undefined; validate: ValidateFunction }>();
    for (const [name, hRaw] of Object.entries((resp["headers"] ?? {}) as JsonObject)) {
      const h = this.deref(hRaw);
      const schema = (h["schema"] ?? {}) as JsonObject;
      headers.set(name.toLowerCase(), {
        type: typeof schema["type"] === "string" ? schema["type"] : undefined,
        validate: this.compile(schema, `${where} header ${name}`),
      });
    }
    const content = resp["content"] as JsonObject | undefined;
    const media = content?.["application/json"] as JsonObject | undefined;
    return media ? { headers, body: this.compile(media["schema"] ?? {}, `${where} body`) } : { headers };
  }

  private compile(schema: Json, where: string): ValidateFunction {
    const key = JSON.stringify(schema);
    const cached = this.compiled.get(key);
    if (cached) return cached;
    try {
      const fn = this.ajv.compile(rewriteRefs(schema) as JsonObject);
      this.compiled.set(key, fn);
      return fn;
    } catch (err) {
      throw new Error(`cannot compile schema of ${where}`, { cause: err });
    }
  }

  /** Resolves a `#/components/...` reference object (parameters, responses, headers, bodies). */
  private deref(value: Json | undefined): JsonObject {
    let cur = asObject(value ?? {}, "reference");
    for (let depth = 0; typeof cur["$ref"] === "string"; depth++) {
      if (depth > 16) throw new Error(`reference loop at ${cur["$ref"]}`);
      const pointer = cur["$ref"];
      if (!pointer.startsWith("#/")) throw new Error(`external reference ${pointer} is not supported`);
      let target: Json | undefined = this.doc;
      for (const seg of pointer.slice(2).split("/")) {
        const key = seg.replace(/~1/g, "/").replace(/~0/g, "~");
        target = target && typeof target === "object" && !Array.isArray(target) ? target[key] : undefined;
      }
      if (target === undefined) throw new Error(`unresolved reference ${pointer}`);
      cur = asObject(target, pointer);
    }
    return cur;
  }
}

/**
 * Points `#/components/schemas/X` at the shared definitions schema registered in Ajv, and turns
 * a `discriminator` with a `mapping` beside `oneOf`/`anyOf` into explicit if/then branches: the
 * document's branches overlap (e.g. every droplet action matches the plain `droplet_action`), so
 * only the discriminator picks the branch, as OpenAPI prescribes. A discriminator without
 * oneOf/anyOf (on a base type) stays an annotation.
 */
function rewriteRefs(value: Json): Json {
  if (Array.isArray(value)) return value.map(rewriteRefs);
  if (value && typeof value === "object") {
    const disc = value["discriminator"] as JsonObject | undefined;
    const mapping = disc?.["mapping"] as Record<string, string> | undefined;
    const prop = disc?.["propertyName"];
    if (mapping && typeof prop === "string" && (value["oneOf"] || value["anyOf"])) {
      const rest: JsonObject = {};
      for (const [k, v] of Object.entries(value))
        if (!["oneOf", "anyOf", "discriminator"].includes(k)) rest[k] = rewriteRefs(v);
      const branches: Json[] = Object.entries(mapping).map(([key, ref]) => ({
        if: { properties: { [prop]: { const: key } }, required: [prop] },
        then: { $ref: schemaRef(ref) },
      }));
      return {
        ...rest,
        allOf: [
          ...((rest["allOf"] as Json[] | undefined) ?? []),
          { type: "object", required: [prop], properties: { [prop]: { enum: Object.keys(mapping) } } },
          ...branches,
        ],
      };
    }
    const out: JsonObject = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = k === "$ref" && typeof v === "string" ? schemaRef(v) : rewriteRefs(v);
    }
    return out;
  }
  return value;
}

function schemaRef(ref: string): string {
  const m = /^#\/components\/schemas\/(.+)$/.exec(ref);
  if (!m) throw new Error(`schema reference ${ref} does not point into components.schemas`);
  return `${SCHEMA_ID}#/definitions/${m[1]}`;
}

function coerce(raw: string, type: string | undefined): unknown {
  if ((type === "integer" || type === "number") && /^-?\d+(\.\d+)?$/.test(raw)) return Number(raw);
  if (type === "boolean" && (raw === "true" || raw === "false")) return raw === "true";
  return raw;
}

function formatErrors(where: string, errors: ErrorObject[] | null | undefined): string[] {
  if (!errors || errors.length === 0) return [`${where} is invalid`];
  return errors.map((e) => `${where}${e.instancePath || ""} ${e.message ?? "is invalid"}${paramsText(e)}`);
}

function paramsText(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  if ("allowedValues" in p) return ` (${JSON.stringify(p["allowedValues"])})`;
  if ("missingProperty" in p) return "";
  return "";
}

function asObject(value: unknown, where: string): JsonObject {
  if (!value || typeof value !== "object" || Array.isArray(value)) throw new Error(`${where}: expected an object`);
  return value as JsonObject;
}

function asArray(value: unknown): Json[] {
  return Array.isArray(value) ? (value as Json[]) : [];
}
