/**
 * Every annotation, label and finalizer key static-egress reads or writes on Kubernetes objects,
 * in one place: the agents, the controller, the informer pruner (src/kube/prune.ts) and the
 * cloud plugins all speak through these, so a key cannot drift between writer and reader.
 */

/** The prefix of our own keys (the API group); the informers keep every annotation under it. */
export const KEY_PREFIX = "staticegress.io/";

/** Node: what the node agent programmed and how it sees the gateways (JSON, `NodeReport`). */
export const REPORT_ANNOTATION = "staticegress.io/report";

/** Our finalizer on EgressPolicies and EgressGateways: the controller cleans up before they go. */
export const FINALIZER = "staticegress.io/cleanup";

/**
 * Node: the node's anchor IPv4. On DigitalOcean, traffic to a reserved IP arrives at the holder
 * droplet addressed to this address; the controller lists the holder's anchor in the
 * `externalIPs` of Services that ask for the reserved IP (src/controller/cloud/service-external-ips.ts).
 */
export const ANCHOR_ANNOTATION = "staticegress.io/anchor-ipv4";

/** Node: the egress IPs a `nodes`-source gateway instance owns. */
export const NODE_EGRESS_IPS_ANNOTATION = "staticegress.io/egress-ips";

/** Pod label/annotation and Service annotation: the reserved IP it asks for. */
export const RESERVED_IP_KEY = "staticegress.io/reserved-ip";
/** The same request in the key of haimgel's floating-IP controller, which we honour. */
export const HAIMGEL_FLOATING_IP_KEY = "k8s.haim.dev/floating-ip";
/**
 * Pod annotation: ports to open to anyone on the droplet holding the IP, in a firewall of our own
 * beside the one the platform manages, e.g. `tcp/443, udp/51820, tcp/8000-8100, icmp`.
 */
export const RESERVED_IP_PORTS_KEY = "staticegress.io/reserved-ip-ports";
/** Namespace annotation: the reserved IPs pods of the namespace may ask for (comma- or space-separated). */
export const RESERVED_IP_GRANT_KEY = "staticegress.io/reserved-ips";

/** Service annotation: the anchors we put into its externalIPs last time, comma-separated. */
export const MANAGED_EXTERNAL_IPS_KEY = "staticegress.io/managed-external-ips";

/** Apps (docs/apps.md): the App an object was made for, and its component. */
export const APP_LABEL = "staticegress.io/app";
export const COMPONENT_LABEL = "staticegress.io/component";
/** Apps: digest of what was applied, so the controller compares before it writes. */
export const APPLIED_ANNOTATION = "staticegress.io/applied";
/**
 * Apps: `"true"` publishes the App's dedicated egress IPs in the controller's egress-IP feed
 * (GET /egress-ips/apps/<name>, docs/explain.md), as `spec.publishEgressIPs` does for a policy.
 */
export const PUBLISH_EGRESS_IPS_ANNOTATION = "staticegress.io/publish-egress-ips";
/** Apps, on pod templates: the App generation they come from (every spec change rolls every component, as on DigitalOcean). */
export const GENERATION_ANNOTATION = "staticegress.io/app-generation";
/**
 * App annotation: what becomes of a DEDICATED_IP app's reserved IPs when they are REMOVED (the app
 * switches back to AUTOASSIGN): `release` (deleted from the account) or `keep` (left allocated for
 * this app's next DEDICATED_IP). DigitalOcean's app spec has no such field; absent: the
 * controller's default (`--apps-digitalocean` onRemoval). Deleting the app always releases them.
 */
export const DEDICATED_IPS_ON_REMOVAL_ANNOTATION = "staticegress.io/dedicated-ips-on-removal";

/** Import (docs/import.md): label on every object `import` makes, naming the peer it came from. */
export const IMPORTED_FROM_LABEL = "staticegress.io/imported-from";
/** Import: annotation naming the source objects, e.g. `CiliumEgressGatewayPolicy/egress-sample`. */
export const IMPORTED_FROM_ANNOTATION = "staticegress.io/imported-from";
/** Import: node label a generated `nodes` gateway selects when the peer's gateway node is not chosen by a label. */
export const GATEWAY_NODE_LABEL = "staticegress.io/gateway";
