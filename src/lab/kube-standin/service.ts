/**
 * The API's verbs with the real server's semantics, independent of HTTP: create, get, list,
 * watch, update, patch, delete (with finalizers), deletecollection; optimistic concurrency,
 * generation, status subresources, namespace lifecycle, and CRDs that add and remove
 * resources.
 */

import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { builtinResources } from "./builtins.js";
import { cachingSchemaCompiler, resourceDefFromCrd, type SchemaCompiler } from "./crd.js";
import {
  alreadyExists,
  badRequest,
  conflict,
  expired,
  fieldForbidden,
  fieldInvalid,
  forbidden,
  invalid,
  methodNotSupported,
  notFound,
  STALE_OBJECT_MESSAGE,
  StatusError,
  successStatus,
  unsupportedMediaType,
  type FieldError,
  type Status,
} from "./errors.js";
import { applyJsonPatch, applyMergePatch, applyStrategicMergePatch, PatchError } from "./patch.js";
import { Registry } from "./registry.js";
import { apiVersionOf, fieldGetter, groupResource, type ResourceDef, type ServedVersion, type StrategyContext } from "./resource.js";
import { FieldSelectorParseError, matchesFields, parseFieldSelector, type FieldRequirement } from "./selectors/fields.js";
import { matchesLabels, parseLabelSelector, SelectorParseError, type LabelRequirement } from "./selectors/labels.js";
import { Store, type ResourceTable } from "./store.js";
import { deepEqual, isPlainObject, objectKey, rfc3339, type JsonObject, type KubeObject, type ObjectMeta } from "./types.js";
import { validateObjectMeta } from "./validation.js";
import { Watcher, type WatchTarget } from "./watch.js";

export interface Scope {
  def: ResourceDef;
  version: ServedVersion;
  /** The namespace in the URL (undefined for cluster-scoped resources and cluster-wide lists). */
  namespace: string | undefined;
}

export type FieldValidation = "Strict" | "Warn" | "Ignore";

export interface WriteOptions {
  dryRun?: boolean;
  fieldValidation?: FieldValidation;
}

export interface WriteResult {
  /** 200, 201 (created) or 202 (deletion pending on finalizers). */
  code: number;
  body: KubeObject | Status;
  warnings: string[];
}

export interface ListQuery {
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  continue?: string;
  resourceVersion?: string;
  resourceVersionMatch?: string;
}

export interface ListResult {
  items: KubeObject[];
  resourceVersion: string;
  continue?: string;
  remainingItemCount?: number;
}

export interface WatchQuery {
  labelSelector?: string;
  fieldSelector?: string;
  resourceVersion?: string;
  resourceVersionMatch?: string;
  sendInitialEvents?: boolean;
  allowWatchBookmarks?: boolean;
}

export interface DeleteOptionsBody {
  preconditions?: { uid?: string; resourceVersion?: string };
}

export type PatchType = "json" | "merge" | "strategic" | "apply";

export interface ServiceOptions {
  historyWindow: number;
  logger: Logger;
  now: () => number;
  newUid?: () => string;
  random?: () => number;
}

const GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789";
const INITIAL_NAMESPACES = ["default", "kube-system", "kube-public", "kube-node-lease"];
const SERVER_SET_META = ["uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "selfLink", "managedFields"];
const IMMUTABLE_META = ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"];

interface Selection {
  labels: LabelRequirement[];
  fields: FieldRequirement[];
  namespace: string | undefined;
  name: string | undefined;
  index: { field: string; value: string } | undefined;
  matches: (obj: KubeObject) => boolean;
}

interface ContinueToken {
  rv: number;
  after: string;
}

export class ApiService {
  readonly store: Store;
  readonly registry: Registry;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly newUid: () => string;
  private readonly random: () => number;
  private clusterIPCounter = 10;
  private readonly ctx: StrategyContext;
  private readonly compileSchema: SchemaCompiler = cachingSchemaCompiler();

  constructor(opts: ServiceOptions) {
    this.store = new Store(opts.historyWindow);
    this.registry = new Registry(builtinResources(this.compileSchema));
    this.log = opts.logger;
    this.now = opts.now;
    this.newUid = opts.newUid ?? randomUUID;
    this.random = opts.random ?? Math.random;
    this.ctx = { now: this.now, nextClusterIP: () => this.nextClusterIP() };
    const ns = this.mustResolve("", "v1", "namespaces");
    for (const name of INITIAL_NAMESPACES) this.create(ns, { apiVersion: "v1", kind: "Namespace", metadata: { name } });
  }

  private nextClusterIP(): string {
    const n = this.clusterIPCounter++;
    return `10.96.${(n >> 8) & 255}.${n & 255}`;
  }

  mustResolve(group: string, version: string, plural: string, namespace?: string): Scope {
    const r = this.registry.resolve(group, version, plural);
    if (!r) throw new Error(`no resource ${plural} in ${apiVersionOf(group, version)}`);
    return { def: r.def, version: r.version, namespace: r.def.namespaced ? namespace : undefined };
  }

  table(def: ResourceDef): ResourceTable {
    const indexers: Record<string, (o: KubeObject) => string> = {};
    for (const f of def.indexedFields) {
      const g = def.selectableFields[f];
      if (g) indexers[f] = g;
    }
    return this.store.table(groupResource(def), def.namespaced, indexers);
  }

  currentRv(): number {
    return this.store.current();
  }

  /** The object as the requested version presents it. */
  present(scope: Pick<Scope, "def" | "version">, obj: KubeObject): KubeObject {
    const apiVersion = apiVersionOf(scope.def.group, scope.version.name);
    if (obj.apiVersion === apiVersion && obj.kind === scope.def.kind) return obj;
    const { apiVersion: _a, kind: _k, metadata, ...rest } = obj;
    return { apiVersion, kind: scope.def.kind, metadata, ...rest };
  }

  // ---------------------------------------------------------------- reads

  get(scope: Scope, name: string): KubeObject {
    const obj = this.table(scope.def).get(objectKey(scope.namespace, name));
    if (!obj) throw notFound(scope.def, name);
    return this.present(scope, obj);
  }

  private selection(scope: Scope, labelSelector: string | undefined, fieldSelector: string | undefined): Selection {
    let labels: LabelRequirement[];
    let fields: FieldRequirement[];
    try {
      labels = parseLabelSelector(labelSelector ?? "");
      fields = parseFieldSelector(fieldSelector ?? "");
    } catch (e) {
      if (e instanceof SelectorParseError || e instanceof FieldSelectorParseError) throw badRequest(e.message);
      throw e;
    }
    const getters = fields.map((f) => {
      const g = fieldGetter(scope.def, f.field);
      if (!g) {
        if (scope.def.custom) {
          const known = ["metadata.name", "metadata.namespace", ...Object.keys(scope.def.selectableFields)].map((x) => JSON.stringify(x)).join(", ");
          throw badRequest(`${JSON.stringify(f.field)} is not a known field selector: only ${known}`);
        }
        throw badRequest(`field label not supported: ${f.field}`);
      }
      return g;
    });
    let namespace = scope.namespace;
    let name: string | undefined;
    let index: { field: string; value: string } | undefined;
    for (const f of fields) {
      if (f.operator !== "=") continue;
      if (f.field === "metadata.namespace" && scope.def.namespaced && namespace === undefined) namespace = f.value;
      else if (f.field === "metadata.name") name = f.value;
      else if (!index && scope.def.indexedFields.includes(f.field)) index = { field: f.field, value: f.value };
    }
    const fieldOf = (obj: KubeObject) => (field: string): string => {
      const i = fields.findIndex((f) => f.field === field);
      return (getters[i] as (o: KubeObject) => string)(obj);
    };
    const ns = namespace;
    const matches = (obj: KubeObject): boolean => {
      if (ns !== undefined && obj.metadata.namespace !== ns) return false;
      if (labels.length && !matchesLabels(labels, obj.metadata.labels)) return false;
      return fields.length === 0 || matchesFields(fields, fieldOf(obj));
    };
    return { labels, fields, namespace, name, index, matches };
  }

  private parseRv(rv: string, what: string): number {
    if (!/^\d+$/.test(rv)) throw badRequest(`invalid ${what} ${JSON.stringify(rv)}: must be a non-negative integer`);
    return Number(rv);
  }

  private decodeContinue(token: string): ContinueToken {
    try {
      const parsed: unknown = JSON.parse(Buffer.from(token, "base64").toString("utf8"));
      if (isPlainObject(parsed) && typeof parsed.rv === "number" && typeof parsed.start === "string" && parsed.start.endsWith("\u0000")) {
        return { rv: parsed.rv, after: parsed.start.slice(0, -1) };
      }
    } catch {
      /* reported below */
    }
    throw badRequest("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)");
  }

  private encodeContinue(rv: number, after: string): string {
    return Buffer.from(JSON.stringify({ v: "meta.k8s.io/v1", rv, start: `${after}\u0000` })).toString("base64");
  }

  list(scope: Scope, q: ListQuery): ListResult {
    const sel = this.selection(scope, q.labelSelector, q.fieldSelector);
    const table = this.table(scope.def);
    let atRv: number | undefined;
    let after: string | undefined;
    if (q.continue) {
      if (q.resourceVersion) throw badRequest("specifying resource version is not allowed when using continue");
      const token = this.decodeContinue(q.continue);
      if (!table.history.covers(token.rv)) {
        throw expired(
          "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        );
      }
      atRv = token.rv < this.store.current() ? token.rv : undefined;
      after = token.after;
    } else if (q.resourceVersionMatch === "Exact") {
      if (!q.resourceVersion || q.resourceVersion === "0") throw badRequest("resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"\" or \"0\"");
      const rv = this.parseRv(q.resourceVersion, "resourceVersion");
      if (!table.history.covers(rv)) throw expired(`The resourceVersion for the provided list is too old.`);
      if (rv > this.store.current()) throw new StatusError(504, "Timeout", `Too large resource version: ${rv}, current: ${this.store.current()}`, { causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }], retryAfterSeconds: 1 });
      atRv = rv < this.store.current() ? rv : undefined;
    } else if (q.resourceVersionMatch && q.resourceVersionMatch !== "NotOlderThan") {
      throw badRequest(`resourceVersionMatch: Unsupported value: ${JSON.stringify(q.resourceVersionMatch)}: supported values: "Exact", "NotOlderThan"`);
    } else if (q.resourceVersion) {
      this.parseRv(q.resourceVersion, "resourceVersion");
    }
    const listRv = atRv ?? (q.continue ? this.decodeContinue(q.continue).rv : this.store.current());
    const page = table.list({
      ...(sel.namespace !== undefined ? { namespace: sel.namespace } : {}),
      ...(sel.name !== undefined ? { name: sel.name } : {}),
      ...(sel.index ? { index: sel.index } : {}),
      filter: sel.matches,
      ...(q.limit ? { limit: q.limit } : {}),
      ...(after !== undefined ? { after } : {}),
      ...(atRv !== undefined ? { atRv } : {}),
      countRemaining: sel.labels.length === 0 && sel.fields.length === 0,
    });
    const result: ListResult = { items: page.items.map((o) => this.present(scope, o)), resourceVersion: String(listRv) };
    if (page.continueAfter !== undefined) {
      result.continue = this.encodeContinue(listRv, page.continueAfter);
      if (page.remaining !== undefined) result.remainingItemCount = page.remaining;
    }
    return result;
  }

  /**
   * Starts a watch: replays what the client missed (or the current state as ADDED), then
   * follows changes. Returns the function that stops it.
   */
  watch(scope: Scope, q: WatchQuery, target: WatchTarget): () => void {
    const sel = this.selection(scope, q.labelSelector, q.fieldSelector);
    const table = this.table(scope.def);
    const rvParam = q.resourceVersion ?? "";
    const watcher = new Watcher(sel.namespace, sel.name === undefined ? sel.index : undefined, sel.matches, target);
    const initialState = (): void => {
      const page = table.list({
        ...(sel.namespace !== undefined ? { namespace: sel.namespace } : {}),
        ...(sel.name !== undefined ? { name: sel.name } : {}),
        ...(sel.index ? { index: sel.index } : {}),
        filter: sel.matches,
      });
      for (const obj of page.items) target.send("ADDED", obj);
    };
    if (q.sendInitialEvents) {
      if (!q.allowWatchBookmarks) throw invalid("ListOptions", "meta.k8s.io", "", [fieldForbidden("allowWatchBookmarks", "allowWatchBookmarks required when using sendInitialEvents")]);
      initialState();
      const rv = this.store.current();
      target.send("BOOKMARK", {
        apiVersion: apiVersionOf(scope.def.group, scope.version.name),
        kind: scope.def.kind,
        metadata: { resourceVersion: String(rv), annotations: { "k8s.io/initial-events-end": "true" } },
      });
    } else if (rvParam === "" || rvParam === "0") {
      initialState();
    } else {
      const rv = this.parseRv(rvParam, "resourceVersion");
      const missed = table.history.since(rv);
      if (!missed) {
        target.fail(expired(`too old resource version: ${rv} (${table.history.compactedRv + 1})`).toStatus());
        return () => undefined;
      }
      for (const ev of missed) watcher.onEvent(ev);
    }
    table.addListener(watcher);
    return () => table.removeListener(watcher);
  }

  // ---------------------------------------------------------------- writes

  private requireObject(body: unknown): KubeObject {
    if (!isPlainObject(body)) throw badRequest("the request body must be a JSON object");
    const meta = body.metadata;
    if (meta !== undefined && !isPlainObject(meta)) throw badRequest("metadata must be an object");
    // Only metadata's top level is changed in place below; nothing nested is ever mutated.
    return { ...body, metadata: { ...((meta ?? {}) as ObjectMeta) } } as KubeObject;
  }

  private checkTypeMeta(scope: Scope, obj: KubeObject): void {
    const want = apiVersionOf(scope.def.group, scope.version.name);
    if (obj.apiVersion !== undefined && obj.apiVersion !== want) {
      throw badRequest(`the API version in the data (${String(obj.apiVersion)}) does not match the expected API version (${want})`);
    }
    if (obj.kind !== undefined && obj.kind !== scope.def.kind) {
      throw badRequest(`the kind in the data (${String(obj.kind)}) does not match the expected kind (${scope.def.kind})`);
    }
  }

  private checkNamespace(scope: Scope, obj: KubeObject): void {
    if (!scope.def.namespaced) {
      delete obj.metadata.namespace;
      return;
    }
    if (scope.namespace === undefined) throw methodNotSupported(scope.def, "create");
    if (obj.metadata.namespace && obj.metadata.namespace !== scope.namespace) {
      throw badRequest("the namespace of the provided object does not match the namespace sent on the request");
    }
    obj.metadata.namespace = scope.namespace;
  }

  /** The object as stored: storage apiVersion, kind, then the rest. */
  private storageForm(def: ResourceDef, obj: KubeObject): KubeObject {
    const { apiVersion: _a, kind: _k, metadata, ...rest } = obj;
    return { apiVersion: apiVersionOf(def.group, def.storageVersion), kind: def.kind, metadata: orderedMeta(metadata), ...rest };
  }

  /** Schema (custom resources) or strategy validation, plus metadata; returns warnings. */
  private admit(scope: Scope, obj: KubeObject, old: KubeObject | undefined, opts: WriteOptions): { obj: KubeObject; warnings: string[] } {
    const warnings: string[] = [];
    let errors: FieldError[] = [];
    let out = obj;
    if (scope.version.schema) {
      const processed = scope.version.schema.process(obj);
      out = processed.object as KubeObject;
      errors = processed.errors;
      if (processed.unknownFields.length) {
        const fv = opts.fieldValidation ?? "Warn";
        if (fv === "Strict") {
          const list = processed.unknownFields.map((f) => `unknown field ${JSON.stringify(f)}`).join(", ");
          throw badRequest(`${scope.def.kind} in version ${JSON.stringify(scope.version.name)} cannot be handled as a ${scope.def.kind}: strict decoding error: ${list}`);
        }
        if (fv === "Warn") for (const f of processed.unknownFields) warnings.push(`unknown field ${JSON.stringify(f)}`);
      }
    } else if (scope.def.validate) {
      errors = scope.def.validate(obj, old);
    }
    errors = [...validateObjectMeta(out.metadata, scope.def.nameRule, scope.def.namespaced), ...errors];
    if (old?.metadata.deletionTimestamp) {
      const added = (out.metadata.finalizers ?? []).filter((f) => !(old.metadata.finalizers ?? []).includes(f));
      if (added.length) errors.push(fieldForbidden("metadata.finalizers", "no new finalizers can be added if the object is being deleted, found new finalizers " + JSON.stringify(added)));
    }
    if (errors.length) throw invalid(scope.def.kind, scope.def.group, out.metadata.name ?? "", errors);
    return { obj: out, warnings };
  }

  private generateName(prefix: string): string {
    let s = "";
    for (let i = 0; i < 5; i++) s += GENERATE_NAME_ALPHABET[Math.floor(this.random() * GENERATE_NAME_ALPHABET.length)];
    return `${prefix}${s}`;
  }

  private checkNamespaceExists(scope: Scope, name: string): void {
    if (!scope.def.namespaced || scope.namespace === undefined) return;
    const nsDef = this.mustResolve("", "v1", "namespaces").def;
    const ns = this.table(nsDef).get(scope.namespace);
    if (!ns) throw notFound(nsDef, scope.namespace);
    if (ns.metadata.deletionTimestamp) {
      const err = forbidden(scope.def, name, `unable to create new content in namespace ${scope.namespace} because it is being terminated`);
      throw new StatusError(err.code, err.reason, err.message, {
        ...err.details,
        causes: [{ reason: "NamespaceTerminating", message: `namespace ${scope.namespace} is being terminated`, field: "metadata.namespace" }],
      });
    }
  }

  create(scope: Scope, body: unknown, opts: WriteOptions = {}): WriteResult {
    const obj = this.requireObject(body);
    this.checkTypeMeta(scope, obj);
    this.checkNamespace(scope, obj);
    obj.metadata = withoutKeys(obj.metadata, SERVER_SET_META);
    const table = this.table(scope.def);
    if (!obj.metadata.name && obj.metadata.generateName) {
      let name = this.generateName(obj.metadata.generateName);
      for (let i = 0; i < 8 && table.get(objectKey(obj.metadata.namespace, name)); i++) name = this.generateName(obj.metadata.generateName);
      obj.metadata.name = name;
    }
    this.checkNamespaceExists(scope, obj.metadata.name ?? "");
    if (scope.def.custom && scope.version.statusSubresource) delete obj.status;
    scope.def.prepareForCreate?.(obj, this.ctx);
    const admitted = this.admit(scope, obj, undefined, opts);
    const name = admitted.obj.metadata.name as string;
    const key = objectKey(admitted.obj.metadata.namespace, name);
    if (table.get(key)) throw alreadyExists(scope.def, name);
    const meta = admitted.obj.metadata;
    meta.uid = this.newUid();
    meta.creationTimestamp = rfc3339(this.now());
    if (scope.def.hasGeneration) meta.generation = 1;
    const toStore = this.storageForm(scope.def, admitted.obj);
    if (opts.dryRun) return { code: 201, body: this.present(scope, toStore), warnings: admitted.warnings };
    const stored = table.create(toStore);
    this.afterWrite(scope.def, stored);
    return { code: 201, body: this.present(scope, stored), warnings: admitted.warnings };
  }

  update(scope: Scope, name: string, body: unknown, subresource: string | undefined, opts: WriteOptions = {}, fromPatch = false): WriteResult {
    const obj = this.requireObject(body);
    this.checkTypeMeta(scope, obj);
    if (obj.metadata.name !== undefined && obj.metadata.name !== name) {
      throw badRequest(`the name of the object (${obj.metadata.name}) does not match the name on the URL (${name})`);
    }
    obj.metadata.name = name;
    this.checkNamespace(scope, obj);
    const table = this.table(scope.def);
    const key = objectKey(scope.namespace, name);
    const cur = table.get(key);
    if (!cur) throw notFound(scope.def, name);
    const rv = obj.metadata.resourceVersion;
    if (rv !== undefined && rv !== "" && rv !== cur.metadata.resourceVersion) throw conflict(scope.def, name, STALE_OBJECT_MESSAGE);
    if ((rv === undefined || rv === "") && !scope.def.allowUnconditionalUpdate && !fromPatch) {
      throw invalid(scope.def.kind, scope.def.group, name, [fieldInvalid("metadata.resourceVersion", 0, "must be specified for an update")]);
    }

    let next: KubeObject;
    if (subresource === "status") {
      // Only status changes through /status; everything else stays as stored.
      next = { ...cur, metadata: { ...cur.metadata } };
      if (obj.status === undefined) delete next.status;
      else next.status = obj.status;
    } else {
      const meta: ObjectMeta = { ...obj.metadata };
      for (const k of IMMUTABLE_META) {
        if (cur.metadata[k] === undefined) delete meta[k];
        else meta[k] = cur.metadata[k];
      }
      delete meta.managedFields;
      delete meta.selfLink;
      next = { ...obj, metadata: meta };
      if (scope.version.statusSubresource) {
        if (cur.status === undefined) delete next.status;
        else next.status = cur.status;
      }
      scope.def.prepareForUpdate?.(next, cur, this.ctx);
    }
    const admitted = this.admit(scope, next, cur, opts);
    next = this.storageForm(scope.def, admitted.obj);
    next.metadata.resourceVersion = cur.metadata.resourceVersion;
    if (scope.def.hasGeneration) {
      const gen = typeof cur.metadata.generation === "number" ? cur.metadata.generation : 1;
      next.metadata.generation = specChanged(cur, next, scope.version.statusSubresource) ? gen + 1 : gen;
    }
    // An update that changes nothing is not written: no new resourceVersion, no watch event.
    if (deepEqual(next, cur)) return { code: 200, body: this.present(scope, cur), warnings: admitted.warnings };
    if (opts.dryRun) return { code: 200, body: this.present(scope, next), warnings: admitted.warnings };
    const isNamespace = !scope.def.group && scope.def.plural === "namespaces";
    if (!isNamespace && next.metadata.deletionTimestamp && (next.metadata.finalizers ?? []).length === 0) {
      // Like the real store: the update that empties the finalizers deletes the stored object.
      const final = table.remove(key) as KubeObject;
      this.afterRemove(scope.def, final);
      return { code: 200, body: this.present(scope, final), warnings: admitted.warnings };
    }
    const stored = table.update(next);
    this.afterWrite(scope.def, stored);
    return { code: 200, body: this.present(scope, stored), warnings: admitted.warnings };
  }

  patch(scope: Scope, name: string, type: PatchType, patch: unknown, subresource: string | undefined, opts: WriteOptions = {}): WriteResult {
    const cur = this.table(scope.def).get(objectKey(scope.namespace, name));
    if (!cur) throw notFound(scope.def, name);
    const base = this.present(scope, cur);
    let patched: unknown;
    try {
      switch (type) {
        case "merge":
          patched = applyMergePatch(base, patch);
          break;
        case "json":
          patched = applyJsonPatch(base, patch);
          break;
        case "strategic":
          if (!scope.def.strategicMergePatch) {
            throw new StatusError(
              415,
              "UnsupportedMediaType",
              "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            );
          }
          patched = applyStrategicMergePatch(base, patch);
          break;
        case "apply":
          throw unsupportedMediaType("application/apply-patch+yaml (server-side apply is not implemented by the stand-in)");
      }
    } catch (e) {
      if (e instanceof PatchError) throw new StatusError(422, "Invalid", e.message, { name, kind: scope.def.kind, ...(scope.def.group ? { group: scope.def.group } : {}) });
      throw e;
    }
    if (!isPlainObject(patched)) throw badRequest("the patch produced something that is not an object");
    return this.update(scope, name, patched, subresource, opts, true);
  }

  /** POST pods/<name>/binding: what the scheduler does to place a pod. */
  bind(scope: Scope, name: string, body: unknown, opts: WriteOptions = {}): WriteResult {
    if (!isPlainObject(body) || !isPlainObject(body.target) || typeof body.target.name !== "string") {
      throw invalid("Binding", "", name, [fieldInvalid("target.name", "", "must be a node name")]);
    }
    const cur = this.get(scope, name);
    const spec = isPlainObject(cur.spec) ? cur.spec : {};
    if (typeof spec.nodeName === "string" && spec.nodeName) throw conflict(scope.def, name, `pod ${name} is already assigned to node ${JSON.stringify(spec.nodeName)}`);
    const next: KubeObject = { ...cur, metadata: { ...cur.metadata } };
    next.spec = { ...spec, nodeName: body.target.name };
    const status = isPlainObject(next.status) ? next.status : {};
    const conditions = (Array.isArray(status.conditions) ? status.conditions : []).filter((c) => !(isPlainObject(c) && c.type === "PodScheduled"));
    conditions.push({ type: "PodScheduled", status: "True", lastProbeTime: null, lastTransitionTime: rfc3339(this.now()) });
    next.status = { ...status, conditions };
    if (!opts.dryRun) {
      const table = this.table(scope.def);
      this.afterWrite(scope.def, table.update(this.storageForm(scope.def, next)));
    }
    return { code: 201, body: successStatus(), warnings: [] };
  }

  /** PUT namespaces/<name>/finalize: sets spec.finalizers. */
  finalizeNamespace(scope: Scope, name: string, body: unknown): WriteResult {
    const cur = this.get(scope, name);
    const obj = this.requireObject(body);
    const finalizers = isPlainObject(obj.spec) && Array.isArray(obj.spec.finalizers) ? obj.spec.finalizers : [];
    const next: KubeObject = { ...cur, spec: { ...(isPlainObject(cur.spec) ? cur.spec : {}), finalizers } };
    const stored = this.table(scope.def).update(this.storageForm(scope.def, next));
    this.afterWrite(scope.def, stored);
    return { code: 200, body: this.present(scope, stored), warnings: [] };
  }

  delete(scope: Scope, name: string, options: DeleteOptionsBody = {}, opts: WriteOptions = {}): WriteResult {
    const table = this.table(scope.def);
    const key = objectKey(scope.namespace, name);
    const cur = table.get(key);
    if (!cur) throw notFound(scope.def, name);
    const pre = options.preconditions;
    if (pre?.uid && pre.uid !== cur.metadata.uid) {
      throw conflict(scope.def, name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${cur.metadata.uid ?? ""}`);
    }
    if (pre?.resourceVersion && pre.resourceVersion !== cur.metadata.resourceVersion) {
      throw conflict(scope.def, name, `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${cur.metadata.resourceVersion ?? ""}`);
    }
    const isNamespace = !scope.def.group && scope.def.plural === "namespaces";
    if (cur.metadata.deletionTimestamp) return { code: 202, body: this.present(scope, cur), warnings: [] };
    if (opts.dryRun) return { code: 200, body: this.present(scope, cur), warnings: [] };
    if ((cur.metadata.finalizers ?? []).length > 0 || isNamespace) {
      const next: KubeObject = { ...cur, metadata: { ...cur.metadata, deletionTimestamp: rfc3339(this.now()), deletionGracePeriodSeconds: 0 } };
      if (isNamespace) next.status = { ...(isPlainObject(cur.status) ? cur.status : {}), phase: "Terminating" };
      const stored = table.update(next);
      if (isNamespace) {
        this.emptyNamespace(name);
        const finished = this.maybeFinishNamespace(name);
        if (finished) return { code: 200, body: this.present(scope, finished), warnings: [] };
      }
      return { code: 202, body: this.present(scope, table.get(key) ?? stored), warnings: [] };
    }
    const final = table.remove(key) as KubeObject;
    this.afterRemove(scope.def, final);
    if (scope.def.returnDeletedObject) return { code: 200, body: this.present(scope, final), warnings: [] };
    return {
      code: 200,
      body: successStatus({ name, kind: scope.def.plural, uid: final.metadata.uid ?? "", ...(scope.def.group ? { group: scope.def.group } : {}) }),
      warnings: [],
    };
  }

  deleteCollection(scope: Scope, q: ListQuery, options: DeleteOptionsBody = {}, opts: WriteOptions = {}): ListResult {
    const { items, resourceVersion } = this.list(scope, { ...(q.labelSelector ? { labelSelector: q.labelSelector } : {}), ...(q.fieldSelector ? { fieldSelector: q.fieldSelector } : {}) });
    const deleted: KubeObject[] = [];
    for (const item of items) {
      const s: Scope = { ...scope, namespace: item.metadata.namespace };
      try {
        const r = this.delete(s, item.metadata.name ?? "", options, opts);
        if (r.body.kind !== "Status") deleted.push(r.body as KubeObject);
        else deleted.push(item);
      } catch (e) {
        if (!(e instanceof StatusError && e.code === 404)) throw e;
      }
    }
    return { items: deleted, resourceVersion };
  }

  // ---------------------------------------------------------------- lifecycle hooks

  private isCrd(def: ResourceDef): boolean {
    return def.group === "apiextensions.k8s.io" && def.plural === "customresourcedefinitions";
  }

  private afterWrite(def: ResourceDef, stored: KubeObject): void {
    if (this.isCrd(def) && !stored.metadata.deletionTimestamp) {
      const crdDef = resourceDefFromCrd(stored, this.compileSchema);
      if (!this.registry.setCrd(stored.metadata.name ?? "", crdDef)) {
        this.log.warn({ crd: stored.metadata.name }, "CRD names a built-in resource; not served");
      }
    }
    if (!def.group && def.plural === "namespaces" && stored.metadata.deletionTimestamp) this.maybeFinishNamespace(stored.metadata.name ?? "");
  }

  private afterRemove(def: ResourceDef, removed: KubeObject): void {
    if (this.isCrd(def)) {
      const crdDef = this.registry.removeCrd(removed.metadata.name ?? "");
      if (crdDef) this.removeAllOf(crdDef);
    }
    const ns = removed.metadata.namespace;
    if (def.namespaced && ns) this.maybeFinishNamespace(ns);
  }

  /** A deleted CRD takes its objects with it (their finalizers are not waited for). */
  private removeAllOf(def: ResourceDef): void {
    const name = groupResource(def);
    const table = this.store.existingTable(name);
    if (!table) return;
    for (const obj of [...table.values()]) table.remove(table.keyOf(obj));
    this.store.dropTable(name);
    this.log.debug({ resource: name }, "CRD deleted; its resource is gone");
  }

  private namespacedTables(): Array<{ def: ResourceDef; table: ResourceTable }> {
    return this.registry
      .all()
      .filter((d) => d.namespaced)
      .map((def) => ({ def, table: this.table(def) }));
  }

  /** Deletes everything in a terminating namespace (objects with finalizers wait for them). */
  private emptyNamespace(ns: string): void {
    for (const { def, table } of this.namespacedTables()) {
      const version = def.versions.find((v) => v.name === def.storageVersion) ?? (def.versions[0] as ServedVersion);
      for (const key of table.keysInNamespace(ns)) {
        const obj = table.get(key);
        if (!obj || obj.metadata.deletionTimestamp) continue;
        this.delete({ def, version, namespace: ns }, obj.metadata.name ?? "");
      }
    }
  }

  /** Removes a terminating namespace once it is empty and has no finalizers left. */
  private maybeFinishNamespace(ns: string): KubeObject | undefined {
    const nsDef = this.mustResolve("", "v1", "namespaces").def;
    const nsTable = this.table(nsDef);
    const obj = nsTable.get(ns);
    if (!obj?.metadata.deletionTimestamp) return undefined;
    if ((obj.metadata.finalizers ?? []).length > 0) return undefined;
    for (const { table } of this.namespacedTables()) if (table.countInNamespace(ns) > 0) return undefined;
    const last: KubeObject = { ...obj, spec: { finalizers: [] } };
    return nsTable.remove(ns, last);
  }

  /** Fault injection: forget history so that resuming watches get 410 Gone. */
  expireHistory(resource?: string): number {
    const rv = this.store.next();
    for (const def of this.registry.all()) {
      if (resource && !resourceMatches(def, resource)) continue;
      this.table(def).history.compact(rv);
    }
    return rv;
  }

  /** Store a whole object list at once (fixtures, benchmarks): create each through the API. */
  seed(objects: readonly KubeObject[]): KubeObject[] {
    return objects.map((o) => {
      const [group, version] = splitApiVersion(String(o.apiVersion ?? ""));
      const def = this.registry.all().find((d) => d.group === group && d.kind === o.kind && d.versions.some((v) => v.name === version));
      if (!def) throw new Error(`seed: no served resource for ${String(o.apiVersion)} ${String(o.kind)}`);
      const scope = this.mustResolve(group, version, def.plural, o.metadata.namespace);
      return this.create(scope, o).body as KubeObject;
    });
  }
}

export function splitApiVersion(apiVersion: string): [string, string] {
  const i = apiVersion.indexOf("/");
  return i < 0 ? ["", apiVersion] : [apiVersion.slice(0, i), apiVersion.slice(i + 1)];
}

/** Whether a fault rule's resource (`pods`, `pods/status`, `leases.coordination.k8s.io`) names this resource. */
export function resourceMatches(def: Pick<ResourceDef, "group" | "plural">, resource: string): boolean {
  const base = resource.split("/")[0] as string;
  return base === def.plural || base === groupResource(def);
}

/** A copy without some keys (building a new object keeps V8's fast properties, unlike delete). */
function withoutKeys(meta: ObjectMeta, keys: readonly string[]): ObjectMeta {
  const out: ObjectMeta = {};
  for (const k of Object.keys(meta)) if (!keys.includes(k)) out[k] = meta[k];
  return out;
}

function specChanged(a: KubeObject, b: KubeObject, ignoreStatus: boolean): boolean {
  const strip = (o: KubeObject): JsonObject => {
    const { metadata: _m, apiVersion: _a, kind: _k, ...rest } = o;
    if (ignoreStatus) delete rest.status;
    return rest;
  };
  return !deepEqual(strip(a), strip(b));
}

const META_ORDER = [
  "name",
  "generateName",
  "namespace",
  "uid",
  "resourceVersion",
  "generation",
  "creationTimestamp",
  "deletionTimestamp",
  "deletionGracePeriodSeconds",
  "labels",
  "annotations",
  "ownerReferences",
  "finalizers",
];

function orderedMeta(meta: ObjectMeta): ObjectMeta {
  const out: ObjectMeta = {};
  for (const k of META_ORDER) if (meta[k] !== undefined) out[k] = meta[k];
  for (const [k, v] of Object.entries(meta)) if (!(k in out) && v !== undefined) out[k] = v;
  if (Array.isArray(out.finalizers) && out.finalizers.length === 0) delete out.finalizers;
  return out;
}
