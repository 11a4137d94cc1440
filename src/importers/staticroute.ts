import {
  STATIC_ROUTE_API_VERSION,
  STATIC_ROUTE_GROUP,
  validateStaticRoute,
} from "../api/digitalocean-v1/static-route.js";
import type { KubeObject } from "../api/objects.js";
import { refer, unknownFields } from "./common.js";
import type { Conversion, Converter, Finding, Made } from "./types.js";

/**
 * DigitalOcean's StaticRoute (k8s-staticroute-operator) needs no translation: static-egress serves
 * the same kind, group and fields (docs/static-routes.md). Importing one checks it against our
 * rules (which refuse what could cut a node off: link-local, bad CIDRs, a gateway inside its own
 * destinations) and carries over its name, labels and spec; the status is the node agents' to
 * write. Each object is made whole or refused with the field named.
 */
export const staticRouteConverter: Converter = {
  source: "staticroute",
  reads: [{ group: STATIC_ROUTE_GROUP, kind: "StaticRoute" }],
  convert(objects: readonly KubeObject[]): Conversion {
    const made: Made[] = [];
    const findings: Finding[] = [];
    for (const o of objects) {
      const source = refer(o);
      const name = o.metadata?.name ?? "";
      const object = {
        apiVersion: STATIC_ROUTE_API_VERSION,
        kind: "StaticRoute",
        metadata: { name, ...(o.metadata?.labels ? { labels: o.metadata.labels } : {}) },
        spec: o.spec,
      };
      const errors = validateStaticRoute(object);
      if (errors.length > 0) {
        for (const e of errors) findings.push({ verdict: "refused", source, field: e.field, reason: e.message });
        continue;
      }
      findings.push(...unknownFields(o, "", ["apiVersion", "kind", "metadata", "spec", "status"], source));
      if ((o as { status?: unknown }).status !== undefined)
        findings.push({
          verdict: "ignored",
          source,
          field: "status",
          reason: "written by each node agent (status.nodes), not imported",
        });
      made.push({ object: object as Made["object"], from: [source] });
    }
    return { made, findings };
  },
};
