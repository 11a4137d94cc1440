import { ListWatch, Watch, type KubernetesListObject, type KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { listAllPages, type FetchPage, type ListPage } from "./paged-list.js";
import { prunePod } from "./prune.js";

function pod(i: number): KubernetesObject {
  return {
    metadata: {
      name: `p-${i}`,
      namespace: `ns-${i % 7}`,
      resourceVersion: String(100 + i),
      labels: { app: `a-${i % 3}` },
      managedFields: [{ manager: "x" }],
    },
    spec: { nodeName: `n-${i % 5}`, containers: [{ name: "c", image: "i" }] },
    status: { phase: "Running", podIPs: [{ ip: `10.0.0.${i}` }] },
  } as KubernetesObject;
}

/** An API server's paginated list of `items` at resourceVersion `rv` (continue = the next index). */
function server(
  items: KubernetesObject[],
  rv: string,
): { fetch: FetchPage; calls: { limit: number; continue?: string }[] } {
  const calls: { limit: number; continue?: string }[] = [];
  const fetch: FetchPage = async (q) => {
    calls.push(q);
    const from = q.continue ? Number(q.continue) : 0;
    const to = Math.min(items.length, from + q.limit);
    const page: ListPage = {
      metadata: {
        resourceVersion: rv,
        ...(to < items.length ? { continue: String(to), remainingItemCount: items.length - to } : {}),
      },
      items: structuredClone(items.slice(from, to)),
    };
    return page;
  };
  return { fetch, calls };
}

/** A Watch that connects to nothing (the list is what is compared). */
class IdleWatch extends Watch {
  constructor() {
    super(undefined as never);
  }
  override watch(): Promise<AbortController> {
    return Promise.resolve(new AbortController());
  }
}

async function informerCache(
  list: () => Promise<KubernetesListObject<KubernetesObject>>,
): Promise<{ objects: KubernetesObject[]; rv: string }> {
  const lw = new ListWatch<KubernetesObject>("/api/v1/pods", new IdleWatch(), list, false);
  await lw.start();
  const objects = [...lw.list()].sort((a, b) =>
    `${a.metadata?.namespace}/${a.metadata?.name}`.localeCompare(`${b.metadata?.namespace}/${b.metadata?.name}`),
  );
  await lw.stop();
  return { objects, rv: lw.latestResourceVersion() };
}

describe("listAllPages", () => {
  const items = Array.from({ length: 1_234 }, (_, i) => pod(i));

  it("gives the informer the same cache and resourceVersion as one unpaginated list", async () => {
    const whole = async () =>
      ({ metadata: { resourceVersion: "777" }, items: items.map(prunePod) }) as KubernetesListObject<KubernetesObject>;
    const api = server(items, "777");
    const paged = () => listAllPages(api.fetch, prunePod, 100);
    const a = await informerCache(whole);
    const b = await informerCache(paged);
    expect(b.objects).toEqual(a.objects);
    expect(b.objects).toHaveLength(1_234);
    expect(b.rv).toBe("777");
    expect(api.calls.map((c) => c.limit)).toEqual(Array(13).fill(100));
    expect(api.calls[0]?.continue).toBeUndefined();
    expect(api.calls[12]?.continue).toBe("1200");
  });

  it("prunes every item", async () => {
    const list = await listAllPages(server(items, "1").fetch, prunePod, 500);
    expect(
      list.items.every(
        (o) => !("managedFields" in (o.metadata ?? {})) && !("containers" in ((o as { spec?: object }).spec ?? {})),
      ),
    ).toBe(true);
  });

  it("starts again from the first page when a continue token expired (410)", async () => {
    const api = server(items, "900");
    let expired = 1;
    const fetch: FetchPage = async (q) => {
      if (q.continue === "500" && expired-- > 0) throw Object.assign(new Error("Gone"), { statusCode: 410 });
      return api.fetch(q);
    };
    const list = await listAllPages(fetch, prunePod, 250);
    expect(list.items).toHaveLength(1_234);
    expect(new Set(list.items.map((o) => o.metadata?.name)).size).toBe(1_234);
    expect(list.metadata?.resourceVersion).toBe("900");
    expect(api.calls.filter((c) => c.continue === undefined)).toHaveLength(2);
  });

  it("fails on a 410 on the first page and on other errors (the informer retries)", async () => {
    const gone: FetchPage = async () => Promise.reject(Object.assign(new Error("Gone"), { statusCode: 410 }));
    await expect(listAllPages(gone, prunePod)).rejects.toThrow("Gone");
    const api = server(items, "5");
    const broken: FetchPage = async (q) =>
      q.continue ? Promise.reject(Object.assign(new Error("boom"), { statusCode: 500 })) : api.fetch(q);
    await expect(listAllPages(broken, prunePod, 100)).rejects.toThrow("boom");
  });

  it("an empty list keeps its resourceVersion", async () => {
    const list = await listAllPages(server([], "42").fetch, prunePod);
    expect(list.items).toEqual([]);
    expect(list.metadata?.resourceVersion).toBe("42");
  });
});
