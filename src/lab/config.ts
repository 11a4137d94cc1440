import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { Type, type Static } from "@sinclair/typebox";
import { Ajv } from "ajv";
import { parse } from "yaml";
import type { AppSpec } from "../api/v1alpha1/app.js";
import { validateAppSpec } from "../api/v1alpha1/app-validate.js";
import { IPv4Address, Name } from "../api/v1alpha1/common.js";
import { GatewayGrant } from "../api/v1alpha1/egress-gateway.js";
import { describeErrors } from "../api/v1alpha1/validate.js";
import { StaticEgressError } from "../util/errors.js";

/** `examples/lab.yaml` explains every field. */
export const LabConfigSchema = Type.Object(
  {
    nodes: Type.Array(
      Type.Object(
        {
          name: Name,
          labels: Type.Optional(Type.Record(Type.String(), Type.String())),
          /** The node's cluster CNI: `ptp` (default; one routed veth per pod) or `bridge` (one bridge `cni0`, a port per pod). */
          cni: Type.Optional(Type.Union([Type.Literal("ptp"), Type.Literal("bridge")])),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 50 },
    ),
    gateways: Type.Array(
      Type.Object(
        {
          name: Name,
          instances: Type.Optional(
            Type.Array(
              Type.Object(
                { name: Name, egressIPs: Type.Array(IPv4Address, { minItems: 1 }) },
                { additionalProperties: false },
              ),
              { minItems: 1, maxItems: 20 },
            ),
          ),
          /**
           * Instead of instances: the controller creates the gateway's droplets in the lab's
           * DigitalOcean stand-in, and the lab runs each droplet as a gateway namespace.
           */
          digitalocean: Type.Optional(
            Type.Object(
              {
                count: Type.Optional(Type.Integer({ minimum: 1, maximum: 8, default: 2 })),
                reservedIPs: Type.Array(IPv4Address, {
                  minItems: 1,
                  maxItems: 8,
                  description: "Reserved IPs the lab puts in the account; slot i gets reservedIPs[i]",
                }),
              },
              { additionalProperties: false },
            ),
          ),
          /** The gateway's spec.grants, as written: which namespaces' EgressPolicies may use it. */
          grants: Type.Optional(Type.Array(GatewayGrant)),
          health: Type.Optional(
            Type.Object(
              {
                intervalMs: Type.Optional(Type.Integer({ minimum: 10 })),
                multiplier: Type.Optional(Type.Integer({ minimum: 1 })),
                holdDownMs: Type.Optional(Type.Integer({ minimum: 0 })),
              },
              { additionalProperties: false },
            ),
          ),
        },
        { additionalProperties: false },
      ),
      { default: [] },
    ),
    /**
     * Plain NAT gateways, as in DigitalOcean's egress blueprint (a droplet that forwards and
     * masquerades to its own public IP, the VPC letting it forward others' packets), each
     * answering BFD probes (`agent health-responder`): the gateways of StaticRoutes
     * (docs/static-routes.md). Not EgressGateway instances.
     */
    natGateways: Type.Optional(
      Type.Array(Type.Object({ name: Name }, { additionalProperties: false }), { maxItems: 8 }),
    ),
    namespaces: Type.Optional(
      Type.Array(
        Type.Object(
          { name: Name, labels: Type.Optional(Type.Record(Type.String(), Type.String())) },
          { additionalProperties: false },
        ),
      ),
    ),
    pods: Type.Array(
      Type.Object(
        { name: Name, namespace: Name, node: Name, labels: Type.Optional(Type.Record(Type.String(), Type.String())) },
        { additionalProperties: false },
      ),
      { maxItems: 500 },
    ),
    /**
     * The VPC's behaviour. `antiSpoofing` (default true): the VPC drops a host's packets whose
     * IPv4 source is not that host's own address, as cloud VPCs do.
     */
    vpc: Type.Optional(
      Type.Object({ antiSpoofing: Type.Optional(Type.Boolean({ default: true })) }, { additionalProperties: false }),
    ),
    internet: Type.Optional(
      Type.Object(
        { allowlist: Type.Optional(Type.Array(IPv4Address, { description: "Sources the firewalled service admits" })) },
        { additionalProperties: false },
      ),
    ),
    /**
     * Apps (docs/apps.md). `digitalocean`: the controller runs with --apps-digitalocean, so a
     * DEDICATED_IP app gets two droplets (gateway namespaces) and two reserved IPs the controller
     * allocates from `addresses` (free in the account until then). `gatewayPool`: instead, lab
     * hosts the controller is given with --apps-gateway-pool; the lab runs each one's gateway agent
     * for the app gateway the controller puts it in. `specs`: app spec files the lab creates.
     */
    apps: Type.Optional(
      Type.Object(
        {
          gatewayPool: Type.Optional(
            Type.Array(
              Type.Object(
                {
                  name: Name,
                  egressIP: { ...IPv4Address, description: "The public IP the host SNATs an app's traffic to" },
                },
                { additionalProperties: false },
              ),
              { minItems: 2, maxItems: 16 },
            ),
          ),
          /** App spec files (as `apps create --spec` takes them), relative to the lab file; created at `lab up`. */
          specs: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { maxItems: 16 })),
          digitalocean: Type.Optional(
            Type.Object(
              {
                addresses: Type.Array(IPv4Address, {
                  minItems: 2,
                  maxItems: 16,
                  description: "Addresses the stand-in hands out as new reserved IPs (apps' gateways allocate them)",
                }),
                onRemoval: Type.Optional(Type.Union([Type.Literal("release"), Type.Literal("keep")])),
              },
              { additionalProperties: false },
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    /**
     * Kubernetes mode: a real NetworkPolicy enforcer on every node (kube-router's network-policy
     * controller, src/lab/network-policy.ts), and the pod network between nodes it enforces on.
     */
    networkPolicy: Type.Optional(
      Type.Object({ enforcer: Type.Literal("kube-router") }, { additionalProperties: false }),
    ),
    /** EgressPolicy / ClusterEgressPolicy documents, exactly as they would be given to kubectl. */
    policies: Type.Optional(Type.Array(Type.Unknown())),
  },
  { additionalProperties: false },
);
export type LabConfig = Static<typeof LabConfigSchema>;

class LabConfigError extends StaticEgressError {}

export function parseLabConfig(text: string, source: string): LabConfig {
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (e) {
    throw new LabConfigError(`${source}: not valid YAML: ${(e as Error).message}`);
  }
  const validate = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true }).compile(
    LabConfigSchema,
  );
  if (!validate(raw)) {
    const errors = describeErrors(validate.errors ?? [], "lab");
    throw new LabConfigError(`${source}: ${errors.map((e) => `${e.field}: ${e.message}`).join("; ")}`);
  }
  const cfg = raw as LabConfig;
  const nodeNames = new Set(cfg.nodes.map((n) => n.name));
  if (nodeNames.size !== cfg.nodes.length) throw new LabConfigError(`${source}: lab.nodes: node names must be unique`);
  cfg.pods.forEach((p, i) => {
    if (!nodeNames.has(p.node)) throw new LabConfigError(`${source}: lab.pods[${i}].node: no node named ${p.node}`);
  });
  const allHosts = [
    ...cfg.nodes.map((n) => n.name),
    ...cfg.gateways.flatMap((g) => (g.instances ?? []).map((i) => i.name)),
    ...(cfg.natGateways ?? []).map((n) => n.name),
    ...(cfg.apps?.gatewayPool ?? []).map((h) => h.name),
  ];
  if (new Set(allHosts).size !== allHosts.length)
    throw new LabConfigError(
      `${source}: lab: host names (nodes, gateway instances, natGateways, apps.gatewayPool) must be unique`,
    );
  if (cfg.apps?.gatewayPool && cfg.apps.digitalocean)
    throw new LabConfigError(
      `${source}: lab.apps: give gatewayPool or digitalocean (where DEDICATED_IP apps get their gateways), not both`,
    );
  // Pool hosts sit at .131+ of the VPC and public segments: static instances (.101+) must stay below.
  if (cfg.apps?.gatewayPool && cfg.gateways.flatMap((g) => g.instances ?? []).length > POOL_HOST_OFFSET - 101)
    throw new LabConfigError(`${source}: lab.gateways: at most ${POOL_HOST_OFFSET - 101} instances with a gatewayPool`);
  if (cfg.apps?.specs) cfg.apps.specs = readAppSpecs(cfg.apps.specs, source);
  const podKeys = new Set(cfg.pods.map((p) => `${p.namespace}/${p.name}`));
  if (podKeys.size !== cfg.pods.length)
    throw new LabConfigError(`${source}: lab.pods: pod names must be unique per namespace`);
  cfg.gateways.forEach((g, i) => {
    if ((g.instances === undefined) === (g.digitalocean === undefined)) {
      throw new LabConfigError(`${source}: lab.gateways[${i}]: give either instances or digitalocean`);
    }
    const d = g.digitalocean;
    if (d && d.reservedIPs.length < (d.count ?? 2)) {
      throw new LabConfigError(
        `${source}: lab.gateways[${i}].digitalocean.reservedIPs: one per droplet (count ${d.count ?? 2})`,
      );
    }
  });
  const instances = cfg.gateways.flatMap((g) => g.instances ?? []);
  const hostNames = new Set(instances.map((i) => i.name));
  if (hostNames.size !== instances.length) {
    throw new LabConfigError(`${source}: lab.gateways: instance names must be unique across gateways (each is a host)`);
  }
  const egressIPs = [
    ...instances.flatMap((i) => i.egressIPs),
    ...cfg.gateways.flatMap((g) => g.digitalocean?.reservedIPs ?? []),
    ...(cfg.apps?.digitalocean?.addresses ?? []),
    ...(cfg.apps?.gatewayPool ?? []).map((h) => h.egressIP),
  ];
  for (const ip of egressIPs) {
    if (!isDocumentationAddress(ip))
      throw new LabConfigError(
        `${source}: lab.gateways: egress IP ${ip} must be in 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24`,
      );
  }
  if (new Set(egressIPs).size !== egressIPs.length)
    throw new LabConfigError(`${source}: lab.gateways: an egress IP is listed twice`);
  return cfg;
}

/** Pool hosts get 10.0.0.<131+i> and 203.0.113.<131+i> (./topology.ts). */
export const POOL_HOST_OFFSET = 131;

/**
 * `apps.specs`: each path resolved against the lab file's folder, read and checked with the
 * controller's validator now, so a bad spec stops `lab up` before anything is built.
 */
function readAppSpecs(paths: readonly string[], source: string): string[] {
  const names = new Set<string>();
  return paths.map((p, i) => {
    const file = resolve(dirname(source), p);
    const field = `${source}: lab.apps.specs[${i}]`;
    let spec: AppSpec;
    try {
      spec = readAppSpecFile(file);
    } catch (e) {
      throw new LabConfigError(`${field}: ${(e as Error).message}`, { cause: e });
    }
    const errors = validateAppSpec(spec);
    if (errors.length > 0)
      throw new LabConfigError(`${field}: ${file}: ${errors.map((e) => `${e.field}: ${e.message}`).join("; ")}`);
    if (names.has(spec.name)) throw new LabConfigError(`${field}: a second app named ${spec.name}`);
    names.add(spec.name);
    return file;
  });
}

/** An app spec file: the spec itself (as doctl takes it) or a request body with `spec:`. */
export function readAppSpecFile(file: string): AppSpec {
  const doc = parse(readFileSync(file, "utf8")) as unknown;
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error(`${file}: not an app spec`);
  const d = doc as Record<string, unknown>;
  return (d.spec !== undefined && d.name === undefined ? d.spec : d) as AppSpec;
}

function isDocumentationAddress(ip: string): boolean {
  return /^(192\.0\.2|198\.51\.100|203\.0\.113)\.\d+$/.test(ip);
}
