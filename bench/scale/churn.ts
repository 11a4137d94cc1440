import { round } from "../lib/stats.js";
import { range, type ApiHttp } from "./api.js";
import { wallClockMs } from "./child-io.js";
import { nodeName, type ScaleShape } from "./fixture.js";

/** Node reports are refreshed every 2 minutes (NodeReporter.refreshMs): 5,000 nodes write ~42/s. */
export const REPORT_REFRESH_SECONDS = 120;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Node agents' report refreshes: other nodes' `staticegress.io/report` annotation rewritten at
 * the rate a whole cluster produces (same content, new `at`). Every agent and the controller
 * watch all nodes, so each write reaches them.
 */
export class NodeReportChurn {
  private stopped = false;
  private done: Promise<void> | undefined;
  writes = 0;
  startedAt = 0;
  stoppedAt = 0;
  private readonly http: ApiHttp;
  private readonly s: ScaleShape;
  private readonly perSecond: number;
  private readonly skipNode: number;

  constructor(http: ApiHttp, s: ScaleShape, perSecond: number, skipNode: number) {
    this.http = http;
    this.s = s;
    this.perSecond = perSecond;
    this.skipNode = skipNode;
  }

  start(): void {
    const health = Object.fromEntries(
      range(this.s.gateways).flatMap((g) => range(this.s.instancesPerGateway).map((k) => [`gw-${g}/i-${k}`, "up"])),
    );
    let owed = 0; // writes due but not yet sent (fractional rates)
    let node = 0;
    this.startedAt = wallClockMs();
    this.done = (async () => {
      while (!this.stopped) {
        const tick = Date.now();
        const batch: Promise<unknown>[] = [];
        owed += this.perSecond / 10;
        for (; owed >= 1; owed--) {
          node = (node + 1) % this.s.nodes;
          if (node === this.skipNode) node = (node + 1) % this.s.nodes;
          const report = JSON.stringify({ programmed: {}, health, unavailable: {}, at: new Date().toISOString() });
          batch.push(this.http.patchNodeAnnotations(nodeName(node), { "staticegress.io/report": report }));
        }
        await Promise.all(batch);
        this.writes += batch.length;
        await sleep(Math.max(0, 100 - (Date.now() - tick)));
      }
      this.stoppedAt = wallClockMs();
    })();
  }

  async stop(): Promise<{ writes: number; seconds: number; writesPerSecond: number }> {
    this.stopped = true;
    await this.done;
    const seconds = (this.stoppedAt - this.startedAt) / 1000;
    return { writes: this.writes, seconds: round(seconds), writesPerSecond: round(this.writes / seconds) };
  }
}
