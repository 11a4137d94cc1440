/**
 * Response content negotiation: plain JSON, server-side printed `Table`s (what kubectl asks
 * for), and `PartialObjectMetadata` (metadata-only clients). Pure functions of objects.
 */

import type { TableConverter } from "./printers.js";
import type { KubeObject } from "./types.js";

export type IncludeObject = "None" | "Object" | "Metadata";

export type OutputFormat =
  | { kind: "json" }
  | { kind: "table"; apiVersion: string; includeObject: IncludeObject }
  | { kind: "partial"; apiVersion: string };

interface MediaRange {
  type: string;
  params: Record<string, string>;
}

function parseAccept(accept: string): MediaRange[] {
  return accept
    .split(",")
    .map((part) => {
      const [type, ...params] = part.split(";").map((s) => s.trim());
      const p: Record<string, string> = {};
      for (const kv of params) {
        const i = kv.indexOf("=");
        if (i > 0) p[kv.slice(0, i).trim().toLowerCase()] = kv.slice(i + 1).trim();
      }
      return { type: (type ?? "").toLowerCase(), params: p };
    })
    .filter((m) => m.type !== "");
}

/** The first acceptable format in the client's order, or undefined (406 Not Acceptable). */
export function negotiateOutput(accept: string | undefined, includeObjectParam: string | undefined): OutputFormat | undefined {
  if (!accept) return { kind: "json" };
  const include: IncludeObject = includeObjectParam === "None" || includeObjectParam === "Object" ? includeObjectParam : "Metadata";
  for (const m of parseAccept(accept)) {
    const jsonish = m.type === "application/json" || m.type === "*/*" || m.type === "application/*";
    if (!jsonish) continue;
    const as = m.params.as;
    if (as === undefined) return { kind: "json" };
    if (m.params.g !== "meta.k8s.io" || (m.params.v !== "v1" && m.params.v !== "v1beta1")) continue;
    const apiVersion = `meta.k8s.io/${m.params.v}`;
    if (as === "Table") return { kind: "table", apiVersion, includeObject: include };
    if (as === "PartialObjectMetadata" || as === "PartialObjectMetadataList") return { kind: "partial", apiVersion };
  }
  return undefined;
}

export function partialObject(obj: KubeObject, apiVersion: string): KubeObject {
  return { kind: "PartialObjectMetadata", apiVersion, metadata: obj.metadata };
}

export interface TableRow {
  cells: unknown[];
  object?: KubeObject;
}

export function tableRow(converter: TableConverter, obj: KubeObject, now: number, format: Extract<OutputFormat, { kind: "table" }>): TableRow {
  const row: TableRow = { cells: converter.cells(obj, now) };
  if (format.includeObject === "Object") row.object = obj;
  else if (format.includeObject === "Metadata") row.object = partialObject(obj, format.apiVersion);
  return row;
}

export function table(converter: TableConverter, objects: readonly KubeObject[], now: number, format: Extract<OutputFormat, { kind: "table" }>, listMeta: Record<string, unknown>): Record<string, unknown> {
  return {
    kind: "Table",
    apiVersion: format.apiVersion,
    metadata: listMeta,
    columnDefinitions: converter.columns,
    rows: objects.map((o) => tableRow(converter, o, now, format)),
  };
}
