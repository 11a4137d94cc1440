import { isContainerId, isIPv4Address, isNamespaceName, isPodName } from "./input.js";
import { StaticEgressError } from "../util/errors.js";

/**
 * The plugin <-> node agent protocol: JSON over HTTP on the agent's unix socket. One parser per
 * message, used on both ends (the server checks requests, the plugin checks responses), so a
 * field is named the same way in every error. Pure and dependency-free: the plugin runs once
 * per pod and must start fast.
 */

export const CNI_API = {
  add: "/v1/cni/add",
  del: "/v1/cni/del",
  check: "/v1/cni/check",
  /** A whole CNI call (environment and stdin) from the Go shim; the agent runs the plugin on it. */
  exec: "/v1/cni/exec",
  health: "/v1/health",
} as const;

export interface PodRequest {
  containerId: string;
  namespace: string;
  name: string;
}

/** ADD and CHECK: the pod and the IPv4 addresses the runtime gave it. */
export interface AddRequest extends PodRequest {
  ips: string[];
}
export type CheckRequest = AddRequest;

/** DEL: the addresses are known only when the runtime still had the previous result. */
export interface DelRequest extends PodRequest {
  ips?: string[];
}

export interface AddResponse {
  /** A policy selects the pod; its diversion was applied before this answer. */
  selected: boolean;
  policy?: string;
  /**
   * The agent could not vouch for the pod's addresses yet (it does not know the pod, or the
   * API shows other addresses), so it quarantined them itself: outside traffic is dropped until
   * it can.
   */
  quarantined: boolean;
  reason?: string;
}

export interface DelResponse {
  released: boolean;
}

/** CHECK reads only: it never changes what the agent has admitted. */
export interface CheckResponse {
  /** The agent's cluster view has the pod. */
  known: boolean;
  /**
   * The agent programs the pod with exactly these addresses: it knows the pod on this node, and
   * the API shows these addresses or none yet (then the agent uses the ones ADD reported).
   */
  programmed: boolean;
  quarantined: boolean;
  reason?: string;
}

/**
 * A whole CNI call as the runtime made it: the CNI_* environment and the configuration it wrote
 * on stdin. The shim (cni-shim/) sends it unread; the agent answers with what the plugin would
 * have printed and its exit code, which the shim hands back unchanged.
 */
export interface ExecRequest {
  env: Record<string, string>;
  stdin: string;
}

export interface HealthResponse {
  ok: boolean;
  node: string;
}

/** A message that does not have the expected shape; `field` names the offending part. */
export class ProtocolError extends StaticEgressError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = "ProtocolError";
  }
}

function object(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ProtocolError(field, "must be a JSON object");
  return v as Record<string, unknown>;
}

function checked(v: unknown, field: string, ok: (s: string) => boolean, what: string): string {
  if (typeof v !== "string") throw new ProtocolError(field, "must be a string");
  if (!ok(v)) throw new ProtocolError(field, `${JSON.stringify(v.slice(0, 300))} is not ${what}`);
  return v;
}

function bool(v: unknown, field: string): boolean {
  if (typeof v !== "boolean") throw new ProtocolError(field, "must be true or false");
  return v;
}

function optionalString(v: unknown, field: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v.length > 1024)
    throw new ProtocolError(field, "must be a string (at most 1024 characters)");
  return v;
}

function onlyKnownFields(o: Record<string, unknown>, known: readonly string[], field: string): void {
  for (const k of Object.keys(o))
    if (!known.includes(k)) throw new ProtocolError(field === "" ? k : `${field}.${k}`, "unknown field");
}

function ips(v: unknown, field: string): string[] {
  if (!Array.isArray(v)) throw new ProtocolError(field, "must be a list of IPv4 addresses");
  if (v.length === 0 || v.length > 16) throw new ProtocolError(field, "must hold 1 to 16 addresses");
  const out = v.map((ip, i) => checked(ip, `${field}[${i}]`, isIPv4Address, "an IPv4 address"));
  if (new Set(out).size !== out.length) throw new ProtocolError(field, "lists an address twice");
  return out;
}

function podRequest(body: unknown, extra: readonly string[]): { o: Record<string, unknown>; pod: PodRequest } {
  const o = object(body, "body");
  onlyKnownFields(o, ["containerId", "namespace", "name", ...extra], "");
  return {
    o,
    pod: {
      containerId: checked(o.containerId, "containerId", isContainerId, "a container ID"),
      namespace: checked(o.namespace, "namespace", isNamespaceName, "a namespace name"),
      name: checked(o.name, "name", isPodName, "a pod name"),
    },
  };
}

export function parseAddRequest(body: unknown): AddRequest {
  const { o, pod } = podRequest(body, ["ips"]);
  return { ...pod, ips: ips(o.ips, "ips") };
}

export function parseCheckRequest(body: unknown): CheckRequest {
  return parseAddRequest(body);
}

export function parseDelRequest(body: unknown): DelRequest {
  const { o, pod } = podRequest(body, ["ips"]);
  return o.ips === undefined ? pod : { ...pod, ips: ips(o.ips, "ips") };
}

/** Only the runtime's CNI_* variables: nothing else of the shim's environment reaches the agent. */
const CNI_VARIABLE = /^CNI_[A-Z0-9_]{1,64}$/;

export function parseExecRequest(body: unknown): ExecRequest {
  const o = object(body, "body");
  onlyKnownFields(o, ["env", "stdin"], "");
  const env = object(o.env, "env");
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (!CNI_VARIABLE.test(k)) throw new ProtocolError(`env.${k.slice(0, 80)}`, "is not a CNI_* variable");
    if (typeof v !== "string") throw new ProtocolError(`env.${k}`, "must be a string");
    out[k] = v;
  }
  if (typeof o.stdin !== "string") throw new ProtocolError("stdin", "must be a string");
  return { env: out, stdin: o.stdin };
}

export function parseAddResponse(body: unknown): AddResponse {
  const o = object(body, "response");
  const policy = optionalString(o.policy, "response.policy");
  const reason = optionalString(o.reason, "response.reason");
  return {
    selected: bool(o.selected, "response.selected"),
    quarantined: bool(o.quarantined, "response.quarantined"),
    ...(policy ? { policy } : {}),
    ...(reason ? { reason } : {}),
  };
}

export function parseDelResponse(body: unknown): DelResponse {
  const o = object(body, "response");
  return { released: bool(o.released, "response.released") };
}

export function parseCheckResponse(body: unknown): CheckResponse {
  const o = object(body, "response");
  const reason = optionalString(o.reason, "response.reason");
  return {
    known: bool(o.known, "response.known"),
    programmed: bool(o.programmed, "response.programmed"),
    quarantined: bool(o.quarantined, "response.quarantined"),
    ...(reason ? { reason } : {}),
  };
}

export function parseHealthResponse(body: unknown): HealthResponse {
  const o = object(body, "response");
  return { ok: bool(o.ok, "response.ok"), node: optionalString(o.node, "response.node") ?? "" };
}
