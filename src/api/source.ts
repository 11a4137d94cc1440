import type { KubeObject } from "./objects.js";

/**
 * Where agents read the cluster from: a file of Kubernetes documents today, the API server
 * later. A source only records; the agent's single reconcile loop acts (handlers never apply).
 */
export interface ClusterSource {
  /** Resolves once the first complete read is done (the agent plans nothing before that). */
  start(onChange: () => void): Promise<void>;
  /** The last good set of objects. */
  objects(): readonly KubeObject[];
  stop(): Promise<void>;
}
