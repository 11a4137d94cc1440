import type { IncomingMessage, ServerResponse } from "node:http";
import { FEED_PATH, feedDocument, feedEntries, notModified, parseFeedRef, type FeedObject } from "./egress-ips.js";

/** What the feed is built from on each request: the informers' objects, and whether they are complete. */
export interface FeedSource {
  policies(): readonly FeedObject[];
  apps(): readonly FeedObject[];
  /**
   * False until every informer the feed reads has listed: an empty or partial feed would tell a
   * partner's automation to remove IPs that are in use, so it answers 503 instead.
   */
  ready(): boolean;
}

const JSON_TYPE = "application/json";

/**
 * `GET /egress-ips[/<ref>]` for the controller's HTTP server (`serveMetrics`' `routes`): the
 * document with a strong ETag; `If-None-Match` with that ETag answers 304; 404 for an object that
 * is not there or not published (one answer for both: the feed does not tell which objects exist).
 */
export function egressIPsRoute(
  source: FeedSource,
): (path: string, req: IncomingMessage, res: ServerResponse) => boolean {
  return (path, req, res) => {
    if (path !== FEED_PATH && !path.startsWith(`${FEED_PATH}/`)) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return true;
    }
    const fail = (status: number, message: string) =>
      res.writeHead(status, { "content-type": JSON_TYPE }).end(JSON.stringify({ error: message }) + "\n");
    if (!source.ready()) {
      fail(503, "the controller has not read the cluster yet");
      return true;
    }
    const rest = path.slice(FEED_PATH.length + 1);
    const ref = path === FEED_PATH ? undefined : parseFeedRef(rest);
    if (path !== FEED_PATH && ref === undefined) {
      fail(
        404,
        `no such feed: ${path} (${FEED_PATH}, ${FEED_PATH}/<namespace>/<name>, ${FEED_PATH}/<cluster policy>, ${FEED_PATH}/apps/<app>)`,
      );
      return true;
    }
    const { entries } = feedEntries({ policies: source.policies(), apps: source.apps() });
    const doc = feedDocument(entries, ref);
    if (!doc) {
      fail(404, `${rest}: not found, or not published`);
      return true;
    }
    // Revalidate every time (no-cache): the ETag makes that one small 304.
    const headers = { etag: doc.etag, "cache-control": "no-cache" };
    if (notModified(req.headers["if-none-match"], doc.etag)) {
      res.writeHead(304, headers).end();
      return true;
    }
    res.writeHead(200, { ...headers, "content-type": JSON_TYPE });
    res.end(req.method === "HEAD" ? undefined : doc.body);
    return true;
  };
}
