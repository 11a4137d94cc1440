/**
 * API errors as the real server reports them: a `Status` object (kind Status, apiVersion v1)
 * with reason, code, message and details. Messages follow k8s.io/apimachinery's errors package
 * so that clients which parse them (kubectl, client libraries) behave as against a real cluster.
 */

export interface StatusCause {
  reason?: string;
  message?: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

export interface Status {
  kind: "Status";
  apiVersion: "v1";
  metadata: Record<string, unknown>;
  status: "Failure" | "Success";
  message?: string;
  reason?: string;
  details?: StatusDetails;
  code: number;
}

/** The reason the real server uses for each status code when it has nothing more specific. */
export function reasonForCode(code: number): string {
  switch (code) {
    case 400:
      return "BadRequest";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "NotFound";
    case 405:
      return "MethodNotAllowed";
    case 406:
      return "NotAcceptable";
    case 409:
      return "Conflict";
    case 410:
      return "Expired";
    case 413:
      return "RequestEntityTooLarge";
    case 415:
      return "UnsupportedMediaType";
    case 422:
      return "Invalid";
    case 429:
      return "TooManyRequests";
    case 500:
      return "InternalError";
    case 503:
      return "ServiceUnavailable";
    case 504:
      return "Timeout";
    default:
      return code >= 500 ? "InternalError" : "Unknown";
  }
}

export class StatusError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: StatusDetails,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "StatusError";
  }

  toStatus(): Status {
    const status: Status = {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: this.message,
      reason: this.reason,
      code: this.code,
    };
    if (this.details) status.details = this.details;
    return status;
  }
}

/** `pods` or `egresspolicies.staticegress.io`: how the real server names a resource in messages. */
export interface ResourceName {
  group: string;
  plural: string;
}

export function qualifiedResource(r: ResourceName): string {
  return r.group ? `${r.plural}.${r.group}` : r.plural;
}

function resourceDetails(r: ResourceName, name: string): StatusDetails {
  const d: StatusDetails = { name, kind: r.plural };
  if (r.group) d.group = r.group;
  return d;
}

export function notFound(r: ResourceName, name: string): StatusError {
  return new StatusError(404, "NotFound", `${qualifiedResource(r)} "${name}" not found`, resourceDetails(r, name));
}

export function alreadyExists(r: ResourceName, name: string): StatusError {
  return new StatusError(409, "AlreadyExists", `${qualifiedResource(r)} "${name}" already exists`, resourceDetails(r, name));
}

export function conflict(r: ResourceName, name: string, why: string): StatusError {
  return new StatusError(
    409,
    "Conflict",
    `Operation cannot be fulfilled on ${qualifiedResource(r)} "${name}": ${why}`,
    resourceDetails(r, name),
  );
}

export const STALE_OBJECT_MESSAGE = "the object has been modified; please apply your changes to the latest version and try again";

export function badRequest(message: string): StatusError {
  return new StatusError(400, "BadRequest", message);
}

export function forbidden(r: ResourceName, name: string, why: string): StatusError {
  return new StatusError(403, "Forbidden", `${qualifiedResource(r)} "${name}" is forbidden: ${why}`, resourceDetails(r, name));
}

export function methodNotSupported(r: ResourceName, action: string): StatusError {
  return new StatusError(405, "MethodNotAllowed", `${action} is not supported on resources of kind "${qualifiedResource(r)}"`, {
    kind: r.plural,
    ...(r.group ? { group: r.group } : {}),
  });
}

export function unsupportedMediaType(contentType: string): StatusError {
  return new StatusError(415, "UnsupportedMediaType", `the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got ${contentType})`);
}

export function expired(message: string): StatusError {
  return new StatusError(410, "Expired", message);
}

export function internalError(message: string, cause?: unknown): StatusError {
  return new StatusError(500, "InternalError", `Internal error occurred: ${message}`, { causes: [{ message }] }, { cause });
}

/** One field problem, in the shape of k8s.io/apimachinery/pkg/util/validation/field.Error. */
export interface FieldError {
  /** `spec.destinations[0]` */
  field: string;
  /** FieldValueRequired, FieldValueInvalid, FieldValueNotSupported, FieldValueTooLong, ... */
  reason: string;
  /** What follows `<field>: ` in the message, e.g. `Required value` or `Invalid value: "x": ...`. */
  detail: string;
}

export function fieldRequired(field: string, why?: string): FieldError {
  return { field, reason: "FieldValueRequired", detail: why ? `Required value: ${why}` : "Required value" };
}

export function fieldInvalid(field: string, value: unknown, why: string): FieldError {
  return { field, reason: "FieldValueInvalid", detail: `Invalid value: ${formatValue(value)}: ${why}` };
}

export function fieldForbidden(field: string, why: string): FieldError {
  return { field, reason: "FieldValueForbidden", detail: `Forbidden: ${why}` };
}

/** Values printed as Go's %#v would for the common JSON cases. */
export function formatValue(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (v === null || v === undefined) return "null";
  if (Array.isArray(v)) return `[]interface {}{${v.map(formatValue).join(", ")}}`;
  return `map[string]interface {}{${Object.entries(v as Record<string, unknown>)
    .map(([k, x]) => `${JSON.stringify(k)}:${formatValue(x)}`)
    .join(", ")}}`;
}

/** 422 Invalid, worded like `EgressPolicy.staticegress.io "x" is invalid: spec.a: Required value`. */
export function invalid(kind: string, group: string, name: string, errors: readonly FieldError[]): StatusError {
  const parts = errors.map((e) => `${e.field}: ${e.detail}`);
  const list = parts.length === 1 ? parts[0] : `[${parts.join(", ")}]`;
  const qualifiedKind = group ? `${kind}.${group}` : kind;
  const details: StatusDetails = {
    name,
    kind,
    causes: errors.map((e) => ({ reason: e.reason, message: e.detail, field: e.field })),
  };
  if (group) details.group = group;
  return new StatusError(422, "Invalid", `${qualifiedKind} "${name}" is invalid: ${list}`, details);
}

export function successStatus(details?: StatusDetails): Status {
  const s: Status = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", code: 200 };
  if (details) s.details = details;
  return s;
}
