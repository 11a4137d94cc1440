/**
 * How long the planner's resolve takes (policies checked against each other and the cluster,
 * including each policy's datapath cost) at the scale bench's size, pure CPU, no API server:
 *   npx tsx bench/resolve.ts [--runs 5] [--out bench/results/resolve.json]
 * Prints the median and every run and writes them with the run record; checks that every policy resolved valid (what the scale bench
 * expects) so a broken fixture cannot look fast.
 */
import { snapshotFromObjects, type KubeObject } from "../src/api/objects.js";
import { resolve } from "../src/planner/resolve.js";
import { startRun } from "./lib/record.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import {
  DEFAULT_SHAPE,
  gatewayObject,
  namespaceObject,
  NETWORK,
  nodeObject,
  podManifest,
  podParams,
  podStatus,
  policyObject,
} from "./scale/fixture.js";

const arg = (name: string): string | undefined =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : undefined;
const runs = Number(arg("runs") ?? 5) || 5;
const out = arg("out") ?? defaultResultPath("resolve");
const run = await startRun("resolve", { runs, out });
const s = DEFAULT_SHAPE;
const objects: KubeObject[] = [];
for (let i = 0; i < s.nodes; i++) objects.push(nodeObject(i) as KubeObject);
for (let i = 0; i < s.namespaces; i++) objects.push(namespaceObject(s, i) as KubeObject);
for (let g = 0; g < s.gateways; g++) objects.push(gatewayObject(s, g) as KubeObject);
for (let p = 0; p < s.policies; p++) objects.push(policyObject(s, p) as KubeObject);
for (let i = 0; i < s.pods; i++) {
  const params = podParams(s, i);
  objects.push({ ...(podManifest(params) as KubeObject), status: podStatus(params) } as KubeObject);
}
const snapshot = snapshotFromObjects(objects, NETWORK);
const times: number[] = [];
for (let r = 0; r < runs; r++) {
  const t = performance.now();
  const res = resolve(snapshot);
  times.push(performance.now() - t);
  const invalid = res.verdicts.filter((v) => !v.valid);
  if (invalid.length > 0)
    throw new Error(`${invalid.length} policies resolved invalid, e.g. ${JSON.stringify(invalid[0])}`);
}
times.sort((a, b) => a - b);
const result = {
  shape: { pods: s.pods, nodes: s.nodes, namespaces: s.namespaces, policies: s.policies },
  medianMs: Math.round(times[Math.floor(times.length / 2)]!),
  runsMs: times.map(Math.round),
};
writeResults(out, run, result);
console.log(JSON.stringify(result));
