import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleetNames } from "../../src/cloud/digitalocean/index.js";
import { DEDICATED_IPS_ON_REMOVAL_ANNOTATION } from "../../src/api/keys.js";
import { AppController } from "../../src/controller/apps/reconciler.js";
import { AppsClient, AppSource } from "../../src/kube/apps.js";
import { waitFor } from "../../src/lab/lab.js";
import { packageRoot } from "../../src/lab/paths.js";
import { silentLogger } from "../../src/util/log.js";
import {
  CLUSTER_ID,
  HARNESS_TIMEOUT_MS,
  NODE_TAG,
  REGION,
  startCloudHarness,
  type CloudHarness,
} from "../support/cloud-harness.js";

// DEDICATED_IP apps on DigitalOcean (docs/apps.md#on-digitalocean): the App reconciler with
// --apps-digitalocean beside the core controller and its DigitalOcean plugins, each with the
// controller's own token, against a real kube-apiserver (with kube-controller-manager: namespaces
// are deleted for real) and the DigitalOcean API stand-in. No node agent runs: a node's report
// that judges every listed instance up is written as the agent would (the harness), so the core
// controller writes instance health Up.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const GV = { group: "staticegress.io", version: "v1alpha1" };
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
const STEP_MS = 120_000;

let h: CloudHarness;
let apps: AppController;
let adminApps: AppsClient;
/** The account before any app: the cluster's node droplets and a reserved IP of the user's. */
let before: { droplets: unknown[]; ips: string[]; firewalls: unknown[]; tags: string[] };
let userIP: string;

const spec = (name: string, egress: "DEDICATED_IP" | "AUTOASSIGN") => ({
  name,
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

async function app(name: string): Promise<Json | undefined> {
  return (await adminApps.getApp(name)) as Json | undefined;
}
const condition = (a: Json | undefined, type: string): Json | undefined =>
  (a?.status?.conditions as Json[] | undefined)?.find((c) => c.type === type);
const dedicated = async (name: string): Promise<Json[]> => ((await app(name))?.status?.dedicated_ips as Json[]) ?? [];

async function patchApp(name: string, body: object): Promise<void> {
  await h.client.custom.patchClusterCustomObject({ ...GV, plural: "apps", name, body }, mergePatch);
}

async function gateway(name: string): Promise<Json | undefined> {
  try {
    return (await h.client.custom.getClusterCustomObject({ ...GV, plural: "egressgateways", name })) as Json;
  } catch {
    return undefined;
  }
}

async function policy(app: string): Promise<Json | undefined> {
  try {
    return (await h.client.custom.getNamespacedCustomObject({
      ...GV,
      namespace: `app-${app}`,
      plural: "egresspolicies",
      name: "dedicated-egress",
    })) as Json;
  } catch {
    return undefined;
  }
}

const fleetDroplets = (app: string) => {
  const tag = fleetNames(CLUSTER_ID, `app-${app}`).fleetTag;
  return h.cloud.state.droplets().filter((d) => (d["tags"] as string[]).includes(tag));
};
const reservedIP = (ip: string) => h.cloud.state.reservedIPs().find((r) => r["ip"] === ip);
const creates = () => h.cloud.requests().filter((r) => r.operationId === "reservedIPs_create").length;

/** Waits until both of the app's dedicated IPs have this status; returns the IPs in slot order. */
async function ipsWhen(name: string, status: string): Promise<string[]> {
  await waitFor(
    async () => {
      const d = (await dedicated(name)).filter((x) => x.status !== "REMOVED");
      return d.length === 2 && d.every((x) => x.status === status);
    },
    30_000,
    `${name}: dedicated IPs never ${status}`,
  );
  return (await dedicated(name)).filter((x) => x.status !== "REMOVED").map((x) => x.ip as string);
}

beforeAll(async () => {
  h = await startCloudHarness({ nodes: 2, controllerManager: true });
  adminApps = new AppsClient(h.client);
  userIP = h.cloud.state.createReservedIP({ region: REGION });
  const c = h.controllerClient;
  apps = new AppController({
    client: c,
    apps: new AppsClient(c),
    source: new AppSource(c, silentLogger),
    logger: silentLogger,
    resyncMs: 1_000,
    retryBaseMs: 100,
    plan: { docrRegistry: "" },
    digitalocean: {
      config: { region: REGION, size: "s-1vcpu-1gb", nodeTag: NODE_TAG },
      reservedIPs: h.plugins.gatewayReservedIPs,
    },
  });
  await apps.startInformers();
  apps.activate();
  const s = h.cloud.state;
  before = {
    droplets: s.droplets().map((d) => d["id"]),
    ips: s.reservedIPs().map((r) => r["ip"] as string),
    firewalls: s.firewalls(),
    tags: s.tags(),
  };
}, HARNESS_TIMEOUT_MS * 2);

afterAll(async () => {
  await apps?.stop();
  await h?.close();
}, HARNESS_TIMEOUT_MS);

let webIPs: string[];
let shopIPs: string[];

describe("DEDICATED_IP on DigitalOcean: two droplets and two reserved IPs of the app's own", () => {
  it(
    "creates the gateway droplets and reserved IPs; ASSIGNING until the droplets are Up with their IPs and the policy is Ready",
    async () => {
      await adminApps.createApp({
        apiVersion: "staticegress.io/v1alpha1",
        kind: "App",
        metadata: { name: "web" },
        spec: spec("web", "DEDICATED_IP"),
      });
      // The fleet allocates the IPs; the app lists them as soon as the gateway's status does.
      await waitFor(async () => (await dedicated("web")).length === 2, 30_000, "web never listed two dedicated IPs");
      const gw = (await gateway("app-web"))!;
      expect(gw.spec.digitalocean).toEqual({
        region: REGION,
        size: "s-1vcpu-1gb",
        image: "debian-12-x64",
        count: 2,
        allocateReservedIPs: true,
        keepAllocatedReservedIPs: false,
        nodeTag: NODE_TAG,
      });
      expect(gw.spec.grants).toEqual([
        {
          namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "app-web" } },
          outrankClusterPolicies: false,
        },
      ]);
      expect(gw.metadata.ownerReferences[0]).toMatchObject({ kind: "App", name: "web" });
      const droplets = fleetDroplets("web");
      expect(droplets).toHaveLength(2);
      webIPs = (await dedicated("web")).map((d) => d.ip);
      // Each id is the reserved IP as DigitalOcean identifies it; each is assigned to one of the droplets.
      for (const d of await dedicated("web")) {
        expect(d.id).toBe(d.ip);
        const held = (reservedIP(d.ip)?.["droplet"] as Json | null)?.id;
        expect(droplets.map((x) => x["id"])).toContain(held);
      }
      expect(new Set(webIPs).size).toBe(2);
      expect(webIPs).not.toContain(userIP);
      // No node has judged the droplets: not ASSIGNED, whatever else is ready.
      await waitFor(async () => (await policy("web")) !== undefined, 15_000, "no policy");
      expect((await policy("web"))!.spec).toEqual({
        podSelector: {},
        gatewayName: "app-web",
        egressIPs: webIPs,
        failurePolicy: "Drop",
        priority: 100,
      });
      await new Promise((r) => setTimeout(r, 1_500));
      expect((await dedicated("web")).map((d) => d.status)).toEqual(["ASSIGNING", "ASSIGNING"]);
      expect(condition(await app("web"), "DedicatedEgress")).toMatchObject({ status: "False", reason: "Assigning" });

      // A node agent's report judges the droplets up: the core writes Up, and the IPs carry the app's traffic.
      h.judgeInstancesUp("node1");
      expect(await ipsWhen("web", "ASSIGNED")).toEqual(webIPs);
      expect(condition(await app("web"), "DedicatedEgress")).toMatchObject({ status: "True", reason: "Assigned" });
    },
    STEP_MS,
  );

  it(
    "two apps never share an IP: a second app gets droplets and reserved IPs of its own",
    async () => {
      await adminApps.createApp({
        apiVersion: "staticegress.io/v1alpha1",
        kind: "App",
        metadata: { name: "shop", annotations: { [DEDICATED_IPS_ON_REMOVAL_ANNOTATION]: "keep" } },
        spec: spec("shop", "DEDICATED_IP"),
      });
      shopIPs = await ipsWhen("shop", "ASSIGNED");
      expect(shopIPs.filter((ip) => webIPs.includes(ip))).toEqual([]);
      expect(fleetDroplets("shop")).toHaveLength(2);
      expect((await gateway("app-shop"))!.spec.digitalocean.keepAllocatedReservedIPs).toBe(true);
    },
    STEP_MS,
  );

  it(
    "a misspelt choice makes the app invalid, naming the annotation, and changes nothing",
    async () => {
      await patchApp("web", { metadata: { annotations: { [DEDICATED_IPS_ON_REMOVAL_ANNOTATION]: "delete" } } });
      await waitFor(
        async () => condition(await app("web"), "Invalid")?.status === "True",
        15_000,
        "misspelt annotation not refused",
      );
      expect(condition(await app("web"), "Invalid")!.message).toContain(
        `metadata.annotations[${DEDICATED_IPS_ON_REMOVAL_ANNOTATION}]: must be release or keep, not "delete"`,
      );
      expect(fleetDroplets("web")).toHaveLength(2);
      await patchApp("web", { metadata: { annotations: { [DEDICATED_IPS_ON_REMOVAL_ANNOTATION]: null } } });
      await waitFor(async () => condition(await app("web"), "Invalid")?.status === "False", 15_000, "still invalid");
    },
    STEP_MS,
  );
});

describe("usage: what the gateways counted, in the App's status and in `apps get`", () => {
  it(
    "adds what each gateway counter grew by: a rewrite of the same counts (agent restart) adds nothing, a new counter counts from 0",
    async () => {
      const gateways = await h.kube.clientFor("gateway-agent");
      const instances = ((await gateway("app-web"))!.status.instances as Json[]).map((i) => `app-web/${i.name}`);
      const report = (instance: string, ip: string, bytes: number, packets: number, since: string) =>
        // As the agent writes it: its own entry, with the gateway agents' token (src/agents/gateway/traffic-report.ts).
        gateways.applyInstanceTraffic("EgressPolicy", "app-web", "dedicated-egress", {
          instance,
          bytesPerSecond: 0,
          packetsPerSecond: 0,
          at: new Date().toISOString(),
          counters: [{ egressIP: ip, bytes, packets, since }],
        });
      const usage = async () => (await app("web"))?.status?.usage as Json | undefined;
      const until = (bytes: number) =>
        waitFor(async () => (await usage())?.bytes === bytes, 15_000, `usage never ${bytes}`);
      const T0 = "2026-12-04T21:00:00.000Z";
      await report(instances[0]!, webIPs[0]!, 12_800, 100, T0);
      await report(instances[1]!, webIPs[1]!, 1_280, 10, T0);
      await until(14_080);
      // The agent restarts and writes the kernel's same values: nothing is added.
      await report(instances[0]!, webIPs[0]!, 12_800, 100, T0);
      await new Promise((r) => setTimeout(r, 1_500)); // a resync pass
      expect((await usage())!.bytes).toBe(14_080);
      await report(instances[0]!, webIPs[0]!, 25_600, 200, T0);
      await until(26_880);
      // The droplet is replaced (same instance name, a new kernel): its new counter counts from 0.
      await report(instances[0]!, webIPs[0]!, 640, 5, "2026-12-04T22:00:00.000Z");
      await until(27_520);
      const u = (await usage())!;
      expect(u.packets).toBe(215);
      expect(u.ips.map((i: Json) => [i.ip, i.bytes, i.packets])).toEqual([
        [webIPs[0], 26_240, 205],
        [webIPs[1], 1_280, 10],
      ]);

      // `apps get`, the built CLI with a user's kubeconfig.
      const dir = mkdtempSync(join(tmpdir(), "se-apps-do-"));
      try {
        writeFileSync(join(dir, "kubeconfig"), h.kube.adminKubeconfig(), { mode: 0o600 });
        const cli = [
          join(packageRoot(), "dist", "cli", "main.js"),
          "apps",
          "get",
          "web",
          "--kubeconfig",
          join(dir, "kubeconfig"),
        ];
        const json = JSON.parse((await promisify(execFile)(process.execPath, [...cli, "-o", "json"])).stdout) as Json;
        expect(json.bandwidth_usage).toMatchObject({
          app_id: (await app("web"))!.metadata.uid,
          bandwidth_bytes: "27520",
          packets: "215",
        });
        expect(json.dedicated_ips[0]).toMatchObject({
          ip: webIPs[0],
          id: webIPs[0],
          status: "ASSIGNED",
          usage: { bandwidth_bytes: "26240", packets: "205" },
        });
        const text = (await promisify(execFile)(process.execPath, cli)).stdout;
        expect(text).toMatch(new RegExp(`${webIPs[0]!.replace(/\./g, "\\.")}\\s+ASSIGNED\\s+26240\\s+205\\s`));
        expect(text).toMatch(/\(app\)\s+27520\s+215\s/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    STEP_MS,
  );
});

describe("REMOVED: back to AUTOASSIGN", () => {
  it(
    "release (the default): the IPs show REMOVED, the droplets go and the reserved IPs are deleted",
    async () => {
      await patchApp("web", { spec: { egress: { type: "AUTOASSIGN" } } });
      await waitFor(
        async () => condition(await app("web"), "DedicatedEgress")?.reason === "Released",
        30_000,
        "web never released its IPs",
      );
      const web = (await app("web"))!;
      expect(web.status.dedicated_ips).toEqual(webIPs.map((ip) => ({ ip, id: ip, status: "REMOVED" })));
      expect(web.status.kept_ips).toBeUndefined();
      expect(fleetDroplets("web")).toEqual([]);
      for (const ip of webIPs) expect(reservedIP(ip), ip).toBeUndefined();
      expect(await gateway("app-web")).toBeUndefined();
      expect(await policy("web")).toBeUndefined();
    },
    STEP_MS,
  );

  it(
    "keep: REMOVED, droplets gone, the reserved IPs stay allocated for the app and come back with DEDICATED_IP",
    async () => {
      await patchApp("shop", { spec: { egress: { type: "AUTOASSIGN" } } });
      await waitFor(
        async () => condition(await app("shop"), "DedicatedEgress")?.reason === "Kept",
        30_000,
        "shop never kept its IPs",
      );
      const shop = (await app("shop"))!;
      expect(shop.status.dedicated_ips.map((d: Json) => d.status)).toEqual(["REMOVED", "REMOVED"]);
      expect([...shop.status.kept_ips].sort()).toEqual([...shopIPs].sort());
      expect(fleetDroplets("shop")).toEqual([]);
      for (const ip of shopIPs) {
        expect(reservedIP(ip), ip).toBeDefined();
        expect(reservedIP(ip)!["droplet"], ip).toBeNull();
      }
      // Back to DEDICATED_IP: the same IPs, none allocated anew.
      const allocated = creates();
      await patchApp("shop", { spec: { egress: { type: "DEDICATED_IP" } } });
      expect(await ipsWhen("shop", "ASSIGNED")).toEqual(shopIPs);
      expect(creates()).toBe(allocated);
      expect((await app("shop"))!.status.kept_ips ?? []).toEqual([]);
    },
    STEP_MS,
  );

  it(
    "kept IPs are released once the app chooses release",
    async () => {
      await patchApp("shop", { spec: { egress: { type: "AUTOASSIGN" } } });
      await waitFor(async () => condition(await app("shop"), "DedicatedEgress")?.reason === "Kept", 30_000, "not kept");
      await patchApp("shop", { metadata: { annotations: { [DEDICATED_IPS_ON_REMOVAL_ANNOTATION]: "release" } } });
      await waitFor(
        async () => condition(await app("shop"), "DedicatedEgress")?.reason === "Released",
        30_000,
        "kept IPs never released",
      );
      for (const ip of shopIPs) expect(reservedIP(ip), ip).toBeUndefined();
      expect((await app("shop"))!.status.kept_ips ?? []).toEqual([]);
    },
    STEP_MS,
  );
});

describe("deleting apps leaves nothing in the account", () => {
  it(
    "an app with dedicated IPs kept for it, and one using them: droplets, IPs, firewalls and records all go",
    async () => {
      // shop keeps its IPs again (AUTOASSIGN, keep); web runs with dedicated IPs.
      await patchApp("shop", {
        metadata: { annotations: { [DEDICATED_IPS_ON_REMOVAL_ANNOTATION]: "keep" } },
        spec: { egress: { type: "DEDICATED_IP" } },
      });
      await ipsWhen("shop", "ASSIGNED");
      await patchApp("shop", { spec: { egress: { type: "AUTOASSIGN" } } });
      await waitFor(async () => condition(await app("shop"), "DedicatedEgress")?.reason === "Kept", 30_000, "not kept");
      expect((await app("shop"))!.status.kept_ips).toHaveLength(2);
      await patchApp("web", { spec: { egress: { type: "DEDICATED_IP" } } });
      await ipsWhen("web", "ASSIGNED");

      for (const name of ["web", "shop"]) await adminApps.deleteApp(name);
      await waitFor(
        async () => (await app("web")) === undefined && (await app("shop")) === undefined,
        60_000,
        "apps not deleted",
      );
      const s = h.cloud.state;
      expect(s.droplets().map((d) => d["id"])).toEqual(before.droplets);
      expect(s.reservedIPs().map((r) => r["ip"])).toEqual(before.ips);
      expect(s.firewalls()).toEqual(before.firewalls);
      // The shared tags the fleets created stay (static-egress, the cluster's); no fleet or IP record is left.
      expect(s.tags().filter((t) => !before.tags.includes(t) && !/^static-egress(:cluster:[^:]+)?$/.test(t))).toEqual(
        [],
      );
      await expect(h.client.core.readNamespace({ name: "app-web" })).rejects.toMatchObject({ code: 404 });
    },
    STEP_MS,
  );
});
