/**
 * Datapath programming benchmark: how long it takes to plan and program N pods x M policies on
 * one node, into a real kernel (a fresh network namespace per repetition).
 *
 *   npx tsx bench/programming.ts [--cases 10x1,1000x10,10000x100,10000x1] [--reps 5] [--bulk 100] [--out file] [--max-seconds 600]
 *                                [--distinct-policies]   (each policy its own exclusion: its pods make their own divert classes)
 *                                [--watch on|off]        (the kernel watch, ip monitor + nft monitor, as the agent runs it; default on)
 *
 * Measured per case (median and p95 over the repetitions):
 *   plan       new Planner(snapshot, { validator }) + planNode(node): the pure planning an agent redoes on every change
 *              (planAsAgent adds compiling the schema validator, which NodeAgent does on every reconcile today)
 *   first      first NodeDataplane.apply into a fresh namespace: routes/rules + one `nft -f` full table
 *   noop       apply of the same plan again (reads routing back, no kernel change)
 *   addOne     apply of the plan with one more pod: one atomic element delta
 *   removeOne  apply of the plan without that pod again: one atomic element delta
 *   resync     apply with verify (the agents' periodic drift check): with the watch, reads back only what someone
 *              else changed since the last verify (every 10th reads everything, as without it: `--watch off`)
 *   removeBulk / addBulk   --bulk pods leave at once (a policy deleted, a node drained), then come back;
 *              removeBulk includes forgetting their diverted flows (NodeDataplane.forgetFlows), as the agent does
 *   eventAddOne / eventRemoveOne   a NodeAgent (its reconcile loop, planning and dataplane) fed by a source the
 *              benchmark controls: from the informer event (one Pod object more, or less) to the agent's
 *              report that the kernel holds the new plan (onApplied): API event -> kernel. The new pod's interface
 *              and route are made 100 ms before its event, as the CNI makes them before its address reaches the API
 * After every apply the kernel is read back and its divert decision (each pod's class in `pod_class`,
 * then that class's map) must hold exactly the planned elements (each pod, destination range and
 * instance mark, compared one by one).
 */
import { parseArgs } from "node:util";
import { SpecValidator } from "../src/api/v1alpha1/validate.js";
import { ALWAYS_LOCAL, divertClasses, NodeDataplane, nodeRouting, type ApplyReport } from "../src/dataplane/node.js";
import { commandKernel } from "../src/dataplane/kernel.js";
import { KernelWatch, localStreams, ownNftCommand } from "../src/dataplane/kernel-watch.js";
import { BIND_TABLE } from "../src/dataplane/node.js";
import { deleteNamespace, deleteNamespacesWithPrefix, newRunPrefix } from "../src/lab/netns.js";
import { normalize, parseCidr } from "../src/util/ipv4.js";
import type { HealthView, NodePlan } from "../src/planner/model.js";
import { Planner } from "../src/planner/plan.js";
import { inNamespace } from "../src/util/exec.js";
import { execIn } from "../src/lab/netns.js";
import { requireRoot } from "./lib/env.js";
import { guarded } from "./lib/guard.js";
import { createNodeNamespace, expectDivert, expectElements, KernelCheckError } from "./lib/netns.js";
import { startRun } from "./lib/record.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import { round, roundSummary, summarize, type Summary } from "./lib/stats.js";
import { SYNTHETIC, syntheticObjects, syntheticPodObject, syntheticSnapshot, withExtraPod } from "./lib/synthetic.js";
import { NodeAgent } from "../src/agents/node/node-agent.js";
import type { ClusterSource, SourceChange } from "../src/api/source.js";
import type { KubeObject } from "../src/api/objects.js";
import { silentLogger } from "../src/util/log.js";
import { performance } from "node:perf_hooks";
import { byCommand, timed, TimingRunner, type CommandTiming } from "./lib/timing.js";

const TABLE = "static_egress";

interface Case {
  pods: number;
  policies: number;
  /** `--distinct-policies`: each policy its own exclusion, so its pods make their own divert classes. */
  distinctPolicies?: boolean;
  /** The kernel watch (ip monitor, nft monitor), as the node agent runs it; `--watch off`: without. */
  watch?: boolean;
}

interface CaseResult extends Case {
  reps: number;
  mapElements: number;
  /** Divert classes (`class_<id>` chains and maps) the node's table holds: pods sharing a decision share one. */
  classes: number;
  neverDivertElements: number;
  instances: number;
  /** Bytes of the `nft -f` script of a full replace. */
  fullScriptBytes: number;
  ms: {
    /** new SpecValidator(): compiling the CRD schemas (ajv). */
    validatorCompile: Summary;
    /** new Planner(snapshot, { validator }): validate + resolve, with a compiled validator. */
    planConstruct: Summary;
    planNode: Summary;
    /** planConstruct + planNode: planning proper. */
    plan: Summary;
    /** validatorCompile + plan: what NodeAgent.reconcile pays today (new Planner(snapshot) without a validator). */
    planAsAgent: Summary;
    first: Summary;
    noop: Summary;
    addOne: Summary;
    removeOne: Summary;
    resync: Summary;
    /** Removing `bulkPods` pods at once (one element delta), and adding them back. */
    removeBulk?: Summary;
    addBulk?: Summary;
    /** A NodeAgent from the Pod event to its report that the kernel holds the plan with (without) the pod. */
    eventAddOne: Summary;
    eventRemoveOne: Summary;
  };
  bulkPods: number;
  /** Per step, median time spent in each external command, and in-process (rendering, diffing, parsing). */
  breakdownMs: Record<string, Record<string, { count: number; ms: number }>>;
}

/** A cluster source the benchmark feeds by hand: `set` is an informer event. */
class ManualSource implements ClusterSource {
  private notify: (change?: SourceChange) => void = () => undefined;
  constructor(private current: readonly KubeObject[]) {}
  start(onChange: (change?: SourceChange) => void): Promise<void> {
    this.notify = onChange;
    return Promise.resolve();
  }
  objects(): readonly KubeObject[] {
    return this.current;
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  /** As an informer does, with what changed (the node agent's fast path for one pod needs it). */
  set(objects: readonly KubeObject[], change?: SourceChange): void {
    this.current = objects;
    this.notify(change);
  }
}

function parseCases(text: string): Case[] {
  return text.split(",").map((c) => {
    const m = /^(\d+)x(\d+)$/.exec(c.trim());
    if (!m) throw new Error(`--cases: ${JSON.stringify(c)} is not <pods>x<policies>`);
    return { pods: Number(m[1]), policies: Number(m[2]) };
  });
}

function medianBreakdown(samples: CommandTiming[][], totals: number[]): Record<string, { count: number; ms: number }> {
  const per = samples.map(byCommand);
  const names = [...new Set(per.flatMap((p) => Object.keys(p)))].sort();
  const inProcess = totals.map((t, i) => t - Object.values(per[i] ?? {}).reduce((n, x) => n + x.ms, 0));
  return Object.fromEntries([
    ...names.map((n) => [
      n,
      { count: per[0]?.[n]?.count ?? 0, ms: round(summarize(per.map((p) => p[n]?.ms ?? 0)).median) },
    ]),
    ["in-process", { count: 0, ms: round(summarize(inProcess).median) }],
  ]);
}

function expectNoChange(
  report: { nftChanged: boolean; routingAdded: number; routingRemoved: number },
  when: string,
): void {
  if (report.nftChanged || report.routingAdded || report.routingRemoved)
    throw new KernelCheckError(`${when}: expected no change, got ${JSON.stringify(report)}`);
}

/** Our nft under its own name (as the agent runs it), made once. */
let ownNft: string | undefined;

/** A kernel watch inside the namespace, settled (its marks are trusted); undefined without `c.watch`. */
async function startWatch(c: Case, ns: string): Promise<KernelWatch | undefined> {
  if (!c.watch) return undefined;
  const w = new KernelWatch((cmd, args, on) => localStreams("ip", ["netns", "exec", ns, cmd, ...args], on), {
    tables: [`ip ${TABLE}`, `bridge ${BIND_TABLE}`],
  });
  w.start();
  const until = Date.now() + 5_000;
  while (w.mark() === undefined) {
    if (Date.now() > until) throw new Error("the kernel watch did not settle");
    await new Promise((r) => setTimeout(r, 20));
  }
  return w;
}

/** The monitors' lines come a little after a change: what our own writes changed is told by then. */
const drained = () => new Promise((r) => setTimeout(r, 300));

async function runCase(
  c: Case,
  reps: number,
  bulk: number,
  prefix: string,
  index: number,
  log: (l: string) => void,
): Promise<CaseResult> {
  const health: HealthView = new Map();
  const snapshot = syntheticSnapshot(c);
  const plan = {
    validator: [] as number[],
    construct: [] as number[],
    node: [] as number[],
    total: [] as number[],
    asAgent: [] as number[],
  };
  let nodePlan: NodePlan | undefined;
  // One untimed pass first: agents are long-running, so JIT warm-up is not part of their cost.
  new Planner(snapshot).planNode(SYNTHETIC.node, health);
  for (let r = 0; r < reps; r++) {
    // The node agent builds a Planner without a validator, so each reconcile also compiles the schemas.
    const v = await timed(() => new SpecValidator());
    const a = await timed(() => new Planner(snapshot, { validator: v.value }));
    const b = await timed(() => a.value.planNode(SYNTHETIC.node, health));
    plan.validator.push(v.ms);
    plan.construct.push(a.ms);
    plan.node.push(b.ms);
    plan.total.push(a.ms + b.ms);
    plan.asAgent.push(v.ms + a.ms + b.ms);
    nodePlan = b.value;
  }
  const base = nodePlan!;
  const invalid = new Planner(snapshot).resolution.verdicts.filter((v) => !v.valid);
  if (invalid.length > 0) throw new Error(`synthetic cluster is invalid: ${JSON.stringify(invalid)}`);
  const expectedElements = c.pods * SYNTHETIC.rangesPerPod;
  if (base.entries.length !== expectedElements)
    throw new Error(`plan has ${base.entries.length} entries, expected ${expectedElements}`);
  const plusOne = new Planner(withExtraPod(snapshot, c.pods, c.policies)).planNode(SYNTHETIC.node, health);
  if (plusOne.entries.length !== expectedElements + SYNTHETIC.rangesPerPod)
    throw new Error("the extra pod did not add its entries");
  // Bulk change: the first `bulk` pods go away at once (a deleted policy or a drained node), then come back.
  const withoutBulk =
    bulk > 0 && bulk < c.pods
      ? new Planner({ ...snapshot, pods: snapshot.pods.slice(bulk) }).planNode(SYNTHETIC.node, health)
      : undefined;

  const steps = [
    "first",
    "noop",
    "addOne",
    "removeOne",
    "resync",
    ...(withoutBulk ? (["removeBulk", "addBulk"] as const) : []),
    "eventAddOne",
    "eventRemoveOne",
  ] as const;
  type Step =
    "first" | "noop" | "addOne" | "removeOne" | "resync" | "removeBulk" | "addBulk" | "eventAddOne" | "eventRemoveOne";
  const ms: Record<Step, number[]> = {
    first: [],
    noop: [],
    addOne: [],
    removeOne: [],
    resync: [],
    removeBulk: [],
    addBulk: [],
    eventAddOne: [],
    eventRemoveOne: [],
  };
  const calls: Record<Step, CommandTiming[][]> = {
    first: [],
    noop: [],
    addOne: [],
    removeOne: [],
    resync: [],
    removeBulk: [],
    addBulk: [],
    eventAddOne: [],
    eventRemoveOne: [],
  };
  const objects = syntheticObjects(snapshot);
  const extraPod = syntheticPodObject(c.pods, c.policies);
  const basePods = new Set(base.entries.map((e) => e.podIP));
  const extraIP = plusOne.entries.find((e) => !basePods.has(e.podIP))!.podIP;
  let fullScriptBytes = 0;
  for (let r = 0; r < reps; r++) {
    const ns = `${prefix}-p${index}r${r}`;
    await createNodeNamespace(ns, SYNTHETIC.nodeIP, SYNTHETIC.vpcPrefix);
    try {
      const runner = new TimingRunner(inNamespace(ns));
      const check = inNamespace(ns);
      if (c.watch) ownNft ??= ownNftCommand();
      const nft = c.watch ? ownNft : undefined;
      let watch = await startWatch(c, ns);
      const dp = new NodeDataplane(commandKernel(runner, nft ? { nft } : {}), watch ? { watch, nft } : {});
      const step = async (name: Step, apply: () => Promise<ApplyReport>): Promise<ApplyReport> => {
        runner.take();
        const t = await timed(apply);
        ms[name].push(t.ms);
        calls[name].push(runner.take());
        return t.value;
      };

      // As the agent's first reconcile: a verifying apply (it reads the new table's structure back).
      await step("first", () => dp.apply(base, { verify: true }));
      fullScriptBytes = Math.max(
        ...calls.first
          .at(-1)!
          .filter((x) => x.command === "nft")
          .map((x) => x.inputBytes),
      );
      await expectDivert(check, TABLE, base.entries, `after first apply (${c.pods}x${c.policies})`);
      // The node also never diverts link-local, multicast and broadcast (ALWAYS_LOCAL).
      const neverDivert = normalize([...base.neverDivert, ...ALWAYS_LOCAL.map(parseCidr)]).length;
      await expectElements(check, "set", "ip", TABLE, "never_divert", neverDivert, "after first apply");
      const routing = await dp.readRouting();
      const planned = nodeRouting(base);
      if (routing.routes.length !== planned.routes.length || routing.rules.length !== planned.rules.length) {
        throw new KernelCheckError(
          `after first apply: ${routing.routes.length} routes and ${routing.rules.length} ` +
            `rules, the plan has ${planned.routes.length} and ${planned.rules.length}`,
        );
      }

      expectNoChange(await step("noop", () => dp.apply(base)), "re-apply of the same plan");

      if (!(await step("addOne", () => dp.apply(plusOne))).nftChanged)
        throw new KernelCheckError("adding a pod changed nothing");
      await expectDivert(check, TABLE, plusOne.entries, "after adding one pod");

      if (!(await step("removeOne", () => dp.apply(base))).nftChanged)
        throw new KernelCheckError("removing a pod changed nothing");
      await expectDivert(check, TABLE, base.entries, "after removing one pod");

      // The periodic drift check, after the two deltas above: it reads the table back and finds it
      // as written (structure as after the verified full apply, elements as the deltas left them).
      // With the watch, as in an agent that has run a while: the routes the first apply wrote
      // were read back by an earlier verify (untimed), and that verify's events are told; the
      // verify then reads back only what someone else changed (nothing here).
      if (watch) {
        await drained();
        await dp.apply(plusOne, { verify: true });
        await dp.apply(base);
        await drained();
      }
      expectNoChange(await step("resync", () => dp.apply(base, { verify: true })), "verified re-apply after deltas");

      if (withoutBulk) {
        // As the node agent does: the new plan, then the removed pods' diverted flows forgotten (one conntrack batch).
        const kept = withoutBulk.entries.map((e) => e.podIP);
        const keptSet = new Set(kept);
        const removed = [...new Set(base.entries.map((e) => e.podIP))].filter((ip) => !keptSet.has(ip));
        await step("removeBulk", async () => {
          const report = await dp.apply(withoutBulk);
          await dp.forgetFlows({ podIPs: removed, keep: kept });
          return report;
        });
        await expectDivert(check, TABLE, withoutBulk.entries, `after removing ${bulk} pods`);
        await step("addBulk", () => dp.apply(base));
        await expectDivert(check, TABLE, base.entries, `after adding ${bulk} pods back`);
      }

      // The node agent itself, fed Pod events: from the event to the kernel, planning included.
      // Its own watch (the steps' dataplane above would prefetch beside it).
      watch?.stop();
      watch = await startWatch(c, ns);
      const source = new ManualSource(objects);
      let applied: ((plan: NodePlan) => void) | undefined;
      const agent = new NodeAgent({
        nodeName: SYNTHETIC.node,
        config: { clusterNetwork: snapshot.network, resyncSeconds: 3600 },
        source,
        dataplane: new NodeDataplane(commandKernel(runner, nft ? { nft } : {}), watch ? { watch, nft } : {}),
        logger: silentLogger,
        onApplied: (p) => applied?.(p),
      });
      try {
        await agent.start();
        await agent.idle();
        const event = async (name: Step, next: readonly KubeObject[], done: (p: NodePlan) => boolean) => {
          runner.take();
          const reached = new Promise<void>((r) => (applied = (p) => done(p) && r()));
          const t0 = performance.now();
          source.set(next, {
            kind: "Pod",
            name: extraPod.metadata!.name!,
            ...(extraPod.metadata?.namespace ? { namespace: extraPod.metadata.namespace } : {}),
          });
          await reached;
          ms[name].push(performance.now() - t0);
          calls[name].push(runner.take());
          await agent.idle();
        };
        const hasExtra = (p: NodePlan) => p.entries.some((e) => e.podIP === extraIP);
        // As the CNI does before the pod's address reaches the API server: its interface and route
        // (the API event comes after the CNI ADD has returned, the kubelet has written the status and
        // the watch has carried it: far more than the 100 ms left here).
        await execIn(ns, "ip", ["link", "add", "sepod0", "type", "veth", "peer", "name", "sepod0p"]);
        await execIn(ns, "ip", ["link", "set", "sepod0", "up"]);
        await execIn(ns, "ip", ["route", "add", `${extraIP}/32`, "dev", "sepod0"]);
        await new Promise((r) => setTimeout(r, 100));
        await event("eventAddOne", [...objects, extraPod], hasExtra);
        const ifaces = await execIn(ns, "nft", ["list", "set", "ip", TABLE, "pod_ifaces"]);
        if (!ifaces.includes(`${extraIP} . "sepod0"`))
          throw new KernelCheckError(`after the agent saw one more pod: ${extraIP} is not bound to its interface`);
        await expectDivert(check, TABLE, plusOne.entries, "after the agent saw one more pod");
        await event("eventRemoveOne", objects, (p) => !hasExtra(p));
        await expectDivert(check, TABLE, base.entries, "after the agent saw the pod go");
      } finally {
        await agent.stop();
        watch?.stop();
      }
    } finally {
      await deleteNamespace(ns);
    }
    log(`  rep ${r + 1}/${reps}: ` + steps.map((n: Step) => `${n} ${ms[n].at(-1)!.toFixed(0)} ms`).join(", "));
  }
  const s = (x: number[]) => roundSummary(summarize(x));
  return {
    ...c,
    reps,
    mapElements: base.entries.length,
    classes: divertClasses(base.entries).classes.size,
    neverDivertElements: base.neverDivert.length,
    instances: base.instances.length,
    fullScriptBytes,
    ms: {
      validatorCompile: s(plan.validator),
      planConstruct: s(plan.construct),
      planNode: s(plan.node),
      plan: s(plan.total),
      planAsAgent: s(plan.asAgent),
      first: s(ms.first),
      noop: s(ms.noop),
      addOne: s(ms.addOne),
      removeOne: s(ms.removeOne),
      resync: s(ms.resync),
      ...(withoutBulk ? { removeBulk: s(ms.removeBulk), addBulk: s(ms.addBulk) } : {}),
      eventAddOne: s(ms.eventAddOne),
      eventRemoveOne: s(ms.eventRemoveOne),
    },
    bulkPods: withoutBulk ? bulk : 0,
    breakdownMs: Object.fromEntries(steps.map((n: Step) => [n, medianBreakdown(calls[n], ms[n])])),
  };
}

function printTable(results: readonly CaseResult[]): void {
  const f = (x: Summary) => `${x.median} / ${x.p95}`;
  const g = (x: Summary | undefined) => (x ? f(x) : "-");
  console.log(
    "\n| pods x policies | map elements | plan | plan as agent | first apply | no-op re-apply | +1 pod | -1 pod " +
      "| resync (verify) | -bulk pods | +bulk pods | +1 pod, event -> kernel | -1 pod, event -> kernel |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of results) {
    console.log(
      `| ${r.pods} x ${r.policies} | ${r.mapElements} | ${f(r.ms.plan)} ` +
        `| ${f(r.ms.planAsAgent)} | ${f(r.ms.first)} | ${f(r.ms.noop)} | ${f(r.ms.addOne)} ` +
        `| ${f(r.ms.removeOne)} | ${f(r.ms.resync)} | ${g(r.ms.removeBulk)} | ${g(r.ms.addBulk)} ` +
        `| ${f(r.ms.eventAddOne)} | ${f(r.ms.eventRemoveOne)} |`,
    );
  }
  console.log("(milliseconds, median / p95)");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      cases: { type: "string", default: "10x1,1000x10,10000x100,10000x1" },
      reps: { type: "string", default: "5" },
      bulk: { type: "string", default: "100" },
      out: { type: "string", default: defaultResultPath("programming") },
      "max-seconds": { type: "string", default: "600" },
      "distinct-policies": { type: "boolean", default: false },
      watch: { type: "string", default: "on" },
    },
  });
  requireRoot();
  const cases = parseCases(values.cases);
  if (values.watch !== "on" && values.watch !== "off") throw new Error("--watch must be on or off");
  const reps = Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1 || reps > 50) throw new Error("--reps must be an integer from 1 to 50");
  const bulk = Number(values.bulk);
  if (!Number.isInteger(bulk) || bulk < 0 || bulk > 10_000)
    throw new Error("--bulk must be an integer from 0 to 10000");
  const log = (l: string) => console.error(l);
  const run = await startRun("programming", {
    cases: values.cases,
    reps,
    bulk,
    maxSeconds: Number(values["max-seconds"]),
    out: values.out,
    distinctPolicies: values["distinct-policies"],
    watch: values.watch,
  });
  const prefix = newRunPrefix();
  const started = Date.now();
  log(`programming benchmark, run ${prefix}, ${reps} repetitions per case, load ${run.loadAtStart.join(" ")}`);
  const results = await guarded(
    async () => {
      await deleteNamespacesWithPrefix(`${prefix}-`);
    },
    async () => {
      const out: CaseResult[] = [];
      for (const [i, c] of cases.entries()) {
        log(`case ${c.pods} pods x ${c.policies} policies`);
        out.push(
          await runCase(
            { ...c, distinctPolicies: values["distinct-policies"], watch: values.watch === "on" },
            reps,
            bulk,
            prefix,
            i,
            log,
          ),
        );
      }
      return out;
    },
    { maxSeconds: Number(values["max-seconds"]), log },
  );
  writeResults(values.out, run, {
    durationSeconds: Math.round((Date.now() - started) / 1000),
    setup: {
      node: "one network namespace per repetition (veth pair inside it, VPC address 10.0.0.11/24)",
      gateways: `${SYNTHETIC.gateways} gateways x ${SYNTHETIC.instancesPerGateway} static instances`,
      destinations:
        `each policy: ${SYNTHETIC.destinationCIDRs.join(", ")} ` +
        `minus ${SYNTHETIC.excludedCIDRs.join(", ")} (${SYNTHETIC.rangesPerPod} map elements per pod)`,
      pods: "all in one namespace, pod i labelled app-(i mod M); policy j selects app-j",
      units: "milliseconds; p95 is nearest-rank (the maximum when reps < 20)",
    },
    results,
  });
  printTable(results);
  log(`raw results: ${values.out}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exitCode = 1;
});
