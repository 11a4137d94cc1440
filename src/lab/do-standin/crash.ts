import { StaticEgressError } from "../../util/errors.js";

/**
 * Simulated process crashes for tests: a fetch wrapper that lets `afterRequests` requests through
 * and then "dies". With `when: "before-send"` the fatal request never reaches the server; with
 * `when: "after-send"` the server processes it and the answer is lost, the way a controller that
 * is killed while waiting for a response loses it.
 */

export class SimulatedCrashError extends StaticEgressError {
  constructor(readonly requestNumber: number) {
    super(`simulated crash at request ${requestNumber}`);
    this.name = "SimulatedCrashError";
  }
}

export type FetchLike = (input: Request) => Promise<Response>;

export interface CrashingFetch {
  fetch: FetchLike;
  /** Requests seen so far (including the fatal one). */
  count(): number;
  crashed(): boolean;
}

export interface CrashOptions {
  /** Requests that pass before the crash (default: unlimited). */
  afterRequests?: number;
  /** Crash at the first request for which this is true (combined with afterRequests: whichever comes first). */
  at?: (request: Request) => boolean;
  when?: "before-send" | "after-send";
}

export function createCrashingFetch(inner: FetchLike, opts: CrashOptions): CrashingFetch {
  let seen = 0;
  let dead = false;
  return {
    count: () => seen,
    crashed: () => dead,
    fetch: async (input) => {
      seen++;
      // Once dead, every later request fails too: the process is gone.
      if (dead) throw new SimulatedCrashError(seen);
      const fatal = (opts.afterRequests !== undefined && seen > opts.afterRequests) || (opts.at?.(input) ?? false);
      if (!fatal) return inner(input);
      dead = true;
      if (opts.when === "after-send") {
        const res = await inner(input);
        await res.body?.cancel();
      }
      throw new SimulatedCrashError(seen);
    },
  };
}
