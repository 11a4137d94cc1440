import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { startDigitalOceanStandin, type DigitalOceanStandin } from "./do-standin/index.js";
import { standinMetadataUrl } from "./do-standin/metadata.js";
import { runCommand } from "../util/exec.js";
import {
  addNamespace,
  addVethPair,
  admitVpcSource,
  deleteNamespace,
  gatewayBootSysctls,
  killNamespaceProcesses,
} from "./netns.js";
import { spawnCli } from "./paths.js";
import { LAB_API_ADDRESS, LAB_NETWORK, type LabTopology } from "./topology.js";
import type { LabConfig } from "./config.js";

/**
 * The lab's cloud: the DigitalOcean API stand-in plus a "hypervisor" that makes its droplets
 * real. The controller creates gateway droplets through the API as it would on DigitalOcean;
 * for each droplet that becomes active the hypervisor builds a host namespace with the droplet's
 * private and public addresses on the lab's VPC and public segments and does what cloud-init
 * does there: it reads the gateway's name from the droplet's user data and starts the gateway
 * agent and the BFD health responder. A destroyed or powered-off droplet's namespace goes away.
 * The lab's Internet plays DigitalOcean's edge: a reserved IP is not on any droplet's interface;
 * traffic to it is translated to the anchor IP of the droplet that holds it, and traffic from that
 * anchor IP (sent via the anchor gateway) leaves as the reserved IP. Gateway agents run with
 * --egress-via-anchor and learn their anchor from the droplet metadata service, as on DigitalOcean.
 *
 * Everything stays inside the lab: the stand-in listens on loopback only, droplets are
 * namespaces on the lab's bridges, and their only default route is the lab's Internet.
 */

/** Where the stand-in puts droplets and reserved IPs in the lab (see LAB_NETWORK). */
export const LAB_CLOUD = {
  region: "nyc3",
  size: "s-1vcpu-1gb",
  /** The tag the lab's node droplets carry; gateway firewalls admit it. */
  nodeTag: "lab-node",
  clusterId: "lab",
  vpcName: "lab-vpc",
  /** Gateway droplets get .150-.199 of the VPC and of the public segment. */
  dropletVpcAddresses: hostRange("10.0.0.", 150, 199),
  dropletPublicAddresses: hostRange("203.0.113.", 150, 199),
  /** How long a new droplet stays `new` (booting) and how long an IP action takes, in the stand-in. */
  dropletBootMs: 1_500,
  actionDurationMs: 500,
  /** The stand-in hands out anchor IPs from 10.20.0.0/16; its metadata names this gateway for them. */
  anchorGateway: "10.20.0.1",
  anchorPrefix: 16,
  /** Droplets reach the metadata service here (a relay in the control-plane namespace). */
  metadataPort: 8169,
} as const;

/** The edge's 1:1 NAT between reserved IPs and anchor IPs, in the Internet namespace. */
const EDGE_TABLE = "lab_edge";
function edgeTable(pairs: ReadonlyMap<string, string>): string {
  const elements = (from: (r: string, a: string) => string) =>
    pairs.size ? `elements = { ${[...pairs].map(([r, a]) => from(r, a)).join(", ")} }` : "";
  return `table ip ${EDGE_TABLE} {
  map reserved_to_anchor { type ipv4_addr : ipv4_addr; ${elements((r, a) => `${r} : ${a}`)}; }
  map anchor_to_reserved { type ipv4_addr : ipv4_addr; ${elements((r, a) => `${a} : ${r}`)}; }
  chain in_dnat { type nat hook prerouting priority dstnat; policy accept; dnat ip to ip daddr map @reserved_to_anchor; }
  chain local_dnat { type nat hook output priority -100; policy accept; dnat ip to ip daddr map @reserved_to_anchor; }
  chain out_snat { type nat hook postrouting priority srcnat; policy accept; snat ip to ip saddr map @anchor_to_reserved; }
  chain local_snat { type nat hook input priority 100; policy accept; snat ip to ip saddr map @anchor_to_reserved; }
}
`;
}

/** What the cloud process tells the rest of the lab (file `cloud.json` in the lab's folder). */
export interface LabCloudRecord {
  url: string;
  tokenFile: string;
  vpcUuid: string;
  /** Node name -> droplet id (the nodes' providerID is digitalocean://<id>). */
  nodeDroplets: Record<string, number>;
  /** Gateway droplets that run as namespaces now. */
  droplets: LabDroplet[];
  /** Reserved IP -> droplet id holding it (null: unassigned). */
  reservedIPs: Record<string, number | null>;
}

export interface LabDroplet {
  id: number;
  name: string;
  gateway: string;
  netns: string;
  vpcIP: string;
  publicIP: string;
  anchorIP: string | undefined;
  /** Processes started in it (the agent and the responder), for the lab's kill commands. */
  pids: { agent: number; health: number };
}

export function readCloudRecord(dir: string): LabCloudRecord | undefined {
  const file = join(dir, "cloud.json");
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, "utf8")) as LabCloudRecord;
}

/** The gateway name the controller's user data carries (the default writes GATEWAY=<name>). */
export function gatewayFromUserData(userData: string | undefined): string | undefined {
  if (!userData) return undefined;
  try {
    const doc = parse(userData) as { write_files?: { path?: string; content?: string }[] } | null;
    for (const f of doc?.write_files ?? []) {
      const m = f.path === "/etc/static-egress/gateway" ? /^GATEWAY=(\S+)$/m.exec(f.content ?? "") : null;
      if (m) return m[1];
    }
  } catch {
    /* not YAML: fall through to the plain search */
  }
  return /^\s*GATEWAY=([a-z0-9.-]+)\s*$/m.exec(userData)?.[1];
}

export interface LabCloudOptions {
  dir: string;
  topology: LabTopology;
  config: LabConfig;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /** Reconcile period (default 100 ms). */
  everyMs?: number;
}

interface Realized extends LabDroplet {
  children: ChildProcess[];
}

export class LabCloud {
  private standin: DigitalOceanStandin | undefined;
  private readonly realized = new Map<number, Realized>();
  /** Reserved IP -> anchor IP of its holder, as the edge translates now. */
  private edge = new Map<string, string>();
  private record!: LabCloudRecord;
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private stopped = false;
  private vethSeq = 0;

  constructor(private readonly opts: LabCloudOptions) {}

  async start(): Promise<LabCloudRecord> {
    const reservedIPs = this.opts.config.gateways.flatMap((g) => g.digitalocean?.reservedIPs ?? []);
    // Free until the controller allocates them (apps' gateways); handed out after the ones above.
    const allocatable = this.opts.config.apps?.digitalocean?.addresses ?? [];
    this.standin = await startDigitalOceanStandin({
      dropletBootMs: LAB_CLOUD.dropletBootMs,
      actionDurationMs: LAB_CLOUD.actionDurationMs,
      addressing: {
        publicAddresses: [...LAB_CLOUD.dropletPublicAddresses],
        reservedAddresses: [...reservedIPs, ...allocatable],
        vpcs: [
          {
            region: LAB_CLOUD.region,
            name: LAB_CLOUD.vpcName,
            ipRange: LAB_NETWORK.vpcCidr,
            isDefault: true,
            addresses: [...LAB_CLOUD.dropletVpcAddresses],
          },
        ],
      },
    });
    const state = this.standin.state;
    const vpc = state.vpcs().find((v) => v["name"] === LAB_CLOUD.vpcName)!;
    // The account as the user has it before installing static-egress: the cluster's node
    // droplets (tagged) and the reserved IPs the lab file names.
    const nodeDroplets: Record<string, number> = {};
    for (const n of this.opts.topology.nodes) {
      const d = state.createDroplet({
        name: n.name,
        region: LAB_CLOUD.region,
        size: LAB_CLOUD.size,
        image: "debian-12-x64",
        tags: [LAB_CLOUD.nodeTag],
        vpc_uuid: String(vpc["id"]),
        addresses: { privateIp: n.vpcIP, publicIp: n.publicIP },
      });
      nodeDroplets[n.name] = Number(d["id"]);
    }
    for (const _ of reservedIPs) state.createReservedIP({ region: LAB_CLOUD.region });
    // The anchor gateway lives on the Internet's side of the public segment.
    await runCommand("ip", [
      "-n",
      this.opts.topology.internet,
      "addr",
      "add",
      `${LAB_CLOUD.anchorGateway}/${LAB_CLOUD.anchorPrefix}`,
      "dev",
      "eth0",
    ]);
    await runCommand("ip", ["netns", "exec", this.opts.topology.internet, "nft", "-f", "-"], {
      input: edgeTable(this.edge),
    });
    // A route for each reserved IP lets the Internet's own answers leave; the edge's NAT then
    // sends them to the holder's anchor (an unassigned IP goes nowhere).
    for (const ip of [...reservedIPs, ...allocatable])
      await runCommand("ip", ["-n", this.opts.topology.internet, "route", "add", `${ip}/32`, "dev", "eth0"]);
    const tokenFile = join(this.opts.dir, "digitalocean-token");
    writeFileSync(tokenFile, this.standin.token, { mode: 0o600 });
    this.record = {
      url: this.standin.url,
      tokenFile,
      vpcUuid: String(vpc["id"]),
      nodeDroplets,
      droplets: [],
      reservedIPs: {},
    };
    this.save();
    this.timer = setInterval(() => void this.tick(), this.opts.everyMs ?? 100);
    return this.record;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    for (const r of this.realized.values()) for (const c of r.children) c.kill("SIGKILL");
    await this.standin?.close();
  }

  private save(): void {
    const file = join(this.opts.dir, "cloud.json");
    writeFileSync(`${file}.tmp`, JSON.stringify(this.record, null, 2));
    renameSync(`${file}.tmp`, file);
  }

  private async tick(): Promise<void> {
    if (this.busy || this.stopped || !this.standin) return;
    this.busy = true;
    try {
      await this.reconcile(this.standin);
    } catch (e) {
      this.opts.log("reconcile failed; retrying", { err: (e as Error).message });
    } finally {
      this.busy = false;
    }
  }

  private async reconcile(standin: DigitalOceanStandin): Promise<void> {
    const raw = standin.state.raw;
    raw.tick();
    const nodeIds = new Set(Object.values(this.record.nodeDroplets));
    const running = new Map<
      number,
      { name: string; privateIp: string; publicIp: string; anchorIp: string | undefined; userData: string | undefined }
    >();
    for (const d of raw.droplets.values()) {
      if (nodeIds.has(d.id) || !d.publicIp || raw.dropletStatus(d) !== "active") continue;
      running.set(d.id, {
        name: d.name,
        privateIp: d.privateIp,
        publicIp: d.publicIp,
        anchorIp: d.anchorIp,
        userData: d.userData,
      });
    }
    let changed = false;
    for (const [id, r] of this.realized) {
      if (running.has(id)) continue;
      await this.unrealize(r);
      this.realized.delete(id);
      changed = true;
    }
    for (const [id, d] of running) {
      if (this.realized.has(id)) continue;
      const r = await this.realize(id, d);
      if (r) {
        this.realized.set(id, r);
        changed = true;
      }
    }
    // The cloud's edge: each reserved IP is translated to the anchor IP of the droplet holding it.
    const reserved: Record<string, number | null> = {};
    const edge = new Map<string, string>();
    for (const ip of raw.listIps()) {
      reserved[ip.ip] = ip.dropletId;
      const anchor = ip.dropletId !== null ? this.realized.get(ip.dropletId)?.anchorIP : undefined;
      if (anchor) edge.set(ip.ip, anchor);
    }
    if (JSON.stringify([...edge]) !== JSON.stringify([...this.edge])) {
      // One transaction: the table is replaced as a whole, so no packet sees half a move.
      await runCommand("ip", ["netns", "exec", this.opts.topology.internet, "nft", "-f", "-"], {
        input: `delete table ip ${EDGE_TABLE}\n${edgeTable(edge)}`,
      });
      this.opts.log("edge translates reserved IPs", { edge: Object.fromEntries(edge) });
      this.edge = edge;
      changed = true;
    }
    if (changed || JSON.stringify(reserved) !== JSON.stringify(this.record.reservedIPs)) {
      this.record.droplets = [...this.realized.values()].map(({ children: _, ...d }) => d);
      this.record.reservedIPs = reserved;
      this.save();
    }
  }

  /** Boots a droplet: its host namespace on both segments, then what cloud-init would start. */
  private async realize(
    id: number,
    d: {
      name: string;
      privateIp: string;
      publicIp: string;
      anchorIp: string | undefined;
      userData: string | undefined;
    },
  ): Promise<Realized | undefined> {
    const t = this.opts.topology;
    const { name, privateIp: vpcIP, publicIp: publicIP, anchorIp: anchorIP } = d;
    const gateway = gatewayFromUserData(d.userData);
    if (!gateway) {
      this.opts.log("droplet has no gateway in its user data; leaving it unbooted", { id, name });
      return undefined;
    }
    const netns = `${t.prefix}-d${id}`;
    const seq = this.vethSeq++;
    await addNamespace(netns);
    await addVethPair({ ns: netns, name: "eth0" }, { ns: t.fabric, name: `d${seq}v` });
    await addVethPair({ ns: netns, name: "eth1" }, { ns: t.fabric, name: `d${seq}p` });
    await runCommand("ip", ["-n", t.fabric, "link", "set", `d${seq}v`, "master", "vpc"]);
    await admitVpcSource(t.fabric, `d${seq}v`, vpcIP);
    await runCommand("ip", ["-n", t.fabric, "link", "set", `d${seq}p`, "master", "public"]);
    await runCommand("ip", ["-n", netns, "addr", "add", `${vpcIP}/24`, "dev", "eth0"]);
    await runCommand("ip", ["-n", netns, "addr", "add", `${publicIP}/24`, "dev", "eth1"]);
    // As on DigitalOcean: the anchor IP sits on the public interface beside the public IP.
    if (anchorIP)
      await runCommand("ip", ["-n", netns, "addr", "add", `${anchorIP}/${LAB_CLOUD.anchorPrefix}`, "dev", "eth1"]);
    await runCommand("ip", ["-n", netns, "route", "add", "default", "via", LAB_NETWORK.internetRouter]);
    // The default user data's sysctls.
    await gatewayBootSysctls(netns);
    const health = this.spawnIn(netns, `health-${name}`, [
      "agent",
      "health-responder",
      "--listen",
      vpcIP,
      "--metrics-port",
      "9465",
      "--metrics-address",
      vpcIP,
      "--wait-for-datapath",
    ]);
    const agent = this.spawnIn(netns, `agent-${name}`, [
      "agent",
      "gateway",
      "--instance",
      `${gateway}/${name}`,
      "--source",
      "kubernetes",
      "--kubeconfig",
      join(this.opts.dir, "kubeconfig-gateway"),
      "--config",
      join(this.opts.dir, "agent-config.yaml"),
      "--metrics-port",
      "9464",
      // The lab's pace (default 60 s): policies' traffic and apps' usage within seconds.
      "--traffic-report-seconds",
      "2",
      "--egress-via-anchor",
      "--metadata-url",
      standinMetadataUrl(`http://${LAB_API_ADDRESS}:${LAB_CLOUD.metadataPort}`, id),
    ]);
    this.opts.log("droplet booted as a gateway namespace", { id, name, gateway, netns, vpcIP, publicIP, anchorIP });
    return {
      id,
      name,
      gateway,
      netns,
      vpcIP,
      publicIP,
      anchorIP,
      pids: { agent: agent.pid ?? -1, health: health.pid ?? -1 },
      children: [agent, health],
    };
  }

  private async unrealize(r: Realized): Promise<void> {
    // A destroyed droplet stops at once. Cut its links first: while the kernel tears a namespace
    // down, its nftables rules can be gone before its interfaces are, and it would forward pods'
    // packets without SNAT for that moment (seen in bench/droplet-replacement.ts).
    for (const dev of ["eth0", "eth1"])
      await runCommand("ip", ["-n", r.netns, "link", "set", dev, "down"]).catch(() => undefined);
    for (const c of r.children) c.kill("SIGKILL");
    await killNamespaceProcesses(r.netns);
    await deleteNamespace(r.netns); // its veth ends in the fabric go with it
    this.opts.log("droplet gone; its namespace is removed", { id: r.id, name: r.name });
  }

  private spawnIn(netns: string, name: string, args: string[]): ChildProcess {
    return spawnCli(netns, args, join(this.opts.dir, "logs", `${name}.log`), false);
  }
}

function hostRange(prefix: string, from: number, to: number): string[] {
  const out: string[] = [];
  for (let i = from; i <= to; i++) out.push(`${prefix}${i}`);
  return out;
}
