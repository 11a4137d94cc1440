import type { IncomingMessage, ServerResponse } from "node:http";
import type { DropletRecord, StandinState } from "./state.js";

/**
 * The droplet metadata service (http://169.254.169.254/metadata/v1 on a droplet), one per
 * stand-in droplet, under `/_standin/droplets/<id>/metadata/v1/...` and
 * `/_standin/droplets/<id>/metadata/v1.json`. Like the real one it needs no token and answers
 * plain text per item, 404 for what the droplet does not have (e.g. an anchor IP without public
 * networking). A subset: id, hostname, region, tags, public and private IPv4, anchor IPv4.
 */

const METADATA_ROUTE = /^\/_standin\/droplets\/(\d{1,19})\/metadata\/v1(\.json|\/.*)?$/;

interface V4 {
  ip_address: string;
  netmask: string;
  gateway: string;
  type: string;
}

function anchorNetwork(d: DropletRecord): { address: string; netmask: string; gateway: string } | undefined {
  if (!d.anchorIp) return undefined;
  const [a, b] = d.anchorIp.split(".");
  return { address: d.anchorIp, netmask: "255.255.0.0", gateway: `${a}.${b}.0.1` };
}

/** Plain-text items by path below /metadata/v1/ (what the droplet has right now). */
function items(state: StandinState, d: DropletRecord): Map<string, string> {
  const out = new Map<string, string>([
    ["id", String(d.id)],
    ["hostname", d.name],
    ["region", d.region],
    ["tags", d.tags.map((t) => `${t}\n`).join("")],
  ]);
  const v4 = (state.renderDroplet(d)["networks"] as { v4?: V4[] }).v4 ?? [];
  for (const kind of ["public", "private"] as const) {
    const n = v4.find((x) => x.type === kind);
    if (!n) continue;
    out.set(`interfaces/${kind}/0/ipv4/address`, n.ip_address);
    out.set(`interfaces/${kind}/0/ipv4/netmask`, n.netmask);
    out.set(`interfaces/${kind}/0/ipv4/gateway`, n.gateway);
  }
  const anchor = anchorNetwork(d);
  if (anchor) for (const [k, v] of Object.entries(anchor)) out.set(`interfaces/public/0/anchor_ipv4/${k}`, v);
  return out;
}

/** The `/metadata/v1.json` document (a subset of DigitalOcean's). */
function document(state: StandinState, d: DropletRecord): Record<string, unknown> {
  const v4 = (state.renderDroplet(d)["networks"] as { v4?: V4[] }).v4 ?? [];
  const iface = (kind: string) => {
    const n = v4.find((x) => x.type === kind);
    return n ? [{ ipv4: { ip_address: n.ip_address, netmask: n.netmask, gateway: n.gateway }, type: kind }] : [];
  };
  const anchor = anchorNetwork(d);
  const pub = iface("public").map((i) =>
    anchor ? { ...i, anchor_ipv4: { ...anchor, ip_address: anchor.address } } : i,
  );
  return {
    droplet_id: d.id,
    hostname: d.name,
    region: d.region,
    tags: [...d.tags],
    interfaces: { public: pub, private: iface("private") },
  };
}

/** Serves a metadata request; false when the URL is not a metadata route (the API handles it). */
export function serveMetadata(state: StandinState, req: IncomingMessage, res: ServerResponse): boolean {
  const path = new URL(req.url ?? "/", "http://standin").pathname;
  const m = METADATA_ROUTE.exec(path);
  if (!m) return false;
  const text = (status: number, body: string) => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
    res.end(body);
  };
  if ((req.method ?? "GET") !== "GET") {
    text(405, "method not allowed\n");
    return true;
  }
  state.tick();
  const d = state.droplets.get(Number(m[1]));
  if (!d) {
    text(404, "no such droplet\n");
    return true;
  }
  if (m[2] === ".json") {
    res.writeHead(200, { "content-type": "application/json; charset=utf-8" });
    res.end(JSON.stringify(document(state, d)));
    return true;
  }
  const item = items(state, d).get((m[2] ?? "").replace(/^\/+/, "").replace(/\/+$/, ""));
  if (item === undefined) text(404, "not found\n");
  else text(200, item);
  return true;
}

/** The metadata root of one stand-in droplet, for `readAnchorIPv4({ baseUrl })` and the node agent's `--metadata-url`. */
export function standinMetadataUrl(standinUrl: string, dropletId: number | string): string {
  return `${standinUrl.replace(/\/+$/, "")}/_standin/droplets/${dropletId}/metadata/v1`;
}
