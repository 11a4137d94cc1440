import type { Client, MethodResponse } from "openapi-fetch";
import type { components, paths } from "./generated/schema.js";

/*
 * Names for the API shapes. They are derived from the generated OpenAPI types as openapi-fetch
 * returns them (its Readable<> view), so nothing here restates an API shape by hand.
 */

type Api = Client<paths>;
type Answer<
  P extends
    | "/v2/actions/{action_id}"
    | "/v2/droplets/{droplet_id}"
    | "/v2/reserved_ips/{reserved_ip}"
    | "/v2/floating_ips/{floating_ip}"
    | "/v2/firewalls/{firewall_id}"
    | "/v2/tags/{tag_id}"
    | "/v2/vpcs/{vpc_id}",
> = MethodResponse<Api, "get", P>;

export type Action = NonNullable<Answer<"/v2/actions/{action_id}">["action"]>;
export type Droplet = NonNullable<Answer<"/v2/droplets/{droplet_id}">["droplet"]>;
export type ReservedIP = NonNullable<Answer<"/v2/reserved_ips/{reserved_ip}">["reserved_ip"]>;
export type Firewall = NonNullable<Answer<"/v2/firewalls/{firewall_id}">["firewall"]>;
export type Tag = NonNullable<Answer<"/v2/tags/{tag_id}">["tag"]>;
export type Vpc = NonNullable<Answer<"/v2/vpcs/{vpc_id}">["vpc"]>;

type JsonBody<Op> = Op extends { requestBody?: { content: { "application/json": infer B } } } ? B : never;

export type DropletSingleCreate = components["schemas"]["droplet_single_create"];
export type DropletMultiCreate = components["schemas"]["droplet_multi_create"];

/**
 * openapi-typescript marks properties that have a schema `default` as required; in a request
 * they are optional (the server applies the default). These are the defaulted ones of
 * droplet_create, `private_networking` among them, which is deprecated and best left out.
 */
type DropletCreateDefaulted =
  "ssh_keys" | "backups" | "ipv6" | "monitoring" | "tags" | "private_networking" | "volumes" | "public_networking";
type WithDefaultsOptional<T> = Omit<T, DropletCreateDefaulted> & Partial<Pick<T, DropletCreateDefaulted & keyof T>>;
export type DropletCreateRequest = WithDefaultsOptional<DropletSingleCreate>;
export type DropletMultiCreateRequest = WithDefaultsOptional<DropletMultiCreate>;
export type DropletAction = JsonBody<paths["/v2/droplets/{droplet_id}/actions"]["post"]>;
export type ReservedIPCreate = components["schemas"]["reserved_ip_create"];
/** Body of firewalls_create / firewalls_update. */
export type FirewallWrite = JsonBody<paths["/v2/firewalls"]["post"]>;
export type TagResource = components["schemas"]["tags_resource"];
export type InboundRule = NonNullable<components["schemas"]["firewall_rules"]["inbound_rules"]>[number];
export type OutboundRule = NonNullable<components["schemas"]["firewall_rules"]["outbound_rules"]>[number];

/**
 * Body of reservedIPsActions_post / floatingIPsAction_post. The generated unassign type is
 * unsatisfiable (see ipActionBody in client.ts), so that branch is the base type narrowed to
 * "unassign".
 */
export type IPActionBody =
  | components["schemas"]["reserved_ip_action_assign"]
  | (components["schemas"]["reserved_ip_action_type"] & { type: "unassign" });
