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
  /** Policy resource -> the last verification probe's result on this node (policies with spec.verification). */
  verification?: Record<string, VerificationReport>;
  at: string;
}

/** One policy's last verification probe from one node (docs/policies.md "Verification"). */
export interface VerificationReport {
  /** ok: the echo service saw one of `expected`; mismatch: it saw `seen`; error: no answer with an address. */
  result: "ok" | "mismatch" | "error";
  seen?: string;
  /** The policy's egress IPs on `instance`. */
  expected: string[];
  /** The gateway instance the probe went through. */
  instance: string;
  error?: string;
  /**
   * When this result (with this source, error, instance) was first seen in a row: it changes only
   * with the result, so the report is not rewritten after every probe. The report's `at` says the
   * node is alive.
   */
  since: string;
}
