/**
 * The built-in resources the stand-in serves: core v1 (pods, nodes, namespaces, events,
 * services, configmaps, secrets), coordination.k8s.io/v1 leases, and apiextensions.k8s.io/v1
 * customresourcedefinitions. Each carries the behaviour of its real registry strategy that
 * clients can observe (status handling, defaults, selectable fields, printers).
 */

import { crdStrategy, type SchemaCompiler } from "./crd.js";
import { fieldForbidden, fieldRequired, type FieldError } from "./errors.js";
import {
  configMapTable,
  crdTable,
  defaultTable,
  eventTable,
  leaseTable,
  namespaceTable,
  nodeTable,
  podTable,
  secretTable,
  serviceTable,
  type TableConverter,
} from "./printers.js";
import type { ResourceDef, StrategyContext } from "./resource.js";
import { deepEqual, getPath, isPlainObject, type JsonObject, type KubeObject } from "./types.js";
import { nameErrors } from "./validation.js";

export const ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

function field(path: string): (obj: KubeObject) => string {
  const parts = path.split(".");
  return (obj) => {
    const v = getPath(obj, parts);
    if (v === undefined || v === null) return "";
    return typeof v === "string" ? v : String(v);
  };
}

function fields(...paths: string[]): Record<string, (obj: KubeObject) => string> {
  return Object.fromEntries(paths.map((p) => [p, field(p)]));
}

interface BuiltinSpec {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  shortNames?: string[];
  categories?: string[];
  table?: TableConverter;
  status?: boolean;
  extraSubresources?: string[];
  nameRule?: ResourceDef["nameRule"];
  hasGeneration?: boolean;
  returnDeletedObject?: boolean;
  selectableFields?: Record<string, (obj: KubeObject) => string>;
  indexedFields?: string[];
  prepareForCreate?: ResourceDef["prepareForCreate"];
  prepareForUpdate?: ResourceDef["prepareForUpdate"];
  validate?: ResourceDef["validate"];
}

function builtin(s: BuiltinSpec): ResourceDef {
  return {
    group: s.group,
    versions: [{ name: s.version, table: s.table ?? defaultTable, statusSubresource: s.status ?? false }],
    storageVersion: s.version,
    plural: s.plural,
    singular: s.kind.toLowerCase(),
    kind: s.kind,
    listKind: `${s.kind}List`,
    namespaced: s.namespaced,
    shortNames: s.shortNames ?? [],
    categories: s.categories ?? [],
    verbs: ALL_VERBS,
    extraSubresources: s.extraSubresources ?? [],
    nameRule: s.nameRule ?? "subdomain",
    custom: false,
    hasGeneration: s.hasGeneration ?? false,
    allowUnconditionalUpdate: true,
    returnDeletedObject: s.returnDeletedObject ?? false,
    strategicMergePatch: s.group !== "apiextensions.k8s.io",
    selectableFields: s.selectableFields ?? {},
    indexedFields: s.indexedFields ?? [],
    ...(s.prepareForCreate ? { prepareForCreate: s.prepareForCreate } : {}),
    ...(s.prepareForUpdate ? { prepareForUpdate: s.prepareForUpdate } : {}),
    ...(s.validate ? { validate: s.validate } : {}),
  };
}

function keepOldStatus(obj: KubeObject, old: KubeObject): void {
  if (old.status === undefined) delete obj.status;
  else obj.status = old.status;
}

function asObject(v: unknown): JsonObject {
  return isPlainObject(v) ? v : {};
}

function defaultContainer(c: unknown): unknown {
  if (!isPlainObject(c)) return c;
  const image = typeof c.image === "string" ? c.image : "";
  const tag = image.includes("@") ? "digest" : (/:([^/]+)$/.exec(image)?.[1] ?? "latest");
  return {
    terminationMessagePath: "/dev/termination-log",
    terminationMessagePolicy: "File",
    imagePullPolicy: tag === "latest" ? "Always" : "IfNotPresent",
    resources: {},
    ...c,
  };
}

function podQosClass(spec: JsonObject): string {
  const containers = Array.isArray(spec.containers) ? spec.containers : [];
  const any = containers.some((c) => isPlainObject(c) && isPlainObject(c.resources) && Object.keys(c.resources).length > 0);
  return any ? "Burstable" : "BestEffort";
}

/** The defaults the real server fills into a pod spec (a subset), on create and on update. */
function defaultPodSpec(obj: KubeObject): void {
  const spec = asObject(obj.spec);
  obj.spec = {
    restartPolicy: "Always",
    terminationGracePeriodSeconds: 30,
    dnsPolicy: "ClusterFirst",
    securityContext: {},
    schedulerName: "default-scheduler",
    enableServiceLinks: true,
    preemptionPolicy: "PreemptLowerPriority",
    priority: 0,
    ...spec,
    ...(Array.isArray(spec.containers) ? { containers: spec.containers.map(defaultContainer) } : {}),
    ...(Array.isArray(spec.initContainers) ? { initContainers: spec.initContainers.map(defaultContainer) } : {}),
  };
}

function preparePodForCreate(obj: KubeObject): void {
  defaultPodSpec(obj);
  // As on the real server, a new pod's status is the scheduler's and kubelet's to fill in.
  obj.status = { phase: "Pending", qosClass: podQosClass(obj.spec as JsonObject) };
}

function validatePodContainers(list: unknown, path: string, required: boolean): FieldError[] {
  const errs: FieldError[] = [];
  if (!Array.isArray(list) || list.length === 0) {
    if (required) errs.push(fieldRequired(path));
    return errs;
  }
  list.forEach((c, i) => {
    const p = `${path}[${i}]`;
    if (!isPlainObject(c)) {
      errs.push(fieldRequired(p));
      return;
    }
    if (typeof c.name !== "string" || c.name === "") errs.push(fieldRequired(`${p}.name`));
    else for (const why of nameErrors(c.name, "label")) errs.push({ field: `${p}.name`, reason: "FieldValueInvalid", detail: `Invalid value: ${JSON.stringify(c.name)}: ${why}` });
    if (typeof c.image !== "string" || c.image === "") errs.push(fieldRequired(`${p}.image`));
  });
  return errs;
}

/** What a pod update may change in spec: container images, activeDeadlineSeconds, tolerations. */
function podSpecMutableView(spec: unknown): unknown {
  const s = { ...asObject(spec) };
  const noImage = (list: unknown): unknown => (Array.isArray(list) ? list.map((c) => (isPlainObject(c) ? { ...c, image: undefined } : c)) : list);
  s.containers = noImage(s.containers);
  s.initContainers = noImage(s.initContainers);
  delete s.activeDeadlineSeconds;
  delete s.tolerations;
  return s;
}

function validatePod(obj: KubeObject, old: KubeObject | undefined): FieldError[] {
  const spec = asObject(obj.spec);
  const errs = [...validatePodContainers(spec.containers, "spec.containers", true), ...validatePodContainers(spec.initContainers, "spec.initContainers", false)];
  if (old && !deepEqual(podSpecMutableView(obj.spec), podSpecMutableView(old.spec))) {
    errs.push(
      fieldForbidden(
        "spec",
        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
      ),
    );
  }
  return errs;
}

function prepareServiceForCreate(obj: KubeObject, ctx: StrategyContext): void {
  const spec = asObject(obj.spec);
  const type = typeof spec.type === "string" ? spec.type : "ClusterIP";
  const clusterIP = typeof spec.clusterIP === "string" && spec.clusterIP !== "" ? spec.clusterIP : type === "ExternalName" ? undefined : ctx.nextClusterIP();
  const ports = Array.isArray(spec.ports)
    ? spec.ports.map((p) => (isPlainObject(p) ? { protocol: "TCP", ...(p.port !== undefined ? { targetPort: p.port } : {}), ...p } : p))
    : spec.ports;
  obj.spec = {
    ...spec,
    type,
    sessionAffinity: spec.sessionAffinity ?? "None",
    ...(clusterIP !== undefined ? { clusterIP, clusterIPs: [clusterIP] } : {}),
    ...(ports !== undefined ? { ports } : {}),
    ...(type !== "ExternalName" ? { ipFamilies: ["IPv4"], ipFamilyPolicy: "SingleStack", internalTrafficPolicy: "Cluster" } : {}),
  };
  obj.status = { loadBalancer: {} };
}

function prepareServiceForUpdate(obj: KubeObject, old: KubeObject): void {
  keepOldStatus(obj, old);
  const spec = asObject(obj.spec);
  const oldSpec = asObject(old.spec);
  if (spec.clusterIP === undefined && oldSpec.clusterIP !== undefined) obj.spec = { ...spec, clusterIP: oldSpec.clusterIP, clusterIPs: oldSpec.clusterIPs };
}

const eventFields = {
  ...fields(
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "type",
  ),
  source: field("source.component"),
};

/** A fresh list of the built-in resources (definitions are per server, never shared globally). */
export function builtinResources(compileSchema: SchemaCompiler): ResourceDef[] {
  return [
    builtin({
      group: "",
      version: "v1",
      plural: "pods",
      kind: "Pod",
      namespaced: true,
      shortNames: ["po"],
      categories: ["all"],
      table: podTable,
      status: true,
      extraSubresources: ["binding"],
      returnDeletedObject: true,
      selectableFields: fields(
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
      ),
      indexedFields: ["spec.nodeName"],
      prepareForCreate: preparePodForCreate,
      prepareForUpdate: (obj, old) => {
        keepOldStatus(obj, old);
        defaultPodSpec(obj);
      },
      validate: validatePod,
    }),
    builtin({
      group: "",
      version: "v1",
      plural: "nodes",
      kind: "Node",
      namespaced: false,
      shortNames: ["no"],
      table: nodeTable,
      status: true,
      selectableFields: fields("spec.unschedulable"),
      prepareForUpdate: keepOldStatus,
    }),
    builtin({
      group: "",
      version: "v1",
      plural: "namespaces",
      kind: "Namespace",
      namespaced: false,
      shortNames: ["ns"],
      table: namespaceTable,
      status: true,
      extraSubresources: ["finalize"],
      nameRule: "label",
      returnDeletedObject: true,
      selectableFields: fields("status.phase"),
      prepareForCreate: (obj) => {
        obj.spec = { finalizers: ["kubernetes"] };
        obj.status = { phase: "Active" };
      },
      prepareForUpdate: (obj, old) => {
        keepOldStatus(obj, old);
        obj.spec = old.spec;
      },
    }),
    builtin({
      group: "",
      version: "v1",
      plural: "events",
      kind: "Event",
      namespaced: true,
      shortNames: ["ev"],
      table: eventTable,
      selectableFields: eventFields,
    }),
    builtin({
      group: "",
      version: "v1",
      plural: "services",
      kind: "Service",
      namespaced: true,
      shortNames: ["svc"],
      categories: ["all"],
      table: serviceTable,
      status: true,
      nameRule: "label",
      returnDeletedObject: true,
      prepareForCreate: prepareServiceForCreate,
      prepareForUpdate: prepareServiceForUpdate,
    }),
    builtin({ group: "", version: "v1", plural: "configmaps", kind: "ConfigMap", namespaced: true, shortNames: ["cm"], table: configMapTable }),
    builtin({
      group: "",
      version: "v1",
      plural: "secrets",
      kind: "Secret",
      namespaced: true,
      table: secretTable,
      selectableFields: fields("type"),
      prepareForCreate: (obj) => {
        if (obj.type === undefined) obj.type = "Opaque";
      },
    }),
    builtin({ group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease", namespaced: true, table: leaseTable }),
    builtin({
      group: "apiextensions.k8s.io",
      version: "v1",
      plural: "customresourcedefinitions",
      kind: "CustomResourceDefinition",
      namespaced: false,
      shortNames: ["crd", "crds"],
      categories: ["api-extensions"],
      table: crdTable,
      status: true,
      hasGeneration: true,
      ...crdStrategy(compileSchema),
    }),
  ];
}
