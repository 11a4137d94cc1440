/**
 * A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager built from their
 * Go modules) for the tests, the lab and the benchmarks, with a fault proxy in front of it.
 * Test and lab infrastructure only: production talks to the user's API server.
 */
import { join } from "node:path";
import { startControlPlane, type ControlPlane, type ControlPlaneOptions, type ServiceAccountRef } from "./cluster.js";
import { startFaultProxy, type FaultProxy } from "./fault-proxy.js";

export {
  startControlPlane,
  freePort,
  COMPONENT_ACCOUNTS,
  type ControlPlane,
  type ControlPlaneOptions,
  type ServiceAccountRef,
} from "./cluster.js";
export { type FaultProxy } from "./fault-proxy.js";
export { FaultInjector } from "./faults.js";
export { k8sBinary } from "./binaries.js";

/** A control plane with the fault proxy in front: what clients under test are given. */
export interface KubeCluster {
  readonly cp: ControlPlane;
  readonly proxy: FaultProxy;
  /** The proxy's URL: clients under test talk to it, so faults can be injected. */
  readonly url: string;
  /** cluster-admin, through the proxy. */
  adminKubeconfig(): string;
  /** A component's own identity (service-account token), through the proxy. */
  kubeconfigFor(sa: ServiceAccountRef, opts?: { node?: string }): Promise<string>;
  stop(): Promise<void>;
}

export async function startKubeCluster(opts: ControlPlaneOptions = {}): Promise<KubeCluster> {
  const cp = await startControlPlane(opts);
  let proxy: FaultProxy;
  try {
    proxy = await startFaultProxy({
      upstream: cp.url,
      caPem: cp.caPem,
      certFile: join(cp.dir, "serving.crt"),
      keyFile: join(cp.dir, "serving.key"),
      adminToken: cp.adminToken,
      compactEtcd: () => cp.compactEtcd(),
      restartApiServer: () => cp.restartApiServer(),
    });
  } catch (e) {
    await cp.stop();
    throw e;
  }
  return {
    cp,
    proxy,
    url: proxy.url,
    adminKubeconfig: () => cp.adminKubeconfig(proxy.url),
    kubeconfigFor: (sa, o = {}) => cp.serviceAccountKubeconfig(sa, { ...o, server: proxy.url }),
    async stop() {
      await proxy.close();
      await cp.stop();
    },
  };
}
