import { pino, type Logger } from "pino";

/** Small helpers for tests against the stand-in: log capture and injectable time. */

export interface CapturedLogs {
  logger: Logger;
  /** Everything logged so far, as written (NDJSON). */
  text(): string;
}

/** A pino logger at `trace` that keeps every line in memory. */
export function captureLogs(): CapturedLogs {
  const chunks: string[] = [];
  const logger = pino({ level: "trace" }, { write: (s: string) => void chunks.push(s) });
  return { logger, text: () => chunks.join("") };
}

export interface FakeClock {
  now: () => number;
  /** Advances the clock instead of waiting; records every wait. */
  sleep: (ms: number) => Promise<void>;
  waits: number[];
}

export function fakeClock(start = Date.now()): FakeClock {
  let t = start;
  const waits: number[] = [];
  return {
    now: () => t,
    sleep: async (ms) => {
      waits.push(ms);
      t += ms;
    },
    waits,
  };
}

/** A real but shortened sleep (at most `capMs`) that records the requested waits. */
export function cappedSleep(capMs: number): { sleep: (ms: number) => Promise<void>; waits: number[] } {
  const waits: number[] = [];
  return {
    waits,
    sleep: (ms) => {
      waits.push(ms);
      return new Promise((resolve) => setTimeout(resolve, Math.min(ms, capMs)));
    },
  };
}
