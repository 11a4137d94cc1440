/**
 * How long the planner's resolve takes (policies checked against each other and the cluster,
 * including each policy's datapath cost) at the scale bench's size, pure CPU, no API server:
 *   npx tsx bench/resolve.ts [--runs 5]
 * Prints the median and every run; checks that every policy resolved valid (what the scale bench
 * expects) so a broken fixture cannot look fast.
 */
import { snapshotFromObjects, type KubeObject } from "../src/api/objects.js";
import { resolve } from "../src/planner/resolve.js";
import { DEFAULT_SHAPE, gatewayObject, namespaceObject, NETWORK, nodeObject, podManifest, podParams, podStatus, policyObject } from "./scale/fixture.js";

const runs = Number(process.argv[process.argv.indexOf("--runs") + 1] ?? 5) || 5;
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
  if (invalid.length > 0) throw new Error(`${invalid.length} policies resolved invalid, e.g. ${JSON.stringify(invalid[0])}`);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({ pods: s.pods, nodes: s.nodes, namespaces: s.namespaces, policies: s.policies, medianMs: Math.round(times[Math.floor(times.length / 2)]!), runsMs: times.map(Math.round) }));
