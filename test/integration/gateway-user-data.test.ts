import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  NODE_TAG,
  REGION,
  HARNESS_TIMEOUT_MS,
  startCloudHarness,
  type CloudHarness,
} from "../support/cloud-harness.js";
import { CLUSTER_EVENT_NAMESPACE } from "../../src/kube/client.js";
import { renderUserData } from "../../src/controller/cloud/user-data.js";
import { captureLogs } from "../support/standin-testing.js";
import { gatewayFromUserData } from "../../src/lab/cloud.js";
import { waitFor } from "../../src/lab/lab.js";
import { packageRoot } from "../../src/lab/paths.js";

// deploy/digitalocean/gateway-user-data.yaml: the user data that makes a droplet install and start
// the gateway agent and its health responder. Cloud-init, Docker and a droplet cannot run here;
// what is checked: the controller fills it (and refuses when a value is missing, naming the flag),
// it is valid cloud-config carrying the files it should, every command line it starts uses only
// options the built CLI has (`npm run build` first), and the kubeconfig reaches the droplet's
// user data without ever appearing in the controller's logs.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const root = packageRoot();
const template = readFileSync(join(root, "deploy/digitalocean/gateway-user-data.yaml"), "utf8");
const cli = join(root, "dist", "cli", "main.js");
const AGENT_CONFIG =
  "clusterNetwork:\n  podCIDRs: [10.244.0.0/16]\n  serviceCIDRs: [10.96.0.0/12]\n  nodeCIDRs: [10.110.0.0/20]\n";
const SECRET = "eyJhbGciOiJSUzI1NiJ9.gateway-sa-token-0123456789";
const KUBECONFIG = `apiVersion: v1\nkind: Config\nusers:\n- name: static-egress-gateway\n  user:\n    token: ${SECRET}\n`;
const IMAGE = "registry.example.com/static-egress:0.1.0";
const values = { image: IMAGE, agentConfig: () => AGENT_CONFIG, kubeconfig: () => KUBECONFIG };

const file = (doc: Json, path: string): Json | undefined => (doc.write_files as Json[]).find((f) => f.path === path);
const b64 = (text: string) => Buffer.from(text, "base64").toString("utf8");

describe("the gateway user data template", () => {
  it("renders to cloud-config with the agent config, the kubeconfig (0600) and the gateway's name", () => {
    const rendered = renderUserData(template, "egress-a", values);
    expect(rendered.startsWith("#cloud-config\n")).toBe(true);
    expect(rendered).not.toMatch(/\$\{(GATEWAY|INSTANCE|IMAGE|AGENT_CONFIG_BASE64|KUBECONFIG_BASE64)\}/);
    const doc = parse(rendered) as Json;
    expect(doc.packages).toEqual(expect.arrayContaining(["docker.io", "nftables", "conntrack"]));
    expect(b64(file(doc, "/etc/static-egress/config.yaml")!.content as string)).toBe(AGENT_CONFIG);
    const kc = file(doc, "/etc/static-egress/kubeconfig")!;
    expect(kc).toMatchObject({ encoding: "b64", permissions: "0600" });
    expect(b64(kc.content as string)).toBe(KUBECONFIG);
    expect(gatewayFromUserData(rendered)).toBe("egress-a"); // what the lab (and an operator) reads
    const runcmd = doc.runcmd as unknown[];
    expect(runcmd.every((c) => typeof c === "string")).toBe(true);
    expect(runcmd.join("\n")).toContain(`docker create ${IMAGE}`);
    expect(runcmd.join("\n")).toContain("SE_INSTANCE=%s");
    expect(runcmd.join("\n")).toContain('"$(hostname)"');
    expect(runcmd.at(-1)).toBe(
      "systemctl enable --now static-egress-health-responder.service static-egress-gateway.service",
    );
  });

  it("refuses to render without a value it uses, naming the controller flag", () => {
    expect(() => renderUserData(template, "egress-a", { ...values, kubeconfig: undefined })).toThrow(
      "--gateway-kubeconfig-file",
    );
    expect(() => renderUserData(template, "egress-a", { ...values, image: undefined })).toThrow("--gateway-image");
    expect(() => renderUserData(template, "egress-a", { ...values, agentConfig: undefined })).toThrow("--config");
    // A template that does not use them needs none.
    expect(renderUserData("#cloud-config\n# ${GATEWAY}\n", "egress-a")).toBe("#cloud-config\n# egress-a\n");
  });

  it("starts only command lines the built CLI accepts", () => {
    const doc = parse(renderUserData(template, "egress-a", values)) as Json;
    const units = (doc.write_files as Json[]).filter((f) => String(f.path).endsWith(".service"));
    expect(units.map((u) => u.path).sort()).toEqual([
      "/etc/systemd/system/static-egress-gateway.service",
      "/etc/systemd/system/static-egress-health-responder.service",
    ]);
    for (const unit of units) {
      const exec = /^ExecStart=\S+ \S+\/dist\/cli\/main\.js (.*)$/m.exec(unit.content as string)?.[1];
      expect(exec, unit.path as string).toBeDefined();
      const words = exec!.split(/\s+/);
      const command = words.slice(0, 2); // agent gateway | agent health-responder
      const help = spawnSync(process.execPath, [cli, ...command, "--help"], { encoding: "utf8" });
      expect(help.status, help.stderr).toBe(0);
      const used = words.filter((w) => w.startsWith("--"));
      expect(used.length).toBeGreaterThan(2);
      for (const flag of used)
        expect(help.stdout, `${unit.path}: ${flag}`).toMatch(new RegExp(`(^|\\s)${flag}(\\s|$)`, "m"));
      // The command's required options (src/cli/main.ts) are all given.
      const required = command[1] === "gateway" ? ["--instance", "--source", "--config"] : ["--listen"];
      expect(used).toEqual(expect.arrayContaining(required));
    }
  });
});

describe("the controller with this template", () => {
  let h: CloudHarness;
  const logs = captureLogs();

  beforeAll(async () => {
    h = await startCloudHarness({
      nodes: 1,
      logger: logs.logger,
      plugins: { userDataTemplate: template, userDataValues: values },
    });
  }, HARNESS_TIMEOUT_MS);
  afterAll(async () => {
    await h?.close();
  }, HARNESS_TIMEOUT_MS);

  it("creates droplets whose user data carries the kubeconfig, which no log line shows", async () => {
    await h.client.custom.createClusterCustomObject({
      group: "staticegress.io",
      version: "v1alpha1",
      plural: "egressgateways",
      body: {
        apiVersion: "staticegress.io/v1alpha1",
        kind: "EgressGateway",
        metadata: { name: "egress-a" },
        spec: { digitalocean: { region: REGION, size: "s-1vcpu-1gb", count: 2, nodeTag: NODE_TAG } },
      },
    });
    await waitFor(
      () =>
        [...h.cloud.state.raw.droplets.values()].filter((d) => gatewayFromUserData(d.userData) === "egress-a")
          .length === 2,
      10_000,
      "no droplets with the template",
    );
    for (const d of [...h.cloud.state.raw.droplets.values()].filter(
      (x) => gatewayFromUserData(x.userData) === "egress-a",
    )) {
      const doc = parse(d.userData ?? "") as Json;
      expect(b64(file(doc, "/etc/static-egress/kubeconfig")!.content as string)).toBe(KUBECONFIG);
    }
    await h.plugins.idle();
    const text = logs.text();
    expect(text).toContain("created gateway droplet"); // the logs were captured
    for (const secret of [SECRET, Buffer.from(KUBECONFIG).toString("base64")]) expect(text).not.toContain(secret);
    expect(h.cloud.rejectedRequests()).toEqual([]);
  });
});

describe("the controller with this template but without --gateway-kubeconfig-file", () => {
  let h: CloudHarness;
  beforeAll(async () => {
    h = await startCloudHarness({
      nodes: 1,
      plugins: { userDataTemplate: template, userDataValues: { image: IMAGE, agentConfig: () => AGENT_CONFIG } },
    });
  }, HARNESS_TIMEOUT_MS);
  afterAll(async () => {
    await h?.close();
  }, HARNESS_TIMEOUT_MS);

  it("creates no droplet and says which flag is missing on the gateway", async () => {
    const before = h.cloud.state.droplets().length;
    await h.client.custom.createClusterCustomObject({
      group: "staticegress.io",
      version: "v1alpha1",
      plural: "egressgateways",
      body: {
        apiVersion: "staticegress.io/v1alpha1",
        kind: "EgressGateway",
        metadata: { name: "egress-b" },
        spec: { digitalocean: { region: REGION, size: "s-1vcpu-1gb", nodeTag: NODE_TAG } },
      },
    });
    const warning = async () =>
      (await h.client.core.listNamespacedEvent({ namespace: CLUSTER_EVENT_NAMESPACE })).items.find(
        (e) => e.involvedObject.name === "egress-b" && e.reason === "InvalidCloudSpec",
      );
    await waitFor(async () => (await warning()) !== undefined, 10_000, "no InvalidCloudSpec event");
    expect((await warning())!.message).toContain(
      "${KUBECONFIG_BASE64}, which needs the controller flag --gateway-kubeconfig-file",
    );
    await h.plugins.idle();
    expect(h.cloud.state.droplets()).toHaveLength(before);
  });
});
