/**
 * Datapath identifiers derived from instance keys. The marks, tables and ports themselves are
 * the kernel's numbers, kept with the others in src/api/datapath.ts.
 */
import { MAX_INSTANCE_ID, MAX_NODE_ID } from "../api/datapath.js";
export {
  DEFAULT_TABLE_BASE,
  MARK_FLAG,
  MARK_MASK,
  MAX_INSTANCE_ID,
  MAX_NODE_ID,
  NO_INSTANCE_MARK,
  markFor,
  tableFor,
  tunnelPortFor,
} from "../api/datapath.js";

/** FNV-1a: small, stable across runs and processes. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * Stable ids for instance keys: each key hashes to a preferred id; collisions probe forward in
 * sorted key order, so every node computes the same ids from the same set of instances, and an
 * instance keeps its id when others come and go (unless it had collided).
 */
export function assignIds(keys: readonly string[], what = "gateway instances"): Map<string, number> {
  return assignFrom([...new Set(keys)].sort(), MAX_INSTANCE_ID, what);
}

function assignFrom(sorted: readonly string[], max: number, what: string): Map<string, number> {
  const used = new Set<number>();
  const out = new Map<string, number>();
  for (const key of sorted) {
    if (used.size >= max) throw new Error(`more than ${max} ${what}`);
    let id = (fnv1a(key) % max) + 1;
    while (used.has(id)) id = (id % max) + 1;
    used.add(id);
    out.set(key, id);
  }
  return out;
}

/**
 * Node ids (a node's tunnel port, `tunnelPortFor`): up to 4,095 nodes exactly as `assignIds`, so
 * that no node's port changed when the limit grew; above that the ids hash over 1..MAX_NODE_ID.
 * Crossing 4,095 nodes (either way) renumbers most nodes once (docs/design.md).
 */
export function assignNodeIds(names: readonly string[]): Map<string, number> {
  const sorted = [...new Set(names)].sort();
  if (sorted.length > MAX_NODE_ID)
    throw new Error(
      `${sorted.length} nodes in the cluster, more than the limit of ${MAX_NODE_ID}: ` +
        `each node's tunnel port comes from a node id in 1..${MAX_NODE_ID}`,
    );
  return assignFrom(sorted, sorted.length <= MAX_INSTANCE_ID ? MAX_INSTANCE_ID : MAX_NODE_ID, "nodes in the cluster");
}

/** Rendezvous (highest random weight) choice: removing a candidate moves only its own pods. */
export function rendezvous(subject: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const c of candidates) {
    const score = fnv1a(`${subject}|${c}`);
    if (score > bestScore || (score === bestScore && best !== undefined && c < best)) {
      best = c;
      bestScore = score;
    }
  }
  return best;
}
