/**
 * The mixture-of-experts benchmark's arithmetic (bench/compare_moe.ts): the bytes a decoded
 * token reads, counted from a GGUF's tensor table, and the table's ratios and GB/s.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { moeBytes, type MoeRow, renderMoeTable } from "../bench/compare_moe.ts";
import { GgmlType } from "../src/formats/gguf.ts";
import { writeGguf } from "./helpers/gguf_model.ts";

Deno.test("bench:compare MoE counts the chosen experts' share of the expert tensors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qwen3_bench_moe_" });
  try {
    const path = join(dir, "m.gguf");
    const f32 = (name: string, dims: number[]) => ({
      spec: { name, dims, type: GgmlType.F32 },
      data: new Uint8Array(dims.reduce((a, b) => a * b, 4)),
    });
    // 8 experts, 2 used: a token reads 2/8 of the 3 expert tensors, one of the embedding's 10
    // rows (there is a classifier) and all of the rest
    await writeGguf(path, [
      ["general.architecture", { type: "string", value: "qwen3moe" }],
      ["qwen3moe.expert_count", { type: "u32", value: 8 }],
      ["qwen3moe.expert_used_count", { type: "u32", value: 2 }],
    ], [
      f32("token_embd.weight", [32, 10]),
      f32("output.weight", [32, 10]),
      f32("blk.0.ffn_gate_inp.weight", [32, 8]),
      f32("blk.0.ffn_gate_exps.weight", [32, 4, 8]),
      f32("blk.0.ffn_up_exps.weight", [32, 4, 8]),
      f32("blk.0.ffn_down_exps.weight", [4, 32, 8]),
    ]);
    const b = await moeBytes(path);
    const embd = 32 * 10 * 4, rest = (32 * 10 + 32 * 8) * 4, experts = 3 * 32 * 4 * 8 * 4;
    assert.equal(b.weightBytes, embd + rest + experts);
    assert.equal(b.expertBytes, experts);
    assert.equal(b.activeBytes, embd / 10 + rest + experts / 4);
    assert.ok(b.fileBytes > b.weightBytes);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench:compare MoE table: ratios per thread count, GB/s of the active bytes", () => {
  const rows: MoeRow[] = [
    { engine: "c", threads: 1, pp: { pp128: 40, pp512: 50 }, tg: 10, runs: 3, failed: [] },
    { engine: "llama.cpp", threads: 1, pp: { pp128: 20, pp512: 20 }, tg: 8, runs: 3, failed: [] },
    { engine: "c", threads: 2, pp: { pp128: 0, pp512: 0 }, tg: 0, runs: 0, failed: ["exit 1"] },
  ];
  const bytes = { fileBytes: 0, weightBytes: 0, expertBytes: 0, activeBytes: 5e8 };
  const md = renderMoeTable(rows, ["pp128", "pp512"], 64, bytes, { 1: 10 });
  assert.match(md, /^\| c \| 1 \| 40\.0 \| 50\.0 \| 10\.0 \| 5\.0 \(50%\) \| {2}\|$/m);
  assert.match(md, /^\| c \| 2 \| - \| - \| - \| - \| 1 failed: exit 1 \|$/m);
  assert.match(md, /^\| 1 \| 2\.00x \| 2\.50x \| 1\.25x \|$/m);
  // no llama.cpp row at 2 threads: no ratio row for it
  assert.doesNotMatch(md, /^\| 2 \| /m);
});
