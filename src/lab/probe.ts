import { request } from "node:http";
import { createSocket } from "node:dgram";

/** What a pod got back from the lab's Internet: the source address the service saw. */
export interface ProbeResult {
  status: number;
  source?: string;
  admitted?: boolean;
  error?: string;
}

/** One HTTP GET (no proxies, no keep-alive), run inside a pod's namespace by `lab status`. */
export function httpProbe(url: string, timeoutMs = 2000): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const req = request(url, { agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => {
        try {
          const parsed = JSON.parse(body) as { source?: string; admitted?: boolean };
          resolve({ status: res.statusCode ?? 0, ...parsed });
        } catch {
          resolve({ status: res.statusCode ?? 0, error: "unexpected answer" });
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => resolve({ status: 0, error: e.message }));
    req.end();
  });
}

/**
 * Sends one small UDP datagram every `intervalMs` for `durationMs` (bounded: it stops by
 * itself). Payload `<tag> <seq> <sent-ms>` lets the sink measure gaps and attribute sources.
 */
export async function udpStream(host: string, port: number, tag: string, intervalMs: number, durationMs: number): Promise<number> {
  const sock = createSocket("udp4");
  const start = Date.now();
  let seq = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (Date.now() - start >= durationMs) {
        clearInterval(timer);
        resolve();
        return;
      }
      sock.send(`${tag} ${seq++} ${Date.now()}`, port, host, () => undefined);
    }, intervalMs);
  });
  await new Promise((r) => setTimeout(r, 50));
  sock.close();
  return seq;
}
