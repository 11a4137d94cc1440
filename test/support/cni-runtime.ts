import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

/**
 * A minimal container runtime's CNI side, for the lab tests and the benchmark: it executes the
 * plugins of a configuration list the way libcni does. Each plugin is the file named after its
 * `type` in the CNI_PATH directories; it gets the list's name and cniVersion, the CNI_*
 * environment, its configuration on stdin, and (after the first, on ADD; always on CHECK and
 * DEL when known) the previous result as `prevResult`. DEL runs the list backwards.
 */

export interface ConfList {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
}

export interface Sandbox {
  containerId: string;
  /** Path of the pod's network namespace (`/var/run/netns/<name>`). */
  netns: string;
  ifname: string;
  /** CNI_ARGS pairs (K8S_POD_NAMESPACE, K8S_POD_NAME, ...). */
  args: Record<string, string>;
}

export interface PluginRun {
  type: string;
  command: string;
  exitCode: number;
  stdout: string;
  stderr: string;
  ms: number;
}

class CniInvocationError extends Error {
  constructor(readonly run: PluginRun) {
    super(
      `CNI ${run.command} failed in plugin ${run.type} (exit ${run.exitCode}): ${run.stdout.trim() || run.stderr.trim()}`,
    );
    this.name = "CniInvocationError";
  }
}

export class CniRuntime {
  /**
   * @param cniPath where plugins are found, in order
   * @param hostNetns the network namespace plugins run in (the node's); undefined: this one
   */
  constructor(
    readonly cniPath: readonly string[],
    readonly hostNetns?: string,
  ) {}

  private find(type: string): string {
    for (const dir of this.cniPath) {
      const candidate = join(dir, type);
      if (existsSync(candidate)) return candidate;
    }
    throw new Error(`no plugin ${type} in CNI_PATH ${this.cniPath.join(":")}`);
  }

  /** One plugin, one command; never throws for a plugin failure (see `exitCode`). */
  exec(
    command: "ADD" | "DEL" | "CHECK" | "VERSION",
    list: ConfList,
    plugin: Record<string, unknown>,
    sandbox: Sandbox,
    prevResult?: unknown,
  ): Promise<PluginRun> {
    const type = String(plugin.type);
    const conf = {
      ...plugin,
      cniVersion: list.cniVersion,
      name: list.name,
      ...(prevResult !== undefined ? { prevResult } : {}),
    };
    const env = {
      ...process.env,
      CNI_COMMAND: command,
      CNI_CONTAINERID: sandbox.containerId,
      CNI_NETNS: sandbox.netns,
      CNI_IFNAME: sandbox.ifname,
      CNI_ARGS: Object.entries(sandbox.args)
        .map(([k, v]) => `${k}=${v}`)
        .join(";"),
      CNI_PATH: this.cniPath.join(":"),
    };
    const binary = this.find(type);
    const [cmd, args] = this.hostNetns ? ["ip", ["netns", "exec", this.hostNetns, binary]] : [binary, []];
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const child = spawn(cmd as string, args as string[], { env, stdio: ["pipe", "pipe", "pipe"] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on("data", (b: Buffer) => out.push(b));
      child.stderr.on("data", (b: Buffer) => err.push(b));
      child.on("error", reject);
      child.on("close", (code) =>
        resolve({
          type,
          command,
          exitCode: code ?? -1,
          stdout: Buffer.concat(out).toString(),
          stderr: Buffer.concat(err).toString(),
          ms: performance.now() - started,
        }),
      );
      child.stdin.on("error", () => undefined);
      child.stdin.end(JSON.stringify(conf));
    });
  }

  /** ADD through the list; the last plugin's result is the sandbox's. Stops at the first failure. */
  async add(list: ConfList, sandbox: Sandbox): Promise<{ result: unknown; runs: PluginRun[] }> {
    const runs: PluginRun[] = [];
    let prev: unknown;
    for (const plugin of list.plugins) {
      const run = await this.exec("ADD", list, plugin, sandbox, prev);
      runs.push(run);
      if (run.exitCode !== 0) throw new CniInvocationError(run);
      prev = JSON.parse(run.stdout) as unknown;
    }
    return { result: prev, runs };
  }

  async check(list: ConfList, sandbox: Sandbox, result: unknown): Promise<PluginRun[]> {
    const runs: PluginRun[] = [];
    for (const plugin of list.plugins) {
      const run = await this.exec("CHECK", list, plugin, sandbox, result);
      runs.push(run);
      if (run.exitCode !== 0) throw new CniInvocationError(run);
    }
    return runs;
  }

  /** DEL backwards through the list; `result` is the cached ADD result, if the runtime has it. */
  async del(list: ConfList, sandbox: Sandbox, result?: unknown): Promise<PluginRun[]> {
    const runs: PluginRun[] = [];
    for (const plugin of [...list.plugins].reverse()) {
      const run = await this.exec("DEL", list, plugin, sandbox, result);
      runs.push(run);
      if (run.exitCode !== 0) throw new CniInvocationError(run);
    }
    return runs;
  }
}
