import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { parseLabConfig } from "../../src/lab/config.js";
import { refreshPodIPs } from "../../src/lab/kube-lab.js";
import { Lab, waitFor } from "../../src/lab/lab.js";
import { execIn, listNamespaces, newRunPrefix } from "../../src/lab/netns.js";
import { packageRoot } from "../../src/lab/paths.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";

// An App with dedicated egress, end to end on one machine (docs/apps.md): `apps create` with
// the built CLI; the controller (--apps-digitalocean) has the lab's DigitalOcean stand-in make
// two droplets and two reserved IPs for it; the lab boots the droplets as gateway namespaces,
// kube-controller-manager makes the app's pod from its Deployment and the lab kubelet runs it
// through the CNI chain. The pod's datagrams leave with a reserved IP of the app's, the droplet's
// kernel counts them, and `apps get` and the droplet's metrics show exactly what the Internet
// received. Then back to AUTOASSIGN (IPs released) and deletion (nothing left in the account).
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const ADDRESSES = ["192.0.2.50", "192.0.2.60", "192.0.2.70", "192.0.2.80"];
const SINK = LAB_NETWORK.udpSinkPort;
const PAYLOAD = 100; // bytes of UDP payload: 128-byte IP packets
const CLI = join(packageRoot(), "dist", "cli", "main.js");

let lab: Lab;
let specFile: string;

const spec = (egress: "DEDICATED_IP" | "AUTOASSIGN") => ({
  name: "shop",
  workers: [
    {
      name: "fetch",
      image: { registry_type: "DOCKER_HUB", repository: "busybox", tag: "1.36" },
      run_command: "sleep 3600",
      instance_count: 1,
    },
  ],
  egress: { type: egress },
});

async function apps(...args: string[]): Promise<string> {
  const r = await promisify(execFile)(process.execPath, [CLI, "apps", ...args, "--kubeconfig", lab.kubeconfigPath]);
  return r.stdout;
}
const get = async (): Promise<Json | undefined> =>
  JSON.parse(await apps("get", "shop", "-o", "json").catch(() => "null")) as Json | undefined;
const assigned = (a: Json | undefined): string[] =>
  ((a?.dedicated_ips as Json[] | undefined) ?? []).filter((d) => d.status === "ASSIGNED").map((d) => d.ip);
const usageOf = (a: Json | undefined) => ({
  bytes: Number(a?.bandwidth_usage?.bandwidth_bytes ?? 0),
  packets: Number(a?.bandwidth_usage?.packets ?? 0),
});

/** Sends `count` datagrams of PAYLOAD bytes from the pod to the Internet's UDP sink over `spreadMs`, payload `<tag>-<i>`. */
async function send(netns: string, tag: string, count: number, spreadMs: number): Promise<void> {
  const script = `const d = require("node:dgram");
const [dst, port, tag, count, size, spread] = process.argv.slice(1);
(async () => { const s = d.createSocket("udp4"); await new Promise((r) => s.bind(42424, r));
  for (let i = 0; i < Number(count); i++) {
    const msg = Buffer.alloc(Number(size), " "); msg.write(tag + "-" + i);
    await new Promise((r) => s.send(msg, Number(port), dst, r));
    await new Promise((r) => setTimeout(r, Number(spread) / Number(count)));
  }
  s.close(); })();`;
  await execIn(netns, process.execPath, [
    "-e",
    script,
    LAB_NETWORK.echoService,
    String(SINK),
    tag,
    String(count),
    String(PAYLOAD),
    String(spreadMs),
  ]);
}

/** The datagrams of this tag the Internet received, by source (after the sink settled). */
async function received(tag: string): Promise<Map<string, number>> {
  let n = -1;
  const records = () => lab.udpRecords().filter((r) => r.payload.startsWith(`${tag}-`));
  await waitFor(async () => n === (n = records().length), 10_000, "", 1_000).catch(() => undefined);
  const bySource = new Map<string, number>();
  for (const r of records()) bySource.set(r.src, (bySource.get(r.src) ?? 0) + 1);
  return bySource;
}

/** The app's usage once it stopped changing (no report pending: agents report every 2 s). */
async function settledUsage(): Promise<{ bytes: number; packets: number }> {
  let last = "";
  let now = usageOf(await get());
  await waitFor(
    async () => {
      now = usageOf(await get());
      const same = JSON.stringify(now) === last;
      last = JSON.stringify(now);
      return same;
    },
    30_000,
    "usage never settled",
    3_000,
  );
  return now;
}

/** The droplet holding a reserved IP, and its agent's metric for the app on that IP. */
async function appMetric(ip: string, what: "bytes" | "packets"): Promise<number> {
  const cloud = lab.cloud()!;
  const droplet = cloud.droplets.find((d) => d.id === cloud.reservedIPs[ip]);
  if (!droplet) return NaN;
  const text = await execIn(droplet.netns, "curl", ["-s", "-m", "5", "http://127.0.0.1:9464/metrics"]).catch(() => "");
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`static_egress_app_egress_${what}_total{`) && l.includes(`egress_ip="${ip}"`));
  return line && line.includes('app="shop"') ? Number(line.slice(line.lastIndexOf(" ") + 1)) : NaN;
}

beforeAll(async () => {
  const cfg = parseLabConfig(
    stringify({
      nodes: [{ name: "node1" }, { name: "node2" }],
      gateways: [],
      pods: [],
      apps: { digitalocean: { addresses: ADDRESSES } },
    }),
    "apps-lab.yaml",
  );
  lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" });
  specFile = join(lab.dir, "shop.yaml");
}, 240_000);

afterAll(async () => {
  await lab?.down();
});

let ips: string[];
let pod: Lab["topology"]["pods"][number];

describe("lab: an App with dedicated egress on the lab's DigitalOcean", () => {
  it("apps create: two droplets and two reserved IPs of its own, ASSIGNED once they carry the pod's traffic", async () => {
    writeFileSync(specFile, stringify(spec("DEDICATED_IP")));
    await apps("create", "--spec", specFile);
    await waitFor(async () => assigned(await get()).length === 2, 120_000, "the app's IPs never ASSIGNED", 1_000);
    ips = assigned(await get());
    for (const ip of ips) expect(ADDRESSES).toContain(ip);
    // Its droplets run as gateway namespaces of the gateway app-shop.
    const droplets = lab.cloud()!.droplets.filter((d) => d.gateway === "app-shop");
    expect(droplets).toHaveLength(2);
    for (const d of droplets) expect(listNamespaces()).toContain(d.netns);
    // The app's pod (kube-controller-manager made it from the Deployment; the lab kubelet runs it).
    await waitFor(
      async () => (await refreshPodIPs(lab)) > 0 && lab.topology.pods.some((p) => p.namespace === "app-shop"),
      60_000,
      "the app's pod never ran",
    );
    pod = lab.topology.pods.find((p) => p.namespace === "app-shop")!;
    // The Internet sees one of the app's IPs.
    await waitFor(
      async () => ips.includes((await lab.probe(pod, `http://${LAB_NETWORK.echoService}/`)).source ?? ""),
      30_000,
      "the pod does not leave with the app's IPs",
    );
  }, 240_000);

  it("usage: apps get and the droplet's metrics show exactly the packets and bytes the Internet received from the app's IP", async () => {
    const before = await settledUsage();
    const metricBefore = new Map<string, number>();
    for (const ip of ips) metricBefore.set(ip, await appMetric(ip, "bytes"));
    await send(pod.netns, "usage", 200, 2_000);
    const got = await received("usage");
    // Every datagram left with one of the app's IPs, none with another address.
    expect(
      [...got.keys()].every((src) => ips.includes(src)),
      JSON.stringify([...got]),
    ).toBe(true);
    const sent = [...got.values()].reduce((a, b) => a + b, 0);
    expect(sent).toBeGreaterThanOrEqual(150); // a busy machine may lose a few before the gateway
    await waitFor(
      async () => usageOf(await get()).packets - before.packets >= sent,
      30_000,
      "usage never counted what was received",
    );
    const after = await settledUsage();
    expect(after.packets - before.packets).toBe(sent);
    expect(after.bytes - before.bytes).toBe(sent * (PAYLOAD + 28));
    // Per IP: the one the Internet saw.
    const [ip] = [...got.keys()];
    const app = (await get())!;
    const perIP = (app.dedicated_ips as Json[]).find((d) => d.ip === ip)!.usage;
    expect(Number(perIP.bandwidth_bytes)).toBeGreaterThanOrEqual(sent * (PAYLOAD + 28));
    // The droplet's metrics, from the same kernel counter.
    expect((await appMetric(ip!, "bytes")) - (metricBefore.get(ip!) ?? 0)).toBe(sent * (PAYLOAD + 28));
    // `apps get` in text: the IP's row and the app's total.
    const text = await apps("get", "shop");
    expect(text).toContain("Bytes Out");
    expect(text).toMatch(new RegExp(`\\(app\\)\\s+${after.bytes}\\s+${after.packets}\\s`));
  }, 120_000);

  it("back to AUTOASSIGN: the IPs show REMOVED, the droplets go and the reserved IPs are released; the usage stays", async () => {
    const usage = usageOf(await get());
    writeFileSync(specFile, stringify(spec("AUTOASSIGN")));
    await apps("update", "shop", "--spec", specFile);
    await waitFor(
      async () =>
        ((await get())?.dedicated_ips as Json[]).every((d) => d.status === "REMOVED") &&
        lab.cloud()!.droplets.every((d) => d.gateway !== "app-shop") &&
        ips.every((ip) => !(ip in lab.cloud()!.reservedIPs)),
      60_000,
      "IPs not released",
      1_000,
    );
    expect(usageOf(await get())).toEqual(usage);
  }, 120_000);

  it("apps delete: nothing of the app is left in the account", async () => {
    await apps("delete", "shop");
    await waitFor(async () => (await get()) === null, 90_000, "the app was never deleted", 1_000);
    expect(lab.cloud()!.droplets).toEqual([]);
    expect(lab.cloud()!.reservedIPs).toEqual({});
  }, 120_000);
});
