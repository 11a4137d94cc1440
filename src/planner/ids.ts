/**
 * Datapath identifiers derived from instance keys. The marks, tables and ports themselves are
 * the kernel's numbers, kept with the others in src/api/datapath.ts.
 */
import { MAX_INSTANCE_ID } from "../api/datapath.js";
export {
  DEFAULT_TABLE_BASE,
  MARK_FLAG,
  MARK_MASK,
  MAX_INSTANCE_ID,
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
  const used = new Set<number>();
  const out = new Map<string, number>();
  for (const key of [...new Set(keys)].sort()) {
    if (used.size >= MAX_INSTANCE_ID) throw new Error(`more than ${MAX_INSTANCE_ID} ${what}`);
    let id = (fnv1a(key) % MAX_INSTANCE_ID) + 1;
    while (used.has(id)) id = (id % MAX_INSTANCE_ID) + 1;
    used.add(id);
    out.set(key, id);
  }
  return out;
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
