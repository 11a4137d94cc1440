import { createConnection, createServer, type Server } from "node:net";
import { rmSync } from "node:fs";

/** `tcp:<host>:<port>` or `unix:<path>` */
export type Endpoint = { tcp: { host: string; port: number } } | { unix: string };

export function parseEndpoint(text: string): Endpoint {
  if (text.startsWith("unix:")) return { unix: text.slice(5) };
  const m = /^tcp:([^:]+):(\d+)$/.exec(text);
  if (!m) throw new Error(`endpoint must be tcp:<host>:<port> or unix:<path>, not ${JSON.stringify(text)}`);
  return { tcp: { host: m[1]!, port: Number(m[2]) } };
}

/**
 * A byte relay for the lab's control plane. The API server runs in the root namespace on
 * loopback (so a person's kubectl reaches it); agents inside the lab reach it through a unix
 * socket (a file, not a network link: no lab packet can leave the lab this way).
 */
export function startRelay(listen: Endpoint, to: Endpoint): Promise<Server> {
  const server = createServer((client) => {
    const upstream = "unix" in to ? createConnection(to.unix) : createConnection(to.tcp.port, to.tcp.host);
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    // Either side gone (an error, or a close: e.g. a container removed mid-watch) ends both, so
    // no half-open pair keeps `server.close()` waiting.
    for (const side of [client, upstream]) {
      side.on("error", close);
      side.on("close", close);
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    if ("unix" in listen) {
      rmSync(listen.unix, { force: true });
      server.listen(listen.unix, () => resolve(server));
    } else server.listen(listen.tcp.port, listen.tcp.host, () => resolve(server));
  });
}
