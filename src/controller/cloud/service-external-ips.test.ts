import fc from "fast-check";
import type { KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import type { Claim } from "./reserved-ip-rules.js";
import {
  decideServiceExternalIPs,
  externalIPsFor,
  MANAGED_EXTERNAL_IPS_KEY,
  nodeAnchors,
  serviceRequestedIP,
  type NodeAnchor,
  type ServiceDecision,
} from "./service-external-ips.js";

const IP = "203.0.113.5";
const node = (name: string, id: string, anchor?: string): KubernetesObject =>
  ({
    metadata: { name, annotations: anchor ? { "staticegress.io/anchor-ipv4": anchor } : {} },
    spec: { providerID: `digitalocean://${id}` },
  }) as KubernetesObject;
const svc = (ns: string, name: string, annotations: Record<string, string>, externalIPs?: string[]): KubernetesObject =>
  ({
    metadata: { namespace: ns, name, resourceVersion: "7", annotations },
    spec: externalIPs ? { externalIPs } : {},
  }) as KubernetesObject;
const claim = (ns: string, name: string, hostId = "1", ip = IP): Claim => ({
  ip,
  pod: { namespace: ns, name },
  node: `n${hostId}`,
  hostId,
  eligible: true,
  readySince: "",
});

const anchors = nodeAnchors([
  node("n1", "1", "10.20.0.1"),
  node("n2", "2", "10.20.0.2"),
  node("n3", "3", "not-an-ip"),
  node("n4", "4"),
]);

function decide(
  services: KubernetesObject[],
  targets: Record<string, string[] | undefined>,
  claims: Claim[] = [claim("web", "p")],
): ServiceDecision[] {
  return decideServiceExternalIPs({ services, anchors, claims, targets: (ip) => targets[ip] });
}

describe("service externalIPs rules", () => {
  it("reads node anchors, skipping missing and malformed ones", () => {
    expect(anchors).toEqual([
      { node: "n1", hostId: "1", anchor: "10.20.0.1" },
      { node: "n2", hostId: "2", anchor: "10.20.0.2" },
    ]);
  });

  it("reads the Service annotation: ours first, then haimgel's; a bad value names the annotation", () => {
    expect(serviceRequestedIP({ "k8s.haim.dev/floating-ip": " 203.0.113.9 " })).toEqual({
      ip: "203.0.113.9",
      key: "k8s.haim.dev/floating-ip",
    });
    expect(
      serviceRequestedIP({ "staticegress.io/reserved-ip": IP, "k8s.haim.dev/floating-ip": "203.0.113.9" }),
    ).toEqual({ ip: IP, key: "staticegress.io/reserved-ip" });
    expect(serviceRequestedIP({ "staticegress.io/reserved-ip": "2001:db8::1" })).toEqual({
      error: 'annotation staticegress.io/reserved-ip: "2001:db8::1" is not an IPv4 address',
    });
    expect(serviceRequestedIP({ other: "x" })).toBeUndefined();
  });

  it("lists the holder's anchor, keeps user entries in place, removes other nodes' anchors", () => {
    const [d] = decide([svc("web", "s", { "staticegress.io/reserved-ip": IP }, ["192.0.2.7", "10.20.0.1"])], {
      [IP]: ["2"],
    });
    expect(d).toEqual({
      service: { namespace: "web", name: "s" },
      resourceVersion: "7",
      ip: IP,
      problems: [],
      patch: { externalIPs: ["192.0.2.7", "10.20.0.2"], managed: "10.20.0.2" },
    });
  });

  it("lists both anchors while the IP moves, and leaves a settled Service alone", () => {
    const moving = decide([svc("web", "s", { "staticegress.io/reserved-ip": IP }, ["10.20.0.1"])], {
      [IP]: ["1", "2"],
    });
    expect(moving[0]?.patch).toEqual({ externalIPs: ["10.20.0.1", "10.20.0.2"], managed: "10.20.0.1,10.20.0.2" });
    const settled = decide(
      [svc("web", "s", { "staticegress.io/reserved-ip": IP, [MANAGED_EXTERNAL_IPS_KEY]: "10.20.0.2" }, ["10.20.0.2"])],
      { [IP]: ["2"] },
    );
    expect(settled[0]?.patch).toBeUndefined();
  });

  it("leaves a Service alone while the holder is unknown, and ignores Services that do not ask", () => {
    expect(decide([svc("web", "s", { "staticegress.io/reserved-ip": IP }, ["10.20.0.1"])], {})).toEqual([]);
    expect(decide([svc("web", "plain", {}, ["10.20.0.1"])], { [IP]: ["2"] })).toEqual([]);
  });

  it("gives back what it wrote when a Service stops asking, and only that", () => {
    const [d] = decide(
      [svc("web", "s", { [MANAGED_EXTERNAL_IPS_KEY]: "10.20.0.1" }, ["192.0.2.7", "10.20.0.1", "10.20.0.2"])],
      { [IP]: ["1"] },
    );
    // 10.20.0.2 is a node's anchor, but we never wrote it into this Service: the user's.
    expect(d).toEqual({
      service: { namespace: "web", name: "s" },
      resourceVersion: "7",
      problems: [],
      patch: { externalIPs: ["192.0.2.7", "10.20.0.2"], managed: null },
    });
    expect(d?.ip).toBeUndefined();
  });

  it("refuses a Service when a pod in another namespace claims the IP, and removes our anchors", () => {
    const [d] = decide(
      [
        svc("other", "s", { "staticegress.io/reserved-ip": IP, [MANAGED_EXTERNAL_IPS_KEY]: "10.20.0.1" }, [
          "10.20.0.1",
          "192.0.2.7",
        ]),
      ],
      { [IP]: ["1"] },
      [claim("web", "p"), claim("other", "q")],
    );
    expect(d?.patch).toEqual({ externalIPs: ["192.0.2.7"], managed: null });
    expect(d?.problems).toEqual([
      {
        reason: "ExternalIPsRefused",
        message: expect.stringContaining("claimed by pods in other namespaces (web/p)") as string,
      },
    ]);
  });

  it("warns about a bad annotation and a holder without anchor; removes the anchor of a node that is gone", () => {
    const [bad] = decide([svc("web", "s", { "k8s.haim.dev/floating-ip": "nope" }, ["10.20.0.1"])], {});
    expect(bad?.problems).toEqual([
      {
        reason: "ExternalIPsRequestInvalid",
        message: 'annotation k8s.haim.dev/floating-ip: "nope" is not an IPv4 address',
      },
    ]);
    expect(bad?.patch).toEqual({ externalIPs: [], managed: null });
    const [noAnchor] = decide([svc("web", "s", { "staticegress.io/reserved-ip": IP })], { [IP]: ["4"] }, [
      claim("web", "p", "4"),
    ]);
    expect(noAnchor?.problems[0]?.message).toContain(
      "node n4 (droplet 4), which has no annotation staticegress.io/anchor-ipv4",
    );
    // 10.20.0.9 was ours (managed), its node is gone: removed, though no node has it as anchor now.
    const [gone] = decide(
      [svc("web", "s", { "staticegress.io/reserved-ip": IP, [MANAGED_EXTERNAL_IPS_KEY]: "10.20.0.9" }, ["10.20.0.9"])],
      { [IP]: ["1"] },
    );
    expect(gone?.patch).toEqual({ externalIPs: ["10.20.0.1"], managed: "10.20.0.1" });
  });

  it("property: after any sequence of holder moves the Service lists exactly the holder's anchor plus the user's entries", () => {
    const N = 4;
    const nodeAnchorsList: NodeAnchor[] = Array.from({ length: N }, (_, i) => ({
      node: `n${i}`,
      hostId: String(100 + i),
      anchor: `10.20.0.${i + 10}`,
    }));
    const userPool = ["192.0.2.1", "192.0.2.2", "198.51.100.3"];
    fc.assert(
      fc.property(
        fc.subarray(userPool),
        fc.array(fc.integer({ min: 0, max: N - 1 }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.integer({ min: 0, max: N - 1 }), { maxLength: 2 }),
        (user, moves, staleAnchors) => {
          // The Service starts with the user's entries and possibly some anchors written by hand.
          let externalIPs = [...user, ...staleAnchors.map((i) => nodeAnchorsList[i]!.anchor)];
          let managed: string | undefined;
          const apply = (targets: string[]): void => {
            const d = decideServiceExternalIPs({
              services: [
                {
                  metadata: {
                    namespace: "web",
                    name: "s",
                    annotations: {
                      "staticegress.io/reserved-ip": IP,
                      ...(managed ? { [MANAGED_EXTERNAL_IPS_KEY]: managed } : {}),
                    },
                  },
                  spec: { externalIPs },
                } as KubernetesObject,
              ],
              anchors: nodeAnchorsList,
              claims: [claim("web", "p")],
              targets: () => targets,
            })[0]!;
            if (d.patch) {
              externalIPs = d.patch.externalIPs;
              managed = d.patch.managed ?? undefined;
            }
          };
          let holder: number | undefined;
          for (const to of moves) {
            const from = holder;
            apply(from === undefined ? [String(100 + to)] : [String(100 + from), String(100 + to)]);
            // No window: during the move both the old and the new holder's anchors are listed.
            expect(externalIPs).toContain(nodeAnchorsList[to]!.anchor);
            if (from !== undefined) expect(externalIPs).toContain(nodeAnchorsList[from]!.anchor);
            apply([String(100 + to)]);
            holder = to;
            const anchorsListed = externalIPs.filter((e) => nodeAnchorsList.some((a) => a.anchor === e));
            expect(anchorsListed).toEqual([nodeAnchorsList[to]!.anchor]);
            expect([...externalIPs].sort()).toEqual([...user, nodeAnchorsList[to]!.anchor].sort());
            // User entries keep their order.
            expect(externalIPs.filter((e) => user.includes(e))).toEqual(user);
          }
          // Settled: deciding again changes nothing.
          const before = [...externalIPs];
          apply([String(100 + holder!)]);
          expect(externalIPs).toEqual(before);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("externalIPsFor is a no-op on its own result", () => {
    const first = externalIPsFor(
      ["192.0.2.1", "10.20.0.1"],
      undefined,
      ["10.20.0.2"],
      new Set(["10.20.0.1", "10.20.0.2"]),
    );
    expect(first).toEqual({ externalIPs: ["192.0.2.1", "10.20.0.2"], managed: "10.20.0.2" });
    expect(
      externalIPsFor(
        first!.externalIPs,
        first!.managed ?? undefined,
        ["10.20.0.2"],
        new Set(["10.20.0.1", "10.20.0.2"]),
      ),
    ).toBeUndefined();
  });
});
