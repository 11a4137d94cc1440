import type { KubeObject } from "../api/objects.js";

/**
 * What `static-egress import` tells the user about one field of one source object:
 * - `refused`: that object (or that part of it, e.g. one rule) was not converted at all;
 * - `ignored`: the object was converted, without this field, which has no equivalent here;
 * - `todo`: the objects were made, and this must be done by hand before they carry traffic.
 * Every field a converter does not carry over is one of these: nothing is dropped silently.
 */
export interface Finding {
  verdict: "refused" | "ignored" | "todo";
  /** The source object, e.g. `CiliumEgressGatewayPolicy/egress-sample` or `StaticEgressIP/default/eip`. */
  source: string;
  /** The source field, e.g. `spec.egressGateway.interface`. */
  field: string;
  reason: string;
}

/** One of our objects and the source objects (and fields) it came from. */
export interface Made {
  object: KubeObject & { metadata: { name: string } };
  from: string[];
}

export interface Conversion {
  made: Made[];
  findings: Finding[];
}

export interface ImportOptions {
  /** Attach every policy to this existing EgressGateway instead of generating gateways. */
  gateway?: string;
  /** Namespace of namespaced source objects that have none (as kubectl's current namespace). */
  defaultNamespace: string;
}

/** What a converter may read besides its own objects: every input object (e.g. nirmata's Services). */
export interface ImportContext extends ImportOptions {
  inputs: readonly KubeObject[];
}

/**
 * One peer's objects into ours: pure (no I/O, no clock), deterministic (same input, same
 * output), each made object whole or not at all. A new source is one module implementing this,
 * listed in CONVERTERS (index.ts).
 */
export interface Converter {
  /** Short name used in generated names and labels, e.g. `cilium`. */
  readonly source: string;
  /** The API groups and kinds it reads, e.g. `{ group: "cilium.io", kind: "CiliumEgressGatewayPolicy" }`. */
  readonly reads: readonly { group: string; kind: string }[];
  convert(objects: readonly KubeObject[], ctx: ImportContext): Conversion;
}
