import { StaticRouteKind } from "./digitalocean-v1/static-route.js";
import { ALL_KINDS } from "./v1alpha1/crd.js";
import type { KindDefinition } from "./v1alpha1/common.js";

/** Every kind whose CRD static-egress installs: ours, and DigitalOcean's StaticRoute (served as the operator defines it). */
export const SERVED_KINDS: readonly KindDefinition[] = [...ALL_KINDS, StaticRouteKind];
