import {
  STATIC_ROUTE_API_VERSION,
  type StaticRoute,
  type StaticRouteNodeStatus,
} from "../../api/digitalocean-v1/static-route.js";
import type { StaticRouteOutcome } from "../../planner/static-routes.js";
import type { Logger } from "../../util/log.js";

/** The API calls the reporter makes (KubeClient has them; tests may record them). */
export interface StaticRouteStatusApi {
  applyStaticRouteNodeStatus(name: string, node: string, entry: Record<string, unknown> | undefined): Promise<void>;
  createObjectEvent(e: {
    involved: { apiVersion: string; kind: string; name: string; uid?: string };
    type: "Normal" | "Warning";
    reason: string;
    message: string;
    component: string;
  }): Promise<void>;
}

const REASONS: Record<StaticRouteOutcome["state"], { type: "Normal" | "Warning"; reason: string }> = {
  Routed: { type: "Normal", reason: "Routed" },
  Blackholed: { type: "Warning", reason: "GatewaysDown" },
  Refused: { type: "Warning", reason: "Refused" },
};

/**
 * Writes this node's entry of each StaticRoute's status.nodes, and an Event when the node's
 * state of a route changes (routed, failed over, blackholed, refused). Writes only what
 * changed, compared with what the object already says (a restarted agent writes nothing new).
 */
export class StaticRouteStatusReporter {
  /** Route name -> the entry last written (or read from the object). */
  private readonly written = new Map<string, StaticRouteNodeStatus>();
  private pending: { outcomes: readonly StaticRouteOutcome[]; objects: readonly StaticRoute[] } | undefined;
  private flushing: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly api: StaticRouteStatusApi,
    private readonly node: string,
    private readonly logger: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  update(outcomes: readonly StaticRouteOutcome[], objects: readonly StaticRoute[]): void {
    this.pending = { outcomes, objects };
    this.flushing ??= this.flush().finally(() => (this.flushing = undefined));
  }

  /** Resolves when everything asked for so far is written (tests). */
  async idle(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  private async flush(): Promise<void> {
    while (this.pending) {
      const { outcomes, objects } = this.pending;
      this.pending = undefined;
      const byName = new Map(outcomes.map((o) => [o.name, o]));
      for (const obj of objects) {
        const name = obj.metadata.name;
        const outcome = byName.get(name);
        const before = this.written.get(name) ?? obj.status?.nodes?.find((n) => n.name === this.node);
        try {
          if (!outcome) {
            if (before) await this.api.applyStaticRouteNodeStatus(name, this.node, undefined);
            this.written.delete(name);
            continue;
          }
          const same =
            before &&
            before.state === outcome.state &&
            before.gateway === outcome.gateway &&
            before.message === outcome.message;
          if (same) {
            this.written.set(name, before);
            continue;
          }
          const entry: StaticRouteNodeStatus = {
            name: this.node,
            state: outcome.state,
            ...(outcome.gateway ? { gateway: outcome.gateway } : {}),
            message: outcome.message,
            lastTransitionTime:
              before && before.state === outcome.state
                ? before.lastTransitionTime
                : this.now()
                    .toISOString()
                    .replace(/\.\d+Z$/, "Z"),
          };
          await this.api.applyStaticRouteNodeStatus(name, this.node, entry);
          this.written.set(name, entry);
          if (!before || before.state !== outcome.state || before.gateway !== outcome.gateway)
            await this.event(obj, outcome, before);
        } catch (e) {
          const code = (e as { code?: number }).code;
          if (code === 404) continue; // deleted meanwhile
          this.logger.warn(
            { staticRoute: name, err: (e as Error).message },
            "could not write StaticRoute status; will retry",
          );
          clearTimeout(this.retry);
          this.retry = setTimeout(() => this.update(outcomes, objects), 2_000);
          this.retry.unref();
        }
      }
      for (const name of [...this.written.keys()])
        if (!objects.some((o) => o.metadata.name === name)) this.written.delete(name);
    }
  }

  private async event(
    obj: StaticRoute,
    outcome: StaticRouteOutcome,
    before: StaticRouteNodeStatus | undefined,
  ): Promise<void> {
    const failover = outcome.state === "Routed" && before?.state === "Routed" && before.gateway !== outcome.gateway;
    const { type, reason } = failover ? { type: "Warning" as const, reason: "FailedOver" } : REASONS[outcome.state];
    await this.api.createObjectEvent({
      involved: {
        apiVersion: STATIC_ROUTE_API_VERSION,
        kind: "StaticRoute",
        name: obj.metadata.name,
        ...(obj.metadata.uid ? { uid: obj.metadata.uid } : {}),
      },
      type,
      reason,
      message: `node ${this.node}: ${outcome.message}`,
      component: "static-egress-node-agent",
    });
  }

  stop(): void {
    clearTimeout(this.retry);
  }
}
