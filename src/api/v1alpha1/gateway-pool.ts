import { Ajv, type ValidateFunction } from "ajv";
import { Type, type Static } from "@sinclair/typebox";
import { IPv4Address, Name } from "./common.js";
import { describeErrors, type FieldError } from "./validate.js";

/** The pool of gateway hosts the controller gives DEDICATED_IP apps (`controller --apps-gateway-pool`, docs/apps.md). */
export const GatewayPoolHost = Type.Object(
  {
    name: { ...Name, description: "The host's name (the instance name in the app's gateway)" },
    address: { ...IPv4Address, description: "Its address on the network the nodes share" },
    egressIP: { ...IPv4Address, description: "The public IP it SNATs an app's traffic to" },
  },
  { additionalProperties: false },
);
export const GatewayPool = Type.Object(
  { hosts: Type.Array(GatewayPoolHost, { maxItems: 1024 }) },
  { additionalProperties: false },
);
export type GatewayPool = Static<typeof GatewayPool>;
export type GatewayPoolHost = Static<typeof GatewayPoolHost>;

// Compiled on first use: every process that imports the planner would otherwise compile it at start.
let validatePool: ValidateFunction<GatewayPool> | undefined;

/** A pool file's content, or the problems naming each field (`hosts[1].egressIP`); names and IPs must not repeat. */
export function parseGatewayPool(doc: unknown): { pool?: GatewayPool; errors: FieldError[] } {
  validatePool ??= new Ajv({ allErrors: true, strict: false }).compile(GatewayPool);
  if (!validatePool(doc)) return { errors: describeErrors(validatePool.errors ?? [], "pool") };
  const pool = doc as GatewayPool;
  const errors: FieldError[] = [];
  for (const key of ["name", "address", "egressIP"] as const) {
    const seen = new Set<string>();
    pool.hosts.forEach((h, i) => {
      if (seen.has(h[key])) errors.push({ field: `pool.hosts[${i}].${key}`, message: `repeats ${h[key]}` });
      seen.add(h[key]);
    });
  }
  return errors.length > 0 ? { errors } : { pool, errors };
}
