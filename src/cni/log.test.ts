import { describe, expect, it } from "vitest";
import { silentLogger } from "../util/log.js";
import { jsonLinesLogger, type PluginLogger } from "./log.js";

describe("the plugin's logger", () => {
  it("writes pino-shaped JSON lines at or above its level, with the child's bindings", () => {
    const lines: string[] = [];
    const log = jsonLinesLogger({
      name: "static-egress-cni",
      level: "warn",
      write: (l) => lines.push(l),
      now: () => 7,
      pid: 42,
    });
    const child = log.child({ pod: "payments/pay-1" });
    child.info({ a: 1 }, "not shown");
    child.warn({ ips: ["10.244.1.2"] }, "quarantined");
    log.error("plain message");
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual([
      {
        level: 40,
        time: 7,
        pid: 42,
        name: "static-egress-cni",
        pod: "payments/pay-1",
        ips: ["10.244.1.2"],
        msg: "quarantined",
      },
      { level: 50, time: 7, pid: 42, name: "static-egress-cni", msg: "plain message" },
    ]);
  });

  it("is silent when asked, and pino's logger fits the same interface", () => {
    const lines: string[] = [];
    jsonLinesLogger({ name: "x", level: "silent", write: (l) => lines.push(l) }).error({}, "nothing");
    expect(lines).toEqual([]);
    const pinoFits: PluginLogger = silentLogger;
    expect(typeof pinoFits.child).toBe("function");
  });
});
