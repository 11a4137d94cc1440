import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startKubeCluster } from "./index.js";

/**
 * The lab's control plane as a long-running process (`static-egress lab kube-apiserver`): the
 * real etcd, kube-apiserver, kube-controller-manager and kube-scheduler, with the fault proxy in front on
 * loopback. Writes `<dir>/kubeconfig` (cluster-admin, through the proxy) once the API is ready
 * and deploy/ is installed, and `<dir>/ca.crt`; stops everything on SIGTERM or SIGINT.
 */
export async function serveLabControlPlane(opts: {
  dir: string;
  extraIPs: readonly string[];
  log: (line: string) => void;
}): Promise<void> {
  const cluster = await startKubeCluster({
    extraIPs: opts.extraIPs,
    controllerManager: true,
    scheduler: true,
    log: opts.log,
  });
  const write = (name: string, text: string) => {
    const tmp = join(opts.dir, `.${name}.tmp`);
    writeFileSync(tmp, text, { mode: 0o600 });
    renameSync(tmp, join(opts.dir, name));
  };
  write("ca.crt", cluster.cp.caPem);
  write("kubeconfig", cluster.adminKubeconfig());
  opts.log(
    `kube-apiserver ${cluster.cp.version} ready at ${cluster.cp.url}; clients use the fault proxy at ${cluster.url}`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  await cluster.stop();
}
