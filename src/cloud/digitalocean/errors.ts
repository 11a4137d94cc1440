import type { Action } from "./types.js";
import { StaticEgressError } from "../../util/errors.js";

/** An error answer of the DigitalOcean API (after retries, when the request was retryable). */
export class DigitalOceanApiError extends StaticEgressError {
  constructor(
    readonly status: number,
    /** DO error id such as "not_found", "unprocessable_entity", "too_many_requests". */
    readonly errorId: string,
    readonly apiMessage: string,
    readonly requestId: string | undefined,
    readonly method: string,
    readonly path: string,
  ) {
    super(
      `DigitalOcean API ${method} ${path} failed: ${status} ${errorId}: ${apiMessage}` +
        (requestId ? ` (request id ${requestId})` : ""),
    );
    this.name = "DigitalOceanApiError";
  }
}

/** The request never got an answer (connection refused/reset, timeout), after all allowed attempts. */
export class DigitalOceanNetworkError extends StaticEgressError {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly attempts: number,
    cause: unknown,
  ) {
    super(`DigitalOcean API ${method} ${path}: no answer after ${attempts} attempt(s): ${describe(cause)}`, { cause });
    this.name = "DigitalOceanNetworkError";
  }
}

export class ActionTimeoutError extends StaticEgressError {
  constructor(
    readonly actionId: number,
    readonly lastStatus: string | undefined,
    readonly waitedMs: number,
  ) {
    super(`DigitalOcean action ${actionId} still ${lastStatus ?? "unknown"} after ${waitedMs} ms`);
    this.name = "ActionTimeoutError";
  }
}

export class ActionErroredError extends StaticEgressError {
  constructor(readonly action: Action) {
    super(
      `DigitalOcean action ${action.id ?? "?"} (${action.type ?? "unknown type"} on ${action.resource_type ?? "resource"} ` +
        `${action.resource_id ?? "?"}) errored`,
    );
    this.name = "ActionErroredError";
  }
}

/** Waiting for a resource to reach a state (droplet active, reserved IP unlocked) took too long. */
export class ResourceWaitTimeoutError extends StaticEgressError {
  constructor(
    readonly resource: string,
    readonly condition: string,
    readonly waitedMs: number,
  ) {
    super(`${resource} not ${condition} after ${waitedMs} ms`);
    this.name = "ResourceWaitTimeoutError";
  }
}

export class TokenError extends StaticEgressError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TokenError";
  }
}

/** True for failures a later attempt may not see: rate limits, server errors, lost connections. */
export function isTransientError(err: unknown): boolean {
  if (err instanceof DigitalOceanNetworkError) return true;
  return err instanceof DigitalOceanApiError && (err.status === 429 || err.status >= 500);
}

export function isNotFound(err: unknown): boolean {
  return err instanceof DigitalOceanApiError && err.status === 404;
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    const code =
      cause && typeof cause === "object" && "code" in cause ? ` (${String((cause as { code: unknown }).code)})` : "";
    return `${err.name}: ${err.message}${code}`;
  }
  return String(err);
}
