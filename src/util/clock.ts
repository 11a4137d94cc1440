/**
 * Time and timers, injected so that tests run on a fake clock: the one clock type of the project.
 * Components that only read the time take `Clock["now"]`.
 */
export interface Clock {
  /** Milliseconds on the Unix epoch scale. */
  now(): number;
  setTimer(fn: () => void, delayMs: number): unknown;
  clearTimer(handle: unknown): void;
  /**
   * Runs `fn` after the I/O already waiting has been handled (fake clocks may omit it; callers
   * then run `fn` at once).
   */
  defer?(fn: () => void): void;
}

/** The process's clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (fn, delayMs) => setTimeout(fn, delayMs),
  clearTimer: (handle) => clearTimeout(handle as NodeJS.Timeout),
  defer: (fn) => setImmediate(fn),
};

/** The process's clock for background work: its timers never keep the process alive. */
export const backgroundClock: Clock = {
  ...systemClock,
  setTimer: (fn, delayMs) => setTimeout(fn, delayMs).unref(),
};
