import type { KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { namespaceInfo, nodeInfo, podInfo, type KubeObject } from "../api/objects.js";
import { ANCHOR_ANNOTATION } from "../agents/node/anchor.js";
import { vouchFor } from "../agents/node/cni-server.js";
import { namespaceGrants, readClaims } from "../controller/cloud/reserved-ip-rules.js";
import { nodeAnchors, serviceRequestedIP, MANAGED_EXTERNAL_IPS_KEY } from "../controller/cloud/service-external-ips.js";
import { parseReport } from "../controller/status.js";
import { NODE_EGRESS_IPS_ANNOTATION } from "../planner/resolve.js";
import { pruneNamespace, pruneNode, prunePod, pruneService } from "./prune.js";

/**
 * "What is kept is exactly what is read": each full object (as the API server sends it, with
 * managedFields, other tools' annotations, container specs, ...) is wrapped in a Proxy that
 * records every primitive value read through it; then every consumer of that kind in
 * static-egress runs on it. The pruned object's leaves must be exactly the recorded ones, plus
 * metadata.resourceVersion (the informer's own bookkeeping). Array indexes count as `[]`.
 */
type Obj = Record<string, unknown>;

function tracked<T extends object>(root: T): { obj: T; reads: Set<string> } {
  const reads = new Set<string>();
  const wrap = (target: object, path: string): object =>
    new Proxy(target, {
      get(t, key, receiver) {
        const value = Reflect.get(t, key, receiver) as unknown;
        if (typeof key === "symbol" || (Array.isArray(t) && (key === "length" || typeof value === "function")))
          return value;
        if (typeof value === "function") return value;
        const p = Array.isArray(t) ? `${path}[]` : `${path}.${key}`;
        if (value !== null && typeof value === "object") return wrap(value, p);
        if (value !== undefined) reads.add(p);
        return value;
      },
    });
  return { obj: wrap(root, "") as T, reads };
}

function leaves(o: unknown, path = "", out = new Set<string>()): Set<string> {
  if (Array.isArray(o)) for (const x of o) leaves(x, `${path}[]`, out);
  else if (o !== null && typeof o === "object") for (const [k, v] of Object.entries(o)) leaves(v, `${path}.${k}`, out);
  else if (o !== undefined) out.add(path);
  return out;
}

const sorted = (s: Set<string>) => [...s].sort();

/** Kept for the informers themselves: resourceVersion (cache updates, watch restarts), kind and apiVersion (what an object is). */
function bookkeeping(reads: Set<string>): void {
  for (const p of [".metadata.resourceVersion", ".kind", ".apiVersion"]) reads.add(p);
}

const managedFields = [
  {
    manager: "kubectl",
    operation: "Apply",
    apiVersion: "v1",
    time: "2025-01-01T00:00:00Z",
    fieldsType: "FieldsV1",
    fieldsV1: { "f:metadata": { "f:labels": {} } },
  },
];

function fullPod(extra: Obj = {}): Obj {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: "web-1",
      namespace: "shop",
      uid: "6f1c0d52-3a1b-4c1e-9f0e-7d0b2a9c4e11",
      resourceVersion: "4711",
      generation: 1,
      creationTimestamp: "2025-01-01T00:00:00Z",
      labels: { app: "web", "staticegress.io/reserved-ip": "" },
      annotations: {
        "staticegress.io/reserved-ip": "192.0.2.7",
        "staticegress.io/reserved-ip-ports": "tcp/443",
        "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z",
      },
      ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "web-5d8f", uid: "x", controller: true }],
      managedFields,
      ...extra,
    },
    spec: {
      nodeName: "node-1",
      hostNetwork: true,
      serviceAccountName: "default",
      containers: [{ name: "app", image: "registry.example/app:1", env: [{ name: "A", value: "b" }] }],
      volumes: [{ name: "v", emptyDir: {} }],
      tolerations: [{ key: "k", operator: "Exists" }],
    },
    status: {
      phase: "Running",
      hostIP: "10.0.0.1",
      hostIPs: [{ ip: "10.0.0.1" }],
      podIP: "10.64.0.2",
      podIPs: [{ ip: "10.64.0.2" }],
      startTime: "2025-01-01T00:00:00Z",
      qosClass: "Burstable",
      conditions: [
        { type: "Initialized", status: "True", lastTransitionTime: "2025-01-01T00:00:00Z" },
        { type: "Ready", status: "True", lastProbeTime: null, lastTransitionTime: "2025-01-01T00:00:01Z" },
      ],
      containerStatuses: [
        {
          name: "app",
          ready: true,
          restartCount: 0,
          image: "registry.example/app:1",
          imageID: "sha",
          state: { running: { startedAt: "2025-01-01T00:00:00Z" } },
        },
      ],
    },
  };
}

function fullNode(extra: Obj = {}): Obj {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: "node-1",
      uid: "u-node-1",
      resourceVersion: "99",
      creationTimestamp: "2025-01-01T00:00:00Z",
      labels: { "kubernetes.io/hostname": "node-1", zone: "a" },
      annotations: {
        [NODE_EGRESS_IPS_ANNOTATION]: "192.0.2.10",
        [ANCHOR_ANNOTATION]: "10.20.0.5",
        "staticegress.io/report": JSON.stringify({
          programmed: { "EgressPolicy/shop/web": 1 },
          health: {},
          unavailable: {},
          at: "2025-01-01T00:00:00Z",
        }),
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
      },
      managedFields,
      ...extra,
    },
    spec: {
      podCIDR: "10.64.0.0/24",
      podCIDRs: ["10.64.0.0/24"],
      providerID: "digitalocean://100001",
      taints: [{ key: "k", effect: "NoSchedule" }],
    },
    status: {
      addresses: [
        { type: "InternalIP", address: "10.0.0.1" },
        { type: "Hostname", address: "node-1" },
      ],
      capacity: { cpu: "4" },
      allocatable: { cpu: "3900m" },
      conditions: [
        { type: "MemoryPressure", status: "False", reason: "KubeletHasSufficientMemory" },
        {
          type: "Ready",
          status: "True",
          reason: "KubeletReady",
          message: "ok",
          lastHeartbeatTime: "2025-01-01T00:00:00Z",
        },
      ],
      nodeInfo: { kubeletVersion: "v1.37.2" },
      images: [{ names: ["registry.example/app:1"], sizeBytes: 1 }],
    },
  };
}

function fullNamespace(extra: Obj = {}): Obj {
  return {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: {
      name: "shop",
      uid: "u-ns",
      resourceVersion: "7",
      labels: { "kubernetes.io/metadata.name": "shop", team: "a" },
      annotations: {
        "staticegress.io/reserved-ips": "192.0.2.7",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
      },
      managedFields,
      ...extra,
    },
    spec: { finalizers: ["kubernetes"] },
    status: { phase: "Active" },
  };
}

/** The planner reads labels through selectors (any key) and one node annotation; modelled here. */
function plannerReads(
  info: { labels: Readonly<Record<string, string>>; annotations?: Readonly<Record<string, string>> },
  rest: unknown,
): void {
  JSON.stringify(info.labels);
  void info.annotations?.[NODE_EGRESS_IPS_ANNOTATION];
  JSON.stringify(rest);
}

describe("pruning keeps exactly what static-egress reads", () => {
  it("pods: planner, CNI checks, reserved-IP claims", () => {
    // Over variants: a pod being deleted, one without status.podIPs (podIP is the fallback), and
    // one whose Ready condition has no transition time (the creation time is the fallback).
    const allReads = new Set<string>();
    const allKept = new Set<string>();
    for (const variant of ["full", "deleting", "no podIPs", "no transition time"]) {
      const pod = fullPod(variant === "deleting" ? { deletionTimestamp: "2025-01-02T00:00:00Z" } : {});
      if (variant === "no podIPs") delete (pod.status as Obj).podIPs;
      if (variant === "no transition time")
        for (const c of (pod.status as { conditions: Obj[] }).conditions) delete c.lastTransitionTime;
      const node = fullNode();
      const { obj, reads } = tracked(pod);
      const info = podInfo(obj as KubeObject);
      plannerReads(info, { ...info, labels: undefined });
      vouchFor(obj as KubeObject, "node-1", ["10.64.0.2"], true);
      readClaims([obj as KubernetesObject], [node as KubernetesObject]);
      bookkeeping(reads);
      reads.forEach((r) => allReads.add(r));
      leaves(prunePod(pod as KubernetesObject), "", allKept);
    }
    expect(sorted(allKept)).toEqual(sorted(allReads));
  });

  // KubeSource's node view (change detection) compares all cached labels and annotations but the
  // quiet ones, so it reads whatever is kept; it is left out here.
  it("nodes: planner, reports, anchors, reserved-IP claims", () => {
    // podCIDR is read when podCIDRs is absent (older clusters).
    const allReads = new Set<string>();
    const allKept = new Set<string>();
    for (const variant of ["full", "deleting", "no podCIDRs"]) {
      const node = fullNode(variant === "deleting" ? { deletionTimestamp: "2025-01-02T00:00:00Z" } : {});
      if (variant === "no podCIDRs") delete (node.spec as Obj).podCIDRs;
      const { obj, reads } = tracked(node);
      const info = nodeInfo(obj as KubeObject);
      plannerReads(info, { ...info, labels: undefined, annotations: undefined });
      parseReport(
        "node-1",
        (obj as { metadata: { annotations: Record<string, string> } }).metadata.annotations,
        Date.parse("2025-01-01T00:00:30Z"),
      );
      nodeAnchors([obj as KubernetesObject]);
      readClaims([fullPod() as KubernetesObject], [obj as KubernetesObject]);
      bookkeeping(reads);
      const kept = leaves(pruneNode(node as KubernetesObject));
      // Kept on every object (uid names an object in Events; deletion is what KubeSource checks
      // of every kind); not read of Nodes today.
      for (const k of [".metadata.uid", ".metadata.creationTimestamp", ".metadata.deletionTimestamp"]) kept.delete(k);
      reads.forEach((r) => allReads.add(r));
      kept.forEach((k) => allKept.add(k));
    }
    expect(sorted(allKept)).toEqual(sorted(allReads));
  });

  it("namespaces: planner and reserved-IP grants", () => {
    const ns = fullNamespace();
    const { obj, reads } = tracked(ns);
    const info = namespaceInfo(obj as KubeObject);
    plannerReads(info, { ...info, labels: undefined });
    namespaceGrants([obj as KubernetesObject])("shop", "192.0.2.7");
    bookkeeping(reads);
    const kept = leaves(pruneNamespace(ns as KubernetesObject));
    kept.delete(".metadata.uid");
    expect(sorted(kept)).toEqual(sorted(reads));
  });

  it("services keep their externalIPs and our annotations only", () => {
    const svc = {
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: "web",
        namespace: "shop",
        uid: "u",
        resourceVersion: "5",
        managedFields,
        annotations: {
          "staticegress.io/reserved-ip": "192.0.2.7",
          [MANAGED_EXTERNAL_IPS_KEY]: "10.20.0.5",
          "other/x": "y",
        },
      },
      spec: {
        type: "ClusterIP",
        clusterIP: "10.96.0.10",
        ports: [{ port: 80 }],
        externalIPs: ["10.20.0.5"],
        selector: { app: "web" },
      },
      status: { loadBalancer: {} },
    };
    const pruned = pruneService(svc as unknown as KubernetesObject) as unknown as typeof svc;
    expect(pruned).toEqual({
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: "web",
        namespace: "shop",
        uid: "u",
        resourceVersion: "5",
        annotations: { "staticegress.io/reserved-ip": "192.0.2.7", [MANAGED_EXTERNAL_IPS_KEY]: "10.20.0.5" },
      },
      spec: { externalIPs: ["10.20.0.5"] },
    });
    expect(serviceRequestedIP(pruned.metadata.annotations)).toEqual(serviceRequestedIP(svc.metadata.annotations));
  });

  it("does not change its input", () => {
    const pod = fullPod();
    const copy = structuredClone(pod);
    prunePod(pod as KubernetesObject);
    expect(pod).toEqual(copy);
  });
});
