import { describe, expect, it } from "vitest";
import { snapshotFromObjects, type KubeObject } from "../../api/objects.js";
import { SpecValidator } from "../../api/v1alpha1/validate.js";
import { Planner } from "../../planner/plan.js";
import { buildView, type ViewPod } from "./model.js";
import { clusterObjects, NETWORK, NOW, type ClusterOptions } from "./testing/cluster.js";

const validator = new SpecValidator();
const EMPTY_HISTORY = { failovers: [], traffic: { windowSeconds: 900, series: [] } };

function view(opts: ClusterOptions = {}, maxPods?: number) {
  const objects: KubeObject[] = clusterObjects(opts);
  return buildView({
    objects,
    planner: new Planner(snapshotFromObjects(objects, NETWORK), { validator }),
    history: EMPTY_HISTORY,
    now: new Date(NOW),
    ...(maxPods !== undefined ? { maxPods } : {}),
  });
}

const row = (pods: ViewPod[], pod: string) => pods.find((p) => p.pod === pod)!;
const ALL_UP = {
  node1: { "shared/gw-a": "up", "shared/gw-b": "up" },
  node2: { "shared/gw-a": "up", "shared/gw-b": "up" },
} as const;

describe("live view model", () => {
  it("shows gateways with their instances' health, policies with their status, and each selected pod's egress IP", () => {
    const v = view({ reports: ALL_UP });
    expect(v.generatedAt).toBe(new Date(NOW).toISOString());
    expect(v.gateways).toEqual([
      {
        name: "shared",
        ready: { status: "True", reason: "InstancesUp", message: "2 of 2 instances up" },
        invalid: null,
        instances: [
          expect.objectContaining({ key: "shared/gw-a", health: "Up", seenDownBy: [], address: "10.0.0.101" }),
          expect.objectContaining({ key: "shared/gw-b", health: "Up", seenDownBy: [] }),
        ],
      },
    ]);
    expect(v.policies.map((p) => [p.resource, p.failurePolicy, p.egressIPs.join(), p.invalid])).toEqual([
      ["EgressPolicy/payments/checkout", "Drop", "192.0.2.10,192.0.2.20", null],
      ["EgressPolicy/reporting/exporter", "FallbackToNodeIP", "192.0.2.11,192.0.2.21", null],
    ]);
    // web-1 is selected by no policy: not listed. Every selected pod leaves through one instance,
    // with the policy's own IP on it.
    expect(v.pods.map((p) => p.pod)).toEqual(["payments/pay-1", "payments/pay-2", "reporting/rep-1"]);
    const own: Record<string, Record<string, string>> = {
      "EgressPolicy/payments/checkout": { "shared/gw-a": "192.0.2.10", "shared/gw-b": "192.0.2.20" },
      "EgressPolicy/reporting/exporter": { "shared/gw-a": "192.0.2.11", "shared/gw-b": "192.0.2.21" },
    };
    for (const p of v.pods) {
      expect(p.path).toBe("gateway");
      expect(p.nodeReporting).toBe(true);
      expect(p.egressIPs).toEqual([own[p.policy]![p.instance]]);
    }
    expect(row(v.pods, "payments/pay-1")).toMatchObject({ node: "node1", ip: "10.244.1.2" });
  });

  it("moves a pod to the other instance when its node reports its instance down, as the node agent would", () => {
    const before = row(view({ reports: ALL_UP }).pods, "payments/pay-1");
    const other = before.instance === "shared/gw-a" ? "shared/gw-b" : "shared/gw-a";
    const v = view({ reports: { ...ALL_UP, node1: { ...ALL_UP.node1, [before.instance]: "down" } } });
    const after = row(v.pods, "payments/pay-1");
    expect(after.instance).toBe(other);
    expect(after.egressIPs).toEqual([other === "shared/gw-a" ? "192.0.2.10" : "192.0.2.20"]);
    expect(after.egressIPs).not.toEqual(before.egressIPs);
    // Node2 still sees it up: its pods did not move.
    expect(row(v.pods, "payments/pay-2")).toEqual(row(view({ reports: ALL_UP }).pods, "payments/pay-2"));
    expect(v.gateways[0]!.instances.find((i) => i.key === before.instance)!.seenDownBy).toEqual(["node1"]);
  });

  it("with no instance up on a node: Drop policies' pods are dropped, FallbackToNodeIP ones leave with the node IP", () => {
    const v = view({ reports: { ...ALL_UP, node2: { "shared/gw-a": "down", "shared/gw-b": "down" } } });
    expect(row(v.pods, "payments/pay-2")).toMatchObject({ path: "dropped", egressIPs: [] });
    expect(row(v.pods, "reporting/rep-1")).toMatchObject({ path: "node-ip", egressIPs: [], instance: "" });
    expect(row(v.pods, "payments/pay-1").path).toBe("gateway");
  });

  it("an invalid policy is shown with its errors, and its pods as dropped (fail-closed)", () => {
    const v = view({ reports: ALL_UP, invalidCheckout: true });
    const checkout = v.policies.find((p) => p.resource === "EgressPolicy/payments/checkout")!;
    expect(checkout.invalid).toMatch(/spec\.egressIPs/);
    expect(row(v.pods, "payments/pay-1")).toMatchObject({ path: "dropped", policy: "EgressPolicy/payments/checkout" });
  });

  it("says when a node does not report (its health view is unknown)", () => {
    const v = view({ reports: { node1: ALL_UP.node1 } });
    expect(row(v.pods, "payments/pay-1").nodeReporting).toBe(true);
    expect(row(v.pods, "payments/pay-2").nodeReporting).toBe(false);
  });

  it("lists at most maxPods pods and says so", () => {
    const v = view({ reports: ALL_UP }, 2);
    expect(v.pods.map((p) => p.pod)).toEqual(["payments/pay-1", "payments/pay-2"]);
    expect(v.podsTruncated).toBe(true);
    expect(view({ reports: ALL_UP }, 3).podsTruncated).toBe(false);
  });

  it("passes on only chosen fields: no annotation, label or spec of any object", () => {
    const text = JSON.stringify(view({ reports: ALL_UP }));
    expect(text).not.toContain("s3cr3t");
    expect(text).not.toContain("staticegress.io/report");
    expect(text).not.toContain("matchLabels");
  });
});
