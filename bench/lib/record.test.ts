import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { packageRoot } from "../../src/lab/paths.js";
import { runRecordProblems, startRun } from "./record.js";

const dir = join(packageRoot(), "bench", "results");
const files = readdirSync(dir).filter((f) => f.endsWith(".json"));

describe("bench result files", () => {
  it("exist", () => {
    expect(files.length).toBeGreaterThan(0);
  });

  it.each(files)("%s records the code commit, machine, load and options of its run", (file) => {
    const doc: unknown = JSON.parse(readFileSync(join(dir, file), "utf8"));
    expect(runRecordProblems(doc)).toEqual([]);
  });
});

describe("runRecordProblems", () => {
  it("accepts what startRun records", async () => {
    const run = await startRun("unit", { reps: 1 });
    const record = run.finish();
    expect(runRecordProblems({ run: record })).toEqual([]);
    expect(record.code.commit).toMatch(/^[0-9a-f]{40}$/);
  });

  it("names what is missing", async () => {
    const record = (await startRun("unit", {})).finish();
    expect(runRecordProblems({ date: "2026-11-22", results: {} })).toEqual(["no `run` record"]);
    const { load: _load, ...noLoad } = record;
    expect(runRecordProblems({ run: noLoad })).toEqual([
      "run.load.atStart is missing or malformed",
      "run.load.atEnd is missing or malformed",
    ]);
    expect(runRecordProblems({ run: { ...record, code: { commit: "4d5424354de2-dirty", dirty: true } } })).toEqual([
      "run.code.commit is missing or malformed",
    ]);
    expect(runRecordProblems({ run: { ...record, machine: { ...record.machine, memoryBytes: undefined } } })).toEqual([
      "run.machine.memoryBytes is missing or malformed",
    ]);
  });
});
