import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ActionErroredError,
  ActionTimeoutError,
  DigitalOceanApiError,
  DigitalOceanClient,
  DigitalOceanNetworkError,
  type DigitalOceanClientOptions,
} from "../../src/cloud/digitalocean/index.js";
import { startDigitalOceanStandin, type DigitalOceanStandin } from "../../src/lab/do-standin/index.js";
import { captureLogs, fakeClock } from "../support/standin-testing.js";

let standin: DigitalOceanStandin;

beforeAll(async () => {
  standin = await startDigitalOceanStandin({ dropletBootMs: 0, actionDurationMs: 20 });
});
afterAll(async () => {
  await standin.close();
});
afterEach(() => {
  // Every test ends with a stand-in that never answered outside the OpenAPI document.
  const violations = standin.violations();
  standin.reset();
  expect(violations).toEqual([]);
});

function client(extra: Partial<DigitalOceanClientOptions> = {}): DigitalOceanClient {
  return new DigitalOceanClient({
    token: standin.token,
    baseUrl: standin.url,
    retry: { baseDelayMs: 100, maxDelayMs: 1000, maxAttempts: 5, maxRateLimitWaitMs: 10_000 },
    random: () => 0.5,
    ...extra,
  });
}

const calls = (operationId: string): number => standin.requests().filter((r) => r.operationId === operationId).length;

function seedDroplets(n: number, tags: (i: number) => string[] = () => []): void {
  for (let i = 0; i < n; i++) {
    standin.state.createDroplet({
      name: `web-${i}`,
      region: "nyc3",
      size: "s-1vcpu-1gb",
      image: "ubuntu-24-04-x64",
      tags: tags(i),
    });
  }
}

describe("DigitalOcean client against the stand-in", () => {
  it("follows links.pages.next across pages and keeps filters", async () => {
    seedDroplets(45, (i) => (i % 2 === 0 ? ["even"] : []));
    const all = await client({ pageSize: 20 }).listDroplets();
    expect(all).toHaveLength(45);
    expect(new Set(all.map((d) => d.id)).size).toBe(45);
    expect(calls("droplets_list")).toBe(3);

    const even = await client({ pageSize: 10 }).listDroplets({ tagName: "even" });
    expect(even).toHaveLength(23);
    expect(even.every((d) => d.tags.includes("even"))).toBe(true);
    expect(calls("droplets_list")).toBe(3 + 3);
    expect(standin.rejectedRequests()).toEqual([]);
  });

  it("honours Retry-After on 429, for reads and for creates", async () => {
    const clock = fakeClock();
    standin.faults.rateLimit({ count: 2, retryAfterSec: 3, operationId: "droplets_list" });
    await client({ sleep: clock.sleep, now: clock.now }).listDroplets();
    expect(clock.waits).toEqual([3000, 3000]);
    expect(calls("droplets_list")).toBe(3);

    // A rate-limited create was refused unprocessed, so repeating it is safe.
    standin.faults.rateLimit({ count: 1, retryAfterSec: 1, operationId: "droplets_create" });
    const { droplet } = await client({ sleep: clock.sleep, now: clock.now }).createDroplet({
      name: "gw-0",
      region: "nyc3",
      size: "s-1vcpu-1gb",
      image: "ubuntu-24-04-x64",
    });
    expect(clock.waits).toEqual([3000, 3000, 1000]);
    expect(standin.state.droplets().map((d) => d["id"])).toEqual([droplet.id]);
  });

  it("waits for ratelimit-reset when a 429 carries no Retry-After, and gives up on waits that are too long", async () => {
    const t0 = Date.now();
    const clock = fakeClock(t0);
    standin.faults.rateLimit({ count: 1, resetInSec: 5 });
    await client({ sleep: clock.sleep, now: clock.now }).listTags();
    // The stand-in answers reset = its whole second + 5 s, on the real clock, which has moved on
    // from t0 meanwhile (the fake clock has not): the wait is 4-5 s plus that real time.
    const elapsed = Date.now() - t0;
    expect(clock.waits).toHaveLength(1);
    expect(clock.waits[0]).toBeGreaterThan(4000);
    expect(clock.waits[0]).toBeLessThanOrEqual(5000 + elapsed);

    standin.faults.rateLimit({ count: 1, retryAfterSec: 3600 });
    const err = await client({ sleep: clock.sleep, now: clock.now })
      .listTags()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DigitalOceanApiError);
    expect((err as DigitalOceanApiError).status).toBe(429);
    expect(clock.waits).toHaveLength(1);
  });

  it("holds further requests until ratelimit-reset once an answer reports the quota used up", async () => {
    const clock = fakeClock(1_700_000_000_000);
    let exhausted = true;
    const quotaFetch = async (r: Request): Promise<Response> => {
      const res = await standin.fetch(r);
      const headers = new Headers(res.headers);
      if (exhausted) {
        headers.set("ratelimit-remaining", "0");
        headers.set("ratelimit-reset", String(clock.now() / 1000 + 2));
        exhausted = false;
      }
      return new Response(res.body, { status: res.status, headers });
    };
    const c = client({ fetch: quotaFetch, sleep: clock.sleep, now: clock.now });
    await c.listTags();
    expect(clock.waits).toEqual([]);
    await c.listTags();
    expect(clock.waits).toEqual([2000]);
    await c.listTags();
    expect(clock.waits).toEqual([2000]);
  });

  it("backs off with full jitter on 5xx for idempotent requests", async () => {
    const clock = fakeClock();
    standin.faults.serverError({ count: 3, status: 503, operationId: "firewalls_list" });
    await client({ sleep: clock.sleep, now: clock.now }).listFirewalls();
    // random() = 0.5: half of 100, 200, 400.
    expect(clock.waits).toEqual([50, 100, 200]);
    expect(calls("firewalls_list")).toBe(4);

    standin.faults.serverError({ count: 10, status: 500, operationId: "vpcs_list" });
    const err = await client({ sleep: clock.sleep, now: clock.now })
      .listVpcs()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DigitalOceanApiError);
    expect((err as DigitalOceanApiError).status).toBe(500);
    expect((err as DigitalOceanApiError).requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(calls("vpcs_list")).toBe(5);
  });

  it("does not repeat a create after a 5xx: the server may have applied it", async () => {
    const clock = fakeClock();
    standin.faults.serverError({ count: 1, operationId: "droplets_create", afterProcessing: true });
    const err = await client({ sleep: clock.sleep, now: clock.now })
      .createDroplet({ name: "gw-0", region: "nyc3", size: "s-1vcpu-1gb", image: "ubuntu-24-04-x64" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DigitalOceanApiError);
    expect(calls("droplets_create")).toBe(1);
    expect(clock.waits).toEqual([]);
    // ... and indeed it had: exactly one droplet exists.
    expect(standin.state.droplets()).toHaveLength(1);
  });

  it("retries lost connections for idempotent requests only", async () => {
    const clock = fakeClock();
    standin.faults.dropConnection({ count: 2, operationId: "tags_list" });
    await client({ sleep: clock.sleep, now: clock.now }).listTags();
    expect(clock.waits).toHaveLength(2);

    standin.faults.dropConnection({ count: 1, operationId: "reservedIPs_create", afterProcessing: true });
    const err = await client({ sleep: clock.sleep, now: clock.now })
      .createReservedIP({ region: "nyc3" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DigitalOceanNetworkError);
    expect(calls("reservedIPs_create")).toBe(1);
  });

  it("polls actions until completed, through the global and the resource endpoints", async () => {
    const c = client({ actionPollIntervalMs: 5 });
    const { droplet } = await c.createDroplet({
      name: "gw-0",
      region: "nyc3",
      size: "s-1vcpu-1gb",
      image: "ubuntu-24-04-x64",
    });
    const ip = standin.state.createReservedIP({ region: "nyc3" });
    const action = await c.postReservedIPAction(ip, { type: "assign", droplet_id: droplet.id });
    expect(action.status).toBe("in-progress");
    const done = await c.waitForAction({ id: action.id ?? 0, reservedIP: ip });
    expect(done.status).toBe("completed");
    expect(done.completed_at).toBeTruthy();
    expect((await c.getReservedIP(ip))?.droplet).toMatchObject({ id: droplet.id });

    const off = await c.postDropletAction(droplet.id, { type: "power_off" });
    expect((await c.waitForAction(off.id ?? 0)).status).toBe("completed");
    expect((await c.getDroplet(droplet.id))?.status).toBe("off");
  });

  it("times out on an action that stays in progress, using the injected clock", async () => {
    const clock = fakeClock();
    const c = client({ sleep: clock.sleep, now: clock.now });
    const { droplet } = await c.createDroplet({
      name: "gw-0",
      region: "nyc3",
      size: "s-1vcpu-1gb",
      image: "ubuntu-24-04-x64",
    });
    standin.faults.slowActions({ durationMs: "forever", type: "assign_ip" });
    const ip = standin.state.createReservedIP({ region: "nyc3" });
    const action = await c.postReservedIPAction(ip, { type: "assign", droplet_id: droplet.id });
    const err = await c
      .waitForAction({ id: action.id ?? 0, reservedIP: ip }, { intervalMs: 100, timeoutMs: 1000 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ActionTimeoutError);
    expect((err as ActionTimeoutError).lastStatus).toBe("in-progress");
    expect(clock.waits.reduce((a, b) => a + b, 0)).toBe(1000);
    expect(clock.waits).toHaveLength(10);
  });

  it("reports an errored action", async () => {
    const c = client({ actionPollIntervalMs: 5 });
    const { droplet } = await c.createDroplet({
      name: "gw-0",
      region: "nyc3",
      size: "s-1vcpu-1gb",
      image: "ubuntu-24-04-x64",
    });
    standin.faults.failActions({ type: "assign_ip" });
    const ip = standin.state.createReservedIP({ region: "nyc3" });
    const action = await c.postReservedIPAction(ip, { type: "assign", droplet_id: droplet.id });
    const err = await c.waitForAction(action.id ?? 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ActionErroredError);
    expect((err as ActionErroredError).action.type).toBe("assign_ip");
    expect((await c.getReservedIP(ip))?.droplet).toBeNull();
  });

  it("returns undefined/false for missing resources and raises API errors with their fields", async () => {
    const c = client();
    expect(await c.getDroplet(999)).toBeUndefined();
    expect(await c.deleteDroplet(999)).toBe(false);
    expect(await c.getReservedIP("203.0.113.250")).toBeUndefined();
    const err = await c.createReservedIP({ region: "nowhere1" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DigitalOceanApiError);
    expect(err).toMatchObject({
      status: 422,
      errorId: "unprocessable_entity",
      method: "POST",
      path: "/v2/reserved_ips",
    });
  });

  it("never writes the token to the logs, also through retries and errors", async () => {
    const logs = captureLogs();
    const clock = fakeClock();
    const c = client({ logger: logs.logger, sleep: clock.sleep, now: clock.now, actionPollIntervalMs: 1 });
    standin.faults.rateLimit({ count: 1, retryAfterSec: 1 });
    standin.faults.serverError({ count: 2, status: 502, operationId: "droplets_list" });
    standin.faults.dropConnection({ count: 1, operationId: "tags_list" });
    await c.listDroplets();
    await c.listTags();
    await c.getDroplet(12345);
    const errors: unknown[] = [];
    errors.push(await c.createReservedIP({ region: "nowhere1" }).catch((e: unknown) => e));
    standin.faults.serverError({ count: 1, operationId: "droplets_create" });
    errors.push(
      await c.createDroplet({ name: "x", size: "s-1vcpu-1gb", image: "ubuntu-24-04-x64" }).catch((e: unknown) => e),
    );
    const badToken = "dop_v1_wrong_token_0123456789";
    const bad = client({ logger: logs.logger, token: badToken, sleep: clock.sleep, now: clock.now });
    errors.push(await bad.listVpcs().catch((e: unknown) => e));
    expect((errors[2] as DigitalOceanApiError).status).toBe(401);

    const text = logs.text();
    expect(text.length).toBeGreaterThan(0);
    // Headers are logged, with the credential redacted.
    expect(text).toContain("[Redacted]");
    expect(text).toContain("retry");
    for (const secret of [standin.token, badToken]) {
      expect(text).not.toContain(secret);
      for (const e of errors) {
        expect(String((e as Error).message)).not.toContain(secret);
        expect(JSON.stringify(e)).not.toContain(secret);
      }
    }
  });
});
