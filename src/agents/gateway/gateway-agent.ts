import { snapshotFromObjects } from "../../api/objects.js";
import { GatewayDataplane } from "../../dataplane/gateway.js";
import type { GatewayPlan } from "../../planner/model.js";
import { Planner } from "../../planner/plan.js";
import { SpecValidator } from "../../api/v1alpha1/validate.js";
import type { Logger } from "../../util/log.js";
import type { AgentConfig } from "../config.js";
import { ReconcileLoop } from "../../util/reconcile-loop.js";
import type { ClusterSource } from "../../api/source.js";

export interface GatewayAgentDeps {
  /** `<gateway>/<instance>` */
  instance: string;
  config: AgentConfig;
  source: ClusterSource;
  dataplane: GatewayDataplane;
  logger: Logger;
  onApplied?: (plan: GatewayPlan) => void;
}

/** Programs one gateway instance: SNAT map, relay filter, return routes. */
export class GatewayAgent {
  private readonly loop: ReconcileLoop;
  /** Compiled once: compiling the schemas costs tens of milliseconds per reconcile. */
  private readonly validator = new SpecValidator();
  private resyncTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: GatewayAgentDeps) {
    this.loop = new ReconcileLoop((o) => this.reconcile(o), deps.logger);
  }

  async start(): Promise<void> {
    await this.deps.source.start(() => this.loop.trigger());
    this.loop.trigger({ verify: true });
    this.resyncTimer = setInterval(() => this.loop.trigger({ verify: true }), this.deps.config.resyncSeconds * 1000);
  }

  private async reconcile({ verify }: { verify: boolean }): Promise<void> {
    const { instance, config, source, dataplane, logger } = this.deps;
    const planner = new Planner(snapshotFromObjects(source.objects(), config.clusterNetwork), {
      validator: this.validator,
    });
    const plan = planner.planGateway(instance);
    if (!plan) {
      // Not (or no longer) a valid instance: forward nothing rather than something stale.
      logger.warn({ instance }, "instance not found in any valid EgressGateway; forwarding nothing");
      await dataplane.apply(
        {
          instance,
          address: "",
          snat: [],
          returnRoutes: [],
          nodeAddresses: [],
          egressIPs: [],
          egressIPOwners: [],
          vni: 0,
          tunnels: [],
          podsByTunnel: [],
        },
        { verify },
      );
      return;
    }
    const report = await dataplane.apply(plan, { verify });
    if (report.nftChanged || report.routingAdded || report.routingRemoved)
      logger.info({ snat: plan.snat.length, ...report }, "gateway programmed");
    this.deps.onApplied?.(plan);
  }

  idle(): Promise<void> {
    return this.loop.idle();
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    this.loop.stop();
    await this.deps.source.stop();
  }
}
