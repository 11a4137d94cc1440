/**
 * Server-side printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`): the columns
 * kubectl shows. Built-in kinds use the real server's columns (a subset for the wide ones);
 * custom resources use their CRD's additionalPrinterColumns, evaluated with JSONPath.
 */

import { evaluateJsonPath, parseJsonPath } from "./jsonpath.js";
import { isPlainObject, rfc3339, type KubeObject } from "./types.js";

export interface ColumnDefinition {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

export interface TableConverter {
  columns: ColumnDefinition[];
  /** Cells in column order; `now` is milliseconds since the epoch (for ages). */
  cells(obj: KubeObject, now: number): unknown[];
}

/** k8s.io/apimachinery/pkg/util/duration.HumanDuration. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return "<invalid>";
  if (seconds < 0) return "0s";
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const dy = Math.floor(hours / 24) % 365;
    const y = Math.floor(hours / 24 / 365);
    return dy === 0 ? `${y}y` : `${y}y${dy}d`;
  }
  return `${Math.floor(hours / 24 / 365)}y`;
}

export function age(timestamp: unknown, now: number): string {
  if (typeof timestamp !== "string") return "<unknown>";
  const t = Date.parse(timestamp);
  return Number.isNaN(t) ? "<unknown>" : humanDuration(now - t);
}

export const NAME_COLUMN: ColumnDefinition = {
  name: "Name",
  type: "string",
  format: "name",
  description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
  priority: 0,
};

function col(name: string, type = "string", description = "", priority = 0, format = ""): ColumnDefinition {
  return { name, type, format, description, priority };
}

const AGE_DESCRIPTION =
  "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.";

function str(v: unknown, fallback = "<none>"): string {
  return typeof v === "string" && v !== "" ? v : fallback;
}

function obj(v: unknown): Record<string, unknown> {
  return isPlainObject(v) ? v : {};
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/** Name and "Created At": the real server's table for kinds without their own printer. */
export const defaultTable: TableConverter = {
  columns: [NAME_COLUMN, col("Created At", "date", AGE_DESCRIPTION)],
  cells: (o) => [o.metadata.name, typeof o.metadata.creationTimestamp === "string" ? o.metadata.creationTimestamp : rfc3339(0)],
};

export const podTable: TableConverter = {
  columns: [
    NAME_COLUMN,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    col("Age", "string", AGE_DESCRIPTION),
    col("IP", "string", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", 1),
    col("Node", "string", "NodeName is a request to schedule this pod onto a specific node.", 1),
    col("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node.", 1),
    col("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness.", 1),
  ],
  cells: (o, now) => {
    const spec = obj(o.spec);
    const status = obj(o.status);
    const containers = arr(spec.containers);
    const statuses = arr(status.containerStatuses).map(obj);
    const ready = statuses.filter((s) => s.ready === true).length;
    const restarts = statuses.reduce((n, s) => n + (typeof s.restartCount === "number" ? s.restartCount : 0), 0);
    let reason = str(status.reason, str(status.phase, "Unknown"));
    for (const s of statuses) {
      const state = obj(s.state);
      const waiting = obj(state.waiting);
      const terminated = obj(state.terminated);
      if (typeof waiting.reason === "string" && waiting.reason) reason = waiting.reason;
      else if (typeof terminated.reason === "string" && terminated.reason) reason = terminated.reason;
    }
    if (o.metadata.deletionTimestamp) reason = "Terminating";
    const gates = arr(spec.readinessGates);
    return [
      o.metadata.name,
      `${ready}/${containers.length}`,
      reason,
      String(restarts),
      age(o.metadata.creationTimestamp, now),
      str(status.podIP),
      str(spec.nodeName),
      str(status.nominatedNodeName),
      gates.length ? `0/${gates.length}` : "<none>",
    ];
  },
};

export const nodeTable: TableConverter = {
  columns: [
    NAME_COLUMN,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    col("Age", "string", AGE_DESCRIPTION),
    col("Version", "string", "Kubelet Version reported by the node."),
    col("Internal-IP", "string", "List of addresses reachable to the node.", 1),
    col("External-IP", "string", "List of addresses reachable to the node.", 1),
    col("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).", 1),
    col("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
    col("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).", 1),
  ],
  cells: (o, now) => {
    const spec = obj(o.spec);
    const status = obj(o.status);
    const ready = arr(status.conditions)
      .map(obj)
      .find((c) => c.type === "Ready");
    let state = ready ? (ready.status === "True" ? "Ready" : ready.status === "False" ? "NotReady" : "Unknown") : "Unknown";
    if (spec.unschedulable === true) state += ",SchedulingDisabled";
    const roles = Object.keys(o.metadata.labels ?? {})
      .map((k) => (k.startsWith("node-role.kubernetes.io/") ? k.slice("node-role.kubernetes.io/".length) : k === "kubernetes.io/role" ? (o.metadata.labels?.[k] ?? "") : ""))
      .filter(Boolean)
      .sort();
    const addresses = arr(status.addresses).map(obj);
    const addr = (t: string): string => str(addresses.find((a) => a.type === t)?.address);
    const info = obj(status.nodeInfo);
    return [
      o.metadata.name,
      state,
      roles.length ? roles.join(",") : "<none>",
      age(o.metadata.creationTimestamp, now),
      str(info.kubeletVersion, ""),
      addr("InternalIP"),
      addr("ExternalIP"),
      str(info.osImage, "<unknown>"),
      str(info.kernelVersion, "<unknown>"),
      str(info.containerRuntimeVersion, "<unknown>"),
    ];
  },
};

export const namespaceTable: TableConverter = {
  columns: [NAME_COLUMN, col("Status", "string", "The status of the namespace"), col("Age", "string", AGE_DESCRIPTION)],
  cells: (o, now) => [o.metadata.name, str(obj(o.status).phase, "Active"), age(o.metadata.creationTimestamp, now)],
};

export const eventTable: TableConverter = {
  columns: [
    col("Last Seen", "string", "Time when this Event was last seen"),
    col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future."),
    col("Reason", "string", "This should be a short, machine understandable string that gives the reason for this event being generated."),
    col("Object", "string", "The object that this event is about."),
    col("Message", "string", "A human-readable description of the status of this operation."),
  ],
  cells: (o, now) => {
    const involved = obj(o.involvedObject);
    const last = o.lastTimestamp ?? o.eventTime ?? o.metadata.creationTimestamp;
    return [
      age(last, now),
      str(o.type, ""),
      str(o.reason, ""),
      `${String(involved.kind ?? "").toLowerCase()}/${String(involved.name ?? "")}`,
      str(o.message, ""),
    ];
  },
};

export const leaseTable: TableConverter = {
  columns: [NAME_COLUMN, col("Holder", "string", "The holder of the lease."), col("Age", "string", AGE_DESCRIPTION)],
  cells: (o, now) => [o.metadata.name, str(obj(o.spec).holderIdentity, ""), age(o.metadata.creationTimestamp, now)],
};

export const serviceTable: TableConverter = {
  columns: [
    NAME_COLUMN,
    col("Type", "string", "The type of the service."),
    col("Cluster-IP", "string", "The cluster IP of the service."),
    col("External-IP", "string", "The external IPs of the service."),
    col("Port(s)", "string", "The ports of the service."),
    col("Age", "string", AGE_DESCRIPTION),
  ],
  cells: (o, now) => {
    const spec = obj(o.spec);
    const ports = arr(spec.ports)
      .map(obj)
      .map((p) => `${String(p.port)}${p.nodePort ? `:${String(p.nodePort)}` : ""}/${str(p.protocol, "TCP")}`);
    return [
      o.metadata.name,
      str(spec.type, "ClusterIP"),
      str(spec.clusterIP),
      spec.type === "ExternalName" ? str(spec.externalName) : arr(spec.externalIPs).length ? arr(spec.externalIPs).join(",") : "<none>",
      ports.length ? ports.join(",") : "<none>",
      age(o.metadata.creationTimestamp, now),
    ];
  },
};

export const configMapTable: TableConverter = {
  columns: [NAME_COLUMN, col("Data", "string", "Data contains the configuration data."), col("Age", "string", AGE_DESCRIPTION)],
  cells: (o, now) => [o.metadata.name, String(Object.keys(obj(o.data)).length + Object.keys(obj(o.binaryData)).length), age(o.metadata.creationTimestamp, now)],
};

export const secretTable: TableConverter = {
  columns: [NAME_COLUMN, col("Type", "string", "The type of the secret"), col("Data", "string", "The number of entries in data"), col("Age", "string", AGE_DESCRIPTION)],
  cells: (o, now) => [o.metadata.name, str(o.type, "Opaque"), String(Object.keys(obj(o.data)).length), age(o.metadata.creationTimestamp, now)],
};

export const crdTable: TableConverter = {
  columns: [NAME_COLUMN, col("Created At", "date", AGE_DESCRIPTION)],
  cells: (o) => [o.metadata.name, typeof o.metadata.creationTimestamp === "string" ? o.metadata.creationTimestamp : ""],
};

/** A CRD version's additionalPrinterColumns entry. */
export interface PrinterColumn {
  name: string;
  type: string;
  format?: string;
  description?: string;
  priority?: number;
  jsonPath: string;
}

/** When a version declares no columns the real server shows Age. */
const DEFAULT_CRD_COLUMNS: PrinterColumn[] = [{ name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp", description: AGE_DESCRIPTION }];

/** apiextensions-apiserver's tableconvertor: first JSONPath result, typed per column. */
export function customResourceTable(columns: readonly PrinterColumn[] | undefined): TableConverter {
  const defs = columns && columns.length ? columns : DEFAULT_CRD_COLUMNS;
  const paths = defs.map((c) => parseJsonPath(c.jsonPath));
  return {
    columns: [
      NAME_COLUMN,
      ...defs.map((c) => ({ name: c.name, type: c.type, format: c.format ?? "", description: c.description ?? "", priority: c.priority ?? 0 })),
    ],
    cells: (o, now) => [
      o.metadata.name,
      ...defs.map((c, i) => {
        const results = evaluateJsonPath(paths[i] ?? [], o);
        if (results.length === 0 || results[0] === undefined || results[0] === null) return null;
        return cellForJsonValue(c.type, results[0], now);
      }),
    ],
  };
}

function cellForJsonValue(type: string, value: unknown, now: number): unknown {
  switch (type) {
    case "integer":
      return typeof value === "number" ? Math.trunc(value) : null;
    case "number":
      return typeof value === "number" ? value : null;
    case "boolean":
      return typeof value === "boolean" ? value : null;
    case "string":
      // jsonpath prints maps and lists as JSON, scalars as text.
      return typeof value === "object" ? JSON.stringify(value) : String(value);
    case "date":
      if (typeof value !== "string") return null;
      return Number.isNaN(Date.parse(value)) ? "<invalid>" : humanDuration(now - Date.parse(value));
    default:
      return null;
  }
}
