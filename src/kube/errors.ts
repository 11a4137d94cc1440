import { StaticEgressError } from "../util/errors.js";

/**
 * A failed Kubernetes API call: the HTTP status (undefined: no answer, e.g. a refused
 * connection) and the client library's error as `cause`. The message is the library's.
 */
export class KubeApiError extends StaticEgressError {
  /** The HTTP status under the name the client library and informers use. */
  readonly code: number | undefined;
  /** The API server's answer (a Status as JSON text): its causes name the refused fields. */
  readonly body: unknown;

  constructor(
    readonly status: number | undefined,
    message: string,
    options: { cause: unknown },
  ) {
    super(message, options);
    this.code = status;
    this.body = (options.cause as { body?: unknown } | undefined)?.body;
  }
}

/** The HTTP status of a failed API call (a KubeApiError or the client library's own error). */
export function statusOf(e: unknown): number | undefined {
  if (e instanceof KubeApiError) return e.status;
  const x = e as { statusCode?: unknown; code?: unknown } | undefined;
  if (typeof x?.statusCode === "number") return x.statusCode;
  return typeof x?.code === "number" ? x.code : undefined;
}

/** The API client `api` with every method's failure turned into a KubeApiError. */
export function withKubeApiErrors<T extends object>(api: T): T {
  return new Proxy(api, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) =>
        Promise.resolve((value as (...a: unknown[]) => unknown).apply(target, args)).catch((e: unknown) => {
          if (e instanceof KubeApiError) throw e;
          throw new KubeApiError(statusOf(e), e instanceof Error ? e.message : String(e), { cause: e });
        });
    },
  });
}
