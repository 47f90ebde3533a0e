/**
 * The speculative-decoding benchmark's bookkeeping (bench/compare_speculate.ts): rounds merge
 * into per-arm medians, the section lists every row with its ratio and acceptance and prints
 * the workloads' text, and a rerun replaces the section instead of adding another.
 */

import assert from "node:assert/strict";
import {
  measureOurs,
  measurePeer,
  median,
  mergeSpeculateSamples,
  renderSpeculateSection,
  replaceSection,
} from "../bench/compare_speculate.ts";
import { demoModelPath } from "../mod.ts";
import { findLlamaPython, llamaSkipLine } from "./helpers/llama_python.ts";

Deno.test("speculate bench: medians of each arm, totals of the speculating arm", () => {
  assert.ok(Number.isNaN(median([])));
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  const row = mergeSpeculateSamples({ model: "demo", engine: "c", workload: "list" }, [
    { arm: "off", tokPerSecond: 100, tokens: 64, drafted: 0, accepted: 0 },
    { arm: "on", tokPerSecond: 210, tokens: 64, drafted: 60, accepted: 50 },
    { arm: "off", tokPerSecond: 90, tokens: 64, drafted: 0, accepted: 0 },
    { arm: "on", tokPerSecond: 150, tokens: 64, drafted: 58, accepted: 52 },
    { arm: "off", tokPerSecond: 120, tokens: 64, drafted: 0, accepted: 0 },
    { arm: "on", tokPerSecond: 200, tokens: 60, drafted: 40, accepted: 30 },
  ]);
  assert.deepEqual(row, {
    model: "demo",
    engine: "c",
    workload: "list",
    tokens: 188,
    drafted: 158,
    accepted: 132,
    on: 200,
    off: 100,
  });
});

Deno.test("speculate bench: the section shows rows, ratios, text; a rerun replaces it", () => {
  const section = renderSpeculateSection({
    rows: [
      {
        model: "demo",
        engine: "c",
        workload: "list",
        tokens: 188,
        drafted: 158,
        accepted: 132,
        on: 200,
        off: 100,
      },
      {
        model: "0.6B",
        engine: "c",
        workload: "free",
        tokens: 96,
        drafted: 0,
        accepted: 0,
        on: 9.7,
        off: 10,
      },
    ],
    rounds: 3,
    maxTokens: 64,
    threads: 1,
    peerNote: "llama.cpp: not measured (test).",
    workloads: [{ name: "list", prompt: "one, two,\nthree" }],
    load: "2.5 to 3.1",
    date: "2026-12-05",
  });
  assert.match(section, /\*\*measured\*\* on 2026-12-05 end to end/);
  assert.match(section, /\(1-minute load average 2\.5 to 3\.1 while it ran\)\./);
  assert.match(section, /^## Speculative decoding/);
  assert.match(section, /medians of 3 rounds, greedy, at most 64 tokens, 1 thread/);
  assert.match(
    section,
    /^\| demo \| c \| list \| 188 \| 158 \| 132 \(84%\) \| 200\.0 \| 100\.0 \| 2\.00x \|$/m,
  );
  assert.match(section, /^\| 0\.6B \| c \| free \| 96 \| 0 \| 0 \| 9\.7 \| 10\.0 \| 0\.97x \|$/m);
  assert.match(section, /llama\.cpp: not measured \(test\)\./);
  assert.ok(section.includes("  ```text\n  one, two,\n  three\n  ```"));
  const md = "# Results\n\n## Batched decode\n\nrows\n";
  const once = replaceSection(md, section);
  assert.ok(once.startsWith(md.trimEnd()));
  assert.ok(once.includes(section.trimEnd()));
  const other = renderSpeculateSection({
    rows: [],
    rounds: 5,
    maxTokens: 32,
    threads: 2,
    peerNote: "peer",
    workloads: [],
  });
  const twice = replaceSection(once + "\n## Later\n\nmore\n", other);
  assert.equal(twice.match(/## Speculative decoding/g)?.length, 1);
  assert.match(twice, /medians of 5 rounds/);
  assert.match(twice, /\n## Later\n\nmore\n$/);
  assert.ok(!twice.includes("| demo | c | list |"));
  const more = renderSpeculateSection({
    rows: [],
    rounds: 3,
    demoRounds: 15,
    maxTokens: 64,
    threads: 2,
    peerNote: "peer",
    workloads: [],
  });
  assert.match(more, /medians of 15 rounds on the demo model \(.*\), 3 on the larger models,/);
  const wide = renderSpeculateSection({
    rows: [],
    rounds: 3,
    demoRounds: 15,
    wideRounds: 5,
    maxTokens: 64,
    threads: 2,
    peerNote: "peer",
    workloads: [],
  });
  assert.match(
    wide,
    /15 rounds on the demo model \(.*\), 5 on the widened demo, 3 on the 0\.6B shape,/,
  );
});

const LIST = [{
  name: "continue a list",
  prompt: "one, two, three, four, five, six, seven, eight, nine, ten. " +
    "one, two, three, four, five, six, seven, eight, nine, ten. one, two,",
}];

Deno.test("speculate bench: our engine drafts on an echo of the demo model", async () => {
  const [row] = await measureOurs(await demoModelPath(), "demo", LIST, {
    rounds: 1,
    maxTokens: 16,
    threads: 1,
  });
  assert.equal(row.engine, "c");
  assert.equal(row.tokens, 16);
  assert.ok(row.drafted > 0 && row.accepted > 0 && row.accepted <= row.drafted);
  assert.ok(row.on > 0 && row.off > 0);
});

Deno.test("speculate bench: llama.cpp's prompt lookup runs on the demo GGUF", async () => {
  const python = await findLlamaPython();
  if (!python) {
    console.log(llamaSkipLine("the llama.cpp prompt-lookup bench check"));
    return;
  }
  const gguf = new URL("../models/demo/model-q8_0.gguf", import.meta.url).pathname;
  const [row] = await measurePeer(python, gguf, "demo", LIST, {
    rounds: 1,
    maxTokens: 16,
    threads: 1,
  });
  assert.equal(row.engine, "llama.cpp");
  assert.equal(row.workload, "continue a list");
  assert.equal(row.tokens, 16);
  assert.ok(row.drafted > 0 && row.accepted <= row.drafted);
  assert.ok(row.on > 0 && row.off > 0);
});
