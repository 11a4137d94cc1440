import type { InstanceHealth } from "./cluster.js";

/*
 * The node agent -> controller protocol: the agent writes it (src/agents/node/report.ts), the
 * controller reads it for status (src/controller/status.ts), the informers compare it
 * (src/kube/source.ts). Annotation key: REPORT_ANNOTATION in ./keys.ts.
 */

/** What a node agent reports about itself (the Node annotation `staticegress.io/report`). */
export interface NodeReport {
  node: string;
  /** Policy resource -> pods of this node programmed for it. */
  programmed: Record<string, number>;
  /** Instance key -> health as this node sees it. */
  health: Record<string, InstanceHealth>;
  /** Policies with no usable instance on this node, and what happens to their traffic. */
  unavailable: Record<string, "Drop" | "FallbackToNodeIP">;
  at: string;
}
