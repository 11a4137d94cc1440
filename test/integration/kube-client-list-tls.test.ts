import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeClient } from "../../src/kube/client.js";
import { makePki, type ControlPlanePki } from "../../src/lab/control-plane/pki.js";

// client-node makes a new HTTPS agent, and so a new TLS connection, for every request: an
// informer's list of 5,000 nodes in pages of 500 paid ten handshakes. KubeClient.listPage keeps
// one keep-alive agent per TLS setting. A local HTTPS server counts the TLS connections.
let dir: string;
let pki: ControlPlanePki;
let server: Server;
let port: number;
let connections = 0;
const tokens: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "se-list-tls-"));
  pki = await makePki(dir);
  server = createServer(
    { cert: readFileSync(pki.servingCert), key: readFileSync(pki.servingKey), keepAliveTimeout: 30_000 },
    (req, res) => {
      tokens.push(req.headers.authorization ?? "");
      const page = Number(new URL(req.url ?? "/", "https://x").searchParams.get("continue") ?? "0");
      res.setHeader("content-type", "application/json");
      res.end(
        JSON.stringify({
          metadata: { resourceVersion: "7", ...(page < 2 ? { continue: String(page + 1) } : {}) },
          items: [{ metadata: { name: `node-${page}` } }],
        }),
      );
    },
  );
  server.on("secureConnection", () => connections++);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  rmSync(dir, { recursive: true, force: true });
});

function client(token: string, caPem: string): KubeClient {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server: `https://127.0.0.1:${port}`, caData: Buffer.from(caPem).toString("base64") }],
    users: [{ name: "u", token }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return new KubeClient(kc);
}

describe("KubeClient.listPage over TLS", () => {
  it("reads every page of a list over one TLS connection, with the credentials of each call", async () => {
    connections = 0;
    tokens.length = 0;
    const c = client("first", pki.caPem);
    const names: string[] = [];
    let cont: string | undefined;
    do {
      const page = await c.listPage("/api/v1/nodes", { limit: 1, ...(cont ? { continue: cont } : {}) });
      names.push(...(page.items ?? []).map((o) => o.metadata?.name ?? ""));
      cont = page.metadata?.continue;
    } while (cont);
    expect(names).toEqual(["node-0", "node-1", "node-2"]);
    expect(connections).toBe(1);
    expect(tokens).toEqual(["Bearer first", "Bearer first", "Bearer first"]);
  });

  it("still checks the server against the kubeconfig's CA", async () => {
    const other = await makePki(mkdtempSync(join(dir, "other-")));
    await expect(client("t", other.caPem).listPage("/api/v1/nodes", { limit: 1 })).rejects.toThrow(
      /certificate|self.signed|verify/i,
    );
  });
});
