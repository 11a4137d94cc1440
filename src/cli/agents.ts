import { GatewayAgent } from "../agents/gateway/gateway-agent.js";
import { NodeAgent } from "../agents/node/node-agent.js";
import { loadAgentConfig } from "../agents/config.js";
import { FileSource } from "../agents/source/file-source.js";
import { GatewayDataplane } from "../dataplane/gateway.js";
import { NodeDataplane } from "../dataplane/node.js";
import { localRunner } from "../util/exec.js";
import { createLogger, type Logger } from "../util/log.js";

export interface AgentFlags {
  source: string;
  config: string;
  cleanup?: boolean;
}

/** Stops on SIGTERM/SIGINT without touching the datapath: forwarding goes on while we are away. */
function runUntilSignal(logger: Logger, stop: () => Promise<void>): void {
  const onSignal = (signal: string) => {
    logger.info({ signal }, "stopping; the datapath stays programmed");
    void stop().then(() => process.exit(0));
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
}

export async function runNodeAgent(flags: AgentFlags & { node: string }): Promise<void> {
  const logger = createLogger("node-agent").child({ node: flags.node });
  const dataplane = new NodeDataplane(localRunner);
  if (flags.cleanup) {
    await dataplane.cleanup();
    logger.info("removed everything the node agent owns");
    return;
  }
  const agent = new NodeAgent({
    nodeName: flags.node,
    config: loadAgentConfig(flags.config),
    source: new FileSource(flags.source, logger),
    dataplane,
    logger,
  });
  await agent.start();
  logger.info("node agent started");
  runUntilSignal(logger, () => agent.stop());
}

export async function runGatewayAgent(flags: AgentFlags & { instance: string }): Promise<void> {
  const logger = createLogger("gateway-agent").child({ instance: flags.instance });
  const dataplane = new GatewayDataplane(localRunner);
  if (flags.cleanup) {
    await dataplane.cleanup();
    logger.info("removed everything the gateway agent owns");
    return;
  }
  const agent = new GatewayAgent({
    instance: flags.instance,
    config: loadAgentConfig(flags.config),
    source: new FileSource(flags.source, logger),
    dataplane,
    logger,
  });
  await agent.start();
  logger.info("gateway agent started");
  runUntilSignal(logger, () => agent.stop());
}
