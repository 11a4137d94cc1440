import { describe, expect, it } from "vitest";
import { decodeKubeProtobuf, ProtobufError } from "./protobuf.js";

// A tiny protobuf writer, enough to build the bodies kubectl sends.
const varint = (n: number | bigint): number[] => {
  let v = BigInt.asUintN(64, BigInt(n));
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
};
const tag = (field: number, wire: number): number[] => varint((field << 3) | wire);
const bytesField = (field: number, data: number[]): number[] => [...tag(field, 2), ...varint(data.length), ...data];
const str = (field: number, s: string): number[] => bytesField(field, [...Buffer.from(s)]);
const int = (field: number, n: number): number[] => [...tag(field, 0), ...varint(n)];
const msg = (field: number, ...parts: number[][]): number[] => bytesField(field, parts.flat());
const entry = (field: number, k: string, v: string): number[] => msg(field, str(1, k), str(2, v));
const envelope = (apiVersion: string, kind: string, raw: number[]): Uint8Array =>
  Uint8Array.from([0x6b, 0x38, 0x73, 0x00, ...msg(1, str(1, apiVersion), str(2, kind)), ...bytesField(2, raw)]);

describe("decodeKubeProtobuf", () => {
  it("decodes a ConfigMap with metadata, maps and zero values Go would omit", () => {
    const meta = msg(1, str(1, "c1"), str(2, ""), str(3, "team"), int(7, 0), msg(8), entry(11, "app", "web"));
    const body = envelope("v1", "ConfigMap", [...meta, ...entry(2, "a", "b"), ...msg(3, str(1, "bin"), bytesField(2, [0, 1, 2]))]);
    expect(decodeKubeProtobuf(body)).toEqual({
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "c1", namespace: "team", labels: { app: "web" } },
      data: { a: "b" },
      binaryData: { bin: "AAEC" },
    });
  });

  it("decodes a Service's ports with int-or-string target ports and timestamps", () => {
    const port = (name: string, p: number, target: number[][]) => msg(1, str(1, name), str(2, "TCP"), int(3, p), msg(4, ...target));
    const spec = msg(2, port("http", 80, [int(1, 0), int(2, 8080)]), port("named", 81, [int(1, 1), str(3, "web")]), entry(2, "app", "s"), str(4, "ClusterIP"));
    const meta = msg(1, str(1, "s"), msg(8, int(1, 1767225600)));
    const svc = decodeKubeProtobuf(envelope("v1", "Service", [...meta, ...spec, ...msg(3, msg(1))]));
    expect(svc.metadata).toEqual({ name: "s", creationTimestamp: "2026-01-01T00:00:00Z" });
    expect(svc.spec).toEqual({
      ports: [
        { name: "http", protocol: "TCP", port: 80, targetPort: 8080 },
        { name: "named", protocol: "TCP", port: 81, targetPort: "web" },
      ],
      selector: { app: "s" },
      type: "ClusterIP",
    });
    expect(svc.status).toEqual({ loadBalancer: {} });
  });

  it("refuses unknown kinds and unknown fields instead of dropping data", () => {
    expect(() => decodeKubeProtobuf(envelope("v1", "Pod", []))).toThrow(/decodes protobuf only for/);
    expect(() => decodeKubeProtobuf(envelope("v1", "Namespace", [...msg(1, str(99, "x"))]))).toThrow(/field 99 of metadata/);
    expect(() => decodeKubeProtobuf(Uint8Array.from([1, 2, 3, 4, 5]))).toThrow(ProtobufError);
  });
});
