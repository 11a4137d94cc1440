import { mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Lab, waitFor } from "../../src/lab/lab.js";
import { newRunPrefix } from "../../src/lab/netns.js";
import { startUdpStream } from "../../src/lab/traffic.js";
import { byPod, exampleLabConfig, waitConverged } from "./support.js";

// The controller's live view (docs/view.md) in headless Chromium (Debian's `chromium`, driven by
// playwright-core), on a Kubernetes-mode lab: the page shows the cluster, then a gateway instance
// dies and the page shows it down, pay-1 on the other instance's IP, and the failover listed.
const CHECKOUT_IPS = ["192.0.2.10", "192.0.2.20"];
// Kept after the run (replaced by the next one), for a person to look at.
const SHOTS = join(tmpdir(), "static-egress-live-view");
let lab: Lab;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  const cfg = exampleLabConfig();
  // Judged down within a second; 300 ms probes do not flap when the shared machine is busy.
  cfg.gateways[0]!.health = { intervalMs: 300, multiplier: 3, holdDownMs: 1_500 };
  const started = Date.now();
  [lab, browser] = await Promise.all([
    Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" }),
    chromium.launch({ executablePath: "/usr/bin/chromium", headless: true }),
  ]);
  await waitConverged(lab, undefined, 30_000);
  console.log(`[live view] lab up and converged in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await lab?.down();
});

/** Attributes of every element `selector` matches on the page, as rendered from its last poll. */
function attrs(selector: string, names: string[]): Promise<(string | null)[][]> {
  return page
    .locator(selector)
    .evaluateAll(
      (els, wanted: string[]) =>
        els.map((e) => wanted.map((n) => (e as { getAttribute(n: string): string | null }).getAttribute(n))),
      names,
    );
}

/** What the page shows (its DOM). */
async function shown() {
  const pairs = async (selector: string, key: string, value: string) =>
    Object.fromEntries((await attrs(selector, [key, value])).map(([k, v]) => [k ?? "", v ?? ""]));
  return {
    instances: await pairs("[data-instance][data-health]", "data-instance", "data-health"),
    pods: await pairs("tr[data-pod]", "data-pod", "data-egress-ip"),
    failovers: (await attrs("#failovers li[data-to]", ["data-instance", "data-to", "data-at"])).map(([i, to, at]) => ({
      change: `${i} ${to}`,
      at: Date.parse(at ?? ""),
    })),
    traffic: Object.fromEntries(
      (await attrs("#traffic li[data-egress-ip]", ["data-egress-ip", "data-rate"])).map(([ip, r]) => [
        ip ?? "",
        Number(r),
      ]),
    ),
    policies: (await attrs("tr[data-policy]", ["data-policy"])).map(([p]) => p),
    updated: await page.locator("#updated").getAttribute("class"),
  };
}

/** What the lab knows about traffic, for a failure message: datagrams that arrived, the policy's status. */
async function trafficFacts(): Promise<string> {
  const arrived = lab.udpRecords().filter((d) => d.payload.startsWith("view "));
  const checkout = (await lab.currentPolicies()).find((p) => p.metadata?.name === "checkout");
  const sources = [...new Set(arrived.map((d) => d.src))].join(",");
  return `${arrived.length} datagrams arrived (sources ${sources}); checkout status.traffic ${JSON.stringify(checkout?.status?.traffic)}`;
}

async function screenshot(name: string): Promise<Buffer> {
  mkdirSync(SHOTS, { recursive: true });
  const png = await page.screenshot({ fullPage: true });
  const path = join(SHOTS, `${name}.png`);
  writeFileSync(path, png);
  console.log(`[live view] screenshot ${name}: ${path}`);
  return png;
}

describe("live view", () => {
  it("shows the cluster, then a failover: the instance down, the pods' egress IP moved, the failover listed", async () => {
    const url = lab.viewUrl();
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const blocked: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") blocked.push(m.text());
    });
    page.on("request", (r) => {
      if (!r.url().startsWith(url!)) blocked.push(`request elsewhere: ${r.url()}`);
    });
    await page.goto(url!);
    const shared = lab.topology.gatewayHosts.filter((g) => g.gateway === "shared").map((g) => `shared/${g.name}`);
    let s = await shown();
    await waitFor(
      async () => {
        s = await shown();
        return shared.every((k) => s.instances[k] === "Up") && CHECKOUT_IPS.includes(s.pods["payments/pay-1"] ?? "");
      },
      20_000,
      "the page does not show the instances Up and pay-1's egress IP",
      250,
    ).catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(s)}`, { cause: e });
    });
    expect(s.policies).toEqual(["EgressPolicy/payments/checkout", "EgressPolicy/reporting/exporter"]);
    // What the page says pay-1 leaves with is what the lab's Internet sees.
    const pay1 = s.pods["payments/pay-1"]!;
    expect(byPod(await lab.status()).get("payments/pay-1")!.egressIP).toBe(pay1);
    // Traffic from pay-1 (1 datagram per ms, across the failover) shows under its egress IP (agents
    // report every 2 s here), and later under the other instance's.
    const stream = startUdpStream(lab, "payments/pay-1", "view", 15_000);
    await waitFor(
      async () => ((s = await shown()).traffic[pay1] ?? 0) > 1_000,
      15_000,
      `no traffic shown for ${pay1}`,
      250,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(s.traffic)}; ${await trafficFacts()}`, { cause: e });
    });
    const before = await screenshot("before");

    const victim = lab.topology.gatewayHosts.find((g) => g.egressIPs.includes(pay1))!;
    const survivor = CHECKOUT_IPS.find((ip) => ip !== pay1)!;
    const killedAt = Date.now();
    await lab.killGateway(victim.name, "link");
    await waitFor(
      async () => {
        s = await shown();
        return (
          s.instances[`shared/${victim.name}`] === "Down" &&
          s.pods["payments/pay-1"] === survivor &&
          // Listed as a change after the kill (not an earlier one while the lab started).
          s.failovers.some((f) => f.change === `shared/${victim.name} Down` && f.at >= killedAt - 1_000) &&
          (s.traffic[survivor] ?? 0) > 1_000
        );
      },
      20_000,
      "the page does not show the failover",
      250,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(s)}; ${await trafficFacts()}`, { cause: e });
    });
    const after = await screenshot("after");
    await stream;
    expect(s.instances[shared.find((k) => k !== `shared/${victim.name}`)!]).toBe("Up");
    // The page and the Internet agree again after the failover.
    expect(byPod(await lab.status()).get("payments/pay-1")!.egressIP).toBe(survivor);
    expect(s.updated).toBe("muted"); // polling works, no error shown
    expect(Buffer.compare(before, after)).not.toBe(0);
    // Nothing was loaded from elsewhere and the CSP refused nothing (it would log an error).
    expect(blocked).toEqual([]);
  });
});
