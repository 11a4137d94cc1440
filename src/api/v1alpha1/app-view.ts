import { API_VERSION } from "./common.js";
import type { AppSpec, AppStatus, DedicatedIP } from "./app.js";
import type { FieldError } from "./validate.js";

/** What `apps get` shows instead of a SECRET variable's value; `apps update` keeps the current value for it. */
const REDACTED = "**redacted**";

interface AppObject {
  metadata?: { name?: string; uid?: string; creationTimestamp?: string | Date; generation?: number };
  spec?: AppSpec;
  status?: AppStatus;
}

/**
 * An App as DigitalOcean's API shows one (app.yml, the `app` of apps_get): id, spec (SECRET
 * values redacted, as DigitalOcean shows them encrypted), created_at, updated_at,
 * dedicated_ips and the phase of its deployment.
 */
export function toDigitalOceanApp(o: AppObject): Record<string, unknown> {
  const created =
    o.metadata?.creationTimestamp instanceof Date
      ? o.metadata.creationTimestamp.toISOString()
      : o.metadata?.creationTimestamp;
  const usage = o.status?.usage;
  const dedicated = (o.status?.dedicated_ips ?? []).map((d: DedicatedIP) => {
    const u = usage?.ips.find((x) => x.ip === d.ip);
    return u ? { ...d, usage: usageView(u) } : d;
  });
  const id = o.metadata?.uid ?? "";
  return {
    id,
    spec: o.spec ? redactSecrets(o.spec) : undefined,
    ...(created ? { created_at: created } : {}),
    ...(o.status?.updated_at ? { updated_at: o.status.updated_at } : {}),
    phase: o.status?.phase ?? "UNKNOWN",
    dedicated_ips: dedicated,
    // DigitalOcean's bandwidth usage details (app_metrics_bandwidth_usage_details.yml: app_id,
    // bandwidth_bytes as a uint64 string), with packets and since when, from the gateways' counters.
    ...(usage ? { bandwidth_usage: { app_id: id, ...usageView(usage), updated_at: usage.updated_at } } : {}),
  };
}

/** What left through an IP (or all of an app's): DigitalOcean's uint64-as-string style. */
function usageView(u: { bytes: number; packets: number; since: string }): {
  bandwidth_bytes: string;
  packets: string;
  since: string;
} {
  return { bandwidth_bytes: String(u.bytes), packets: String(u.packets), since: u.since };
}

function components(spec: AppSpec): {
  list: "services" | "workers";
  index: number;
  c: NonNullable<AppSpec["services"]>[number] | NonNullable<AppSpec["workers"]>[number];
}[] {
  return [
    ...(spec.services ?? []).map((c, index) => ({ list: "services" as const, index, c })),
    ...(spec.workers ?? []).map((c, index) => ({ list: "workers" as const, index, c })),
  ];
}

/** A copy of the spec with every SECRET variable's value replaced by REDACTED. */
function redactSecrets(spec: AppSpec): AppSpec {
  const copy = structuredClone(spec);
  for (const { c } of components(copy))
    for (const e of c.envs ?? []) if (e.type === "SECRET" && e.value !== undefined) e.value = REDACTED;
  return copy;
}

/**
 * For an update made from `apps get` output: a SECRET value that is REDACTED takes the current
 * App's value of the same component and key (in place). A REDACTED value with no current value is
 * an error naming the field.
 */
export function restoreRedacted(next: AppSpec, current: AppSpec | undefined): FieldError[] {
  const errors: FieldError[] = [];
  for (const { list, index, c } of components(next)) {
    (c.envs ?? []).forEach((e, j) => {
      if (e.value !== REDACTED) return;
      const was = current
        ? components(current)
            .find((x) => x.list === list && x.c.name === c.name)
            ?.c.envs?.find((v) => v.key === e.key && v.type === "SECRET")
        : undefined;
      if (was?.value === undefined)
        errors.push({
          field: `spec.${list}[${index}].envs[${j}].value`,
          message: `${REDACTED} stands for a current secret value, and ${c.name} has no SECRET ${e.key}`,
        });
      else e.value = was.value;
    });
  }
  return errors;
}

/** The App object for a DigitalOcean app spec: named after the spec. */
export function appForSpec(spec: AppSpec): {
  apiVersion: string;
  kind: "App";
  metadata: { name: string };
  spec: AppSpec;
} {
  return { apiVersion: API_VERSION, kind: "App", metadata: { name: spec.name }, spec };
}
