// The shipped alert rules (deploy/helm/static-egress/files/alerts.yaml) with Debian's Prometheus
// tools: `promtool check rules` (syntax, PromQL) and `promtool test rules` on the unit tests in
// test/alerts/alerts.test.yaml, which must show every alert firing and staying quiet.
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { runCommand } from "../../src/util/exec.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const RULES = join(ROOT, "deploy/helm/static-egress/files/alerts.yaml");
const TESTS = join(ROOT, "test/alerts/alerts.test.yaml");
// Debian's package `prometheus` (scripts/install-deps.sh).
const PROMTOOL = "/usr/bin/promtool";

interface RuleTests {
  tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
}

describe("alert rules (promtool)", () => {
  it("are valid rules", async () => {
    const { stdout } = await runCommand(PROMTOOL, ["check", "rules", RULES]);
    expect(stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it("pass their unit tests", async () => {
    const { stdout } = await runCommand(PROMTOOL, ["test", "rules", TESTS], { timeoutMs: 60_000 });
    expect(stdout).toContain("SUCCESS");
  });

  it("every alert has a test where it fires and one where it stays quiet", () => {
    const alerts = (parse(readFileSync(RULES, "utf8")) as { groups: { rules: { alert: string }[] }[] }).groups.flatMap(
      (g) => g.rules.map((r) => r.alert),
    );
    const cases = (parse(readFileSync(TESTS, "utf8")) as RuleTests).tests.flatMap((t) => t.alert_rule_test ?? []);
    expect(alerts.length).toBeGreaterThanOrEqual(10);
    for (const alert of alerts) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect({ alert, fires: mine.some((c) => c.exp_alerts.length > 0) }).toEqual({ alert, fires: true });
      expect({ alert, quiet: mine.some((c) => c.exp_alerts.length === 0) }).toEqual({ alert, quiet: true });
    }
  });
});
