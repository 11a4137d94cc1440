import type { KubeObject } from "../api/objects.js";
import type { LabelSelector } from "../api/v1alpha1/common.js";
import { NODE_EGRESS_IPS_ANNOTATION } from "../api/keys.js";
import {
  annotationFindings,
  dnsName,
  importedMetadata,
  isIPv4,
  isIPv4Cidr,
  isIPv6Like,
  isObject,
  ours,
  readSelector,
  refer,
  shortHash,
  sourceLabels,
  unknownFields,
} from "./common.js";
import {
  andSelectors,
  canonical,
  describeSelector,
  NAMESPACE_NAME_LABEL,
  orSelections,
  type PodAndNamespace,
} from "./selectors.js";
import type { Converter, Finding, ImportContext, Made } from "./types.js";

/**
 * Cilium's CiliumEgressGatewayPolicy (cilium.io/v2, cluster-scoped) -> one ClusterEgressPolicy,
 * and one EgressGateway (source `nodes`, count 1) per distinct gateway node selector, unless
 * `--gateway` names an existing one. Mapping table and refusals: docs/import.md.
 */
export const ciliumConverter: Converter = {
  source: "cilium",
  reads: [{ group: "cilium.io", kind: "CiliumEgressGatewayPolicy" }],
  convert(objects, ctx) {
    const made: Made[] = [];
    const findings: Finding[] = [];
    const gateways = new Map<string, { selector: LabelSelector; ips: Set<string>; from: string[] }>();
    for (const o of objects) {
      const r = convertOne(o, ctx);
      findings.push(...r.findings);
      if (!r.policy) continue;
      made.push(r.policy);
      if (r.gateway) {
        const gw = gateways.get(r.gateway.name) ?? { selector: r.gateway.selector, ips: new Set<string>(), from: [] };
        for (const ip of r.policy.object.spec!.egressIPs as string[]) gw.ips.add(ip);
        gw.from.push(...r.policy.from);
        gateways.set(r.gateway.name, gw);
      }
    }
    for (const [name, gw] of [...gateways].sort(([a], [b]) => a.localeCompare(b))) {
      made.push({
        object: ours("EgressGateway", importedMetadata("cilium", gw.from, name), {
          nodes: { nodeSelector: gw.selector, count: 1 },
        }),
        from: gw.from,
      });
      const ips = [...gw.ips].sort();
      findings.push({
        verdict: "todo",
        source: gw.from.join(","),
        field: "spec.egressGateway.egressIP",
        reason:
          `Cilium finds the egress IP on the gateway node; static-egress reads it from the node's annotation. On the node EgressGateway ${name} selects ` +
          `(${describeSelector(gw.selector)}; the first by name, as Cilium picks): kubectl annotate node <node> ${NODE_EGRESS_IPS_ANNOTATION}=${ips.join(",")}`,
      });
    }
    return { made, findings };
  },
};

interface One {
  policy?: Made;
  gateway?: { name: string; selector: LabelSelector };
  findings: Finding[];
}

function convertOne(o: KubeObject, ctx: ImportContext): One {
  const source = refer(o);
  const findings: Finding[] = [...annotationFindings(o, source)];
  let refused = false;
  const refuse = (field: string, reason: string) => {
    refused = true;
    findings.push({ verdict: "refused", source, field, reason });
  };
  const ignore = (field: string, reason: string) => findings.push({ verdict: "ignored", source, field, reason });
  const spec = o.spec;
  if (!isObject(spec)) {
    refuse("spec", "missing");
    return { findings };
  }
  findings.push(
    ...unknownFields(
      spec,
      "spec",
      ["selectors", "destinationCIDRs", "excludedCIDRs", "egressGateway", "egressGateways"],
      source,
    ),
  );

  const destinationCIDRs = cidrs(spec.destinationCIDRs, "spec.destinationCIDRs", refuse, ignore);
  if (destinationCIDRs && destinationCIDRs.length === 0)
    refuse("spec.destinationCIDRs", "no IPv4 destination: static-egress diverts IPv4 traffic only");
  const excludedCIDRs =
    spec.excludedCIDRs === undefined ? [] : cidrs(spec.excludedCIDRs, "spec.excludedCIDRs", refuse, ignore);

  // The gateway: one node (egressGateway), or several, each with its own IP (egressGateways).
  const list = Array.isArray(spec.egressGateways) ? spec.egressGateways : [];
  if (spec.egressGateways !== undefined && !Array.isArray(spec.egressGateways))
    refuse("spec.egressGateways", "must be a list");
  const entries: { field: string; value: unknown }[] =
    list.length > 0
      ? list.map((value, i) => ({ field: `spec.egressGateways[${i}]`, value }))
      : [{ field: "spec.egressGateway", value: spec.egressGateway }];
  if (list.length > 0 && spec.egressGateway !== undefined)
    ignore("spec.egressGateway", "Cilium itself ignores egressGateway when egressGateways has entries");
  if (list.length > 1 && !ctx.gateway) {
    refuse(
      "spec.egressGateways",
      "several gateway nodes, each with its own egress IP: static-egress puts a " +
        "policy's egress IPs on the instances of one EgressGateway; import with " +
        "--gateway <name> of a gateway whose instances carry these IPs",
    );
  }
  const egressIPs: string[] = [];
  let nodeSelector: LabelSelector | undefined;
  for (const { field, value } of entries) {
    if (!isObject(value)) {
      refuse(field, "missing: the gateway node and its egress IP are required");
      continue;
    }
    findings.push(...unknownFields(value, field, ["nodeSelector", "egressIP", "interface"], source));
    if (value.egressIP === undefined) {
      refuse(
        `${field}.egressIP`,
        value.interface !== undefined
          ? `missing: Cilium takes the first IPv4 of interface ${JSON.stringify(value.interface)} on the ` +
              `gateway node at run time; static-egress needs the egress IP itself: set egressIP`
          : "missing: Cilium takes the first IPv4 of the gateway node's default-route interface " +
              "at run time; static-egress needs the egress IP itself: set egressIP",
      );
    } else if (!isIPv4(value.egressIP)) {
      refuse(`${field}.egressIP`, `invalid value ${JSON.stringify(value.egressIP)}: must be an IPv4 address`);
    } else if (!egressIPs.includes(value.egressIP)) {
      egressIPs.push(value.egressIP);
    }
    if (value.interface !== undefined && value.egressIP !== undefined) {
      ignore(
        `${field}.interface`,
        "static-egress SNATs on the gateway's own uplink; the egress IP must be routed to the gateway host (the interface that holds it is not chosen)",
      );
    }
    const sel = readSelector(value.nodeSelector);
    if (typeof sel === "string") refuse(`${field}.nodeSelector`, sel);
    else if (ctx.gateway)
      ignore(
        `${field}.nodeSelector`,
        `the policy uses the existing EgressGateway ${ctx.gateway} (--gateway) instead of a gateway node chosen by label`,
      );
    else nodeSelector = sel;
  }

  const selection = podSelection(spec.selectors, refuse, ignore);
  if (refused || !selection || !destinationCIDRs) return { findings };

  const gatewayName = ctx.gateway ?? dnsName("cilium", shortHash(canonical(nodeSelector ?? {})));
  const from = [source];
  const policy: Made = {
    object: ours(
      "ClusterEgressPolicy",
      importedMetadata("cilium", from, dnsName(o.metadata?.name ?? "cilium"), undefined, sourceLabels(o)),
      {
        podSelector: selection.pod,
        namespaceSelector: selection.ns,
        destinationCIDRs,
        ...(excludedCIDRs && excludedCIDRs.length > 0 ? { excludedCIDRs } : {}),
        gatewayName,
        egressIPs,
      },
    ),
    from,
  };
  return { policy, findings, ...(ctx.gateway ? {} : { gateway: { name: gatewayName, selector: nodeSelector ?? {} } }) };
}

/** IPv4 CIDRs of a list; IPv6 entries are reported as ignored, anything else refused. */
function cidrs(
  raw: unknown,
  field: string,
  refuse: (f: string, r: string) => void,
  ignore: (f: string, r: string) => void,
): string[] | undefined {
  if (!Array.isArray(raw)) {
    refuse(field, "must be a list of CIDRs");
    return undefined;
  }
  const out: string[] = [];
  raw.forEach((c, i) => {
    if (isIPv4Cidr(c)) out.push(c);
    else if (isIPv6Like(c))
      ignore(
        `${field}[${i}]`,
        `IPv6 ${JSON.stringify(c)}: static-egress handles IPv4 only (IPv6 traffic is never diverted)`,
      );
    else refuse(`${field}[${i}]`, `invalid value ${JSON.stringify(c)}: must be a CIDR`);
  });
  return out;
}

/** Cilium's pod-label names for things that are not pod labels here. */
const NAMESPACE_PSEUDO_LABEL = "io.kubernetes.pod.namespace";
const CILIUM_DERIVED = /^(io\.cilium\.|io\.kubernetes\.pod\.)/;

/** `selectors[]` (OR of pod selector AND namespace selector) as one selection, or undefined when refused. */
function podSelection(
  raw: unknown,
  refuse: (f: string, r: string) => void,
  ignore: (f: string, r: string) => void,
): PodAndNamespace | undefined {
  if (!Array.isArray(raw) || raw.length === 0) {
    refuse("spec.selectors", "must list at least one selector");
    return undefined;
  }
  const entries: PodAndNamespace[] = [];
  let ok = true;
  raw.forEach((entry, i) => {
    const field = `spec.selectors[${i}]`;
    if (!isObject(entry)) {
      refuse(field, "not an object");
      ok = false;
      return;
    }
    for (const k of Object.keys(entry).filter(
      (k) => !["podSelector", "namespaceSelector", "nodeSelector"].includes(k),
    )) {
      ignore(`${field}.${k}`, "unknown field: no equivalent in static-egress");
    }
    if (entry.nodeSelector !== undefined) {
      const n = readSelector(entry.nodeSelector);
      if (typeof n === "string" || n.matchLabels || n.matchExpressions) {
        refuse(
          `${field}.nodeSelector`,
          "static-egress selects pods by their labels and namespace, not by the node they run on",
        );
        ok = false;
      } else {
        ignore(`${field}.nodeSelector`, "empty: selects every node, the same as absent");
      }
    }
    const pod = readSelector(entry.podSelector);
    const ns = readSelector(entry.namespaceSelector);
    if (typeof pod === "string") {
      refuse(`${field}.podSelector`, pod);
      ok = false;
      return;
    }
    if (typeof ns === "string") {
      refuse(`${field}.namespaceSelector`, ns);
      ok = false;
      return;
    }
    const split = splitPseudoLabels(pod, `${field}.podSelector`);
    if (typeof split === "string") {
      refuse(`${field}.podSelector`, split);
      ok = false;
      return;
    }
    const nsPlain = stripSourcePrefix(ns);
    const both = andSelectors(nsPlain, split.ns);
    if (!both) {
      refuse(
        `${field}`,
        `podSelector's ${NAMESPACE_PSEUDO_LABEL} and namespaceSelector name different namespaces: it selects nothing`,
      );
      ok = false;
      return;
    }
    entries.push({ pod: split.pod, ns: both });
  });
  if (!ok) return undefined;
  const one = orSelections(entries);
  if (typeof one === "string") {
    refuse(
      "spec.selectors",
      `${entries.length} selectors cannot be one static-egress selection (${one}): a policy has ` +
        `one pod selector and one namespace selector, and an egress IP belongs to one ` +
        `policy; split the Cilium policy, one per selector, each with its own egressIP`,
    );
    return undefined;
  }
  return one;
}

/** Drops Cilium's `k8s:`/`any:` label source prefixes (the same Kubernetes labels). */
function stripSourcePrefix(s: LabelSelector): LabelSelector {
  const strip = (k: string) => k.replace(/^(k8s|any):/, "");
  return {
    ...(s.matchLabels
      ? { matchLabels: Object.fromEntries(Object.entries(s.matchLabels).map(([k, v]) => [strip(k), v])) }
      : {}),
    ...(s.matchExpressions ? { matchExpressions: s.matchExpressions.map((e) => ({ ...e, key: strip(e.key) })) } : {}),
  };
}

/**
 * A Cilium pod selector may name the pod's namespace as the pseudo-label
 * io.kubernetes.pod.namespace: here that is the namespace selector on kubernetes.io/metadata.name.
 */
function splitPseudoLabels(raw: LabelSelector, field: string): PodAndNamespace | string {
  const s = stripSourcePrefix(raw);
  const pod: LabelSelector = {};
  const ns: LabelSelector = {};
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) {
    if (k === NAMESPACE_PSEUDO_LABEL) ns.matchLabels = { [NAMESPACE_NAME_LABEL]: v };
    else if (CILIUM_DERIVED.test(k))
      return `label ${k} is derived by Cilium (not a pod label); static-egress selects by pod labels and namespace only (${field}.matchLabels)`;
    else pod.matchLabels = { ...(pod.matchLabels ?? {}), [k]: v };
  }
  for (const e of s.matchExpressions ?? []) {
    if (e.key === NAMESPACE_PSEUDO_LABEL)
      ns.matchExpressions = [...(ns.matchExpressions ?? []), { ...e, key: NAMESPACE_NAME_LABEL }];
    else if (CILIUM_DERIVED.test(e.key))
      return `label ${e.key} is derived by Cilium (not a pod label); static-egress selects by pod labels and namespace only (${field}.matchExpressions)`;
    else pod.matchExpressions = [...(pod.matchExpressions ?? []), e];
  }
  return { pod, ns };
}
