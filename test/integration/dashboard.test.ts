// The shipped Grafana dashboard (the Helm chart's files/grafana-dashboard.json) and the alert
// rules: every PromQL expression parses (the Prometheus project's own
// grammar, @prometheus-io/lezer-promql) and names only metrics static-egress exports, as read
// from the metric registries in the code (a renamed metric fails here, not on someone's screen).
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parser } from "@prometheus-io/lezer-promql";
import type { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { GatewayMetrics, NodeMetrics } from "../../src/agents/metrics.js";
import { ControllerMetrics } from "../../src/controller/metrics.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const DASHBOARD = join(ROOT, "deploy/helm/static-egress/files/grafana-dashboard.json");
const ALERTS = join(ROOT, "deploy/helm/static-egress/files/alerts.yaml");

/** Every series name the registries expose (a histogram's _bucket, _sum and _count). */
async function exportedNames(): Promise<Set<string>> {
  const registries: Registry[] = [
    new ControllerMetrics().registry,
    new NodeMetrics().registry,
    new GatewayMetrics().registry,
  ];
  const names = new Set<string>();
  for (const r of registries)
    for (const m of await r.getMetricsAsJSON()) {
      const type = String(m.type);
      const suffixes =
        type === "histogram" ? ["_bucket", "_sum", "_count"] : type === "summary" ? ["", "_sum", "_count"] : [""];
      for (const s of suffixes) names.add(m.name + s);
    }
  return names;
}

/**
 * Grafana's variables as a query sent to Prometheus would have them: intervals become a duration,
 * `$gateway` (a regex inside a label matcher) matches anything.
 */
function withoutVariables(expr: string): string {
  return expr
    .replace(/\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}/g, "5m")
    .replace(/\$\{?\w+\}?/g, ".*");
}

/** The metric names an expression selects, or the parse errors' positions. */
function metricNames(expr: string): { names: string[]; errors: string[] } {
  const tree = parser.parse(expr);
  const names: string[] = [];
  const errors: string[] = [];
  tree.iterate({
    enter(n) {
      if (n.type.isError) errors.push(`at ${n.from}: ${JSON.stringify(expr.slice(n.from, n.from + 20))}`);
      if (n.name === "VectorSelector") {
        const id = n.node.getChild("Identifier");
        if (id) names.push(expr.slice(id.from, id.to));
      }
      // {__name__="..."} names a metric too.
      if (n.name === "UnquotedLabelMatcher") {
        const label = n.node.getChild("LabelName");
        const value = n.node.getChild("StringLiteral");
        if (label && value && expr.slice(label.from, label.to) === "__name__")
          names.push(expr.slice(value.from + 1, value.to - 1));
      }
    },
  });
  return { names, errors };
}

interface Panel {
  title?: string;
  type: string;
  datasource?: { uid?: string };
  targets?: { expr?: string; datasource?: { uid?: string } }[];
  panels?: Panel[];
}

interface Dashboard {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query?: unknown; datasource?: { uid?: string } }[] };
}

function dashboardQueries(d: Dashboard): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const walk = (panels: Panel[]) => {
    for (const p of panels) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel "${p.title}"`, expr: t.expr });
      walk(p.panels ?? []);
    }
  };
  walk(d.panels);
  for (const v of d.templating.list) {
    if (v.type !== "query") continue;
    const q = typeof v.query === "string" ? v.query : (v.query as { query: string }).query;
    // Grafana's label_values(<selector>, <label>): the selector is PromQL.
    const m = /^label_values\((.*),\s*\w+\)$/.exec(q);
    out.push({ where: `variable ${v.name}`, expr: m ? m[1]! : q });
  }
  return out;
}

describe("Grafana dashboard", () => {
  const text = readFileSync(DASHBOARD, "utf8");
  const dashboard = JSON.parse(text) as Dashboard;

  it("every query parses and names only metrics we export", async () => {
    const exported = await exportedNames();
    expect(exported.size).toBeGreaterThan(20);
    const queries = dashboardQueries(dashboard);
    expect(queries.length).toBeGreaterThanOrEqual(15);
    const used = new Set<string>();
    for (const q of queries) {
      const { names, errors } = metricNames(withoutVariables(q.expr));
      expect({ where: q.where, errors }).toEqual({ where: q.where, errors: [] });
      expect({ where: q.where, names: names.length > 0 }).toEqual({ where: q.where, names: true });
      for (const n of names) {
        expect({ where: q.where, metric: n, exported: exported.has(n) }).toEqual({
          where: q.where,
          metric: n,
          exported: true,
        });
        used.add(n);
      }
    }
    // What the dashboard is for: instance health, failovers, per-IP traffic, fail-closed drops,
    // SNAT port use, conntrack.
    for (const n of [
      "static_egress_gateway_instances",
      "static_egress_instance_up",
      "static_egress_failovers_total",
      "static_egress_gateway_egress_bytes_total",
      "static_egress_failclosed_dropped_packets",
      "static_egress_gateway_snat_ports_in_use",
      "static_egress_gateway_snat_ports_limit",
      "static_egress_gateway_conntrack_entries",
    ])
      expect(used).toContain(n);
  });

  it("asks for its data source: no data source of someone else's Grafana is named", () => {
    const uids = new Set<string>();
    const walk = (panels: Panel[]) => {
      for (const p of panels) {
        if (p.datasource?.uid) uids.add(p.datasource.uid);
        for (const t of p.targets ?? []) if (t.datasource?.uid) uids.add(t.datasource.uid);
        walk(p.panels ?? []);
      }
    };
    walk(dashboard.panels);
    expect([...uids]).toEqual(["${datasource}"]);
    expect(dashboard.templating.list.find((v) => v.name === "datasource")).toMatchObject({ type: "datasource" });
  });

  it("the checker refuses a metric we do not export, and a broken expression", () => {
    expect(metricNames('sum(rate(static_egress_gateway_egress_byte_total{gateway=~".*"}[5m]))')).toEqual({
      names: ["static_egress_gateway_egress_byte_total"],
      errors: [],
    });
    expect(metricNames("sum(rate(static_egress_failovers_total[5m])").errors).not.toEqual([]);
    expect(metricNames('count({__name__="static_egress_instance_up"})').names).toEqual(["static_egress_instance_up"]);
  });
});

describe("alert rules", () => {
  it("name only metrics we export", async () => {
    const exported = await exportedNames();
    const rules = (
      parse(readFileSync(ALERTS, "utf8")) as { groups: { rules: { alert: string; expr: string }[] }[] }
    ).groups.flatMap((g) => g.rules);
    expect(rules.length).toBeGreaterThanOrEqual(10);
    for (const r of rules) {
      const { names, errors } = metricNames(r.expr);
      expect({ alert: r.alert, errors }).toEqual({ alert: r.alert, errors: [] });
      for (const n of names)
        expect({ alert: r.alert, metric: n, exported: exported.has(n) }).toEqual({
          alert: r.alert,
          metric: n,
          exported: true,
        });
    }
  });
});
