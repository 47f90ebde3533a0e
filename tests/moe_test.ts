/**
 * Qwen3-MoE (GGUF arch `qwen3moe`) against Hugging Face transformers: the tiny random
 * Qwen3MoeForCausalLM of tools/hf_moe_reference.py (8 experts, top-2, norm_topk_prob, block
 * 1 dense; and the same weights with norm_topk_prob false) is exported to GGUF and the TypeScript engine, reading it, must pick transformers'
 * argmax at every prompt position and stay within the dense path's bounds of its logits,
 * and so must the C engine, which must also give the same bits on every kernel tier, at 1
 * and 2 threads, and for a prompt fed at once (grouped by expert) or token by token. Also:
 * the file's keys and tensor shapes are llama.cpp's, and what the exporter refuses.
 * Needs the C library built (`deno task build`).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { CEngine, kernelName, selectKernel } from "../ffi/c_engine.ts";
import { Qwen3Error } from "../src/errors.ts";
import { exportHfModel, ggufTensorTypes } from "../src/export/export.ts";
import { GgmlType, readGgufHeader } from "../src/formats/gguf.ts";
import { LLAMA_FILE_TYPE, qwen3GgufMetadata } from "../src/formats/gguf_qwen3.ts";
import { moeGgufMetadata } from "../src/export/moe_export.ts";
import { type GgufTensorData, writeGguf } from "./helpers/gguf_model.ts";
import { TsEngine } from "../src/reference/ts_engine.ts";
import type { Engine, ModelConfig } from "../src/types.ts";
import { QWEN3_TOKENIZER_JSON } from "./helpers/tokenizer_path.ts";
import { findLlamaPython, llamaSkipLine } from "./helpers/llama_python.ts";
import { materializeHfFixture } from "./helpers/hf_fixture.ts";
import { type GgufQuantMixture, MIXTURES } from "../src/export/gguf_mixture.ts";
import { GGML_TYPE_NAMES } from "../src/formats/gguf.ts";

/** The dense fixtures' Q8 bound (tests/export_test.ts), in deviations of the logits. */
const Q8_TOLERANCE = 0.1;
/** F32 weights: fp32 throughout, only the summation order differs from transformers. */
const F32_TOLERANCE = 1e-3;

const NAME = "hf_tiny_moe_bf16";
const fixtures = new URL("./fixtures/", import.meta.url);
const tmp = await Deno.makeTempDir({ prefix: "qwen3_moe_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));

interface Position {
  top_ids: number[];
  top_logits: number[];
  probe_logits: number[];
  std: number;
  margin: number;
}

interface Reference {
  probe_ids: number[];
  prompts: { name: string; ids: number[]; positions: Position[] }[];
}

/** The fixture folder with its weights unzipped and tokenizer.json added, in `dest`. */
async function materialize(dest: string): Promise<string> {
  await Deno.mkdir(dest, { recursive: true });
  const src = new URL(`${NAME}/`, fixtures);
  return await materializeHfFixture(src, dest);
}

const hf = materialize(join(tmp, NAME));
const reference: Reference = JSON.parse(
  await Deno.readTextFile(new URL(`${NAME}/reference.json`, fixtures)),
);

/**
 * The second fixture (tools/hf_moe_reference.py --no-norm): the same weights with
 * norm_topk_prob false, so only its config.json and transformers' logits are committed.
 */
const NO_NORM = "hf_tiny_moe_nonorm";
const hfNoNorm = (async () => {
  const dir = await materialize(join(tmp, NO_NORM));
  await Deno.copyFile(new URL(`${NO_NORM}/config.json`, fixtures), join(dir, "config.json"));
  return dir;
})();
const noNormReference: Reference = JSON.parse(
  await Deno.readTextFile(new URL(`${NO_NORM}/reference.json`, fixtures)),
);

type Variant = "norm" | "no_norm";
const exports = new Map<string, Promise<string>>();
function exportGguf(
  type: "q8_0" | "f32" | GgufQuantMixture,
  variant: Variant = "norm",
): Promise<string> {
  let p = exports.get(`${variant}_${type}`);
  if (!p) {
    p = (async () => {
      const out = join(tmp, `moe_${variant}_${type}.gguf`);
      await exportHfModel(await (variant === "norm" ? hf : hfNoNorm), out, {
        format: "gguf",
        type,
      });
      return out;
    })();
    exports.set(`${variant}_${type}`, p);
  }
  return p;
}

/** Every position's logits, the prompt fed one token at a time. */
async function engineLogits(engine: Engine, ref: Reference = reference): Promise<Float32Array[][]> {
  const out: Float32Array[][] = [];
  for (const p of ref.prompts) {
    using session = engine.createSession(64);
    const rows: Float32Array[] = [];
    for (const id of p.ids) rows.push((await session.forward([id])).slice());
    out.push(rows);
  }
  return out;
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/** Checks logits against transformers'; returns the largest error in deviations. */
function compare(
  label: string,
  logits: Float32Array[][],
  tolerance: number,
  ref: Reference = reference,
): number {
  let worst = 0;
  ref.prompts.forEach((p, i) => {
    p.positions.forEach((pos, t) => {
      const ours = logits[i][t];
      const where = `${label}, prompt ${p.name}, position ${t}`;
      assert.equal(argmax(ours), pos.top_ids[0], `${where}: argmax (gap ${pos.margin})`);
      const check = (id: number, want: number) => {
        const err = Math.abs(ours[id] - want) / pos.std;
        worst = Math.max(worst, err);
        assert.ok(err <= tolerance, `${where}, token ${id}: ${ours[id]} vs ${want} (${err} std)`);
      };
      pos.top_ids.forEach((id, k) => check(id, pos.top_logits[k]));
      ref.probe_ids.forEach((id, k) => check(id, pos.probe_logits[k]));
    });
  });
  return worst;
}

/**
 * Largest |C - TS| logit allowed: the engines share every rounding step, but TypeScript's
 * Math.exp and the C engine's exp (kernels.h) may differ by an ulp, and through the router
 * softmax and SiLU that moves a logit by a few 1e-6 (3.8e-6 seen).
 */
const C_TS_TOLERANCE = 1e-4;

// norm_topk_prob false: F32 only, where the bound is tight enough to tell the two weightings
// apart (the Q8 path is the same code as the first fixture's).
for (
  const [type, tolerance, variant] of [
    ["q8_0", Q8_TOLERANCE, "norm"],
    ["f32", F32_TOLERANCE, "norm"],
    ["f32", F32_TOLERANCE, "no_norm"],
  ] as const
) {
  const what = variant === "norm" ? "" : " (norm_topk_prob false)";
  Deno.test(`qwen3moe ${type} GGUF${what}: both engines match transformers`, async () => {
    const path = await exportGguf(type, variant);
    const ref = variant === "norm" ? reference : noNormReference;
    using ts = await TsEngine.load(path);
    assert.deepEqual(ts.config.moe, {
      nExperts: 8,
      nExpertsUsed: 2,
      expertHiddenDim: 32,
      normTopkProb: variant === "norm",
      sparse: [true, false],
    });
    const tsLogits = await engineLogits(ts, ref);
    const tsWorst = compare(`ts ${type}${what}`, tsLogits, tolerance, ref);
    using c = await CEngine.load(path, { threads: 1 });
    assert.deepEqual(c.config.moe, ts.config.moe);
    const cLogits = await engineLogits(c, ref);
    const cWorst = compare(`c ${type}${what}`, cLogits, tolerance, ref);
    let apart = 0;
    cLogits.forEach((rows, i) =>
      rows.forEach((row, t) => {
        assert.equal(argmax(row), argmax(tsLogits[i][t]));
        for (let j = 0; j < row.length; j++) {
          apart = Math.max(apart, Math.abs(row[j] - tsLogits[i][t][j]));
        }
      })
    );
    assert.ok(apart <= C_TS_TOLERANCE, `C and TS logits ${apart} apart`);
    console.log(
      `qwen3moe ${type}${what}: worst logit error ${tsWorst.toExponential(2)} (ts), ${
        cWorst.toExponential(2)
      } ` +
        `(c) std; C - TS at most ${apart}`,
    );
  });
}

Deno.test("qwen3moe C engine: the same bits on every tier, thread count, prefill or decode", async () => {
  const path = await exportGguf("q8_0");
  const ids = reference.prompts[0].ids;
  const initial = await kernelName();
  let want: Float32Array | undefined;
  const ran: string[] = [];
  try {
    // every tier this CPU and build have (as tests/engines_test.ts lists them)
    for (
      const tier of ["scalar", "avx2", "avxvnni", "avx512vnni", "amx", "neon", "neondot", "sve"]
    ) {
      try {
        await selectKernel(tier);
      } catch (e) {
        if (e instanceof Qwen3Error && e.code === "unsupported") continue;
        throw e;
      }
      ran.push(tier);
      for (const threads of [1, 2]) {
        using c = await CEngine.load(path, { threads });
        using whole = c.createSession(64);
        const prefill = (await whole.forward(ids)).slice();
        using steps = c.createSession(64);
        const rows: Float32Array[] = []; // rows[j]: the logits after ids[0..j], step by step
        for (const id of ids) rows.push((await steps.forward([id])).slice());
        const decode = rows[rows.length - 1];
        const where = `${tier}, ${threads} threads`;
        assert.deepEqual(prefill, decode, `${where}: prefill differs from decode`);
        // batched decode steps (qwen3_context_decode_batch): sessions at positions 1, 2, 3
        // stepping together route their rows to different experts in one pass
        const batched = [1, 2, 3].map((k) => ({ k, s: c.createSession(64) }));
        try {
          for (const { k, s } of batched) await s.forward(ids.slice(0, k));
          const before = c.decodeBatchStats.batches;
          for (let r = 0; 3 + r < ids.length; r++) {
            const got = await Promise.all(batched.map(({ k, s }) => s.forward([ids[k + r]])));
            got.forEach((g, i) => {
              const j = batched[i].k + r;
              assert.deepEqual(g, rows[j], `${where}: batched step of token ${j} differs`);
            });
          }
          assert.equal(
            c.decodeBatchStats.batches - before,
            ids.length - 3,
            `${where}: not batched`,
          );
        } finally {
          for (const { s } of batched) s[Symbol.dispose]();
        }
        want ??= prefill;
        assert.deepEqual(prefill, want, `${where}: differs from the first run`);
      }
    }
  } finally {
    await selectKernel(initial);
  }
  assert.ok(ran.includes("scalar") && ran.includes(initial));
  console.log(`qwen3moe: the same bits on tiers ${ran.join(", ")}`);
});

Deno.test("qwen3moe C engine: a long prompt in MoE-sized blocks equals decode", async () => {
  // A Qwen3-MoE context prefills in blocks of up to 256 tokens (QWEN3_MOE_FORWARD_BLOCK, not
  // the dense 64): 200 tokens in one call are one block here, token by token 200 steps.
  const path = await exportGguf("q8_0");
  const base = reference.prompts[0].ids;
  const ids = Array.from({ length: 200 }, (_, i) => base[(i * 7 + (i >> 3)) % base.length]);
  for (const threads of [1, 2]) {
    using c = await CEngine.load(path, { threads });
    using whole = c.createSession(256);
    const prefill = (await whole.forward(ids)).slice();
    using split = c.createSession(256);
    await split.forward(ids.slice(0, 1));
    await split.forward(ids.slice(1, 70));
    const parts = (await split.forward(ids.slice(70))).slice();
    using steps = c.createSession(256);
    let decode = new Float32Array();
    for (const id of ids) decode = (await steps.forward([id])).slice();
    // bit patterns compared (a failing deepEqual of 10^5 floats takes minutes to print)
    assert.equal(firstDiff(prefill, decode), -1, `${threads} threads: prefill differs from decode`);
    assert.equal(
      firstDiff(parts, decode),
      -1,
      `${threads} threads: 1 + 69 + 130 differs from decode`,
    );
  }
});

/** The first index where a and b differ in bits or length (-1 when equal). */
function firstDiff(a: Float32Array, b: Float32Array): number {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return i;
  return x.length === y.length ? -1 : Math.min(x.length, y.length);
}

Deno.test("qwen3moe GGUF: llama.cpp's keys, tensor names and shapes", async () => {
  const path = await exportGguf("q8_0");
  const bytes = await Deno.readFile(path);
  const g = readGgufHeader(bytes, bytes.length, path);
  assert.equal(g.metadata.get("general.architecture"), "qwen3moe");
  assert.equal(g.metadata.get("qwen3moe.expert_count"), 8);
  assert.equal(g.metadata.get("qwen3moe.expert_used_count"), 2);
  assert.equal(g.metadata.get("qwen3moe.expert_feed_forward_length"), 32);
  assert.equal(g.metadata.get("qwen3moe.feed_forward_length"), 96);
  // llama.cpp's converter writes no expert_weights_norm for Qwen3-MoE; ours only when false
  assert.equal(g.metadata.has("qwen3moe.expert_weights_norm"), false);
  const noNorm = await exportGguf("f32", "no_norm");
  const nb = await Deno.readFile(noNorm);
  const ng = readGgufHeader(nb, nb.length, noNorm);
  assert.equal(ng.metadata.get("qwen3moe.expert_weights_norm"), false);
  assert.equal(g.metadata.get("qwen3moe.embedding_length"), 64);
  assert.ok(![...g.metadata.keys()].some((k) => k.startsWith("qwen3.")));
  const t = (name: string) => g.tensors.get(name);
  for (const l of [0]) {
    assert.deepEqual(t(`blk.${l}.ffn_gate_inp.weight`)?.dims, [64, 8]);
    assert.equal(t(`blk.${l}.ffn_gate_inp.weight`)?.type, GgmlType.F32);
    assert.deepEqual(t(`blk.${l}.ffn_gate_exps.weight`)?.dims, [64, 32, 8]);
    assert.deepEqual(t(`blk.${l}.ffn_up_exps.weight`)?.dims, [64, 32, 8]);
    assert.deepEqual(t(`blk.${l}.ffn_down_exps.weight`)?.dims, [32, 64, 8]);
    assert.equal(t(`blk.${l}.ffn_down_exps.weight`)?.type, GgmlType.Q8_0);
    assert.equal(t(`blk.${l}.ffn_gate.weight`), undefined);
  }
  assert.deepEqual(t("blk.1.ffn_gate.weight")?.dims, [64, 96]);
  assert.equal(t("blk.1.ffn_gate_inp.weight"), undefined);
});

/** The fixture with config.json edited by `edit`, in a folder of its own. */
async function editedConfig(label: string, edit: (c: Record<string, unknown>) => void) {
  const dir = await materialize(join(tmp, label));
  const path = join(dir, "config.json");
  const c = JSON.parse(await Deno.readTextFile(path));
  edit(c);
  await Deno.writeTextFile(path, JSON.stringify(c));
  return dir;
}

Deno.test("qwen3moe export: refuses what it cannot write, naming why", async () => {
  const out = join(tmp, "refused.gguf");
  const refuses = async (dir: string, opts: object, kind: string, pattern: RegExp) => {
    await assert.rejects(
      exportHfModel(dir, out, opts),
      (e: Error) => e instanceof Qwen3Error && e.code === kind && pattern.test(e.message),
    );
    await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
  };
  // model.bin's header marks the sparse blocks in a bitmap of 1024 bits
  const deep = await editedConfig("deep", (c) => c.num_hidden_layers = 1025);
  await refuses(deep, { format: "bin" }, "unsupported", /num_hidden_layers 1025 .* 1024 blocks/);
  const used = await editedConfig("bad_used", (c) => c.num_experts_per_tok = 9);
  await refuses(used, { format: "gguf" }, "format", /num_experts_per_tok = 9/);
  const norm = await editedConfig("bad_norm", (c) => c.norm_topk_prob = "yes");
  await refuses(norm, { format: "gguf" }, "format", /norm_topk_prob = "yes" is not true or false/);
});

/** The exported Q8_0 file with `patch` applied to a copy of its bytes, written beside it. */
async function patched(label: string, patch: (b: Uint8Array, at: (s: string) => number) => void) {
  const bytes = await Deno.readFile(await exportGguf("q8_0"));
  const at = (s: string) => {
    const needle = new TextEncoder().encode(s);
    for (let i = 0; i + needle.length <= bytes.length; i++) {
      if (needle.every((v, j) => bytes[i + j] === v)) return i + needle.length;
    }
    throw new Error(`${s} not found`);
  };
  patch(bytes, at);
  const path = join(tmp, `${label}.gguf`);
  await Deno.writeFile(path, bytes);
  return path;
}

Deno.test("qwen3moe GGUF: both engines refuse bad expert counts and shapes, naming them", async () => {
  // expert_used_count (u32 type tag, then the value) = 9 > expert_count 8
  const used = await patched("used9", (b, at) => {
    new DataView(b.buffer).setUint32(at("qwen3moe.expert_used_count") + 4, 9, true);
  });
  // ffn_gate_exps dims [64, 32, 8] -> [32, 64, 8]: the same bytes, the wrong shape
  const shape = await patched("shape", (b, at) => {
    const dims = at("blk.0.ffn_gate_exps.weight") + 4;
    const v = new DataView(b.buffer);
    v.setBigUint64(dims, 32n, true);
    v.setBigUint64(dims + 8, 64n, true);
  });
  // the only router renamed (same length): no block is sparse
  const none = await patched("no_router", (b, at) => {
    b[at("blk.0.ffn_gate_inp") - 1] = "q".charCodeAt(0);
  });
  // expert_weights_norm's type tag bool (7) -> uint8 (0): the same byte, not a bool
  const normBytes = await Deno.readFile(await exportGguf("f32", "no_norm"));
  const normType =
    normBytes.findIndex((_, i) =>
      new TextDecoder().decode(normBytes.subarray(i, i + 28)) === "qwen3moe.expert_weights_norm"
    ) + 28;
  normBytes[normType] = 0;
  const normPath = join(tmp, "norm_u8.gguf");
  await Deno.writeFile(normPath, normBytes);
  const cases: [string, RegExp][] = [
    [none, /GGUF arch qwen3moe has no block with a ffn_gate_inp tensor/],
    [normPath, /'qwen3moe\.expert_weights_norm' is (a u8, expected a bool|not a bool)/],
    [used, /qwen3moe\.expert_used_count' = 9 is outside \[1, 8\]/],
    [shape, /blk\.0\.ffn_gate_exps\.weight' has shape \[32, 64, 8, 1\].*expected \[64, 32, 8\]/],
  ];
  for (const [path, pattern] of cases) {
    for (const load of [() => TsEngine.load(path), () => CEngine.load(path)]) {
      await assert.rejects(
        load(),
        (e: Error) => e instanceof Qwen3Error && e.code === "format" && pattern.test(e.message),
      );
    }
  }
});

const LLAMA_PYTHON = await findLlamaPython();
if (!LLAMA_PYTHON) console.log(llamaSkipLine("the llama.cpp qwen3moe check"));

Deno.test({
  name: "qwen3moe GGUF runs in llama.cpp like the TS engine (QWEN3_LLAMA_PYTHON)",
  ignore: LLAMA_PYTHON === null,
  async fn() {
    // llama.cpp's qwen3moe has no dense blocks: block 1 gets block 0's router and experts
    // in place of its dense feed-forward (not transformers' model any more: the check is
    // llama.cpp against our engine on one file).
    const src = await exportGguf("f32");
    const bytes = await Deno.readFile(src);
    const g = readGgufHeader(bytes, bytes.length, src);
    const tensors: GgufTensorData[] = [];
    const data = (name: string) => {
      const t = g.tensors.get(name)!;
      return {
        spec: { name, dims: t.dims, type: t.type },
        data: bytes.subarray(t.offset, t.offset + t.bytes),
      };
    };
    for (const name of g.tensors.keys()) {
      if (/^blk\.1\.ffn_(gate|up|down)\.weight$/.test(name)) continue;
      tensors.push(data(name));
    }
    for (const t of ["ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]) {
      const from = data(`blk.0.${t}.weight`);
      tensors.push({ ...from, spec: { ...from.spec, name: `blk.1.${t}.weight` } });
    }
    const config = await (async () => {
      using e = await TsEngine.load(src);
      return e.config;
    })();
    config.moe!.sparse = [true, true];
    const json = JSON.parse(await Deno.readTextFile(QWEN3_TOKENIZER_JSON));
    const metadata = moeGgufMetadata(
      qwen3GgufMetadata(config, json, { fileType: LLAMA_FILE_TYPE.ALL_F32 }),
      config.moe!,
    );
    const path = join(tmp, "all_sparse.gguf");
    await writeGguf(path, metadata, tensors);

    const script = `
import json, sys, numpy as np
from llama_cpp import Llama
m = Llama(sys.argv[1], verbose=False, n_ctx=64, n_threads=1, logits_all=True)
out = []
for ids in json.loads(sys.argv[2]):
    m.reset(); m._ctx.kv_cache_clear(); m.eval(ids)
    out.append(np.array(m.scores[:len(ids)], dtype=np.float32))
sys.stdout.buffer.write(np.concatenate(out).tobytes())
`;
    const ids = JSON.stringify(reference.prompts.map((p) => p.ids));
    const r = await new Deno.Command(LLAMA_PYTHON!, { args: ["-c", script, path, ids] }).output();
    assert.ok(r.success, new TextDecoder().decode(r.stderr));
    const all = new Float32Array(r.stdout.slice().buffer);
    using ts = await TsEngine.load(path);
    assert.deepEqual(ts.config.moe?.sparse, [true, true]);
    const ours = await engineLogits(ts);
    let row = 0, worst = 0;
    reference.prompts.forEach((p, i) => {
      p.ids.forEach((_, t) => {
        const theirs = all.subarray(151936 * row, 151936 * ++row);
        const mine = ours[i][t];
        assert.equal(argmax(theirs), argmax(mine), `prompt ${p.name}, position ${t}: argmax`);
        let mean = 0;
        for (const v of mine) mean += v;
        mean /= mine.length;
        let sq = 0;
        for (const v of mine) sq += (v - mean) ** 2;
        const std = Math.sqrt(sq / mine.length);
        for (let j = 0; j < mine.length; j++) {
          worst = Math.max(worst, Math.abs(theirs[j] - mine[j]) / std);
        }
      });
    });
    // llama.cpp keeps its KV cache in F16 (as in tests/export_test.ts): ~1e-3 std.
    assert.ok(worst <= 0.01, `llama.cpp and the TS engine ${worst} std apart`);
    console.log(
      `llama.cpp on the all-sparse F32 GGUF: worst logit difference ${worst.toFixed(5)} std`,
    );
  },
});

Deno.test("qwen3moe q4_k_m export: llama.cpp's mixture types; both engines run it alike", async () => {
  const path = await exportGguf("q4_k_m");
  const bytes = await Deno.readFile(path);
  const g = readGgufHeader(bytes, bytes.length, path);
  const types = Object.fromEntries(
    [...g.tensors.values()].filter((t) => t.dims.length > 1).map((
      t,
    ) => [t.name, GGML_TYPE_NAMES[t.type]]),
  );
  // As llama-cpp-python 0.3.36's llama_model_quantize picks them for this file: 8 experts
  // raise attn_k / attn_v to Q8_0 and attn_output to Q5_K; width 64 takes the 32-value
  // fallbacks (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0); the router stays F32.
  const block = (l: number, ffn: Record<string, string>) => ({
    [`blk.${l}.attn_q.weight`]: "Q5_0",
    [`blk.${l}.attn_k.weight`]: "Q8_0",
    [`blk.${l}.attn_v.weight`]: "Q8_0",
    [`blk.${l}.attn_output.weight`]: "Q5_1",
    ...ffn,
  });
  assert.deepEqual(types, {
    "token_embd.weight": "Q8_0",
    ...block(0, {
      "blk.0.ffn_gate_inp.weight": "F32",
      "blk.0.ffn_gate_exps.weight": "Q5_0",
      "blk.0.ffn_up_exps.weight": "Q5_0",
      "blk.0.ffn_down_exps.weight": "Q5_0",
    }),
    ...block(1, {
      "blk.1.ffn_gate.weight": "Q5_0",
      "blk.1.ffn_up.weight": "Q5_0",
      "blk.1.ffn_down.weight": "Q8_0",
    }),
  });
  using ts = await TsEngine.load(path);
  using c = await CEngine.load(path, { threads: 2 });
  const a = await engineLogits(ts), b = await engineLogits(c);
  let apart = 0;
  a.forEach((rows, i) =>
    rows.forEach((row, t) => {
      assert.equal(argmax(row), argmax(b[i][t]));
      for (let j = 0; j < row.length; j++) apart = Math.max(apart, Math.abs(row[j] - b[i][t][j]));
    })
  );
  assert.ok(apart <= C_TS_TOLERANCE, `C and TS logits ${apart} apart`);
});

Deno.test("qwen3moe q4_k_m types for Qwen3-30B-A3B shapes are llama.cpp's", () => {
  // What llama-cpp-python 0.3.36's llama_model_quantize chose (Q4_K_M) for the benchmark's
  // 6-block Qwen3-30B-A3B-shaped F16 file (bench/make_moe_gguf.py): 128 experts, so no
  // 8-expert rule; the "more bits" blocks of 6 are 2 and 5 (attn_v and ffn_down_exps Q6_K).
  const config: ModelConfig = {
    format: "gguf",
    dim: 2048,
    hiddenDim: 6144,
    nLayers: 6,
    nHeads: 32,
    nKvHeads: 4,
    headDim: 128,
    vocabSize: 151936,
    seqLen: 40960,
    groupSize: 32,
    sharedClassifier: false,
    ropeTheta: 1e6,
    rmsEps: 1e-6,
    moe: {
      nExperts: 128,
      nExpertsUsed: 8,
      expertHiddenDim: 768,
      normTopkProb: true,
      sparse: [true, true, true, true, true, true],
    },
  };
  const got = Object.fromEntries(
    [...ggufTensorTypes(config, "q4_k_m")].map(([name, t]) => [name, GGML_TYPE_NAMES[t]]),
  );
  const want: Record<string, string> = { "token_embd.weight": "Q4_K", "output.weight": "Q6_K" };
  want["output_norm.weight"] = "F32";
  for (let l = 0; l < 6; l++) {
    const more = l === 2 || l === 5 ? "Q6_K" : "Q4_K";
    for (const n of ["attn_norm", "attn_q_norm", "attn_k_norm", "ffn_norm", "ffn_gate_inp"]) {
      want[`blk.${l}.${n}.weight`] = "F32";
    }
    for (const n of ["attn_q", "attn_k", "attn_output", "ffn_gate_exps", "ffn_up_exps"]) {
      want[`blk.${l}.${n}.weight`] = "Q4_K";
    }
    want[`blk.${l}.attn_v.weight`] = more;
    want[`blk.${l}.ffn_down_exps.weight`] = more;
  }
  assert.deepEqual(got, want);
});

Deno.test({
  name: "qwen3moe mixtures equal llama.cpp's quantisation of the F32 file (QWEN3_LLAMA_PYTHON)",
  ignore: LLAMA_PYTHON === null,
  async fn() {
    // llama.cpp's qwen3moe cannot run this file (block 1 is dense), but its quantiser only
    // reads the keys and tensors: the types and bytes are compared, not the logits.
    const f32 = await exportGguf("f32");
    for (const mixture of Object.keys(MIXTURES) as GgufQuantMixture[]) {
      const ours = await exportGguf(mixture);
      const theirs = join(tmp, `moe_${mixture}_llama.gguf`);
      const script = "import ctypes, sys, llama_cpp\n" +
        "p = llama_cpp.llama_model_quantize_default_params(); p.nthread = 1; p.ftype = int(sys.argv[3])\n" +
        "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))";
      const r = await new Deno.Command(LLAMA_PYTHON!, {
        args: ["-c", script, f32, theirs, String(MIXTURES[mixture].fileType)],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(r.success, new TextDecoder().decode(r.stderr));
      const a = await Deno.readFile(ours), b = await Deno.readFile(theirs);
      const ga = readGgufHeader(a, a.length, ours), gb = readGgufHeader(b, b.length, theirs);
      assert.equal(ga.metadata.get("general.file_type"), gb.metadata.get("general.file_type"));
      assert.deepEqual([...ga.tensors.keys()].sort(), [...gb.tensors.keys()].sort());
      for (const [name, tb] of gb.tensors) {
        const ta = ga.tensors.get(name)!;
        assert.equal(
          GGML_TYPE_NAMES[ta.type],
          GGML_TYPE_NAMES[tb.type],
          `${mixture} ${name}: type`,
        );
        const same = ta.bytes === tb.bytes &&
          a.subarray(ta.offset, ta.offset + ta.bytes).every((v, i) => v === b[tb.offset + i]);
        assert.ok(same, `${mixture} ${name}: bytes differ from llama.cpp's`);
      }
      console.log(
        `qwen3moe ${mixture}: ${gb.tensors.size} tensors, types and bytes equal llama.cpp's`,
      );
    }
  },
});

Deno.test("qwen3 info shows the experts on both engines", async () => {
  const path = await exportGguf("q8_0");
  for (const engine of ["c", "ts"]) {
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../cli.ts", import.meta.url).pathname,
        "info",
        path,
        "--engine",
        engine,
      ],
    }).output();
    const out = new TextDecoder().decode(r.stdout);
    assert.ok(r.success, new TextDecoder().decode(r.stderr));
    assert.match(out, /^experts +8, 2 per token, width 32$/m, `${engine}: ${out}`);
    assert.match(out, /^sparse_blocks +0$/m, `${engine}: ${out}`);
  }
});
