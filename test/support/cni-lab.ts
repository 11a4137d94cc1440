import { stringify } from "yaml";

/** The address checkout's pods leave with in the one-node CNI lab. */
export const POLICY_IP = "192.0.2.10";

/**
 * One node, one gateway instance, namespaces payments (checkout diverts 198.51.100.0/24 through
 * gw-a) and web, no pods: what the CNI lab tests and bench/pod-start.ts start pods into.
 */
export const CNI_LAB_YAML = stringify({
  nodes: [{ name: "node1" }],
  gateways: [
    {
      name: "shared",
      grants: [
        { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "payments" } }, egressIPs: [POLICY_IP] },
      ],
      instances: [{ name: "gw-a", egressIPs: [POLICY_IP] }],
    },
  ],
  namespaces: [{ name: "payments" }, { name: "web" }],
  pods: [],
  policies: [
    {
      apiVersion: "staticegress.io/v1alpha1",
      kind: "EgressPolicy",
      metadata: { name: "checkout", namespace: "payments" },
      spec: {
        podSelector: { matchLabels: { app: "checkout" } },
        gatewayName: "shared",
        egressIPs: [POLICY_IP],
        destinationCIDRs: ["198.51.100.0/24"],
      },
    },
  ],
});
