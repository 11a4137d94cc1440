import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { getHeapStatistics } from "node:v8";

/**
 * What a benchmark child process tells its parent: one JSON object per stdout line, each with
 * `ev` and `t` (milliseconds since the epoch, sub-millisecond, comparable across processes on
 * one machine). Logs go to stderr.
 */
export interface ChildEvent {
  ev: string;
  t: number;
  [field: string]: unknown;
}

export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

export function emit(ev: string, fields: Record<string, unknown> = {}): void {
  // monoUs: the monotonic clock a `--cpu-prof` profile's timestamps use (marks a window in it).
  process.stdout.write(
    `${JSON.stringify({ ev, t: wallClockMs(), monoUs: Number(process.hrtime.bigint() / 1000n), ...fields })}\n`,
  );
}

/** Memory of this process now, in MiB. */
export function memorySample(): {
  rssMiB: number;
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
  arrayBuffersMiB: number;
} {
  const m = process.memoryUsage();
  const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
  return {
    rssMiB: mib(m.rss),
    heapUsedMiB: mib(m.heapUsed),
    heapTotalMiB: mib(m.heapTotal),
    externalMiB: mib(m.external),
    arrayBuffersMiB: mib(m.arrayBuffers),
  };
}

export function heapLimitMiB(): number {
  return Math.round(getHeapStatistics().heap_size_limit / 2 ** 20);
}

/** Emits a `mem` event every `everyMs` (the parent keeps the peak heap); unref'd. */
export function sampleMemory(everyMs: number): NodeJS.Timeout {
  const timer = setInterval(() => emit("mem", memorySample()), everyMs);
  timer.unref();
  return timer;
}

/** CPU time of this process so far, milliseconds (user + system). */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return Math.round((u.user + u.system) / 1000);
}

/** Peak resident set (VmHWM) of this process, MiB. */
export function peakRssMiB(): number | undefined {
  try {
    const kb = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1];
    return kb ? Math.round(Number(kb) / 1024) : undefined;
  } catch {
    return undefined;
  }
}

/** Ends the process on SIGTERM after `stop` (bounded: a hung stop does not keep it alive). */
export function stopOnSignal(stop: () => Promise<void>): void {
  const onSignal = () => {
    setTimeout(() => process.exit(0), 3_000).unref();
    void stop()
      .catch(() => undefined)
      .then(() => process.exit(0));
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
}

/**
 * A line on stdin asks for a `stats` event (CPU time and peak memory now). When stdin closes
 * the parent is gone: exit, so a crashed benchmark leaves no child behind.
 */
export function answerOnStdin(): void {
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk: string) => {
    for (const line of chunk.split("\n"))
      if (line.trim())
        emit("stats", {
          tag: line.trim(),
          ...memorySample(),
          cpuMs: cpuMs(),
          peakRssMiB: peakRssMiB(),
          // The monotonic clock a `--cpu-prof` profile's timestamps use: marks a window in it.
          monotonicUs: Number(process.hrtime.bigint() / 1000n),
        });
  });
  process.stdin.on("end", () => process.exit(0));
}

/** How many cached objects of each kind (reported by both children). */
export function countByKind(objects: readonly { kind?: string }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of objects) out[o.kind ?? "?"] = (out[o.kind ?? "?"] ?? 0) + 1;
  return out;
}
