import type { KubeObject } from "./objects.js";

/** What one event changed: enough for a consumer to key its work (the controller's status writes). */
export interface SourceChange {
  kind: string;
  name: string;
  namespace?: string;
  /**
   * A Node whose only news is its agent's report (instance health, policies without a healthy
   * instance, verification results): nothing planned from the Node changed.
   */
  reportOnly?: boolean;
  /** A policy whose spec and metadata are unchanged: only its status changed (ours, or the agents' traffic). */
  statusOnly?: boolean;
}

/**
 * Where agents read the cluster from: a file of Kubernetes documents today, the API server
 * later. A source only records; the agent's single reconcile loop acts (handlers never apply).
 */
export interface ClusterSource {
  /**
   * Resolves once the first complete read is done (the agent plans nothing before that).
   * `onChange` may be told what changed (a source that cannot say calls it without).
   */
  start(onChange: (change?: SourceChange) => void): Promise<void>;
  /** The last good set of objects. */
  objects(): readonly KubeObject[];
  /**
   * One Pod as `objects()` holds it, undefined when it is not there: a lookup, where `objects()`
   * may copy every object (the node agent's fast path for one pod event). Optional: without it
   * the agent looks through `objects()`.
   */
  pod?(namespace: string, name: string): KubeObject | undefined;
  stop(): Promise<void>;
}
