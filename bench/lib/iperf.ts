import { spawn, type ChildProcess } from "node:child_process";
import { waitFor } from "../../src/lab/lab.js";
import { execIn } from "../../src/lab/netns.js";
import { runCommand } from "../../src/util/exec.js";

class IperfError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "IperfError";
  }
}

/** An iperf3 server inside a namespace, with a bounded lifetime even if we are killed. */
export class IperfServer {
  private constructor(
    private readonly child: ChildProcess,
    readonly ns: string,
    readonly port: number,
  ) {}

  get pid(): number | undefined {
    return this.child.pid;
  }

  /**
   * `timeout` bounds the server's life (if this process dies hard, the server still goes); we
   * hold its PID and stop it with SIGTERM, which `timeout` passes on to iperf3.
   */
  static async start(ns: string, opts: { port: number; lifetimeSeconds: number; bind?: string }): Promise<IperfServer> {
    // A UDP test needs `bind`: unbound, the server answers from whichever address routes back.
    const args = [
      "netns",
      "exec",
      ns,
      "timeout",
      String(opts.lifetimeSeconds),
      "iperf3",
      "-s",
      "-p",
      String(opts.port),
    ];
    const child = spawn("ip", opts.bind ? [...args, "-B", opts.bind] : args, { stdio: "ignore" });
    const server = new IperfServer(child, ns, opts.port);
    let exited = false;
    child.once("exit", () => (exited = true));
    await waitFor(
      async () => {
        if (exited) throw new IperfError(`iperf3 server in ${ns} exited before listening`);
        const out = await execIn(ns, "ss", ["-Hltn", `sport = :${opts.port}`]).catch(() => "");
        return out.includes(`:${opts.port}`);
      },
      10_000,
      `iperf3 server in ${ns} did not listen on port ${opts.port}`,
    );
    return server;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null || this.child.pid === undefined) return;
    const gone = new Promise<void>((r) => this.child.once("exit", () => r()));
    try {
      process.kill(this.child.pid, "SIGTERM");
    } catch {
      return;
    }
    const timer = new Promise<"late">((r) => setTimeout(() => r("late"), 3000).unref());
    if ((await Promise.race([gone, timer])) === "late") {
      try {
        process.kill(this.child.pid, "SIGKILL");
      } catch {
        /* gone meanwhile */
      }
    }
  }
}

export interface IperfRun {
  /** Goodput the receiver measured, Gbit/s. */
  gbps: number;
  /** What the sender pushed, Gbit/s. */
  sentGbps: number;
  retransmits: number;
  seconds: number;
  localHost: string;
  remoteHost: string;
  /** CPU use iperf3 reported for the client and the server (percent of one run's wall time, all CPUs). */
  cpuPercent: { client: number; server: number };
  /** UDP runs: datagrams the client sent and the server's socket got (the rest were lost on the way or at the socket). */
  udp?: { sentPackets: number; lostPackets: number };
}

interface IperfJson {
  error?: string;
  start?: { connected?: { local_host?: string; remote_host?: string }[] };
  end?: {
    sum_sent?: { bits_per_second?: number; retransmits?: number; seconds?: number };
    sum_received?: { bits_per_second?: number; seconds?: number; packets?: number; lost_packets?: number };
    sum?: { packets?: number; lost_packets?: number; seconds?: number };
    cpu_utilization_percent?: { host_total?: number; remote_total?: number };
  };
}

/** Parses `iperf3 -J` output of a client run (TCP, or UDP with `udp`). Pure. */
function parseIperfJson(text: string, udp = false): IperfRun {
  let doc: IperfJson;
  try {
    doc = JSON.parse(text) as IperfJson;
  } catch (e) {
    throw new IperfError(`iperf3 printed no JSON: ${text.slice(0, 200)}`, { cause: e });
  }
  if (doc.error) throw new IperfError(`iperf3: ${doc.error}`);
  const received = doc.end?.sum_received?.bits_per_second;
  const sent = doc.end?.sum_sent?.bits_per_second;
  if (received === undefined || sent === undefined)
    throw new IperfError("iperf3 JSON has no end.sum_received / end.sum_sent");
  const conn = doc.start?.connected?.[0];
  // UDP: the server's report of what arrived (iperf3 3.12 puts it in `sum`, later ones in `sum_received`).
  const report = doc.end?.sum_received?.packets !== undefined ? doc.end.sum_received : doc.end?.sum;
  if (udp && (report?.packets === undefined || report.lost_packets === undefined || !report.seconds))
    throw new IperfError("iperf3 JSON of a UDP run has no packets / lost_packets / seconds");
  return {
    ...(udp
      ? {
          udp: {
            sentPackets: report!.packets!,
            lostPackets: report!.lost_packets!,
          },
        }
      : {}),
    gbps: received / 1e9,
    sentGbps: sent / 1e9,
    retransmits: doc.end?.sum_sent?.retransmits ?? 0,
    seconds: doc.end?.sum_received?.seconds ?? 0,
    localHost: conn?.local_host ?? "",
    remoteHost: conn?.remote_host ?? "",
    cpuPercent: {
      client: doc.end?.cpu_utilization_percent?.host_total ?? Number.NaN,
      server: doc.end?.cpu_utilization_percent?.remote_total ?? Number.NaN,
    },
  };
}

/**
 * One run from a client namespace, bounded by iperf3's own duration plus a margin: TCP, or with
 * `udpBytes` UDP datagrams of that payload size sent as fast as the client can (`-b 0`).
 */
export async function runIperfClient(
  ns: string,
  dst: string,
  opts: { port: number; seconds: number; udpBytes?: number },
): Promise<IperfRun> {
  const args = [
    "netns",
    "exec",
    ns,
    "iperf3",
    "-c",
    dst,
    "-p",
    String(opts.port),
    "-t",
    String(opts.seconds),
    "-J",
    "--connect-timeout",
    "3000",
    ...(opts.udpBytes ? ["-u", "-l", String(opts.udpBytes), "-b", "0"] : []),
  ];
  try {
    const { stdout } = await runCommand("ip", args, { timeoutMs: (opts.seconds + 20) * 1000 });
    return parseIperfJson(stdout, opts.udpBytes !== undefined);
  } catch (e) {
    if (e instanceof IperfError) throw e;
    throw new IperfError(`iperf3 -c ${dst} from ${ns} failed: ${(e as Error).message}`, { cause: e });
  }
}
