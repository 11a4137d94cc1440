import type { KubernetesObject } from "@kubernetes/client-node";

/** A Running pod asking for `ip` (label and annotation), Ready or not, as the follower's unit tests need. */
export function claimingPod(name: string, node: string, ready: boolean, ip: string): KubernetesObject {
  return {
    metadata: {
      name,
      namespace: "web",
      labels: { "staticegress.io/reserved-ip": "" },
      annotations: { "staticegress.io/reserved-ip": ip },
    },
    spec: { nodeName: node },
    status: {
      phase: "Running",
      conditions: [
        { type: "Ready", status: ready ? "True" : "False", lastTransitionTime: new Date("2026-01-01T00:00:00Z") },
      ],
    },
  } as KubernetesObject;
}
