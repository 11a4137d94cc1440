import { V1MicroTime, type V1Lease } from "@kubernetes/client-node";
import { statusOf, type KubeClient } from "../../kube/client.js";
import type { Logger } from "../../util/log.js";

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  /** How often the leader renews, and others retry. */
  retryPeriodMs?: number;
  now?: () => Date;
}

/**
 * Leader election through a coordination.k8s.io Lease, as client-go does it: the holder
 * renews the lease; others take it over once `renewTime + leaseDuration` has passed. Writes
 * carry the lease's resourceVersion, so two candidates can never both win (one gets a 409).
 * Only the leader runs reconcilers; informers may run everywhere for a fast handover.
 */
export class LeaderElector {
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private stopped = false;
  private readonly duration: number;
  private readonly retry: number;
  private readonly now: () => Date;

  constructor(
    private readonly client: KubeClient,
    private readonly opts: LeaderElectionOptions,
    private readonly logger: Logger,
    private readonly callbacks: { onStartedLeading: () => void; onStoppedLeading: () => void },
  ) {
    this.duration = opts.leaseDurationSeconds ?? 15;
    this.retry = opts.retryPeriodMs ?? 2_000;
    this.now = opts.now ?? (() => new Date());
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    void this.tick();
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    let leading: boolean;
    try {
      leading = await this.tryAcquireOrRenew();
    } catch (e) {
      this.logger.warn({ err: (e as Error).message }, "lease update failed");
      // A leader that cannot renew must stop acting before another one may start.
      leading =
        this.leading &&
        this.lastRenew !== undefined &&
        this.now().getTime() - this.lastRenew < this.duration * 1000 * 0.8;
    }
    this.setLeading(leading);
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), this.retry);
  }

  private lastRenew: number | undefined;

  private setLeading(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    this.logger.info({ identity: this.opts.identity, leading }, leading ? "became leader" : "lost leadership");
    if (leading) this.callbacks.onStartedLeading();
    else this.callbacks.onStoppedLeading();
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.opts;
    const now = this.now();
    let lease: V1Lease;
    try {
      lease = await this.client.readLease(namespace, name);
    } catch (e) {
      if (statusOf(e) !== 404) throw e;
      await this.client.createLease(namespace, {
        metadata: { name, namespace },
        spec: {
          holderIdentity: identity,
          leaseDurationSeconds: this.duration,
          acquireTime: micro(now),
          renewTime: micro(now),
          leaseTransitions: 0,
        },
      });
      this.lastRenew = now.getTime();
      return true;
    }
    const spec = lease.spec ?? {};
    const renew = spec.renewTime ? new Date(spec.renewTime).getTime() : 0;
    const expired = renew + (spec.leaseDurationSeconds ?? this.duration) * 1000 < now.getTime();
    const mine = spec.holderIdentity === identity;
    if (!mine && !expired && spec.holderIdentity) return false;
    const next: V1Lease = {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds: this.duration,
        ...(spec.acquireTime ? { acquireTime: micro(spec.acquireTime) } : {}),
        renewTime: micro(now),
        ...(mine ? {} : { acquireTime: micro(now), leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }),
      },
    };
    try {
      await this.client.replaceLease(namespace, name, next);
    } catch (e) {
      if (statusOf(e) === 409) return false; // someone else wrote first
      throw e;
    }
    this.lastRenew = now.getTime();
    return true;
  }

  /** Gives the lease up so a standby takes over at once (graceful shutdown). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!this.leading) return;
    try {
      const lease = await this.client.readLease(this.opts.namespace, this.opts.name);
      if (lease.spec?.holderIdentity === this.opts.identity) {
        await this.client.replaceLease(this.opts.namespace, this.opts.name, {
          ...lease,
          spec: {
            ...lease.spec,
            holderIdentity: "",
            ...(lease.spec.acquireTime ? { acquireTime: micro(lease.spec.acquireTime) } : {}),
            renewTime: micro(new Date(0)),
          },
        });
      }
    } catch (e) {
      this.logger.warn({ err: (e as Error).message }, "could not release the lease");
    }
    this.setLeading(false);
  }
}

/**
 * A Lease's times are MicroTime: the API server parses them with six fractional digits and
 * refuses a plain Date's milliseconds (400 "cannot be handled as a Lease"). Times read back
 * from the server come back as strings, so every write wraps them again.
 */
function micro(d: Date | string): V1MicroTime {
  return new V1MicroTime(new Date(d).getTime());
}
