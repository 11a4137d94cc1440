import { createServer, type Server } from "node:http";
import { createSocket, type Socket } from "node:dgram";
import { appendFileSync } from "node:fs";

/**
 * The lab's "Internet": an HTTP service that answers with the caller's source address (what a
 * partner's firewall sees), a firewalled service that admits only an allowlist, and a UDP sink
 * that records the source of every datagram (the capture that counts leaked packets).
 */
export interface InternetServerOptions {
  httpPort: number;
  udpPort: number;
  allowlistService: string;
  allowlist: readonly string[];
  /** JSON lines: one per UDP datagram ({t, src, payload}). */
  udpLog: string;
  /** Stop by itself after this long (lab servers never outlive the lab). */
  lifetimeMs: number;
}

export interface InternetServer {
  close(): Promise<void>;
}

export async function startInternetServer(o: InternetServerOptions): Promise<InternetServer> {
  const allowed = new Set(o.allowlist);
  const http: Server = createServer((req, res) => {
    const source = (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
    const local = (req.socket.localAddress ?? "").replace(/^::ffff:/, "");
    if (local === o.allowlistService && !allowed.has(source)) {
      res.writeHead(403, { "content-type": "application/json" });
      res.end(JSON.stringify({ source, admitted: false }) + "\n");
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ source, admitted: true, service: local }) + "\n");
  });
  // Records are written in batches: one write per datagram would make the sink the bottleneck.
  const udp: Socket = createSocket({ type: "udp4", recvBufferSize: 4 * 1024 * 1024 });
  let pending: string[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    appendFileSync(o.udpLog, pending.join(""));
    pending = [];
  };
  const flusher = setInterval(flush, 50);
  udp.on("message", (msg, rinfo) => {
    pending.push(JSON.stringify({ t: Date.now(), src: rinfo.address, payload: msg.toString("utf8", 0, 200) }) + "\n");
  });
  await new Promise<void>((r) => http.listen(o.httpPort, "0.0.0.0", r));
  await new Promise<void>((r) => udp.bind(o.udpPort, "0.0.0.0", r));
  const timer = setTimeout(() => void close(), o.lifetimeMs);
  timer.unref();
  async function close(): Promise<void> {
    clearTimeout(timer);
    clearInterval(flusher);
    flush();
    await new Promise<void>((r) => http.close(() => r()));
    http.closeAllConnections();
    await new Promise<void>((r) => udp.close(() => r()));
  }
  return { close };
}
