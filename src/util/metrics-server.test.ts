import type { AddressInfo } from "node:net";
import { Counter, Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { AGENT_METRICS_DEFAULT_HOST, listenFlags, metricsListen, serveMetrics } from "./metrics-server.js";

const servers: { close(): void }[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

async function start(opts: Omit<Parameters<typeof serveMetrics>[1], "port" | "host"> = {}) {
  const registry = new Registry();
  const counter = new Counter({ name: "test_things_total", help: "things", registers: [registry] });
  const server = await serveMetrics(registry, { port: 0, host: "127.0.0.1", ...opts });
  servers.push(server);
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { counter, get: (path: string) => fetch(url + path) };
}

describe("metrics server", () => {
  it("hands other paths to the extra routes, and answers 404 for what they do not take", async () => {
    const seen: string[] = [];
    const { get } = await start({
      routes: (path, req, res) => {
        seen.push(`${req.method} ${path}`);
        if (path !== "/extra") return false;
        res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
        return true;
      },
    });
    const res = await get("/extra?x=1");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
    expect((await get("/other")).status).toBe(404);
    expect((await get("/metrics")).status).toBe(200); // the server's own paths are never handed over
    expect(seen).toEqual(["GET /extra", "GET /other"]);
  });

  it("serves the registry in the Prometheus text format, refreshed before each scrape", async () => {
    let refreshed = 0;
    const { counter, get } = await start({ before: async () => void refreshed++ });
    counter.inc(3);
    const res = await get("/metrics");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    expect(await res.text()).toContain("test_things_total 3");
    expect(refreshed).toBe(1);
  });

  it("answers /healthz always and /readyz only once ready", async () => {
    let ready = false;
    const { get } = await start({ ready: () => ready });
    expect((await get("/healthz")).status).toBe(200);
    expect((await get("/readyz")).status).toBe(503);
    ready = true;
    expect((await get("/readyz")).status).toBe(200);
    expect((await get("/nothing")).status).toBe(404);
  });

  it("reports a failed refresh as 500, not as stale numbers", async () => {
    const { get } = await start({ before: () => Promise.reject(new Error("nft gone")) });
    const res = await get("/metrics");
    expect(res.status).toBe(500);
    expect(await res.text()).toContain("nft gone");
  });
});

describe("metrics listen flags", () => {
  it("serves nowhere without a port; an address alone is an error", () => {
    expect(metricsListen({})).toBeUndefined();
    expect(() => metricsListen({ metricsAddress: "10.0.0.5" })).toThrow(/^--metrics-address needs --metrics-port$/);
  });

  it("accepts a port and an IPv4 or IPv6 address; all addresses by default", () => {
    expect(metricsListen({ metricsPort: "9740" })).toEqual({ port: 9740, host: "0.0.0.0" });
    expect(metricsListen({ metricsPort: "9740", metricsAddress: "10.0.0.5" })).toEqual({
      port: 9740,
      host: "10.0.0.5",
    });
    expect(metricsListen({ metricsPort: "1", metricsAddress: "::1" })).toEqual({ port: 1, host: "::1" });
  });

  it("agents default to loopback; an explicit address still wins", () => {
    expect(metricsListen({ metricsPort: "9740" }, AGENT_METRICS_DEFAULT_HOST)).toEqual({
      port: 9740,
      host: "127.0.0.1",
    });
    expect(metricsListen({ metricsPort: "9740", metricsAddress: "10.0.0.5" }, AGENT_METRICS_DEFAULT_HOST)).toEqual({
      port: 9740,
      host: "10.0.0.5",
    });
  });

  it.each([
    ["0", undefined, /^--metrics-port: must be a port number/],
    ["70000", undefined, /^--metrics-port/],
    ["ninety", undefined, /^--metrics-port/],
    ["9740", "node-a", /^--metrics-address: must be an IP address, not "node-a"/],
  ])("port %s address %s fails naming the flag", (port, address, message) => {
    expect(() =>
      metricsListen({ metricsPort: port, ...(address !== undefined ? { metricsAddress: address } : {}) }),
    ).toThrow(message);
  });

  it("names the flags of another pair (the controller's --view-port and --view-address)", () => {
    expect(listenFlags("--view", undefined, undefined, "127.0.0.1")).toBeUndefined();
    expect(listenFlags("--view", "9742", undefined, "127.0.0.1")).toEqual({ port: 9742, host: "127.0.0.1" });
    expect(() => listenFlags("--view", undefined, "10.0.0.5", "127.0.0.1")).toThrow(
      /^--view-address needs --view-port$/,
    );
    expect(() => listenFlags("--view", "0", undefined, "127.0.0.1")).toThrow(/^--view-port: must be a port number/);
    expect(() => listenFlags("--view", "9742", "host", "127.0.0.1")).toThrow(/^--view-address: must be an IP address/);
  });
});
