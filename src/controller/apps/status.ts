import type { KubernetesObject } from "@kubernetes/client-node";
import type { AppPhase, AppStatus, ComponentStatus } from "../../api/v1alpha1/app.js";
import type { FieldError } from "../../api/v1alpha1/validate.js";
import { reasonForField, withTransitions } from "../status.js";

type Cond = Parameters<typeof withTransitions>[0][number];

/** What the reconciler found; the status follows from it (pure). */
export type AppFacts =
  | { kind: "invalid"; errors: FieldError[] }
  | { kind: "conflict"; message: string }
  | { kind: "applied"; namespace: string; components: { name: string; kind: ComponentStatus["kind"]; deployment: KubernetesObject | undefined }[]; dedicatedEgress: boolean };

function available(d: KubernetesObject | undefined): { replicas: number; availableReplicas: number; current: boolean } {
  const o = d as { metadata?: { generation?: number }; spec?: { replicas?: number }; status?: { observedGeneration?: number; updatedReplicas?: number; availableReplicas?: number } } | undefined;
  const replicas = o?.spec?.replicas ?? 0;
  const availableReplicas = o?.status?.availableReplicas ?? 0;
  // Rolled out: the Deployment controller has seen this template, and every instance is updated and available.
  const current = o !== undefined && (o.status?.observedGeneration ?? -1) >= (o.metadata?.generation ?? 0) && (o.status?.updatedReplicas ?? 0) >= replicas && availableReplicas >= replicas;
  return { replicas, availableReplicas, current };
}

/** The App's status: DigitalOcean's phase and dedicated_ips, and our conditions. */
export function appStatus(facts: AppFacts, generation: number | undefined, previous: AppStatus | undefined, now: string): AppStatus {
  const gen = generation !== undefined ? { observedGeneration: generation } : {};
  const updatedAt = previous?.observedGeneration === generation && previous?.updated_at ? previous.updated_at : now;
  const conditions: Cond[] = [];
  let phase: AppPhase;
  let components: ComponentStatus[] | undefined = previous?.components;
  let namespace = previous?.namespace;
  if (facts.kind === "invalid") {
    const message = facts.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
    conditions.push({ type: "Ready", status: "False", reason: "Invalid", message, ...gen });
    conditions.push({ type: "Invalid", status: "True", reason: reasonForField(facts.errors[0]?.field ?? "spec"), message, ...gen });
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
        ? { type: "Ready", status: "True", reason: "Available", message: `${facts.components.length} components rolled out and available`, ...gen }
        : { type: "Ready", status: "False", reason: "Deploying", message: `rolling out: ${waiting.join(", ")}`, ...gen },
    );
    conditions.push({ type: "Invalid", status: "False", reason: "Valid", message: "", ...gen });
    phase = waiting.length === 0 ? "ACTIVE" : "DEPLOYING";
  }
  if (facts.kind === "applied" && facts.dedicatedEgress) {
    // Outcome 3 of issue 12 (docs/apps.md): until a gateway carries the app, say so.
    conditions.push({ type: "DedicatedEgress", status: "False", reason: "NotAssigned", message: "egress.type DEDICATED_IP: no dedicated IP is assigned yet; the app's traffic leaves with its node's IP", ...gen });
  }
  return {
    phase,
    ...(namespace ? { namespace } : {}),
    ...gen,
    updated_at: updatedAt,
    ...(components ? { components } : {}),
    dedicated_ips: previous?.dedicated_ips ?? [],
    conditions: withTransitions(conditions, previous?.conditions, now),
  };
}
