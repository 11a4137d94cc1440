import { evaluate } from "@marcbachmann/cel-js";
import { parseAllDocuments } from "yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { ANCHOR_ANNOTATION } from "../../src/agents/node/anchor.js";
import { REPORT_ANNOTATION } from "../../src/controller/status.js";
import { packageRoot } from "../../src/lab/paths.js";
import { runCommand } from "../../src/util/exec.js";

// The ValidatingAdmissionPolicy that keeps a node agent's token to its own Node, as the base
// renders it (Debian's kubectl), its CEL evaluated by a CEL implementation against admission
// requests shaped as the API server builds them (request.userInfo.extra carries the node name
// of a pod-bound service account token).
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const AGENT = "system:serviceaccount:static-egress:static-egress-node-agent";
let policy: Json;
let binding: Json;

beforeAll(async () => {
  const { stdout } = await runCommand("/usr/bin/kubectl", ["kustomize", `${packageRoot()}/deploy`], { timeoutMs: 20_000 });
  const objects = parseAllDocuments(stdout).map((d) => d.toJS() as Json);
  policy = objects.find((o) => o.kind === "ValidatingAdmissionPolicy" && o.metadata.name === "static-egress-node-agent-own-node")!;
  binding = objects.find((o) => o.kind === "ValidatingAdmissionPolicyBinding")!;
});

const node = (name: string, annotations?: Record<string, string>, extra: Json = {}): Json => ({
  apiVersion: "v1",
  kind: "Node",
  metadata: { name, labels: { "kubernetes.io/hostname": name }, ...(annotations ? { annotations } : {}) },
  spec: { podCIDR: "10.244.1.0/24", providerID: "digitalocean://100" },
  ...extra,
});

/** What the API server would answer: the message of the first failing validation, or "allowed". */
function admit(user: { username: string; nodeName?: string }, oldObject: Json, object: Json): string {
  const request = { operation: "UPDATE", userInfo: { username: user.username, ...(user.nodeName ? { extra: { "authentication.kubernetes.io/node-name": [user.nodeName] } } : {}) } };
  const context: Json = { request, object, oldObject };
  if (!(policy.spec.matchConditions as Json[]).every((c) => evaluate(c.expression, context) === true)) return "allowed";
  context.variables = Object.fromEntries((policy.spec.variables as Json[]).map((v) => [v.name, evaluate(v.expression, context)]));
  for (const v of policy.spec.validations as Json[]) if (evaluate(v.expression, context) !== true) return v.message as string;
  return "allowed";
}

describe("admission: the node agent changes only its own Node's annotations", () => {
  it("is in the install, cluster-scoped, for UPDATE of nodes, failing closed, bound with Deny", () => {
    expect(policy).toBeDefined();
    expect(policy.metadata.namespace).toBeUndefined();
    expect(policy.spec.failurePolicy).toBe("Fail");
    expect(policy.spec.matchConstraints.resourceRules).toEqual([{ apiGroups: [""], apiVersions: ["v1"], operations: ["UPDATE"], resources: ["nodes"] }]);
    expect(binding.spec).toEqual({ policyName: policy.metadata.name, validationActions: ["Deny"] });
  });

  it("names exactly the annotations the agent's code writes", () => {
    const keys = evaluate((policy.spec.variables as Json[]).find((v) => v.name === "agentKeys")!.expression, {}) as string[];
    expect([...keys].sort()).toEqual([ANCHOR_ANNOTATION, REPORT_ANNOTATION].sort());
  });

  it("allows the agent's report and anchor on its own Node, written, changed or removed", () => {
    const before = node("node1", { "other.io/x": "1" });
    expect(admit({ username: AGENT, nodeName: "node1" }, before, node("node1", { "other.io/x": "1", [REPORT_ANNOTATION]: "{}" }))).toBe("allowed");
    expect(admit({ username: AGENT, nodeName: "node1" }, node("node1"), node("node1", { [ANCHOR_ANNOTATION]: "10.20.0.5" }))).toBe("allowed");
    expect(admit({ username: AGENT, nodeName: "node1" }, node("node1", { [REPORT_ANNOTATION]: "{}" }), node("node1"))).toBe("allowed");
  });

  it.each<[string, { username: string; nodeName?: string }, Json, Json, RegExp]>([
    ["another node", { username: AGENT, nodeName: "node1" }, node("node2"), node("node2", { [REPORT_ANNOTATION]: "{}" }), /only the Node it runs on/],
    ["a token without a node name", { username: AGENT }, node("node1"), node("node1", { [REPORT_ANNOTATION]: "{}" }), /only the Node it runs on/],
    ["its spec (cordon)", { username: AGENT, nodeName: "node1" }, node("node1"), { ...node("node1"), spec: { ...node("node1").spec, unschedulable: true } }, /a Node's spec/],
    ["its taints", { username: AGENT, nodeName: "node1" }, node("node1"), { ...node("node1"), spec: { ...node("node1").spec, taints: [{ key: "x", effect: "NoSchedule" }] } }, /a Node's spec/],
    ["its labels", { username: AGENT, nodeName: "node1" }, node("node1"), { ...node("node1"), metadata: { ...node("node1").metadata, labels: { "node-role.kubernetes.io/control-plane": "" } } }, /a Node's labels/],
    ["another annotation, added", { username: AGENT, nodeName: "node1" }, node("node1"), node("node1", { "other.io/x": "1" }), /only its own annotations/],
    ["another annotation, changed", { username: AGENT, nodeName: "node1" }, node("node1", { "other.io/x": "1" }), node("node1", { "other.io/x": "2" }), /only its own annotations/],
    ["another annotation, removed", { username: AGENT, nodeName: "node1" }, node("node1", { "other.io/x": "1", [REPORT_ANNOTATION]: "{}" }), node("node1", { [REPORT_ANNOTATION]: "{}" }), /only its own annotations/],
  ])("refuses the agent changing %s", (_what, user, before, after, message) => {
    expect(admit(user, before, after)).toMatch(message);
  });

  it("does not concern anyone else (the kubelet, an admin)", () => {
    const cordon = { ...node("node2"), spec: { ...node("node2").spec, unschedulable: true } };
    expect(admit({ username: "system:node:node2", nodeName: "node2" }, node("node2"), cordon)).toBe("allowed");
    expect(admit({ username: "kubernetes-admin" }, node("node2"), node("node2", { "other.io/x": "1" }))).toBe("allowed");
  });
});
