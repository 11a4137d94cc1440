import YAML from "yaml";

/**
 * A kubeconfig with one cluster, user (bearer token) and context, usable by kubectl and
 * client-node. client-node refuses a plain-http server unless the cluster says
 * insecure-skip-tls-verify; kubectl accepts that too (and sends no token over plain http).
 */
export function renderKubeconfig(server: string, token: string, namespace = "default", name = "kube-standin"): string {
  return YAML.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name, cluster: { server, ...(server.startsWith("http:") ? { "insecure-skip-tls-verify": true } : {}) } }],
    users: [{ name, user: { token } }],
    contexts: [{ name, context: { cluster: name, user: name, namespace } }],
    "current-context": name,
    preferences: {},
  });
}
