import { describe, expect, it } from "vitest";
import type { ChangeEvent } from "./history.js";
import type { KubeObject } from "./types.js";
import { translateEvent } from "./watch.js";

const obj = (label: string): KubeObject => ({ metadata: { name: "a", labels: { app: label } } });
const isWeb = (o: KubeObject): boolean => o.metadata.labels?.app === "web";
const modified = (from: string, to: string): ChangeEvent => ({ rv: 2, type: "MODIFIED", key: "a", object: obj(to), prev: obj(from) });

describe("translateEvent", () => {
  it("passes matching changes through", () => {
    expect(translateEvent({ rv: 1, type: "ADDED", key: "a", object: obj("web") }, isWeb)?.type).toBe("ADDED");
    expect(translateEvent(modified("web", "web"), isWeb)?.type).toBe("MODIFIED");
    expect(translateEvent({ rv: 3, type: "DELETED", key: "a", object: obj("web"), prev: obj("web") }, isWeb)?.type).toBe("DELETED");
  });

  it("turns selector transitions into ADDED and DELETED", () => {
    expect(translateEvent(modified("db", "web"), isWeb)).toMatchObject({ type: "ADDED", object: obj("web") });
    const left: ChangeEvent = { rv: 7, type: "MODIFIED", key: "a", object: { metadata: { name: "a", labels: { app: "db" }, resourceVersion: "7" } }, prev: { metadata: { name: "a", labels: { app: "web" }, resourceVersion: "5" } } };
    expect(translateEvent(left, isWeb)).toEqual({ type: "DELETED", object: { metadata: { name: "a", labels: { app: "web" }, resourceVersion: "7" } } });
  });

  it("hides changes that never matched", () => {
    expect(translateEvent(modified("db", "cache"), isWeb)).toBeUndefined();
    expect(translateEvent({ rv: 1, type: "ADDED", key: "a", object: obj("db") }, isWeb)).toBeUndefined();
  });
});
