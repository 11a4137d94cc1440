import { chmodSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect } from "node:net";
import { dirname } from "node:path";
import { podInfo, type KubeObject } from "../../api/objects.js";
import { refused, timedOut, type AgentApi } from "../../cni/client.js";
import { runPlugin, type PluginOutcome } from "../../cni/plugin.js";
import {
  CNI_API,
  parseAddRequest,
  parseCheckRequest,
  parseDelRequest,
  parseExecRequest,
  ProtocolError,
  type AddRequest,
  type AddResponse,
  type CheckRequest,
  type CheckResponse,
  type DelRequest,
  type DelResponse,
  type ExecRequest,
  type HealthResponse,
} from "../../cni/protocol.js";
import { quarantineComment, type QuarantineEntry } from "../../cni/quarantine.js";
import { formatRange, type Range } from "../../util/ipv4.js";
import type { NodePlan } from "../../planner/model.js";
import type { Logger } from "../../util/log.js";
import type { Clock } from "../../util/clock.js";
import { StaticEgressError } from "../../util/errors.js";

/**
 * The node agent's end of the CNI plugin: a small JSON API on a unix socket (mode 0600), and
 * the agent's side of the quarantine. The plugin's ADD returns only after this has answered,
 * so a pod's first packet already meets its programmed datapath.
 *
 * When may a pod leave the quarantine (or skip it)? When the agent can vouch that its datapath
 * holds the pod's addresses: the agent knows the pod, it is bound to this node and alive, and
 * the API either shows no address yet (then the agent uses the one the runtime reported) or
 * shows exactly these. Anything else, and the pod is (or stays) quarantined: no packet of a pod
 * the agent has not judged ever leaves the cluster.
 */

/** What the server needs from the node agent (`NodeAgent` has it). */
export interface CniAgent {
  admitPod(
    req: { namespace: string; name: string; ips: string[] },
    waitForPodMs?: number,
  ): Promise<{ known: boolean; policy: string | undefined }>;
  releasePod(req: { namespace: string; name: string }): Promise<void>;
}

/** The quarantine table (`QuarantineTable`), or a fake. */
export interface QuarantineStore {
  hold(entries: readonly QuarantineEntry[], bootstrapCluster?: readonly Range[]): Promise<{ created: boolean }>;
  release(ips: readonly string[]): Promise<void>;
  list(): Promise<QuarantineEntry[] | undefined>;
  sync(cluster: readonly Range[]): Promise<void>;
}

export interface CniServiceDeps {
  nodeName: string;
  agent: CniAgent;
  /** The agent's cluster view (its source's objects). */
  objects: () => readonly KubeObject[];
  quarantine: QuarantineStore;
  logger: Logger;
  now?: Clock["now"];
  /** How long ADD waits for the pod object to reach the agent's watch (default: the agent's). */
  waitForPodMs?: number;
  /** The quarantine table's rule and cluster ranges are rewritten at least this often. */
  resyncMs?: number;
}

export type Vouch = { ok: true } | { ok: false; reason: string };

/**
 * Whether the agent's datapath holds `ips` for this pod. `strict`: the API itself must show
 * the addresses (the sweep, which has only the quarantine's word for them); otherwise an empty
 * status is fine, since the agent programs the addresses the runtime just reported.
 */
export function vouchFor(
  pod: KubeObject | undefined,
  nodeName: string,
  ips: readonly string[],
  strict: boolean,
): Vouch {
  if (!pod) return { ok: false, reason: "the agent's cluster view has no such pod (yet)" };
  const info = podInfo(pod);
  const key = `${info.namespace}/${info.name}`;
  if ((pod.metadata as { deletionTimestamp?: unknown } | undefined)?.deletionTimestamp)
    return { ok: false, reason: `pod ${key} is being deleted` };
  if (info.nodeName !== nodeName)
    return {
      ok: false,
      reason: `pod ${key} is bound to ${info.nodeName ? `node ${info.nodeName}` : "no node"}, not ${nodeName}`,
    };
  if (info.hostNetwork) return { ok: false, reason: `pod ${key} uses the host network` };
  if (info.phase === "Succeeded" || info.phase === "Failed")
    return { ok: false, reason: `pod ${key} has finished (${info.phase})` };
  const shown = info.ips.filter((ip) => !ip.includes(":"));
  if (shown.length === 0)
    return strict ? { ok: false, reason: `the API shows no address for pod ${key} yet` } : { ok: true };
  const missing = ips.filter((ip) => !shown.includes(ip));
  if (missing.length > 0)
    return {
      ok: false,
      reason: `the API shows ${shown.join(", ")} for pod ${key}, not ${missing.join(", ")} (an earlier sandbox?)`,
    };
  return { ok: true };
}

function isPod(o: KubeObject): boolean {
  return o.apiVersion === "v1" && o.kind === "Pod";
}

/** The CNI requests and the quarantine sweep, as plain async methods (the HTTP layer is below). */
export class CniService {
  private cluster: readonly Range[] | undefined;
  private clusterKey: string | undefined;
  private syncedAt = -Infinity;
  private syncChain: Promise<void> = Promise.resolve();
  private sweeping: Promise<{ released: string[]; kept: number }> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly now: Clock["now"];

  constructor(private readonly deps: CniServiceDeps) {
    this.now = deps.now ?? Date.now;
  }

  private findPod(namespace: string, name: string): KubeObject | undefined {
    return this.deps
      .objects()
      .find((o) => isPod(o) && o.metadata?.name === name && (o.metadata?.namespace ?? "default") === namespace);
  }

  async add(req: AddRequest): Promise<AddResponse> {
    const { agent, quarantine, logger, nodeName } = this.deps;
    const started = this.now();
    const pod = `${req.namespace}/${req.name}`;
    // An earlier attempt (or an earlier pod with this address) may have left the address
    // quarantined. Nothing in the pod runs before ADD answers, so the release can run beside the
    // programming (one process less on the path the runtime waits for); a pod the agent cannot
    // vouch for is held again below, before the answer.
    const [admitted] = await Promise.all([
      agent.admitPod({ namespace: req.namespace, name: req.name, ips: req.ips }, this.deps.waitForPodMs),
      this.releaseHeld(req.ips),
    ]);
    const vouch = admitted.known
      ? vouchFor(this.findPod(req.namespace, req.name), nodeName, req.ips, false)
      : ({ ok: false, reason: `the agent does not know pod ${pod} (yet)` } as const);
    if (vouch.ok) {
      logger.info(
        { pod, ips: req.ips, policy: admitted.policy, ms: this.now() - started },
        "pod programmed for CNI ADD",
      );
      return {
        selected: admitted.policy !== undefined,
        ...(admitted.policy ? { policy: admitted.policy } : {}),
        quarantined: false,
      };
    }
    await quarantine.hold(
      req.ips.map((ip) => ({ ip, comment: quarantineComment(req.namespace, req.name) })),
      this.cluster ?? [],
    );
    logger.warn(
      { pod, ips: req.ips, reason: vouch.reason },
      "pod quarantined: outside traffic dropped until the agent can program it",
    );
    return { selected: false, quarantined: true, reason: vouch.reason };
  }

  /**
   * Releases those of `ips` the quarantine holds. It usually holds none: then this is one read.
   * A deletion costs the kernel's commit about 10 ms more than a read (measured, kernel 6.18),
   * and it would hold up the pod's own divert delta, which waits for the same commit lock. No
   * one adds these addresses meanwhile: the runtime's IPAM gives an address to one sandbox at a
   * time, and this ADD's own hold (below, or the plugin's on a timeout) comes after.
   */
  private async releaseHeld(ips: readonly string[]): Promise<void> {
    const held = new Set(((await this.deps.quarantine.list()) ?? []).map((e) => e.ip));
    const release = ips.filter((ip) => held.has(ip));
    if (release.length > 0) await this.deps.quarantine.release(release);
  }

  async del(req: DelRequest): Promise<DelResponse> {
    await this.deps.agent.releasePod({ namespace: req.namespace, name: req.name });
    return { released: true };
  }

  /** Reads only: admitting CHECK's addresses could overwrite the ones ADD reported. */
  async check(req: CheckRequest): Promise<CheckResponse> {
    const pod = this.findPod(req.namespace, req.name);
    const vouch = vouchFor(pod, this.deps.nodeName, req.ips, false);
    const held = (await this.deps.quarantine.list()) ?? [];
    const quarantined = held.some((e) => req.ips.includes(e.ip));
    return {
      known: pod !== undefined,
      programmed: vouch.ok,
      quarantined,
      ...(!vouch.ok
        ? { reason: vouch.reason }
        : quarantined
          ? { reason: "the agent releases it once the API shows its address" }
          : {}),
    };
  }

  health(): HealthResponse {
    return { ok: true, node: this.deps.nodeName };
  }

  /**
   * A whole CNI call handed over by the shim: the TypeScript plugin's own `runPlugin`, with this
   * service in place of the socket client, so the shim's answer is the plugin's answer and no
   * plugin logic exists twice. The quarantine is the same table the plugin would write.
   */
  exec(req: ExecRequest): Promise<PluginOutcome> {
    return runPlugin(req, {
      agent: (socket, timeoutMs) => new InProcessAgent(this, socket, timeoutMs),
      quarantine: this.deps.quarantine,
      logger: this.deps.logger,
    });
  }

  /** Called with every applied plan: the quarantine lets pods reach what the agent never diverts. */
  onPlan(plan: NodePlan): void {
    const key = plan.neverDivert.map(formatRange).join(",");
    if (key === this.clusterKey) return;
    this.clusterKey = key;
    this.cluster = plan.neverDivert;
    void this.syncTable();
  }

  /** Serialized, so two syncs never race; a failure is logged and retried by the next sweep. */
  private syncTable(): Promise<void> {
    const cluster = this.cluster;
    if (!cluster) return this.syncChain;
    this.syncChain = this.syncChain.then(async () => {
      try {
        await this.deps.quarantine.sync(cluster);
        this.syncedAt = this.now();
      } catch (e) {
        this.syncedAt = -Infinity;
        this.deps.logger.error({ err: (e as Error).message }, "cannot program the quarantine table");
      }
    });
    return this.syncChain;
  }

  /**
   * Releases the quarantined pods the agent can now vouch for (strictly: the API shows the
   * address), after a reconcile that includes them. Overlapping calls share one run.
   */
  sweep(): Promise<{ released: string[]; kept: number }> {
    this.sweeping ??= this.sweepOnce().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async sweepOnce(): Promise<{ released: string[]; kept: number }> {
    const { quarantine, agent, nodeName, logger } = this.deps;
    await this.syncChain;
    if (this.cluster && this.now() - this.syncedAt >= (this.deps.resyncMs ?? 30_000)) await this.syncTable();
    const held = await quarantine.list();
    if (held === undefined) {
      // Someone removed the table: put it back (empty) while we know the cluster's ranges.
      if (this.cluster) await this.syncTable();
      return { released: [], kept: 0 };
    }
    if (held.length === 0) return { released: [], kept: 0 };
    const objects = this.deps.objects();
    const pods = objects.filter(isPod);
    const vouched = new Map<string, { pod: KubeObject; ips: string[] }>();
    for (const entry of held) {
      const pod = identify(entry, pods, nodeName);
      if (!pod || !vouchFor(pod, nodeName, [entry.ip], true).ok) continue;
      const key = `${pod.metadata?.namespace ?? "default"}/${pod.metadata?.name}`;
      vouched.set(key, { pod, ips: [...(vouched.get(key)?.ips ?? []), entry.ip] });
    }
    if (vouched.size === 0) return { released: [], kept: held.length };
    // One reconcile that has seen these pods' addresses must be applied before they go free.
    await Promise.all(
      [...vouched.values()].map(({ pod }) =>
        agent.admitPod(
          {
            namespace: pod.metadata?.namespace ?? "default",
            name: pod.metadata?.name ?? "",
            ips: podInfo(pod).ips.filter((ip) => !ip.includes(":")),
          },
          0,
        ),
      ),
    );
    const released = [...vouched.values()].flatMap((v) => v.ips);
    await quarantine.release(released);
    logger.info(
      { released, pods: [...vouched.keys()] },
      "released pods from quarantine: the agent has programmed them",
    );
    return { released, kept: held.length - released.length };
  }

  /** Sweeps now and then every `intervalMs` until `stop`. */
  start(intervalMs = 1_000): void {
    const run = () =>
      void this.sweep().catch((e: unknown) =>
        this.deps.logger.error({ err: (e as Error).message }, "quarantine sweep failed"),
      );
    run();
    this.timer = setInterval(run, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/**
 * The agent as the plugin sees it when the plugin runs inside the agent: the service's methods
 * behind the socket's request parsers, failing in the words of the socket client (a refusal, or
 * no answer within the plugin's `timeoutMs`), so the plugin decides exactly as it would outside.
 */
class InProcessAgent implements AgentApi {
  constructor(
    private readonly service: CniService,
    private readonly socket: string,
    private readonly timeoutMs: number,
  ) {}

  add(req: AddRequest): Promise<AddResponse> {
    return this.call(CNI_API.add, () => this.service.add(parseAddRequest(req)));
  }

  del(req: DelRequest): Promise<DelResponse> {
    return this.call(CNI_API.del, () => this.service.del(parseDelRequest(req)));
  }

  check(req: CheckRequest): Promise<CheckResponse> {
    return this.call(CNI_API.check, () => this.service.check(parseCheckRequest(req)));
  }

  health(): Promise<HealthResponse> {
    return Promise.resolve(this.service.health());
  }

  private call<T>(path: string, run: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(timedOut(this.socket, this.timeoutMs)), this.timeoutMs);
      Promise.resolve()
        .then(run)
        .then(resolve, (e: unknown) =>
          reject(e instanceof ProtocolError ? refused(path, 400, e.message) : refused(path, 500, (e as Error).message)),
        )
        .finally(() => clearTimeout(timer));
    });
  }
}

/** The pod a quarantine entry belongs to: named by its comment, or else the node's pod with that address. */
function identify(entry: QuarantineEntry, pods: readonly KubeObject[], nodeName: string): KubeObject | undefined {
  const named = entry.comment && !entry.comment.endsWith("...") ? entry.comment.split("/") : undefined;
  if (named?.length === 2) {
    const [ns, name] = named;
    const pod = pods.find((p) => p.metadata?.name === name && (p.metadata?.namespace ?? "default") === ns);
    if (pod) return pod;
  }
  const byIP = pods.filter((p) => {
    const info = podInfo(p);
    return info.nodeName === nodeName && info.ips.includes(entry.ip);
  });
  return byIP.length === 1 ? byIP[0] : undefined;
}

/** A request the server refuses, with the status to answer. */
class HttpError extends StaticEgressError {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const MAX_BODY_BYTES = 64 * 1024;

function readJson(req: IncomingMessage): Promise<unknown> {
  const type = req.headers["content-type"];
  if (type !== undefined && !/^application\/json\b/i.test(type))
    return Promise.reject(new HttpError(415, `content-type must be application/json, not ${type}`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // An oversized body is read to its end and dropped, so the 413 can still be answered.
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) chunks.push(c);
    });
    req.on("error", reject);
    req.on("end", () => {
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, `request body larger than ${MAX_BODY_BYTES} bytes`));
        return;
      }
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch (e) {
        reject(new HttpError(400, `body is not valid JSON: ${(e as Error).message}`));
      }
    });
  });
}

type Route = { method: "GET" | "POST"; handle: (body: unknown) => Promise<unknown> };

/** The HTTP face of a `CniService` on a unix socket. */
export class CniServer {
  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {}

  /**
   * Listens on `path` (created with mode 0600: only root may program pods). A stale socket of
   * an earlier agent is replaced; a live one (another agent) is an error.
   */
  static async listen(path: string, service: CniService, logger: Logger): Promise<CniServer> {
    const routes: Record<string, Route> = {
      [CNI_API.add]: { method: "POST", handle: (b) => service.add(parseAddRequest(b)) },
      [CNI_API.del]: { method: "POST", handle: (b) => service.del(parseDelRequest(b)) },
      [CNI_API.check]: { method: "POST", handle: (b) => service.check(parseCheckRequest(b)) },
      [CNI_API.exec]: { method: "POST", handle: (b) => service.exec(parseExecRequest(b)) },
      [CNI_API.health]: { method: "GET", handle: async () => service.health() },
    };
    const server = createServer((req, res) => void serve(req, res, routes, logger));
    await removeStaleSocket(path);
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      // The socket file is created by bind(), inside listen(): the umask keeps it private from birth.
      const umask = process.umask(0o177);
      try {
        server.listen(path, () => {
          server.off("error", reject);
          resolve();
        });
      } finally {
        process.umask(umask);
      }
    });
    chmodSync(path, 0o600);
    return new CniServer(server, path);
  }

  /** Stops answering; plugins that come now quarantine their pods until the agent is back. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
  }
}

async function serve(
  req: IncomingMessage,
  res: ServerResponse,
  routes: Record<string, Route>,
  logger: Logger,
): Promise<void> {
  const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  };
  try {
    const path = (req.url ?? "").split("?")[0] ?? "";
    const route = routes[path];
    if (!route) throw new HttpError(404, `no such endpoint: ${path}`);
    if (req.method !== route.method)
      throw new HttpError(405, `${path} takes ${route.method}, not ${req.method}`, { allow: route.method });
    const body = route.method === "POST" ? await readJson(req) : undefined;
    send(200, await route.handle(body));
  } catch (e) {
    if (e instanceof HttpError) send(e.status, { error: e.message }, e.headers);
    else if (e instanceof ProtocolError) send(400, { error: e.message, field: e.field });
    else {
      logger.error({ url: req.url, err: (e as Error).message }, "CNI request failed");
      send(500, { error: (e as Error).message });
    }
  }
}

/** A socket file nobody answers on is left over from a dead agent; anything else is not ours to delete. */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return;
  }
  if (!isSocket) throw new Error(`--cni-socket ${path}: the path exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
  if (alive) throw new Error(`--cni-socket ${path}: another process is serving it (a second node agent?)`);
  unlinkSync(path);
}
