import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import YAML from "yaml";

export interface ServiceAccountRef {
  namespace: string;
  name: string;
}

/** A kubeconfig (YAML) for `server`, trusting `caPem`, with a bearer token. */
export function tokenKubeconfig(server: string, caPem: string, token: string, user: string): string {
  return YAML.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: "static-egress",
        cluster: { server, "certificate-authority-data": Buffer.from(caPem).toString("base64") },
      },
    ],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: user, context: { cluster: "static-egress", user, namespace: "default" } }],
    "current-context": user,
  });
}

/**
 * A service account's kubeconfig, its token from the TokenRequest API (asked for by `admin`).
 * `node`: the token is bound to that Node and carries its name, as the projected token of a pod
 * on that node does (what the node agent's admission policy checks).
 */
export async function serviceAccountKubeconfig(
  admin: KubeConfig,
  sa: ServiceAccountRef,
  opts: { server: string; caPem: string; node?: string; expirationSeconds?: number },
): Promise<string> {
  const core = admin.makeApiClient(CoreV1Api);
  let boundObjectRef: { kind: string; apiVersion: string; name: string; uid: string } | undefined;
  if (opts.node) {
    const node = await core.readNode({ name: opts.node });
    boundObjectRef = { kind: "Node", apiVersion: "v1", name: opts.node, uid: node.metadata!.uid! };
  }
  const res = await core.createNamespacedServiceAccountToken({
    namespace: sa.namespace,
    name: sa.name,
    body: {
      spec: {
        audiences: [],
        expirationSeconds: opts.expirationSeconds ?? 86_400,
        ...(boundObjectRef ? { boundObjectRef } : {}),
      },
    },
  });
  const token = res.status?.token;
  if (!token) throw new Error(`TokenRequest for ${sa.namespace}/${sa.name} returned no token`);
  return tokenKubeconfig(
    opts.server,
    opts.caPem,
    token,
    `${sa.namespace}:${sa.name}${opts.node ? `@${opts.node}` : ""}`,
  );
}
