import { readFileSync } from "node:fs";

/** The parts of a V8 `.cpuprofile` (`node --cpu-prof`) read here. */
interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Sampled time inside the window, ms (idle included). */
  windowMs: number;
  /** Of it, time not idle (program, GC), ms. */
  busyMs: number;
  /** Self time per function (name, file:line), most first; idle left out. */
  top: { fn: string; selfMs: number; percentOfBusy: number }[];
}

/**
 * Self time per function of one CPU profile between two points of the monotonic clock
 * (microseconds, what `process.hrtime` and the profile's timestamps share on Linux).
 */
export function summarizeProfile(file: string, fromUs: number, toUs: number, topN = 25): ProfileSummary {
  const p = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const frames = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<string, number>();
  let t = p.startTime;
  let windowUs = 0;
  let busyUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    t += dt;
    if (t < fromUs || t > toUs) continue;
    windowUs += dt;
    const f = frames.get(p.samples[i]!);
    if (!f || f.functionName === "(idle)") continue;
    busyUs += dt;
    const where = f.url
      ? `${f.url.replace(/^file:\/\/.*?\/(node_modules|dist|bench)\//, "$1/")}:${f.lineNumber + 1}`
      : "";
    const key = `${f.functionName || "(anonymous)"} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  const top = [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, topN)
    .map(([fn, us]) => ({
      fn,
      selfMs: Math.round(us / 100) / 10,
      percentOfBusy: busyUs ? Math.round((us / busyUs) * 1000) / 10 : 0,
    }));
  return { windowMs: Math.round(windowUs / 1000), busyMs: Math.round(busyUs / 1000), top };
}
