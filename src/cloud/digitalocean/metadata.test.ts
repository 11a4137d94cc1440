import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MetadataError, readAnchorIPv4, readDropletId } from "./metadata.js";

// A loopback metadata service per test case: path -> [status, body]; anything else is 404.
let server: Server;
let base = "";
let routes = new Map<string, [number, string]>();
const seen: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push(req.url ?? "");
    const [status, body] = routes.get(req.url ?? "") ?? [404, "not found"];
    if (status === -1) return; // never answers
    res.writeHead(status, { "content-type": "text/plain" });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metadata/v1`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const anchor = "/metadata/v1/interfaces/public/0/anchor_ipv4";

describe("droplet metadata client", () => {
  it("reads the anchor address, netmask and gateway", async () => {
    routes = new Map([
      [`${anchor}/address`, [200, "10.20.0.5\n"]],
      [`${anchor}/netmask`, [200, "255.255.0.0"]],
      [`${anchor}/gateway`, [200, "10.20.0.1"]],
    ]);
    expect(await readAnchorIPv4({ baseUrl: base })).toEqual({
      address: "10.20.0.5",
      netmask: "255.255.0.0",
      gateway: "10.20.0.1",
    });
  });

  it("answers undefined for a droplet without anchor (404), and leaves out missing extras", async () => {
    routes = new Map();
    expect(await readAnchorIPv4({ baseUrl: base })).toBeUndefined();
    routes = new Map([[`${anchor}/address`, [200, "10.20.0.9"]]]);
    expect(await readAnchorIPv4({ baseUrl: `${base}/` })).toEqual({ address: "10.20.0.9" });
  });

  it("refuses an answer that is not IPv4, naming the URL", async () => {
    routes = new Map([[`${anchor}/address`, [200, "<html>captive portal</html>"]]]);
    const err = await readAnchorIPv4({ baseUrl: base }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MetadataError);
    expect((err as Error).message).toContain(`${base}/interfaces/public/0/anchor_ipv4/address`);
    expect((err as Error).message).toContain("not an IPv4 address");
  });

  it("names the URL on a server error and on a timeout", async () => {
    routes = new Map([[`${anchor}/address`, [500, "oops"]]]);
    await expect(readAnchorIPv4({ baseUrl: base })).rejects.toThrow(
      `GET ${base}/interfaces/public/0/anchor_ipv4/address answered 500`,
    );
    routes = new Map([[`${anchor}/address`, [-1, ""]]]);
    await expect(readAnchorIPv4({ baseUrl: base, timeoutMs: 100 })).rejects.toThrow(
      `GET ${base}/interfaces/public/0/anchor_ipv4/address failed`,
    );
  });

  it("reads the droplet id, and refuses anything else", async () => {
    routes = new Map([["/metadata/v1/id", [200, "3164444\n"]]]);
    expect(await readDropletId({ baseUrl: base })).toBe("3164444");
    routes = new Map([["/metadata/v1/id", [200, "abc"]]]);
    await expect(readDropletId({ baseUrl: base })).rejects.toThrow("not a droplet id");
    routes = new Map();
    await expect(readDropletId({ baseUrl: base })).rejects.toThrow(`GET ${base}/id answered 404`);
  });

  it("uses an injected fetch", async () => {
    const asked: string[] = [];
    const fetch = (r: Request) => {
      asked.push(r.url);
      return Promise.resolve(new Response("10.20.3.4", { status: r.url.endsWith("/address") ? 200 : 404 }));
    };
    expect(await readAnchorIPv4({ baseUrl: "http://md.invalid/metadata/v1", fetch })).toEqual({ address: "10.20.3.4" });
    expect(asked[0]).toBe("http://md.invalid/metadata/v1/interfaces/public/0/anchor_ipv4/address");
  });
});
