/**
 * The three patch formats the API accepts: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
 * and strategic merge patch (built-in kinds only, as on the real server; merge keys come from
 * a table of the list fields that the built-in types we serve declare).
 */

import { deepClone, deepEqual, isPlainObject, type JsonObject } from "./types.js";

export class PatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PatchError";
  }
}

/** RFC 7386: objects merge recursively, null deletes, anything else replaces. */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return deepClone(patch);
  const result: JsonObject = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete result[k];
    else result[k] = applyMergePatch(result[k], v);
  }
  return result;
}

interface JsonPatchOp {
  op: string;
  path: string;
  value?: unknown;
  from?: string;
}

function parsePointer(ptr: string): string[] {
  if (ptr === "") return [];
  if (!ptr.startsWith("/")) throw new PatchError(`invalid JSON pointer ${JSON.stringify(ptr)}`);
  return ptr
    .slice(1)
    .split("/")
    .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function arrayIndex(arr: unknown[], token: string, forInsert: boolean): number {
  if (forInsert && token === "-") return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(token)) throw new PatchError(`invalid array index ${JSON.stringify(token)}`);
  const idx = Number(token);
  if (idx > arr.length || (!forInsert && idx === arr.length)) throw new PatchError(`array index ${idx} out of bounds`);
  return idx;
}

function getAt(doc: unknown, tokens: string[], ptr: string): unknown {
  let cur = doc;
  for (const t of tokens) {
    if (Array.isArray(cur)) cur = cur[arrayIndex(cur, t, false)];
    else if (isPlainObject(cur) && Object.prototype.hasOwnProperty.call(cur, t)) cur = cur[t];
    else throw new PatchError(`path ${JSON.stringify(ptr)} does not exist`);
  }
  return cur;
}

/** Applies one mutation at the parent of `tokens`; the document is already a private copy. */
function mutate(doc: unknown, tokens: string[], ptr: string, fn: (parent: JsonObject | unknown[], last: string) => void): unknown {
  if (tokens.length === 0) throw new PatchError(`cannot modify the document root at ${JSON.stringify(ptr)}`);
  const parent = getAt(doc, tokens.slice(0, -1), ptr);
  if (!isPlainObject(parent) && !Array.isArray(parent)) throw new PatchError(`path ${JSON.stringify(ptr)} does not exist`);
  fn(parent, tokens[tokens.length - 1] as string);
  return doc;
}

/** RFC 6902. Throws PatchError (the server answers 422) when an operation cannot apply or a test fails. */
export function applyJsonPatch(target: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new PatchError("a JSON patch must be an array of operations");
  let doc = deepClone(target);
  for (const raw of ops) {
    if (!isPlainObject(raw) || typeof raw.op !== "string" || typeof raw.path !== "string") throw new PatchError("invalid JSON patch operation");
    const op = raw as unknown as JsonPatchOp;
    const tokens = parsePointer(op.path);
    switch (op.op) {
      case "add":
        if (tokens.length === 0) {
          doc = deepClone(op.value);
          break;
        }
        doc = mutate(doc, tokens, op.path, (parent, last) => {
          if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, true), 0, deepClone(op.value));
          else parent[last] = deepClone(op.value);
        });
        break;
      case "remove":
        doc = mutate(doc, tokens, op.path, (parent, last) => {
          if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, false), 1);
          else if (Object.prototype.hasOwnProperty.call(parent, last)) delete parent[last];
          else throw new PatchError(`unable to remove nonexistent key: ${last}: missing value`);
        });
        break;
      case "replace":
        if (tokens.length === 0) {
          doc = deepClone(op.value);
          break;
        }
        doc = mutate(doc, tokens, op.path, (parent, last) => {
          if (Array.isArray(parent)) parent[arrayIndex(parent, last, false)] = deepClone(op.value);
          else if (Object.prototype.hasOwnProperty.call(parent, last)) parent[last] = deepClone(op.value);
          else throw new PatchError(`replace operation does not apply: doc is missing key: ${op.path}: missing value`);
        });
        break;
      case "move":
      case "copy": {
        if (typeof op.from !== "string") throw new PatchError(`${op.op} operation needs "from"`);
        const fromTokens = parsePointer(op.from);
        const value = deepClone(getAt(doc, fromTokens, op.from));
        if (op.op === "move") doc = applyJsonPatch(doc, [{ op: "remove", path: op.from }]);
        doc = applyJsonPatch(doc, [{ op: "add", path: op.path, value }]);
        break;
      }
      case "test": {
        const actual = getAt(doc, tokens, op.path);
        if (!deepEqual(actual, op.value)) throw new PatchError(`testing value ${op.path} failed: test failed`);
        break;
      }
      default:
        throw new PatchError(`unexpected kind of operation ${JSON.stringify(op.op)}`);
    }
  }
  return doc;
}

/**
 * List fields of the built-in kinds we serve, keyed by their path with `[]` for list items.
 * A string is the merge key; "primitive" marks lists of scalars with patchStrategy=merge.
 * Lists not named here are replaced as a whole, like atomic lists on the real server.
 */
export const BUILTIN_MERGE_KEYS: Readonly<Record<string, string>> = {
  "metadata.finalizers": "primitive",
  "metadata.ownerReferences": "uid",
  "spec.containers": "name",
  "spec.initContainers": "name",
  "spec.ephemeralContainers": "name",
  "spec.containers[].env": "name",
  "spec.initContainers[].env": "name",
  "spec.containers[].ports": "containerPort",
  "spec.initContainers[].ports": "containerPort",
  "spec.containers[].volumeMounts": "mountPath",
  "spec.initContainers[].volumeMounts": "mountPath",
  "spec.volumes": "name",
  "spec.imagePullSecrets": "name",
  "spec.hostAliases": "ip",
  "spec.podCIDRs": "primitive",
  "spec.ports": "port",
  "status.conditions": "type",
  "status.addresses": "type",
  "status.podIPs": "ip",
  "status.hostIPs": "ip",
  "status.volumesAttached": "name",
};

/**
 * Strategic merge patch with the directives kubectl generates: `$patch` (replace, delete,
 * merge), `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.
 */
export function applyStrategicMergePatch(target: unknown, patch: unknown, mergeKeys: Readonly<Record<string, string>> = BUILTIN_MERGE_KEYS): unknown {
  return smpValue(target, patch, "", mergeKeys);
}

function smpValue(target: unknown, patch: unknown, path: string, keys: Readonly<Record<string, string>>): unknown {
  if (!isPlainObject(patch)) return deepClone(patch);
  const directive = patch["$patch"];
  if (directive === "replace") {
    const { $patch: _p, ...rest } = patch;
    return stripDirectives(rest);
  }
  if (directive === "delete") return undefined;
  const result: JsonObject = isPlainObject(target) ? { ...target } : {};
  const orders: Array<[string, unknown[]]> = [];
  for (const [k, v] of Object.entries(patch)) {
    if (k === "$patch" || k === "$retainKeys") continue;
    if (k.startsWith("$setElementOrder/")) {
      if (Array.isArray(v)) orders.push([k.slice("$setElementOrder/".length), v]);
      continue;
    }
    if (k.startsWith("$deleteFromPrimitiveList/")) {
      const field = k.slice("$deleteFromPrimitiveList/".length);
      const cur = result[field];
      if (Array.isArray(cur) && Array.isArray(v)) result[field] = cur.filter((x) => !v.some((d) => deepEqual(d, x)));
      continue;
    }
    const childPath = path ? `${path}.${k}` : k;
    if (v === null) {
      delete result[k];
    } else if (Array.isArray(v)) {
      const mergeKey = keys[childPath];
      result[k] = mergeKey ? mergeList(result[k], v, childPath, mergeKey, keys) : stripDirectives(v);
    } else if (isPlainObject(v)) {
      const merged = smpValue(result[k], v, childPath, keys);
      if (merged === undefined) delete result[k];
      else result[k] = merged;
    } else {
      result[k] = v;
    }
  }
  for (const [field, order] of orders) {
    const list = result[field];
    const mergeKey = keys[path ? `${path}.${field}` : field];
    if (Array.isArray(list) && mergeKey) result[field] = reorder(list, order, mergeKey);
  }
  const retain = patch["$retainKeys"];
  if (Array.isArray(retain)) for (const k of Object.keys(result)) if (!retain.includes(k)) delete result[k];
  return result;
}

function mergeList(target: unknown, patch: unknown[], path: string, mergeKey: string, keys: Readonly<Record<string, string>>): unknown[] {
  const current = Array.isArray(target) ? [...target] : [];
  if (mergeKey === "primitive") {
    for (const v of patch) if (!current.some((c) => deepEqual(c, v))) current.push(deepClone(v));
    return current;
  }
  if (patch.some((p) => isPlainObject(p) && p["$patch"] === "replace")) {
    return patch.filter((p) => !(isPlainObject(p) && p["$patch"] === "replace")).map(stripDirectives);
  }
  const itemPath = `${path}[]`;
  for (const item of patch) {
    if (!isPlainObject(item)) {
      current.push(deepClone(item));
      continue;
    }
    const idx = current.findIndex((c) => isPlainObject(c) && deepEqual(c[mergeKey], item[mergeKey]));
    if (item["$patch"] === "delete") {
      if (idx >= 0) current.splice(idx, 1);
      continue;
    }
    if (idx >= 0) current[idx] = smpValue(current[idx], item, itemPath, keys);
    else current.push(smpValue(undefined, item, itemPath, keys));
  }
  return current;
}

function reorder(list: unknown[], order: unknown[], mergeKey: string): unknown[] {
  const keyOf = (x: unknown): unknown => (mergeKey === "primitive" ? x : isPlainObject(x) ? x[mergeKey] : x);
  const ordered: unknown[] = [];
  const rest = [...list];
  for (const o of order) {
    const idx = rest.findIndex((x) => deepEqual(keyOf(x), keyOf(o)));
    if (idx >= 0) ordered.push(...rest.splice(idx, 1));
  }
  return [...ordered, ...rest];
}

function stripDirectives(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isPlainObject(v)) return v;
  const out: JsonObject = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith("$")) out[k] = stripDirectives(x);
  return out;
}
