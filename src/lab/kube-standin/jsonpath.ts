/**
 * The JSONPath subset that CRD additionalPrinterColumns use: `.a.b`, `.a[0]`, `.a[*].b`,
 * `.a['x.y']`, `.a[?(@.type=="Ready")].status`, optionally wrapped in `{...}`.
 */

import { isPlainObject } from "./types.js";

type Segment =
  | { kind: "field"; name: string }
  | { kind: "index"; index: number }
  | { kind: "wildcard" }
  | { kind: "filter"; path: string[]; op: "==" | "!=" | "exists"; value?: string | number | boolean };

export class JsonPathError extends Error {
  constructor(path: string, why: string) {
    super(`invalid JSONPath ${JSON.stringify(path)}: ${why}`);
    this.name = "JsonPathError";
  }
}

export function parseJsonPath(path: string): Segment[] {
  let s = path.trim();
  if (s.startsWith("{") && s.endsWith("}")) s = s.slice(1, -1).trim();
  if (s.startsWith("$")) s = s.slice(1);
  const segs: Segment[] = [];
  let i = 0;
  const readName = (): string => {
    let name = "";
    while (i < s.length) {
      const ch = s[i] as string;
      if (ch === "\\" && i + 1 < s.length) {
        name += s[i + 1];
        i += 2;
        continue;
      }
      if (ch === "." || ch === "[") break;
      name += ch;
      i++;
    }
    return name;
  };
  while (i < s.length) {
    const ch = s[i];
    if (ch === ".") {
      i++;
      if (s[i] === "*") {
        i++;
        segs.push({ kind: "wildcard" });
        continue;
      }
      const name = readName();
      if (!name) throw new JsonPathError(path, "empty field name");
      segs.push({ kind: "field", name });
    } else if (ch === "[") {
      const close = findClosingBracket(s, i);
      if (close < 0) throw new JsonPathError(path, "unterminated [");
      const inner = s.slice(i + 1, close).trim();
      i = close + 1;
      if (inner === "*") segs.push({ kind: "wildcard" });
      else if (/^-?\d+$/.test(inner)) segs.push({ kind: "index", index: Number(inner) });
      else if (/^'.*'$|^".*"$/.test(inner)) segs.push({ kind: "field", name: inner.slice(1, -1) });
      else if (inner.startsWith("?(") && inner.endsWith(")")) segs.push(parseFilter(path, inner.slice(2, -1).trim()));
      else throw new JsonPathError(path, `unsupported subscript [${inner}]`);
    } else {
      // A leading bare name (`spec.x`) is accepted as if it started with a dot.
      const name = readName();
      if (!name) throw new JsonPathError(path, `unexpected ${JSON.stringify(ch)}`);
      segs.push({ kind: "field", name });
    }
  }
  return segs;
}

function findClosingBracket(s: string, open: number): number {
  let quote: string | undefined;
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const ch = s[i];
    if (quote) {
      if (ch === quote) quote = undefined;
      continue;
    }
    if (ch === "'" || ch === '"') quote = ch;
    else if (ch === "[" || ch === "(") depth++;
    else if (ch === "]" || ch === ")") {
      depth--;
      if (depth === 0 && ch === "]") return i;
    }
  }
  return -1;
}

function parseFilter(path: string, expr: string): Segment {
  const m = /^@((?:\.[^.=!\s]+)+)\s*(?:(==|!=)\s*(.+))?$/.exec(expr);
  if (!m) throw new JsonPathError(path, `unsupported filter ${expr}`);
  const fieldPath = (m[1] as string).split(".").filter(Boolean);
  if (!m[2]) return { kind: "filter", path: fieldPath, op: "exists" };
  const raw = (m[3] as string).trim();
  let value: string | number | boolean;
  if (/^'.*'$|^".*"$/.test(raw)) value = raw.slice(1, -1);
  else if (raw === "true" || raw === "false") value = raw === "true";
  else if (!Number.isNaN(Number(raw))) value = Number(raw);
  else value = raw;
  return { kind: "filter", path: fieldPath, op: m[2] as "==" | "!=", value };
}

/** All values the path selects (an empty list when nothing matches). */
export function evaluateJsonPath(segs: readonly Segment[], root: unknown): unknown[] {
  let cur: unknown[] = [root];
  for (const seg of segs) {
    const next: unknown[] = [];
    for (const v of cur) {
      switch (seg.kind) {
        case "field":
          if (isPlainObject(v) && v[seg.name] !== undefined) next.push(v[seg.name]);
          break;
        case "index":
          if (Array.isArray(v)) {
            const idx = seg.index < 0 ? v.length + seg.index : seg.index;
            if (idx >= 0 && idx < v.length) next.push(v[idx]);
          }
          break;
        case "wildcard":
          if (Array.isArray(v)) next.push(...v);
          else if (isPlainObject(v)) next.push(...Object.values(v));
          break;
        case "filter":
          if (Array.isArray(v)) for (const item of v) if (filterMatches(seg, item)) next.push(item);
          break;
      }
    }
    cur = next;
  }
  return cur;
}

function filterMatches(seg: Extract<Segment, { kind: "filter" }>, item: unknown): boolean {
  let v: unknown = item;
  for (const p of seg.path) {
    if (!isPlainObject(v)) return false;
    v = v[p];
  }
  if (seg.op === "exists") return v !== undefined;
  const eq = v === seg.value || (typeof v === "number" && typeof seg.value === "string" && String(v) === seg.value);
  return seg.op === "==" ? eq : v !== undefined && !eq;
}
