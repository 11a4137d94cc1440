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
  sourceLabels,
  unknownFields,
} from "./common.js";
import { describeSelector, NAMESPACE_NAME_LABEL } from "./selectors.js";
import type { Converter, Finding, Made } from "./types.js";

const GROUP = "egressgateway.spidernet.io";
/** `EgressPolicy.egressgateway.spidernet.io/ns/name` (kubectl's kind.group): not to be read as one of ours. */
const ref = (o: KubeObject, namespace?: string) => refer(o, namespace).replace(/^(\w+)\//, `$1.${GROUP}/`);

/**
 * spidernet-io/egressgateway (egressgateway.spidernet.io/v1beta1): its EgressPolicy (namespaced)
 * becomes our EgressPolicy in the same namespace, its EgressGateway (cluster, nodes chosen by
 * label, an IP pool) our EgressGateway with source `nodes` named `spidernet-<name>`, granting each
 * namespace the IPs its policies use. Mapping table: docs/import.md.
 */
export const spidernetConverter: Converter = {
  source: "spidernet",
  reads: [
    { group: GROUP, kind: "EgressPolicy" },
    { group: GROUP, kind: "EgressGateway" },
  ],
  convert(objects, ctx) {
    const made: Made[] = [];
    const findings: Finding[] = [];
    const gateways = objects.filter((o) => o.kind === "EgressGateway");
    const byName = new Map(gateways.map((g) => [g.metadata?.name ?? "", g]));
    const defaults = gateways.filter(
      (g) => (g.spec as { clusterDefault?: unknown } | undefined)?.clusterDefault === true,
    );
    /** Per spidernet gateway used: namespace -> egress IPs, and the sources. */
    const used = new Map<string, { grants: Map<string, Set<string>>; from: string[] }>();

    for (const o of objects.filter((x) => x.kind === "EgressPolicy")) {
      const namespace = o.metadata?.namespace ?? ctx.defaultNamespace;
      const source = ref(o, namespace);
      const local: Finding[] = [...annotationFindings(o, source)];
      const refuse = (field: string, reason: string) => local.push({ verdict: "refused", source, field, reason });
      const ignore = (field: string, reason: string) => local.push({ verdict: "ignored", source, field, reason });
      const spec = isObject(o.spec) ? o.spec : {};
      local.push(
        ...unknownFields(
          spec,
          "spec",
          ["appliedTo", "destSubnet", "egressGatewayName", "egressIP", "priority"],
          source,
        ),
      );

      const appliedTo = isObject(spec.appliedTo) ? spec.appliedTo : {};
      local.push(...unknownFields(appliedTo, "spec.appliedTo", ["podSelector", "podSubnet"], source));
      if (Array.isArray(appliedTo.podSubnet) && appliedTo.podSubnet.length > 0)
        refuse(
          "spec.appliedTo.podSubnet",
          "static-egress selects pods by labels, not by address: use appliedTo.podSelector",
        );
      const podSelector =
        appliedTo.podSelector === undefined ? "missing: the pods to apply to" : readSelector(appliedTo.podSelector);
      if (typeof podSelector === "string") refuse("spec.appliedTo.podSelector", podSelector);

      const destinationCIDRs: string[] = [];
      const dest = spec.destSubnet === undefined ? [] : spec.destSubnet;
      if (!Array.isArray(dest)) refuse("spec.destSubnet", "must be a list of CIDRs");
      else {
        dest.forEach((c, i) => {
          const cidr = isIPv4(c) ? `${c}/32` : c;
          if (isIPv4Cidr(cidr)) destinationCIDRs.push(cidr);
          else if (isIPv6Like(c))
            ignore(
              `spec.destSubnet[${i}]`,
              `IPv6 ${JSON.stringify(c)}: static-egress handles IPv4 only (IPv6 traffic is never diverted)`,
            );
          else refuse(`spec.destSubnet[${i}]`, `invalid value ${JSON.stringify(c)}: must be a CIDR`);
        });
        if (dest.length > 0 && destinationCIDRs.length === 0)
          refuse("spec.destSubnet", "no IPv4 destination: static-egress diverts IPv4 traffic only");
      }

      // The gateway: named, or the cluster default.
      let gwName =
        typeof spec.egressGatewayName === "string" && spec.egressGatewayName !== ""
          ? spec.egressGatewayName
          : undefined;
      if (!gwName && defaults.length === 1) gwName = defaults[0]!.metadata?.name;
      const gw = gwName ? byName.get(gwName) : undefined;
      if (!ctx.gateway && !gw) {
        refuse(
          "spec.egressGatewayName",
          gwName
            ? `EgressGateway ${gwName} (${GROUP}) is not in the input: add it (kubectl get ` +
                `egressgateways.${GROUP} ${gwName} -o yaml), or import with --gateway <name>`
            : "empty, and the input has no single EgressGateway with clusterDefault: true",
        );
      }

      const egressIP = isObject(spec.egressIP) ? spec.egressIP : {};
      local.push(...unknownFields(egressIP, "spec.egressIP", ["ipv4", "ipv6", "useNodeIP", "allocatorPolicy"], source));
      if (typeof egressIP.ipv6 === "string" && egressIP.ipv6 !== "")
        ignore("spec.egressIP.ipv6", "static-egress handles IPv4 only");
      let ip: string | undefined;
      if (egressIP.useNodeIP === true) {
        refuse(
          "spec.egressIP.useNodeIP",
          "the traffic would leave with the gateway node's own IP; static-egress SNATs to a policy's own egress IP: set egressIP.ipv4",
        );
      } else if (typeof egressIP.ipv4 === "string" && egressIP.ipv4 !== "") {
        if (isIPv4(egressIP.ipv4)) ip = egressIP.ipv4;
        else refuse("spec.egressIP.ipv4", `invalid value ${JSON.stringify(egressIP.ipv4)}: must be an IPv4 address`);
      } else {
        // spidernet picks from the pool at run time; what it picked is in the status.
        const allocated = (o.status as { eip?: { ipv4?: unknown } } | undefined)?.eip?.ipv4;
        const poolDefault = (gw?.spec as { ippools?: { ipv4DefaultEIP?: unknown } } | undefined)?.ippools
          ?.ipv4DefaultEIP;
        const policy = typeof egressIP.allocatorPolicy === "string" ? egressIP.allocatorPolicy : "default";
        if (isIPv4(allocated)) {
          ip = allocated;
          ignore(
            "spec.egressIP.allocatorPolicy",
            `static-egress does not allocate from a pool: the address spidernet allocated (status.eip.ipv4 ${allocated}) is the policy's egress IP`,
          );
        } else if (policy === "default" && isIPv4(poolDefault)) {
          ip = poolDefault;
          ignore(
            "spec.egressIP.allocatorPolicy",
            `static-egress does not allocate from a pool: the gateway's ippools.ipv4DefaultEIP ${poolDefault} is the policy's egress IP`,
          );
        } else {
          refuse(
            "spec.egressIP.ipv4",
            `empty: spidernet allocates an address from the gateway's pool at run time ` +
              `(allocatorPolicy ${policy}); static-egress needs the address: set egressIP.ipv4`,
          );
        }
      }
      if (spec.priority !== undefined)
        ignore(
          "spec.priority",
          "spidernet's priority is not our precedence (docs/policies.md#precedence); the policy gets the default priority",
        );

      findings.push(...local);
      if (local.some((f) => f.verdict === "refused") || !ip || typeof podSelector === "string") continue;
      const gatewayName = ctx.gateway ?? dnsName("spidernet", gwName!);
      made.push({
        object: ours(
          "EgressPolicy",
          importedMetadata("spidernet", [source], dnsName(o.metadata?.name ?? "spidernet"), namespace, sourceLabels(o)),
          {
            podSelector,
            ...(destinationCIDRs.length > 0 ? { destinationCIDRs } : {}),
            gatewayName,
            egressIPs: [ip],
          },
        ),
        from: [source],
      });
      const u = used.get(ctx.gateway ?? gwName!) ?? { grants: new Map<string, Set<string>>(), from: [] };
      u.grants.set(namespace, (u.grants.get(namespace) ?? new Set()).add(ip));
      u.from.push(source);
      used.set(ctx.gateway ?? gwName!, u);
    }

    for (const g of gateways) {
      const source = ref(g);
      if (ctx.gateway) {
        findings.push({
          verdict: "ignored",
          source,
          field: "spec",
          reason: `the policies use the existing EgressGateway ${ctx.gateway} (--gateway)`,
        });
        continue;
      }
      const u = used.get(g.metadata?.name ?? "");
      if (!u) {
        findings.push({ verdict: "ignored", source, field: "spec", reason: "no imported EgressPolicy uses it" });
        continue;
      }
      const made1 = gatewayFrom(g, source, u, findings);
      if (made1) made.push(made1);
    }
    if (ctx.gateway) {
      for (const [ns, ips] of used.get(ctx.gateway)?.grants ?? []) {
        findings.push({
          verdict: "todo",
          source: used
            .get(ctx.gateway)!
            .from.filter((f) => f.split("/")[1] === ns)
            .join(","),
          field: "spec.egressIP.ipv4",
          reason:
            `EgressGateway ${ctx.gateway} must carry ${[...ips].sort().join(", ")} on its instances and ` +
            `grant them to namespace ${ns} (spec.grants, docs/policies.md#tenancy-grants)`,
        });
      }
    }
    return { made, findings };
  },
};

function gatewayFrom(
  g: KubeObject,
  source: string,
  u: { grants: Map<string, Set<string>>; from: string[] },
  findings: Finding[],
): Made | undefined {
  const spec = isObject(g.spec) ? g.spec : {};
  findings.push(
    ...annotationFindings(g, source),
    ...unknownFields(spec, "spec", ["ippools", "nodeSelector", "clusterDefault"], source),
  );
  const nodeSelector = isObject(spec.nodeSelector) ? spec.nodeSelector : {};
  findings.push(...unknownFields(nodeSelector, "spec.nodeSelector", ["selector", "policy"], source));
  const selector: LabelSelector | string =
    nodeSelector.selector === undefined ? "missing: the gateway nodes" : readSelector(nodeSelector.selector);
  if (typeof selector === "string") {
    findings.push({ verdict: "refused", source, field: "spec.nodeSelector.selector", reason: selector });
    return undefined;
  }
  if (nodeSelector.policy !== undefined)
    findings.push({
      verdict: "ignored",
      source,
      field: "spec.nodeSelector.policy",
      reason:
        "each pod goes to an instance chosen by rendezvous hashing, and moves only when it fails (docs/design.md)",
    });
  const pools = isObject(spec.ippools) ? spec.ippools : {};
  for (const k of ["ipv6", "ipv6DefaultEIP"]) {
    if (
      pools[k] !== undefined &&
      !(Array.isArray(pools[k]) && (pools[k] as unknown[]).every((v) => v === "")) &&
      pools[k] !== ""
    ) {
      findings.push({
        verdict: "ignored",
        source,
        field: `spec.ippools.${k}`,
        reason: "static-egress handles IPv4 only",
      });
    }
  }
  if (spec.clusterDefault === true)
    findings.push({
      verdict: "ignored",
      source,
      field: "spec.clusterDefault",
      reason: "there is no default gateway here: each imported policy names its gateway",
    });
  const name = dnsName("spidernet", g.metadata?.name ?? "gateway");
  const namespaces = [...u.grants.keys()].sort();
  const ips = [...new Set(namespaces.flatMap((ns) => [...u.grants.get(ns)!]))].sort();
  findings.push({
    verdict: "todo",
    source,
    field: "spec.ippools.ipv4",
    reason:
      `spidernet floats its pool's IPs over the gateway nodes; static-egress reads each node's ` +
      `egress IPs from an annotation. On the nodes EgressGateway ${name} selects ` +
      `(${describeSelector(selector)}), put the policies' IPs (each on one node): kubectl ` +
      `annotate node <node> ${NODE_EGRESS_IPS_ANNOTATION}=<some of ${ips.join(",")}>`,
  });
  return {
    object: ours("EgressGateway", importedMetadata("spidernet", [source], name, undefined, sourceLabels(g)), {
      nodes: { nodeSelector: selector },
      grants: namespaces.map((ns) => ({
        namespaceSelector: { matchLabels: { [NAMESPACE_NAME_LABEL]: ns } },
        egressIPs: [...u.grants.get(ns)!].sort(),
      })),
    }),
    from: [source, ...u.from],
  };
}
