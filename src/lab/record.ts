import type { KubeObject } from "../api/objects.js";
import type { LabCloudRecord } from "./cloud.js";
import type { LabConfig } from "./config.js";
import type { LabTopology } from "./topology.js";

/** What `lab up` leaves on disk so later commands (status, exec, down) find the lab. */
export interface LabRecord {
  prefix: string;
  /** CLI labs outlive the command that made them; test labs belong to their process. */
  persistent: boolean;
  ownerPid: number;
  topology: LabTopology;
  config: LabConfig;
  podIPs: Record<string, string>;
  processes: { name: string; netns: string; pid: number; log: string }[];
  /** Gateway hosts killed with `kill-gateway`, and how. */
  dead?: Record<string, GatewayDeath>;
  drained?: string[];
  /** `file`: agents read a file of documents; `kubernetes`: a real control plane, the controller and a lab kubelet. */
  mode: LabMode;
  /** Kubernetes mode: the controller's metrics port on 127.0.0.1 (it runs in the root namespace). */
  controllerMetricsPort?: number;
  /** Kubernetes mode: the controller's live view port on 127.0.0.1 (docs/view.md). */
  controllerViewPort?: number;
}

export type LabMode = "file" | "kubernetes";

/**
 * `destroy`: the droplet is deleted through the cloud's API (gateways of a `digitalocean` lab gateway only).
 * `reboot`: the host comes back as a reboot leaves it (no nft tables, no routes or tunnel devices of ours, boot
 * sysctls, empty conntrack) with no agent running yet; `revive-gateway` starts its agents.
 */
export type GatewayDeath = "agent" | "link" | "silent" | "reboot" | "destroy";
/** Deaths any gateway host can die (and be revived from). */
export const HOST_DEATHS: readonly GatewayDeath[] = ["agent", "link", "silent", "reboot"];
export const GATEWAY_DEATHS: readonly GatewayDeath[] = [...HOST_DEATHS, "destroy"];

/** What the lab's Kubernetes part (./kube-lab.ts) uses of a lab; `Lab` (./lab.ts) is one. */
export interface LabHost {
  readonly record: LabRecord;
  readonly dir: string;
  readonly topology: LabTopology;
  readonly hasCloud: boolean;
  readonly kubeconfigPath: string;
  save(): void;
  cniConfDir(node: string): string;
  objects(policies?: readonly KubeObject[]): KubeObject[];
  cloud(): LabCloudRecord | undefined;
  writeCluster(policies?: readonly KubeObject[]): void;
  componentKubeconfig(component: string): string;
  startProcess(name: string, netns: string, args: string[]): void;
  logTail(name: string, lines?: number): string;
  processExited(name: string): boolean;
  allInstancesUp(): Promise<boolean>;
}
