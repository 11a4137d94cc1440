import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { freePort } from "../../src/lab/control-plane/index.js";
import { waitFor, type MetricsTarget } from "../../src/lab/lab.js";
import { packageRoot } from "../../src/lab/paths.js";

/** Debian's package `prometheus` (scripts/install-deps.sh); run as a plain process, never the service. */
const PROMETHEUS = "/usr/bin/prometheus";

export interface PrometheusAlert {
  labels: Record<string, string>;
  state: "pending" | "firing";
  value: string;
}

export interface LabPrometheus {
  url: string;
  query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  alerts(): Promise<PrometheusAlert[]>;
  stop(): Promise<void>;
}

/**
 * The shipped alert rules with every `for` cut to `forSeconds`: the lab shows that the rules fire
 * on what the agents and the controller really export; their timing is promtool's to test
 * (test/alerts/alerts.test.yaml).
 */
export function shippedRulesWithShortFor(forSeconds: number): string {
  const rules = parse(readFileSync(join(packageRoot(), "deploy/helm/static-egress/files/alerts.yaml"), "utf8")) as {
    groups: { rules: { for?: string }[] }[];
  };
  for (const g of rules.groups) for (const r of g.rules) if (r.for) r.for = `${forSeconds}s`;
  return stringify(rules);
}

/**
 * A real Prometheus on loopback scraping the lab every 2 seconds (honor_labels, as docs/metrics.md
 * says), with its own config and storage in a temp directory, removed on stop. It ends by itself
 * after `lifetimeSeconds` (coreutils `timeout`), should the test process die first.
 */
export async function startPrometheus(
  targets: readonly MetricsTarget[],
  rules: string,
  lifetimeSeconds = 900,
): Promise<LabPrometheus> {
  const dir = mkdtempSync(join(tmpdir(), "se-prometheus-"));
  const jobs = [...new Set(targets.map((t) => t.job))];
  const config = {
    // Scrapes get 2 s: agents read the kernel on each one, and the machine may be busy.
    global: { scrape_interval: "2s", scrape_timeout: "2s", evaluation_interval: "1s" },
    rule_files: [join(dir, "rules.yaml")],
    scrape_configs: jobs.map((job) => ({
      job_name: `static-egress-${job}`,
      honor_labels: true,
      static_configs: targets
        .filter((t) => t.job === job)
        .map((t) => ({ targets: [t.address], labels: { host: t.host } })),
    })),
  };
  writeFileSync(join(dir, "rules.yaml"), rules);
  writeFileSync(join(dir, "prometheus.yml"), stringify(config));
  const port = await freePort();
  const log = openSync(join(dir, "prometheus.log"), "a");
  const child: ChildProcess = spawn(
    "timeout",
    [
      String(lifetimeSeconds),
      PROMETHEUS,
      `--config.file=${join(dir, "prometheus.yml")}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    { stdio: ["ignore", log, log] },
  );
  closeSync(log);
  const url = `http://127.0.0.1:${port}`;
  const api = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(3_000) });
    const body = (await res.json()) as { status: string; data: T };
    if (body.status !== "success") throw new Error(`prometheus ${path}: ${JSON.stringify(body)}`);
    return body.data;
  };
  const stop = async () => {
    if (child.exitCode === null && child.pid) {
      const exited = new Promise((r) => child.once("exit", r));
      process.kill(child.pid, "SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      async () =>
        (await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1_000) }).catch(() => undefined))?.status === 200,
      30_000,
      "prometheus did not start",
    );
  } catch (e) {
    const tail = readFileSync(join(dir, "prometheus.log"), "utf8").slice(-2_000);
    await stop();
    throw new Error(`${(e as Error).message}: ${tail}`, { cause: e });
  }
  return {
    url,
    query: async (expr) =>
      (
        await api<{ result: { metric: Record<string, string>; value: [number, string] }[] }>(
          `/api/v1/query?query=${encodeURIComponent(expr)}`,
        )
      ).result,
    alerts: async () => (await api<{ alerts: PrometheusAlert[] }>("/api/v1/alerts")).alerts,
    stop,
  };
}
