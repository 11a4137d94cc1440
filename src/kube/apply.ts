import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { KubeObject } from "../api/objects.js";
import {
  STATIC_ROUTE_API_VERSION,
  STATIC_ROUTE_GROUP,
  STATIC_ROUTE_VERSION,
} from "../api/digitalocean-v1/static-route.js";
import { GROUP, VERSION } from "../api/v1alpha1/common.js";
import { PLURALS, statusOf, type KubeClient, type PolicyKind } from "./client.js";

/** The field manager of `static-egress import --apply` (server-side apply owns fields by manager). */
const IMPORT_FIELD_MANAGER = "static-egress-import";

const serverSideApply = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);

export interface ApplyOutcome {
  /** `Kind/name` or `Kind/namespace/name`. */
  ref: string;
  result: "created" | "configured" | "unchanged" | "refused" | "failed" | "not applied";
  /** The API server's words, field first when it names one. */
  error?: string;
}

/**
 * Applies our objects (server-side apply, field manager `static-egress-import`), all or none:
 * first every object is applied with `dryRun=All`, so the API server judges each one (schema,
 * CEL rules, the namespace exists, no conflict with another field manager), and an object that
 * exists but was not made by import is refused (apply would merge into it); if any is refused,
 * none is applied and each refusal is returned. Then each is applied for real, gateways first.
 * A failure in that second pass (the cluster changed in between) is returned for that object,
 * next to what was applied: never silent.
 */
export async function applyAllOrNone(
  client: KubeClient,
  objects: readonly KubeObject[],
  fieldManager = IMPORT_FIELD_MANAGER,
): Promise<{ applied: boolean; outcomes: ApplyOutcome[] }> {
  const checks = await Promise.all(
    objects.map(async (o): Promise<ApplyOutcome> => {
      try {
        // Server-side apply merges into an object others manage (a set like egressIPs would
        // gain our items next to theirs): import changes only what it made.
        const managers = ((await read(client, o))?.metadata?.managedFields ?? []).map((f) => f.manager ?? "?");
        if (managers.length > 0 && !managers.includes(fieldManager)) {
          return {
            ref: refOf(o),
            result: "refused",
            error: `already exists, managed by ${[...new Set(managers)].join(", ")}, not made by import: delete it, or leave its source out`,
          };
        }
        await apply(client, o, fieldManager, true);
        return { ref: refOf(o), result: "not applied" };
      } catch (e) {
        return { ref: refOf(o), result: "refused", error: describeApiError(e) };
      }
    }),
  );
  if (checks.some((c) => c.result === "refused")) return { applied: false, outcomes: checks };
  const outcomes: ApplyOutcome[] = [];
  for (const o of objects) {
    try {
      const before = await read(client, o);
      const after = (await apply(client, o, fieldManager, false)) as { metadata?: { resourceVersion?: string } };
      const result =
        before === undefined
          ? "created"
          : before.metadata?.resourceVersion === after.metadata?.resourceVersion
            ? "unchanged"
            : "configured";
      outcomes.push({ ref: refOf(o), result });
    } catch (e) {
      outcomes.push({ ref: refOf(o), result: "failed", error: describeApiError(e) });
    }
  }
  return { applied: true, outcomes };
}

/** Where an object lives: one of our kinds, or DigitalOcean's StaticRoute (served as the operator defines it). */
function target(o: KubeObject): { group: string; version: string; plural: string; name: string; namespace?: string } {
  const name = o.metadata?.name ?? "";
  if (o.apiVersion === STATIC_ROUTE_API_VERSION && o.kind === "StaticRoute")
    return { group: STATIC_ROUTE_GROUP, version: STATIC_ROUTE_VERSION, plural: "staticroutes", name };
  const kind = o.kind as PolicyKind;
  const plural = PLURALS[kind];
  if (!plural || o.apiVersion !== `${GROUP}/${VERSION}`) throw new Error(`${refOf(o)}: not a static-egress object`);
  return {
    group: GROUP,
    version: VERSION,
    plural,
    name,
    ...(kind === "EgressPolicy" ? { namespace: o.metadata?.namespace ?? "default" } : {}),
  };
}

async function apply(client: KubeClient, o: KubeObject, fieldManager: string, dryRun: boolean): Promise<unknown> {
  const t = target(o);
  const common = {
    group: t.group,
    version: t.version,
    plural: t.plural,
    name: t.name,
    body: o,
    fieldManager,
    ...(dryRun ? { dryRun: "All" } : {}),
  };
  return whileBusy(() =>
    t.namespace !== undefined
      ? client.custom.patchNamespacedCustomObject({ ...common, namespace: t.namespace }, serverSideApply)
      : client.custom.patchClusterCustomObject(common, serverSideApply),
  );
}

/**
 * Retries what the API server asks to be retried (429 with Retry-After, e.g. "storage is
 * (re)initializing" under load; 503/504), a few times, as kubectl's client does. Server-side
 * apply is idempotent, so a retry never applies twice.
 */
async function whileBusy<T>(call: () => Promise<T>, attempts = 6): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await call();
    } catch (e) {
      const code = statusOf(e);
      if (i >= attempts || (code !== 429 && code !== 503 && code !== 504)) throw e;
      await new Promise((r) => setTimeout(r, retryAfterMs(e)));
    }
  }
}

function retryAfterMs(e: unknown): number {
  const seconds = Number((e as { headers?: Record<string, string> }).headers?.["retry-after"]);
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 10) * 1000 : 1000;
}

interface Current {
  metadata?: { resourceVersion?: string; managedFields?: { manager?: string }[] };
}

/**
 * The object as the API server has it now, undefined if there is none. A list by name (and
 * namespace) rather than a get: the calls stay within those KUBE_ACCESS already lists (list and
 * patch of our kinds), so the deploy test's inventory of API calls holds for import too.
 */
async function read(client: KubeClient, o: KubeObject): Promise<Current | undefined> {
  const t = target(o);
  const fieldSelector = `metadata.name=${t.name}${t.namespace !== undefined ? `,metadata.namespace=${t.namespace}` : ""}`;
  const list = (await whileBusy(() =>
    client.custom.listClusterCustomObject({ group: t.group, version: t.version, plural: t.plural, fieldSelector }),
  )) as {
    items?: Current[];
  };
  return list.items?.[0];
}

function refOf(o: KubeObject): string {
  return `${o.kind ?? "?"}/${o.metadata?.namespace ? `${o.metadata.namespace}/` : ""}${o.metadata?.name ?? "?"}`;
}

/**
 * The API server's refusal in its own words: the fields it names (`Status.details.causes`), or
 * its message (e.g. `namespaces "shop" not found`), with the HTTP status.
 */
function describeApiError(e: unknown): string {
  const code = statusOf(e);
  const body = (e as { body?: unknown }).body;
  let status: { message?: string; details?: { causes?: { field?: string; message?: string }[] } } | undefined;
  try {
    status = typeof body === "string" ? JSON.parse(body) : (body as typeof status);
  } catch {
    status = undefined;
  }
  const causes = status?.details?.causes?.filter((c) => c.field || c.message) ?? [];
  const text =
    causes.length > 0
      ? causes.map((c) => (c.field ? `${c.field}: ${c.message ?? ""}` : (c.message ?? ""))).join("; ")
      : (status?.message ?? (e as Error).message);
  return code ? `${text} (HTTP ${code})` : text;
}
