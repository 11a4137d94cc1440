import { describe, expect, it } from "vitest";
import { applyJsonPatch, applyMergePatch, applyStrategicMergePatch, PatchError } from "./patch.js";

describe("JSON merge patch (RFC 7386)", () => {
  it("merges objects, replaces lists and deletes with null", () => {
    const target = { a: 1, b: { c: 2, d: 3 }, l: [1, 2] };
    expect(applyMergePatch(target, { b: { c: null, e: 4 }, l: [9], z: "x" })).toEqual({ a: 1, b: { d: 3, e: 4 }, l: [9], z: "x" });
    expect(target).toEqual({ a: 1, b: { c: 2, d: 3 }, l: [1, 2] });
  });
});

describe("JSON patch (RFC 6902)", () => {
  const doc = { metadata: { finalizers: ["a", "b"] }, spec: { x: 1 } };

  it("applies add, remove, replace, move, copy and test", () => {
    const out = applyJsonPatch(doc, [
      { op: "test", path: "/metadata/finalizers/1", value: "b" },
      { op: "remove", path: "/metadata/finalizers/1" },
      { op: "add", path: "/metadata/finalizers/-", value: "c" },
      { op: "replace", path: "/spec/x", value: 2 },
      { op: "copy", from: "/spec/x", path: "/spec/y" },
      { op: "move", from: "/spec/y", path: "/spec/z" },
      { op: "add", path: "/metadata/labels", value: { "a~b/c": "1" } },
      { op: "replace", path: "/metadata/labels/a~0b~1c", value: "2" },
    ]);
    expect(out).toEqual({ metadata: { finalizers: ["a", "c"], labels: { "a~b/c": "2" } }, spec: { x: 2, z: 2 } });
    expect(doc.metadata.finalizers).toEqual(["a", "b"]);
  });

  it("fails a test operation that does not hold (the finalizer-removal guard)", () => {
    expect(() => applyJsonPatch(doc, [{ op: "test", path: "/metadata/finalizers/0", value: "zzz" }])).toThrow(PatchError);
  });

  it.each([
    [{ op: "replace", path: "/spec/missing", value: 1 }],
    [{ op: "remove", path: "/nope" }],
    [{ op: "add", path: "/metadata/finalizers/9", value: 1 }],
    [{ op: "bogus", path: "/spec" }],
  ])("rejects %j", (op) => {
    expect(() => applyJsonPatch(doc, [op])).toThrow(PatchError);
  });
});

describe("strategic merge patch", () => {
  const pod = {
    metadata: { finalizers: ["a"], labels: { x: "1" } },
    spec: {
      containers: [
        { name: "main", image: "nginx:1", env: [{ name: "A", value: "1" }] },
        { name: "side", image: "busybox" },
      ],
    },
    status: { conditions: [{ type: "Ready", status: "False" }, { type: "PodScheduled", status: "True" }] },
  };

  it("merges lists by their merge key instead of replacing them", () => {
    const out = applyStrategicMergePatch(pod, {
      spec: { containers: [{ name: "main", image: "nginx:2", env: [{ name: "B", value: "2" }] }] },
      status: { conditions: [{ type: "Ready", status: "True" }] },
    }) as typeof pod;
    expect(out.spec.containers).toEqual([
      { name: "main", image: "nginx:2", env: [{ name: "A", value: "1" }, { name: "B", value: "2" }] },
      { name: "side", image: "busybox" },
    ]);
    expect(out.status.conditions).toEqual([{ type: "Ready", status: "True" }, { type: "PodScheduled", status: "True" }]);
  });

  it("adds to merge-strategy primitive lists (finalizers)", () => {
    expect((applyStrategicMergePatch(pod, { metadata: { finalizers: ["b", "a"] } }) as typeof pod).metadata.finalizers).toEqual(["a", "b"]);
  });

  it("understands kubectl's directives", () => {
    const out = applyStrategicMergePatch(pod, {
      metadata: { "$deleteFromPrimitiveList/finalizers": ["a"] },
      spec: {
        "$setElementOrder/containers": [{ name: "side" }, { name: "main" }],
        containers: [{ name: "main", $patch: "delete" }],
      },
    }) as typeof pod & { metadata: Record<string, unknown> };
    expect(out.metadata.finalizers).toEqual([]);
    expect(out.spec.containers).toEqual([{ name: "side", image: "busybox" }]);
  });

  it("replaces a map with $patch: replace and deletes keys with null", () => {
    const out = applyStrategicMergePatch(pod, { metadata: { labels: { $patch: "replace", y: "2" } }, status: null }) as Record<string, unknown>;
    expect((out.metadata as { labels: unknown }).labels).toEqual({ y: "2" });
    expect(out.status).toBeUndefined();
  });
});
