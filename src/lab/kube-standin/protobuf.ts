/**
 * Request bodies in Kubernetes' protobuf encoding, for the few kinds whose kubectl generator
 * commands send protobuf (`kubectl create namespace|configmap|secret|service`). Responses are
 * always JSON (kubectl also accepts it). A field this decoder does not know is refused (415)
 * rather than silently dropped.
 *
 * Envelope: the bytes "k8s\0", then runtime.Unknown {1: typeMeta {1: apiVersion, 2: kind},
 * 2: raw (the object's own message), 3: contentEncoding, 4: contentType}.
 */

import { rfc3339, type JsonObject, type KubeObject } from "./types.js";

export class ProtobufError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtobufError";
  }
}

type Scalar = "string" | "bytes" | "int" | "bool";
type FieldSpec =
  | { name: string; type: Scalar; repeated?: boolean }
  | { name: string; type: "message"; message: () => MessageSpec; repeated?: boolean }
  | { name: string; type: "map"; value: "string" | "bytes" }
  | { name: string; type: "time" | "intOrString" };
type MessageSpec = Readonly<Record<number, FieldSpec>>;

const TYPE_META: MessageSpec = { 1: { name: "apiVersion", type: "string" }, 2: { name: "kind", type: "string" } };

const OWNER_REFERENCE: MessageSpec = {
  1: { name: "kind", type: "string" },
  3: { name: "name", type: "string" },
  4: { name: "uid", type: "string" },
  5: { name: "apiVersion", type: "string" },
  6: { name: "controller", type: "bool" },
  7: { name: "blockOwnerDeletion", type: "bool" },
};

const OBJECT_META: MessageSpec = {
  1: { name: "name", type: "string" },
  2: { name: "generateName", type: "string" },
  3: { name: "namespace", type: "string" },
  4: { name: "selfLink", type: "string" },
  5: { name: "uid", type: "string" },
  6: { name: "resourceVersion", type: "string" },
  7: { name: "generation", type: "int" },
  8: { name: "creationTimestamp", type: "time" },
  9: { name: "deletionTimestamp", type: "time" },
  10: { name: "deletionGracePeriodSeconds", type: "int" },
  11: { name: "labels", type: "map", value: "string" },
  12: { name: "annotations", type: "map", value: "string" },
  13: { name: "ownerReferences", type: "message", message: () => OWNER_REFERENCE, repeated: true },
  14: { name: "finalizers", type: "string", repeated: true },
};

const NAMESPACE: MessageSpec = {
  1: { name: "metadata", type: "message", message: () => OBJECT_META },
  2: { name: "spec", type: "message", message: () => ({ 1: { name: "finalizers", type: "string", repeated: true } }) },
  3: { name: "status", type: "message", message: () => ({ 1: { name: "phase", type: "string" } }) },
};

const CONFIG_MAP: MessageSpec = {
  1: { name: "metadata", type: "message", message: () => OBJECT_META },
  2: { name: "data", type: "map", value: "string" },
  3: { name: "binaryData", type: "map", value: "bytes" },
  4: { name: "immutable", type: "bool" },
};

const SECRET: MessageSpec = {
  1: { name: "metadata", type: "message", message: () => OBJECT_META },
  2: { name: "data", type: "map", value: "bytes" },
  3: { name: "type", type: "string" },
  4: { name: "stringData", type: "map", value: "string" },
  5: { name: "immutable", type: "bool" },
};

const SERVICE_PORT: MessageSpec = {
  1: { name: "name", type: "string" },
  2: { name: "protocol", type: "string" },
  3: { name: "port", type: "int" },
  4: { name: "targetPort", type: "intOrString" },
  5: { name: "nodePort", type: "int" },
  6: { name: "appProtocol", type: "string" },
};

const SERVICE_SPEC: MessageSpec = {
  1: { name: "ports", type: "message", message: () => SERVICE_PORT, repeated: true },
  2: { name: "selector", type: "map", value: "string" },
  3: { name: "clusterIP", type: "string" },
  4: { name: "type", type: "string" },
  5: { name: "externalIPs", type: "string", repeated: true },
  7: { name: "sessionAffinity", type: "string" },
  8: { name: "loadBalancerIP", type: "string" },
  9: { name: "loadBalancerSourceRanges", type: "string", repeated: true },
  10: { name: "externalName", type: "string" },
  11: { name: "externalTrafficPolicy", type: "string" },
  12: { name: "healthCheckNodePort", type: "int" },
  13: { name: "publishNotReadyAddresses", type: "bool" },
  17: { name: "ipFamilyPolicy", type: "string" },
  18: { name: "clusterIPs", type: "string", repeated: true },
  19: { name: "ipFamilies", type: "string", repeated: true },
  20: { name: "allocateLoadBalancerNodePorts", type: "bool" },
  21: { name: "loadBalancerClass", type: "string" },
  22: { name: "internalTrafficPolicy", type: "string" },
  23: { name: "trafficDistribution", type: "string" },
};

const SERVICE: MessageSpec = {
  1: { name: "metadata", type: "message", message: () => OBJECT_META },
  2: { name: "spec", type: "message", message: () => SERVICE_SPEC },
  3: {
    name: "status",
    type: "message",
    message: () => ({ 1: { name: "loadBalancer", type: "message", message: () => ({ 1: { name: "ingress", type: "message", message: () => ({ 1: { name: "ip", type: "string" }, 2: { name: "hostname", type: "string" } }), repeated: true } }) } }),
  },
};

/** apiVersion/kind → message. */
const KINDS: Readonly<Record<string, MessageSpec>> = {
  "v1/Namespace": NAMESPACE,
  "v1/ConfigMap": CONFIG_MAP,
  "v1/Secret": SECRET,
  "v1/Service": SERVICE,
};

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.buf.length) throw new ProtobufError("truncated varint");
      const b = this.buf[this.pos++] as number;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 70n) throw new ProtobufError("varint too long");
    }
  }

  bytes(): Uint8Array {
    const len = Number(this.varint());
    if (this.pos + len > this.buf.length) throw new ProtobufError("truncated length-delimited field");
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.pos += 8;
    else if (wireType === 2) this.bytes();
    else if (wireType === 5) this.pos += 4;
    else throw new ProtobufError(`unsupported wire type ${wireType}`);
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function toInt(v: bigint): number {
  return Number(BigInt.asIntN(64, v));
}

function decodeScalar(r: Reader, wireType: number, type: Scalar, path: string): unknown {
  if (type === "string" || type === "bytes") {
    if (wireType !== 2) throw new ProtobufError(`${path}: expected a length-delimited field`);
    const b = r.bytes();
    return type === "string" ? utf8.decode(b) : Buffer.from(b).toString("base64");
  }
  if (wireType !== 0) throw new ProtobufError(`${path}: expected a varint`);
  const v = r.varint();
  return type === "bool" ? v !== 0n : toInt(v);
}

function decodeMapEntry(bytes: Uint8Array, value: "string" | "bytes", path: string): [string, unknown] {
  const r = new Reader(bytes);
  let key = "";
  let val: unknown = value === "string" ? "" : "";
  while (!r.done) {
    const tag = toInt(r.varint());
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 1) key = decodeScalar(r, wire, "string", path) as string;
    else if (field === 2) val = decodeScalar(r, wire, value, path);
    else r.skip(wire);
  }
  return [key, val];
}

function decodeTime(bytes: Uint8Array): string | undefined {
  const r = new Reader(bytes);
  let seconds = 0;
  while (!r.done) {
    const tag = toInt(r.varint());
    if (tag >>> 3 === 1) seconds = toInt(r.varint());
    else r.skip(tag & 7);
  }
  return seconds === 0 ? undefined : rfc3339(seconds * 1000);
}

function decodeIntOrString(bytes: Uint8Array, path: string): number | string {
  const r = new Reader(bytes);
  let type = 0;
  let intVal = 0;
  let strVal = "";
  while (!r.done) {
    const tag = toInt(r.varint());
    const field = tag >>> 3;
    if (field === 1) type = toInt(r.varint());
    else if (field === 2) intVal = toInt(r.varint());
    else if (field === 3) strVal = decodeScalar(r, tag & 7, "string", path) as string;
    else r.skip(tag & 7);
  }
  return type === 1 ? strVal : intVal;
}

/** Go's JSON encoder omits these zero values (omitempty); protobuf writes them anyway. */
function isEmpty(v: unknown): boolean {
  return v === undefined || v === "" || v === 0 || v === false || (Array.isArray(v) && v.length === 0);
}

export function decodeMessage(bytes: Uint8Array, spec: MessageSpec, path: string): JsonObject {
  const r = new Reader(bytes);
  const out: JsonObject = {};
  while (!r.done) {
    const tag = toInt(r.varint());
    const num = tag >>> 3;
    const wire = tag & 7;
    const f = spec[num];
    if (!f) throw new ProtobufError(`field ${num} of ${path || "the object"} is not understood by the stand-in's protobuf decoder; send JSON instead`);
    const fieldPath = path ? `${path}.${f.name}` : f.name;
    switch (f.type) {
      case "message": {
        const value = decodeMessage(r.bytes(), f.message(), fieldPath);
        if (f.repeated) ((out[f.name] ??= []) as unknown[]).push(value);
        else out[f.name] = value;
        break;
      }
      case "map": {
        const [k, v] = decodeMapEntry(r.bytes(), f.value, fieldPath);
        ((out[f.name] ??= {}) as JsonObject)[k] = v;
        break;
      }
      case "time": {
        const t = decodeTime(r.bytes());
        if (t !== undefined) out[f.name] = t;
        break;
      }
      case "intOrString":
        out[f.name] = decodeIntOrString(r.bytes(), fieldPath);
        break;
      default: {
        if (f.repeated && wire === 2 && f.type !== "string" && f.type !== "bytes") {
          // Packed repeated scalars.
          const inner = new Reader(r.bytes());
          while (!inner.done) ((out[f.name] ??= []) as unknown[]).push(decodeScalar(inner, 0, f.type, fieldPath));
          break;
        }
        const value = decodeScalar(r, wire, f.type, fieldPath);
        if (f.repeated) ((out[f.name] ??= []) as unknown[]).push(value);
        else out[f.name] = value;
      }
    }
  }
  for (const [k, v] of Object.entries(out)) if (isEmpty(v)) delete out[k];
  return out;
}

const MAGIC = [0x6b, 0x38, 0x73, 0x00];

/** Decodes a `application/vnd.kubernetes.protobuf` request body into the JSON form of the object. */
export function decodeKubeProtobuf(body: Uint8Array): KubeObject {
  if (body.length < 4 || MAGIC.some((b, i) => body[i] !== b)) throw new ProtobufError("missing the k8s protobuf envelope prefix");
  const envelope = new Reader(body.subarray(4));
  let typeMeta: JsonObject = {};
  let raw: Uint8Array | undefined;
  while (!envelope.done) {
    const tag = toInt(envelope.varint());
    const num = tag >>> 3;
    if (num === 1) typeMeta = decodeMessage(envelope.bytes(), TYPE_META, "typeMeta");
    else if (num === 2) raw = envelope.bytes();
    else envelope.skip(tag & 7);
  }
  const apiVersion = String(typeMeta.apiVersion ?? "");
  const kind = String(typeMeta.kind ?? "");
  const spec = KINDS[`${apiVersion}/${kind}`];
  if (!spec) throw new ProtobufError(`the stand-in decodes protobuf only for ${Object.keys(KINDS).join(", ")}; got ${apiVersion}/${kind}: send JSON instead`);
  const obj = decodeMessage(raw ?? new Uint8Array(), spec, "");
  return { apiVersion, kind, metadata: {}, ...obj } as KubeObject;
}
