/**
 * `selectPods` and resolve's cost count decide once per group of pods that agree on the labels
 * the policies read. Here they are checked against the same decisions made pod by pod (the
 * planner before grouping), on generated clusters with invalid (fail-closed) policies among them.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { intersect, subtract, type Range } from "../util/ipv4.js";
import type { ClusterSnapshot, Conflict, PolicyObject, ValidPolicy } from "./model.js";
import { selectPods, type SelectionResult } from "./plan.js";
import { isEligiblePod, policySelects, resolve, type Resolution } from "./resolve.js";
import { labelProjection, matches, selectorKeys } from "./selector.js";
import { clusterArb, labelSelectorArb } from "./testing/arbitraries.js";

const validator = new SpecValidator();

/** The selection pod by pod: every pod matched against every policy (what selectPods did before grouping). */
function selectPodByPod(snapshot: ClusterSnapshot, res: Resolution, onlyNode?: string): SelectionResult {
  const nsLabels = new Map(snapshot.namespaces.map((n) => [n.name, n.labels]));
  const rank = new Map(res.policies.map((p, i) => [p.resource, i]));
  const out: SelectionResult = { selections: [], failClosed: [], conflicts: [], podsByPolicy: new Map() };
  for (const pod of snapshot.pods) {
    if (!isEligiblePod(pod)) continue;
    if (onlyNode !== undefined && pod.nodeName !== onlyNode) continue;
    const podKey = `${pod.namespace}/${pod.name}`;
    const candidates: ValidPolicy[] = res.policies
      .filter((p) => p.object.spec.podSelector !== undefined && policySelects(p.object, pod, nsLabels))
      .sort((a, b) => (rank.get(a.resource) ?? 0) - (rank.get(b.resource) ?? 0));
    const taken: { policy: string; ranges: Range[] }[] = [];
    for (const policy of candidates) {
      out.podsByPolicy.set(policy.resource, (out.podsByPolicy.get(policy.resource) ?? 0) + 1);
      for (const earlier of taken) {
        const overlap = intersect(policy.destinations, earlier.ranges);
        if (overlap.length > 0)
          out.conflicts.push({ pod: podKey, winner: earlier.policy, loser: policy.resource, destinations: overlap });
      }
      const destinations = subtract(
        policy.destinations,
        taken.flatMap((t) => t.ranges),
      );
      taken.push({ policy: policy.resource, ranges: destinations });
      if (destinations.length > 0) out.selections.push({ pod, podKey, policy, destinations });
    }
    for (const policy of res.failClosed) {
      if (!policySelects(policy.object, pod, nsLabels)) continue;
      const destinations = subtract(
        policy.destinations,
        taken.flatMap((t) => t.ranges),
      );
      taken.push({ policy: policy.resource, ranges: destinations });
      if (destinations.length > 0) out.failClosed.push({ pod, podKey, policy, destinations });
    }
  }
  return out;
}

/** The clusters of `clusterArb`, plus EgressPolicies that are invalid (an egress IP no instance has) and so fail closed. */
const withInvalidArb = fc
  .tuple(
    clusterArb(),
    fc.array(fc.record({ selector: labelSelectorArb(), namespace: fc.constantFrom("shop", "billing", "tools") }), {
      maxLength: 3,
    }),
  )
  .map(([scenario, bad]) => {
    const invalid: PolicyObject[] = bad.map((b, i) => ({
      apiVersion: "staticegress.io/v1alpha1",
      kind: "EgressPolicy",
      metadata: { name: `invalid-${i}`, namespace: b.namespace, creationTimestamp: "2024-03-01T00:00:00Z" },
      spec: { gatewayName: "no-such-gateway", egressIPs: ["192.0.2.250"], podSelector: b.selector },
    }));
    return { ...scenario, snapshot: { ...scenario.snapshot, policies: [...scenario.snapshot.policies, ...invalid] } };
  });

const conflictKey = (c: Conflict) => JSON.stringify(c);

describe("selection by label group", () => {
  it("equals the selection made pod by pod, on the whole cluster and on each node", () => {
    fc.assert(
      fc.property(withInvalidArb, ({ snapshot }) => {
        const res = resolve(snapshot, validator);
        for (const node of [undefined, ...snapshot.nodes.map((n) => n.name)]) {
          const grouped = selectPods(snapshot, res, node);
          const direct = selectPodByPod(snapshot, res, node);
          expect(grouped.selections).toEqual(direct.selections);
          expect(grouped.failClosed).toEqual(direct.failClosed);
          expect(grouped.conflicts.map(conflictKey)).toEqual(direct.conflicts.map(conflictKey));
          expect([...grouped.podsByPolicy].sort()).toEqual([...direct.podsByPolicy].sort());
        }
      }),
      { numRuns: 300 },
    );
  });

  it("counts each policy's selected addresses for the cost limit as pod-by-pod matching does", () => {
    fc.assert(
      fc.property(withInvalidArb, fc.integer({ min: 0, max: 40 }), ({ snapshot }, limit) => {
        const open = resolve(snapshot, validator);
        const limited = resolve(snapshot, validator, { maxMapElementsPerPolicy: limit });
        const nsLabels = new Map(snapshot.namespaces.map((n) => [n.name, n.labels]));
        for (const p of open.policies) {
          const addresses = snapshot.pods
            .filter((pod) => isEligiblePod(pod) && policySelects(p.object, pod, nsLabels))
            .reduce((n, pod) => n + pod.ips.filter((ip) => !ip.includes(":")).length, 0);
          const cost = addresses * p.destinations.length;
          const verdict = limited.verdicts.find((v) => v.resource === p.resource);
          const refused = verdict?.errors.some((e) => e.message.startsWith(`datapath cost ${cost} map elements`));
          expect(refused, `${p.resource}: cost ${cost}, limit ${limit}`).toBe(cost > limit);
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe("label projection", () => {
  it("is equal for two label sets exactly when every selector over its keys matches them alike", () => {
    const labels = fc.dictionary(fc.constantFrom("app", "tier", "team", "x"), fc.constantFrom("web", "api", ""));
    fc.assert(
      fc.property(fc.array(labelSelectorArb(), { minLength: 1, maxLength: 4 }), labels, labels, (selectors, a, b) => {
        const keys = selectorKeys(selectors);
        if (labelProjection(a, keys) === labelProjection(b, keys))
          for (const s of selectors) expect(matches(s, a)).toBe(matches(s, b));
        // The converse over the keys themselves: projections differ only where a key's presence or value does.
        const differ = keys.some((k) => Object.hasOwn(a, k) !== Object.hasOwn(b, k) || a[k] !== b[k]);
        expect(labelProjection(a, keys) !== labelProjection(b, keys)).toBe(differ);
      }),
    );
  });

  it("ignores malformed selectors instead of throwing (they are refused by validation later)", () => {
    const bad = [{ matchExpressions: 7 }, { matchLabels: "x" }, null, { matchExpressions: [null, { key: 3 }] }];
    expect(selectorKeys(bad as never)).toEqual([]);
  });
});
