import type { KubernetesObject } from "@kubernetes/client-node";
import { request } from "node:http";
import type { AddressInfo } from "node:net";
import { Script } from "node:vm";
import { afterEach, describe, expect, it } from "vitest";
import type { KubeObject } from "../../api/objects.js";
import { createLogger } from "../../util/log.js";
import type { ViewState } from "./model.js";
import { serveLiveView, VIEW_CSP, type LiveView } from "./server.js";
import { clusterObjects, NETWORK, NOW } from "./testing/cluster.js";

const views: LiveView[] = [];
afterEach(async () => {
  for (const v of views.splice(0)) await v.close();
});

/** The informers' port, over fixed objects (list items carry no kind, as the informers' do not). */
function source(objects: KubeObject[]) {
  return {
    objects: () => objects,
    raw: (kind: string) => objects.filter((o) => o.kind === kind).map(({ kind: _, ...o }) => o as KubernetesObject),
  };
}

async function start(opts: { ready?: () => boolean; host?: string } = {}) {
  const objects = clusterObjects({
    reports: { node1: { "shared/gw-a": "up", "shared/gw-b": "up" } },
    instanceHealth: { "gw-b": "Down" },
    traffic: [{ instance: "shared/gw-a", bytesPerSecond: 4_000, at: new Date(NOW).toISOString() }],
  });
  const view = await serveLiveView({
    port: 0,
    host: opts.host ?? "127.0.0.1",
    source: source(objects),
    network: NETWORK,
    logger: createLogger("test"),
    now: () => NOW,
    ...(opts.ready ? { ready: opts.ready } : {}),
  });
  views.push(view);
  return (view.server.address() as AddressInfo).port;
}

/** A raw HTTP request (fetch cannot set Host, nor send every method). */
function call(
  port: number,
  path: string,
  opts: { method?: string; host?: string } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: opts.method ?? "GET",
        headers: { host: opts.host ?? `127.0.0.1:${port}` },
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject).end();
  });
}

describe("live view server", () => {
  it("serves the page, its style and script with a strict Content-Security-Policy", async () => {
    const port = await start();
    const page = await call(port, "/");
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toMatch(/^text\/html/);
    expect(page.headers["content-security-policy"]).toBe(VIEW_CSP);
    expect(VIEW_CSP).toMatch(/default-src 'none'/);
    expect(VIEW_CSP).toMatch(/script-src 'self';/);
    expect(VIEW_CSP).not.toMatch(/unsafe|\*|https?:/);
    expect(page.headers["x-content-type-options"]).toBe("nosniff");
    expect(page.headers["x-frame-options"]).toBe("DENY");
    // Nothing from elsewhere, nothing inline.
    expect(page.body).toContain('<script src="view.js"></script>');
    expect(page.body).not.toMatch(/https?:\/\/|<style|<script>| style=| on\w+=/);
    const js = await call(port, "/view.js");
    expect(js.headers["content-type"]).toMatch(/^text\/javascript/);
    expect(() => new Script(js.body)).not.toThrow(); // valid JavaScript
    expect(js.body).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(/);
    expect((await call(port, "/view.css")).headers["content-type"]).toMatch(/^text\/css/);
    expect((await call(port, "/nothing")).status).toBe(404);
  });

  it("is read-only: every method but GET gets 405", async () => {
    const port = await start();
    for (const method of ["POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]) {
      for (const path of ["/", "/api/state"]) {
        const res = await call(port, path, { method });
        expect({ method, path, status: res.status }).toEqual({ method, path, status: 405 });
        expect(res.headers.allow).toBe("GET");
        expect(res.headers["content-security-policy"]).toBe(VIEW_CSP);
      }
    }
  });

  it("answers /api/state with the view's JSON, including the sampled history", async () => {
    const port = await start();
    const res = await call(port, "/api/state");
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    const state = JSON.parse(res.body) as ViewState;
    expect(Object.keys(state).sort()).toEqual(
      ["failovers", "gateways", "generatedAt", "pods", "podsTruncated", "policies", "traffic"].sort(),
    );
    expect(state.generatedAt).toBe(new Date(NOW).toISOString());
    expect(state.gateways[0]!.instances.map((i) => [i.key, i.health])).toEqual([
      ["shared/gw-a", "Up"],
      ["shared/gw-b", "Down"],
    ]);
    expect(state.policies.map((p) => p.resource)).toContain("EgressPolicy/payments/checkout");
    expect(state.pods.find((p) => p.pod === "payments/pay-1")).toMatchObject({ node: "node1", path: "gateway" });
    // Sampled at start: gw-b was Down then (a change), gw-a carried 4 kB/s under 192.0.2.10.
    expect(state.failovers).toEqual([expect.objectContaining({ instance: "shared/gw-b", to: "Down" })]);
    expect(state.traffic.series).toEqual([
      expect.objectContaining({
        egressIPs: ["192.0.2.10"],
        policy: "EgressPolicy/payments/checkout",
        instance: "shared/gw-a",
        points: [[NOW, 4_000]],
      }),
    ]);
    expect(res.body).not.toContain("s3cr3t");
  });

  it("says 503 until the informers have listed the cluster", async () => {
    let ready = false;
    const port = await start({ ready: () => ready });
    expect((await call(port, "/api/state")).status).toBe(503);
    expect((await call(port, "/")).status).toBe(200);
    ready = true;
    expect((await call(port, "/api/state")).status).toBe(200);
  });

  it("on loopback, refuses a Host that is a DNS name (a rebinding page), accepts addresses and localhost", async () => {
    const port = await start();
    expect((await call(port, "/api/state", { host: `evil.example:${port}` })).status).toBe(403);
    expect((await call(port, "/", { host: "evil.example" })).status).toBe(403);
    expect((await call(port, "/api/state", { host: `localhost:${port}` })).status).toBe(200);
    expect((await call(port, "/api/state", { host: `[::1]:${port}` })).status).toBe(200);
  });
});
