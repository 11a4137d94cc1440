#!/usr/bin/env node
/**
 * The `static-egress` CNI plugin executable: the runtime runs it (through the wrapper in its
 * CNI bin directory) with the CNI_* environment and the network configuration on stdin, in
 * the node's network namespace, as root.
 */
import { localRunner } from "../util/exec.js";
import { AgentClient } from "./client.js";
import { isLevelName, jsonLinesLogger } from "./log.js";
import { runPlugin } from "./plugin.js";
import { QuarantineTable } from "./quarantine.js";

async function readStdin(): Promise<string> {
  // VERSION may come with nothing on stdin; a terminal means nothing is coming at all.
  if (process.stdin.isTTY) return "";
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

async function main(): Promise<void> {
  // Logs go to stderr (the runtime keeps it); stdout carries only the CNI answer.
  const wanted = process.env.STATIC_EGRESS_CNI_LOG_LEVEL ?? "warn";
  const logger = jsonLinesLogger({
    name: "static-egress-cni",
    level: isLevelName(wanted) || wanted === "silent" ? wanted : "warn",
    write: (line) => process.stderr.write(line),
  });
  // Run by the shim (cni-shim/) because the node agent could not take the call: say why.
  const shimFallback = process.env.STATIC_EGRESS_CNI_SHIM_FALLBACK;
  if (shimFallback)
    logger.warn({ reason: shimFallback }, "the shim could not hand this call to the node agent; the plugin runs it");
  const outcome = await runPlugin(
    { env: process.env, stdin: await readStdin() },
    {
      agent: (socket, timeoutMs) => new AgentClient(socket, timeoutMs),
      quarantine: new QuarantineTable(localRunner),
      logger,
    },
  );
  process.stdout.write(outcome.stdout);
  process.exitCode = outcome.exitCode;
}

main().catch((e: unknown) => {
  process.stdout.write(
    JSON.stringify({
      cniVersion: "1.0.0",
      code: 5,
      msg: "static-egress failed before it could answer",
      details: (e as Error).message,
    }) + "\n",
  );
  process.exitCode = 1;
});
