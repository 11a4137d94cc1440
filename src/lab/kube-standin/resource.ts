/** What the server knows about one resource (built-in or defined by a CRD). */

import type { FieldError } from "./errors.js";
import type { TableConverter } from "./printers.js";
import type { CrdSchema } from "./schema.js";
import type { KubeObject } from "./types.js";
import type { NameRule } from "./validation.js";

export interface ServedVersion {
  name: string;
  /** Present for custom resources: prune, default, validate. */
  schema?: CrdSchema;
  table: TableConverter;
  /** The `status` subresource exists: the main endpoint ignores status, `/status` changes only status. */
  statusSubresource: boolean;
}

/** Services the strategies need from the server (injected, so tests can pin them). */
export interface StrategyContext {
  now(): number;
  nextClusterIP(): string;
}

export interface ResourceDef {
  group: string;
  /** Served versions in preference order. */
  versions: ServedVersion[];
  /** Objects are stored with this apiVersion's version. */
  storageVersion: string;
  plural: string;
  singular: string;
  kind: string;
  listKind: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  verbs: string[];
  /** Extra subresources served with a fixed handler (e.g. pods/binding). */
  extraSubresources: string[];
  nameRule: NameRule;
  custom: boolean;
  /** metadata.generation counts spec changes. */
  hasGeneration: boolean;
  /** A PUT without metadata.resourceVersion is allowed (not for custom resources). */
  allowUnconditionalUpdate: boolean;
  /** DELETE answers with the object (otherwise with a Success Status). */
  returnDeletedObject: boolean;
  /** application/strategic-merge-patch+json is accepted (built-in kinds only, like the real server). */
  strategicMergePatch: boolean;
  /** Field selectors beyond metadata.name/metadata.namespace: field → value ("" when unset). */
  selectableFields: Readonly<Record<string, (obj: KubeObject) => string>>;
  /** Fields indexed for list and watch with `field=value` selectors. */
  indexedFields: readonly string[];
  /** Mutates a private copy before a create is stored. */
  prepareForCreate?(obj: KubeObject, ctx: StrategyContext): void;
  /** Mutates a private copy of the new object of an update of the main resource. */
  prepareForUpdate?(obj: KubeObject, old: KubeObject, ctx: StrategyContext): void;
  /** Kind-specific validation (custom resources use their schema instead). */
  validate?(obj: KubeObject, old: KubeObject | undefined): FieldError[];
}

/** `pods`, `leases.coordination.k8s.io`: the key tables and fault rules use. */
export function groupResource(def: Pick<ResourceDef, "group" | "plural">): string {
  return def.group ? `${def.plural}.${def.group}` : def.plural;
}

export function apiVersionOf(group: string, version: string): string {
  return group ? `${group}/${version}` : version;
}

export function servedVersion(def: ResourceDef, version: string): ServedVersion | undefined {
  return def.versions.find((v) => v.name === version);
}

/** The value of a selectable field of an object ("" when unset), or undefined when not selectable. */
export function fieldGetter(def: ResourceDef, field: string): ((obj: KubeObject) => string) | undefined {
  if (field === "metadata.name") return (o) => o.metadata.name ?? "";
  if (field === "metadata.namespace") return def.namespaced ? (o) => o.metadata.namespace ?? "" : () => "";
  return def.selectableFields[field];
}
