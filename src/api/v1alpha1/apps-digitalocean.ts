import { Ajv, type ValidateFunction } from "ajv";
import { Type, type Static } from "@sinclair/typebox";
import { LIMITS } from "./common.js";
import { describeErrors, type FieldError } from "./validate.js";

/** What becomes of a DEDICATED_IP app's reserved IPs when they are REMOVED (docs/apps.md). */
export const ON_REMOVAL = ["release", "keep"] as const;
export type OnRemoval = (typeof ON_REMOVAL)[number];

const text = (description: string) => Type.String({ minLength: 1, maxLength: LIMITS.text, description });

/**
 * DEDICATED_IP apps on DigitalOcean (`controller --apps-digitalocean <file>`, docs/apps.md): each
 * app's gateway is an EgressGateway with `spec.digitalocean` built from these, two droplets and
 * two reserved IPs the fleet plugin allocates.
 */
export const AppsDigitalOcean = Type.Object(
  {
    region: text("Region slug of the gateway droplets, e.g. ams3 (the cluster's)"),
    size: text("Droplet size slug, e.g. s-1vcpu-1gb"),
    image: Type.Optional(text("Image slug or id (default debian-12-x64)")),
    vpcUUID: Type.Optional(text("The cluster's VPC (default: the region's default VPC)")),
    nodeTag: text("Tag of the cluster's node droplets (DOKS: k8s:<cluster UUID>); the gateway firewall admits these"),
    onRemoval: Type.Optional(
      Type.Union(
        ON_REMOVAL.map((v) => Type.Literal(v)),
        {
          description:
            "Default for apps without the annotation staticegress.io/dedicated-ips-on-removal: release (delete) " +
            "or keep (leave allocated for the app's next DEDICATED_IP) its reserved IPs when they are REMOVED",
        },
      ),
    ),
  },
  { additionalProperties: false },
);
export type AppsDigitalOcean = Static<typeof AppsDigitalOcean>;

// Compiled on first use, not at every process's start.
let validate: ValidateFunction<AppsDigitalOcean> | undefined;

/** An --apps-digitalocean file's content, or the problems naming each field (`digitalocean.nodeTag`). */
export function parseAppsDigitalOcean(doc: unknown): { config?: AppsDigitalOcean; errors: FieldError[] } {
  // verbose: errors carry the refused value ("invalid value \"delete\"").
  validate ??= new Ajv({ allErrors: true, strict: false, verbose: true }).compile(AppsDigitalOcean);
  if (!validate(doc)) return { errors: describeErrors(validate.errors ?? [], "digitalocean") };
  return { config: doc as AppsDigitalOcean, errors: [] };
}
