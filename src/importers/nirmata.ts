import type { KubeObject } from "../api/objects.js";
import { NODE_EGRESS_IPS_ANNOTATION } from "../api/keys.js";
import {
  annotationFindings,
  dnsName,
  GATEWAY_NODE_LABEL,
  importedMetadata,
  isIPv4,
  isIPv4Cidr,
  isIPv6Like,
  isObject,
  ours,
  refer,
  sourceLabels,
  unknownFields,
} from "./common.js";
import { NAMESPACE_NAME_LABEL } from "./selectors.js";
import type { Converter, Finding, ImportContext, Made } from "./types.js";

/** The EgressGateway made for nirmata's gateway node when no `--gateway` is given. */
const NIRMATA_GATEWAY = "nirmata-gateway";
/** The node annotation that makes a node nirmata's gateway. */
const NIRMATA_GATEWAY_ANNOTATION = "nirmata.io/staticegressips-gateway";

interface Rule {
  index: number;
  service: string;
  selector: Record<string, string>;
  egressIP: string;
  cidr: string;
}

/**
 * nirmata's StaticEgressIP (staticegressips.nirmata.io/v1alpha1, namespaced): each rule sends
 * the pods behind a Service (`service-name`) to `cidr` with source `egressip`. Rules of one
 * Service and one egress IP become one EgressPolicy in the same namespace, selecting the pods by
 * the Service's own selector (the Service must be in the input). Mapping table: docs/import.md.
 */
export const nirmataConverter: Converter = {
  source: "nirmata",
  reads: [{ group: "staticegressips.nirmata.io", kind: "StaticEgressIP" }],
  convert(objects, ctx) {
    const made: Made[] = [];
    const findings: Finding[] = [];
    /** Egress IPs per namespace, and the sources: the generated gateway's grants. */
    const granted = new Map<string, Set<string>>();
    const from: string[] = [];
    for (const o of objects) {
      const namespace = o.metadata?.namespace ?? ctx.defaultNamespace;
      const source = refer(o, namespace);
      findings.push(...annotationFindings(o, source));
      const spec = o.spec;
      if (!isObject(spec) || !Array.isArray(spec.rules) || spec.rules.length === 0) {
        findings.push({ verdict: "refused", source, field: "spec.rules", reason: "must list at least one rule" });
        continue;
      }
      findings.push(...unknownFields(spec, "spec", ["rules"], source));
      const rules: Rule[] = [];
      spec.rules.forEach((raw, index) => {
        const r = readRule(raw, index, namespace, source, ctx, findings);
        if (r) rules.push(r);
      });
      // One policy per (Service, egress IP): an egress IP belongs to one policy here.
      const groups = new Map<string, Rule[]>();
      for (const r of rules)
        groups.set(`${r.service}\u0000${r.egressIP}`, [...(groups.get(`${r.service}\u0000${r.egressIP}`) ?? []), r]);
      const names = new Set<string>();
      for (const group of groups.values()) {
        const first = group[0]!;
        let name = dnsName(
          groups.size === 1 ? (o.metadata?.name ?? "nirmata") : `${o.metadata?.name ?? "nirmata"}-${first.service}`,
        );
        for (let n = 2; names.has(name); n++)
          name = dnsName(`${o.metadata?.name ?? "nirmata"}-${first.service}`, String(n));
        names.add(name);
        const fromRules = group.map((r) => `${source}#rules[${r.index}]`);
        const object = ours("EgressPolicy", importedMetadata("nirmata", fromRules, name, namespace, sourceLabels(o)), {
          podSelector: { matchLabels: first.selector },
          destinationCIDRs: [...new Set(group.map((r) => r.cidr))],
          gatewayName: ctx.gateway ?? NIRMATA_GATEWAY,
          egressIPs: [first.egressIP],
        });
        made.push({ object, from: fromRules });
        granted.set(namespace, (granted.get(namespace) ?? new Set()).add(first.egressIP));
        from.push(...fromRules);
      }
    }
    if (granted.size === 0) return { made, findings };
    const namespaces = [...granted.keys()].sort();
    if (ctx.gateway) {
      for (const ns of namespaces) {
        const ips = [...granted.get(ns)!].sort();
        findings.push({
          verdict: "todo",
          source: from.filter((f) => f.split("/")[1] === ns).join(","),
          field: "spec.rules[].egressip",
          reason:
            `EgressGateway ${ctx.gateway} must carry ${ips.join(", ")} on its instances and grant ` +
            `them to namespace ${ns} (spec.grants, docs/policies.md#tenancy-grants)`,
        });
      }
      return { made, findings };
    }
    const allIPs = [...new Set(namespaces.flatMap((ns) => [...granted.get(ns)!]))].sort();
    made.push({
      object: ours("EgressGateway", importedMetadata("nirmata", from, NIRMATA_GATEWAY), {
        nodes: { nodeSelector: { matchLabels: { [GATEWAY_NODE_LABEL]: NIRMATA_GATEWAY } }, count: 1 },
        grants: namespaces.map((ns) => ({
          namespaceSelector: { matchLabels: { [NAMESPACE_NAME_LABEL]: ns } },
          egressIPs: [...granted.get(ns)!].sort(),
        })),
      }),
      from,
    });
    findings.push({
      verdict: "todo",
      source: from.join(","),
      field: "spec.rules[].egressip",
      reason:
        `nirmata's gateway is the node annotated ${NIRMATA_GATEWAY_ANNOTATION}; ` +
        `EgressGateway ${NIRMATA_GATEWAY} selects it by a label, and reads its egress IPs from an annotation: ` +
        `kubectl label node <that node> ${GATEWAY_NODE_LABEL}=${NIRMATA_GATEWAY} && kubectl ` +
        `annotate node <that node> ${NODE_EGRESS_IPS_ANNOTATION}=${allIPs.join(",")}`,
    });
    return { made, findings };
  },
};

function readRule(
  raw: unknown,
  index: number,
  namespace: string,
  source: string,
  ctx: ImportContext,
  findings: Finding[],
): Rule | undefined {
  const field = `spec.rules[${index}]`;
  const refuse = (f: string, reason: string): undefined => {
    findings.push({ verdict: "refused", source, field: f, reason: `${reason} (rule not imported)` });
    return undefined;
  };
  if (!isObject(raw)) return refuse(field, "not an object");
  findings.push(...unknownFields(raw, field, ["egressip", "service-name", "cidr"], source));
  const egressIP = raw.egressip;
  if (egressIP === undefined) return refuse(`${field}.egressip`, "missing");
  if (!isIPv4(egressIP))
    return refuse(
      `${field}.egressip`,
      `invalid value ${JSON.stringify(egressIP)}: must be an IPv4 address${isIPv6Like(egressIP) ? " (static-egress handles IPv4 only)" : ""}`,
    );
  let cidr = raw.cidr;
  if (cidr === undefined) return refuse(`${field}.cidr`, "missing: the destination is required");
  if (isIPv4(cidr)) cidr = `${cidr}/32`; // nirmata hands it to iptables -d, where a bare address is a /32
  if (!isIPv4Cidr(cidr))
    return refuse(
      `${field}.cidr`,
      `invalid value ${JSON.stringify(raw.cidr)}: must be an IPv4 CIDR${isIPv6Like(cidr) ? " (static-egress handles IPv4 only)" : ""}`,
    );
  const service = raw["service-name"];
  if (typeof service !== "string" || service === "") return refuse(`${field}.service-name`, "missing");
  const svc = findService(ctx.inputs, namespace, service, ctx.defaultNamespace);
  if (!svc) {
    return refuse(
      `${field}.service-name`,
      `Service ${namespace}/${service} is not in the input: nirmata sends the Service's ` +
        `endpoints, static-egress selects the pods by the Service's selector; add the Service ` +
        `to the file (kubectl get service -n ${namespace} ${service} -o yaml)`,
    );
  }
  const selector = (svc.spec as { selector?: unknown } | undefined)?.selector;
  if (
    !isObject(selector) ||
    Object.keys(selector).length === 0 ||
    Object.values(selector).some((v) => typeof v !== "string")
  ) {
    return refuse(
      `${field}.service-name`,
      `Service ${namespace}/${service} has no selector (its endpoints are managed by hand): static-egress selects pods by label`,
    );
  }
  return { index, service, selector: selector as Record<string, string>, egressIP, cidr };
}

function findService(
  inputs: readonly KubeObject[],
  namespace: string,
  name: string,
  defaultNamespace: string,
): KubeObject | undefined {
  return inputs.find(
    (o) =>
      o.apiVersion === "v1" &&
      o.kind === "Service" &&
      o.metadata?.name === name &&
      (o.metadata?.namespace ?? defaultNamespace) === namespace,
  );
}
