import { describe, expect, it } from "vitest";
import {
  backoffDelayMs,
  decideRetry,
  DEFAULT_RETRY_POLICY,
  isIdempotentRequest,
  quotaExhaustedUntil,
  serverRequestedWaitMs,
} from "./retry.js";

const policy = {
  ...DEFAULT_RETRY_POLICY,
  baseDelayMs: 100,
  maxDelayMs: 1000,
  maxAttempts: 4,
  maxRateLimitWaitMs: 10_000,
};
const NOW = 1_700_000_000_000;

describe("retry rules", () => {
  it("treats GET/PUT/DELETE and set-like POSTs as idempotent, creates and actions not", () => {
    expect(isIdempotentRequest("GET", "/v2/droplets")).toBe(true);
    expect(isIdempotentRequest("put", "/v2/firewalls/x")).toBe(true);
    expect(isIdempotentRequest("DELETE", "/v2/reserved_ips/203.0.113.5")).toBe(true);
    expect(isIdempotentRequest("POST", "/v2/firewalls/abc/droplets")).toBe(true);
    expect(isIdempotentRequest("POST", "/v2/tags")).toBe(true);
    expect(isIdempotentRequest("POST", "/v2/tags/a:b/resources")).toBe(true);
    expect(isIdempotentRequest("POST", "/v2/droplets")).toBe(false);
    expect(isIdempotentRequest("POST", "/v2/reserved_ips")).toBe(false);
    expect(isIdempotentRequest("POST", "/v2/firewalls")).toBe(false);
    expect(isIdempotentRequest("POST", "/v2/reserved_ips/203.0.113.5/actions")).toBe(false);
  });

  it("uses full jitter capped by maxDelayMs", () => {
    expect(backoffDelayMs(1, policy, () => 0.999)).toBe(99);
    expect(backoffDelayMs(3, policy, () => 0.5)).toBe(200);
    expect(backoffDelayMs(10, policy, () => 0.999)).toBe(999);
    expect(backoffDelayMs(2, policy, () => 0)).toBe(0);
  });

  it("reads Retry-After as seconds or HTTP date, else ratelimit-reset", () => {
    expect(serverRequestedWaitMs(new Headers({ "retry-after": "3" }), NOW, true)).toBe(3000);
    expect(serverRequestedWaitMs(new Headers({ "retry-after": new Date(NOW + 5000).toUTCString() }), NOW, true)).toBe(
      5000,
    );
    expect(serverRequestedWaitMs(new Headers({ "ratelimit-reset": String(NOW / 1000 + 7) }), NOW, true)).toBe(7000);
    expect(
      serverRequestedWaitMs(new Headers({ "ratelimit-reset": String(NOW / 1000 + 7) }), NOW, false),
    ).toBeUndefined();
    expect(serverRequestedWaitMs(new Headers(), NOW, true)).toBeUndefined();
  });

  it("notices an exhausted quota", () => {
    expect(quotaExhaustedUntil(new Headers({ "ratelimit-remaining": "0", "ratelimit-reset": "1700000010" }))).toBe(
      1_700_000_010_000,
    );
    expect(
      quotaExhaustedUntil(new Headers({ "ratelimit-remaining": "4", "ratelimit-reset": "1700000010" })),
    ).toBeUndefined();
  });

  it("retries 429 for every method with the server's wait, but not beyond maxRateLimitWaitMs", () => {
    const h = new Headers({ "retry-after": "2" });
    expect(
      decideRetry(
        { method: "POST", pathname: "/v2/droplets", attempt: 1, status: 429, headers: h },
        policy,
        NOW,
        () => 0.5,
      ),
    ).toEqual({
      retry: true,
      delayMs: 2000,
      reason: "rate limited (429)",
    });
    const long = new Headers({ "retry-after": "60" });
    expect(
      decideRetry(
        { method: "GET", pathname: "/v2/droplets", attempt: 1, status: 429, headers: long },
        policy,
        NOW,
        () => 0.5,
      ).retry,
    ).toBe(false);
  });

  it("retries 5xx and network errors only for idempotent requests, within maxAttempts", () => {
    const get = decideRetry(
      { method: "GET", pathname: "/v2/droplets", attempt: 2, status: 503 },
      policy,
      NOW,
      () => 0.5,
    );
    expect(get).toEqual({ retry: true, delayMs: 100, reason: "server error 503" });
    expect(
      decideRetry({ method: "POST", pathname: "/v2/droplets", attempt: 1, status: 500 }, policy, NOW, () => 0.5).retry,
    ).toBe(false);
    expect(
      decideRetry({ method: "POST", pathname: "/v2/droplets", attempt: 1, networkError: true }, policy, NOW, () => 0.5)
        .retry,
    ).toBe(false);
    expect(
      decideRetry(
        { method: "DELETE", pathname: "/v2/droplets/1", attempt: 1, networkError: true },
        policy,
        NOW,
        () => 0.5,
      ).retry,
    ).toBe(true);
    expect(
      decideRetry({ method: "GET", pathname: "/v2/droplets", attempt: 4, status: 500 }, policy, NOW, () => 0.5).retry,
    ).toBe(false);
    expect(
      decideRetry({ method: "GET", pathname: "/v2/droplets", attempt: 1, status: 404 }, policy, NOW, () => 0.5).retry,
    ).toBe(false);
  });

  it("lets a Retry-After on a 5xx lengthen the backoff", () => {
    const d = decideRetry(
      {
        method: "GET",
        pathname: "/v2/droplets",
        attempt: 1,
        status: 503,
        headers: new Headers({ "retry-after": "4" }),
      },
      policy,
      NOW,
      () => 0,
    );
    expect(d).toMatchObject({ retry: true, delayMs: 4000 });
  });
});
