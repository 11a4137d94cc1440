/**
 * Datapath identifiers derived from instance keys. A packet mark carries a flag bit (so one
 * catch-all `ip rule` can blackhole any marked packet whose table is missing) and a 12-bit
 * instance id; each id has its own routing table.
 */
export const MARK_FLAG = 0x1000_0000;
export const MARK_MASK = 0x1fff_0000;
export const MAX_INSTANCE_ID = 0xfff;
export const DEFAULT_TABLE_BASE = 7000;

/**
 * Node -> gateway VXLAN (docs/security-gateway-binding.md): each node has its own UDP port,
 * TUNNEL_PORT_BASE + its node id (1..4095, assigned like instance ids), so that on a gateway the
 * port, checked against the outer source address, identifies the sending node. The VNI is the
 * instance id. The range stays below Linux's ephemeral ports (32768+) and Kubernetes NodePorts.
 */
export const TUNNEL_PORT_BASE = 20000;
export const TUNNEL_PORT_MAX = TUNNEL_PORT_BASE + MAX_INSTANCE_ID;

export function tunnelPortFor(nodeId: number): number {
  return TUNNEL_PORT_BASE + nodeId;
}

/** Id 0 is never assigned: its mark means "no instance", and the node always drops it. */
export function markFor(id: number): number {
  return (MARK_FLAG | (id << 16)) >>> 0;
}
export const NO_INSTANCE_MARK = markFor(0);

export function tableFor(id: number, base = DEFAULT_TABLE_BASE): number {
  return base + id;
}

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
export function assignIds(keys: readonly string[]): Map<string, number> {
  const used = new Set<number>();
  const out = new Map<string, number>();
  for (const key of [...new Set(keys)].sort()) {
    if (used.size >= MAX_INSTANCE_ID) throw new Error(`more than ${MAX_INSTANCE_ID} gateway instances`);
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
