/**
 * The quantised GGUF export against llama.cpp itself.
 *
 * Always (from the committed fixture tests/fixtures/kquant_export/, written by
 * tools/make_kquant_export_fixture.py with llama-cpp-python 0.3.36):
 * - the block quantisers (Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) give llama_model_quantize's
 *   bytes for 64 rows of varied values and edge cases, every block;
 * - the dequantisers give gguf-py's `gguf.quants.dequantize` values, every value;
 * - the mixture rules give the tensor type llama.cpp picks for every tensor of 24 files
 *   (6 mixtures x untied / tied at width 256 / untied at widths 288 and 48, where rows fall
 *   back, at 48 to F16),
 *   and the same `general.file_type`;
 * - the quantisation pool gives the same bytes on 1 and 2 threads;
 * - `exportHfModel` with a mixture writes the tensor types of the rules, and values that
 *   decode back to the source weights within the block's step; the CLI's notes and flags.
 *
 * With the llama.cpp peer (`QWEN3_LLAMA_PYTHON`, else .tools/llama-cpp-python-0.3.36): the
 * demo model's Hugging Face folder (and a width-32 untied one, where every row falls back to
 * a 32-value block) is exported as F32 and as each mixture; llama.cpp quantises the F32 file
 * to the same mixture, and the two files must hold the same tensor types and the same bytes in
 * every tensor; llama.cpp then loads our file and gives the same logits and greedy
 * continuation as on its own.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Qwen3Error } from "../src/errors.ts";
import { exportHfModel, ggufTensorTypes } from "../src/export/export.ts";
import { type GgufQuantMixture, MIXTURES, mixtureTensorType } from "../src/export/gguf_mixture.ts";
import { quantizeQ4_1, quantizeQ5_0, quantizeQ5_1 } from "../src/formats/block32_quants.ts";
import { quantizeQ4_K, quantizeQ5_K, quantizeQ6_K } from "../src/formats/kquants.ts";
import { BLOCK } from "../src/formats/kquant_blocks.ts";
import { dequantizeGgml } from "../src/formats/ggml_types.ts";
import { QuantPool } from "../src/export/quant_pool.ts";
import { GGML_TYPE_NAMES, GgmlType, quantizeQ8_0, readGgufHeader } from "../src/formats/gguf.ts";
import { SafetensorsModel } from "../src/formats/safetensors.ts";
import { hfTensorName, readHfConfig } from "../src/export/hf_folder.ts";
import { qwen3GgufTensors } from "../src/formats/gguf_qwen3.ts";
import { findLlamaPython, llamaSkipLine } from "./helpers/llama_python.ts";
import { materializeHfFixture } from "./helpers/hf_fixture.ts";

const FIXTURE = new URL("./fixtures/kquant_export/", import.meta.url);
const DEMO_HF = fileURLToPath(new URL("../models/demo/hf", import.meta.url));
const tmp = await Deno.makeTempDir({ prefix: "qwen3_kquant_export_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));

type Quantizer = (values: Float32Array) => Uint8Array;
type Dequantizer = (bytes: Uint8Array) => Float32Array;

const CODECS: Record<string, { q: Quantizer; dq: Dequantizer; bytes: number; values: number }> = {
  Q4_1: { q: quantizeQ4_1, dq: (b) => dequantizeGgml("Q4_1", b), ...BLOCK.Q4_1 },
  Q5_0: { q: quantizeQ5_0, dq: (b) => dequantizeGgml("Q5_0", b), ...BLOCK.Q5_0 },
  Q5_1: { q: quantizeQ5_1, dq: (b) => dequantizeGgml("Q5_1", b), ...BLOCK.Q5_1 },
  Q8_0: { q: (v) => quantizeQ8_0(v), dq: (b) => dequantizeGgml("Q8_0", b), values: 32, bytes: 34 },
  Q4_K: { q: quantizeQ4_K, dq: (b) => dequantizeGgml("Q4_K", b), ...BLOCK.Q4_K },
  Q5_K: { q: quantizeQ5_K, dq: (b) => dequantizeGgml("Q5_K", b), ...BLOCK.Q5_K },
  Q6_K: { q: quantizeQ6_K, dq: (b) => dequantizeGgml("Q6_K", b), ...BLOCK.Q6_K },
};

interface Manifest {
  rows: number;
  cols: number;
  types: Record<string, { type: number; bytes: number }>;
  mixtures: {
    shape: string;
    dim: number;
    hidden: number;
    layers: number;
    heads: number;
    kv_heads: number;
    head_dim: number;
    tied: boolean;
    mixture: GgufQuantMixture;
    file_type: number;
    tensors: Record<string, number>;
  }[];
}

const manifest: Manifest = JSON.parse(
  await Deno.readTextFile(new URL("manifest.json", FIXTURE)),
);

async function fixtureBytes(name: string): Promise<Uint8Array> {
  return await Deno.readFile(new URL(name, FIXTURE));
}

async function fixtureFloats(name: string): Promise<Float32Array> {
  const b = await fixtureBytes(name);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

Deno.test("block quantisers give llama.cpp's bytes, dequantisers gguf-py's values", async () => {
  const input = await fixtureFloats("input.f32");
  assert.equal(input.length, manifest.rows * manifest.cols);
  for (const [name, codec] of Object.entries(CODECS)) {
    const want = await fixtureBytes(`${name}.bin`);
    assert.equal(manifest.types[name].type, GgmlType[name as keyof typeof GgmlType]);
    assert.equal(want.length, (input.length / codec.values) * codec.bytes, name);
    const got = codec.q(input);
    const blocks = want.length / codec.bytes;
    const differing: number[] = [];
    for (let b = 0; b < blocks; b++) {
      for (let i = b * codec.bytes; i < (b + 1) * codec.bytes; i++) {
        if (got[i] !== want[i]) {
          differing.push(b);
          break;
        }
      }
    }
    const row = (b: number) => Math.floor((b * codec.values) / manifest.cols);
    assert.deepEqual(
      differing.map(row),
      [],
      `${name}: ${differing.length} of ${blocks} blocks differ from llama.cpp's (rows listed)`,
    );

    const deq = await fixtureFloats(`${name}.dequant.f32`);
    const ours = codec.dq(want);
    assert.equal(ours.length, deq.length);
    for (let i = 0; i < deq.length; i++) {
      if (ours[i] !== deq[i]) assert.fail(`${name} value ${i}: ${ours[i]}, gguf-py ${deq[i]}`);
    }
  }
});

Deno.test("block quantisers and dequantisers refuse partial blocks and short outputs", () => {
  for (const [name, codec] of Object.entries(CODECS)) {
    assert.throws(
      () => codec.q(new Float32Array(codec.values + 1)),
      (e) => e instanceof Qwen3Error && e.code === "invalid_argument" && e.message.includes(name),
    );
    assert.throws(
      () => codec.dq(new Uint8Array(codec.bytes - 1)),
      (e) => e instanceof Qwen3Error && e.code === "invalid_argument" && e.message.includes(name),
    );
  }
  assert.throws(
    () => quantizeQ4_K(new Float32Array(512), new Uint8Array(143)),
    /Q4_K: output of 143 bytes is smaller than the 288 needed/,
  );
});

Deno.test("the quantisation pool gives the same bytes on 1 and 2 threads", async () => {
  const input = await fixtureFloats("input.f32");
  // 4 x the fixture rows, each copy scaled: enough values for the pool to split the work.
  const values = new Float32Array(input.length * 4);
  for (let k = 0; k < 4; k++) {
    for (let i = 0; i < input.length; i++) values[k * input.length + i] = input[i] * (1 + k / 3);
  }
  using pool = new QuantPool(2);
  for (const [name, codec] of Object.entries(CODECS)) {
    const type = GgmlType[name as keyof typeof GgmlType];
    const one = codec.q(values);
    const many = await pool.quantize(type, values);
    assert.equal(many.length, one.length, name);
    assert.ok(many.every((v, i) => v === one[i]), `${name}: bytes differ with 2 threads`);
  }
  await assert.rejects(
    () => pool.quantize(GgmlType.Q4_K, new Float32Array(65536 + 32)),
    /Q4_K needs a multiple of 256 values, got 65568/,
  );
  assert.throws(() => new QuantPool(0), /threads must be an integer in 1\.\.1024, got 0/);
});

Deno.test("mixture rules give llama.cpp's tensor types and file type", () => {
  assert.equal(manifest.mixtures.length, 24);
  for (const m of manifest.mixtures) {
    const hd = m.head_dim;
    const dims: Record<string, number[]> = {
      "token_embd.weight": [m.dim, 32],
      "output.weight": [m.dim, 32],
      "output_norm.weight": [m.dim],
      "attn_norm.weight": [m.dim],
      "ffn_norm.weight": [m.dim],
      "attn_q_norm.weight": [hd],
      "attn_k_norm.weight": [hd],
      "attn_q.weight": [m.dim, m.heads * hd],
      "attn_k.weight": [m.dim, m.kv_heads * hd],
      "attn_v.weight": [m.dim, m.kv_heads * hd],
      "attn_output.weight": [m.heads * hd, m.dim],
      "ffn_gate.weight": [m.dim, m.hidden],
      "ffn_up.weight": [m.dim, m.hidden],
      "ffn_down.weight": [m.hidden, m.dim],
    };
    assert.equal(MIXTURES[m.mixture].fileType, m.file_type, `${m.mixture} file type`);
    const tied = !("output.weight" in m.tensors);
    assert.equal(tied, m.tied);
    for (const [name, want] of Object.entries(m.tensors)) {
      const layer = name.startsWith("blk.") ? Number(name.split(".")[1]) : -1;
      const t = { name, dims: dims[name.replace(/^blk\.\d+\./, "")], layer };
      const got = mixtureTensorType(m.mixture, t, m.layers, tied);
      assert.equal(
        GGML_TYPE_NAMES[got],
        GGML_TYPE_NAMES[want],
        `${m.shape} ${m.mixture} ${name}: ours ${GGML_TYPE_NAMES[got]}, llama.cpp ` +
          GGML_TYPE_NAMES[want],
      );
    }
  }
});

Deno.test("GGUF export with a mixture: the rules' types, values within a step", async () => {
  const out = join(tmp, "demo_q5_0.gguf");
  const notes: string[] = [];
  const r = await exportHfModel(DEMO_HF, out, {
    format: "gguf",
    type: "q5_0",
    onNote: (m) => notes.push(m),
  });
  assert.equal(r.type, "q5_0");
  assert.ok(notes.some((n) => /Q5_0: tensors 1 Q6_K, 17 F32, 28 Q5_0/.test(n)), notes.join("\n"));
  assert.ok(!notes.some((n) => /cannot load/.test(n)), notes.join("\n"));
  const bytes = await Deno.readFile(out);
  const g = readGgufHeader(bytes, bytes.length, out);
  assert.equal(g.metadata.get("general.file_type"), MIXTURES.q5_0.fileType);
  assert.equal(g.metadata.get("general.quantization_version"), 2);
  const { config } = await readHfConfig(DEMO_HF);
  const types = ggufTensorTypes(config, "q5_0");
  using weights = await SafetensorsModel.open(DEMO_HF);
  for (const { name, slot } of qwen3GgufTensors(config)) {
    const t = g.tensors.get(name)!;
    assert.equal(t.type, types.get(name), name);
    if (slot.kind === "f32") continue;
    const want = await weights.readTensor(hfTensorName(slot));
    const got = CODECS[GGML_TYPE_NAMES[t.type]].dq(bytes.subarray(t.offset, t.offset + t.bytes));
    // Errors in steps of the block (max|x| / 16 for Q5_0, max|x| / 32 for Q6_K): half a step,
    // up to a whole one where a value of the sign opposite to the largest meets the clamp at
    // +15 (Q5_0) or +31 (Q6_K), plus the rounding of the fp16 and 8-bit scales.
    const per = t.type === GgmlType.Q5_0 ? 32 : 16;
    const steps = t.type === GgmlType.Q5_0 ? 16 : 32;
    let worst = 0;
    for (let b = 0; b < want.length / per; b++) {
      let max = 0;
      for (let i = b * per; i < (b + 1) * per; i++) max = Math.max(max, Math.abs(want[i]));
      for (let i = b * per; i < (b + 1) * per; i++) {
        if (max > 0) worst = Math.max(worst, Math.abs(got[i] - want[i]) / (max / steps));
        else assert.equal(got[i], 0);
      }
    }
    assert.ok(worst <= 1.05, `${name}: an error of ${worst} steps`);
    if (name === "blk.0.attn_q.weight" || name === "token_embd.weight") {
      console.log(`${name} (${GGML_TYPE_NAMES[t.type]}): worst error ${worst.toFixed(3)} steps`);
    }
  }
});

Deno.test("qwen3 export --type q4_1 --threads 2: notes, file type, usage errors", async () => {
  const cli = fileURLToPath(new URL("../cli.ts", import.meta.url));
  const run = async (args: string[]) => {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", cli, "export", ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: r.code, stderr: new TextDecoder().decode(r.stderr) };
  };
  const out = join(tmp, "cli_q4_1.gguf");
  const ok = await run([DEMO_HF, out, "--format", "gguf", "--type", "q4_1", "--threads", "2"]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /^note: Q4_1: tensors 1 Q6_K, 17 F32, 28 Q4_1$/m);
  assert.doesNotMatch(ok.stderr, /cannot load/);
  assert.match(ok.stderr, /wrote .*cli_q4_1\.gguf \(GGUF q4_1, /);
  const bytes = await Deno.readFile(out);
  const g = readGgufHeader(bytes, bytes.length, out);
  assert.equal(g.metadata.get("general.file_type"), 3);
  assert.equal(g.tensors.get("blk.0.ffn_down.weight")!.type, GgmlType.Q4_1);
  const bad = await run([DEMO_HF, out, "--format", "gguf", "--type", "q4_k_m", "--threads", "0"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--threads must be an integer in 1\.\.1024, got "0"/);
});

// ---------------------------------------------------------------------------------------------
// llama.cpp itself

const LLAMA_MODULES = ["gguf", "numpy"];
const LLAMA_PYTHON = await findLlamaPython(LLAMA_MODULES);
if (!LLAMA_PYTHON) console.log(llamaSkipLine("the llama.cpp quantisation checks", LLAMA_MODULES));

/** llama_model_quantize(f32 -> out, ftype), then logits and 8 greedy tokens of both files. */
const PEER_SCRIPT = `
import ctypes, json, sys, numpy as np, llama_cpp
src, ours, theirs, ftype = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = ftype
p.nthread = 1
if llama_cpp.llama_model_quantize(src.encode(), theirs.encode(), ctypes.byref(p)) != 0:
    sys.exit("llama_model_quantize failed")
out = {}
for key, path in (("ours", ours), ("theirs", theirs)):
    m = llama_cpp.Llama(path, vocab_only=False, n_ctx=64, n_threads=1, logits_all=True,
                        verbose=False)
    toks = m.tokenize(b"The king said unto them", add_bos=False)
    m.eval(toks)
    logits = np.array(m.scores[m.n_tokens - 1], dtype=np.float32)
    greedy = []
    for _ in range(8):
        nxt = int(np.argmax(m.scores[m.n_tokens - 1]))
        greedy.append(nxt)
        m.eval([nxt])
    out[key] = {"logits": logits.tolist(), "greedy": greedy, "prompt": toks}
print(json.dumps(out))
`;

/** The gzip'd fixture folder `name` unpacked into the temp dir, with Qwen3's tokenizer.json. */
async function materialize(name: string): Promise<string> {
  const dest = join(tmp, name);
  await Deno.mkdir(dest, { recursive: true });
  const src = new URL(`../tests/fixtures/${name}/`, import.meta.url);
  return await materializeHfFixture(src, dest);
}

/**
 * Exports `hfDir` as F32 and as each mixture, has llama.cpp quantise the F32 file to the same
 * mixture, and requires the same tensor types and bytes, and llama.cpp's logits and greedy
 * tokens on our file to equal those on its own.
 */
async function sameAsLlamaCpp(label: string, hfDir: string, mixtures: GgufQuantMixture[]) {
  const f32 = join(tmp, `${label}_f32.gguf`);
  await exportHfModel(hfDir, f32, { format: "gguf", type: "f32", force: true });
  for (const mixture of mixtures) {
    const ours = join(tmp, `${label}_${mixture}.gguf`);
    const theirs = join(tmp, `${label}_${mixture}_llama.gguf`);
    const t0 = performance.now();
    await exportHfModel(hfDir, ours, { format: "gguf", type: mixture, force: true });
    const ms = performance.now() - t0;
    const r = await new Deno.Command(LLAMA_PYTHON!, {
      args: ["-c", PEER_SCRIPT, f32, ours, theirs, String(MIXTURES[mixture].fileType)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(r.success, new TextDecoder().decode(r.stderr));
    const peer = JSON.parse(new TextDecoder().decode(r.stdout));

    const a = await Deno.readFile(ours);
    const b = await Deno.readFile(theirs);
    const ga = readGgufHeader(a, a.length, ours);
    const gb = readGgufHeader(b, b.length, theirs);
    assert.equal(ga.metadata.get("general.file_type"), gb.metadata.get("general.file_type"));
    assert.deepEqual([...ga.tensors.keys()].sort(), [...gb.tensors.keys()].sort());
    const counts = new Map<string, number>();
    let differing = 0;
    for (const [name, tb] of gb.tensors) {
      const ta = ga.tensors.get(name)!;
      const type = GGML_TYPE_NAMES[tb.type];
      assert.equal(GGML_TYPE_NAMES[ta.type], type, `${label} ${mixture} ${name}: type`);
      counts.set(type, (counts.get(type) ?? 0) + 1);
      const da = a.subarray(ta.offset, ta.offset + ta.bytes);
      const db = b.subarray(tb.offset, tb.offset + tb.bytes);
      if (da.length !== db.length || da.some((v, i) => v !== db[i])) {
        differing++;
        console.log(`${label} ${mixture} ${name}: bytes differ from llama.cpp's`);
      }
    }
    assert.equal(differing, 0, `${label} ${mixture}: ${differing} tensors differ`);

    const la: number[] = peer.ours.logits;
    const lb: number[] = peer.theirs.logits;
    assert.ok(la.every(Number.isFinite), `${label} ${mixture}: llama.cpp logits on our file`);
    let maxDiff = 0;
    for (let i = 0; i < la.length; i++) maxDiff = Math.max(maxDiff, Math.abs(la[i] - lb[i]));
    assert.equal(maxDiff, 0, `${label} ${mixture}: logits differ by ${maxDiff}`);
    assert.deepEqual(peer.ours.greedy, peer.theirs.greedy);
    console.log(
      `${label} ${mixture}: ${gb.tensors.size} tensors (${
        [...counts].map(([t, n]) => `${n} ${t}`).join(", ")
      }), types and bytes equal llama.cpp's; its greedy tokens on ours ` +
        `${JSON.stringify(peer.ours.greedy)}; export ${(ms / 1000).toFixed(1)} s`,
    );
  }
}

Deno.test({
  name: "quantised GGUF export equals llama.cpp's quantisation and runs in it",
  ignore: LLAMA_PYTHON === null,
  async fn() {
    // The demo model: widths of 256 multiples, tied embeddings (token_embd takes Q6_K).
    await sameAsLlamaCpp("demo", DEMO_HF, Object.keys(MIXTURES) as GgufQuantMixture[]);
    // Width 32, untied: every fallback (Q5_0, Q5_1, Q8_0) instead of the 256-value blocks.
    const tiny = await materialize("hf_tiny_untied_f16");
    await sameAsLlamaCpp("tiny-untied", tiny, ["q4_k_m", "q5_k_m", "q6_k"]);
  },
});
