import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { serviceFirewallName } from "../../src/cloud/digitalocean/index.js";
import { CLUSTER_ID, HARNESS_TIMEOUT_MS, startCloudHarness, type CloudHarness } from "../support/cloud-harness.js";
import { waitFor } from "../../src/lab/lab.js";

// The reserved-IP follower in the controller (its own identity, on a real kube-apiserver, with the
// DigitalOcean API stand-in): a reserved IP follows the
// Running and Ready pods that ask for it, and never moves while its holder stays ready.
const LABEL = "staticegress.io/reserved-ip";
const HAIMGEL = "k8s.haim.dev/floating-ip";
const HOLDER_TTL_MS = 250;

let h: CloudHarness;
let ip: string;

const droplet = (node: string): number => h.nodeDroplets.get(node)!;
const assignsOf = (addr: string) =>
  [...h.cloud.state.raw.actions.values()].filter((a) => a.type === "assign_ip" && a.ip === addr).length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function holderBecomes(addr: string, node: string, message: string): Promise<void> {
  await waitFor(
    () => h.holderOf(addr) === droplet(node),
    10_000,
    `${message}: ${addr} is on ${h.holderOf(addr)}, not on ${node} (${droplet(node)})`,
  );
}

async function warnings(pod: string, namespace = "web"): Promise<string[]> {
  const events = (await h.client.core.listNamespacedEvent({ namespace })).items;
  return events
    .filter((e) => e.involvedObject.name === pod && e.type === "Warning")
    .map((e) => `${e.reason}: ${e.message}`);
}

beforeAll(async () => {
  // A short holder refresh, so that the "stays while its holder is ready" rule is exercised on
  // fresh reads from the cloud, not only on what the plugin remembers.
  // The fleet plugin's sweep (a tag listing per interval) is kept out of the follower's request count.
  h = await startCloudHarness({
    nodes: 3,
    plugins: { follower: { holderTtlMs: HOLDER_TTL_MS }, fleet: { sweepIntervalMs: 3_600_000 } },
  });
  ip = await h.grantedReservedIP();
}, HARNESS_TIMEOUT_MS);

afterAll(async () => {
  await h?.close();
}, HARNESS_TIMEOUT_MS);

describe("reserved IP follower", () => {
  it("assigns the IP to the node of the Running and Ready pod", async () => {
    await h.createPod({ name: "a", node: "node1", labels: { [LABEL]: "" }, annotations: { [LABEL]: ip } });
    await holderBecomes(ip, "node1", "first assignment");
    // The Event follows once the controller has seen the action complete.
    await waitFor(
      async () => {
        const events = (await h.client.core.listNamespacedEvent({ namespace: "web" })).items;
        return events.some(
          (e) =>
            e.involvedObject.name === "a" &&
            e.type === "Normal" &&
            e.reason === "ReservedIPAssigned" &&
            e.message === `${ip} assigned to droplet ${droplet("node1")} (node node1)`,
        );
      },
      5_000,
      "no ReservedIPAssigned event on pod a",
    );
  });

  it("does not move while the holder stays ready, even when another ready pod appears", async () => {
    const assigns = assignsOf(ip);
    // Ready for longer than a: the better candidate, were the IP free.
    await h.createPod({
      name: "b",
      node: "node2",
      labels: { [LABEL]: "" },
      annotations: { [LABEL]: ip },
      readySince: new Date("2026-01-01T00:00:00Z"),
    });
    // Several controller resyncs (300 ms) with both pods ready.
    await sleep(1_200);
    expect(h.holderOf(ip)).toBe(droplet("node1"));
    expect(assignsOf(ip)).toBe(assigns);
  });

  it("costs one read per holder refresh for a settled IP, nothing else", async () => {
    const before = h.cloud.requests().length;
    await sleep(1_000);
    const sent = h.cloud.requests().slice(before);
    expect(sent.every((r) => r.operationId === "reservedIPs_get" && r.path === `/v2/reserved_ips/${ip}`)).toBe(true);
    expect(sent.length).toBeGreaterThan(0);
    expect(sent.length).toBeLessThanOrEqual(Math.ceil(1_000 / HOLDER_TTL_MS) + 1);
  });

  it("moves when the holder's pod goes not-ready, and stays when it is ready again", async () => {
    await h.setPodReady("web", "a", false);
    await holderBecomes(ip, "node2", "after pod a went not-ready");
    await h.setPodReady("web", "a", true);
    await sleep(900);
    expect(h.holderOf(ip)).toBe(droplet("node2"));
  });

  it("moves when the holder's pod is deleted", async () => {
    await h.deletePod("web", "b");
    await holderBecomes(ip, "node1", "after pod b was deleted");
  });

  it("moves when the holder's node is deleted; with no ready pod left it stays, then follows a new one", async () => {
    await h.createPod({
      name: "c",
      node: "node2",
      labels: { [LABEL]: "" },
      annotations: { [LABEL]: ip },
      ready: false,
    });
    await h.deleteNode("node1");
    // Pod a's node is gone and c is not ready: nowhere to go, so it stays (never unassigned).
    await sleep(900);
    expect(h.holderOf(ip)).toBe(droplet("node1"));
    await h.setPodReady("web", "c", true);
    await holderBecomes(ip, "node2", "after pod c became ready");
  });

  it("understands the haimgel label and annotation (annotation first, else the label value)", async () => {
    const byAnnotation = await h.grantedReservedIP();
    const byLabel = await h.grantedReservedIP();
    await h.createPod({
      name: "legacy-1",
      node: "node3",
      labels: { [HAIMGEL]: "true" },
      annotations: { [HAIMGEL]: byAnnotation },
    });
    await holderBecomes(byAnnotation, "node3", "haimgel annotation");
    // A droplet holds one reserved IP, and node2 and node3 hold one each now: a fresh node.
    await h.addNode("node4");
    await h.createPod({ name: "legacy-2", node: "node4", labels: { [HAIMGEL]: byLabel } });
    await holderBecomes(byLabel, "node4", "haimgel label value");
  });

  it("reports a pod whose request cannot be followed, with a Warning naming the field", async () => {
    await h.createPod({ name: "bad", node: "node3", labels: { [HAIMGEL]: "true" } });
    await waitFor(async () => (await warnings("bad")).length > 0, 5_000, "no warning");
    expect(await warnings("bad")).toEqual([
      `ReservedIPRequestInvalid: label ${HAIMGEL} (no annotation ${HAIMGEL}): "true" is not an IPv4 address`,
    ]);
  });

  it("reports an IP that does not exist in the account, and one whose only candidate holds another IP", async () => {
    await h.grant("web", "203.0.113.250");
    await h.createPod({
      name: "ghost",
      node: "node3",
      labels: { [LABEL]: "" },
      annotations: { [LABEL]: "203.0.113.250" },
    });
    await waitFor(async () => (await warnings("ghost")).length > 0, 5_000, "no warning for a missing IP");
    expect((await warnings("ghost"))[0]).toContain("ReservedIPNotFound");
    const third = await h.grantedReservedIP();
    // node3's droplet holds the haimgel IP already.
    await h.createPod({ name: "crowded", node: "node3", labels: { [LABEL]: "" }, annotations: { [LABEL]: third } });
    await waitFor(async () => (await warnings("crowded")).length > 0, 5_000, "no warning for a blocked IP");
    expect((await warnings("crowded"))[0]).toMatch(/^ReservedIPBlocked: .*already holds another reserved IP/);
    expect(h.holderOf(third)).toBeUndefined();
  });

  it("a pod of a namespace that was not granted the IP cannot take it, even when the holder's pod goes", async () => {
    const owned = await h.grantedReservedIP("web");
    await h.addNode("node7");
    await h.addNode("node8");
    await h.createPod({ name: "owner", node: "node7", labels: { [LABEL]: "" }, annotations: { [LABEL]: owned } });
    await holderBecomes(owned, "node7", "owner's node");
    await h.kube.ensureNamespace("tenant-b");
    await h.createPod({
      namespace: "tenant-b",
      name: "thief",
      node: "node8",
      labels: { [LABEL]: "" },
      annotations: { [LABEL]: owned },
      readySince: new Date("2025-01-01T00:00:00Z"),
    });
    await waitFor(
      async () => (await warnings("thief", "tenant-b")).length > 0,
      5_000,
      "no warning for the ungranted pod",
    );
    expect(await warnings("thief", "tenant-b")).toEqual([
      `ReservedIPNotGranted: namespace tenant-b may not use reserved IP ${owned}: a cluster admin ` +
        `grants it with the annotation staticegress.io/reserved-ips on the Namespace`,
    ]);
    // The owner's pod goes away: the IP stays where it is rather than going to the other tenant.
    await h.deletePod("web", "owner");
    await sleep(1_000);
    expect(h.holderOf(owned)).toBe(droplet("node7"));
    // Granted to tenant-b by an admin: now it follows the ready pod there.
    await h.grant("tenant-b", owned);
    await holderBecomes(owned, "node8", "after the grant");
    await h.deletePod("tenant-b", "thief");
  });

  it("opens the pods' ports on the holder in a firewall of its own, follows the IP, removes it when no pod asks", async () => {
    const fwIP = await h.grantedReservedIP();
    await h.addNode("node5");
    await h.addNode("node6");
    const ask = {
      labels: { [LABEL]: "" },
      annotations: { [LABEL]: fwIP, "staticegress.io/reserved-ip-ports": "tcp/443, udp/51820" },
    };
    await h.createPod({ name: "fw-1", node: "node5", ...ask });
    await h.createPod({ name: "fw-2", node: "node6", ...ask });
    const name = serviceFirewallName(CLUSTER_ID, `reserved-ip/${fwIP}`);
    const firewall = () => h.cloud.state.firewalls().find((f) => f["name"] === name);
    await waitFor(
      () => firewall()?.["droplet_ids"]?.toString() === String(droplet("node5")),
      10_000,
      "no firewall on node5",
    );
    expect(firewall()?.["inbound_rules"]).toEqual([
      { protocol: "tcp", ports: "443", sources: { addresses: ["0.0.0.0/0", "::/0"] } },
      { protocol: "udp", ports: "51820", sources: { addresses: ["0.0.0.0/0", "::/0"] } },
    ]);
    await h.setPodReady("web", "fw-1", false);
    await holderBecomes(fwIP, "node6", "firewall IP after fw-1 went not-ready");
    await waitFor(
      () => firewall()?.["droplet_ids"]?.toString() === String(droplet("node6")),
      10_000,
      "firewall did not follow the IP",
    );
    await h.deletePod("web", "fw-1");
    await h.deletePod("web", "fw-2");
    await waitFor(() => firewall() === undefined, 10_000, "firewall not removed");
    expect(h.cloud.state.firewalls()).toEqual([]);
  });

  it("sent only valid requests and got only valid answers", async () => {
    await h.plugins.idle();
    await h.cloud.settle();
    expect(h.cloud.rejectedRequests()).toEqual([]);
    expect(h.cloud.violations()).toEqual([]);
  });
});

describe("reserved IP follower, woken by events alone", () => {
  // A controller that resyncs only every 10 minutes: a move within seconds can only come from
  // the watch events that wake it (as `static-egress controller` is set up).
  let w: CloudHarness;
  beforeAll(async () => {
    // The fleet plugin's own timers (sweep, convergence) would wake it too: pushed out as well.
    w = await startCloudHarness({
      nodes: 2,
      resyncMs: 600_000,
      plugins: { fleet: { minIntervalMs: 600_000, sweepIntervalMs: 600_000 } },
    });
  }, HARNESS_TIMEOUT_MS);
  afterAll(async () => {
    await w?.close();
  }, HARNESS_TIMEOUT_MS);

  it("moves the IP when the holder's Node turns NotReady (Ready=Unknown), without waiting for a resync", async () => {
    const addr = await w.grantedReservedIP();
    await w.createPod({ name: "x", node: "node1", labels: { [LABEL]: "" }, annotations: { [LABEL]: addr } });
    await waitFor(() => w.holderOf(addr) === w.nodeDroplets.get("node1"), 10_000, "not on node1");
    await w.createPod({ name: "y", node: "node2", labels: { [LABEL]: "" }, annotations: { [LABEL]: addr } });
    await w.setNodeReady("node1", "Unknown");
    await waitFor(
      () => w.holderOf(addr) === w.nodeDroplets.get("node2"),
      10_000,
      "the IP did not leave the NotReady node",
    );
  });
});
