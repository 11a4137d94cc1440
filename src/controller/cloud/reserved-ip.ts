import { ReservedIPConflictError, ReservedIPNotFoundError, type CloudProvider } from "../../cloud/provider.js";
import { statusOf } from "../../kube/client.js";
import { silentLogger, type Logger } from "../../util/log.js";
import type { ControllerPlugin, ReconcileContext } from "../controller.js";
import { KeyedJobs } from "./keyed-jobs.js";
import {
  decideReservedIPs,
  eligibleHosts,
  namespaceGrants,
  portsOfIP,
  readClaims,
  type Claim,
  type Decision,
  type PodRef,
} from "./reserved-ip-rules.js";
import {
  decideServiceExternalIPs,
  MANAGED_EXTERNAL_IPS_KEY,
  nodeAnchors,
  type ServiceDecision,
  type ServiceProblem,
  type ServiceRef,
} from "./service-external-ips.js";
import type { Clock } from "../../util/clock.js";
import { EventRecorder } from "../../kube/events.js";

export interface ReservedIPAssignment {
  ip: string;
  host: string;
  from: string | undefined;
  pod: PodRef;
  /** When the plugin decided to move it, and when the provider confirmed it done (ms since epoch). */
  decidedAt: number;
  doneAt: number;
}

export interface ReservedIPFollowerOptions {
  provider: CloudProvider;
  /**
   * Cluster id for the service firewalls (annotation staticegress.io/reserved-ip-ports); without
   * it that annotation is ignored.
   */
  clusterId?: string;
  logger?: Logger;
  now?: Clock["now"];
  /** Re-read the holder of an IP that looks settled at most this often (default 60 s). */
  holderTtlMs?: number;
  /** Leave an IP that cannot be followed (missing, conflict) alone this long unless its pods change (default 60 s). */
  parkMs?: number;
  /** Same for an IP blocked because every candidate droplet holds another IP (default 10 s). */
  blockedParkMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Record Events on the pods (default true). */
  events?: boolean;
  /** Called after every completed move (benchmarks, metrics). */
  onAssigned?: (a: ReservedIPAssignment) => void;
  /**
   * Pods may ask only for IPs their Namespace was granted (annotation staticegress.io/reserved-ips;
   * default true). false: any pod may ask for any IP (one tenant could take another's IP).
   */
  requireNamespaceGrant?: boolean;
  /**
   * Keep the externalIPs of Services that ask for a reserved IP in step with its holder's anchor
   * IP (service-external-ips.ts; default true). Needs the controller's source to watch Services
   * (KubeSource option `serviceExternalIPs`); without that it sees no Service and does nothing.
   */
  serviceExternalIPs?: boolean;
  /** While a Service patch is refused with 409 (our cache is behind), wait this long and retry (default 100 ms, 5 tries). */
  serviceConflictRetryMs?: number;
}

interface IpState {
  holder: string | undefined;
  readAt: number;
  /** Eligible hosts the last completed decision was made for. */
  decidedFor?: string;
  /** Do not look at the IP before `until` unless its eligible hosts change from `sig`. */
  parked?: { until: number; sig: string };
  /** Eligible hosts when the last run failed (a retry is pending). */
  failedSig?: string;
}

/**
 * Keeps each requested reserved IP on the droplet of a node that runs a Running and Ready pod for
 * it (rules in reserved-ip-rules.ts). Reads pods and nodes from the controller's informers; reads
 * the current holder from the cloud before every decision to move (never from memory), and
 * otherwise re-reads a settled holder only every `holderTtlMs`, so a quiet cluster costs one API
 * call per IP per minute. Each IP's work runs in the background (an assign action takes seconds),
 * one run per IP at a time; a change during a run makes one more run with the newest pods.
 *
 * IPs that are egress IPs of an EgressGateway are refused: those belong to the gateway fleet.
 */
export class ReservedIPFollower implements ControllerPlugin {
  readonly name = "digitalocean-reserved-ip";
  private readonly jobs: KeyedJobs;
  private readonly log: Logger;
  private readonly now: Clock["now"];
  private claims: Claim[] = [];
  private byIP = new Map<string, Claim[]>();
  private readonly state = new Map<string, IpState>();
  /** Per IP: the service firewall as last ensured ("droplet|ports"), absent when there is none. */
  private readonly firewalls = new Map<string, string>();
  /** The service firewalls a previous run left were looked up (once per start). */
  private firewallsAdopted = false;
  private adopting = false;
  /** Last message reported per pod (one Event per distinct message). */
  private readonly reported = new Map<string, string>();
  /** IPs being assigned now: their Services list both the old and the new holder's anchors. */
  private readonly moving = new Map<string, { from: string | undefined; to: string }>();
  private allClaims: Claim[] = [];
  /** Problems last reported per Service (one Event per distinct problem). */
  private readonly reportedServices = new Map<string, Set<string>>();
  private ctx: ReconcileContext | undefined;

  constructor(private readonly opts: ReservedIPFollowerOptions) {
    this.log = (opts.logger ?? silentLogger).child({ plugin: this.name });
    this.now = opts.now ?? Date.now;
    this.jobs = new KeyedJobs({
      work: (ip) => this.work(ip),
      logger: this.log,
      retryBaseMs: opts.retryBaseMs ?? 500,
      retryMaxMs: opts.retryMaxMs ?? 10_000,
    });
  }

  reconcile(ctx: ReconcileContext): Promise<void> {
    this.ctx = ctx;
    const grants = this.opts.requireNamespaceGrant === false ? undefined : namespaceGrants(ctx.source.raw("Namespace"));
    const { claims, problems } = readClaims(ctx.source.raw("Pod"), ctx.source.raw("Node"), grants);
    this.allClaims = claims;
    const gatewayIPs = gatewayEgressIPs(ctx);
    this.claims = claims.filter((c) => {
      const gw = gatewayIPs.get(c.ip);
      if (gw)
        problems.push({
          pod: c.pod,
          message: `${c.ip} is an egress IP of EgressGateway ${gw}; it is not moved to pods`,
        });
      return !gw;
    });
    this.byIP = new Map();
    for (const c of this.claims) this.byIP.set(c.ip, [...(this.byIP.get(c.ip) ?? []), c]);
    for (const p of problems) this.reportPod(p.pod, "Warning", p.reason ?? "ReservedIPRequestInvalid", p.message);

    const now = this.now();
    for (const [ip, ipClaims] of this.byIP) {
      const hosts = eligibleHosts(ipClaims).map((e) => e.host);
      const sig = hosts.join(",");
      const st = this.state.get(ip);
      if (st?.parked && now < st.parked.until && st.parked.sig === sig) continue;
      // Nothing to do until the holder is due for a re-read, as long as the holder still runs an
      // eligible pod, or the eligible nodes are the ones the last decision saw (e.g. none at all).
      const settled =
        st !== undefined &&
        now - st.readAt < (this.opts.holderTtlMs ?? 60_000) &&
        ((st.holder !== undefined && hosts.includes(st.holder)) || st.decidedFor === sig) &&
        this.firewallWanted(st.holder, ipClaims) === (this.firewalls.get(ip) ?? "");
      if (settled && !this.jobs.isBusy(ip)) continue;
      if (this.jobs.isRunning(ip))
        this.jobs.schedule(ip); // once more afterwards, with these pods
      else if (!this.jobs.isBusy(ip)) this.jobs.schedule(ip);
      else if (st?.failedSig !== sig) this.jobs.schedule(ip); // retry pending, but the pods changed: now
    }
    for (const ip of [...this.state.keys()]) if (!this.byIP.has(ip) && !this.jobs.isBusy(ip)) this.state.delete(ip);
    // No pod asks for the IP any more: its firewall goes.
    for (const ip of this.firewalls.keys()) if (!this.byIP.has(ip) && !this.jobs.isBusy(ip)) this.jobs.schedule(ip);
    if (!this.firewallsAdopted && !this.adopting) this.adoptFirewalls();
    const pods = new Set(claims.map((c) => podKey(c.pod)).concat(problems.map((p) => podKey(p.pod))));
    for (const k of [...this.reported.keys()]) if (!pods.has(k)) this.reported.delete(k);
    return this.syncServices(undefined);
  }

  /**
   * Droplets whose anchors the IP's Services list now: the holder; both holders while it moves;
   * none when unassigned; undefined when the holder has not been read yet.
   */
  anchorTargets(ip: string): string[] | undefined {
    const m = this.moving.get(ip);
    if (m) return [...(m.from !== undefined && m.from !== m.to ? [m.from] : []), m.to];
    const st = this.state.get(ip);
    if (!st || st.readAt === 0) return undefined;
    return st.holder !== undefined ? [st.holder] : [];
  }

  /**
   * Brings the externalIPs of the Services asking for `onlyIP` (all when undefined) in step, and
   * reports their problems. 404 and 409 are left to the next pass (a 409 is retried briefly first:
   * the cache is usually just behind our own last patch). Other errors are thrown after the rest.
   */
  private async syncServices(onlyIP: string | undefined): Promise<void> {
    const ctx = this.ctx;
    if (!ctx || this.opts.serviceExternalIPs === false) return;
    const decide = (): ServiceDecision[] =>
      decideServiceExternalIPs({
        services: ctx.source.raw("Service"),
        anchors: nodeAnchors(ctx.source.raw("Node")),
        claims: this.allClaims,
        targets: (ip) => this.anchorTargets(ip),
      }).filter((d) => onlyIP === undefined || d.ip === onlyIP);
    const decisions = decide();
    if (onlyIP === undefined) {
      for (const d of decisions) this.reportService(d.service, d.problems);
      const live = new Set(decisions.map((d) => serviceKey(d.service)));
      for (const k of [...this.reportedServices.keys()]) if (!live.has(k)) this.reportedServices.delete(k);
    }
    let failure: unknown;
    for (const first of decisions) {
      if (!first.patch) continue;
      let d: ServiceDecision | undefined = first;
      for (let attempt = 1; d?.patch; attempt++) {
        try {
          await ctx.client.patchServiceExternalIPs(
            d.service.namespace,
            d.service.name,
            d.patch.externalIPs,
            { [MANAGED_KEY]: d.patch.managed },
            d.resourceVersion,
          );
          this.log.info(
            { service: serviceKey(d.service), ip: d.ip, externalIPs: d.patch.externalIPs },
            "service externalIPs follow the reserved IP",
          );
          break;
        } catch (err) {
          const code = statusOf(err);
          if (code === 409 && attempt < 5) {
            await new Promise((r) => setTimeout(r, this.opts.serviceConflictRetryMs ?? 100));
            d = decide().find((x) => serviceKey(x.service) === serviceKey(first.service));
            continue;
          }
          if (code === 404 || code === 409) break;
          this.log.warn(
            { service: serviceKey(d.service), err: (err as Error).message },
            "could not patch the Service's externalIPs",
          );
          failure ??= err;
          break;
        }
      }
    }
    if (failure !== undefined) throw failure;
  }

  private reportService(svc: ServiceRef, problems: readonly ServiceProblem[]): void {
    const key = serviceKey(svc);
    const before = this.reportedServices.get(key) ?? new Set<string>();
    this.reportedServices.set(key, new Set(problems.map((p) => `${p.reason}: ${p.message}`)));
    for (const { reason, message } of problems) {
      if (before.has(`${reason}: ${message}`)) continue;
      this.log.warn({ service: key, reason }, message);
      if (this.opts.events === false || !this.ctx) continue;
      void new EventRecorder(this.ctx.client, this.log).record(
        {
          apiVersion: "v1",
          kind: "Service",
          name: svc.name,
          namespace: svc.namespace,
          ...(svc.uid ? { uid: svc.uid } : {}),
        },
        "Warning",
        reason,
        message,
      );
    }
  }

  /** Service patches around a move must not stop the move: the next pass repairs them. */
  private async syncServicesQuietly(ip: string): Promise<void> {
    try {
      await this.syncServices(ip);
    } catch (err) {
      this.log.warn(
        { ip, err: (err as Error).message },
        "could not update the Services of a moving reserved IP; the next pass retries",
      );
    }
  }

  /** Holder per IP as last read or assigned (for tests and status). */
  holders(): Map<string, string | undefined> {
    return new Map([...this.state].map(([ip, s]) => [ip, s.holder]));
  }

  idle(): Promise<void> {
    return this.jobs.idle();
  }

  /** Objects whose cloud work failed last time and is being retried (metrics). */
  failingJobs(): number {
    return this.jobs.failing();
  }

  async stop(): Promise<void> {
    await this.jobs.stop();
  }

  private async work(ip: string): Promise<void> {
    const claims = this.byIP.get(ip);
    if (!claims) {
      await this.syncFirewall(ip, undefined, []);
      return;
    }
    const sig = eligibleHosts(claims)
      .map((e) => e.host)
      .join(",");
    try {
      await this.follow(ip, sig);
    } catch (err) {
      const st = this.state.get(ip);
      if (st) st.failedSig = sig;
      else this.state.set(ip, { holder: undefined, readAt: 0, failedSig: sig });
      throw err;
    }
  }

  private async follow(ip: string, sig: string): Promise<void> {
    const { provider } = this.opts;
    let holder: string | undefined;
    try {
      holder = await provider.reservedIPHolder(ip);
    } catch (err) {
      if (!(err instanceof ReservedIPNotFoundError)) throw err;
      this.park(ip, undefined, sig, this.opts.parkMs ?? 60_000);
      this.reportIP(
        ip,
        "Warning",
        "ReservedIPNotFound",
        `reserved IP ${ip} does not exist in the DigitalOcean account`,
      );
      return;
    }
    const decidedAt = this.now();
    this.state.set(ip, { holder, readAt: decidedAt });
    // The other IPs' holders as last known: enough to avoid aiming at a droplet that holds one.
    const holders = new Map<string, string | undefined>([...this.state].map(([k, s]) => [k, s.holder]));
    const decision = decideReservedIPs(this.claims, holders).find((d): d is Decision => d.ip === ip);
    const claims = this.byIP.get(ip) ?? [];
    if (!decision || decision.kind === "keep" || decision.kind === "hold") {
      if (decision?.kind === "hold")
        this.log.debug({ ip, holder, reason: decision.reason }, "reserved IP stays where it is");
      await this.syncFirewall(ip, holder, claims);
      this.state.set(ip, { holder, readAt: decidedAt, decidedFor: sig });
      return;
    }
    if (decision.kind === "blocked") {
      this.park(ip, holder, sig, this.opts.blockedParkMs ?? 10_000);
      this.reportIP(ip, "Warning", "ReservedIPBlocked", `${ip}: ${decision.reason}`);
      return;
    }
    this.log.info(
      { ip, from: holder, to: decision.host, pod: `${decision.pod.namespace}/${decision.pod.name}` },
      "moving reserved IP",
    );
    // Services list the new holder's anchor before traffic can arrive there, the old one's until it stops.
    this.moving.set(ip, { from: holder, to: decision.host });
    try {
      await this.syncServicesQuietly(ip);
      await provider.assignReservedIP(ip, decision.host);
    } catch (err) {
      this.moving.delete(ip);
      if (!(err instanceof ReservedIPConflictError)) throw err;
      this.park(ip, holder, sig, this.opts.parkMs ?? 60_000);
      this.reportIP(ip, "Warning", "ReservedIPBlocked", err.message);
      await this.syncServicesQuietly(ip);
      return;
    }
    const doneAt = this.now();
    this.state.set(ip, { holder: decision.host, readAt: doneAt, decidedFor: sig });
    this.moving.delete(ip);
    await this.syncServicesQuietly(ip);
    const node = nodeOn(this.byIP.get(ip), decision.host);
    this.reportPod(
      decision.pod,
      "Normal",
      "ReservedIPAssigned",
      `${ip} assigned to droplet ${decision.host}${node ? ` (node ${node})` : ""}${holder ? `, moved from droplet ${holder}` : ""}`,
    );
    this.opts.onAssigned?.({ ip, host: decision.host, from: holder, pod: decision.pod, decidedAt, doneAt });
    await this.syncFirewall(ip, decision.host, claims);
  }

  /**
   * The service firewalls are tracked in memory; after a restart, those of a previous run are
   * found again among the account's reserved IPs, so that one whose last pod left meanwhile is
   * removed (and one still wanted is brought up to date) instead of being forgotten.
   */
  private adoptFirewalls(): void {
    const clusterId = this.opts.clusterId;
    if (clusterId === undefined) {
      this.firewallsAdopted = true;
      return;
    }
    this.adopting = true;
    void (async () => {
      const ips = await this.opts.provider.listReservedIPs();
      const found = new Set(await this.opts.provider.existingServiceFirewalls(clusterId, ips.map(firewallKey)));
      for (const ip of ips) {
        if (!found.has(firewallKey(ip)) || this.firewalls.has(ip)) continue;
        this.firewalls.set(ip, "adopted"); // matches no wanted state: the next pass converges it
        this.log.info({ ip }, "found the reserved IP's service firewall of a previous run");
      }
      this.firewallsAdopted = true;
      if (found.size > 0) this.ctx?.requestPass?.(0);
    })()
      .catch((err: unknown) =>
        this.log.warn(
          { err: (err as Error).message },
          "could not look up service firewalls of a previous run; retrying at the next pass",
        ),
      )
      .finally(() => {
        this.adopting = false;
      });
  }

  /** "droplet|ports" of the firewall the IP should have, "" for none. */
  private firewallWanted(holder: string | undefined, claims: readonly Claim[]): string {
    const ports = portsOfIP(claims);
    return this.opts.clusterId !== undefined && holder !== undefined && ports.length > 0
      ? `${holder}|${JSON.stringify(ports)}`
      : "";
  }

  /**
   * Opens the ports the IP's pods ask for on its holder, in a firewall of our own (DigitalOcean
   * firewalls add up, so the platform's firewall stays as it is); removes it when none are asked.
   */
  private async syncFirewall(ip: string, holder: string | undefined, claims: readonly Claim[]): Promise<void> {
    const clusterId = this.opts.clusterId;
    if (clusterId === undefined) return;
    const want = this.firewallWanted(holder, claims);
    const have = this.firewalls.get(ip) ?? "";
    if (want === have) return;
    const key = firewallKey(ip);
    if (want === "") {
      await this.opts.provider.deleteServiceFirewall(clusterId, key);
      this.firewalls.delete(ip);
      this.log.info({ ip }, "removed the reserved IP's service firewall");
      return;
    }
    await this.opts.provider.ensureServiceFirewall({
      clusterId,
      name: key,
      hostIds: [holder!],
      ports: portsOfIP(claims),
    });
    this.firewalls.set(ip, want);
    this.log.info({ ip, droplet: holder }, "service firewall opens the reserved IP's ports on its holder");
  }

  private park(ip: string, holder: string | undefined, sig: string, ms: number): void {
    this.state.set(ip, { holder, readAt: this.now(), parked: { until: this.now() + ms, sig } });
  }

  private reportIP(ip: string, type: "Normal" | "Warning", reason: string, message: string): void {
    this.log.warn({ ip, reason }, message);
    for (const c of this.byIP.get(ip) ?? []) this.reportPod(c.pod, type, reason, message);
  }

  private reportPod(pod: PodRef, type: "Normal" | "Warning", reason: string, message: string): void {
    const key = podKey(pod);
    if (this.reported.get(key) === `${reason}: ${message}`) return;
    this.reported.set(key, `${reason}: ${message}`);
    if (type === "Warning") this.log.warn({ pod: key, reason }, message);
    if (this.opts.events === false || !this.ctx) return;
    void new EventRecorder(this.ctx.client, this.log).record(
      { apiVersion: "v1", kind: "Pod", name: pod.name, namespace: pod.namespace, ...(pod.uid ? { uid: pod.uid } : {}) },
      type,
      reason,
      message,
    );
  }
}

const MANAGED_KEY = MANAGED_EXTERNAL_IPS_KEY;

function serviceKey(s: ServiceRef): string {
  return `${s.namespace}/${s.name}`;
}

function podKey(p: PodRef): string {
  return `${p.namespace}/${p.name}`;
}

/** Node name of the claim on that droplet, for messages. */
function nodeOn(list: readonly Claim[] | undefined, host: string): string | undefined {
  return list?.find((c) => c.hostId === host)?.node;
}

/** Every egress IP of every EgressGateway (spec and status), with the gateway's name. */
function gatewayEgressIPs(ctx: ReconcileContext): Map<string, string> {
  const out = new Map<string, string>();
  type Gw = {
    metadata?: { name?: string };
    spec?: { static?: { instances?: { egressIPs?: string[] }[] }; digitalocean?: { reservedIPs?: string[] } };
    status?: { instances?: { egressIPs?: string[] }[] };
  };
  for (const gw of ctx.source.raw("EgressGateway") as Gw[]) {
    const name = gw.metadata?.name ?? "";
    const ips = [
      ...(gw.spec?.static?.instances ?? []).flatMap((i) => i.egressIPs ?? []),
      ...(gw.spec?.digitalocean?.reservedIPs ?? []),
      ...(gw.status?.instances ?? []).flatMap((i) => i.egressIPs ?? []),
    ];
    for (const ip of ips) if (!out.has(ip)) out.set(ip, name);
  }
  return out;
}

/** The service firewall of a reserved IP (ServiceFirewallSpec.name). */
function firewallKey(ip: string): string {
  return `reserved-ip/${ip}`;
}
