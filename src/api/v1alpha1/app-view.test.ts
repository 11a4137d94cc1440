import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { packageRoot } from "../../lab/paths.js";
import { toDigitalOceanApp } from "./app-view.js";

/** DigitalOcean's bandwidth usage details (reference/digitalocean-apps, vendored unchanged). */
const details = parse(
  readFileSync(
    join(packageRoot(), "reference", "digitalocean-apps", "models", "app_metrics_bandwidth_usage_details.yml"),
    "utf8",
  ),
) as { properties: Record<string, { type: string; format?: string }> };

describe("an App as DigitalOcean shows one", () => {
  it("usage per dedicated IP and for the app, DigitalOcean's bandwidth_bytes as a uint64 string", () => {
    const view = toDigitalOceanApp({
      metadata: { name: "web", uid: "u-1" },
      status: {
        phase: "ACTIVE",
        dedicated_ips: [
          { ip: "203.0.113.5", id: "203.0.113.5", status: "ASSIGNED" },
          { ip: "203.0.113.9", id: "203.0.113.9", status: "ASSIGNING" },
        ],
        usage: {
          bytes: 12_800,
          packets: 100,
          since: "t0",
          updated_at: "t1",
          ips: [{ ip: "203.0.113.5", bytes: 12_800, packets: 100, since: "t0", counters: [] }],
        },
      },
    });
    expect(view.dedicated_ips).toEqual([
      {
        ip: "203.0.113.5",
        id: "203.0.113.5",
        status: "ASSIGNED",
        usage: { bandwidth_bytes: "12800", packets: "100", since: "t0" },
      },
      { ip: "203.0.113.9", id: "203.0.113.9", status: "ASSIGNING" },
    ]);
    expect(view.bandwidth_usage).toEqual({
      app_id: "u-1",
      bandwidth_bytes: "12800",
      packets: "100",
      since: "t0",
      updated_at: "t1",
    });
    // The bookkeeping (each gateway counter's last value) is not shown.
    expect(JSON.stringify(view)).not.toContain("counters");
  });

  it("no usage field before anything was counted", () => {
    expect(toDigitalOceanApp({ metadata: { name: "web", uid: "u-1" }, status: {} })).not.toHaveProperty(
      "bandwidth_usage",
    );
  });

  it("bandwidth_usage follows DigitalOcean's names and types (app_metrics_bandwidth_usage_details)", () => {
    const view = toDigitalOceanApp({
      metadata: { name: "web", uid: "u-1" },
      status: { usage: { bytes: 5, packets: 1, since: "t0", updated_at: "t1", ips: [] } },
    }).bandwidth_usage as Record<string, unknown>;
    for (const [field, schema] of Object.entries(details.properties)) {
      expect(view, field).toHaveProperty(field);
      expect(typeof view[field], field).toBe(schema.type);
    }
    expect(details.properties.bandwidth_bytes).toMatchObject({ type: "string", format: "uint64" });
    expect(view.bandwidth_bytes).toMatch(/^\d+$/);
  });
});
