/**
 * Kubernetes API stand-in (test and lab infrastructure only; production talks to a real API
 * server). See standin.ts for the server and faults.ts for the fault-injection JSON shape.
 */
export { startKubeStandin, type KubeStandin, type KubeStandinOptions, type StandinStoreView } from "./standin.js";
export { runKubeStandinMain, type MainIo } from "./main.js";
export { renderKubeconfig } from "./kubeconfig.js";
export { FaultInjector, FaultSpecError, type FaultSpec, type FailRule, type DelayRule, type ActiveFault, type Verb, type RequestInfo } from "./faults.js";
export { StatusError, type Status, type StatusDetails } from "./errors.js";
export type { KubeObject, ObjectMeta } from "./types.js";
