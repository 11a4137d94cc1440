import type { KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import { statusOf } from "./errors.js";

/** One page of a list as the API server sends it. */
export interface ListPage {
  metadata?: { resourceVersion?: string; continue?: string; remainingItemCount?: number };
  items?: KubernetesObject[];
}

export type FetchPage = (query: { limit: number; continue?: string }) => Promise<ListPage>;

/** Page size of the informers' lists (client-go's reflector uses 500 too). */
const DEFAULT_PAGE_SIZE = 500;

/** How often a list whose continue token expired (410) starts again from the first page. */
const MAX_RESTARTS = 3;

/**
 * A whole list, read page by page (`limit` + `continue`), each page's items passed through
 * `transform` before the next page is fetched, so only the kept fields of all items and one page
 * of raw JSON are in memory at a time. The result looks like one list to client-node's
 * ListWatch: all items, and the resourceVersion of the list. Every page of a paginated list is
 * served from the same snapshot and carries its resourceVersion, so the watch that follows
 * starts where the whole list was taken. A continue token that expired meanwhile (410 Gone on
 * a later page) starts the list again from the first page, as client-go's reflector does; a
 * 410 on the first page, or any other error, is the list's error.
 */
export async function listAllPages(
  fetchPage: FetchPage,
  transform: (o: KubernetesObject) => KubernetesObject,
  pageSize = DEFAULT_PAGE_SIZE,
): Promise<KubernetesListObject<KubernetesObject>> {
  for (let restarts = 0; ; restarts++) {
    const items: KubernetesObject[] = [];
    let resourceVersion: string | undefined;
    let cont: string | undefined;
    try {
      do {
        const page = await fetchPage(cont ? { limit: pageSize, continue: cont } : { limit: pageSize });
        for (const o of page.items ?? []) items.push(transform(o));
        resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
        cont = page.metadata?.continue || undefined;
      } while (cont);
    } catch (e) {
      if (cont && statusOf(e) === 410 && restarts < MAX_RESTARTS) continue;
      throw e;
    }
    return {
      apiVersion: "v1",
      kind: "List",
      metadata: resourceVersion !== undefined ? { resourceVersion } : {},
      items,
    };
  }
}
