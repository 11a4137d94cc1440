/**
 * Which resources are served right now (built-ins plus established CRDs), and the discovery
 * and OpenAPI documents that describe them to clients.
 */

import { createHash } from "node:crypto";
import { compareKubeVersions } from "./crd.js";
import { apiVersionOf, groupResource, type ResourceDef, type ServedVersion } from "./resource.js";
import type { JsonObject } from "./types.js";

export interface Resolved {
  def: ResourceDef;
  version: ServedVersion;
}

export class Registry {
  private readonly builtins: ResourceDef[];
  private readonly crds = new Map<string, ResourceDef>();
  private generationCounter = 0;

  constructor(builtins: ResourceDef[]) {
    this.builtins = builtins;
  }

  /** Changes whenever the set of served resources changes. */
  get generation(): number {
    return this.generationCounter;
  }

  all(): ResourceDef[] {
    return [...this.builtins, ...this.crds.values()];
  }

  byGroupResource(gr: string): ResourceDef | undefined {
    return this.all().find((d) => groupResource(d) === gr);
  }

  resolve(group: string, version: string, plural: string): Resolved | undefined {
    for (const def of this.all()) {
      if (def.group !== group || def.plural !== plural) continue;
      const v = def.versions.find((x) => x.name === version);
      if (v) return { def, version: v };
    }
    return undefined;
  }

  /** Registers (or replaces) the resource a CRD serves. Built-in names cannot be taken over. */
  setCrd(crdName: string, def: ResourceDef): boolean {
    if (this.builtins.some((b) => b.group === def.group && b.plural === def.plural)) return false;
    this.crds.set(crdName, def);
    this.generationCounter++;
    return true;
  }

  removeCrd(crdName: string): ResourceDef | undefined {
    const def = this.crds.get(crdName);
    if (def) {
      this.crds.delete(crdName);
      this.generationCounter++;
    }
    return def;
  }

  /** Group name → served versions in preference order. Core ("") first, then built-ins, then CRD groups by name. */
  groups(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    const add = (def: ResourceDef): void => {
      const list = out.get(def.group) ?? [];
      for (const v of def.versions) if (!list.includes(v.name)) list.push(v.name);
      list.sort(compareKubeVersions);
      out.set(def.group, list);
    };
    this.builtins.forEach(add);
    [...this.crds.values()].sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : 0)).forEach(add);
    return out;
  }

  apiVersions(serverAddress: string): JsonObject {
    return {
      kind: "APIVersions",
      versions: ["v1"],
      serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress }],
    };
  }

  private groupDoc(name: string, versions: string[]): JsonObject {
    const gv = versions.map((v) => ({ groupVersion: `${name}/${v}`, version: v }));
    return { name, versions: gv, preferredVersion: gv[0] };
  }

  apiGroupList(): JsonObject {
    const groups = [...this.groups()].filter(([name]) => name !== "").map(([name, versions]) => this.groupDoc(name, versions));
    return { kind: "APIGroupList", apiVersion: "v1", groups };
  }

  apiGroup(name: string): JsonObject | undefined {
    const versions = this.groups().get(name);
    if (!versions || name === "") return undefined;
    return { kind: "APIGroup", apiVersion: "v1", ...this.groupDoc(name, versions) };
  }

  apiResourceList(group: string, version: string): JsonObject | undefined {
    const defs = this.all().filter((d) => d.group === group && d.versions.some((v) => v.name === version));
    if (defs.length === 0) return undefined;
    const resources: JsonObject[] = [];
    for (const d of defs) {
      const v = d.versions.find((x) => x.name === version) as ServedVersion;
      const main: JsonObject = {
        name: d.plural,
        singularName: d.singular,
        namespaced: d.namespaced,
        kind: d.kind,
        verbs: d.verbs,
      };
      if (d.shortNames.length) main.shortNames = d.shortNames;
      if (d.categories.length) main.categories = d.categories;
      main.storageVersionHash = createHash("sha256").update(`${d.group}/${d.storageVersion}/${d.kind}`).digest("base64").slice(0, 11);
      resources.push(main);
      if (v.statusSubresource) resources.push({ name: `${d.plural}/status`, singularName: "", namespaced: d.namespaced, kind: d.kind, verbs: ["get", "patch", "update"] });
      for (const sub of d.extraSubresources) {
        const kind = sub === "binding" ? "Binding" : d.kind;
        const verbs = sub === "binding" ? ["create"] : ["update"];
        resources.push({ name: `${d.plural}/${sub}`, singularName: "", namespaced: d.namespaced, kind, verbs });
      }
    }
    return { kind: "APIResourceList", apiVersion: "v1", groupVersion: apiVersionOf(group, version), resources };
  }

  /** Path of a group-version's OpenAPI v3 document, relative to /openapi/v3/. */
  private static gvPath(group: string, version: string): string {
    return group ? `apis/${group}/${version}` : `api/${version}`;
  }

  openApiV3Root(): JsonObject {
    const paths: JsonObject = {};
    for (const [group, versions] of this.groups()) {
      for (const v of versions) {
        const p = Registry.gvPath(group, v);
        const hash = createHash("sha256").update(JSON.stringify(this.openApiV3Document(group, v) ?? {})).digest("hex").slice(0, 32).toUpperCase();
        paths[p] = { serverRelativeURL: `/openapi/v3/${p}?hash=${hash}` };
      }
    }
    return { paths };
  }

  /**
   * A minimal OpenAPI v3 document for one group-version: every resource's operations, whose
   * PATCH declares the `fieldValidation` parameter (kubectl checks it to choose server-side
   * field validation), plus the schemas of custom resources (for `kubectl explain`).
   */
  openApiV3Document(group: string, version: string): JsonObject | undefined {
    const defs = this.all().filter((d) => d.group === group && d.versions.some((v) => v.name === version));
    if (defs.length === 0) return undefined;
    const paths: JsonObject = {};
    const schemas: JsonObject = {};
    const prefix = group ? `/apis/${group}/${version}` : `/api/${version}`;
    const query = (name: string): JsonObject => ({ name, in: "query", schema: { type: "string", uniqueItems: true } });
    for (const d of defs) {
      const gvk = { group, version, kind: d.kind };
      const schemaName = `${group ? group.split(".").reverse().join(".") : "io.k8s.api.core"}.${version}.${d.kind}`;
      const v = d.versions.find((x) => x.name === version);
      if (v?.schema) schemas[schemaName] = { ...v.schema.openApiSchema, "x-kubernetes-group-version-kind": [gvk] };
      const ref = { $ref: `#/components/schemas/${schemaName}` };
      const ok = { "200": { description: "OK", content: { "application/json": { schema: v?.schema ? ref : { type: "object" } } } } };
      const op = (action: string, params: JsonObject[] = []): JsonObject => ({
        operationId: `${action}${d.kind}`,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        parameters: params,
        responses: ok,
      });
      const writeParams = [query("dryRun"), query("fieldManager"), query("fieldValidation")];
      const base = d.namespaced ? `${prefix}/namespaces/{namespace}/${d.plural}` : `${prefix}/${d.plural}`;
      paths[base] = { get: op("list"), post: op("post", writeParams), delete: op("deletecollection") };
      paths[`${base}/{name}`] = { get: op("get"), put: op("put", writeParams), patch: op("patch", [...writeParams, query("force")]), delete: op("delete") };
      if (v?.statusSubresource) {
        paths[`${base}/{name}/status`] = { get: op("get"), put: op("put", writeParams), patch: op("patch", [...writeParams, query("force")]) };
      }
    }
    return {
      openapi: "3.0.0",
      info: { title: "Kubernetes", version: "v1.32.0" },
      paths,
      components: { schemas },
    };
  }
}
