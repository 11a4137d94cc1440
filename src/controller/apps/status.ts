import type { KubernetesObject } from "@kubernetes/client-node";
import type { AppPhase, AppStatus, AppUsage, ComponentStatus, DedicatedIP } from "../../api/v1alpha1/app.js";
import type { FieldError } from "../../api/v1alpha1/validate.js";
import { reasonForField, withTransitions } from "../status.js";

type Cond = Parameters<typeof withTransitions>[0][number];

/**
 * A DEDICATED_IP app's egress: none asked, no pool, too few free hosts, or its gateway planned;
 * on DigitalOcean also provisioning (droplets and IPs being made), and after REMOVED: removing
 * (the gateway being deleted), then released or kept (`keptIPs`).
 */
export type EgressFacts =
  | {
      state: "none" | "planned" | "provisioning" | "removing" | "released" | "kept";
      dedicatedIPs: DedicatedIP[];
      keptIPs?: string[];
    }
  | { state: "unconfigured" | "exhausted"; free: number; dedicatedIPs: DedicatedIP[]; keptIPs?: string[] };

/** What the reconciler found; the status follows from it (pure). */
export type AppFacts =
  | { kind: "invalid"; errors: FieldError[] }
  | { kind: "conflict"; message: string }
  | {
      kind: "applied";
      namespace: string;
      components: { name: string; kind: ComponentStatus["kind"]; deployment: KubernetesObject | undefined }[];
      egress: EgressFacts;
      /** What left through the dedicated IPs so far (src/controller/apps/usage.ts). */
      usage?: AppUsage | undefined;
    };

function available(d: KubernetesObject | undefined): { replicas: number; availableReplicas: number; current: boolean } {
  const o = d as
    | {
        metadata?: { generation?: number };
        spec?: { replicas?: number };
        status?: { observedGeneration?: number; updatedReplicas?: number; availableReplicas?: number };
      }
    | undefined;
  const replicas = o?.spec?.replicas ?? 0;
  const availableReplicas = o?.status?.availableReplicas ?? 0;
  // Rolled out: the Deployment controller has seen this template, and every instance is updated and available.
  const current =
    o !== undefined &&
    (o.status?.observedGeneration ?? -1) >= (o.metadata?.generation ?? 0) &&
    (o.status?.updatedReplicas ?? 0) >= replicas &&
    availableReplicas >= replicas;
  return { replicas, availableReplicas, current };
}

/** The App's status: DigitalOcean's phase and dedicated_ips, and our conditions. */
export function appStatus(
  facts: AppFacts,
  generation: number | undefined,
  previous: AppStatus | undefined,
  now: string,
): AppStatus {
  const gen = generation !== undefined ? { observedGeneration: generation } : {};
  const updatedAt = previous?.observedGeneration === generation && previous?.updated_at ? previous.updated_at : now;
  const conditions: Cond[] = [];
  let phase: AppPhase;
  let components: ComponentStatus[] | undefined = previous?.components;
  let namespace = previous?.namespace;
  if (facts.kind === "invalid") {
    const message = facts.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
    conditions.push({ type: "Ready", status: "False", reason: "Invalid", message, ...gen });
    conditions.push({
      type: "Invalid",
      status: "True",
      reason: reasonForField(facts.errors[0]?.field ?? "spec"),
      message,
      ...gen,
    });
    phase = "ERROR";
  } else if (facts.kind === "conflict") {
    conditions.push({ type: "Ready", status: "False", reason: "NamespaceConflict", message: facts.message, ...gen });
    conditions.push({ type: "Invalid", status: "False", reason: "Valid", message: "", ...gen });
    phase = "ERROR";
  } else {
    namespace = facts.namespace;
    components = facts.components.map((c) => {
      const a = available(c.deployment);
      return { name: c.name, kind: c.kind, replicas: a.replicas, availableReplicas: a.availableReplicas };
    });
    const waiting = facts.components.filter((c) => !available(c.deployment).current).map((c) => c.name);
    conditions.push(
      waiting.length === 0
        ? {
            type: "Ready",
            status: "True",
            reason: "Available",
            message: `${facts.components.length} components rolled out and available`,
            ...gen,
          }
        : {
            type: "Ready",
            status: "False",
            reason: "Deploying",
            message: `rolling out: ${waiting.join(", ")}`,
            ...gen,
          },
    );
    conditions.push({ type: "Invalid", status: "False", reason: "Valid", message: "", ...gen });
    phase = waiting.length === 0 ? "ACTIVE" : "DEPLOYING";
  }
  const egress = facts.kind === "applied" ? facts.egress : undefined;
  // Usage only grows: kept as it was while the app is invalid or in conflict.
  const usage = (facts.kind === "applied" ? facts.usage : undefined) ?? previous?.usage;
  if (egress && egress.state !== "none") conditions.push({ ...dedicatedEgressCondition(egress), ...gen });
  return {
    phase,
    ...(namespace ? { namespace } : {}),
    ...gen,
    updated_at: updatedAt,
    ...(components ? { components } : {}),
    dedicated_ips: egress?.dedicatedIPs ?? previous?.dedicated_ips ?? [],
    ...keptIPs(egress?.keptIPs ?? previous?.kept_ips, previous?.kept_ips),
    ...(usage ? { usage } : {}),
    conditions: withTransitions(conditions, previous?.conditions, now),
  };
}

/** Written when there are any, and as [] to clear the last ones (the status is merge-patched). */
function keptIPs(ips: string[] | undefined, before: string[] | undefined): { kept_ips?: string[] } {
  return (ips && ips.length > 0) || (before?.length ?? 0) > 0 ? { kept_ips: ips ?? [] } : {};
}

/** Whether the app's dedicated IPs carry its traffic (docs/apps.md#dedicated-egress). */
function dedicatedEgressCondition(e: EgressFacts): Omit<Cond, "observedGeneration"> {
  const leaves = "the app's traffic leaves with its node's IP";
  if (e.state === "provisioning")
    return {
      type: "DedicatedEgress",
      status: "False",
      reason: "Provisioning",
      message: `creating the app's gateway droplets and reserved IPs (DigitalOcean); ${leaves} until both have their IP`,
    };
  if (e.state === "removing")
    return {
      type: "DedicatedEgress",
      status: "False",
      reason: "Removing",
      message: "egress.type is AUTOASSIGN: deleting the app's gateway droplets",
    };
  if (e.state === "released")
    return {
      type: "DedicatedEgress",
      status: "False",
      reason: "Released",
      message: "egress.type is AUTOASSIGN: the app's reserved IPs were released",
    };
  if (e.state === "kept")
    return {
      type: "DedicatedEgress",
      status: "False",
      reason: "Kept",
      message:
        `egress.type is AUTOASSIGN: reserved IPs ${(e.keptIPs ?? []).join(", ") || "(none)"} are kept for the ` +
        "app's next DEDICATED_IP (staticegress.io/dedicated-ips-on-removal: keep)",
    };
  if (e.state === "unconfigured")
    return {
      type: "DedicatedEgress",
      status: "False",
      reason: "NotAssigned",
      message: `egress.type DEDICATED_IP: no gateway pool is configured (--apps-gateway-pool); ${leaves}`,
    };
  if (e.state === "exhausted")
    return {
      type: "DedicatedEgress",
      status: "False",
      reason: "PoolExhausted",
      message: `the gateway pool has ${e.free} free hosts, 2 are needed; ${leaves}`,
    };
  const current = e.dedicatedIPs.filter((d) => d.status !== "REMOVED");
  const waiting = current.filter((d) => d.status !== "ASSIGNED").map((d) => d.ip);
  return waiting.length === 0
    ? {
        type: "DedicatedEgress",
        status: "True",
        reason: "Assigned",
        message: `traffic leaves with ${current.map((d) => d.ip).join(", ")}`,
      }
    : {
        type: "DedicatedEgress",
        status: "False",
        reason: "Assigning",
        message: `waiting for ${waiting.join(", ")} to carry the app's traffic (gateway instance up, pods programmed)`,
      };
}
