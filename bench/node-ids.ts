/**
 * What the node-id assignment costs (it runs in every node and gateway plan: each node's tunnel
 * port), at 4,095 (the old limit), 5,000 (Kubernetes' maximum), 8,000 and 8,191 nodes, pure CPU:
 *   npx tsx bench/node-ids.ts [--runs 21] [--out bench/results/node-ids.json]
 * Node names are the scale bench's. Prints the median and the slowest run per size and writes them
 * with the run record; checks every result (one distinct port in range per node) so a broken
 * assignment cannot look fast.
 */
import { TUNNEL_PORT_MAX, TUNNEL_PORT_MIN } from "../src/api/datapath.js";
import { assignNodeIds, tunnelPortFor } from "../src/planner/ids.js";
import { startRun } from "./lib/record.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import { nodeObject } from "./scale/fixture.js";

const arg = (name: string): string | undefined =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : undefined;
const runs = Number(arg("runs") ?? 21) || 21;
const out = arg("out") ?? defaultResultPath("node-ids");
const SIZES = [4095, 5000, 8000, 8191];
const run = await startRun("node-ids", { runs, sizes: SIZES, out });

const namesOf = (size: number) =>
  Array.from({ length: size }, (_, i) => (nodeObject(i) as { metadata: { name: string } }).metadata.name);
// Warm up (JIT) on every size first: otherwise the first size measured pays for it.
for (const size of SIZES) for (let r = 0; r < 3; r++) assignNodeIds(namesOf(size));

const results = [];
for (const size of SIZES) {
  const names = namesOf(size);
  const times: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t = performance.now();
    const ids = assignNodeIds(names);
    times.push(performance.now() - t);
    const ports = new Set([...ids.values()].map(tunnelPortFor));
    if (ids.size !== size || ports.size !== size || [...ports].some((p) => p < TUNNEL_PORT_MIN || p > TUNNEL_PORT_MAX))
      throw new Error(`${size} nodes: ${ids.size} ids, ${ports.size} distinct ports`);
  }
  times.sort((a, b) => a - b);
  const ms = (x: number) => Math.round(x * 100) / 100;
  results.push({ nodes: size, medianMs: ms(times[Math.floor(times.length / 2)]!), maxMs: ms(times.at(-1)!) });
}
writeResults(out, run, { results });
console.log("| nodes | median | slowest |\n|---|---|---|");
for (const r of results) console.log(`| ${r.nodes} | ${r.medianMs} ms | ${r.maxMs} ms |`);
