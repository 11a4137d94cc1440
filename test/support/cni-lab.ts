import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { cliEntry } from "../../src/lab/paths.js";

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

/**
 * Starts a node agent for node1 in `netns` that reads `view` and serves the CNI socket `socket`
 * (detached: it outlives a crash of the caller's process only until the lab is removed). Its
 * output goes to `<labDir>/logs/<logName>`. Returns its PID.
 */
export function startCniNodeAgent(o: {
  labDir: string;
  netns: string;
  view: string;
  socket: string;
  logName: string;
}): number | undefined {
  const log = openSync(join(o.labDir, "logs", o.logName), "a");
  const args = [
    "netns",
    "exec",
    o.netns,
    process.execPath,
    cliEntry(),
    "agent",
    "node",
    "--node",
    "node1",
    "--source",
    o.view,
  ];
  const child = spawn("ip", [...args, "--config", join(o.labDir, "agent-config.yaml"), "--cni-socket", o.socket], {
    detached: true,
    stdio: ["ignore", log, log],
  });
  closeSync(log);
  child.unref();
  return child.pid;
}
