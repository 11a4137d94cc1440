import type { KubeObject } from "../api/objects.js";
import { API_VERSION } from "../api/v1alpha1/common.js";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { ciliumConverter } from "./cilium.js";
import { groupOf, refer } from "./common.js";
import { nirmataConverter } from "./nirmata.js";
import { spidernetConverter } from "./spidernet.js";
import { staticRouteConverter } from "./staticroute.js";
import type { Converter, Finding, ImportOptions, Made } from "./types.js";

export type { Converter, Finding, ImportOptions, Made } from "./types.js";

/**
 * The sources `static-egress import` reads. A new source is one module with a Converter, added
 * here.
 */
export const CONVERTERS: readonly Converter[] = [
  ciliumConverter,
  nirmataConverter,
  spidernetConverter,
  staticRouteConverter,
];

export interface ImportResult {
  /** Our objects, gateways first, each valid by our own schema and rules. */
  made: Made[];
  findings: Finding[];
}

/** Input kinds read only as context by a converter (nirmata's Services), never reported as ignored. */
const CONTEXT_KINDS = new Set(["v1/Service"]);

/**
 * Converts every peer object of `inputs` with its source's converter, then judges the result as
 * a whole: no object made twice, an egress IP in one policy only (docs/policies.md), every made
 * object valid by our own validator (src/api/v1alpha1/validate.ts). What fails is refused, with
 * the source and the field; a gateway no remaining policy uses is not made.
 */
export function importObjects(
  inputs: readonly KubeObject[],
  options: ImportOptions,
  converters: readonly Converter[] = CONVERTERS,
): ImportResult {
  const findings: Finding[] = [];
  const buckets = new Map<Converter, KubeObject[]>();
  for (const o of inputs) {
    const converter = converters.find((c) =>
      c.reads.some((r) => r.group === groupOf(o.apiVersion) && r.kind === o.kind),
    );
    if (converter) buckets.set(converter, [...(buckets.get(converter) ?? []), o]);
    else if (o.apiVersion === API_VERSION)
      findings.push({
        verdict: "ignored",
        source: refer(o),
        field: "kind",
        reason: "already a static-egress object: apply it as it is",
      });
    else if (!CONTEXT_KINDS.has(`${o.apiVersion}/${o.kind}`)) {
      const known = converters.flatMap((c) => c.reads.map((r) => `${r.kind} (${r.group})`)).join(", ");
      findings.push({
        verdict: "ignored",
        source: refer(o),
        field: "kind",
        reason: `no importer for ${o.apiVersion ?? "?"} ${o.kind ?? "?"}; known: ${known}`,
      });
    }
  }
  let made: Made[] = [];
  for (const [converter, objects] of buckets) {
    const r = converter.convert(objects, { ...options, inputs });
    made.push(...r.made);
    findings.push(...r.findings);
  }

  const refuse = (m: Made, field: string, reason: string) =>
    findings.push({ verdict: "refused", source: m.from.join(","), field, reason });
  const validator = new SpecValidator();
  const seen = new Set<string>();
  const ipOwner = new Map<string, string>();
  const kept: Made[] = [];
  for (const m of sortMade(made)) {
    const ref = refer(m.object);
    if (seen.has(ref)) {
      refuse(m, "metadata.name", `${ref} is made from another source object too: rename one of them`);
      continue;
    }
    // A StaticRoute is judged by its own converter (validateStaticRoute); ours by the API's validator.
    const errors =
      m.object.kind === "StaticRoute" ? [] : validator.check(m.object.kind ?? "", structuredClone(m.object.spec));
    if (errors.length > 0) {
      for (const e of errors) refuse(m, e.field, `${ref} would be invalid: ${e.message}`);
      continue;
    }
    if (m.object.kind === "EgressPolicy" || m.object.kind === "ClusterEgressPolicy") {
      const taken = (m.object.spec!.egressIPs as string[]).filter((ip) => ipOwner.has(ip));
      if (taken.length > 0) {
        refuse(
          m,
          "egressIPs",
          `${taken.join(", ")} already belongs to ${ipOwner.get(taken[0]!)} (made ` +
            `from ${made.find((x) => refer(x.object) === ipOwner.get(taken[0]!))?.from.join(",")}): ` +
            `an egress IP belongs to one policy (docs/policies.md#egress-ips)`,
        );
        continue;
      }
      for (const ip of m.object.spec!.egressIPs as string[]) ipOwner.set(ip, ref);
    }
    seen.add(ref);
    kept.push(m);
  }
  // A gateway is made for its policies only.
  const used = new Set(
    kept
      .filter((m) => m.object.kind === "EgressPolicy" || m.object.kind === "ClusterEgressPolicy")
      .map((m) => m.object.spec!.gatewayName as string),
  );
  made = kept.filter((m) => m.object.kind !== "EgressGateway" || used.has(m.object.metadata.name));
  // Nor is anything left to do for a gateway that is not made.
  const dropped = kept
    .filter((m) => m.object.kind === "EgressGateway" && !used.has(m.object.metadata.name))
    .map((m) => `EgressGateway ${m.object.metadata.name} `);
  return { made, findings: findings.filter((f) => f.verdict !== "todo" || !dropped.some((d) => f.reason.includes(d))) };
}

const KIND_ORDER = ["EgressGateway", "ClusterEgressPolicy", "EgressPolicy"];

/** Gateways first (policies name them), then by namespace and name: stable output. */
function sortMade(made: readonly Made[]): Made[] {
  const key = (m: Made) =>
    `${KIND_ORDER.indexOf(m.object.kind ?? "")}\u0000${m.object.metadata.namespace ?? ""}\u0000${m.object.metadata.name}`;
  return [...made].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}
