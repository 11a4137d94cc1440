import { PatchStrategy, setHeaderOptions, type V1Service } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ANCHOR_ANNOTATION, AnchorPublisher } from "../../src/agents/node/anchor.js";
import { readAnchorIPv4, readDropletId } from "../../src/cloud/digitalocean/metadata.js";
import { MANAGED_EXTERNAL_IPS_KEY } from "../../src/controller/cloud/service-external-ips.js";
import {
  NODE_TAG,
  REGION,
  HARNESS_TIMEOUT_MS,
  startCloudHarness,
  type CloudHarness,
} from "../support/cloud-harness.js";
import { standinMetadataUrl } from "../../src/lab/do-standin/metadata.js";
import { waitFor } from "../../src/lab/lab.js";
import { KubeSource } from "../../src/kube/source.js";
import { silentLogger } from "../../src/util/log.js";

// Anchor IPs and Service externalIPs, end to end against a real kube-apiserver and the
// DigitalOcean API stand-in: node agents (each with its own token, bound to its Node) publish
// their droplet's anchor IP (read from the DigitalOcean stand-in's metadata service) on their
// Node; the controller lists the anchor of the node holding a reserved IP in the externalIPs of
// the Services that ask for it, in step with the reserved-IP follower.
const KEY = "staticegress.io/reserved-ip";
const USER_ENTRY = "192.0.2.99";

let h: CloudHarness;
let ip: string;

const droplet = (node: string): number => h.nodeDroplets.get(node)!;
const anchorOf = (node: string): string => h.cloud.state.raw.droplets.get(droplet(node))!.anchorIp!;
const nodeAnnotation = async (node: string) =>
  (await h.client.core.readNode({ name: node })).metadata?.annotations?.[ANCHOR_ANNOTATION];
const externalIPs = async (namespace: string, name: string) =>
  (await h.client.core.readNamespacedService({ namespace, name })).spec?.externalIPs ?? [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Our warnings about the object (not the API server's own, e.g. its ClusterIP repair loop's). */
async function warnings(namespace: string, kind: string, name: string): Promise<string[]> {
  const events = (await h.client.core.listNamespacedEvent({ namespace })).items;
  return events
    .filter((e) => e.involvedObject.kind === kind && e.involvedObject.name === name && e.type === "Warning")
    .filter((e) => e.source?.component === "static-egress-controller")
    .map((e) => `${e.reason}: ${e.message}`);
}

function service(namespace: string, name: string, annotations: Record<string, string>, ips: string[] = []): V1Service {
  return {
    metadata: { namespace, name, annotations },
    spec: {
      selector: { app: name },
      ports: [{ name: "https", port: 443, targetPort: 8443, protocol: "TCP" }],
      ...(ips.length ? { externalIPs: ips } : {}),
    },
  };
}

/** The node's agent publishing its anchor, with its own token. */
async function publisher(node: string, dropletId = droplet(node)): Promise<AnchorPublisher> {
  return new AnchorPublisher({
    client: await h.kube.clientFor("node-agent", node),
    node,
    read: () => readAnchorIPv4({ baseUrl: standinMetadataUrl(h.cloud.url, dropletId) }),
  });
}

beforeAll(async () => {
  h = await startCloudHarness({ nodes: 3, serviceExternalIPs: true, plugins: { follower: { holderTtlMs: 250 } } });
  ip = await h.grantedReservedIP();
  await h.kube.ensureNamespace("other");
}, HARNESS_TIMEOUT_MS);

afterAll(async () => {
  await h?.close();
}, HARNESS_TIMEOUT_MS);

describe("anchor IP discovery", () => {
  it("the stand-in serves each droplet's metadata without a token", async () => {
    const base = standinMetadataUrl(h.cloud.url, droplet("node1"));
    expect(await readDropletId({ baseUrl: base })).toBe(String(droplet("node1")));
    expect(await readAnchorIPv4({ baseUrl: base })).toEqual({
      address: anchorOf("node1"),
      netmask: "255.255.0.0",
      gateway: "10.20.0.1",
    });
    expect(anchorOf("node1")).toMatch(/^10\.20\.\d+\.\d+$/);
    expect(anchorOf("node1")).not.toBe(anchorOf("node2"));
    const doc = (await (await fetch(`${base}.json`)).json()) as {
      droplet_id: number;
      interfaces: { public: { anchor_ipv4?: { ip_address: string } }[] };
    };
    expect(doc.droplet_id).toBe(droplet("node1"));
    expect(doc.interfaces.public[0]?.anchor_ipv4?.ip_address).toBe(anchorOf("node1"));
    expect((await fetch(`${standinMetadataUrl(h.cloud.url, 1)}/id`)).status).toBe(404);
  });

  it("node agents publish their anchor on their Node, once", async () => {
    for (const node of ["node1", "node2", "node3"]) {
      const p = await publisher(node);
      expect(await p.publishOnce()).toBe("written");
      expect(await p.publishOnce()).toBe("unchanged");
      expect(await nodeAnnotation(node)).toBe(anchorOf(node));
    }
  });

  it("an anchor change wakes the controller's source, not the agents'", async () => {
    const agent = new KubeSource(await h.kube.clientFor("node-agent", "node3"), silentLogger, { podsOnNode: "node3" });
    const controller = new KubeSource(await h.kube.clientFor("controller"), silentLogger, { serviceExternalIPs: true });
    const node3Agent = await h.kube.clientFor("node-agent", "node3");
    let agentWakes = 0;
    let controllerWakes = 0;
    await agent.start(() => agentWakes++);
    await controller.start(() => controllerWakes++);
    try {
      // The controller's source watches Services (the API server's own `kubernetes` Service is the
      // only one yet); the agent's does not.
      expect(controller.raw("Service").map((o) => `${o.metadata?.namespace}/${o.metadata?.name}`)).toEqual([
        "default/kubernetes",
      ]);
      expect(agent.raw("Service")).toEqual([]);
      await node3Agent.patchNodeAnnotations("node3", { [ANCHOR_ANNOTATION]: "10.20.200.1" });
      await waitFor(() => controllerWakes > 0, 5_000, "the controller's source did not wake on the anchor annotation");
      // The agent's informer saw the same update (same API server, same order) and ignored it.
      await sleep(200);
      expect(agentWakes).toBe(0);
      await node3Agent.patchNodeAnnotations("node3", { [ANCHOR_ANNOTATION]: anchorOf("node3") });
      // Something agents plan with (a label: gateway node selectors read them) still wakes them;
      // other tools' annotations (an admin's) are not even cached (src/kube/prune.ts).
      await h.client.patchNodeAnnotations("node3", { "example.com/not-ours": "x" });
      await sleep(200);
      expect(agentWakes).toBe(0);
      await h.client.core.patchNode(
        { name: "node3", body: { metadata: { labels: { "example.com/planned": "x" } } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
      await waitFor(() => agentWakes > 0, 5_000, "the agent's source did not wake on a label");
      await h.client.core.patchNode(
        { name: "node3", body: { metadata: { labels: { "example.com/planned": null } } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    } finally {
      await agent.stop();
      await controller.stop();
    }
  });

  it("a droplet without anchor (no public networking) gets the annotation removed", async () => {
    const d = h.cloud.state.createDroplet({
      name: "private-only",
      region: REGION,
      size: "s-2vcpu-4gb",
      image: "debian-12-x64",
      tags: [NODE_TAG],
      public_networking: false,
    });
    const id = d["id"] as number;
    await h.kube.createNode({
      name: "private-only",
      annotations: { [ANCHOR_ANNOTATION]: "10.20.9.9" },
      providerID: `digitalocean://${id}`,
    });
    const p = await publisher("private-only", id);
    expect(await p.publishOnce()).toBe("removed");
    expect(await nodeAnnotation("private-only")).toBeUndefined();
    await h.client.core.deleteNode({ name: "private-only" });
  });
});

describe("Service externalIPs follow the reserved IP", () => {
  it("lists the holder's anchor beside the user's entry", async () => {
    await h.client.core.createNamespacedService({
      namespace: "web",
      body: service("web", "svc", { [KEY]: ip }, [USER_ENTRY]),
    });
    await h.createPod({ name: "a", node: "node1", labels: { [KEY]: "" }, annotations: { [KEY]: ip } });
    await waitFor(() => h.holderOf(ip) === droplet("node1"), 10_000, "IP not on node1");
    await waitFor(
      async () => (await externalIPs("web", "svc")).join() === [USER_ENTRY, anchorOf("node1")].join(),
      10_000,
      "externalIPs do not list node1's anchor",
    );
    const svc = await h.client.core.readNamespacedService({ namespace: "web", name: "svc" });
    expect(svc.metadata?.annotations?.[MANAGED_EXTERNAL_IPS_KEY]).toBe(anchorOf("node1"));
  });

  it("lists both anchors while the IP moves, then only the new holder's", async () => {
    await h.createPod({ name: "b", node: "node2", labels: { [KEY]: "" }, annotations: { [KEY]: ip } });
    h.cloud.faults.slowActions({ durationMs: 1_500, type: "assign_ip", count: 1 });
    await h.deletePod("web", "a");
    // The Service lists node2's anchor before the IP arrives there, and node1's until it left.
    await waitFor(
      async () => (await externalIPs("web", "svc")).includes(anchorOf("node2")),
      10_000,
      "node2's anchor never listed",
    );
    expect(h.holderOf(ip)).toBe(droplet("node1"));
    expect(await externalIPs("web", "svc")).toEqual([USER_ENTRY, anchorOf("node1"), anchorOf("node2")]);
    await waitFor(() => h.holderOf(ip) === droplet("node2"), 10_000, "IP not on node2");
    await waitFor(
      async () => (await externalIPs("web", "svc")).join() === [USER_ENTRY, anchorOf("node2")].join(),
      10_000,
      "node1's anchor not removed",
    );
  });

  it("puts back what a user removed, and keeps entries the user adds", async () => {
    await h.client.core.patchNamespacedService({
      namespace: "web",
      name: "svc",
      body: [{ op: "replace", path: "/spec/externalIPs", value: ["198.51.100.7"] }],
    });
    await waitFor(
      async () => (await externalIPs("web", "svc")).join() === ["198.51.100.7", anchorOf("node2")].join(),
      10_000,
      "anchor not put back",
    );
    // Settled: several passes (300 ms resync) write nothing more.
    const rv = (await h.client.core.readNamespacedService({ namespace: "web", name: "svc" })).metadata?.resourceVersion;
    await sleep(1_000);
    expect(
      (await h.client.core.readNamespacedService({ namespace: "web", name: "svc" })).metadata?.resourceVersion,
    ).toBe(rv);
  });

  it("refuses a Service in another namespace than the claiming pods, with a Warning, and removes anchors from it", async () => {
    await h.client.core.createNamespacedService({
      namespace: "other",
      body: service("other", "thief", { [KEY]: ip, [MANAGED_EXTERNAL_IPS_KEY]: anchorOf("node3") }, [
        anchorOf("node3"),
        USER_ENTRY,
      ]),
    });
    await waitFor(
      async () => (await warnings("other", "Service", "thief")).length > 0,
      10_000,
      "no warning on the foreign Service",
    );
    expect((await warnings("other", "Service", "thief"))[0]).toMatch(
      new RegExp(`^ExternalIPsRefused: ${ip.replace(/\./g, "\\.")} is claimed by pods in other namespaces \\(web/b\\)`),
    );
    await waitFor(
      async () => (await externalIPs("other", "thief")).join() === USER_ENTRY,
      10_000,
      "anchors not removed from the foreign Service",
    );
    expect(await externalIPs("web", "svc")).toContain(anchorOf("node2"));
  });

  it("reports a bad annotation value, naming the annotation", async () => {
    await h.client.core.createNamespacedService({
      namespace: "web",
      body: service("web", "typo", { "k8s.haim.dev/floating-ip": "203.0.113.x" }),
    });
    await waitFor(
      async () => (await warnings("web", "Service", "typo")).length > 0,
      10_000,
      "no warning for a bad annotation",
    );
    expect(await warnings("web", "Service", "typo")).toEqual([
      'ExternalIPsRequestInvalid: annotation k8s.haim.dev/floating-ip: "203.0.113.x" is not an IPv4 address',
    ]);
    expect(await externalIPs("web", "typo")).toEqual([]);
  });

  it("a Service that drops the annotation loses the anchors we wrote and keeps its own entries", async () => {
    expect(await externalIPs("web", "svc")).toContain(anchorOf("node2")); // what there is to give back
    const escaped = KEY.replace(/~/g, "~0").replace(/\//g, "~1");
    await h.client.core.patchNamespacedService({
      namespace: "web",
      name: "svc",
      body: [{ op: "remove", path: `/metadata/annotations/${escaped}` }],
    });
    await waitFor(
      async () => (await externalIPs("web", "svc")).join() === "198.51.100.7",
      10_000,
      "our anchor not removed from a Service that stopped asking",
    );
    const svc = await h.client.core.readNamespacedService({ namespace: "web", name: "svc" });
    expect(svc.metadata?.annotations?.[MANAGED_EXTERNAL_IPS_KEY]).toBeUndefined();
    // Settled: not ours any more, nothing more is written.
    const rv = svc.metadata?.resourceVersion;
    await sleep(1_000);
    expect(
      (await h.client.core.readNamespacedService({ namespace: "web", name: "svc" })).metadata?.resourceVersion,
    ).toBe(rv);
  });

  it("sent only valid requests to the DigitalOcean API", async () => {
    await h.plugins.idle();
    await h.cloud.settle();
    expect(h.cloud.rejectedRequests()).toEqual([]);
    expect(h.cloud.violations()).toEqual([]);
  });
});
