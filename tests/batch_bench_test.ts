/**
 * The batched-decode benchmark's bookkeeping (bench/compare_batch.ts): runs merge into
 * per-N medians and multiples of the N = 1 median, and the table names both engines.
 */

import assert from "node:assert/strict";
import type { BatchBenchResult } from "../bench/batch_bench.ts";
import { renderBatchTable } from "../bench/batch_bench.ts";
import { BATCH_NS, mergeBatchRuns } from "../bench/compare_batch.ts";

function run(engine: string, rates: number[]): BatchBenchResult {
  return {
    engine,
    threads: 1,
    kernel: engine === "c" ? "avx512vnni" : "llama.cpp 0.3.36",
    steps: 8,
    runs: 1,
    rows: BATCH_NS.map((n, i) => ({
      n,
      tokPerSecond: rates[i],
      speedup: rates[i] / rates[0],
      meanBatch: n,
    })),
  };
}

Deno.test("batch bench: runs merge into per-N medians; the table lists both engines", () => {
  assert.equal(mergeBatchRuns([]), undefined);
  const merged = mergeBatchRuns([
    run("c", [10, 18, 30, 50, 80]),
    run("c", [12, 15, 40, 45, 90]),
    run("c", [8, 20, 35, 60, 70]),
  ])!;
  assert.equal(merged.runs, 3);
  assert.deepEqual(merged.rows.map((r) => r.tokPerSecond), [10, 18, 35, 50, 80]);
  assert.deepEqual(merged.rows.map((r) => r.speedup), [1, 1.8, 3.5, 5, 8]);
  const table = renderBatchTable([merged, run("llama.cpp", [5, 8, 12, 15, 20])]);
  assert.match(table, /^\| c +\| 1 +\| avx512vnni \| 4 \| 35\.0 \| 8\.8 \| 3\.50x \| 4\.0 \|$/m);
  assert.match(
    table,
    /^\| llama\.cpp \| 1 \| llama\.cpp 0\.3\.36 \| 16 \| 20\.0 \| 1\.3 \| 4\.00x \| 16\.0 \|$/m,
  );
});
