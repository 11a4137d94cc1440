import { createServer, type Server } from "node:http";
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { runCommand } from "../../util/exec.js";
import { createLogger } from "../../util/log.js";
import type { NodeProbe } from "../../planner/model.js";
import type { VerificationReport } from "../../api/node-report.js";
import {
  parseEchoAnswer,
  probeOnce,
  readHttpResponse,
  Verifier,
  type ProbeAnswer,
  type ProbeRequest,
} from "./verifier.js";

const logger = createLogger("test", "silent");

describe("parseEchoAnswer", () => {
  it.each([
    ['{"source":"192.0.2.10","admitted":true}', "192.0.2.10"],
    ['{"ip":"192.0.2.11"}', "192.0.2.11"],
    ['{"origin":"192.0.2.12"}', "192.0.2.12"],
    ["192.0.2.13\n", "192.0.2.13"],
  ])("reads %j", (body, seen) => {
    expect(parseEchoAnswer(200, body)).toEqual({ seen });
  });

  it.each([
    [503, '{"source":"192.0.2.10"}', /answered HTTP 503/],
    [200, "<html>hello</html>", /names no IPv4 address .*"<html>hello<\/html>"/],
    [200, '{"source":"2001:db8::1"}', /names no IPv4 address/],
    [200, '{"source":"192.0.2.300"}', /names no IPv4 address/],
    [200, '{"source":42}', /names no IPv4 address/],
    [200, '{"source":', /not valid JSON/],
    [200, "", /names no IPv4 address/],
  ])("refuses HTTP %i %j", (status, body, message) => {
    const a = parseEchoAnswer(status, body);
    expect("error" in a && a.error).toMatch(message);
  });
});

describe("readHttpResponse", () => {
  const b = (t: string) => Buffer.from(t, "latin1");
  it("is complete at its content length, or at the last chunk, or when the connection closes", () => {
    expect(readHttpResponse(b("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n1.2.3"), false)).toEqual({
      status: 200,
      body: "1.2.3",
    });
    expect(readHttpResponse(b("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n1.2.3"), false)).toBe("incomplete");
    const chunked = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"ip\r\n8\r\n":"1.2.3\r\n';
    expect(readHttpResponse(b(chunked), false)).toBe("incomplete");
    expect(readHttpResponse(b(`${chunked}2\r\n"}\r\n0\r\n\r\n`), false)).toEqual({
      status: 200,
      body: '{"ip":"1.2.3"}',
    });
    expect(readHttpResponse(b("HTTP/1.0 200 OK\r\n\r\n1.2.3.4"), false)).toBe("incomplete");
    expect(readHttpResponse(b("HTTP/1.0 200 OK\r\n\r\n1.2.3.4"), true)).toEqual({ status: 200, body: "1.2.3.4" });
  });

  it("says what is wrong with an answer cut short or not HTTP", () => {
    expect(readHttpResponse(b("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n1.2"), true)).toBe(
      "the connection closed before the end of the answer",
    );
    expect(readHttpResponse(b("HTTP/1.1 200"), true)).toBe("the connection closed before a complete HTTP answer");
    expect(readHttpResponse(b("SSH-2.0-OpenSSH\r\n\r\n"), false)).toBe('not an HTTP answer: "SSH-2.0-OpenSSH"');
    expect(readHttpResponse(b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), false)).toBe(
      "a malformed chunked answer",
    );
  });
});

describe("probeOnce (HTTP on loopback)", () => {
  const servers: (Server | TcpServer)[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) {
      if ("closeAllConnections" in s) s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  });
  const listen = async <T extends Server | TcpServer>(s: T): Promise<number> => {
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
    return (s.address() as AddressInfo).port;
  };
  /** A free port to send from (taken and given back). */
  const freePort = async (): Promise<number> => {
    const s = createTcpServer();
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
    const port = (s.address() as AddressInfo).port;
    await new Promise((r) => s.close(r));
    return port;
  };
  const req = (port: number, sourcePort: number, timeoutMs = 2_000): ProbeRequest => ({
    address: "127.0.0.1",
    port,
    host: "echo.example",
    path: "/ip?x=1",
    sourcePort,
    localAddress: "127.0.0.1",
    timeoutMs,
  });

  it("sends from the given source port and reads the source the server saw; the connection leaves no TIME_WAIT", async () => {
    const asked: { port: number | undefined; host: string | undefined; url: string | undefined }[] = [];
    // Keep-alive: the server leaves the connection open, so the probe closes it.
    const port = await listen(
      createServer((q, s) => {
        asked.push({ port: q.socket.remotePort, host: q.headers.host, url: q.url });
        s.shouldKeepAlive = true;
        const body = JSON.stringify({ source: q.socket.remoteAddress });
        s.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
        s.end(body);
      }),
    );
    const sourcePort = await freePort();
    expect(await probeOnce(req(port, sourcePort))).toEqual({ seen: "127.0.0.1" });
    // The next probe comes from the same port at once: a reset, not a close, ended the first.
    expect(await probeOnce(req(port, sourcePort))).toEqual({ seen: "127.0.0.1" });
    expect(asked).toEqual([
      { port: sourcePort, host: `echo.example:${port}`, url: "/ip?x=1" },
      { port: sourcePort, host: `echo.example:${port}`, url: "/ip?x=1" },
    ]);
    const { stdout } = await runCommand("ss", ["-Htan", "state", "time-wait", `sport = :${sourcePort}`]);
    expect(stdout.trim()).toBe("");
  });

  it("fails after the timeout when the service accepts but never answers", async () => {
    const port = await listen(createTcpServer((c) => c.on("error", () => undefined)));
    const started = Date.now();
    expect(await probeOnce(req(port, await freePort(), 300))).toEqual({
      error: `no answer from 127.0.0.1:${port} within 0.3 s`,
    });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("fails when nothing listens, or the answer is too long, or says no address", async () => {
    const closed = await freePort();
    expect(await probeOnce(req(closed, await freePort()))).toEqual({
      error: `connection to 127.0.0.1:${closed} refused`,
    });
    const big = await listen(createServer((_q, s) => s.end("x".repeat(10_000))));
    expect(await probeOnce(req(big, await freePort()))).toEqual({ error: "the answer is over 4096 bytes" });
    const html = await listen(createServer((_q, s) => s.end("<html>")));
    const a = await probeOnce(req(html, await freePort()));
    expect("error" in a && a.error).toMatch(/names no IPv4 address/);
  });

  it("fails, naming the port, when the source port is taken", async () => {
    const port = await listen(createServer((_q, s) => s.end("127.0.0.1")));
    const taken = createTcpServer();
    const sourcePort = await listen(taken);
    expect(await probeOnce(req(port, sourcePort))).toEqual({
      error: `source port ${sourcePort} is taken on this node (EADDRINUSE)`,
    });
  });
});

describe("Verifier", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  const probe = (over: Partial<NodeProbe> = {}): NodeProbe => ({
    policy: "EgressPolicy/shop/web",
    url: "http://198.51.100.10/",
    host: "198.51.100.10",
    address: "198.51.100.10",
    port: 80,
    path: "/",
    intervalSeconds: 10,
    timeoutSeconds: 5,
    sourcePort: 25000,
    instance: "shared/gw-a",
    mark: 0x10010000,
    expected: ["192.0.2.10"],
    ...over,
  });

  function harness(answers: (r: ProbeRequest) => Promise<ProbeAnswer>) {
    const changes: Record<string, VerificationReport>[] = [];
    const results: [string, VerificationReport["result"]][] = [];
    const removed: string[] = [];
    const requests: ProbeRequest[] = [];
    const verifier = new Verifier({
      logger,
      probe: (r) => {
        requests.push(r);
        return answers(r);
      },
      onChange: (r) => changes.push(r),
      onResult: (policy, r) => results.push([policy, r.result]),
      onRemoved: (policy) => removed.push(policy),
      random: () => 0,
      now: () => new Date(Date.now()),
    });
    return { verifier, changes, results, removed, requests };
  }

  it("probes at once, then every interval, from the node's address on the policy's port; reports only changes", async () => {
    vi.useFakeTimers({ now: Date.parse("2026-11-22T00:00:00Z") });
    const h = harness(async () => ({ seen: "192.0.2.10" }));
    h.verifier.update([probe()], "10.0.0.11");
    await vi.advanceTimersByTimeAsync(0);
    expect(h.requests).toEqual([
      {
        address: "198.51.100.10",
        port: 80,
        host: "198.51.100.10",
        path: "/",
        sourcePort: 25000,
        localAddress: "10.0.0.11",
        timeoutMs: 5_000,
      },
    ]);
    expect(h.changes).toEqual([
      {
        "EgressPolicy/shop/web": {
          result: "ok",
          seen: "192.0.2.10",
          expected: ["192.0.2.10"],
          instance: "shared/gw-a",
          since: "2026-11-22T00:00:00.000Z",
        },
      },
    ]);
    await vi.advanceTimersByTimeAsync(9_999);
    expect(h.requests).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.requests).toHaveLength(2);
    // The same result again: counted, not reported again.
    expect(h.results).toEqual([
      ["EgressPolicy/shop/web", "ok"],
      ["EgressPolicy/shop/web", "ok"],
    ]);
    expect(h.changes).toHaveLength(1);
    // An unchanged plan keeps the rhythm.
    h.verifier.update([probe()], "10.0.0.11");
    await vi.advanceTimersByTimeAsync(5_000);
    expect(h.requests).toHaveLength(2);
    h.verifier.stop();
  });

  it("reports a mismatch with the source seen, and an error, each from when it began", async () => {
    vi.useFakeTimers({ now: Date.parse("2026-11-22T00:00:00Z") });
    const answers: ProbeAnswer[] = [{ seen: "203.0.113.101" }, { seen: "203.0.113.101" }, { error: "boom" }];
    const h = harness(async () => answers.shift() ?? { seen: "192.0.2.10" });
    h.verifier.update([probe()], undefined);
    await vi.advanceTimersByTimeAsync(20_000);
    const web = (i: number) => h.changes[i]!["EgressPolicy/shop/web"];
    expect(web(0)).toMatchObject({ result: "mismatch", seen: "203.0.113.101", since: "2026-11-22T00:00:00.000Z" });
    expect(web(1)).toMatchObject({ result: "error", error: "boom", since: "2026-11-22T00:00:20.000Z" });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(web(2)).toMatchObject({ result: "ok", since: "2026-11-22T00:00:30.000Z" });
    expect(h.requests[0]).not.toHaveProperty("localAddress");
    h.verifier.stop();
  });

  it("counts a probe that throws as an error", async () => {
    vi.useFakeTimers();
    const h = harness(() => Promise.reject(new Error("socket exploded")));
    h.verifier.update([probe()], "10.0.0.11");
    await vi.advanceTimersByTimeAsync(0);
    expect(h.changes[0]!["EgressPolicy/shop/web"]).toMatchObject({ result: "error", error: "socket exploded" });
    h.verifier.stop();
  });

  it("never runs two probes of a policy at once", async () => {
    vi.useFakeTimers();
    let release: (() => void) | undefined;
    const h = harness(
      () =>
        new Promise<ProbeAnswer>((r) => {
          release = () => r({ seen: "192.0.2.10" });
        }),
    );
    h.verifier.update([probe()], "10.0.0.11");
    await vi.advanceTimersByTimeAsync(0);
    // The plan changes (another instance) while the first probe hangs: the new one waits for it.
    h.verifier.update([probe({ instance: "shared/gw-b", expected: ["192.0.2.20"] })], "10.0.0.11");
    await vi.advanceTimersByTimeAsync(5_000);
    expect(h.requests).toHaveLength(1);
    release!();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.requests).toHaveLength(2);
    release!();
    await vi.advanceTimersByTimeAsync(0);
    // The first answer belonged to the old plan and is dropped; the second is judged against gw-b.
    expect(h.changes.map((c) => c["EgressPolicy/shop/web"]?.result)).toEqual(["mismatch"]);
    expect(h.changes[0]!["EgressPolicy/shop/web"]).toMatchObject({ instance: "shared/gw-b", seen: "192.0.2.10" });
    h.verifier.stop();
  });

  it("forgets a policy no longer probed here", async () => {
    vi.useFakeTimers();
    const h = harness(async () => ({ seen: "192.0.2.10" }));
    h.verifier.update([probe()], "10.0.0.11");
    await vi.advanceTimersByTimeAsync(0);
    h.verifier.update([], "10.0.0.11");
    expect(h.removed).toEqual(["EgressPolicy/shop/web"]);
    expect(h.changes.at(-1)).toEqual({});
    expect(h.verifier.results()).toEqual({});
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.requests).toHaveLength(1);
  });
});
