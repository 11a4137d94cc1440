import { Type, type Static } from "@sinclair/typebox";
import { IPv4Address, LIMITS, type CelRule } from "./common.js";

/*
 * A policy's continuous verification (spec.verification, docs/policies.md "Verification"): nodes
 * send an HTTP request through the policy's gateway to an echo service that answers with the
 * source it saw. The patterns carry no backslash: they go into CEL rules too.
 */

const OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const IPV4_LITERAL = `${OCTET}([.]${OCTET}){3}`;
const LABEL = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?";
const HOST = `${LABEL}([.]${LABEL})*`;
const PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
/** Printable ASCII without spaces: what a request line can carry as it is. */
const PATH = "(/[!-~]*)?";
const URL_PATTERN = `^http://(${HOST})(:${PORT})?${PATH}$`;
/** The url's host is an IPv4 literal (then no `address`); any scheme, so that a wrong one is refused on `url` alone. */
const LITERAL_HOST_PATTERN = `^[a-z]+://${IPV4_LITERAL}([:/].*)?$`;

export const Verification = Type.Object(
  {
    url: Type.String({
      minLength: 8,
      maxLength: LIMITS.url,
      pattern: URL_PATTERN,
      // Also the refusal's wording ("must be <description>"): the answer's format is in docs/policies.md.
      description: "An echo service's URL, http://<IPv4 or name>[:port][/path], answering with the caller's address",
    }),
    address: Type.Optional({
      ...IPv4Address,
      description:
        "Where the url's host is reached when it is a name (required then, absent for an IPv4 host): the probe " +
        "takes one fixed destination that every node and gateway agrees on, and none of them asks DNS",
    }),
    intervalSeconds: Type.Optional(
      Type.Integer({ minimum: 10, maximum: 3600, default: 60, description: "Seconds between two probes of a node" }),
    ),
    timeoutSeconds: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 10, default: 5, description: "A probe without an answer by then failed" }),
    ),
  },
  {
    additionalProperties: false,
    "x-kubernetes-validations": [
      {
        rule: `self.url.matches('${LITERAL_HOST_PATTERN}') || has(self.address)`,
        fieldPath: ".address",
        reason: "FieldValueRequired",
        message: "required when the url's host is a name (nodes and gateways never ask DNS for it)",
      },
      {
        rule: `!has(self.address) || !self.url.matches('${LITERAL_HOST_PATTERN}')`,
        fieldPath: ".address",
        reason: "FieldValueForbidden",
        message: "must be absent when the url's host is an IPv4 address",
      },
    ] satisfies CelRule[],
  },
);
export type Verification = Static<typeof Verification>;

/** A verification URL taken apart: what the probe connects to and what it asks. */
export interface ProbeTarget {
  /** The url's host (the HTTP Host header). */
  host: string;
  /** The IPv4 address the probe connects to: the host itself, or `address` for a name. */
  address: string;
  /** From the url, or 80. */
  port: number;
  /** From the url, or "/". */
  path: string;
}

/**
 * The target of a verification, or a message saying what is wrong with the url. The schema
 * refuses most bad urls before this is reached; this is the one parser nodes and the planner use.
 */
export function probeTarget(v: Pick<Verification, "url" | "address">): ProbeTarget | string {
  const m = new RegExp(URL_PATTERN).exec(v.url);
  if (!m) return "must be http://<IPv4 or name>[:port][/path]";
  const host = m[1]!;
  const literal = new RegExp(`^${IPV4_LITERAL}$`).test(host);
  if (!literal && v.address === undefined) return `${host} is a name: spec.verification.address must give its IPv4`;
  const portText = /^http:\/\/[^/:]+:(\d+)/.exec(v.url)?.[1];
  const path = v.url.slice(`http://${host}${portText !== undefined ? `:${portText}` : ""}`.length) || "/";
  return { host, address: literal ? host : v.address!, port: portText !== undefined ? Number(portText) : 80, path };
}
